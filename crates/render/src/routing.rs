//! The routing model: for every DomainPolicy a pool selects, where its mail
//! goes and how — transport, nexthop, TLS policy keys — and how an instance
//! picks the peer that takes mail it will not send itself.
//!
//! It is the one place these are decided. Both outputs are derived from it:
//!
//! - the Postfix files ([`crate::render`]): the `transport` map
//!   ([`PolicyRoute::transport_entry`]), the master.cf transports
//!   ([`PolicyRoute::throttle`], [`PolicyRoute::slow`]), the `tls_policy` map
//!   ([`RoutingModel::tls_entries`]) and the spam route's `FILTER` nexthop
//!   ([`pool_nexthop`]);
//! - the agent's `policy.json` ([`PolicyRoute::domain_rule`]), from which the
//!   agent answers the *dynamic* cases only (pause, out of rotation,
//!   exclusion, cap, slow-down) with the names and nexthops made here, and
//!   picks peers with [`choose_peer`].
//!
//! Precedence: a domain pattern belongs to the first policy (by name) that
//! claims it; later claims are conflicts ([`RoutingModel::conflicts`]).
//!
//! What a policy gets:
//!
//! | route              | transport map value        | own transport | TLS keys            |
//! |--------------------|----------------------------|---------------|---------------------|
//! | none, no throttle  | none (Postfix's `smtp`)    | no            | its domain patterns |
//! | none, throttled    | `dp-<name>:`               | `dp-<name>`   | its domain patterns |
//! | `relayHost`        | `<smtp or dp-<name>>:[host]:port` | as above | the relay nexthop  |
//! | `pool`             | `smtp:[<pool svc>]:port`   | no            | none                |
//!
//! TLS keys follow Postfix: `smtp_tls_policy_maps` is looked up by the
//! *next hop* — the recipient domain when Postfix routes by MX, else the
//! verbatim nexthop of the transport entry (brackets and port included). So
//! a relay route's requirement is keyed by the same string the transport
//! entry carries ([`PolicyRoute::nexthop`]); keys on its recipient domains
//! would never be read. A hand-off to another pool gets no key: the leg is
//! the pools' own submission listener (no STARTTLS), and the target pool's
//! policies decide the leg that leaves it. The target accepts the hand-off
//! because its relay permission (`mynetworks`) names the egress addresses of
//! exactly the pools that route to it ([`hand_off_sources`]), one host each.
//!
//! The peer leg (an instance hands mail to a peer's peer listener,
//! [`peer_nexthop`]) gets no key either: the DomainPolicy's requirement is
//! about the receiver, and it is applied where the mail leaves the pool —
//! the peer sends peer-relayed mail with `content_filter = smtp:`, whose
//! next hop is the recipient domain, looked up in the same rendered
//! `tls_policy` table — except for relay routes: the peer listener's
//! recipient table ([`RoutingModel::peer_filter_entries`]) sends those on
//! their relay route, so a relay route's TLS key applies on the peer too.
//! Which dynamic decisions apply to a rule's mail (relay routes obey
//! rotation and exclusions, not warm-up caps) is [`relay_scope`]'s.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{defaults, DomainPolicy, DomainTls, Route, SendingPool, Throttle};
use crate::contract::PEER_RELAY_TRANSPORT;
use crate::policy::{AgentPolicy, DomainRule, InstancePolicy};
use crate::selector;
use crate::validate::{self, ValidDomainPolicy, ValidationError};

/// Postfix's default delivery transport (to the recipient domain's MX).
pub const SMTP_TRANSPORT: &str = "smtp";

/// `*.example.com` -> `.example.com` (Postfix table form for subdomains).
pub fn table_pattern(p: &str) -> String {
    match p.strip_prefix('*') {
        Some(rest) => rest.to_string(),
        None => p.to_string(),
    }
}

/// The master.cf transport that throttles a DomainPolicy's domains.
pub fn throttle_transport(policy: &str) -> String {
    format!("dp-{policy}")
}

/// Its slowed variant, used while an adaptive slow-down is engaged.
pub fn slow_transport(policy: &str) -> String {
    format!("dp-{policy}-slow")
}

/// DNS name of a pool's submission Service.
pub fn submission_host(pool: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{pool}.{namespace}.svc.{cluster_domain}")
}

/// An SMTP nexthop: `[host]:port` connects to the host itself (required for
/// an IP address, IPv6 included: `[2001:db8::1]:25`); with `use_mx`,
/// `host:port` delivers to the host name's MX records.
pub fn nexthop(host: &str, port: u16, use_mx: bool) -> String {
    if use_mx {
        format!("{host}:{port}")
    } else {
        format!("[{host}]:{port}")
    }
}

