//! The lab's kubeconfigs work for kube-rs (rustls) clients, the way the
//! operator's tests use them: TLS verified against the lab CA (no
//! insecure-skip), admin token and ServiceAccount token both accepted, and
//! RBAC applied to the latter.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use sendfleet_lab::ControlPlane;

async fn client(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    assert!(!cfg.accept_invalid_certs, "the lab must not need insecure TLS");
    Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn kube_rs_client_verifies_tls_and_is_subject_to_rbac() {
    let cp = ControlPlane::shared();
    let admin = client(cp.kubeconfig()).await;
    let names: Vec<String> = Api::<Namespace>::all(admin)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");

    let ns = cp.namespace("kube-rs").unwrap();
    let sa = cp.kubeconfig_for_service_account(ns.name(), "nobody").unwrap();
    let err =
        Api::<ConfigMap>::namespaced(client(&sa).await, ns.name()).list(&ListParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }
}
