//! The shipped alert rules on real parts: a real Prometheus loads
//! charts/sendfleet/files/sendfleet.rules.yaml (only its `for:` shortened,
//! in the loaded copy) and scrapes a real agent (real Postfix) the way the
//! chart's ServiceMonitor does (bearer token, pool/IP target labels); a real
//! Alertmanager posts to the test's webhook (the chat channel). A provider
//! that starts refusing the IP's mail makes `SendfleetBouncedRatioJump`
//! fire and reach the webhook naming pool and IP; once the provider takes
//! mail again and mail flows, it resolves.

#[allow(dead_code)]
mod agent_support;

use std::time::Duration;

use agent_support::*;
use sendfleet_lab::monitoring::{agent_job, shipped_rules, Alertmanager, Prometheus, Webhook};

const A: &str = "198.51.100.71";
const RCV: &str = "203.0.113.71";
const WAIT: Duration = Duration::from_secs(120);
const ALERT: &str = "SendfleetBouncedRatioJump";

#[test]
fn a_provider_refusing_the_ip_raises_the_bounce_alert_naming_pool_and_ip_and_it_resolves() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("dest.test", RCV), ("client.test", RCV)]);
    // Bounce notices go back to client.test: the receiver takes them.
    let rcv = receiver("alerts-rcv", RCV, &["dest.test", "client.test"], &[("dest.test", "554 5.7.1 blocked")]);
    let pool = Pool::named("alerts").in_ns("test").fast_retries().with_ip("a", A);
    let a = fleet(pool.build(), &dns).start("a");

    let hook = Webhook::start().unwrap_or_else(|e| panic!("{e}"));
    let am = Alertmanager::start(&hook).unwrap_or_else(|e| panic!("{e}"));
    let target = format!("{A}:{}", a.agent_port);
    let prom = Prometheus::builder()
        .scrape(agent_job("sendfleet-agents", &target, &a.agent_token_file(), "test/alerts", "a"))
        .rules("sendfleet.rules.yaml", &shipped_rules("2s").unwrap())
        .alertmanager(&am)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    prom.wait_target("sendfleet-agents", "up", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));

    // The incident: every recipient at dest.test refused. Its first bounces
    // create the series (Prometheus' increase() counts from a series' first
    // sample, as with any counter that appears mid-incident), then the rest.
    a.inject_distinct("app@client.test", "user@dest.test", 2, 1);
    prom.wait_query(r#"sendfleet_agent_deliveries_total{status="bounced"}"#, WAIT).unwrap();
    prom.wait_query(r#"sendfleet_agent_deliveries_total{status="sent"}"#, WAIT).unwrap();
    a.inject_distinct("app@client.test", "user@dest.test", 40, 4);
    a.wait_for(WAIT, "42 bounces", |s| s.counters.since_start.bounced >= 42);
    let fired = hook.wait_alert(ALERT, "firing", WAIT).unwrap_or_else(|e| {
        panic!("{e}\nrules: {:?}\nagent metrics:\n{}", prom.query("sendfleet:delivery_ratio:1h"), a.metrics())
    });
    eprintln!("webhook got: {fired:#?}");
    assert_eq!(fired.labels.get("pool").map(String::as_str), Some("alerts"), "{fired:?}");
    assert_eq!(fired.labels.get("pool_namespace").map(String::as_str), Some("test"), "{fired:?}");
    assert_eq!(fired.labels.get("egress_ip").map(String::as_str), Some("a"), "{fired:?}");
    assert_eq!(fired.labels.get("rule").map(String::as_str), Some("none"), "{fired:?}");
    let description = &fired.annotations["description"];
    assert!(description.starts_with("Pool test/alerts, IP a: "), "{description}");
    assert!(fired.annotations["summary"].contains("test/alerts IP a"), "{:?}", fired.annotations);
    // Nothing else is wrong but the missing operator (this test runs none):
    // the queue, agent and exclusion alerts stay quiet.
    let others: Vec<_> = prom
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|x| ![ALERT, "SendfleetOperatorDown"].contains(&x.labels["alertname"].as_str()))
        .collect();
    assert!(others.is_empty(), "{others:?}");

    // The incident ends: the provider takes mail again and mail flows; the
    // hour's bounce ratio falls under the threshold and the alert resolves.
    rcv.set_access(&[]).unwrap();
    a.inject_distinct("app@client.test", "user@dest.test", 200, 4);
    wait_until("the receiver to accept 200 for dest.test", WAIT, || rcv.deliveries().to_domain("dest.test") >= 200);
    a.wait_for(WAIT, "200 delivered", |s| s.counters.since_start.sent >= 242);
    let resolved = hook
        .wait_alert(ALERT, "resolved", WAIT)
        .unwrap_or_else(|e| panic!("{e}\nratio: {:?}", prom.query("sendfleet:delivery_ratio:1h")));
    assert_eq!(resolved.labels.get("egress_ip").map(String::as_str), Some("a"));
}
