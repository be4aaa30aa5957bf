//! Deleting a pool drains it first (`spec.deletionPolicy: Drain`, the
//! default): the pool carries the finalizer [`FINALIZER`]; once it is being
//! deleted, the pipeline goes on rendering it with every submission
//! endpoint not ready and every instance `draining` (each delivers its own
//! queue now, at its own weight: there is no peer to hand it to), and the
//! finalizer is removed when every instance's agent reports an empty queue
//! under that configuration, or when `spec.drain.timeout` has passed since
//! the deletion (then the queue volumes are kept, as always on deletion).
//! Only then does the garbage collector delete the pool's objects.
//!
//! `deletionPolicy: Retain` carries no finalizer (one left from `Drain` is
//! removed, also while deleting): the objects go at once, the queue
//! volumes stay (StatefulSet retention `Retain`).
//!
//! The finalizer is the pool's own metadata, so a drain in progress
//! survives operator restarts and leader changes. Never: remove it while a
//! reachable instance reports mail queued before the deadline, or add it to
//! a pool already being deleted.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use sendfleet_render::api::{DeletionPolicy, SendingPool};
use sendfleet_render::objects::instance_object_name;
use sendfleet_render::render::RenderedPool;

use super::drain;
use super::observe::Observed;
use crate::operator::context::Context;
use crate::operator::error::Retry;
use crate::operator::events;

/// The pool's drain finalizer.
pub const FINALIZER: &str = "sendfleet.io/drain";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the finalizers of SendingPool {pool}")]
    Patch {
        pool: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        "PatchFinalizers"
    }

    pub fn retry(&self) -> Retry {
        Retry::Transient
    }
}

fn has_finalizer(pool: &SendingPool) -> bool {
    pool.finalizers().iter().any(|f| f == FINALIZER)
}

fn wants_finalizer(pool: &SendingPool) -> bool {
    pool.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Drain
}

/// The pool is being deleted and drains (it still has the finalizer and
/// asks for a drain). Pure.
pub fn drains_deletion(pool: &SendingPool) -> bool {
    pool.metadata.deletion_timestamp.is_some() && has_finalizer(pool) && wants_finalizer(pool)
}

/// When a deleted pool stops waiting for its queues. Pure.
pub fn deadline(pool: &SendingPool) -> Option<Timestamp> {
    let since = pool.metadata.deletion_timestamp.as_ref()?.0;
    let timeout = pool.spec.drain_timeout_seconds().min(i64::MAX as u64) as i64;
    since.checked_add(SignedDuration::from_secs(timeout)).ok()
}

/// How soon to look again at a pool being deleted: at its deadline, and
/// at least every [`DELETION_RECHECK`] (nothing else wakes it). Pure.
pub fn recheck_in(pool: &SendingPool, now: Timestamp) -> Option<std::time::Duration> {
    if !drains_deletion(pool) {
        return None;
    }
    let until = deadline(pool)?.duration_since(now).as_secs().max(1) as u64;
    Some(DELETION_RECHECK.min(std::time::Duration::from_secs(until)))
}

/// Longest wait between two looks at a pool being deleted.
pub const DELETION_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Every instance that has a StatefulSet reports an empty queue under the
/// rendered (draining) configuration. Pure.
pub fn queues_empty(rendered: &RenderedPool, observed: &Observed) -> bool {
    rendered.instances.iter().all(|inst| {
        let sts = instance_object_name(&rendered.name, &inst.name);
        let exists = observed.statefulsets.iter().any(|s| s.metadata.name.as_deref() == Some(&sts));
        !exists
            || observed
                .agents
                .get(&inst.name)
                .and_then(|r| r.as_ref().ok())
                .is_some_and(|a| drain::empty_under(a, &inst.config_hash))
    })
}

/// Before the pipeline: keep the finalizer as the deletion policy asks, and
/// end a deletion that has nothing left to wait for. `Some`: stop here.
pub async fn before(ctx: &Context, pool: &SendingPool, now: Timestamp) -> Result<Option<Action>, Error> {
    let deleting = pool.metadata.deletion_timestamp.is_some();
    match (deleting, has_finalizer(pool), wants_finalizer(pool)) {
        // Being deleted without our finalizer: the garbage collector's.
        (true, false, _) => Ok(Some(Action::await_change())),
        (true, true, false) => {
            release(ctx, pool).await?;
            Ok(Some(Action::await_change()))
        }
        (true, true, true) => {
            if deadline(pool).is_some_and(|d| now >= d) {
                let text =
                    "drain.timeout passed with mail still queued: the pool's objects go, its queue volumes are kept";
                events::warning(ctx, pool, "DrainTimedOut", "Drain", text).await;
                release(ctx, pool).await?;
                return Ok(Some(Action::await_change()));
            }
            Ok(None)
        }
        (false, false, true) => set(ctx, pool, true).await.map(|()| None),
        (false, true, false) => set(ctx, pool, false).await.map(|()| None),
        (false, _, _) => Ok(None),
    }
}

/// After the pipeline of a draining deletion: release the pool once every
/// queue is empty.
pub async fn after(
    ctx: &Context,
    pool: &SendingPool,
    rendered: &RenderedPool,
    observed: &Observed,
) -> Result<(), Error> {
    if drains_deletion(pool) && queues_empty(rendered, observed) {
        tracing::info!(namespace = %rendered.namespace, pool = %rendered.name, "queues drained: releasing the pool");
        release(ctx, pool).await?;
    }
    Ok(())
}

async fn release(ctx: &Context, pool: &SendingPool) -> Result<(), Error> {
    set(ctx, pool, false).await
}

/// Add or remove the finalizer with a merge patch carrying the
/// resourceVersion read (a concurrent change of the list fails and is
/// retried instead of being overwritten).
async fn set(ctx: &Context, pool: &SendingPool, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = pool.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": pool.resource_version() }
    });
    let api: Api<SendingPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    match api.patch(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        // Gone already: nothing holds it.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(source) => return Err(Error::Patch { pool: pool.name_any(), source }),
    }
    ctx.metrics.wrote("SendingPool");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: &str) -> SendingPool {
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: p, namespace: ns{extra}}}\nspec:\n  egressIPs: [{{name: a, address: 192.0.2.1, heloName: a.example.com}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_deleted_pool_drains_only_with_the_finalizer_and_the_drain_policy() {
        let live = pool(", finalizers: [sendfleet.io/drain]");
        assert!(!drains_deletion(&live), "not deleted");
        let deleting = pool(", finalizers: [sendfleet.io/drain], deletionTimestamp: '2026-12-02T05:00:00Z'");
        assert!(drains_deletion(&deleting));
        assert!(!drains_deletion(&pool(", deletionTimestamp: '2026-12-02T05:00:00Z'")), "no finalizer");
        let mut retain = deleting.clone();
        retain.spec.deletion_policy = Some(DeletionPolicy::Retain);
        assert!(!drains_deletion(&retain));
    }

    #[test]
    fn the_deadline_is_the_deletion_plus_the_timeout_default_a_day() {
        let mut p = pool(", deletionTimestamp: '2026-12-02T05:00:00Z'");
        assert_eq!(deadline(&p).unwrap().to_string(), "2026-12-03T05:00:00Z");
        p.spec.drain = Some(sendfleet_render::api::Drain { timeout: Some("90m".into()), keep_queue_volumes: false });
        assert_eq!(deadline(&p).unwrap().to_string(), "2026-12-02T06:30:00Z");
        assert_eq!(deadline(&pool("")), None);
    }
}
