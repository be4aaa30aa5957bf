//! The transport policy service on real Postfix, verified by where the mail
//! actually went: a paused domain is deferred (and flows once unpaused), a
//! domain this instance is excluded for leaves through a peer (seen at the
//! receiver as coming from the peer's address, and not relayed again by the
//! peer even though the peer's own policy would, and sent by the peer on the
//! domain's throttle transport, not plain smtp). (A slowed domain taking
//! its slow transport is proven where the slow-down is provoked by real rate
//! limits: tests/agent_adaptive.rs.)

#[allow(dead_code)]
mod agent_support;

use std::time::Duration;

use agent_support::*;

const A: &str = "198.51.100.11";
const B: &str = "198.51.100.12";
const PROVIDER: &str = "203.0.113.21";
const DOMAINS: [&str; 4] = ["paused.test", "excluded.test", "normal.test", "client.test"];

/// The pool of A and B with two DomainPolicies: `paused` (held while
/// paused) and `excl` (never from `excluded`).
fn fleet_excluding(dns: &Dns, excluded: &str, paused: bool) -> Fleet {
    let pool = Pool::named("route").in_ns("test").with_ip("route-a", A).with_ip("route-b", B).fast_retries();
    let mut on_hold = Policy::named("paused").in_ns("test").for_domains(&["paused.test"]);
    if paused {
        on_hold = on_hold.paused("provider maintenance");
    }
    fleet(pool.build(), dns).policy(on_hold.build()).policy(
        Policy::named("excl")
            .in_ns("test")
            .for_domains(&["excluded.test"])
            .excluding(&[excluded])
            .throttled(2, 60, 2)
            .build(),
    )
}

#[test]
fn paused_and_excluded_domains_go_where_the_policy_says() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &DOMAINS.map(|d| (d, PROVIDER)));
    let receiver = receiver("route-rcv", PROVIDER, &DOMAINS, &[]);
    let fleet_a = fleet_excluding(&dns, "route-a", true);
    // B's policy (an update that reached B first) excludes B instead: if B
    // consulted its agent for mail a peer handed it, it would send it back.
    let fleet_b = fleet_excluding(&dns, "route-b", true);
    let mut a = fleet_a.start("route-a");
    let b = fleet_b.start("route-b");

    for d in ["paused.test", "excluded.test", "normal.test"] {
        a.inject("app@client.test", &format!("user@{d}"), 5, 1);
    }

    wait_until("excluded and normal mail delivered", Duration::from_secs(60), || {
        let got = receiver.deliveries();
        got.to_domain("excluded.test") == 5 && got.to_domain("normal.test") == 5
    });
    let got = receiver.deliveries();
    // Excluded: from the peer's address only.
    assert_eq!(got.to_domain_from("excluded.test", B), 5, "{got:?}");
    // Normal: from A itself.
    assert_eq!(got.to_domain_from("normal.test", A), 5, "{got:?}");
    // Paused: nothing arrived, the mail waits in A's queue with the reason.
    assert_eq!(got.to_domain("paused.test"), 0);
    let queue = a.queue_json();
    assert_eq!(queue.matches("paused by policy paused: provider maintenance").count(), 5, "{queue}");
    // The agent's queue monitor sees the same held mail.
    let st = a.wait_for(Duration::from_secs(20), "queue monitor shows the paused mail", |s| {
        s.queue.messages.get("deferred") == Some(&5)
            && s.queue.deferred_by_domain.first().is_some_and(|d| d.domain == "paused.test" && d.count == 5)
    });
    assert_eq!(st.queue.older_than_warn, 0);
    assert!(st.queue.oldest_age_seconds.is_some_and(|a| a < 120));

    // A's log shows the transports that carried each domain.
    let log_a = a.stdout();
    let sent_by = |service: &str, domain: &str| {
        lines_with(&log_a, &[&format!("postfix/{service}/smtp["), &format!("@{domain}>"), "status=sent"]).len()
    };
    assert_eq!(sent_by("peer-relay", "excluded.test"), 5, "{log_a}");
    assert!(
        log_a
            .lines()
            .filter(|l| l.contains("@excluded.test>") && l.contains(&format!("relay={B}[{B}]:{}", a.peer_port)))
            .count()
            == 5
    );
    assert!(log_a
        .lines()
        .any(|l| l.contains("@paused.test>") && l.contains("status=deferred") && l.contains("paused by policy")));
    // B sent the peer's mail itself, never back to A, and on the domain's
    // own throttle transport (its peer listener's FILTER), not plain smtp:
    // the peer that takes over keeps the provider's limit.
    let log_b = b.stdout();
    assert_eq!(log_b.lines().filter(|l| l.contains("postfix/peer-relay/")).count(), 0, "{log_b}");
    let sent_by_b = |tag: &str| lines_with(&log_b, &[tag, "@excluded.test>", "status=sent"]).len();
    assert_eq!(sent_by_b("postfix/dp-excl/smtp["), 5, "{log_b}");
    assert_eq!(sent_by_b("postfix/smtp["), 0, "{log_b}");

    // Counters: only mail sent from A's own IP counts toward A's day.
    let st_a = a.wait_for(Duration::from_secs(10), "A counted", |s| s.counters.sent_today == 5);
    assert_eq!(st_a.counters.sent_today_by_rule.get("excl"), None);
    b.wait_for(Duration::from_secs(10), "B counted", |s| s.counters.sent_today_by_rule.get("excl") == Some(&5));
    let m = a.metrics();
    for needle in [
        "sendfleet_agent_policy_lookups_total{decision=\"Peer\",reason=\"Excluded\"}",
        "sendfleet_agent_policy_lookups_total{decision=\"Defer\",reason=\"Paused\"}",
        "sendfleet_agent_deliveries_total{rule=\"excl\",status=\"sent\",category=\"Accepted\",via=\"peer\"} 5",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }

    // Unpause: the held mail flows on its next retry, without a restart.
    let pid = a.master_pid();
    a.apply_render(&fleet_excluding(&dns, "route-a", false), Duration::from_secs(30));
    wait_until("paused mail delivered after unpause", Duration::from_secs(60), || {
        receiver.deliveries().to_domain("paused.test") == 5
    });
    assert_eq!(receiver.deliveries().to_domain_from("paused.test", A), 5);
    assert_eq!(a.master_pid(), pid, "postfix master restarted");
    a.wait_queue_empty(Duration::from_secs(30));
}
