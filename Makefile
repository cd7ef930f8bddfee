# Task runner. Targets stay thin: the logic lives in hack/ and in the Rust crates.
.PHONY: test e2e lint control-plane node argocd demo crds bench bench-data-plane chaos fuzz mutants

# Every test of the workspace, against one real control plane (built first if not cached).
test:
	bash hack/test.sh

# The end-to-end tests alone, on a control plane with a real node (also run by `make test`).
e2e:
	bash hack/e2e.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# etcd, kube-apiserver, kube-controller-manager and kubectl, built from Go modules into the cache.
control-plane:
	bash hack/build-control-plane.sh

# kubelet, kube-proxy, kube-scheduler, containerd, runc, CoreDNS and pause, and the third-party
# operators (CloudNativePG, Barman Cloud Plugin, External Secrets Operator) with their manifests.
node:
	bash hack/build-node.sh
	bash hack/build-data-plane.sh

# Argo CD (application controller, repo-server, ApplicationSet controller, API server, CLI) and
# kustomize, built from Go modules into the cache, for the tests that run Argo CD for real.
argocd:
	bash hack/build-argocd.sh

# The operator process against a private control plane (and the Azure emulators): convergence
# against its floor, write amplification, reaction latency, footprint, start-up. Writes the figures
# into docs/benchmarks.md. Options: make bench BENCH_ARGS="--n 100 --large-n 0".
TARGET_DIR = $${CARGO_TARGET_DIR:-target}
bench:
	bash hack/build-control-plane.sh >/dev/null
	cargo build --release -p homelab-operator --bin homelab-operator -p homelab-bench --bins
	"$(TARGET_DIR)/release/bench" --operator "$(TARGET_DIR)/release/homelab-operator" --emulated "$(TARGET_DIR)/release/operator-emulated" $(BENCH_ARGS)

# Figures on the data plane (a real node; needs root), the operator in the cluster: time from an
# AppDatabase to Ready against its Cluster and ExternalSecret applied by hand, restore RTO against
# a hand-written recovery Cluster, and the RPO of drills under a steady write load. Prints
# Markdown tables. Options: make bench-data-plane DATA_PLANE_BENCH_ARGS="--figures rpo --rpo-drills 5".
bench-data-plane:
	bash hack/build-control-plane.sh >/dev/null
	bash hack/install-azurite.sh >/dev/null
	bash hack/build-node.sh >/dev/null
	bash hack/build-data-plane.sh >/dev/null
	cargo build -q --release -p homelab-operator --bin homelab-operator
	cargo build -q -p homelab-testenv --bin homelab-testenv -p homelab-e2e --bin data-plane-bench
	HOMELAB_OPERATOR_BINARY="$$(cd $(TARGET_DIR) && pwd)/release/homelab-operator" "$(TARGET_DIR)/debug/homelab-testenv" exec --data-plane -- "$(TARGET_DIR)/debug/data-plane-bench" $(DATA_PLANE_BENCH_ARGS)

# SIGKILLs, kube-apiserver and etcd restarts, Azure emulator outages and cut connections; non-zero
# exit on a violated invariant.
# Options: make chaos CHAOS_ARGS="--kills 20 --minutes 3".
chaos:
	bash hack/build-control-plane.sh >/dev/null
	cargo build --release -p homelab-operator --bin homelab-operator -p homelab-bench --bins
	"$(TARGET_DIR)/release/chaos" --operator "$(TARGET_DIR)/release/homelab-operator" --emulated "$(TARGET_DIR)/release/operator-emulated" $(CHAOS_ARGS)

# The CR deserialisation + render path under a million generated cases per generator and kind.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release -p homelab-render --test fuzz -- --test-threads=2

# Mutation check of the pure schedule, quantity, WAL and SAS code (docs/mutation.md).
mutants:
	bash hack/mutants.sh

# The seed examples on the data plane (a real node; needs root), the operator in the cluster.
# DEMO_ARGS=--once shows the result and stops.
demo:
	bash hack/build-control-plane.sh >/dev/null
	bash hack/install-azurite.sh >/dev/null
	bash hack/build-node.sh >/dev/null
	bash hack/build-data-plane.sh >/dev/null
	cargo build -q -p homelab-operator --bin homelab-operator
	cargo build -q -p homelab-demo
	HOMELAB_OPERATOR_BINARY="$$(cd $(TARGET_DIR) && pwd)/debug/homelab-operator" "$(TARGET_DIR)/debug/homelab-demo" $(DEMO_ARGS)

# Regenerate crds/ and docs/crd-reference.md from the Rust types.
crds:
	cargo run -q -p homelab-api --bin crdgen -- crds --reference docs/crd-reference.md
