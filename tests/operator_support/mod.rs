//! Harness for the operator's integration tests: the real control plane
//! (crates/lab), the CRDs from crds/, the operator's RBAC from
//! src/operator/rbac.rs, and `sendfleet operator` as a real process that
//! authenticates as its ServiceAccount — never as admin. Waiting, HTTP,
//! the repository and the pool fixture are the test kit's
//! (`sendfleet_lab::kit`); the names here stay for the tests that use them.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use sendfleet_lab::kit::{examples_dir, read, wait_for};

use sendfleet::operator::rbac::{cluster_role, Rule, NAMESPACE_RULES};
use sendfleet_lab::process::Proc;
use sendfleet_lab::ControlPlane;

pub const OPERATOR_NS: &str = "sendfleet-system";
pub const OPERATOR_SA: &str = "sendfleet-operator";

pub fn repo() -> PathBuf {
    sendfleet_lab::kit::repo_root()
}

/// The shared control plane with the CRDs installed and Established and the
/// operator's RBAC in place. `gc`: also run kube-controller-manager.
pub fn control_plane(gc: bool) -> &'static ControlPlane {
    static SETUP: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    SETUP.get_or_init(|| {
        install_crds(cp);
        cp.apply(&rbac_yaml()).unwrap();
    });
    if gc {
        cp.ensure_controller_manager().unwrap();
    }
    cp
}

/// Apply the CRDs of crds/ and wait until they are Established.
pub fn install_crds(cp: &ControlPlane) {
    for f in ["sendingpools", "domainpolicies", "warmupplans", "egressaddressclaims"] {
        let yaml = std::fs::read_to_string(repo().join(format!("crds/{f}.sendfleet.io.yaml"))).unwrap();
        cp.apply(&yaml).unwrap();
    }
    for f in ["sendingpools", "domainpolicies", "warmupplans", "egressaddressclaims"] {
        cp.wait_crd_established(&format!("{f}.sendfleet.io")).unwrap();
    }
}

/// A Role's or ClusterRole's `rules:` exactly as `rules` lists.
pub fn rules_yaml(rules: &[Rule]) -> String {
    let mut s = String::from("rules:\n");
    for r in rules {
        s.push_str(&format!(
            "- apiGroups: [{:?}]\n  resources: [{:?}]\n  verbs: [{}]\n",
            r.group,
            r.resource,
            r.verbs.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    s
}

/// ClusterRole/Role and bindings exactly as src/operator/rbac.rs lists.
pub fn rbac_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NS}}}\n---\n\
apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {OPERATOR_SA}, namespace: {OPERATOR_NS}}}\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: sendfleet-operator-test}}\n{}---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: sendfleet-operator-test}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sendfleet-operator-test}}\n\
subjects: [{{kind: ServiceAccount, name: {OPERATOR_SA}, namespace: {OPERATOR_NS}}}]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: sendfleet-operator-test, namespace: {OPERATOR_NS}}}\n{}---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: sendfleet-operator-test, namespace: {OPERATOR_NS}}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: sendfleet-operator-test}}\n\
subjects: [{{kind: ServiceAccount, name: {OPERATOR_SA}, namespace: {OPERATOR_NS}}}]\n",
        rules_yaml(&cluster_role("")),
        rules_yaml(NAMESPACE_RULES)
    )
}

/// A running `sendfleet operator` process.
pub struct Operator {
    child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
    pub identity: String,
}

impl Operator {
    /// Start the operator as the ServiceAccount, with leader election.
    pub fn start(cp: &ControlPlane, identity: &str) -> Operator {
        Self::start_with(cp, identity, &[])
    }

    pub fn start_with(cp: &ControlPlane, identity: &str, extra: &[&str]) -> Operator {
        Self::start_as(cp, OPERATOR_SA, identity, extra)
    }

