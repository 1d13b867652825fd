#!/usr/bin/env bash
# Benchmark: what `serve --data` costs. The 10,000-driver fleet at 1 Hz (positions retained,
# as drivers publish them) against `fleetcast serve` without and with a data directory,
# alternating (off, on, off, on) so drift on this shared machine hits both; broker CPU,
# latency p99, loss, and with --data the store's flush times from /metrics. Prints figures
# (copy them to bench/RESULTS.md); never run as a test.
# Usage: bench/durability.sh [DRIVERS] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
drivers=${1:-10000}
secs=${2:-30}
rounds=${3:-2}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/fleetcast
work=$(mktemp -d)
fc=
trap '[ -n "$fc" ] && kill $fc 2>/dev/null; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load: loadtest --scenario fleet --connections $drivers --subscribers 1 --interval 1s --retain --duration ${secs}s"
for round in $(seq "$rounds"); do
  for mode in off on; do
    data=""; [ $mode = on ] && data="--data $work/data-$round"
    rm -f "$work/out"
    # shellcheck disable=SC2086
    $bin serve $data --config bench/fleetcast-bench.toml --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
    fc=$!
    for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
    url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
    http=$(sed -nE 's/^fleetcast ready .*http=([^ ]+).*/\1/p' "$work/out")
    $bin loadtest --broker "$url" --broker-pid $fc --scenario fleet --connections "$drivers" --subscribers 1 \
      --interval 1s --retain --duration "${secs}s" --connect-rate 2000 --report "$work/$mode-$round.json" >/dev/null
    curl -s "http://$http/metrics" >"$work/$mode-$round.metrics"
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$work/$mode-$round.json" "$work/$mode-$round.metrics" "$round" "$mode" "$load" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = {}
for line in open(sys.argv[2]):
    if line.startswith("fleetcast_store_flush_duration_seconds") and " " in line:
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
flush = ""
n = m.get("fleetcast_store_flush_duration_seconds_count")
if n:
    mean = m["fleetcast_store_flush_duration_seconds_sum"] / n * 1000
    le = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in m.items() if 'le="' in k and "+Inf" not in k)
    p99 = next((b for b, c in le if c >= 0.99 * n), float("inf")) * 1000
    flush = f", flushes {n:.0f} mean {mean:.1f} ms p99 <= {p99:g} ms"
lat = r.get("latency_ms") or {}
print(f"round {sys.argv[3]} --data {sys.argv[4]:>3}: published {r['published']}, lost {r['lost']}, "
      f"p99 {lat.get('p99', 0):.2f} ms, broker cpu {r.get('broker_cpu_percent', 0):.1f}%, rss {r.get('broker_rss_mib', 0):.0f} MiB{flush} (load average {sys.argv[5]})")
PY
    kill $fc; wait $fc 2>/dev/null || true; fc=
  done
done
