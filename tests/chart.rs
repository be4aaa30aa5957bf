//! The Helm chart against real Helm (built from its Go module) and the real
//! API server: lint and the values schema, RBAC exactly as the operator uses
//! it (rendered and as the API server reports it for the installed
//! ServiceAccount), the CRD copy and manifests/ in sync, server-side dry run,
//! install / upgrade / uninstall on a fresh API server.
//!
//! Never: install anything into the shared control plane that other tests in
//! this binary could observe (the install test has its own API server).

mod chart_support;
mod operator_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use operator_support::*;
use sendfleet::operator::rbac::{cluster_role, watched_namespace_role, Rule, NAMESPACE_RULES};
use sendfleet_lab::ControlPlane;
use serde::Deserialize;

type Triple = (String, String, String);

/// The oldest Kubernetes the chart supports (Chart.yaml `kubeVersion`);
/// `helm template` checks it against its own default (1.20) otherwise.
const KUBE_MIN: &str = "1.31.0";

const CRDS: [&str; 4] = ["sendingpools", "domainpolicies", "warmupplans", "egressaddressclaims"];

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
        .args(["--kube-version", KUBE_MIN])
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
        // An umbrella chart passes `global`; CRDs as templates; log level.
        &[
            "--set",
            "global.imageRegistry=r.example",
            "--set",
            "crds.templated=true",
            "--set",
            "operator.logLevel=debug",
        ][..],
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
        ("operator.logLevel=verbose", "logLevel"),
        ("crds.template=true", "template"),
    ] {
        let err = run_fails(helm(tmp.path()).args(["lint", "--strict", "charts/sendfleet", "--set", bad]));
        assert!(err.contains(names), "lint --set {bad}: message does not name {names}:\n{err}");
        let err = run_fails(helm(tmp.path()).args([
            "template",
            "x",
            "charts/sendfleet",
            "--kube-version",
            KUBE_MIN,
            "--set",
            bad,
        ]));
        assert!(err.contains(names), "template --set {bad}: message does not name {names}:\n{err}");
    }
    // The CRDs' CEL IP/CIDR functions need 1.31: older clusters are refused
    // before anything is installed, naming the requirement.
    let err = run_fails(helm(tmp.path()).args(["template", "x", "charts/sendfleet", "--kube-version", "1.30.9"]));
    assert!(err.contains("chart requires kubeVersion: >=1.31.0-0"), "{err}");
}

#[test]
fn operator_log_level_and_security_contexts_are_values() {
    let objects = docs(&template(&[
        "--set",
        "operator.logLevel=debug",
        "--set",
        "podSecurityContext.runAsUser=1001",
        "--set",
        "securityContext.readOnlyRootFilesystem=true",
    ]));
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsUser"], 1001);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "the other defaults stay");
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let env =
        |name: &str| c["env"].as_sequence().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    assert_eq!(env("RUST_LOG"), Some("debug,kube=warn".into()));
}

#[test]
fn a_kustomize_image_override_reaches_the_operator_and_the_instances() {
    // As docs/INSTALL.md shows it: an overlay on (a copy of) manifests/
    // with `images:` (kustomize refuses absolute paths to a base).
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("cp").arg("-r").arg(repo().join("manifests")).arg(tmp.path().join("base")));
    let overlay = tmp.path().join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    let images = "  - name: sendfleet\n    newName: registry.example.com/mail/sendfleet\n    newTag: 0.2.0\n";
    std::fs::write(overlay.join("kustomization.yaml"), format!("resources: [../base]\nimages:\n{images}")).unwrap();
    let cp = ControlPlane::shared();
    let out = run(Command::new(cp.kubectl_path()).arg("kustomize").arg(&overlay));
    let objects = docs(&out);
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let want = "registry.example.com/mail/sendfleet:0.2.0";
    assert_eq!(c["image"], want);
    // The operator's --instance-image is $(SENDFLEET_INSTANCE_IMAGE), which
    // the kubelet expands from the env the override rewrote.
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--instance-image=$(SENDFLEET_INSTANCE_IMAGE)"), "{args:?}");
    let env = c["env"].as_sequence().unwrap().iter().find(|e| e["name"] == "SENDFLEET_INSTANCE_IMAGE").unwrap();
    assert_eq!(env["value"], want, "the instances' image did not follow the override");
    assert!(!out.contains("sendfleet:0.1.0"), "an image the override missed:\n{out}");
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

