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

.PHONY: all build deps test test-render lint crds demo demo-down bench help
all: build

help:
	@grep -E '^[a-z-]+:.*' Makefile mk/*.mk | sed 's/:.*//' | sort -u

include $(wildcard mk/*.mk)

build:
	$(CARGO) build --bin sendfleet

# Debian packages the tests exercise for real. Idempotent and quiet when
# everything is present.
DEB_PACKAGES := postfix pflogsumm openssl iproute2 util-linux ca-certificates
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

# The render core and the offline CLI: pure tests, golden files, the
# property test, and real Postfix checking every rendered file.
test-render: deps
	$(CARGO) test -p sendfleet-render
	$(CARGO) test --test crds --test cli_render

test: deps lint test-render test-areas
	@echo "make test: all passed"

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
