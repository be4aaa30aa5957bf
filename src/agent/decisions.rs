//! This instance's own routing decisions over time: a socketmap lookup is
//! answered ([`decide`], with the adaptive overlay) and, when the answer
//! makes this instance send the mail itself, a slot of today's cap is
//! reserved in the same step; the logged outcome of such an attempt
//! settles it (the reservation is released, the warm-up pause window and
//! the adaptive rules see it, sent mail is counted for today).
//!
//! It owns the link between a lookup and its outcome — which outcomes are
//! this instance's own attempts, which went through a peer, which share
//! they count under — and the publication of what the adaptive rules
//! changed. It must never take a lock (its owner holds one around it, so a
//! decision and its reservation are one step), never read the clock, and
//! never compute a route itself: the route comes from
//! `socketmap::decision`, the overlay from `adaptive`.

use std::path::Path;

use sendfleet_render::contract::{ResponseCategory, PEER_RELAY_TRANSPORT};
use sendfleet_render::policy::{AgentPolicy, DomainRule};
use sendfleet_render::routing;

use super::adaptive::{Adaptive, Change};
use super::counters::CountersError;
use super::day::DayLedger;
use super::log::join::Outcome;
use super::log::parse::Status;
use super::metrics::{AdaptiveLabels, Metrics, RuleLabels};
use super::policy_slot::plan;
use super::socketmap::decision::{decide, key_domain, share_for, Decision, NotFoundWhy, SentToday};
use super::warmup::{self, CapSource};

/// The day ledger and the adaptive state, decided and settled together.
pub struct Decisions {
    pub day: DayLedger,
    pub adaptive: Adaptive,
    /// Lookups answered so far: spreads peer choice and slow-down picks.
    seq: u64,
}

/// The state dir's record of the egress address its warm-up ledger and
/// adaptive state belong to ([`Decisions::follow_address`]).
pub const ADDRESS_FILE: &str = "address.json";

/// How one logged outcome relates to this instance's decisions (computed
/// before the lock: one rule lookup per recipient line).
pub struct OutcomeRoute<'p> {
    pub rule: Option<&'p DomainRule>,
    /// The warm-up share key the domain counts under.
    pub share: Option<String>,
    /// Relayed through a peer (by the `peer-relay` transport, or to a
    /// peer's relay port): the peer's attempt, not this instance's.
    pub via_peer: bool,
    /// This instance's own attempt at the domain's receiver: not through a
    /// peer, not a `retry:`/`error:` answer, not a relay route.
    pub own_attempt: bool,
}

impl<'p> OutcomeRoute<'p> {
    pub fn of(policy: Option<&'p AgentPolicy>, o: &Outcome<'_>) -> Self {
        let rule = policy.and_then(|p| p.rule_for(&o.domain));
        let share = policy.and_then(|p| share_for(p, &o.domain)).map(|(k, _)| k);
        // Which legs are hand-offs to a peer: the routing model knows.
        let via_peer = match policy {
            Some(p) => routing::is_peer_leg(p, o.service, o.relay_addr, o.relay_port),
            None => o.service == PEER_RELAY_TRANSPORT,
        };
        let own_attempt =
            !via_peer && !matches!(o.service, "retry" | "error") && rule.is_none_or(|r| r.relay.is_none());
        OutcomeRoute { rule, share, via_peer, own_attempt }
    }

    /// The matching rule's name.
    pub fn rule_name(&self) -> Option<&'p str> {
        self.rule.map(|r| r.name.as_str())
    }
}

