#!/usr/bin/env bash
# The README's test command: set up (idempotent), then lint, type-check and run
# the whole suite, lab and browser tests included (they need root).
#
# With no arguments the suite runs as four pytest processes side by side: the lab tests
# (tests/lab) as three sessions, each with a lab of its own (prefix BASE + a letter, BASE
# being $OPSBOOK_TEST_LAB_PREFIX, else obt), and every other test. The lab sessions:
#   b  the booted daemon host's modules (they share one boot: LAB_BOOTED below),
#   f  the fleet's (three booted hosts of its own: LAB_FLEET),
#   s  every other module of tests/lab (the simulated host's), so that none is left out.
# Each session keeps conftest's order within it. The lab tests spend most of their time
# waiting on boots, leases and deadlines, so the sessions (and the other tests) fit into
# one another's waits instead of after them. Each session's output goes to
# artifacts/pytest-*.log and is printed when it ends; the run fails if any failed.
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

LAB_BOOTED=(tests/lab/test_15_booted_host.py tests/lab/test_16_booted_host_ops.py
    tests/lab/test_17_forward_bridge_ssh.py tests/lab/test_19_runbooks_on_booted_host.py
    tests/lab/test_97_browser_booted_host.py)
LAB_FLEET=(tests/lab/test_18_fleet.py)
LAB_SIMULATED=()
for module in tests/lab/test_*.py; do
    case " ${LAB_BOOTED[*]} ${LAB_FLEET[*]} " in
        *" $module "*) ;;
        *) LAB_SIMULATED+=("$module") ;;
    esac
done
base=${OPSBOOK_TEST_LAB_PREFIX:-obt}
base=${base:0:7}  # a lab prefix has at most 8 characters

declare -A what log
start() {  # start NAME LOG ENV… -- PYTEST-ARGS…
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
start unit -- --ignore=tests/lab
start lab-booted "OPSBOOK_TEST_LAB_PREFIX=${base}b" -- "${LAB_BOOTED[@]}"
start lab-fleet "OPSBOOK_TEST_LAB_PREFIX=${base}f" -- "${LAB_FLEET[@]}"
start lab-simulated "OPSBOOK_TEST_LAB_PREFIX=${base}s" -- "${LAB_SIMULATED[@]}"

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
