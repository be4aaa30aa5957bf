//! A pool's DNS findings in one value, and the pure functions that turn it
//! into the `Listed` and `AuthenticationValid` conditions' status, reason
//! and message.
//!
//! The types, reasons and the message limit come from the one vocabulary in
//! `sendfleet_render::conditions`; the operator writes the [`Observation`]s
//! into Kubernetes `Condition`s (it owns `observedGeneration` and
//! `lastTransitionTime`). Names inside messages are sorted so an unchanged
//! finding renders the same message and causes no status write. Pure: no
//! I/O, no clock; must never query DNS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use sendfleet_render::conditions::{ConditionType, Observation, Reason, Status};

use super::dkim::DkimVerdict;
use super::dmarc::DmarcVerdict;
use super::listing::{IpListing, ListingStatus};
use super::ptr::PtrVerdict;
use super::spf::{SpfCheck, SpfVerdict};

/// Findings for one egress IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSummary {
    /// The egress IP's name in the pool spec (for messages).
    pub name: String,
    /// DNSBL state (`None`: never swept).
    pub listing: Option<IpListing>,
    /// Reverse DNS (`None`: not checked).
    pub ptr: Option<PtrVerdict>,
}

/// Findings for one sending domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    /// `None`: not checked yet.
    pub spf: Option<SpfCheck>,
    /// `None`: no DKIM configured for this domain (not required).
    pub dkim: Option<DkimVerdict>,
    /// `None`: not checked yet.
    pub dmarc: Option<DmarcVerdict>,
}

/// Everything the DNS checks found for one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolDnsSummary {
    pub ips: BTreeMap<IpAddr, IpSummary>,
    pub domains: BTreeMap<String, DomainSummary>,
    /// Relay hosts the pool's DomainPolicy routes send through, by
    /// `route.relayHost`: receivers see the relay's address, so the sending
    /// domains' SPF must authorise it as well (each domain's
    /// [`SpfCheck::per_ip`] holds its addresses' verdicts).
    pub relays: BTreeMap<String, RelaySummary>,
}

/// One relay host of the pool's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySummary {
    /// The DomainPolicies routing through it (sorted).
    pub policies: Vec<String>,
    pub addresses: RelayAddresses,
}

/// A relay host's addresses as the operator's resolver sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAddresses {
    /// A and AAAA records, or the literal address (sorted).
    Resolved(Vec<IpAddr>),
    /// The name has no A or AAAA record.
    NotFound,
    /// The lookups failed (the reason).
    Failed(String),
}

impl RelaySummary {
    fn label(&self, host: &str) -> String {
        format!("DomainPolicy {} route.relayHost {host}", self.policies.join(","))
    }
}

fn ip_label(ip: &IpAddr, s: &IpSummary) -> String {
    if s.name.is_empty() {
        ip.to_string()
    } else {
        format!("{} ({ip})", s.name)
    }
}

/// The `Listed` condition.
pub fn listed_condition(summary: &PoolDnsSummary) -> Observation {
    let mut listed = Vec::new();
    let mut unknown = Vec::new();
    let mut pending = Vec::new();
    for (ip, s) in &summary.ips {
        let label = ip_label(ip, s);
        let Some(l) = &s.listing else {
            pending.push(label);
            continue;
        };
        if !l.listings.is_empty() {
            let zones: Vec<String> = l
                .listings
                .iter()
                .map(|x| {
                    let codes: Vec<String> = x.codes.iter().map(|c| c.to_string()).collect();
                    format!("{} ({})", x.zone, codes.join(","))
                })
                .collect();
            listed.push(format!("{label} in {}", zones.join(", ")));
        }
        if !l.unknown.is_empty() {
            let zones: Vec<String> = l.unknown.iter().map(|(z, r)| format!("{z} ({r})")).collect();
            unknown.push(format!("{label} in {}", zones.join(", ")));
        }
        if l.status == ListingStatus::Pending {
            pending.push(label);
        }
    }
    if !listed.is_empty() {
        let mut msg = format!("Listed: {}", listed.join("; "));
        if !unknown.is_empty() {
            let _ = write!(msg, ". Not checkable: {}", unknown.join("; "));
        }
        return Observation::new(ConditionType::Listed, Status::True, Reason::Listed, msg);
    }
    if !unknown.is_empty() {
        return Observation::new(
            ConditionType::Listed,
            Status::Unknown,
            Reason::CheckFailing,
            format!("Not checkable: {}", unknown.join("; ")),
        );
    }
    if !pending.is_empty() {
        return Observation::new(
            ConditionType::Listed,
            Status::Unknown,
            Reason::NotYetChecked,
            format!("Not yet checked: {}", pending.join(", ")),
        );
    }
    Observation::new(
        ConditionType::Listed,
        Status::False,
        Reason::NotListed,
        format!("{} IP(s) not listed in any zone", summary.ips.len()),
    )
}

