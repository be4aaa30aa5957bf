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
use sendfleet::core::policy::{WarmupPause, WarmupPolicy, WarmupSchedule, WarmupShare, WarmupStepCap};

const DAY: i64 = 86_400;

fn plan(pause: Option<WarmupPause>) -> WarmupPolicy {
    WarmupPolicy {
        plan: "new-ips".into(),
        time_zone: "Asia/Tokyo".into(),
        shares: vec![WarmupShare { patterns: vec!["provider.test".into()], max_percent: 30 }],
        schedule: WarmupSchedule {
            steps: vec![
                WarmupStepCap { day: 1, daily_cap: 50 },
                WarmupStepCap { day: 2, daily_cap: 200 },
                WarmupStepCap { day: 3, daily_cap: 500 },
            ],
            ramp: None,
        },
        pause,
    }
}

/// One pool of `members` (name, address); `me` is the instance configured.
fn config(me: (&str, &str), members: &[(&str, &str)], plan: &WarmupPolicy) -> InstanceConfig {
    let mut cfg = InstanceConfig::new(me.0, me.1);
    cfg.peers = members.iter().filter(|(n, _)| *n != me.0).map(|(_, a)| a.to_string()).collect();
    cfg.policy.instances = members.iter().map(|(n, a)| instance(n, a)).collect();
    cfg.policy.warmup = Some(plan.clone());
    cfg
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
    const A: (&str, &str) = ("warm-a", "127.0.41.1");
    const B: (&str, &str) = ("warm-b", "127.0.41.2");
    const C: (&str, &str) = ("new-c", "127.0.41.3");
    const RCV: &str = "127.0.41.100";
    let members = [A, B, C];
    let receiver = Receiver::start("warm-rcv", RCV, &["provider.test", "other.test"], &[]);
    let hosts = [("provider.test", RCV), ("other.test", RCV)];
    let p = plan(None);
    let a = Agent::start(&config(A, &members, &p), &hosts);
    let b = Agent::start(&config(B, &members, &p), &hosts);

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

    let c = Agent::start(&config(C, &members, &p), &hosts);
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
    inject_n(C.1, "app@client.test", "user@provider.test", 300);
    eventually(Duration::from_secs(120), "300 provider messages delivered", || {
        receiver.deliveries().to_domain("provider.test") == 300
    });
    inject_n(C.1, "app@client.test", "user@other.test", 700);
    eventually(Duration::from_secs(180), "all 1,000 messages delivered", || {
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
    eventually(Duration::from_secs(15), "C's gauges", || {
        let m = c.metrics();
        gauge(&m, "warmup_step") == 1 && gauge(&m, "warmup_daily_cap") == 50 && gauge(&m, "warmup_reserved") == 0
    });
    assert_eq!(gauge(&a.metrics(), "warmup_daily_cap"), -1, "warm: no cap");
    assert_eq!(gauge(&a.metrics(), "warmup_step"), 4);
    // The ledger is on disk (the queue volume in production).
    let ledger = std::fs::read_to_string(c.base.join("state/warmup.json")).unwrap();
    assert!(ledger.contains("\"step\":1") && ledger.contains("\"plan\":\"new-ips\""), "{ledger}");
}

/// Pause rule: deferral rate above 20% over 1 h (at least 10 attempts)
/// holds the step; an IP without the spike advances (the control).
#[test]
fn a_deferral_spike_holds_the_step_and_a_healthy_ip_advances() {
    require_postfix();
    const C: (&str, &str) = ("spiky-c", "127.0.42.3");
    const D: (&str, &str) = ("healthy-d", "127.0.42.4");
    const RCV: &str = "127.0.42.100";
    let members = [C, D];
    let receiver = Receiver::start(
        "pause-rcv",
        RCV,
        &["defer.test", "ok.test"],
        &[("defer.test", "450 4.7.1 too much mail from your IP, try again later")],
    );
    let hosts = [("defer.test", RCV), ("ok.test", RCV)];
    let p = plan(Some(WarmupPause {
        max_deferral_percent: Some(20),
        max_bounce_percent: Some(5),
        window_seconds: 3600,
        min_messages: 10,
    }));
    let c = Agent::start(&config(C, &members, &p), &hosts);
    let mut d = Agent::start(&config(D, &members, &p), &hosts);

    inject_n(C.1, "app@client.test", "user@ok.test", 5);
    inject_n(C.1, "app@client.test", "user@defer.test", 20);
    inject_n(D.1, "app@client.test", "user@ok.test", 10);
    eventually(Duration::from_secs(60), "the healthy mail delivered", || {
        receiver.deliveries().to_domain("ok.test") == 15
    });
    let s = c.wait_for(Duration::from_secs(60), "C's pause rule fires", |s| warmup(s).2.is_some());
    let reason = warmup(&s).2.unwrap();
    assert!(reason.starts_with("deferral rate ") && reason.contains("> 20% over 1h ("), "{reason}");
    assert_eq!(warmup(&s).0, 1);
    assert_eq!(receiver.deliveries().to_domain("defer.test"), 0);
    // Deferred mail retried is looked up again (its deferral released its
    // reservation): more "send from here" answers than messages.
    eventually(Duration::from_secs(30), "deferred mail looked up again on retry", || {
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
    inject(D.1, "app@client.test", "same@ok.test", 10, 1);
    eventually(Duration::from_secs(60), "the repeated mail delivered", || {
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
    let ledger_path = c.base.join("state/warmup.json");
    eventually(Duration::from_secs(15), "C's ledger saved with the hold", || {
        let ledger = std::fs::read_to_string(&ledger_path).unwrap_or_default();
        ledger.contains("\"step\":1") && ledger.contains("deferral rate")
    });
    // Gauges are published with the counters, every few seconds.
    eventually(Duration::from_secs(15), "D's cap gauge at 200", || gauge(&d.metrics(), "warmup_daily_cap") == 200);

    // The ledger survives a restart of the agent (it is on the queue volume
    // in production): a fresh start would be step 1 again.
    d.restart();
    assert_eq!(warmup(&d.status()), (2, Some(200), None));
}

/// `count` messages to distinct recipients (`smtp-source -N`).
fn inject_n(addr: &str, from: &str, rcpt: &str, count: u32) {
    let out = std::process::Command::new("smtp-source")
        .args(["-c", "-N", "-m", &count.to_string(), "-s", "5", "-f", from, "-t", rcpt])
        .arg(format!("{addr}:25"))
        .output()
        .expect("running smtp-source");
    assert!(out.status.success(), "smtp-source to {rcpt}: {}", String::from_utf8_lossy(&out.stderr));
}
