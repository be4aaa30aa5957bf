//! The operator's side of monitoring (docs/MONITORING.md), on the real
//! control plane with the real operator process: each pool gets the
//! `<pool>-agents` Service (label `sendfleet.io/metrics=agent`) and an
//! EndpointSlice the operator writes at the egress addresses, hostname =
//! the IP's name, on the agent port (what the agents' ServiceMonitor
//! scrapes with hostNetwork); a real Prometheus scraping the operator gets
//! `pool_namespace`/`pool`/`egress_ip` labels (never `exported_*`), and with
//! the shipped rules an instance whose pod is not Ready raises
//! `SendfleetAgentDown` at the Alertmanager webhook naming pool and IP, while
//! `SendfleetOperatorDown` stays quiet.

mod operator_support;

use std::time::Duration;

use operator_support::{control_plane, get_json, pool_yaml, shared_operator, wait_for};
use sendfleet_lab::monitoring::{shipped_rules, Alertmanager, Prometheus, Webhook};
use sendfleet_render::contract::AGENT_HTTP_PORT;

const T: Duration = Duration::from_secs(90);

#[test]
fn the_operator_writes_the_agents_endpoints_and_its_metrics_raise_agent_down_naming_pool_and_ip() {
    let cp = control_plane(false);
    let port = shared_operator(cp).lock().unwrap_or_else(|p| p.into_inner()).metrics_port;
    let ns = cp.namespace("monitoring").unwrap();
    cp.apply(&pool_yaml(ns.name(), "watched", 2, "")).unwrap();

    let slice = wait_for("EndpointSlice watched-agents", T, || {
        get_json(cp, &["endpointslice", "watched-agents", "-n", ns.name()])
            .filter(|s| s["endpoints"].as_array().is_some_and(|e| e.len() == 2))
    });
    let pool = get_json(cp, &["sendingpool", "watched", "-n", ns.name()]).unwrap();
    let mut want: Vec<(String, String)> = pool["spec"]["egressIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| (ip["address"].as_str().unwrap().to_string(), ip["name"].as_str().unwrap().to_string()))
        .collect();
    let mut got: Vec<(String, String)> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["addresses"][0].as_str().unwrap().to_string(), e["hostname"].as_str().unwrap().to_string()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "one endpoint per egress address, hostname = the IP's name");
    assert_eq!(slice["ports"][0]["port"].as_u64(), Some(u64::from(AGENT_HTTP_PORT)), "{slice}");
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "watched-agents");
    let svc = get_json(cp, &["service", "watched-agents", "-n", ns.name()]).unwrap();
    assert_eq!(svc["metadata"]["labels"]["sendfleet.io/metrics"], "agent");
    assert_eq!(svc["metadata"]["labels"]["sendfleet.io/pool"], "watched");
    assert!(svc["spec"]["selector"].is_null(), "hostNetwork: no selector, the operator's endpoints: {svc}");

    let hook = Webhook::start().unwrap_or_else(|e| panic!("{e}"));
    let am = Alertmanager::start(&hook).unwrap_or_else(|e| panic!("{e}"));
    let prom = Prometheus::builder()
        .static_job("sendfleet-operator", &[&format!("127.0.0.1:{port}")])
        .rules("sendfleet.rules.yaml", &shipped_rules("2s").unwrap())
        .alertmanager(&am)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = prom
        .wait_query(
            &format!(r#"sendfleet_operator_instance_ready{{pool_namespace="{}",pool="watched"}}"#, ns.name()),
            T,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready.len(), 2, "{ready:?}");
    for s in &ready {
        assert!(s.labels.keys().all(|k| !k.starts_with("exported_")), "no label collides with a target label: {s:?}");
        assert_eq!(s.value, 0.0, "no pod runs (no kubelet here): {s:?}");
    }

    let down = wait_for("SendfleetAgentDown for this pool at the webhook", T, || {
        hook.notifications().into_iter().flat_map(|n| n.alerts).find(|a| {
            a.status == "firing"
                && a.labels.get("alertname").map(String::as_str) == Some("SendfleetAgentDown")
                && a.labels.get("pool_namespace").map(String::as_str) == Some(ns.name())
        })
    });
    let ip = down.labels["egress_ip"].clone();
    assert!(want.iter().any(|(_, name)| name == &ip), "{down:?}");
    assert_eq!(down.labels["pool"], "watched");
    let description = &down.annotations["description"];
    assert!(description.starts_with(&format!("Pool {}/watched, IP {ip}: ", ns.name())), "{description}");
    let operator_down = prom.alerts().unwrap().into_iter().any(|a| a.labels["alertname"] == "SendfleetOperatorDown");
    assert!(!operator_down, "the operator is scraped");
}
