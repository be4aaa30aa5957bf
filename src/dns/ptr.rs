//! Reverse DNS of an egress IP: the PTR exists, resolves forward to the same
//! IP (forward-confirmed reverse DNS, FCrDNS), and names the HELO name the
//! instance is rendered to send.
//!
//! Receivers reject or down-rank mail from IPs failing any of the three, so
//! each failure is a distinct finding. It must never return a DNS failure as
//! an error: that is [`PtrVerdict::Unknown`].

use std::net::IpAddr;

use super::resolver::{Answer, Resolver};

/// The reverse DNS finding for one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtrVerdict {
    /// A PTR name forward-confirms and equals the HELO name.
    Valid { name: String },
    /// No PTR record.
    Missing,
    /// PTR name(s) exist but none resolves back to the IP.
    NotForwardConfirmed { names: Vec<String> },
    /// Forward-confirmed name(s), but none is the HELO name.
    HeloMismatch { confirmed: Vec<String>, helo: String },
    /// The lookups failed; no conclusion.
    Unknown { reason: String },
}

impl PtrVerdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    /// One line for a condition message (without the IP).
    pub fn describe(&self) -> String {
        match self {
            Self::Valid { name } => format!("PTR {name} confirmed"),
            Self::Missing => "no PTR record".to_string(),
            Self::NotForwardConfirmed { names } => {
                format!("PTR {} does not resolve back to the IP", names.join(","))
            }
            Self::HeloMismatch { confirmed, helo } => {
                format!("PTR {} does not match HELO name {helo}", confirmed.join(","))
            }
            Self::Unknown { reason } => format!("reverse DNS unknown: {reason}"),
        }
    }
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Check the reverse DNS of `ip` against `helo_name`.
pub async fn check_ptr<R: Resolver>(resolver: &R, ip: IpAddr, helo_name: &str) -> PtrVerdict {
    let helo = norm(helo_name);
    let mut names: Vec<String> = match resolver.ptr(ip).await {
        Answer::Records { records, .. } => records.iter().map(|n| norm(n)).collect(),
        Answer::NxDomain { .. } | Answer::NoData { .. } => return PtrVerdict::Missing,
        Answer::Failed(f) => return PtrVerdict::Unknown { reason: format!("PTR lookup: {f}") },
    };
    names.sort();
    names.dedup();

    let mut confirmed = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let addrs: Result<Vec<IpAddr>, String> = match ip {
            IpAddr::V4(_) => match resolver.a(name).await {
                Answer::Failed(f) => Err(f.to_string()),
                a => Ok(a.records().iter().map(|v| IpAddr::V4(*v)).collect()),
            },
            IpAddr::V6(_) => match resolver.aaaa(name).await {
                Answer::Failed(f) => Err(f.to_string()),
                a => Ok(a.records().iter().map(|v| IpAddr::V6(*v)).collect()),
            },
        };
        match addrs {
            Ok(addrs) if addrs.contains(&ip) => confirmed.push(name.clone()),
            Ok(_) => {}
            Err(reason) => failures.push(format!("{name}: {reason}")),
        }
    }

    if confirmed.contains(&helo) {
        PtrVerdict::Valid { name: helo }
    } else if !confirmed.is_empty() {
        PtrVerdict::HeloMismatch { confirmed, helo }
    } else if !failures.is_empty() {
        // A name we could not resolve might have confirmed: no conclusion.
        PtrVerdict::Unknown { reason: format!("forward lookup failed: {}", failures.join("; ")) }
    } else {
        PtrVerdict::NotForwardConfirmed { names }
    }
}
