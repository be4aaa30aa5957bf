//! DNS blocklist (DNSBL) sweeps: query every configured zone for every egress
//! IP, interpret the answers, cache them by TTL.
//!
//! Interpretation (RFC 5782 and the lists' published conventions):
//! - an A answer in 127.0.0.0/8 outside 127.255.255.0/24 is a listing; the
//!   TXT record at the same name is fetched as the reason;
//! - 127.255.255.x is the list *refusing* the query (Spamhaus answers this to
//!   queries through public or unregistered resolvers): never a listing, the
//!   zone's state for that IP is unknown;
//! - an answer outside 127.0.0.0/8 is an unknown too (a resolver that rewrites
//!   NXDOMAIN, or a list that has been shut down and wildcards everything);
//! - NXDOMAIN (and no-data) is clean; timeouts, SERVFAIL and other failures are
//!   unknown, with the reason;
//! - a zone that lists its RFC 5782 negative test point 127.0.0.1 (asked as
//!   `1.0.0.127.<zone>` before the zone's real queries, cached like an
//!   answer) is broken — misconfigured, or listing everything (a wildcard):
//!   it lists nothing, and every IP's outcome in it is
//!   [`ZoneOutcome::Broken`], an unknown naming the zone's fault. One
//!   broken list must never pull a whole pool out of rotation.
//!
//! Time is always passed in (`now`); this module never reads a clock. It must
//! never return a DNS failure as an error: every outcome is a [`ZoneOutcome`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Semaphore;

use super::resolver::{reverse_name, Answer, Resolver};

/// RFC 5782 section 5: a DNSBL must not list 127.0.0.1. A zone that does
/// is broken or lists everything.
pub const NEGATIVE_TEST_POINT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// Widely used IP blocklists, queried when a pool names none.
///
/// Spamhaus ZEN refuses queries that reach it through large public resolvers
/// (answering 127.255.255.254); run the operator against a resolver of your
/// own, or override the list, where that matters. SORBS is absent on purpose:
/// it shut down in 2024.
pub const DEFAULT_ZONES: &[&str] =
    &["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "bl.mailspike.net", "psbl.surriel.com"];

/// The default zones as owned strings.
pub fn default_zones() -> Vec<String> {
    DEFAULT_ZONES.iter().map(|z| z.to_string()).collect()
}

/// Sweep settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblConfig {
    /// Zones to query; empty means [`DEFAULT_ZONES`].
    pub zones: Vec<String>,
    /// Queries in flight at once, across all zones (>= 1).
    pub concurrency: usize,
    /// Most IPs looked up in one zone in one sweep (cache hits are free).
    /// IPs beyond it are reported [`ZoneOutcome::NotChecked`] and asked on
    /// the next sweep. Lists rate-limit per source; this keeps a large pool
    /// from tripping them. A listed answer costs one more query (its TXT
    /// reason), which is not charged: listings are rare and their reason is
    /// what the operator needs.
    pub per_zone_budget: usize,
    /// Shortest time an answer is cached (DNSBLs often publish TTLs of a few
    /// seconds; re-asking each sweep is wasteful).
    pub min_cache: SignedDuration,
    /// Longest time an answer is cached (a delisting must be seen soon).
    pub max_cache: SignedDuration,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            concurrency: 16,
            per_zone_budget: 1000,
            min_cache: SignedDuration::from_secs(60),
            max_cache: SignedDuration::from_secs(3600),
        }
    }
}

impl DnsblConfig {
    /// The zones to query: the configured ones, else the defaults; lowercased,
    /// without trailing dot, deduplicated, sorted.
    pub fn effective_zones(&self) -> Vec<String> {
        let src = if self.zones.is_empty() { default_zones() } else { self.zones.clone() };
        let mut zones: Vec<String> =
            src.iter().map(|z| z.trim().trim_end_matches('.').to_ascii_lowercase()).filter(|z| !z.is_empty()).collect();
        zones.sort();
        zones.dedup();
        zones
    }
}

/// What one zone said about one IP in one sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// Listed: return code(s) (sorted) and the TXT reason, if any.
    Listed { codes: Vec<Ipv4Addr>, reason: Option<String> },
    /// Not listed (NXDOMAIN or no A record).
    Clean,
    /// The list refused the query (127.255.255.x). Not a listing.
    Refused { code: Ipv4Addr },
    /// No usable answer: timeout, SERVFAIL, unexpected answer...
    Failed { reason: String },
    /// Not queried this sweep (per-zone budget spent). No information.
    NotChecked,
    /// The zone lists its negative test point (127.0.0.1): its answers
    /// mean nothing, for any IP. Not a listing; unknown at once.
    Broken { reason: String },
}

