//! Step 2, claim: make the pool the one owner, cluster-wide, of each of its
//! egress addresses before anything is observed or written for them.
//!
//! For every address the pool lists, the operator *creates* the
//! cluster-scoped `EgressAddressClaim` named after the address
//! (`sendfleet_render::api::claim::claim_name`). Create, never apply: the
//! API server lets exactly one create of a name succeed, so two pools
//! claiming one address at the same moment — in any namespaces, through any
//! operator replica — get one owner and one refusal. A claim that already
//! exists for this pool (same uid) is the pool's; one for another pool
//! refuses the **whole pool**: `Ready=False`, reason `AddressInUse`, naming
//! the owner `namespace/name` and the field, and the pipeline stops here —
//! no agent is polled (its answers could be the owner's), nothing is
//! applied, nothing pruned. Whole-pool rather than per-instance: the pool's
//! Service, EndpointSlice, peers and hand-off networks are computed from
//! all its addresses, and a pool that runs on some of them would look
//! healthy while a spec address is somebody else's.
//!
//! Addresses are claimed in one global order (by claim name) and nothing is
//! created after the first refusal, so two pools listing the same addresses
//! cannot each win one and wait for the other forever; a refused pool keeps
//! the claims it did win (first come, first served).
//!
//! The refused pool is retried every minute, and at once when a claim on
//! one of its addresses is deleted (the controller watches claims,
//! `crate::operator::run_controller`). Claims are released by
//! `crate::operator::claims`, never here.
//!
//! Steady state costs no request: the pool's claims are LISTed (by label)
//! once per pool generation, then read from the claims cache (why that is
//! safe: at [`claim`]).
//!
//! Never: update or delete a claim (it is the lock), or write anything for
//! an address another pool owns.

use std::collections::BTreeSet;

use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::ResourceExt;
use sendfleet_render::api::claim::{claim_name, normalize, LABEL_CLAIM_POOL_UID};
use sendfleet_render::api::{ClaimOwner, EgressAddressClaim, EgressAddressClaimSpec, SendingPool};
use sendfleet_render::conditions::Reason;

use crate::operator::context::Context;
use crate::operator::error::Retry;

/// An address of the pool that another pool owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The field, `spec.egressIPs[i].address`.
    pub field: String,
    pub address: String,
    pub owner: ClaimOwner,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} is owned by SendingPool {}", self.field, self.address, self.owner)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the SendingPool has no uid")]
    NoUid,
    #[error("listing the EgressAddressClaims of the pool")]
    ListClaims {
        #[source]
        source: kube::Error,
    },
    #[error("creating EgressAddressClaim {name}")]
    CreateClaim {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{}", .conflicts.iter().map(Conflict::to_string).collect::<Vec<_>>().join("; "))]
    AddressInUse { conflicts: Vec<Conflict> },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoUid => "NoUid",
            Error::ListClaims { .. } => "ListEgressAddressClaims",
            Error::CreateClaim { .. } => "CreateEgressAddressClaim",
            Error::AddressInUse { .. } => "AddressInUse",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::NoUid => Retry::OnSpecChange,
            Error::ListClaims { .. } | Error::CreateClaim { .. } => Retry::Transient,
            // The owner may release it; the claim's deletion also triggers
            // a reconcile at once.
            Error::AddressInUse { .. } => Retry::MissingReference,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::AddressInUse { .. } => Some(Reason::AddressInUse),
            Error::CreateClaim { .. } => Some(Reason::ApplyFailed),
            Error::NoUid | Error::ListClaims { .. } => None,
        }
    }
}

/// The claim a pool holds (or asks for) on one address.
pub fn desired_claim(pool: &SendingPool, uid: &str, address: std::net::IpAddr) -> EgressAddressClaim {
    EgressAddressClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(address)),
            labels: Some([(LABEL_CLAIM_POOL_UID.to_string(), uid.to_string())].into()),
            ..Default::default()
        },
        spec: EgressAddressClaimSpec {
            address: normalize(address).to_string(),
            pool: ClaimOwner {
                namespace: pool.namespace().unwrap_or_default(),
                name: pool.name_any(),
                uid: uid.to_string(),
            },
        },
    }
}

