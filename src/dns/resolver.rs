//! The DNS lookups the checks need, behind one small trait.
//!
//! Two implementations: [`HickoryDns`] (hickory-resolver, aimed at a configured
//! nameserver — the cluster's resolver in production, a loopback server in
//! tests) and [`ZoneResolver`] (answers from zone text, for unit tests of the
//! interpretation logic only).
//!
//! A lookup never returns `Err`: every outcome a check must interpret
//! (records, NXDOMAIN, no data, timeout, SERVFAIL, ...) is a variant of
//! [`Answer`]. This module must never interpret answers (that is the checks'
//! job) nor keep its own cache with a hidden clock: hickory's cache is turned
//! off so the DNSBL cache, which is given `now`, is the only one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use mail_auth::MessageAuthenticator;

/// Why a lookup produced no usable answer. Not a finding by itself: the
/// checks turn it into an `Unknown` with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupFailure {
    /// No answer within the configured timeout (after the configured attempts).
    Timeout,
    /// The server answered SERVFAIL.
    ServFail,
    /// The server answered REFUSED.
    Refused,
    /// Anything else (network error, malformed answer, other RCODE).
    Other(String),
}

impl std::fmt::Display for LookupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::ServFail => f.write_str("SERVFAIL"),
            Self::Refused => f.write_str("REFUSED"),
            Self::Other(s) => write!(f, "error: {s}"),
        }
    }
}

/// The outcome of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// At least one record of the asked type; `ttl` is the smallest TTL seen.
    Records { records: Vec<T>, ttl: u32 },
    /// The name does not exist. `ttl` is the negative TTL (SOA minimum) when
    /// the server sent an SOA.
    NxDomain { ttl: Option<u32> },
    /// The name exists but has no record of this type.
    NoData { ttl: Option<u32> },
    /// No usable answer.
    Failed(LookupFailure),
}

impl<T> Answer<T> {
    /// The records, or an empty slice for any other outcome.
    pub fn records(&self) -> &[T] {
        match self {
            Self::Records { records, .. } => records,
            _ => &[],
        }
    }
}

/// The lookups the checks need. Futures are `Send` so checks can run on any
/// tokio worker.
pub trait Resolver: Send + Sync {
    /// A records of `name` (absolute; a trailing dot is optional).
    fn a(&self, name: &str) -> impl Future<Output = Answer<Ipv4Addr>> + Send;
    /// AAAA records of `name`.
    fn aaaa(&self, name: &str) -> impl Future<Output = Answer<Ipv6Addr>> + Send;
    /// TXT records of `name`; each record's strings joined without separator
    /// (RFC 7208 §3.3, RFC 6376 §3.6.2.2), invalid UTF-8 replaced.
    fn txt(&self, name: &str) -> impl Future<Output = Answer<String>> + Send;
    /// PTR names of `ip`, without the trailing dot.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Answer<String>> + Send;
}

/// Where and how [`HickoryDns`] asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Nameservers to query (UDP, falling back to TCP on the same port). Empty:
    /// the system configuration (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// Time to wait for one answer.
    pub timeout: Duration,
    /// Tries per lookup (1 = no retry).
    pub attempts: usize,
    /// Queries hickory may have outstanding on one connection. Keep it at or
    /// above the DNSBL concurrency, or hickory answers "busy" instead of
    /// waiting.
    pub max_in_flight_per_connection: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self { nameservers: Vec::new(), timeout: Duration::from_secs(3), attempts: 2, max_in_flight_per_connection: 64 }
    }
}

/// Errors building the real resolver. (Lookups themselves never error.)
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConf(String),
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}

/// The real resolver: hickory-resolver, no cache, aimed at the configured
/// nameservers. It is also the one mail-auth's SPF evaluation uses, so SPF
/// sees exactly the same DNS as the other checks.
#[derive(Clone)]
pub struct HickoryDns {
    auth: MessageAuthenticator,
}

