#!/usr/bin/env bash
# Every benchmark, side by side with its reference where there is one; each rewrites its own
# section of docs/benchmarks.md. Extra arguments go to every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests  # the cluster bench starts redis-server
for b in bench/room_bench.py bench/broker_bench.py bench/cluster_bench.py bench/agent_bench.py bench/agent_media_bench.py bench/engine_msg_bench.py bench/browser_bench.py bench/widget_bench.py bench/crypto_bench.py bench/hub_bench.py; do
  [ -f "$b" ] || continue
  echo "== $b"
  .venv/bin/python "$b" "$@"
done
