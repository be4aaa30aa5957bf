//! Step 4, apply: make the rendered objects live — first the two Secrets
//! the agents need, each created once, random, owned by the pool: the
//! recipient hash key (never read back) and the agent token (read by
//! observe to poll the agents) — then every object by server-side apply in the render's order
//! (ServiceAccount, ConfigMaps, Services, StatefulSets, PDB), leaving alone those
//! already as desired (`crate::operator::apply`).
//!
//! Nothing is taken over: an object (the hash-key Secret included) that
//! exists with a wanted name but is not owned by this pool stops the step
//! before any write, `Ready=False` with reason `ObjectConflict` naming it,
//! retried every minute. Any other failure is transient (retried) and shows
//! as `Ready=False` with reason `ApplyFailed`; the status is still written.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;
use sendfleet_render::contract::AGENT_TOKEN_KEY;
use sendfleet_render::objects::{self, agent_token_secret_name, hash_key_secret_name, LABEL_POOL};

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
    #[error("no randomness for a pool Secret (recipient-hash key, agent token): {cause}")]
    HostRandomness { cause: getrandom::Error },
    #[error("creating Secret {name}")]
    HashKey {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {name}")]
    AgentToken {
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
            Error::AgentToken { .. } => "CreateAgentToken",
            Error::Objects(e) => e.category(),
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Objects(e) => objects_retry(e),
            _ => Retry::Transient,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Error::Objects(e) => objects_reason(e),
            _ => Reason::ApplyFailed,
        })
    }
}

/// How a failed object write is retried, for every step that writes
/// objects (this one and `publish.rs`): an object the pool does not own
/// waits for a change; anything else is retried soon.
pub fn objects_retry(e: &crate::operator::apply::Error) -> Retry {
    match e {
        crate::operator::apply::Error::NotOwned { .. } => Retry::Blocked,
        _ => Retry::Transient,
    }
}

/// The condition reason of a failed object write (see [`objects_retry`]).
pub fn objects_reason(e: &crate::operator::apply::Error) -> Reason {
    match e {
        crate::operator::apply::Error::NotOwned { .. } => Reason::ObjectConflict,
        _ => Reason::ApplyFailed,
    }
}

pub async fn apply(ctx: &Context, pool: &SendingPool, refs: &Refs, rendered: &Rendered) -> Result<(), Error> {
    use crate::operator::apply::{apply, check_ownership_cached};
    let (ns, name) = (refs.namespace.as_str(), pool.name_any());
    let uid = pool.uid().unwrap_or_default();
    // Every name checked before the first write, the Secrets included; the
    // cache spares the reads of objects that are ours and as desired.
    let caches = ctx.caches();
    let live =
        check_ownership_cached(&ctx.client, ns, &uid, &rendered.objects, |kind, n| caches.owned_meta(kind, ns, n))
            .await?;
    // The key agents use to hash recipient addresses.
    let hash_key = hash_key_secret_name(&name);
    ensure_secret(ctx, pool, ns, &uid, &hash_key, "key", |k| k.to_vec())
        .await
        .map_err(|e| e.named(|source| Error::HashKey { name: hash_key.clone(), source }))?;
    // The bearer token the agents require on /status and /metrics: 64 hex
    // digits (safe in a header and in a Prometheus credentials file).
    let token = agent_token_secret_name(&name);
    ensure_secret(ctx, pool, ns, &uid, &token, AGENT_TOKEN_KEY, |k| {
        k.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()
    })
    .await
    .map_err(|e| e.named(|source| Error::AgentToken { name: token.clone(), source }))?;
    apply(&ctx.client, ns, &rendered.objects, live, &ctx.metrics).await?;
    Ok(())
}

/// Why [`ensure_secret`] failed, before the caller names the Secret.
enum EnsureError {
    Randomness(getrandom::Error),
    Api(kube::Error),
    NotOwned(String),
}

impl EnsureError {
    fn named(self, api: impl FnOnce(kube::Error) -> Error) -> Error {
        match self {
            EnsureError::Randomness(cause) => Error::HostRandomness { cause },
            EnsureError::Api(e) => api(e),
            EnsureError::NotOwned(objects) => crate::operator::apply::Error::NotOwned { objects }.into(),
        }
    }
}

/// Create Secret `name` holding `encode(32 random bytes)` under `key`,
/// labelled and owned by the pool, unless it exists. Never read back here
/// (a metadata read says whether it exists, and whose it is: a Secret of
/// that name the pool does not own is not used), never replaced: a Secret
/// already there is the one the pods mount.
async fn ensure_secret(
    ctx: &Context,
    pool: &SendingPool,
    ns: &str,
    uid: &str,
    name: &str,
    key: &str,
    encode: impl FnOnce(&[u8; 32]) -> Vec<u8>,
) -> Result<(), EnsureError> {
    // Secrets are not cached (that would take `list` on every Secret):
    // one seen owned by the pool lately is taken as present; a deleted one
    // is created again within `cache::SECRET_RECHECK`.
    let caches = ctx.caches();
    if caches.secret_recently_seen(ns, name, uid) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(live) = api.get_metadata_opt(name).await.map_err(EnsureError::Api)? {
        return match crate::operator::apply::not_owned("Secret", name, &live.metadata, uid) {
            None => {
                caches.secret_seen(ns, name, uid);
                Ok(())
            }
            Some(objects) => Err(EnsureError::NotOwned(objects)),
        };
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(EnsureError::Randomness)?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some([(LABEL_POOL.to_string(), pool.name_any())].into()),
            owner_references: objects::owner_reference(pool).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(encode(&random)))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.metrics.wrote("Secret");
            caches.secret_seen(ns, name, uid);
            Ok(())
        }
        // Created meanwhile (e.g. by a previous leader): it is the one.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(EnsureError::Api(e)),
    }
}