impl Decisions {
    /// The state persisted in `dir`. Unreadable adaptive state is a fresh
    /// start (logged): exclusions are re-learnt from the next blocks.
    pub fn load(dir: &Path, day: DayLedger) -> Self {
        let adaptive = Adaptive::load(dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "adaptive state unreadable; no exclusion or slow-down in force");
            Adaptive::default()
        });
        Decisions { day, adaptive, seq: 0 }
    }

    /// Make the warm-up ledger and the adaptive state (exclusions,
    /// slow-downs, learnt MX hosts) follow the egress address, not the
    /// instance name whose volume holds them: `dir/address` records whose
    /// they are. When this instance now sends from another address (a new
    /// address given an old name), they are kept aside as
    /// `<file>.address-<old address>` and start afresh: the new address has
    /// sent nothing and no provider has judged it. No record yet (a new
    /// volume, or one from before this file existed) is recorded, nothing
    /// reset. Returns the previous address and the changes that clear the
    /// gauges of what was in force, when it reset.
    pub fn follow_address(&mut self, dir: &Path, address: &str) -> std::io::Result<Option<(String, Vec<Change>)>> {
        let path = dir.join(ADDRESS_FILE);
        let recorded: Option<String> = super::state_file::load(&path, "the state dir's address record")?;
        if recorded.as_deref() == Some(address) {
            return Ok(None);
        }
        let reset = match recorded.filter(|r| !r.is_empty()) {
            Some(previous) => {
                for file in [warmup::FILE, super::adaptive::FILE] {
                    let from = dir.join(file);
                    if from.exists() {
                        std::fs::rename(&from, dir.join(format!("{file}.address-{previous}")))?;
                    }
                }
                let (exclusions, slow_downs) = self.adaptive.status(None);
                let mut cleared: Vec<Change> =
                    exclusions.into_iter().map(|e| Change::ExclusionLifted { rule: e.rule }).collect();
                cleared.extend(slow_downs.into_iter().map(|d| Change::SlowDownStepped { rule: d.rule, level: 0 }));
                self.day.warmup = warmup::Warmup::new(dir);
                self.adaptive = Adaptive::load(dir).unwrap_or_default();
                Some((previous, cleared))
            }
            None => None,
        };
        super::state_file::save(dir, ADDRESS_FILE, &address)?;
        Ok(reset)
    }

    /// Answer one socketmap lookup for `key` at `now`; an answer that has
    /// this instance send the mail itself to the domain's receiver holds a
    /// slot of a capped day until its outcome is logged (relay rules are
    /// not capped). Returns what the adaptive rules changed on the way.
    pub fn decide(&mut self, policy: Option<&AgentPolicy>, key: &str, now: u64) -> (Decision, Vec<Change>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let Some(policy) = policy else {
            return (Decision::NotFound(NotFoundWhy::UnknownInstance), Vec::new());
        };
        let Decisions { day: DayLedger { counters, warmup }, adaptive, .. } = self;
        warmup.reservations.expire(now, warmup::RESERVATION_TTL_SECS);
        let cap = warmup.cap(policy.warmup.as_ref());
        let sent = SentToday {
            total: counters.sent_total,
            by_share: Some(&counters.sent_by_share),
            reserved: warmup.reservations.total(),
            reserved_by_share: Some(warmup.reservations.by_share()),
            cap,
        };
        let changes = adaptive.tick(policy, now);
        // This instance's own exclusions and slow-downs (agent::adaptive).
        let d = adaptive.overlay(policy, decide(policy, &sent, key, seq), key, seq);
        let capped = match cap {
            CapSource::Policy => policy.this_instance().is_some_and(|i| i.daily_cap.is_some()),
            CapSource::Ledger(c) => c.is_some(),
        };
        if capped && matches!(d, Decision::NotFound(NotFoundWhy::Normal) | Decision::Slow { .. }) {
            let share = key_domain(key).and_then(|dom| share_for(policy, &dom).map(|(k, _)| k));
            warmup.reservations.reserve(now, share.as_deref());
        }
        (d, changes)
    }

    /// Settle one logged outcome at `now`: an own attempt releases its
    /// reservation and feeds the warm-up pause window and the adaptive
    /// rules; mail sent by this instance itself counts for today.
    pub fn settle(
        &mut self,
        policy: Option<&AgentPolicy>,
        route: &OutcomeRoute<'_>,
        o: &Outcome<'_>,
        now: u64,
    ) -> Option<Change> {
        let mut change = None;
        if route.own_attempt {
            self.day.warmup.reservations.release(route.share.as_deref());
            self.day.warmup.record_attempt(plan(policy), now, o.status);
            // Routed by MX from here: the host named is the domain's MX.
            if let Some(h) = o.relay_host {
                self.adaptive.learn_mx(&o.domain, h, now);
            }
            // A block counts for the domain's rule; for a domain whose rule
            // has no autoExclusion (or that has no rule), for the rule whose
            // domains share its MX host: the provider blocks the IP.
            let by_provider =
                o.category == ResponseCategory::IpBlock && route.rule.is_none_or(|r| r.auto_exclusion.is_none());
            let rule = match (policy, o.relay_host) {
                (Some(p), Some(h)) if by_provider => self.adaptive.provider_rule(p, h).or(route.rule),
                _ => route.rule,
            };
            if let Some(r) = rule {
                change = self.adaptive.observe(r, &o.domain, o.relay_host, o.category, now);
            }
        }
        if o.status == Status::Sent && !route.via_peer {
            // The sent_today gauges are published by `DayGauges::publish`.
            self.day.counters.record_sent(route.rule_name().unwrap_or(""), route.share.as_deref());
        }
        change
    }

    /// Let exclusions expire and slow-downs recover at `now`.
    pub fn tick(&mut self, policy: Option<&AgentPolicy>, now: u64) -> Vec<Change> {
        policy.map(|p| self.adaptive.tick(p, now)).unwrap_or_default()
    }

    /// Write what changed. Adaptive state and the warm-up ledger that fail
    /// to save are logged and retried on the next flush; the counters'
    /// error is returned.
    pub fn save_dirty(&mut self) -> Result<(), CountersError> {
        if self.adaptive.is_dirty() {
            if let Err(e) = self.adaptive.save() {
                tracing::warn!(error = %e, "saving the adaptive state");
            }
        }
        self.day.save_dirty()
    }
}

