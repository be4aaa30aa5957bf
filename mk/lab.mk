# The lab: upstream Kubernetes binaries built from Go modules, and a real
# control plane on loopback (crates/lab, docs/LAB.md). Owned by the lab.

LAB_DIR ?= out/lab
# `cargo run` would wrap the lab in hack/netns-run's throw-away namespace;
# the lab makes its own (sendfleet-lab), so skip the runner's.
LAB_CLI = SENDFLEET_NO_NETNS=1 cargo run -q -p sendfleet-lab --bin sendfleet-lab --

.PHONY: lab-deps upstream cluster cluster-down test-lab

# Debian packages the lab uses: ip (iproute2), unshare/nsenter/flock
# (util-linux); for the node: containerd, runc, CNI plugins; for the pause
# image: gcc + static libc, umoci. (The harness installs the node's packages
# itself too, so `cargo test` alone also works.)
LAB_PACKAGES = iproute2 util-linux containerd runc containernetworking-plugins gcc libc6-dev umoci busybox-static
lab-deps:
	@missing=$$(for p in $(LAB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl, helm, prometheus, promtool, alertmanager, amtool ->
# ${SENDFLEET_CACHE:-/var/cache/sendfleet}/bin/<name>-<version>/
# (cold: ~10 min on 2 cores; cached: ~1 s).
upstream: lab-deps
	hack/build-upstream.sh

# Start the control plane and a node (kubelet + containerd) in the
# background inside network namespace sendfleet-lab; writes
# $(LAB_DIR)/kubeconfig and $(LAB_DIR)/env. LAB_UP_FLAGS= for no node.
LAB_UP_FLAGS ?= --node
cluster: upstream
	$(LAB_CLI) up --dir $(LAB_DIR) $(LAB_UP_FLAGS)

cluster-down:
	$(LAB_CLI) down --dir $(LAB_DIR)

# The lab's integration tests (crates/lab/tests/*.rs); its unit tests run
# in `make test-unit`.
CRATE_TEST_RUNS += lab
test-lab: upstream
	cargo test -p sendfleet-lab --test '*'
