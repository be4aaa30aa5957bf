//! docs/INSTALL.md followed literally on the lab's real API server and node,
//! from the packaged chart (`helm package` output), never the source tree:
//! the shell blocks the page marks `<!-- e2e-install: NAME -->` are taken
//! from the page and run as they are written (`sh -eu`), with only the
//! variables the page asks the reader to set (`CHART`, `IMAGE_REGISTRY`,
//! `IMAGE_TAG`). Install with the chart's pool namespace, apply the
//! examples, wait for Ready, upgrade to a later package whose CRD changed,
//! uninstall; after each step the test checks what the page promises.
//!
//! What the page assumes of the reader's cluster the test prepares as the
//! lab's cluster (not a step of the page): the egress addresses on the node
//! (documentation addresses on the test namespace's `lo`), a default
//! StorageClass, the sendfleet image in the node's runtime. Never skips.

mod chart_support;
mod e2e_support;
mod operator_support;

use std::path::Path;
use std::process::Command;

use operator_support::{get_json, repo};
use sendfleet_lab::demo;
use sendfleet_lab::ControlPlane;

/// The blocks of docs/INSTALL.md in the order the test runs them.
const STEPS: [&str; 5] = ["install", "apply", "ready", "upgrade", "uninstall"];

/// `(name, script)` of every ```sh block preceded by `<!-- e2e-install: NAME -->`.
fn marked_blocks(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(l) = lines.next() {
        let Some(name) = l.trim().strip_prefix("<!-- e2e-install:").and_then(|r| r.strip_suffix("-->")) else {
            continue;
        };
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "marker {name} is not followed by a ```sh block");
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push((name.trim().to_string(), body.join("\n") + "\n"));
    }
    out
}

/// Run one block as the reader would in `dir`: kubectl and helm of the lab
/// on PATH, the lab's kubeconfig, the page's variables.
fn run_block(cp: &ControlPlane, dir: &Path, name: &str, script: &str, vars: &[(&str, &str)]) -> String {
    let bins = cp.binaries();
    let path = format!(
        "{}:{}:{}",
        bins.kubectl.parent().unwrap().display(),
        bins.helm.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = dir.join(".helm");
    let mut c = Command::new("sh");
    c.args(["-eu", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("== docs/INSTALL.md step {name}\n{script}--\n{text}");
    assert!(o.status.success(), "step {name} of docs/INSTALL.md failed:\n{script}\n{text}\n{}", diagnose(cp));
    text
}

fn diagnose(cp: &ControlPlane) -> String {
    let mut s = String::new();
    for args in [
        &["get", "pods", "-A", "-o", "wide"][..],
        &["get", "events", "-n", "mail"],
        &["logs", "-n", "sendfleet-system", "-l", "app.kubernetes.io/component=operator", "--tail=40"],
        &["get", "sendingpools", "-n", "mail", "-o", "yaml"],
    ] {
        s.push_str(&format!(
            "$ kubectl {}\n{}\n",
            args.join(" "),
            cp.kubectl_run(args).unwrap_or_else(|e| e.to_string())
        ));
    }
    s
}

fn pool_ready(cp: &ControlPlane) -> (String, String) {
    let c = operator_support::condition(cp, "sendingpool", "outbound", "mail", "Ready").unwrap_or_default();
    (c.0, c.2)
}

/// uid and restart count of every instance pod, by name.
fn instance_pods(cp: &ControlPlane) -> Vec<(String, String, i64)> {
    let v = get_json(cp, &["pods", "-n", "mail", "-l", "sendfleet.io/pool=outbound"]).unwrap();
    let mut pods: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1);
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().into(),
                restarts,
            )
        })
        .collect();
    pods.sort();
    pods
}

