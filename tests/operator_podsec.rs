//! Instance pods and the cluster's own refusals, on the real API server with
//! kube-controller-manager (its StatefulSet controller creates the pods; no
//! kubelet runs, so a pod is Ready only when this test says so):
//!
//! - a pool in a namespace whose Pod Security level refuses its pods shows
//!   `Degraded=True` with the admission message (not "Starting" forever);
//! - the submission EndpointSlice follows pod readiness as well as weight.
//!
//! Nothing is sent: the egress addresses are documentation addresses no
//! interface of the test's namespace holds.

mod operator_support;

use std::time::Duration;

use operator_support::{control_plane, get_json, pool_yaml, shared_operator, wait_for};
use sendfleet_lab::kit::wait_for_or;
use sendfleet_lab::{ControlPlane, Namespace};

const T: Duration = Duration::from_secs(60);

/// `(status, reason, message)` of a pool condition.
fn condition(cp: &ControlPlane, ns: &str, pool: &str, t: &str) -> Option<(String, String, String)> {
    operator_support::condition(cp, "sendingpool", pool, ns, t)
}

/// A fresh namespace whose Pod Security admission enforces `level`.
fn namespace_enforcing<'a>(cp: &'a ControlPlane, prefix: &str, level: &str) -> Namespace<'a> {
    let ns = cp.namespace(prefix).unwrap();
    let label = format!("pod-security.kubernetes.io/enforce={level}");
    cp.kubectl_run(&["label", "namespace", ns.name(), &label]).unwrap();
    ns
}

#[test]
fn pods_refused_by_pod_security_show_in_degraded_with_the_admission_message() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = namespace_enforcing(cp, "podsec-restricted", "restricted");
    cp.apply(&pool_yaml(ns.name(), "strict", 2, "")).unwrap();
    let (status, reason, message) = wait_for_or(
        "Degraded=True naming Pod Security for both instances",
        T,
        || {
            let c = condition(cp, ns.name(), "strict", "Degraded")?;
            (c.0 == "True" && c.2.matches("violates PodSecurity").count() == 2).then_some(c)
        },
        || {
            format!(
                "pool: {:?}\nevents: {}",
                get_json(cp, &["sendingpool", "strict", "-n", ns.name()]).map(|p| p["status"].clone()),
                cp.kubectl_run(&["get", "events", "-n", ns.name()]).unwrap_or_default()
            )
        },
    );
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InstanceFailing"));
    // Each instance named, with the API server's own words.
    for inst in ["ip0", "ip1"] {
        assert!(
            message.contains(&format!("{inst}: FailedCreate: ")) && message.contains(r#"restricted:latest"#),
            "{message}"
        );
    }
    let pool = get_json(cp, &["sendingpool", "strict", "-n", ns.name()]).unwrap();
    for i in pool["status"]["instances"].as_array().unwrap() {
        assert_eq!(i["phase"], "Failed", "{i}");
        assert!(i["message"].as_str().unwrap().contains("is forbidden: violates PodSecurity"), "{i}");
    }
    let ready = condition(cp, ns.name(), "strict", "Ready").unwrap();
    assert_eq!(ready.0, "False", "{ready:?}");
    eprintln!("pod security refusal reported: Degraded {reason}: {message}");
}

/// `ready` of each endpoint of the pool's submission EndpointSlice, by hostname.
fn endpoints(cp: &ControlPlane, ns: &str, pool: &str) -> Vec<(String, bool)> {
    let slice = get_json(cp, &["endpointslice", &format!("{pool}-submission"), "-n", ns]).unwrap_or_default();
    let mut v: Vec<(String, bool)> = slice["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["hostname"].as_str().unwrap_or("").to_string(), e["conditions"]["ready"] == true))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Marks a pod's Ready condition as the kubelet would.
fn set_pod_ready(cp: &ControlPlane, ns: &str, pod: &str, ready: bool) {
    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}
    ]}});
    cp.kubectl_run(&["patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge", "-p", &patch.to_string()])
        .unwrap();
}

#[test]
fn submission_endpoints_are_ready_only_while_their_pod_is() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = cp.namespace("podsec-ready").unwrap();
    cp.apply(&pool_yaml(ns.name(), "ready", 2, "")).unwrap();
    // Both instances in rotation (weight > 0), neither pod Ready: both
    // endpoints not ready.
    wait_for("the submission EndpointSlice, no endpoint ready", T, || {
        let e = endpoints(cp, ns.name(), "ready");
        (e == [("ip0".to_string(), false), ("ip1".to_string(), false)]).then_some(())
    });
    wait_for("the StatefulSet controller's pods", T, || {
        let n = get_json(cp, &["pods", "-n", ns.name()])?["items"].as_array()?.len();
        (n == 2).then_some(())
    });
    set_pod_ready(cp, ns.name(), "ready-ip0-0", true);
    wait_for("ip0's endpoint ready, ip1's not", T, || {
        let e = endpoints(cp, ns.name(), "ready");
        (e == [("ip0".to_string(), true), ("ip1".to_string(), false)]).then_some(())
    });
    let weights: Vec<u64> = get_json(cp, &["sendingpool", "ready", "-n", ns.name()]).unwrap()["status"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["weight"].as_u64().unwrap_or(0))
        .collect();
    assert!(weights.iter().all(|w| *w > 0), "both in rotation: only readiness differs: {weights:?}");
    set_pod_ready(cp, ns.name(), "ready-ip0-0", false);
    wait_for("ip0's endpoint not ready again", T, || {
        let e = endpoints(cp, ns.name(), "ready");
        (e == [("ip0".to_string(), false), ("ip1".to_string(), false)]).then_some(())
    });
}

/// The Pod Security level instance pods need: `privileged` with
/// HostNetwork (host namespace, host ports, probe host); `baseline` is
/// enough without host networking — the capabilities are within baseline's
/// list, and seccomp, no escalation and the read-only root are set.
#[test]
fn without_host_networking_instance_pods_pass_the_baseline_level() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = namespace_enforcing(cp, "podsec-baseline", "baseline");
    let pool = sendfleet_lab::kit::Pool::named("attached")
        .in_ns(ns.name())
        .with_ips(2)
        .spec("egress: {mode: Multus, networkAttachment: egress-net}")
        .yaml();
    cp.apply(&pool).unwrap();
    let pods = wait_for_or(
        "both pods created by the StatefulSet controller",
        T,
        || {
            let v = get_json(cp, &["pods", "-n", ns.name()])?;
            let mut names: Vec<String> = v["items"]
                .as_array()?
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect();
            names.sort();
            (names.len() == 2).then_some(names)
        },
        || cp.kubectl_run(&["get", "events", "-n", ns.name()]).unwrap_or_default(),
    );
    assert_eq!(pods, ["attached-ip0-0", "attached-ip1-0"]);
    let degraded = condition(cp, ns.name(), "attached", "Degraded");
    assert!(!degraded.as_ref().is_some_and(|c| c.2.contains("PodSecurity")), "{degraded:?}");
}
