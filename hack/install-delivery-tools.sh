#!/usr/bin/env bash
# Installs what the delivery tests (crates/homelab-deploy-tests) need besides the control plane:
# Lua 5.1 and 5.4 (the Argo CD health checks), promtool (Debian's `prometheus` package) and Helm
# (built by hack/install-helm.sh). kubectl comes with the control plane (hack/build-control-plane.sh).
# Idempotent: apt-get runs only when something is missing. Prints the helm path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[delivery-tools] $*" >&2; }

missing=()
command -v lua5.1 >/dev/null || missing+=(lua5.1)
command -v lua5.4 >/dev/null || missing+=(lua5.4)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    log "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
    exit 1
  fi
fi
for tool in lua5.1 lua5.4 promtool; do
  command -v "$tool" >/dev/null || { log "$tool is still missing after the install"; exit 1; }
done
bash hack/install-helm.sh
