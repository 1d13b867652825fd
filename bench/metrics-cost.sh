#!/usr/bin/env bash
# Benchmark: what Prometheus metrics cost the broker. The same throughput load against
# `fleetcast serve` with metrics on and with --no-metrics, alternating (on, off, on, off) so
# drift on this shared machine hits both. Prints figures; never run as a test.
# Usage: bench/metrics-cost.sh [PUBLISHERS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
pubs=${1:-200}
secs=${2:-10}
cargo build --release --quiet
bin=$PWD/target/release/fleetcast
work=$(mktemp -d)
trap 'kill $fc 2>/dev/null || true; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load: loadtest --scenario throughput --connections $pubs --subscribers 1 --duration ${secs}s"
for round in 1 2; do
  for mode in on off; do
    flag=""; [ $mode = off ] && flag="--no-metrics"
    $bin serve $flag --config bench/fleetcast-bench.toml --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
    fc=$!
    for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
    url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
    $bin loadtest --broker "$url" --broker-pid $fc --scenario throughput --connections "$pubs" --subscribers 1 \
      --duration "${secs}s" --connect-rate 2000 --report "$work/$mode-$round.json" >/dev/null
    python3 -c "import json;r=json.load(open('$work/$mode-$round.json'));print(f\"round $round metrics $mode: received {r['received_per_s']:,.0f}/s, lost {r['lost']}, broker cpu {r['broker_cpu_percent']:.0f}%\")"
    kill $fc; wait $fc 2>/dev/null || true
  done
done
python3 - "$work" <<'PY'
import json, sys, glob
w = sys.argv[1]
rate = lambda m: sum(json.load(open(p))["received_per_s"] for p in glob.glob(f"{w}/{m}-*.json")) / 2
on, off = rate("on"), rate("off")
print(f"mean received/s: metrics on {on:,.0f}, off {off:,.0f}; on/off = {on/off:.3f} ({(1-on/off)*100:+.1f}% cost)")
PY
