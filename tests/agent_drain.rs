//! Draining on real Postfix (issue 16): an egress IP removed from the
//! spec is rendered out of rotation and `draining` (as the operator renders
//! it while the IP's StatefulSet still exists, `Observed::retired`); its
//! agent retries its deferred queue at once, and the socketmap hands every
//! message to the peer in rotation, which delivers it. Counted at the
//! receiver: every message once, none from the removed IP. With no peer in
//! rotation the mail stays queued on the draining instance.
//!
//! The pool's backoff is an hour, so only the drain's flush can move the
//! deferred mail within the test.

#[allow(dead_code)]
mod agent_support;

use std::collections::BTreeSet;
use std::time::Duration;

use agent_support::*;
use sendfleet::core::api::EgressIP;
use sendfleet::core::render::Observed;
use sendfleet_lab::receiver::Cue;

const A: &str = "198.51.100.61";
const B: &str = "198.51.100.62";
const PROVIDER: &str = "203.0.113.61";
const DOMAIN: &str = "drain.test";
const N: usize = 50;
/// Retries only after an hour: what moves within the test is the drain.
const SLOW_RETRIES: &str = "retry: {queueRunDelay: 1h, minimalBackoff: 1h, maximalBackoff: 2h, \
                            maximalQueueLifetime: 1d, bounceQueueLifetime: 1d}";

fn pool(ips: &[(&str, &str)]) -> sendfleet::core::api::SendingPool {
    let mut p = Pool::named("drain").in_ns("test");
    for (name, addr) in ips {
        p = p.with_ip(name, addr);
    }
    p.spec(SLOW_RETRIES).build()
}

fn deferred(i: &Instance) -> u64 {
    i.status().queue.messages.get("deferred").copied().unwrap_or(0)
}

#[test]
fn a_removed_ip_hands_its_deferred_queue_to_its_peer_and_nothing_is_lost_or_sent_twice() {
    require_postfix();
    let dns = Dns::start("127.0.0.55", &[(DOMAIN, PROVIDER), ("client.test", PROVIDER)]);
    let rcv = receiver("drain-rcv", PROVIDER, &[DOMAIN, "client.test"], &[]);
    // The provider defers everything from A.
    rcv.set_client(A, Cue::RateLimit450).unwrap();
    let both = pool(&[("drain-a", A), ("drain-b", B)]);
    let before = fleet(both.clone(), &dns);
    let mut a = before.start("drain-a");
    let mut b = before.start("drain-b");
    a.inject_distinct("app@client.test", &format!("user@{DOMAIN}"), N as u32, 2);
    a.wait_for(Duration::from_secs(60), "all deferred on A", |s| {
        s.queue.messages.get("deferred").copied() == Some(N as u64)
    });
    assert_eq!(rcv.deliveries().total(), 0);

    // A is removed from the spec: the operator renders it as retired.
    let retired: EgressIP = both.spec.egress_ips[0].clone();
    let after = fleet(pool(&[("drain-b", B)]), &dns)
        .observed(Observed { retired: vec![retired.clone()], ..Default::default() });
    b.apply_render(&after, Duration::from_secs(30));
    a.apply_render(&after, Duration::from_secs(30));
    let me = a.pod.rendered.policy.this_instance().unwrap().clone();
    assert!(me.draining && me.weight == 0, "{me:?}");

    wait_until("every message delivered through B", Duration::from_secs(90), || {
        rcv.deliveries().to_domain_from(DOMAIN, B) == N
    });
    a.wait_queue_empty(Duration::from_secs(30));
    b.wait_queue_empty(Duration::from_secs(30));
    let got = rcv.deliveries();
    let recipients: BTreeSet<&str> = got.accepted.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!((got.total(), recipients.len()), (N, N), "each once: {got:?}");
    assert_eq!(got.from_client(A), 0, "nothing left from the removed IP: {got:?}");
    // A handed each one to B's peer listener.
    let log_a = a.stdout();
    let handed = lines_with(&log_a, &["postfix/peer-relay/smtp[", &format!("@{DOMAIN}>"), "status=sent"]).len();
    assert_eq!(handed, N, "{log_a}");
    assert!(!log_a.contains("status=bounced") && !b.stdout().contains("status=bounced"));
    let stderr = a.stderr();
    assert!(stderr.contains("draining: handing the queue on"), "{stderr}");
}

#[test]
fn with_no_peer_in_rotation_a_draining_ip_keeps_its_mail_queued() {
    require_postfix();
    const C: &str = "198.51.100.63";
    const D: &str = "198.51.100.64";
    const PROVIDER2: &str = "203.0.113.62";
    let dns = Dns::start("127.0.0.56", &[(DOMAIN, PROVIDER2), ("client.test", PROVIDER2)]);
    let rcv = receiver("drain-blocked-rcv", PROVIDER2, &[DOMAIN, "client.test"], &[]);
    rcv.set_client(C, Cue::RateLimit450).unwrap();
    let both = Pool::named("stuck").in_ns("test").with_ip("stuck-c", C).with_ip("stuck-d", D).spec(SLOW_RETRIES);
    let before = fleet(both.build(), &dns);
    let mut c = before.start("stuck-c");
    let _d = before.start("stuck-d");
    c.inject_distinct("app@client.test", &format!("user@{DOMAIN}"), 10, 1);
    c.wait_for(Duration::from_secs(60), "deferred on C", |s| s.queue.messages.get("deferred").copied() == Some(10));
    // C removed; its only peer D is a spare: nobody in rotation takes the mail.
    let retired = both.build().spec.egress_ips[0].clone();
    let spare_only = Pool::named("stuck").in_ns("test").with_ip("stuck-d", D).spec(SLOW_RETRIES).build();
    let mut spare_only = spare_only;
    spare_only.spec.egress_ips[0].role = Some(sendfleet::core::api::EgressRole::Spare);
    let after = fleet(spare_only, &dns).observed(Observed { retired: vec![retired], ..Default::default() });
    c.apply_render(&after, Duration::from_secs(30));
    assert!(c.pod.rendered.policy.peers_in_rotation().next().is_none());
    // The drain flushes; every lookup defers (no peer), nothing bounces.
    wait_until("the drain retried the queue", Duration::from_secs(30), || {
        c.stderr().contains("draining: handing the queue on")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(deferred(&c), 10, "{}", c.queue_json());
    assert_eq!(rcv.deliveries().total(), 0);
    assert!(!c.stdout().contains("status=bounced"));
}
