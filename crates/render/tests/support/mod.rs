//! Shared test fixtures: the repository's examples/ and small builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sendfleet_render::api::*;
use serde::Deserialize;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[derive(Default)]
pub struct Resources {
    pub pools: Vec<SendingPool>,
    pub policies: Vec<DomainPolicy>,
    pub plans: Vec<WarmupPlan>,
}

/// Every resource in examples/*.yaml.
pub fn examples() -> Resources {
    let mut r = Resources::default();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("SendingPool") => r.pools.push(serde_yaml::from_value(v).unwrap()),
                Some("DomainPolicy") => r.policies.push(serde_yaml::from_value(v).unwrap()),
                Some("WarmupPlan") => r.plans.push(serde_yaml::from_value(v).unwrap()),
                _ => {}
            }
        }
    }
    r
}

/// A small valid pool, fixture style: `pool().build()`.
pub fn pool_yaml() -> &'static str {
    r#"
apiVersion: sendfleet.io/v1alpha1
kind: SendingPool
metadata: {name: p, namespace: ns}
spec:
  egressIPs:
    - {name: a, address: 192.0.2.1, heloName: a.example.com}
    - {name: b, address: 192.0.2.2, heloName: b.example.com}
"#
}

pub fn pool() -> SendingPool {
    serde_yaml::from_str(pool_yaml()).unwrap()
}

pub fn policy_yaml() -> &'static str {
    r#"
apiVersion: sendfleet.io/v1alpha1
kind: DomainPolicy
metadata: {name: dp, namespace: ns}
spec:
  domains: ["example.net", "*.example.net"]
  throttle: {connections: 2, messagesPerMinute: 30, processes: 3}
  route: {relayHost: relay.example.org, port: 2525}
  tls: {level: encrypt, minimumProtocol: TLSv1.2}
"#
}

pub fn policy() -> DomainPolicy {
    serde_yaml::from_str(policy_yaml()).unwrap()
}
