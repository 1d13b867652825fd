#!/usr/bin/env bash
# A long fleet against one `fleetcast serve`, nothing scraping /metrics: the broker's RSS
# every 15 s, its growth from 30 s to the end, and what the load tester lost. Memory that
# grows per message (and not per driver) shows here and in no short run.
# Usage: bench/soak.sh [SECS] [FLEET]   (defaults 180 and 5000; BIN=target/release/fleetcast,
#   SERVE_ARGS="--history-window 0" leaves out the tracks, which grow for their first hour)
set -u
cd "$(dirname "$0")/.."
secs=${1:-180} fleet=${2:-5000} bin=${BIN:-target/release/fleetcast}
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
# Growth is taken from the 30 s sample (connected and steady) to the last one in the load.
[ "$secs" -ge 45 ] || { echo "SECS: at least 45" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
"$bin" serve ${SERVE_ARGS:-} --config bench/fleetcast-bench.toml --mqtt 127.0.0.1:0 \
  --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); $bin serve ${SERVE_ARGS:-}; load: loadtest --scenario fleet --connections $fleet --interval 1s --duration ${secs}s"
"$bin" loadtest --broker "$url" --report "$work/r.json" --scenario fleet --connections "$fleet" \
  --subscribers 1 --interval 1s --duration "${secs}s" --connect-rate 2000 >/dev/null 2>&1 &
lt=$!
t=0
while kill -0 "$lt" 2>/dev/null; do
  sleep 15
  t=$((t + 15))
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "t=${t}s rss=${rss} KiB"
  [ "$t" -eq 30 ] && first=$rss
  [ "$t" -le $((secs + 5)) ] && last=$rss last_t=$t
done
wait "$lt"
python3 - "$work/r.json" "${first:-0}" "${last:-0}" "${last_t:-30}" "$fleet" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
first, last, last_t, fleet = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
span = max(last_t - 30, 1)
rate = (last - first) / span
print(f"rss 30 s -> {last_t} s: {first} -> {last} KiB, {rate:.1f} KiB/s, {rate * 1024 / fleet:.1f} bytes a fix")
print(f"published {r['published']} received {r['received']} lost {r['lost']} subscribers dropped {r.get('subscribers_dropped', 0)}")
PY
