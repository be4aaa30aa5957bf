//! Warm-up on real Postfix: a new IP's daily cap and a provider's share of
//! it hold exactly while the rest of the pool carries the traffic, and a
//! pause rule holds the step on a deferral spike while a healthy IP moves
//! on. Days pass through the agents' test clock (`--test-clock-file`), not
//! by sleeping.
//!
//! Counts are taken where the mail arrives: the receiver's log, by the
//! client address that handed each message over.

#[allow(dead_code)]
mod agent_support;

use std::collections::BTreeSet;
use std::time::Duration;

use agent_support::*;
use sendfleet::core::contract::AgentStatus;

const DAY: i64 = 86_400;

/// The "new-ips" plan: 50, 200, 500 a day, days rolling in Tokyo, 30% of a
/// day's cap to provider.test.
fn plan() -> Plan {
    Plan::named("new-ips")
        .in_ns("test")
        .time_zone("Asia/Tokyo")
        .step(1, 50)
        .step(2, 200)
        .step(3, 500)
        .share(&["provider.test"], 30)
}

/// A pool of `members` (name, address) following `plan`.
fn warming_fleet(dns: &Dns, pool: &str, members: &[(&str, &str)], plan: Plan) -> Fleet {
    let mut p = Pool::named(pool).in_ns("test").fast_retries().warmup("new-ips");
    for (name, addr) in members {
        p = p.with_ip(name, addr);
    }
    fleet(p.build(), dns).plan(plan.build())
}