/// Triples granted by the rendered Roles in namespace `ns`.
fn role_triples_in(objects: &[serde_yaml::Value], ns: &str) -> BTreeSet<Triple> {
    let in_ns: Vec<serde_yaml::Value> =
        objects.iter().filter(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == ns).cloned().collect();
    chart_triples(&in_ns, "Role")
}

#[test]
fn chart_rbac_grants_exactly_what_the_operator_uses() {
    for (watch, extra) in
        [("", &[][..]), ("mail", &["--set", "operator.watchNamespace=mail", "--set", "replicaCount=2"][..])]
    {
        let objects = docs(&template(extra));
        let cluster = chart_triples(&objects, "ClusterRole");
        assert_same_grants(&cluster, &triples(&cluster_role(watch)), "the chart's ClusterRole");
        assert_same_grants(
            &role_triples_in(&objects, "sendfleet-system"),
            &triples(NAMESPACE_RULES),
            "the chart's Role in the release namespace",
        );
        assert!(!cluster.iter().any(|(g, r, v)| g == "*" || r == "*" || v == "*"), "no wildcards");
        let k = kinds(&objects);
        assert_eq!(k.iter().filter(|k| *k == "ClusterRole").count(), 1, "{k:?}");
        if watch.is_empty() {
            assert_eq!(k.iter().filter(|k| *k == "Role").count(), 1, "{k:?}");
            continue;
        }
        // Watching one namespace: Secrets and every other namespaced right
        // are a Role there, bound to the operator; none is cluster-wide.
        let secrets = |t: &BTreeSet<Triple>| t.iter().any(|(_, r, _)| r == "secrets");
        assert!(!secrets(&cluster), "the ClusterRole grants Secret rights: {cluster:?}");
        let pools_role = role_triples_in(&objects, watch);
        assert!(secrets(&pools_role));
        assert_same_grants(&pools_role, &triples(&watched_namespace_role(watch)), "the chart's Role in mail");
        let binding = objects
            .iter()
            .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == watch)
            .expect("a RoleBinding in the watched namespace");
        assert_eq!(binding["roleRef"]["name"], "sendfleet-pools");
        assert_eq!(binding["subjects"][0]["name"], "sendfleet");
        assert_eq!(binding["subjects"][0]["namespace"], "sendfleet-system");
    }
}

