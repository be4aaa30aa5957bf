//! Watch-fed caches: what the reconciles read instead of asking the API
//! server on every pass, and the triggers that wake exactly the objects a
//! change affects.
//!
//! One reflector (a watch feeding a `Store`) per kind the controllers read:
//! SendingPools, DomainPolicies, WarmupPlans, the pools' Pods and
//! StatefulSets, the StatefulSet controller's `FailedCreate` Events, the
//! EgressAddressClaims, the metadata of every other kind a pool owns
//! (ConfigMap, Service, ServiceAccount, EndpointSlice, PodDisruptionBudget:
//! owner references and the applied hash, never the data), and — only when
//! the administrator's limits need them — Namespace and Node metadata. At
//! rest a converged fleet then costs the API server its open watches and
//! nothing per pool; a reconcile costs no read at all (see the exceptions
//! below).
//!
//! **The cache is the trigger.** Each reflector writes its store *before*
//! it hands the event on, and the triggers are sent from that stream: a
//! reconcile woken by a change always reads a store that already holds it.
//! (Two separate watches — one to wake, one to read — could wake a pool
//! before its cache saw the change, and the change would wait for the next
//! resync.) What each change wakes:
//! - a DomainPolicy: the pools its selector matches now, the pools its
//!   previous version matched (an unselected pool must drop its transport),
//!   and the pools its `route.pool` names, old and new (hand-off sources) —
//!   not every pool of the namespace;
//! - a WarmupPlan: the pools naming it;
//! - a Pod, StatefulSet or owned object: its pool; a `FailedCreate` Event: the
//!   pool of its StatefulSet;
//! - a claim: its owner and the pools waiting for its address;
//! - a Namespace: its pools; a Node: the pools with an address on it;
//! - a SendingPool: the DomainPolicies and WarmupPlans of its namespace
//!   (their status lists the pools); the pool itself is woken by its own
//!   controller's watch.
//!
//! **Safety (docs/SECURITY.md) with a cache.** A cache may lag the API
//! server; nothing here lets that lag cause a write the live state would
//! forbid:
//! - *ownership before a write*: an object the cache shows owned by the pool
//!   and carrying the desired applied hash (the hash covers the owner
//!   reference, i.e. the pool's uid) is not written at all; every object that
//!   is to be written is read live (metadata) before the first write, as
//!   before (`crate::operator::apply::check_ownership_cached`);
//! - *address claims*: the claim create is the lock and stays a live
//!   request; the cache only spares the LIST of claims the pool already
//!   holds, and only for a pool generation whose claims were once read live
//!   ([`Caches::claims_verified`]): the operator releases a claim of a living
//!   pool only after its spec dropped the address, i.e. at a new generation;
//! - *Secrets*: never cached (listing Secrets would need `list` on them);
//!   their existence is re-read live at most every [`SECRET_RECHECK`] and the
//!   agent token when an agent refuses it;
//! - *DNSEndpoints* (external-dns's CRD, which may not be installed, so not
//!   watched): what the pool's object was last read or written as is
//!   remembered per pool uid ([`Caches::dns_endpoint_settled`]): as desired
//!   for [`SECRET_RECHECK`] (a deleted one is written again within it), none
//!   of the pool's for as long as the pool does not ask for one; whether the
//!   CRD is served, for [`DNS_ENDPOINT_CRD_RECHECK`];
//! - admission reads Namespace/Node labels from the cache: a stale answer
//!   at worst refuses or admits a pool for the moment until the label change
//!   arrives, and the label change itself wakes the pools concerned.
//!
//! Never: write anything, or hand out a store before it has synced
//! ([`Caches::start`] waits: an empty store would render pools without
//! their policies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use sendfleet_render::api::claim::same_address;
use sendfleet_render::api::{DomainPolicy, EgressAddressClaim, SendingPool, WarmupPlan};
use sendfleet_render::objects::{FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_POOL};
use sendfleet_render::selector;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

use super::limits::Limits;

/// How long a Secret the pool owns counts as present without a live read
/// (the hash-key and agent-token Secrets): a deleted one is created again
/// within this time.
pub const SECRET_RECHECK: Duration = Duration::from_secs(300);

