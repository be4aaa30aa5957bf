//! The transport decision: a pure function of the policy, this instance's
//! counters and the looked-up key.
//!
//! Postfix consults the agent's socketmap first in `transport_maps`; the
//! agent answers only the dynamic cases and says `NOTFOUND` otherwise so the
//! static `hash:transport` map that follows decides (see the module doc of
//! `sendfleet_render::policy`).
//!
//! Keys: Postfix registers socketmap as a *pattern* table (dict_sockmap.c
//! sets `DICT_FLAG_PATTERN`), and trivial-rewrite's transport lookup asks
//! pattern tables only for the full recipient address (`user@domain`, then
//! the address without its extension) and the wildcard `*` — never the bare
//! domain or `.parent` probes (checked on Postfix 3.7: only `*` and
//! addresses arrive). So the decision is made on the domain part of the key;
//! bare domains are accepted too (for `postmap -q` and tests).
//!
//! Only the *dynamic* choice is made here (paused -> `retry:`; out of
//! rotation, excluded or over a cap -> a peer; slowed -> the slow
//! transport), within what the routing model lets apply to the rule's route
//! (`routing::relay_scope`: a relay route obeys pause, rotation and
//! exclusions but no warm-up cap; a hand-off to another pool obeys nothing). Every name and nexthop it answers — the slow transport, the
//! peer and its `[address]:port` — comes from the routing model
//! (`sendfleet_render::routing`, via the policy and `routing::choose_peer`).
//! This module must never do I/O, read a clock, or keep or return the local part.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sendfleet_render::contract::PEER_RELAY_TRANSPORT;
use sendfleet_render::policy::{pattern_matches, AgentPolicy, DomainRule, InstancePolicy, WarmupShare};
/// Weighted peer choice: the routing model's (kept here for existing callers).
pub use sendfleet_render::routing::pick_weighted;
use sendfleet_render::routing::{choose_peer, relay_scope, RelayScope};

use super::codec::Reply;
use crate::agent::warmup::CapSource;

/// What the agent decided for one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours to decide: the static map (or default transport) routes it.
    NotFound(NotFoundWhy),
    /// Defer with a DSN status and reason (the `retry:` transport).
    Defer { rule: Option<String>, text: String },
    /// Relay to a peer instance's peer listener.
    Peer { rule: Option<String>, peer: String, nexthop: String, why: PeerWhy },
    /// Use the rule's slowed transport.
    Slow { rule: String, transport: String },
}

/// Why a lookup is left to the static map (a metric label each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFoundWhy {
    /// The wildcard `*`, a `.parent` probe, or a key with an empty domain.
    NoDomain,
    /// The rule routes through a relay, which the static map carries.
    RelayRule,
    /// This instance is not in its own policy (nothing dynamic applies).
    UnknownInstance,
    /// Nothing dynamic applies.
    Normal,
}

/// Why mail leaves through a peer (a metric label each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerWhy {
    OutOfRotation,
    Excluded,
    /// The domain goes to an MX host whose blocks excluded this instance
    /// (for another rule's domains: the provider blocks the IP).
    ExcludedMx,
    DailyCap,
    ProviderShare,
}

impl PeerWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerWhy::OutOfRotation => "OutOfRotation",
            PeerWhy::Excluded => "Excluded",
            PeerWhy::ExcludedMx => "ExcludedMx",
            PeerWhy::DailyCap => "DailyCap",
            PeerWhy::ProviderShare => "ProviderShare",
        }
    }
}

impl Decision {
    /// The socketmap reply Postfix receives.
    pub fn reply(&self) -> Reply {
        match self {
            Decision::NotFound(_) => Reply::NotFound,
            Decision::Defer { text, .. } => Reply::Ok(format!("retry:{text}")),
            Decision::Peer { nexthop, .. } => Reply::Ok(format!("{PEER_RELAY_TRANSPORT}:{nexthop}")),
            Decision::Slow { transport, .. } => Reply::Ok(format!("{transport}:")),
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::NotFound(_) => "NotFound",
            Decision::Defer { .. } => "Defer",
            Decision::Peer { .. } => "Peer",
            Decision::Slow { .. } => "Slow",
        }
    }
}

