//! Value types shared by the kinds: durations in Postfix syntax, throttles,
//! TLS levels, and the CEL snippet that compares durations. Patterns and
//! limits are in [`super::limits`], defaults in [`super::defaults`].

use kube_derive::KubeSchema;
use schemars::JsonSchema;

use super::limits::*;
use serde::{Deserialize, Serialize};

/// CEL expression evaluating a Postfix-syntax duration field (already
/// validated by [`super::limits::DURATION_PATTERN`]) to whole seconds, so rules can compare
/// durations written in different units. `path` is a CEL path such as
/// `self.minimalBackoff`.
pub fn cel_seconds(path: &str) -> String {
    format!(
        "(int({p}.substring(0, size({p}) - 1)) * ({p}.endsWith('w') ? 604800 : {p}.endsWith('d') ? 86400 : {p}.endsWith('h') ? 3600 : {p}.endsWith('m') ? 60 : 1))",
        p = path
    )
}

/// Parse a Postfix-syntax duration (`300s`, `4h`, `5d`, `1w`) into seconds.
/// Returns `None` for anything [`super::limits::DURATION_OR_ZERO_PATTERN`] would refuse.
pub fn parse_duration(s: &str) -> Option<u64> {
    if !s.is_ascii() {
        return None;
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 6 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if num.len() > 1 && num.starts_with('0') {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(n * mult)
}

/// Per-destination throttle, applied per egress IP. Rendered as a dedicated
/// Postfix transport (a copy of `smtp` with its own limits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    /// Simultaneous connections to one destination from one IP
    /// (`<transport>_destination_concurrency_limit`). 1 to 100.
    #[schemars(range(min = 1, max = MAX_CONNECTIONS))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Messages per minute to one destination from one IP. Rendered as
    /// `<transport>_destination_rate_delay` (60/N seconds between deliveries,
    /// which Postfix applies per destination with concurrency 1). 1 to 60,
    /// a divisor of 60 (deliveries are spaced by whole seconds).
    #[schemars(range(min = 1, max = MAX_MESSAGES_PER_MINUTE))]
    #[x_kube(validation = Rule::new(cel_divides_minute()).message(MESSAGES_PER_MINUTE_MESSAGE))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_minute: Option<u32>,
    /// Delivery processes for this throttle's transport (master.cf `maxproc`).
    /// 1 to 200.
    #[schemars(range(min = 1, max = MAX_PROCESSES))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
}

/// Outbound TLS security level, as Postfix's `smtp_tls_security_level`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsLevel {
    /// Opportunistic TLS: encrypt when the receiver offers STARTTLS.
    #[default]
    #[serde(rename = "may")]
    May,
    /// Mandatory TLS encryption, no certificate check.
    #[serde(rename = "encrypt")]
    Encrypt,
    /// Mandatory TLS with DANE (needs a DNSSEC-validating resolver).
    #[serde(rename = "dane")]
    Dane,
    /// Mandatory TLS with a certificate matching the MX host name.
    #[serde(rename = "verify")]
    Verify,
    /// Mandatory TLS with a certificate matching the destination domain.
    #[serde(rename = "secure")]
    Secure,
}

impl TlsLevel {
    pub fn as_postfix(self) -> &'static str {
        match self {
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Dane => "dane",
            TlsLevel::Verify => "verify",
            TlsLevel::Secure => "secure",
        }
    }
}

/// Lowest TLS protocol version the pool will use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl TlsProtocol {
    /// Value for `smtp_tls_protocols` / `smtp_tls_mandatory_protocols`
    /// (Postfix >= 3.6 accepts the `>=` form).
    pub fn as_postfix(self) -> &'static str {
        match self {
            TlsProtocol::Tls12 => ">=TLSv1.2",
            TlsProtocol::Tls13 => ">=TLSv1.3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_postfix() {
        assert_eq!(parse_duration("300s"), Some(300));
        assert_eq!(parse_duration("4h"), Some(14_400));
        assert_eq!(parse_duration("5d"), Some(432_000));
        assert_eq!(parse_duration("1w"), Some(604_800));
        assert_eq!(parse_duration("0s"), Some(0));
        for bad in ["", "s", "5", "05s", "5x", "-5s", "5 s", "5s\n", "1234567s", "５s", "5５"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
