//! Step 1, dereference: read from the API what the pool refers to — the
//! namespace's DomainPolicies (the render selects), the other pools of the
//! namespace (route targets), and the pool's WarmupPlan.
//!
//! A WarmupPlan the pool names but that does not exist stops the pipeline
//! here: `Ready=False` with reason `MissingReference`, retried (the plan's
//! creation also triggers a reconcile). Nothing here interprets a spec.

use kube::api::{Api, ListParams};
use kube::ResourceExt;
use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::conditions::Reason;

use crate::operator::error::Retry;

/// What the pool refers to.
#[derive(Clone, Debug)]
pub struct Refs {
    pub namespace: String,
    pub name: String,
    /// Every DomainPolicy of the namespace.
    pub policies: Vec<DomainPolicy>,
    /// Every SendingPool of the namespace, this one included.
    pub pools: Vec<SendingPool>,
    /// The pool's WarmupPlan, if it names one.
    pub plan: Option<WarmupPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the SendingPool has no namespace")]
    NoNamespace,
    #[error("listing the DomainPolicies of namespace {namespace}")]
    ListPolicies {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the SendingPools of namespace {namespace}")]
    ListPools {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading WarmupPlan {name:?}")]
    GetWarmupPlan {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("spec.warmupPlanRef: WarmupPlan {name:?} not found in namespace {namespace}")]
    MissingWarmupPlan { name: String, namespace: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoNamespace => "NoNamespace",
            Error::ListPolicies { .. } => "ListDomainPolicies",
            Error::ListPools { .. } => "ListSendingPools",
            Error::GetWarmupPlan { .. } => "GetWarmupPlan",
            Error::MissingWarmupPlan { .. } => "MissingReference",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::NoNamespace => Retry::OnSpecChange,
            Error::MissingWarmupPlan { .. } => Retry::MissingReference,
            _ => Retry::Transient,
        }
    }

    /// The reason `Ready=False` shows, when the pool's status should say.
    pub fn reason(&self) -> Option<Reason> {
        matches!(self, Error::MissingWarmupPlan { .. }).then_some(Reason::MissingReference)
    }
}

pub async fn dereference(client: &kube::Client, pool: &SendingPool) -> Result<Refs, Error> {
    let namespace = pool.namespace().ok_or(Error::NoNamespace)?;
    let lp = ListParams::default();
    let policies = Api::<DomainPolicy>::namespaced(client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(|source| Error::ListPolicies { namespace: namespace.clone(), source })?
        .items;
    let pools = Api::<SendingPool>::namespaced(client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(|source| Error::ListPools { namespace: namespace.clone(), source })?
        .items;
    let plan = match &pool.spec.warmup_plan_ref {
        None => None,
        Some(name) => Some(
            Api::<WarmupPlan>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(|source| Error::GetWarmupPlan { name: name.clone(), source })?
                .ok_or_else(|| Error::MissingWarmupPlan { name: name.clone(), namespace: namespace.clone() })?,
        ),
    };
    Ok(Refs { namespace, name: pool.name_any(), policies, pools, plan })
}
