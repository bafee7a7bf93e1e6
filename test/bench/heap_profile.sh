#!/usr/bin/env bash
# test/bench/heap_profile.sh: where an idle connection's bytes go. Runs one sidecar under
# valgrind's massif, opens HEAP_CONNECTIONS idle connections with scripts/bench.sh's generator
# (W3: rooms of 100, no messages), holds them HEAP_IDLE_SECONDS, stops, and prints massif's
# largest snapshot by allocation site: its peak, when every session exists (the last few may
# still hold their HTTP parser, which the idle ones have freed).
#
#   test/bench/heap_profile.sh LOADGEN SIDECAR     (a RelWithDebInfo build names the sites)
#   HEAP_CONNECTIONS [10000], HEAP_IDLE_SECONDS [5], HEAP_OUT [/tmp/sidecar-massif.out]
#
# Bounded: the generator's connect timeout, the idle time, then a bounded stop. valgrind must be
# installed (scripts/valgrind.sh installs it). Divide each site by the sessions alive in the
# snapshot (the Session line's bytes / sizeof(Session)) for bytes per session.
set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '2,12p' "$0"; exit 2; }
LOADGEN=$1; BIN=$2
N=${HEAP_CONNECTIONS:-10000}
IDLE_S=${HEAP_IDLE_SECONDS:-5}
OUT=${HEAP_OUT:-/tmp/sidecar-massif.out}
command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/valgrind.sh installs it)" >&2; exit 1; }
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

start_redis heap
PORT=$(free_port)
# The handshake timeout is long because every handshake is ~20x slower under valgrind.
cat >"$TMP/sidecar.yaml" <<EOF
listen: "127.0.0.1:$PORT"
redis: { url: "redis://127.0.0.1:$RPORT/0" }
routes: [ { path: "/ws/{org}", channel: "org:{org}" } ]
limits: { max_connections: 100000 }
log: { level: warn }
websocket: { handshake_timeout_ms: 60000 }
EOF
valgrind --tool=massif --massif-out-file="$OUT" --detailed-freq=1 --max-snapshots=200 \
  --threshold=0.5 "$BIN" --config "$TMP/sidecar.yaml" >"$TMP/massif.log" 2>&1 &
SERVER_PID=$!
wait_port "$PORT" 60 || { echo "the sidecar did not start under valgrind" >&2; exit 1; }
"$LOADGEN" --url "ws://127.0.0.1:$PORT/ws/{room}" --publish "redis://127.0.0.1:$RPORT" \
  --connections "$N" --rooms $((N / 100 > 0 ? N / 100 : 1)) --idle-seconds "$IDLE_S" \
  --label heap 2>&1 | grep -v '^{' | head -2
stop_pid "$SERVER_PID"
SERVER_PID=""
# The largest snapshot, its sites at the top two levels.
ms_print "$OUT" | /usr/bin/python3 -c '
import re, sys
text = sys.stdin.read()
snaps = re.split(r"\n(?= *\d+ +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+\n)", text)
best = max((s for s in snaps if "(heap allocation functions)" in s),
           key=lambda s: int(re.search(r"\(([\d,]+)B\) \(heap allocation functions\)", s)
                             .group(1).replace(",", "")), default="")
print("\n".join(l[:200] for l in best.splitlines()
                if re.match(r"^( *\d+ |\d|->|\| ->)", l)))'
echo "massif output: $OUT (ms_print $OUT for the whole tree)"
