#!/usr/bin/env bash
# Builds the container images of the test data plane without a registry or a container engine: each
# image is a root file system (debootstrap + apt inside a chroot, or files extracted from Debian
# packages) packed as ONE gzip'd layer into an OCI image-layout tar archive, ready for
# `ctr -n k8s.io images import`. Pods use them with imagePullPolicy Never/IfNotPresent.
#
#   hack/build-images.sh [-h] [NAME...]
#
# NAME is one of: postgresql psql pgbouncer plugin-barman-cloud-sidecar cloudnative-pg plugin-barman-cloud
# external-secrets homelab-operator pause. Without names every image is built, except those whose input
# binary is not given (they are skipped with a message); a NAME given explicitly without its binary
# is an error. Input binaries:
#   CNPG_MANAGER             cloudnative-pg                              (static Go binary)
#   BARMAN_CLOUD_MANAGER     plugin-barman-cloud, plugin-barman-cloud-sidecar (static Go binary)
#   ESO_BINARY               external-secrets                            (static Go binary)
#   HOMELAB_OPERATOR_BINARY  homelab-operator                            (glibc-linked Rust binary)
#   PAUSE_BINARY             pause (the sandbox image)                   (static, from pause.c)
# Optional: HOMELAB_OPERATOR_TAG (default: the workspace version), PAUSE_TAG (3.10), DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR (default: the hosts in /etc/apt sources), IMAGE_PREFIX (localhost/homelab).
#
# Everything is cached under $CACHE/images/ by a hash of the inputs (recipe text, versions, package
# lists, the binary's sha256, the packer); a second run with the same inputs does no work. Progress
# goes to stderr; the last stdout line is the path of the index, $CACHE/images/index.tsv: one line
# per image (the latest build of each), "<image ref>\t<archive path>\t<sha256 of the archive>".
# See docs/images.md.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C

CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
IMAGES="$CACHE/images"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OCI="$HERE/oci-image.py"

IMAGE_PREFIX="${IMAGE_PREFIX:-localhost/homelab}"
PG_MAJOR=17
CNPG_VERSION=1.30.0
BARMAN_CLOUD_VERSION=0.14.0
BARMAN_VERSION=3.19.1
BARMAN_EXTRAS=cloud,azure
ESO_VERSION=0.16.2
PAUSE_TAG="${PAUSE_TAG:-3.10}"
DEBIAN_SUITE=trixie  # PostgreSQL 17 and Python 3.13 come from Debian 13
# Bump to rebuild everything (a change in what the recipes mean that their text does not show).
FORMAT=1
ALL_IMAGES=(postgresql psql pgbouncer plugin-barman-cloud-sidecar cloudnative-pg plugin-barman-cloud external-secrets homelab-operator pause)
DISTROLESS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SSL_CERT_ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# Pins of the plugin's own sidecar image (containers/sidecar-requirements.txt at v0.14.0), used as
# pip constraints; psycopg2 is left out: Debian's python3-psycopg2 is used instead (no compiler).
BARMAN_CONSTRAINTS='azure-core==1.41.0
azure-identity==1.25.3
azure-storage-blob==12.30.0
barman==3.19.1
boto3==1.43.56
botocore==1.43.56
certifi==2026.7.22
cffi==2.1.0
charset-normalizer==3.4.9
cramjam==2.11.0
cryptography==49.0.0
idna==3.18
isodate==0.7.2
jmespath==1.1.0
lz4==4.4.5
msal==1.37.0
msal-extensions==1.3.1
pycparser==3.0
pyjwt==2.13.0
python-dateutil==2.9.0.post0
python-snappy==0.7.3
requests==2.34.2
s3transfer==0.19.2
six==1.17.0
typing-extensions==4.16.0
urllib3==2.7.0
zipp==4.1.0
zstandard==0.25.0'

log() { echo "[images] $*" >&2; }
die() { log "error: $*"; exit 1; }
set -E
trap 'log "error: \"$BASH_COMMAND\" failed (${FUNCNAME[0]:-main}, line $LINENO)"' ERR

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}

now_us() { echo "${EPOCHREALTIME/./}"; }
# Seconds (one decimal) since a now_us timestamp.
since() { local d=$(( ($(now_us) - $1) / 100000 )); echo "$((d / 10)).$((d % 10))"; }
# step LABEL CMD...: runs CMD and logs how long it took.
step() {
  local label=$1 t0
  shift
  t0=$(now_us)
  "$@"
  log "$label: $(since "$t0")s"
}

# Removes directories that may hold mount points (an interrupted debootstrap leaves /proc mounted):
# unmounts what is below them first and never crosses into another file system.
safe_rm() {
  local p real
  for p in "$@"; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    real=$(realpath "$p")
    awk -v p="$real/" '{ m = $5; gsub(/\\040/, " ", m); if (index(m "/", p) == 1) print m }' /proc/self/mountinfo |
      sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$p"
  done
}