#[test]
fn the_chart_passes_the_administrators_limits_and_labels_the_pool_namespaces() {
    let objects = docs(&template(&[
        "--set",
        "instances.allowedImages={registry.example/sendfleet:1.1}",
        "--set-json",
        r#"instances.nodeSelector={"sendfleet.io/egress":"true"}"#,
        "--set",
        "poolNamespaces[0].name=mail",
        "--set",
        "poolNamespaces[1].name=mail-multus",
        "--set",
        "poolNamespaces[1].podSecurity=baseline",
    ]));
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let args: Vec<&str> = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--pool-namespace-label=sendfleet.io/pools=enabled",
        "--allowed-instance-image=registry.example/sendfleet:1.1",
        "--instance-node-selector=sendfleet.io/egress=true",
    ] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    let namespaces: Vec<&serde_yaml::Value> = objects.iter().filter(|o| o["kind"] == "Namespace").collect();
    let label = |ns: &serde_yaml::Value, k: &str| ns["metadata"]["labels"][k].as_str().unwrap_or("").to_string();
    let summary: Vec<(String, String, String, String)> = namespaces
        .iter()
        .map(|ns| {
            (
                ns["metadata"]["name"].as_str().unwrap().to_string(),
                label(ns, "sendfleet.io/pools"),
                label(ns, "pod-security.kubernetes.io/enforce"),
                ns["metadata"]["annotations"]["helm.sh/resource-policy"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let row = |n: &str, level: &str| (n.to_string(), "enabled".to_string(), level.to_string(), "keep".to_string());
    assert_eq!(summary, [row("mail", "privileged"), row("mail-multus", "baseline")]);
    // By default: no namespace, and still only opted-in ones hold pools.
    let objects = docs(&template(&[]));
    assert!(!kinds(&objects).iter().any(|k| k == "Namespace"));
    let tmp = tempfile::tempdir().unwrap();
    for (bad, names) in [
        ("poolNamespaces[0].podSecurity=restricted", "podSecurity"),
        ("operator.poolNamespaceLabel=no-value", "poolNamespaceLabel"),
        ("instances.allowedImage={x}", "allowedImage"),
    ] {
        let err = run_fails(helm(tmp.path()).args([
            "template",
            "x",
            "charts/sendfleet",
            "--set",
            "poolNamespaces[0].name=m",
            "--set",
            bad,
        ]));
        assert!(err.contains(names), "template --set {bad}: message does not name {names}:\n{err}");
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
    assert_eq!(k.iter().filter(|k| *k == "CustomResourceDefinition").count(), CRDS.len());
    assert!(!k.iter().any(|k| k == "ServiceMonitor" || k == "PodDisruptionBudget"), "{k:?}");
    for o in &objects {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "sendfleet-system", "{o:?}");
        }
        // Not a Helm release: no label claims one.
        let labels = &o["metadata"]["labels"];
        assert!(labels.get("helm.sh/chart").is_none() && labels["app.kubernetes.io/managed-by"] != "Helm", "{o:?}");
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

/// Where two JSON values first differ (for a failure message).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                if x.get(k) != y.get(k) {
                    return first_difference(
                        &x.get(k).cloned().unwrap_or_default(),
                        &y.get(k).cloned().unwrap_or_default(),
                        &format!("{at}.{k}"),
                    );
                }
            }
            String::new()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            let i = (0..x.len()).find(|i| x[*i] != y[*i]).unwrap_or(0);
            first_difference(&x[i], &y[i], &format!("{at}[{i}]"))
        }
        _ => format!("{at}: installed {a} / file {b}"),
    }
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
    // NOTES.txt: next steps that work from a chart repository, no source paths.
    assert!(out.contains("helm show crds CHART --version NEW_VERSION | kubectl apply"), "NOTES.txt shown:\n{out}");
    assert!(out.contains("kubectl explain sendingpool.spec"), "NOTES.txt shown:\n{out}");
    for source_path in ["-f crds/", "-f examples/", "charts/sendfleet"] {
        assert!(!out.contains(source_path), "NOTES.txt names {source_path}:\n{out}");
    }
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
        "--instance-image=$(SENDFLEET_INSTANCE_IMAGE)",
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
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "SENDFLEET_INSTANCE_IMAGE", "RUST_LOG"]);
    assert_eq!(c["env"][2]["value"], "sendfleet:test", "the instances' default image");
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
        let mut want = triples(&cluster_role(""));
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

/// uid and spec of every sendfleet resource in `ns` (kind/name -> (uid, spec)).
fn resources(cp: &ControlPlane, ns: &str) -> std::collections::BTreeMap<String, (String, serde_json::Value)> {
    let mut out = std::collections::BTreeMap::new();
    for kind in ["sendingpools", "domainpolicies", "warmupplans"] {
        for o in get_json(cp, &[kind, "-n", ns]).unwrap()["items"].as_array().unwrap() {
            let name = o["metadata"]["name"].as_str().unwrap();
            let uid = o["metadata"]["uid"].as_str().unwrap().to_string();
            out.insert(format!("{kind}/{name}"), (uid, o["spec"]["egressIPs"].clone()));
        }
    }
    out
}