/// The counters a decision needs (sent today, in the policy's day).
#[derive(Clone, Debug, Default)]
pub struct SentToday<'a> {
    pub total: u64,
    /// Per warm-up share key ([`share_for`]).
    pub by_share: Option<&'a BTreeMap<String, u64>>,
    /// Lookups answered "send from here" whose outcome is not logged yet:
    /// they count against the cap like sent mail (see `agent::warmup`).
    pub reserved: u64,
    pub reserved_by_share: Option<&'a BTreeMap<String, u64>>,
    /// Where today's cap comes from (the agent's warm-up ledger, or the
    /// policy's `daily_cap` when the policy carries no schedule).
    pub cap: CapSource,
}

impl SentToday<'_> {
    fn share(&self, key: &str) -> u64 {
        let get = |m: Option<&BTreeMap<String, u64>>| m.and_then(|m| m.get(key)).copied().unwrap_or(0);
        get(self.by_share) + get(self.reserved_by_share)
    }
}

/// The recipient domain a socketmap key decides on (lowercase, no trailing
/// dot), or `None` for `*`, `.parent` probes, address literals and empty domains.
pub fn key_domain(key: &str) -> Option<Cow<'_, str>> {
    let domain = key.rsplit_once('@').map_or(key, |(_, d)| d);
    if domain.is_empty() || domain.starts_with('.') || domain == "*" || domain.starts_with('[') {
        return None;
    }
    if domain.bytes().any(|b| b.is_ascii_uppercase()) || domain.ends_with('.') {
        return Some(Cow::Owned(domain.trim_end_matches('.').to_ascii_lowercase()));
    }
    Some(Cow::Borrowed(domain))
}

/// The warm-up share a domain falls under (first match in plan order) and
/// its counter key (`share:<patterns joined by ','>`).
pub fn share_for<'p>(policy: &'p AgentPolicy, domain: &str) -> Option<(String, &'p WarmupShare)> {
    let w = policy.warmup.as_ref()?;
    let s = w.shares.iter().find(|s| s.patterns.iter().any(|p| pattern_matches(p, domain)))?;
    Some((format!("share:{}", s.patterns.join(",")), s))
}

/// Decide the answer for socketmap key `key`. `seq` spreads peer choice
/// (any counter that changes per lookup).
pub fn decide(policy: &AgentPolicy, sent: &SentToday<'_>, key: &str, seq: u64) -> Decision {
    let Some(domain) = key_domain(key) else {
        return Decision::NotFound(NotFoundWhy::NoDomain);
    };
    let domain = domain.as_ref();
    let rule = policy.rule_for(domain);
    // Which decisions apply to the rule's route: the routing model decides.
    let scope = rule.map_or(RelayScope::Mx, relay_scope);
    if scope == RelayScope::HandOff {
        return Decision::NotFound(NotFoundWhy::RelayRule);
    }
    if let Some(r) = rule {
        if let Some(reason) = &r.paused {
            return Decision::Defer {
                rule: Some(r.name.clone()),
                text: format!("4.7.1 paused by policy {}: {}", r.name, sanitize(reason)),
            };
        }
    }
    let Some(me) = policy.this_instance() else {
        return Decision::NotFound(NotFoundWhy::UnknownInstance);
    };
    let share = share_for(policy, domain);
    if let Some(why) = needs_peer(me, rule, scope, share, sent) {
        let rule_name = rule.map(|r| r.name.clone());
        // Which peer, and its nexthop: the routing model decides.
        return match choose_peer(policy, rule, seq) {
            Some(c) => Decision::Peer { rule: rule_name, peer: c.peer.name.clone(), nexthop: c.nexthop, why },
            None => Decision::Defer { rule: rule_name, text: format!("4.7.1 no healthy peer: {}", why_text(why)) },
        };
    }
    if scope == RelayScope::Relay {
        // Sent from here on the relay route the static map carries (no
        // slow-down overlay: the slow transport has no relay nexthop).
        return Decision::NotFound(NotFoundWhy::RelayRule);
    }
    // A slow-down is the agent's own reaction (agent::adaptive overlays it).
    Decision::NotFound(NotFoundWhy::Normal)
}

