#!/usr/bin/env bash
# scripts/gpu-check.sh — the one prepared run on a GPU machine (CUDA and
# PyTorch there, none of our apt packages, no network; time on it is
# short): unpacks what scripts/gpu-pack.sh packed, runs the conformance
# suite, the PyTorch-reference model tests and the 20-step loss curves on
# the CUDA backend (and on Vulkan when the pack has that plugin), then the
# training benchmark of both sides in the same run — `tensorplug bench
# --model` and the PyTorch peer benchmarks/bench_torch_gpu.py — and writes
# $OUT/gpu-check.log (everything printed) and $OUT/gpu-check.json (per
# step: status, seconds; the card; the benchmark rows and the ratios the
# CUDA issue asks for). Every step has a time limit; the whole stays under
# 8 minutes ($TP_GPU_BUDGET_S, default 450 s).
#
# Usage, from the repository root (the pack folder carried along):
#   bash scripts/gpu-check.sh [PACK_DIR]        (default .gpu)
# To try the script itself without a GPU: TP_GPU_BACKEND=cpu (tests and
# benchmark on that backend, f32), TP_GPU_BENCH_LEN=8 and TP_GPU_BENCH_STEPS=1
# (tiny benchmarks, one warm-up step), TP_GPU_PYTHON=/usr/bin/python3 (the
# python with torch).
# Exit status: 0 every step passed; 1 a step failed; 2 no usable CUDA device
# or no pack (nothing measured).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
pack=${1:-.gpu}
out=${OUT:-$repo/gpu-check-out}
budget=${TP_GPU_BUDGET_S:-450}
mkdir -p "$out"
log=$out/gpu-check.log
steps=$(mktemp)
work=$(mktemp -d)
: >"$log"
say() { echo "gpu-check: $*" | tee -a "$log" >&2; }

# A step: name, time limit (s), command...; its output goes to the log, its
# status and time to the summary. The limit shrinks to what the budget has
# left (30 s kept for the summary).
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - SECONDS - 30))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    say "$name: skipped (out of time)"
    printf '%s\tskipped\t0\n' "$name" >>"$steps"
    return 1
  fi
  say "$name (limit ${limit}s): $*"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local st=ok
  [ $rc -eq 0 ] || st=failed
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && st=timeout
  printf '%s\t%s\t%d\n' "$name" "$st" $((SECONDS - t0)) >>"$steps"
  say "$name: $st ($((SECONDS - t0)) s)"
  return $rc
}

