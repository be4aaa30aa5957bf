//! The agent's policy: what the operator decides and the agent enforces.
//!
//! The operator renders one `policy.json` per instance into that instance's
//! ConfigMap, next to the Postfix files. The agent answers Postfix's
//! transport lookups from it (plus its own local counters) and never
//! invents routing the policy does not describe.
//!
//! Division of labour with the static Postfix files: `main.cf`/`master.cf`
//! and the `transport` map already carry the *steady* routing (throttle
//! transports, relay routes, TLS policy), so Postfix routes correctly even
//! when the agent is down (a failed socketmap lookup defers mail, it never
//! misroutes it). The agent's socketmap is consulted *first* and answers
//! only for the *dynamic* cases: a paused domain (deferral), this IP out of
//! rotation / excluded for a domain / over its warm-up cap (relay to a
//! healthy peer), otherwise `NOTFOUND` so the static map decides.
//!
//! Postfix treats a socketmap as a pattern table: it asks with the full
//! recipient address (and `*`), never with the bare domain, so the agent
//! decides on the address's domain part — and never logs the local part.
//! Only the queue manager's lookups reach the agent: smtpd listeners use a
//! separate trivial-rewrite service (`rewrite-in`) that reads the static
//! table alone, so a paused domain is queued rather than refused at RCPT.
//!
//! The names and nexthops in a [`DomainRule`] (throttle and slow transports,
//! relay nexthop) and the peer choice come from the routing model
//! ([`crate::routing`]); the agent uses them as given and never re-derives them.
//!
//! This module is data only: serde types and pure helpers. No I/O.

use serde::{Deserialize, Serialize};

/// Schema version of `policy.json`; bumped on incompatible change so an agent
/// refuses a policy it does not understand instead of misreading it.
pub const POLICY_VERSION: u32 = 1;

/// File name of the policy inside an instance's rendered config.
pub const POLICY_FILE: &str = "policy.json";

/// The whole policy one agent enforces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPolicy {
    pub version: u32,
    /// Namespace/name of the SendingPool this instance belongs to.
    pub pool: String,
    /// Name of this instance (the egress IP's `name` in the pool spec).
    pub instance: String,
    /// Every instance of the pool, this one included, in spec order.
    pub instances: Vec<InstancePolicy>,
    /// Domain rules from the DomainPolicies that select this pool, most
    /// specific first (see [`DomainRule::matches`] and [`AgentPolicy::rule_for`]).
    pub domains: Vec<DomainRule>,
    /// TCP port on which every instance accepts mail relayed by its peers.
    /// Mail received there is sent directly by that instance and is never
    /// relayed again (Postfix `content_filter` on that listener).
    pub peer_port: u16,
    /// Queue ages (seconds) above which queued mail counts as late, as in the
    /// seeds' dashboards (default 4 h and 12 h).
    pub backlog_warn_seconds: u64,
    pub backlog_critical_seconds: u64,
    /// Warm-up plan in force, if the pool references one.
    pub warmup: Option<WarmupPolicy>,
}

