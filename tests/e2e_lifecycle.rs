//! Egress IP lifecycle on the lab's real node (issue 16): instance pods
//! from the sendfleet image under test, the operator as a process, a real
//! Postfix receiver reached by MX, the lab's DNS server with a blocklist
//! zone. One lab for the binary, the scenarios in order:
//!
//! 1. a spare address listed in the blocklist runs, is checked and shown,
//!    and never enters rotation (checked at every step below);
//! 2. removing an IP that holds 200 deferred messages hands them to its
//!    peers; once the receiver accepts, all 200 arrive (0 lost, 0
//!    duplicated, none from the removed address, counted at the receiver),
//!    and its StatefulSet and address claim are gone;
//! 3. an operator restart during a cool-down keeps the IP out of rotation;
//! 4. deleting a pool with queued mail keeps it and its StatefulSet until
//!    the receiver accepted the mail, then both go.
//!
//! Needs an image with this branch's binary: `SENDFLEET_IMAGE_ARCHIVE`
//! (see COMMON.md, `hack/build-image.sh --binary`). Everything stays in the
//! test's network namespace: egress 10.250.0.21-25, provider 10.250.0.60,
//! DNS 198.51.100.53.

mod e2e_support;
mod operator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use operator_support::{control_plane, get_json, Operator};
use sendfleet_lab::dns::{merge_zones, mx_zones, MxProvider};
use sendfleet_lab::kit::{add_addr, documents, namespace, require_postfix, wait_for, wait_for_or, Dns, Pool};
use sendfleet_lab::{ControlPlane, Receiver, DNS_SERVER};

const NS: &str = "mail-life";
const IMAGE_BASE: &str = "localhost/sendfleet";
const IMAGE: &str = "localhost/sendfleet:dev";
const PROVIDER: &str = "10.250.0.60";
const BL: &str = "bl.life.test";
const ACTIVE: [(&str, &str); 3] = [("mta1", "10.250.0.21"), ("mta2", "10.250.0.22"), ("mta3", "10.250.0.23")];
const SPARE: (&str, &str) = ("spare", "10.250.0.24");
const GONE: (&str, &str) = ("gone1", "10.250.0.25");
const FAST_RETRIES: &str = "retry: {queueRunDelay: 5s, minimalBackoff: 5s, maximalBackoff: 10s}";

const MX: [MxProvider<'static>; 1] = [MxProvider {
    name: "life-provider",
    mx_host: "mx.life.test",
    addr: PROVIDER,
    domains: &["life.test", "gone.test"],
}];

struct Lab {
    cp: &'static ControlPlane,
    operator: Option<Operator>,
    provider: Receiver,
    dns: Dns,
}

fn start_operator(cp: &ControlPlane) -> Operator {
    Operator::start_with(
        cp,
        "e2e-life",
        &[
            "--dns-server",
            &format!("{DNS_SERVER}:53"),
            "--dnsbl-interval-override",
            "2s",
            "--resync-interval",
            "10s",
            "--agent-poll-interval",
            "2s",
            "--allowed-instance-image",
            IMAGE,
        ],
    )
}

/// `a.b.c.d` -> `d.c.b.a` (a DNSBL query name's prefix).
fn reversed(addr: &str) -> String {
    addr.split('.').rev().collect::<Vec<_>>().join(".")
}

/// The blocklist lists exactly `addrs`.
fn list(lab: &Lab, addrs: &[&str]) {
    let records: String = addrs.iter().map(|a| format!("{} IN A 127.0.0.2\n", reversed(a))).collect();
    lab.dns.set_zone(BL, &records);
}

fn pool(name: &str, ips: &[(&str, &str)], spare: Option<(&str, &str)>) -> String {
    let mut p = Pool::named(name)
        .in_ns(NS)
        .host_network()
        .image(IMAGE)
        .queue("256Mi", sendfleet_lab::STORAGE_CLASS)
        .submission(587, &["10.250.0.0/24"])
        .spec(FAST_RETRIES)
        .spec(&format!("reputation: {{zones: [{BL}], coolDown: 1h}}"));
    for (ip, addr) in ips.iter().chain(spare.as_ref()) {
        p = p.with_ip_helo(ip, addr, &format!("{ip}.life.test"));
    }
    let mut yaml = p.yaml();
    if let Some((ip, _)) = spare {
        let helo = format!("heloName: {ip}.life.test}}");
        yaml = yaml.replace(&helo, &format!("heloName: {ip}.life.test, role: Spare}}"));
        assert!(yaml.contains("role: Spare"), "{yaml}");
    }
    yaml
}