impl ZoneOutcome {
    /// True for outcomes that say nothing definite (refused, failed).
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Failed { .. } | Self::Broken { .. })
    }

    /// Human-readable reason for an unknown outcome.
    pub fn failure_reason(&self) -> Option<String> {
        match self {
            Self::Refused { code } => Some(format!("list refused the query ({code})")),
            Self::Failed { reason } | Self::Broken { reason } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// The query name for `ip` in `zone`.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    reverse_name(ip, zone, zone)
}

/// Interpret the A answer of a DNSBL query. `Listed` carries no reason yet
/// (the caller fetches the TXT only for listings). Pure.
pub fn interpret_a(answer: &Answer<Ipv4Addr>) -> ZoneOutcome {
    match answer {
        Answer::NxDomain { .. } | Answer::NoData { .. } => ZoneOutcome::Clean,
        Answer::Failed(f) => ZoneOutcome::Failed { reason: f.to_string() },
        Answer::Records { records, .. } => {
            let mut codes = records.clone();
            codes.sort();
            codes.dedup();
            if let Some(code) = codes.iter().find(|c| is_refusal(**c)) {
                return ZoneOutcome::Refused { code: *code };
            }
            if let Some(odd) = codes.iter().find(|c| c.octets()[0] != 127) {
                return ZoneOutcome::Failed {
                    reason: format!("unexpected answer {odd} (not a 127.0.0.0/8 return code)"),
                };
            }
            ZoneOutcome::Listed { codes, reason: None }
        }
    }
}

/// Is a zone broken, judged by its answer for the negative test point?
/// `Some(reason)` when it lists 127.0.0.1; a refusal, a failure or an
/// answer outside 127/8 says nothing about the zone's listings (its real
/// answers are judged on their own). Pure.
pub fn broken_zone(test_point: &Answer<Ipv4Addr>) -> Option<String> {
    match interpret_a(test_point) {
        ZoneOutcome::Listed { codes, .. } => Some(format!(
            "broken zone: it lists its RFC 5782 negative test point {NEGATIVE_TEST_POINT} ({}), as a misconfigured \
             list or one that lists everything does; its answers are ignored",
            codes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
        )),
        _ => None,
    }
}

fn is_refusal(code: Ipv4Addr) -> bool {
    let o = code.octets();
    o[0] == 127 && o[1] == 255 && o[2] == 255
}

/// The answer of one (ip, zone) pair, for reports and the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheEntry {
    outcome: ZoneOutcome,
    expires: Timestamp,
}

/// The result of one sweep: per IP, per zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub outcomes: BTreeMap<IpAddr, BTreeMap<String, ZoneOutcome>>,
    /// DNS queries sent (cache hits excluded).
    pub queries_sent: usize,
    /// Answers served from the cache.
    pub cache_hits: usize,
    /// Highest number of queries in flight at once, seen by the sweeper.
    pub max_in_flight: usize,
    /// When the sweep was made (as given).
    pub at: Timestamp,
}

/// Sweeps the zones for a set of IPs. Holds the TTL cache between sweeps.
pub struct DnsblChecker<R> {
    resolver: R,
    config: DnsblConfig,
    cache: BTreeMap<(IpAddr, String), CacheEntry>,
    /// Zones whose negative test point was last found unlisted, until when.
    healthy_zones: BTreeMap<String, Timestamp>,
    /// Where in the sorted IP list the next sweep starts spending the
    /// budget, so IPs past the budget are not starved sweep after sweep.
    next_start: usize,
}

impl<R: Resolver> DnsblChecker<R> {
    pub fn new(resolver: R, config: DnsblConfig) -> Self {
        Self { resolver, config, cache: BTreeMap::new(), healthy_zones: BTreeMap::new(), next_start: 0 }
    }

    pub fn config(&self) -> &DnsblConfig {
        &self.config
    }

    /// Replace the settings (e.g. the pool's zones changed); cached answers of
    /// zones no longer configured are dropped.
    pub fn set_config(&mut self, config: DnsblConfig) {
        let zones = config.effective_zones();
        self.cache.retain(|(_, z), _| zones.contains(z));
        self.healthy_zones.retain(|z, _| zones.contains(z));
        self.config = config;
    }

