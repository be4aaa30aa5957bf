//! Per-instance adaptive domain rules: automatic exclusion after hard blocks
//! and slow-down on rate-limit deferrals with stepwise recovery.
//!
//! The operator renders the *rules* (DomainPolicy `autoExclusion` and
//! `slowDown`, in [`DomainRule`]); this module applies them to what this
//! instance's own deliveries hear, at once, because only the agent sees
//! every answer in real time:
//!
//! - **Exclusion.** `IpBlock` answers for a rule's domains within its window
//!   reaching `hardBlocks` exclude this instance for the rule until
//!   now + duration: lookups for the rule then relay to a peer
//!   (`PeerWhy::Excluded`). The rendered delivery status filter has turned
//!   those 5xx blocks into 4xx, so the blocked messages are retried (and
//!   leave through the peer) instead of bouncing.
//! - **Provider-wide.** A provider blocks the IP, not the domain, and large
//!   providers serve many domains behind one MX host. The hosts the
//!   blocks came from (`relay=HOST[..]` in the log) are kept with the
//!   exclusion, and every domain this instance knows goes to one of them
//!   ([`mx::MxMap`], learnt from its own deliveries) leaves through a peer
//!   too (`PeerWhy::ExcludedMx`) — domains of other rules and domains in
//!   no rule alike — until the exclusion expires. Blocks from such a host
//!   for a domain without `autoExclusion` count for the rule whose domains
//!   go there. No DNS lookup is made on the lookup path: a domain not yet
//!   sent to is learnt from its first attempt (docs/AGENT.md).
//! - **Slow-down.** `RateLimit` answers within the window reaching
//!   `deferrals` engage the slow-down at the top level L = `levels`; at level
//!   L, lookups with `seq % levels < L` take the rule's slow transport and
//!   the rest the normal one. Each quiet `recoveryInterval` (no rate-limit
//!   answer) lowers L by one; a new burst engages at the top again.
//!
//! The state lives in `$STATE_DIR/adaptive.json` (temp + rename) on the queue
//! volume, so it survives restarts and dies with the IP. Everything here is
//! pure except [`Adaptive::load`] / [`Adaptive::save`]: time is passed in.
//! It must never hold an address: rule names, domains, counts and times.

pub mod mx;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use sendfleet_render::contract::{ActiveExclusion, ActiveSlowDown, ResponseCategory};
use sendfleet_render::policy::{AgentPolicy, DomainRule};
use sendfleet_render::routing::choose_peer;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::socketmap::decision::{key_domain, why_text, Decision, NotFoundWhy, PeerWhy};
use mx::MxMap;

pub const FILE: &str = "adaptive.json";

