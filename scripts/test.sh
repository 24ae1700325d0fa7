#!/usr/bin/env bash
# The README's test command: set up (idempotent), then lint, type-check and run
# the whole suite, lab and browser tests included (they need root).
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
echo "==> pytest"
mkdir -p artifacts
set +e
pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests ran": that is a failure here, never a pass.
if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