#[derive(Default)]
struct Findings {
    spf: Vec<String>,
    dkim: Vec<String>,
    dmarc: Vec<String>,
    ptr: Vec<String>,
    unknown: Vec<String>,
    pending: Vec<String>,
    good: Vec<String>,
}

/// The `AuthenticationValid` condition: SPF authorizes every IP, and every
/// address of a relay the pool's routes use, for every domain; DKIM
/// publishes the signing key, DMARC exists, and every IP's reverse DNS is
/// forward-confirmed and matches its HELO name.
pub fn authentication_condition(summary: &PoolDnsSummary) -> Observation {
    let mut f = Findings::default();
    for (host, r) in &summary.relays {
        match &r.addresses {
            RelayAddresses::Resolved(_) => {}
            RelayAddresses::NotFound => f.unknown.push(format!("{}: no A or AAAA record", r.label(host))),
            RelayAddresses::Failed(why) => f.unknown.push(format!("{}: {why}", r.label(host))),
        }
    }
    for (domain, d) in &summary.domains {
        match &d.spf {
            None => f.pending.push(format!("{domain} SPF")),
            Some(spf) => {
                relay_spf(&mut f, domain, spf, &summary.relays);
                let mut by_verdict: BTreeMap<SpfVerdict, Vec<String>> = BTreeMap::new();
                for ip in summary.ips.keys() {
                    match spf.per_ip.get(ip) {
                        Some(v) => by_verdict.entry(*v).or_default().push(ip.to_string()),
                        None => f.pending.push(format!("{domain} SPF for {ip}")),
                    }
                }
                for (v, ips) in by_verdict {
                    let line = format!("{domain}: SPF {} for {}", v.as_str(), ips.join(","));
                    match v {
                        SpfVerdict::Pass => {}
                        SpfVerdict::TempError => f.unknown.push(line),
                        _ => f.spf.push(line),
                    }
                }
            }
        }
        if let Some(dkim) = &d.dkim {
            match dkim {
                DkimVerdict::Match { .. } => {}
                DkimVerdict::Unknown { .. } => f.unknown.push(format!("{domain}: {}", dkim.describe())),
                _ => f.dkim.push(format!("{domain}: {}", dkim.describe())),
            }
        }
        match &d.dmarc {
            None => f.pending.push(format!("{domain} DMARC")),
            Some(v @ DmarcVerdict::Present(_)) => f.good.push(format!("{domain}: {}", v.describe())),
            Some(v @ DmarcVerdict::Unknown { .. }) => f.unknown.push(format!("{domain}: {}", v.describe())),
            Some(v) => f.dmarc.push(format!("{domain}: {}", v.describe())),
        }
    }
    for (ip, s) in &summary.ips {
        let label = ip_label(ip, s);
        match &s.ptr {
            None => f.pending.push(format!("{label} PTR")),
            Some(PtrVerdict::Valid { .. }) => {}
            Some(v @ PtrVerdict::Unknown { .. }) => f.unknown.push(format!("{label}: {}", v.describe())),
            Some(v) => f.ptr.push(format!("{label}: {}", v.describe())),
        }
    }

    let kinds: Vec<(Reason, &Vec<String>)> = vec![
        (Reason::SpfNotAuthorized, &f.spf),
        (Reason::DkimInvalid, &f.dkim),
        (Reason::DmarcMissing, &f.dmarc),
        (Reason::ReverseDnsInvalid, &f.ptr),
    ];
    let failing: Vec<&(Reason, &Vec<String>)> = kinds.iter().filter(|(_, v)| !v.is_empty()).collect();
    if !failing.is_empty() {
        let reason = if failing.len() == 1 { failing[0].0 } else { Reason::MultipleFailures };
        let mut lines: Vec<String> = failing.iter().flat_map(|(_, v)| v.iter().cloned()).collect();
        lines.sort();
        let mut msg = lines.join("; ");
        if !f.unknown.is_empty() {
            f.unknown.sort();
            let _ = write!(msg, ". Not checkable: {}", f.unknown.join("; "));
        }
        return Observation::new(ConditionType::AuthenticationValid, Status::False, reason, msg);
    }
    if !f.unknown.is_empty() {
        f.unknown.sort();
        return Observation::new(
            ConditionType::AuthenticationValid,
            Status::Unknown,
            Reason::CheckFailing,
            format!("Not checkable: {}", f.unknown.join("; ")),
        );
    }
    if !f.pending.is_empty() {
        f.pending.sort();
        return Observation::new(
            ConditionType::AuthenticationValid,
            Status::Unknown,
            Reason::NotYetChecked,
            format!("Not yet checked: {}", f.pending.join(", ")),
        );
    }
    let relay_addresses: usize = summary
        .relays
        .values()
        .map(|r| match &r.addresses {
            RelayAddresses::Resolved(a) => a.len(),
            _ => 0,
        })
        .sum();
    let mut msg = if summary.domains.is_empty() {
        format!(
            "Reverse DNS valid for {} IP(s); SPF, DKIM and DMARC not checked: spec.dkim.domains names no sending domain",
            summary.ips.len()
        )
    } else {
        let relays = match relay_addresses {
            0 => String::new(),
            n => format!(" and {n} relay address(es)"),
        };
        format!(
            "SPF passes for {} IP(s){relays} in {} domain(s); DKIM and reverse DNS valid",
            summary.ips.len(),
            summary.domains.len()
        )
    };
    if !f.good.is_empty() {
        let _ = write!(msg, "; {}", f.good.join("; "));
    }
    Observation::new(ConditionType::AuthenticationValid, Status::True, Reason::Valid, msg)
}

