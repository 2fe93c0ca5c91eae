#!/usr/bin/env bash
# Builds Ferry in release mode and runs the benchmarks against their baselines.
# Usage: bench/run.sh [startup] [steps] [logs]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -w /var/cache ]; then export CARGO_TARGET_DIR=/var/cache/ferry-target; else export CARGO_TARGET_DIR="$PWD/target"; fi
fi
cargo build --release -q -p ferry-cli
exec python3 bench/bench.py "$@"
