#!/bin/sh
# benchmarks/distributed_compare.sh — how close a 2-rank run (and a run in
# micro-batches) comes to one process, on a tiny BERT from scratch (1 layer,
# hidden 32) over IMDB records, one epoch each:
#   A  the configuration of tests/test_distributed.c (subset 0.16, batch 32,
#      lr 1e-3, 175 steps): one process vs 2 ranks, vs --grad-accum 2, and
#      2 ranks twice (the same bits: sums in rank order);
#   B  a longer, faster-learning one (subset 0.2, batch 16, lr 2e-3, 438
#      steps): one process vs 2 ranks, and one process on 1 vs 2 threads.
# B shows what any change of summation order does to a [CLS] model leaving its
# plateau: differences of 1e-7 in the first steps grow by orders of magnitude
# (thread counts change nothing: every sum keeps its order).
# Writes docs/results/distributed-compare.json (benchmarks/compare_runs.py).
#
# Usage: benchmarks/distributed_compare.sh [--out FILE]
# Environment: TP_BUILD_DIR (default build/); runs under `nice -n 10`.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=docs/results/distributed-compare.json
[ "${1:-}" = "--out" ] && out=$2
tp=${TP_BUILD_DIR:-build}/cli/tensorplug
data=../shared/data/imdb
vocab=../shared/data/bert-base-uncased/vocab.txt
base="train --model bert --init random --layers 1 --hidden 32 --heads 2 --ffn 64
  --vocab $vocab --data $data --max-len 64 --eval-batch 64 --epochs 1 --patience 0 --seed 7"
A="--subset 0.16 --batch 32 --lr 1e-3"
B="--subset 0.2 --batch 16 --lr 2e-3"
dir=runs/dist-compare
rm -rf "$dir"
mkdir -p "$dir"
one() { # name, config, extra...
  name=$1 cfg=$2; shift 2
  # shellcheck disable=SC2086
  nice -n 10 "$tp" $base $cfg --out "$dir/$name" "$@" >"$dir/$name.log" 2>&1
}
two() {
  name=$1 cfg=$2; shift 2
  # shellcheck disable=SC2086
  nice -n 10 mpirun --allow-run-as-root --oversubscribe -np 2 "$tp" $base $cfg --distributed \
    --out "$dir/$name" "$@" >"$dir/$name.log" 2>&1
}
echo "== A"
one A-one "$A" --threads 1
two A-two "$A" --threads 1
two A-two-again "$A" --threads 1
one A-accum2 "$A" --threads 1 --grad-accum 2
echo "== B"
one B-one "$B" --threads 1
one B-one-2threads "$B" --threads 2
two B-two "$B" --threads 1

cmp() { python3 benchmarks/compare_runs.py "$dir/$1" "$dir/$2" --json "$dir/$1-vs-$2.json"; }
for pair in "A-one A-two" "A-two A-two-again" "A-one A-accum2" "B-one B-two" "B-one B-one-2threads"; do
  # shellcheck disable=SC2086
  set -- $pair
  echo "== $1 vs $2"
  cmp "$1" "$2"
done
python3 - "$dir" "$out" <<'PY'
import glob, json, os, sys
d, out = sys.argv[1:]
res = {"A": "subset 0.16, batch 32, lr 1e-3 (tests/test_distributed.c)",
       "B": "subset 0.2, batch 16, lr 2e-3", "comparisons": {}}
for p in sorted(glob.glob(f"{d}/*-vs-*.json")):
    res["comparisons"][os.path.basename(p)[:-5]] = json.load(open(p))
json.dump(res, open(out, "w"), indent=1)
print(f"written: {out}")
PY
