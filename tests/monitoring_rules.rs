//! The shipped alert rules and dashboard (docs/MONITORING.md), checked with
//! the real tools: `promtool check rules` and `promtool test rules` (a firing
//! and a not-firing case for every alert, which this test also counts), the
//! chart's PrometheusRule and dashboard ConfigMap carrying exactly the files
//! (one source), the dashboard against Grafana's dashboard schema
//! (hack/dashboard-check: the Grafana Foundation SDK, Apache-2.0), and every
//! panel's query parsed by a real Prometheus that loaded the rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sendfleet_lab::monitoring::{self, Prometheus};
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn rules_file() -> PathBuf {
    root().join("charts/sendfleet/files/sendfleet.rules.yaml")
}
fn dashboard_file() -> PathBuf {
    root().join("charts/sendfleet/files/sendfleet-dashboard.json")
}
fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn promtool_checks_the_rules_and_every_alert_has_a_firing_and_a_quiet_case() {
    let out = monitoring::check_rules(&[&rules_file()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = root().join("tests/monitoring/rules_test.yaml");
    let out = monitoring::test_rules(&[&tests]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");

    let alerts: Vec<String> = yaml(&rules_file())["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(alerts.len() >= 12, "{alerts:?}");
    // alertname -> (cases where it fires, cases where it does not)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in yaml(&tests)["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let fired = case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            let c = cases.entry(name).or_default();
            if fired {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    for alert in &alerts {
        let (fires, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires >= 1 && quiet >= 1, "{alert}: {fires} firing and {quiet} not-firing cases");
    }
    // Each firing case names pool and IP (the operator's down alert has neither).
    let text = std::fs::read_to_string(&tests).unwrap();
    for alert in alerts.iter().filter(|a| *a != "SendfleetOperatorDown") {
        let desc = yaml(&rules_file())["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
            .find(|r| r["alert"].as_str() == Some(alert))
            .map(|r| r["annotations"]["description"].as_str().unwrap().to_string())
            .unwrap();
        assert!(desc.contains("{{ $labels.pool }}") && desc.contains("{{ $labels.egress_ip }}"), "{alert}: {desc}");
    }
    assert!(text.contains("Pool mail/bulk, IP mta1"), "the tested descriptions name pool and IP");
}

fn helm_template(sets: &[&str]) -> Vec<Value> {
    let bins = sendfleet_lab::Binaries::get().expect("run `make upstream` to build helm");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&bins.helm);
    cmd.env("HOME", home.path()).args([
        "template",
        "sendfleet",
        "charts/sendfleet",
        "--namespace",
        "sendfleet-system",
        "--kube-version",
        "1.31.0",
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

#[test]
fn the_chart_ships_the_same_rules_and_dashboard_opt_in() {
    let off = helm_template(&[]);
    assert!(
        !off.iter().any(|o| ["PrometheusRule", "ServiceMonitor"].contains(&o["kind"].as_str().unwrap_or_default())),
        "off by default"
    );
    let on = helm_template(&[
        "monitoring.rules.enabled=true",
        "monitoring.dashboard.enabled=true",
        "monitoring.agents.enabled=true",
        "monitoring.agents.pools[0].namespace=mail",
        "monitoring.agents.pools[0].name=bulk",
    ]);
    let find = |kind: &str| on.iter().find(|o| o["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("{kind}"));
    assert_eq!(find("PrometheusRule")["spec"], yaml(&rules_file()), "the PrometheusRule is the rules file");
    let cm = on
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some("ConfigMap")
                && o["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .expect("the dashboard ConfigMap with the sidecar label");
    let shipped: serde_json::Value = serde_json::from_str(cm["data"]["sendfleet.json"].as_str().unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard_file()).unwrap()).unwrap();
    assert_eq!(shipped, file);
    let sm = find("ServiceMonitor");
    assert_eq!(sm["metadata"]["namespace"].as_str(), Some("mail"), "beside the pool's token Secret");
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["authorization"]["credentials"]["name"].as_str(), Some("bulk-agent-token"));
    assert_eq!(sm["spec"]["selector"]["matchLabels"]["sendfleet.io/metrics"].as_str(), Some("agent"));
    let targets: Vec<&str> =
        ep["relabelings"].as_sequence().unwrap().iter().filter_map(|r| r["targetLabel"].as_str()).collect();
    assert_eq!(targets, ["pool_namespace", "pool", "egress_ip"]);
}

#[test]
fn the_dashboard_matches_the_schema_and_every_query_parses() {
    let out = Command::new("go")
        .args(["run", "."])
        .arg(dashboard_file())
        .current_dir(root().join("hack/dashboard-check"))
        .output()
        .expect("go (the toolchain that builds the lab's upstream binaries)");
    // Tests run in a network namespace of their own: the module must be in
    // Go's cache already (`make test-monitoring` downloads it first).
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dashboard-check:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let exprs: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, e)| e.replace("$pool_namespace", ".*").replace("$pool", ".*"))
        .collect();
    assert!(exprs.len() >= 10, "{stdout}");

    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let prom = Prometheus::builder().rules("sendfleet.rules.yaml", &rules).start().unwrap_or_else(|e| panic!("{e}"));
    for e in &exprs {
        prom.query(e).unwrap_or_else(|err| panic!("{e}: {err}"));
    }
    // A query that does not parse is refused (the check above can fail).
    assert!(prom.query("sum by (").is_err());
}
