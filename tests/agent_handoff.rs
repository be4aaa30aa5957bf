//! Hand-offs between pools on real Postfix: a DomainPolicy routes a domain
//! to another pool (`route.pool`), and the target pool relays it — its
//! rendered relay permission names the source pool's egress addresses, and
//! nothing else was changed by hand. Verified where the mail arrived: at the
//! receiver, from the target pool's address, with nothing bounced.

#[allow(dead_code)]
mod agent_support;

use std::time::Duration;

use agent_support::*;

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
    let handed = log_a
        .lines()
        .filter(|l| {
            l.contains("@handoff.test>")
                && l.contains(&format!("relay={BULK_SVC}[{B}]:587"))
                && l.contains("status=sent")
        })
        .count();
    assert_eq!(handed, 5, "{log_a}");
    let log_b = b.stdout();
    assert!(
        log_b.lines().any(|l| l.contains("postfix/submission/smtpd[")
            && l.contains("connect from")
            && l.contains(&format!("[{A}]"))),
        "{log_b}"
    );
    assert!(!log_b.contains("Relay access denied"), "{log_b}");
    // Nothing bounced: no DSN reached the sender's domain, none was logged.
    assert_eq!(receiver.deliveries().to_domain("client.test"), 0);
    for log in [&log_a, &log_b] {
        assert!(!log.contains("status=bounced"), "{log}");
    }
}