fn lab() -> Lab {
    require_postfix();
    let archive = e2e_support::image_archive();
    let cp = control_plane(true);
    cp.ensure_node(6).expect("lab node");
    cp.import_image(&archive, Some(IMAGE_BASE)).expect("importing the sendfleet image");
    for (_, addr) in ACTIVE.iter().chain([&SPARE, &GONE]) {
        add_addr(addr);
    }
    let mut zones = mx_zones(&MX);
    merge_zones(&mut zones, BTreeMap::from([(BL.to_string(), String::new())]));
    let dns = Dns::serve(DNS_SERVER, zones);
    // Defers everything at first: mail waits in the queues.
    let provider = Receiver::start_temp(
        "life-provider",
        PROVIDER,
        &["life.test", "gone.test"],
        &[("life.test", "450 4.7.1 try again later"), ("gone.test", "450 4.7.1 try again later")],
    )
    .expect("provider");
    let operator = start_operator(cp);
    Lab { cp, operator: Some(operator), provider, dns }
}

fn row(cp: &ControlPlane, pool: &str, instance: &str) -> Option<serde_json::Value> {
    let p = get_json(cp, &["sendingpool", pool, "-n", NS])?;
    p["status"]["instances"].as_array()?.iter().find(|i| i["name"] == instance).cloned()
}

/// Messages in an instance's queue at its agent's last scan: deferred plus
/// active (with retries every few seconds, a deferred message spends much
/// of its time in the active queue being tried again).
fn queued(cp: &ControlPlane, pool: &str, instance: &str) -> Option<u64> {
    let q = row(cp, pool, instance)?["queue"].clone();
    Some(q["deferred"].as_u64()? + q["active"].as_u64().unwrap_or(0))
}

fn ready_pods(cp: &ControlPlane, pool: &str) -> usize {
    let v = get_json(cp, &["pods", "-n", NS, "-l", &format!("sendfleet.io/pool={pool}")]).unwrap_or_default();
    v["items"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count()
    })
}

