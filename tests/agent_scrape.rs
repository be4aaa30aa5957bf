//! Prometheus scraping with the agent's credential still works (issue 15):
//! a real Prometheus scrapes a real agent (real Postfix, running what the
//! renderer made of a pool, so with `--auth-token-file`). The job that
//! presents the token (`authorization.credentials_file`, the token file as
//! the pool's Secret mounts it) is up and the agent's delivery counter is
//! queryable after mail flowed; the same target scraped without it is down
//! with the agent's 401 in `lastError`, and so is a job with a wrong token.

#[allow(dead_code)]
mod agent_support;

use std::time::Duration;

use agent_support::*;
use sendfleet_lab::monitoring::Prometheus;
use serde_json::json;

const A: &str = "198.51.100.61";
const RCV: &str = "203.0.113.61";
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn prometheus_scrapes_the_agent_with_its_token_and_is_refused_without() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("dest.test", RCV), ("client.test", RCV)]);
    let rcv = receiver("scrape-rcv", RCV, &["dest.test"], &[]);
    let pool = Pool::named("scrape").in_ns("test").fast_retries().with_ip("a", A);
    let a = fleet(pool.build(), &dns).start("a");
    let token_file = a.agent_token_file();
    assert!(
        a.pod.args.iter().any(|x| x == &format!("--auth-token-file={}", token_file.display())),
        "the rendered pod passes the token file: {:?}",
        a.pod.args
    );
    let target = format!("{A}:{}", a.agent_port);
    let wrong = test_dir("scrape-wrong-token").join("token");
    std::fs::write(&wrong, "not-the-token-0123456789abcdef0123456789abcdef").unwrap();

    let prom = Prometheus::builder()
        .scrape(json!({
            "job_name": "agent",
            "authorization": {"type": "Bearer", "credentials_file": token_file},
            "static_configs": [{"targets": [&target]}],
        }))
        .scrape(json!({
            "job_name": "agent-wrong-token",
            "authorization": {"credentials_file": wrong},
            "static_configs": [{"targets": [&target]}],
        }))
        .static_job("agent-anonymous", &[&target])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));

    a.inject_distinct("app@client.test", "user@dest.test", 3, 1);
    a.wait_for(WAIT, "3 deliveries", |s| s.counters.since_start.sent >= 3);
    wait_until("the receiver to accept 3", WAIT, || rcv.deliveries().accepted.len() == 3);

    let up = prom.wait_target("agent", "up", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));
    assert_eq!(up.last_error, "", "{up:?}");
    let sent = prom
        .wait_query(r#"sum(sendfleet_agent_deliveries_total{job="agent",status="sent"}) >= 3"#, WAIT)
        .unwrap_or_else(|e| panic!("{e}\nagent metrics:\n{}", a.metrics()));
    assert!(sent[0].value >= 3.0, "{sent:?}");
    assert_eq!(prom.query(r#"up{job="agent"}"#).unwrap()[0].value, 1.0);

    for job in ["agent-anonymous", "agent-wrong-token"] {
        let down = prom.wait_target(job, "down", WAIT).unwrap();
        assert!(down.last_error.contains("401"), "{job}: {down:?}");
        assert_eq!(prom.query(&format!("up{{job=\"{job}\"}}")).unwrap()[0].value, 0.0, "{job}");
        let leaked = prom.query(&format!("sendfleet_agent_deliveries_total{{job=\"{job}\"}}")).unwrap();
        assert!(leaked.is_empty(), "{job} got the agent's metrics: {leaked:?}");
    }
}
