//! Reconcile one SendingPool, as a pipeline:
//!
//! 1. dereference — read the namespace's DomainPolicies, the WarmupPlan and
//!    the other pools (routes) from the API;
//! 2. render — the pure core turns them into objects and Postfix files;
//! 3. apply — server-side apply in order (ServiceAccount, ConfigMaps,
//!    Services, StatefulSets, PDB), leaving objects already as desired alone;
//! 4. prune — delete the pool's objects no longer desired;
//! 5. status — derive conditions from what was observed and patch /status
//!    only when something other than a timestamp changed; an Event per flip.
//!
//! An invalid spec stops at step 2: Ready=False with the field-naming
//! message, and the pool waits for a change instead of retrying.
//!
//! No finalizer: everything a pool creates is a namespaced object it owns
//! (owner references), so the garbage collector removes it; nothing outside
//! the cluster (DNS records, external state) needs cleaning up. Queue
//! volumes are deliberately kept (StatefulSet retention `Retain`).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::conditions::{types, Observation, TRUE};
use sendfleet_render::objects::{self, hash_key_secret_name, FIELD_MANAGER, LABEL_POOL};
use sendfleet_render::render::{self, Observed as RenderObserved, PoolInput, RenderedPool, Settings};

use std::collections::BTreeMap;

use sendfleet_render::api::EgressMode;
use sendfleet_render::contract::AgentStatus;
use sendfleet_render::objects::LABEL_INSTANCE;

use super::agent_client;
use super::apply;
use super::error::{Error, Result};
use super::metrics::Metrics;
use super::status;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// DNSBL and authentication state of every pool.
    pub reputation: super::reputation::Reputation,
    /// Requeue interval of a converged pool.
    pub resync: std::time::Duration,
    /// How often running instances' agents are polled.
    pub agent_poll: std::time::Duration,
    /// What every instance's agent last decided on its own (exclusions,
    /// slow-downs, warm-up progress).
    pub fleet: super::fleet::FleetIndex,
}

/// Entry point for the controller: time it, hand off, record.
pub async fn reconcile(pool: Arc<SendingPool>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let start = Instant::now();
    let result = reconcile_pool(&pool, &ctx).await;
    ctx.metrics.observe(start.elapsed(), result.as_ref().err().map(Error::category));
    result
}

/// Requeue by kind of error; an invalid spec waits for a change.
pub fn error_policy(pool: Arc<SendingPool>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = pool.namespace().as_deref().unwrap_or(""), pool = %pool.name_any(), category = error.category(), %error, "reconcile failed");
    match error.requeue() {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

async fn reconcile_pool(pool: &SendingPool, ctx: &Context) -> Result<Action> {
    let ns = pool.namespace().ok_or_else(|| Error::InvalidSpec("SendingPool has no namespace".into()))?;
    let name = pool.name_any();
    let client = &ctx.client;

    // 1. dereference
    let policies = Api::<DomainPolicy>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?.items;
    let pools = Api::<SendingPool>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?.items;
    let plan = match &pool.spec.warmup_plan_ref {
        Some(p) => match Api::<WarmupPlan>::namespaced(client.clone(), &ns).get_opt(p).await? {
            Some(plan) => Some(plan),
            None => {
                let msg = format!("spec.warmupPlanRef: WarmupPlan {p:?} not found in namespace {ns}");
                write_status(pool, ctx, Err(msg.clone()), &[], &[], &BTreeMap::new(), None).await?;
                return Err(Error::MissingReference(msg));
            }
        },
        None => None,
    };

    // Reputation: sweep if due (findings, never errors).
    let findings = ctx.reputation.check(client, pool);
    for change in &findings.changes {
        tracing::info!(namespace = %ns, pool = %name, change = %change, "DNSBL listing changed");
        publish_note(ctx, pool, "ListingChanged", change).await;
    }

    for ip in &pool.spec.egress_ips {
        let listed = findings.listings.get(&ip.name);
        let zones = listed.map(|l| l.iter().map(|x| x.zone.clone()).collect::<Vec<_>>()).unwrap_or_default();
        for zone in findings.zones.iter() {
            let labels = super::metrics::ListingLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                instance: ip.name.clone(),
                zone: zone.clone(),
            };
            ctx.metrics.listed.get_or_create(&labels).set(i64::from(zones.contains(zone)));
        }
    }

    // The agents' own decisions feed the render (an instance that excluded
    // itself for a domain must not receive that domain's mail from peers),
    // so they are polled first.
    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={name}"));
    let pods = Api::<Pod>::namespaced(client.clone(), &ns).list(&lp).await?.items;
    let agents = poll_agents(pool, &pods, ctx.settings.agent_port).await;
    let instance_names: Vec<String> = pool.spec.egress_ips.iter().map(|ip| ip.name.clone()).collect();
    let adaptive = ctx.fleet.record(&(ns.clone(), name.clone()), &instance_names, &agents);
    let now_unix = k8s_openapi::jiff::Timestamp::now().as_second().max(0) as u64;

    // 2. render
    let observed = RenderObserved {
        quarantined: findings.quarantined.clone(),
        exclusions: super::fleet::exclusions_in_force(&adaptive, now_unix),
        warmup_day: super::fleet::warmup_steps(&adaptive),
    };
    let input = PoolInput { pool, policies: &policies, plan: plan.as_ref(), pools: &pools, observed: &observed };
    let rendered = match render::render_pool(input, &ctx.settings) {
        Ok(r) => r,
        Err(e) => {
            let err = Error::from(e);
            write_status(pool, ctx, Err(err.to_string()), &[], &[], &BTreeMap::new(), Some(&findings)).await?;
            return Err(err);
        }
    };
    for e in &rendered.invalid_policies {
        tracing::warn!(namespace = %ns, pool = %name, error = %e, "ignoring invalid DomainPolicy");
    }

    // 3. apply, 4. prune
    ensure_hash_key(client, &ns, pool, &ctx.metrics).await?;
    let desired = objects::build(pool, &rendered, &ctx.settings);
    apply::apply(client, &ns, &desired, &ctx.metrics).await?;
    if let Some(uid) = pool.uid() {
        apply::prune(client, &ns, &name, &uid, &desired, &ctx.metrics).await?;
    }

    // 5. status: the pool's, then the namespace's DomainPolicies' and
    // WarmupPlans' (they summarise every pool they apply to).
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns).list(&lp).await?.items;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns).list(&lp).await?.items;
    write_status(pool, ctx, Ok(&rendered), &statefulsets, &pods, &agents, Some(&findings)).await?;
    let plans = Api::<WarmupPlan>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?.items;
    let pool_names: Vec<String> = pools.iter().map(|p| p.name_any()).collect();
    let reports = ctx.fleet.reports(&ns, &pool_names);
    super::fleet_status::write_namespace(client, &ctx.metrics, &policies, &plans, &pools, &reports).await?;
    // While instances run, their agents are polled on a short cycle; a pool
    // with nothing running only needs the slow resync.
    let requeue = if agents.is_empty() { ctx.resync } else { ctx.resync.min(ctx.agent_poll) };
    let requeue = requeue.min(findings.next_sweep_in);
    tracing::debug!(namespace = %ns, pool = %name, requeue_after = ?requeue, "reconciled");
    Ok(Action::requeue(requeue))
}

