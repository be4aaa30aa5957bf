//! The Helm chart against real Helm (built from its Go module) and the real
//! API server: lint and the values schema, RBAC exactly as the operator uses
//! it (rendered and as the API server reports it for the installed
//! ServiceAccount), the CRD copy and manifests/ in sync, server-side dry run,
//! install / upgrade / uninstall on a fresh API server.
//!
//! Never: install anything into the shared control plane that other tests in
//! this binary could observe (the install test has its own API server).

mod operator_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use operator_support::*;
use sendfleet::operator::rbac::{Rule, CLUSTER_RULES, NAMESPACE_RULES};
use sendfleet_lab::ControlPlane;
use serde::Deserialize;

type Triple = (String, String, String);

const CRDS: [&str; 3] = ["sendingpools", "domainpolicies", "warmupplans"];

fn helm_bin() -> &'static Path {
    sendfleet_lab::Binaries::get().expect("run `make upstream` to build helm").helm.as_path()
}

/// Run, panic with stdout+stderr on failure, return stdout.
#[track_caller]
fn run(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{c:?} failed:\n{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run, expect failure, return stderr.
#[track_caller]
fn run_fails(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(!o.status.success(), "{c:?} succeeded but should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Helm with its caches in a throw-away directory (tests run in parallel).
fn helm(home: &Path) -> Command {
    let mut c = Command::new(helm_bin());
    c.env("HELM_CACHE_HOME", home).env("HELM_CONFIG_HOME", home).env("HELM_DATA_HOME", home).current_dir(repo());
    c
}

fn template(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    run(helm(tmp.path())
        .args(["template", "sendfleet", "charts/sendfleet", "--namespace", "sendfleet-system"])
        .args(args))
}

fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[serde_yaml::Value]) -> Vec<String> {
    objects.iter().map(|o| o["kind"].as_str().unwrap_or("?").to_string()).collect()
}

#[test]
fn helm_lint_strict_passes_and_the_schema_refuses_bad_values() {
    let tmp = tempfile::tempdir().unwrap();
    for extra in [
        &[][..],
        &["--set", "replicaCount=2"][..],
        &["--set", "metrics.serviceMonitor.enabled=true", "--set", "podDisruptionBudget.enabled=true"][..],
        &["--set", "image.registry=registry.example.com", "--set", "operator.watchNamespace=mail"][..],
    ] {
        let out = run(helm(tmp.path()).args(["lint", "--strict", "charts/sendfleet"]).args(extra));
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{extra:?}: {out}");
    }
    // `helm package` carries the CRDs as real files (not links to crds/).
    let pkg = tmp.path().join("pkg");
    run(helm(tmp.path()).args(["package", "charts/sendfleet", "-d"]).arg(&pkg));
    let tgz = pkg.join("sendfleet-0.1.0.tgz");
    let listing = run(Command::new("tar").arg("-tzvf").arg(&tgz));
    for f in CRDS {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("sendfleet/crds/{f}.sendfleet.io.yaml")))
            .unwrap_or_else(|| panic!("{f} CRD missing from the package:\n{listing}"));
        assert!(line.starts_with('-'), "not a regular file in the package: {line}");
    }
    // values.schema.json: each of these is refused by lint and by template
    // (so by install), naming the value.
    for (bad, names) in [
        ("operator.logFormat=xml", "logFormat"),
        ("replicaCount=-1", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.repository=", "repository"),
        ("metrics.port=70000", "port"),
        ("operator.resyncInterval=soon", "resyncInterval"),
        ("replicaCont=2", "replicaCont"),
        ("metrics.serviceMonitor.enable=true", "enable"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("podDisruptionBudget.maxUnavailable=half", "maxUnavailable"),
        ("resources.request.cpu=1", "request"),
    ] {
        let err = run_fails(helm(tmp.path()).args(["lint", "--strict", "charts/sendfleet", "--set", bad]));
        assert!(err.contains(names), "lint --set {bad}: message does not name {names}:\n{err}");
        let err = run_fails(helm(tmp.path()).args(["template", "x", "charts/sendfleet", "--set", bad]));
        assert!(err.contains(names), "template --set {bad}: message does not name {names}:\n{err}");
    }
}

/// (group, resource, verb) triples.
fn triples(rules: &[Rule]) -> BTreeSet<Triple> {
    rules
        .iter()
        .flat_map(|r| r.verbs.iter().map(move |v| (r.group.to_string(), r.resource.to_string(), v.to_string())))
        .collect()
}

/// Triples granted by every object of `kind` (ClusterRole or Role) rendered.
fn chart_triples(objects: &[serde_yaml::Value], kind: &str) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for o in objects.iter().filter(|o| o["kind"] == kind) {
        for r in o["rules"].as_sequence().unwrap() {
            assert!(r.get("resourceNames").is_none() && r.get("nonResourceURLs").is_none(), "unexpected rule {r:?}");
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

#[track_caller]
fn assert_same_grants(got: &BTreeSet<Triple>, want: &BTreeSet<Triple>, what: &str) {
    let more: Vec<_> = got.difference(want).collect();
    let less: Vec<_> = want.difference(got).collect();
    assert!(more.is_empty(), "{what} grants more than src/operator/rbac.rs lists: {more:?}");
    assert!(less.is_empty(), "{what} grants less than src/operator/rbac.rs lists: {less:?}");
}

#[test]
fn chart_rbac_grants_exactly_what_the_operator_uses() {
    // Whatever the values, the grants are the same.
    for extra in [&[][..], &["--set", "operator.watchNamespace=mail", "--set", "replicaCount=2"][..]] {
        let objects = docs(&template(extra));
        let cluster = chart_triples(&objects, "ClusterRole");
        assert_same_grants(&cluster, &triples(CLUSTER_RULES), "the chart's ClusterRole");
        assert_same_grants(&chart_triples(&objects, "Role"), &triples(NAMESPACE_RULES), "the chart's Role");
        assert!(!cluster.iter().any(|(g, r, v)| g == "*" || r == "*" || v == "*"), "no wildcards");
        let k = kinds(&objects);
        assert_eq!(k.iter().filter(|k| *k == "ClusterRole").count(), 1, "{k:?}");
        assert_eq!(k.iter().filter(|k| *k == "Role").count(), 1, "{k:?}");
    }
}

#[test]
fn chart_crds_and_manifests_are_in_sync() {
    for f in CRDS {
        let name = format!("{f}.sendfleet.io.yaml");
        assert_eq!(
            read(&repo().join("crds").join(&name)),
            read(&repo().join("charts/sendfleet/crds").join(&name)),
            "charts/sendfleet/crds/{name} differs from crds/: run `make crds`"
        );
    }
    let mut chart_crds: Vec<_> = std::fs::read_dir(repo().join("charts/sendfleet/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    chart_crds.sort();
    let mut want: Vec<_> = CRDS.iter().map(|f| format!("{f}.sendfleet.io.yaml")).collect();
    want.sort();
    assert_eq!(chart_crds, want, "charts/sendfleet/crds/ holds exactly the CRDs of crds/");

    // Regenerate with the make target's own recipe into a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("manifests");
    run(Command::new("make")
        .args(["-s", "--no-print-directory", "manifests-into"])
        .arg(format!("MANIFESTS_DIR={}", out.display()))
        .arg(format!("HELM_BIN={}", helm_bin().display()))
        .env("HELM_CACHE_HOME", tmp.path())
        .env("HELM_CONFIG_HOME", tmp.path())
        .env("HELM_DATA_HOME", tmp.path())
        .current_dir(repo()));
    let list = |d: &Path| {
        let mut v: Vec<_> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(list(&repo().join("manifests")), list(&out), "manifests/ holds other files: run `make manifests`");
    for f in list(&out) {
        assert_eq!(
            read(&repo().join("manifests").join(&f)),
            read(&out.join(&f)),
            "manifests/{f} is out of date: run `make manifests`"
        );
    }
    // And it is what the chart renders: CRDs included, everything in
    // sendfleet-system.
    let objects = docs(&read(&out.join("sendfleet.yaml")));
    let k = kinds(&objects);
    for want in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(k.iter().any(|k| k == want), "manifests/sendfleet.yaml lacks a {want}: {k:?}");
    }
    assert_eq!(k.iter().filter(|k| *k == "CustomResourceDefinition").count(), 3);
    assert!(!k.iter().any(|k| k == "ServiceMonitor" || k == "PodDisruptionBudget"), "{k:?}");
    for o in &objects {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "sendfleet-system", "{o:?}");
        }
    }
}

/// The smallest ServiceMonitor CRD the API server needs to dry-run the
/// chart's ServiceMonitor (the Prometheus Operator's real CRD is not in this
/// repository). Its schema preserves unknown fields, so this checks the
/// object's kind, group, version and scope, not the Prometheus Operator's
/// schema.
const SERVICE_MONITOR_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

#[test]
fn the_api_server_accepts_the_rendered_chart_and_the_manifests() {
    // CRDs (from crds/) are applied for real by the fixture.
    let cp = control_plane(false);
    cp.apply(SERVICE_MONITOR_CRD).unwrap();
    cp.wait_crd_established("servicemonitors.monitoring.coreos.com").unwrap();
    let ns = cp.namespace("chart").unwrap();
    for extra in [
        &[][..],
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "imagePullSecrets[0].name=regcred",
        ][..],
    ] {
        let rendered = template(extra).replace("namespace: sendfleet-system", &format!("namespace: {}", ns.name()));
        let objects = docs(&rendered);
        let out = cp
            .kubectl_stdin(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &rendered)
            .unwrap_or_else(|e| panic!("server-side dry run refused the chart ({extra:?}): {e}\n{rendered}"));
        // Every rendered object was accepted, each reported by the server.
        assert_eq!(out.matches("(server dry run)").count(), objects.len(), "{out}");
        if !extra.is_empty() {
            assert!(out.contains("servicemonitor.monitoring.coreos.com/"), "{out}");
            assert!(out.contains("poddisruptionbudget.policy/"), "{out}");
        }
    }
    // manifests/ as users apply it. Namespace sendfleet-system exists here
    // (the fixture made it), so the namespaced objects validate against it.
    let out = cp
        .kubectl_run(&["apply", "--server-side", "--dry-run=server", "-k", repo().join("manifests").to_str().unwrap()])
        .unwrap();
    let expected = docs(&read(&repo().join("manifests/sendfleet.yaml"))).len() + 1;
    assert_eq!(out.matches("(server dry run)").count(), expected, "{out}");
}

/// The rules the API server says `kubeconfig`'s user holds in `ns`
/// (SelfSubjectRulesReview), as triples.
fn effective_triples(cp: &ControlPlane, kubeconfig: &Path, ns: &str) -> BTreeSet<Triple> {
    let review =
        format!("apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectRulesReview\nspec:\n  namespace: {ns}\n");
    let mut c = Command::new(cp.kubectl_path());
    c.arg("--kubeconfig").arg(kubeconfig).args(["create", "--validate=false", "-f", "-", "-o", "json"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(review.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "SelfSubjectRulesReview: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"]["incomplete"], false, "{v}");
    let mut out = BTreeSet::new();
    for r in v["status"]["resourceRules"].as_array().unwrap() {
        assert!(r.get("resourceNames").is_none(), "unexpected resourceNames: {r}");
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for verb in r["verbs"].as_array().unwrap() {
                    let t = (
                        g.as_str().unwrap().to_string(),
                        res.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    );
                    out.insert(t);
                }
            }
        }
    }
    out
}

fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart_on_a_fresh_api_server() {
    // Its own API server: nothing installed beforehand, so the CRDs seen
    // after the install were installed by the install.
    let cp = ControlPlane::start().expect("start a private control plane");
    for f in CRDS {
        assert!(get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]).is_none(), "{f} exists before install");
    }
    let ns = "sendfleet-system";
    let release = "sendfleet";
    let helm = |args: &[&str]| {
        let mut c = cp.helm();
        c.args(args).current_dir(repo());
        run(&mut c)
    };
    let out =
        helm(&["install", release, "charts/sendfleet", "-n", ns, "--create-namespace", "--set", "image.tag=test"]);
    assert!(out.contains("kubectl apply --server-side -f crds/"), "NOTES.txt shown:\n{out}");
    for f in CRDS {
        cp.wait_crd_established(&format!("{f}.sendfleet.io")).unwrap();
        // The chart installs exactly the CRDs of crds/.
        let installed = get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]).unwrap();
        let file: serde_json::Value =
            serde_yaml::from_str(&read(&repo().join(format!("crds/{f}.sendfleet.io.yaml")))).unwrap();
        // (The API server writes integral numbers as floats, e.g. 65535.0.)
        assert!(
            numbers_as_f64(&installed["spec"]["versions"]) == numbers_as_f64(&file["spec"]["versions"]),
            "{f}: the installed CRD's versions differ from crds/"
        );
    }
    let dep = get_json(&cp, &["deployment", release, "-n", ns]).expect("Deployment installed");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(c["image"], "sendfleet:test");
    assert_eq!(pod["serviceAccountName"], release);
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for want in [
        "--metrics-addr=0.0.0.0:8080",
        "--leader-election-namespace=$(POD_NAMESPACE)",
        "--lease-name=sendfleet",
        "--instance-image=sendfleet:test",
        "--log-format=json",
        "--watch-namespace=",
    ] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    let svc = get_json(&cp, &["service", "sendfleet-metrics", "-n", ns]).expect("metrics Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert!(get_json(&cp, &["servicemonitor", "-n", ns]).is_none(), "no ServiceMonitor by default");

    // What the installed ServiceAccount may do, as the API server reports it:
    // exactly rbac.rs (cluster rules everywhere, the Lease rule only in the
    // release namespace).
    // What every ServiceAccount holds through the API server's default
    // bindings (self reviews, cluster trust bundles, ...) is measured on one
    // with no bindings of its own, and taken out.
    let kc = cp.kubeconfig_for_service_account(ns, release).unwrap();
    let nobody = cp.kubeconfig_for_service_account(ns, "chart-test-unbound").unwrap();
    for in_ns in [ns, "default"] {
        let mut want = triples(CLUSTER_RULES);
        if in_ns == ns {
            want.extend(triples(NAMESPACE_RULES));
        }
        let baseline = effective_triples(&cp, &nobody, in_ns);
        assert!(baseline.intersection(&want).next().is_none(), "an unbound ServiceAccount holds: {baseline:?}");
        let got: BTreeSet<Triple> = effective_triples(&cp, &kc, in_ns).difference(&baseline).cloned().collect();
        assert_same_grants(&got, &want, &format!("the installed ServiceAccount (in namespace {in_ns})"));
    }

    // Upgrade: changed values show in the Deployment.
    helm(&[
        "upgrade",
        release,
        "charts/sendfleet",
        "-n",
        ns,
        "--set",
        "image.tag=test2",
        "--set",
        "replicaCount=2",
        "--set",
        "operator.logFormat=text",
        "--set",
        "podDisruptionBudget.enabled=true",
    ]);
    let dep = get_json(&cp, &["deployment", release, "-n", ns]).unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "sendfleet:test2");
    assert!(c["args"].as_array().unwrap().iter().any(|a| a == "--log-format=text"), "{c}");
    assert!(get_json(&cp, &["pdb", release, "-n", ns]).is_some(), "PodDisruptionBudget after upgrade");
    // A bad value is refused by the schema and changes nothing.
    let mut c = cp.helm();
    c.args(["upgrade", release, "charts/sendfleet", "-n", ns, "--set", "operator.logFormat=xml"]).current_dir(repo());
    let err = run_fails(&mut c);
    assert!(err.contains("logFormat"), "{err}");
    let history = helm(&["history", release, "-n", ns, "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");

    helm(&["uninstall", release, "-n", ns, "--wait"]);
    for (kind, name) in [
        ("deployment", release.to_string()),
        ("service", "sendfleet-metrics".into()),
        ("serviceaccount", release.into()),
        ("role", "sendfleet-leader-election".into()),
        ("pdb", release.into()),
    ] {
        assert!(get_json(&cp, &[kind, &name, "-n", ns]).is_none(), "{kind}/{name} left after uninstall");
    }
    assert!(get_json(&cp, &["clusterrole", release]).is_none());
    assert!(get_json(&cp, &["clusterrolebinding", release]).is_none());
    // Helm keeps CRDs on uninstall (its convention): users' pools survive.
    for f in CRDS {
        assert!(get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]).is_some(), "{f} removed by uninstall");
    }
}