/// The nexthop of a peer instance's peer listener: what the agent answers
/// (`peer-relay:<this>`).
pub fn peer_nexthop(address: &str, peer_port: u16) -> String {
    nexthop(address, peer_port, false)
}

/// The nexthop of another pool's submission Service (`route.pool`,
/// `spamRoute`).
pub fn pool_nexthop(pool: &str, namespace: &str, cluster_domain: &str, port: u16) -> String {
    nexthop(&submission_host(pool, namespace, cluster_domain), port, false)
}

/// Whether a policy gets its own master.cf transport `dp-<name>`: it has a
/// throttle, or automatic exclusion (only its mail may have IP blocks
/// softened to 4xx by the delivery status filter, so it needs a transport
/// of its own even without a throttle). A hand-off to another pool never
/// does: the mail leaves through plain `smtp` to our own listener.
pub fn own_transport(p: &ValidDomainPolicy<'_>) -> Option<OwnTransport> {
    if p.spec.route.as_ref().is_some_and(|r| r.pool.is_some()) {
        return None;
    }
    let throttled = p.spec.throttle.clone().filter(|t| *t != Throttle::default());
    let status_filter = p.spec.auto_exclusion.is_some();
    (throttled.is_some() || status_filter).then(|| OwnTransport {
        name: throttle_transport(p.name),
        throttle: throttled.unwrap_or_default(),
        status_filter,
    })
}

/// The TLS policy table value for a requirement (`verify protocols=>=TLSv1.2`).
pub fn tls_value(t: &DomainTls) -> String {
    let mut v = t.level.as_postfix().to_string();
    if let Some(proto) = t.minimum_protocol {
        v.push_str(" protocols=");
        v.push_str(proto.as_postfix());
    }
    v
}

/// Where a policy's mail goes after this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The recipient domain's MX hosts (Postfix's default routing).
    Mx,
    /// `route.relayHost`: this nexthop.
    Relay { nexthop: String },
    /// `route.pool`: the named pool's submission Service at this nexthop.
    Pool { pool: String, nexthop: String },
}

/// A policy's own master.cf transport (or its slow variant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnTransport {
    /// `dp-<policy>` or `dp-<policy>-slow`.
    pub name: String,
    pub throttle: Throttle,
    /// The delivery status filter softens IP blocks to 4xx (autoExclusion).
    pub status_filter: bool,
}

/// One DomainPolicy's route, as the model decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRoute {
    pub policy: String,
    /// The patterns this policy owns, in Postfix table form.
    pub patterns: Vec<String>,
    /// Its own transport, if it gets one ([`own_transport`]).
    pub throttle: Option<OwnTransport>,
    /// The slow variant, if the policy enables slow-down.
    pub slow: Option<OwnTransport>,
    pub destination: Destination,
    /// The TLS policy value for its leg, if it requires TLS.
    pub tls: Option<String>,
}

impl PolicyRoute {
    /// The transport the mail leaves this instance through, steady state.
    pub fn transport(&self) -> &str {
        self.throttle.as_ref().map_or(SMTP_TRANSPORT, |t| t.name.as_str())
    }

    /// The nexthop the transport entry names, if not the recipient domain.
    pub fn nexthop(&self) -> Option<&str> {
        match &self.destination {
            Destination::Mx => None,
            Destination::Relay { nexthop } | Destination::Pool { nexthop, .. } => Some(nexthop),
        }
    }

    /// The static `transport` map value for each of the patterns, or `None`
    /// when Postfix's default (`smtp`, by MX) is the route.
    pub fn transport_entry(&self) -> Option<String> {
        match (self.nexthop(), &self.throttle) {
            (Some(n), _) => Some(format!("{}:{n}", self.transport())),
            (None, Some(t)) => Some(format!("{}:", t.name)),
            (None, None) => None,
        }
    }

    /// The `tls_policy` keys of its requirement: where Postfix looks it up.
    pub fn tls_keys(&self) -> Vec<String> {
        match &self.destination {
            Destination::Mx => self.patterns.clone(),
            Destination::Relay { nexthop } => vec![nexthop.clone()],
            Destination::Pool { .. } => vec![],
        }
    }

    /// The routing part of the agent's rule for this policy (the adaptive
    /// and pause parts are filled by the caller from the validated policy).
    pub fn domain_rule(&self) -> DomainRule {
        DomainRule {
            name: self.policy.clone(),
            patterns: self.patterns.clone(),
            throttle_transport: self.throttle.as_ref().map(|t| t.name.clone()),
            slow_transport: self.slow.as_ref().map(|t| t.name.clone()),
            relay: self.nexthop().map(str::to_string),
            hand_off: matches!(self.destination, Destination::Pool { .. }),
            ..Default::default()
        }
    }
}

