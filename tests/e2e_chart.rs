//! End-to-end with the operator as a real pod, by running the demo itself
//! (`sendfleet_lab::demo::run`, what `make demo` runs): the Helm chart
//! (charts/sendfleet) installed with the image `make image` built, the
//! operator's Deployment Running and Ready on the lab's node, reaching the
//! API server the in-cluster way (Service `kubernetes`), examples/ applied,
//! the fake DNSBL quarantining mta3, mail routed by MX (the instances resolve
//! through the lab's DNS server), provider-a blocking mta1 and the
//! DomainPolicy's autoExclusion taking mta1 out for provider-a's domains
//! (incident 1), 500 messages submitted from a pod through the pool's
//! Service, delivered from the other egress addresses with nothing bounced,
//! and counted in the pool's status by the operator pod over the pod network.
//! The demo's Prometheus and Alertmanager (`demo::Watch`, the chart's
//! ServiceMonitors and rules) post the listing and the exclusion as alerts
//! naming pool and IP.
//!
//! Everything stays inside the test's network namespace (documentation
//! addresses on its `lo`). Never skips.

mod e2e_support;
mod operator_support;

use std::time::Instant;

use operator_support::get_json;
use sendfleet_lab::demo::{self, NS, OP_NS};
use sendfleet_lab::kit::{require_postfix, Dns};
use sendfleet_lab::ControlPlane;

fn diagnose(cp: &ControlPlane) -> String {
    let mut s = String::new();
    for args in [
        &["get", "pods", "-A", "-o", "wide"][..],
        &["describe", "pods", "-n", OP_NS],
        &["logs", "-n", OP_NS, "-l", "app.kubernetes.io/component=operator", "--tail=40"],
        &["describe", "pods", "-n", NS],
        &["get", "sendingpools", "-n", NS, "-o", "yaml"],
        &["get", "domainpolicies", "-n", NS, "-o", "yaml"],
        &["logs", "-n", NS, "outbound-mta1-0", "--tail=80"],
        &["logs", "-n", NS, "outbound-mta2-0", "--tail=40"],
    ] {
        s.push_str(&format!(
            "$ kubectl {}\n{}\n",
            args.join(" "),
            cp.kubectl_run(args).unwrap_or_else(|e| e.to_string())
        ));
    }
    s
}

