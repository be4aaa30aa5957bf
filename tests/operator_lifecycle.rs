//! Egress IP lifecycle on the real API server (issue 16), the operator as a
//! process (no kubelet: nothing runs the instances, so no queue is ever
//! reported empty):
//!
//! - an address sends nothing before its first finished DNS check, and a
//!   spare listed on the blocklist is checked and shown but never weighted;
//! - a quarantined IP in its cool-down stays out of rotation when the
//!   operator is killed and another one starts (the state is in status);
//! - a removed IP keeps its StatefulSet and its address claim while its
//!   queue is not known to be empty (`Draining`);
//! - a deleted pool is held by the drain finalizer (`Draining=True
//!   PoolDeleting`) until `drain.timeout`, then goes; `deletionPolicy:
//!   Retain` carries no finalizer.

mod dns_common;
mod operator_support;

use std::time::{Duration, Instant};

use dns_common::TestDns;
use operator_support::*;

const T: Duration = Duration::from_secs(60);

/// Weight of `instance` in the policy rendered for `pool`'s instance `from`.
fn weight(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, from: &str, instance: &str) -> Option<u64> {
    let cm = get_json(cp, &["configmap", &format!("{pool}-{from}"), "-n", ns])?;
    let policy: serde_json::Value = serde_json::from_str(cm["data"]["policy.json"].as_str()?).ok()?;
    policy["instances"].as_array()?.iter().find(|i| i["name"] == instance)?["weight"].as_u64()
}

fn row(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, instance: &str) -> Option<serde_json::Value> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    p["status"]["instances"].as_array()?.iter().find(|i| i["name"] == instance).cloned()
}

fn operator(cp: &sendfleet_lab::ControlPlane, ns: &str, dns: &str) -> Operator {
    Operator::start_with(
        cp,
        ns,
        &[
            "--dns-server",
            dns,
            "--dnsbl-interval-override",
            "2s",
            "--dns-timeout",
            "1s",
            "--no-leader-election",
            "--watch-namespace",
            ns,
        ],
    )
}

#[test]
fn unchecked_and_spare_addresses_never_send_and_a_cool_down_survives_an_operator_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // ip1 (active) and ip2 (spare) are listed; ip0 is clean.
    let dns = rt.block_on(
        TestDns::builder().zone("bl.test", "21.2.0.192 1 IN A 127.0.0.2\n22.2.0.192 1 IN A 127.0.0.2\n").start(),
    );
    let addr = dns.addr.to_string();
    let cp = control_plane(false);
    let ns = cp.namespace("lifecycle-rep").unwrap();
    let mut op = operator(cp, ns.name(), &addr);
    let pool = sendfleet_lab::kit::Pool::named("life")
        .in_ns(ns.name())
        .with_ip("ip0", "192.0.2.20")
        .with_ip("ip1", "192.0.2.21")
        .with_ip("ip2", "192.0.2.22")
        .yaml()
        .replace(
            "spec:\n",
            "spec:\n  reputation: {zones: [bl.test], interval: 1m, onListed: Quarantine, coolDown: 1h}\n",
        )
        .replace("heloName: ip2.life.example.com}", "heloName: ip2.life.example.com, role: Spare}");
    assert!(pool.contains("role: Spare"), "{pool}");
    cp.apply(&pool).unwrap();

    wait_for("ip0 checked and in rotation", T, || {
        (weight(cp, ns.name(), "life", "ip0", "ip0") == Some(1)).then_some(())
    });
    let ip0 = row(cp, ns.name(), "life", "ip0").unwrap();
    assert!(ip0["checkedSince"].as_str().is_some(), "{ip0}");
    // The spare is checked (its listing shows) and never weighted.
    let ip2 = wait_for("spare's listing in status", T, || {
        row(cp, ns.name(), "life", "ip2").filter(|r| r["listings"][0]["zone"] == "bl.test")
    });
    assert!(ip2["quarantine"].as_str().unwrap_or("").starts_with("Spare"), "{ip2}");
    assert_eq!(weight(cp, ns.name(), "life", "ip0", "ip2"), Some(0));
    assert_eq!(weight(cp, ns.name(), "life", "ip0", "ip1"), Some(0));

    // ip1 delisted: cooling down for an hour.
    rt.block_on(dns.remove_name("bl.test", "21.2.0.192"));
    let ip1 = wait_for("ip1 cooling down", T, || {
        row(cp, ns.name(), "life", "ip1").filter(|r| r["quarantine"].as_str().unwrap_or("").contains("cooling down"))
    });
    assert!(ip1["coolDownSince"].as_str().is_some(), "{ip1}");

    // The operator dies; another starts with no memory of the pool.
    op.sigkill();
    let _op = operator(cp, ns.name(), &addr);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(weight(cp, ns.name(), "life", "ip0", "ip1"), Some(0), "ip1 back in rotation after the restart");
        assert_eq!(weight(cp, ns.name(), "life", "ip0", "ip2"), Some(0), "a spare in rotation");
        assert_eq!(weight(cp, ns.name(), "life", "ip0", "ip0"), Some(1), "a checked IP held out after the restart");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ip1 = row(cp, ns.name(), "life", "ip1").unwrap();
    assert!(ip1["quarantine"].as_str().unwrap_or("").contains("cooling down"), "{ip1}");
    drop(dns);
    rt.shutdown_timeout(Duration::from_secs(5));
}