fn lookups(metrics: &str, decision: &str, reason: &str) -> u64 {
    let head = format!("sendfleet_agent_policy_lookups_total{{decision=\"{decision}\",reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(head.as_str())).map_or(0, |n| n.trim().parse().unwrap())
}

fn gauge(metrics: &str, name: &str) -> i64 {
    let head = format!("sendfleet_agent_{name} ");
    metrics.lines().find_map(|l| l.strip_prefix(head.as_str())).map(|n| n.trim().parse().unwrap()).unwrap()
}

fn warmup(s: &AgentStatus) -> (u32, Option<u64>, Option<String>) {
    let w = s.adaptive.warmup.as_ref().expect("adaptive.warmup reported");
    (w.step, w.daily_cap, w.held.clone())
}

/// A, B warm, C new (step 1, cap 50) with a 30% share for provider.test.
/// All 1,000 messages are injected into C, the new IP: that is where the cap
/// must bite (mail spread over the pool would test C on a third of it).
#[test]
fn a_new_ip_sends_exactly_its_cap_and_its_providers_share_the_pool_carries_the_rest() {
    require_postfix();
    const A: (&str, &str) = ("warm-a", "198.51.100.41");
    const B: (&str, &str) = ("warm-b", "198.51.100.42");
    const C: (&str, &str) = ("new-c", "198.51.100.43");
    const RCV: &str = "203.0.113.41";
    let dns = Dns::start("127.0.0.53", &[("provider.test", RCV), ("other.test", RCV), ("client.test", RCV)]);
    let receiver = receiver("warm-rcv", RCV, &["provider.test", "other.test"], &[]);
    let fleet = warming_fleet(&dns, "warm", &[A, B, C], plan());
    let a = fleet.start(A.0);
    let b = fleet.start(B.0);

    // A and B reach warm honestly: they start on step 1 and live through
    // the plan's three capped days.
    for x in [&a, &b] {
        assert_eq!(warmup(&x.status()), (1, Some(50), None));
        x.set_clock_offset(3 * DAY);
    }
    for x in [&a, &b] {
        let s = x.wait_for(Duration::from_secs(30), "step 4 (warm)", |s| warmup(s).0 == 4);
        assert_eq!(warmup(&s), (4, None, None), "past the plan: no cap");
    }

    let c = fleet.start(C.0);
    let s = c.status();
    assert_eq!(warmup(&s), (1, Some(50), None));
    let w = s.adaptive.warmup.as_ref().unwrap();
    // The next step is due at the next midnight in Tokyo.
    let next = w.next_step_at.expect("next step time");
    assert!(next > s.now && next <= s.now + DAY as u64, "{next} vs now {}", s.now);
    assert_eq!((next + 9 * 3600) % DAY as u64, 0, "midnight in Asia/Tokyo (UTC+9): {next}");

    // -N gives every recipient a distinct address: Postfix's queue manager
    // caches the last resolve for 30 s, so a run of mail to one identical
    // address would reach the agent once (see docs/AGENT.md).
    // Provider mail first, all of it resolved and delivered, then the rest:
    // C then has exactly 15 provider slots and 35 others to give.
    c.inject_distinct("app@client.test", "user@provider.test", 300, 5);
    wait_until("300 provider messages delivered", Duration::from_secs(120), || {
        receiver.deliveries().to_domain("provider.test") == 300
    });
    c.inject_distinct("app@client.test", "user@other.test", 700, 5);
    wait_until("all 1,000 messages delivered", Duration::from_secs(180), || {
        receiver.deliveries().accepted.len() >= 1000
    });
    // Nothing more trickles in (no duplicate sends).
    std::thread::sleep(Duration::from_secs(3));
    let got = receiver.deliveries();
    assert_eq!(got.accepted.len(), 1000, "delivered exactly once each");
    let distinct: BTreeSet<&str> = got.accepted.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(distinct.len(), 1000, "a recipient arrived twice");
    let from = |addr: &str| got.accepted.iter().filter(|(_, c)| c == addr).count();
    assert_eq!(from(C.1), 50, "the new IP sends exactly its cap");
    assert_eq!(got.to_domain_from("provider.test", C.1), 15, "floor(50 * 30%) to the provider");
    assert_eq!(got.to_domain_from("other.test", C.1), 35);
    assert_eq!(from(A.1) + from(B.1), 950, "the warm IPs carry the rest");
    assert!(from(A.1) > 0 && from(B.1) > 0, "both peers used: {} / {}", from(A.1), from(B.1));

    let s = c.wait_for(Duration::from_secs(30), "C's reservations all released", |s| {
        s.adaptive.warmup.as_ref().is_some_and(|w| w.reserved == 0 && w.sent_today == 50)
    });
    assert_eq!(warmup(&s), (1, Some(50), None));
    assert_eq!(s.counters.sent_today, 50);
    c.wait_queue_empty(Duration::from_secs(30));

    // How many lookups per recipient reach the agent: exactly one (the
    // queue manager's resolve; `*` is asked only after a NOTFOUND).
    let m = c.metrics();
    let normal = lookups(&m, "NotFound", "Normal");
    let cap = lookups(&m, "Peer", "DailyCap");
    let share = lookups(&m, "Peer", "ProviderShare");
    eprintln!("C lookups: NotFound/Normal {normal}, Peer/DailyCap {cap}, Peer/ProviderShare {share}");
    assert_eq!(normal, 50, "one \"send from here\" per message C sent");
    assert_eq!(share, 285);
    assert_eq!(cap, 665);
    assert_eq!(normal + cap + share, 1000, "one lookup per recipient");
    // Gauges are published with the counters, every few seconds.
    wait_until("C's gauges", Duration::from_secs(15), || {
        let m = c.metrics();
        gauge(&m, "warmup_step") == 1 && gauge(&m, "warmup_daily_cap") == 50 && gauge(&m, "warmup_reserved") == 0
    });
    assert_eq!(gauge(&a.metrics(), "warmup_daily_cap"), -1, "warm: no cap");
    assert_eq!(gauge(&a.metrics(), "warmup_step"), 4);
    // The ledger is on disk (the queue volume in production).
    let ledger = std::fs::read_to_string(c.state_dir().join("warmup.json")).unwrap();
    assert!(ledger.contains("\"step\":1") && ledger.contains("\"plan\":\"new-ips\""), "{ledger}");
}

/// Pause rule: deferral rate above 20% over 1 h (at least 10 attempts)
/// holds the step; an IP without the spike advances (the control).
#[test]
fn a_deferral_spike_holds_the_step_and_a_healthy_ip_advances() {
    require_postfix();
    const C: (&str, &str) = ("spiky-c", "198.51.100.53");
    const D: (&str, &str) = ("healthy-d", "198.51.100.54");
    const RCV: &str = "203.0.113.42";
    let dns = Dns::start("127.0.0.54", &[("defer.test", RCV), ("ok.test", RCV), ("client.test", RCV)]);
    let receiver = receiver(
        "pause-rcv",
        RCV,
        &["defer.test", "ok.test"],
        &[("defer.test", "450 4.7.1 too much mail from your IP, try again later")],
    );
    let fleet = warming_fleet(&dns, "pause", &[C, D], plan().pause(20, 5, "1h", 10));
    let c = fleet.start(C.0);
    let mut d = fleet.start(D.0);

    c.inject_distinct("app@client.test", "user@ok.test", 5, 5);
    c.inject_distinct("app@client.test", "user@defer.test", 20, 5);
    d.inject_distinct("app@client.test", "user@ok.test", 10, 5);
    wait_until("the healthy mail delivered", Duration::from_secs(60), || {
        receiver.deliveries().to_domain("ok.test") == 15
    });
    let s = c.wait_for(Duration::from_secs(60), "C's pause rule fires", |s| warmup(s).2.is_some());
    let reason = warmup(&s).2.unwrap();
    assert!(reason.starts_with("deferral rate ") && reason.contains("> 20% over 1h ("), "{reason}");
    assert_eq!(warmup(&s).0, 1);
    assert_eq!(receiver.deliveries().to_domain("defer.test"), 0);
    // Deferred mail retried is looked up again (its deferral released its
    // reservation): more "send from here" answers than messages.
    wait_until("deferred mail looked up again on retry", Duration::from_secs(30), || {
        lookups(&c.metrics(), "NotFound", "Normal") > 25
    });
    eprintln!(
        "C lookups NotFound/Normal after retries: {} for 25 messages",
        lookups(&c.metrics(), "NotFound", "Normal")
    );
    assert_eq!(warmup(&d.status()), (1, Some(50), None));

    // The limit of per-lookup caps, measured: ten messages with the same
    // sender and recipient in a row reach the agent as fewer lookups,
    // because qmgr reuses its last resolve for 30 s (resolve_clnt.c).
    let before = lookups(&d.metrics(), "NotFound", "Normal");
    d.inject("app@client.test", "same@ok.test", 10, 1);
    wait_until("the repeated mail delivered", Duration::from_secs(60), || {
        receiver.deliveries().to_address("same@ok.test") == 10
    });
    let repeated = lookups(&d.metrics(), "NotFound", "Normal") - before;
    eprintln!("D lookups for 10 identical messages: {repeated}");
    assert!(repeated < 10, "{repeated} lookups: Postfix no longer caches the last resolve? update docs/AGENT.md");

    // One day later: C stays on step 1 and says why; D moves to step 2.
    c.set_clock_offset(DAY);
    d.set_clock_offset(DAY);
    let sd = d.wait_for(Duration::from_secs(30), "D on step 2", |s| warmup(s).0 == 2);
    assert_eq!(warmup(&sd), (2, Some(200), None));
    assert_eq!(sd.counters.sent_today, 0, "a new day");
    let sc = c.wait_for(Duration::from_secs(30), "C's day rolled", |s| s.counters.sent_today == 0);
    let (step, cap, held) = warmup(&sc);
    assert_eq!((step, cap), (1, Some(50)), "held on step 1");
    assert!(held.as_deref().is_some_and(|h| h.starts_with("deferral rate ")), "{held:?}");
    // The ledger on disk follows within a save period (every few seconds).
    let ledger_path = c.state_dir().join("warmup.json");
    wait_until("C's ledger saved with the hold", Duration::from_secs(15), || {
        let ledger = std::fs::read_to_string(&ledger_path).unwrap_or_default();
        ledger.contains("\"step\":1") && ledger.contains("deferral rate")
    });
    // Gauges are published with the counters, every few seconds.
    wait_until("D's cap gauge at 200", Duration::from_secs(15), || gauge(&d.metrics(), "warmup_daily_cap") == 200);

    // The ledger survives a restart of the agent (it is on the queue volume
    // in production): a fresh start would be step 1 again.
    d.restart();
    assert_eq!(warmup(&d.status()), (2, Some(200), None));
}
