//! The generic server-side-apply helpers of the pool pipeline: apply
//! desired objects in order, and delete the pool's objects that are no
//! longer desired. (The `/status` patch shared by every controller is in
//! `status.rs`.)
//!
//! No write that changes nothing: every applied object carries the hash of
//! what was applied (`sendfleet.io/applied-hash`); when the live object
//! already carries the desired hash the patch is skipped, so a converged
//! operator makes no mutating requests at all. The trade-off: a manual edit
//! of a field we own is repaired on the next change, not immediately.

use std::collections::BTreeSet;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use sendfleet_render::objects::{Desired, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_POOL};
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
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Get { .. } => "GetObject",
            Error::Patch { .. } => "ApplyObject",
            Error::List { .. } => "ListObjects",
            Error::Delete { .. } => "DeleteObject",
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

fn hash(v: &serde_json::Value) -> String {
    let d = Sha256::digest(v.to_string().as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Apply `desired` in order. Returns how many objects were written.
pub async fn apply(client: &Client, namespace: &str, desired: &[Desired], metrics: &Metrics) -> Result<usize> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = 0;
    for d in desired {
        let mut v = d.to_json();
        let h = hash(&v);
        v["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] = h.clone().into();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(d.kind()));
        let kind = kind_static(d.kind());
        let live = api.get_opt(d.name()).await.map_err(|source| Error::Get { kind, name: d.name().into(), source })?;
        let current =
            live.as_ref().and_then(|o| o.metadata.annotations.as_ref()).and_then(|a| a.get(ANNOTATION_APPLIED_HASH));
        if current == Some(&h) {
            continue;
        }
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

/// Delete objects labelled as this pool's, owned by it (uid), and no longer
/// desired — e.g. the StatefulSet and ConfigMap of a removed egress IP.
/// Queue claims are never deleted here (StatefulSet retention: Retain).
pub async fn prune(
    client: &Client,
    namespace: &str,
    pool: &str,
    pool_uid: &str,
    desired: &[Desired],
    metrics: &Metrics,
) -> Result<usize> {
    let keep: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind(), d.name())).collect();
    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={pool},{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    let mut deleted = 0;
    for &kind in OWNED_KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
        let list = api.list_metadata(&lp).await.map_err(|source| Error::List { kind, source })?;
        for obj in list.items {
            let Some(name) = obj.metadata.name.as_deref() else { continue };
            let owned = obj.metadata.owner_references.iter().flatten().any(|o| o.uid == pool_uid);
            if !owned || keep.contains(&(kind, name)) {
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
