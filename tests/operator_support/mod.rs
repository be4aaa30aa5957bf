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

use sendfleet::operator::rbac::{Rule, CLUSTER_RULES, NAMESPACE_RULES};
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
        for f in ["sendingpools", "domainpolicies", "warmupplans"] {
            let yaml = std::fs::read_to_string(repo().join(format!("crds/{f}.sendfleet.io.yaml"))).unwrap();
            cp.apply(&yaml).unwrap();
        }
        for f in ["sendingpools", "domainpolicies", "warmupplans"] {
            cp.wait_crd_established(&format!("{f}.sendfleet.io")).unwrap();
        }
        cp.apply(&rbac_yaml()).unwrap();
    });
    if gc {
        cp.ensure_controller_manager().unwrap();
    }
    cp
}

fn rules_yaml(rules: &[Rule]) -> String {
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
        rules_yaml(CLUSTER_RULES),
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
        let kubeconfig = cp.kubeconfig_for_service_account(OPERATOR_NS, OPERATOR_SA).unwrap();
        let port = sendfleet_lab::process::free_port().unwrap();
        // Outside the lab dir (removed at exit) so a failed run can be read.
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{identity}-{port}.log"));
        let mut args: Vec<String> = vec!["operator".into(), "--metrics-addr".into(), format!("127.0.0.1:{port}")];
        args.extend(
            ["--leader-election-namespace", OPERATOR_NS, "--identity", identity, "--instance-image", "sendfleet:test"]
                .map(String::from),
        );
        // No DNS server unless a test provides one: the discard port on
        // loopback refuses at once, and nothing leaves the namespace.
        if !extra.contains(&"--dns-server") {
            args.extend(["--dns-server", "127.0.0.1:9"].map(String::from));
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

/// `GET path` on 127.0.0.1:`port`: the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    sendfleet_lab::kit::http_get("127.0.0.1", port, path).map(|(_, body)| body)
}

/// `kubectl get ... -o json` as admin, parsed.
pub fn get_json(cp: &ControlPlane, args: &[&str]) -> Option<serde_json::Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    cp.kubectl_run(&a).ok().and_then(|s| serde_json::from_str(&s).ok())
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

/// A pool manifest with `n` egress IPs in 192.0.2.0/24 (documentation
/// addresses: nothing is sent in these tests, no kubelet runs); `labels`:
/// `key: value` pairs separated by commas.
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
    // No controller manager here to create the namespace's default account.
    cp.apply(&format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n")).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pool}-{instance}-0\n  namespace: {ns}\n  labels: {{sendfleet.io/pool: {pool}, sendfleet.io/instance: {instance}}}\nspec:\n  nodeName: no-such-node\n  automountServiceAccountToken: false\n  containers: [{{name: instance, image: sendfleet:test}}]\n"
    ))
    .unwrap();
    cp.kubectl_run(&[
        "patch",
        "pod",
        &format!("{pool}-{instance}-0"),
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .unwrap();
}
