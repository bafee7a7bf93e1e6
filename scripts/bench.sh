#!/usr/bin/env bash
# scripts/bench.sh: the whole benchmark in one sitting. Builds Release into build-bench/, starts
# one redis-server, and runs the same load generator against the sidecar, the naive floor
# (test/bench/naive_floor.cpp) and nginx + nchan, the server pinned to core 0 and the generator
# plus Redis to core 1. Prints one table; raw JSON lines go to build-bench/bench-results/.
#
#   scripts/bench.sh                      full run (under 15 minutes on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh        smoke run, about 2 minutes
#   scripts/bench.sh --url ws://127.0.0.1:8080/ws/{room} [--publish redis://127.0.0.1:6379]
#                    [--server-pid PID]   only the loadgen, against a server already running
#
# Environment (defaults in brackets; BENCH_QUICK changes them): BENCH_CONNECTIONS [10000],
# BENCH_ROOMS [100], BENCH_IDLE_MAX [19000], BENCH_FIXED_RATE [50000 deliveries/s],
# BENCH_FIXED_SECONDS [5], BENCH_STEP_SECONDS [3], BENCH_RATES [ladder of deliveries/s],
# BENCH_CHURN [1000 connects+disconnects/s], BENCH_SERVERS ["sidecar naive nchan"],
# BENCH_IDLE_SECONDS [60]: how long W3 holds its BENCH_IDLE_MAX connections idle while the
# server's CPU is measured.
# History rows (sidecar only; BENCH_HISTORY=0 skips them): W1 again with a `history:` config,
# published with FCALL sidecar_publish, to verbatim and to sidecar.v1 clients; then the resume
# storm: BENCH_STORM_CONNECTIONS [10000] sidecar.v1 clients in BENCH_ROOMS rooms come back at
# once, BENCH_STORM_BEHIND [100] messages behind, at most BENCH_STORM_IN_FLIGHT [4096]
# handshakes in flight.
# Compression rows (sidecar only; BENCH_COMPRESSION=0 skips them, =only runs nothing else): W2 at
# the fixed rate with realistic JSON events of ~200 B and ~2 KiB, clients offering
# permessage-deflate or not (wire bytes, CPU, deflates per publication), the 2 KiB deflate run
# again at W1 (100 recipients per publication instead of 10,000), and W3 with clients that
# offer permessage-deflate.
# Cluster rows (sidecar only; BENCH_CLUSTER=1 adds them, =only runs them and one sidecar's W1 for
# reference): W1 with two sidecars, every room's clients dealt over both, first on the one
# redis-server, then on a 3-master Redis Cluster (no replicas; redis.pubsub: sharded, SPUBLISH to
# each room's master); CPU is the two sidecars' sum, Redis CPU that of the Redis processes.
# The plot: build-bench/bench-results/bench.svg (delivered rate and p99 against offered rate,
# W1 and W2, every server measured); BENCH_SVG=PATH also copies it there (docs/bench.svg).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-bench
OUT=$BUILD/bench-results
URL=""
PUBLISH=""
EXT_PID=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --url) URL=$2; shift 2 ;;
    --publish) PUBLISH=$2; shift 2 ;;
    --server-pid) EXT_PID=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  CONNS=${BENCH_CONNECTIONS:-2000}; ROOMS=${BENCH_ROOMS:-20}; IDLE_MAX=${BENCH_IDLE_MAX:-4000}
  FIXED_S=${BENCH_FIXED_SECONDS:-2}; STEP_S=${BENCH_STEP_SECONDS:-1.5}
  RATES=${BENCH_RATES:-50000,100000,200000,400000}
  STORM_CONNS=${BENCH_STORM_CONNECTIONS:-2000}; IDLE_S=${BENCH_IDLE_SECONDS:-10}
else
  CONNS=${BENCH_CONNECTIONS:-10000}; ROOMS=${BENCH_ROOMS:-100}; IDLE_MAX=${BENCH_IDLE_MAX:-19000}
  FIXED_S=${BENCH_FIXED_SECONDS:-5}; STEP_S=${BENCH_STEP_SECONDS:-3}
  RATES=${BENCH_RATES:-25000,50000,100000,150000,200000,300000,400000,500000,650000,800000,1000000,1250000,1500000}
  STORM_CONNS=${BENCH_STORM_CONNECTIONS:-10000}; IDLE_S=${BENCH_IDLE_SECONDS:-60}