/// Log and count what the adaptive rules changed.
pub fn publish(metrics: &Metrics, changes: impl IntoIterator<Item = Change>) {
    for c in changes {
        let (rule, change) = match &c {
            Change::Excluded { rule, reason, until } => {
                tracing::warn!(rule, reason, until, "excluded this instance for the rule");
                metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: rule.clone() }).set(1);
                (rule, "Excluded")
            }
            Change::ExclusionLifted { rule } => {
                tracing::info!(rule, "exclusion expired");
                metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: rule.clone() }).set(0);
                (rule, "ExclusionLifted")
            }
            Change::SlowDownEngaged { rule, level, reason } => {
                tracing::warn!(rule, level, reason, "slow-down engaged");
                metrics.slow_down_level.get_or_create(&RuleLabels { rule: rule.clone() }).set(i64::from(*level));
                (rule, "SlowDownEngaged")
            }
            Change::SlowDownStepped { rule, level } => {
                tracing::info!(rule, level, "slow-down recovery step");
                metrics.slow_down_level.get_or_create(&RuleLabels { rule: rule.clone() }).set(i64::from(*level));
                (rule, "SlowDownStepped")
            }
        };
        metrics.adaptive_changes.get_or_create(&AdaptiveLabels { rule: rule.clone(), change }).inc();
    }
}

/// A series at 0 for every rule of `policy` that can exclude or slow this
/// instance, until it does: the dashboard's exclusion panel and an alert
/// expression see "not excluded" rather than no data, and a first exclusion
/// is a change of value Prometheus can see (`changes()`, `increase()`),
/// not a series appearing. Never overwrites a value [`publish`] set.
pub fn declare(metrics: &Metrics, policy: &AgentPolicy) {
    for r in &policy.domains {
        if r.auto_exclusion.is_some() {
            let _ = metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: r.name.clone() });
        }
        if r.slow_down.is_some() {
            let _ = metrics.slow_down_level.get_or_create(&RuleLabels { rule: r.name.clone() });
        }
    }
}

/// Show the exclusions and slow-downs restored from the state dir: they
/// are in force from the start, so the gauges say so from the start.
pub fn publish_restored(metrics: &Metrics, adaptive: &Adaptive) {
    let (exclusions, slow_downs) = adaptive.status(None);
    for e in exclusions {
        metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: e.rule }).set(1);
    }
    for d in slow_downs {
        metrics.slow_down_level.get_or_create(&RuleLabels { rule: d.rule }).set(i64::from(d.level));
    }
}

#[cfg(test)]
mod tests {
    use sendfleet_render::policy::InstancePolicy;

    use super::*;
    use crate::agent::counters::Counters;
    use crate::agent::socketmap::decision::PeerWhy;

    fn inst(name: &str, address: &str) -> InstancePolicy {
        InstancePolicy { name: name.into(), address: address.into(), weight: 100, ..Default::default() }
    }

    /// Instance `a`, capped at 10 a day by the operator (no warm-up
    /// schedule), with peer `b`; `partner.example` relayed.
    fn policy() -> AgentPolicy {
        let mut a = inst("a", "192.0.2.1");
        a.daily_cap = Some(10);
        let relay = DomainRule {
            name: "partner".into(),
            patterns: vec!["partner.example".into()],
            relay: Some("[relay.example]:25".into()),
            ..Default::default()
        };
        AgentPolicy {
            version: 1,
            pool: "ns/pool".into(),
            instance: "a".into(),
            instances: vec![a, inst("b", "192.0.2.2")],
            domains: vec![relay],
            peer_port: 2526,
            ..Default::default()
        }
    }

