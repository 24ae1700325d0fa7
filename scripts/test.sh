#!/usr/bin/env bash
# The README's test command: set up (idempotent), then lint, type-check and run
# the whole suite, lab and browser tests included (they need root).
#
# With no arguments the suite runs as two pytest processes side by side: the lab tests
# (tests/lab, one lab and one booted host per session, in their order) and every other
# test. The lab tests spend most of their time waiting on boots, leases and deadlines,
# so the other tests fit into that time instead of after it. The other tests' output
# goes to artifacts/pytest-unit.log and is printed once the lab tests are done.
# With arguments: one pytest with them (`./scripts/test.sh tests/test_dns.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff check"
ruff check opslib tests benchmarks
echo "==> ruff format --check"
ruff format --check opslib tests benchmarks
echo "==> mypy opslib"
mypy opslib
mkdir -p artifacts

# pytest's 5 means "no tests ran": that is a failure here, never a pass.
verdict() {
    if [ "$1" = 5 ]; then echo "pytest ($2) collected no tests" >&2; return 1; fi
    return "$1"
}

if [ "$#" -gt 0 ]; then
    echo "==> pytest $*"
    set +e; pytest "$@"; rc=$?; set -e
    verdict "$rc" "$*"
    exit $?
fi

unit_log=artifacts/pytest-unit.log
echo "==> pytest (all but the lab tests, in the background: $unit_log)"
pytest -p no:cacheprovider --ignore=tests/lab >"$unit_log" 2>&1 &
unit_pid=$!
echo "==> pytest tests/lab"
set +e
pytest tests/lab
lab_rc=$?
wait "$unit_pid"
unit_rc=$?
set -e
echo "==> pytest (all but the lab tests): $unit_log"
cat "$unit_log"
failed=0
verdict "$lab_rc" "tests/lab" || { echo "the lab tests failed (exit $lab_rc)" >&2; failed=1; }
verdict "$unit_rc" "all but tests/lab" || { echo "the other tests failed (exit $unit_rc)" >&2; failed=1; }
exit "$failed"
