//! The agents' last answers, as the poller (`polling.rs`) left them, and
//! which agents a pool has to poll.
//!
//! Kept apart from the poller so the reconcile's [`Context`] can hold the
//! results without the store depending on the context (the poller does).
//!
//! Never: make a request itself; a reconcile reads what is here and, for a
//! pod that has no answer yet, asks the poller ([`Polls::request`]).
//!
//! [`Context`]: super::context::Context

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sendfleet_render::api::{EgressIP, EgressMode, SendingPool};
use sendfleet_render::contract::AgentStatus;
use sendfleet_render::objects::LABEL_INSTANCE;
use tokio::sync::mpsc::UnboundedSender;

use super::agent_client::PollError;
use super::fleet::PoolKey;

/// One agent to poll: the instance, where it answers, the pod it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance: String,
    pub host: String,
    pub pod: String,
}

/// The agents of `pool` that can be polled: instances whose pod is
/// Running. Pinned instances (host network, Multus) answer on their egress
/// address; the others on their pod IP.
pub fn targets(pool: &SendingPool, pods: &[Pod], retired: &[EgressIP]) -> Vec<Target> {
    let pinned = matches!(pool.spec.egress.mode, EgressMode::HostNetwork | EgressMode::Multus);
    // Removed IPs still draining are polled too: their queue count decides
    // when their StatefulSet may go (`pool/drain.rs`).
    pool.spec
        .egress_ips
        .iter()
        .chain(retired)
        .filter_map(|inst| {
            let pod = pods.iter().find(|p| p.labels().get(LABEL_INSTANCE) == Some(&inst.name))?;
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let host = if pinned { Some(inst.address.clone()) } else { pod.status.as_ref()?.pod_ip.clone() };
            Some(Target { instance: inst.name.clone(), host: host.filter(|_| running)?, pod: pod.name_any() })
        })
        .collect()
}

/// One poll's result, with whom it asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub target: Target,
    pub result: Result<AgentStatus, PollError>,
}

/// The last poll of every pool's agents (instance -> record), and the
/// running poller's request queue.
#[derive(Default)]
pub struct Polls {
    results: Mutex<HashMap<PoolKey, BTreeMap<String, Record>>>,
    requests: Mutex<Option<UnboundedSender<PoolKey>>>,
}

impl Polls {
    /// The results for `targets` (a record of another pod or address is
    /// not theirs), and the targets that have none yet.
    pub fn for_targets(
        &self,
        key: &PoolKey,
        targets: &[Target],
    ) -> (BTreeMap<String, Result<AgentStatus, PollError>>, usize) {
        let results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        let mut missing = 0;
        for t in targets {
            match results.get(key).and_then(|r| r.get(&t.instance)).filter(|r| r.target == *t) {
                Some(r) => {
                    out.insert(t.instance.clone(), r.result.clone());
                }
                None => missing += 1,
            }
        }
        (out, missing)
    }

    /// The running poller's request queue (one per leadership term).
    pub(super) fn attach(&self, tx: UnboundedSender<PoolKey>) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Ask the poller to poll `key` now (no-op when none runs).
    pub fn request(&self, key: PoolKey) {
        if let Some(tx) = self.requests.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(key);
        }
    }

    /// Store a round's records; whether they differ from the last ones.
    pub(super) fn set(&self, key: &PoolKey, records: BTreeMap<String, Record>) -> bool {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let changed = results.get(key).unwrap_or(&BTreeMap::new()) != &records;
        if records.is_empty() {
            results.remove(key);
        } else {
            results.insert(key.clone(), records);
        }
        changed
    }
}
