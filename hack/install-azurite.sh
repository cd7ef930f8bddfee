#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator) from npm at a pinned version into a cache outside
# the repository, for the Azure tests. Reuses an existing install. Prints the install directory on
# its last line; the blob server is `<dir>/node_modules/.bin/azurite-blob`.
#
# Needs Node.js (>= 18) and npm; when they are missing and apt-get can be used (root, as on CI),
# installs Debian's `nodejs` and `npm`. AZURITE_VERSION overrides the pinned version.
set -euo pipefail

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
OUT="$CACHE/azurite-$AZURITE_VERSION"
BIN="$OUT/node_modules/.bin/azurite-blob"

log() { echo "[azurite] $*" >&2; }

if [ -x "$BIN" ] && [ -f "$OUT/.installed" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    want=()
    command -v node >/dev/null || want+=(nodejs)
    command -v npm >/dev/null || want+=(npm)
    log "installing ${want[*]} with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >&2
  fi
  command -v node >/dev/null || { log "Node.js (>= 18) is required: install it (e.g. apt-get install nodejs npm)"; exit 1; }
  command -v npm >/dev/null || { log "npm is required: install it (e.g. apt-get install npm)"; exit 1; }
fi

log "installing azurite@$AZURITE_VERSION from npm into $OUT"
mkdir -p "$OUT"
rm -f "$OUT/.installed"
# A private package.json keeps npm from walking up into an unrelated project.
if [ ! -f "$OUT/package.json" ]; then
  printf '{"name":"homelab-azurite","private":true}\n' >"$OUT/package.json"
fi
npm install --prefix "$OUT" --no-audit --no-fund --no-save --loglevel=error \
  "azurite@$AZURITE_VERSION" >&2

[ -x "$BIN" ] || { log "install finished but $BIN is missing"; exit 1; }
installed="$(node -p "require('$OUT/node_modules/azurite/package.json').version")"
[ "$installed" = "$AZURITE_VERSION" ] || { log "expected $AZURITE_VERSION, found $installed"; exit 1; }
touch "$OUT/.installed"
log "installed azurite $installed"
echo "$OUT"
