//! Status of the namespace-level resources — DomainPolicy and WarmupPlan —
//! built from the specs and the fleet index (what the agents decided).
//!
//! A DomainPolicy or WarmupPlan is shared by every pool it applies to, so
//! its status is derived from the whole namespace (all pools' reports), not
//! from the pool being reconciled: every pool reconcile may recompute it and
//! they all compute the same thing. Like the pool status, it is patched only
//! when something other than a timestamp changed, so a converged fleet
//! writes nothing.
//!
//! The derive functions are pure (`now` passed in); `write_*` do the patches.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sendfleet_render::api::{
    DomainPolicy, DomainPolicyStatus, Exclusion, SendingPool, SlowDownState, WarmupInstanceStatus, WarmupPlan,
    WarmupPlanStatus,
};
use sendfleet_render::conditions::{self, reasons, types, Observation, FALSE, TRUE};
use sendfleet_render::objects::FIELD_MANAGER;
use sendfleet_render::{selector, validate};

use super::error::Result;
use super::fleet::InstanceReport;
use super::metrics::Metrics;

fn rfc3339(unix: u64) -> String {
    Timestamp::from_second(unix as i64).map(|t| t.to_string()).unwrap_or_default()
}

/// The pools of the namespace a DomainPolicy selects, by name.
pub fn selected_pools<'a>(policy: &DomainPolicy, pools: &'a [SendingPool]) -> Vec<&'a SendingPool> {
    let mut out: Vec<&SendingPool> = pools
        .iter()
        .filter(|p| p.namespace() == policy.namespace())
        .filter(|p| selector::matches(&policy.spec.pool_selector, &p.labels().clone()))
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// A DomainPolicy's status: validity, and the exclusions and slow-downs in
/// force across the pools it selects (manual ones from the spec, automatic
/// ones from the agents' reports).
pub fn domain_policy_status(
    policy: &DomainPolicy,
    pools: &[SendingPool],
    reports: &[InstanceReport],
    now: Timestamp,
) -> DomainPolicyStatus {
    let prev = policy.status.clone().unwrap_or_default();
    let name = policy.name_any();
    let selected = selected_pools(policy, pools);
    let mut status = DomainPolicyStatus { conditions: prev.conditions.clone(), ..Default::default() };
    let generation = policy.metadata.generation;
    status.observed_generation = generation;
    let accepted = match validate::domain_policy(policy) {
        Err(e) => Observation::new(types::ACCEPTED, FALSE, reasons::INVALID_SPEC, e.to_string()),
        Ok(_) if selected.is_empty() => {
            Observation::new(types::ACCEPTED, TRUE, reasons::VALID, "valid; selects no SendingPool in this namespace")
        }
        Ok(_) => {
            let names: Vec<String> = selected.iter().map(|p| p.name_any()).collect();
            Observation::new(types::ACCEPTED, TRUE, reasons::VALID, format!("applies to pools: {}", names.join(", ")))
        }
    };
    conditions::set(&mut status.conditions, &accepted, generation, now);
    if accepted.status != TRUE {
        return status;
    }

    // Manual exclusions keep the `since` of the status that first showed
    // them; new ones start now.
    let since_of = |pool: &str, instance: &str| {
        prev.exclusions
            .iter()
            .find(|e| !e.automatic && e.pool == pool && e.instance == instance)
            .map(|e| e.since.clone())
            .unwrap_or_else(|| now.to_string())
    };
    for pool in &selected {
        let pool_name = pool.name_any();
        for ip in pool.spec.egress_ips.iter().filter(|ip| policy.spec.excluded_ips.contains(&ip.name)) {
            status.exclusions.push(Exclusion {
                pool: pool_name.clone(),
                instance: ip.name.clone(),
                reason: "listed in spec.excludedIPs".into(),
                since: since_of(&pool_name, &ip.name),
                until: None,
                automatic: false,
            });
        }
    }
    let selected_names: Vec<String> = selected.iter().map(|p| p.name_any()).collect();
    let now_unix = now.as_second().max(0) as u64;
    for r in reports.iter().filter(|r| selected_names.contains(&r.pool)) {
        for e in r.adaptive.exclusions.iter().filter(|e| e.rule == name && e.until > now_unix) {
            status.exclusions.push(Exclusion {
                pool: r.pool.clone(),
                instance: r.instance.clone(),
                reason: e.reason.clone(),
                since: rfc3339(e.since),
                until: Some(rfc3339(e.until)),
                automatic: true,
            });
        }
        for s in r.adaptive.slow_downs.iter().filter(|s| s.rule == name) {
            status.slow_downs.push(SlowDownState {
                pool: r.pool.clone(),
                instance: r.instance.clone(),
                reason: s.reason.clone(),
                since: rfc3339(s.since),
                messages_per_minute: policy.spec.slow_down.as_ref().map_or(0, |d| d.messages_per_minute),
                level: Some(format!("{}/{}", s.level, s.max_level)),
                next_recovery_at: s.next_recovery_at.map(rfc3339),
            });
        }
    }
    status.active_exclusions = Some(status.exclusions.len() as u32);
    status
}

