# sendfleet — the two commands a newcomer needs:
#
#   make demo   examples/ on a real single-node Kubernetes, 500 messages through the pool
#   make test   everything: unit, property, real Postfix, real DNS, real API server
#
# Both install what they need on a fresh Debian 12 machine when run as root
# (Postfix, pflogsumm, openssl, iproute2 — non-interactively) and build the
# upstream Kubernetes binaries once into $(SENDFLEET_CACHE) (outside the repo).
# Each area keeps its own targets in mk/<area>.mk.

SHELL := /bin/bash
export SENDFLEET_CACHE ?= /var/cache/sendfleet
CARGO ?= cargo

.PHONY: all build deps test test-unit test-listed test-render lint crds demo demo-down bench help
all: build

help:
	@grep -E '^[a-z-]+:.*' Makefile mk/*.mk | sed 's/:.*//' | sort -u

include $(wildcard mk/*.mk)

build:
	$(CARGO) build --bin sendfleet

# Debian packages the tests exercise for real. Idempotent and quiet when
# everything is present.
DEB_PACKAGES := postfix pflogsumm openssl iproute2 util-linux ca-certificates lua5.1
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@# The Debian package starts a system Postfix; the tests run their own.
	@-postfix stop >/dev/null 2>&1 || true

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# crds/ (and the chart's copy) from the Rust types.
crds: build
	target/debug/sendfleet crd --out-dir crds
	cp crds/*.yaml charts/sendfleet/crds/

# Every unit test of every workspace crate, once: the root package's
# (operator, agent, dns, cli), the render core's and the lab's, plus the
# doc examples. The areas below run only integration test binaries.
# tests/module_graph.rs reads the source: no import cycle between modules.
UNIT_TEST_BINS := module_graph
test-unit: deps
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test --workspace --doc
	$(CARGO) test $(foreach t,$(UNIT_TEST_BINS),--test $(t))

# The render core and the offline CLI: golden files, the property test,
# and real Postfix checking every rendered file (crates/render/tests/*.rs).
RENDER_TEST_BINS := crds cli_render
CRATE_TEST_RUNS += render
test-render: deps
	$(CARGO) test -p sendfleet-render --test '*'
	$(CARGO) test $(foreach t,$(RENDER_TEST_BINS),--test $(t))

test: deps lint test-listed test-unit test-render test-areas
	@echo "make test: all passed"

# Each integration test binary is run by exactly one make target: every
# tests/<name>.rs is listed in one <AREA>_TEST_BINS (or _BENCH_BINS) of
# Makefile or mk/*.mk, and every crates/<crate>/tests directory in
# CRATE_TEST_RUNS (run with `-p sendfleet-<crate> --test '*'`). A new test
# file nobody lists fails here instead of never running.
LISTED_TESTS = $(foreach v,$(filter %_TEST_BINS,$(.VARIABLES)),$($(v)))
LISTED_BENCHES = $(foreach v,$(filter %_BENCH_BINS,$(.VARIABLES)),$($(v)))
ROOT_TEST_FILES := $(basename $(notdir $(wildcard tests/*.rs)))
CRATE_TEST_DIRS := $(patsubst crates/%/tests,%,$(wildcard crates/*/tests))
test-listed:
	@unlisted="$(filter-out $(LISTED_TESTS) $(LISTED_BENCHES),$(ROOT_TEST_FILES))"; \
	 missing="$(filter-out $(ROOT_TEST_FILES),$(LISTED_TESTS) $(LISTED_BENCHES))"; \
	 crates="$(filter-out $(CRATE_TEST_RUNS),$(CRATE_TEST_DIRS))"; \
	 twice="$(shell echo $(LISTED_TESTS) $(CRATE_TEST_RUNS) | tr ' ' '\n' | sort | uniq -d)"; \
	 if [ -n "$$unlisted$$missing$$crates$$twice" ]; then \
	   echo "test-listed: tests/*.rs run by no make target: $$unlisted"; \
	   echo "test-listed: listed but no tests/<name>.rs: $$missing"; \
	   echo "test-listed: crates/<crate>/tests not in CRATE_TEST_RUNS: $$crates"; \
	   echo "test-listed: run twice: $$twice"; \
	   exit 1; \
	 fi
	@echo "test-listed: $(words $(LISTED_TESTS)) test binaries, $(words $(LISTED_BENCHES)) bench binaries, crates $(CRATE_TEST_RUNS)"

# Every area's test-* / bench-* target defined in mk/*.mk.
AREA_TESTS := $(shell sed -n 's/^\(test-[a-z0-9-]*\):.*/\1/p' mk/*.mk)
AREA_BENCHES := $(shell sed -n 's/^\(bench-[a-z0-9-]*\):.*/\1/p' mk/*.mk)
.PHONY: test-areas
test-areas: $(AREA_TESTS)

# examples/ on the lab's real node: the chart's operator as a pod, the
# pool's instances as pods, simulated providers, 500 messages submitted
# through the pool's Service (see hack/demo.sh). Builds what is missing first
# (upstream binaries, the release binary and the image: all cached).
demo: deps upstream image
	hack/demo.sh

# Stops the demo's receivers, pods, node, control plane and namespace.
demo-down:
	hack/demo.sh --down

bench: deps $(AREA_BENCHES)
