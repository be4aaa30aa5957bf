//! One call that runs the sender-authentication checks of a pool (PTR for
//! each IP, SPF/DKIM/DMARC for each domain, SPF for the addresses of the
//! relays its routes use) and fills a [`PoolDnsSummary`]; and the records a
//! pool needs published, for DNSEndpoint objects.
//!
//! Inputs are plain values the operator extracts from the SendingPool, its
//! DomainPolicies and its DKIM Secret; this module must never read
//! Kubernetes objects, act on findings, or log key material.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use zeroize::Zeroize as _;

use super::dkim::{check_dkim_key, public_key_from_pem, DkimVerdict, PrivateKeyError, PublicKey};
use super::dmarc::check_dmarc;
use super::ptr::check_ptr;
use super::resolver::{Answer, HickoryDns, Resolver};
use super::spf::check_spf;
use super::summary::{DomainSummary, IpSummary, PoolDnsSummary, RelayAddresses, RelaySummary};

/// One egress IP as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressIp {
    /// Its name in the pool spec.
    pub name: String,
    pub address: IpAddr,
    /// The HELO/EHLO name rendered for it.
    pub helo_name: String,
}

/// A relay a DomainPolicy route of the pool sends through
/// (`route.relayHost`, connected to directly: not `useMX`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RelayRoute {
    /// The DomainPolicy's name.
    pub policy: String,
    /// `route.relayHost`: a DNS name or an IP address.
    pub host: String,
}

/// What the DKIM check needs of the pool's signing key: its selector and
/// the public half, derived when the Secret is read ([`DkimInput::from_pem`]);
/// the private key is not kept.
#[derive(Clone, Debug)]
pub struct DkimInput {
    pub selector: String,
    /// The public key, or why the private key could not be read.
    pub public_key: Result<PublicKey, PrivateKeyError>,
}

impl DkimInput {
    /// Derive the public key from the private key's PEM bytes, then wipe
    /// the bytes: only the public half outlives this call.
    pub fn from_pem(selector: impl Into<String>, mut private_key_pem: Vec<u8>) -> Self {
        let public_key = public_key_from_pem(&private_key_pem);
        private_key_pem.zeroize();
        DkimInput { selector: selector.into(), public_key }
    }
}

/// Run PTR, SPF, DKIM (when `dkim` is given) and DMARC checks; SPF covers
/// the egress IPs and the addresses of every relay in `relays` (receivers
/// see the relay's address for mail it forwards). `checker_name` is this
/// operator's host name for SPF's `%{r}` macro. The listing part of each
/// [`IpSummary`] is left `None`: fill it from the [`ListingTracker`].
///
/// [`ListingTracker`]: super::listing::ListingTracker
pub async fn check_authentication(
    dns: &HickoryDns,
    ips: &[EgressIp],
    domains: &[String],
    relays: &[RelayRoute],
    dkim: Option<&DkimInput>,
    checker_name: &str,
) -> PoolDnsSummary {
    let mut summary = PoolDnsSummary::default();
    for ip in ips {
        let ptr = check_ptr(dns, ip.address, &ip.helo_name).await;
        summary.ips.insert(ip.address, IpSummary { name: ip.name.clone(), listing: None, ptr: Some(ptr) });
    }
    let mut by_host: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in relays {
        by_host.entry(r.host.as_str()).or_default().insert(r.policy.as_str());
    }
    for (host, policies) in by_host {
        let addresses = relay_addresses(dns, host).await;
        let policies = policies.into_iter().map(String::from).collect();
        summary.relays.insert(host.to_string(), RelaySummary { policies, addresses });
    }
    let mut addresses: BTreeSet<IpAddr> = ips.iter().map(|i| i.address).collect();
    for r in summary.relays.values() {
        if let RelayAddresses::Resolved(a) = &r.addresses {
            addresses.extend(a);
        }
    }
    let addresses: Vec<IpAddr> = addresses.into_iter().collect();
    // %{h}: the HELO name of the first instance; SPF records rarely use it.
    let helo = ips.first().map(|i| i.helo_name.as_str()).unwrap_or("");
    let mut domains: Vec<String> = domains.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
    domains.sort();
    domains.dedup();
    for domain in domains {
        let spf = check_spf(dns, &domain, &addresses, helo, checker_name).await;
        let dkim = match dkim {
            Some(k) => Some(match &k.public_key {
                Ok(key) => check_dkim_key(dns, &domain, &k.selector, key).await,
                Err(e) => DkimVerdict::BadPrivateKey { reason: e.to_string() },
            }),
            None => None,
        };
        let dmarc = check_dmarc(dns, &domain).await;
        summary.domains.insert(domain, DomainSummary { spf: Some(spf), dkim, dmarc: Some(dmarc) });
    }
    summary
}

