//! Status conditions: types, reasons and one builder, following the
//! Kubernetes conventions (`type`, `status`, `reason`, `message`,
//! `observedGeneration`, `lastTransitionTime` that moves only when the
//! status flips). Time is passed in — this module reads no clock.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types of a SendingPool.
pub mod types {
    /// Every instance runs the rendered configuration and is ready.
    pub const READY: &str = "Ready";
    /// The operator is rolling out a change (objects or config not yet live).
    pub const PROGRESSING: &str = "Progressing";
    /// Some instance is failing (crash loop, unschedulable, config refused).
    pub const DEGRADED: &str = "Degraded";
    /// Some egress IP is on a DNS blocklist.
    pub const LISTED: &str = "Listed";
    /// Queued mail is older than the pool's backlog thresholds.
    pub const QUEUE_BACKLOG: &str = "QueueBacklog";
    /// Some instance is still under its warm-up plan's caps.
    pub const WARMING_UP: &str = "WarmingUp";
    /// PTR, SPF, DKIM and DMARC are in order for every IP and domain.
    pub const AUTHENTICATION_VALID: &str = "AuthenticationValid";
    /// (DomainPolicy, WarmupPlan) The spec is valid and in use as written.
    pub const ACCEPTED: &str = "Accepted";
}

/// Reasons (PascalCase, stable: alerts match on them).
pub mod reasons {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const MISSING_REFERENCE: &str = "MissingReference";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const INSTANCES_READY: &str = "InstancesReady";
    pub const INSTANCES_NOT_READY: &str = "InstancesNotReady";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const CONFIG_PENDING: &str = "ConfigPending";
    pub const CONVERGED: &str = "Converged";
    pub const INSTANCE_FAILING: &str = "InstanceFailing";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const NO_PLAN: &str = "NoWarmupPlan";
    pub const WARMING: &str = "Warming";
    pub const WARM: &str = "Warm";
    pub const BACKLOG_WARNING: &str = "OlderThanWarnAge";
    pub const BACKLOG_CRITICAL: &str = "OlderThanCriticalAge";
    pub const NO_BACKLOG: &str = "NoBacklog";
    pub const NOT_OBSERVED: &str = "NotObservedYet";
    pub const VALID: &str = "Valid";
}

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// What one observation says about one condition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Observation {
    pub fn new(type_: &'static str, status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Observation { type_, status, reason, message: message.into() }
    }
}

/// Set `obs` in `conditions`: an existing condition of that type keeps its
/// `lastTransitionTime` unless the status changes. Returns whether the
/// status flipped (worth an Event).
pub fn set(conditions: &mut Vec<Condition>, obs: &Observation, generation: Option<i64>, now: Timestamp) -> bool {
    let message: String = obs.message.chars().take(1024).collect();
    match conditions.iter_mut().find(|c| c.type_ == obs.type_) {
        Some(c) => {
            let flipped = c.status != obs.status;
            if flipped {
                c.last_transition_time = Time(now);
            }
            c.status = obs.status.into();
            c.reason = obs.reason.into();
            c.message = message;
            c.observed_generation = generation;
            flipped
        }
        None => {
            conditions.push(Condition {
                type_: obs.type_.into(),
                status: obs.status.into(),
                reason: obs.reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            true
        }
    }
}

/// Conditions equal but for their transition times.
pub fn eq_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut cs = vec![];
        assert!(set(&mut cs, &Observation::new(types::READY, FALSE, reasons::INSTANCES_NOT_READY, "0/3"), Some(1), t0));
        assert!(!set(
            &mut cs,
            &Observation::new(types::READY, FALSE, reasons::INSTANCES_NOT_READY, "1/3"),
            Some(2),
            t1
        ));
        assert_eq!(cs[0].last_transition_time.0, t0);
        assert_eq!(cs[0].message, "1/3");
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(set(&mut cs, &Observation::new(types::READY, TRUE, reasons::INSTANCES_READY, "3/3"), Some(2), t1));
        assert_eq!(cs[0].last_transition_time.0, t1);
    }
}
