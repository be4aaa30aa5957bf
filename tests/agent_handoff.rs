//! Hand-offs on real Postfix, verified where the mail arrived:
//!
//! - between pools: a DomainPolicy routes a domain to another pool
//!   (`route.pool`), and the target pool relays it — its rendered relay
//!   permission names the source pool's egress addresses, and nothing else
//!   was changed by hand: at the receiver, from the target pool's address,
//!   nothing bounced;
//! - between instances, for relay-routed mail: an instance out of rotation
//!   hands it to a peer, and the peer sends it through the relay route (not
//!   to the domain's MX, which its peer listener's `content_filter=smtp:`
//!   alone would do): at the relay, from the peer's address only.

#[allow(dead_code)]
mod agent_support;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_support::*;
use sendfleet::core::render::Observed;

const A: &str = "198.51.100.31";
const B: &str = "198.51.100.32";
const PROVIDER: &str = "203.0.113.31";
/// The target pool's submission Service, as the route names it.
const BULK_SVC: &str = "bulk.test.svc.cluster.local";

#[test]
fn a_pool_route_is_relayed_by_the_target_pool() {
    require_postfix();
    let dns = Dns::start(
        "127.0.0.53",
        &[("handoff.test", PROVIDER), ("direct.test", PROVIDER), ("client.test", PROVIDER), (BULK_SVC, B)],
    );
    let receiver = receiver("handoff-rcv", PROVIDER, &["handoff.test", "direct.test", "client.test"], &[]);
    let main = Pool::named("main").in_ns("test").labeled("role", "main").with_ip("main-a", A).fast_retries().build();
    let bulk = Pool::named("bulk").in_ns("test").labeled("role", "bulk").with_ip("bulk-b", B).fast_retries().build();
    // Selects only main: bulk sends handoff.test by MX itself.
    let handoff = Policy::named("handoff")
        .in_ns("test")
        .for_domains(&["handoff.test"])
        .selecting("role", "main")
        .spec("route: {pool: bulk}")
        .build();
    let fleet_main = fleet(main.clone(), &dns).policy(handoff.clone()).other_pool(bulk.clone());
    let fleet_bulk = fleet(bulk, &dns).policy(handoff).other_pool(main);
    let a = fleet_main.start("main-a");
    let b = fleet_bulk.start("bulk-b");
    let mynetworks = b.pod.files["main.cf"].lines().find(|l| l.starts_with("mynetworks =")).unwrap().to_string();
    assert!(mynetworks.contains(&format!(" {A}/32")), "{mynetworks}");

    a.inject("app@client.test", "user@handoff.test", 5, 1);
    a.inject("app@client.test", "user@direct.test", 3, 1);
    wait_until("handed-off and direct mail delivered", Duration::from_secs(60), || {
        let got = receiver.deliveries();
        got.to_domain("handoff.test") == 5 && got.to_domain("direct.test") == 3
    });
    let got = receiver.deliveries();
    // The hand-off left from the target pool's address; the rest from A.
    assert_eq!(got.to_domain_from("handoff.test", B), 5, "{got:?}");
    assert_eq!(got.to_domain_from("direct.test", A), 3, "{got:?}");
    a.wait_queue_empty(Duration::from_secs(30));
    b.wait_queue_empty(Duration::from_secs(30));
    // A handed it to bulk's submission listener, which accepted it.
    let log_a = a.stdout();
    let handed = lines_with(&log_a, &["@handoff.test>", &format!("relay={BULK_SVC}[{B}]:587"), "status=sent"]).len();
    assert_eq!(handed, 5, "{log_a}");
    let log_b = b.stdout();
    assert!(
        !lines_with(&log_b, &["postfix/submission/smtpd[", "connect from", &format!("[{A}]")]).is_empty(),
        "{log_b}"
    );
    assert!(!log_b.contains("Relay access denied"), "{log_b}");
    // Nothing bounced: no DSN reached the sender's domain, none was logged.
    assert_eq!(receiver.deliveries().to_domain("client.test"), 0);
    for log in [&log_a, &log_b] {
        assert!(!log.contains("status=bounced"), "{log}");
    }
}

const RA: &str = "198.51.100.41";
const RB: &str = "198.51.100.42";
/// The partner's relay (the route's `relayHost`) and the partner domain's
/// own MX host, which relay-routed mail must never reach.
const RELAY: &str = "203.0.113.41";
const PARTNER_MX: &str = "203.0.113.42";

#[test]
fn relay_routed_mail_of_an_instance_out_of_rotation_leaves_through_a_peer_and_the_relay() {
    require_postfix();
    let dns = Dns::start("127.0.0.54", &[("partner.test", PARTNER_MX), ("client.test", PARTNER_MX)]);
    let relay = receiver("relay-rcv", RELAY, &["partner.test"], &[]);
    let mx = receiver("partner-mx", PARTNER_MX, &["partner.test", "client.test"], &[]);
    let pool = Pool::named("relayed").in_ns("test").with_ip("relayed-a", RA).with_ip("relayed-b", RB).fast_retries();
    let partner = Policy::named("partner").in_ns("test").for_domains(&["partner.test"]).relay(RELAY, 25);
    // A is listed: out of rotation (weight 0), as the operator renders it.
    let observed = Observed {
        quarantined: BTreeMap::from([("relayed-a".to_string(), "listed".to_string())]),
        ..Default::default()
    };
    let fleet = fleet(pool.build(), &dns).policy(partner.build()).observed(observed);
    let a = fleet.start("relayed-a");
    let b = fleet.start("relayed-b");
    assert_eq!(a.pod.rendered.weight, 0);

    a.inject_distinct("app@client.test", "user@partner.test", 5, 1);
    wait_until("relay-routed mail delivered", Duration::from_secs(60), || {
        relay.deliveries().to_domain("partner.test") == 5
    });
    a.wait_queue_empty(Duration::from_secs(30));
    b.wait_queue_empty(Duration::from_secs(30));
    let got = relay.deliveries();
    // Through the relay, from the peer's address; nothing from A, nothing
    // to the domain's MX, nothing bounced.
    assert_eq!(got.to_domain_from("partner.test", RB), 5, "{got:?}");
    assert_eq!(got.to_domain_from("partner.test", RA), 0, "{got:?}");
    assert_eq!(mx.deliveries().to_domain("partner.test"), 0, "{:?}", mx.deliveries());
    assert_eq!(mx.deliveries().to_domain("client.test"), 0, "{:?}", mx.deliveries());
    // A handed each recipient to B's peer listener; B sent them on the relay route.
    let log_a = a.stdout();
    let handed = lines_with(
        &log_a,
        &["postfix/peer-relay/smtp[", "@partner.test>", &format!("relay={RB}[{RB}]:{}", a.peer_port), "status=sent"],
    )
    .len();
    assert_eq!(handed, 5, "{log_a}");
    let log_b = b.stdout();
    let relayed = lines_with(&log_b, &["@partner.test>", &format!("relay={RELAY}[{RELAY}]:25"), "status=sent"]).len();
    assert_eq!(relayed, 5, "{log_b}");
    let m = a.metrics();
    let needle = "sendfleet_agent_policy_lookups_total{decision=\"Peer\",reason=\"OutOfRotation\"}";
    assert!(m.contains(needle), "{needle} missing from\n{m}");
}