impl HickoryDns {
    /// Build from settings.
    pub fn new(settings: &ResolverSettings) -> Result<Self, ResolverError> {
        let config = if settings.nameservers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverError::SystemConf(e.to_string()))?;
            config
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            ResolverConfig::from_parts(None, vec![], servers)
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = settings.timeout;
        opts.attempts = settings.attempts.max(1);
        // The DNSBL cache is the only cache (it is given `now`); a second,
        // clock-driven cache underneath would hide delistings from tests and
        // from the cool-down logic.
        opts.cache_size = 0;
        opts.max_active_requests = settings.max_in_flight_per_connection.max(1);
        // Absolute names only: no search-domain expansion of blocklist queries.
        opts.ndots = 0;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        opts.num_concurrent_reqs = 1;
        let auth = MessageAuthenticator::new(config, opts).map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Self { auth })
    }

    /// The mail-auth handle (same resolver), for SPF evaluation.
    pub(crate) fn authenticator(&self) -> &MessageAuthenticator {
        &self.auth
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Answer<RData> {
        let fqdn = absolute(name);
        match self.auth.resolver().lookup(fqdn.as_str(), rtype).await {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let records: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| {
                        ttl = ttl.min(r.ttl);
                        r.data.clone()
                    })
                    .collect();
                if records.is_empty() {
                    Answer::NoData { ttl: None }
                } else {
                    Answer::Records { records, ttl }
                }
            }
            Err(e) => classify_error(&e),
        }
    }
}

fn classify_error<T>(e: &NetError) -> Answer<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            if nr.response_code == ResponseCode::NXDomain {
                Answer::NxDomain { ttl: nr.negative_ttl }
            } else {
                Answer::NoData { ttl: nr.negative_ttl }
            }
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Answer::Failed(LookupFailure::ServFail),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => Answer::Failed(LookupFailure::Refused),
        NetError::Timeout => Answer::Failed(LookupFailure::Timeout),
        other => {
            let text = other.to_string();
            // hickory reports an exhausted retry budget as a message, not as
            // `Timeout`; keep the reason stable for conditions.
            if text.contains("timed out") || text.contains("timeout") {
                Answer::Failed(LookupFailure::Timeout)
            } else {
                Answer::Failed(LookupFailure::Other(text))
            }
        }
    }
}

fn map_answer<T>(a: Answer<RData>, f: impl Fn(&RData) -> Option<T>) -> Answer<T> {
    match a {
        Answer::Records { records, ttl } => {
            let records: Vec<T> = records.iter().filter_map(f).collect();
            if records.is_empty() {
                Answer::NoData { ttl: Some(ttl) }
            } else {
                Answer::Records { records, ttl }
            }
        }
        Answer::NxDomain { ttl } => Answer::NxDomain { ttl },
        Answer::NoData { ttl } => Answer::NoData { ttl },
        Answer::Failed(f) => Answer::Failed(f),
    }
}

