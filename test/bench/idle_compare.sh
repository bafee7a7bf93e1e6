#!/usr/bin/env bash
# test/bench/idle_compare.sh: what idle connections cost, for several sidecar binaries back to
# back in one sitting (before/after a change), with scripts/bench.sh's load generator and W3:
# RSS per idle connection at each count of IDLE_COUNTS, then the server's CPU (utime + stime
# from /proc/PID/stat) over IDLE_SECONDS with the last count held open and idle.
#
#   test/bench/idle_compare.sh LOADGEN SIDECAR [SIDECAR...]
#   IDLE_COUNTS ["10000 19000"], IDLE_SECONDS [60], IDLE_ROOMS [100], IDLE_REPEAT [1],
#   IDLE_HEARTBEAT_MS [the default, 25000]: a longer one leaves only the deadline bookkeeping,
#   IDLE_OFFERS ["plain"]: "plain deflate" runs every binary twice, the second time with clients
#   that offer permessage-deflate as browsers do (the sidecar agrees to it by default)
#
# Each run gets a fresh sidecar (pinned to core 0) and the generator runs as its own process on
# core 1 with redis-server, so 19,000 clients fit the 20,000-descriptor limit of each process.
# Bounded: every run ends within the generator's connect timeout plus IDLE_SECONDS.
# The generator's JSON lines go to IDLE_OUT [/tmp/idle_compare.jsonl]. "anon" is RssAnon: VmRSS
# without the code pages the first handshakes touch (about 2 MiB, whatever the count).
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,15p' "$0"; exit 2; }
LOADGEN=$1; shift
COUNTS=${IDLE_COUNTS:-10000 19000}
IDLE_S=${IDLE_SECONDS:-60}
ROOMS=${IDLE_ROOMS:-100}
REPEAT=${IDLE_REPEAT:-1}
OUT=${IDLE_OUT:-/tmp/idle_compare.jsonl}
OFFERS=${IDLE_OFFERS:-plain}
: >"$OUT"
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

start_redis idle

# run BIN COUNT IDLE_SECONDS OFFER: one fresh sidecar, one generator run; prints its JSON line.
run() {
  local bin=$1 count=$2 idle=$3 offer=$4 port
  local extra=()
  [[ $offer == deflate ]] && extra=(--deflate)
  port=$(free_port)
  cat >"$TMP/sidecar.yaml" <<EOF
listen: "127.0.0.1:$port"
redis: { url: "redis://127.0.0.1:$RPORT/0" }
routes: [ { path: "/ws/{org}", channel: "org:{org}" } ]
limits: { max_connections: 100000 }
log: { level: warn }
EOF
  [[ -n ${IDLE_HEARTBEAT_MS:-} ]] && echo "websocket: { heartbeat_ms: $IDLE_HEARTBEAT_MS }" >>"$TMP/sidecar.yaml"
  $PIN_SERVER "$bin" --config "$TMP/sidecar.yaml" >>"$TMP/sidecar.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$port" 15 || { echo '{}'; stop_pid "$SERVER_PID"; SERVER_PID=""; return; }
  $PIN_GEN "$LOADGEN" --url "ws://127.0.0.1:$port/ws/{room}" --publish "redis://127.0.0.1:$RPORT" \
    --server-pid "$SERVER_PID" --connections "$count" --rooms "$ROOMS" --idle-seconds "$idle" \
    "${extra[@]}" --label idle 2>&1 | grep '^{' | tail -1 || echo '{}'
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}

field() { /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1] or "{}"); print(r.get(sys.argv[2], "n/a"))' "$1" "$2"; }

echo "idle_compare: $(date -u +%Y-%m-%dT%H:%M:%SZ), heartbeat_ms ${IDLE_HEARTBEAT_MS:-default}, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
last=${COUNTS##* }
for ((r = 1; r <= REPEAT; r++)); do
  for bin in "$@"; do
    for offer in $OFFERS; do
      line="$bin ($offer):"
      for n in $COUNTS; do
        idle=0; [[ $n == "$last" ]] && idle=$IDLE_S
        json=$(run "$bin" "$n" "$idle" "$offer")
        echo "$json" >>"$OUT"
        line+=" at $n: $(field "$json" anon_per_conn_kb) KiB anon / $(field "$json" rss_per_conn_kb) KiB VmRSS per conn ($(field "$json" opened) opened, $(field "$json" deflate_agreed) agreed deflate);"
        [[ $idle != 0 ]] && line+=" CPU over ${idle} s idle at $n: $(field "$json" idle_server_cpu_s) s ($(field "$json" idle_pings) pings, $(field "$json" idle_server_closed) closed)"
      done
      echo "$line"
    done
  done
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