/// A `route.pool` target that is not a SendingPool of the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPool {
    /// The referring field, e.g. `DomainPolicy dp: spec.route.pool`.
    pub field: String,
    pub pool: String,
    pub namespace: String,
}

/// The routes of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingModel {
    /// One per selected valid policy, sorted by policy name.
    pub routes: Vec<PolicyRoute>,
    /// Keys claimed twice: (domain pattern or TLS key, winner, loser). A
    /// pattern claimed by two policies, or a relay nexthop two policies
    /// require different TLS for.
    pub conflicts: Vec<(String, String, String)>,
}

/// The submission port of pool `name` in `namespace`, if it exists.
pub fn submission_port(pools: &[SendingPool], name: &str, namespace: &str) -> Option<u16> {
    pools
        .iter()
        .find(|sp| sp.metadata.name.as_deref() == Some(name) && sp.metadata.namespace.as_deref() == Some(namespace))
        .map(|sp| sp.spec.submission.port)
}

/// Route a pool's selected policies (valid, sorted by name): one route per
/// policy, in the same order.
pub fn route_pool(
    policies: &[ValidDomainPolicy<'_>],
    namespace: &str,
    pools: &[SendingPool],
    cluster_domain: &str,
) -> Result<RoutingModel, UnknownPool> {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut conflicts = vec![];
    for p in policies {
        for d in &p.spec.domains {
            match owner.get(d.as_str()) {
                Some(w) => conflicts.push((d.clone(), w.to_string(), p.name.to_string())),
                None => {
                    owner.insert(d, p.name);
                }
            }
        }
    }
    let mut routes = vec![];
    for p in policies {
        let patterns = p
            .spec
            .domains
            .iter()
            .filter(|d| owner.get(d.as_str()) == Some(&p.name))
            .map(|d| table_pattern(d))
            .collect();
        let destination = match &p.spec.route {
            Some(Route { relay_host: Some(h), port, use_mx, .. }) => {
                Destination::Relay { nexthop: nexthop(h, port.unwrap_or(defaults::RELAY_PORT), *use_mx) }
            }
            Some(Route { pool: Some(target), .. }) => {
                let port = submission_port(pools, target, namespace).ok_or_else(|| UnknownPool {
                    field: format!("DomainPolicy {}: spec.route.pool", p.name),
                    pool: target.clone(),
                    namespace: namespace.to_string(),
                })?;
                Destination::Pool {
                    pool: target.clone(),
                    nexthop: pool_nexthop(target, namespace, cluster_domain, port),
                }
            }
            _ => Destination::Mx,
        };
        let throttle = own_transport(p);
        let slow = p.spec.slow_down.as_ref().filter(|_| !matches!(destination, Destination::Pool { .. })).map(|sd| {
            OwnTransport {
                name: slow_transport(p.name),
                throttle: Throttle {
                    connections: Some(1),
                    messages_per_minute: Some(sd.messages_per_minute),
                    processes: Some(1),
                },
                status_filter: p.spec.auto_exclusion.is_some(),
            }
        });
        routes.push(PolicyRoute {
            policy: p.name.to_string(),
            patterns,
            throttle,
            slow,
            destination,
            tls: p.spec.tls.as_ref().map(tls_value),
        });
    }
    // A provider blocks the IP, not a domain: once one policy softens
    // blocks, every transport to an MX does, so a domain of another policy
    // or of none that shares the blocking MX host defers instead of
    // bouncing while the agent learns its host ([`RoutingModel::smtp_status_filter`]).
    if routes.iter().flat_map(|r| r.throttle.iter()).any(|t| t.status_filter) {
        for t in routes.iter_mut().flat_map(|r| r.throttle.iter_mut().chain(r.slow.iter_mut())) {
            t.status_filter = true;
        }
    }
    let mut model = RoutingModel { routes, conflicts };
    // A TLS key required differently by two policies (two relay routes
    // through one host): the first by name wins, like a domain pattern.
    let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    let mut tls_conflicts = vec![];
    for r in &model.routes {
        let Some(v) = &r.tls else { continue };
        for k in r.tls_keys() {
            match seen.get(&k) {
                Some((w, wv)) if *wv != v => tls_conflicts.push((k, w.to_string(), r.policy.clone())),
                Some(_) => {}
                None => {
                    seen.insert(k, (&r.policy, v));
                }
            }
        }
    }
    model.conflicts.extend(tls_conflicts);
    Ok(model)
}

impl RoutingModel {
    /// The `transport` map: (pattern, value), in policy order.
    pub fn transport_entries(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for r in &self.routes {
            if let Some(v) = r.transport_entry() {
                out.extend(r.patterns.iter().map(|p| (p.clone(), v.clone())));
            }
        }
        out
    }

    /// The `tls_policy` map: (key, value), in policy order, each key once
    /// (the first policy by name wins; see [`RoutingModel::conflicts`]).
    pub fn tls_entries(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![];
        for r in &self.routes {
            let Some(v) = &r.tls else { continue };
            for k in r.tls_keys() {
                if !out.iter().any(|(have, _)| *have == k) {
                    out.push((k, v.clone()));
                }
            }
        }
        out
    }

    /// The peer listener's recipient table: for each pattern of a relay
    /// route or of a policy with its own transport (throttle,
    /// autoExclusion), `FILTER <its transport map value>`. The peer listener
    /// sends what peers hand it with `content_filter = smtp:` (never through
    /// the agent again), which alone would send relay-routed mail to the
    /// recipient domain's MX, bypassing the relay, and throttled mail on
    /// plain `smtp`, outside the domain's throttle — the peers that take
    /// over a blocked IP's mail are exactly the ones a provider must not see
    /// speed up. A `FILTER` action overrides `content_filter`, so the mail
    /// leaves the peer on the transport and nexthop the static map names.
    /// Hand-offs to another pool are never handed to a peer (no entry).
    /// `FILTER` is per message: the `peer-relay` transport hands one
    /// recipient per message (see `render`).
    pub fn peer_filter_entries(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for r in self.routes.iter().filter(|r| !matches!(r.destination, Destination::Pool { .. })) {
            if let Some(v) = r.transport_entry() {
                out.extend(r.patterns.iter().map(|p| (p.clone(), format!("FILTER {v}"))));
            }
        }
        out
    }

    /// Whether the pool delivers with the delivery status filter at all
    /// (a policy has `autoExclusion`; then every own transport has it, see
    /// [`route_pool`]), and so whether Postfix's own `smtp` transport gets
    /// it too. A provider blocks the IP, not a domain: the
    /// agent excludes this instance for every domain known to share the
    /// blocking MX host, domains in no policy included, and a domain it has
    /// not sent to yet learns its MX from its first attempt. On `smtp` that
    /// attempt's block is softened to a deferral like on `dp-<name>`, so it
    /// is retried (through a peer, once the host is excluded) instead of
    /// bouncing. The cost: a block by a provider no autoExclusion rule
    /// shares a host with is retried from here until the queue lifetime.
    pub fn smtp_status_filter(&self) -> bool {
        self.transports().any(|t| t.status_filter)
    }

    /// Every own transport and slow variant, in policy order (master.cf
    /// services and their main.cf throttle parameters).
    pub fn transports(&self) -> impl Iterator<Item = &OwnTransport> {
        self.routes.iter().flat_map(|r| r.throttle.iter().chain(r.slow.iter()))
    }
}

/// The DomainPolicies (validated) that select `pool`, sorted by name, and
/// the invalid ones that would have: which policies route a pool's mail.
pub fn selected_policies<'a>(
    pool: &SendingPool,
    policies: &'a [DomainPolicy],
) -> (Vec<ValidDomainPolicy<'a>>, Vec<ValidationError>) {
    let labels = pool.metadata.labels.clone().unwrap_or_default();
    let ns = pool.metadata.namespace.as_deref();
    let mut sorted: Vec<&DomainPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selector::matches(&p.spec.pool_selector, &labels))
        .collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut valid = vec![];
    let mut invalid = vec![];
    for p in sorted {
        match validate::domain_policy(p) {
            Ok(v) => valid.push(v),
            Err(e) => invalid.push(e),
        }
    }
    (valid, invalid)
}

