#!/usr/bin/env bash
# Soak test: the real sidecar for N minutes under churn, steady publishing to several rooms, SIGHUP
# reloads and one Redis restart, sampling RSS, open fds and message loss every 10 s. Fails on
# growth after warm-up, on loss outside the Redis outage window, or on a crash. The driver is
# test/soak/soak.py; it starts its own redis-server on a free 127.0.0.1 port.
# Usage: scripts/soak.sh [minutes, default 30]
#   SOAK_BIN=path        sidecar binary to soak (default build/sidecar, built when missing)
#   SOAK_ARGS="..."      extra driver options (--rate, --rooms, --steady-per-room, --churn-rate,
#                        --churn-max, --reload-every, --warmup, --seed)
#   SOAK_KEEP_LOG=path   keep the sidecar's log there
set -euo pipefail

minutes=${1:-30}
if ! [[ $minutes =~ ^[0-9]+$ ]] || ((minutes < 1 || minutes > 1440)); then
  echo "usage: $0 [minutes 1..1440]" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SOAK_BIN:-$root/build/sidecar}
if [[ -z ${SOAK_BIN:-} && ! -x $bin ]]; then
  echo "soak: $bin is missing; building it"
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$root/build" -j"$(nproc 2>/dev/null || echo 2)" --target sidecar
fi
[[ -x $bin ]] || { echo "soak: no sidecar binary at $bin" >&2; exit 1; }

# The driver notes the pids of the redis-server and sidecar it started; if the driver itself is
# killed before its own cleanup, the trap stops exactly those.
pidfile=$(mktemp -t sidecar-soak-pids.XXXXXX)
driver_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [[ -n $driver_pid ]] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  local pid
  for pid in $(cat "$pidfile" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$pidfile"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# shellcheck disable=SC2086 # SOAK_ARGS is a list of options
SOAK_PIDFILE=$pidfile /usr/bin/python3 -u "$root/test/soak/soak.py" --bin "$bin" \
  --minutes "$minutes" ${SOAK_ARGS:-} &
driver_pid=$!
set +e
wait "$driver_pid"
rc=$?
driver_pid=""
exit "$rc"
