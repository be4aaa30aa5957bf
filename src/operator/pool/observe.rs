//! Step 2, observe: what the pool's instances and the DNS say right now —
//! the pool's StatefulSets and pods, each running instance's agent
//! (`/status`, polled concurrently), the last finished DNSBL/authentication
//! sweep (starting the next one when due), and the fleet index updated with
//! the agents' own decisions.
//!
//! The agents are polled before the render because their decisions feed it:
//! an instance that excluded itself for a domain must not receive that
//! domain's mail from its peers. An agent that cannot be reached is that
//! instance's result, never the pool's error; DNS findings are never errors
//! either. Only listing the pool's objects can fail this step.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use sendfleet_render::api::{EgressMode, SendingPool};
use sendfleet_render::contract::{AdaptiveStatus, AgentStatus};
use sendfleet_render::objects::{LABEL_INSTANCE, LABEL_POOL};

use super::dereference::Refs;
use crate::operator::context::Context;
use crate::operator::error::Retry;
use crate::operator::reputation::Findings;
use crate::operator::{agent_client, events};

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

    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={name}"));
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|source| Error::ListPods { pool: name.into(), source })?
        .items;
    let statefulsets = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|source| Error::ListStatefulSets { pool: name.into(), source })?
        .items;
    let agents = poll_agents(pool, &pods, ctx.settings.agent_port).await;
    let instance_names: Vec<String> = pool.spec.egress_ips.iter().map(|ip| ip.name.clone()).collect();
    let adaptive = ctx.fleet.record(&(ns.to_string(), name.to_string()), &instance_names, &agents);
    Ok(Observed { statefulsets, pods, agents, adaptive, findings })
}

/// Poll the agent of every instance whose pod is running, concurrently.
/// Pinned instances (host network, Multus) answer on their egress address;
/// the others on their pod IP.
async fn poll_agents(pool: &SendingPool, pods: &[Pod], port: u16) -> BTreeMap<String, Result<AgentStatus, String>> {
    let pinned = matches!(pool.spec.egress.mode, EgressMode::HostNetwork | EgressMode::Multus);
    let polls = pool.spec.egress_ips.iter().filter_map(|inst| {
        let pod = pods.iter().find(|p| p.labels().get(LABEL_INSTANCE) == Some(&inst.name))?;
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let host = if pinned { Some(inst.address.clone()) } else { pod.status.as_ref()?.pod_ip.clone() };
        let host = host.filter(|_| running)?;
        let name = inst.name.clone();
        Some(async move { (name, agent_client::fetch_status(&host, port).await) })
    });
    futures::future::join_all(polls).await.into_iter().collect()
}
