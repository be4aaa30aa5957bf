//! Step 3, render: the pure core (`sendfleet_render`) turns the pool, what
//! it refers to and what was observed into every instance's Postfix files
//! and policy and into the Kubernetes objects to apply. Needs no client and
//! reads no clock (`now` is passed in).
//!
//! A spec that cannot be rendered stops the pipeline here: `Ready=False`
//! naming the field, with reason `InvalidSpec` (waits for a change) or
//! `MissingReference` (a route or spam-route pool that does not exist;
//! retried).

use k8s_openapi::jiff::Timestamp;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;
use sendfleet_render::objects::{self, Desired};
use sendfleet_render::render::{self, Observed as RenderObserved, PoolInput, RenderError, RenderedPool, Settings};

use super::dereference::Refs;
use super::observe::Observed;
use crate::operator::error::Retry;
use crate::operator::fleet;

/// The render's output: files per instance, and objects in apply order.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub pool: RenderedPool,
    pub objects: Vec<Desired>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that cannot be rendered as written.
    #[error(transparent)]
    InvalidSpec(RenderError),
    /// A pool that a route or spam route names does not exist.
    #[error(transparent)]
    MissingReference(RenderError),
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Reference { .. } => Error::MissingReference(e),
            RenderError::Invalid(_) | RenderError::Unsafe(_) => Error::InvalidSpec(e),
        }
    }
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingReference(_) => "MissingReference",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::InvalidSpec(_) => Retry::OnSpecChange,
            Error::MissingReference(_) => Retry::MissingReference,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::MissingReference(_) => Reason::MissingReference,
        })
    }
}

pub fn render(
    pool: &SendingPool,
    refs: &Refs,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Result<Rendered, Error> {
    let now_unix = now.as_second().max(0) as u64;
    let agents_decided = RenderObserved {
        quarantined: observed.findings.quarantined.clone(),
        exclusions: fleet::exclusions_in_force(&observed.adaptive, now_unix),
        warmup_day: fleet::warmup_steps(&observed.adaptive),
        not_ready: observed.not_ready(pool),
        retired: observed.retired.clone(),
        unchecked: super::drain::unchecked(pool, &observed.findings),
        deleting: super::finalize::drains_deletion(pool),
    };
    let input = PoolInput {
        pool,
        policies: &refs.policies,
        plan: refs.plan.as_ref(),
        pools: &refs.pools,
        observed: &agents_decided,
    };
    let rendered = render::render_pool(input, settings)?;
    for e in &rendered.invalid_policies {
        tracing::warn!(namespace = %refs.namespace, pool = %refs.name, error = %e, "ignoring invalid DomainPolicy");
    }
    let objects = objects::build(pool, &rendered, settings);
    Ok(Rendered { pool: rendered, objects })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_spec_waits_and_a_missing_pool_is_retried() {
        let invalid: Error = RenderError::Unsafe(sendfleet_render::postfix::UnsafeValue {
            place: "main.cf".into(),
            value: "x\ny".into(),
        })
        .into();
        assert_eq!(
            (invalid.category(), invalid.retry(), invalid.reason()),
            ("InvalidSpec", Retry::OnSpecChange, Some(Reason::InvalidSpec))
        );
        let missing: Error = RenderError::Reference {
            field: "spec.spamRoute.pool".into(),
            message: "SendingPool \"x\" not found".into(),
        }
        .into();
        assert_eq!(missing.category(), "MissingReference");
        assert_eq!(missing.retry(), Retry::MissingReference);
        assert_eq!(missing.reason(), Some(Reason::MissingReference));
        assert_eq!(missing.to_string(), "spec.spamRoute.pool: SendingPool \"x\" not found");
    }
}
