# The sendfleet image and the end-to-end tests on the lab's real node.
#
#   make image      localhost/sendfleet:dev as an OCI archive, built from
#                   Debian packages (mmdebstrap) + the release binary (umoci);
#                   cached under $(SENDFLEET_CACHE)/images/ by inputs
#   make test-e2e   on the lab's real node (each test binary in its own
#                   network namespace):
#                   tests/e2e_pool.rs  operator process + a 3-address pool:
#                     pods Running/Ready, 500 messages from the egress
#                     addresses, pool status counts, policy change without
#                     restart, pod deletion with 200 deferred, bad image
#                     and a port taken reported in the pool conditions
#                   tests/e2e_chart.rs the demo itself (crates/lab/src/demo.rs,
#                     what `make demo` runs): the chart's operator as a pod,
#                     examples/ applied, mta3 quarantined by the fake DNSBL,
#                     500 messages through the pool's Service, status counts
#                   tests/e2e_install.rs docs/INSTALL.md's marked blocks run
#                     as written from the packaged chart: install, examples,
#                     Ready, upgrade with a changed CRD, uninstall
#                   tests/image.rs     PID 1 is tini: the image's entrypoint
#                     and files, the rendered pods' command, the Containerfile
#
#   make test-incidents  tests/incidents.rs: the seed incidents replayed on
#                   the real node (chart operator, instance pods routed by
#                   MX through the lab DNS, providers misbehaving on cue),
#                   eight tests in parallel on one lab
#
# The archive path is handed to the tests in SENDFLEET_IMAGE_ARCHIVE; the
# test imports it into the lab node's containerd itself.

E2E_TEST_BINS := image e2e_pool e2e_chart e2e_install e2e_lifecycle
INCIDENT_TEST_BINS := incidents

.PHONY: image image-deps test-e2e test-incidents

image-deps:
	@missing=$$(for p in mmdebstrap umoci binutils; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "image: installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

image: image-deps
	$(CARGO) build --release --bin sendfleet
	hack/build-image.sh

test-e2e: upstream deps image
	SENDFLEET_IMAGE_ARCHIVE=$$(hack/build-image.sh --print | sed -n 's/^image=//p') \
	  $(CARGO) test $(foreach t,$(E2E_TEST_BINS),--test $(t)) -- --nocapture --test-threads=1

# The incidents wait on Postfix queue runs, not on the CPU: all nine run at
# once on the one lab (each in its own namespace, addresses and providers).
# After test-e2e: two node-based binaries never run at the same time.
test-incidents: upstream deps image test-e2e
	SENDFLEET_IMAGE_ARCHIVE=$$(hack/build-image.sh --print | sed -n 's/^image=//p') \
	  $(CARGO) test $(foreach t,$(INCIDENT_TEST_BINS),--test $(t)) -- --nocapture --test-threads=9