/// Days until a plan's last step, or until its ramp reaches the ceiling.
pub fn plan_days(plan: &WarmupPlan) -> Option<u32> {
    (1..=3650).find(|d| plan.spec.cap_on_day(*d).is_none()).map(|d| d - 1)
}

/// A WarmupPlan's status: validity, length, and where every IP of the pools
/// that use it stands (from the agents).
pub fn warmup_plan_status(
    plan: &WarmupPlan,
    pools: &[SendingPool],
    reports: &[InstanceReport],
    now: Timestamp,
) -> WarmupPlanStatus {
    let prev = plan.status.clone().unwrap_or_default();
    let name = plan.name_any();
    let generation = plan.metadata.generation;
    let mut status =
        WarmupPlanStatus { conditions: prev.conditions, observed_generation: generation, ..Default::default() };
    let users: Vec<String> = pools
        .iter()
        .filter(|p| p.namespace() == plan.namespace() && p.spec.warmup_plan_ref.as_deref() == Some(name.as_str()))
        .map(|p| p.name_any())
        .collect();
    let accepted = match validate::warmup_plan(plan) {
        Err(e) => Observation::new(types::ACCEPTED, FALSE, reasons::INVALID_SPEC, e.to_string()),
        Ok(()) if users.is_empty() => Observation::new(types::ACCEPTED, TRUE, reasons::VALID, "valid; no pool uses it"),
        Ok(()) => {
            Observation::new(types::ACCEPTED, TRUE, reasons::VALID, format!("used by pools: {}", users.join(", ")))
        }
    };
    conditions::set(&mut status.conditions, &accepted, generation, now);
    if accepted.status != TRUE {
        return status;
    }
    status.days = plan_days(plan);
    for r in reports.iter().filter(|r| users.contains(&r.pool)) {
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
    status.warming = Some(status.instances.iter().filter(|i| i.daily_cap.is_some()).count() as u32);
    status
}

fn same_domain_policy_status(a: Option<&DomainPolicyStatus>, b: &DomainPolicyStatus) -> bool {
    a.is_some_and(|a| {
        conditions::eq_ignoring_time(&a.conditions, &b.conditions)
            && DomainPolicyStatus { conditions: vec![], ..a.clone() }
                == DomainPolicyStatus { conditions: vec![], ..b.clone() }
    })
}

fn same_warmup_plan_status(a: Option<&WarmupPlanStatus>, b: &WarmupPlanStatus) -> bool {
    a.is_some_and(|a| {
        conditions::eq_ignoring_time(&a.conditions, &b.conditions)
            && WarmupPlanStatus { conditions: vec![], ..a.clone() }
                == WarmupPlanStatus { conditions: vec![], ..b.clone() }
    })
}

/// Recompute and patch (when changed) the status of every DomainPolicy and
/// WarmupPlan of a namespace.
pub async fn write_namespace(
    client: &Client,
    metrics: &Metrics,
    policies: &[DomainPolicy],
    plans: &[WarmupPlan],
    pools: &[SendingPool],
    reports: &[InstanceReport],
) -> Result<()> {
    let now = Timestamp::now();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for policy in policies {
        let new = domain_policy_status(policy, pools, reports, now);
        if same_domain_policy_status(policy.status.as_ref(), &new) {
            continue;
        }
        let api: Api<DomainPolicy> = Api::namespaced(client.clone(), &policy.namespace().unwrap_or_default());
        let patch = serde_json::json!({"apiVersion": "sendfleet.io/v1alpha1", "kind": "DomainPolicy", "status": new});
        api.patch_status(&policy.name_any(), &pp, &Patch::Apply(&patch)).await?;
        metrics.wrote("DomainPolicyStatus");
    }
    for plan in plans {
        let new = warmup_plan_status(plan, pools, reports, now);
        if same_warmup_plan_status(plan.status.as_ref(), &new) {
            continue;
        }
        let api: Api<WarmupPlan> = Api::namespaced(client.clone(), &plan.namespace().unwrap_or_default());
        let patch = serde_json::json!({"apiVersion": "sendfleet.io/v1alpha1", "kind": "WarmupPlan", "status": new});
        api.patch_status(&plan.name_any(), &pp, &Patch::Apply(&patch)).await?;
        metrics.wrote("WarmupPlanStatus");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::contract::{ActiveExclusion, ActiveSlowDown, AdaptiveStatus, WarmupProgress};

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml::from_str(s).unwrap()
    }

    fn pool(name: &str, labels: &str, plan: Option<&str>) -> SendingPool {
        let plan = plan.map(|p| format!("  warmupPlanRef: {p}\n")).unwrap_or_default();
        yaml(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: {name}, namespace: mail, labels: {{{labels}}}}}\nspec:\n  egressIPs:\n  - {{name: mta1, address: 192.0.2.10, heloName: mta1.example.com}}\n  - {{name: mta2, address: 192.0.2.11, heloName: mta2.example.com}}\n{plan}"
        ))
    }

    fn policy() -> DomainPolicy {
        yaml(
            "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {name: bigmail, namespace: mail, generation: 3}\nspec:\n  poolSelector: {matchLabels: {tier: bulk}}\n  domains: [bigmail.example]\n  excludedIPs: [mta2]\n  autoExclusion: {hardBlocks: 3}\n  slowDown: {deferrals: 5, messagesPerMinute: 10}\n",
        )
    }

    fn report(pool: &str, instance: &str, adaptive: AdaptiveStatus) -> InstanceReport {
        InstanceReport { pool: pool.into(), instance: instance.into(), adaptive }
    }

    #[test]
    fn domain_policy_status_lists_manual_and_automatic_exclusions_and_slow_downs_of_selected_pools() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let t = now.as_second() as u64;
        let pools = vec![pool("bulk", "tier: bulk", None), pool("signup", "tier: tx", None)];
        let excl = |rule: &str, until| ActiveExclusion {
            rule: rule.into(),
            reason: "3 IP/reputation blocks within 1h".into(),
            since: t - 60,
            until,
        };
        let reports = vec![
            report(
                "bulk",
                "mta1",
                AdaptiveStatus {
                    exclusions: vec![excl("bigmail", t + 3600), excl("other", t + 3600)],
                    slow_downs: vec![ActiveSlowDown {
                        rule: "bigmail".into(),
                        level: 2,
                        max_level: 4,
                        reason: "5 rate-limit deferrals within 10m".into(),
                        since: t - 30,
                        next_recovery_at: Some(t + 60),
                    }],
                    ..Default::default()
                },
            ),
            // Expired: not shown.
            report("bulk", "mta2", AdaptiveStatus { exclusions: vec![excl("bigmail", t)], ..Default::default() }),
            // A pool the policy does not select: not shown.
            report("signup", "mta1", AdaptiveStatus { exclusions: vec![excl("bigmail", t + 9)], ..Default::default() }),
        ];
        let s = domain_policy_status(&policy(), &pools, &reports, now);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].type_, "Accepted");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].message, "applies to pools: bulk");
        let ex: Vec<(&str, &str, bool)> =
            s.exclusions.iter().map(|e| (e.pool.as_str(), e.instance.as_str(), e.automatic)).collect();
        assert_eq!(ex, vec![("bulk", "mta2", false), ("bulk", "mta1", true)]);
        assert_eq!(s.active_exclusions, Some(2));
        assert_eq!(s.exclusions[1].since, "2026-11-23T11:59:00Z");
        assert_eq!(s.exclusions[1].until.as_deref(), Some("2026-11-23T13:00:00Z"));
        assert_eq!(s.slow_downs.len(), 1);
        assert_eq!(s.slow_downs[0].level.as_deref(), Some("2/4"));
        assert_eq!(s.slow_downs[0].messages_per_minute, 10);

        // The manual exclusion keeps its `since` later; nothing else moves,
        // so the status compares equal and is not patched again.
        let mut p = policy();
        p.status = Some(s.clone());
        let later = domain_policy_status(&p, &pools, &reports, "2026-11-23T12:00:30Z".parse().unwrap());
        assert_eq!(later.exclusions[0].since, s.exclusions[0].since);
        assert!(same_domain_policy_status(Some(&s), &later));
    }

    #[test]
    fn an_invalid_domain_policy_is_not_accepted_and_says_which_field() {
        let mut p = policy();
        p.spec.domains = vec!["Not A Domain".into()];
        let s = domain_policy_status(&p, &[pool("bulk", "tier: bulk", None)], &[], Timestamp::UNIX_EPOCH);
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(s.conditions[0].message.contains("spec.domains[0]"), "{}", s.conditions[0].message);
        assert!(s.exclusions.is_empty());
    }

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
        let s = warmup_plan_status(&plan, &pools, &reports, Timestamp::UNIX_EPOCH);
        assert_eq!(s.days, Some(7));
        assert_eq!(s.warming, Some(1));
        assert_eq!(s.instances.len(), 2, "{:?}", s.instances);
        assert_eq!(s.instances[0].paused.as_deref(), Some("deferral rate 40% > 20% over 1h (40/100)"));
        assert_eq!(s.instances[0].daily_cap, Some(50));
        assert_eq!(s.instances[1].daily_cap, None);
        assert_eq!(s.conditions[0].message, "used by pools: bulk");
    }
}
