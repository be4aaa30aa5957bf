//! Step 5, prune: delete the objects labelled as this pool's and owned by
//! it that the render no longer wants — e.g. the StatefulSet and ConfigMap
//! of a removed egress IP. Queue claims are never deleted (StatefulSet
//! retention `Retain`).
//!
//! A failure here is transient (retried) and shows as `Ready=False` with
//! reason `ApplyFailed`: the pool's objects are not yet the desired set.

use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;

use super::dereference::Refs;
use super::render::Rendered;
use crate::operator::context::Context;
use crate::operator::error::Retry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Objects(#[from] crate::operator::apply::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Objects(e) => e.category(),
        }
    }

    pub fn retry(&self) -> Retry {
        Retry::Transient
    }

    pub fn reason(&self) -> Option<Reason> {
        Some(Reason::ApplyFailed)
    }
}

pub async fn prune(ctx: &Context, pool: &SendingPool, refs: &Refs, rendered: &Rendered) -> Result<(), Error> {
    // Without a uid nothing can be proven ours: delete nothing.
    let Some(uid) = pool.uid() else { return Ok(()) };
    let caches = ctx.caches();
    let listed = |kind: &str| caches.owned_of_pool(kind, &refs.namespace, &refs.name);
    crate::operator::apply::prune(&ctx.client, &refs.namespace, &uid, &rendered.objects, listed, &ctx.metrics).await?;
    Ok(())
}
