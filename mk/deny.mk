# Supply chain (deny.toml): every dependency's licence is one we allow, no
# banned crate, every crate from crates.io.
#
#   make test-deny    cargo deny check licenses bans sources
#
# Advisories are left out: `cargo deny check advisories` clones the RustSec
# database from GitHub, which the build machines cannot reach (only the
# package registries are). Run it where GitHub is reachable.
#
# cargo-deny is installed from crates.io (`cargo install --locked`, a few
# minutes once) when missing; pinned so every machine checks the same way.

DENY_CARGO ?= cargo
CARGO_DENY_VERSION := 0.20.2

.PHONY: deny-deps test-deny

deny-deps:
	@$(DENY_CARGO) deny --version 2>/dev/null | grep -q ' $(CARGO_DENY_VERSION)$$' || { \
	  echo "deny: installing cargo-deny $(CARGO_DENY_VERSION)"; \
	  $(DENY_CARGO) install --locked --version $(CARGO_DENY_VERSION) cargo-deny; }

test-deny: deny-deps
	$(DENY_CARGO) deny --locked check licenses bans sources