/// The peer chosen to take mail this instance does not send itself.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerChoice<'a> {
    pub peer: &'a InstancePolicy,
    /// Where to hand it: [`peer_nexthop`] of the peer, for the
    /// [`PEER_RELAY_TRANSPORT`] transport.
    pub nexthop: String,
}

/// The egress addresses whose mail is handed to pool `target` of
/// `namespace`: every address of each other valid pool there whose
/// `spamRoute` names `target`, or whose own routing model (its selected
/// policies, routed by [`route_pool`]) sends at least one domain pattern to
/// `target`. Sorted, each once. The target pool lets exactly these relay
/// through its submission listener (one host each, never a network): a
/// DomainPolicy a namespace user writes opens the target to the source
/// pool's own IPs and nothing else.
///
/// The leg is an SMTP connection from the source instance's bound egress
/// address (HostNetwork and Multus pin `smtp_bind_address`); in the modes
/// that do not pin it, the connection comes from the pod address, which no
/// resource names, and the hand-off is refused rather than opened wider.
pub fn hand_off_sources(
    target: &str,
    namespace: &str,
    pools: &[SendingPool],
    policies: &[DomainPolicy],
    cluster_domain: &str,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for sp in pools {
        let Ok(source) = validate::pool(sp) else { continue };
        if source.namespace != namespace || source.name == target {
            continue;
        }
        let by_spam_route = source.spec.spam_route.as_ref().is_some_and(|s| s.pool == target);
        let by_policy = || {
            let (selected, _) = selected_policies(sp, policies);
            route_pool(&selected, namespace, pools, cluster_domain).is_ok_and(|m| {
                m.routes.iter().any(|r| {
                    !r.patterns.is_empty() && matches!(&r.destination, Destination::Pool { pool, .. } if pool == target)
                })
            })
        };
        if by_spam_route || by_policy() {
            out.extend(source.spec.egress_ips.iter().map(|ip| ip.address.clone()));
        }
    }
    out.into_iter().collect()
}

