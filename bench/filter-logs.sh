#!/usr/bin/env bash
# What a subscription's log costs: broker RSS growth over a fast fleet, with FILTERS
# one-driver filters subscribed once before it by a client that leaves at once (`gone`),
# with them held all along by a client that reads everything (`held`), and without them,
# fleetcast and Debian's mosquitto side by side, ROUNDS rounds. rumqttd keeps a log per
# filter (`[router] max_segment_count` segments of `max_segment_size` bytes); as published
# it kept every matching publish, read or not, up to that size, and a filter nobody held
# for the life of the process; mosquitto keeps nothing for a QoS 0 subscription once it has
# sent.
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
# one LABEL N MODE: the broker just started (pid, url); N filters subscribed (MODE gone:
# once, by a client that leaves at once; held: by one that stays and reads), then the fleet.
one() {
  local label=$1 n=$2 mode=${3:-gone} port=${url##*:} before after rider=
  if [ "$n" -gt 0 ]; then
    local args=()
    for i in $(seq 0 $((n - 1))); do args+=(-t "$(printf 'drivers/lt-%06d/location' "$i")"); done
    if [ "$mode" = held ]; then
      # Its SUBACK seen (-d) before the fleet starts; what it reads is thrown away.
      rm -f "$work/ready"
      mosquitto_sub -d -h 127.0.0.1 -p "$port" -i filter-logs-rider "${args[@]}" \
        > >(awk -v ready="$work/ready" '/SUBACK/ { print > ready; fflush(ready) }') 2>&1 &
      rider=$!
      for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
    else
      # -W: leaves after 2 s (it gets nothing: no one publishes yet).
      mosquitto_sub -h 127.0.0.1 -p "$port" -i filter-logs-rider -W 2 "${args[@]}" >/dev/null 2>&1
    fi
  fi
  before=$(rss)
  rm -f "$work/r.json"
  "$bin" loadtest --broker "$url" --scenario fleet --connections "$drivers" --subscribers 1 \
    --interval 10ms --duration "${secs}s" --connect-rate 2000 --report "$work/r.json" >/dev/null 2>&1
  after=$(rss)
  [ -n "$rider" ] && { kill "$rider"; wait "$rider" 2>/dev/null; }
  kill "$pid"; wait "$pid" 2>/dev/null
  python3 - "$label" "$n" "$before" "$after" "$work/r.json" "$mode" <<'PY'
import json, os, sys
label, n, before, after, report, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
if not os.path.exists(report):
    sys.exit(print(label, 'no report: the run failed'))
r = json.load(open(report))
print(f"{label:<24} filters {n:>4} {mode if n else '-':<4}  published {r['published']:>9,}  lost {r['lost']:>6,}  "
      f"RSS {before / 1024:7.1f} -> {after / 1024:7.1f} MiB  growth {(after - before) / 1024:7.1f} MiB")
PY
}
for round in $(seq "$rounds"); do
  serve; one "round$round fleetcast" "$filters" gone
  serve; one "round$round fleetcast" "$filters" held
  serve; one "round$round fleetcast" 0
  mosq; one "round$round mosquitto" "$filters" gone
  mosq; one "round$round mosquitto" "$filters" held
  mosq; one "round$round mosquitto" 0
done