    /// Query every zone for every IP (cache permitting) with at most
    /// `concurrency` queries in flight.
    pub async fn sweep(&mut self, ips: &[IpAddr], now: Timestamp) -> SweepReport {
        let zones = self.config.effective_zones();
        let mut report = SweepReport { at: now, ..SweepReport::default() };
        // Drop expired entries first so the cache cannot grow without bound.
        self.cache.retain(|_, e| e.expires > now);
        self.healthy_zones.retain(|_, until| *until > now);
        let broken = self.probe_zones(&zones, now).await;
        report.queries_sent += broken.probes;
        // A broken zone's earlier answers are worthless too.
        self.cache.retain(|(_, z), _| !broken.zones.contains_key(z));

        let mut ips: Vec<IpAddr> = ips.to_vec();
        ips.sort();
        ips.dedup();
        if !ips.is_empty() {
            let start = self.next_start % ips.len();
            ips.rotate_left(start);
            self.next_start = start + self.config.per_zone_budget.min(ips.len());
        }

        let mut budget: BTreeMap<&str, usize> =
            zones.iter().map(|z| (z.as_str(), self.config.per_zone_budget)).collect();
        let mut todo: Vec<(IpAddr, String)> = Vec::new();
        for ip in &ips {
            let row = report.outcomes.entry(*ip).or_default();
            for zone in &zones {
                if let Some(reason) = broken.zones.get(zone) {
                    row.insert(zone.clone(), ZoneOutcome::Broken { reason: reason.clone() });
                    continue;
                }
                if let Some(hit) = self.cache.get(&(*ip, zone.clone())) {
                    report.cache_hits += 1;
                    row.insert(zone.clone(), hit.outcome.clone());
                    continue;
                }
                // One A query per IP; the TXT of a listing is not charged.
                let left = budget.get_mut(zone.as_str()).expect("zone in budget");
                if *left == 0 {
                    row.insert(zone.clone(), ZoneOutcome::NotChecked);
                    continue;
                }
                *left -= 1;
                todo.push((*ip, zone.clone()));
            }
        }

        let sem = Semaphore::new(self.config.concurrency.max(1));
        let in_flight = AtomicUsize::new(0);
        let max_seen = AtomicUsize::new(0);
        let sent = AtomicUsize::new(0);
        let resolver = &self.resolver;
        let tasks = todo.iter().map(|(ip, zone)| {
            let sem = &sem;
            let in_flight = &in_flight;
            let max_seen = &max_seen;
            let sent = &sent;
            async move {
                let _permit = sem.acquire().await.expect("semaphore never closed");
                let now_in = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now_in, Ordering::SeqCst);
                let name = query_name(*ip, zone);
                let answer = resolver.a(&name).await;
                sent.fetch_add(1, Ordering::Relaxed);
                let mut outcome = interpret_a(&answer);
                if let ZoneOutcome::Listed { reason, .. } = &mut outcome {
                    let txt = resolver.txt(&name).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let texts = txt.records();
                    if !texts.is_empty() {
                        *reason = Some(texts.join(" / "));
                    }
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let ttl = match &answer {
                    Answer::Records { ttl, .. } => Some(*ttl),
                    Answer::NxDomain { ttl } | Answer::NoData { ttl } => *ttl,
                    Answer::Failed(_) => None,
                };
                (*ip, zone.clone(), outcome, ttl)
            }
        });
        let results = futures::future::join_all(tasks).await;

        report.queries_sent += sent.load(Ordering::Relaxed);
        report.max_in_flight = max_seen.load(Ordering::SeqCst);
        for (ip, zone, outcome, ttl) in results {
            // Only definite answers are cached: a failure must be retried on
            // the next sweep, not remembered.
            if matches!(outcome, ZoneOutcome::Listed { .. } | ZoneOutcome::Clean) {
                let secs = i64::from(ttl.unwrap_or(0));
                let keep = SignedDuration::from_secs(secs).max(self.config.min_cache).min(self.config.max_cache);
                if let Ok(expires) = now.checked_add(keep) {
                    self.cache.insert((ip, zone.clone()), CacheEntry { outcome: outcome.clone(), expires });
                }
            }
            report.outcomes.entry(ip).or_default().insert(zone, outcome);
        }
        tracing::debug!(
            ips = ips.len(),
            zones = zones.len(),
            queries = report.queries_sent,
            cache_hits = report.cache_hits,
            max_in_flight = report.max_in_flight,
            "dnsbl sweep done"
        );
        report
    }

    /// Ask every zone not known healthy for its negative test point.
    /// Healthy answers are cached like other answers; a broken zone is
    /// asked again next sweep (it may be fixed), a failure too.
    async fn probe_zones(&mut self, zones: &[String], now: Timestamp) -> BrokenZones {
        let todo: Vec<&String> = zones.iter().filter(|z| !self.healthy_zones.contains_key(*z)).collect();
        let sem = Semaphore::new(self.config.concurrency.max(1));
        let resolver = &self.resolver;
        let answers = futures::future::join_all(todo.iter().map(|zone| {
            let sem = &sem;
            async move {
                let _permit = sem.acquire().await.expect("semaphore never closed");
                (zone.to_string(), resolver.a(&query_name(IpAddr::V4(NEGATIVE_TEST_POINT), zone)).await)
            }
        }))
        .await;
        let mut out = BrokenZones { zones: BTreeMap::new(), probes: answers.len() };
        for (zone, answer) in answers {
            if let Some(reason) = broken_zone(&answer) {
                tracing::warn!(zone = %zone, reason = %reason, "dnsbl zone broken");
                out.zones.insert(zone, reason);
            } else if matches!(interpret_a(&answer), ZoneOutcome::Clean) {
                let secs = match &answer {
                    Answer::NxDomain { ttl } | Answer::NoData { ttl } => i64::from(ttl.unwrap_or(0)),
                    _ => 0,
                };
                let keep = SignedDuration::from_secs(secs).max(self.config.min_cache).min(self.config.max_cache);
                if let Ok(until) = now.checked_add(keep) {
                    self.healthy_zones.insert(zone, until);
                }
            }
        }
        out
    }
}

/// The zones found broken in one sweep (zone -> reason), and how many test
/// point queries it took.
struct BrokenZones {
    zones: BTreeMap<String, String>,
    probes: usize,
}