/// Which of the agent's dynamic decisions apply to a rule's mail, by where
/// the rule routes it ([`relay_scope`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayScope {
    /// To the MX from this IP: everything (pause, rotation, exclusion,
    /// warm-up cap and provider share, slow-down).
    Mx,
    /// A relay route (`route.relayHost`): the leg leaves from this egress
    /// IP, so pause, rotation and exclusions apply — out of rotation or
    /// excluded, the mail goes to a peer, whose peer listener sends it on
    /// the same relay route ([`RoutingModel::peer_filter_entries`]); no peer
    /// left, it is deferred. Warm-up caps and provider shares do not: the
    /// cap protects the IP's reputation at the mailbox providers, which
    /// never see this IP for relayed mail (the relay, chosen by the
    /// DomainPolicy, delivers from its own addresses). Slow-downs do not
    /// either (the slow transport has no relay nexthop). Relayed mail still
    /// counts in the IP's day total (it left from here), so the cap is, if
    /// anything, stricter for the MX mail.
    Relay,
    /// A hand-off to another pool (`route.pool`): an internal leg that no
    /// receiver judges; always left to the static map.
    HandOff,
}

/// See [`RelayScope`].
pub fn relay_scope(rule: &DomainRule) -> RelayScope {
    match (&rule.relay, rule.hand_off) {
        (None, _) => RelayScope::Mx,
        (Some(_), false) => RelayScope::Relay,
        (Some(_), true) => RelayScope::HandOff,
    }
}

/// Choose the peer for mail of `rule` (any domain for `None`): among the
/// peers in rotation and not excluded for the rule, a weighted pick spread
/// by `seq` — warm peers first. A peer sends relayed mail without consulting
/// its own cap (mail from a peer is never relayed again), so warming peers
/// take it only when no warm one is left. `None`: no healthy peer.
pub fn choose_peer<'a>(policy: &'a AgentPolicy, rule: Option<&DomainRule>, seq: u64) -> Option<PeerChoice<'a>> {
    let mut peers: Vec<&InstancePolicy> =
        policy.peers_in_rotation().filter(|p| rule.is_none_or(|r| !p.excluded_rules.contains(&r.name))).collect();
    if peers.iter().any(|p| p.daily_cap.is_none()) {
        peers.retain(|p| p.daily_cap.is_none());
    }
    pick_weighted(&peers, seq).map(|peer| PeerChoice { peer, nexthop: peer_nexthop(&peer.address, policy.peer_port) })
}

/// Whether a delivery Postfix logged was this instance handing mail to a
/// peer (the peer leg), not an attempt at a receiver: it left through the
/// `peer-relay` transport, or went to a peer's listener ([`peer_nexthop`]).
pub fn is_peer_leg(policy: &AgentPolicy, service: &str, relay_addr: Option<&str>, relay_port: Option<u16>) -> bool {
    service == PEER_RELAY_TRANSPORT
        || (relay_port == Some(policy.peer_port)
            && policy.instances.iter().any(|i| i.name != policy.instance && relay_addr == Some(i.address.as_str())))
}