    /// An agent's decisions under [`policy`], state in a temp dir.
    struct Agent {
        _dir: tempfile::TempDir,
        policy: AgentPolicy,
        d: Decisions,
    }

    impl Agent {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let d = Decisions::load(dir.path(), DayLedger::load(dir.path(), Counters::load(dir.path()).unwrap()));
            Agent { _dir: dir, policy: policy(), d }
        }

        fn lookup(&mut self, key: &str) -> Decision {
            self.d.decide(Some(&self.policy), key, 100).0
        }

        /// Log `o`; returns the route it was settled under.
        fn logged(&mut self, o: &Outcome<'_>) -> (Option<String>, bool, bool) {
            let route = OutcomeRoute::of(Some(&self.policy), o);
            self.d.settle(Some(&self.policy), &route, o, 101);
            (route.rule_name().map(str::to_string), route.own_attempt, route.via_peer)
        }

        fn reserved(&self) -> u64 {
            self.d.day.warmup.reservations.total()
        }
    }

    fn sent<'a>(domain: &'a str, service: &'a str, relay: (&'a str, u16)) -> Outcome<'a> {
        Outcome {
            domain: domain.into(),
            status: Status::Sent,
            category: ResponseCategory::Accepted,
            delays: None,
            relay_host: Some("mx.dest.example"),
            delay: None,
            relay_addr: Some(relay.0),
            relay_port: Some(relay.1),
            service,
        }
    }

    #[test]
    fn a_send_from_here_holds_a_slot_that_only_its_own_outcome_releases() {
        let mut a = Agent::new();
        assert_eq!(a.lookup("bob@dest.example"), Decision::NotFound(NotFoundWhy::Normal));
        assert_eq!(a.reserved(), 1);
        for o in [
            sent("dest.example", PEER_RELAY_TRANSPORT, ("192.0.2.9", 2526)),
            sent("dest.example", "smtp", ("192.0.2.2", 2526)),
        ] {
            let (_, own, via_peer) = a.logged(&o);
            assert!(via_peer && !own, "{o:?}");
        }
        assert_eq!((a.reserved(), a.d.day.counters.sent_total), (1, 0), "a peer's attempt is not this instance's");
        let (_, own, via_peer) = a.logged(&sent("dest.example", "smtp", ("198.51.100.7", 25)));
        assert!(own && !via_peer);
        assert_eq!((a.reserved(), a.d.day.counters.sent_total), (0, 1), "released, and sent today");
    }

    #[test]
    fn rules_that_can_exclude_or_slow_show_zero_until_they_do() {
        use sendfleet_render::policy::AutoExclusionRule;
        let mut p = policy();
        p.domains.push(DomainRule {
            name: "big".into(),
            patterns: vec!["big.example".into()],
            auto_exclusion: Some(AutoExclusionRule { hard_blocks: 2, window_seconds: 60, duration_seconds: 600 }),
            ..Default::default()
        });
        let m = Metrics::new();
        declare(&m, &p);
        let text = m.encode();
        assert!(text.contains("sendfleet_agent_auto_excluded{rule=\"big\"} 0"), "{text}");
        assert!(!text.contains("sendfleet_agent_auto_excluded{rule=\"partner\"}"), "only rules with autoExclusion");
        publish(&m, [Change::Excluded { rule: "big".into(), reason: String::new(), until: 1 }]);
        declare(&m, &p);
        assert!(m.encode().contains("sendfleet_agent_auto_excluded{rule=\"big\"} 1"), "declare keeps the value");
    }

    #[test]
    fn warm_up_and_exclusions_follow_the_address_not_the_name() {
        use sendfleet_render::policy::AutoExclusionRule;
        let mut a = Agent::new();
        let dir = a._dir.path().to_path_buf();
        a.policy.domains.push(DomainRule {
            name: "big".into(),
            patterns: vec!["big.example".into()],
            auto_exclusion: Some(AutoExclusionRule { hard_blocks: 1, window_seconds: 60, duration_seconds: 600 }),
            ..Default::default()
        });
        // First sight of the volume: recorded, nothing reset.
        assert!(a.d.follow_address(&dir, "192.0.2.1").unwrap().is_none());
        let block = Outcome {
            status: Status::Deferred,
            category: ResponseCategory::IpBlock,
            relay_host: Some("mx.big.example"),
            ..sent("big.example", "smtp", ("198.51.100.7", 25))
        };
        a.logged(&block);
        assert_eq!(a.d.adaptive.status(None).0.len(), 1, "excluded");
        a.d.adaptive.save().unwrap();
        // The same address again (a restart, a rename that kept it): kept.
        assert!(a.d.follow_address(&dir, "192.0.2.1").unwrap().is_none());
        assert_eq!(a.d.adaptive.status(None).0.len(), 1);
        // Another address under the same name: afresh, the old state kept aside.
        let (previous, cleared) = a.d.follow_address(&dir, "192.0.2.99").unwrap().expect("reset");
        assert_eq!(previous, "192.0.2.1");
        assert!(matches!(cleared.as_slice(), [Change::ExclusionLifted { rule }] if rule == "big"), "{cleared:?}");
        assert!(a.d.adaptive.status(None).0.is_empty(), "no exclusion for the new address");
        assert!(a.d.day.warmup.ledger().is_none(), "no warm-up step for the new address");
        assert!(dir.join("adaptive.json.address-192.0.2.1").exists(), "the old state kept aside");
        assert!(a.d.follow_address(&dir, "192.0.2.99").unwrap().is_none(), "recorded");
    }

    #[test]
    fn relay_routes_are_counted_but_hold_no_slot() {
        let mut a = Agent::new();
        assert_eq!(a.lookup("x@partner.example"), Decision::NotFound(NotFoundWhy::RelayRule));
        assert_eq!(a.reserved(), 0);
        let (rule, own, _) = a.logged(&sent("partner.example", "smtp", ("203.0.113.5", 25)));
        assert_eq!((rule.as_deref(), own), (Some("partner"), false));
        assert_eq!(a.d.day.counters.sent_by_rule.get("partner"), Some(&1));
    }

    #[test]
    fn own_attempts_teach_mx_hosts_and_blocks_count_for_the_rule_sharing_the_host() {
        use sendfleet_render::policy::AutoExclusionRule;
        let mut a = Agent::new();
        a.policy.domains.push(DomainRule {
            name: "big".into(),
            patterns: vec!["big.example".into()],
            throttle_transport: Some("dp-big".into()),
            auto_exclusion: Some(AutoExclusionRule { hard_blocks: 2, window_seconds: 60, duration_seconds: 600 }),
            ..Default::default()
        });
        let at = |domain: &'static str, service: &'static str, host: &'static str, category| Outcome {
            status: Status::Deferred,
            category,
            relay_host: Some(host),
            ..sent(domain, service, ("198.51.100.7", 25))
        };
        // A peer leg names the peer, not the MX: nothing learnt from it.
        a.logged(&Outcome { relay_host: Some("peer"), ..sent("free.example", "smtp", ("192.0.2.2", 2526)) });
        assert_eq!(a.d.adaptive.mx_of("free.example"), None);
        a.logged(&at("big.example", "dp-big", "mx.prov.example", ResponseCategory::Accepted));
        a.logged(&at("free.example", "smtp", "mx.prov.example", ResponseCategory::IpBlock));
        assert_eq!(a.d.adaptive.mx_of("free.example"), Some("mx.prov.example"));
        assert!(!a.d.adaptive.is_excluded("big"));
        // A rate limit from the host is no block, and counts for no other rule.
        a.logged(&at("free.example", "smtp", "mx.prov.example", ResponseCategory::RateLimit));
        assert!(!a.d.adaptive.is_excluded("big"));
        // The second block (a domain in no rule, the rule's own host) engages it.
        a.logged(&at("free.example", "smtp", "mx.prov.example", ResponseCategory::IpBlock));
        assert!(a.d.adaptive.is_excluded("big"));
        assert!(matches!(a.lookup("x@free.example"), Decision::Peer { why: PeerWhy::ExcludedMx, .. }));
    }

    #[test]
    fn without_a_policy_the_instance_is_unknown() {
        let mut a = Agent::new();
        let (answer, changes) = a.d.decide(None, "bob@dest.example", 100);
        assert_eq!(answer, Decision::NotFound(NotFoundWhy::UnknownInstance));
        assert!(changes.is_empty());
    }
}
