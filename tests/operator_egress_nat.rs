//! Cloud egress behind a NAT (`egressIPs[].publicAddress`), end to end: a
//! real DNS server serving a blocklist zone, the real API server, the
//! operator as a process. The DNS checks ask about the address receivers
//! see (the public one), and both addresses are held cluster-wide: no other
//! pool may bind or announce either.

mod dns_common;
mod operator_support;

use std::time::Duration;

use dns_common::{txt, TestDns};
use operator_support::*;

const T: Duration = Duration::from_secs(60);

fn ready_or_listed(
    cp: &sendfleet_lab::ControlPlane,
    ns: &str,
    pool: &str,
    t: &str,
) -> Option<(String, String, String)> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == t)?.clone();
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

fn pool(ns: &str, name: &str, ips: &str) -> String {
    format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         reputation: {{zones: [bl.test], interval: 1m}}\n  egressIPs:\n{ips}"
    )
}

#[test]
fn checks_use_the_public_address_and_both_addresses_are_claimed() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The zone lists the public address of ip0, and the private address it
    // binds (which no receiver ever sees): only the first may count.
    let dns = rt.block_on(
        TestDns::builder()
            .zone(
                "bl.test",
                &format!(
                    "11.2.0.192 1 IN A 127.0.0.2\n11.2.0.192 1 IN TXT {}\n10.0.0.10 1 IN A 127.0.0.2\n",
                    txt("public listed")
                ),
            )
            .start(),
    );
    let cp = control_plane(false);
    let addr = dns.addr.to_string();
    let _op = Operator::start_with(
        cp,
        "egress-nat",
        &["--dns-server", &addr, "--dnsbl-interval-override", "2s", "--dns-timeout", "1s", "--no-leader-election"],
    );
    let ns = cp.namespace("nat").unwrap();
    cp.apply(&pool(
        ns.name(),
        "nat",
        "  - {name: ip0, address: 10.0.0.10, publicAddress: 192.0.2.11, heloName: ip0.example.com}\n  \
         - {name: ip1, address: 10.0.0.11, heloName: ip1.example.com}\n",
    ))
    .unwrap();

    let (_, reason, message) =
        wait_for("Listed=True", T, || ready_or_listed(cp, ns.name(), "nat", "Listed").filter(|c| c.0 == "True"));
    assert!(message.contains("192.0.2.11"), "{reason}: {message}");
    assert!(!message.contains("10.0.0.10"), "the bind address was checked: {message}");
    let p = get_json(cp, &["sendingpool", "nat", "-n", ns.name()]).unwrap();
    let inst = |n: &str| p["status"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == n).unwrap().clone();
    assert_eq!(inst("ip0")["listings"][0]["zone"], "bl.test", "{p}");
    assert!(inst("ip1")["listings"].as_array().is_none_or(|l| l.is_empty()), "{p}");
    // Postfix binds the private address.
    let cm = get_json(cp, &["configmap", "nat-ip0", "-n", ns.name()]).unwrap();
    let main_cf = cm["data"]["main.cf"].as_str().unwrap();
    assert!(main_cf.contains("smtp_bind_address = 10.0.0.10"), "{main_cf}");
    assert!(!main_cf.contains("192.0.2.11"), "{main_cf}");

    // Both addresses are held: another namespace can neither bind the
    // public address nor announce the bound one.
    let other = cp.namespace("nat-other").unwrap();
    cp.apply(&pool(other.name(), "binds", "  - {name: a, address: 192.0.2.11, heloName: a.example.com}\n")).unwrap();
    cp.apply(&pool(
        other.name(),
        "announces",
        "  - {name: a, address: 10.0.0.50, publicAddress: 10.0.0.10, heloName: a.example.com}\n",
    ))
    .unwrap();
    let owner = format!("{}/nat", ns.name());
    for (name, field) in [("binds", "spec.egressIPs[0].address"), ("announces", "spec.egressIPs[0].publicAddress")] {
        let (_, _, message) = wait_for(&format!("{name}: AddressInUse"), T, || {
            ready_or_listed(cp, other.name(), name, "Ready").filter(|c| c.1 == "AddressInUse")
        });
        assert!(message.contains(field) && message.contains(&owner), "{name}: {message}");
    }
    drop(dns);
    rt.shutdown_timeout(Duration::from_secs(5));
}