async fn write_status(
    pool: &SendingPool,
    ctx: &Context,
    rendered: std::result::Result<&RenderedPool, String>,
    statefulsets: &[StatefulSet],
    pods: &[Pod],
    agents: &BTreeMap<String, std::result::Result<AgentStatus, String>>,
    reputation: Option<&super::reputation::Findings>,
) -> Result<()> {
    let obs = status::Observed { rendered, statefulsets, pods, agents, reputation };
    let (new, flipped) = status::derive(pool, &obs, k8s_openapi::jiff::Timestamp::now());
    if !status::changed(pool.status.as_ref(), &new) {
        return Ok(());
    }
    let api: Api<SendingPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "sendfleet.io/v1alpha1",
        "kind": "SendingPool",
        "status": new,
    });
    api.patch_status(&pool.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.wrote("SendingPoolStatus");
    for o in flipped {
        publish(ctx, pool, &o).await;
    }
    Ok(())
}

/// Poll the agent of every instance whose pod is running, concurrently.
/// Pinned instances (host network, Multus) answer on their egress address;
/// the others on their pod IP.
async fn poll_agents(
    pool: &SendingPool,
    pods: &[Pod],
    port: u16,
) -> BTreeMap<String, std::result::Result<AgentStatus, String>> {
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

/// An Event for a condition that changed status.
async fn publish(ctx: &Context, pool: &SendingPool, o: &Observation) {
    let bad = matches!((o.type_, o.status), (types::READY, s) | (types::AUTHENTICATION_VALID, s) if s != TRUE)
        || matches!(
            (o.type_, o.status),
            (types::DEGRADED, TRUE) | (types::LISTED, TRUE) | (types::QUEUE_BACKLOG, TRUE)
        );
    if o.status == sendfleet_render::conditions::UNKNOWN {
        return;
    }
    let ev = Event {
        type_: if bad { EventType::Warning } else { EventType::Normal },
        reason: o.reason.to_string(),
        note: Some(format!("{} is {}: {}", o.type_, o.status, o.message).chars().take(1024).collect()),
        action: format!("Set{}", o.type_),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&ev, &pool.object_ref(&())).await {
        tracing::warn!(pool = %pool.name_any(), %error, "could not publish event");
    } else {
        ctx.metrics.wrote("Event");
    }
}

/// A Normal Event with a free-form note (bounded), e.g. a listing change.
async fn publish_note(ctx: &Context, pool: &SendingPool, reason: &str, note: &str) {
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "CheckReputation".into(),
        secondary: None,
    };
    if ctx.recorder.publish(&ev, &pool.object_ref(&())).await.is_ok() {
        ctx.metrics.wrote("Event");
    }
}

/// The key agents use to hash recipient addresses: random, created once,
/// owned by the pool. Never read back by the operator.
async fn ensure_hash_key(client: &Client, ns: &str, pool: &SendingPool, metrics: &Metrics) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = hash_key_secret_name(&pool.name_any());
    if api.get_metadata_opt(&name).await?.is_some() {
        return Ok(());
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::InvalidSpec(format!("no randomness for the hash key: {e}")))?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.into()),
            labels: Some([(LABEL_POOL.to_string(), pool.name_any())].into()),
            owner_references: objects::owner_reference(pool).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(key.to_vec()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            metrics.wrote("Secret");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