fn ready_pod(cp: &ControlPlane, ns: &str, selector: &str) -> Option<serde_json::Value> {
    let v = get_json(cp, &["pods", "-n", ns, "-l", selector])?;
    v["items"]
        .as_array()?
        .iter()
        .find(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .cloned()
}

/// The demo (crates/lab/src/demo.rs, what `make demo` runs) on this
/// test's lab, then what it must have shown.
#[test]
fn the_demo_runs_the_chart_operator_as_a_pod_and_delivers_through_the_pool() {
    require_postfix();
    let t0 = Instant::now();
    let archive = e2e_support::image_archive();
    let cp = ControlPlane::shared();
    cp.ensure_node(8).expect("lab node");
    cp.import_image(&archive, Some(demo::IMAGE_BASE)).expect("importing the sendfleet image");
    let egress = demo::add_egress_addresses().expect("egress addresses");
    let providers = demo::start_providers(None).expect("providers");
    let _dns = Dns::serve(demo::DNS_SERVER, demo::zones().expect("the demo's zones"));
    // The demo's Prometheus and Alertmanager (`sendfleet-lab monitoring
    // start`), before the chart is installed, as hack/demo.sh starts them.
    let watch_dir = std::env::temp_dir().join(format!("sendfleet-e2e-chart-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&watch_dir);
    let watch = demo::Watch::start(cp, &watch_dir, cp.kubeconfig()).unwrap_or_else(|e| panic!("{e}"));
    let t_lab = t0.elapsed();

    // As `sendfleet-lab monitoring serve` does: hand Prometheus the pool's
    // agent token as soon as the operator has created it.
    let token_done = std::sync::atomic::AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            while !token_done.load(std::sync::atomic::Ordering::Relaxed) && !watch.refresh_token(cp) {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        let report = demo::run(cp, &providers, &mut std::io::stderr());
        token_done.store(true, std::sync::atomic::Ordering::Relaxed);
        report
    })
    .unwrap_or_else(|e| panic!("the demo failed: {e}\n{}", diagnose(cp)));

    // The chart's operator: the image under test, on the pod network.
    let op = ready_pod(cp, OP_NS, "app.kubernetes.io/component=operator").expect("operator pod Ready");
    assert_eq!(op["spec"]["containers"][0]["image"], demo::IMAGE);
    assert_eq!(op["spec"]["hostNetwork"], serde_json::Value::Null, "the operator runs on the pod network");
    // No image in the example pool: the chart's default instance image.
    let inst = ready_pod(cp, NS, &format!("sendfleet.io/pool={}", demo::POOL)).expect("an instance pod Ready");
    assert_eq!(inst["spec"]["containers"][0]["image"], demo::IMAGE);

    // The fake DNSBL listed mta3: quarantined, and no mail from its address.
    assert!(!report.quarantine.is_empty(), "{report:?}");
    let listed = &egress[2];
    assert_eq!(report.by_client.get(listed), None, "mail from the quarantined {listed}: {report:?}");
    assert_eq!(report.delivered, demo::EXPECTED, "{report:?}");
    for a in &egress[..2] {
        assert!(report.by_client.get(a).is_some_and(|n| *n > 0), "no mail from {a}: {report:?}");
    }
    assert_eq!(report.by_client.values().sum::<usize>(), demo::EXPECTED, "{report:?}");
    // Incident 1: provider-a blocked mta1; after the DomainPolicy's
    // threshold mta1 is excluded for provider-a's domains, its blocked mail
    // left through the other address, none of it bounced.
    let blocked = &report.blocked_addr;
    assert_eq!(blocked, &egress[0], "{report:?}");
    assert!(report.blocks >= 2, "provider-a logged {} blocks of {blocked}: {report:?}", report.blocks);
    let at_a = &report.by_provider[demo::BLOCKING];
    assert_eq!(at_a.get(blocked), None, "provider-a accepted mail from the blocked {blocked}: {report:?}");
    assert_eq!(at_a.values().sum::<usize>(), demo::N_A, "{report:?}");
    assert!(
        report.exclusions.iter().any(|l| l.starts_with(&format!("{} ", demo::BLOCKED))),
        "DomainPolicy {} names no exclusion of {}: {report:?}",
        demo::BLOCKING_POLICY,
        demo::BLOCKED
    );
    assert_eq!(report.status_bounced, 0, "{report:?}");
    // provider-b still takes mail from mta1: the exclusion is provider-a's only.
    assert!(report.by_provider["provider-b"].get(blocked).is_some_and(|n| *n > 0), "{report:?}");
    // The operator pod polled the agents (pod network -> egress addresses);
    // a message relayed to a peer may count as sent at both instances.
    assert!(report.status_sent >= report.delivered, "{report:?}");
    assert_eq!(report.status_queued, demo::N_BUSY, "{report:?}");
    // The alerts the demo raised reached the webhook's log, each naming
    // the pool and the IP: mta3 listed, mta1 excluded by provider-a.
    assert!(watch.refresh_token(cp), "the pool's agent token");
    let alerts = watch.dir.join("alerts.log");
    let want = [
        format!("FIRING SendfleetIPListed IP {} of {NS}/{} is listed in ", demo::LISTED, demo::POOL),
        format!(
            "FIRING SendfleetIPExcludedByProvider IP {} of {NS}/{} excluded for DomainPolicy {}",
            demo::BLOCKED,
            demo::POOL,
            demo::BLOCKING_POLICY
        ),
    ];
    let t_alerts = Instant::now();
    loop {
        let log = std::fs::read_to_string(&alerts).unwrap_or_default();
        if want.iter().all(|w| log.lines().any(|l| l.starts_with(w.as_str()))) {
            eprintln!("the demo's alerts:\n{log}");
            break;
        }
        assert!(
            t_alerts.elapsed().as_secs() < 120,
            "alerts.log lacks {want:?}:\n{log}\ntargets: {:?}\nalerts: {:?}",
            watch.prometheus.targets(),
            watch.prometheus.alerts()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    drop(watch);
    let _ = std::fs::remove_dir_all(&watch_dir);
    eprintln!(
        "e2e chart (the demo): lab+node+import {:.1}s, submit -> delivered {:.1}s, total {:.1}s",
        t_lab.as_secs_f64(),
        report.submit_to_delivered.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