#[derive(Debug, Error)]
pub enum AdaptiveError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What changed, for the agent's log and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Excluded { rule: String, reason: String, until: u64 },
    ExclusionLifted { rule: String },
    SlowDownEngaged { rule: String, level: u32, reason: String },
    SlowDownStepped { rule: String, level: u32 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exclusion {
    reason: String,
    since: u64,
    until: u64,
    /// The MX hosts the blocks came from (lowercase, at most
    /// [`MAX_BLOCK_HOSTS`]): every domain known to go there is excluded too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mx_hosts: Vec<String>,
}

/// MX hosts one exclusion remembers at most (a rule's domains go to a few).
pub const MAX_BLOCK_HOSTS: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlowDown {
    level: u32,
    max_level: u32,
    reason: String,
    since: u64,
    /// Start of the current quiet period: the last rate-limit answer or the
    /// last recovery step. The next step is due one interval after it.
    quiet_since: u64,
    /// Lookups decided under this slow-down: `picks % max_level < level`
    /// takes the slow transport. Counted per rule, so other domains' lookups
    /// (and Postfix's `*` probes) cannot skew the fraction.
    #[serde(skip)]
    picks: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleState {
    /// Unix seconds of IpBlock answers inside the window, oldest first.
    #[serde(default)]
    blocks: VecDeque<u64>,
    /// MX host -> Unix seconds of its last block inside the window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    block_hosts: BTreeMap<String, u64>,
    #[serde(default)]
    exclusion: Option<Exclusion>,
    /// Unix seconds of RateLimit answers inside the window, oldest first.
    #[serde(default)]
    deferrals: VecDeque<u64>,
    #[serde(default)]
    slow_down: Option<SlowDown>,
}

impl RuleState {
    fn is_empty(&self) -> bool {
        self.blocks.is_empty()
            && self.block_hosts.is_empty()
            && self.exclusion.is_none()
            && self.deferrals.is_empty()
            && self.slow_down.is_none()
    }
}

/// The adaptive state of this instance, per rule name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Adaptive {
    #[serde(default)]
    rules: BTreeMap<String, RuleState>,
    /// Which MX host each domain's mail goes to (learnt from the log).
    #[serde(default)]
    mx: MxMap,
    #[serde(skip)]
    dir: PathBuf,
    #[serde(skip)]
    dirty: bool,
}

/// Keep `times` to the last `window` seconds before `now`.
fn prune(times: &mut VecDeque<u64>, now: u64, window: u64) {
    while times.front().is_some_and(|t| t.saturating_add(window) <= now) {
        times.pop_front();
    }
}

/// Keep the hosts whose last block is within the last `window` seconds.
fn prune_hosts(hosts: &mut BTreeMap<String, u64>, now: u64, window: u64) {
    hosts.retain(|_, t| t.saturating_add(window) > now);
}

impl Adaptive {
    /// Load from `dir`; a missing or unreadable file is a fresh start (an
    /// unreadable one is logged): a lost exclusion is re-learnt from the next
    /// blocks, refusing to start would stop all mail.
    pub fn load(dir: &Path) -> Result<Self, AdaptiveError> {
        let path = dir.join(FILE);
        let mut a = match super::state_file::load::<Adaptive>(&path, "adaptive state") {
            Ok(a) => a.unwrap_or_default(),
            Err(source) => return Err(AdaptiveError::Read { path, source }),
        };
        a.dir = dir.to_path_buf();
        Ok(a)
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Write temp + fsync + rename; clears the dirty flag on success.
    pub fn save(&mut self) -> Result<(), AdaptiveError> {
        let path = self.dir.join(FILE);
        super::state_file::save(&self.dir, FILE, self).map_err(|source| AdaptiveError::Write { path, source })?;
        self.dirty = false;
        Ok(())
    }

    /// Learn from one of this instance's own attempts (routed by MX, not
    /// through a peer or a relay route) that `domain`'s mail goes to `host`.
    pub fn learn_mx(&mut self, domain: &str, host: &str, now: u64) {
        self.dirty |= self.mx.learn(domain, host, now);
    }

    /// The MX host `domain`'s mail is known to go to.
    pub fn mx_of(&self, domain: &str) -> Option<&str> {
        self.mx.host_of(domain)
    }

    /// The rule with `autoExclusion` that a block from MX host `host` for a
    /// domain without it counts for: the first (by name) of the rules whose
    /// domains are known to go to `host`. Runs once per block (rare), so a
    /// scan of the map is fine.
    pub fn provider_rule<'p>(&self, policy: &'p AgentPolicy, host: &str) -> Option<&'p DomainRule> {
        let hosts = [host.trim_end_matches('.').to_ascii_lowercase()];
        self.mx
            .domains_of(&hosts)
            .filter_map(|d| policy.rule_for(d))
            .filter(|r| r.auto_exclusion.is_some())
            .min_by(|a, b| a.name.cmp(&b.name))
    }

    /// Count one answer this instance got itself (not through a peer) from
    /// `domain`, which falls under `rule`; `host` is the MX host that
    /// answered, if the log named one.
    pub fn observe(
        &mut self,
        rule: &DomainRule,
        domain: &str,
        host: Option<&str>,
        category: ResponseCategory,
        now: u64,
    ) -> Option<Change> {
        match category {
            ResponseCategory::IpBlock => {
                let a = rule.auto_exclusion.as_ref()?;
                let st = self.rules.entry(rule.name.clone()).or_default();
                if st.exclusion.is_some() {
                    // Answers to mail already in flight when the IP was excluded.
                    return None;
                }
                st.blocks.push_back(now);
                prune(&mut st.blocks, now, a.window_seconds);
                if let Some(h) = host.map(|h| h.trim_end_matches('.')).filter(|h| !h.is_empty()) {
                    st.block_hosts.insert(h.to_ascii_lowercase(), now);
                }
                prune_hosts(&mut st.block_hosts, now, a.window_seconds);
                self.dirty = true;
                if (st.blocks.len() as u64) < u64::from(a.hard_blocks.max(1)) {
                    return None;
                }
                let reason =
                    format!("{} IP/reputation blocks from {domain} within {}s", st.blocks.len(), a.window_seconds);
                st.blocks.clear();
                // The most recent hosts, if the rule's domains met more than a few.
                let mut hosts: Vec<(u64, String)> =
                    std::mem::take(&mut st.block_hosts).into_iter().map(|(h, t)| (t, h)).collect();
                hosts.sort_by(|a, b| b.cmp(a));
                let mut mx_hosts: Vec<String> = hosts.into_iter().take(MAX_BLOCK_HOSTS).map(|(_, h)| h).collect();
                mx_hosts.sort();
                let until = now.saturating_add(a.duration_seconds);
                st.exclusion = Some(Exclusion { reason: reason.clone(), since: now, until, mx_hosts });
                Some(Change::Excluded { rule: rule.name.clone(), reason, until })
            }
            ResponseCategory::RateLimit => {
                let s = rule.slow_down.as_ref()?;
                let max = s.levels.max(1);
                let st = self.rules.entry(rule.name.clone()).or_default();
                st.deferrals.push_back(now);
                prune(&mut st.deferrals, now, s.window_seconds);
                self.dirty = true;
                if let Some(sd) = &mut st.slow_down {
                    // Not quiet: recovery waits a full interval from here.
                    sd.quiet_since = now;
                }
                if (st.deferrals.len() as u64) < u64::from(s.deferrals.max(1)) {
                    return None;
                }
                let reason =
                    format!("{} rate-limit deferrals from {domain} within {}s", st.deferrals.len(), s.window_seconds);
                // A fresh burst is needed to re-engage.
                st.deferrals.clear();
                match &mut st.slow_down {
                    Some(sd) if sd.level == max => None,
                    Some(sd) => {
                        sd.level = max;
                        sd.max_level = max;
                        sd.reason = reason.clone();
                        Some(Change::SlowDownEngaged { rule: rule.name.clone(), level: max, reason })
                    }
                    None => {
                        st.slow_down = Some(SlowDown {
                            level: max,
                            max_level: max,
                            reason: reason.clone(),
                            since: now,
                            quiet_since: now,
                            picks: 0,
                        });
                        Some(Change::SlowDownEngaged { rule: rule.name.clone(), level: max, reason })
                    }
                }
            }
            _ => None,
        }
    }

    /// Apply time: lift expired exclusions, take due recovery steps, forget
    /// rules the policy no longer has (or no longer makes adaptive).
    pub fn tick(&mut self, policy: &AgentPolicy, now: u64) -> Vec<Change> {
        let mut changes = vec![];
        let before = self.rules.len();
        self.rules.retain(|name, _| {
            policy.domains.iter().any(|r| &r.name == name && (r.auto_exclusion.is_some() || r.slow_down.is_some()))
        });
        let mut dirty = self.rules.len() != before;
        for rule in &policy.domains {
            let Some(st) = self.rules.get_mut(&rule.name) else {
                continue;
            };
            match &rule.auto_exclusion {
                None => {
                    dirty |= st.exclusion.is_some() || !st.blocks.is_empty() || !st.block_hosts.is_empty();
                    st.exclusion = None;
                    st.blocks.clear();
                    st.block_hosts.clear();
                }
                Some(a) => {
                    if st.exclusion.as_ref().is_some_and(|e| e.until <= now) {
                        st.exclusion = None;
                        dirty = true;
                        changes.push(Change::ExclusionLifted { rule: rule.name.clone() });
                    }
                    let n = st.blocks.len() + st.block_hosts.len();
                    prune(&mut st.blocks, now, a.window_seconds);
                    prune_hosts(&mut st.block_hosts, now, a.window_seconds);
                    dirty |= n != st.blocks.len() + st.block_hosts.len();
                }
            }
            match &rule.slow_down {
                None => {
                    dirty |= st.slow_down.is_some() || !st.deferrals.is_empty();
                    st.slow_down = None;
                    st.deferrals.clear();
                }
                Some(s) => {
                    let n = st.deferrals.len();
                    prune(&mut st.deferrals, now, s.window_seconds);
                    dirty |= n != st.deferrals.len();
                    let interval = s.recovery_interval_seconds.max(1);
                    if let Some(sd) = &mut st.slow_down {
                        let mut stepped = false;
                        while sd.level > 0 && sd.quiet_since.saturating_add(interval) <= now {
                            sd.level -= 1;
                            sd.quiet_since += interval;
                            stepped = true;
                        }
                        if stepped {
                            dirty = true;
                            changes.push(Change::SlowDownStepped { rule: rule.name.clone(), level: sd.level });
                        }
                        if sd.level == 0 {
                            st.slow_down = None;
                        }
                    }
                }
            }
        }
        self.rules.retain(|_, st| !st.is_empty());
        self.dirty |= dirty;
        changes
    }

    pub fn is_excluded(&self, rule: &str) -> bool {
        self.rules.get(rule).is_some_and(|s| s.exclusion.is_some())
    }

    /// (level, max level) of the rule's slow-down, if engaged.
    pub fn slow_level(&self, rule: &str) -> Option<(u32, u32)> {
        self.rules.get(rule).and_then(|s| s.slow_down.as_ref()).map(|s| (s.level, s.max_level.max(1)))
    }

    /// Apply this instance's own exclusions and slow-downs to the decision
    /// the policy alone gave for `key`. Only answers that would send the
    /// mail from here change: a pause, a relay route, a cap or an
    /// out-of-rotation relay already keep it off this IP.
    /// `seq` spreads the peer choice; the slow fraction uses the rule's own count.
    pub fn overlay(&mut self, policy: &AgentPolicy, decided: Decision, key: &str, seq: u64) -> Decision {
        if !matches!(decided, Decision::NotFound(NotFoundWhy::Normal)) || self.rules.is_empty() {
            return decided;
        }
        let Some(domain) = key_domain(key) else {
            return decided;
        };
        let rule = policy.rule_for(&domain);
        if let Some(rule) = rule.filter(|r| self.is_excluded(&r.name)) {
            return to_peer(policy, rule, seq, PeerWhy::Excluded);
        }
        // Provider-wide: the domain goes to an MX host whose blocks excluded
        // this instance for some rule (one map lookup; no DNS here).
        if let Some(by) = self.mx.host_of(&domain).and_then(|h| self.excluded_by_host(policy, h)) {
            return to_peer(policy, by, seq, PeerWhy::ExcludedMx);
        }
        let Some(rule) = rule else {
            return decided;
        };
        let Some(t) = &rule.slow_transport else {
            return decided;
        };
        let Some(sd) = self.rules.get_mut(&rule.name).and_then(|s| s.slow_down.as_mut()) else {
            return decided;
        };
        let pick = sd.picks;
        sd.picks = sd.picks.wrapping_add(1);
        if pick % u64::from(sd.max_level.max(1)) < u64::from(sd.level) {
            return Decision::Slow { rule: rule.name.clone(), transport: t.clone() };
        }
        decided
    }

    /// The rule whose exclusion in force names MX host `host`.
    fn excluded_by_host<'p>(&self, policy: &'p AgentPolicy, host: &str) -> Option<&'p DomainRule> {
        let (name, _) = self
            .rules
            .iter()
            .find(|(_, st)| st.exclusion.as_ref().is_some_and(|e| e.mx_hosts.iter().any(|h| h == host)))?;
        policy.domains.iter().find(|r| &r.name == name)
    }

    /// The /status view: (exclusions, slow-downs), by rule name.
    pub fn status(&self, policy: Option<&AgentPolicy>) -> (Vec<ActiveExclusion>, Vec<ActiveSlowDown>) {
        let interval = |rule: &str| {
            policy
                .and_then(|p| p.domains.iter().find(|r| r.name == rule))
                .and_then(|r| r.slow_down.as_ref())
                .map(|s| s.recovery_interval_seconds.max(1))
        };
        let mut exclusions = vec![];
        let mut slow_downs = vec![];
        for (name, st) in &self.rules {
            if let Some(e) = &st.exclusion {
                let covered: Vec<&str> = self.mx.domains_of(&e.mx_hosts).collect();
                let mut reason = e.reason.clone();
                if !e.mx_hosts.is_empty() {
                    // The DomainPolicy status mirrors the reason: say there
                    // that the exclusion reaches past the rule's domains. No
                    // count in it: the status is written when it changes.
                    reason.push_str(&format!(
                        "; provider-wide: every domain known to go to MX {} leaves through peers",
                        e.mx_hosts.join(", ")
                    ));
                }
                exclusions.push(ActiveExclusion {
                    rule: name.clone(),
                    reason,
                    since: e.since,
                    until: e.until,
                    mx_hosts: e.mx_hosts.clone(),
                    mx_domain_count: covered.len() as u32,
                    mx_domains: covered.iter().take(mx::LISTED_DOMAINS).map(|d| d.to_string()).collect(),
                });
            }
            if let Some(s) = &st.slow_down {
                slow_downs.push(ActiveSlowDown {
                    rule: name.clone(),
                    level: s.level,
                    max_level: s.max_level,
                    reason: s.reason.clone(),
                    since: s.since,
                    next_recovery_at: interval(name).map(|i| s.quiet_since.saturating_add(i)),
                });
            }
        }
        (exclusions, slow_downs)
    }
}

