//! DNSBL reaction end to end: a real DNS server (hickory, in process, on
//! loopback) serving a blocklist zone, the real API server, the operator as
//! a process. Listing an IP makes the pool's `Listed` condition True and
//! takes the IP out of the rendered rotation; delisting restores it after
//! the cool-down; a DNS outage leaves the condition as it was until the
//! configured number of failed sweeps.

mod dns_common;
mod operator_support;

use std::time::{Duration, Instant};

use dns_common::{txt, TestDns};
use operator_support::*;

const T: Duration = Duration::from_secs(60);

fn condition(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, t: &str) -> Option<(String, String, String)> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == t)?.clone();
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

/// Weight of `instance` in the policy rendered for instance ip0.
fn weight(cp: &sendfleet_lab::ControlPlane, ns: &str, instance: &str) -> Option<u64> {
    let cm = get_json(cp, &["configmap", "rep-ip0", "-n", ns])?;
    let policy: serde_json::Value = serde_json::from_str(cm["data"]["policy.json"].as_str()?).ok()?;
    policy["instances"].as_array()?.iter().find(|i| i["name"] == instance)?["weight"].as_u64()
}

#[test]
fn listing_quarantines_delisting_restores_after_cool_down_and_outages_need_several_sweeps() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dns = rt.block_on(
        TestDns::builder()
            .zone(
                "bl.test",
                &format!("11.2.0.192 1 IN A 127.0.0.2\n11.2.0.192 1 IN TXT {}\n", txt("listed for testing")),
            )
            .start(),
    );
    let cp = control_plane(false);
    let addr = dns.addr.to_string();
    let _op = Operator::start_with(
        cp,
        "reputation",
        &[
            "--dns-server",
            &addr,
            "--dnsbl-interval-override",
            "2s",
            "--dns-timeout",
            "1s",
            "--dns-unknown-after",
            "3",
            "--no-leader-election",
        ],
    );
    let ns = cp.namespace("reputation").unwrap();
    // The addresses the zone lists (one pool per address: explicit here).
    let ips = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
    let pool = ips
        .iter()
        .enumerate()
        .fold(sendfleet_lab::kit::Pool::named("rep").in_ns(ns.name()), |p, (i, a)| p.with_ip(&format!("ip{i}"), a));
    let pool = pool.yaml().replace(
        "spec:\n",
        "spec:\n  reputation: {zones: [bl.test], interval: 1m, onListed: Quarantine, coolDown: 6s}\n",
    );
    cp.apply(&pool).unwrap();

    // Listed: condition, status detail, and the IP out of rotation.
    let (_, reason, message) =
        wait_for("Listed=True", T, || condition(cp, ns.name(), "rep", "Listed").filter(|c| c.0 == "True"));
    assert!(message.contains("192.0.2.11") && message.contains("bl.test"), "{reason}: {message}");
    wait_for("ip1 out of rotation", T, || (weight(cp, ns.name(), "ip1") == Some(0)).then_some(()));
    assert_eq!(weight(cp, ns.name(), "ip0"), Some(1));
    assert_eq!(weight(cp, ns.name(), "ip2"), Some(1));
    let p = get_json(cp, &["sendingpool", "rep", "-n", ns.name()]).unwrap();
    let ip1 = p["status"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == "ip1").unwrap().clone();
    assert_eq!(ip1["listings"][0]["zone"], "bl.test");
    assert_eq!(ip1["listings"][0]["code"], "127.0.0.2");
    assert!(ip1["listings"][0]["reason"].as_str().unwrap_or("").contains("listed for testing"), "{ip1}");
    assert!(ip1["quarantine"].as_str().unwrap_or("").contains("bl.test"), "{ip1}");
    assert_eq!(p["status"]["listedInstances"], 1);
    let metrics = _op.metrics().unwrap();
    let line = |instance: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("sendfleet_operator_dnsbl_listed{")
                    && l.contains(&format!("egress_ip=\"{instance}\""))
                    && l.contains(ns.name())
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(line("ip1").as_deref(), Some("1"), "{metrics}");
    assert_eq!(line("ip0").as_deref(), Some("0"), "{metrics}");
    let events = cp.kubectl_run(&["get", "events", "-n", ns.name()]).unwrap();
    assert!(events.contains("ListingChanged"), "{events}");

    // Delisted: Listed=False, but the IP stays out until clean for 6 s.
    rt.block_on(dns.remove_name("bl.test", "11.2.0.192"));
    let t_removed = Instant::now();
    wait_for("Listed=False", T, || condition(cp, ns.name(), "rep", "Listed").filter(|c| c.0 == "False"));
    let cooling = wait_for("cool-down visible", T, || {
        let p = get_json(cp, &["sendingpool", "rep", "-n", ns.name()])?;
        let q = p["status"]["instances"].as_array()?.iter().find(|i| i["name"] == "ip1")?["quarantine"]
            .as_str()?
            .to_string();
        q.contains("cooling down").then_some(q)
    });
    assert!(cooling.contains("6s"), "{cooling}");
    wait_for("ip1 back in rotation", T, || (weight(cp, ns.name(), "ip1") == Some(1)).then_some(()));
    assert!(t_removed.elapsed() >= Duration::from_secs(6), "restored before the cool-down: {:?}", t_removed.elapsed());

    // Outage: the condition holds through fewer than 3 failed sweeps, then
    // turns Unknown with the reason.
    // Shutting the runtime down stops the server's tasks and closes its
    // sockets: queries are refused from now on.
    drop(dns);
    rt.shutdown_timeout(Duration::from_secs(5));
    let t_down = Instant::now();
    let (status, reason, _) =
        wait_for("Listed=Unknown", T, || condition(cp, ns.name(), "rep", "Listed").filter(|c| c.0 == "Unknown"));
    let took = t_down.elapsed();
    eprintln!("Listed became Unknown {took:?} after the DNS server went away ({reason})");
    assert_eq!(status, "Unknown");
    assert!(took >= Duration::from_secs(4), "a single failed sweep flipped the condition ({took:?})");
}
