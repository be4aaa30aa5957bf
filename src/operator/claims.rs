//! Releasing egress address claims: a claim whose SendingPool is gone
//! (no pool of that name, or one with another uid) or no longer lists the
//! address is deleted, so another pool may claim the address.
//!
//! A claim is cluster-scoped and a pool namespaced, so the claim cannot
//! carry an owner reference to its pool and the garbage collector cannot
//! release it. Instead of a finalizer on the pool (a pool could then not be
//! deleted while the operator is away, and issue 16 adds the drain
//! finalizer) this controller reconciles every claim:
//! - on its own events, which includes every claim at start (the sweep
//!   after an operator restart or a leader change);
//! - when its pool changes or is deleted (the pool watch maps a pool to the
//!   claims carrying its uid);
//! - every resync interval, repairing a pool deletion missed while a watch
//!   was down.
//!
//! It decides a release on the pool read live from the API server (a cached
//! pool that still lists the address only spares that read: the cache may
//! keep a claim, never release one): the pool
//! pipeline creates a claim only after it read a spec listing the address,
//! so a live read that follows the claim's creation sees that spec or a
//! newer one, and a stale cache can never release a claim just taken. The
//! delete carries the claim's uid as a precondition, so a claim another
//! pool created under the same name meanwhile is never deleted.
//!
//! The pool that waits for a released address is woken by the SendingPool
//! controller's own watch on claims (`super::run_controller`).
//!
//! With `--watch-namespace`, only claims of pools in that namespace are
//! released: another operator installation owns the rest.
//!
//! A claim whose pool let the address go is still held while the address
//! is in use: while a StatefulSet of the pool carries it (a removed IP
//! draining, or a drained one deleted in the foreground, which stays until
//! its pod is gone — `pool/drain.rs`), and, once the pool itself is gone,
//! while any pod of the pool remains. So a pool waiting for the address
//! starts only after the old pod stopped binding it. Such a claim is looked
//! at again every [`HELD_RETRY`].
//!
//! Never: create or change a claim (the pool pipeline creates them,
//! `pool/claim.rs`), or release one whose pool still lists its address or
//! whose address a StatefulSet or pod of the pool may still bind.

use std::sync::Arc;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use sendfleet_render::api::claim::same_address;
use sendfleet_render::api::{EgressAddressClaim, SendingPool};
use sendfleet_render::objects::{egress_ip_of, LABEL_POOL};

use super::context::Context;
use super::error::Retry;

/// What the release controller needs.
pub struct Scope {
    pub ctx: Arc<Context>,
    /// `--watch-namespace` (empty: every namespace).
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading SendingPool {pool} (owner of EgressAddressClaim {claim})")]
    GetPool {
        pool: String,
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the StatefulSets and pods of pool {pool} (EgressAddressClaim {claim})")]
    ListInUse {
        pool: String,
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting EgressAddressClaim {claim}")]
    Delete {
        claim: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::GetPool { .. } => "GetSendingPool",
            Error::Delete { .. } => "DeleteEgressAddressClaim",
            Error::ListInUse { .. } => "ListStatefulSets",
        }
    }
}

/// Why a claim no longer holds its address, or `None` while its pool (read
/// live) still lists it. Pure.
pub fn stale(claim: &EgressAddressClaim, pool: Option<&SendingPool>) -> Option<&'static str> {
    let Some(pool) = pool else { return Some("the pool is gone") };
    if pool.uid().as_deref() != Some(claim.spec.pool.uid.as_str()) {
        return Some("the pool was deleted (a pool of the same name is another pool)");
    }
    if !pool
        .spec
        .egress_ips
        .iter()
        .flat_map(|ip| ip.held_addresses())
        .any(|(_, a)| same_address(a, &claim.spec.address))
    {
        return Some("the pool no longer lists the address");
    }
    None
}

/// How soon a claim held only because its address is still in use is
/// looked at again (nothing wakes it when the StatefulSet or pod goes).
pub const HELD_RETRY: Duration = Duration::from_secs(10);

/// The address may still be bound: a StatefulSet of the pool carries it,
/// or (`pool_gone`) any pod of the pool is left. Pure.
pub fn in_use(claim: &EgressAddressClaim, statefulsets: &[StatefulSet], pods: &[Pod], pool_gone: bool) -> bool {
    let carried = statefulsets.iter().filter_map(egress_ip_of).any(|ip| same_address(&ip.address, &claim.spec.address));
    carried || (pool_gone && !pods.is_empty())
}

/// The claims controller: every claim, woken by its pool's changes.
pub fn controller(client: &Client, pools: Api<SendingPool>) -> Controller<EgressAddressClaim> {
    let claims = Controller::<EgressAddressClaim>::new(Api::all(client.clone()), watcher::Config::default());
    let store = claims.store();
    claims.watches::<SendingPool, _>(pools, watcher::Config::default(), move |pool| {
        let uid = pool.uid();
        store
            .state()
            .into_iter()
            .filter(|c| uid.as_deref() == Some(c.spec.pool.uid.as_str()))
            .map(|c| ObjectRef::from_obj(&*c))
            .collect::<Vec<_>>()
    })
}

