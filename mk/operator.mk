# The operator (src/operator) against a real kube-apiserver + etcd (and
# kube-controller-manager for garbage collection), built by `upstream`.
#
#   make test-operator    admission, reconcile, resilience, steady state,
#                         the agents' own decisions mirrored into status
#   make bench-operator   the steady-state test with its figures printed, and
#                         the scale benchmark: 20/100/200 pools x 5 IPs with
#                         50 DomainPolicies (SCALE_POOLS=20,100 for fewer)

OPERATOR_TEST_BINS := operator operator_resilience operator_steady operator_reputation operator_adaptive operator_flow operator_authentication operator_admission operator_agent_auth operator_claims operator_podsec operator_cache operator_validation operator_egress_nat operator_monitoring operator_lifecycle gitops_health operator_dnsendpoint operator_dkim

# Benchmarks: run by bench-operator only (make bench), not by make test.
# The scale benchmark runs the release build (what the image ships): a
# debug operator's CPU time and memory are several times the shipped one's.
OPERATOR_BENCH_BINS := operator_scale

.PHONY: test-operator bench-operator

test-operator: upstream
	$(CARGO) test $(foreach t,$(OPERATOR_TEST_BINS),--test $(t))

bench-operator: upstream
	$(CARGO) test --test operator_steady -- --nocapture
	$(CARGO) test --release --test operator_scale -- --nocapture