/// Each relay address's SPF verdict for `domain`: not `pass` is a finding
/// naming the address, the route and the published record.
fn relay_spf(f: &mut Findings, domain: &str, spf: &SpfCheck, relays: &BTreeMap<String, RelaySummary>) {
    let record = match &spf.record {
        Some(r) => format!("record {r:?}"),
        None => "no SPF record".to_string(),
    };
    for (host, r) in relays {
        let RelayAddresses::Resolved(addresses) = &r.addresses else { continue };
        for addr in addresses {
            let line = |v: SpfVerdict| {
                format!("{domain}: SPF {} for relay address {addr} ({}); {record}", v.as_str(), r.label(host))
            };
            match spf.per_ip.get(addr) {
                None => f.pending.push(format!("{domain} SPF for relay address {addr}")),
                Some(SpfVerdict::Pass) => {}
                Some(v @ SpfVerdict::TempError) => f.unknown.push(line(*v)),
                Some(v) => f.spf.push(line(*v)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_without_sending_domains_says_what_was_not_checked() {
        let summary = PoolDnsSummary::default();
        let c = authentication_condition(&summary);
        assert_eq!(c.status, Status::True);
        assert!(c.message.contains("spec.dkim.domains names no sending domain"), "{}", c.message);
        assert!(!c.message.contains("0 domain(s)"), "{}", c.message);
    }
}