pub async fn reconcile(claim: Arc<EgressAddressClaim>, scope: Arc<Scope>) -> Result<Action, Error> {
    let owner = &claim.spec.pool;
    if !scope.namespace.is_empty() && owner.namespace != scope.namespace {
        return Ok(Action::await_change());
    }
    // The pool cache may only *keep* a claim: when it shows the pool still
    // listing the address, nothing is released and no live read is needed
    // (at rest, no request per claim). Releasing is decided on a live read
    // alone, as below.
    let cached = scope.ctx.caches().pools.get(&ObjectRef::new(&owner.name).within(&owner.namespace));
    if cached.is_some_and(|p| stale(&claim, Some(&*p)).is_none()) {
        return Ok(Action::requeue(scope.ctx.resync));
    }
    let client = &scope.ctx.client;
    let pool = Api::<SendingPool>::namespaced(client.clone(), &owner.namespace)
        .get_opt(&owner.name)
        .await
        .map_err(|source| Error::GetPool { pool: owner.to_string(), claim: claim.name_any(), source })?;
    let Some(why) = stale(&claim, pool.as_ref()) else {
        return Ok(Action::requeue(scope.ctx.resync));
    };
    let pool_gone = pool.as_ref().and_then(|p| p.uid()).as_deref() != Some(owner.uid.as_str());
    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={}", owner.name));
    let list_err = |source| Error::ListInUse { pool: owner.to_string(), claim: claim.name_any(), source };
    let statefulsets =
        Api::<StatefulSet>::namespaced(client.clone(), &owner.namespace).list(&lp).await.map_err(list_err)?.items;
    let pods = Api::<Pod>::namespaced(client.clone(), &owner.namespace).list(&lp).await.map_err(list_err)?.items;
    if in_use(&claim, &statefulsets, &pods, pool_gone) {
        tracing::debug!(claim = %claim.name_any(), pool = %owner, why, "address still in use: claim held");
        return Ok(Action::requeue(HELD_RETRY));
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: claim.uid(), resource_version: None }),
        ..Default::default()
    };
    match Api::<EgressAddressClaim>::all(client.clone()).delete(&claim.name_any(), &params).await {
        Ok(_) => {
            scope.ctx.metrics.wrote("EgressAddressClaim");
            tracing::info!(claim = %claim.name_any(), address = %claim.spec.address, pool = %owner, why, "released egress address");
        }
        // Gone already, or replaced by another pool's claim (uid
        // precondition): nothing of ours to release.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => return Err(Error::Delete { claim: claim.name_any(), source }),
    }
    Ok(Action::await_change())
}

pub fn error_policy(claim: Arc<EgressAddressClaim>, error: &Error, _scope: Arc<Scope>) -> Action {
    super::error::after_failure(&*claim, error.category(), Retry::Transient, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::api::{ClaimOwner, EgressAddressClaimSpec};

    fn pool(uid: &str, addresses: &[&str]) -> SendingPool {
        let ips: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{{name: i{i}, address: '{a}', heloName: a.example.com}}"))
            .collect();
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: a, namespace: ns1, uid: {uid}}}\nspec:\n  egressIPs: [{}]\n",
            ips.join(", ")
        ))
        .unwrap()
    }

    fn claim(address: &str) -> EgressAddressClaim {
        let owner = ClaimOwner { namespace: "ns1".into(), name: "a".into(), uid: "u1".into() };
        EgressAddressClaim::new("c", EgressAddressClaimSpec { address: address.into(), pool: owner })
    }

    #[test]
    fn a_claim_is_released_only_when_its_pool_is_gone_or_drops_the_address() {
        let c = claim("10.250.1.11");
        assert_eq!(stale(&c, Some(&pool("u1", &["10.250.1.11"]))), None);
        assert_eq!(stale(&c, Some(&pool("u1", &["10.250.1.12", "10.250.1.11"]))), None);
        assert_eq!(stale(&c, None), Some("the pool is gone"));
        assert!(stale(&c, Some(&pool("u2", &["10.250.1.11"]))).is_some(), "same name, another pool");
        assert_eq!(stale(&c, Some(&pool("u1", &["10.250.1.12"]))), Some("the pool no longer lists the address"));
        let v6 = claim("2001:db8::1");
        assert_eq!(stale(&v6, Some(&pool("u1", &["2001:db8:0::1"]))), None, "another spelling is the same address");
    }

    #[test]
    fn a_claim_is_held_while_a_statefulset_carries_the_address_or_a_gone_pool_has_pods() {
        let c = claim("10.250.1.11");
        let sts = |addr: &str| -> StatefulSet {
            let ip = format!("{{\"name\":\"i0\",\"address\":\"{addr}\",\"heloName\":\"a.example.com\"}}");
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "a-i0", "annotations": {"sendfleet.io/egress-ip": ip}}
            }))
            .unwrap()
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "a-i0-0"}})).unwrap();
        assert!(in_use(&c, &[sts("10.250.1.11")], &[], false), "draining or deleting in the foreground");
        assert!(
            !in_use(&c, &[sts("10.250.1.12")], std::slice::from_ref(&pod), false),
            "another address; the pool lives"
        );
        assert!(in_use(&c, &[], &[pod], true), "the pool is gone but a pod may still bind it");
        assert!(!in_use(&c, &[], &[], true));
    }
}
