#!/bin/sh
# Tokenizer throughput, tensorplug vs Hugging Face tokenizers (encode_batch and
# encode_batch_fast), on the 50,000 IMDB reviews (docs/tokenizer.md), from a
# release build; the output also goes to docs/results/tokenizer.json.
# Usage: benchmarks/tokenizer.sh [BUILD_DIR] [bench options]
# The first run creates .venv-bench (pip install tokenizers; needs PyPI).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${1:-build-release}
[ $# -gt 0 ] && shift
shared=${TP_SHARED_DIR:-../shared}
grep -q "buildtype.*release" "$build/meson-info/intro-buildoptions.json" 2>/dev/null ||
  grep -q '"name": "buildtype", "value": "release"' "$build/meson-info/intro-buildoptions.json" 2>/dev/null ||
  echo "tokenizer.sh: warning: $build is not a release build (meson setup $build -Dbuildtype=release)" >&2
out=$(mktemp)
"$build/cli/tensorplug" bench --tokenizer \
  --vocab "$shared/data/bert-base-uncased/tokenizer.json" \
  --data "$shared/data/imdb" --vs-hf "$@" | tee "$out"
python3 - "$out" "$build" <<'PY'
import json, os, subprocess, sys, time
lines = open(sys.argv[1]).read().splitlines()
def field(prefix):
    for l in lines:
        if l.startswith(prefix + ":"):
            return {k: float(v) if k != "version" else v
                    for k, v in (p.split("=", 1) for p in l.split(":", 1)[1].split())}
    return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
res = {"name": "tokenizer", "commit": commit, "command": ["benchmarks/tokenizer.sh"] + sys.argv[2:3],
       "cpu": cpu, "load_avg_end": [round(x, 2) for x in os.getloadavg()],
       "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
       "tensorplug": field("tensorplug"), "hf_encode_batch": field("hf_tokenizers"),
       "hf_encode_batch_fast": field("hf_tokenizers_fast"), "output": lines}
for k in ("hf_encode_batch", "hf_encode_batch_fast"):
    if res[k] and res["tensorplug"]:
        res["ratio_vs_" + k] = res["tensorplug"]["tokens_per_s"] / res[k]["tokens_per_s"]
os.makedirs("docs/results", exist_ok=True)
with open("docs/results/tokenizer.json", "w") as f:
    json.dump(res, f, indent=2)
print("Results: docs/results/tokenizer.json")
PY
rm -f "$out"
