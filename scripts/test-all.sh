#!/usr/bin/env bash
# The whole test run (README's test command, and CI's): system packages, type check, build,
# the tap suite, and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh || exit 1
echo "== type check (src, test, bench, examples)"
npx tsc -p tsconfig.json --noEmit || { echo "0 passed, 1 failed"; exit 1; }
echo "== build"
npx tsc -p tsconfig.build.json || { echo "0 passed, 1 failed"; exit 1; }
echo "== tests"
mkdir -p .tap
npx tap --reporter=tap 2>&1 | tee .tap/last-run.tap
status=${PIPESTATUS[0]}
# tap's summary line looks like: # { total: 95, pass: 93, fail: 2 }
summary=$(grep -E '^# \{ total:' .tap/last-run.tap | tail -n 1)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
skip=$(sed -nE 's/.*skip: ([0-9]+).*/\1/p' <<<"$summary")
pass=${pass:-0}
fail=${fail:-0}
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
if [ -n "${skip:-}" ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
exit "$status"
