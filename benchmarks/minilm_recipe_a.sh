#!/bin/sh
# benchmarks/minilm_recipe_a.sh — recipe A (all-MiniLM-L6-v2 on IMDB: subset 0.25,
# max length 128, batch 32, lr 5e-5, 1 epoch), side by side with the newest
# PyTorch + Hugging Face Transformers (benchmarks/compare.py; fetches the model
# and .venv-hf on first use):
#   1. the full recipe with tensorplug in f32 and in bf16 (test accuracy; |diff| <= 0.01),
#   2. 3 interleaved pairs of each precision against PyTorch (f32 / bf16 autocast) on
#      the recipe's shapes (subset 0.05: 55 steps).
# Results: docs/results/recipe-a-*.json. Exit 1 when a check fails or a result
# is refused. Options: passed to benchmarks/run_all.sh's environment
# (TP_BUILD_DIR, TP_THREADS, TP_PAIRS).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/benchmarks/run_all.sh" recipe-a-full-f32 recipe-a-full-bf16 recipe-a-bf16-accuracy \
  recipe-a-f32 recipe-a-bf16
