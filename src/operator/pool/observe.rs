//! Step 2, observe: what the pool's instances and the DNS say right now —
//! the pool's StatefulSets and pods (from the watch-fed caches,
//! `crate::operator::cache`), each running instance's agent report (the
//! poller's last answer, `crate::operator::polling`: polls run on their own
//! schedule, so a slow or dead agent never holds a reconcile), the last
//! finished DNSBL/authentication sweep (starting the next one when due), and
//! the fleet index updated with the agents' own decisions.
//!
//! A report is used only from the pod and address that were polled (the
//! poller checks identity; a result recorded for another pod is not this
//! instance's). A running instance without a result yet asks the poller for
//! a round at once; its result wakes the pool.
//!
//! The agents' answers are read before the render because their decisions
//! feed it: an instance that excluded itself for a domain must not receive
//! that domain's mail from its peers. An agent that cannot be reached is
//! that instance's result, never the pool's error; DNS findings are never
//! errors either. This step makes no API request.
//!
//! An instance whose StatefulSet exists but has no pod is looked up in the
//! StatefulSet controller's `FailedCreate` Events (cached: the refusal of
//! Pod Security admission or a quota is recorded nowhere else).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sendfleet_render::api::{EgressIP, SendingPool};
use sendfleet_render::contract::{AdaptiveStatus, AgentStatus};
use sendfleet_render::objects::LABEL_INSTANCE;

use super::dereference::Refs;
use crate::operator::cache::Caches;
use crate::operator::context::Context;
use crate::operator::error::Retry;
use crate::operator::reputation::Findings;
use crate::operator::{events, polls};

/// What observe saw.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub statefulsets: Vec<StatefulSet>,
    pub pods: Vec<Pod>,
    /// Each polled instance's agent report (or why it could not be read).
    pub agents: BTreeMap<String, Result<AgentStatus, String>>,
    /// The fleet index's entry for this pool after recording the polls.
    pub adaptive: BTreeMap<String, AdaptiveStatus>,
    /// DNSBL and authentication findings of the last finished sweep.
    pub findings: Findings,
    /// StatefulSet name -> why the StatefulSet controller could not create
    /// its pod (the latest `FailedCreate` Event's message), for the
    /// instances that have a StatefulSet but no pod.
    pub failed_creates: BTreeMap<String, String>,
    /// Egress IPs removed from the spec whose StatefulSet is still there:
    /// they drain (`drain.rs`).
    pub retired: Vec<EgressIP>,
}

impl Observed {
    /// The instances whose pod is missing or not Ready (or being deleted).
    pub fn not_ready(&self, pool: &SendingPool) -> BTreeSet<String> {
        pool.spec
            .egress_ips
            .iter()
            .filter(|ip| !self.pods.iter().any(|p| p.labels().get(LABEL_INSTANCE) == Some(&ip.name) && pod_ready(p)))
            .map(|ip| ip.name.clone())
            .collect()
    }
}

/// The pod's `Ready` condition is True and it is not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the pods of pool {pool}")]
    ListPods {
        pool: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the StatefulSets of pool {pool}")]
    ListStatefulSets {
        pool: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::ListPods { .. } => "ListPods",
            Error::ListStatefulSets { .. } => "ListStatefulSets",
        }
    }

    pub fn retry(&self) -> Retry {
        Retry::Transient
    }
}

