//! DMARC: does `_dmarc.<domain>` publish a record, and what policy?
//!
//! Only the record's presence and its `p=` / `sp=` / `pct=` are read (RFC
//! 7489 §6.3); reports and alignment are the receivers' business. Must never
//! return a DNS failure as an error: every outcome is a [`DmarcVerdict`].

use super::resolver::{Answer, Resolver};

/// The requested handling of failing mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Self::None),
            "quarantine" => Some(Self::Quarantine),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// A parsed DMARC record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcRecord {
    pub policy: DmarcPolicy,
    /// Subdomain policy, when given.
    pub subdomain_policy: Option<DmarcPolicy>,
    /// Percentage of mail the policy applies to (default 100).
    pub pct: u8,
}

/// The DMARC finding for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcVerdict {
    Present(DmarcRecord),
    /// No `v=DMARC1` record.
    Missing,
    /// Records exist but none usable (or several: RFC 7489 says ignore all).
    Malformed {
        reason: String,
    },
    /// DNS failed; no conclusion.
    Unknown {
        reason: String,
    },
}

impl DmarcVerdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Present(_))
    }

    /// One line for a condition message.
    pub fn describe(&self) -> String {
        match self {
            Self::Present(r) => {
                let mut s = format!("DMARC p={}", r.policy.as_str());
                if let Some(sp) = r.subdomain_policy {
                    s.push_str(&format!(" sp={}", sp.as_str()));
                }
                if r.pct != 100 {
                    s.push_str(&format!(" pct={}", r.pct));
                }
                s
            }
            Self::Missing => "no DMARC record".to_string(),
            Self::Malformed { reason } => format!("DMARC record malformed: {reason}"),
            Self::Unknown { reason } => format!("DMARC lookup failed: {reason}"),
        }
    }
}

/// Parse one TXT string as a DMARC record. `None` if it is not one at all
/// (does not start with `v=DMARC1`). Pure.
pub fn parse_dmarc(txt: &str) -> Option<Result<DmarcRecord, String>> {
    let mut tags = txt.split(';').map(str::trim).filter(|t| !t.is_empty());
    let first = tags.next()?;
    let (k, v) = first.split_once('=')?;
    if k.trim() != "v" || v.trim() != "DMARC1" {
        return None;
    }
    let mut policy = None;
    let mut sp = None;
    let mut pct = 100u8;
    for tag in tags {
        let Some((k, v)) = tag.split_once('=') else {
            return Some(Err(format!("tag without '=': {tag:?}")));
        };
        match k.trim() {
            "p" => match DmarcPolicy::parse(v) {
                Some(p) => policy = Some(p),
                None => return Some(Err(format!("unknown p={}", v.trim()))),
            },
            "sp" => sp = DmarcPolicy::parse(v),
            "pct" => match v.trim().parse::<u8>() {
                Ok(n) if n <= 100 => pct = n,
                _ => return Some(Err(format!("bad pct={}", v.trim()))),
            },
            _ => {}
        }
    }
    Some(match policy {
        Some(policy) => Ok(DmarcRecord { policy, subdomain_policy: sp, pct }),
        None => Err("no p= tag".to_string()),
    })
}

/// Look up and parse `_dmarc.<domain>`.
pub async fn check_dmarc<R: Resolver>(resolver: &R, domain: &str) -> DmarcVerdict {
    let name = format!("_dmarc.{}", domain.trim_end_matches('.'));
    let records = match resolver.txt(&name).await {
        Answer::Records { records, .. } => records,
        Answer::NxDomain { .. } | Answer::NoData { .. } => return DmarcVerdict::Missing,
        Answer::Failed(f) => return DmarcVerdict::Unknown { reason: f.to_string() },
    };
    let parsed: Vec<Result<DmarcRecord, String>> = records.iter().filter_map(|t| parse_dmarc(t)).collect();
    match parsed.len() {
        0 => DmarcVerdict::Missing,
        1 => match parsed.into_iter().next().expect("one") {
            Ok(r) => DmarcVerdict::Present(r),
            Err(reason) => DmarcVerdict::Malformed { reason },
        },
        n => DmarcVerdict::Malformed { reason: format!("{n} DMARC records published; receivers ignore all of them") },
    }
}
