#!/usr/bin/env bash
# The README's test command: set up (idempotent), then lint, type-check and run
# the whole suite, lab and browser tests included (they need root).
#
# With no arguments the suite runs as several pytest processes side by side: every test
# outside tests/lab, and the lab tests as one session per share of them (LAB_SESSIONS;
# tests/lab/conftest.py's session_of says which test is in which: every test is in one),
# each with a lab of its own (prefix BASE + the share's letter, BASE being
# $OPSBOOK_TEST_LAB_PREFIX, else obt). The lab tests spend most of their time waiting on
# boots, leases and deadlines, so the sessions fit into one another's waits instead of
# after them. Each session's output goes to artifacts/pytest-NAME.log and is printed when
# it ends; the run fails if any session failed or ran no test.
# With arguments: one pytest with them and nothing else (`./scripts/test.sh
# tests/unit/test_dns.py -x`), set up only when there is no .venv yet, so a test that
# needs no root runs as any user once the venv exists (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

# pytest's 5 means "no tests ran": that is a failure here, never a pass.
verdict() {
    if [ "$1" = 5 ]; then echo "pytest ($2) collected no tests" >&2; return 1; fi
    return "$1"
}

if [ "$#" -gt 0 ]; then
    [ -x .venv/bin/pytest ] || ./scripts/setup.sh
    echo "==> pytest $*"
    set +e; pytest "$@"; rc=$?; set -e
    verdict "$rc" "$*"
    exit $?
fi

./scripts/setup.sh
echo "==> ruff check"
ruff check opslib tests benchmarks
echo "==> ruff format --check"
ruff format --check opslib tests benchmarks
echo "==> mypy opslib"
mypy opslib
mkdir -p artifacts

LAB_SESSIONS=(booted:b bridging:r fleet:f simulated:s configured:c room:m)  # NAME:the letter of its lab prefix
base=${OPSBOOK_TEST_LAB_PREFIX:-obt}
base=${base:0:7}  # a lab prefix has at most 8 characters

# opsbook is installed on the first booted host of the run; the other sessions' hosts
# boot on that install, kept here (tests/lab/conftest.py), removed at the end
installs=$(mktemp -d /var/tmp/opsbook-test-installs.XXXXXX)
export OPSBOOK_TEST_INSTALLS=$installs

declare -A what log
# Interrupted: the sessions still running end too (SIGTERM), before their install goes.
finish() {
    for pid in "${!what[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait
    rm -rf "$installs"
}
trap finish EXIT
start() {  # start NAME [VAR=VALUE…] -- PYTEST-ARGS…: in the background, to its log
    local name=$1 out=artifacts/pytest-$1.log
    shift
    local env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    env "${env[@]}" pytest -p no:cacheprovider "$@" >"$out" 2>&1 &
    what[$!]=$name
    log[$!]=$out
    echo "==> pytest $name in the background ($out)"
}
start unit -- --ignore=tests/lab  # tests/unit and tests/integration
for session in "${LAB_SESSIONS[@]}"; do
    name=${session%:*}
    start "lab-$name" "OPSBOOK_TEST_LAB_SESSION=$name" "OPSBOOK_TEST_LAB_PREFIX=$base${session#*:}" \
        -- tests/lab --durations=25
done

failed=0
while [ "${#what[@]}" -gt 0 ]; do
    set +e
    wait -n -p pid "${!what[@]}"
    rc=$?
    set -e
    echo "==> pytest ${what[$pid]} ended (exit $rc): ${log[$pid]}"
    cat "${log[$pid]}"
    verdict "$rc" "${what[$pid]}" || { echo "pytest ${what[$pid]} failed (exit $rc)" >&2; failed=1; }
    unset "what[$pid]" "log[$pid]"
done
exit "$failed"