fi
HISTORY=${BENCH_HISTORY:-1}
COMPRESSION=${BENCH_COMPRESSION:-1}
CLUSTER=${BENCH_CLUSTER:-0}
STORM_BEHIND=${BENCH_STORM_BEHIND:-100}
STORM_IN_FLIGHT=${BENCH_STORM_IN_FLIGHT:-4096}
FIXED_RATE=${BENCH_FIXED_RATE:-50000}
CHURN=${BENCH_CHURN:-1000}
SERVERS=${BENCH_SERVERS:-sidecar naive nchan}
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# shellcheck source=../test/bench/lib.sh
. "$ROOT/test/bench/lib.sh"

build() {
  # GCC 12 reports a false -Wrestrict in std::string at -O3 (GCC bug 105329); it is not ours.
  log "building Release into $BUILD"
  if cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSIDECAR_BENCH=ON \
       -DCMAKE_CXX_FLAGS=-Wno-restrict >"$OUT/build.log" 2>&1 &&
     cmake --build "$BUILD" -j2 --target bench_loadgen bench_naive_floor >>"$OUT/build.log" 2>&1; then
    LOADGEN=$BUILD/test/bench/bench_loadgen
    FLOOR=$BUILD/test/bench/bench_naive_floor
  else
    # The top level may not configure while others are mid-change; the bench stands alone.
    log "top-level configure failed; building the bench tools on their own"
    cmake -S "$ROOT/test/bench" -B "$BUILD/bench-only" -DCMAKE_BUILD_TYPE=Release >>"$OUT/build.log" 2>&1
    cmake --build "$BUILD/bench-only" -j2 --target bench_loadgen bench_naive_floor >>"$OUT/build.log" 2>&1
    LOADGEN=$BUILD/bench-only/bench_loadgen
    FLOOR=$BUILD/bench-only/bench_naive_floor
  fi
  SIDECAR=""
  if [[ " $SERVERS " == *" sidecar "* ]]; then
    if cmake --build "$BUILD" -j2 --target sidecar >>"$OUT/build.log" 2>&1; then
      SIDECAR=$BUILD/sidecar
    else
      log "the sidecar does not build (see $OUT/build.log); its column is skipped"
    fi
  fi
}

ensure_packages() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  [[ -f $NCHAN_SO ]] || missing+=(libnginx-mod-nchan)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

# start_server KIND PORT: starts one server pinned to core 0; sets SERVER_PID and PUB_URL.
start_server() {
  local kind=$1 port=$2
  case $kind in
    sidecar|sidecar-history|sidecar-cluster)
      local redis="{ url: \"redis://127.0.0.1:$RPORT/0\" }"
      PUB_URL=redis://127.0.0.1:$RPORT
      if [[ $kind == sidecar-cluster ]]; then
        local seeds
        seeds=$(printf '"127.0.0.1:%s", ' "${CLUSTER_PORTS[@]}")
        redis="{ cluster: [${seeds%, }], pubsub: sharded }"
        PUB_URL=redis-cluster://127.0.0.1:${CLUSTER_PORTS[0]}
      fi
      # One file per port: the cluster rows run two sidecars of one kind side by side.
      cat >"$TMP/$kind-$port.yaml" <<EOF
listen: "127.0.0.1:$port"
redis: $redis
routes: [ { path: "/ws/{org}", channel: "org:{org}" } ]
limits: { max_connections: 100000, max_outbound_bytes: 4194304 }
log: { level: warn }
EOF
      # The same server with history for the rooms' channels, so that FCALL sidecar_publish
      # works and clients may resume; max_recover covers the storm's BENCH_STORM_BEHIND.
      if [[ $kind == sidecar-history ]]; then
        cat >>"$TMP/$kind-$port.yaml" <<EOF
history:
  - { channel: "org:{org}", size: 1000, ttl_s: 3600, max_recover: $((STORM_BEHIND > 300 ? STORM_BEHIND : 300)) }
EOF
      fi
      $PIN_SERVER "$SIDECAR" --config "$TMP/$kind-$port.yaml" >>"$OUT/$kind.log" 2>&1 &
      SERVER_PID=$! ;;
    naive)
      $PIN_SERVER "$FLOOR" --listen "127.0.0.1:$port" --redis "127.0.0.1:$RPORT" >>"$OUT/naive.log" 2>&1 &
      SERVER_PID=$!; PUB_URL=redis://127.0.0.1:$RPORT ;;
    nchan)
      local d=$TMP/nginx
      mkdir -p "$d"
      # nchan keeps one message per channel (this bench never replays history); the publisher
      # pipelines POSTs on one keep-alive connection, so requests per connection are unlimited.
      cat >"$d/nginx.conf" <<EOF
