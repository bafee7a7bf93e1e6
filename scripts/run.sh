#!/usr/bin/env bash
# Runs the sidecar for a developer: bootstrap, a Release build in build-release/, a private
# redis-server when SIDECAR_REDIS_URL is not set, then the sidecar until Ctrl-C or SIGTERM, which
# stop exactly the processes this script started.
#   SIDECAR_CONFIG       config file (default config/sidecar.yaml)
#   SIDECAR_REDIS_URL    use this Redis instead of starting one
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
config="${SIDECAR_CONFIG:-config/sidecar.yaml}"

"$repo_root/scripts/bootstrap.sh"
cmake -S "$repo_root" -B "$repo_root/build-release" -DCMAKE_BUILD_TYPE=Release
cmake --build "$repo_root/build-release" -j"$(nproc 2>/dev/null || echo 2)" --target sidecar

redis_pid=""
sidecar_pid=""
redis_dir=""

cleanup() {
  trap - INT TERM EXIT
  if [ -n "$sidecar_pid" ] && kill -0 "$sidecar_pid" 2>/dev/null; then
    kill -TERM "$sidecar_pid" 2>/dev/null || true
    # The sidecar drains within its shutdown deadline; wait for it, but not for ever.
    for _ in $(seq 1 150); do
      kill -0 "$sidecar_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$sidecar_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_dir" ]; then rm -rf "$redis_dir"; fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -z "${SIDECAR_REDIS_URL:-}" ]; then
  redis_port=6379
  if port_in_use "$redis_port"; then redis_port="$(free_port)"; fi
  redis_dir="$(mktemp -d -t sidecar-redis.XXXXXX)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$redis_dir" --logfile "$redis_dir/redis.log" &
  redis_pid=$!
  # Wait until Redis answers, for at most 10 seconds.
  for _ in $(seq 1 100); do
    if redis-cli -p "$redis_port" PING 2>/dev/null | grep -q PONG; then break; fi
    if ! kill -0 "$redis_pid" 2>/dev/null; then
      echo "run: redis-server exited; see $redis_dir/redis.log" >&2
      cat "$redis_dir/redis.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  redis-cli -p "$redis_port" PING >/dev/null
  export SIDECAR_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  echo "run: started redis-server pid $redis_pid on 127.0.0.1:$redis_port"
else
  redis_port="$(sed -E 's#^[a-z]+://([^@/]*@)?[^:/]+:?([0-9]*).*#\2#' <<<"$SIDECAR_REDIS_URL")"
  redis_port="${redis_port:-6379}"
fi

# The address to connect to comes from the config's top-level "listen" key.
listen="$(sed -nE 's/^listen:[[:space:]]*"?([^"#[:space:]]+)"?.*/\1/p' "$config" 2>/dev/null | head -1)"
listen="${listen:-127.0.0.1:8080}"
host="${listen%:*}"
port="${listen##*:}"
case "$host" in "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;; esac
cli_port=""
if [ "$redis_port" != "6379" ]; then cli_port="-p $redis_port "; fi

cat <<MSG
run: Redis at $SIDECAR_REDIS_URL
run: sidecar listening on http://$host:$port (health: http://$host:$port/health)
run: connect a client:
  /usr/bin/python3 -m websockets ws://$host:$port/ws/acme
run: publish to it:
  redis-cli ${cli_port}PUBLISH org:acme '{"type":"SYNC_SUCCESS","pfaId":"pfa-123"}'
MSG

"$repo_root/build-release/sidecar" --config "$config" &
sidecar_pid=$!
set +e
wait "$sidecar_pid"
rc=$?
sidecar_pid=""
exit "$rc"
