#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, AddressSanitizer + UBSan) in
# build-fuzz and runs each for SECONDS (default 600, the long run the
# hardening issue asks for), one at a time, starting from the committed seed
# corpus fuzz/corpus/TARGET. New inputs go to build-fuzz/corpus/TARGET (not
# the repository); a crash writes build-fuzz/artifacts/TARGET/crash-* and
# makes the script fail. A finding, once fixed, is copied into
# fuzz/corpus/TARGET as a regression input.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 30 fuzz_config_json
#
# Needs clang and libclang-rt-14-dev (Debian 12); .ci/run installs them.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
build=${FUZZ_BUILD:-build-fuzz}
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized >"$build.setup.log" 2>&1 ||
    { cat "$build.setup.log"; exit 1; }
fi
ninja -C "$build" >/dev/null || { ninja -C "$build"; exit 1; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_dataset_jsonl fuzz_dataset_csv
  fuzz_tokenizer_json fuzz_vocab_txt fuzz_config_json fuzz_checkpoint_state)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  dict=fuzz/json.dict
  case $t in
  fuzz_safetensors) dict=fuzz/safetensors.dict ;;
  fuzz_dataset_csv | fuzz_vocab_txt) dict= ;;
  esac
  work="$build/corpus/$t" art="$build/artifacts/$t"
  mkdir -p "$work" "$art"
  echo "== $t: ${seconds} s"
  "$build/fuzz/$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=2560 -max_len=65536 -print_final_stats=1 -artifact_prefix="$art/" \
    ${dict:+-dict=$dict} >"$art.log" 2>&1
  rc=$?
  grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$art.log" | tr '\n' ' '
  echo
  if [ $rc -ne 0 ] || ls "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-* >/dev/null 2>&1; then
    echo "$t FOUND SOMETHING (exit $rc): see $art.log and $art/"
    tail -40 "$art.log"
    status=1
  fi
done
exit $status