#[test]
fn a_removed_ip_keeps_its_statefulset_and_claim_and_a_deleted_pool_waits_for_its_drain() {
    // With the garbage collector: the deleted pool's objects and its
    // address claims go after it, so the same name and addresses can be
    // used again below.
    let cp = control_plane(true);
    let ns = cp.namespace("lifecycle-del").unwrap();
    let _op = Operator::start_with(cp, ns.name(), &["--no-leader-election", "--watch-namespace", ns.name()]);
    let pool = |ips: &[(&str, &str)], extra: &str| {
        let mut p = sendfleet_lab::kit::Pool::named("gone").in_ns(ns.name());
        for (n, a) in ips {
            p = p.with_ip(n, a);
        }
        p.yaml().replace("spec:\n", &format!("spec:\n{extra}"))
    };
    let drain = "  drain: {timeout: 8s}\n";
    cp.apply(&pool(&[("ip0", "192.0.2.30"), ("ip1", "192.0.2.31")], drain)).unwrap();
    wait_for("the drain finalizer", T, || {
        let p = get_json(cp, &["sendingpool", "gone", "-n", ns.name()])?;
        p["metadata"]["finalizers"].as_array()?.iter().any(|f| f == "sendfleet.io/drain").then_some(())
    });
    wait_for("both StatefulSets", T, || (children(cp, "statefulset", ns.name(), "gone").len() == 2).then_some(()));
    // (Unchecked addresses stay out of rotation: the test above.)

    // ip1 removed: its queue was never reported empty, so it drains.
    cp.apply(&pool(&[("ip0", "192.0.2.30")], drain)).unwrap();
    let ip1 = wait_for("ip1 draining", T, || row(cp, ns.name(), "gone", "ip1").filter(|r| r["phase"] == "Draining"));
    assert_eq!(ip1["weight"], 0, "{ip1}");
    let (status, reason, _) = wait_for("Draining=True", T, || {
        condition(cp, "sendingpool", "gone", ns.name(), "Draining").filter(|c| c.0 == "True")
    });
    // DrainBlocked while ip0, the only peer, waits for its first DNS check.
    assert!(status == "True" && ["DrainingQueues", "DrainBlocked"].contains(&reason.as_str()), "{status} {reason}");
    std::thread::sleep(Duration::from_secs(5));
    let sts = children(cp, "statefulset", ns.name(), "gone");
    assert!(sts.iter().any(|s| s.ends_with("gone-ip1")), "a StatefulSet with mail was deleted: {sts:?}");
    let claims = cp.kubectl_run(&["get", "egressaddressclaims", "-o", "name"]).unwrap();
    assert!(claims.contains("192-0-2-31"), "the address claim was released while its StatefulSet runs: {claims}");

    // Deleting the pool: held until drain.timeout (8 s), then gone.
    let t0 = Instant::now();
    cp.kubectl_run(&["delete", "sendingpool", "gone", "-n", ns.name(), "--wait=false"]).unwrap();
    let (_, reason, message) = wait_for("Draining=True PoolDeleting", T, || {
        condition(cp, "sendingpool", "gone", ns.name(), "Draining").filter(|c| c.1 == "PoolDeleting")
    });
    assert!(message.contains("pool deleted"), "{reason}: {message}");
    wait_for("the pool gone after its drain timeout", T, || {
        get_json(cp, &["sendingpool", "gone", "-n", ns.name()]).is_none().then_some(())
    });
    assert!(t0.elapsed() >= Duration::from_secs(7), "gone before its drain timeout: {:?}", t0.elapsed());
    let events = cp.kubectl_run(&["get", "events", "-n", ns.name()]).unwrap();
    assert!(events.contains("DrainTimedOut"), "{events}");

    // deletionPolicy: Retain: no finalizer, gone at once.
    cp.apply(&pool(&[("ip0", "192.0.2.30")], "  deletionPolicy: Retain\n")).unwrap();
    wait_for("reconciled", T, || row(cp, ns.name(), "gone", "ip0").map(|_| ()));
    let p = get_json(cp, &["sendingpool", "gone", "-n", ns.name()]).unwrap();
    assert!(p["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()), "{p}");
    cp.kubectl_run(&["delete", "sendingpool", "gone", "-n", ns.name(), "--wait=false"]).unwrap();
    wait_for("the retained pool gone", Duration::from_secs(10), || {
        get_json(cp, &["sendingpool", "gone", "-n", ns.name()]).is_none().then_some(())
    });
}
