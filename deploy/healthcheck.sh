#!/bin/bash
# Container health check for the sidecar image: GET /health on the sidecar's own port and succeed
# only on HTTP 200. It uses bash's /dev/tcp so that the runtime image needs no curl or wget.
#   healthcheck.sh [PORT] [PATH]   defaults: $SIDECAR_HEALTH_PORT or 8080, /health
set -u

port="${1:-${SIDECAR_HEALTH_PORT:-8080}}"
path="${2:-/health}"

# The whole exchange is bounded: a sidecar that accepts but never answers counts as unhealthy.
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status_line <&3 || exit 1
exec 3<&-
case "$status_line" in
  "HTTP/1.1 200 "* | "HTTP/1.0 200 "*) exit 0 ;;
  *) echo "unhealthy: $status_line" >&2; exit 1 ;;
esac
