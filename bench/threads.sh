#!/usr/bin/env bash
# Where a steady fleet's broker CPU goes, thread by thread: context switches a second and
# % of a core per thread name, split into user and kernel time, over SECS seconds of FLEET drivers at 1 Hz (1 subscriber),
# for fleetcast as built (connections on their own threads, `[runtime] io_threads`), the
# same with connections on the shared tokio runtime (`serve --io-threads 0`), that on one
# tokio worker (`--io-threads 0 --workers 1`), the default with one tokio worker
# (`--workers 1`), the default with no coalescing window (`[router] coalesce_window_us =
# 0`), and Debian's mosquitto as shipped and with `set_tcp_nodelay true` (mosquitto-nd:
# its p99 without the kernel's delayed ACKs), alternating, ROUNDS rounds. Read from
# /proc/PID/task/*/{status,stat}.
# Usage: bench/threads.sh [ROUNDS]   (FLEET=5000 SECS=8 BIN=target/release/fleetcast)
set -u
cd "$(dirname "$0")/.."
rounds=${1:-2} fleet=${FLEET:-5000} secs=${SECS:-8} bin=${BIN:-target/release/fleetcast}
command -v mosquitto >/dev/null || PATH=$PATH:/usr/sbin
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The bench settings with no coalescing window.
{ cat bench/fleetcast-bench.toml; printf '\n[router]\ncoalesce_window_us = 0\n'; } >"$work/nowindow.toml"
serve() {
  local config=bench/fleetcast-bench.toml
  if [ "${1:-}" = nowindow ]; then config=$work/nowindow.toml; shift; fi
  rm -f "$work/out"
  "$bin" serve "$@" --config "$config" --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 \
    --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
  url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
}
# shellcheck source=bench/mosquitto.sh
. bench/mosquitto.sh
# Per thread name: voluntary + involuntary switches, user ticks, system ticks.
snap() {
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" \
      "$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")" \
      "$(awk '{print $14, $15}' "$t/stat")"
  done 2>/dev/null |
    awk '{c[$1] += $2; u[$1] += $3; k[$1] += $4} END {for (n in c) print n, c[n], u[n], k[n]}' | sort
}
one() {
  local label=$1
  rm -f "$work/r.json"  # a failed run must not report the last run's figures
  "$bin" loadtest --broker "$url" --broker-pid "$pid" --report "$work/r.json" --scenario fleet \
    --connections "$fleet" --subscribers 1 --interval 1s --duration 20s --connect-rate 2000 \
    >/dev/null 2>&1 &
  local lt=$!
  # Connected and steady: 5,000 drivers connect in 2.5 s.
  sleep 8
  snap >"$work/a"
  sleep "$secs"
  snap >"$work/b"
  wait "$lt"
  kill "$pid"; wait "$pid" 2>/dev/null
  join "$work/a" "$work/b" | awk -v s="$secs" -v hz="$tick" -v l="$label" '
    { sw = ($5 - $2) / s; us = 100 * ($6 - $3) / hz / s; sy = 100 * ($7 - $4) / hz / s
      tsw += sw; tus += us; tsy += sy
      if (sw > 0 || us + sy > 0) printf "%s  %-18s %7.0f switches/s %6.1f%% cpu (user %.1f, kernel %.1f)\n", l, $1, sw, us + sy, us, sy }
    END { printf "%s  %-18s %7.0f switches/s %6.1f%% cpu (user %.1f, kernel %.1f)\n", l, "(all)", tsw, tus + tsy, tus, tsy }'
  python3 -c "import json; d=json.load(open('$work/r.json')); print('$label  received', d['received'], 'lost', d['lost'], 'p99_ms', round((d.get('latency_ms') or {}).get('p99') or 0, 2), 'broker_cpu%', round(d.get('broker_cpu_percent') or 0, 1))"
}
for round in $(seq "$rounds"); do
  serve; one "round$round fleetcast"
  serve --io-threads 0; one "round$round shared-runtime"
  serve --io-threads 0 --workers 1; one "round$round shared-1-worker"
  serve --workers 1; one "round$round 1-worker"
  serve nowindow; one "round$round no-window"
  mosq; one "round$round mosquitto"
  MOSQ_NODELAY=1 mosq; one "round$round mosquitto-nd"
done
