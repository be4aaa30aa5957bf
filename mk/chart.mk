# The Helm chart (charts/sendfleet) and the plain manifests generated from it.
#
#   make manifests    regenerate manifests/ from the chart
#   make test-chart   lint, RBAC == src/operator/rbac.rs, manifests in sync,
#                     dry-run / install / upgrade / uninstall on a real API server

HELM_BIN = $(SENDFLEET_CACHE)/bin/helm-v3.22.0/helm

.PHONY: manifests test-chart

manifests: upstream
	mkdir -p manifests
	$(HELM_BIN) template sendfleet charts/sendfleet --namespace sendfleet-system --include-crds > manifests/sendfleet.yaml
	printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sendfleet-system\n' > manifests/namespace.yaml
	printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - namespace.yaml\n  - sendfleet.yaml\n' > manifests/kustomization.yaml

test-chart: upstream
	$(CARGO) test --test chart