/// A relay host's addresses: the literal, or its A and AAAA records (what
/// Postfix connects to for `[host]`). One family failing while the other
/// answers still gives the addresses found.
async fn relay_addresses(dns: &impl Resolver, host: &str) -> RelayAddresses {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return RelayAddresses::Resolved(vec![ip]);
    }
    let (a, aaaa) = (dns.a(host).await, dns.aaaa(host).await);
    let mut found: Vec<IpAddr> = a.records().iter().map(|v4| IpAddr::V4(*v4)).collect();
    found.extend(aaaa.records().iter().map(|v6| IpAddr::V6(*v6)));
    found.sort();
    found.dedup();
    match (&a, &aaaa) {
        _ if !found.is_empty() => RelayAddresses::Resolved(found),
        (Answer::Failed(e), _) | (_, Answer::Failed(e)) => RelayAddresses::Failed(format!("address lookup: {e}")),
        _ => RelayAddresses::NotFound,
    }
}

/// A TXT record a pool needs published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxtRecord {
    /// Absolute name without trailing dot.
    pub name: String,
    pub value: String,
}

/// The SPF, DKIM and DMARC records that make `domain` pass the checks above
/// for these IPs: `v=spf1 ip4:... ip6:... -all`, the selector's key record,
/// and a DMARC record with `dmarc_policy` (e.g. `none` while starting out).
/// Sorted by name. Pure.
pub fn required_records(
    domain: &str,
    ips: &[IpAddr],
    dkim: Option<(&str, &PublicKey)>,
    dmarc_policy: &str,
) -> Vec<TxtRecord> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut ips = ips.to_vec();
    ips.sort();
    ips.dedup();
    let mut spf = String::from("v=spf1");
    for ip in &ips {
        match ip {
            IpAddr::V4(v4) => spf.push_str(&format!(" ip4:{v4}")),
            IpAddr::V6(v6) => spf.push_str(&format!(" ip6:{v6}")),
        }
    }
    spf.push_str(" -all");
    let mut out = BTreeMap::new();
    out.insert(domain.clone(), spf);
    if let Some((selector, key)) = dkim {
        out.insert(super::dkim::dkim_record_name(selector, &domain), key.txt_record());
    }
    out.insert(format!("_dmarc.{domain}"), format!("v=DMARC1; p={dmarc_policy}"));
    out.into_iter().map(|(name, value)| TxtRecord { name, value }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;

    #[test]
    fn only_the_public_half_of_a_dkim_key_is_kept() {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = signing.to_pkcs8_pem(Default::default()).unwrap().as_bytes().to_vec();
        let input = DkimInput::from_pem("s1", pem);
        assert_eq!(input.public_key, Ok(PublicKey::Ed25519(signing.verifying_key().to_bytes())));
        let shown = format!("{input:?}");
        assert!(!shown.contains("PRIVATE") && !shown.contains("[7, 7"), "{shown}");
        let bad = DkimInput::from_pem("s1", b"not a key".to_vec());
        assert_eq!(bad.public_key, Err(PrivateKeyError::NoPem));
    }
}