/// How long the answer to "is the DNSEndpoint CRD served" is reused.
pub const DNS_ENDPOINT_CRD_RECHECK: Duration = Duration::from_secs(30);

/// Where the triggers go: the pool controller, and the DomainPolicy and
/// WarmupPlan status controllers.
#[derive(Clone)]
pub struct Triggers {
    pub pools: UnboundedSender<ObjectRef<SendingPool>>,
    pub policies: UnboundedSender<ObjectRef<DomainPolicy>>,
    pub plans: UnboundedSender<ObjectRef<WarmupPlan>>,
}

/// A pool's agent token as read: (pool uid, token, when read).
type Token = (String, String, Instant);
/// What a pool's DNSEndpoint was last read or written as: (pool uid, its
/// applied hash or `None` for "none of the pool's", when).
type DnsEndpointSeen = (String, Option<String>, Instant);

/// The stores (see the module doc) and the little the operator remembers
/// between reconciles.
pub struct Caches {
    pub pools: Store<SendingPool>,
    pub policies: Store<DomainPolicy>,
    pub plans: Store<WarmupPlan>,
    pub pods: Store<Pod>,
    pub statefulsets: Store<StatefulSet>,
    pub failed_creates: Store<Event>,
    pub claims: Store<EgressAddressClaim>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    endpoint_slices: Store<PartialObjectMeta<EndpointSlice>>,
    pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    /// Only when namespaces are opted in by label.
    pub namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// Only when an administrator's node selector is set.
    pub nodes: Option<Store<PartialObjectMeta<Node>>>,
    /// Pool uid -> the generation whose claims were last read live.
    pub claims_verified: Mutex<HashMap<String, i64>>,
    /// (namespace, Secret) -> (owner uid, when its existence was read live).
    secrets_seen: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// (namespace, pool) -> the agent token.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// (namespace, pool) -> what its DNSEndpoint was last read or written as.
    dns_endpoints: Mutex<HashMap<(String, String), DnsEndpointSeen>>,
    /// Whether the DNSEndpoint CRD was served, and when that was asked.
    dns_endpoint_crd: Mutex<Option<(bool, Instant)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The reflector tasks and what they need while being built.
struct Builder {
    client: Client,
    namespace: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ready: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Builder {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        if self.namespace.is_empty() {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), &self.namespace)
        }
    }

    /// A reflector of whole objects; `wake` maps each change (after the
    /// store holds it) to triggers; on a (re)list every object is mapped.
    fn full<K>(&mut self, api: Api<K>, cfg: watcher::Config, wake: impl Fn(&K) + Send + 'static) -> Store<K>
    where
        K: Resource<DynamicType = ()>
            + reflector::Lookup<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
        self.drive(store.clone(), stream, wake);
        store
    }

    /// A reflector of metadata only (owner references, labels, annotations):
    /// an `Api<PartialObjectMeta<K>>` asks for metadata alone.
    fn meta<K>(
        &mut self,
        api: Api<PartialObjectMeta<K>>,
        cfg: watcher::Config,
        wake: impl Fn(&PartialObjectMeta<K>) + Send + 'static,
    ) -> Store<PartialObjectMeta<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.full(api, cfg, wake)
    }

    fn drive<K>(
        &mut self,
        store: Store<K>,
        stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        wake: impl Fn(&K) + Send + 'static,
    ) where
        K: reflector::Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let all = store.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => wake(&o),
                    Ok(watcher::Event::InitDone) => all.state().iter().for_each(|o| wake(o)),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "cache watch"),
                }
            }
        }));
        self.ready.push(Box::pin(async move {
            let _ = store.wait_until_ready().await;
        }));
    }
}

