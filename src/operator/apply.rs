//! The generic server-side-apply helpers of the pool pipeline: apply
//! desired objects in order, and delete the pool's objects that are no
//! longer desired. (The `/status` patch shared by every controller is in
//! `status.rs`.)
//!
//! Never take an object over: [`check_ownership`] reads every object
//! (metadata only) before anything is written, and if one with a name the
//! pool wants exists without the pool's uid among its owner references,
//! nothing is applied and it fails naming it ([`Error::NotOwned`],
//! `ObjectConflict` in the pool's status). A forced server-side apply would otherwise rewrite a
//! neighbour's ConfigMap or Service just because the names collide.
//!
//! No write that changes nothing: every applied object carries the hash of
//! what was applied (`sendfleet.io/applied-hash`); when the live object
//! already carries the desired hash the patch is skipped, so a converged
//! operator makes no mutating requests at all. The trade-off: a manual edit
//! of a field we own is repaired on the next change, not immediately.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Client;
use sendfleet_render::objects::{Desired, FIELD_MANAGER};
use sha2::{Digest, Sha256};

use super::metrics::Metrics;

/// One failed request, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}")]
    Patch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the pool's {kind}s")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Objects with names the pool wants exist and are not the pool's.
    #[error("not taking over objects the pool does not own (delete or rename them): {objects}")]
    NotOwned { objects: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Get { .. } => "GetObject",
            Error::Patch { .. } => "ApplyObject",
            Error::List { .. } => "ListObjects",
            Error::Delete { .. } => "DeleteObject",
            Error::NotOwned { .. } => "ObjectConflict",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

pub const ANNOTATION_APPLIED_HASH: &str = "sendfleet.io/applied-hash";

/// Kinds a pool owns, with their API resources, in apply order.
fn api_resource(kind: &str) -> ApiResource {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, discovery::v1 as discovery, policy::v1 as policy};
    match kind {
        "ServiceAccount" => ApiResource::erase::<core::ServiceAccount>(&()),
        "ConfigMap" => ApiResource::erase::<core::ConfigMap>(&()),
        "Service" => ApiResource::erase::<core::Service>(&()),
        "EndpointSlice" => ApiResource::erase::<discovery::EndpointSlice>(&()),
        "StatefulSet" => ApiResource::erase::<apps::StatefulSet>(&()),
        "PodDisruptionBudget" => ApiResource::erase::<policy::PodDisruptionBudget>(&()),
        other => unreachable!("not a pool-owned kind: {other}"),
    }
}

/// Every kind a pool may own, for pruning.
const OWNED_KINDS: &[&str] =
    &["StatefulSet", "ConfigMap", "EndpointSlice", "Service", "PodDisruptionBudget", "ServiceAccount"];

fn kind_static(kind: &str) -> &'static str {
    OWNED_KINDS.iter().find(|k| **k == kind).copied().unwrap_or("Other")
}

