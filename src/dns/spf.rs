//! SPF: does a sending domain's policy authorize each egress IP?
//!
//! The evaluation is RFC 7208 `check_host()` as implemented by the
//! `mail-auth` crate (include, a, mx, ip4/ip6, exists, ptr, redirect, macros,
//! the 10-lookup and void-lookup limits), run on the same hickory resolver as
//! the other checks. We chose mail-auth (Apache-2.0 OR MIT) over `viaspf`
//! because viaspf is GPL-3.0-or-later, which would change the licence of the
//! whole sendfleet binary; see docs/DNS.md. (mail-auth is held at 0.13:
//! 0.14+ pulls mail-parser 1.x, which needs a newer rustc than ours.)
//!
//! This module only maps mail-auth's result to [`SpfVerdict`] and fetches
//! the record's text for messages; it must never evaluate SPF records
//! itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::SpfResult;

use super::resolver::{HickoryDns, Resolver};

/// RFC 7208 §2.6 results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpfVerdict {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    /// The domain publishes no SPF record.
    None,
    /// A permanent error: bad syntax, a missing include target, more than
    /// 10 DNS-querying terms...
    PermError,
    /// A transient DNS failure.
    TempError,
}

impl SpfVerdict {
    /// The RFC 7208 name (`pass`, `fail`, `softfail`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::SoftFail => "softfail",
            Self::Neutral => "neutral",
            Self::None => "none",
            Self::PermError => "permerror",
            Self::TempError => "temperror",
        }
    }
}

impl From<SpfResult> for SpfVerdict {
    fn from(r: SpfResult) -> Self {
        match r {
            SpfResult::Pass => Self::Pass,
            SpfResult::Fail => Self::Fail,
            SpfResult::SoftFail => Self::SoftFail,
            SpfResult::Neutral => Self::Neutral,
            SpfResult::None => Self::None,
            SpfResult::PermError => Self::PermError,
            SpfResult::TempError => Self::TempError,
        }
    }
}

/// SPF results of one domain for each IP, sorted by IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub domain: String,
    pub per_ip: BTreeMap<IpAddr, SpfVerdict>,
    /// The domain's published `v=spf1` record as text, for messages (`None`:
    /// none found, or the lookup failed; the verdicts say which).
    pub record: Option<String>,
}

/// The `v=spf1` record among a name's TXT records (RFC 7208 §4.5: the
/// version tag, then a space or the end). Several: the first, sorted, so a
/// message stays the same (the verdict is then `permerror` anyway).
pub fn spf_record(txt: &[String]) -> Option<String> {
    let mut records: Vec<&String> = txt
        .iter()
        .filter(|t| {
            let t = t.as_bytes();
            t.len() >= 6 && t[..6].eq_ignore_ascii_case(b"v=spf1") && (t.len() == 6 || t[6] == b' ')
        })
        .collect();
    records.sort();
    records.first().map(|r| r.to_string())
}

/// Evaluate `domain`'s SPF policy for each IP (MAIL FROM identity,
/// `postmaster@domain`). `helo_name` feeds the `%{h}` macro; `checker_name`
/// the `%{r}` macro (the host doing the check).
pub async fn check_spf(
    dns: &HickoryDns,
    domain: &str,
    ips: &[IpAddr],
    helo_name: &str,
    checker_name: &str,
) -> SpfCheck {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let sender = format!("postmaster@{domain}");
    let mut per_ip = BTreeMap::new();
    for ip in ips {
        let out = dns
            .authenticator()
            .check_host(SpfParameters::verify_mail_from(*ip, helo_name, checker_name, &sender).into())
            .await;
        let verdict = SpfVerdict::from(out.result());
        tracing::debug!(domain = %domain, ip = %ip, spf = verdict.as_str(), "spf evaluated");
        per_ip.insert(*ip, verdict);
    }
    let record = spf_record(dns.txt(&domain).await.records());
    SpfCheck { domain, per_ip, record }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_record_is_the_v_spf1_txt_record_only() {
        let txt = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            spf_record(&txt(&["google-site-verification=x", "v=spf1 ip4:192.0.2.1 -all"])).as_deref(),
            Some("v=spf1 ip4:192.0.2.1 -all")
        );
        assert_eq!(spf_record(&txt(&["V=SPF1 -all"])).as_deref(), Some("V=SPF1 -all"), "the tag is case-insensitive");
        assert_eq!(spf_record(&txt(&["v=spf1"])).as_deref(), Some("v=spf1"));
        assert_eq!(spf_record(&txt(&["v=spf10 -all", "v=spf1x"])), None, "another version is not SPF 1");
        assert_eq!(spf_record(&txt(&[])), None);
        // Two records (a permerror): the message names one, always the same.
        assert_eq!(spf_record(&txt(&["v=spf1 b -all", "v=spf1 a -all"])).as_deref(), Some("v=spf1 a -all"));
    }
}
