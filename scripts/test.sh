#!/usr/bin/env bash
# Every test: set-up (idempotent), lint and types, unit tests, real-browser end-to-end tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k room -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
echo "== ruff"
.venv/bin/ruff check engine agent server tests bench build apps
echo "== mypy --strict"
.venv/bin/mypy --strict engine/kibitz agent/kibitz_agent server/kibitz_server apps/whist/whist apps/whist/kibitzer.py
echo "== pytest"
.venv/bin/python -m pytest -q -rs --durations=15 -p no:cacheprovider "$@"  # -rs: every skip says why; the 15 slowest tests
