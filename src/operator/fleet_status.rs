//! The controllers of the namespace-level resources — DomainPolicy and
//! WarmupPlan — in one generic shape: each resource's status is derived
//! from its spec, the SendingPools of its namespace and the fleet index
//! (what the agents decided), and written only when something other than a
//! timestamp changed. Their status no longer depends on a pool reconcile:
//! a DomainPolicy in a namespace with no SendingPool still gets `Accepted`.
//!
//! What wakes a resource's reconcile:
//! - a change of the resource itself (its own watch);
//! - any change of a SendingPool of its namespace (a pool's labels or
//!   `warmupPlanRef` may select or unselect it; its status names the pools);
//! - a change of the fleet index (an agent reported a new exclusion,
//!   slow-down or warm-up step), through [`FleetIndex::changes`];
//! - a periodic requeue no longer than the agent poll interval, repairing
//!   anything a dropped event missed.
//!
//! Only the leader runs these controllers (see `super::run_controllers`).
//! The derivations are pure (`domain_policy::derive`,
//! `warmup_plan::derive`, `now` passed in); this module does the plumbing.
//!
//! [`FleetIndex::changes`]: super::fleet::FleetIndex::changes

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::{self, Observation};

use super::context::Context;
use super::error::Retry;
use super::events;
use super::fleet::InstanceReport;
use super::status::{self, Conditioned, HasStatus, PatchError};

/// What a namespace-level status is derived from.
#[derive(Clone, Copy, Debug)]
pub struct Namespace<'a> {
    /// Every SendingPool of the namespace.
    pub pools: &'a [SendingPool],
    /// Their agents' last reports (the fleet index).
    pub reports: &'a [InstanceReport],
    /// The pools the fleet index has an entry for (polled at least once
    /// since the operator started). For the others a status keeps what it
    /// showed: an operator restart must not flap it.
    pub observed: &'a [String],
}

/// A new status and the observations whose status flipped.
pub type Derived<S> = (S, Vec<Observation>);

/// A resource whose status summarises the pools of its namespace.
pub trait FleetResource: HasStatus + Send + Sync + 'static {
    /// The new status (pure: `now` passed in).
    fn derive(&self, ns: Namespace<'_>, now: Timestamp) -> Derived<Self::Status>;
}

/// Set `accepted` in `status` (see `conditions::set`), and `Ready` with the
/// same status, reason and message: `Ready` is the condition generic
/// readers look for (Flux's kstatus, Argo CD health checks, `kubectl wait
/// --for=condition=Ready`), `Accepted` the one sendfleet documents. The
/// flip of `Accepted`, if any (one Event per change, not two).
pub fn set_accepted<S: Conditioned>(
    status: &mut S,
    accepted: &Observation,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Observation> {
    let ready = Observation { type_: conditions::ConditionType::Ready, ..accepted.clone() };
    conditions::set(status.conditions_mut(), &ready, generation, now);
    let flipped = conditions::set(status.conditions_mut(), accepted, generation, now);
    flipped.then(|| accepted.clone()).into_iter().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("listing the SendingPools of namespace {namespace}")]
    ListPools {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    PatchStatus(#[from] PatchError),
}

impl Error {
    /// Fixed PascalCase category: Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoNamespace { .. } => "NoNamespace",
            Error::ListPools { .. } => "ListSendingPools",
            Error::PatchStatus(_) => PatchError::CATEGORY,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::NoNamespace { .. } => Retry::OnSpecChange,
            Error::ListPools { .. } | Error::PatchStatus(_) => Retry::Transient,
        }
    }
}

/// Re-derive and (when changed) write one resource's status.
pub async fn reconcile<K: FleetResource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let result = derive_and_write(&*obj, &ctx, now).await;
    if let Err(error) = &result {
        ctx.metrics.failed(error.category());
        events::error(&ctx, &*obj, error.category(), events::chain(error)).await;
    }
    result
}

async fn derive_and_write<K: FleetResource>(obj: &K, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or_else(|| Error::NoNamespace { kind: K::KIND, name: obj.name_any() })?;
    // From the pool cache (sorted by name, as a LIST returns them): 50
    // policies re-derived every poll interval must not each LIST the pools.
    let mut pools: Vec<SendingPool> = ctx
        .caches()
        .pools
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .map(|p| (**p).clone())
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let pool_names: Vec<String> = pools.iter().map(|p| p.name_any()).collect();
    let reports = ctx.fleet.reports(&namespace, &pool_names);
    let observed = ctx.fleet.observed(&namespace, &pool_names);
    let (new, flipped) = obj.derive(Namespace { pools: &pools, reports: &reports, observed: &observed }, now);
    status::write(ctx, obj, &new, &flipped).await?;
    Ok(Action::requeue(ctx.agent_poll.min(ctx.resync)))
}

pub fn error_policy<K: FleetResource>(obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::error::after_failure(&*obj, error.category(), error.retry(), error)
}

/// The controller of `K`: its own watch, `pool_changes` (the pool cache
/// sends the resources of a changed pool's namespace after it holds the
/// change, `crate::operator::cache`), and the fleet index's changes (see the
/// module doc).
pub fn controller<K: FleetResource>(
    api: Api<K>,
    pool_changes: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    ctx: &Context,
) -> Controller<K> {
    Controller::new(api, watcher::Config::default()).reconcile_on(pool_changes).reconcile_all_on(ctx.fleet.changes())
}

/// Timestamps in the statuses: RFC 3339, UTC.
pub fn rfc3339(unix: u64) -> String {
    Timestamp::from_second(unix as i64).map(|t| t.to_string()).unwrap_or_default()
}

/// Fixtures shared by the DomainPolicy and WarmupPlan derivation tests.
#[cfg(test)]
pub mod fixtures {
    use sendfleet_render::api::SendingPool;
    use sendfleet_render::contract::AdaptiveStatus;

    use crate::operator::fleet::InstanceReport;

    pub fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml::from_str(s).unwrap()
    }

    /// Pool `name` in namespace `mail` with two egress IPs, mta1 and mta2.
    pub fn pool(name: &str, labels: &str, plan: Option<&str>) -> SendingPool {
        let plan = plan.map(|p| format!("  warmupPlanRef: {p}\n")).unwrap_or_default();
        yaml(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: {name}, namespace: mail, labels: {{{labels}}}}}\nspec:\n  egressIPs:\n  - {{name: mta1, address: 192.0.2.10, heloName: mta1.example.com}}\n  - {{name: mta2, address: 192.0.2.11, heloName: mta2.example.com}}\n{plan}"
        ))
    }

    /// The names of `pools`: all of them observed by the fleet index.
    pub fn names(pools: &[SendingPool]) -> Vec<String> {
        pools.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect()
    }

    pub fn report(pool: &str, instance: &str, adaptive: AdaptiveStatus) -> InstanceReport {
        InstanceReport { pool: pool.into(), instance: instance.into(), adaptive }
    }
}