    /// Start the operator as ServiceAccount `service_account` of
    /// [`OPERATOR_NS`] (bound to whatever RBAC the test gave it).
    pub fn start_as(cp: &ControlPlane, service_account: &str, identity: &str, extra: &[&str]) -> Operator {
        let kubeconfig = cp.kubeconfig_for_service_account(OPERATOR_NS, service_account).unwrap();
        let port = sendfleet_lab::process::free_port().unwrap();
        // Outside the lab dir (removed at exit) so a failed run can be read.
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{identity}-{port}.log"));
        let mut args: Vec<String> = vec!["operator".into(), "--metrics-addr".into(), format!("127.0.0.1:{port}")];
        args.extend(
            ["--leader-election-namespace", OPERATOR_NS, "--identity", identity, "--instance-image", "sendfleet:test"]
                .map(String::from),
        );
        // Unless a test provides one, a DNS server in the test's namespace
        // whose default blocklists list nothing: every address is checked
        // clean at once (an address sends only after its first finished
        // check), everything else is refused, nothing leaves the namespace.
        if !extra.contains(&"--dns-server") {
            args.extend(["--dns-server".to_string(), format!("{}:53", empty_blocklists())]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = [
            ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
            ("RUST_LOG".to_string(), "info,sendfleet=debug,kube=warn".to_string()),
        ];
        // The lab's spawner: the operator dies with the test process, even
        // on SIGKILL (PR_SET_PDEATHSIG), so no run leaks one.
        let proc =
            Proc::spawn("sendfleet operator", Path::new(env!("CARGO_BIN_EXE_sendfleet")), &args, &log, &env).unwrap();
        let child = proc.child;
        let op = Operator { child, metrics_port: port, log, identity: identity.into() };
        wait_for("operator metrics endpoint", Duration::from_secs(30), || op.metrics().ok().map(|_| ()));
        op
    }

    /// How many pool reconciles the operator ran (its own counter).
    pub fn reconciles(&self) -> f64 {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("sendfleet_operator_reconciles_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The operator's process id (for its CPU time and RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn metrics(&self) -> std::io::Result<String> {
        http_get(self.metrics_port, "/metrics")
    }

    /// The operator's own count of writes it made.
    pub fn writes(&self) -> u64 {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("sendfleet_operator_api_writes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "operator did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one operator of this test binary (started on first use).
pub fn shared_operator(cp: &'static ControlPlane) -> &'static Mutex<Operator> {
    static OP: OnceLock<Mutex<Operator>> = OnceLock::new();
    OP.get_or_init(|| Mutex::new(Operator::start(cp, "op-a")))
}

/// Where the default blocklist zones are served, empty (one server per
/// test process).
fn empty_blocklists() -> &'static str {
    const ADDR: &str = "127.0.0.153";
    static DNS: OnceLock<sendfleet_lab::kit::Dns> = OnceLock::new();
    DNS.get_or_init(|| {
        let zones = sendfleet::dns::DEFAULT_ZONES.iter().map(|z| (z.to_string(), String::new())).collect();
        sendfleet_lab::kit::Dns::serve(ADDR, zones)
    });
    ADDR
}

/// `GET path` on 127.0.0.1:`port`: the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    sendfleet_lab::kit::http_get("127.0.0.1", port, path).map(|(_, body)| body)
}

/// Requests the API server served so far (its own `apiserver_request_total`,
/// resource requests only), summed by `key(resource, verb)`; `None` skips.
pub fn apiserver_requests(
    cp: &ControlPlane,
    key: impl Fn(&str, &str) -> Option<String>,
) -> std::collections::BTreeMap<String, f64> {
    let text = cp.kubectl_run(&["get", "--raw", "/metrics"]).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label =
            |k: &str| line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
        let resource = label("resource");
        if resource.is_empty() {
            continue;
        }
        let Some(k) = key(&resource, &label("verb")) else { continue };
        let n: f64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        *out.entry(k).or_default() += n;
    }
    out
}

/// `kubectl get ... -o json` as admin, parsed.
pub fn get_json(cp: &ControlPlane, args: &[&str]) -> Option<serde_json::Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    cp.kubectl_run(&a).ok().and_then(|s| serde_json::from_str(&s).ok())
}

/// `(status, reason, message)` of condition `type_` of `kind/name` in `ns`.
pub fn condition(cp: &ControlPlane, kind: &str, name: &str, ns: &str, type_: &str) -> Option<(String, String, String)> {
    let obj = get_json(cp, &[kind, name, "-n", ns])?;
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((field("status"), field("reason"), field("message")))
}

/// Names of the objects of `kind` in `ns` carrying label `sendfleet.io/pool=pool`.
pub fn children(cp: &ControlPlane, kind: &str, ns: &str, pool: &str) -> Vec<String> {
    let v = get_json(cp, &[kind, "-n", ns, "-l", &format!("sendfleet.io/pool={pool}")]).unwrap_or_default();
    let mut names: Vec<String> = v["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["metadata"]["name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A pool manifest with `n` egress IPs of its own (`Pool::with_ips`:
/// benchmarking-range addresses, distinct per namespace and pool, because
/// an address has one owner cluster-wide; nothing is sent in these tests,
/// no kubelet runs); `labels`: `key: value` pairs separated by commas.
pub fn pool_yaml(ns: &str, name: &str, n: usize, labels: &str) -> String {
    let mut pool = sendfleet_lab::kit::Pool::named(name).in_ns(ns).with_ips(n);
    for (k, v) in labels.split(',').filter_map(|kv| kv.split_once(':')) {
        pool = pool.labeled(k.trim(), v.trim());
    }
    pool.yaml()
}

/// A pod of `pool`'s `instance` marked Running (no kubelet in these tests):
/// the operator then polls the agent on the instance's egress address, as
/// for a hostNetwork instance.
pub fn running_pod(cp: &ControlPlane, ns: &str, pool: &str, instance: &str) {
    running_pod_named(cp, ns, pool, instance, &format!("{pool}-{instance}-0"));
}

/// Like [`running_pod`], the pod named `pod` (a StatefulSet's pod is
/// `<pool>-<instance>-0`; another name is another pod holding the labels).
pub fn running_pod_named(cp: &ControlPlane, ns: &str, pool: &str, instance: &str, pod: &str) {
    // No controller manager here to create the namespace's default account.
    cp.apply(&format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n")).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  labels: {{sendfleet.io/pool: {pool}, sendfleet.io/instance: {instance}}}\nspec:\n  nodeName: no-such-node\n  automountServiceAccountToken: false\n  containers: [{{name: instance, image: sendfleet:test}}]\n"
    ))
    .unwrap();
    cp.kubectl_run(&[
        "patch",
        "pod",
        pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .unwrap();
}

/// The token in pool `pool`'s agent-token Secret (created by the
/// operator), once it exists.
pub fn pool_agent_token(cp: &ControlPlane, ns: &str, pool: &str) -> String {
    use base64::Engine;
    let name = sendfleet::core::objects::agent_token_secret_name(pool);
    let encoded = wait_for(&format!("Secret {name}"), Duration::from_secs(60), || {
        let s = get_json(cp, &["secret", &name, "-n", ns])?;
        s["data"][sendfleet::core::contract::AGENT_TOKEN_KEY].as_str().map(String::from)
    });
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64 Secret data");
    String::from_utf8(bytes).expect("a text token")
}

/// Give the kit's agents of `pool` the token of the pool's Secret, as the
/// kubelet mounts it in a pod: from then on the operator's polls get in.
pub fn mount_pool_token(cp: &ControlPlane, ns: &str, pool: &str, agents: &[&sendfleet_lab::kit::Instance]) -> String {
    let token = pool_agent_token(cp, ns, pool);
    for a in agents {
        a.set_agent_token(&token);
    }
    token
}
