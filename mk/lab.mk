# The lab: upstream Kubernetes binaries built from Go modules, and a real
# control plane on loopback (crates/lab, docs/LAB.md). Owned by the lab.

LAB_DIR ?= out/lab
# `cargo run` would wrap the lab in hack/netns-run's throw-away namespace;
# the lab makes its own (sendfleet-lab), so skip the runner's.
LAB_CLI = SENDFLEET_NO_NETNS=1 cargo run -q -p sendfleet-lab --bin sendfleet-lab --

.PHONY: lab-deps upstream cluster cluster-down test-lab

# Tools the lab calls: ip (iproute2), unshare (util-linux), flock (util-linux).
lab-deps:
	@command -v ip >/dev/null && command -v unshare >/dev/null && command -v flock >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux; }

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl, helm -> ${SENDFLEET_CACHE:-/var/cache/sendfleet}/bin/<name>-<version>/
# (cold: ~10 min on 2 cores; cached: ~1 s).
upstream: lab-deps
	hack/build-upstream.sh

# Start the control plane in the background inside network namespace
# sendfleet-lab; writes $(LAB_DIR)/kubeconfig and $(LAB_DIR)/env.
cluster: upstream
	$(LAB_CLI) up --dir $(LAB_DIR)

cluster-down:
	$(LAB_CLI) down --dir $(LAB_DIR)

test-lab: upstream
	cargo test -p sendfleet-lab
