//! Step 4, apply: make the rendered objects live — first the
//! recipient-hash-key Secret the agents need (created once, random, never
//! read back), then every object by server-side apply in the render's order
//! (ServiceAccount, ConfigMaps, Services, StatefulSets, PDB), leaving alone those
//! already as desired (`crate::operator::apply`).
//!
//! A failure here is transient (retried) and shows as `Ready=False` with
//! reason `ApplyFailed`; the status is still written.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;
use sendfleet_render::objects::{self, hash_key_secret_name, LABEL_POOL};

use super::dereference::Refs;
use super::render::Rendered;
use crate::operator::context::Context;
use crate::operator::error::Retry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host could not supply randomness for the hash key: a fault of
    /// the machine, not of the spec.
    /// (`getrandom::Error` is not a `std::error::Error` without its `std`
    /// feature: the cause goes into the message.)
    #[error("no randomness for the recipient-hash key: {cause}")]
    HostRandomness { cause: getrandom::Error },
    #[error("creating Secret {name}")]
    HashKey {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Objects(#[from] crate::operator::apply::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::HostRandomness { .. } => "HostRandomness",
            Error::HashKey { .. } => "CreateHashKey",
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

pub async fn apply(ctx: &Context, pool: &SendingPool, refs: &Refs, rendered: &Rendered) -> Result<(), Error> {
    ensure_hash_key(ctx, pool, &refs.namespace).await?;
    crate::operator::apply::apply(&ctx.client, &refs.namespace, &rendered.objects, &ctx.metrics).await?;
    Ok(())
}

/// The key agents use to hash recipient addresses: random, created once,
/// owned by the pool. Never read back by the operator (a metadata read
/// says whether it exists).
async fn ensure_hash_key(ctx: &Context, pool: &SendingPool, ns: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = hash_key_secret_name(&pool.name_any());
    let hash_key = |source| Error::HashKey { name: name.clone(), source };
    if api.get_metadata_opt(&name).await.map_err(hash_key)?.is_some() {
        return Ok(());
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|cause| Error::HostRandomness { cause })?;
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
            ctx.metrics.wrote("Secret");
            Ok(())
        }
        // Created meanwhile (e.g. by a previous leader): it is the key.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(hash_key(e)),
    }
}
