#!/usr/bin/env bash
# make demo: sendfleet on a real single-node Kubernetes, driven as a user
# would drive it. Everything runs inside the lab's own network namespace
# (sendfleet-lab): egress addresses, providers and pods exist only there, and
# nothing is sent outside this machine.
#
#   1. render examples/ offline (what a GitOps reviewer sees)
#   2. start the lab: etcd, kube-apiserver, kube-controller-manager,
#      kube-scheduler, kube-proxy, kubelet + containerd + runc (crates/lab)
#   3. import the sendfleet image `make image` built
#   4. start the lab's DNS server on 198.51.100.53, the address the node's
#      resolv.conf names (hack/demo/zones: PTR/A of the example egress
#      addresses, fake local DNSBL zones listing mta3; and the providers' MX
#      records, three domains per provider behind one MX host); then, in
#      Rust (`sendfleet-lab demo`, crates/lab/src/demo.rs, also run by
#      tests/e2e_chart.rs): add the example pool's egress addresses to the
#      namespace, start two simulated providers (Postfix receivers)
#   5. helm install the chart: the operator runs as a real pod, asking the
#      lab's DNS server
#   6. kubectl apply -f examples/ (+ hack/demo/providers.yaml: no relay
#      routes, mail goes by MX; autoExclusion for provider-a's domains), and
#      the demo's clock: retry every 10 s, day-1 warm-up cap 1000
#   7. wait for the DNS checks: Listed=True, mta3 quarantined (weight 0)
#   8. provider-a starts answering mta1 "554 ... blocked" (incident 1)
#   9. submit 500 messages from a pod through the pool's Service (kube-proxy),
#      which routes around mta3 (its endpoint is not ready while quarantined);
#      mta1's blocks are deferred, mta1 excluded for provider-a, the retries
#      leave through mta2, nothing bounces
#  10. show pools, conditions, instances, the exclusion, and what the
#      providers received and refused (their own logs)
#  11. the alerts Prometheus raised and Alertmanager posted (mta3 listed,
#      mta1 excluded by provider-a), and where to look further
#
# Expects the upstream binaries and the image to be built (`make demo` does
# that first). A second run tears the previous lab down first.
# `make demo-down` (hack/demo.sh --down) stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${LAB_DIR:-out/lab}
NS=mail
OP_NS=sendfleet-system
POOL=outbound
IMAGE=localhost/sendfleet:dev

LAB=target/debug/sendfleet-lab
lab() { SENDFLEET_NO_NETNS=1 "$LAB" "$@"; }
inlab() { lab exec --dir "$LAB_DIR" -- "$@"; }
kc() { inlab kubectl "$@"; }
t0=$(date +%s.%N)
# Seconds from $1 to $2 (default: the demo's start to now), one decimal.
span() { awk -v a="$1" -v b="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", b - a }'; }
since() { span "${1:-$t0}"; }
step() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$*" "$(since)"; }
die() {
  echo "demo: $*" >&2
  echo "--- diagnostics" >&2
  kc get pods -A -o wide >&2 || true
  kc describe pods -n "$NS" 2>&1 | tail -60 >&2 || true
  kc get sendingpool -n "$NS" -o yaml 2>&1 | tail -60 >&2 || true
  kc logs -n "$OP_NS" deploy/sendfleet --tail=30 >&2 || true
  exit 1
}

if [[ ${1:-} == --down ]]; then
  [[ -x $LAB ]] || cargo build -q -p sendfleet-lab --bin sendfleet-lab
  lab down --dir "$LAB_DIR"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "make demo needs root (network namespace, containerd, Postfix)" >&2; exit 1; }

step "build (cached when nothing changed)"
cargo build -q -p sendfleet-lab --bin sendfleet-lab
# The release binary `make image` built (and put in the image) renders too.
SENDFLEET=target/release/sendfleet
[[ -x $SENDFLEET ]] || { echo "demo: no $SENDFLEET: run \`make image\` (make demo does)" >&2; exit 1; }
archive=$(hack/build-image.sh --print | sed -n 's/^image=//p') ||
  { echo "demo: no image for target/release/sendfleet: run \`make image\` (make demo does)" >&2; exit 1; }
echo "  image archive $archive"

step "sendfleet render -f examples/*.yaml --out out/demo/render (offline)"
"$SENDFLEET" render -f examples/*.yaml --out out/demo/render
grep -E '^(kind|  name):' out/demo/render/objects.yaml | paste - - | awk '{printf "  %-20s %s\n", $2, $4}'

step "previous lab down (if any)"
lab down --dir "$LAB_DIR" >/dev/null 2>&1 || true

t_lab=$(date +%s.%N)
step "start the lab with a node (inside network namespace sendfleet-lab)"
lab up --dir "$LAB_DIR" --node
lab import --dir "$LAB_DIR" --base-name localhost/sendfleet "$archive" >/dev/null
echo "  imported $IMAGE into the node's containerd"
# On the lab's DNS server address (sendfleet_lab::DNS_SERVER), which the
# node's resolv.conf names: the instance pods resolve MX and A through it.
lab dns start --dir "$LAB_DIR" --zones hack/demo/zones --demo-providers

# Prometheus and Alertmanager as a cluster with the Prometheus Operator
# would run them from the chart (its ServiceMonitors and rules file; the
# rules' `for:` shortened to seconds for the demo), alerts posted to a
# webhook that writes $LAB_DIR/monitoring/alerts.log (the chat channel).
step "Prometheus and Alertmanager (the chart's ServiceMonitors and alert rules)"
lab monitoring start --dir "$LAB_DIR"

# Steps 4-9 are Rust (crates/lab/src/demo.rs), the code tests/e2e_chart.rs
# runs too: egress addresses, providers, helm install, examples/, 500
# messages through the pool's Service, the status.
t_demo=$(date +%s.%N)
lab demo --dir "$LAB_DIR" || die "the demo's steps failed (see above)"
echo "  (lab up + image import + DNS $(span "$t_lab" "$t_demo") s; the demo's steps $(since "$t_demo") s)"

step "alerts the demo raised (Alertmanager -> webhook -> $LAB_DIR/monitoring/alerts.log)"
# mta3 is listed and mta1 excluded by provider-a: each alert names pool and IP.
alerts=$LAB_DIR/monitoring/alerts.log
for _ in $(seq 1 60); do
  grep -q '^FIRING SendfleetIPListed ' "$alerts" 2>/dev/null &&
    grep -q '^FIRING SendfleetIPExcludedByProvider ' "$alerts" 2>/dev/null && break
  sleep 2
done
awk '!seen[$0]++ { print "  " $0 }' "$alerts" 2>/dev/null || echo "  (no alert yet)"
echo
echo "The lab keeps running. Look around with"
echo "  $LAB exec --dir $LAB_DIR -- kubectl get sendingpools -A"
echo "  $LAB exec --dir $LAB_DIR -- curl -s http://127.0.0.1:9090/api/v1/alerts        # Prometheus"
echo "  $LAB exec --dir $LAB_DIR -- curl -s 'http://127.0.0.1:9090/api/v1/query?query=sendfleet:delivery_ratio:1h'"
echo "  $LAB exec --dir $LAB_DIR -- curl -s http://127.0.0.1:9093/api/v2/alerts        # Alertmanager"
echo "  tail -f $alerts                                                                  # the alerts as posted"
echo "Stop everything with: make demo-down   (this run took $(since) s)"
