//! The Argo CD health checks the docs ship (docs/gitops/argocd/), run by a
//! Lua 5.1 interpreter on status objects the real operator wrote on the
//! real API server: a pool waiting for its instances is Progressing, a pool
//! stopped for an address another pool owns is Degraded naming the owner, a
//! pool whose pods Pod Security refuses is Degraded with the admission
//! message; a policy and a plan the operator accepted are Healthy, a plan
//! it refused is Degraded naming the field. (A pool with running instances
//! is Healthy: tests/e2e_install.rs, on the node.) The snippet users paste
//! into `argocd-cm` carries exactly these scripts.

mod operator_support;

use std::path::PathBuf;
use std::time::Duration;

use operator_support::{control_plane, get_json, pool_yaml, repo, shared_operator, wait_for};
use sendfleet_lab::argocd::{health, Health};
use sendfleet_lab::kit::wait_for_or;
use sendfleet_lab::kit::{Plan, Policy, Pool};

const T: Duration = Duration::from_secs(90);

fn script(name: &str) -> PathBuf {
    repo().join("docs/gitops/argocd").join(name)
}

/// The health of `kind/name` once it is `want` (the operator writes status
/// asynchronously); the last answer in the panic otherwise.
fn health_becomes(cp: &sendfleet_lab::ControlPlane, kind: &str, ns: &str, name: &str, want: &str) -> Health {
    let lua = script(if kind == "sendingpool" { "sendingpool.lua" } else { "accepted.lua" });
    let now = || {
        let obj = get_json(cp, &[kind, name, "-n", ns])?;
        Some((health(&lua, &obj).unwrap_or_else(|e| panic!("{e}")), obj["status"].clone()))
    };
    wait_for_or(
        &format!("{kind} {ns}/{name} {want}"),
        T,
        || now().map(|(h, _)| h).filter(|h| h.status == want),
        || format!("last: {:#?}", now()),
    )
}

#[test]
fn health_checks_read_the_operators_status_as_argo_cd_would() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = cp.namespace("gitops-health").unwrap();

    // No node here: the instances never run, the pool waits for them.
    cp.apply(&pool_yaml(ns.name(), "waiting", 2, "")).unwrap();
    let h = health_becomes(cp, "sendingpool", ns.name(), "waiting", "Progressing");
    wait_for("Ready=False InstancesNotReady", T, || {
        operator_support::condition(cp, "sendingpool", "waiting", ns.name(), "Ready")
            .filter(|c| c.1 == "InstancesNotReady")
    });
    let h2 = health_becomes(cp, "sendingpool", ns.name(), "waiting", "Progressing");
    assert!(h2.message.starts_with("InstancesNotReady"), "{h:?} then {h2:?}");

    // A second pool listing the first one's address: stopped, Degraded.
    let first = get_json(cp, &["sendingpool", "waiting", "-n", ns.name()]).unwrap();
    let taken = first["spec"]["egressIPs"][0]["address"].as_str().unwrap().to_string();
    cp.apply(&Pool::named("late").in_ns(ns.name()).with_ip("a", &taken).yaml()).unwrap();
    let h = health_becomes(cp, "sendingpool", ns.name(), "late", "Degraded");
    assert!(h.message.starts_with("AddressInUse") && h.message.contains(&format!("{}/waiting", ns.name())), "{h:?}");

    // Accepted policy and plan: Healthy. A plan the operator refuses (a
    // time zone the API server's pattern lets through): Degraded, naming it.
    cp.apply(&Policy::named("gmail").in_ns(ns.name()).for_domains(&["gmail.com"]).yaml()).unwrap();
    let h = health_becomes(cp, "domainpolicy", ns.name(), "gmail", "Healthy");
    assert!(h.message.starts_with("Valid"), "{h:?}");
    cp.apply(&Plan::named("new-ips").in_ns(ns.name()).step(1, 50).step(2, 100).yaml()).unwrap();
    health_becomes(cp, "warmupplan", ns.name(), "new-ips", "Healthy");
    cp.apply(&Plan::named("typo").in_ns(ns.name()).step(1, 50).time_zone("Asia/Tokio").yaml()).unwrap();
    let h = health_becomes(cp, "warmupplan", ns.name(), "typo", "Degraded");
    assert!(h.message.contains("spec.timeZone"), "{h:?}");
}

#[test]
fn a_pool_refused_by_pod_security_is_degraded_with_the_admission_message() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = cp.namespace("gitops-podsec").unwrap();
    cp.kubectl_run(&["label", "namespace", ns.name(), "pod-security.kubernetes.io/enforce=restricted"]).unwrap();
    cp.apply(&pool_yaml(ns.name(), "strict", 1, "")).unwrap();
    let h = health_becomes(cp, "sendingpool", ns.name(), "strict", "Degraded");
    assert!(h.message.starts_with("InstanceFailing") && h.message.contains("violates PodSecurity"), "{h:?}");
}

#[test]
fn the_argocd_cm_snippet_carries_the_tested_scripts() {
    let cm: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(script("argocd-cm.yaml")).unwrap()).unwrap();
    let read = |f: &str| std::fs::read_to_string(script(f)).unwrap();
    for (kind, file) in
        [("SendingPool", "sendingpool.lua"), ("DomainPolicy", "accepted.lua"), ("WarmupPlan", "accepted.lua")]
    {
        let key = format!("resource.customizations.health.sendfleet.io_{kind}");
        assert_eq!(cm["data"][key.as_str()].as_str(), Some(read(file).as_str()), "{key} differs from {file}");
    }
}
