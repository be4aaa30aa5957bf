//! The Helm chart against real Helm (built from its Go module) and the real
//! API server: lint, RBAC exactly as the operator uses it, manifests/ in
//! sync, server-side dry run, install / upgrade / uninstall.

mod operator_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use operator_support::*;
use sendfleet::operator::rbac::{Rule, CLUSTER_RULES, NAMESPACE_RULES};
use serde::Deserialize;

fn helm_bin() -> &'static Path {
    sendfleet_lab::Binaries::get().expect("run `make upstream` to build helm").helm.as_path()
}

fn run(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{c:?} failed:\n{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn template(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new(helm_bin())
        .env("HELM_CACHE_HOME", tmp.path())
        .env("HELM_CONFIG_HOME", tmp.path())
        .env("HELM_DATA_HOME", tmp.path())
        .args(["template", "sendfleet", "charts/sendfleet", "--namespace", "sendfleet-system"])
        .args(args)
        .current_dir(repo()))
}

fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn helm_lint_strict_passes() {
    for extra in [
        &[][..],
        &["--set", "replicaCount=2"][..],
        &["--set", "metrics.serviceMonitor.enabled=true", "--set", "podDisruptionBudget.enabled=true"][..],
    ] {
        let out = run(Command::new(helm_bin())
            .args(["lint", "--strict", "charts/sendfleet"])
            .args(extra)
            .current_dir(repo()));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    // values.schema.json refuses a bad value.
    let o = Command::new(helm_bin())
        .args(["lint", "--strict", "charts/sendfleet", "--set", "operator.logFormat=xml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a bad value passed lint");
}

/// (group, resource, verb) triples.
fn triples(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
    rules
        .iter()
        .flat_map(|r| r.verbs.iter().map(move |v| (r.group.to_string(), r.resource.to_string(), v.to_string())))
        .collect()
}

fn chart_triples(objects: &[serde_yaml::Value], kind: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for o in objects.iter().filter(|o| o["kind"] == kind) {
        for r in o["rules"].as_sequence().unwrap() {
            for g in r["apiGroups"].as_sequence().unwrap() {
                for res in r["resources"].as_sequence().unwrap() {
                    for v in r["verbs"].as_sequence().unwrap() {
                        out.insert((
                            g.as_str().unwrap().into(),
                            res.as_str().unwrap().into(),
                            v.as_str().unwrap().into(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn chart_rbac_grants_exactly_what_the_operator_uses() {
    let objects = docs(&template(&[]));
    let cluster = chart_triples(&objects, "ClusterRole");
    let want = triples(CLUSTER_RULES);
    assert_eq!(
        cluster.difference(&want).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "the chart grants more than the operator uses"
    );
    assert_eq!(
        want.difference(&cluster).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "the chart grants less than the operator uses"
    );
    assert_eq!(chart_triples(&objects, "Role"), triples(NAMESPACE_RULES));
    assert!(!cluster.iter().any(|(_, r, _)| r == "*"), "no wildcards");
}

#[test]
fn chart_crds_and_manifests_are_in_sync() {
    for f in ["sendingpools", "domainpolicies", "warmupplans"] {
        let name = format!("{f}.sendfleet.io.yaml");
        assert_eq!(
            read(&repo().join("crds").join(&name)),
            read(&repo().join("charts/sendfleet/crds").join(&name)),
            "charts/sendfleet/crds/{name} differs from crds/: run `make crds`"
        );
    }
    let rendered = template(&["--include-crds"]);
    assert_eq!(
        read(&repo().join("manifests/sendfleet.yaml")),
        rendered,
        "manifests/ is out of date: run `make manifests`"
    );
}

#[test]
fn the_api_server_accepts_the_chart_and_helm_installs_upgrades_and_uninstalls_it() {
    let cp = control_plane(false);
    // Server-side dry run of everything the chart renders (CRDs are already
    // installed by the fixture; the ServiceMonitor needs the Prometheus
    // Operator's CRD, which this cluster does not have, so it is off here).
    let ns = cp.namespace("chart").unwrap();
    let rendered = template(&[]).replace("namespace: sendfleet-system", &format!("namespace: {}", ns.name()));
    cp.kubectl_stdin(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &rendered).unwrap();
    cp.kubectl_run(&["apply", "--dry-run=server", "-k", repo().join("manifests").to_str().unwrap()]).unwrap();

    let release = format!("sf-{}", &ns.name()[ns.name().len() - 4..]);
    let helm = |args: &[&str]| {
        let mut c = cp.helm();
        c.args(args).current_dir(repo());
        run(&mut c)
    };
    helm(&["install", &release, "charts/sendfleet", "-n", ns.name(), "--set", "image.tag=test"]);
    let dep =
        get_json(cp, &["deployment", &format!("{release}-sendfleet"), "-n", ns.name()]).expect("Deployment installed");
    assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["image"], "sendfleet:test");
    assert_eq!(dep["spec"]["template"]["spec"]["serviceAccountName"], format!("{release}-sendfleet").as_str());
    assert!(get_json(cp, &["clusterrole", &format!("{release}-sendfleet")]).is_some());
    assert!(get_json(cp, &["crd", "sendingpools.sendfleet.io"]).is_some());
    helm(&[
        "upgrade",
        &release,
        "charts/sendfleet",
        "-n",
        ns.name(),
        "--set",
        "image.tag=test",
        "--set",
        "replicaCount=2",
    ]);
    let dep = get_json(cp, &["deployment", &format!("{release}-sendfleet"), "-n", ns.name()]).unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    helm(&["uninstall", &release, "-n", ns.name(), "--wait"]);
    assert!(get_json(cp, &["deployment", &format!("{release}-sendfleet"), "-n", ns.name()]).is_none());
    assert!(get_json(cp, &["clusterrole", &format!("{release}-sendfleet")]).is_none());
    // Helm keeps CRDs on uninstall (its convention): pools survive.
    assert!(get_json(cp, &["crd", "sendingpools.sendfleet.io"]).is_some());
}
