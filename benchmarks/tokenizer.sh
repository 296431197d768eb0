#!/bin/sh
# Tokenizer throughput, tensorplug vs Hugging Face tokenizers, on the 50,000
# IMDB reviews (docs/tokenizer.md). Usage: benchmarks/tokenizer.sh [BUILD_DIR] [bench options]
# The first run creates .venv-bench (pip install tokenizers; needs PyPI).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
[ $# -gt 0 ] && shift
shared=${TP_SHARED_DIR:-$here/../shared}
exec "$build/cli/tensorplug" bench --tokenizer \
  --vocab "$shared/data/bert-base-uncased/tokenizer.json" \
  --data "$shared/data/imdb" --vs-hf "$@"
