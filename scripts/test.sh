#!/usr/bin/env bash
# Setup (idempotent), then the whole test suite. The last line is "N passed, N failed, N skipped",
# counted in gtest cases (a gtest binary reports each case through GTEST_OUTPUT json) and in
# whole meson tests for the others (gst-check, scripts, fuzz replays). A case that skipped
# itself (no fixtures, no espeak-ng) counts as skipped even when its binary passed.
# With CI=true a missing ../shared/fixtures fails the run instead of skipping its tests.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

ci_missing_fixtures=0
if [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; then
  fixtures="${GLMVOICE_FIXTURES:-../shared/fixtures}"
  if [[ ! -d "$fixtures/tiny-a" ]]; then
    echo "CI=true but the reference fixtures are missing ($fixtures): the parity tests cannot run"
    ci_missing_fixtures=1
  fi
fi

results=build/gtest-results
rm -rf "$results" && mkdir -p "$results"
# gtest writes <binary>.json (or <binary>_N.json when the name is taken) into this folder.
GTEST_OUTPUT="json:$PWD/$results/" meson test -C build --print-errorlogs \
  --num-processes "${GLMVOICE_TEST_JOBS:-2}" "$@"
status=$?
python3 scripts/test_summary.py build/meson-logs/testlog.json "$results" "$ci_missing_fixtures"
summary=$?
[[ $status -eq 0 && $summary -eq 0 ]] || exit 1
exit 0