/// The applied hash of an object (`sendfleet.io/applied-hash`): its desired
/// JSON, owner reference included.
pub fn hash(v: &serde_json::Value) -> String {
    let d = Sha256::digest(v.to_string().as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What [`check_ownership`] read: the applied-hash annotation of each
/// desired object (in order; `None` when absent or not yet created).
#[derive(Debug)]
pub struct Live {
    applied_hashes: Vec<Option<String>>,
}

/// Read every desired object's metadata; fail with [`Error::NotOwned`],
/// naming them all, if any exists without `owner_uid` among its owners.
/// Nothing is written: the caller writes nothing either until this passed.
pub async fn check_ownership(client: &Client, namespace: &str, owner_uid: &str, desired: &[Desired]) -> Result<Live> {
    let mut applied_hashes = Vec::with_capacity(desired.len());
    let mut conflicts = Vec::new();
    for d in desired {
        let kind = kind_static(d.kind());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
        let live = api
            .get_metadata_opt(d.name())
            .await
            .map_err(|source| Error::Get { kind, name: d.name().into(), source })?
            .map(|o| o.metadata);
        if let Some(c) = live.as_ref().and_then(|m| not_owned(kind, d.name(), m, owner_uid)) {
            conflicts.push(c);
        }
        applied_hashes.push(live.and_then(|m| m.annotations?.remove(ANNOTATION_APPLIED_HASH)));
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        return Err(Error::NotOwned { objects: conflicts.join("; ") });
    }
    Ok(Live { applied_hashes })
}

/// [`check_ownership`] with a cache in front (`cached(kind, name)`: the
/// watch-fed metadata, `crate::operator::cache`). An object the cache shows
/// owned by `owner_uid` *and* carrying the desired applied hash is not read:
/// it will not be written, and the hash covers its owner reference (the
/// pool's uid), so it was applied for this pool. One the cache shows owned
/// by someone else is refused as it is (a refusal writes nothing and is
/// retried). Every other object — absent from the cache, or to be written —
/// is read live before the first write, exactly as [`check_ownership`]
/// does: a cache that lags can never make the operator write over an object
/// it does not own.
pub async fn check_ownership_cached(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    desired: &[Desired],
    cached: impl Fn(&str, &str) -> Option<ObjectMeta>,
) -> Result<Live> {
    let mut applied_hashes = vec![None; desired.len()];
    let mut conflicts = Vec::new();
    let mut unsettled = Vec::new();
    for (i, d) in desired.iter().enumerate() {
        let kind = kind_static(d.kind());
        match cached(kind, d.name()) {
            Some(meta) => {
                if let Some(c) = not_owned(kind, d.name(), &meta, owner_uid) {
                    conflicts.push(c);
                    continue;
                }
                let want = hash(&d.to_json());
                match meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION_APPLIED_HASH)) {
                    Some(h) if *h == want => applied_hashes[i] = Some(want),
                    _ => unsettled.push(i),
                }
            }
            None => unsettled.push(i),
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        return Err(Error::NotOwned { objects: conflicts.join("; ") });
    }
    let to_read: Vec<Desired> = unsettled.iter().map(|&i| desired[i].clone()).collect();
    let live = check_ownership(client, namespace, owner_uid, &to_read).await?;
    for (i, h) in unsettled.into_iter().zip(live.applied_hashes) {
        applied_hashes[i] = h;
    }
    Ok(Live { applied_hashes })
}

/// Apply `desired` in order, skipping objects whose live applied hash
/// ([`check_ownership`] read it) is already the desired one. Returns how
/// many objects were written.
pub async fn apply(
    client: &Client,
    namespace: &str,
    desired: &[Desired],
    live: Live,
    metrics: &Metrics,
) -> Result<usize> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = 0;
    for (d, current) in desired.iter().zip(live.applied_hashes) {
        let mut v = d.to_json();
        let h = hash(&v);
        v["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] = h.clone().into();
        if current.as_ref() == Some(&h) {
            continue;
        }
        let kind = kind_static(d.kind());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
        api.patch(d.name(), &params, &Patch::Apply(&v)).await.map_err(|source| Error::Patch {
            kind,
            name: d.name().into(),
            source,
        })?;
        metrics.wrote(kind);
        tracing::info!(namespace, kind = d.kind(), name = d.name(), "applied");
        written += 1;
    }
    Ok(written)
}

/// `None` when `meta` (a live object's) lists `owner_uid` among its owners;
/// else the object, for [`Error::NotOwned`]: kind, name and who owns it.
pub fn not_owned(kind: &str, name: &str, meta: &ObjectMeta, owner_uid: &str) -> Option<String> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    if owners.iter().any(|o| o.uid == owner_uid) {
        return None;
    }
    let mut by: Vec<String> = owners.iter().map(|o| format!("{} {:?}", o.kind, o.name)).collect();
    by.sort();
    let by = if by.is_empty() { "no owner".to_string() } else { format!("owned by {}", by.join(", ")) };
    Some(format!("{kind} {name:?} ({by})"))
}

/// Delete objects labelled as this pool's, owned by it (uid), and no longer
/// desired — e.g. the StatefulSet and ConfigMap of a removed egress IP.
/// Queue claims are never deleted here (StatefulSet retention: Retain).
///
/// `listed(kind)`: the metadata of the objects of `kind` labelled as the
/// pool's (`<LABEL_POOL>=<pool>`, managed by the operator), from the
/// watch-fed cache (`crate::operator::cache`): a cache that lags can only
/// delay a deletion or ask to delete an object already gone (404, skipped);
/// what is kept is decided by `desired` alone.
pub async fn prune(
    client: &Client,
    namespace: &str,
    pool_uid: &str,
    desired: &[Desired],
    listed: impl Fn(&str) -> Vec<ObjectMeta>,
    metrics: &Metrics,
) -> Result<usize> {
    let keep: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind(), d.name())).collect();
    let mut deleted = 0;
    for &kind in OWNED_KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
        for meta in listed(kind) {
            let Some(name) = meta.name.as_deref() else { continue };
            let owned = meta.owner_references.iter().flatten().any(|o| o.uid == pool_uid);
            // Being deleted already (a drained instance's StatefulSet goes
            // in the foreground, `pool/drain.rs`): a second delete would
            // change its propagation.
            if !owned || keep.contains(&(kind, name)) || meta.deletion_timestamp.is_some() {
                continue;
            }
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(source) => return Err(Error::Delete { kind, name: name.into(), source }),
            }
            metrics.wrote(kind);
            tracing::info!(namespace, kind, name, "deleted (no longer desired)");
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(owners: &[(&str, &str, &str)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(
                owners
                    .iter()
                    .map(|(kind, name, uid)| OwnerReference {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        uid: uid.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_listing_the_pools_uid_are_the_pools() {
        assert_eq!(not_owned("ConfigMap", "p-a", &owned_by(&[("SendingPool", "p", "u1")]), "u1"), None);
        assert_eq!(
            not_owned("ConfigMap", "p-a", &ObjectMeta::default(), "u1").as_deref(),
            Some("ConfigMap \"p-a\" (no owner)")
        );
        // Same name, another pool (e.g. a pool deleted and created again
        // before the garbage collector ran, or a neighbour's name clash).
        assert_eq!(
            not_owned("Service", "p", &owned_by(&[("SendingPool", "p", "old"), ("Deployment", "app", "u9")]), "u1")
                .as_deref(),
            Some("Service \"p\" (owned by Deployment \"app\", SendingPool \"p\")")
        );
        let e = Error::NotOwned { objects: "ConfigMap \"p-a\" (no owner)".into() };
        assert_eq!(e.category(), "ObjectConflict");
        assert_eq!(
            e.to_string(),
            "not taking over objects the pool does not own (delete or rename them): ConfigMap \"p-a\" (no owner)"
        );
    }
}
