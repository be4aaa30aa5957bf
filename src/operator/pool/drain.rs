//! Draining the instance of an egress IP removed from the spec: it stays
//! rendered — out of rotation, `draining` in its policy, its StatefulSet
//! exactly as it was — until its agent reports the draining configuration
//! loaded and an empty queue; then its StatefulSet is deleted in the
//! foreground (the object stays until its pod is gone, so the address
//! claim, which `claims.rs` holds while a StatefulSet carries the address,
//! is released only after the pod has stopped binding it), and its queue
//! claim after it unless `spec.drain.keepQueueVolumes`.
//!
//! Which IPs are retired is read from the pool's StatefulSets: one whose
//! instance the spec no longer lists carries the egress IP it was rendered
//! for (`objects::ANNOTATION_EGRESS_IP`). So the state of a drain is the
//! cluster's, not the operator's memory: a restart continues it.
//!
//! Also here: which spec addresses have no finished DNS check yet (they
//! are rendered out of rotation: Pending is not clean).
//!
//! Never: delete a StatefulSet whose agent has not reported an empty queue
//! under the draining configuration, or a queue claim of an instance still
//! in the spec.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams};
use kube::ResourceExt;
use sendfleet_render::api::{EgressIP, SendingPool};
use sendfleet_render::contract::AgentStatus;
use sendfleet_render::objects::{egress_ip_of, instance_object_name, LABEL_INSTANCE};
use sendfleet_render::render::RenderedPool;

use crate::operator::context::Context;
use crate::operator::reputation::Findings;

/// The volume claim template's name (`objects.rs`): a StatefulSet's queue
/// claim is `queue-<statefulset>-0`.
const QUEUE_CLAIM_TEMPLATE: &str = "queue";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting {kind} {name} of a drained instance")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        "DeleteDrained"
    }
}

/// The egress IPs of the pool's StatefulSets whose instance the spec no
/// longer lists (and that are not already being deleted). Pure.
pub fn retired(pool: &SendingPool, statefulsets: &[StatefulSet]) -> Vec<EgressIP> {
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let listed = |name: &str| pool.spec.egress_ips.iter().any(|ip| ip.name == name);
    statefulsets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| {
            let instance = s.labels().get(LABEL_INSTANCE).filter(|i| !listed(i))?;
            let ip = egress_ip_of(s)?;
            // The annotation names this StatefulSet's own instance: a
            // copied annotation must not revive another name.
            let own = ip.name == *instance
                && s.metadata.name.as_deref() == Some(instance_object_name(pool_name, instance).as_str());
            own.then_some(ip)
        })
        .collect()
}

/// Spec instances whose address has no finished DNS check. Pure.
pub fn unchecked(pool: &SendingPool, findings: &Findings) -> BTreeSet<String> {
    pool.spec
        .egress_ips
        .iter()
        .filter(|ip| !findings.checked.contains_key(&ip.address))
        .map(|ip| ip.name.clone())
        .collect()
}

/// Messages in all of an agent's queues at its last scan.
pub fn queued(agent: &AgentStatus) -> u64 {
    agent.queue.messages.values().sum()
}

/// The agent runs `config_hash` and its last scan, made after it loaded
/// it, found the queue empty.
pub fn empty_under(agent: &AgentStatus, config_hash: &str) -> bool {
    agent.config.loaded_hash.as_deref() == Some(config_hash)
        && agent.queue.error.is_none()
        && agent.queue.scanned_at.is_some_and(|scanned| agent.config.loaded_at.is_none_or(|l| scanned >= l))
        && queued(agent) == 0
}

/// The retired instances whose queue is empty under their draining
/// configuration: their objects can go. Pure.
pub fn drained(
    rendered: &RenderedPool,
    retired: &[EgressIP],
    agents: &BTreeMap<String, Result<AgentStatus, String>>,
) -> BTreeSet<String> {
    retired
        .iter()
        .filter_map(|ip| {
            let inst = rendered.instances.iter().find(|i| i.name == ip.name)?;
            let agent = agents.get(&ip.name)?.as_ref().ok()?;
            empty_under(agent, &inst.config_hash).then(|| ip.name.clone())
        })
        .collect()
}

/// Delete the drained instances' StatefulSets in the foreground, then their
/// queue claims (unless kept). The claims' `pvc-protection` keeps them until
/// the pods are gone.
pub async fn remove(ctx: &Context, pool: &SendingPool, ns: &str, drained: &BTreeSet<String>) -> Result<(), Error> {
    let pool_name = pool.name_any();
    let keep = pool.spec.drain.as_ref().is_some_and(|d| d.keep_queue_volumes);
    for name in drained {
        let sts = instance_object_name(&pool_name, name);
        let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns);
        match api.delete(&sts, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Delete { kind: "StatefulSet", name: sts, source }),
        }
        ctx.metrics.wrote("StatefulSet");
        tracing::info!(namespace = ns, pool = %pool_name, instance = %name, "drained: deleting its StatefulSet");
        if keep {
            continue;
        }
        let claim = format!("{QUEUE_CLAIM_TEMPLATE}-{sts}-0");
        let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
        match claims.delete(&claim, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Delete { kind: "PersistentVolumeClaim", name: claim, source }),
        }
        ctx.metrics.wrote("PersistentVolumeClaim");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::objects::ANNOTATION_EGRESS_IP;

    fn pool() -> SendingPool {
        serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: ns}\nspec:\n  egressIPs: [{name: a, address: 192.0.2.1, heloName: a.example.com}]\n",
        )
        .unwrap()
    }

    fn sts(name: &str, instance: &str, ip: &str) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {LABEL_INSTANCE: instance}, "annotations": {ANNOTATION_EGRESS_IP: ip}}
        }))
        .unwrap()
    }

    #[test]
    fn a_statefulset_whose_instance_left_the_spec_is_retired_with_its_own_egress_ip() {
        let b = r#"{"name":"b","address":"192.0.2.2","heloName":"b.example.com"}"#;
        let a = r#"{"name":"a","address":"192.0.2.1","heloName":"a.example.com"}"#;
        let found = retired(&pool(), &[sts("p-a", "a", a), sts("p-b", "b", b), sts("p-c", "c", b)]);
        let names: Vec<&str> = found.iter().map(|ip| ip.name.as_str()).collect();
        assert_eq!(names, ["b"], "a is in the spec; p-c's annotation names another instance");
        assert_eq!(found[0].helo_name, "b.example.com");
    }

    #[test]
    fn a_queue_is_empty_only_when_scanned_under_the_draining_config() {
        let mut agent = AgentStatus::default();
        agent.config.loaded_hash = Some("h2".into());
        agent.config.loaded_at = Some(100);
        agent.queue.scanned_at = Some(101);
        assert!(empty_under(&agent, "h2"));
        assert!(!empty_under(&agent, "h1"), "the draining config is not loaded yet");
        agent.queue.messages.insert("deferred".into(), 3);
        assert!(!empty_under(&agent, "h2"));
        agent.queue.messages.clear();
        agent.queue.scanned_at = Some(99);
        assert!(!empty_under(&agent, "h2"), "the last scan predates the config");
    }
}