fn pool_ref(name: &str, namespace: Option<&str>) -> ObjectRef<SendingPool> {
    let r = ObjectRef::new(name);
    match namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// The pool that owns an object (owner reference of kind SendingPool).
fn owner_pool(meta: &ObjectMeta) -> Option<ObjectRef<SendingPool>> {
    let owner = meta.owner_references.iter().flatten().find(|o| o.kind == "SendingPool")?;
    Some(pool_ref(&owner.name, meta.namespace.as_deref()))
}

/// The pools a DomainPolicy version affects: those it selects and the one
/// its route hands mail to (see the module doc).
pub fn policy_pools(policy: &DomainPolicy, pools: &[Arc<SendingPool>]) -> Vec<ObjectRef<SendingPool>> {
    let ns = policy.namespace();
    let target = policy.spec.route.as_ref().and_then(|r| r.pool.as_deref());
    pools
        .iter()
        .filter(|p| p.namespace() == ns)
        .filter(|p| {
            selector::matches(&policy.spec.pool_selector, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                || Some(p.name_any().as_str()) == target
        })
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

impl Caches {
    /// Start every reflector of `namespace` (empty: all) and wait until each
    /// has listed once.
    pub async fn start(client: &Client, namespace: &str, limits: &Limits, node_selector: bool, t: Triggers) -> Caches {
        let mut b = Builder { client: client.clone(), namespace: namespace.to_string(), tasks: vec![], ready: vec![] };
        let all = watcher::Config::default();
        let of_pools = watcher::Config::default().labels(LABEL_POOL);
        let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));

        // Pools first: the other triggers look pools up.
        let (pools, pools_writer) = reflector::store::<SendingPool>();
        let (policies, policies_writer) = reflector::store::<DomainPolicy>();
        let (plans, plans_writer) = reflector::store::<WarmupPlan>();
        {
            let (policies, plans, tp) = (policies.clone(), plans.clone(), t.clone());
            let stream =
                reflector::reflector(pools_writer, watcher(b.api::<SendingPool>(), all.clone()).default_backoff());
            b.drive(pools.clone(), stream, move |pool: &SendingPool| {
                let ns = pool.namespace();
                for p in policies.state().iter().filter(|p| p.namespace() == ns) {
                    let _ = tp.policies.send(ObjectRef::from_obj(&**p));
                }
                for p in plans.state().iter().filter(|p| p.namespace() == ns) {
                    let _ = tp.plans.send(ObjectRef::from_obj(&**p));
                }
            });
        }
        {
            // The version of each policy last seen, so that a change also
            // wakes the pools the old version selected.
            let seen: Mutex<HashMap<ObjectRef<DomainPolicy>, DomainPolicy>> = Mutex::default();
            let (pools, tp) = (pools.clone(), t.clone());
            let stream =
                reflector::reflector(policies_writer, watcher(b.api::<DomainPolicy>(), all.clone()).default_backoff());
            b.drive(policies.clone(), stream, move |policy: &DomainPolicy| {
                let key = ObjectRef::from_obj(policy);
                let state = pools.state();
                let mut wake = policy_pools(policy, &state);
                let previous = seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), policy.clone());
                if let Some(old) = previous {
                    wake.extend(policy_pools(&old, &state));
                }
                let wake: HashSet<ObjectRef<SendingPool>> = wake.into_iter().collect();
                for p in wake {
                    let _ = tp.pools.send(p);
                }
                let _ = tp.policies.send(key);
            });
        }
        {
            let (pools, tp) = (pools.clone(), t.clone());
            let stream =
                reflector::reflector(plans_writer, watcher(b.api::<WarmupPlan>(), all.clone()).default_backoff());
            b.drive(plans.clone(), stream, move |plan: &WarmupPlan| {
                let name = plan.name_any();
                for p in pools.state().iter().filter(|p| {
                    p.namespace() == plan.namespace() && p.spec.warmup_plan_ref.as_deref() == Some(name.as_str())
                }) {
                    let _ = tp.pools.send(ObjectRef::from_obj(&**p));
                }
                let _ = tp.plans.send(ObjectRef::from_obj(plan));
            });
        }
        let by_label = |tx: UnboundedSender<ObjectRef<SendingPool>>| {
            move |o: &ObjectMeta| {
                if let Some(pool) = o.labels.as_ref().and_then(|l| l.get(LABEL_POOL)) {
                    let _ = tx.send(pool_ref(pool, o.namespace.as_deref()));
                }
            }
        };
        let wake = by_label(t.pools.clone());
        let pods = b.full(b.api::<Pod>(), of_pools.clone(), move |p: &Pod| wake(&p.metadata));
        let wake = by_label(t.pools.clone());
        let statefulsets = b.full(b.api::<StatefulSet>(), of_pools, move |s: &StatefulSet| wake(&s.metadata));
        let failed_creates = {
            let (sts, tx) = (statefulsets.clone(), t.pools.clone());
            let cfg = watcher::Config::default().fields("involvedObject.kind=StatefulSet,reason=FailedCreate");
            b.full(b.api::<Event>(), cfg, move |e: &Event| {
                let (Some(name), Some(ns)) = (&e.involved_object.name, &e.involved_object.namespace) else { return };
                if let Some(pool) = sts.get(&ObjectRef::new(name).within(ns)).and_then(|s| owner_pool(&s.metadata)) {
                    let _ = tx.send(pool);
                }
            })
        };
        let claims = {
            let (pools, tx) = (pools.clone(), t.pools.clone());
            // Claims are cluster-wide: a released address wakes the pools
            // waiting for it in whatever namespace.
            b.full(Api::<EgressAddressClaim>::all(client.clone()), all.clone(), move |claim: &EgressAddressClaim| {
                let owner = &claim.spec.pool;
                let _ = tx.send(pool_ref(&owner.name, Some(&owner.namespace)));
                for p in waiting_pools(claim, pools.state()) {
                    let _ = tx.send(p);
                }
            })
        };
        let owner = |tx: UnboundedSender<ObjectRef<SendingPool>>| {
            move |o: &ObjectMeta| {
                if let Some(p) = owner_pool(o) {
                    let _ = tx.send(p);
                }
            }
        };
        let w = owner(t.pools.clone());
        let config_maps = b.meta(b.api::<PartialObjectMeta<ConfigMap>>(), owned.clone(), move |o| w(&o.metadata));
        let w = owner(t.pools.clone());
        let services = b.meta(b.api::<PartialObjectMeta<Service>>(), owned.clone(), move |o| w(&o.metadata));
        let w = owner(t.pools.clone());
        let service_accounts =
            b.meta(b.api::<PartialObjectMeta<ServiceAccount>>(), owned.clone(), move |o| w(&o.metadata));
        let w = owner(t.pools.clone());
        let endpoint_slices =
            b.meta(b.api::<PartialObjectMeta<EndpointSlice>>(), owned.clone(), move |o| w(&o.metadata));
        let w = owner(t.pools.clone());
        let pdbs = b.meta(b.api::<PartialObjectMeta<PodDisruptionBudget>>(), owned, move |o| w(&o.metadata));
        let namespaces = (!limits.every_namespace()).then(|| {
            let (pools, tx) = (pools.clone(), t.pools.clone());
            b.meta(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), all.clone(), move |n| {
                let name = n.name_any();
                for p in pools.state().iter().filter(|p| p.namespace().as_deref() == Some(name.as_str())) {
                    let _ = tx.send(ObjectRef::from_obj(&**p));
                }
            })
        });
        let nodes = node_selector.then(|| {
            let (pools, tx) = (pools.clone(), t.pools.clone());
            b.meta(Api::<PartialObjectMeta<Node>>::all(client.clone()), all, move |n| {
                let name = n.name_any();
                for p in pools
                    .state()
                    .iter()
                    .filter(|p| p.spec.egress_ips.iter().any(|ip| ip.node_name.as_deref() == Some(name.as_str())))
                {
                    let _ = tx.send(ObjectRef::from_obj(&**p));
                }
            })
        });
        futures::future::join_all(std::mem::take(&mut b.ready)).await;
        Caches {
            pools,
            policies,
            plans,
            pods,
            statefulsets,
            failed_creates,
            claims,
            config_maps,
            services,
            service_accounts,
            endpoint_slices,
            pdbs,
            namespaces,
            nodes,
            claims_verified: Mutex::default(),
            secrets_seen: Mutex::default(),
            tokens: Mutex::default(),
            dns_endpoints: Mutex::default(),
            dns_endpoint_crd: Mutex::default(),
            tasks: b.tasks,
        }
    }

    /// The cached metadata of a pool-owned object of `kind` (the kinds
    /// `crate::operator::apply` applies), `None` when the cache does not
    /// hold it (absent, or not labelled as the operator's).
    pub fn owned_meta(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        fn get<K>(s: &Store<PartialObjectMeta<K>>, ns: &str, name: &str) -> Option<ObjectMeta>
        where
            K: Resource<DynamicType = ()> + Clone,
            PartialObjectMeta<K>: reflector::Lookup<DynamicType = ()>,
        {
            s.get(&ObjectRef::new(name).within(ns)).map(|o| o.metadata.clone())
        }
        match kind {
            "ConfigMap" => get(&self.config_maps, namespace, name),
            "Service" => get(&self.services, namespace, name),
            "ServiceAccount" => get(&self.service_accounts, namespace, name),
            "EndpointSlice" => get(&self.endpoint_slices, namespace, name),
            "PodDisruptionBudget" => get(&self.pdbs, namespace, name),
            "StatefulSet" => self.statefulsets.get(&ObjectRef::new(name).within(namespace)).map(|s| s.metadata.clone()),
            _ => None,
        }
    }

    /// The cached metadata of every object of `kind` (a pool-owned kind)
    /// labelled as `pool`'s and managed by the operator: what prune looks at.
    pub fn owned_of_pool(&self, kind: &str, namespace: &str, pool: &str) -> Vec<ObjectMeta> {
        fn of<K>(s: &Store<PartialObjectMeta<K>>, ns: &str, pool: &str) -> Vec<ObjectMeta>
        where
            K: Resource<DynamicType = ()> + Clone,
        {
            Caches::of_pool(s, ns, pool).into_iter().map(|o| o.metadata).collect()
        }
        match kind {
            "ConfigMap" => of(&self.config_maps, namespace, pool),
            "Service" => of(&self.services, namespace, pool),
            "ServiceAccount" => of(&self.service_accounts, namespace, pool),
            "EndpointSlice" => of(&self.endpoint_slices, namespace, pool),
            "PodDisruptionBudget" => of(&self.pdbs, namespace, pool),
            // The StatefulSet cache holds every StatefulSet labelled with a
            // pool; prune takes only those the operator manages.
            "StatefulSet" => Caches::of_pool(&self.statefulsets, namespace, pool)
                .into_iter()
                .map(|s| s.metadata)
                .filter(|m| {
                    m.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str) == Some(FIELD_MANAGER)
                })
                .collect(),
            _ => vec![],
        }
    }

    /// The cached objects of `store` in `namespace` labelled `pool`.
    pub fn of_pool<K>(store: &Store<K>, namespace: &str, pool: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + reflector::Lookup<DynamicType = ()> + Clone,
    {
        store
            .state()
            .iter()
            .filter(|o| {
                o.meta().namespace.as_deref() == Some(namespace)
                    && o.meta().labels.as_ref().and_then(|l| l.get(LABEL_POOL)).map(String::as_str) == Some(pool)
            })
            .map(|o| (**o).clone())
            .collect()
    }

    /// Whether Secret `name` was seen owned by `uid` within [`SECRET_RECHECK`].
    pub fn secret_recently_seen(&self, namespace: &str, name: &str, uid: &str) -> bool {
        let seen = self.secrets_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|(owner, at)| owner == uid && at.elapsed() < SECRET_RECHECK)
    }

    /// Remember that Secret `name` exists owned by `uid` (read or created live).
    pub fn secret_seen(&self, namespace: &str, name: &str, uid: &str) {
        let mut seen = self.secrets_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert((namespace.to_string(), name.to_string()), (uid.to_string(), Instant::now()));
    }

    /// The remembered agent token of a pool (same uid, read within
    /// [`SECRET_RECHECK`]).
    pub fn token(&self, namespace: &str, pool: &str, uid: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&(namespace.to_string(), pool.to_string()))
            .filter(|(owner, _, at)| owner == uid && at.elapsed() < SECRET_RECHECK)
            .map(|(_, token, _)| token.clone())
    }

    pub fn remember_token(&self, namespace: &str, pool: &str, uid: &str, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert((namespace.to_string(), pool.to_string()), (uid.to_string(), token.to_string(), Instant::now()));
    }

    /// Whether the pool's DNSEndpoint is known to be as `hash` says (the
    /// desired applied hash; `None`: the pool wants none and has none)
    /// without a live read: the same pool uid and hash, and, for an object
    /// that should exist, read or written within [`SECRET_RECHECK`].
    pub fn dns_endpoint_settled(&self, namespace: &str, pool: &str, uid: &str, hash: Option<&str>) -> bool {
        let seen = self.dns_endpoints.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(namespace.to_string(), pool.to_string())).is_some_and(|(owner, h, at)| {
            owner == uid && h.as_deref() == hash && (hash.is_none() || at.elapsed() < SECRET_RECHECK)
        })
    }

    /// Remember what the pool's DNSEndpoint was just read or written as.
    pub fn dns_endpoint_seen(&self, namespace: &str, pool: &str, uid: &str, hash: Option<&str>) {
        let mut seen = self.dns_endpoints.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            (namespace.to_string(), pool.to_string()),
            (uid.to_string(), hash.map(String::from), Instant::now()),
        );
    }

    /// Whether the DNSEndpoint CRD was served when last asked, if that was
    /// within [`DNS_ENDPOINT_CRD_RECHECK`].
    pub fn dns_endpoint_crd(&self) -> Option<bool> {
        let crd = self.dns_endpoint_crd.lock().unwrap_or_else(|p| p.into_inner());
        crd.filter(|(_, at)| at.elapsed() < DNS_ENDPOINT_CRD_RECHECK).map(|(served, _)| served)
    }

    pub fn remember_dns_endpoint_crd(&self, served: bool) {
        *self.dns_endpoint_crd.lock().unwrap_or_else(|p| p.into_inner()) = Some((served, Instant::now()));
    }

    /// An agent refused the token: read the Secret again on the next poll
    /// (it may have been rotated).
    pub fn forget_token(&self, namespace: &str, pool: &str) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&(namespace.to_string(), pool.to_string()));
    }
}