fn needs_peer(
    me: &InstancePolicy,
    rule: Option<&DomainRule>,
    scope: RelayScope,
    share: Option<(String, &WarmupShare)>,
    sent: &SentToday<'_>,
) -> Option<PeerWhy> {
    if me.weight == 0 {
        return Some(PeerWhy::OutOfRotation);
    }
    if let Some(r) = rule {
        if me.excluded_rules.contains(&r.name) {
            return Some(PeerWhy::Excluded);
        }
    }
    if scope == RelayScope::Relay {
        // Warm-up caps protect the IP at the MX hosts; relayed mail never
        // reaches them from this IP (routing::RelayScope).
        return None;
    }
    let cap = match sent.cap {
        CapSource::Policy => me.daily_cap,
        CapSource::Ledger(cap) => cap,
    };
    if let Some(cap) = cap {
        if sent.total + sent.reserved >= cap {
            return Some(PeerWhy::DailyCap);
        }
        if let Some((key, s)) = share {
            // Floor: a share never rounds up past the cap it is part of.
            let limit = cap.saturating_mul(u64::from(s.max_percent.min(100))) / 100;
            if sent.share(&key) >= limit {
                return Some(PeerWhy::ProviderShare);
            }
        }
    }
    None
}

/// The reason a `retry:` answer gives when no peer can take the mail.
pub fn why_text(why: PeerWhy) -> &'static str {
    match why {
        PeerWhy::OutOfRotation => "this instance is out of rotation",
        PeerWhy::Excluded => "this instance is excluded for the domain",
        PeerWhy::ExcludedMx => "this instance is excluded by the domain's MX host",
        PeerWhy::DailyCap => "this instance reached its daily cap",
        PeerWhy::ProviderShare => "this instance reached the provider's share of its cap",
    }
}

