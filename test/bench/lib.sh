# test/bench/lib.sh: what the bench scripts share (scripts/bench.sh, test/bench/idle_compare.sh,
# test/bench/cpu_compare.sh): where servers and the generator run, and how a process we started
# is waited for and stopped. Sourced, not run.

# Pinning needs two cores: the server on core 0, the generator and redis-server on core 1; with
# fewer, everything shares.
if [[ $(nproc) -ge 2 ]]; then PIN_SERVER="taskset -c 0"; PIN_GEN="taskset -c 1"
else PIN_SERVER=""; PIN_GEN=""; fi

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls until a TCP port accepts, for at most $2 seconds.
wait_port() {
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 0.05
  done
}

# Stops one process we started, by pid, and waits (bounded: 5 s, then SIGKILL) for it to go.
stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# start_redis NAME: a scratch directory (TMP), a redis-server beside the generator on a free port
# (RPORT, REDIS_PID), and an EXIT trap that stops it and the server in SERVER_PID (if any) and
# removes TMP. Exits the script if redis-server does not come up within 10 s.
start_redis() {
  TMP=$(mktemp -d "/tmp/sidecar-$1.XXXXXX")
  RPORT=$(free_port)
  $PIN_GEN redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
    >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  SERVER_PID=""
  trap '[[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"; stop_pid "$REDIS_PID"; rm -rf "$TMP"' EXIT
  wait_port "$RPORT" 10 || { echo "redis-server did not start" >&2; exit 1; }
}