load_module $NCHAN_SO;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log $d/error.log warn;
pid $d/nginx.pid;
events { worker_connections 20000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location ~ ^/ws/(\w+)\$ { nchan_subscriber websocket; nchan_channel_id \$1; }
    location ~ ^/pub/(\w+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 1;
      nchan_message_timeout 10s;
    }
  }
}
EOF
      $PIN_SERVER nginx -p "$d" -c "$d/nginx.conf" >>"$OUT/nchan.log" 2>&1 &
      SERVER_PID=$!; PUB_URL="http://127.0.0.1:$port/pub/{room}" ;;
  esac
  if ! wait_port "$port" 15; then
    log "$kind did not start listening on $port"
    stop_pid "$SERVER_PID"
    return 1
  fi
}

# run_load NAME ARGS...: one loadgen run; its JSON line goes to $OUT/NAME.json.
run_load() {
  local name=$1; shift
  log "$name"
  $PIN_GEN "$LOADGEN" "$@" --label "$name" >"$OUT/$name.txt" 2>&1 || true
  grep '^{' "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
  grep -v '^{' "$OUT/$name.txt" | sed 's/^/    /' >&2 || true
}

# One workload against one fresh server (fresh, so RSS before/after belongs to this run alone).
workload() {
  local kind=$1 name=$2; shift 2
  local port; port=$(free_port)
  start_server "$kind" "$port" || { echo '{}' >"$OUT/$kind-$name.json"; return 0; }
  run_load "$kind-$name" --url "ws://127.0.0.1:$port/ws/{room}" --publish "$PUB_URL" \
    --server-pid "$SERVER_PID" "$@"
  stop_pid "$SERVER_PID"
}

# workload_pair KIND NAME ARGS...: one workload against two fresh sidecars of KIND, both pinned
# to core 0, every room's clients dealt over both; Redis CPU is read from REDIS_PIDS.
workload_pair() {
  local kind=$1 name=$2; shift 2
  local urls=() pids=() port
  PAIR_PIDS=() # only the pair that runs, so that cleanup never signals a pid reused since
  for _ in 1 2; do
    port=$(free_port)
    if ! start_server "$kind" "$port"; then
      for pid in "${pids[@]}"; do stop_pid "$pid"; done
      PAIR_PIDS=()
      echo '{}' >"$OUT/$kind-$name.json"
      return 0
    fi
    urls+=("ws://127.0.0.1:$port/ws/{room}"); pids+=("$SERVER_PID"); PAIR_PIDS+=("$SERVER_PID")
  done
  SERVER_PID=""
  run_load "$kind-$name" --url "$(IFS=,; echo "${urls[*]}")" --publish "$PUB_URL" \
    --server-pid "$(IFS=,; echo "${pids[*]}")" --redis-pid "$(IFS=,; echo "${REDIS_PIDS[*]}")" "$@"
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  PAIR_PIDS=()
}

# A free client port of at most 55535 for a cluster node, as test/integration/cluster_util.py
# picks them: a node's bus port defaults to its client port + 10000 (we name one anyway).
cluster_port() {
  local port
  for _ in $(seq 50); do
    port=$(free_port)
    [[ $port -le 55535 ]] && { echo "$port"; return 0; }
  done
  return 1
}

