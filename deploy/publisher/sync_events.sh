#!/bin/sh
# Demo publisher: plays a backend that PUBLISHes seed 001's sync events (SYNC_PROCESSING,
# SYNC_SUCCESS, SYNC_CONFLICT, SYNC_FAILED) for one org, with nothing but redis-cli. The compose
# file runs it beside Redis and the sidecar; scripts/demo.sh and the deploy tests run it too.
# It stops by itself after ROUNDS rounds.
#   REDIS_HOST  (redis)       REDIS_PORT (6379)
#   ORG         (org-rio)     CHANNEL    (org:$ORG, the sidecar's default room channel)
#   ROUNDS      (100)         INTERVAL   (2; seconds between events, 0 for none)
set -eu

host="${REDIS_HOST:-redis}"
port="${REDIS_PORT:-6379}"
org="${ORG:-org-rio}"
channel="${CHANNEL:-org:$org}"
rounds="${ROUNDS:-100}"
interval="${INTERVAL:-2}"

case "$rounds" in '' | *[!0-9]*) echo "sync_events: ROUNDS must be a number" >&2; exit 2 ;; esac

publish() {
  # redis-cli prints the number of subscribers that got it; show it so a user sees fan-out work.
  receivers="$(redis-cli -h "$host" -p "$port" PUBLISH "$channel" "$1")"
  echo "sync_events: $channel <- $1 (receivers: $receivers)"
  if [ "$interval" != "0" ]; then sleep "$interval"; fi
}

i=1
while [ "$i" -le "$rounds" ]; do
  now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  pfa="pfa-$i"
  publish "{\"type\":\"SYNC_PROCESSING\",\"pfaId\":\"$pfa\",\"organizationId\":\"$org\",\"timestamp\":\"$now\"}"
  publish "{\"type\":\"SYNC_SUCCESS\",\"pfaId\":\"$pfa\",\"organizationId\":\"$org\",\"timestamp\":\"$now\",\"details\":{\"newVersion\":$((i + 4))}}"
  publish "{\"type\":\"SYNC_CONFLICT\",\"pfaId\":\"$pfa\",\"organizationId\":\"$org\",\"timestamp\":\"$now\",\"details\":{\"conflictId\":\"c-$i\",\"conflictingFields\":[\"forecastStart\"]}}"
  publish "{\"type\":\"SYNC_FAILED\",\"pfaId\":\"$pfa\",\"organizationId\":\"$org\",\"timestamp\":\"$now\",\"details\":{\"error\":\"Network timeout\",\"retryCount\":3}}"
  i=$((i + 1))
done
echo "sync_events: published $rounds round(s) of 4 events to $channel"
