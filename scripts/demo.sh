#!/usr/bin/env bash
# The README's main command: set up (idempotent), bring the lab up bare and run
# every runbook headless against it, leaving executed notebooks under records/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/opsbook demo "$@"
