#!/usr/bin/env bash
# make demo: the operator on a real local control plane, driven as a user
# would drive it. Everything runs inside the lab's own network namespace
# (sendfleet-lab): nothing is sent outside this machine.
#
#   1. render examples/ offline (what a GitOps reviewer sees)
#   2. start etcd + kube-apiserver + kube-controller-manager (crates/lab)
#   3. install the Helm chart (CRDs, RBAC, ServiceAccount, Deployment)
#   4. run the operator with the chart's ServiceAccount token
#   5. apply examples/ and show what the operator made of them
#
# `make demo-down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${LAB_DIR:-out/lab}
NS=sendfleet-system
t0=$(date +%s)
lab() { SENDFLEET_NO_NETNS=1 target/debug/sendfleet-lab "$@"; }
inlab() { lab exec --dir "$LAB_DIR" -- "$@"; }
step() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "build"
cargo build -q -p sendfleet-lab --bin sendfleet-lab
cargo build -q --bin sendfleet

step "sendfleet render -f examples/*.yaml --out out/demo/render"
target/debug/sendfleet render -f examples/*.yaml --out out/demo/render
grep -E '^(kind|  name):' out/demo/render/objects.yaml | paste - - | awk '{printf "  %-20s %s\n", $2, $4}'

step "start the control plane (inside network namespace sendfleet-lab)"
lab down --dir "$LAB_DIR" >/dev/null 2>&1 || true
lab up --dir "$LAB_DIR" ${LAB_UP_FLAGS:-}

step "helm install sendfleet charts/sendfleet"
# No kubelet in this demo: the chart's Deployment is scaled to zero and the
# operator runs below as a process, authenticated as the chart's
# ServiceAccount (so it has exactly the chart's RBAC, not admin).
inlab helm upgrade --install sendfleet charts/sendfleet --namespace "$NS" --create-namespace \
  --set replicaCount=0 --wait=false
inlab kubectl get crd -l app.kubernetes.io/part-of=sendfleet 2>/dev/null || inlab kubectl get crd

step "run sendfleet operator as ServiceAccount $NS/sendfleet"
sa=$(inlab kubectl -n "$NS" get serviceaccount -o jsonpath='{.items[?(@.metadata.name!="default")].metadata.name}' | awk '{print $1}')
token=$(inlab kubectl -n "$NS" create token "$sa" --duration=2h)
server=$(awk -F'"' '/server:/{print $0}' "$LAB_DIR/kubeconfig" | awk '{print $2}')
mkdir -p out/demo
cat > out/demo/operator.kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: $server, certificate-authority-data: $(awk '/certificate-authority-data/{print $2}' "$LAB_DIR/kubeconfig")}}]
users: [{name: operator, user: {token: $token}}]
contexts: [{name: lab, context: {cluster: lab, user: operator}}]
current-context: lab
KC
pkill -f "sendfleet operator --lease-name sendfleet-demo" 2>/dev/null || true
KUBECONFIG=$PWD/out/demo/operator.kubeconfig POD_NAMESPACE=$NS POD_NAME=demo \
  nohup ip netns exec sendfleet-lab target/debug/sendfleet operator --lease-name sendfleet-demo \
  --metrics-addr 127.0.0.1:18080 --dns-server 127.0.0.1:9 --instance-image localhost/sendfleet:dev \
  > out/demo/operator.log 2>&1 &
echo $! > out/demo/operator.pid
echo "  operator pid $(cat out/demo/operator.pid), log out/demo/operator.log"

step "kubectl apply -f examples/"
inlab kubectl create namespace mail --dry-run=client -o yaml | inlab kubectl apply -f - >/dev/null
inlab kubectl apply -f examples/
for i in $(seq 1 60); do
  n=$(inlab kubectl -n mail get statefulsets -o name 2>/dev/null | wc -l)
  [ "$n" -ge 3 ] && break
  sleep 1
done
sleep 2

step "kubectl get sendingpools,domainpolicies,warmupplans -n mail"
inlab kubectl get sendingpools,domainpolicies,warmupplans -n mail
step "objects the operator created"
inlab kubectl get statefulsets,configmaps,services,endpointslices,poddisruptionbudgets,serviceaccounts,secrets -n mail -l sendfleet.io/pool=outbound
step "conditions of SendingPool mail/outbound"
inlab kubectl get sendingpool outbound -n mail -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}' | column -t -s $'\t'
step "transport map rendered for mail/outbound/mta1"
inlab kubectl get configmap outbound-mta1 -n mail -o jsonpath='{.data.transport}' | grep -v '^#'
echo
echo "The lab keeps running: KUBECONFIG=$LAB_DIR/kubeconfig, enter it with"
echo "  target/debug/sendfleet-lab exec --dir $LAB_DIR -- kubectl get sendingpools -A"
echo "Stop everything with: make demo-down   (total $(( $(date +%s) - t0 ))s)"
