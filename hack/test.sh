#!/usr/bin/env bash
# Runs every test of the workspace against one shared, real control plane: builds the control plane
# if it is not cached, compiles the tests, then runs `cargo test --workspace` under
# `homelab-testenv exec`, so that test processes attach to it instead of each starting their own.
# Extra arguments go to `cargo test` (e.g. `hack/test.sh -p homelab-render`).
#
# The output is also written to $HOMELAB_TEST_LOG (default target/test-output.log), and the run
# ends with the summed-up `test result:` line of all test binaries (hack/test-summary.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
log="${HOMELAB_TEST_LOG:-$target_dir/test-output.log}"
mkdir -p "$(dirname "$log")"

bash hack/build-control-plane.sh >/dev/null
cargo build --quiet -p homelab-testenv --bin homelab-testenv
cargo test --workspace --no-run "$@"

# --no-fail-fast: one failing test binary does not hide the results of the others.
status=0
"$target_dir/debug/homelab-testenv" exec -- cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
bash hack/test-summary.sh "$log"
exit "$status"
