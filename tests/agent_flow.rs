//! The backlog forecast and the delivery latency on real Postfix (issue 14,
//! incidents 2 and 6, at the agent).
//!
//! One instance runs what the renderer made of a pool (warnAge 10m) and a
//! DomainPolicy throttling `slow.test` to 12 messages a minute — a provider
//! that accepts N/min, made honestly: the rendered throttle transport. Mail
//! to `slow.test` is submitted at about 60 a minute; mail to `fast.test`
//! goes out unthrottled. The agent's /status and /metrics must forecast
//! `slow.test`'s backlog — inflow over outflow, not draining — long before
//! anything is 10 minutes old, never `fast.test`'s, and report the latency
//! of what it delivered.

#[allow(dead_code)]
mod agent_support;

use std::time::{Duration, Instant};

use agent_support::*;

const A: &str = "198.51.100.41";
const RCV: &str = "203.0.113.41";

#[test]
fn a_throttled_domain_is_forecast_before_any_mail_is_old_and_latency_is_reported() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("slow.test", RCV), ("fast.test", RCV), ("client.test", RCV)]);
    let rcv = receiver("flow-rcv", RCV, &["slow.test", "fast.test"], &[]);
    let pool = Pool::named("flow")
        .in_ns("test")
        .fast_retries()
        .with_ip("a", A)
        .spec("backlog: {warnAge: 10m, criticalAge: 1h}");
    let slow =
        Policy::named("slow").in_ns("test").for_domains(&["slow.test"]).spec("throttle: {messagesPerMinute: 12}");
    let a = fleet(pool.build(), &dns).policy(slow.build()).start("a");
    assert!(a.pod.files["main.cf"].contains("dp-slow_destination_rate_delay = 5s"));

    // Unthrottled mail first: its latency is what the window reports.
    a.inject_distinct("app@client.test", "user@fast.test", 20, 2);
    a.wait_for(Duration::from_secs(60), "20 fast.test deliveries", |s| s.counters.since_start.sent >= 20);

    // About 60 a minute into a domain that takes 12.
    let feeder = Feeder::start(&a, "user@slow.test", 2, Duration::from_secs(2));
    let started = Instant::now();
    let s = a.wait_for(Duration::from_secs(90), "slow.test forecast at risk", |s| {
        s.queue.flows.iter().any(|f| f.domain == "slow.test" && f.at_risk)
    });
    let waited = started.elapsed();
    let metrics = a.metrics();
    feeder.stop();

    let f = s.queue.flows.iter().find(|f| f.domain == "slow.test").unwrap();
    println!(
        "forecast after {waited:?}: slow.test inflow {:.1}/min, outflow {:.1}/min, growth {:+.1}/min, {} queued, drain {:?}, oldest {} s, warnAge in {} s",
        f.inflow_per_minute,
        f.outflow_per_minute,
        f.growth_per_minute,
        f.queued,
        f.drain_eta_seconds,
        f.oldest_age_seconds,
        f.warn_in_seconds
    );
    // A forecast, not a report: nothing is near the warn age yet.
    assert_eq!(s.queue.older_than_warn, 0);
    assert_eq!(s.queue.warn_seconds, 600);
    assert!(f.oldest_age_seconds < 120 && f.warn_in_seconds > 480, "{f:?}");
    assert_eq!(f.rule.as_deref(), Some("slow"));
    assert!(f.queued > 0);
    assert!(f.inflow_per_minute > f.outflow_per_minute + 10.0, "{f:?}");
    assert!(f.outflow_per_minute <= 24.0, "the throttle allows 12/min: {f:?}");
    assert!(f.growth_per_minute > 10.0 && f.drain_eta_seconds.is_none(), "{f:?}");
    assert!(
        s.queue.flows.iter().all(|f| f.domain == "slow.test" || !f.at_risk),
        "only the throttled domain is at risk: {:?}",
        s.queue.flows
    );
    for want in [
        "sendfleet_agent_backlog_at_risk{domain=\"slow.test\"} 1",
        "sendfleet_agent_backlog_recipients{domain=\"slow.test\"} ",
        "sendfleet_agent_backlog_inflow_recipients_per_second{domain=\"slow.test\"} ",
        "sendfleet_agent_backlog_outflow_recipients_per_second{domain=\"slow.test\"} ",
    ] {
        assert!(metrics.contains(want), "missing {want}\n{metrics}");
    }

    // Latency of the recipients delivered in the window, from delay=.
    let l = &s.latency;
    println!("delivery latency: p50 {:?} s, p99 {:?} s over {} recipients", l.p50_seconds, l.p99_seconds, l.samples);
    assert!(l.samples >= 20, "{l:?}");
    let (p50, p99) = (l.p50_seconds.unwrap(), l.p99_seconds.unwrap());
    assert!(p50 <= p99 && p99 < 600.0, "{l:?}");
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sendfleet_agent_delivery_latency_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("latency histogram exposed");
    assert!(count >= l.samples, "{count} < {}", l.samples);
    // The receiver got what the agent counted as delivered.
    assert!(rcv.log().matches("@fast.test>").count() >= 20);

    // Domains yes, addresses never.
    let raw = a.status_raw();
    assert!(!raw.contains("user@") && !metrics.contains("user@"), "an address left the instance");
}