summary() { # writes gpu-check.json from the step table and the JSON pieces in $work
  python3 - "$steps" "$work" "$out/gpu-check.json" <<'PY'
import glob, json, os, sys
steps_tsv, work, dest = sys.argv[1:4]
res = {"result": "passed", "steps": [], "gpu": None, "bench": {}, "torch": {}, "tests": {}}
for line in open(steps_tsv):
    name, st, sec = line.rstrip("\n").split("\t")
    res["steps"].append({"name": name, "status": st, "seconds": int(sec)})
p = os.path.join(work, "gpu.txt")
if os.path.exists(p):
    res["gpu"] = open(p).read().strip()
if any(s["status"] != "ok" for s in res["steps"]):
    res["result"] = "failed: " + ", ".join(s["name"] for s in res["steps"] if s["status"] != "ok")
p = os.path.join(work, "reason.txt")
if os.path.exists(p):
    res["result"] = "no device: " + open(p).read().strip()
for f in sorted(glob.glob(os.path.join(work, "bench_*.json"))):
    try:
        res["bench"][os.path.basename(f)[6:-5]] = json.load(open(f))
    except ValueError:
        pass
for f in sorted(glob.glob(os.path.join(work, "torch_*.json"))):
    try:
        res["torch"][os.path.basename(f)[6:-5]] = json.load(open(f))
    except ValueError:
        pass
for f in sorted(glob.glob(os.path.join(work, "gtest_*.json"))):
    try:
        g = json.load(open(f))
    except ValueError:
        continue
    res["tests"][os.path.basename(f)[6:-5]] = {
        "tests": g.get("tests"), "failures": g.get("failures"), "disabled": g.get("disabled"),
        "failed": [t["name"] for s in g.get("testsuites", []) for t in s.get("testsuite", [])
                   if t.get("failures")]}
# the issue's figures: ours vs the peer in the same run, goals
EPOCH_REVIEWS = 26250  # the homework's training split
BE = os.environ.get("TP_GPU_BACKEND", "cuda")
def ours(key, backend=BE):
    b = res["bench"].get(key, {})
    for r in b.get("rows", []):
        if r.get("backend") == backend and r.get("available"):
            r = dict(r)
            r["epoch_s"] = -(-EPOCH_REVIEWS // int(b["batch"])) * r["ms_per_step"] / 1000.0
            return r
def best_torch(key):
    rows = [r for r in res["torch"].get(key, []) if "ms_per_step" in r]
    return min(rows, key=lambda r: r["ms_per_step"]) if rows else None
goals = {}
for key in res["bench"]:
    o, t, v = ours(key), best_torch(key), ours(key, "vulkan")
    g = {}
    if o:
        g[BE + "_ms_per_step"] = o["ms_per_step"]
        g[BE + "_tokens_per_s"] = o["tokens_per_s"]
        g[BE + "_tflops"] = o["tflops"]
        g[BE + "_epoch_s"] = o["epoch_s"]
    if o and t:
        g["torch_best"] = t["impl"]
        g["throughput_vs_torch"] = t["ms_per_step"] / o["ms_per_step"]
        g["goal_1_2x_torch_met"] = g["throughput_vs_torch"] >= 1.2
    if o and v and BE == "cuda":
        g["vulkan_over_cuda_time"] = v["ms_per_step"] / o["ms_per_step"]
        g["goal_vulkan_within_2x_met"] = g["vulkan_over_cuda_time"] <= 2.0
    if o and key.startswith("distilbert_b8"):
        g["goal_epoch_le_10s_met"] = o["epoch_s"] <= 10.0
    if o and key.startswith("bert_b8"):
        g["goal_epoch_le_20s_met"] = o["epoch_s"] <= 20.0
    goals[key] = g
res["goals"] = goals
json.dump(res, open(dest, "w"), indent=1)
PY
}

finish() {
  summary || say "could not write $out/gpu-check.json"
  rm -f "$steps"
  rm -rf "$work"
  say "done in ${SECONDS}s: $out/gpu-check.log, $out/gpu-check.json"
  exit "$1"
}

# ---- the machine ----
{
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader ||
    echo "nvidia-smi: none"
} >"$work/gpu.txt" 2>&1
say "GPU: $(cat "$work/gpu.txt")"
py=${TP_GPU_PYTHON:-$(command -v python3 || true)}
be=${TP_GPU_BACKEND:-cuda}
say "python3: ${py:-none}; $("${py:-false}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1)"

# ---- unpack at the path the build was made in ----
tarball=$pack/tensorplug-gpu.tar.xz
if [ ! -f "$tarball" ]; then
  say "no $tarball: run scripts/gpu-pack.sh on the development machine and carry $pack"
  printf 'unpack\tfailed\t0\n' >>"$steps"
  finish 2
fi
root=$(xz -dc "$tarball" | tar -xOf - ./MANIFEST | sed -n 's/^build_root=//p')
root=${root%/build}
[ -n "$root" ] || { say "$tarball has no MANIFEST"; finish 2; }
# (on the development machine the build itself is there: unpack over it)
if [ -f "$root/build/build.ninja" ]; then clean=true; else clean="rm -rf '$root'"; fi
step unpack 60 sh -c "$clean && mkdir -p '$root' && xz -dc '$tarball' | tar -xf - -C '$root'" ||
  finish 2
build=$root/build
export TP_SHARED_DIR=$root/shared TENSORPLUG_NUM_THREADS=${TENSORPLUG_NUM_THREADS:-8}
# Our copies only of what the system lacks: its own (newer) GLib, zlib, ...
# serve everything else, PyTorch's python included.
mkdir -p "$root/lib.system-has"
syslibs=$(ldconfig -p 2>/dev/null || true)
for f in "$root"/lib/*; do
  so=$(basename "$f")
  if grep -q "^[[:space:]]*$so " <<<"$syslibs"; then mv "$f" "$root/lib.system-has/"; fi
done
say "libraries from the pack: $(ls "$root/lib" | tr '\n' ' ')"
export LD_LIBRARY_PATH=$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- cuBLASLt: the toolkit's, the system's, or PyTorch's wheels' ----
lt=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(ldconfig -p 2>/dev/null | awk '/libcublasLt\.so\.13/ { sub(/\/[^\/]*$/, "", $NF); print $NF }') \
  $("${py:-false}" -c 'import glob, os, site, sys
for s in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(s, "nvidia", "*", "lib", "libcublasLt.so.13")) + \
             glob.glob(os.path.join(s, "torch", "lib", "libcublasLt.so.13")):
        print(os.path.dirname(p))' 2>/dev/null); do
  if [ -e "$d/libcublasLt.so.13" ]; then lt=$d; break; fi
done
if [ -n "$lt" ]; then
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$lt
  say "libcublasLt.so.13 from $lt"
else
  say "libcublasLt.so.13 not found (the CUDA plugin will say so)"
fi

# The NVIDIA Vulkan driver may be installed without its ICD file where the
# loader looks: point the loader at it.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] &&
  ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$icd
  say "VK_DRIVER_FILES=$icd"
fi

# ---- is there a device? ----
step plugins 30 "$build/cli/tensorplug" plugins
if ! grep -A1 "libtp_backend_$be.so" "$log" | grep -q 'device 0'; then
  grep -A1 "libtp_backend_$be.so" "$log" | tail -1 | sed 's/^ *//' >"$work/reason.txt"
  say "no usable $be device: $(cat "$work/reason.txt")"
  finish 2
