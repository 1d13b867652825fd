#!/usr/bin/env bash
# A/B of two fleetcast builds (and Debian's mosquitto) on the fleet and throughput
# scenarios, alternating, ROUNDS rounds, so a change's cost shows beside the machine's noise.
# FLEET (default 5000) drivers at 1 Hz for 20 s, at QoS 0 (`fleet`) and at QoS 1 (`fleetq1`,
# the subscriber too): lost, p99 and broker CPU are the figures. SCENARIOS picks some of
# `fleet fleetq1 1to1 1000pub` (all by default).
# After each fleetcast run its /metrics splits what was lost: `unread` (published, never
# read by the broker: still in the publishers' sockets when they closed), `counted`
# (fleetcast_messages_dropped_total of every reason but the map's own), `unreceived`
# (written to the subscriber, fleetcast_messages_delivered_total, but not read by it before
# the loadtest stopped) and `uncounted` (the rest: lost and never accounted for; it should
# be 0); `map_missed` is what the dashboard's map did not take (its own reasons, counted;
# not a subscriber's loss). mosquitto runs twice: as Debian ships it, and with
# `set_tcp_nodelay true` (`mosquitto-nd`), the fair reference for latency (without it,
# where the kernel delays ACKs, its p99 is the 40 ms ACK timer).
# Usage: bench/ab.sh OLD_BIN OLD_CONFIG NEW_BIN NEW_CONFIG [ROUNDS]
#   e.g. git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release)
#        bench/ab.sh /tmp/old/target/release/fleetcast OLD.toml target/release/fleetcast bench/fleetcast-bench.toml
# (an older build may not know newer config keys: give it its own config file).
set -u
cd "$(dirname "$0")/.."
old=$1 old_cfg=$2 new=$3 new_cfg=$4 rounds=${5:-2} fleet=${FLEET:-5000}
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
serve() {
  rm -f "$work/out"
  $1 serve --config "$2" --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
  url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
  http=$(sed -nE 's/^fleetcast ready .*http=([^ ]+).*/\1/p' "$work/out")
}
# shellcheck source=bench/mosquitto.sh
. bench/mosquitto.sh
one() {
  local label=$1; shift
  # A run that writes no report (e.g. the broker never started) must not reuse the last one.
  rm -f "$work/r.json"
  $new loadtest --broker "$url" --broker-pid "$pid" --report "$work/r.json" "$@" >/dev/null 2>&1
  rm -f "$work/metrics"
  # Only a fleetcast run set it (serve); cleared so the next run (mosquitto) reads none.
  if [ -n "${http:-}" ]; then
    python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://$http/metrics', timeout=10).read().decode())" >"$work/metrics" 2>/dev/null
  fi
  http=
  kill "$pid"; wait "$pid" 2>/dev/null
  python3 - "$label" "$work/r.json" "$work/metrics" <<'PY'
import json, os, re, sys
label, report, metrics = sys.argv[1:4]
if not os.path.exists(report):
    sys.exit(print(label, 'no report: the run failed (is the broker installed and starting?)'))
d = json.load(open(report))
line = [label, 'published', d['published'], 'received', d['received'], 'lost', d['lost'],
        'p99_ms', round((d.get('latency_ms') or {}).get('p99') or 0, 2),
        'broker_cpu%', round(d.get('broker_cpu_percent') or 0, 1)]
if os.path.exists(metrics):
    text = open(metrics).read()
    def value(name, labels=''):
        m = re.search(r'^' + re.escape(name + labels) + r' (\S+)$', text, re.M)
        return int(float(m.group(1))) if m else None
    read = value('fleetcast_publishes_received_total')
    delivered = value('fleetcast_messages_delivered_total')
    # Every reason but the map's own (board_full, bridge_unreadable, map_behind), which
    # are not a subscriber's losses; what the map missed is printed on its own.
    mine = ('board_full', 'bridge_unreadable', 'map_behind')
    drops = re.findall(
        r'^fleetcast_messages_dropped_total\{reason="([^"]+)"\} (\S+)$', text, re.M)
    counts = [int(float(n)) for reason, n in drops if reason not in mine]
    map_missed = sum(int(float(n)) for reason, n in drops if reason in mine)
    if read is None or delivered is None or not counts:
        line += ['metrics', 'unreadable']
    else:
        unread = d['published'] - read
        counted = sum(counts)
        # Written to the subscriber's socket but never read by it (a tail still in flight
        # when the loadtest stopped reading); the subscriber is the only client reading.
        unreceived = max(0, delivered - d['received'])
        line += ['unread', unread, 'counted', counted, 'unreceived', unreceived,
                 'uncounted', d['lost'] - unread - counted - unreceived,
                 'map_missed', map_missed]
        if counted:
            line += ['reasons', ','.join(f'{r}={int(float(n))}' for r, n in drops
                                         if r not in mine and float(n) > 0)]
print(*line)
PY
}
for round in $(seq "$rounds"); do
  for s in ${SCENARIOS:-fleet fleetq1 1to1 1000pub}; do
    case $s in
      fleet) args="--scenario fleet --connections $fleet --subscribers 1 --interval 1s --duration 20s --connect-rate 2000" ;;
      fleetq1) args="--scenario fleet --connections $fleet --subscribers 1 --interval 1s --duration 20s --connect-rate 2000 --qos 1" ;;
      1to1) args="--scenario throughput --connections 1 --subscribers 1 --payload-size 100 --duration 10s" ;;
      *) args="--scenario throughput --connections 1000 --subscribers 1 --duration 10s --connect-rate 2000" ;;
    esac
    # shellcheck disable=SC2086
    { serve "$old" "$old_cfg"; one "round$round $s old" $args; }
    # shellcheck disable=SC2086
    { serve "$new" "$new_cfg"; one "round$round $s new" $args; }
    # shellcheck disable=SC2086
    { mosq; one "round$round $s mosquitto" $args; }
    # shellcheck disable=SC2086
    { MOSQ_NODELAY=1 mosq; one "round$round $s mosquitto-nd" $args; }
  done
done
