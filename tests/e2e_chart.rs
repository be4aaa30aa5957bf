//! End-to-end with the operator as a real pod (issue 8): the Helm chart
//! (charts/sendfleet) installed with the image `make image` built, the
//! operator's Deployment Running and Ready on the lab's node, reaching the
//! API server the in-cluster way (Service `kubernetes`), and reconciling a
//! pool whose instance (same image, the chart's default instance image)
//! delivers mail to a real Postfix receiver from its egress address; the
//! operator pod reads the agent's counts over the pod network.
//!
//! Everything stays inside the test's network namespace (egress
//! 10.250.0.21, provider 10.250.0.52 on its `lo`). Never skips.

mod e2e_support;
mod operator_support;

use std::process::Command;
use std::time::{Duration, Instant};

use operator_support::{get_json, repo};
use sendfleet_lab::kit::{add_addr, documents, namespace, require_postfix, wait_for, wait_for_or, Policy, Pool};
use sendfleet_lab::{ControlPlane, Receiver};

const NS: &str = "mail-chart";
const OP_NS: &str = "sendfleet-system";
const EGRESS: &str = "10.250.0.21";
const PROVIDER: &str = "10.250.0.52";

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn diagnose(cp: &ControlPlane) -> String {
    let mut s = String::new();
    for args in [
        &["get", "pods", "-A", "-o", "wide"][..],
        &["describe", "pods", "-n", OP_NS],
        &["logs", "-n", OP_NS, "-l", "app.kubernetes.io/component=operator", "--tail=40"],
        &["describe", "pods", "-n", NS],
        &["get", "sendingpools", "-n", NS, "-o", "yaml"],
    ] {
        s.push_str(&format!(
            "$ kubectl {}\n{}\n",
            args.join(" "),
            cp.kubectl_run(args).unwrap_or_else(|e| e.to_string())
        ));
    }
    s
}

#[track_caller]
fn wait_or_diagnose<T>(cp: &ControlPlane, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, timeout, f, || diagnose(cp))
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

#[test]
fn chart_operator_pod_reconciles_a_pool_that_delivers() {
    require_postfix();
    let t0 = Instant::now();
    let archive = e2e_support::image_archive();
    let cp = ControlPlane::shared();
    cp.ensure_node(2).expect("lab node");
    cp.import_image(&archive, Some("localhost/sendfleet")).expect("importing the sendfleet image");
    let t_lab = t0.elapsed();
    add_addr(EGRESS);
    let provider = Receiver::start_temp("e2e-chart-provider", PROVIDER, &["chart.test"], &[]).expect("provider");

    let t = Instant::now();
    let mut helm = cp.helm();
    helm.args(["install", "sendfleet"])
        .arg(repo().join("charts/sendfleet"))
        .args(["-n", OP_NS, "--create-namespace"])
        .args(["--set", "image.registry=localhost", "--set", "image.repository=sendfleet", "--set", "image.tag=dev"])
        .args(["--set", "operator.agentPollInterval=2s", "--set", "operator.resyncInterval=10s"])
        .args(["--set", "operator.logFormat=text"])
        // No DNS in the lab: the pod's own discard port refuses at once.
        .args(["--set", "operator.dnsServers={127.0.0.1:9}"]);
    run(helm, "helm install charts/sendfleet");
    let op = wait_or_diagnose(cp, "the operator pod Running and Ready", Duration::from_secs(120), || {
        ready_pod(cp, OP_NS, "app.kubernetes.io/component=operator")
    });
    let t_op = t.elapsed();
    assert_eq!(op["spec"]["containers"][0]["image"], "localhost/sendfleet:dev");
    assert_eq!(op["spec"]["hostNetwork"], serde_json::Value::Null, "the operator runs on the pod network");

    let pool = documents(&[
        namespace(NS),
        Pool::named("chart")
            .in_ns(NS)
            .with_ip_helo("mta1", EGRESS, "mta1.chart.test")
            .host_network()
            .queue("1Gi", sendfleet_lab::STORAGE_CLASS)
            .submission(587, &["10.250.0.0/24"])
            .yaml(),
        Policy::named("chart").in_ns(NS).for_domains(&["chart.test"]).relay(PROVIDER, 25).yaml(),
    ]);
    let t = Instant::now();
    cp.apply(&pool).expect("applying the pool");
    let inst = wait_or_diagnose(cp, "the instance pod Running and Ready", Duration::from_secs(120), || {
        ready_pod(cp, NS, "sendfleet.io/pool=chart")
    });
    let t_inst = t.elapsed();
    // No image in the pool: the chart's default instance image (its own).
    assert_eq!(inst["spec"]["containers"][0]["image"], "localhost/sendfleet:dev");

    const N: usize = 50;
    let mut src = Command::new("smtp-source");
    src.args(["-c", "-N", "-m", &N.to_string(), "-s", "5", "-f", "from@example.com", "-t", "rcpt@chart.test"])
        .arg(format!("{EGRESS}:587"));
    run(src, "smtp-source");
    wait_for("50 deliveries at the provider", Duration::from_secs(60), || {
        (provider.deliveries().to_domain_from("chart.test", EGRESS) >= N).then_some(())
    });
    assert_eq!(provider.deliveries().to_domain("chart.test"), N);
    // The operator pod polled the agent (pod network -> egress address).
    wait_or_diagnose(cp, "the pool's status to count 50 sent (operator pod -> agent)", Duration::from_secs(60), || {
        let v = get_json(cp, &["sendingpool", "-n", NS, "chart"])?;
        let i = &v["status"]["instances"][0];
        (i["deliveries"]["sent"].as_u64() == Some(N as u64) && i["appliedConfigHash"] == i["desiredConfigHash"])
            .then_some(())
    });
    eprintln!(
        "e2e chart: lab+node+import {:.1}s, helm install -> operator pod Ready {:.1}s, pool -> instance Ready {:.1}s, \
         {N} delivered from {EGRESS} and counted in the pool status; total {:.1}s",
        t_lab.as_secs_f64(),
        t_op.as_secs_f64(),
        t_inst.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
