//! The lab's monitoring pieces against the real binaries built from their
//! Go modules: Prometheus scrapes targets and evaluates a rules file, its
//! alert reaches Alertmanager, Alertmanager posts it (and its resolution)
//! to the test's webhook with the rule's labels; promtool accepts a good
//! rules file and refuses a broken one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use sendfleet_lab::monitoring::{check_rules, Alertmanager, Prometheus, Webhook};
use sendfleet_lab::process::free_port;

const WAIT: Duration = Duration::from_secs(60);

const RULES: &str = r#"groups:
  - name: lab
    rules:
      - alert: LabTargetDown
        expr: up{job="late"} == 0
        labels:
          severity: warning
          pool: lab-pool
        annotations:
          description: "{{ $labels.instance }} of pool lab-pool does not answer its scrape"
"#;

/// A minimal exposition endpoint: every request gets `body` as metrics.
fn serve_metrics(listener: TcpListener, body: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(&conn);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                &conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[test]
fn prometheus_scrapes_and_its_alert_reaches_the_webhook_and_resolves() {
    let hook = Webhook::start().unwrap();
    let am = Alertmanager::start(&hook).unwrap();
    let late = free_port().unwrap();
    let prom = Prometheus::builder()
        .static_job("alertmanager", &[&format!("127.0.0.1:{}", am.port())])
        .static_job("late", &[&format!("127.0.0.1:{late}")])
        .rules("lab.yml", RULES)
        .alertmanager(&am)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let info = prom.api("/api/v1/status/buildinfo").unwrap();
    assert_eq!(info["version"], "3.16.0", "{info}");

    // A real target is scraped: Alertmanager's own metrics.
    let up = prom.wait_target("alertmanager", "up", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));
    assert_eq!(up.last_error, "");
    let build = prom.wait_query("alertmanager_build_info", WAIT).unwrap();
    assert_eq!(build[0].labels.get("version").map(String::as_str), Some("0.35.0"), "{build:?}");
    assert_eq!(prom.query(r#"up{job="alertmanager"}"#).unwrap()[0].value, 1.0);

    // Nothing listens on the late target yet: down, with the reason.
    let down = prom.wait_target("late", "down", WAIT).unwrap();
    assert!(down.last_error.contains("connection refused"), "{down:?}");

    // The rule fires; Alertmanager posts it with the rule's labels.
    let alert = hook.wait_alert("LabTargetDown", "firing", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", am.log_tail()));
    assert_eq!(alert.labels.get("pool").map(String::as_str), Some("lab-pool"), "{alert:?}");
    assert_eq!(alert.labels.get("severity").map(String::as_str), Some("warning"));
    assert_eq!(alert.labels.get("instance"), Some(&format!("127.0.0.1:{late}")));
    assert_eq!(
        alert.annotations.get("description"),
        Some(&format!("127.0.0.1:{late} of pool lab-pool does not answer its scrape"))
    );
    let firing = prom.alerts().unwrap();
    assert!(firing.iter().any(|a| a.labels["alertname"] == "LabTargetDown" && a.state == "firing"), "{firing:?}");
    assert!(hook.notifications().iter().all(|n| n.receiver == "webhook"));

    // The target comes up: its metric is queryable and the alert resolves.
    serve_metrics(TcpListener::bind(("127.0.0.1", late)).unwrap(), "# TYPE lab_ready gauge\nlab_ready 7\n");
    prom.wait_target("late", "up", WAIT).unwrap();
    let v = prom.wait_query("lab_ready", WAIT).unwrap();
    assert_eq!(v[0].value, 7.0);
    let resolved = hook.wait_alert("LabTargetDown", "resolved", WAIT).unwrap();
    assert_eq!(resolved.labels.get("pool").map(String::as_str), Some("lab-pool"));
    assert!(hook.errors().is_empty(), "{:?}", hook.errors());
}

#[test]
fn promtool_accepts_good_rules_and_refuses_broken_ones() {
    let dir = std::env::temp_dir().join(format!("sendfleet-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yml");
    std::fs::write(&good, RULES).unwrap();
    let out = check_rules(&[&good]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS: 1 rules found"), "{out}");

    let bad = dir.join("bad.yml");
    std::fs::write(&bad, RULES.replace("up{job=\"late\"} == 0", "up{job=\"late\" == 0")).unwrap();
    let err = check_rules(&[&bad]).expect_err("a rule with broken PromQL passes promtool").to_string();
    assert!(err.contains("FAILED") && err.contains("bad.yml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
