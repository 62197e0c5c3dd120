#!/usr/bin/env python3
"""The last line of scripts/test.sh: "N passed, N failed, N skipped".

Usage: test_summary.py TESTLOG.json GTEST_RESULTS_DIR [EXTRA_FAILURES]

Meson's testlog.json says how each test binary ended; the gtest JSON reports (written through
GTEST_OUTPUT into GTEST_RESULTS_DIR as <binary>.json, <binary>_1.json, ...) say how each case
inside a gtest binary ended. A gtest binary counts its cases; any other test (gst-check,
scripts, fuzz replays) counts as one. A meson test that failed without a failing case in its
report (a crash, a timeout, a non-zero exit after the cases) adds one failure, so nothing that
failed can disappear from the count. Exit status 1 when anything failed.
"""
import collections
import glob
import json
import os
import re
import sys


def gtest_reports(results_dir):
    """binary basename -> list of parsed gtest JSON reports."""
    reports = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        base = re.sub(r"_\d+$", "", name)
        try:
            with open(path) as f:
                reports[base].append(json.load(f))
        except (OSError, ValueError):
            continue
        if base != name:  # "foo_1" may also be a binary really called foo_1: keep both keys
            reports[name].append(reports[base][-1])
    return reports


def count_cases(report):
    passed = failed = skipped = 0
    for suite in report.get("testsuites", []):
        for case in suite.get("testsuite", []):
            if case.get("status") == "NOTRUN":
                continue
            if case.get("failures"):
                failed += 1
            elif case.get("result") == "SKIPPED":
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def main():
    testlog, results_dir = sys.argv[1], sys.argv[2]
    extra_failures = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    tests = []
    with open(testlog) as f:
        for line in f:
            line = line.strip()
            if line:
                tests.append(json.loads(line))
    reports = gtest_reports(results_dir)

    by_binary = collections.defaultdict(list)
    for t in tests:
        cmd = t.get("command") or [""]
        binary = os.path.basename(cmd[0])
        by_binary[binary].append(t)

    passed = failed = skipped = 0
    for binary, runs in by_binary.items():
        results = [r.get("result") for r in runs]
        bad_runs = sum(1 for r in results if r not in ("OK", "EXPECTEDFAIL", "SKIP"))
        if binary in reports and len(reports[binary]) > 0:
            case_failed = 0
            for report in reports[binary][: len(runs)]:
                p, fl, s = count_cases(report)
                passed += p
                skipped += s
                case_failed += fl
            failed += case_failed
            # a run that failed with no failing case to show for it (crash, timeout, exit code)
            failed += max(0, bad_runs - case_failed)
        else:
            for r in results:
                if r in ("OK", "EXPECTEDFAIL"):
                    passed += 1
                elif r == "SKIP":
                    skipped += 1
                else:
                    failed += 1
    failed += extra_failures
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
