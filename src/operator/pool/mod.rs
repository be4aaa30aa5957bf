//! The SendingPool reconcile: a pipeline of named steps, each a module with
//! its own error enum, wrapped by this module's [`Error`].
//!
//! ```text
//! reconcile(pool)                       now = the clock, read once
//!  0. admit        admit.rs             namespace, image, nodes allowed?   (Namespace/Node labels, cached)
//!  1. dereference  dereference.rs       DomainPolicies, pools, WarmupPlan   (cached; CA bundles live)
//! 1b. claim        claim.rs             one owner per egress address,
//!                                       cluster-wide (EgressAddressClaims)  (API creates)
//!  2. observe      observe.rs           StatefulSets, pods, agents' last
//!                                       /status, DNS findings, fleet index  (cached; the poller's results)
//!  3. render       render.rs            Postfix files, policies, objects    (pure)
//!  4. apply        apply.rs             hash-key and agent-token Secrets,
//!                                       then SSA in order                   (API writes)
//!     drain        drain.rs             removed IPs drained: StatefulSet
//!                                       (foreground), queue claim           (API deletes)
//!  5. prune        prune.rs             owned objects no longer desired     (API deletes)
//! 5b. publish      publish.rs           the DNS records (dns::records) into
//!                                       an external-dns DNSEndpoint, when
//!                                       spec.dnsRecords asks                (API write/delete)
//!  6. status       status.rs            one function per condition, patch
//!                  (+ instances.rs)     only on change, Event per flip      (API write)
//! ```
//!
//! The function [`pipeline`] is exactly this list. Each step takes what the
//! steps before it produced ([`dereference::Refs`], [`observe::Observed`],
//! [`render::Rendered`]) and nothing reads the raw API again after its step.
//!
//! When a step fails the pipeline stops there. An error whose
//! [`Error::reason`] is set is also shown in the status (`Ready=False`,
//! `Progressing=False`, `Degraded=True` with that reason and the error chain
//! as message): `NamespaceNotAllowed`, `ImageNotAllowed`, `NodeNotAllowed`
//! (admit: nothing is read or applied for the pool), `InvalidSpec` (render),
//! `MissingReference` (a WarmupPlan or route pool that does not exist),
//! `AddressInUse` (claim: another pool owns an egress address; nothing is
//! polled or written), `ObjectConflict` (apply: an object with a wanted name
//! that the pool does not own), `ApplyFailed` (apply, prune). Errors the
//! status cannot show (API reads, the status patch itself) become a Warning
//! Event instead. Every error variant has a fixed PascalCase
//! [`Error::category`] — the metric label — and is requeued by kind
//! ([`crate::operator::error::Retry`]): an invalid spec waits for a change,
//! a missing reference is retried every minute, anything else soon.
//!
//! DomainPolicy and WarmupPlan statuses are not written here: they have
//! their own controllers (`crate::operator::{domain_policy, warmup_plan}`),
//! which read the fleet index this pipeline fills in step 2.
//!
//! Never: read the clock inside a step (`now` is passed down), write a
//! DomainPolicy or WarmupPlan status, touch Postfix files (the agents do),
//! or write an object or status that would not change.
//!
//! Before step 0, `finalize.rs` keeps the drain finalizer as
//! `spec.deletionPolicy` asks, and a pool being deleted is drained by the
//! same steps (endpoints closed, every instance draining) until its queues
//! are empty or `drain.timeout` passed; then the finalizer goes. Everything
//! a pool creates is a namespaced object it owns (owner references), so the
//! garbage collector removes it. The one cluster-scoped object, the address
//! claim, cannot carry a namespaced owner reference: `crate::operator::claims`
//! deletes the claims whose pool is gone or no longer lists the address. Queue volumes are deliberately kept
//! (StatefulSet retention `Retain`).

pub mod admit;
pub mod apply;
pub mod claim;
pub mod dereference;
pub mod drain;
pub mod finalize;
pub mod instances;
pub mod observe;
pub mod prune;
pub mod publish;
pub mod render;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;

use super::context::Context;
use super::error::Retry;
use super::events;