#[test]
fn crds_upgrade_from_an_old_release_without_a_checkout_and_resources_survive() {
    // Its own API server: the old release's CRDs are the first ones it sees.
    let cp = ControlPlane::start().expect("start a private control plane");
    let tmp = tempfile::tempdir().unwrap();
    let (ns, release) = ("sendfleet-system", "sendfleet");
    let helm = |args: &[&str]| chart_support::run_ok(cp.helm().args(args).current_dir(tmp.path()));
    let crd = |f: &str| get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]);

    // 1. The first release (0.1.0 from git history): its chart, packaged, and
    //    its examples in namespace mail.
    let (old_chart, old_examples) = chart_support::old_release(tmp.path());
    let old_tgz = chart_support::package(&mut cp.helm(), &old_chart, &tmp.path().join("old-pkg"));
    helm(&["install", release, old_tgz.to_str().unwrap(), "-n", ns, "--create-namespace"]);
    assert!(crd("egressaddressclaims").is_none(), "the old release has no EgressAddressClaim");
    cp.kubectl_run(&["create", "namespace", "mail"]).unwrap();
    cp.kubectl_run(&["apply", "-f", old_examples.to_str().unwrap()]).unwrap();
    let before = resources(&cp, "mail");
    assert_eq!(before.len(), 4, "{before:?}");

    // 2. Upgrade as docs/INSTALL.md says, from the package alone: its CRDs
    //    first (`helm show crds`, server-side apply), then the release.
    let new_tgz = chart_support::package(&mut cp.helm(), &repo().join("charts/sendfleet"), &tmp.path().join("pkg"));
    let crds = helm(&["show", "crds", new_tgz.to_str().unwrap()]);
    cp.kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &crds).unwrap();
    // As docs/INSTALL.md step 4: the apply creates the new kinds and sets
    // every field the new CRDs have (it would leave a field they dropped:
    // Helm's create owns it); the replace makes each CRD exactly the new one.
    cp.kubectl_stdin(&["replace", "-f", "-"], &crds).unwrap();
    helm(&["upgrade", release, new_tgz.to_str().unwrap(), "-n", ns]);
    for f in CRDS {
        cp.wait_crd_established(&format!("{f}.sendfleet.io")).unwrap();
        let file: serde_json::Value =
            serde_yaml::from_str(&read(&repo().join(format!("crds/{f}.sendfleet.io.yaml")))).unwrap();
        let (got, want) =
            (numbers_as_f64(&crd(f).unwrap()["spec"]["versions"]), numbers_as_f64(&file["spec"]["versions"]));
        assert!(
            got == want,
            "{f}: not upgraded to the new release's CRD: {}",
            first_difference(&got, &want, "versions")
        );
    }
    assert_eq!(resources(&cp, "mail"), before, "resources changed or lost by the CRD upgrade");
    // Still writable under the new schema (ratcheting keeps old values).
    cp.kubectl_run(&["label", "sendingpool", "outbound", "-n", "mail", "upgraded=yes"]).unwrap();

    // 3. Switch to templated CRDs (docs: adopt them once), then a later
    //    release whose SendingPool CRD changed: `helm upgrade` alone carries it.
    for f in CRDS {
        let name = format!("crd/{f}.sendfleet.io");
        cp.kubectl_run(&["label", &name, "app.kubernetes.io/managed-by=Helm", "--overwrite"]).unwrap();
        let (rn, rns) =
            (format!("meta.helm.sh/release-name={release}"), format!("meta.helm.sh/release-namespace={ns}"));
        cp.kubectl_run(&["annotate", &name, &rn, &rns, "--overwrite"]).unwrap();
    }
    helm(&["upgrade", release, new_tgz.to_str().unwrap(), "-n", ns, "--set", "crds.templated=true"]);
    assert_eq!(crd("sendingpools").unwrap()["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    let changed = chart_support::changed_chart(tmp.path(), "0.1.1");
    let changed_tgz = chart_support::package(&mut cp.helm(), &changed, &tmp.path().join("pkg2"));
    helm(&["upgrade", release, changed_tgz.to_str().unwrap(), "-n", ns, "--reuse-values"]);
    let columns = chart_support::printer_columns(&crd("sendingpools").unwrap());
    assert!(
        columns.iter().any(|c| c == chart_support::ADDED_COLUMN),
        "helm upgrade left the CRD as it was: {columns:?}"
    );
    assert_eq!(resources(&cp, "mail"), before);

    // 4. Uninstall keeps the CRDs (keep) and so every resource.
    helm(&["uninstall", release, "-n", ns, "--wait"]);
    assert!(get_json(&cp, &["deployment", release, "-n", ns]).is_none());
    for f in CRDS {
        assert!(crd(f).is_some(), "{f} deleted by uninstall");
    }
    assert_eq!(resources(&cp, "mail"), before, "resources lost by uninstall");
}

/// The reason strings of `conditions::Reason` (its `as_str` arms), read
/// from the source: the enum has no list of its variants.
fn condition_reasons() -> Vec<String> {
    let src = read(&repo().join("crates/render/src/conditions.rs"));
    let body = &src[src.find("impl Reason {").expect("impl Reason in conditions.rs")..];
    let body = &body[..body.find("\n}\n").unwrap()];
    body.lines()
        .filter_map(|l| {
            l.trim().strip_prefix("Self::")?.split_once(" => \"").map(|(_, s)| s.trim_end_matches("\",").to_string())
        })
        .collect()
}

#[test]
fn the_troubleshooting_page_explains_every_condition_reason_and_type() {
    let page = read(&repo().join("docs/TROUBLESHOOTING.md"));
    let reasons = condition_reasons();
    assert!(reasons.len() >= 30, "{reasons:?}");
    let missing: Vec<&String> =
        reasons.iter().filter(|r| !page.contains(&format!("`{r}`")) && !page.contains(&format!(" {r}`"))).collect();
    assert!(missing.is_empty(), "docs/TROUBLESHOOTING.md does not explain these reasons: {missing:?}");
    for t in sendfleet_render::conditions::ConditionType::ALL {
        assert!(page.contains(&format!("`{}", t.as_str())), "docs/TROUBLESHOOTING.md never names {}", t.as_str());
    }
}

#[test]
fn templated_crds_install_with_skip_crds_and_are_kept_on_uninstall() {
    let cp = ControlPlane::start().expect("start a private control plane");
    let (ns, chart) = ("sendfleet-system", repo().join("charts/sendfleet"));
    let chart = chart.to_str().unwrap();
    let install = |extra: &[&str]| {
        let mut c = cp.helm();
        c.args(["install", "sendfleet", chart, "-n", ns, "--create-namespace", "--set", "crds.templated=true"])
            .args(extra);
        c
    };
    // Without --skip-crds Helm creates them from crds/ first and then
    // refuses to adopt them: the message docs/TROUBLESHOOTING.md names.
    let err = run_fails(&mut install(&[]));
    assert!(err.contains("exists and cannot be imported into the current release"), "{err}");
    // (The failed install left no release; the CRDs it created go by hand.)
    for f in CRDS {
        cp.kubectl_run(&["delete", "crd", &format!("{f}.sendfleet.io")]).unwrap();
    }
    // As documented: --skip-crds, the release owns them, keep on uninstall.
    run(&mut install(&["--skip-crds"]));
    for f in CRDS {
        cp.wait_crd_established(&format!("{f}.sendfleet.io")).unwrap();
        let crd = get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]).unwrap();
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{f}");
        assert_eq!(crd["metadata"]["annotations"]["meta.helm.sh/release-name"], "sendfleet", "{f}");
    }
    let mut c = cp.helm();
    run(c.args(["uninstall", "sendfleet", "-n", ns, "--wait"]));
    for f in CRDS {
        assert!(get_json(&cp, &["crd", &format!("{f}.sendfleet.io")]).is_some(), "{f} deleted by uninstall");
    }
}
