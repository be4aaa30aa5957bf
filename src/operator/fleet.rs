//! The fleet index: what each instance's agent last reported about the
//! decisions it took on its own (warm-up step, automatic exclusions,
//! slow-downs — `AgentStatus.adaptive`).
//!
//! Kept apart from the API plumbing (as Linkerd's policy controller keeps
//! its indexes): the pool reconcile records reports here and reads back the
//! exclusions to render into the peers' policies (so no peer relays a
//! rule's mail to an instance that excluded itself); the DomainPolicy and
//! WarmupPlan controllers read the entries their statuses are built from,
//! and are woken through [`FleetIndex::changes`] whenever a report changed
//! what the index holds.
//!
//! An agent that cannot be reached keeps its last report: an exclusion is
//! still in force on that instance (it persists on the queue volume), and
//! dropping it would flip every peer's policy back and forth with each
//! failed poll. Entries end when the agent reports otherwise, when the
//! exclusion's own `until` passes, or when the pool or instance is gone.
//!
//! No I/O and no clock: `now` is passed in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sendfleet_render::contract::{AdaptiveStatus, AgentStatus};

/// `(namespace, pool)`.
pub type PoolKey = (String, String);

/// Last adaptive report of every instance, by pool.
pub struct FleetIndex {
    pools: Mutex<HashMap<PoolKey, BTreeMap<String, AdaptiveStatus>>>,
    /// Counts changes of the index (not polls): subscribers re-derive.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for FleetIndex {
    fn default() -> Self {
        FleetIndex { pools: Default::default(), changes: tokio::sync::watch::Sender::new(0) }
    }
}

/// One instance's report, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceReport {
    pub pool: String,
    pub instance: String,
    pub adaptive: AdaptiveStatus,
}

impl FleetIndex {
    /// Record a poll of `pool`'s agents. `instances` are the pool's current
    /// instance names: others are forgotten. A failed poll keeps the
    /// instance's previous report.
    pub fn record(
        &self,
        key: &PoolKey,
        instances: &[String],
        agents: &BTreeMap<String, Result<AgentStatus, String>>,
    ) -> BTreeMap<String, AdaptiveStatus> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pools.entry(key.clone()).or_default();
        let before = entry.clone();
        entry.retain(|name, _| instances.contains(name));
        for (name, report) in agents {
            if let (Ok(status), true) = (report, instances.contains(name)) {
                entry.insert(name.clone(), status.adaptive.clone());
            }
        }
        if *entry != before {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        entry.clone()
    }

    /// A stream that yields once after each change of the index (changes
    /// in quick succession may yield once): what the DomainPolicy and
    /// WarmupPlan controllers re-derive on.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.changes.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Forget a pool that no longer exists.
    pub fn forget(&self, key: &PoolKey) {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Which of the named pools of a namespace the index has an entry for
    /// (their agents were polled at least once since the operator started).
    pub fn observed(&self, namespace: &str, pools: &[String]) -> Vec<String> {
        let all = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.iter().filter(|p| all.contains_key(&(namespace.to_string(), p.to_string()))).cloned().collect()
    }

    /// Reports of the named pools of a namespace, in (pool, instance) order.
    pub fn reports(&self, namespace: &str, pools: &[String]) -> Vec<InstanceReport> {
        let all = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut names: Vec<&String> = pools.iter().collect();
        names.sort();
        names.dedup();
        for pool in names {
            let Some(instances) = all.get(&(namespace.to_string(), pool.clone())) else { continue };
            for (instance, adaptive) in instances {
                out.push(InstanceReport { pool: pool.clone(), instance: instance.clone(), adaptive: adaptive.clone() });
            }
        }
        out
    }
}

/// Each reporting instance's warm-up step, for the render's
/// `Observed::warmup_day`: the caps the peers' policies show then match the
/// steps the agents keep (peers prefer warm instances when they relay).
pub fn warmup_steps(reports: &BTreeMap<String, AdaptiveStatus>) -> BTreeMap<String, u32> {
    reports.iter().filter_map(|(i, a)| Some((i.clone(), a.warmup.as_ref()?.step))).collect()
}

/// The automatic exclusions still in force at `now`, keyed as the render's
/// `Observed::exclusions` wants them: (rule = DomainPolicy name, instance).
pub fn exclusions_in_force(reports: &BTreeMap<String, AdaptiveStatus>, now: u64) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (instance, adaptive) in reports {
        for e in adaptive.exclusions.iter().filter(|e| e.until > now) {
            out.insert((e.rule.clone(), instance.clone()), e.reason.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::contract::ActiveExclusion;

    fn report(rule: &str, until: u64) -> AgentStatus {
        AgentStatus {
            adaptive: AdaptiveStatus {
                exclusions: vec![ActiveExclusion {
                    rule: rule.into(),
                    reason: "3 IP blocks in 1h".into(),
                    since: 100,
                    until,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_poll_keeps_the_last_report_and_removed_instances_are_forgotten() {
        let idx = FleetIndex::default();
        let key = ("mail".to_string(), "outbound".to_string());
        let names = vec!["mta1".to_string(), "mta2".to_string()];
        let mut agents = BTreeMap::new();
        agents.insert("mta1".to_string(), Ok(report("bigmail", 1000)));
        agents.insert("mta2".to_string(), Ok(AgentStatus::default()));
        let r = idx.record(&key, &names, &agents);
        assert_eq!(exclusions_in_force(&r, 500).len(), 1);

        agents.insert("mta1".to_string(), Err("connection refused".into()));
        let r = idx.record(&key, &names, &agents);
        assert_eq!(
            exclusions_in_force(&r, 500).keys().cloned().collect::<Vec<_>>(),
            vec![("bigmail".to_string(), "mta1".to_string())],
            "an unreachable agent's exclusion stays in force"
        );
        // Expired by its own `until`.
        assert!(exclusions_in_force(&r, 1000).is_empty());

        // mta1 removed from the pool: forgotten.
        let r = idx.record(&key, &names[1..], &agents);
        assert!(!r.contains_key("mta1"));
        assert_eq!(idx.reports("mail", &["outbound".into()]).len(), 1);
        assert_eq!(idx.observed("mail", &["outbound".into(), "other".into()]), ["outbound"]);
        assert_eq!(warmup_steps(&r), BTreeMap::new());
        idx.forget(&key);
        assert!(idx.reports("mail", &["outbound".into()]).is_empty());
    }

    #[test]
    fn only_a_change_of_what_the_index_holds_wakes_the_subscribers() {
        let idx = FleetIndex::default();
        let mut rx = idx.changes.subscribe();
        let key = ("mail".to_string(), "outbound".to_string());
        let names = vec!["mta1".to_string()];
        let mut agents = BTreeMap::new();
        agents.insert("mta1".to_string(), Ok(AgentStatus::default()));
        idx.record(&key, &names, &agents);
        assert!(rx.has_changed().unwrap(), "a first report is a change");
        rx.mark_unchanged();
        agents.insert("mta1".to_string(), Ok(report("bigmail", 1000)));
        idx.record(&key, &names, &agents);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        idx.record(&key, &names, &agents);
        assert!(!rx.has_changed().unwrap(), "the same report again is no change");
        agents.insert("mta1".to_string(), Err("timeout".into()));
        idx.record(&key, &names, &agents);
        assert!(!rx.has_changed().unwrap(), "a failed poll keeps the report: no change");
    }
}
