#!/usr/bin/env bash
# The end-to-end tests (crates/homelab-e2e) and the demo's test on a data plane: builds the node, the third-party
# operators and the images if they are not cached, builds the operator binary whose image the
# node imports, and runs `cargo test -p homelab-e2e -p homelab-demo` under `homelab-testenv exec --data-plane`.
# Extra arguments go to `cargo test`. The output goes to $HOMELAB_TEST_LOG too (appended with
# --append-log, as hack/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

append=0
if [ "${1:-}" = "--append-log" ]; then append=1; shift; fi
target_dir="${CARGO_TARGET_DIR:-target}"
log="${HOMELAB_TEST_LOG:-$target_dir/e2e-output.log}"
mkdir -p "$(dirname "$log")"
[ "$append" = 1 ] || : > "$log"

bash hack/build-node.sh >/dev/null
bash hack/build-data-plane.sh >/dev/null
cargo build --quiet -p homelab-testenv --bin homelab-testenv -p homelab-operator --bin homelab-operator
cargo test -p homelab-e2e -p homelab-demo --no-run "$@"

# The tests wait on pods far more than they compute: run them all side by side.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-8}"
status=0
HOMELAB_OPERATOR_BINARY="$(cd "$target_dir" && pwd)/debug/homelab-operator" \
  "$target_dir/debug/homelab-testenv" exec --data-plane -- cargo test -p homelab-e2e -p homelab-demo --no-fail-fast "$@" 2>&1 | tee -a "$log" || status=$?
[ "$append" = 1 ] || bash hack/test-summary.sh "$log"
exit "$status"