fi

# The model tests run /usr/bin/python3 with torch; on machines whose torch
# is another python3, point that name at it for the run.
restore_python=""
if [ -n "$py" ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null &&
  "$py" -c 'import torch' 2>/dev/null; then
  if [ -e /usr/bin/python3 ]; then mv /usr/bin/python3 /usr/bin/python3.gpu-check-saved; fi
  ln -s "$py" /usr/bin/python3 && restore_python=1
  say "/usr/bin/python3 -> $py for the model tests"
fi
restore() {
  if [ -n "$restore_python" ]; then
    rm -f /usr/bin/python3
    if [ -e /usr/bin/python3.gpu-check-saved ]; then mv /usr/bin/python3.gpu-check-saved /usr/bin/python3; fi
  fi
}
trap restore EXIT

# ---- tests on the CUDA backend ----
fail=0
gtest() { # name, limit, backend, binary, gtest args...
  local name=$1 limit=$2 be=$3 bin=$4
  shift 4
  if [ ! -x "$build/tests/$bin" ]; then
    say "$name: tests/$bin is not in the pack"
    printf '%s\tmissing\t0\n' "$name" >>"$steps"
    fail=1
    return
  fi
  step "$name" "$limit" env TP_TEST_BACKEND="$be" "$build/tests/$bin" \
    --gtest_output="json:$work/gtest_$name.json" "$@" || fail=1
}
gtest cuda_plugin 30 cuda test_cuda_plugin
gtest "backend_ops_$be" 150 "$be" test_backend_ops
gtest "models_$be" 150 "$be" test_models
gtest "backend_curve_$be" 120 "$be" test_backend_curve
gtest "backend_train_$be" 120 "$be" test_backend_train
if ls "$build"/plugins/vulkan/*.so >/dev/null 2>&1; then
  gtest vulkan_plugin 60 vulkan test_vulkan_plugin
  gtest backend_ops_vulkan 120 vulkan test_backend_ops
  gtest backend_curve_vulkan 120 vulkan test_backend_curve
fi

# ---- speed: both sides in the same run ----
backends=$be
[ "$be" = cuda ] && ls "$build"/plugins/vulkan/*.so >/dev/null 2>&1 && backends=cuda,vulkan
len=${TP_GPU_BENCH_LEN:-512}
prec=bf16
tdev=cuda
[ "$be" = cpu ] && prec=f32 && tdev=cpu
bench() { # key, model, batch, steps
  local n=${TP_GPU_BENCH_STEPS:-$4} w1=3 w2=5
  [ -n "${TP_GPU_BENCH_STEPS:-}" ] && w1=1 && w2=1
  step "bench_$1" 120 sh -c "'$build/cli/tensorplug' bench --model '$2' --init random \
    --backends '$backends' --mode train --batch '$3' --seq '$len' --precision '$prec' \
    --steps '$n' --warmup '$w1' --json >'$work/bench_$1.json'" || fail=1
  step "torch_$1" 150 "$py" "$repo/benchmarks/bench_torch_gpu.py" --model "$2" --batch "$3" \
    --max-len "$len" --steps "$n" --warmup "$w2" --device "$tdev" --json "$work/torch_$1.json" ||
    fail=1
}
bench distilbert_b8 distilbert 8 30
bench bert_b8 bert 8 20
bench distilbert_b32 distilbert 32 10
restore
finish $fail
