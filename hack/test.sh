#!/usr/bin/env bash
# Runs every test of the workspace against real components, in two phases:
# 1. every crate but homelab-e2e and homelab-demo under `homelab-testenv exec`, which starts one control plane for
#    all test binaries (homelab-testenv's own node tests start and stop data planes of their own);
# 2. the end-to-end tests and the demo (hack/e2e.sh) on a data plane: a control plane with a real node, the
#    operator installed in it from deploy/base, CloudNativePG, the Barman Cloud Plugin and External
#    Secrets Operator.
# Extra arguments go to the first phase's `cargo test` (e.g. `hack/test.sh -p homelab-render`);
# with arguments, the end-to-end phase is left out.
#
# The output is also written to $HOMELAB_TEST_LOG (default target/test-output.log), and the run
# ends with the summed-up `test result:` line of all test binaries (hack/test-summary.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
log="${HOMELAB_TEST_LOG:-$target_dir/test-output.log}"
mkdir -p "$(dirname "$log")"
: > "$log"

bash hack/build-control-plane.sh >/dev/null
cargo build --quiet -p homelab-testenv --bin homelab-testenv
if [ $# -gt 0 ]; then
  cargo test --workspace --no-run "$@"
else
  cargo test --workspace --exclude homelab-e2e --exclude homelab-demo --no-run
fi

# --no-fail-fast: one failing test binary does not hide the results of the others.
status=0
if [ $# -gt 0 ]; then
  "$target_dir/debug/homelab-testenv" exec -- cargo test --workspace --no-fail-fast "$@" 2>&1 | tee -a "$log" || status=$?
else
  "$target_dir/debug/homelab-testenv" exec -- cargo test --workspace --exclude homelab-e2e --exclude homelab-demo --no-fail-fast 2>&1 | tee -a "$log" || status=$?
  HOMELAB_TEST_LOG="$log" bash hack/e2e.sh --append-log || status=$?
fi
bash hack/test-summary.sh "$log"
exit "$status"