/// Hand a lookup excluded by `rule` to a peer not excluded for it; with
/// none left, defer: sending from a blocked IP would only collect more
/// blocks. Peers that excluded themselves for the rule reach us through the
/// operator as `excluded_rules`; the routing model skips them.
fn to_peer(policy: &AgentPolicy, rule: &DomainRule, seq: u64, why: PeerWhy) -> Decision {
    match choose_peer(policy, Some(rule), seq) {
        Some(c) => Decision::Peer { rule: Some(rule.name.clone()), peer: c.peer.name.clone(), nexthop: c.nexthop, why },
        None => {
            Decision::Defer { rule: Some(rule.name.clone()), text: format!("4.7.1 no healthy peer: {}", why_text(why)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::policy::{AutoExclusionRule, InstancePolicy, SlowDownRule};
    use ResponseCategory::*;

    fn inst(name: &str, addr: &str) -> InstancePolicy {
        InstancePolicy { name: name.into(), address: addr.into(), weight: 1, ..Default::default() }
    }

    fn policy() -> AgentPolicy {
        AgentPolicy {
            version: 1,
            instance: "a".into(),
            instances: vec![inst("a", "127.0.0.1"), inst("b", "127.0.0.2"), inst("c", "127.0.0.3")],
            domains: vec![DomainRule {
                name: "big".into(),
                patterns: vec!["big.test".into(), ".big.test".into()],
                throttle_transport: Some("dp-big".into()),
                slow_transport: Some("dp-big-slow".into()),
                auto_exclusion: Some(AutoExclusionRule { hard_blocks: 3, window_seconds: 60, duration_seconds: 600 }),
                slow_down: Some(SlowDownRule {
                    deferrals: 2,
                    window_seconds: 30,
                    recovery_interval_seconds: 10,
                    levels: 4,
                }),
                ..Default::default()
            }],
            peer_port: 2526,
            ..Default::default()
        }
    }

    fn normal() -> Decision {
        Decision::NotFound(NotFoundWhy::Normal)
    }

    #[test]
    fn blocks_in_the_window_exclude_until_expiry_and_route_to_peers_not_excluded() {
        let p = policy();
        let rule = &p.domains[0];
        let mut a = Adaptive::default();
        assert_eq!(a.observe(rule, "big.test", None, IpBlock, 100), None);
        assert_eq!(a.observe(rule, "big.test", None, IpBlock, 130), None);
        // The first block left the window: still two in it.
        assert_eq!(a.observe(rule, "big.test", None, IpBlock, 161), None);
        // Other categories never count as blocks.
        assert_eq!(a.observe(rule, "big.test", None, UnknownUser, 162), None);
        let got = a.observe(rule, "mx.big.test", None, IpBlock, 170);
        assert_eq!(
            got,
            Some(Change::Excluded {
                rule: "big".into(),
                reason: "3 IP/reputation blocks from mx.big.test within 60s".into(),
                until: 770
            })
        );
        assert!(a.is_dirty());
        let mut p2 = p.clone();
        p2.instances[1].daily_cap = Some(50);
        assert!(matches!(a.overlay(&p2, normal(), "u@big.test", 0), Decision::Peer { ref peer, .. } if peer == "c"));
        p2.instances[1].daily_cap = None;
        p2.instances[1].excluded_rules = vec!["big".into()];
        for seq in 0..4 {
            match a.overlay(&p2, normal(), "u@big.test", seq) {
                Decision::Peer { peer, why: PeerWhy::Excluded, nexthop, .. } => {
                    assert_eq!(peer, "c");
                    assert_eq!(nexthop, "[127.0.0.3]:2526");
                }
                other => panic!("{other:?}"),
            }
        }
        // Other domains, pauses and caps are untouched.
        assert_eq!(a.overlay(&p, normal(), "u@other.test", 0), normal());
        let paused = Decision::Defer { rule: Some("big".into()), text: "4.7.1 paused".into() };
        assert_eq!(a.overlay(&p, paused.clone(), "u@big.test", 0), paused);
        // Every peer excluded too: defer, never send from the blocked IP.
        p2.instances[2].excluded_rules = vec!["big".into()];
        assert!(matches!(a.overlay(&p2, normal(), "u@big.test", 0), Decision::Defer { .. }));
        let (ex, _) = a.status(Some(&p));
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].since, ex[0].until), (170, 770));
        assert!(a.tick(&p, 769).is_empty());
        assert_eq!(a.tick(&p, 770), vec![Change::ExclusionLifted { rule: "big".into() }]);
        assert_eq!(a.overlay(&p, normal(), "u@big.test", 0), normal());
        assert!(a.status(Some(&p)).0.is_empty());
    }

    #[test]
    fn blocks_from_an_mx_host_exclude_every_domain_known_to_go_there_until_expiry() {
        let mut p = policy();
        p.domains.push(DomainRule {
            name: "other".into(),
            patterns: vec!["other.test".into()],
            throttle_transport: Some("dp-other".into()),
            ..Default::default()
        });
        let big = p.domains[0].clone();
        let mut a = Adaptive::default();
        for (d, h) in [
            ("big.test", "MX.Prov.test"),
            ("other.test", "mx.prov.test"),
            ("free.test", "mx.prov.test."),
            ("elsewhere.test", "mx.else.test"),
        ] {
            a.learn_mx(d, h, 10);
        }
        assert!(a.is_dirty());
        // A block for a domain in no rule counts for the rule whose
        // domains share its MX host; none for a host no such rule uses.
        assert_eq!(a.provider_rule(&p, "mx.prov.test").map(|r| r.name.as_str()), Some("big"));
        assert_eq!(a.provider_rule(&p, "mx.else.test"), None);
        a.observe(&big, "free.test", Some("mx.prov.test"), IpBlock, 100);
        a.observe(&big, "big.test", Some("mx.prov.test"), IpBlock, 101);
        // Before the threshold nothing moves.
        assert_eq!(a.overlay(&p, normal(), "u@other.test", 0), normal());
        let got = a.observe(&big, "big.test", Some("MX.PROV.TEST"), IpBlock, 102);
        assert!(matches!(got, Some(Change::Excluded { ref rule, until: 702, .. }) if rule == "big"), "{got:?}");
        for key in ["u@big.test", "u@other.test", "u@FREE.test"] {
            match a.overlay(&p, normal(), key, 1) {
                Decision::Peer { rule, why, .. } => {
                    assert_eq!(rule.as_deref(), Some("big"), "{key}");
                    let want = if key == "u@big.test" { PeerWhy::Excluded } else { PeerWhy::ExcludedMx };
                    assert_eq!(why, want, "{key}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        // Another provider, and a domain never sent to (MX unknown), stay.
        assert_eq!(a.overlay(&p, normal(), "u@elsewhere.test", 0), normal());
        assert_eq!(a.overlay(&p, normal(), "u@new.test", 0), normal());
        // A domain learnt during the exclusion is covered from then on.
        a.learn_mx("new.test", "mx.prov.test", 110);
        assert!(matches!(a.overlay(&p, normal(), "u@new.test", 0), Decision::Peer { why: PeerWhy::ExcludedMx, .. }));
        // No peer left: defer, never send from the blocked IP.
        let mut alone = p.clone();
        alone.instances.truncate(1);
        match a.overlay(&alone, normal(), "u@free.test", 0) {
            Decision::Defer { text, .. } => assert!(text.contains("MX host"), "{text}"),
            other => panic!("{other:?}"),
        }
        let (ex, _) = a.status(Some(&p));
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].mx_hosts, ["mx.prov.test"]);
        assert_eq!(ex[0].mx_domain_count, 4);
        assert_eq!(ex[0].mx_domains, ["big.test", "free.test", "new.test", "other.test"]);
        assert!(
            ex[0].reason.starts_with("3 IP/reputation blocks from big.test within 60s; provider-wide"),
            "{}",
            ex[0].reason
        );
        assert!(
            ex[0].reason.ends_with("every domain known to go to MX mx.prov.test leaves through peers"),
            "{}",
            ex[0].reason
        );
        // The expiry lifts the provider-wide part with it.
        assert_eq!(a.tick(&p, 702), vec![Change::ExclusionLifted { rule: "big".into() }]);
        for key in ["u@big.test", "u@other.test", "u@free.test", "u@new.test"] {
            assert_eq!(a.overlay(&p, normal(), key, 0), normal(), "{key}");
        }
        assert!(a.status(Some(&p)).0.is_empty());
    }

    #[test]
    fn slow_down_engages_at_the_top_and_recovers_one_level_per_quiet_interval() {
        let p = policy();
        let rule = &p.domains[0];
        let mut a = Adaptive::default();
        assert_eq!(a.observe(rule, "big.test", None, RateLimit, 100), None);
        assert!(matches!(
            a.observe(rule, "big.test", None, RateLimit, 101),
            Some(Change::SlowDownEngaged { level: 4, .. })
        ));
        // Exact fractions even when the lookup sequence numbers share a
        // factor with the level count (here: every second one).
        let slow_share = |a: &mut Adaptive| {
            (0..400).filter(|s| matches!(a.overlay(&p, normal(), "x@big.test", s * 2), Decision::Slow { .. })).count()
        };
        assert_eq!(slow_share(&mut a), 400);
        // A deferral during the slow-down restarts the quiet period.
        assert_eq!(a.observe(rule, "big.test", None, RateLimit, 105), None);
        assert!(a.tick(&p, 114).is_empty());
        assert_eq!(a.status(Some(&p)).1[0].next_recovery_at, Some(115));
        assert_eq!(a.tick(&p, 115), vec![Change::SlowDownStepped { rule: "big".into(), level: 3 }]);
        assert_eq!(slow_share(&mut a), 300);
        assert_eq!(a.tick(&p, 125), vec![Change::SlowDownStepped { rule: "big".into(), level: 2 }]);
        assert_eq!(slow_share(&mut a), 200);
        // A new burst (with the deferral at 105, two in the window)
        // re-engages at the top.
        assert!(matches!(
            a.observe(rule, "big.test", None, RateLimit, 126),
            Some(Change::SlowDownEngaged { level: 4, .. })
        ));
        let (_, sd) = a.status(Some(&p));
        assert_eq!((sd[0].level, sd[0].max_level, sd[0].since), (4, 4, 101));
        // A late tick catches up every step that was due, then forgets it.
        assert_eq!(a.tick(&p, 126 + 45), vec![Change::SlowDownStepped { rule: "big".into(), level: 0 }]);
        assert_eq!(slow_share(&mut a), 0);
        assert!(a.status(Some(&p)).1.is_empty());
    }

    #[test]
    fn peer_answers_and_rules_without_the_feature_do_not_count() {
        let mut p = policy();
        p.domains[0].auto_exclusion = None;
        let mut a = Adaptive::default();
        for t in 0..10 {
            assert_eq!(a.observe(&p.domains[0], "big.test", None, IpBlock, t), None);
        }
        assert!(!a.is_excluded("big"));
        // A rule that loses its slow-down (or disappears) is forgotten.
        let full = policy();
        a.observe(&full.domains[0], "big.test", None, RateLimit, 1);
        a.observe(&full.domains[0], "big.test", None, RateLimit, 2);
        assert!(a.slow_level("big").is_some());
        p.domains[0].slow_down = None;
        a.tick(&p, 3);
        assert!(a.slow_level("big").is_none());
        assert!(a.rules.is_empty());
    }

    #[test]
    fn state_persists_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy();
        let mut a = Adaptive::load(dir.path()).unwrap();
        for t in 0..3 {
            a.observe(&p.domains[0], "big.test", None, IpBlock, t);
        }
        a.observe(&p.domains[0], "big.test", None, RateLimit, 5);
        a.observe(&p.domains[0], "big.test", None, RateLimit, 6);
        a.save().unwrap();
        assert!(!a.is_dirty());
        a.learn_mx("big.test", "mx.big.test", 7);
        a.save().unwrap();
        let back = Adaptive::load(dir.path()).unwrap();
        assert!(back.is_excluded("big"));
        assert_eq!(back.mx_of("big.test"), Some("mx.big.test"));
        assert_eq!(back.slow_level("big"), Some((4, 4)));
        assert_eq!(back.status(Some(&p)), a.status(Some(&p)));
        std::fs::write(dir.path().join(FILE), b"{nope").unwrap();
        assert!(!Adaptive::load(dir.path()).unwrap().is_excluded("big"));
    }
}