/// Weighted choice among peers, deterministic in `seq`.
pub fn pick_weighted<'a>(peers: &[&'a InstancePolicy], seq: u64) -> Option<&'a InstancePolicy> {
    let total: u64 = peers.iter().map(|p| u64::from(p.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = seq % total;
    for p in peers {
        let w = u64::from(p.weight);
        if at < w {
            return Some(p);
        }
        at -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DomainPolicy;
    use crate::validate;

    fn dp(name: &str, spec: serde_json::Value) -> DomainPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sendfleet.io/v1alpha1",
            "kind": "DomainPolicy",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pool(name: &str, port: u16) -> SendingPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sendfleet.io/v1alpha1",
            "kind": "SendingPool",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"egressIPs": [{"name": "a", "address": "192.0.2.1", "heloName": "a.example.com"}],
                     "submission": {"port": port}},
        }))
        .unwrap()
    }

    fn model(policies: &[DomainPolicy]) -> Result<RoutingModel, UnknownPool> {
        // As the renderer passes them: valid, sorted by name.
        let mut valid: Vec<_> = policies.iter().map(|p| validate::domain_policy(p).unwrap()).collect();
        valid.sort_by_key(|p| p.name);
        route_pool(&valid, "ns", &[pool("bulk", 2587)], "cluster.local")
    }

    #[test]
    fn mx_policies_get_their_own_transport_only_when_throttled_or_filtered() {
        let m = model(&[
            dp("plain", serde_json::json!({"domains": ["plain.example"], "tls": {"level": "encrypt"}})),
            dp(
                "thr",
                serde_json::json!({"domains": ["thr.example", "*.thr.example"],
                                   "throttle": {"messagesPerMinute": 30, "processes": 2},
                                   "slowDown": {"deferrals": 3, "messagesPerMinute": 6}}),
            ),
            dp("filt", serde_json::json!({"domains": ["filt.example"], "autoExclusion": {"hardBlocks": 2}})),
        ])
        .unwrap();
        let [filt, plain, thr] = &m.routes[..] else { panic!("{m:?}") };
        assert_eq!((plain.transport(), plain.transport_entry()), ("smtp", None));
        assert_eq!(plain.tls_keys(), vec!["plain.example"]);
        assert_eq!(thr.transport_entry().as_deref(), Some("dp-thr:"));
        assert_eq!(thr.patterns, vec!["thr.example", ".thr.example"]);
        assert_eq!(thr.slow.as_ref().unwrap().name, "dp-thr-slow");
        assert_eq!(thr.slow.as_ref().unwrap().throttle.messages_per_minute, Some(6));
        // autoExclusion alone: an unthrottled transport carrying the status filter.
        let own = filt.throttle.as_ref().unwrap();
        assert_eq!((own.name.as_str(), own.status_filter, &own.throttle), ("dp-filt", true, &Throttle::default()));
        assert_eq!(
            m.transport_entries(),
            vec![
                ("filt.example".to_string(), "dp-filt:".to_string()),
                ("thr.example".into(), "dp-thr:".into()),
                (".thr.example".into(), "dp-thr:".into())
            ]
        );
        assert_eq!(m.transports().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["dp-filt", "dp-thr", "dp-thr-slow"]);
        // With an autoExclusion policy, plain smtp and every other own
        // transport soften blocks too (a domain of another policy, or of
        // none, may share the blocking provider's MX host).
        assert!(m.smtp_status_filter());
        assert!(m.transports().all(|t| t.status_filter));
        let without =
            model(&[dp("thr", serde_json::json!({"domains": ["thr.example"], "throttle": {"messagesPerMinute": 30}}))])
                .unwrap();
        assert!(!without.smtp_status_filter() && without.transports().all(|t| !t.status_filter));
        // A peer that takes this mail over sends it on the same own
        // transport (throttle, status filter), never on plain smtp.
        assert_eq!(
            m.peer_filter_entries(),
            vec![
                ("filt.example".to_string(), "FILTER dp-filt:".to_string()),
                ("thr.example".into(), "FILTER dp-thr:".into()),
                (".thr.example".into(), "FILTER dp-thr:".into())
            ]
        );
        let rule = thr.domain_rule();
        assert_eq!(rule.throttle_transport.as_deref(), Some("dp-thr"));
        assert_eq!(rule.slow_transport.as_deref(), Some("dp-thr-slow"));
        assert_eq!(rule.relay, None);
    }

    #[test]
    fn a_relay_route_keys_its_tls_requirement_by_the_nexthop_it_routes_to() {
        let m = model(&[
            dp(
                "partner",
                serde_json::json!({"domains": ["partner.example"], "route": {"relayHost": "relay.partner.example"},
                                   "tls": {"level": "verify", "minimumProtocol": "TLSv1.3"},
                                   "throttle": {"connections": 2}}),
            ),
            dp("mx", serde_json::json!({"domains": ["mx.example"], "route": {"relayHost": "relay.example", "port": 2525, "useMX": true}})),
            dp("v6", serde_json::json!({"domains": ["v6.example"], "route": {"relayHost": "2001:db8::25"}, "tls": {"level": "encrypt"}})),
        ])
        .unwrap();
        let [mx, partner, v6] = &m.routes[..] else { panic!("{m:?}") };
        assert_eq!(partner.transport_entry().as_deref(), Some("dp-partner:[relay.partner.example]:25"));
        assert_eq!(partner.tls_keys(), vec!["[relay.partner.example]:25"]);
        assert_eq!(mx.transport_entry().as_deref(), Some("smtp:relay.example:2525"));
        assert_eq!(v6.transport_entry().as_deref(), Some("smtp:[2001:db8::25]:25"));
        assert_eq!(
            m.tls_entries(),
            vec![
                ("[relay.partner.example]:25".to_string(), "verify protocols=>=TLSv1.3".to_string()),
                ("[2001:db8::25]:25".into(), "encrypt".into())
            ]
        );
        // The agent sees the same nexthop; rotation and exclusions apply to it.
        assert_eq!(partner.domain_rule().relay.as_deref(), Some("[relay.partner.example]:25"));
        assert_eq!(relay_scope(&partner.domain_rule()), RelayScope::Relay);
        assert_eq!(relay_scope(&DomainRule::default()), RelayScope::Mx);
        // A peer sends what it is handed on the same route (transport and nexthop).
        assert_eq!(
            m.peer_filter_entries(),
            vec![
                ("mx.example".to_string(), "FILTER smtp:relay.example:2525".to_string()),
                ("partner.example".into(), "FILTER dp-partner:[relay.partner.example]:25".into()),
                ("v6.example".into(), "FILTER smtp:[2001:db8::25]:25".into())
            ]
        );
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn a_hand_off_to_another_pool_uses_plain_smtp_and_no_tls_key() {
        let m = model(&[dp(
            "spam",
            serde_json::json!({"domains": ["x.example"], "route": {"pool": "bulk"}, "tls": {"level": "verify"},
                               "autoExclusion": {"hardBlocks": 1}, "slowDown": {"deferrals": 1, "messagesPerMinute": 1}}),
        )])
        .unwrap();
        let r = &m.routes[0];
        assert_eq!(r.transport_entry().as_deref(), Some("smtp:[bulk.ns.svc.cluster.local]:2587"));
        assert_eq!((&r.throttle, &r.slow), (&None, &None));
        assert!(m.tls_entries().is_empty());
        // An internal leg: the agent leaves it to the static map, no peer FILTER.
        assert_eq!(relay_scope(&r.domain_rule()), RelayScope::HandOff);
        assert!(m.peer_filter_entries().is_empty());
        let missing = dp("lost", serde_json::json!({"domains": ["y.example"], "route": {"pool": "nowhere"}}));
        let err = model(&[missing]).unwrap_err();
        assert_eq!((err.field.as_str(), err.pool.as_str()), ("DomainPolicy lost: spec.route.pool", "nowhere"));
    }

    #[test]
    fn first_policy_by_name_wins_a_pattern_and_a_tls_key() {
        let m = model(&[
            dp("a", serde_json::json!({"domains": ["a.example", "both.example"], "route": {"relayHost": "r.example"}, "tls": {"level": "verify"}})),
            dp("b", serde_json::json!({"domains": ["both.example", "b.example"], "route": {"relayHost": "r.example"}, "tls": {"level": "encrypt"}})),
            dp("c", serde_json::json!({"domains": ["c.example"], "route": {"relayHost": "r.example"}, "tls": {"level": "verify"}})),
        ])
        .unwrap();
        assert_eq!(m.routes[1].patterns, vec!["b.example"]);
        assert_eq!(
            m.conflicts,
            vec![
                ("both.example".to_string(), "a".to_string(), "b".to_string()),
                ("[r.example]:25".into(), "a".into(), "b".into())
            ]
        );
        assert_eq!(m.tls_entries(), vec![("[r.example]:25".to_string(), "verify".to_string())]);
    }

    fn pool_with(name: &str, labels: serde_json::Value, ips: &[&str], extra: serde_json::Value) -> SendingPool {
        let mut spec = serde_json::json!({
            "egressIPs": ips.iter().enumerate()
                .map(|(i, a)| serde_json::json!({"name": format!("{name}-{i}"), "address": a, "heloName": "h.example.com"}))
                .collect::<Vec<_>>(),
        });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sendfleet.io/v1alpha1",
            "kind": "SendingPool",
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_pool_accepts_hand_offs_from_exactly_the_pools_that_route_to_it() {
        let pools = [
            pool_with("target", serde_json::json!({"role": "bulk"}), &["192.0.2.1"], serde_json::json!({})),
            pool_with(
                "main",
                serde_json::json!({"role": "main"}),
                &["192.0.2.10", "2001:db8::10"],
                serde_json::json!({}),
            ),
            pool_with(
                "spammy",
                serde_json::json!({"role": "other"}),
                &["192.0.2.20"],
                serde_json::json!({"spamRoute": {"pool": "target", "header": "X-Spam-Flag", "value": "YES"}}),
            ),
            pool_with("bystander", serde_json::json!({"role": "other"}), &["192.0.2.30"], serde_json::json!({})),
        ];
        let mut elsewhere =
            pool_with("main", serde_json::json!({"role": "main"}), &["192.0.2.40"], serde_json::json!({}));
        elsewhere.metadata.namespace = Some("other".into());
        let mut all = pools.to_vec();
        all.push(elsewhere);
        let handoff = dp(
            "handoff",
            serde_json::json!({"domains": ["h.example"], "route": {"pool": "target"},
                               "poolSelector": {"matchLabels": {"role": "main"}}}),
        );
        let sources = |policies: &[DomainPolicy]| hand_off_sources("target", "ns", &all, policies, "cluster.local");
        // main by its policy, spammy by its spamRoute; not the bystander,
        // not the target itself, not a same-named pool of another namespace.
        assert_eq!(sources(std::slice::from_ref(&handoff)), ["192.0.2.10", "192.0.2.20", "2001:db8::10"]);
        assert_eq!(sources(&[]), ["192.0.2.20"]);
        // A policy that lost every pattern to an earlier one routes nothing.
        let earlier = dp(
            "a-first",
            serde_json::json!({"domains": ["h.example"], "poolSelector": {"matchLabels": {"role": "main"}}}),
        );
        assert_eq!(sources(&[earlier, handoff]), ["192.0.2.20"]);
    }

    fn inst(name: &str, addr: &str, weight: u32, cap: Option<u64>, excluded: &[&str]) -> InstancePolicy {
        InstancePolicy {
            name: name.into(),
            address: addr.into(),
            weight,
            daily_cap: cap,
            excluded_rules: excluded.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn peers_in_rotation_not_excluded_warm_first_weighted() {
        let rule = DomainRule { name: "r".into(), ..Default::default() };
        let mut p = AgentPolicy {
            instance: "me".into(),
            peer_port: 2525,
            instances: vec![
                inst("me", "192.0.2.1", 1, None, &[]),
                inst("excluded", "192.0.2.2", 1, None, &["r"]),
                inst("warming", "192.0.2.3", 1, Some(10), &[]),
                inst("warm", "2001:db8::4", 1, None, &[]),
                inst("out", "192.0.2.5", 0, None, &[]),
            ],
            ..Default::default()
        };
        for seq in 0..6 {
            let c = choose_peer(&p, Some(&rule), seq).unwrap();
            assert_eq!((c.peer.name.as_str(), c.nexthop.as_str()), ("warm", "[2001:db8::4]:2525"));
        }
        // Without a rule, the excluded one is a candidate again.
        let names: std::collections::BTreeSet<_> =
            (0..6).map(|s| choose_peer(&p, None, s).unwrap().peer.name.clone()).collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["excluded", "warm"]);
        // Only warming peers left: they are used rather than none.
        p.instances[3].weight = 0;
        assert_eq!(choose_peer(&p, Some(&rule), 0).unwrap().peer.name, "warming");
        p.instances[2].weight = 0;
        assert_eq!(choose_peer(&p, Some(&rule), 0), None);
    }

    #[test]
    fn a_peer_leg_is_the_peer_relay_transport_or_a_peers_listener() {
        let p = AgentPolicy {
            instance: "me".into(),
            peer_port: 2525,
            instances: vec![inst("me", "192.0.2.1", 1, None, &[]), inst("b", "192.0.2.2", 1, None, &[])],
            ..Default::default()
        };
        assert!(is_peer_leg(&p, "peer-relay", None, None));
        assert!(is_peer_leg(&p, "smtp", Some("192.0.2.2"), Some(2525)));
        assert!(!is_peer_leg(&p, "smtp", Some("192.0.2.2"), Some(25)));
        assert!(!is_peer_leg(&p, "smtp", Some("192.0.2.1"), Some(2525)));
        assert!(!is_peer_leg(&p, "dp-x", Some("198.51.100.7"), Some(2525)));
    }

    #[test]
    fn weighted_pick_is_proportional_and_deterministic() {
        let a = inst("a", "192.0.2.1", 1, None, &[]);
        let b = inst("b", "192.0.2.2", 3, None, &[]);
        let picks: Vec<_> = (0..8).map(|s| pick_weighted(&[&a, &b], s).unwrap().name.as_str()).collect();
        assert_eq!(picks, ["a", "b", "b", "b", "a", "b", "b", "b"]);
        assert_eq!(pick_weighted(&[], 3), None);
    }
}