pub async fn observe(ctx: &Context, pool: &SendingPool, refs: &Refs) -> Result<Observed, Error> {
    let (ns, name) = (refs.namespace.as_str(), refs.name.as_str());
    let findings = ctx.reputation.check(&ctx.client, pool, &refs.policies);
    for change in &findings.changes {
        tracing::info!(namespace = ns, pool = name, change = %change, "DNSBL listing changed");
        events::warning(ctx, pool, "ListingChanged", "CheckReputation", change).await;
    }
    ctx.metrics.record_listings(ns, name, pool, &findings);

    let caches = ctx.caches();
    let pods = Caches::of_pool(&caches.pods, ns, name);
    let statefulsets = Caches::of_pool(&caches.statefulsets, ns, name);
    let failed_creates = failed_creates(&caches, ns, &statefulsets, &pods);
    let retired = super::drain::retired(pool, &statefulsets);
    // The agents' last answers (the poller's, never a request from here);
    // an instance that has none yet is polled at once and wakes the pool.
    let key = (ns.to_string(), name.to_string());
    let (agents, unpolled) = ctx.polls.for_targets(&key, &polls::targets(pool, &pods, &retired));
    if unpolled > 0 {
        ctx.polls.request(key.clone());
    }
    let agents = agents.into_iter().map(|(i, r)| (i, r.map_err(|e| e.to_string()))).collect();
    let instance_names: Vec<String> = pool.spec.egress_ips.iter().map(|ip| ip.name.clone()).collect();
    let adaptive = ctx.fleet.record(&key, &instance_names, &agents);
    Ok(Observed { statefulsets, pods, agents, adaptive, findings, failed_creates, retired })
}

/// The latest `FailedCreate` Event of each StatefulSet (this very object,
/// by uid) that has no pod, from the cache of such Events.
fn failed_creates(caches: &Caches, ns: &str, statefulsets: &[StatefulSet], pods: &[Pod]) -> BTreeMap<String, String> {
    let has_pod = |sts: &StatefulSet| {
        let name = sts.metadata.name.as_deref().unwrap_or_default();
        pods.iter().any(|p| p.metadata.name.as_deref() == Some(&format!("{name}-0")))
    };
    let podless: BTreeMap<&str, &str> = statefulsets
        .iter()
        .filter(|s| !has_pod(s))
        .filter_map(|s| Some((s.metadata.uid.as_deref()?, s.metadata.name.as_deref()?)))
        .collect();
    if podless.is_empty() {
        return BTreeMap::new();
    }
    let events: Vec<Event> = caches
        .failed_creates
        .state()
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == Some(ns))
        .map(|e| (**e).clone())
        .collect();
    latest_failed_creates(&podless, events)
}

/// Pure part of [`failed_creates`]: per StatefulSet (uid -> name), the
/// message of its most recent event.
fn latest_failed_creates(podless: &BTreeMap<&str, &str>, events: Vec<Event>) -> BTreeMap<String, String> {
    let mut latest: BTreeMap<String, (Option<Timestamp>, String)> = BTreeMap::new();
    for e in events {
        let Some(name) = e.involved_object.uid.as_deref().and_then(|uid| podless.get(uid)) else { continue };
        let when = e.last_timestamp.map(|t| t.0).or(e.event_time.map(|t| t.0));
        let message = e.message.unwrap_or_default();
        match latest.get(*name) {
            Some((seen, _)) if *seen > when => {}
            _ => {
                latest.insert(name.to_string(), (when, message));
            }
        }
    }
    latest.into_iter().map(|(name, (_, message))| (name, message)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, at: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("e-{at}")},
            "involvedObject": {"kind": "StatefulSet", "uid": uid},
            "lastTimestamp": at,
            "message": message,
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_failed_create_of_each_podless_statefulset() {
        let podless = BTreeMap::from([("u1", "p-a"), ("u2", "p-b")]);
        let events = vec![
            event("u1", "2026-12-02T03:00:02Z", "newer"),
            event("u1", "2026-12-02T03:00:01Z", "older"),
            event("u2", "2026-12-02T03:00:00Z", "b refused"),
            // A deleted StatefulSet of the same name, or another object.
            event("u9", "2026-12-02T03:00:09Z", "not ours"),
        ];
        assert_eq!(
            latest_failed_creates(&podless, events),
            BTreeMap::from([("p-a".to_string(), "newer".to_string()), ("p-b".to_string(), "b refused".to_string())])
        );
    }
}
