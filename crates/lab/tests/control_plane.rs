//! The lab itself, against the real upstream binaries: the control plane
//! starts and reports the version we built, CEL validation runs at
//! admission, RBAC is enforced for minted identities, the garbage collector
//! (kube-controller-manager) works, helm installs into it, and the API
//! server can be restarted in place.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sendfleet_lab::{ControlPlane, LabError};

/// kubectl with a given kubeconfig (not the admin one).
fn kubectl_as(cp: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(cp.kubectl_path()).arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("run kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn control_plane_is_ready_and_reports_the_built_version() {
    let cp = ControlPlane::shared();
    assert!(cp.server().starts_with("https://127.0.0.1:"), "{}", cp.server());
    let readyz = cp.kubectl_run(&["get", "--raw", "/readyz"]).unwrap();
    assert_eq!(readyz.trim(), "ok");
    let v: serde_json::Value = serde_json::from_str(&cp.kubectl_run(&["version", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.37.2", "{v}");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.37.2", "{v}");
    // RBAC is the authorizer: the bootstrap roles exist.
    cp.kubectl_run(&["get", "clusterrole", "cluster-admin"]).unwrap();
}

#[test]
fn namespaces_are_unique_per_test() {
    let cp = ControlPlane::shared();
    let a = cp.namespace("Same_Prefix").unwrap();
    let b = cp.namespace("Same_Prefix").unwrap();
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("same-prefix-"), "{}", a.name());
    let phase = cp.kubectl_run(&["get", "ns", a.name(), "-o", "jsonpath={.status.phase}"]).unwrap();
    assert_eq!(phase, "Active");
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.lab.sendfleet.io
spec:
  group: lab.sendfleet.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: "self.minReplicas <= self.maxReplicas"
              message: "minReplicas must not exceed maxReplicas"
              fieldPath: ".minReplicas"
"#;

#[test]
fn crd_with_cel_rule_is_established_and_enforced_at_admission() {
    let cp = ControlPlane::shared();
    cp.apply(WIDGET_CRD).unwrap();
    cp.wait_crd_established("widgets.lab.sendfleet.io").unwrap();
    let ns = cp.namespace("cel").unwrap();
    let widget = |name: &str, min: i64, max: i64| {
        format!(
            "apiVersion: lab.sendfleet.io/v1\nkind: Widget\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{minReplicas: {min}, maxReplicas: {max}}}\n"
        )
    };
    cp.apply(&widget("good", 1, 3)).unwrap();
    let err = cp.apply(&widget("bad", 5, 3)).unwrap_err();
    let LabError::Command { stderr, .. } = &err else {
        panic!("expected a refused apply, got {err}");
    };
    assert!(
        stderr.contains("minReplicas must not exceed maxReplicas") && stderr.contains("spec.minReplicas"),
        "{stderr}"
    );
    let names = cp.kubectl_run(&["get", "widgets", "-n", ns.name(), "-o", "name"]).unwrap();
    assert_eq!(names.trim(), "widget.lab.sendfleet.io/good");
}

#[test]
fn service_account_token_has_only_what_rbac_grants() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("rbac").unwrap();
    let kc = cp.kubeconfig_for_service_account(ns.name(), "reader").unwrap();
    let who = kubectl_as(cp, &kc, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]).unwrap();
    assert_eq!(who, format!("system:serviceaccount:{}:reader", ns.name()));

    // Authenticated, but no RBAC grant yet: refused.
    let err = kubectl_as(cp, &kc, &["get", "configmaps", "-n", ns.name()]).unwrap_err();
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");

    cp.kubectl_run(&["create", "role", "cm-reader", "-n", ns.name(), "--verb=get,list", "--resource=configmaps"])
        .unwrap();
    cp.kubectl_run(&[
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        ns.name(),
        "--role=cm-reader",
        &format!("--serviceaccount={}:reader", ns.name()),
    ])
    .unwrap();
    // RBAC changes take effect at once (the authorizer reads an informer;
    // allow it a moment to see the binding).
    let t0 = Instant::now();
    loop {
        match kubectl_as(cp, &kc, &["get", "configmaps", "-n", ns.name()]) {
            Ok(_) => break,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("still refused: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    // ... and nothing more: not in another namespace, not another verb.
    let err = kubectl_as(cp, &kc, &["get", "configmaps", "-n", "kube-system"]).unwrap_err();
    assert!(err.contains("forbidden"), "{err}");
    let err = kubectl_as(cp, &kc, &["create", "configmap", "x", "-n", ns.name()]).unwrap_err();
    assert!(err.contains("forbidden"), "{err}");
}

#[test]
fn client_certificate_identity_is_authenticated_and_authorized_by_rbac() {
    let cp = ControlPlane::shared();
    let kc = cp.kubeconfig_for_user("alice", Some("lab-devs")).unwrap();
    let who: serde_json::Value =
        serde_json::from_str(&kubectl_as(cp, &kc, &["auth", "whoami", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice", "{who}");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("lab-devs"), "{groups}");
    let err = kubectl_as(cp, &kc, &["get", "namespaces"]).unwrap_err();
    assert!(err.contains("forbidden") && err.contains("alice"), "{err}");
}

#[test]
fn garbage_collector_removes_owned_objects() {
    let cp = ControlPlane::shared();
    cp.ensure_controller_manager().unwrap();
    assert!(cp.has_controller_manager());
    let ns = cp.namespace("gc").unwrap();
    cp.kubectl_run(&["create", "configmap", "parent", "-n", ns.name()]).unwrap();
    let uid =
        cp.kubectl_run(&["get", "configmap", "parent", "-n", ns.name(), "-o", "jsonpath={.metadata.uid}"]).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child\n  namespace: {ns}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: parent, uid: {uid}}}\n"
    ))
    .unwrap();
    cp.kubectl_run(&["delete", "configmap", "parent", "-n", ns.name(), "--wait=false"]).unwrap();
    let t0 = Instant::now();
    loop {
        let out = cp
            .kubectl_run(&["get", "configmap", "child", "-n", ns.name(), "--ignore-not-found", "-o", "name"])
            .unwrap();
        if out.trim().is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "child still present after 60 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn helm_installs_a_chart_into_the_lab() {
    let cp = ControlPlane::shared();
    let version = cp.helm().args(["version", "--short"]).output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("v3.22.0"), "{version:?}");
    let ns = cp.namespace("helm").unwrap();
    let chart = cp.dir().join("charts/hello");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: hello\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {greeting: {{ .Values.greeting | quote }}}\n",
    )
    .unwrap();
    let out = cp
        .helm()
        .args(["install", "hello"])
        .arg(&chart)
        .args(["-n", ns.name(), "--set", "greeting=hi", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data =
        cp.kubectl_run(&["get", "configmap", "hello", "-n", ns.name(), "-o", "jsonpath={.data.greeting}"]).unwrap();
    assert_eq!(data, "hi");
}

#[test]
fn apiserver_restarts_in_place_and_keeps_its_state() {
    // Its own control plane: restarting the shared one would disturb the
    // tests running beside this one.
    let cp = ControlPlane::start().unwrap();
    let server = cp.server().to_string();
    cp.kubectl_run(&["create", "configmap", "before-restart", "-n", "default", "--from-literal=k=v"]).unwrap();
    let pid_before = cp.apiserver_pid();
    let took = cp.restart_apiserver().unwrap();
    assert_ne!(cp.apiserver_pid(), pid_before, "a new process must serve");
    assert_eq!(cp.server(), server);
    assert_eq!(cp.kubectl_run(&["get", "--raw", "/readyz"]).unwrap().trim(), "ok");
    let v =
        cp.kubectl_run(&["get", "configmap", "before-restart", "-n", "default", "-o", "jsonpath={.data.k}"]).unwrap();
    assert_eq!(v, "v");
    eprintln!("API server restart took {took:?}");
}
