# Instance agent (src/agent): real Postfix tests (tests/agent_*.rs: each
# binary runs in its own network namespace via hack/netns-run; the instances
# run what render_pool produced, on documentation addresses added to lo
# there, with the lab's receivers and DNS server; see crates/lab/src/kit).
#
#   make test-agent    real-Postfix integration tests (the agent's unit and
#                      property tests run once, in `make test-unit`)
#   make bench-agent   log pipeline vs pflogsumm (1M lines), socketmap
#                      lookups through the real protocol, queue scan of a
#                      100k-message deferred queue vs postqueue -j alone,
#                      delivery rate with the agent's socketmap vs the static
#                      transport table only
#
# Needs root (network namespace, Postfix) and Debian's postfix + pflogsumm;
# agent-deps installs them non-interactively when missing.

AGENT_CARGO ?= cargo
AGENT_TEST_BINS := agent_socketmap agent_rendered agent_delivery agent_routing agent_reload agent_warmup agent_adaptive agent_handoff agent_flow agent_tls agent_relay agent_auth agent_scrape agent_alerts agent_drain agent_dkim

.PHONY: agent-deps test-agent bench-agent

agent-deps:
	@missing=$$(for p in postfix pflogsumm util-linux iproute2 opendkim python3-dkim openssl; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "agent: installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@# The package starts a system Postfix; the tests run their own instances.
	@-postfix stop >/dev/null 2>&1 || true

# upstream: agent_scrape runs the lab's Prometheus (built with the rest).
test-agent: agent-deps upstream
	$(AGENT_CARGO) test $(foreach t,$(AGENT_TEST_BINS),--test $(t))

bench-agent: agent-deps
	$(AGENT_CARGO) bench --bench agent_log --bench agent_socketmap --bench agent_queue --bench agent_delivery
