#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/, ASan + UBSan) and runs each for
# SECONDS (default 60) from a scratch copy of its committed seeds; prints execs, coverage and
# findings per target. A crash/leak/timeout input is kept in build-fuzz/findings-<target>/;
# minimise it and add it to tests/fuzz/corpus/<target>/ (see tests/fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 npy wav
#   FUZZ_JOBS=2 scripts/fuzz.sh 3600            parallel workers per target
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 7200      stop each target after that many executions
# Exit status 1 when a target found something.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors pickle torch_zip json_config tokenizer_model npy wav yaml_config)

if ! command -v clang++ >/dev/null; then
  echo "installing clang (libFuzzer)"
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y clang >/dev/null; else sudo apt-get install -y clang >/dev/null; fi
fi
[[ -d .venv ]] || scripts/setup.sh >/dev/null || { echo "setup failed"; exit 1; }

if [[ ! -f build-fuzz/build.ninja ]]; then
  CXX=clang++ CC=clang meson setup build-fuzz -Dfuzz=true -Dgstreamer=disabled --buildtype=debugoptimized \
    >build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
fi
ninja -C build-fuzz $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") >/dev/null || exit 1

max_len() {
  case "$1" in
    torch_zip|json_config|tokenizer_model|yaml_config) echo 16384 ;;
    wav) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

found=0
printf '%-16s %12s %10s %8s %8s  %s\n' target execs exec/s cov ft findings
for t in "${targets[@]}"; do
  corpus="build-fuzz/corpus-$t"
  findings="build-fuzz/findings-$t"
  mkdir -p "$corpus" "$findings"
  cp -n "tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null
  log="build-fuzz/fuzz-$t.log"
  # -rss_limit_mb: libtorch's start-up alone takes a few hundred MB.
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/tests/fuzz/fuzz_$t" "$corpus" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" \
    ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} >"$log" 2>&1
  status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  n=$(find "$findings" -type f | wc -l)
  printf '%-16s %12s %10s %8s %8s  %s\n' "$t" "$execs" "$rate" "${cov:-?}" "${ft:-?}" \
    "$([[ $n -gt 0 || $status -ne 0 ]] && echo "$n in $findings (exit $status, log $log)" || echo none)"
  [[ $n -gt 0 || $status -ne 0 ]] && found=1
done
exit $found
