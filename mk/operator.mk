# The operator (src/operator) against a real kube-apiserver + etcd (and
# kube-controller-manager for garbage collection), built by `upstream`.
#
#   make test-operator    admission, reconcile, resilience, steady state,
#                         the agents' own decisions mirrored into status
#   make bench-operator   the steady-state test with its figures printed

OPERATOR_TEST_BINS := operator operator_resilience operator_steady operator_reputation operator_adaptive operator_flow operator_authentication

.PHONY: test-operator bench-operator

test-operator: upstream
	$(CARGO) test $(foreach t,$(OPERATOR_TEST_BINS),--test $(t))

bench-operator: upstream
	$(CARGO) test --test operator_steady -- --nocapture
