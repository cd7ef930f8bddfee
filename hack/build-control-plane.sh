#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, etcd, kubectl) from Go
# modules at pinned versions, into a cache outside the repository. Reuses what is already built.
# Prints the directory holding the binaries on its last line.
#
# KUBEBUILDER_ASSETS, when set to a directory holding kube-apiserver and etcd (for example from
# setup-envtest), is used as-is instead.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
OUT="$CACHE/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

log() { echo "[control-plane] $*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# One build at a time: test processes and `make control-plane` may call this script together.
mkdir -p "$CACHE/control-plane"
exec 9>"$CACHE/control-plane/.lock"
if ! flock -n 9; then
  log "waiting for another build of the control plane to finish"
  flock 9
fi

want=(kube-apiserver kube-controller-manager etcd kubectl)
missing=0
for b in "${want[@]}"; do [ -x "$OUT/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$OUT"
work="$CACHE/control-plane/src-$K8S_VERSION"
mkdir -p "$work/k8s" "$work/etcd"
start=$(date +%s)

if [ ! -x "$OUT/kube-apiserver" ] || [ ! -x "$OUT/kube-controller-manager" ] || [ ! -x "$OUT/kubectl" ]; then
  log "building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl) from the Go module proxy"
  staging_version="v0${K8S_VERSION#v1}"
  gomod_path=$(cd "$work/k8s" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -n "$gomod_path" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  go_directive=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod_path" | head -1)
  {
    echo "module homelab.io/control-plane"
    echo
    echo "go $go_directive"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module that k8s.io/kubernetes replaces with ./staging/... is pinned to its release.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod_path" | sort -u | while read -r m; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } > "$work/k8s/go.mod"
  cat > "$work/k8s/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work/k8s" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$OUT/$cmd" ] && continue
    log "go build $cmd"
    (cd "$work/k8s" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" -o "$OUT/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
fi

if [ ! -x "$OUT/etcd" ]; then
  log "building etcd $ETCD_VERSION from the Go module proxy"
  cat > "$work/etcd/go.mod" <<GOMOD
module homelab.io/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$work/etcd/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$work/etcd" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work/etcd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
fi

log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