/// A failed step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Admit(#[from] admit::Error),
    #[error(transparent)]
    Dereference(#[from] dereference::Error),
    #[error(transparent)]
    Claim(#[from] claim::Error),
    #[error(transparent)]
    Observe(#[from] observe::Error),
    #[error(transparent)]
    Render(#[from] render::Error),
    #[error(transparent)]
    Apply(#[from] apply::Error),
    #[error(transparent)]
    Prune(#[from] prune::Error),
    #[error(transparent)]
    Publish(#[from] publish::Error),
    #[error(transparent)]
    Status(#[from] status::Error),
    #[error(transparent)]
    Finalize(#[from] finalize::Error),
    #[error(transparent)]
    Drain(#[from] drain::Error),
}

impl Error {
    /// Fixed PascalCase category of the failing variant: Event reason and
    /// metric label (bounded).
    pub fn category(&self) -> &'static str {
        match self {
            Error::Admit(e) => e.category(),
            Error::Dereference(e) => e.category(),
            Error::Claim(e) => e.category(),
            Error::Observe(e) => e.category(),
            Error::Render(e) => e.category(),
            Error::Apply(e) => e.category(),
            Error::Prune(e) => e.category(),
            Error::Publish(e) => e.category(),
            Error::Status(e) => e.category(),
            Error::Finalize(e) => e.category(),
            Error::Drain(e) => e.category(),
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Admit(e) => e.retry(),
            Error::Dereference(e) => e.retry(),
            Error::Claim(e) => e.retry(),
            Error::Observe(e) => e.retry(),
            Error::Render(e) => e.retry(),
            Error::Apply(e) => e.retry(),
            Error::Prune(e) => e.retry(),
            Error::Publish(e) => e.retry(),
            Error::Status(e) => e.retry(),
            Error::Finalize(e) => e.retry(),
            Error::Drain(_) => Retry::Transient,
        }
    }

    /// The reason the pool's `Ready=False` shows for this error, if the
    /// status should say (see the module doc).
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Admit(e) => e.reason(),
            Error::Dereference(e) => e.reason(),
            Error::Claim(e) => e.reason(),
            Error::Render(e) => e.reason(),
            Error::Apply(e) => e.reason(),
            Error::Prune(e) => e.reason(),
            Error::Publish(e) => e.reason(),
            Error::Drain(_) => Some(Reason::ApplyFailed),
            Error::Observe(_) | Error::Status(_) | Error::Finalize(_) => None,
        }
    }
}

/// Entry point for the controller: time it, run the pipeline, record.
pub async fn reconcile(pool: Arc<SendingPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let start = Instant::now();
    let now = Timestamp::now();
    let result = pipeline(&pool, &ctx, now).await;
    if let Err(error) = &result {
        report(&pool, &ctx, error, now).await;
    }
    ctx.metrics.observe(start.elapsed(), result.as_ref().err().map(Error::category));
    result
}

/// Requeue by kind of error; an invalid spec waits for a change.
pub fn error_policy(pool: Arc<SendingPool>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::error::after_failure(&*pool, error.category(), error.retry(), error)
}

/// The steps, in order (see the module doc).
pub async fn pipeline(pool: &SendingPool, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    if let Some(done) = finalize::before(ctx, pool, now).await? {
        return Ok(done);
    }
    admit::admit(ctx, pool)?;
    let refs = dereference::dereference(ctx, pool).await?;
    claim::claim(ctx, pool).await?;
    let mut observed = observe::observe(ctx, pool, &refs).await?;
    let mut rendered = render::render(pool, &refs, &observed, &ctx.settings, now)?;
    // A removed IP whose queue is empty under its draining configuration
    // is rendered no more: its objects are deleted below.
    let drained = drain::drained(&rendered.pool, &observed.retired, &observed.agents);
    if !drained.is_empty() {
        observed.retired.retain(|ip| !drained.contains(&ip.name));
        rendered = render::render(pool, &refs, &observed, &ctx.settings, now)?;
    }
    apply::apply(ctx, pool, &refs, &rendered).await?;
    drain::remove(ctx, pool, &refs.namespace, &drained).await?;
    prune::prune(ctx, pool, &refs, &rendered).await?;
    // The records the pool needs: one list for status.dnsRecords and the
    // DNSEndpoint, with the DKIM public key the last sweep read.
    let records = crate::dns::records::pool_records(pool, observed.findings.dkim_public_key(pool));
    let published = publish::publish(ctx, pool, &refs.namespace, &records).await?;
    let dns = status::Dns { records: &records, published: &published };
    status::status(ctx, pool, &rendered, &observed, dns, now).await?;
    finalize::after(ctx, pool, &rendered.pool, &observed).await?;
    let action = requeue(ctx, pool, &observed, now);
    // A missing DNSEndpoint CRD is looked for again like a missing reference.
    Ok(match published {
        publish::Published::NotInstalled => {
            let every = super::error::REQUEUE_MISSING_REFERENCE.min(ctx.resync.min(observed.findings.next_sweep_in));
            Action::requeue(every)
        }
        _ => action,
    })
}

/// When to look again at a converged pool: the slow resync, or sooner when a
/// DNS sweep or a deletion's deadline is due. Not on the agent poll
/// interval: the poller (`crate::operator::polling`) wakes a pool when its
/// agents' answers changed, and only then.
fn requeue(ctx: &Context, pool: &SendingPool, observed: &observe::Observed, now: Timestamp) -> Action {
    let every = finalize::recheck_in(pool, now).map_or(ctx.resync, |d| ctx.resync.min(d));
    Action::requeue(every.min(observed.findings.next_sweep_in))
}

/// Make a failed pipeline visible: in the status when it can say why (a
/// status write that itself fails is logged: the first error is the cause),
/// else as a Warning Event.
async fn report(pool: &SendingPool, ctx: &Context, error: &Error, now: Timestamp) {
    match error.reason() {
        Some(reason) => {
            let message = events::chain(error);
            if let Err(e) = status::stopped(ctx, pool, reason, &message, now).await {
                tracing::warn!(pool = %pool.name_any(), error = %events::chain(&e), "could not write why the reconcile stopped");
            }
        }
        None => events::error(ctx, pool, error.category(), events::chain(error)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::error::{REQUEUE_MISSING_REFERENCE, REQUEUE_TRANSIENT};

    fn api_error() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("the server is currently unable to handle the request", "ServiceUnavailable")
                .with_code(503)
                .boxed(),
        )
    }

    #[test]
    fn an_apply_error_and_a_status_patch_error_are_told_apart() {
        let apply: Error = apply::Error::Objects(crate::operator::apply::Error::Patch {
            kind: "ConfigMap",
            name: "p-a".into(),
            source: api_error(),
        })
        .into();
        let patch: Error = status::Error::PatchStatus(crate::operator::status::PatchError {
            kind: "SendingPool",
            name: "p".into(),
            source: api_error(),
        })
        .into();
        assert_eq!(apply.category(), "ApplyObject");
        assert_eq!(patch.category(), "PatchStatus");
        assert_eq!(apply.reason(), Some(Reason::ApplyFailed), "an apply failure shows as Ready=False ApplyFailed");
        assert_eq!(patch.reason(), None, "a failed status patch cannot be shown in the status");
        assert_eq!((apply.retry(), patch.retry()), (Retry::Transient, Retry::Transient));
        assert!(events::chain(&apply).starts_with("applying ConfigMap p-a: "), "{}", events::chain(&apply));
    }

    #[test]
    fn a_host_fault_is_transient_not_an_invalid_spec() {
        // getrandom::Error has no public constructor for an OS failure but
        // its own: use the "unsupported" one, as a host without a source
        // would return.
        let e: Error = apply::Error::HostRandomness { cause: getrandom::Error::UNSUPPORTED }.into();
        assert_eq!(e.category(), "HostRandomness");
        assert_eq!(e.retry(), Retry::Transient);
        assert_eq!(e.retry().after(), Some(REQUEUE_TRANSIENT));
        assert_ne!(e.reason(), Some(Reason::InvalidSpec));
    }

    #[test]
    fn a_missing_warmup_plan_is_a_missing_reference_in_category_reason_and_retry() {
        let e: Error = dereference::Error::MissingWarmupPlan { name: "later".into(), namespace: "mail".into() }.into();
        assert_eq!(e.category(), "MissingReference");
        assert_eq!(e.reason(), Some(Reason::MissingReference));
        assert_eq!(e.retry().after(), Some(REQUEUE_MISSING_REFERENCE));
        assert_eq!(e.to_string(), "spec.warmupPlanRef: WarmupPlan \"later\" not found in namespace mail");
    }

    #[test]
    fn read_errors_are_transient_and_become_events_not_conditions() {
        let cases: Vec<Error> = vec![
            dereference::Error::ListPolicies { namespace: "mail".into(), source: api_error() }.into(),
            dereference::Error::ListPools { namespace: "mail".into(), source: api_error() }.into(),
            dereference::Error::GetWarmupPlan { name: "w".into(), source: api_error() }.into(),
            observe::Error::ListPods { pool: "p".into(), source: api_error() }.into(),
            observe::Error::ListStatefulSets { pool: "p".into(), source: api_error() }.into(),
        ];
        let categories: Vec<&str> = cases.iter().map(Error::category).collect();
        assert_eq!(
            categories,
            ["ListDomainPolicies", "ListSendingPools", "GetWarmupPlan", "ListPods", "ListStatefulSets"]
        );
        for e in &cases {
            assert_eq!((e.retry(), e.reason()), (Retry::Transient, None), "{e}");
        }
        let e: Error = dereference::Error::NoNamespace.into();
        assert_eq!(e.retry(), Retry::OnSpecChange);
    }

    #[test]
    fn categories_are_pascal_case_identifiers() {
        let prune: Error = prune::Error::Objects(crate::operator::apply::Error::Delete {
            kind: "StatefulSet",
            name: "p-c".into(),
            source: api_error(),
        })
        .into();
        let key: Error = apply::Error::HashKey { name: "p-recipient-hash-key".into(), source: api_error() }.into();
        let token: Error = apply::Error::AgentToken { name: "p-agent-token".into(), source: api_error() }.into();
        assert_eq!(token.category(), "CreateAgentToken");
        for e in [prune, key, token] {
            let c = e.category();
            assert!(
                c.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && c.chars().all(|c| c.is_ascii_alphanumeric()),
                "{c}"
            );
            assert_eq!(e.reason(), Some(Reason::ApplyFailed));
        }
    }
}
