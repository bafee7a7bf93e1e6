#!/usr/bin/env bash
# Installs what building and testing the sidecar needs, and only what is missing: Debian packages
# (checked one by one with dpkg-query) and the Node test client's npm dependencies.
# Safe to run any number of times; runs as root, or through sudo when it is available.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# systemd is here for systemd-analyze, which verifies deploy/systemd/sidecar.service in the tests.
packages=(
  build-essential cmake pkg-config
  libuv1-dev libwslay-dev libhiredis-dev libyaml-cpp-dev doctest-dev libssl-dev node-llhttp
  nlohmann-json3-dev libsimdjson-dev zlib1g-dev
  redis-server redis-tools
  python3 python3-websockets python3-jwt python3-pytest python3-yaml
  clang libclang-rt-14-dev
  prometheus nginx openssl procps curl chromium systemd
)
# Node and npm may come from elsewhere (nodesource, nvm); Debian's are only a fallback.
if ! command -v node >/dev/null 2>&1; then packages+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "bootstrap: all Debian packages present"
fi

# The Node client used by the integration tests pins its dependencies in package-lock.json.
node_dir="$repo_root/test/integration/node"
if [ -f "$node_dir/package-lock.json" ]; then
  if [ ! -d "$node_dir/node_modules" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules" ]; then
    echo "bootstrap: npm ci in test/integration/node"
    (cd "$node_dir" && npm ci --no-audit --no-fund)
    touch "$node_dir/node_modules"
  fi
fi