# Three masters and no replicas (a replica's CPU would come out of the load's core), each on its
# own ports and directory, pinned beside the generator like the one redis-server; returns once
# every node reports cluster_state:ok, or fails after 30 s.
start_cluster() {
  local addrs=() port bus d i
  CLUSTER_PORTS=()
  for i in 1 2 3; do
    port=$(cluster_port) || return 1
    bus=$(free_port)
    d=$TMP/cluster-$i
    mkdir -p "$d"
    $PIN_GEN redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" \
      --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$d/nodes.conf" \
      >"$OUT/cluster-redis-$i.log" 2>&1 &
    CLUSTER_PIDS+=($!); CLUSTER_PORTS+=("$port"); addrs+=("127.0.0.1:$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port" 10 || return 1; done
  timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    >"$OUT/cluster-create.log" 2>&1 || return 1
  local deadline=$((SECONDS + 30))
  for port in "${CLUSTER_PORTS[@]}"; do
    until timeout 5 redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null |
          grep -q '^cluster_state:ok'; do
      [[ $SECONDS -lt $deadline ]] || return 1
      sleep 0.1
    done
  done
}

# The cluster rows: the same W1 against two sidecars, on the one redis-server and then on the
# cluster, back to back so that their ratio compares runs of one sitting.
cluster_rows() {
  local w1=(--connections "$CONNS" --rooms "$ROOMS" "${COMMON_SEARCH[@]}" --churn "$CHURN")
  # One sidecar first, unless the full run just measured it: what a second one on the same core
  # costs is part of reading the pair's figures.
  [[ -f $OUT/sidecar-w1.json ]] || workload sidecar w1 "${w1[@]}" --redis-pid "$REDIS_PID"
  REDIS_PIDS=("$REDIS_PID")
  workload_pair sidecar w1two "${w1[@]}"
  log "starting a 3-master Redis Cluster"
  if ! start_cluster; then
    log "the cluster did not come up (see $OUT/cluster-*.log); its row is skipped"
    echo '{}' >"$OUT/sidecar-cluster-w1two.json"
  else
    REDIS_PIDS=("${CLUSTER_PIDS[@]}")
    workload_pair sidecar-cluster w1two "${w1[@]}" --publish-sharded
  fi
  for pid in "${CLUSTER_PIDS[@]}"; do stop_pid "$pid"; done
  CLUSTER_PIDS=()
}

W2_P99_MS=${BENCH_W2_P99_MS:-500}
COMMON_SEARCH=(--fixed-rate "$FIXED_RATE" --fixed-seconds "$FIXED_S" --rates "$RATES"
               --step-seconds "$STEP_S")

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt
build

if [[ -n $URL ]]; then
  PUBLISH=${PUBLISH:-redis://127.0.0.1:6379}
  PID_ARGS=(); [[ -n $EXT_PID ]] && PID_ARGS=(--server-pid "$EXT_PID")
  run_load ext-w1 --url "$URL" --publish "$PUBLISH" "${PID_ARGS[@]}" --connections "$CONNS" \
    --rooms "$ROOMS" "${COMMON_SEARCH[@]}" --churn "$CHURN"
  run_load ext-w2 --url "$URL" --publish "$PUBLISH" "${PID_ARGS[@]}" --connections "$CONNS" \
    --rooms 1 "${COMMON_SEARCH[@]}" --p99-limit-ms "$W2_P99_MS"
  run_load ext-w3 --url "$URL" --publish "$PUBLISH" "${PID_ARGS[@]}" --connections "$CONNS" \
    --rooms "$ROOMS"
  /usr/bin/python3 "$ROOT/test/bench/table.py" "$OUT" ext | tee "$OUT/table.txt"
  exit 0
fi

ensure_packages
TMP=$(mktemp -d /tmp/sidecar-bench.XXXXXX)
RPORT=$(free_port)
$PIN_GEN redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
SERVER_PID=""
PAIR_PIDS=()
CLUSTER_PIDS=()
cleanup() {
  [[ -n ${SERVER_PID:-} ]] && stop_pid "$SERVER_PID"
  for pid in "${PAIR_PIDS[@]}" "${CLUSTER_PIDS[@]}"; do stop_pid "$pid"; done
  stop_pid "$REDIS_PID"
  rm -rf "$TMP"
}
trap cleanup EXIT
wait_port "$RPORT" 10 || { log "redis-server did not start"; exit 1; }

# Other work on the machine (compiles, fuzzers) lands on the same two cores and skews every
# number; say so in the table rather than let a loaded run pass for a quiet one.
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD_START" 'BEGIN { exit !(l > 0.5) }'; then
  log "WARNING: load average is $LOAD_START before the bench; results will be skewed"
fi
# The compression rows: one fresh sidecar per run, clients that offer permessage-deflate (d) or
# not (p), the same realistic JSON events for both; the server's /metrics around the fixed phase
# give deflates and deflate time per publication.
compression_rows() {
  local fix=(--fixed-rate "$FIXED_RATE" --fixed-seconds "$FIXED_S" --payload json --server-metrics)
  workload sidecar w2c200p --connections "$CONNS" --rooms 1 "${fix[@]}" --payload-bytes 200
  workload sidecar w2c200d --connections "$CONNS" --rooms 1 "${fix[@]}" --payload-bytes 200 --deflate
  workload sidecar w2c2kp --connections "$CONNS" --rooms 1 "${fix[@]}" --payload-bytes 2048
  workload sidecar w2c2kd --connections "$CONNS" --rooms 1 "${fix[@]}" --payload-bytes 2048 --deflate
  workload sidecar w1c2kd --connections "$CONNS" --rooms "$ROOMS" "${fix[@]}" --payload-bytes 2048 \
    --deflate
  workload sidecar w3ad --connections "$CONNS" --rooms "$ROOMS" --deflate
  workload sidecar w3bd --connections "$IDLE_MAX" --rooms "$ROOMS" --deflate
}

START=$SECONDS
COLUMNS_RUN=()
if [[ $COMPRESSION == only ]]; then
  [[ -n $SIDECAR ]] || { log "no sidecar binary: nothing to run"; exit 1; }
  compression_rows
  {
    echo "bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, server on core 0, loadgen+redis on core 1," \
         "BENCH_COMPRESSION=only, load average $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end"
    /usr/bin/python3 "$ROOT/test/bench/table.py" --compression "$OUT"
  } | tee "$OUT/table.txt"
  exit 0
fi
if [[ $CLUSTER == only ]]; then
  [[ -n $SIDECAR ]] || { log "no sidecar binary: nothing to run"; exit 1; }
  cluster_rows
  log "done in $((SECONDS - START)) s"
  {
    echo "bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, sidecars on core 0," \
         "loadgen+redis on core 1, BENCH_CLUSTER=only, BENCH_QUICK=${BENCH_QUICK:-0}," \
         "$CONNS connections, rooms of $((CONNS / ROOMS)), steps ${STEP_S}s," \
         "load average $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end"
    /usr/bin/python3 "$ROOT/test/bench/table.py" --cluster "$OUT"
  } | tee "$OUT/table.txt"
  exit 0
fi
for kind in $SERVERS; do
  [[ $kind == sidecar && -z $SIDECAR ]] && continue
  COLUMNS_RUN+=("$kind")
  workload "$kind" w1 --connections "$CONNS" --rooms "$ROOMS" "${COMMON_SEARCH[@]}" --churn "$CHURN"
  if [[ $kind == sidecar && $HISTORY == 1 ]]; then
    # Right after the plain-PUBLISH W1, so that the ratios compare runs of one sitting.
    workload sidecar-history w1f --connections "$CONNS" --rooms "$ROOMS" "${COMMON_SEARCH[@]}" \
      --churn "$CHURN" --publish-fcall
    workload sidecar-history w1v --connections "$CONNS" --rooms "$ROOMS" "${COMMON_SEARCH[@]}" \
      --churn "$CHURN" --publish-fcall --subprotocol sidecar.v1
    workload sidecar-history storm --connections "$STORM_CONNS" --rooms "$ROOMS" \
      --publish-fcall --subprotocol sidecar.v1 --resume-storm "$STORM_BEHIND" \
      --storm-in-flight "$STORM_IN_FLIGHT"
  fi
  # One message to 10,000 sockets is 10,000 sends: tens of milliseconds on loopback for any
  # server, so W2's search allows a p99 of W2_P99_MS (default 500) instead of W1's 50 ms.
  workload "$kind" w2 --connections "$CONNS" --rooms 1 "${COMMON_SEARCH[@]}" \
    --p99-limit-ms "$W2_P99_MS"
  [[ $kind == sidecar && $COMPRESSION == 1 ]] && compression_rows
  workload "$kind" w3a --connections "$CONNS" --rooms "$ROOMS"
  workload "$kind" w3b --connections "$IDLE_MAX" --rooms "$ROOMS" --idle-seconds "$IDLE_S"
done
[[ $CLUSTER == 1 && -n $SIDECAR ]] && cluster_rows
log "done in $((SECONDS - START)) s"
{
  echo "bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, server on core 0, loadgen+redis on core 1," \
       "BENCH_QUICK=${BENCH_QUICK:-0}, $CONNS connections, rooms of $((CONNS / ROOMS)), steps ${STEP_S}s," \
       "load average $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end"
  /usr/bin/python3 "$ROOT/test/bench/table.py" "$OUT" "${COLUMNS_RUN[@]}"
  if [[ -f $OUT/sidecar-history-w1f.json ]]; then
    echo
    /usr/bin/python3 "$ROOT/test/bench/table.py" --history "$OUT"
  fi
  if [[ -f $OUT/sidecar-w2c2kd.json ]]; then
    echo
    /usr/bin/python3 "$ROOT/test/bench/table.py" --compression "$OUT"
  fi
  if [[ -f $OUT/sidecar-w1two.json ]]; then
    echo
    /usr/bin/python3 "$ROOT/test/bench/table.py" --cluster "$OUT"
  fi
} | tee "$OUT/table.txt"
/usr/bin/python3 "$ROOT/test/bench/plot.py" "$OUT" "$OUT/bench.svg" "${COLUMNS_RUN[@]}" \
  --title "scripts/bench.sh, $(date -u +%Y-%m-%d), $(nproc) cores, load average $LOAD_START at start"
log "plot: $OUT/bench.svg"
if [[ -n ${BENCH_SVG:-} ]]; then cp "$OUT/bench.svg" "$BENCH_SVG"; log "plot copied to $BENCH_SVG"; fi
