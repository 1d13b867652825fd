#!/usr/bin/env bash
# Benchmark: server-side aggregation. 20 browsers zoomed out over 20,000 drivers (each
# 1 fix/s, fed straight into the board), aggregation off then on: the bridge's CPU (its
# runtime's one worker thread, from /proc/self/task) and the bytes each browser gets.
# Also what an hour of one driver's history costs in memory. Prints figures; never run as
# a test. Usage: bench/aggregation.sh [SECONDS per phase, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
export FLEETCAST_BENCH_SECS=${1:-10}
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --release --locked -q -p fleetcast-dashboard history_memory_per_driver_hour -- --nocapture 2>&1 \
  | grep '^history:'
cargo test --release --locked -q --test aggregation bench_20_browsers_over_20000_drivers -- --ignored --nocapture 2>&1 \
  | grep -E '^(bench|  )'
