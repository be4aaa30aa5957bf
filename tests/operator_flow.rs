//! The pool says so before mail is late (issue 14, incident 2, under the
//! operator): with a real API server, the operator as a process under its
//! RBAC, and a real agent supervising real Postfix, a DomainPolicy throttle
//! of 12 messages a minute under about 60 a minute of inflow makes the
//! SendingPool's `BacklogForecast` condition True, naming the domain, its
//! inflow and outflow per minute, the growth and when its oldest mail
//! reaches warnAge — while `QueueBacklog` still says nothing is that old.
//! The instance's row carries the domain's flow and the delivery latency
//! p50/p99.
//!
//! As in `operator_adaptive.rs`, the pod is an API object marked Running and
//! the agent answers on the instance's egress address (hostNetwork).

#[allow(dead_code)]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::*;
use operator_support::*;

const A: &str = "198.51.100.51";
const PROVIDER: &str = "203.0.113.51";
const T: Duration = Duration::from_secs(120);

fn condition(pool: &serde_json::Value, type_: &str) -> Option<serde_json::Value> {
    pool["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

#[test]
fn a_growing_backlog_is_forecast_in_the_pool_condition_before_any_mail_is_warn_age_old() {
    require_postfix();
    let cp = control_plane(false);
    let _op = Operator::start_with(
        cp,
        "flow",
        &["--no-leader-election", "--agent-poll-interval", "2s", "--resync-interval", "5s"],
    );
    let ns = cp.namespace("flow").unwrap();
    let n = ns.name();

    let dns = Dns::start("127.0.0.53", &[("slow.test", PROVIDER), ("fast.test", PROVIDER), ("client.test", PROVIDER)]);
    let rcv = receiver("flow-rcv", PROVIDER, &["slow.test", "fast.test"], &[]);
    let policy = Policy::named("slow").in_ns(n).for_domains(&["slow.test"]).spec("throttle: {messagesPerMinute: 12}");
    let pool = Pool::named("bulk")
        .in_ns(n)
        .host_network()
        .with_ip("a", A)
        .fast_retries()
        .spec("backlog: {warnAge: 10m, criticalAge: 1h}");
    let a = fleet(pool.build(), &dns).policy(policy.build()).start("a");
    cp.apply(&format!("{}---\n{}", policy.yaml(), pool.yaml())).unwrap();
    mount_pool_token(cp, n, "bulk", &[&a]);
    running_pod(cp, n, "bulk", "a");

    // Nothing queued: the forecast is observed and says so.
    let p = wait_for("BacklogForecast observed", T, || {
        let p = get_json(cp, &["sendingpool", "bulk", "-n", n])?;
        (condition(&p, "BacklogForecast")?["reason"] == "DrainsInTime").then_some(p)
    });
    let c = condition(&p, "BacklogForecast").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["message"].as_str()),
        (Some("False"), Some("no domain's backlog is forecast to reach warnAge 10m"))
    );

    // Some unthrottled mail, then about 60 a minute into a domain that takes 12.
    a.inject_distinct("app@client.test", "user@fast.test", 20, 2);
    a.wait_for(T, "20 fast.test deliveries", |s| s.counters.since_start.sent >= 20);
    let feeder = Feeder::start(&a, "user@slow.test", 2, Duration::from_secs(2));
    let p = wait_for("BacklogForecast=True", T, || {
        let p = get_json(cp, &["sendingpool", "bulk", "-n", n])?;
        (condition(&p, "BacklogForecast")?["status"] == "True").then_some(p)
    });
    feeder.stop();

    let c = condition(&p, "BacklogForecast").unwrap();
    let message = c["message"].as_str().unwrap();
    println!("BacklogForecast={} reason={} message={message}", c["status"], c["reason"]);
    assert_eq!(c["reason"], "BacklogGrowing", "{c}");
    // "slow.test: inflow I/min, outflow O/min (+G/min), Q queued, not
    // draining; oldest X, reaches warnAge 10m in Y (on a)"
    assert!(message.starts_with("slow.test: inflow "), "{message}");
    assert!(message.contains("/min (+") && message.contains("not draining"), "{message}");
    assert!(message.contains("reaches warnAge 10m in ") && message.ends_with("(on a)"), "{message}");
    assert!(!message.contains("fast.test"), "{message}");
    let per_minute = |label: &str| -> u64 {
        let rest = message.split(label).nth(1).unwrap();
        rest.split('/').next().unwrap().trim().parse().unwrap()
    };
    let (inflow, outflow) = (per_minute("inflow "), per_minute("outflow "));
    assert!(inflow > outflow + 10 && outflow <= 24, "inflow {inflow}/min, outflow {outflow}/min: {message}");
    // Before any message is warnAge old: the forecast, not the report.
    let backlog = condition(&p, "QueueBacklog").unwrap();
    assert_eq!(
        (backlog["status"].as_str(), backlog["reason"].as_str()),
        (Some("False"), Some("NoBacklog")),
        "{backlog}"
    );

    // The instance's row: the domain's flow, and the delivery latency.
    let row = p["status"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == "a").unwrap().clone();
    let flow = row["queue"]["flows"].as_array().unwrap().iter().find(|f| f["domain"] == "slow.test").unwrap().clone();
    assert_eq!(flow["atRisk"], true, "{flow}");
    assert!(flow["queued"].as_u64().unwrap() > 0 && flow["drainEtaSeconds"].is_null(), "{flow}");
    assert!(flow["warnInSeconds"].as_u64().unwrap() > 480, "{flow}");
    let latency = &row["deliveryLatency"];
    println!(
        "delivery latency of a: p50 {} ms, p99 {} ms over {} recipients",
        latency["p50Milliseconds"], latency["p99Milliseconds"], latency["samples"]
    );
    assert!(latency["samples"].as_u64().unwrap() >= 20, "{latency}");
    assert!(latency["p50Milliseconds"].as_u64().unwrap() <= latency["p99Milliseconds"].as_u64().unwrap(), "{latency}");
    assert!(rcv.log().matches("@fast.test>").count() >= 20);
    // Domains yes, addresses never.
    assert!(!p.to_string().contains("user@"), "an address reached the pool status");
}