/// One instance (egress IP) as its peers see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePolicy {
    pub name: String,
    /// Egress address (IPv4 or IPv6 literal).
    pub address: String,
    /// HELO/EHLO name used from that address.
    pub helo_name: String,
    /// Rotation weight; 0 means out of rotation (disabled or quarantined):
    /// the instance sends nothing itself and relays its queue to peers.
    pub weight: u32,
    /// Why the weight is 0, for /status (e.g. "Quarantined: listed in zen.example").
    pub out_of_rotation_reason: Option<String>,
    /// Today's warm-up cap for this instance (messages/day), if warming up.
    pub daily_cap: Option<u64>,
    /// Domains (rule names) for which this instance is excluded, by a
    /// DomainPolicy's manual exclusion or an automatic one.
    pub excluded_rules: Vec<String>,
    /// The instance is being drained (its egress IP was removed or
    /// disabled, or its pool is being deleted): it retries its deferred
    /// queue at once and on a short cycle, so its mail leaves (through
    /// the peers when its weight is 0) instead of waiting for the backoff.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// How a domain's mail is handled, from one DomainPolicy entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainRule {
    /// Stable rule name: `<domainpolicy-name>` (unique in the pool).
    pub name: String,
    /// Patterns, already validated: `example.com` (exact) or `.example.com`
    /// (every subdomain of example.com, not example.com itself).
    pub patterns: Vec<String>,
    /// Name of the rule's own master.cf transport (`dp-<policy>`), if it
    /// has one: it carries the throttle, and for a rule with automatic
    /// exclusion the delivery status filter that retries IP blocks instead
    /// of bouncing them (such a rule gets one even without a throttle).
    pub throttle_transport: Option<String>,
    /// The same transport's slowed variant used while an adaptive slow-down
    /// is active, if the policy enables slow-down.
    pub slow_transport: Option<String>,
    /// The nexthop of a relay route or a hand-off to another pool
    /// (`[relay.example]:25`, see `routing::PolicyRoute::nexthop`), if the
    /// domain does not go to its MX from here; the agent then leaves routing
    /// to the static transport map.
    pub relay: Option<String>,
    /// The `relay` nexthop is another pool's submission Service (`route.pool`),
    /// not a relay route: the leg stays inside the cluster, so the agent
    /// leaves it to the static map whatever this instance's state
    /// (`routing::relay_scope`). False for a relay route, whose leg leaves
    /// from this egress IP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hand_off: bool,
    /// Deliveries are paused: lookups answer a deferral with this reason.
    pub paused: Option<String>,
    /// Exclude this instance for the rule after repeated IP/reputation blocks
    /// (the agent decides, persists and reports it).
    #[serde(default)]
    pub auto_exclusion: Option<AutoExclusionRule>,
    /// Slow down on rate-limit deferrals and recover step by step (the agent
    /// decides, persists and reports it).
    #[serde(default)]
    pub slow_down: Option<SlowDownRule>,
}

/// DomainPolicy `autoExclusion`, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoExclusionRule {
    /// IP/reputation blocks within `window_seconds` that exclude this instance.
    pub hard_blocks: u32,
    pub window_seconds: u64,
    /// How long an exclusion lasts before this instance is tried again.
    pub duration_seconds: u64,
}

/// DomainPolicy `slowDown`, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowDownRule {
    /// Rate-limit deferrals within `window_seconds` that engage the slow-down.
    pub deferrals: u32,
    pub window_seconds: u64,
    /// Quiet time (no rate-limit deferral) after which the level drops by one.
    pub recovery_interval_seconds: u64,
    /// Number of levels: at level L of `levels`, L/levels of the rule's mail
    /// goes through the slow transport. Engaging sets the top level.
    pub levels: u32,
}

/// Warm-up state the agent needs to apply caps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupPolicy {
    pub plan: String,
    /// IANA time zone name in which days start (the agent counts "today" in it).
    pub time_zone: String,
    /// Largest share of an instance's daily cap that one provider's domains
    /// may take while the instance warms up.
    pub shares: Vec<WarmupShare>,
    /// The daily caps by step. The agent keeps each instance's step (a new
    /// instance starts on step 1 on its first day) and caps from this; an
    /// empty schedule (a policy from before schedules were rendered) leaves
    /// the cap to [`InstancePolicy::daily_cap`].
    #[serde(default)]
    pub schedule: WarmupSchedule,
    /// When delivery is unhealthy the step is held instead of advancing.
    #[serde(default)]
    pub pause: Option<WarmupPause>,
}

/// Daily caps per step (step N = the N-th day the instance has been allowed
/// to advance; day 1 = step 1). Exactly one of `steps` and `ramp` is set by
/// the renderer. This is the one implementation of the schedule: the
/// WarmupPlan API type delegates to it, so operator and agent agree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupSchedule {
    /// Explicit steps, days strictly increasing, the first on day 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<WarmupStepCap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<WarmupRamp>,
}

/// From `day` on, at most `daily_cap` messages a day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupStepCap {
    pub day: u32,
    pub daily_cap: u64,
}

/// Geometric ramp: `start` on day 1, `growth_percent` more each day, warm
/// once the cap would reach `ceiling`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupRamp {
    pub start: u64,
    pub growth_percent: u32,
    pub ceiling: u64,
}

/// Longest schedule the agent follows (the CRD's limit on `steps[].day`).
pub use crate::api::limits::MAX_WARMUP_DAYS;

