# Alert rules and dashboard (charts/sendfleet/files, docs/MONITORING.md):
#
#   make test-monitoring   promtool check/test rules (a firing and a quiet
#                          case per alert), the chart's PrometheusRule and
#                          dashboard ConfigMap = the files, the dashboard
#                          against Grafana's schema (hack/dashboard-check, Go)
#                          and every panel query parsed by a real Prometheus

MONITORING_TEST_BINS := monitoring_rules

.PHONY: test-monitoring monitoring-deps

# The dashboard check's Go modules, fetched before the tests run (they run
# in a network namespace of their own, without the module proxy).
monitoring-deps:
	cd hack/dashboard-check && go mod download && go build -o /dev/null .

test-monitoring: upstream monitoring-deps
	$(CARGO) test $(foreach t,$(MONITORING_TEST_BINS),--test $(t))
