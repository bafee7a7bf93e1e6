#!/usr/bin/env bash
# test/bench/cpu_compare.sh: server CPU per delivery of the sidecar against the naive floor
# (test/bench/naive_floor.cpp), alternated in one sitting so that a machine whose speed drifts
# (a shared VM) moves both alike. W1 as in scripts/bench.sh: CPU_CONNECTIONS clients in
# CPU_ROOMS rooms, published at each fixed rate of CPU_RATES for CPU_SECONDS; each run gets a
# fresh server pinned to core 0, the generator and redis-server share core 1.
#
#   test/bench/cpu_compare.sh LOADGEN NAIVE_FLOOR SIDECAR [SIDECAR...]
#   CPU_RATES ["20000 50000"], CPU_SECONDS [8], CPU_REPEAT [3], CPU_CONNECTIONS [10000],
#   CPU_ROOMS [100]
#
# Prints, per rate, every run's server CPU seconds per 1M deliveries (utime + stime of the
# server over the phase, from /proc), the means and each sidecar's ratio to the floor. A run
# that lost messages is marked: its CPU bought fewer deliveries than asked for.
# Bounded: every run ends within the generator's connect timeout plus CPU_SECONDS.
# The generator's JSON lines go to CPU_OUT [/tmp/cpu_compare.jsonl].
set -euo pipefail

[[ $# -ge 3 ]] || { sed -n '2,16p' "$0"; exit 2; }
LOADGEN=$1; FLOOR=$2; shift 2
RATES=${CPU_RATES:-20000 50000}
SECS=${CPU_SECONDS:-8}
REPEAT=${CPU_REPEAT:-3}
CONNS=${CPU_CONNECTIONS:-10000}
ROOMS=${CPU_ROOMS:-100}
OUT=${CPU_OUT:-/tmp/cpu_compare.jsonl}
: >"$OUT"
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

start_redis cpu

# run KIND BIN RATE: one fresh server, one fixed-rate phase; prints the phase's JSON line.
run() {
  local kind=$1 bin=$2 rate=$3 port
  port=$(free_port)
  if [[ $kind == naive ]]; then
    $PIN_SERVER "$bin" --listen "127.0.0.1:$port" --redis "127.0.0.1:$RPORT" >>"$TMP/naive.log" 2>&1 &
  else
    cat >"$TMP/sidecar.yaml" <<EOF
listen: "127.0.0.1:$port"
redis: { url: "redis://127.0.0.1:$RPORT/0" }
routes: [ { path: "/ws/{org}", channel: "org:{org}" } ]
limits: { max_connections: 100000, max_outbound_bytes: 4194304 }
log: { level: warn }
EOF
    $PIN_SERVER "$bin" --config "$TMP/sidecar.yaml" >>"$TMP/sidecar.log" 2>&1 &
  fi
  SERVER_PID=$!
  wait_port "$port" 15 || { echo '{}'; stop_pid "$SERVER_PID"; SERVER_PID=""; return; }
  $PIN_GEN "$LOADGEN" --url "ws://127.0.0.1:$port/ws/{room}" --publish "redis://127.0.0.1:$RPORT" \
    --server-pid "$SERVER_PID" --connections "$CONNS" --rooms "$ROOMS" --fixed-rate "$rate" \
    --fixed-seconds "$SECS" --label "$kind" 2>&1 | grep '^{' | tail -1 || echo '{}'
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}

echo "cpu_compare: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $CONNS connections in $ROOMS rooms, ${SECS} s per run, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
# run_one INDEX RATE: index 0 is the floor, 1.. the sidecars in the order given.
BINS=("$FLOOR" "$@")
run_one() {
  local i=$1 rate=$2
  if [[ $i == 0 ]]; then
    echo "$(run naive "$FLOOR" "$rate")" | sed "s|^{|{\"server\":\"naive\",\"rate\":$rate,|" >>"$OUT"
  else
    echo "$(run sidecar "${BINS[$i]}" "$rate")" |
      sed "s|^{|{\"server\":\"sidecar$i\",\"bin\":\"${BINS[$i]}\",\"rate\":$rate,|" >>"$OUT"
  fi
}
# Every other round runs the servers in reverse order, so that a machine that speeds up or
# slows down during the sitting does not favour whichever runs first.
for rate in $RATES; do
  for ((r = 1; r <= REPEAT; r++)); do
    if ((r % 2 == 1)); then
      for ((i = 0; i < ${#BINS[@]}; i++)); do run_one "$i" "$rate"; done
    else
      for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do run_one "$i" "$rate"; done
    fi
  done
done
/usr/bin/python3 - "$OUT" "$#" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
servers = ["naive"] + [f"sidecar{i}" for i in range(1, int(sys.argv[2]) + 1)]
for rate in sorted({r.get("rate") for r in rows if r.get("rate")}):
    means = {}
    for s in servers:
        runs = []
        for r in rows:
            if r.get("rate") != rate or r.get("server") != s:
                continue
            ph = next((p for p in r.get("phases", []) if p.get("name") == "fixed"), None)
            if not ph or not ph.get("received"):
                runs.append(None)
                continue
            runs.append((ph["server_cpu_s"] / ph["received"] * 1e6, ph["lost"], ph["p99_ms"]))
        ok = [x[0] for x in runs if x]
        means[s] = sum(ok) / len(ok) if ok else None
        text = ", ".join("failed" if x is None else
                         f"{x[0]:.2f} s" + (f" (lost {x[1]})" if x[1] else "") for x in runs)
        print(f"{rate}/s {s:9s} CPU per 1M deliveries: {text}; mean {means[s]:.2f} s" if means[s]
              else f"{rate}/s {s}: no run measured")
    for s in servers[1:]:
        if means.get(s) and means.get("naive"):
            print(f"{rate}/s {s} / naive: {means[s] / means['naive']:.3f}x")
EOF
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
