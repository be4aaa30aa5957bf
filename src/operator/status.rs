//! Writing a status, the same way for every kind the operator owns: compare
//! the newly derived status with the live one ignoring `lastTransitionTime`,
//! patch `/status` (server-side apply, one field manager) only when
//! something else changed, then publish an Event per condition flip.
//!
//! Deriving a status is each controller's own business (pure functions in
//! `pool::status`, `domain_policy`, `warmup_plan`); this module never
//! decides a condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use sendfleet_render::api::{DomainPolicyStatus, SendingPoolStatus, WarmupPlanStatus};
use sendfleet_render::conditions::{self, Observation};
use sendfleet_render::objects::FIELD_MANAGER;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::Context;
use super::events;

/// A status with conditions.
pub trait Conditioned: Clone + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

macro_rules! conditioned {
    ($($t:ty),*) => {$(
        impl Conditioned for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
        }
    )*};
}
conditioned!(SendingPoolStatus, DomainPolicyStatus, WarmupPlanStatus);

/// Whether writing `new` over `old` would change nothing but timestamps.
pub fn unchanged<S: Conditioned>(old: Option<&S>, new: &S) -> bool {
    let Some(old) = old else { return false };
    let strip = |s: &S| {
        let mut s = s.clone();
        s.conditions_mut().clear();
        s
    };
    strip(old) == strip(new) && conditions::eq_ignoring_time(old.conditions(), new.conditions())
}

/// A kind whose status the operator writes.
pub trait HasStatus:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug
{
    type Status: Conditioned;
    /// The kind, for messages (`Resource::kind` is not `'static`).
    const KIND: &'static str;
    /// The metric label of a write of this status (bounded).
    const WRITE_KIND: &'static str;
    fn status(&self) -> Option<&Self::Status>;
}

impl HasStatus for sendfleet_render::api::SendingPool {
    type Status = SendingPoolStatus;
    const KIND: &'static str = "SendingPool";
    const WRITE_KIND: &'static str = "SendingPoolStatus";
    fn status(&self) -> Option<&SendingPoolStatus> {
        self.status.as_ref()
    }
}

impl HasStatus for sendfleet_render::api::DomainPolicy {
    type Status = DomainPolicyStatus;
    const KIND: &'static str = "DomainPolicy";
    const WRITE_KIND: &'static str = "DomainPolicyStatus";
    fn status(&self) -> Option<&DomainPolicyStatus> {
        self.status.as_ref()
    }
}

impl HasStatus for sendfleet_render::api::WarmupPlan {
    type Status = WarmupPlanStatus;
    const KIND: &'static str = "WarmupPlan";
    const WRITE_KIND: &'static str = "WarmupPlanStatus";
    fn status(&self) -> Option<&WarmupPlanStatus> {
        self.status.as_ref()
    }
}

/// A `/status` patch the API server refused (any kind): told apart from a
/// failed apply of the pool's objects by its own category.
#[derive(Debug, thiserror::Error)]
#[error("patching the status of {kind} {name}")]
pub struct PatchError {
    pub kind: &'static str,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl PatchError {
    pub const CATEGORY: &'static str = "PatchStatus";
}

/// Patch `obj`'s status to `new` unless that changes nothing; on a write,
/// an Event per flipped condition. Returns whether it wrote.
pub async fn write<K: HasStatus>(
    ctx: &Context,
    obj: &K,
    new: &K::Status,
    flipped: &[Observation],
) -> Result<bool, PatchError> {
    if unchanged(obj.status(), new) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::KIND,
        "status": new,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| PatchError { kind: K::KIND, name: obj.name_any(), source })?;
    ctx.metrics.wrote(K::WRITE_KIND);
    for o in flipped {
        events::flip(ctx, obj, o).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use sendfleet_render::conditions::{ConditionType, Reason, Status};

    #[test]
    fn only_timestamps_differing_is_unchanged() {
        let mut a = DomainPolicyStatus::default();
        let o = Observation::new(ConditionType::Accepted, Status::True, Reason::Valid, "ok");
        conditions::set(&mut a.conditions, &o, Some(1), Timestamp::UNIX_EPOCH);
        let mut b = a.clone();
        b.conditions[0].last_transition_time.0 = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(unchanged(Some(&a), &b));
        assert!(!unchanged(None, &b));
        b.active_exclusions = Some(1);
        assert!(!unchanged(Some(&a), &b));
    }
}
