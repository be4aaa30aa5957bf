//! A pool author gets no more than the administrator allows, on the real
//! API server: each test acts as a user bound only to a Role in one
//! namespace that may create SendingPools (a client certificate the lab CA
//! signs), against an operator started with administrator limits (opt-in
//! label, one extra allowed image, an egress node selector). An image not
//! allowed, a node outside the selector, a namespace not opted in and an
//! existing object the pool does not own are each refused with the reason
//! in the pool's status, and nothing is applied or overwritten; lifting the
//! limit lets the same pool through. With `--watch-namespace` the operator
//! works under a Role in that namespace and holds no Secret rights
//! elsewhere.
//!
//! Never: test what the cluster's own admission does (Pod Security, RBAC on
//! pods): that is the cluster's, not the operator's.

mod operator_support;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use operator_support::*;
use sendfleet::operator::rbac::{cluster_role, watched_namespace_role, NAMESPACE_RULES};
use sendfleet_lab::kit::wait_until;
use sendfleet_lab::{ControlPlane, Kubectl, Namespace};

const T: Duration = Duration::from_secs(60);
/// Refused pools are looked at again every minute (`REQUEUE_BLOCKED`).
const BLOCKED: Duration = Duration::from_secs(100);
const OPT_IN: &str = "sendfleet.io/pools=enabled";
const ALLOWED_IMAGE: &str = "registry.test/sendfleet:allowed";
const EGRESS_NODES: &str = "sendfleet.io/egress=true";

/// The operator of this binary, with the administrator's limits.
fn operator(cp: &'static ControlPlane) -> &'static Mutex<Operator> {
    static OP: OnceLock<Mutex<Operator>> = OnceLock::new();
    OP.get_or_init(|| {
        Mutex::new(Operator::start_with(
            cp,
            "op-admission",
            &[
                "--pool-namespace-label",
                OPT_IN,
                "--allowed-instance-image",
                ALLOWED_IMAGE,
                "--instance-node-selector",
                EGRESS_NODES,
            ],
        ))
    })
}

/// A pool author: a user whose only rights are a Role on SendingPools in
/// their own namespace.
struct Author {
    cp: &'static ControlPlane,
    ns: Namespace<'static>,
    kubeconfig: PathBuf,
    /// This author's own egress address: an address has one owner
    /// cluster-wide, and the tests here run in parallel.
    address: String,
}

impl Author {
    fn new(cp: &'static ControlPlane, prefix: &str, opted_in: bool) -> Author {
        let ns = cp.namespace(prefix).unwrap();
        if opted_in {
            cp.kubectl_run(&["label", "namespace", ns.name(), OPT_IN]).unwrap();
        }
        let user = format!("author-{}", ns.name());
        cp.apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pool-author, namespace: {ns}}}\n\
rules:\n- apiGroups: [sendfleet.io]\n  resources: [sendingpools]\n  verbs: [get, list, watch, create, update, patch, delete]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: pool-author, namespace: {ns}}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pool-author}}\n\
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n",
            ns = ns.name()
        ))
        .unwrap();
        let kubeconfig = cp.kubeconfig_for_user(&user, None).unwrap();
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let address = format!("192.0.2.{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let author = Author { cp, ns, kubeconfig, address };
        // Bound to exactly that: pools here, nothing else, nowhere else.
        // (The API server's RBAC cache takes a moment to see a new binding.)
        wait_until("the author's RoleBinding in effect", T, || {
            author.can_i(&["create", "sendingpools", "-n", author.ns.name()])
        });
        assert!(!author.can_i(&["create", "sendingpools", "-n", "default"]));
        assert!(!author.can_i(&["create", "configmaps", "-n", author.ns.name()]));
        assert!(!author.can_i(&["get", "secrets", "-n", author.ns.name()]));
        author
    }

    fn kubectl(&self) -> Kubectl<'_> {
        Kubectl::new(self.cp.kubectl_path(), &self.kubeconfig)
    }

    fn can_i(&self, args: &[&str]) -> bool {
        let out = self.kubectl().command().args(["auth", "can-i"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }

    /// Create or change pool `name` as the author: one egress IP `a` on the
    /// author's own address.
    fn pool(&self, name: &str, image: Option<&str>, node: Option<&str>) {
        let node = node.map(|n| format!(", nodeName: {n}")).unwrap_or_default();
        let image = image.map(|i| format!("  image: {i}\n")).unwrap_or_default();
        self.try_pool(name, &format!("{}{node}", self.address), &image)
            .unwrap_or_else(|e| panic!("the author could not apply the pool: {e}"));
    }

    /// Apply pool `name` as the author, egress IP `a` at `address` (and
    /// whatever follows it in the flow mapping), `more` appended to the
    /// spec: the API server's answer.
    fn try_pool(&self, name: &str, address: &str, more: &str) -> Result<String, sendfleet_lab::LabError> {
        let yaml = format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n  \
             egressIPs:\n    - {{name: a, heloName: a.example.com, address: {address}}}\n{more}",
            self.ns.name()
        );
        self.kubectl().apply(&yaml)
    }

    /// The pool's `Ready` reason and message, once it has one.
    fn ready(&self, pool: &str) -> Option<(String, String)> {
        let p = get_json(self.cp, &["sendingpool", pool, "-n", self.ns.name()])?;
        let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        Some((c["reason"].as_str()?.to_string(), c["message"].as_str()?.to_string()))
    }

    /// Wait for `Ready=False` with `reason`; its message.
    #[track_caller]
    fn refused(&self, pool: &str, reason: &str) -> String {
        let (_, message) =
            wait_for(&format!("{pool}: Ready reason {reason}"), T, || self.ready(pool).filter(|(r, _)| r == reason));
        message
    }

    /// Nothing the pool would own exists: no StatefulSet, ConfigMap,
    /// Service, ServiceAccount, hash-key Secret.
    #[track_caller]
    fn nothing_applied(&self, pool: &str) {
        for kind in ["statefulsets", "configmaps", "services", "serviceaccounts", "endpointslices"] {
            let found = children(self.cp, kind, self.ns.name(), pool);
            assert!(found.is_empty(), "{kind} applied for a refused pool: {found:?}");
        }
        let key = format!("{pool}-recipient-hash-key");
        assert!(get_json(self.cp, &["secret", &key, "-n", self.ns.name()]).is_none(), "{key} created");
    }

    /// The instance StatefulSet `<pool>-a`, once applied.
    #[track_caller]
    fn stateful_set(&self, pool: &str, within: Duration) -> serde_json::Value {
        let name = format!("{pool}-a");
        wait_for(&format!("StatefulSet {name}"), within, || {
            get_json(self.cp, &["statefulset", &name, "-n", self.ns.name()])
        })
    }
}

