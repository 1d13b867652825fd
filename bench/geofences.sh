#!/usr/bin/env bash
# What geofences cost the whole broker: the fleet scenario (FLEET drivers at 1 Hz, 20 s, one
# subscriber) against one fleetcast build with geofences off and with 1,000 fences on,
# alternating, ROUNDS rounds. Prints lost, p99 and broker CPU for each run.
# Usage: bench/geofences.sh BIN [ROUNDS]   (BIN: a release build of fleetcast)
set -u
cd "$(dirname "$0")/.."
bin=$1 rounds=${2:-2} fleet=${FLEET:-10000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/fences.geojson" <<'PY'
import json, random, sys
random.seed(7)
features = []
for i in range(1000):
    lat, lon = 60.10 + random.random() * 0.18, 24.80 + random.random() * 0.36
    side = 0.002 + random.random() * 0.006
    ring = [[lon, lat], [lon + 2 * side, lat], [lon + 2 * side, lat + side], [lon, lat + side], [lon, lat]]
    features.append({"type": "Feature", "properties": {"name": f"f{i}"},
                     "geometry": {"type": "Polygon", "coordinates": [ring]}})
json.dump({"type": "FeatureCollection", "features": features}, open(sys.argv[1], "w"))
PY
cp bench/fleetcast-bench.toml "$work/off.toml"
{ cat bench/fleetcast-bench.toml; printf '\n[geofences]\nfile = "%s"\n' "$work/fences.geojson"; } >"$work/on.toml"
run() {
  local label=$1 cfg=$2
  rm -f "$work/out"
  "$bin" serve --config "$cfg" --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 >"$work/out" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do grep -q '^fleetcast ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
  local url="mqtt://$(sed -nE 's/^fleetcast ready mqtt=([^ ]+).*/\1/p' "$work/out")"
  "$bin" loadtest --broker "$url" --broker-pid "$pid" --report "$work/r.json" \
    --scenario fleet --connections "$fleet" --subscribers 1 --interval 1s --duration 20s --connect-rate 2000 >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null
  python3 -c "import json; d=json.load(open('$work/r.json')); print('$label', 'published', d['published'], 'lost', d['lost'], 'p99_ms', round((d.get('latency_ms') or {}).get('p99') or 0, 2), 'broker_cpu%', round(d.get('broker_cpu_percent') or 0, 1))"
}
for round in $(seq "$rounds"); do
  run "round$round geofences-off" "$work/off.toml"
  run "round$round geofences-1000" "$work/on.toml"
done
