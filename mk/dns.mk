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

DNS_TEST_BINS := dns_unit dns_server
DNS_BENCH_BINS := dns_bench

.PHONY: dns-deps test-dns bench-dns

dns-deps:
	@command -v openssl >/dev/null 2>&1 || { \
	  echo "dns: installing openssl (test DKIM keys)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

test-dns: dns-deps
	$(DNS_CARGO) test $(foreach t,$(DNS_TEST_BINS),--test $(t))

bench-dns: dns-deps
	$(DNS_CARGO) test $(DNS_BENCH_PROFILE) $(foreach t,$(DNS_BENCH_BINS),--test $(t)) -- --nocapture
