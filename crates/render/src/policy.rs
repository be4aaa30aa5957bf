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
    /// Name of the master.cf transport that throttles this domain, if any.
    pub throttle_transport: Option<String>,
    /// The same transport's slowed variant used while an adaptive slow-down
    /// is active, if the policy enables slow-down.
    pub slow_transport: Option<String>,
    /// True while an adaptive slow-down is in force for this rule.
    pub slowed: bool,
    /// Relay route (`[host]:port`), if the domain is relayed; the agent then
    /// leaves routing to the static transport map.
    pub relay: Option<String>,
    /// Deliveries are paused: lookups answer a deferral with this reason.
    pub paused: Option<String>,
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
