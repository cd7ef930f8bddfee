# Task runner. Targets stay thin: the logic lives in hack/ and in the Rust crates.
.PHONY: test lint control-plane

# Every test of the workspace, against one real control plane (built first if not cached).
test:
	bash hack/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# etcd, kube-apiserver, kube-controller-manager and kubectl, built from Go modules into the cache.
control-plane:
	bash hack/build-control-plane.sh
