#!/usr/bin/env bash
# What a subscription costs after its subscriber has gone: broker RSS growth over a fast
# fleet, with and without FILTERS one-driver filters subscribed once before it (one client,
# clean session, that leaves at once), fleetcast and Debian's mosquitto side by side, ROUNDS
# rounds. rumqttd keeps a log per filter ever subscribed (`[router] max_segment_count`
# segments of `max_segment_size` bytes) and appends every matching publish to it whether
# anyone still reads it or not; mosquitto keeps nothing for a QoS 0 subscription that ended.
# The fleet: DRIVERS drivers (the filters' topics among them) publishing every 10 ms for
# SECS seconds, 1 subscriber to all.
# Usage: bench/filter-logs.sh [ROUNDS]   (FILTERS=200 DRIVERS=200 SECS=60 BIN=target/release/fleetcast)
set -u
cd "$(dirname "$0")/.."
rounds=${1:-1} filters=${FILTERS:-200} drivers=${DRIVERS:-200} secs=${SECS:-60}
bin=${BIN:-target/release/fleetcast}
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
command -v mosquitto_sub >/dev/null || { echo "needs mosquitto_sub (apt-get install mosquitto-clients)" >&2; exit 1; }
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
[ "$filters" -le "$drivers" ] || { echo "FILTERS must be at most DRIVERS" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/mosquitto.sh
. bench/mosquitto.sh
serve() {
  rm -f "$work/out"
  "$bin" serve --config bench/fleetcast-bench.toml --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 \
    --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
  url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
# one LABEL N: the broker just started (pid, url); N filters subscribed once, then the fleet.
one() {
  local label=$1 n=$2 port=${url##*:} before after
  if [ "$n" -gt 0 ]; then
    local args=()
    for i in $(seq 0 $((n - 1))); do args+=(-t "$(printf 'drivers/lt-%06d/location' "$i")"); done
    # -W: leaves after 2 s (it gets nothing: no one publishes yet).
    mosquitto_sub -h 127.0.0.1 -p "$port" -i filter-logs-rider -W 2 "${args[@]}" >/dev/null 2>&1
  fi
  before=$(rss)
  rm -f "$work/r.json"
  "$bin" loadtest --broker "$url" --scenario fleet --connections "$drivers" --subscribers 1 \
    --interval 10ms --duration "${secs}s" --connect-rate 2000 --report "$work/r.json" >/dev/null 2>&1
  after=$(rss)
  kill "$pid"; wait "$pid" 2>/dev/null
  python3 - "$label" "$n" "$before" "$after" "$work/r.json" <<'PY'
import json, os, sys
label, n, before, after, report = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if not os.path.exists(report):
    sys.exit(print(label, 'no report: the run failed'))
r = json.load(open(report))
print(f"{label:<24} filters {n:>4}  published {r['published']:>9,}  lost {r['lost']:>6,}  "
      f"RSS {before / 1024:7.1f} -> {after / 1024:7.1f} MiB  growth {(after - before) / 1024:7.1f} MiB")
PY
}
for round in $(seq "$rounds"); do
  serve; one "round$round fleetcast" "$filters"
  serve; one "round$round fleetcast" 0
  mosq; one "round$round mosquitto" "$filters"
  mosq; one "round$round mosquitto" 0
done
