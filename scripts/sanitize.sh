#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/: lib/, gst/, plugins/,
# tools/, tests) and the unit, CLI, element and pipeline tests under it. Any ASan, LSan or
# UBSan report fails the test that triggered it (halt_on_error / exitcode). libtorch's and
# GLib's deliberate process-lifetime allocations are suppressed by
# tests/sanitizers/lsan.supp, each entry with its reason. The last line is "N passed,
# N failed, N skipped" like scripts/test.sh. Slow (a full rebuild): not part of .ci/run.
#
#   nice -n 19 scripts/sanitize.sh [meson test args, e.g. --suite lib, or test names]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[[ -d .venv ]] || scripts/setup.sh >/dev/null || { echo "setup failed"; exit 1; }

if [[ ! -f build-asan/build.ninja ]]; then
  # b_lundef=false: the plugin is a module whose ASan symbols come from the loading binary.
  meson setup build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
    >build-asan.log 2>&1 || { cat build-asan.log; exit 1; }
fi
# Test names as arguments (e.g. element/glmvoicellm stress/stress): build only the plugin and
# those tests' executables (a full instrumented build takes hours on 2 cores).
build_targets=()
if [[ $# -gt 0 && $1 != -* ]]; then
  mapfile -t build_targets < <(meson introspect build-asan --tests | python3 -c '
import json, os, sys
wanted = set(sys.argv[1:])
for t in json.load(sys.stdin):
    if t["name"] in wanted and t["cmd"] and t["cmd"][0].startswith(os.path.abspath("build-asan")):
        print(os.path.relpath(t["cmd"][0], "build-asan"))
' "$@")
  build_targets+=(plugins/libgstglmvoice.so)
fi
ninja -C build-asan -j"${GLMVOICE_BUILD_JOBS:-2}" "${build_targets[@]}" || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

supp="$root/tests/sanitizers"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_odr_violation=0:symbolize=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="suppressions=$supp/ubsan.supp:print_stacktrace=1:halt_on_error=1"
# The plugin is ASan-instrumented: scan it in the (instrumented) test process, not in
# gst-plugin-scanner, and keep a registry apart from the ordinary build's.
export GST_REGISTRY_FORK=no
export GLMVOICE_TEST_JOBS="${GLMVOICE_TEST_JOBS:-1}"
timeout_mult="${GLMVOICE_SANITIZE_TIMEOUT_MULTIPLIER:-6}"

results=build-asan/gtest-results
rm -rf "$results" && mkdir -p "$results"
# Every test but pipeline/scripts: it runs gst-launch-1.0 and python3, uninstrumented
# programs that cannot load the instrumented plugin without preloading the ASan runtime (and
# would then report their own leaks); its pipelines are run by pipeline/converse here.
mapfile -t tests < <(meson test -C build-asan --list --no-rebuild 2>/dev/null | grep -v '^pipeline/scripts$')
[[ $# -gt 0 ]] && tests=()
GTEST_OUTPUT="json:$root/$results/" meson test -C build-asan --print-errorlogs --no-rebuild \
  --num-processes "$GLMVOICE_TEST_JOBS" -t "$timeout_mult" "${tests[@]}" "$@"
status=$?
cp build-asan/meson-logs/testlog.json build-asan/testlog-main.json
python3 scripts/test_summary.py build-asan/testlog-main.json "$results"
summary=$?
echo "(sanitizers: ASan + UBSan + LSan, suppressions in tests/sanitizers/)"
[[ $status -eq 0 && $summary -eq 0 ]] || exit 1
