#!/usr/bin/env bash
# The README's main command: set up (idempotent), bring the lab up bare, boot a Debian 12
# daemon host on it and run every runbook there over SSH, as an operator does; the executed
# notebooks stay on the host as records (`opsbook demo --simulated`: the simulated host).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/opsbook demo "$@"
