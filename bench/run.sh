#!/usr/bin/env bash
# Benchmark: fleetcast and Debian's mosquitto on loopback under the same loads, side by
# side, written to bench/RESULTS.md (JSON and HTML reports in bench/results/). Never run as a test.
# Usage: bench/run.sh [quick]   (quick: smaller sizes, to try the script)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
command -v mosquitto >/dev/null || { echo "needs Debian's mosquitto (apt-get install mosquitto)"; exit 1; }
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/fleetcast
out=bench/results
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.html "$out"/*.counted.txt "$out"/commands.txt
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_fleetcast() {
  # Removed first: the background start truncates it only once it runs, and the poll
  # below would otherwise read the previous broker's ready line (a dead port).
  rm -f "$work/fc.out"
  $bin serve --config bench/fleetcast-bench.toml --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/fc.out" 2>"$work/fc.err" &
  fc=$!; pids+=("$fc")
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/fc.out" 2>/dev/null && break; sleep 0.1; done
  fc_url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/fc.out")"
  fc_http=$(sed -nE 's/^fleetcast ready .*http=([^ ]+).*/\1/p' "$work/fc.out")
}
start_mosquitto() {
  port=$(free_port)
  sed "s/PORT/$port/" bench/mosquitto.conf.in >"$work/mosq.conf"
  mosquitto -c "$work/mosq.conf" >/dev/null 2>&1 &
  mq=$!; pids+=("$mq")
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  mq_url="mqtt://127.0.0.1:$port"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }

# run NAME BROKER_NAME URL PID ARGS...: one loadtest, its report kept as JSON and HTML.
run() {
  local name=$1 who=$2 url=$3 pid=$4; shift 4
  echo "== $name on $who: fleetcast loadtest --broker $url $*" | tee -a "$out/commands.txt"
  $bin loadtest --broker "$url" --broker-pid "$pid" --report "$out/$name.$who.json" --html "$out/$name.$who.html" "$@" | tee "$work/last.txt"
  if [ "$who" = fleetcast ]; then
    # What the broker counted: a loss the load tester saw is told apart from one nobody
    # counted (every message a subscriber does not get is in a dropped_total reason).
    curl -s "http://$fc_http/metrics" | grep -E '^fleetcast_(messages_dropped_total|messages_delivered_total|publishes_received_total|e2e_latency_seconds_count)' \
      | grep -v ' 0$' >"$out/$name.$who.counted.txt" || true
    sed 's/^/  broker: /' "$out/$name.$who.counted.txt"
  fi
}

# Each scenario runs against a fresh broker of each kind, one after the other.
each() {
  local name=$1; shift
  start_fleetcast; run "$name" fleetcast "$fc_url" "$fc" "$@"; stop "$fc"
  start_mosquitto; run "$name" mosquitto "$mq_url" "$mq" "$@"; stop "$mq"
}

if [ "$quick" = quick ]; then big=2000; fleet=1000; ceiling="1500"; secs=5s; pubs=100
else big=20000; fleet=10000; ceiling="15000 19800"; secs=30s; pubs=1000; fi

each throughput-1to1 --scenario throughput --connections 1 --subscribers 1 --payload-size 100 --duration 10s
each fleet-$fleet --scenario fleet --connections $fleet --subscribers 1 --interval 1s --duration $secs --connect-rate 2000
each fleet-$fleet-qos1 --scenario fleet --connections $fleet --subscribers 1 --interval 1s --duration $secs --connect-rate 2000 --qos 1
each throughput-${pubs}pub --scenario throughput --connections $pubs --subscribers 1 --duration 10s --connect-rate 2000
each storm-$fleet --scenario storm --connections $fleet --subscribers 0 --connect-rate 5000
each storm-$fleet-jitter --scenario storm --connections $fleet --subscribers 0 --connect-rate 5000 --jitter

# Idle: memory per connection, read from ps before and after (the load is split over two
# processes, each under its own 20,000 open-files limit).
idle() {
  local who=$1 url=$2 pid=$3
  local before; before=$(rss_kib "$pid")
  echo "== idle-$big on $who: fleetcast loadtest --broker $url --scenario idle --connections $big --procs 2" | tee -a "$out/commands.txt"
  $bin loadtest --broker "$url" --scenario idle --connections "$big" --subscribers 0 --procs 2 --connect-rate 5000 \
    --duration 10s --source-ips 127.0.0.1-127.0.0.50 --report "$out/idle-$big.$who.json" --html "$out/idle-$big.$who.html" | tee "$work/last.txt" &
  local lt=$!
  sleep 8
  local after; after=$(rss_kib "$pid")
  wait $lt
  python3 - "$out/idle-$big.$who.json" "$before" "$after" <<'PY'
import json, sys
path, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(path))
r["broker_rss_mib"] = after / 1024
r["broker_kib_per_connection"] = (after - before) / max(1, r["connected"])
json.dump(r, open(path, "w"), indent=2)
print(f"  broker rss {before/1024:.1f} -> {after/1024:.1f} MiB: {(after-before)/max(1,r['connected']):.1f} KiB per connection")
PY
}
start_fleetcast; idle fleetcast "$fc_url" "$fc"; stop "$fc"
start_mosquitto; idle mosquitto "$mq_url" "$mq"; stop "$mq"

# fleetcast's ceiling: the largest 1 Hz fleet with p99 <= 50 ms and no loss.
for n in $ceiling; do
  start_fleetcast
  run ceiling-$n fleetcast "$fc_url" "$fc" --scenario fleet --connections "$n" --subscribers 1 --interval 1s \
    --duration $secs --connect-rate 2000 --procs 2 --source-ips 127.0.0.1-127.0.0.50
  stop "$fc"
done

python3 bench/report.py "$out" > bench/RESULTS.md
echo "wrote bench/RESULTS.md"
