//! The DNS records a pool needs published: PTR for each address receivers
//! see (`EgressIP::seen_address`: `publicAddress` behind a NAT, else
//! `address`; its HELO name, so FCrDNS passes), and for each sending domain
//! of `spec.dkim.domains` the SPF, DKIM selector and DMARC records that make
//! the checks in [`super::auth`] pass. The one place that decides them:
//! `sendfleet render --records` prints them, the operator lists them in
//! `status.dnsRecords` and writes them into the pool's `DNSEndpoint`.
//!
//! Pure: no lookups. It must never see a private key: the DKIM record is
//! built from the public half ([`PublicKey`]), and without one the record's
//! name is listed with no value.

use std::net::IpAddr;

use sendfleet_render::api::SendingPool;

use super::auth::required_records;
use super::dkim::PublicKey;
use super::resolver::ptr_name;

/// One record to publish. `value` is `None` when it cannot be known offline
/// (a DKIM record without the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Absolute name without the trailing dot.
    pub name: String,
    /// `PTR` or `TXT`.
    pub record_type: &'static str,
    pub value: Option<String>,
}

/// The DMARC policy suggested for a new sending domain: monitor first.
pub const DEFAULT_DMARC_POLICY: &str = "none";

/// The records `pool` needs, PTRs first (by address), then per domain (by
/// name). `dkim_key`: the public half of the selector's key, when known.
pub fn pool_records(pool: &SendingPool, dkim_key: Option<&PublicKey>) -> Vec<DnsRecord> {
    let mut ips: Vec<(IpAddr, String)> = pool
        .spec
        .egress_ips
        .iter()
        // The address receivers see is the one they look up and check SPF
        // against; a NAT's private `address` is never seen outside.
        .filter_map(|ip| Some((ip.seen_address().parse().ok()?, ip.helo_name.trim_end_matches('.').to_string())))
        .collect();
    ips.sort();
    ips.dedup();
    let mut out: Vec<DnsRecord> = ips
        .iter()
        .map(|(ip, helo)| DnsRecord { name: ptr_name(*ip), record_type: "PTR", value: Some(helo.clone()) })
        .collect();
    let Some(dkim) = &pool.spec.dkim else { return out };
    let addrs: Vec<IpAddr> = ips.iter().map(|(ip, _)| *ip).collect();
    let mut domains = dkim.domains.clone();
    domains.sort();
    domains.dedup();
    for d in &domains {
        let with_key = dkim_key.map(|k| (dkim.selector.as_str(), k));
        let mut recs: Vec<DnsRecord> = required_records(d, &addrs, with_key, DEFAULT_DMARC_POLICY)
            .into_iter()
            .map(|r| DnsRecord { name: r.name, record_type: "TXT", value: Some(r.value) })
            .collect();
        if dkim_key.is_none() {
            let name = super::dkim::dkim_record_name(&dkim.selector, d);
            recs.push(DnsRecord { name, record_type: "TXT", value: None });
            recs.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out.extend(recs);
    }
    out
}

/// Zone-file lines for `records` (a record without a value as a comment
/// saying what to put there).
pub fn zone_lines(records: &[DnsRecord], missing_value: &str) -> String {
    let mut out = String::new();
    for r in records {
        match (&r.value, r.record_type) {
            (Some(v), "PTR") => out.push_str(&format!("{}. IN PTR {v}.\n", r.name)),
            (Some(v), _) => out.push_str(&format!("{}. IN {} {}\n", r.name, r.record_type, txt_strings(v))),
            (None, _) => out.push_str(&format!("; {}. IN {} ({missing_value})\n", r.name, r.record_type)),
        }
    }
    out
}

/// A TXT value as quoted strings of at most 255 bytes each (RFC 1035).
fn txt_strings(v: &str) -> String {
    let parts: Vec<String> = v
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dkim: &str) -> SendingPool {
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: p, namespace: ns}}\nspec:\n  egressIPs:\n    - {{name: b, address: 192.0.2.2, heloName: b.example.com}}\n    - {{name: a, address: '2001:db8::1', heloName: a.example.com}}\n{dkim}"
        ))
        .unwrap()
    }

    #[test]
    fn ptr_for_each_address_and_spf_dkim_dmarc_for_each_domain() {
        let p = pool("  dkim: {secretName: k, selector: s1, domains: [mail.example.com]}\n");
        let r = pool_records(&p, None);
        let names: Vec<(&str, &str)> = r.iter().map(|r| (r.name.as_str(), r.record_type)).collect();
        assert_eq!(
            names,
            vec![
                ("2.2.0.192.in-addr.arpa", "PTR"),
                ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR"),
                ("_dmarc.mail.example.com", "TXT"),
                ("mail.example.com", "TXT"),
                ("s1._domainkey.mail.example.com", "TXT"),
            ]
        );
        assert_eq!(r[0].value.as_deref(), Some("b.example.com"));
        assert_eq!(r[3].value.as_deref(), Some("v=spf1 ip4:192.0.2.2 ip6:2001:db8::1 -all"));
        assert_eq!(r[4].value, None, "no key offline");
        let zone = zone_lines(&r, "the public key");
        assert!(zone.contains("2.2.0.192.in-addr.arpa. IN PTR b.example.com.\n"), "{zone}");
        assert!(zone.contains("; s1._domainkey.mail.example.com. IN TXT (the public key)\n"), "{zone}");
        assert!(zone.contains("_dmarc.mail.example.com. IN TXT \"v=DMARC1; p=none\"\n"), "{zone}");
    }

    #[test]
    fn ptr_and_spf_name_the_public_address_not_the_bound_one() {
        let p: SendingPool = serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: ns}\nspec:\n  egressIPs:\n    - {name: a, address: 10.0.0.10, publicAddress: 192.0.2.11, heloName: a.example.com}\n  dkim: {secretName: k, selector: s1, domains: [mail.example.com]}\n",
        )
        .unwrap();
        let r = pool_records(&p, None);
        assert_eq!((r[0].name.as_str(), r[0].value.as_deref()), ("11.2.0.192.in-addr.arpa", Some("a.example.com")));
        let spf = r.iter().find(|r| r.name == "mail.example.com").unwrap();
        assert_eq!(spf.value.as_deref(), Some("v=spf1 ip4:192.0.2.11 -all"));
        assert!(
            r.iter().all(|r| !r.name.contains("10.0.0.10") && !r.value.as_deref().unwrap_or("").contains("10.0.0.10")),
            "{r:?}"
        );
    }

    #[test]
    fn without_dkim_only_ptr() {
        assert_eq!(pool_records(&pool(""), None).len(), 2);
    }

    #[test]
    fn long_txt_values_are_split_into_strings() {
        let v = "x".repeat(300);
        assert_eq!(txt_strings(&v), format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45)));
    }
}
