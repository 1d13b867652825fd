#!/usr/bin/env bash
# A client that waits for each answer: N QoS 1 publishes with one in flight
# (`mosquitto_pub -q 1 -M 1 -l`), on fleetcast BIN (with CONFIG) and on Debian's mosquitto
# (Nagle off, the fair reference for a round trip), ROUNDS rounds alternating. Prints the
# seconds and publishes a second of each run. A connection thread's pause before it parks
# (`[runtime] io_coalesce_us`) must not slow this one (bench/SUMMARY.md, 2026-12-07).
# Usage: bench/inflight1.sh [BIN] [CONFIG] [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/fleetcast} cfg=${2:-bench/fleetcast-bench.toml}
n=${3:-2000} rounds=${4:-2}
command -v mosquitto_pub >/dev/null || { echo "needs mosquitto_pub (apt-get install mosquitto-clients)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/mosquitto.sh
source bench/mosquitto.sh
seq "$n" | sed 's/^/m/' >"$work/lines"

# Times the publishes against 127.0.0.1:$1 and prints "NAME seconds rate".
publish() {
  local start end
  start=$(date +%s.%N)
  mosquitto_pub -h 127.0.0.1 -p "$1" -q 1 -M 1 -t bench/inflight1 -i "inflight1-$$" -l <"$work/lines"
  end=$(date +%s.%N)
  python3 -c "print('round $3 $2 publishes $n seconds %.2f per_s %.0f' % ($end - $start, $n / ($end - $start)))"
}

for r in $(seq "$rounds"); do
  "$bin" serve --config "$cfg" --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -nE 's/^fleetcast ready mqtt=[^ ]*:([0-9]+).*/\1/p' "$work/out")
  publish "$port" fleetcast "$r"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  MOSQ_NODELAY=1 mosq
  publish "${url##*:}" mosquitto-nd "$r"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
