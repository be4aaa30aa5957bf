//! The WarmupPlan controller's derivation: `Accepted` (valid, and which
//! pools use it), the plan's length, and where every IP of those pools
//! stands (from the agents' reports). The plumbing (watches,
//! write-on-change, leader only) is `fleet_status.rs`.
//!
//! Pure: `now` is passed in; no client.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sendfleet_render::api::{SendingPool, WarmupInstanceStatus, WarmupPlan, WarmupPlanStatus};
use sendfleet_render::conditions::{ConditionType, Observation, Reason, Status};
use sendfleet_render::validate;

use super::fleet_status::{rfc3339, set_accepted, Derived, FleetResource, Namespace};

/// Days until a plan's last step, or until its ramp reaches the ceiling.
pub fn plan_days(plan: &WarmupPlan) -> Option<u32> {
    (1..=3650).find(|d| plan.spec.cap_on_day(*d).is_none()).map(|d| d - 1)
}

/// The pools of the plan's namespace that name it, sorted.
pub fn users(plan: &WarmupPlan, pools: &[SendingPool]) -> Vec<String> {
    let name = plan.name_any();
    let mut users: Vec<String> = pools
        .iter()
        .filter(|p| p.namespace() == plan.namespace() && p.spec.warmup_plan_ref.as_deref() == Some(name.as_str()))
        .map(|p| p.name_any())
        .collect();
    users.sort();
    users
}

/// `Accepted`: the plan is valid (else `False` naming the field), and which
/// pools use it.
pub fn accepted(plan: &WarmupPlan, users: &[String]) -> Observation {
    let (t, valid) = (ConditionType::Accepted, Reason::Valid);
    match validate::warmup_plan(plan) {
        Err(e) => Observation::new(t, Status::False, Reason::InvalidSpec, e.to_string()),
        Ok(()) if users.is_empty() => Observation::new(t, Status::True, valid, "valid; no pool uses it"),
        Ok(()) => Observation::new(t, Status::True, valid, format!("used by pools: {}", users.join(", "))),
    }
}

impl FleetResource for WarmupPlan {
    /// Validity, length, and where every IP of the pools that use it stands
    /// (from the agents).
    fn derive(&self, ns: Namespace<'_>, now: Timestamp) -> Derived<WarmupPlanStatus> {
        derive(self, ns, now)
    }
}

fn derive(
    plan: &WarmupPlan,
    Namespace { pools, reports, observed }: Namespace<'_>,
    now: Timestamp,
) -> Derived<WarmupPlanStatus> {
    let prev = plan.status.clone().unwrap_or_default();
    let name = plan.name_any();
    let generation = plan.metadata.generation;
    let mut status =
        WarmupPlanStatus { conditions: prev.conditions.clone(), observed_generation: generation, ..Default::default() };
    let users = users(plan, pools);
    let accepted = accepted(plan, &users);
    let flipped = set_accepted(&mut status, &accepted, generation, now);
    if accepted.status != Status::True {
        return (status, flipped);
    }
    status.days = plan_days(plan);
    for pool in &users {
        // Not polled yet since the operator started: keep what the status
        // showed (see the DomainPolicy's derivation).
        if !observed.contains(pool) {
            status.instances.extend(prev.instances.iter().filter(|i| &i.pool == pool).cloned());
            continue;
        }
        for r in reports.iter().filter(|r| &r.pool == pool) {
            let Some(w) = r.adaptive.warmup.as_ref().filter(|w| w.plan == name) else { continue };
            status.instances.push(WarmupInstanceStatus {
                pool: r.pool.clone(),
                instance: r.instance.clone(),
                step: w.step,
                daily_cap: w.daily_cap,
                sent_today: w.sent_today,
                paused: w.held.clone(),
                next_step_at: w.next_step_at.map(rfc3339),
            });
        }
    }
    status.warming = Some(status.instances.iter().filter(|i| i.daily_cap.is_some()).count() as u32);
    (status, flipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::fleet_status::fixtures::{names, pool, report, yaml};
    use sendfleet_render::contract::{AdaptiveStatus, WarmupProgress};

    #[test]
    fn warmup_plan_status_shows_each_ip_of_the_pools_using_it() {
        let plan: WarmupPlan = yaml(
            "apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {name: new-ip, namespace: mail, generation: 1}\nspec:\n  steps: [{day: 1, dailyCap: 50}, {day: 3, dailyCap: 200}, {day: 7, dailyCap: 1000}]\n",
        );
        let pools = vec![pool("bulk", "tier: bulk", Some("new-ip")), pool("signup", "tier: tx", None)];
        let progress = |step, cap: Option<u64>, held: Option<&str>| AdaptiveStatus {
            warmup: Some(WarmupProgress {
                plan: "new-ip".into(),
                step,
                daily_cap: cap,
                sent_today: 12,
                reserved: 0,
                held: held.map(String::from),
                next_step_at: Some(1_795_478_400),
            }),
            ..Default::default()
        };
        let reports = vec![
            report("bulk", "mta1", progress(2, Some(50), Some("deferral rate 40% > 20% over 1h (40/100)"))),
            report("bulk", "mta2", progress(9, None, None)),
            report("signup", "mta1", progress(1, Some(50), None)),
        ];
        let (s, _) = derive(
            &plan,
            Namespace { pools: &pools, reports: &reports, observed: &names(&pools) },
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.days, Some(7));
        assert_eq!(s.warming, Some(1));
        assert_eq!(s.instances.len(), 2, "{:?}", s.instances);
        assert_eq!(s.instances[0].paused.as_deref(), Some("deferral rate 40% > 20% over 1h (40/100)"));
        assert_eq!(s.instances[0].daily_cap, Some(50));
        assert_eq!(s.instances[1].daily_cap, None);
        assert_eq!(s.conditions[0].message, "used by pools: bulk");

        // Restarted operator, "bulk" not polled yet: the rows stay.
        let mut p = plan.clone();
        p.status = Some(s.clone());
        let (kept, _) = derive(&p, Namespace { pools: &pools, reports: &[], observed: &[] }, Timestamp::UNIX_EPOCH);
        assert!(crate::operator::status::unchanged(Some(&s), &kept), "{kept:?}");
    }

    #[test]
    fn a_plan_no_pool_uses_is_accepted_and_an_invalid_one_names_the_field() {
        let plan: WarmupPlan = yaml(
            "apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {name: new-ip, namespace: mail, generation: 1}\nspec:\n  steps: [{day: 1, dailyCap: 50}]\n",
        );
        let (s, flipped) = derive(&plan, Namespace { pools: &[], reports: &[], observed: &[] }, Timestamp::UNIX_EPOCH);
        assert_eq!(
            (s.conditions[0].status.as_str(), s.conditions[0].message.as_str()),
            ("True", "valid; no pool uses it")
        );
        assert_eq!(flipped.len(), 1);
        let mut bad = plan.clone();
        bad.spec.steps.as_mut().unwrap()[0].day = 2;
        let o = accepted(&bad, &[]);
        assert_eq!((o.status, o.reason), (Status::False, Reason::InvalidSpec));
        assert!(o.message.contains("spec.steps"), "{}", o.message);
    }
}
