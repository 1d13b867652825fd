#!/usr/bin/env bash
# Benchmark: the simulator's own CPU and memory for a large fleet at 1 Hz against fleetcast.
# Prints figures; it is never run as a test. Usage: bench/simulator.sh [DRIVERS] [SECONDS]
# Target (issue 3): 10,000 drivers under 25% of one core and under 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
drivers=${1:-10000}
seconds=${2:-90}
cargo build --release --quiet
bin=target/release/fleetcast
log=$(mktemp -d)
trap 'kill $broker 2>/dev/null || true; rm -rf "$log"' EXIT

$bin serve --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$log/serve.out" 2>"$log/serve.err" &
broker=$!
for _ in $(seq 100); do grep -q '^fleetcast ready' "$log/serve.out" && break; sleep 0.1; done
mqtt=$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$log/serve.out")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "command: $bin simulate --broker mqtt://$mqtt --drivers $drivers --duration ${seconds}s --report-every 10s"
$bin simulate --broker "mqtt://$mqtt" --drivers "$drivers" --duration "${seconds}s" --report-every 10s
b=$(ps -o rss=,time= -p "$broker")
echo "broker at the end: rss=$(echo "$b" | awk '{printf "%.1fMiB", $1/1024}') cpu-time=$(echo "$b" | awk '{print $2}')"
echo "The steady-state cost is the last progress lines' cpu= and rss= (after connected=$drivers/$drivers)."