fn node_selector(sts: &serde_json::Value) -> Vec<String> {
    let m = sts["spec"]["template"]["spec"]["nodeSelector"].as_object().cloned().unwrap_or_default();
    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?"))).collect()
}

#[test]
fn an_image_the_administrator_did_not_list_is_refused_and_nothing_applied() {
    let cp = control_plane(false);
    let _op = operator(cp);
    let author = Author::new(cp, "image", true);
    author.pool("p", Some("evil.test/root-shell:latest"), None);
    let message = author.refused("p", "ImageNotAllowed");
    assert!(message.contains("\"evil.test/root-shell:latest\""), "{message}");
    assert!(message.contains("instances.allowedImages"), "says where the list is set: {message}");
    assert!(message.contains(ALLOWED_IMAGE) && message.contains("\"sendfleet:test\" (the default)"), "{message}");
    author.nothing_applied("p");

    // The image the administrator listed is run, on the allowed nodes only.
    author.pool("p", Some(ALLOWED_IMAGE), None);
    let sts = author.stateful_set("p", T);
    assert_eq!(sts["spec"]["template"]["spec"]["containers"][0]["image"], ALLOWED_IMAGE);
    assert_eq!(node_selector(&sts), [EGRESS_NODES]);
}

#[test]
fn placement_outside_the_allowed_nodes_is_refused() {
    let cp = control_plane(false);
    let _op = operator(cp);
    // Node objects are enough: the operator reads their labels only.
    cp.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: egress-1, labels: {sendfleet.io/egress: \"true\"}}\n---\n\
apiVersion: v1\nkind: Node\nmetadata: {name: app-1, labels: {role: apps}}\n",
    )
    .unwrap();
    let author = Author::new(cp, "placement", true);
    author.pool("p", None, Some("app-1"));
    let message = author.refused("p", "NodeNotAllowed");
    assert!(message.starts_with("spec.egressIPs[a].nodeName: node \"app-1\""), "{message}");
    assert!(message.contains("lacks sendfleet.io/egress=true"), "{message}");
    assert!(message.contains("instances.nodeSelector"), "{message}");
    author.nothing_applied("p");

    author.pool("q", None, Some("no-such-node"));
    let message = author.refused("q", "NodeNotAllowed");
    assert!(message.contains("node \"no-such-node\" does not exist"), "{message}");
    author.nothing_applied("q");

    // A labelled node: the pod requires both its hostname and the labels.
    author.pool("p", None, Some("egress-1"));
    let sts = author.stateful_set("p", BLOCKED);
    assert_eq!(node_selector(&sts), ["kubernetes.io/hostname=egress-1", EGRESS_NODES]);
}

