#!/usr/bin/env bash
# The main job: set up (idempotent), build the bundle if needed, and run the local server with the
# demo page on embedded defaults. Extra arguments go to `kibitz serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/kibitz serve "$@"
