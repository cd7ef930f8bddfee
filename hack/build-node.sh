#!/usr/bin/env bash
# Builds what a test node runs, at pinned versions, into a cache outside the repository:
# kubelet, kube-proxy and kube-scheduler (from the same k8s.io/kubernetes wrapper module as the
# control plane), containerd 2.x with its shim and ctr, runc (with seccomp), a CoreDNS with only
# the plugins the test cluster uses, and the pause binary (static, from the k8s.io/kubernetes
# module's build/pause/linux/pause.c). Reuses what is already built. Prints the directory holding
# the binaries on its last line.
#
# The CNI plugins come from Debian's containernetworking-plugins (/usr/lib/cni), installed by
# .ci/run; this script checks that they are there.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.3.7}"
RUNC_VERSION="${RUNC_VERSION:-v1.3.5}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
OUT="$CACHE/node/k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-coredns-$COREDNS_VERSION"

log() { echo "[node] $*" >&2; }

want=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr runc coredns pause)
complete() {
  local b
  for b in "${want[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
check_cni() {
  local p
  for p in bridge host-local loopback portmap; do
    [ -x "/usr/lib/cni/$p" ] || { log "CNI plugin /usr/lib/cni/$p is missing: apt-get install containernetworking-plugins"; exit 1; }
  done
}

mkdir -p "$CACHE/node"
if complete; then
  check_cni
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

# The node's Kubernetes binaries build in the control plane's wrapper module; the control plane
# script creates it (and holds its own lock while it builds).
control_plane_dir=$(bash hack/build-control-plane.sh | tail -n 1)
exec 9>"$CACHE/node/.lock"
if ! flock -n 9; then
  log "waiting for another build of the node to finish"
  flock 9
fi
if complete; then
  check_cni
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$OUT"
timed() {
  local what="$1"; shift
  local t0=$SECONDS
  log "building $what"
  "$@"
  log "built $what in $((SECONDS - t0))s"
}

k8s_src="$CACHE/control-plane/src-$K8S_VERSION/k8s"
[ -f "$k8s_src/go.mod" ] || { log "the control plane's wrapper module $k8s_src is missing (built from $control_plane_dir?)"; exit 1; }
build_k8s() {
  local cmd="$1" minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  (cd "$k8s_src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") && mv "$OUT/$cmd.tmp" "$OUT/$cmd"
}
for cmd in kubelet kube-proxy kube-scheduler; do
  [ -x "$OUT/$cmd" ] || timed "$cmd $K8S_VERSION" build_k8s "$cmd"
done

build_pause() {
  local pause_c
  pause_c="$(cd "$k8s_src" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [ -f "$pause_c" ] || { log "$pause_c is missing from the k8s.io/kubernetes module"; exit 1; }
  cc -Os -static -Wall -Werror -DVERSION="\"$K8S_VERSION-homelab\"" -o "$OUT/pause.tmp" "$pause_c"
  strip "$OUT/pause.tmp"
  mv "$OUT/pause.tmp" "$OUT/pause"
}
[ -x "$OUT/pause" ] || timed pause build_pause

build_containerd() {
  local cmd
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    GOBIN="$OUT/.gobin" CGO_ENABLED=0 GOFLAGS=-trimpath go install -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
    mv "$OUT/.gobin/$cmd" "$OUT/$cmd"
  done
}
{ [ -x "$OUT/containerd" ] && [ -x "$OUT/containerd-shim-runc-v2" ] && [ -x "$OUT/ctr" ]; } \
  || timed "containerd $CONTAINERD_VERSION" build_containerd

build_runc() {
  pkg-config --exists libseccomp || { log "libseccomp-dev is missing: apt-get install libseccomp-dev pkg-config"; exit 1; }
  GOBIN="$OUT/.gobin" CGO_ENABLED=1 GOFLAGS=-trimpath go install -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" \
    "github.com/opencontainers/runc@$RUNC_VERSION"
  mv "$OUT/.gobin/runc" "$OUT/runc"
}
[ -x "$OUT/runc" ] || timed "runc $RUNC_VERSION" build_runc

# CoreDNS with the plugins the test cluster's Corefile uses, in CoreDNS's own directive order.
build_coredns() {
  local src="$CACHE/node/src-coredns-$COREDNS_VERSION"
  mkdir -p "$src"
  cat > "$src/go.mod" <<GOMOD
module homelab.io/coredns

go 1.25

require github.com/coredns/coredns $COREDNS_VERSION
GOMOD
  cat > "$src/main.go" <<'GO'
// CoreDNS with only the plugins of the test cluster's Corefile.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order of plugin.cfg: it decides the order of the plugin chain. There is no forward: the
// test cluster resolves only its own names and the emulators' hosts, nothing outside.
func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "hosts", "kubernetes"}
}

func main() { coremain.Run() }
GO
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true)
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$OUT/coredns.tmp" .)
  mv "$OUT/coredns.tmp" "$OUT/coredns"
}
[ -x "$OUT/coredns" ] || timed "coredns $COREDNS_VERSION" build_coredns

rm -rf "$OUT/.gobin"
complete || { log "some binaries are still missing in $OUT"; exit 1; }
check_cni
log "node binaries in $OUT"
echo "$OUT"