/// The pools waiting for a claim's address: those listing it, other than
/// its owner. A claim's deletion wakes them (and its creation, harmlessly).
pub fn waiting_pools<'a>(
    claim: &'a EgressAddressClaim,
    pools: impl IntoIterator<Item = Arc<SendingPool>> + 'a,
) -> impl Iterator<Item = ObjectRef<SendingPool>> + 'a {
    pools
        .into_iter()
        .filter(move |p| p.uid().as_deref() != Some(claim.spec.pool.uid.as_str()))
        .filter(move |p| {
            p.spec
                .egress_ips
                .iter()
                .flat_map(|ip| ip.held_addresses())
                .any(|(_, a)| same_address(a, &claim.spec.address))
        })
        .map(|p| ObjectRef::from_obj(&*p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::api::{ClaimOwner, EgressAddressClaimSpec};

    fn pool(uid: &str, address: &str) -> Arc<SendingPool> {
        let yaml = format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: p-{uid}, namespace: ns1, uid: {uid}}}\nspec:\n  egressIPs: [{{name: i0, address: '{address}', heloName: a.example.com}}]\n"
        );
        Arc::new(serde_yaml::from_str(&yaml).unwrap())
    }

    #[test]
    fn a_released_address_wakes_the_other_pools_listing_it() {
        let owner = ClaimOwner { namespace: "ns1".into(), name: "p-u1".into(), uid: "u1".into() };
        let c = EgressAddressClaim::new("c", EgressAddressClaimSpec { address: "10.250.1.11".into(), pool: owner });
        let pools = [pool("u1", "10.250.1.11"), pool("u2", "10.250.1.11"), pool("u3", "10.250.1.12")];
        let woken: Vec<String> = waiting_pools(&c, pools).map(|r| r.name).collect();
        assert_eq!(woken, ["p-u2"]);
    }
}
