#!/bin/sh
# benchmarks/distributed_overhead.sh — the cost of data-parallel training on
# one machine: the README's recipe (a 2-layer BERT from scratch on all of
# IMDB, max length 256, batch 32) for N epochs as
#   (a) one process with 2 threads, and
#   (b) 2 ranks with 1 thread each (mpirun -np 2 ... --distributed),
# then their seconds per epoch, ms per step, tokens/s, the time rank 0 spent
# in gradient sums, the validation accuracies, and the machine's load average
# before and after (a shared machine makes every figure noisy).
# --subset F trains on a stratified fraction of the data: the model, lengths
# and batch — so the cost of a step — stay the recipe's, and the full
# epoch's time is also given as ms/step x the recipe's 1,094 steps.
#
# Usage: benchmarks/distributed_overhead.sh [--epochs N] [--subset F] [--out FILE] [--tag NAME]
#   --epochs N   [1]    --subset F  [1.0]   --out FILE  [docs/results/distributed-overhead.json]
#   --tag NAME   run folders runs/NAME-{one,two} [dist-overhead]
# Environment: TP_BUILD_DIR (default build/); runs under `nice -n 10`.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
epochs=1 subset=1.0 out=docs/results/distributed-overhead.json tag=dist-overhead
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs=$2; shift 2 ;;
    --subset) subset=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
tp=${TP_BUILD_DIR:-build}/cli/tensorplug
data=../shared/data/imdb
vocab=../shared/data/bert-base-uncased/vocab.txt
for f in "$tp" "$data" "$vocab"; do
  [ -e "$f" ] || { echo "missing $f (build first; ../shared holds the data)" >&2; exit 1; }
done
recipe="train --model bert-base-uncased --init random --layers 2 --hidden 128 --heads 2
  --ffn 512 --vocab $vocab --data $data --subset $subset --max-len 256 --batch 32 --lr 1e-3
  --epochs $epochs --patience 0 --backend cpu"
load() { cut -d' ' -f1-3 /proc/loadavg; }

load0=$(load)
rm -rf "runs/$tag-one" "runs/$tag-two"
echo "== one process, 2 threads"
# shellcheck disable=SC2086
nice -n 10 "$tp" $recipe --threads 2 --out "runs/$tag-one"
load1=$(load)
echo "== 2 ranks, 1 thread each"
# shellcheck disable=SC2086
nice -n 10 mpirun --allow-run-as-root --oversubscribe -np 2 \
  "$tp" $recipe --threads 1 --distributed --out "runs/$tag-two"
load2=$(load)

python3 - "runs/$tag-one" "runs/$tag-two" "$out" "$load0" "$load1" "$load2" "$(nproc)" "$subset" <<'PY'
import json, sys
one, two, out, l0, l1, l2, cores, subset = sys.argv[1:]
RECIPE_STEPS = 1094  # 35,000 training reviews in batches of 32
def summary(run):
    r = json.load(open(f"{run}/results.json"))
    h = r["history"]
    return {"run": run, "world_size": r["distributed"]["world_size"],
            "threads_per_rank": r["config"]["threads"],
            "gradient_sum": r["distributed"]["gradient_sum"],
            "parameters": r["model"]["parameters"],
            "seconds_per_epoch": [e["seconds"] for e in h],
            "ms_per_step": [e["ms_per_step"] for e in h],
            "tokens_per_s": [e["tokens_per_s"] for e in h],
            "sum_seconds": [e.get("sum_seconds", 0) for e in h],
            "val_acc": [e["val_acc"] for e in h], "test_accuracy": r["test"]["accuracy"]}
a, b = summary(one), summary(two)
steps = json.load(open(f"{one}/results.json"))["history"][0]["steps"]
res = {"recipe": "README: 2 layers, hidden 128, FFN 512, all IMDB, max length 256, batch 32",
       "subset": float(subset), "cores": int(cores), "steps_per_epoch": steps,
       "recipe_epoch_seconds_projected": {
           "one_process_2_threads": a["ms_per_step"][0] * RECIPE_STEPS / 1000,
           "two_ranks_1_thread": b["ms_per_step"][0] * RECIPE_STEPS / 1000},
       "load_average": {"before": l0, "between": l1, "after": l2},
       "note": "a shared machine: other jobs ran at the same time (see load_average)",
       "one_process_2_threads": a, "two_ranks_1_thread": b,
       "epoch_time_ratio": [y / x for x, y in zip(a["seconds_per_epoch"], b["seconds_per_epoch"])],
       "sum_ms_per_step": [1000 * s / steps for s in b["sum_seconds"]],
       "gradient_bytes_per_step": 4 * a["parameters"]}
json.dump(res, open(out, "w"), indent=1)
print(f"\n{'':24}{'s/epoch':>10}{'ms/step':>10}{'tokens/s':>10}{'val_acc':>9}"
      f"{'recipe s/epoch':>16}")
for name, s in (("1 process x 2 threads", a), ("2 ranks x 1 thread", b)):
    print(f"{name:24}{s['seconds_per_epoch'][0]:10.1f}{s['ms_per_step'][0]:10.1f}"
          f"{s['tokens_per_s'][0]:10.0f}{s['val_acc'][0]:9.4f}"
          f"{s['ms_per_step'][0] * RECIPE_STEPS / 1000:16.0f}")
print(f"gradient sums: {res['sum_ms_per_step'][0]:.1f} ms/step of "
      f"{res['gradient_bytes_per_step'] / 2**20:.1f} MiB; epoch time ratio "
      f"{res['epoch_time_ratio'][0]:.2f}; load average {l0} / {l1} / {l2}")
print(f"written: {out}")
PY
