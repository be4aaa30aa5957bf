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
#   4. start two simulated providers (Postfix receivers) and a DNS server
#      for hack/demo/zones (PTR/A of the example egress addresses, fake
#      local DNSBL zones listing mta3), add the example pool's egress
#      addresses to the namespace
#   5. helm install the chart: the operator runs as a real pod, asking the
#      lab's DNS server
#   6. kubectl apply -f examples/ (+ the demo's relay routes to its providers)
#   7. wait for the DNS checks: Listed=True, mta3 quarantined (weight 0)
#   8. submit 500 messages from a pod through the pool's Service (kube-proxy),
#      which routes around mta3 (its endpoint is not ready while quarantined)
#   9. show pools, conditions, instances and what the providers received
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
# Simulated providers: name, address, domains, access rules (KEY=REPLY).
PROVIDER_A=198.51.100.10
PROVIDER_B=198.51.100.20
# The lab's authoritative DNS server (hack/demo/zones) and the egress IP its
# fake DNSBL zone lists.
DNS_SERVER=198.51.100.53
LISTED=mta3
# What the demo submits: 250 + 230 messages accepted, 20 to a domain whose
# provider answers 450 (deferred, retried later: visible in the status).
N_A=250 N_B=230 N_BUSY=20
SUBMITTED=$((N_A + N_B + N_BUSY))
EXPECTED=$((N_A + N_B))

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
netns=$(sed -n "s/^export SENDFLEET_LAB_NETNS='\(.*\)'$/\1/p" "$LAB_DIR/env")
lab import --dir "$LAB_DIR" --base-name localhost/sendfleet "$archive" >/dev/null
echo "  imported $IMAGE into the node's containerd"
# The examples' pool has no storageClassName: the lab's local volumes serve
# as the cluster default, as a cloud's default class would.
kc annotate storageclass lab-local storageclass.kubernetes.io/is-default-class=true --overwrite >/dev/null

step "egress addresses of examples/sendingpool.yaml, two simulated providers, a DNS server"
# hostNetwork instances bind their egress address: here it lives on the lab
# namespace's lo (on a real node it would be on the node's interface).
for a in $(sed -n 's/^ *address: *\([0-9.]*\)$/\1/p' examples/sendingpool.yaml); do
  ip -n "$netns" addr add "$a/32" dev lo 2>/dev/null || true
  echo "  $a on lo of $netns"
done
lab receiver start --dir "$LAB_DIR" --name provider-a --addr $PROVIDER_A --domain example.net
lab receiver start --dir "$LAB_DIR" --name provider-b --addr $PROVIDER_B --domain example.org \
  --domain busy.example.org --access 'busy.example.org=450 4.7.1 rate limited, try again later'
lab dns start --dir "$LAB_DIR" --addr $DNS_SERVER --zones hack/demo/zones

t_helm=$(date +%s.%N)
step "helm install sendfleet charts/sendfleet (the operator as a pod)"
# Short poll and sweep intervals so the status follows within seconds; the
# DNS checks ask the lab's DNS server (a DNSBL must never be asked through a
# big public resolver; here nothing leaves the lab's namespace at all).
inlab helm upgrade --install sendfleet charts/sendfleet --namespace "$OP_NS" --create-namespace \
  --set image.registry=localhost --set image.repository=sendfleet --set image.tag=dev \
  --set operator.agentPollInterval=2s --set operator.resyncInterval=10s \
  --set operator.logFormat=text --set "operator.dnsServers={$DNS_SERVER:53}" \
  --set 'operator.extraArgs={--dnsbl-interval-override=5s}' \
  >/dev/null 2> >(grep -v 'unrecognized format' >&2)
kc -n "$OP_NS" rollout status deployment/sendfleet --timeout=180s || die "the operator pod did not become ready"
kc -n "$OP_NS" get pods -o wide

step "kubectl apply -f examples/ -f hack/demo/providers.yaml"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc apply -f examples/ -f hack/demo/providers.yaml

step "waiting for the pool's three instances (StatefulSet pods, hostNetwork)"
ready=""
for _ in $(seq 1 360); do
  ready=$(kc get sendingpool "$POOL" -n "$NS" -o jsonpath='{.status.readyInstances}' 2>/dev/null || true)
  [[ $ready == 3/3 ]] && break
  sleep 0.5
done
[[ $ready == 3/3 ]] || die "pool $NS/$POOL not ready after 180 s (readyInstances=$ready)"
t_ready=$(date +%s.%N)
kc get pods -n "$NS" -o wide

step "waiting for the DNS checks: $LISTED listed by the fake zen.spamhaus.org, quarantined"
# Before submitting, so the Service already routes around $LISTED (its
# endpoint is not ready) and the providers see no mail from its address.
q=""
for _ in $(seq 1 120); do
  q=$(kc get sendingpool "$POOL" -n "$NS" -o jsonpath="{.status.instances[?(@.name==\"$LISTED\")].quarantine}" 2>/dev/null || true)
  [[ -n $q ]] && break
  sleep 0.5