/// Reasons go into a Postfix transport nexthop: printable ASCII only.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn inst(name: &str, addr: &str, weight: u32) -> InstancePolicy {
        InstancePolicy {
            name: name.into(),
            address: addr.into(),
            helo_name: format!("{name}.example.net"),
            weight,
            ..Default::default()
        }
    }

    fn rule(name: &str, pats: &[&str]) -> DomainRule {
        DomainRule { name: name.into(), patterns: pats.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn policy() -> AgentPolicy {
        AgentPolicy {
            version: 1,
            pool: "ns/pool".into(),
            instance: "a".into(),
            instances: vec![inst("a", "127.0.1.1", 100), inst("b", "127.0.1.2", 100), inst("c", "::1", 100)],
            domains: vec![rule("gmail", &["gmail.com", ".gmail.com"]), rule("yahoo", &["yahoo.com"])],
            peer_port: 2526,
            ..Default::default()
        }
    }

    fn d(p: &AgentPolicy, key: &str) -> Decision {
        decide(p, &SentToday::default(), key, 0)
    }

    #[test]
    fn addresses_decide_by_domain_and_wildcards_are_not_found() {
        let mut p = policy();
        assert_eq!(d(&p, "*"), Decision::NotFound(NotFoundWhy::NoDomain));
        assert_eq!(d(&p, ".gmail.com"), Decision::NotFound(NotFoundWhy::NoDomain));
        assert_eq!(d(&p, ""), Decision::NotFound(NotFoundWhy::NoDomain));
        assert_eq!(d(&p, "user@"), Decision::NotFound(NotFoundWhy::NoDomain));
        assert_eq!(d(&p, "user@[192.0.2.1]"), Decision::NotFound(NotFoundWhy::NoDomain));
        p.instances[0].excluded_rules = vec!["gmail".into()];
        assert!(matches!(d(&p, "User+tag@Mail.GMAIL.com"), Decision::Peer { .. }));
        assert!(matches!(d(&p, "\"odd@local\"@gmail.com"), Decision::Peer { .. }));
        p.instances[0].excluded_rules.clear();
        assert_eq!(d(&p, "gmail.com"), Decision::NotFound(NotFoundWhy::Normal));
        assert_eq!(d(&p, "other.org"), Decision::NotFound(NotFoundWhy::Normal));
    }

    #[test]
    fn paused_rule_defers_with_reason_and_beats_everything() {
        let mut p = policy();
        p.domains[0].paused = Some("provider asked\nus".into());
        p.instances[0].weight = 0;
        let got = d(&p, "MX.Gmail.com.");
        assert_eq!(got.reply(), Reply::Ok("retry:4.7.1 paused by policy gmail: provider asked_us".into()));
    }

    #[test]
    fn hand_offs_to_another_pool_are_left_to_the_static_map() {
        let mut p = policy();
        p.domains[1].relay = Some("[bulk.ns.svc.cluster.local]:587".into());
        p.domains[1].hand_off = true;
        p.domains[1].paused = Some("held".into());
        p.instances[0].excluded_rules = vec!["yahoo".into()];
        p.instances[0].weight = 0;
        assert_eq!(d(&p, "yahoo.com"), Decision::NotFound(NotFoundWhy::RelayRule));
    }

    #[test]
    fn relay_routes_obey_rotation_exclusion_and_pause_but_no_cap() {
        let mut p = policy();
        p.domains[1].relay = Some("[relay.example]:25".into());
        // In rotation, not excluded: sent from here on the static relay route.
        assert_eq!(d(&p, "yahoo.com"), Decision::NotFound(NotFoundWhy::RelayRule));
        // Over the warm-up cap and the provider share: still from here.
        p.instances[0].daily_cap = Some(10);
        p.warmup = Some(sendfleet_render::policy::WarmupPolicy {
            shares: vec![WarmupShare { patterns: vec!["yahoo.com".into()], max_percent: 10 }],
            ..Default::default()
        });
        let mut by_share = BTreeMap::new();
        by_share.insert("share:yahoo.com".to_string(), 5);
        let sent = SentToday { total: 10, by_share: Some(&by_share), reserved: 3, ..Default::default() };
        assert_eq!(decide(&p, &sent, "yahoo.com", 0), Decision::NotFound(NotFoundWhy::RelayRule));
        // ... while MX mail is capped.
        assert!(matches!(decide(&p, &sent, "gmail.com", 0), Decision::Peer { why: PeerWhy::DailyCap, .. }));
        // Excluded for the rule: to a peer not excluded for it.
        p.instances[0].excluded_rules = vec!["yahoo".into()];
        p.instances[1].excluded_rules = vec!["yahoo".into()];
        for seq in 0..4 {
            let got = decide(&p, &sent, "yahoo.com", seq);
            assert!(matches!(&got, Decision::Peer { peer, why: PeerWhy::Excluded, .. } if peer == "c"), "{got:?}");
            assert_eq!(got.reply(), Reply::Ok("peer-relay:[::1]:2526".into()));
        }
        // Out of rotation: to a peer in rotation; none left: deferred.
        p.instances[0].excluded_rules.clear();
        p.instances[0].weight = 0;
        assert!(matches!(d(&p, "yahoo.com"), Decision::Peer { why: PeerWhy::OutOfRotation, .. }));
        p.instances[1].weight = 0;
        p.instances[2].weight = 0;
        assert_eq!(
            d(&p, "yahoo.com").reply(),
            Reply::Ok("retry:4.7.1 no healthy peer: this instance is out of rotation".into())
        );
        // A pause holds relay-routed mail too.
        p.domains[1].paused = Some("partner maintenance".into());
        assert_eq!(
            d(&p, "yahoo.com").reply(),
            Reply::Ok("retry:4.7.1 paused by policy yahoo: partner maintenance".into())
        );
    }

    #[test]
    fn excluded_rule_relays_to_a_peer_not_excluded_itself() {
        let mut p = policy();
        p.instances[0].excluded_rules = vec!["gmail".into()];
        p.instances[1].excluded_rules = vec!["gmail".into()];
        for seq in 0..5 {
            let got = decide(&p, &SentToday::default(), "gmail.com", seq);
            assert_eq!(got.reply(), Reply::Ok("peer-relay:[::1]:2526".into()), "seq {seq}");
        }
        // Other domains are unaffected.
        assert_eq!(d(&p, "yahoo.com"), Decision::NotFound(NotFoundWhy::Normal));
    }

    #[test]
    fn out_of_rotation_relays_everything_and_spreads_by_weight() {
        let mut p = policy();
        p.instances[0].weight = 0;
        p.instances[2].weight = 300;
        let mut to_b = 0;
        for seq in 0..400 {
            match decide(&p, &SentToday::default(), "anything.org", seq) {
                Decision::Peer { peer, why, .. } => {
                    assert_eq!(why, PeerWhy::OutOfRotation);
                    if peer == "b" {
                        to_b += 1;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(to_b, 100);
    }

    #[test]
    fn no_peer_left_defers() {
        let mut p = policy();
        p.instances[0].weight = 0;
        p.instances[1].weight = 0;
        p.instances[2].weight = 0;
        assert_eq!(
            d(&p, "x.org").reply(),
            Reply::Ok("retry:4.7.1 no healthy peer: this instance is out of rotation".into())
        );
    }

    #[test]
    fn daily_cap_and_provider_share() {
        let mut p = policy();
        p.instances[0].daily_cap = Some(50);
        p.warmup = Some(sendfleet_render::policy::WarmupPolicy {
            plan: "w".into(),
            time_zone: "UTC".into(),
            shares: vec![WarmupShare { patterns: vec!["gmail.com".into(), ".gmail.com".into()], max_percent: 30 }],
            ..Default::default()
        });
        let key = share_for(&p, "mx.gmail.com").unwrap().0;
        assert_eq!(key, "share:gmail.com,.gmail.com");
        let mut by_share = BTreeMap::new();
        by_share.insert(key.clone(), 14);
        let sent = SentToday { total: 49, by_share: Some(&by_share), ..Default::default() };
        assert_eq!(decide(&p, &sent, "gmail.com", 0), Decision::NotFound(NotFoundWhy::Normal));
        by_share.insert(key.clone(), 15);
        let sent = SentToday { total: 49, by_share: Some(&by_share), ..Default::default() };
        assert!(matches!(decide(&p, &sent, "gmail.com", 0), Decision::Peer { why: PeerWhy::ProviderShare, .. }));
        assert_eq!(decide(&p, &sent, "yahoo.com", 0), Decision::NotFound(NotFoundWhy::Normal));
        let sent = SentToday { total: 50, by_share: Some(&by_share), ..Default::default() };
        assert!(matches!(decide(&p, &sent, "yahoo.com", 0), Decision::Peer { why: PeerWhy::DailyCap, .. }));

        // Reservations count like sent mail, per share too.
        let mut reserved_by_share = BTreeMap::new();
        by_share.insert(key.clone(), 10);
        reserved_by_share.insert(key, 5);
        let sent = SentToday {
            total: 40,
            by_share: Some(&by_share),
            reserved: 9,
            reserved_by_share: Some(&reserved_by_share),
            ..Default::default()
        };
        assert!(matches!(decide(&p, &sent, "gmail.com", 0), Decision::Peer { why: PeerWhy::ProviderShare, .. }));
        assert_eq!(decide(&p, &sent, "yahoo.com", 0), Decision::NotFound(NotFoundWhy::Normal));
        let sent = SentToday { reserved: 10, ..sent };
        assert!(matches!(decide(&p, &sent, "yahoo.com", 0), Decision::Peer { why: PeerWhy::DailyCap, .. }));

        // The agent's ledger overrides the policy's cap: warm (None) caps nothing.
        let sent = SentToday { cap: CapSource::Ledger(None), ..sent };
        assert_eq!(decide(&p, &sent, "yahoo.com", 0), Decision::NotFound(NotFoundWhy::Normal));
        let sent = SentToday { total: 0, reserved: 0, cap: CapSource::Ledger(Some(0)), ..sent };
        assert!(matches!(decide(&p, &sent, "yahoo.com", 0), Decision::Peer { why: PeerWhy::DailyCap, .. }));
    }

    #[test]
    fn warm_peers_are_preferred_over_warming_ones() {
        let mut p = policy();
        p.instances[0].weight = 0;
        p.instances[1].daily_cap = Some(50);
        for seq in 0..10 {
            assert_eq!(
                decide(&p, &SentToday::default(), "x.org", seq).reply(),
                Reply::Ok("peer-relay:[::1]:2526".into())
            );
        }
        // Only warming peers left: they are used rather than deferring.
        p.instances[2].daily_cap = Some(50);
        let peers: BTreeSet<String> = (0..200)
            .map(|seq| match decide(&p, &SentToday::default(), "x.org", seq) {
                Decision::Peer { peer, .. } => peer,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn unknown_instance_is_left_alone() {
        let mut p = policy();
        p.instance = "zz".into();
        assert_eq!(d(&p, "gmail.com"), Decision::NotFound(NotFoundWhy::UnknownInstance));
    }
}
