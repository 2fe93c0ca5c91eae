#!/usr/bin/env bash
# Builds Ferry in release mode and runs the benchmarks against their baselines.
# Usage: bench/run.sh [startup] [steps] [logs] [logs-shm] [containers] [images] — ferry run
#        bench/run.sh serve [latency] [memory] [intake] [list] [deliver] [sandbox] [metrics] — ferry serve
#        bench/run.sh ui [render] [assets] [biglog] [live] — the web UI (Chromium for biglog, live)
#        bench/run.sh infra [terraform] [swarm] — provisioning (Terraform at /usr/local/bin/terraform or FERRY_TERRAFORM; a swarm)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -w /var/cache ]; then export CARGO_TARGET_DIR=/var/cache/ferry-target; else export CARGO_TARGET_DIR="$PWD/target"; fi
fi
cargo build --release -q -p ferry-cli
if [ "${1:-}" = serve ]; then
  shift
  exec python3 bench/serve.py "$@"
fi
if [ "${1:-}" = ui ]; then
  shift
  exec python3 bench/ui.py "$@"
fi
if [ "${1:-}" = infra ]; then
  shift
  exec python3 bench/infra.py "$@"
fi
exec python3 bench/bench.py "$@"
