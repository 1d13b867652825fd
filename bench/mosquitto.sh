# Sourced by bench/ab.sh and bench/threads.sh: `mosq` starts Debian's mosquitto with
# bench/mosquitto.conf.in on a free loopback port, waits until it accepts, and sets `pid`
# and `url`. Needs `work` (a scratch directory) set by the caller. With MOSQ_NODELAY set it
# also sets `set_tcp_nodelay true` (Nagle off on client sockets, as fleetcast has it).
mosq() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  sed "s/PORT/$port/" bench/mosquitto.conf.in >"$work/mosq.conf"
  if [ -n "${MOSQ_NODELAY:-}" ]; then echo "set_tcp_nodelay true" >>"$work/mosq.conf"; fi
  mosquitto -c "$work/mosq.conf" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  url="mqtt://127.0.0.1:$port"
}