impl WarmupSchedule {
    /// No schedule rendered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.ramp.is_none()
    }

    /// Daily cap on plan day `day` (1-based; 0 counts as 1), or `None` once
    /// the plan is finished (the IP is warm): the day after the last step,
    /// or once the ramp reaches its ceiling. An empty schedule caps nothing.
    pub fn cap_on_day(&self, day: u32) -> Option<u64> {
        let day = day.max(1);
        if !self.steps.is_empty() {
            // The last step holds on its own day; from the next day the IP
            // is warm and uncapped.
            let last = self.steps.iter().map(|s| s.day).max()?;
            if day > last {
                return None;
            }
            return self.steps.iter().filter(|s| s.day <= day).max_by_key(|s| s.day).map(|s| s.daily_cap);
        }
        let ramp = self.ramp.as_ref()?;
        let mut cap = ramp.start as f64;
        for _ in 1..day {
            cap *= 1.0 + ramp.growth_percent as f64 / 100.0;
            if cap >= ramp.ceiling as f64 {
                return None;
            }
        }
        Some((cap.floor() as u64).min(ramp.ceiling))
    }

    /// The last capped day (0 for an empty schedule): from the day after,
    /// the IP is warm.
    pub fn days(&self) -> u32 {
        if let Some(last) = self.steps.iter().map(|s| s.day).max() {
            return last;
        }
        if self.ramp.is_none() {
            return 0;
        }
        // A ramp's cap grows by at least 1% a day, so it reaches any ceiling
        // the CRD allows well before the bound.
        (1..=MAX_WARMUP_DAYS).take_while(|d| self.cap_on_day(*d).is_some()).last().unwrap_or(0)
    }
}

/// WarmupPlan `pause`, in seconds: over the last `window_seconds`, with at
/// least `min_messages` attempts, deferred/attempted above
/// `max_deferral_percent` or bounced/attempted above `max_bounce_percent`
/// holds the instance on its step at the next day boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupPause {
    #[serde(default)]
    pub max_deferral_percent: Option<u32>,
    #[serde(default)]
    pub max_bounce_percent: Option<u32>,
    pub window_seconds: u64,
    pub min_messages: u32,
}

/// A provider's share of a warming instance's daily cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupShare {
    /// Patterns in the same form as [`DomainRule::patterns`].
    pub patterns: Vec<String>,
    /// Percent (1-100) of the daily cap.
    pub max_percent: u32,
}

impl DomainRule {
    /// Whether `domain` (lowercase, no trailing dot) matches one of the patterns.
    pub fn matches(&self, domain: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, domain))
    }
}

/// `example.com` matches only itself; `.example.com` matches any subdomain.
pub fn pattern_matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(parent) => domain.strip_suffix(parent).is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern == domain,
    }
}

impl AgentPolicy {
    /// The rule for a recipient domain: an exact pattern wins over a wildcard,
    /// and a longer wildcard over a shorter one; ties go to rule order.
    pub fn rule_for(&self, domain: &str) -> Option<&DomainRule> {
        let mut best: Option<(usize, &DomainRule)> = None;
        for rule in &self.domains {
            for p in &rule.patterns {
                if !pattern_matches(p, domain) {
                    continue;
                }
                // Exact match scores above any wildcard.
                let score = if p.starts_with('.') { p.len() } else { usize::MAX };
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, rule));
                }
            }
        }
        best.map(|(_, r)| r)
    }

    /// This instance's own entry.
    pub fn this_instance(&self) -> Option<&InstancePolicy> {
        self.instances.iter().find(|i| i.name == self.instance)
    }

    /// Peers (other instances) in rotation, in spec order.
    pub fn peers_in_rotation(&self) -> impl Iterator<Item = &InstancePolicy> {
        self.instances.iter().filter(move |i| i.name != self.instance && i.weight > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_subdomains_only() {
        assert!(pattern_matches(".example.com", "mx.example.com"));
        assert!(pattern_matches(".example.com", "a.b.example.com"));
        assert!(!pattern_matches(".example.com", "example.com"));
        assert!(!pattern_matches(".example.com", "badexample.com"));
        assert!(pattern_matches("example.com", "example.com"));
        assert!(!pattern_matches("example.com", "a.example.com"));
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let rule = |name: &str, pats: &[&str]| DomainRule {
            name: name.into(),
            patterns: pats.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let p = AgentPolicy {
            domains: vec![
                rule("broad", &[".example.com"]),
                rule("narrow", &[".mail.example.com"]),
                rule("exact", &["x.mail.example.com"]),
            ],
            ..Default::default()
        };
        assert_eq!(p.rule_for("x.mail.example.com").unwrap().name, "exact");
        assert_eq!(p.rule_for("y.mail.example.com").unwrap().name, "narrow");
        assert_eq!(p.rule_for("www.example.com").unwrap().name, "broad");
        assert!(p.rule_for("example.org").is_none());
    }
}
