#!/usr/bin/env bash
# Mutation check of the pure code: cargo-mutants changes one expression at a time (a `>` into
# `>=`, a function body into `Default::default()`, ...) in the renderer's schedule and quantity
# code and in homelab-azure's WAL and SAS logic, and runs their tests; a mutant the tests do not
# catch is listed as MISSED. docs/mutation.md records the last result and why each survivor is
# acceptable or which test now kills it.
#
# MUTANTS_ARGS is passed to every cargo-mutants run (for example `--shard 0/2`).
set -euo pipefail
cd "$(dirname "$0")/.."

version=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -q " $version\$"; then
  echo "[mutants] installing cargo-mutants $version from crates.io"
  cargo install cargo-mutants --version "$version" --locked
fi

bash hack/install-azurite.sh >/dev/null
out="${MUTANTS_OUT:-${CARGO_TARGET_DIR:-target}/mutants}"
mkdir -p "$out"
status=0
# The renderer's unit tests and its pure integration tests (golden snapshots, properties); the
# dry-run test needs an apiserver and the fuzz test is its own target (`make fuzz`).
cargo mutants --in-place -p homelab-render \
  -f crates/homelab-render/src/cron.rs -f crates/homelab-render/src/units.rs \
  -o "$out/render" ${MUTANTS_ARGS:-} -- --lib --test golden --test properties || status=$?
# homelab-azure's unit tests and its Blob tests against Azurite (the WAL probe lists real blobs).
cargo mutants --in-place -p homelab-azure \
  -f crates/homelab-azure/src/wal.rs -f crates/homelab-azure/src/sas.rs \
  -o "$out/azure" ${MUTANTS_ARGS:-} -- --lib --test blob_sas || status=$?
for part in render azure; do
  if [ ! -d "$out/$part/mutants.out" ]; then
    echo "[mutants] $part: no result (see the output above)"
    continue
  fi
  echo "[mutants] $part: $(wc -l < "$out/$part/mutants.out/caught.txt") caught," \
    "$(wc -l < "$out/$part/mutants.out/missed.txt") missed," \
    "$(wc -l < "$out/$part/mutants.out/timeout.txt") timed out," \
    "$(wc -l < "$out/$part/mutants.out/unviable.txt") unviable"
  sed 's/^/[mutants]   missed: /' "$out/$part/mutants.out/missed.txt"
done
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts.
exit "$status"