fn txt_string(r: &RData) -> Option<String> {
    match r {
        RData::TXT(txt) => {
            let mut bytes = Vec::new();
            for part in txt.txt_data.iter() {
                bytes.extend_from_slice(part);
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

fn name_string(n: &hickory_proto::rr::Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// `name` with exactly one trailing dot.
pub(crate) fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Resolver for HickoryDns {
    async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
        map_answer(self.lookup(name, RecordType::A).await, |r| match r {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
        map_answer(self.lookup(name, RecordType::AAAA).await, |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
    }

    async fn txt(&self, name: &str) -> Answer<String> {
        map_answer(self.lookup(name, RecordType::TXT).await, txt_string)
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        let name = ptr_name(ip);
        map_answer(self.lookup(&name, RecordType::PTR).await, |r| match r {
            RData::PTR(p) => Some(name_string(&p.0)),
            _ => None,
        })
    }
}

/// The name of `ip`'s PTR record (`in-addr.arpa`, `ip6.arpa`): what the
/// reverse-DNS check looks up and what `records.rs` asks to publish.
pub fn ptr_name(ip: IpAddr) -> String {
    reverse_name(ip, "in-addr.arpa", "ip6.arpa")
}

/// The reversed form of `ip` under a suffix: IPv4 reversed octets
/// (`2.0.0.127.zone`), IPv6 reversed nibbles (32 labels), as used by both
/// reverse DNS and DNS blocklists (RFC 5782 §2.1, §2.4).
pub fn reverse_name(ip: IpAddr, v4_suffix: &str, v6_suffix: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{}", o[3], o[2], o[1], o[0], v4_suffix)
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + v6_suffix.len() + 1);
            for byte in v6.octets().iter().rev() {
                let lo = byte & 0x0f;
                let hi = byte >> 4;
                s.push(char::from_digit(lo.into(), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(hi.into(), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str(v6_suffix);
            s
        }
    }
}

/// Answers from zone text, for pure unit tests. Names not in the zone are
/// NXDOMAIN; names present without the asked type are no-data; names given to
/// [`ZoneResolver::fail`] produce that failure.
#[derive(Debug, Clone, Default)]
pub struct ZoneResolver {
    /// lowercased name without trailing dot -> type -> (rdata, ttl)
    records: BTreeMap<String, Vec<(RData, u32)>>,
    failures: BTreeMap<String, LookupFailure>,
}

/// A zone text that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("zone text does not parse: {0}")]
pub struct ZoneParseError(String);

impl ZoneResolver {
    /// Parse master-file text (RFC 1035 syntax, `$ORIGIN`/`$TTL` allowed;
    /// TTLs default to 300).
    /// Several zones may be added by calling this repeatedly.
    pub fn with_zone(mut self, origin: &str, text: &str) -> Result<Self, ZoneParseError> {
        let origin =
            hickory_proto::rr::Name::from_ascii(absolute(origin)).map_err(|e| ZoneParseError(e.to_string()))?;
        // A default TTL so test zones may omit it; a `$TTL` in `text` wins.
        let text = format!("$TTL 300\n{text}");
        let (_, sets) = hickory_proto::serialize::txt::Parser::new(text, None, Some(origin))
            .parse()
            .map_err(|e| ZoneParseError(e.to_string()))?;
        for set in sets.values() {
            for rec in set.records_without_rrsigs() {
                self.records.entry(name_string(&rec.name)).or_default().push((rec.data.clone(), rec.ttl));
            }
        }
        Ok(self)
    }

    /// Make every lookup of `name` fail this way.
    pub fn fail(mut self, name: &str, failure: LookupFailure) -> Self {
        self.failures.insert(key(name), failure);
        self
    }

    fn get(&self, name: &str, rtype: RecordType) -> Answer<RData> {
        let k = key(name);
        if let Some(f) = self.failures.get(&k) {
            return Answer::Failed(f.clone());
        }
        match self.records.get(&k) {
            None => Answer::NxDomain { ttl: Some(60) },
            Some(rs) => {
                let mut ttl = u32::MAX;
                let records: Vec<RData> = rs
                    .iter()
                    .filter(|(r, _)| r.record_type() == rtype)
                    .map(|(r, t)| {
                        ttl = ttl.min(*t);
                        r.clone()
                    })
                    .collect();
                if records.is_empty() {
                    Answer::NoData { ttl: Some(60) }
                } else {
                    Answer::Records { records, ttl }
                }
            }
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Resolver for ZoneResolver {
    async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
        map_answer(self.get(name, RecordType::A), |r| match r {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
        map_answer(self.get(name, RecordType::AAAA), |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
    }

    async fn txt(&self, name: &str) -> Answer<String> {
        map_answer(self.get(name, RecordType::TXT), txt_string)
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        let name = ptr_name(ip);
        map_answer(self.get(&name, RecordType::PTR), |r| match r {
            RData::PTR(p) => Some(name_string(&p.0)),
            _ => None,
        })
    }
}

impl<R: Resolver> Resolver for std::sync::Arc<R> {
    fn a(&self, name: &str) -> impl Future<Output = Answer<Ipv4Addr>> + Send {
        (**self).a(name)
    }
    fn aaaa(&self, name: &str) -> impl Future<Output = Answer<Ipv6Addr>> + Send {
        (**self).aaaa(name)
    }
    fn txt(&self, name: &str) -> impl Future<Output = Answer<String>> + Send {
        (**self).txt(name)
    }
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Answer<String>> + Send {
        (**self).ptr(ip)
    }
}
