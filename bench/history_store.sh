#!/usr/bin/env bash
# Benchmark: what `serve --data` history costs. The history writer's CPU for 10,000 drivers
# at 1 fix/s in real time (thread "history-writer", from /proc/self/task) and the store's
# growth; then the store bytes of a driver-hour (500 drivers, an hour of fixes fed 100x
# faster). Prints figures; never run as a test.
# Usage: bench/history_store.sh [SECONDS of the 10,000-driver phase, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
export FLEETCAST_BENCH_SECS=${1:-60}
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --release --locked -q --test history_store_bench -- --ignored --nocapture 2>&1 \
  | grep -E '^bench'