done
[[ -n $q ]] || die "$LISTED not quarantined after 60 s"
echo "  $LISTED: $q"

step "submit $SUBMITTED messages from a pod through Service $NS/$POOL (kube-proxy)"
svc=$(kc get service "$POOL" -n "$NS" -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')
echo "  pod network 10.244.0.0/24 -> $svc -> EndpointSlice -> the instances' egress addresses"
echo "  EndpointSlice $NS/$POOL-submission (ready: $(kc get endpointslice "$POOL-submission" -n "$NS" \
  -o jsonpath='{range .endpoints[*]}{.addresses[0]}={.conditions.ready} {end}'))"
kc delete pod submit -n "$NS" --ignore-not-found --wait=true >/dev/null
t_send=$(date +%s.%N)
kc run submit -n "$NS" --image="$IMAGE" --image-pull-policy=Never --restart=Never --command -- sh -c "
  set -e
  /usr/sbin/smtp-source -N -m $N_A -s 10 -f app@mail.example.com -t news@example.net $svc & a=\$!
  /usr/sbin/smtp-source -N -m $N_B -s 10 -f app@mail.example.com -t signup@example.org $svc & b=\$!
  /usr/sbin/smtp-source -N -m $N_BUSY -s 2 -f app@mail.example.com -t offer@busy.example.org $svc & c=\$!
  wait \$a; wait \$b; wait \$c
  echo submitted $SUBMITTED messages to $svc" >/dev/null
phase=""
for _ in $(seq 1 240); do
  phase=$(kc get pod submit -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $phase == Succeeded || $phase == Failed ]] && break
  sleep 0.5
done
kc logs submit -n "$NS" | sed 's/^/  submit: /'
[[ $phase == Succeeded ]] || die "the submitting pod ended $phase"

step "waiting until the providers accepted $EXPECTED messages"
got=0
for _ in $(seq 1 240); do
  got=$(lab receiver status --dir "$LAB_DIR" --total)
  ((got >= EXPECTED)) && break
  sleep 0.5
done
t_done=$(date +%s.%N)
((got >= EXPECTED)) || die "only $got of $EXPECTED messages reached the providers after 120 s"
delivered_line="delivered $got messages in $(since "$t_helm") s from helm install ($(since "$t_send") s after submitting; lab start to delivered $(since "$t_lab") s)"
echo "  $delivered_line"

# The operator polls each agent every 2 s: wait until the pool's status
# counts what the providers counted.
for _ in $(seq 1 60); do
  sent=$(kc get sendingpool "$POOL" -n "$NS" -o jsonpath='{range .status.instances[*]}{.deliveries.sent}{"\n"}{end}' |
    awk '{s+=$1} END {print s+0}')
  ((sent >= got)) && break
  sleep 0.5
done

# The agents scan their queues every 30 s: wait for the 20 held by the busy
# provider to show in the status (not part of the delivery timing).
for _ in $(seq 1 90); do
  q=$(kc get sendingpool "$POOL" -n "$NS" -o jsonpath='{.status.deferredMessages}' 2>/dev/null || true)
  [[ $q == "$N_BUSY" ]] && break
  sleep 0.5
done

step "kubectl get sendingpools,domainpolicies,warmupplans -n $NS"
kc get sendingpools,domainpolicies,warmupplans -n "$NS"
step "conditions of SendingPool $NS/$POOL"
kc get sendingpool "$POOL" -n "$NS" \
  -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}' |
  column -t -s $'\t'
step "instances of SendingPool $NS/$POOL (status, as the operator sees them)"
{
  printf 'INSTANCE\tADDRESS\tPHASE\tWEIGHT\tSENT\tDEFERRED\tBOUNCED\tQUEUED(DEFERRED)\tWARM-UP(SENT TODAY/CAP)\tQUARANTINE\n'
  kc get sendingpool "$POOL" -n "$NS" -o jsonpath='{range .status.instances[*]}{.name}{"\t"}{.address}{"\t"}{.phase}{"\t"}{.weight}{"\t"}{.deliveries.sent}{"\t"}{.deliveries.deferred}{"\t"}{.deliveries.bounced}{"\t"}{.queue.deferred}{"\t"}{.warmup.sentToday}/{.warmup.dailyCap}{"\t"}{.quarantine}{"\n"}{end}'
} | column -t -s $'\t'
step "what the simulated providers received (their own logs)"
lab receiver status --dir "$LAB_DIR"

echo
printf '\033[1m%s\033[0m\n' "$delivered_line"
echo "  (lab up + image import + providers $(span "$t_lab" "$t_helm") s; helm install -> pool 3/3 Ready $(span "$t_helm" "$t_ready") s; submit -> delivered $(span "$t_send" "$t_done") s)"
echo
echo "The lab keeps running. Look around with"
echo "  $LAB exec --dir $LAB_DIR -- kubectl get sendingpools -A"
echo "Stop everything with: make demo-down   (this run took $(since) s)"
