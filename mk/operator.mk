# The operator (src/operator) against a real kube-apiserver + etcd (and
# kube-controller-manager for garbage collection), built by `upstream`.
#
#   make test-operator    admission, reconcile, resilience, steady state,
#                         the agents' own decisions mirrored into status
#   make bench-operator   the steady-state test with its figures printed

.PHONY: test-operator bench-operator

test-operator: upstream
	$(CARGO) test --test operator --test operator_resilience --test operator_steady --test operator_reputation --test operator_adaptive

bench-operator: upstream
	$(CARGO) test --test operator_steady -- --nocapture
