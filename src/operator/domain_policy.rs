//! The DomainPolicy controller's derivation: `Accepted` (valid, and which
//! pools it applies to) and the exclusions and slow-downs in force across
//! those pools — manual ones from the spec, automatic ones from the agents'
//! reports. The plumbing (watches, write-on-change, leader only) is
//! `fleet_status.rs`.
//!
//! Pure: `now` is passed in; no client.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sendfleet_render::api::{DomainPolicy, DomainPolicyStatus, Exclusion, SendingPool, SlowDownState};
use sendfleet_render::conditions::{ConditionType, Observation, Reason, Status};
use sendfleet_render::{selector, validate};

use super::fleet_status::{rfc3339, set_accepted, Derived, FleetResource, Namespace};

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

/// `Accepted`: the spec is valid (else `False` naming the field), and which
/// pools of the namespace it applies to.
pub fn accepted(policy: &DomainPolicy, selected: &[&SendingPool]) -> Observation {
    let (t, valid) = (ConditionType::Accepted, Reason::Valid);
    match validate::domain_policy(policy) {
        Err(e) => Observation::new(t, Status::False, Reason::InvalidSpec, e.to_string()),
        Ok(_) if selected.is_empty() => {
            Observation::new(t, Status::True, valid, "valid; selects no SendingPool in this namespace")
        }
        Ok(_) => {
            let names: Vec<String> = selected.iter().map(|p| p.name_any()).collect();
            Observation::new(t, Status::True, valid, format!("applies to pools: {}", names.join(", ")))
        }
    }
}

impl FleetResource for DomainPolicy {
    /// Validity, and the exclusions and slow-downs in force across the pools
    /// it selects (manual ones from the spec, automatic ones from the
    /// agents' reports).
    fn derive(&self, ns: Namespace<'_>, now: Timestamp) -> Derived<DomainPolicyStatus> {
        derive(self, ns, now)
    }
}

