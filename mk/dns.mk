# DNS checks (src/dns): tests against a real DNS server (hickory-server,
# in process, on 127.0.0.1 inside the test's network namespace) and the
# DNSBL sweep benchmark.
#
#   make test-dns    unit + real-server tests (tests/dns_unit.rs, tests/dns_server.rs)
#   make bench-dns   64 IPs x 10 zones sweep; prints time and max in flight
#
# The tests generate DKIM keys with the openssl CLI; install it if missing.

DNS_CARGO ?= cargo
# The benchmark runs in the test profile by default (no separate release
# build of the whole crate); set DNS_BENCH_PROFILE=--release for optimized
# figures.
DNS_BENCH_PROFILE ?=

.PHONY: dns-deps test-dns bench-dns

dns-deps:
	@command -v openssl >/dev/null 2>&1 || { \
	  echo "dns: installing openssl (test DKIM keys)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

test-dns: dns-deps
	$(DNS_CARGO) test --test dns_unit --test dns_server

bench-dns: dns-deps
	$(DNS_CARGO) test $(DNS_BENCH_PROFILE) --test dns_bench -- --nocapture