# The URI of the first apt source (one-line or deb822 format) with a suite matching $1.
apt_uri() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v want="$1" '
    function flush(   n, s, i, u) {
      if (!done && uris != "" && types ~ /(^|[ \t])deb([ \t]|$)/) {
        n = split(suites, s, /[ \t]+/)
        for (i = 1; i <= n; i++) if (s[i] ~ want) { split(uris, u, /[ \t]+/); print u[1]; done = 1; break }
      }
      uris = ""; suites = ""; types = ""
    }
    FNR == 1 { flush() }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^deb[ \t]/ {
      line = $0; sub(/\[[^]]*\]/, "", line); split(line, f, /[ \t]+/)
      if (!done && f[3] ~ want) { print f[2]; done = 1 }
      next
    }
    /^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types) }
    /^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris) }
    /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
    END { flush() }' "${files[@]}"
}

mirrors() {
  local codename
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(apt_uri "^${codename:-bookworm}\$")
    [ -n "$DEBIAN_MIRROR" ] || DEBIAN_MIRROR=$(apt_uri '^[a-z]+$')
  fi
  [ -n "$DEBIAN_MIRROR" ] || die "no Debian mirror found in /etc/apt sources; set DEBIAN_MIRROR"
  if [ -z "${DEBIAN_SECURITY_MIRROR:-}" ]; then
    DEBIAN_SECURITY_MIRROR=$(apt_uri '-security$')
    [ -n "$DEBIAN_SECURITY_MIRROR" ] || DEBIAN_SECURITY_MIRROR="${DEBIAN_MIRROR%/}-security"
  fi
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Runs a shell script inside a root file system, with a clean environment (the host's SSL_CERT_FILE,
# PIP_CERT, PIP_FIND_LINKS... must not leak in). Output goes to the build log.
chroot_run() {
  local root=$1 script=$2 label=${3:-} t0
  t0=$(now_us)
  if ! env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    chroot "$root" /bin/sh -euxc "$script" >>"$BUILD_LOG" 2>&1; then
    log "chroot script failed in $root; last lines of $BUILD_LOG:"
    tail -n 40 "$BUILD_LOG" >&2
    return 1
  fi
  [ -z "$label" ] || log "$label: $(since "$t0")s"
}

# --- base root file systems, cached by recipe --------------------------------------------------

# Debian trixie minbase with apt sources for the suite, its updates and security; user and group
# postgres = 26:26 (CloudNativePG's UID/GID; Debian's static group 26, tape, moves to 126).
base_trixie() {
  local root=$1 t0
  mkdir -p "$IMAGES/debs/$DEBIAN_SUITE"
  t0=$(now_us)
  if ! debootstrap --variant=minbase --cache-dir="$IMAGES/debs/$DEBIAN_SUITE" "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >>"$BUILD_LOG" 2>&1; then
    log "debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR failed; last lines of $BUILD_LOG:"
    tail -n 30 "$BUILD_LOG" >&2
    return 1
  fi
  log "base trixie: debootstrap --variant=minbase $DEBIAN_SUITE $DEBIAN_MIRROR: $(since "$t0")s"
  cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main
EOF
  chroot_run "$root" '
    groupmod -g 126 tape
    groupadd -g 26 postgres
    useradd -u 26 -g 26 -d /var/lib/postgresql -s /bin/bash -M -c "PostgreSQL administrator" postgres
    install -d -o 26 -g 26 -m 0755 /var/lib/postgresql
  '
  rm -f "$root"/var/cache/apt/archives/*.deb
}

# Files of the distroless "static" base: CA certificates, time zones, /etc/services..., passwd and
# group with root, nobody (65534) and nonroot (65532), nsswitch.conf, /tmp, /home/nonroot. Taken from
# Debian bookworm packages (the host's apt sources) with `apt-get download` + `dpkg-deb -x`.
base_static() {
  local root=$1 x="$1.x" d
  mkdir -p "$root" "$x" "$root.debs"
  fetch_debs "$root.debs" ca-certificates tzdata netbase
  for d in "$root.debs"/*.deb; do dpkg-deb -x "$d" "$x"; done
  install -d -m 0755 "$root/etc/ssl/certs" "$root/usr/share" "$root/usr/share/doc"
  # update-ca-certificates would concatenate the same files (all of them are enabled by default).
  find "$x/usr/share/ca-certificates/mozilla" -name '*.crt' | sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "no CA certificates extracted"
  cp -a "$x/usr/share/zoneinfo" "$root/usr/share/"
  cp -a "$x/etc/services" "$x/etc/protocols" "$x/etc/rpc" "$x/etc/ethertypes" "$root/etc/"
  for d in ca-certificates tzdata netbase; do
    install -D -m 0644 "$x/usr/share/doc/$d/copyright" "$root/usr/share/doc/$d/copyright"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'tty:x:5:' 'staff:x:50:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$root/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' 'networks: files' \
    'protocols: files' 'services: files' 'ethers: files' 'rpc: files' >"$root/etc/nsswitch.conf"
  chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
  install -d -m 1777 "$root/tmp"
  install -d -m 0700 "$root/root"
  install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
  safe_rm "$x" "$root.debs"
}

# The distroless "cc" base: static plus glibc and libgcc from Debian bookworm (no shell).
base_cc() {
  local root=$1 x="$1.x" d base
  base=$(base_dir static)
  cp -a "$base" "$root"
  mkdir -p "$x" "$root.debs"
  fetch_debs "$root.debs" libc6 libgcc-s1 gcc-12-base
  for d in "$root.debs"/*.deb; do dpkg-deb -x "$d" "$x"; done
  for d in libc6 libgcc-s1 gcc-12-base; do
    install -D -m 0644 "$x/usr/share/doc/$d/copyright" "$root/usr/share/doc/$d/copyright"
  done
  rm -rf "$x/usr/share/doc" "$x/usr/share/lintian" "$x/usr/share/man" "$x/usr/share/gcc"
  cp -a "$x/." "$root/"
  safe_rm "$x" "$root.debs"
  [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "glibc's loader is missing from the cc base"
}

fetch_debs() {
  local dir=$1
  shift
  chmod 0777 "$dir"  # apt's _apt user downloads into it
  if ! (cd "$dir" && apt-get download "$@" >>"$BUILD_LOG" 2>&1); then
    log "apt-get download $* failed; running apt-get update once"
    apt-get update -q >>"$BUILD_LOG" 2>&1 || true
    (cd "$dir" && apt-get download "$@" >>"$BUILD_LOG" 2>&1) || { tail -n 20 "$BUILD_LOG" >&2; die "apt-get download $* failed"; }
  fi
}

# The cached directory of a base (built if missing); its name carries a hash of its recipe.
base_key() {
  case $1 in
    trixie) { echo "$FORMAT $DEBIAN_SUITE"; declare -f base_trixie chroot_run; } | sha256sum | cut -c1-16 ;;
    static) { echo "$FORMAT"; declare -f base_static fetch_debs; } | sha256sum | cut -c1-16 ;;
    cc) { echo "$FORMAT $(base_key static)"; declare -f base_cc fetch_debs; } | sha256sum | cut -c1-16 ;;
    scratch) echo none ;;
  esac
}
base_dir() {
  local kind=$1 dir t0 tmp
  dir="$IMAGES/rootfs/$kind-$(base_key "$kind")"
  if [ ! -d "$dir" ]; then
    t0=$(now_us)
    tmp="$RUN/base-$kind"
    safe_rm "$tmp"
    mkdir -p "$IMAGES/rootfs"
    "base_$kind" "$tmp" >&2
    mv "$tmp" "$dir"
    prune "$IMAGES/rootfs" "$kind-*"
    log "base $kind: built in $(since "$t0")s ($(du -sh "$dir" | cut -f1))"
  fi
  echo "$dir"
}

# Keeps the two most recent entries matching a pattern in a directory.
prune() {
  local dir=$1 pattern=$2 old
  # shellcheck disable=SC2012,SC2086 # names are ours ([a-z0-9-]); $pattern is a glob
  ls -1dt "$dir"/$pattern 2>/dev/null | tail -n +3 | while read -r old; do safe_rm "$old"; done
}

# --- helpers for the apt-based recipes -------------------------------------------------------

# A copy of the trixie base, ready for apt: the host's resolver (removed again by finish_rootfs),
# no service starts, the shared .deb cache hard-linked into apt's archive directory.
start_rootfs() {
  local root=$1 base t0
  base=$(base_dir trixie)
  t0=$(now_us)
  cp -a "$base" "$root"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  mkdir -p "$IMAGES/debs/$DEBIAN_SUITE"
  find "$IMAGES/debs/$DEBIAN_SUITE" -maxdepth 1 -name '*.deb' -exec ln -f -t "$root/var/cache/apt/archives/" {} +
  log "copy of the trixie base: $(since "$t0")s"
}

# Shrinks and neutralises a root file system before packing: .debs back into the shared cache, no
# apt lists or caches, no logs, docs (copyright files stay), man pages, translations, no host
# resolver/hostname, no device nodes, empty /tmp and /run.
finish_rootfs() {
  local root=${1:?} f t0
  t0=$(now_us)
  for f in "$root"/var/cache/apt/archives/*.deb; do
    [ -e "$f" ] || continue
    [ -e "$IMAGES/debs/$DEBIAN_SUITE/${f##*/}" ] || ln -f "$f" "$IMAGES/debs/$DEBIAN_SUITE/"
  done
  chroot_run "$root" 'apt-get clean'
  (
    cd "$root"
    rm -f usr/sbin/policy-rc.d etc/resolv.conf etc/hostname etc/machine-id
    rm -rf --one-file-system var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old \
      var/log/* var/cache/ldconfig/aux-cache usr/share/man usr/share/info usr/share/locale usr/share/lintian \
      usr/share/i18n tmp/* var/tmp/* run/* dev/* proc/* sys/*
    find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    install -d -m 1777 tmp var/tmp
    : >etc/machine-id
  )
  log "clean-up of the root file system: $(since "$t0")s"
}

# --- image recipes -----------------------------------------------------------------------------
# Each recipe NAME_rootfs fills $1 and writes the image's tag to $2; NAME_config prints the
# arguments of `oci-image.py build` (one per line); NAME_expect the arguments of `oci-image.py check`.

postgresql_rootfs() {
  local root=$1 version
  start_rootfs "$root"
  chroot_run "$root" "
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql-common
    # No default cluster: CloudNativePG runs initdb itself.
    sed -ri 's/^#? *create_main_cluster *=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
    grep -qx 'create_main_cluster = false' /etc/postgresql-common/createcluster.conf
    apt-get install -y -q --no-install-recommends postgresql-$PG_MAJOR locales
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen
    # ssl-cert's snakeoil key would be the same in every pod; CloudNativePG brings its own certificates.
    rm -f /etc/ssl/private/ssl-cert-snakeoil.key /etc/ssl/certs/ssl-cert-snakeoil.pem
    test ! -e /etc/postgresql/$PG_MAJOR/main
    for b in initdb pg_ctl postgres pg_basebackup pg_rewind pg_controldata pg_archivecleanup; do
      test -x /usr/lib/postgresql/$PG_MAJOR/bin/\$b
    done
  " "postgresql: apt-get install postgresql-$PG_MAJOR locales, locale-gen"
  # shellcheck disable=SC2016 # a dpkg-query format
  version=$(chroot "$root" dpkg-query -W -f '${Version}' "postgresql-$PG_MAJOR")
  finish_rootfs "$root"
  # 17.12-0+deb13u1 -> 17.12: CloudNativePG takes the major version from the tag.
  echo "${version%%-*}" >"$2"
}
postgresql_config() {
  printf '%s\n' --user=26:26 --workdir=/ \
    "--env=PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$DISTROLESS_PATH" --env=LANG=en_US.UTF-8 \
    --label=org.opencontainers.image.title=postgresql \
    --label="org.opencontainers.image.description=PostgreSQL $PG_MAJOR (Debian $DEBIAN_SUITE) for CloudNativePG"
}
postgresql_expect() {
  printf '%s\n' --user=26:26 "--expect=/usr/lib/postgresql/$PG_MAJOR/bin/postgres" \
    "--expect=/usr/lib/postgresql/$PG_MAJOR/bin/initdb" "--expect=/usr/lib/postgresql/$PG_MAJOR/bin/pg_rewind" \
    --expect=/usr/lib/locale/locale-archive --expect=/var/lib/postgresql \
    --forbid=/etc/ssl/private/ssl-cert-snakeoil.key --forbid=/etc/resolv.conf
}

psql_rootfs() {
  local root=$1 version
  start_rootfs "$root"
  chroot_run "$root" "
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql-client-$PG_MAJOR
    test -x /usr/lib/postgresql/$PG_MAJOR/bin/psql
  " "psql: apt-get install postgresql-client-$PG_MAJOR"
  # shellcheck disable=SC2016 # a dpkg-query format
  version=$(chroot "$root" dpkg-query -W -f '${Version}' "postgresql-client-$PG_MAJOR")
  finish_rootfs "$root"
  echo "${version%%-*}" >"$2"
}
psql_config() {
  printf '%s\n' --user=26:26 --workdir=/ \
    "--env=PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$DISTROLESS_PATH" --env=LANG=C.UTF-8 \
    --label=org.opencontainers.image.title=psql
}
psql_expect() {
  printf '%s\n' --user=26:26 "--expect=/usr/lib/postgresql/$PG_MAJOR/bin/psql" --forbid=/etc/resolv.conf
}

# As the plugin's containers/Dockerfile.sidecar: the manager at /manager (the entrypoint), barman in a
# virtualenv on PATH, user 26:26, bytecode compiled ahead (read-only root). The venv lives at
# /usr/local/venv with /venv (upstream's path) a symlink to it.
plugin-barman-cloud-sidecar_rootfs() {
  local root=$1
  start_rootfs "$root"
  # The host's CA bundle is handed in for pip only and removed before packing.
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/tmp/pip-ca.pem"
  printf '%s\n' "$BARMAN_CONSTRAINTS" >"$root/tmp/constraints.txt"
  chroot_run "$root" "
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv python3-psycopg2 ca-certificates
    python3 -m venv --system-site-packages /usr/local/venv
    /usr/local/venv/bin/pip install --no-cache-dir --no-input --disable-pip-version-check --cert /tmp/pip-ca.pem \
      -c /tmp/constraints.txt 'barman[$BARMAN_EXTRAS]==$BARMAN_VERSION'
    /usr/local/venv/bin/pip check
    rm -f /tmp/pip-ca.pem /tmp/constraints.txt
    # Hash-checked bytecode: valid although the layer sets every mtime to 0, and read-only root needs it.
    python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /usr/lib/python3.13 /usr/lib/python3/dist-packages /usr/local/venv >/dev/null
    ln -s usr/local/venv /venv
    /usr/local/venv/bin/barman-cloud-wal-archive --version
    /usr/local/venv/bin/python3 -c 'import psycopg2, azure.storage.blob, boto3'
  " "plugin-barman-cloud-sidecar: apt-get install python3, pip install barman, compileall"
  rm -f "$root/tmp/pip-ca.pem"
  finish_rootfs "$root"
  install -m 0755 "$BARMAN_CLOUD_MANAGER" "$root/manager"
  echo "$BARMAN_CLOUD_VERSION" >"$2"
}
plugin-barman-cloud-sidecar_config() {
  printf '%s\n' --user=26:26 --workdir=/ '--entrypoint=["/manager"]' \
    "--env=PATH=/usr/local/venv/bin:$DISTROLESS_PATH" \
    --label="summary=CloudNativePG Barman plugin" \
    --label="description=Container image that provides the barman-cloud sidecar" \
    --label="org.opencontainers.image.version=$BARMAN_CLOUD_VERSION"
}
plugin-barman-cloud-sidecar_expect() {
  printf '%s\n' --user=26:26 --expect=/manager --expect=/usr/local/venv/bin/barman-cloud-wal-archive \
    --expect=/usr/local/venv/bin/barman-cloud-backup --expect=/venv=usr/local/venv \
    --forbid=/tmp/pip-ca.pem --forbid=/etc/resolv.conf
}

# As CloudNativePG's Dockerfile: distroless static nonroot, the manager at /operator/manager_amd64
# (owned by nonroot) and /manager a symlink to it, WORKDIR /, USER 65532:65532, ENTRYPOINT /manager.
cloudnative-pg_rootfs() {
  local root=$1 base
  base=$(base_dir static)
  cp -a "$base" "$root"
  install -d -m 0755 "$root/operator"
  install -m 0755 -o 65532 -g 65532 "$CNPG_MANAGER" "$root/operator/manager_amd64"
  ln -s operator/manager_amd64 "$root/manager"
  echo "$CNPG_VERSION" >"$2"
}
cloudnative-pg_config() {
  printf '%s\n' --user=65532:65532 --workdir=/ '--entrypoint=["/manager"]' \
    "--env=PATH=$DISTROLESS_PATH" "--env=$SSL_CERT_ENV" \
    --label=org.opencontainers.image.title=cloudnative-pg --label="org.opencontainers.image.version=$CNPG_VERSION"
}
cloudnative-pg_expect() {
  printf '%s\n' --user=65532:65532 --expect=/operator/manager_amd64 --expect=/manager=operator/manager_amd64 \
    --expect=/etc/ssl/certs/ca-certificates.crt --forbid=/bin/sh
}

# As the plugin's containers/Dockerfile.plugin: /manager, WORKDIR /, USER 65532:65532.
plugin-barman-cloud_rootfs() {
  local root=$1 base
  base=$(base_dir static)
  cp -a "$base" "$root"
  install -m 0755 "$BARMAN_CLOUD_MANAGER" "$root/manager"
  echo "$BARMAN_CLOUD_VERSION" >"$2"
}
plugin-barman-cloud_config() {
  printf '%s\n' --user=65532:65532 --workdir=/ '--entrypoint=["/manager"]' \
    "--env=PATH=$DISTROLESS_PATH" "--env=$SSL_CERT_ENV" \
    --label="summary=CloudNativePG Barman plugin" --label="org.opencontainers.image.version=$BARMAN_CLOUD_VERSION"
}
plugin-barman-cloud_expect() {
  printf '%s\n' --user=65532:65532 --expect=/manager --expect=/etc/ssl/certs/ca-certificates.crt --forbid=/bin/sh
}

# As External Secrets' Dockerfile: distroless static, /bin/external-secrets, USER 65534 (nobody).
external-secrets_rootfs() {
  local root=$1 base
  base=$(base_dir static)
  cp -a "$base" "$root"
  install -d -m 0755 "$root/bin"
  install -m 0755 "$ESO_BINARY" "$root/bin/external-secrets"
  echo "$ESO_VERSION" >"$2"
}
external-secrets_config() {
  printf '%s\n' --user=65534 --workdir=/ '--entrypoint=["/bin/external-secrets"]' \
    "--env=PATH=$DISTROLESS_PATH" "--env=$SSL_CERT_ENV" \
    --label=org.opencontainers.image.title=external-secrets --label="org.opencontainers.image.version=$ESO_VERSION"
}
external-secrets_expect() {
  printf '%s\n' --user=65534 --expect=/bin/external-secrets --expect=/etc/ssl/certs/ca-certificates.crt --forbid=/bin/sh
}

# As the repository's Dockerfile (distroless/cc-debian12:nonroot): /homelab-operator, USER
# 65532:65532, WORKDIR /home/nonroot, EXPOSE 8080, ENTRYPOINT /homelab-operator, CMD run.
homelab-operator_rootfs() {
  local root=$1 base
  base=$(base_dir cc)
  cp -a "$base" "$root"
  install -m 0755 "$HOMELAB_OPERATOR_BINARY" "$root/homelab-operator"
  # The loader must resolve every library from the image alone (a static binary needs none).
  if [ "$(python3 "$OCI" elf "$root/homelab-operator")" != static ] &&
    ! chroot "$root" /lib64/ld-linux-x86-64.so.2 --list /homelab-operator >>"$BUILD_LOG" 2>&1; then
    tail -n 5 "$BUILD_LOG" >&2
    die "homelab-operator does not load in its image (see above)"
  fi
  echo "$HOMELAB_OPERATOR_TAG" >"$2"
}
homelab-operator_config() {
  printf '%s\n' --user=65532:65532 --workdir=/home/nonroot '--entrypoint=["/homelab-operator"]' '--cmd=["run"]' \
    --expose=8080/tcp "--env=PATH=$DISTROLESS_PATH" "--env=$SSL_CERT_ENV" \
    --label=org.opencontainers.image.title=homelab-operator \
    --label=org.opencontainers.image.source=https://github.com/homelab-operator/homelab-operator \
    --label=org.opencontainers.image.licenses=Apache-2.0
}
homelab-operator_expect() {
  printf '%s\n' --user=65532:65532 --expect=/homelab-operator --expect=/lib64/ld-linux-x86-64.so.2 \
    --expect=/etc/ssl/certs/ca-certificates.crt --forbid=/bin/sh --forbid=/bin/bash --forbid=/usr/bin/sh
}

# As Kubernetes' build/pause/Dockerfile: FROM scratch, /pause, USER 65535:65535, ENTRYPOINT /pause.
pause_rootfs() {
  local root=$1
  install -d -m 0755 "$root"
  install -m 0755 "$PAUSE_BINARY" "$root/pause"
  echo "$PAUSE_TAG" >"$2"
}
pause_config() {
  printf '%s\n' --user=65535:65535 '--entrypoint=["/pause"]' "--env=PATH=$DISTROLESS_PATH" \
    --label=org.opencontainers.image.title=pause
}
pause_expect() {
  printf '%s\n' --user=65535:65535 --expect=/pause --forbid=/bin/sh
}

# CloudNativePG's Pooler pods run `/controller/manager pgbouncer instance` (the manager copied in by
# the bootstrap init container), which starts /usr/bin/pgbouncer as UID 998, GID 996.
pgbouncer_rootfs() {
  local root=$1 version
  start_rootfs "$root"
  chroot_run "$root" "
    groupadd -g 996 pgbouncer
    useradd -u 998 -g 996 -d /controller -s /usr/sbin/nologin -M -c PgBouncer pgbouncer
    apt-get update -q
    apt-get install -y -q --no-install-recommends pgbouncer
    test -x /usr/bin/pgbouncer || ln -s /usr/sbin/pgbouncer /usr/bin/pgbouncer
    test -x /usr/bin/pgbouncer
    # Debian's own instance and its configuration are unused: the manager writes pgbouncer.ini.
    rm -f /etc/pgbouncer/userlist.txt
  " "pgbouncer: apt-get install pgbouncer"
  # shellcheck disable=SC2016 # a dpkg-query format
  version=$(chroot "$root" dpkg-query -W -f '${Version}' pgbouncer)
  finish_rootfs "$root"
  echo "${version%%-*}" >"$2"
}
pgbouncer_config() {
  printf '%s\n' --user=998:996 --workdir=/ "--env=PATH=$DISTROLESS_PATH" --env=LANG=C.UTF-8 \
    --label=org.opencontainers.image.title=pgbouncer \
    "--label=org.opencontainers.image.description=PgBouncer (Debian $DEBIAN_SUITE) for CloudNativePG poolers"
}
pgbouncer_expect() {
  printf '%s\n' --user=998:996 --expect=/usr/bin/pgbouncer --forbid=/etc/resolv.conf
}

# --- selection, keys, build --------------------------------------------------------------------

binary_var() {
  case $1 in
    cloudnative-pg) echo CNPG_MANAGER ;;
    plugin-barman-cloud | plugin-barman-cloud-sidecar) echo BARMAN_CLOUD_MANAGER ;;
    external-secrets) echo ESO_BINARY ;;
    homelab-operator) echo HOMELAB_OPERATOR_BINARY ;;
    pause) echo PAUSE_BINARY ;;
    *) echo "" ;;
  esac
}
base_of() {
  case $1 in
    postgresql | psql | pgbouncer | plugin-barman-cloud-sidecar) echo trixie ;;
    homelab-operator) echo cc ;;
    pause) echo scratch ;;
    *) echo static ;;
  esac
}

# Checks an input binary: static for the Go images, and only glibc + libgcc for the operator.
check_binary() {
  local name=$1 file=$2 kind lib
  kind=$(python3 "$OCI" elf "$file") || die "$name: $file is not an x86-64 ELF binary"
  if [ "$name" = homelab-operator ]; then
    [ "$kind" != static ] || return 0
    for lib in ${kind#dynamic}; do
      case $lib in
        libc.so.6 | libm.so.6 | libgcc_s.so.1 | ld-linux-x86-64.so.2 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | libresolv.so.2) ;;
        *) die "$name: $file needs $lib, which the image (libc6, libgcc-s1, ca-certificates) does not hold" ;;
      esac
    done
  elif [ "$kind" != static ]; then
    die "$name: $file is not statically linked ($kind); build it with CGO_ENABLED=0"
  fi
}

# The cache key of an image: its recipe's text and the helpers it uses, versions and package lists
# (in the recipe text and the variables), its base's key, the packer, the input binary.
image_key() {
  local name=$1 bin_sha=$2 base
  base=$(base_of "$name")
  {
    echo "format=$FORMAT prefix=$IMAGE_PREFIX pg=$PG_MAJOR cnpg=$CNPG_VERSION barman-cloud=$BARMAN_CLOUD_VERSION"
    echo "barman=$BARMAN_VERSION extras=$BARMAN_EXTRAS eso=$ESO_VERSION suite=$DEBIAN_SUITE"
    [ "$name" != homelab-operator ] || echo "tag=$HOMELAB_OPERATOR_TAG"
    [ "$name" != pause ] || echo "tag=$PAUSE_TAG"
    [ "$name" != plugin-barman-cloud-sidecar ] || echo "$BARMAN_CONSTRAINTS"
    echo "base=$base:$(base_key "$base") binary=$bin_sha packer=$(sha256 "$OCI")"
    declare -f "${name}_rootfs" "${name}_config" "${name}_expect"
    [ "$base" != trixie ] || declare -f start_rootfs finish_rootfs chroot_run
  } | sha256sum | cut -c1-20
}

build_image() {
  local name=$1 key=$2 dir=$3 tag ref sum t0 summary
  local work="$RUN/$name"
  local -a cfg exp
  mkdir -p "$work"
  BUILD_LOG="$work/build.log"
  : >"$BUILD_LOG"
  t0=$(now_us)
  "${name}_rootfs" "$work/rootfs" "$work/tag" >&2
  tag=$(cat "$work/tag")
  [ -n "$tag" ] || die "$name: no tag"
  ref="$IMAGE_PREFIX/$name:$tag"
  log "$name: root file system in $(since "$t0")s ($(du -sh "$work/rootfs" | cut -f1))"
  mapfile -t cfg < <("${name}_config")
  mapfile -t exp < <("${name}_expect")
  t0=$(now_us)
  sum=$(python3 "$OCI" build --rootfs "$work/rootfs" --name "$ref" --out "$work/image.tar" \
    --created-by "hack/build-images.sh $name" "${cfg[@]}")
  log "$name: packed in $(since "$t0")s"
  t0=$(now_us)
  summary=$(python3 "$OCI" check "$work/image.tar" --ref "$ref" "${exp[@]}")
  log "$name: checked in $(since "$t0")s: $summary"
  mkdir -p "$IMAGES/$name"
  safe_rm "$IMAGES/$name/.tmp-$key"
  mkdir "$IMAGES/$name/.tmp-$key"
  mv "$work/image.tar" "$IMAGES/$name/.tmp-$key/image.tar"
  mv "$BUILD_LOG" "$IMAGES/$name/.tmp-$key/build.log"
  echo "$summary" >"$IMAGES/$name/.tmp-$key/summary.json"
  echo "$sum" >"$IMAGES/$name/.tmp-$key/sha256"
  echo "$ref" >"$IMAGES/$name/.tmp-$key/ref"
  mv "$IMAGES/$name/.tmp-$key" "$dir"
  safe_rm "$work"
  prune "$IMAGES/$name" '[0-9a-f]*'
}

on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -s "${BUILD_LOG:-}" ]; then
    cp "$BUILD_LOG" "$IMAGES/failed-build.log"
    log "failed; the build log is kept in $IMAGES/failed-build.log"
  fi
  safe_rm "$IMAGES/work"
}

main() {
  local names=() name var bin key dir t0 total0 line
  for name in "$@"; do
    case $name in
      -h | --help) usage; exit 0 ;;
      -*) usage; die "unknown option $name" ;;
    esac
    [[ " ${ALL_IMAGES[*]} " == *" $name "* ]] || die "unknown image '$name' (one of: ${ALL_IMAGES[*]})"
    [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
  done
  local explicit=0
  if [ ${#names[@]} -gt 0 ]; then explicit=1; else names=("${ALL_IMAGES[@]}"); fi

  local selected=()
  for name in "${names[@]}"; do
    var=$(binary_var "$name")
    if [ -n "$var" ]; then
      bin="${!var:-}"
      if [ -z "$bin" ]; then
        [ "$explicit" = 0 ] || die "$name needs its binary: set $var to the path of the binary"
        log "$name: skipped ($var is not set)"
        continue
      fi
      [ -f "$bin" ] || die "$name: $var=$bin is not a file"
      check_binary "$name" "$bin"
    fi
    selected+=("$name")
  done
  if [ -z "${HOMELAB_OPERATOR_TAG:-}" ]; then
    HOMELAB_OPERATOR_TAG=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
    HOMELAB_OPERATOR_TAG=${HOMELAB_OPERATOR_TAG:-dev}
  fi

  for tool in python3 tar sha256sum flock; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
  done
  mkdir -p "$IMAGES"
  exec 9>"$IMAGES/.lock"
  if ! flock -n 9; then
    log "waiting for another build of the images to finish"
    flock 9
  fi
  # Whatever an interrupted run left in the work directory is ours to remove (we hold the lock).
  safe_rm "$IMAGES/work"
  RUN="$IMAGES/work/run-$$"
  mkdir -p "$RUN"
  trap on_exit EXIT
  BUILD_LOG="$RUN/base.log"
  mirrors

  total0=$(now_us)
  local lines=() built=0
  for name in "${selected[@]}"; do
    t0=$(now_us)
    var=$(binary_var "$name")
    local bin_sha=none
    if [ -n "$var" ]; then bin_sha=$(sha256 "${!var}"); fi
    key=$(image_key "$name" "$bin_sha")
    dir="$IMAGES/$name/$key"
    if [ -f "$dir/ref" ] && [ -f "$dir/image.tar" ]; then
      log "$name: cached $(cat "$dir/ref") ($dir)"
    else
      case $(base_of "$name") in
        trixie) command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)" ;;
        scratch) ;;
        *) { command -v dpkg-deb >/dev/null && command -v apt-get >/dev/null; } || die "apt-get and dpkg-deb are needed" ;;
      esac
      log "$name: building (key $key)"
      build_image "$name" "$key" "$dir"
      log "$name: built $(cat "$dir/ref") in $(since "$t0")s ($(du -h "$dir/image.tar" | cut -f1))"
      built=$((built + 1))
    fi
    printf -v line '%s\t%s\t%s' "$(cat "$dir/ref")" "$dir/image.tar" "$(cat "$dir/sha256")"
    lines+=("$line")
  done

  # The index keeps the latest entry of every image: this run's, then earlier ones still on disk.
  local index="$IMAGES/index.tsv" repos=" "
  for line in "${lines[@]}"; do
    line=${line%%$'\t'*}
    repos+="${line%:*} "
  done
  {
    printf '%s\n' "${lines[@]}"
    if [ -f "$index" ]; then
      while IFS=$'\t' read -r r a s; do
        [[ "$repos" == *" ${r%:*} "* ]] && continue
        [ -f "$a" ] && printf '%s\t%s\t%s\n' "$r" "$a" "$s"
      done <"$index"
    fi
  } | sed '/^$/d' | sort >"$index.tmp"
  mv "$index.tmp" "$index"
  log "${#selected[@]} image(s), $built built, in $(since "$total0")s; index $index"
  echo "$index"
}

main "$@"
