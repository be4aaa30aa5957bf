//! Agent polling on its own schedule, off the reconcile path.
//!
//! Every `--agent-poll-interval` the poller asks each running instance's
//! agent for `/status` (`agent_client::poll`: hyper, the pool's bearer
//! token, [`agent_client::POLL_TIMEOUT`] connect included), at most
//! [`MAX_CONCURRENT_POLLS`] at a time across the fleet, one pool's round at a
//! time per pool. The results are kept in [`Polls`]; a pool is reconciled
//! when its results *changed* (a new report, an agent gone quiet), never just
//! because a poll happened, so pools do not requeue on the poll interval and
//! a slow or dead agent costs one slot for [`agent_client::POLL_TIMEOUT`]
//! without delaying any reconcile: the pool pipeline reads the last results
//! (`pool/observe.rs`) and never waits for an agent.
//!
//! A pool whose running instance has no result yet (a pod just started) is
//! polled at once on the reconcile's request ([`Polls::request`]).
//!
//! The token comes from the pool's `<pool>-agent-token` Secret, read live
//! and remembered ([`crate::operator::cache::Caches::token`]); an agent that
//! refuses it makes the next round read the Secret again (rotation). A report
//! naming another pool, instance or pod is refused with an
//! `AgentIdentityMismatch` Warning Event on the pool.
//!
//! Never: poll from inside a reconcile, follow a report the identity check
//! refused, or log the token.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::contract::AGENT_TOKEN_KEY;
use sendfleet_render::objects::agent_token_secret_name;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use super::agent_client::{self, PollError};
use super::cache::Caches;
use super::context::Context;
use super::events;
use super::fleet::PoolKey;
use super::polls::{targets, Record};

/// Polls in flight at once, fleet-wide: with a 3 s timeout, a fleet of dead
/// agents costs at most this many sockets and a round of N of them
/// N / 32 × 3 s.
pub const MAX_CONCURRENT_POLLS: usize = 32;

/// The poller of one leadership term: rounds every `ctx.agent_poll`, and
/// on request; wakes a pool (`wake`) when its results changed. Runs until
/// aborted.
pub async fn run(ctx: Arc<Context>, caches: Arc<Caches>, wake: UnboundedSender<ObjectRef<SendingPool>>) {
    let (tx, mut requests): (_, UnboundedReceiver<PoolKey>) = tokio::sync::mpsc::unbounded_channel();
    ctx.polls.attach(tx);
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_POLLS));
    let in_flight: Arc<Mutex<HashSet<PoolKey>>> = Arc::default();
    let mut rounds = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(ctx.agent_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due: Vec<Arc<SendingPool>> = tokio::select! {
            _ = tick.tick() => caches.pools.state(),
            Some(key) = requests.recv() => {
                caches.pools.get(&ObjectRef::new(&key.1).within(&key.0)).into_iter().collect()
            }
        };
        while rounds.try_join_next().is_some() {}
        for pool in due {
            let key: PoolKey = (pool.namespace().unwrap_or_default(), pool.name_any());
            if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let (ctx, caches, limit, in_flight, wake) =
                (ctx.clone(), caches.clone(), limit.clone(), in_flight.clone(), wake.clone());
            rounds.spawn(async move {
                if round(&ctx, &caches, &pool, &key, &limit).await {
                    let _ = wake.send(ObjectRef::from_obj(&*pool));
                }
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
    }
}

/// Poll every running agent of one pool; whether the results changed.
async fn round(ctx: &Context, caches: &Caches, pool: &SendingPool, key: &PoolKey, limit: &Semaphore) -> bool {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let pods = Caches::of_pool(&caches.pods, ns, name);
    let retired = crate::operator::pool::drain::retired(pool, &Caches::of_pool(&caches.statefulsets, ns, name));
    let targets = targets(pool, &pods, &retired);
    if targets.is_empty() {
        return ctx.polls.set(key, BTreeMap::new());
    }
    let uid = pool.uid().unwrap_or_default();
    let token = agent_token(ctx, caches, ns, name, &uid).await;
    let (pool_id, port) = (format!("{ns}/{name}"), ctx.settings.agent_port);
    let polls = targets.iter().map(|t| {
        let (token, pool_id) = (&token, &pool_id);
        async move {
            let result = match token {
                Ok(token) => {
                    let _slot = limit.acquire().await;
                    let target = agent_client::Target {
                        host: &t.host,
                        port,
                        token,
                        pool: pool_id,
                        instance: &t.instance,
                        pod: &t.pod,
                    };
                    agent_client::poll(&target).await
                }
                Err(e) => Err(PollError::Failed(e.clone())),
            };
            (t.instance.clone(), Record { target: t.clone(), result })
        }
    });
    let records: BTreeMap<String, Record> = futures::future::join_all(polls).await.into_iter().collect();
    for record in records.values() {
        match &record.result {
            Err(PollError::IdentityMismatch(why)) => {
                tracing::warn!(namespace = ns, pool = name, instance = %record.target.instance, error = %why, "agent report refused");
                events::warning(ctx, pool, "AgentIdentityMismatch", "PollAgent", why).await;
            }
            Err(e) if e.is_unauthorized() => caches.forget_token(ns, name),
            _ => {}
        }
    }
    ctx.polls.set(key, records)
}

/// The pool's agent token: remembered, else from its Secret (created by
/// apply). Errors are the polls' result: without the token no agent answers.
async fn agent_token(ctx: &Context, caches: &Caches, ns: &str, pool: &str, uid: &str) -> Result<String, String> {
    if let Some(t) = caches.token(ns, pool, uid) {
        return Ok(t);
    }
    let name = agent_token_secret_name(pool);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} missing (the next apply creates it)"))?;
    let owned = secret.metadata.owner_references.iter().flatten().any(|o| o.uid == uid);
    let token =
        secret.data.as_ref().and_then(|d| d.get(AGENT_TOKEN_KEY)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    match token.as_deref().map(|t| t.trim_end_matches(['\n', '\r'])) {
        Some(t) if !t.is_empty() => {
            // Only a Secret the pool owns is remembered; another one is
            // used for this round and read again (apply reports the
            // conflict).
            if owned {
                caches.remember_token(ns, pool, uid, t);
            }
            Ok(t.to_string())
        }
        _ => Err(format!("Secret {name} has no key {AGENT_TOKEN_KEY:?}")),
    }
}