fn diagnose(cp: &ControlPlane) -> String {
    ["pods,pvc,sts", "sendingpools", "events"]
        .iter()
        .map(|k| cp.kubectl_run(&["get", k, "-n", NS, "-o", "wide"]).unwrap_or_else(|e| e.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn inject(addr: &str, count: usize, rcpt: &str) {
    let out = Command::new("smtp-source")
        .args(["-c", "-N", "-m", &count.to_string(), "-s", "10", "-f", "from@example.com", "-t", rcpt])
        .arg(format!("{addr}:587"))
        .output()
        .expect("running smtp-source");
    assert!(out.status.success(), "smtp-source to {addr}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The spare is never weighted: asserted at every step.
fn spare_out_of_rotation(cp: &ControlPlane) {
    let r = row(cp, "life", SPARE.0).expect("the spare's row");
    assert_eq!(r["weight"], 0, "the listed spare entered rotation: {r}");
}

#[test]
fn egress_ips_come_and_go_without_stranding_mail() {
    let mut lab = lab();
    list(&lab, &[SPARE.1]);
    let cp = lab.cp;
    cp.apply(&documents(&[namespace(NS), pool("life", &ACTIVE, Some(SPARE))])).unwrap();
    wait_for_or(
        "4 pods ready",
        Duration::from_secs(300),
        || (ready_pods(cp, "life") == 4).then_some(()),
        || diagnose(cp),
    );
    wait_for("the spare checked and shown listed", Duration::from_secs(60), || {
        row(cp, "life", SPARE.0).filter(|r| r["listings"][0]["zone"] == BL && r["phase"] == "Spare")
    });
    spare_out_of_rotation(cp);

    removing_an_ip_hands_its_200_deferred_messages_to_the_peers(&lab);
    spare_out_of_rotation(cp);
    a_restart_during_a_cool_down_keeps_the_ip_out(&mut lab);
    spare_out_of_rotation(cp);
    deleting_a_pool_with_queued_mail_drains_it_first(&lab);
}

fn removing_an_ip_hands_its_200_deferred_messages_to_the_peers(lab: &Lab) {
    const N: usize = 200;
    let cp = lab.cp;
    let (name, addr) = ACTIVE[0];
    inject(addr, N, "deferred@life.test");
    wait_for_or(
        "200 queued on mta1",
        Duration::from_secs(120),
        || (queued(cp, "life", name) == Some(N as u64)).then_some(()),
        || {
            format!(
                "{:#}\n{}",
                get_json(cp, &["sendingpool", "life", "-n", NS]).unwrap_or_default()["status"],
                diagnose(cp)
            )
        },
    );
    assert_eq!(lab.provider.deliveries().total(), 0);

    let t0 = Instant::now();
    cp.apply(&pool("life", &ACTIVE[1..], Some(SPARE))).unwrap();
    wait_for("mta1 draining", Duration::from_secs(60), || row(cp, "life", name).filter(|r| r["phase"] == "Draining"));
    wait_for("the peers hold the 200", Duration::from_secs(180), || {
        let held: u64 = ACTIVE[1..].iter().filter_map(|(n, _)| queued(cp, "life", n)).sum();
        (held >= N as u64).then_some(())
    });
    let sts = format!("life-{name}");
    wait_for_or(
        "mta1's StatefulSet and address claim gone",
        Duration::from_secs(240),
        || {
            let sts_gone = get_json(cp, &["statefulset", &sts, "-n", NS]).is_none();
            let claims = cp.kubectl_run(&["get", "egressaddressclaims", "-o", "name"]).unwrap_or_default();
            (sts_gone && !claims.contains("10-250-0-21")).then_some(())
        },
        || diagnose(cp),
    );
    eprintln!("e2e lifecycle: mta1 drained and gone in {:.1}s", t0.elapsed().as_secs_f64());

    lab.provider.set_access(&[("gone.test", "450 4.7.1 try again later")]).unwrap();
    wait_for("200 deliveries", Duration::from_secs(180), || {
        (lab.provider.deliveries().to_domain("life.test") >= N).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let d = lab.provider.deliveries();
    let distinct: BTreeSet<&String> =
        d.accepted.iter().filter(|(r, _)| r.ends_with("@life.test")).map(|(r, _)| r).collect();
    assert_eq!((d.to_domain("life.test"), distinct.len()), (N, N), "0 lost, 0 duplicated");
    assert_eq!(d.to_domain_from("life.test", addr), 0, "nothing from the removed address");
}

fn a_restart_during_a_cool_down_keeps_the_ip_out(lab: &mut Lab) {
    let cp = lab.cp;
    let (name, addr) = ACTIVE[2];
    list(lab, &[SPARE.1, addr]);
    wait_for("mta3 quarantined", Duration::from_secs(60), || {
        row(cp, "life", name).filter(|r| r["weight"] == 0 && r["quarantine"].as_str().unwrap_or("").contains(BL))
    });
    list(lab, &[SPARE.1]);
    wait_for("mta3 cooling down", Duration::from_secs(60), || {
        row(cp, "life", name).filter(|r| r["quarantine"].as_str().unwrap_or("").contains("cooling down"))
    });
    drop(lab.operator.take());
    lab.operator = Some(start_operator(cp));
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let r = row(cp, "life", name).unwrap();
        assert_eq!(r["weight"], 0, "mta3 back in rotation after the operator restart: {r}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn deleting_a_pool_with_queued_mail_drains_it_first(lab: &Lab) {
    const N: usize = 20;
    let cp = lab.cp;
    cp.apply(&pool("gone", &[GONE], None)).unwrap();
    wait_for("gone's pod ready and checked", Duration::from_secs(240), || {
        (ready_pods(cp, "gone") == 1 && row(cp, "gone", GONE.0)?["weight"] == 1).then_some(())
    });
    inject(GONE.1, N, "deferred@gone.test");
    wait_for("20 deferred", Duration::from_secs(120), || (queued(cp, "gone", GONE.0) == Some(N as u64)).then_some(()));
    cp.kubectl_run(&["delete", "sendingpool", "gone", "-n", NS, "--wait=false"]).unwrap();
    std::thread::sleep(Duration::from_secs(15));
    assert!(get_json(cp, &["sendingpool", "gone", "-n", NS]).is_some(), "the pool went with mail queued");
    assert!(get_json(cp, &["statefulset", "gone-gone1", "-n", NS]).is_some(), "its StatefulSet went with mail queued");
    let p = get_json(cp, &["sendingpool", "gone", "-n", NS]).unwrap();
    let draining = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Draining").cloned();
    assert_eq!(draining.as_ref().map(|c| c["reason"].clone()), Some("PoolDeleting".into()), "{p}");

    lab.provider.set_access(&[]).unwrap();
    wait_for("the pool gone once its queue is empty", Duration::from_secs(180), || {
        get_json(cp, &["sendingpool", "gone", "-n", NS]).is_none().then_some(())
    });
    assert_eq!(lab.provider.deliveries().to_domain("gone.test"), N, "delivered before the pool went");
    wait_for("its StatefulSet gone", Duration::from_secs(120), || {
        get_json(cp, &["statefulset", "gone-gone1", "-n", NS]).is_none().then_some(())
    });
}