fn derive(
    policy: &DomainPolicy,
    Namespace { pools, reports, observed }: Namespace<'_>,
    now: Timestamp,
) -> Derived<DomainPolicyStatus> {
    let prev = policy.status.clone().unwrap_or_default();
    let name = policy.name_any();
    let selected = selected_pools(policy, pools);
    let mut status = DomainPolicyStatus { conditions: prev.conditions.clone(), ..Default::default() };
    let generation = policy.metadata.generation;
    status.observed_generation = generation;
    let accepted = accepted(policy, &selected);
    let flipped = set_accepted(&mut status, &accepted, generation, now);
    if accepted.status != Status::True {
        return (status, flipped);
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
    let now_unix = now.as_second().max(0) as u64;
    for pool in selected.iter().map(|p| p.name_any()) {
        // A pool whose agents were not polled yet since the operator
        // started keeps what the status showed for it: it is still in force
        // on the instances, and dropping it would flap the status.
        if !observed.contains(&pool) {
            let in_force = |e: &&Exclusion| e.until.as_deref().and_then(|u| u.parse::<Timestamp>().ok()) > Some(now);
            let kept = prev.exclusions.iter().filter(|e| e.automatic && e.pool == pool).filter(in_force);
            status.exclusions.extend(kept.cloned());
            status.slow_downs.extend(prev.slow_downs.iter().filter(|s| s.pool == pool).cloned());
            continue;
        }
        for r in reports.iter().filter(|r| r.pool == pool) {
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
    }
    status.active_exclusions = Some(status.exclusions.len() as u32);
    (status, flipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::fleet_status::fixtures::{names, pool, report, yaml};
    use sendfleet_render::contract::{ActiveExclusion, ActiveSlowDown, AdaptiveStatus};

    fn policy() -> DomainPolicy {
        yaml(
            "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {name: bigmail, namespace: mail, generation: 3}\nspec:\n  poolSelector: {matchLabels: {tier: bulk}}\n  domains: [bigmail.example]\n  excludedIPs: [mta2]\n  autoExclusion: {hardBlocks: 3}\n  slowDown: {deferrals: 5, messagesPerMinute: 10}\n",
        )
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
            ..Default::default()
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
        let (s, flipped) =
            derive(&policy(), Namespace { pools: &pools, reports: &reports, observed: &names(&pools) }, now);
        assert_eq!(flipped.len(), 1, "Accepted is new");
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
        let (later, flipped) = derive(
            &p,
            Namespace { pools: &pools, reports: &reports, observed: &names(&pools) },
            "2026-11-23T12:00:30Z".parse().unwrap(),
        );
        assert_eq!(later.exclusions[0].since, s.exclusions[0].since);
        assert!(crate::operator::status::unchanged(Some(&s), &later));
        assert!(flipped.is_empty());
    }

    #[test]
    fn an_invalid_domain_policy_is_not_accepted_and_says_which_field() {
        let mut p = policy();
        p.spec.domains = vec!["Not A Domain".into()];
        let (s, flipped) = derive(
            &p,
            Namespace { pools: &[pool("bulk", "tier: bulk", None)], reports: &[], observed: &[] },
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(s.conditions[0].message.contains("spec.domains[0]"), "{}", s.conditions[0].message);
        // `Ready` says the same, for Flux, Argo CD and `kubectl wait`.
        let ready = &s.conditions[1];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str(), ready.reason.as_str()),
            ("Ready", "False", "InvalidSpec")
        );
        assert_eq!(ready.message, s.conditions[0].message);
        assert_eq!(ready.observed_generation, Some(3));
        assert!(s.exclusions.is_empty());
        assert_eq!(flipped[0].event(), Some(sendfleet_render::conditions::EventKind::Warning));
    }

    #[test]
    fn a_valid_policy_in_a_namespace_without_pools_is_accepted() {
        let o = accepted(&policy(), &[]);
        assert_eq!((o.status, o.reason), (Status::True, Reason::Valid));
        assert_eq!(o.message, "valid; selects no SendingPool in this namespace");
        let (s, _) = derive(&policy(), Namespace { pools: &[], reports: &[], observed: &[] }, Timestamp::UNIX_EPOCH);
        assert_eq!(s.active_exclusions, Some(0));
        let pools = [pool("bulk", "tier: bulk", None), pool("tx", "tier: tx", None)];
        assert_eq!(selected_pools(&policy(), &pools).len(), 1);
        assert_eq!(accepted(&policy(), &selected_pools(&policy(), &pools)).message, "applies to pools: bulk");
    }

    #[test]
    fn pools_not_yet_polled_since_a_restart_keep_their_automatic_entries() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let t = now.as_second() as u64;
        let pools = vec![pool("bulk", "tier: bulk", None)];
        let excl = ActiveExclusion {
            rule: "bigmail".into(),
            reason: "3 blocks".into(),
            since: t - 60,
            until: t + 3600,
            ..Default::default()
        };
        let slow = ActiveSlowDown {
            rule: "bigmail".into(),
            level: 1,
            max_level: 4,
            reason: "5 deferrals".into(),
            since: t - 30,
            next_recovery_at: None,
        };
        let adaptive = AdaptiveStatus { exclusions: vec![excl], slow_downs: vec![slow], ..Default::default() };
        let reports = vec![report("bulk", "mta1", adaptive)];
        let (s, _) = derive(&policy(), Namespace { pools: &pools, reports: &reports, observed: &names(&pools) }, now);
        assert_eq!((s.exclusions.len(), s.slow_downs.len()), (2, 1));

        // A new operator: the fleet index is empty and "bulk" not polled yet.
        let mut p = policy();
        p.status = Some(s.clone());
        let later: Timestamp = "2026-11-23T12:00:30Z".parse().unwrap();
        let (kept, _) = derive(&p, Namespace { pools: &pools, reports: &[], observed: &[] }, later);
        assert!(crate::operator::status::unchanged(Some(&s), &kept), "{kept:?}");
        // ... but not past the exclusion's own `until`.
        let (expired, _) = derive(
            &p,
            Namespace { pools: &pools, reports: &[], observed: &[] },
            now + k8s_openapi::jiff::SignedDuration::from_hours(2),
        );
        assert_eq!(expired.exclusions.iter().filter(|e| e.automatic).count(), 0);
        // Once polled, the agents' report is what counts (here: nothing).
        let (polled, _) = derive(&p, Namespace { pools: &pools, reports: &[], observed: &names(&pools) }, later);
        assert_eq!((polled.exclusions.len(), polled.slow_downs.len()), (1, 0));
    }
}