/// Hold every address of the pool, or say who holds the others.
pub async fn claim(ctx: &Context, pool: &SendingPool) -> Result<(), Error> {
    let uid = pool.uid().ok_or(Error::NoUid)?;
    let api: Api<EgressAddressClaim> = Api::all(ctx.client.clone());
    let caches = ctx.caches();
    let generation = pool.metadata.generation.unwrap_or_default();
    let verified = caches.claims_verified.lock().unwrap_or_else(|p| p.into_inner()).get(&uid) == Some(&generation);
    // The claims the pool holds. Read live once per pool generation, then
    // from the cache: the operator releases a claim of a pool that exists
    // only after a live read of its spec no longer listed the address
    // (`claims.rs`), i.e. at a newer generation, which is read live again
    // here. A claim deleted by hand is gone from the cache within the
    // watch's delay, and its deletion wakes this pool, which then creates
    // it again (the create, a live request, is the lock either way).
    let held: BTreeSet<String> = if verified {
        caches
            .claims
            .state()
            .iter()
            .filter(|c| c.spec.pool.uid == uid && c.labels().get(LABEL_CLAIM_POOL_UID) == Some(&uid))
            .map(|c| c.name_any())
            .collect()
    } else {
        api.list_metadata(&ListParams::default().labels(&format!("{LABEL_CLAIM_POOL_UID}={uid}")))
            .await
            .map_err(|source| Error::ListClaims { source })?
            .items
            .iter()
            .map(|c| c.name_any())
            .collect()
    };
    // Addresses in one global order (by claim name), and no create after
    // the first refusal: two pools that want the same addresses cannot each
    // hold one of them and wait for the other forever (lock ordering). The
    // rest are only read, so the status names every owner.
    // The bind address and, behind a NAT, the public one: two pools must
    // not share either.
    let mut wanted: Vec<(usize, &str, &str, EgressAddressClaim)> = pool
        .spec
        .egress_ips
        .iter()
        .enumerate()
        .flat_map(|(i, ip)| ip.held_addresses().map(move |(field, a)| (i, field, a)))
        // Not an address: the render refuses the pool (InvalidSpec) before
        // anything is written; there is nothing to lock.
        .filter_map(|(i, field, a)| Some((i, field, a, desired_claim(pool, &uid, a.parse().ok()?))))
        .filter(|(.., c)| !held.contains(&c.name_any()))
        .collect();
    wanted.sort_by_key(|(.., c)| c.name_any());
    wanted.dedup_by_key(|(.., c)| c.name_any());
    let mut conflicts = vec![];
    for (i, field, address, want) in &wanted {
        let owner = if conflicts.is_empty() {
            create(ctx, &api, want).await?
        } else {
            let name = want.name_any();
            let read = api.get_opt(&name).await.map_err(|source| Error::CreateClaim { name, source })?;
            read.map(|c| c.spec.pool).filter(|o| o.uid != uid)
        };
        if let Some(owner) = owner {
            let conflict =
                Conflict { field: format!("spec.egressIPs[{i}].{field}"), address: address.to_string(), owner };
            conflicts.push((*i, conflict));
        }
    }
    conflicts.sort_by_key(|(i, _)| *i);
    let conflicts: Vec<Conflict> = conflicts.into_iter().map(|(_, c)| c).collect();
    if conflicts.is_empty() {
        // Every address held, as read live or created now at this
        // generation: the cache may answer until the spec changes.
        caches.claims_verified.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, generation);
        Ok(())
    } else {
        Err(Error::AddressInUse { conflicts })
    }
}

/// Create the claim; `Some(owner)` when another pool holds it. A claim that
/// exists with this pool's uid is ours (created by a previous leader); one
/// deleted between our create and our read is created again.
async fn create(
    ctx: &Context,
    api: &Api<EgressAddressClaim>,
    want: &EgressAddressClaim,
) -> Result<Option<ClaimOwner>, Error> {
    let name = want.name_any();
    let failed = |source| Error::CreateClaim { name: name.clone(), source };
    for _ in 0..3 {
        match api.create(&PostParams::default(), want).await {
            Ok(_) => {
                ctx.metrics.wrote("EgressAddressClaim");
                tracing::info!(claim = %name, address = %want.spec.address, pool = %want.spec.pool, "claimed egress address");
                return Ok(None);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await.map_err(failed)? {
                Some(c) if c.spec.pool.uid == want.spec.pool.uid => return Ok(None),
                Some(c) => return Ok(Some(c.spec.pool)),
                None => continue,
            },
            Err(e) => return Err(failed(e)),
        }
    }
    // Created and deleted under us three times: try again later.
    Err(failed(kube::Error::Api(
        kube::core::Status::failure("the claim was deleted while being read", "Conflict").with_code(409).boxed(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_names_the_field_and_the_owner_and_waits_for_a_release() {
        let e = Error::AddressInUse {
            conflicts: vec![Conflict {
                field: "spec.egressIPs[1].address".into(),
                address: "10.250.1.11".into(),
                owner: ClaimOwner { namespace: "ns1".into(), name: "a".into(), uid: "u".into() },
            }],
        };
        assert_eq!(e.to_string(), "spec.egressIPs[1].address: 10.250.1.11 is owned by SendingPool ns1/a");
        assert_eq!(
            (e.category(), e.reason(), e.retry()),
            ("AddressInUse", Some(Reason::AddressInUse), Retry::MissingReference)
        );
    }

    #[test]
    fn the_claim_is_named_by_the_address_value_and_names_the_pool_by_uid() {
        let pool: SendingPool = serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: ns}\nspec:\n  egressIPs: [{name: a, address: 192.0.2.1, heloName: a.example.com}]\n",
        )
        .unwrap();
        let c = desired_claim(&pool, "uid-1", "::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(c.name_any(), "192-0-2-1");
        assert_eq!(c.spec.address, "192.0.2.1");
        assert_eq!(c.spec.pool, ClaimOwner { namespace: "ns".into(), name: "p".into(), uid: "uid-1".into() });
        assert_eq!(c.labels().get(LABEL_CLAIM_POOL_UID).map(String::as_str), Some("uid-1"));
    }
}
