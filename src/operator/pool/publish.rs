//! Step 5b, publish: the pool's external-dns `DNSEndpoint`
//! (`spec.dnsRecords.publish: DNSEndpoint`). It holds the records
//! `crate::dns::records::pool_records` decided — the same list as
//! `status.dnsRecords` and `sendfleet render --records` — less those whose
//! value is not known (a DKIM record before the key's public half could be
//! read). One object per pool, named after it, labelled and owned by it,
//! written by server-side apply under the operator's field manager and
//! only when its applied hash changed; deleted when the pool stops asking.
//!
//! The CRD is external-dns's, not ours, and may be missing: then nothing
//! is written and the pool says so (`DnsRecordsPublished=False`, reason
//! `DNSEndpointNotInstalled`), looked for again every minute. It is not
//! watched (a watch on a missing CRD fails); what the object was last read
//! or written as is remembered in `crate::operator::cache`.
//!
//! Never: take over a `DNSEndpoint` of that name the pool does not own
//! (`ObjectConflict`, nothing written), delete one it does not own, or see
//! a private key (the records carry the DKIM public half only).

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;
use sendfleet_render::objects::{
    self, DNS_ENDPOINT_GROUP, DNS_ENDPOINT_KIND, DNS_ENDPOINT_PLURAL, DNS_ENDPOINT_VERSION, FIELD_MANAGER,
    LABEL_MANAGED_BY,
};

use crate::dns::records::DnsRecord;
use crate::operator::apply::{hash, not_owned, ANNOTATION_APPLIED_HASH};
use crate::operator::context::Context;
use crate::operator::error::Retry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("asking the API server whether it serves {DNS_ENDPOINT_GROUP}/{DNS_ENDPOINT_VERSION}")]
    Discovery {
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Objects(#[from] crate::operator::apply::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Discovery { .. } => "DiscoverDNSEndpoint",
            Error::Objects(e) => e.category(),
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Objects(e) => super::apply::objects_retry(e),
            Error::Discovery { .. } => Retry::Transient,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Error::Objects(e) => super::apply::objects_reason(e),
            Error::Discovery { .. } => Reason::ApplyFailed,
        })
    }
}

/// What publishing achieved, for the `DnsRecordsPublished` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// The pool does not ask (`spec.dnsRecords` absent).
    NotAsked,
    /// The `DNSEndpoint` holds `records` records; `left_out` names those
    /// without a known value.
    Written { records: usize, left_out: Vec<String> },
    /// The pool asks, but the CRD is not served.
    NotInstalled,
}

fn api_resource() -> ApiResource {
    ApiResource {
        group: DNS_ENDPOINT_GROUP.into(),
        version: DNS_ENDPOINT_VERSION.into(),
        api_version: format!("{DNS_ENDPOINT_GROUP}/{DNS_ENDPOINT_VERSION}"),
        kind: DNS_ENDPOINT_KIND.into(),
        plural: DNS_ENDPOINT_PLURAL.into(),
    }
}

/// Whether the API server serves `dnsendpoints` (discovery, which every
/// authenticated client may read), remembered for a while.
async fn crd_served(ctx: &Context) -> Result<bool, Error> {
    let caches = ctx.caches();
    if let Some(served) = caches.dns_endpoint_crd() {
        return Ok(served);
    }
    let served =
        match ctx.client.list_api_group_resources(&format!("{DNS_ENDPOINT_GROUP}/{DNS_ENDPOINT_VERSION}")).await {
            Ok(list) => list.resources.iter().any(|r| r.name == DNS_ENDPOINT_PLURAL),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(source) => return Err(Error::Discovery { source }),
        };
    caches.remember_dns_endpoint_crd(served);
    Ok(served)
}

/// Make the pool's `DNSEndpoint` what it asks for: `records` (those with a
/// value) when `spec.dnsRecords` is set, none otherwise.
pub async fn publish(
    ctx: &Context,
    pool: &SendingPool,
    namespace: &str,
    records: &[DnsRecord],
) -> Result<Published, Error> {
    let asked = pool.spec.dns_records.is_some();
    // Without a uid nothing can be owned or proven ours.
    let Some(uid) = pool.uid() else { return Ok(Published::NotAsked) };
    let name = pool.name_any();
    let known: Vec<(&str, &str, &str)> =
        records.iter().filter_map(|r| Some((r.name.as_str(), r.record_type, r.value.as_deref()?))).collect();
    let left_out: Vec<String> =
        records.iter().filter(|r| r.value.is_none()).map(|r| format!("{} {}", r.record_type, r.name)).collect();
    let written = Published::Written { records: known.len(), left_out };
    let desired = asked.then(|| {
        let mut v = objects::dns_endpoint(pool, &known);
        let h = hash(&v);
        v["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] = h.clone().into();
        (v, h)
    });
    let want = desired.as_ref().map(|(_, h)| h.as_str());
    let caches = ctx.caches();
    if caches.dns_endpoint_settled(namespace, &name, &uid, want) {
        return Ok(if asked { written } else { Published::NotAsked });
    }
    let served = match crd_served(ctx).await {
        Ok(served) => served,
        // A pool that does not ask is not held up by discovery: nothing is
        // remembered, so the next reconcile asks again.
        Err(e) if !asked => {
            tracing::debug!(namespace, pool = %name, error = %crate::operator::events::chain(&e), "DNSEndpoint discovery failed");
            return Ok(Published::NotAsked);
        }
        Err(e) => return Err(e),
    };
    if !served {
        if !asked {
            // No CRD, no object of the pool's: nothing to prune.
            caches.dns_endpoint_seen(namespace, &name, &uid, None);
            return Ok(Published::NotAsked);
        }
        return Ok(Published::NotInstalled);
    }
    let kind = DNS_ENDPOINT_KIND;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &api_resource());
    let live = api
        .get_metadata_opt(&name)
        .await
        .map_err(|source| crate::operator::apply::Error::Get { kind, name: name.clone(), source })?
        .map(|o| o.metadata);
    let Some((object, h)) = desired else {
        // Not asked: delete the pool's own object, if there is one; leave
        // anyone else's alone.
        let ours = live.as_ref().is_some_and(|m| {
            not_owned(kind, &name, m, &uid).is_none()
                && m.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str) == Some(FIELD_MANAGER)
        });
        if ours {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    ctx.metrics.wrote(kind);
                    tracing::info!(namespace, kind, name = %name, "deleted (no longer asked for)");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(crate::operator::apply::Error::Delete { kind, name, source }.into()),
            }
        }
        caches.dns_endpoint_seen(namespace, &name, &uid, None);
        return Ok(Published::NotAsked);
    };
    if let Some(meta) = &live {
        if let Some(objects) = not_owned(kind, &name, meta, &uid) {
            return Err(crate::operator::apply::Error::NotOwned { objects }.into());
        }
    }
    let current = live.and_then(|m| m.annotations?.remove(ANNOTATION_APPLIED_HASH));
    if current.as_deref() != Some(h.as_str()) {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(_) => {}
            // The CRD went away since discovery said it was there.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                caches.remember_dns_endpoint_crd(false);
                return Ok(Published::NotInstalled);
            }
            Err(source) => return Err(crate::operator::apply::Error::Patch { kind, name, source }.into()),
        }
        ctx.metrics.wrote(kind);
        tracing::info!(namespace, kind, name = %name, "applied");
    }
    caches.dns_endpoint_seen(namespace, &name, &uid, Some(&h));
    Ok(written)
}
