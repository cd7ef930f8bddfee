#!/usr/bin/env bash
# Builds Argo CD (one binary that runs as argocd-application-controller, argocd-repo-server,
# argocd-applicationset-controller, argocd-server and the argocd CLI, by the name it is called
# under) and kustomize from the Go module proxy, into a cache outside the repository. Also keeps
# what the test environment installs from Argo CD's module: its CRDs, its base config objects and
# the git wrappers the repo-server calls. Reuses what is already built. Prints the directory on its
# last line.
#
# Argo CD v3.6 needs Go 1.27: when the local Go is older, the toolchain comes from the module proxy
# (module golang.org/toolchain), as `GOTOOLCHAIN` does it.
set -euo pipefail

ARGOCD_VERSION="${ARGOCD_VERSION:-v3.6.1}"
ARGOCD_GO="${ARGOCD_GO:-go1.27.4}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
OUT="$CACHE/argocd/argocd-$ARGOCD_VERSION-kustomize-$KUSTOMIZE_VERSION"

log() { echo "[argocd] $*" >&2; }

mkdir -p "$CACHE/argocd"
exec 9>"$CACHE/argocd/.lock"
if ! flock -n 9; then
  log "waiting for another build of Argo CD to finish"
  flock 9
fi

complete() {
  [ -x "$OUT/bin/argocd" ] && [ -x "$OUT/bin/kustomize" ] &&
    [ -f "$OUT/manifests/crds/application-crd.yaml" ] && [ -x "$OUT/bin/git-verify-wrapper.sh" ]
}
if complete; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
work="$CACHE/argocd/src-$ARGOCD_VERSION"
mkdir -p "$work/argocd" "$work/kustomize" "$OUT/bin"
start=$(date +%s)

if [ ! -x "$OUT/bin/argocd" ] || [ ! -f "$OUT/manifests/crds/application-crd.yaml" ]; then
  log "building Argo CD $ARGOCD_VERSION with $ARGOCD_GO from the Go module proxy"
  export GOTOOLCHAIN="$ARGOCD_GO"
  module_json=$(cd "$work/argocd" && GOFLAGS=-mod=mod go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION")
  gomod_path=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$module_json")
  module_dir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$module_json")
  [ -n "$gomod_path" ] && [ -d "$module_dir" ] || { log "could not download github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"; exit 1; }
  go_directive=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod_path" | head -1)
  {
    echo "module homelab.io/argocd"
    echo
    echo "go $go_directive"
    echo
    echo "require github.com/argoproj/argo-cd/v3 $ARGOCD_VERSION"
    echo
    # Argo CD's replace block applies only to its own build; a module that depends on it must
    # repeat it. Local paths are left out: gitops-engine is its own module on the proxy, at the
    # version Argo CD requires.
    sed -n '/^replace (/,/^)/p' "$gomod_path" | grep -v '=> \./'
  } > "$work/argocd/go.mod"
  cat > "$work/argocd/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/argoproj/argo-cd/v3/cmd"
GO
  (cd "$work/argocd" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  log "go build github.com/argoproj/argo-cd/v3/cmd"
  (cd "$work/argocd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}" \
    -o "$OUT/bin/argocd" github.com/argoproj/argo-cd/v3/cmd)
  for name in argocd-application-controller argocd-repo-server argocd-applicationset-controller argocd-server; do
    ln -sfn argocd "$OUT/bin/$name"
  done
  rm -rf "$OUT/manifests"
  mkdir -p "$OUT/manifests"
  cp -r "$module_dir/manifests/crds" "$module_dir/manifests/base/config" "$OUT/manifests/"
  chmod -R u+w "$OUT/manifests"
  install -m 0755 "$module_dir/hack/git-verify-wrapper.sh" "$module_dir/hack/gpg-wrapper.sh" "$OUT/bin/"
  unset GOTOOLCHAIN
fi

if [ ! -x "$OUT/bin/kustomize" ]; then
  log "building kustomize $KUSTOMIZE_VERSION"
  GOBIN="$OUT/bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
[ -x "$OUT/bin/git-verify-wrapper.sh" ] || { log "git wrappers missing from $OUT/bin"; exit 1; }

complete || { log "the build left $OUT incomplete"; exit 1; }
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