#[test]
fn following_install_md_from_the_packaged_chart_installs_upgrades_and_uninstalls() {
    let page = std::fs::read_to_string(repo().join("docs/INSTALL.md")).unwrap();
    let blocks = marked_blocks(&page);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, STEPS, "docs/INSTALL.md's marked blocks");
    for (name, script) in &blocks {
        // From the package and the release's examples only.
        assert!(
            !script.contains("charts/") && !script.contains("crds/"),
            "step {name} uses the source tree:\n{script}"
        );
    }
    let block = |n: &str| blocks.iter().find(|(name, _)| name == n).map(|(_, s)| s.as_str()).unwrap();

    // The lab as the reader's cluster.
    let archive = e2e_support::image_archive();
    let cp = ControlPlane::shared();
    cp.ensure_node(8).expect("lab node");
    cp.import_image(&archive, Some(demo::IMAGE_BASE)).expect("importing the sendfleet image");
    demo::add_egress_addresses().expect("egress addresses");
    cp.kubectl_run(&[
        "annotate",
        "storageclass",
        sendfleet_lab::STORAGE_CLASS,
        "storageclass.kubernetes.io/is-default-class=true",
        "--overwrite",
    ])
    .unwrap();
    let (registry, tag) = demo::IMAGE.rsplit_once(':').unwrap();
    let registry = registry.strip_suffix("/sendfleet").unwrap();

    // The reader's directory: the release's chart package and examples/.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let chart = chart_support::package(&mut cp.helm(), &repo().join("charts/sendfleet"), dir);
    chart_support::run_ok(Command::new("cp").arg("-r").arg(repo().join("examples")).arg(dir));
    let later = chart_support::changed_chart(&dir.join("build"), "0.1.1");
    let later = chart_support::package(&mut cp.helm(), &later, &dir.join("later"));
    let vars = |chart: &Path| -> Vec<(&'static str, String)> {
        vec![("CHART", chart.display().to_string()), ("IMAGE_REGISTRY", registry.into()), ("IMAGE_TAG", tag.into())]
    };
    let run = |name: &str, chart: &Path| {
        let v = vars(chart);
        let v: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_block(cp, dir, name, block(name), &v)
    };

    // 1. Install: the operator Ready, the pool namespace prepared.
    let out = run("install", &chart);
    assert!(out.contains("sendfleet.io/pools=enabled"), "namespace mail not opted in:\n{out}");
    assert!(out.contains("pod-security.kubernetes.io/enforce=privileged"), "{out}");
    assert!(out.contains("helm show crds"), "NOTES.txt names the CRD upgrade:\n{out}");

    // 2-3. The examples applied and the pool Ready on the node.
    run("apply", &chart);
    run("ready", &chart);
    assert_eq!(pool_ready(cp).0, "True");
    let pods = instance_pods(cp);
    assert_eq!(pods.len(), 3, "{pods:?}");
    let inst = get_json(cp, &["pod", &pods[0].0, "-n", "mail"]).unwrap();
    assert_eq!(inst["spec"]["containers"][0]["image"], demo::IMAGE, "the chart's default instance image");
    // The Argo CD health check the page points to reads this pool as
    // Healthy (its other verdicts: tests/gitops_health.rs).
    let lua = repo().join("docs/gitops/argocd/sendingpool.lua");
    let now = || {
        let pool = get_json(cp, &["sendingpool", "outbound", "-n", "mail"]).unwrap();
        (sendfleet_lab::argocd::health(&lua, &pool).unwrap(), pool["status"].clone())
    };
    sendfleet_lab::kit::wait_for_or(
        "Argo CD health Healthy",
        std::time::Duration::from_secs(120),
        || Some(now().0).filter(|h| h.status == "Healthy"),
        || format!("{:#?}", now()),
    );

    // 4. Upgrade to a later package whose SendingPool CRD changed.
    run("upgrade", &later);
    let crd = get_json(cp, &["crd", "sendingpools.sendfleet.io"]).unwrap();
    let columns = chart_support::printer_columns(&crd);
    assert!(columns.iter().any(|c| c == chart_support::ADDED_COLUMN), "CRD not upgraded: {columns:?}");
    let history: serde_json::Value = serde_json::from_str(&chart_support::run_ok(cp.helm().args([
        "history",
        "sendfleet",
        "-n",
        "sendfleet-system",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(history.as_array().unwrap().last().unwrap()["chart"], "sendfleet-0.1.1", "{history}");
    // The instances did not notice: same pods, not restarted, still Ready.
    assert_eq!(instance_pods(cp), pods, "the upgrade replaced or restarted instances");
    run("ready", &later);

    // 5. Uninstall: the operator goes, CRDs, namespace and pool stay.
    let out = run("uninstall", &later);
    assert!(out.contains("outbound"), "the pool is gone after uninstall:\n{out}");
    assert!(get_json(cp, &["deployment", "sendfleet", "-n", "sendfleet-system"]).is_none());
    for f in ["sendingpools", "domainpolicies", "warmupplans", "egressaddressclaims"] {
        assert!(get_json(cp, &["crd", &format!("{f}.sendfleet.io")]).is_some(), "{f} removed by uninstall");
    }
    assert_eq!(instance_pods(cp).len(), 3, "instances removed by uninstall");
}