#[test]
fn a_namespace_not_opted_in_holds_no_pools_until_the_administrator_labels_it() {
    let cp = control_plane(false);
    let _op = operator(cp);
    let author = Author::new(cp, "not-opted-in", false);
    author.pool("p", None, None);
    let message = author.refused("p", "NamespaceNotAllowed");
    assert!(
        message.starts_with(&format!("namespace \"{}\" is not opted in for SendingPools", author.ns.name())),
        "{message}"
    );
    assert!(message.contains(&format!("labels it {OPT_IN}")), "{message}");
    author.nothing_applied("p");

    cp.kubectl_run(&["label", "namespace", author.ns.name(), OPT_IN]).unwrap();
    author.stateful_set("p", BLOCKED);
}

#[test]
fn an_existing_object_the_pool_does_not_own_is_not_taken_over() {
    let cp = control_plane(false);
    let _op = operator(cp);
    let author = Author::new(cp, "conflict", true);
    let ns = author.ns.name();
    // Someone else's ConfigMap with the name the instance's would have.
    cp.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: p-a, namespace: {ns}}}\ndata: {{owner: someone-else}}\n"
    ))
    .unwrap();
    author.pool("p", None, None);
    let message = author.refused("p", "ObjectConflict");
    assert!(message.contains("ConfigMap \"p-a\" (no owner)"), "{message}");
    let cm = get_json(cp, &["configmap", "p-a", "-n", ns, "--show-managed-fields"]).unwrap();
    assert_eq!(cm["data"], serde_json::json!({"owner": "someone-else"}), "overwritten");
    let managers: Vec<&str> =
        cm["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert_eq!(managers, ["sendfleet-lab"], "only its owner wrote to it");
    assert!(cm["metadata"]["ownerReferences"].is_null());
    // Nothing else was written either (the check precedes every write).
    assert!(children(cp, "statefulsets", ns, "p").is_empty());
    assert!(get_json(cp, &["secret", "p-recipient-hash-key", "-n", ns]).is_none());

    // Once the owner removes it, the pool takes the name (retried).
    cp.kubectl_run(&["delete", "configmap", "p-a", "-n", ns]).unwrap();
    author.stateful_set("p", BLOCKED);
    let cm = get_json(cp, &["configmap", "p-a", "-n", ns]).unwrap();
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "SendingPool");
}

#[test]
fn with_a_watched_namespace_the_operator_works_under_a_role_there_and_reads_no_secrets_elsewhere() {
    // Its own API server: the operator here has other RBAC than the one of
    // this binary's shared control plane.
    let cp = ControlPlane::start().expect("a private control plane");
    install_crds(&cp);
    let (watched, elsewhere, sa) = ("mail", "elsewhere", "sendfleet-narrow");
    for ns in [watched, elsewhere] {
        cp.kubectl_run(&["create", "namespace", ns]).unwrap();
    }
    let binding = |kind: &str, name: &str, ns: Option<&str>| {
        let ns_line = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}Binding\nmetadata: {{name: {name}{ns_line}}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: {name}}}\n\
subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {OPERATOR_NS}}}]\n"
        )
    };
    let role = |kind: &str, name: &str, ns: Option<&str>, rules: &str| {
        let ns_line = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
        format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}{ns_line}}}\n{rules}---\n{}", binding(kind, name, ns))
    };
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NS}}}\n---\n{}---\n{}---\n{}",
        role("ClusterRole", "narrow", None, &rules_yaml(&cluster_role(watched))),
        role("Role", "narrow-pools", Some(watched), &rules_yaml(&watched_namespace_role(watched))),
        role("Role", "narrow-lease", Some(OPERATOR_NS), &rules_yaml(NAMESPACE_RULES)),
    ))
    .unwrap();
    let kc = cp.kubeconfig_for_service_account(OPERATOR_NS, sa).unwrap();
    let can_i = |args: &[&str]| {
        let out = Kubectl::new(cp.kubectl_path(), &kc).command().args(["auth", "can-i"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    wait_until("the operator's Role in effect", T, || can_i(&["get", "secrets", "-n", watched]));
    assert!(!can_i(&["get", "secrets", "-n", elsewhere]), "Secret rights outside the watched namespace");
    assert!(!can_i(&["list", "secrets", "--all-namespaces"]));
    assert!(!can_i(&["create", "configmaps", "-n", elsewhere]));

    let _op = Operator::start_as(&cp, sa, "narrow", &["--watch-namespace", watched]);
    cp.apply(&pool_yaml(watched, "p", 1, "")).unwrap();
    wait_for("StatefulSet p-ip0 under the narrowed RBAC", T, || {
        get_json(&cp, &["statefulset", "p-ip0", "-n", watched])
    });
    wait_for("the pool's status written", T, || {
        let p = get_json(&cp, &["sendingpool", "p", "-n", watched])?;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "InstancesNotReady")
            .cloned()
    });
    assert!(get_json(&cp, &["secret", "p-recipient-hash-key", "-n", watched]).is_some());
}

#[test]
fn an_open_relay_is_refused_at_admission_for_the_author() {
    let cp = control_plane(false);
    let _op = operator(cp);
    let author = Author::new(cp, "relay", true);
    let spec = "  submission: {allowedCIDRs: [0.0.0.0/0]}\n";
    let err = author.try_pool("open", &author.address, spec).expect_err("0.0.0.0/0 accepted").to_string();
    assert!(err.contains("spec.submission") && err.contains("open relay"), "names the field and why: {err}");
    assert!(get_json(cp, &["sendingpool", "open", "-n", author.ns.name()]).is_none());
}

#[test]
fn an_address_another_namespace_owns_is_refused_for_the_author_also_when_created_at_once() {
    let cp = control_plane(false);
    let _op = operator(cp);
    // One owner first, then a neighbour asking for its address.
    let (owner, neighbour) = (Author::new(cp, "owner", true), Author::new(cp, "neighbour", true));
    owner.pool("p", None, None);
    owner.stateful_set("p", T);
    neighbour.try_pool("p", &owner.address, "").unwrap();
    let message = neighbour.refused("p", "AddressInUse");
    assert!(message.contains(&format!("{}/p", owner.ns.name())), "names the owner: {message}");
    neighbour.nothing_applied("p");

    // Two authors in two namespaces create pools for one new address at
    // the same moment: exactly one owns it, the other is refused.
    let (a, b) = (Author::new(cp, "race-a", true), Author::new(cp, "race-b", true));
    let contested = format!("198.51.100.{}", 200 + (std::process::id() % 50));
    std::thread::scope(|s| {
        let ta = s.spawn(|| a.try_pool("r", &contested, "").unwrap());
        let tb = s.spawn(|| b.try_pool("r", &contested, "").unwrap());
        ta.join().unwrap();
        tb.join().unwrap();
    });
    let outcome = |x: &Author| {
        wait_for("Ready settles", T, || {
            x.ready("r").filter(|(r, _)| {
                r == "AddressInUse" || get_json(cp, &["statefulset", "r-a", "-n", x.ns.name()]).is_some()
            })
        })
        .0
    };
    let (ra, rb) = (outcome(&a), outcome(&b));
    let refused = [&ra, &rb].iter().filter(|r| r.as_str() == "AddressInUse").count();
    assert_eq!(refused, 1, "exactly one owner: {ra} / {rb}");
    let loser = if ra == "AddressInUse" { &a } else { &b };
    loser.nothing_applied("r");
}
