#!/usr/bin/env bash
# Builds Helm from the Go module proxy at a pinned version into a cache outside the repository,
# for the deploy tests (`helm template` of deploy/helm/homelab-operator). Reuses an existing build.
# Prints the path of the helm binary on its last line. HELM_VERSION overrides the pinned version.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
OUT="$CACHE/bin/helm-$HELM_VERSION"
BIN="$OUT/helm"

log() { echo "[helm] $*" >&2; }

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "waiting for another build of helm to finish"
  flock 9
fi

if [ -x "$BIN" ] && [ -f "$OUT/.installed" ]; then
  log "cached in $OUT"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build helm"; exit 1; }
log "building helm $HELM_VERSION from the Go module proxy"
start=$(date +%s)
rm -f "$OUT/.installed"
# The Kubernetes version Helm assumes without a cluster (`helm template`, `helm lint`) comes from
# its client-go module, stamped at link time as Helm's Makefile does; unstamped it is v1.20.
gomod=$(cd "$OUT" && GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -n "$gomod" ] || { log "could not download helm.sh/helm/v3@$HELM_VERSION"; exit 1; }
client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)
[ -n "$client_go" ] || { log "no k8s.io/client-go requirement in $gomod"; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
done
# `go install pkg@version` builds in module mode from the module's own go.mod, outside any project.
GOBIN="$OUT" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$BIN" version --short | grep -q "^$HELM_VERSION" || { log "built helm does not report $HELM_VERSION"; exit 1; }
touch "$OUT/.installed"
log "built in $(( $(date +%s) - start ))s"
echo "$BIN"
