//! DNS reputation and authentication of each pool, kept across reconciles:
//! a DNSBL checker (with its TTL cache) and a listing tracker (hysteresis)
//! per pool, swept every `spec.reputation.interval`.
//!
//! Findings are observations, never reconcile errors: a DNS outage leaves
//! the state as it was and becomes `Unknown` only after the tracker's
//! configured number of failed sweeps. A listing under `onListed:
//! Quarantine` takes the IP out of rotation (weight 0 in the rendered
//! policy, its queue relays through peers) until it has been clean for
//! `coolDown`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use sendfleet_render::api::{self, DomainPolicy, OnListed, SendingPool};
use sendfleet_render::routing::selected_policies;
use tokio::sync::Mutex;

use crate::dns::{
    check_authentication, DkimInput, DnsblChecker, DnsblConfig, EgressIp, HickoryDns, IpListing, ListingChange,
    ListingStatus, ListingTracker, PoolDnsSummary, RelayRoute, TrackerConfig,
};

/// What the reputation checks say about a pool right now.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Instances to take out of rotation, with the reason.
    pub quarantined: BTreeMap<String, String>,
    /// Current listings per instance, for status.
    pub listings: BTreeMap<String, Vec<api::Listing>>,
    /// Everything the last finished sweep found (`None` before the first):
    /// the pool's `Listed` and `AuthenticationValid` conditions.
    pub summary: Option<PoolDnsSummary>,
    /// Listing changes since the last call (one Event each).
    pub changes: Vec<String>,
    /// Zones checked by the last sweep.
    pub zones: Vec<String>,
    /// When the next sweep is due.
    pub next_sweep_in: Duration,
}

struct PoolState {
    checker: DnsblChecker<HickoryDns>,
    tracker: ListingTracker,
    summary: PoolDnsSummary,
    /// IPs seen listed and not yet through their cool-down. Only these cool
    /// down: an IP that was never listed is simply clean.
    cooling: std::collections::BTreeSet<IpAddr>,
}

/// One pool's checks. Sweeps run in a background task so a slow or dead
/// DNS server never holds up a reconcile: the reconcile reads the findings
/// of the last finished sweep.
struct PoolEntry {
    running: AtomicBool,
    last_start: std::sync::Mutex<Option<Instant>>,
    findings: std::sync::Mutex<Findings>,
    state: Mutex<PoolState>,
}

pub struct Reputation {
    dns: HickoryDns,
    /// Overrides every pool's interval (tests and demos only).
    interval_override: Option<Duration>,
    unknown_after: u32,
    pools: std::sync::Mutex<HashMap<String, Arc<PoolEntry>>>,
}

fn key(pool: &SendingPool) -> String {
    format!("{}/{}", pool.namespace().unwrap_or_default(), pool.name_any())
}

/// How soon to look again while a sweep is running.
const SWEEP_POLL: Duration = Duration::from_secs(2);

impl Reputation {
    pub fn new(dns: HickoryDns, interval_override: Option<Duration>, unknown_after: u32) -> Self {
        Reputation { dns, interval_override, unknown_after, pools: Default::default() }
    }

    fn interval(&self, pool: &SendingPool) -> Duration {
        self.interval_override.unwrap_or_else(|| {
            // The renderer refuses a malformed or too-short interval; the
            // default and floor here are the same constants it checks with.
            let secs = api::parse_duration(&pool.spec.reputation.interval)
                .unwrap_or(api::defaults::REPUTATION_INTERVAL.seconds())
                .max(api::limits::MIN_REPUTATION_INTERVAL_SECONDS);
            Duration::from_secs(secs)
        })
    }

    /// Start a sweep if one is due, and report the last finished one.
    /// `policies`: the namespace's DomainPolicies (their relay routes'
    /// addresses are checked against the sending domains' SPF).
    pub fn check(&self, client: &Client, pool: &SendingPool, policies: &[DomainPolicy]) -> Findings {
        let interval = self.interval(pool);
        let entry = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.entry(key(pool)).or_insert_with(|| Arc::new(self.new_entry(pool))).clone()
        };
        let since = {
            let mut last = entry.last_start.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= interval);
            if due && !entry.running.swap(true, Ordering::SeqCst) {
                *last = Some(Instant::now());
                let task = Sweep {
                    entry: entry.clone(),
                    dns: self.dns.clone(),
                    client: client.clone(),
                    pool: pool.clone(),
                    relays: relay_routes(pool, policies),
                    interval,
                };
                tokio::spawn(task.run());
            }
            last.map(|t| t.elapsed()).unwrap_or_default()
        };
        let mut stored = entry.findings.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = stored.clone();
        stored.changes.clear();
        f.next_sweep_in = if entry.running.load(Ordering::SeqCst) {
            SWEEP_POLL
        } else {
            interval.saturating_sub(since).max(Duration::from_secs(1))
        };
        f
    }

    fn new_entry(&self, pool: &SendingPool) -> PoolEntry {
        let mut tracker = ListingTracker::new(TrackerConfig { unknown_after: self.unknown_after });
        // Keep listings across operator restarts: they are in status.
        for inst in pool.status.iter().flat_map(|s| &s.instances) {
            if let Ok(ip) = inst.address.parse() {
                for l in &inst.listings {
                    if let Some(l) = crate::dns::Listing::from_status(l) {
                        tracker.restore_listing(ip, l);
                    }
                }
            }
        }
        PoolEntry {
            running: AtomicBool::new(false),
            last_start: Default::default(),
            findings: Default::default(),
            state: Mutex::new(PoolState {
                checker: DnsblChecker::new(self.dns.clone(), DnsblConfig::default()),
                tracker,
                summary: PoolDnsSummary::default(),
                cooling: Default::default(),
            }),
        }
    }
}

/// One background sweep of one pool.
struct Sweep {
    entry: Arc<PoolEntry>,
    dns: HickoryDns,
    client: Client,
    pool: SendingPool,
    relays: Vec<RelayRoute>,
    interval: Duration,
}

/// The relays the pool's valid DomainPolicies route to by address
/// (`route.relayHost` without `useMX`): mail they forward reaches receivers
/// from the relay's address.
fn relay_routes(pool: &SendingPool, policies: &[DomainPolicy]) -> Vec<RelayRoute> {
    let (valid, _) = selected_policies(pool, policies);
    valid
        .iter()
        .filter_map(|p| {
            let route = p.spec.route.as_ref().filter(|r| !r.use_mx)?;
            Some(RelayRoute { policy: p.name.to_string(), host: route.relay_host.clone()? })
        })
        .collect()
}

impl Sweep {
    async fn run(self) {
        let Sweep { entry, dns, client, pool, relays, interval } = self;
        let now = Timestamp::now();
        let egress: Vec<EgressIp> = pool
            .spec
            .egress_ips
            .iter()
            .filter_map(|e| {
                Some(EgressIp {
                    name: e.name.clone(),
                    address: e.address.parse().ok()?,
                    helo_name: e.helo_name.clone(),
                })
            })
            .collect();
        let ips: Vec<IpAddr> = egress.iter().map(|e| e.address).collect();
        let names: BTreeMap<IpAddr, String> = egress.iter().map(|e| (e.address, e.name.clone())).collect();
        let mut state = entry.state.lock().await;
        // Cache answers no longer than the sweep interval, so a delisting
        // is seen on the next sweep.
        let defaults = DnsblConfig::default();
        let every = SignedDuration::from_secs(interval.as_secs() as i64);
        let (min_cache, max_cache) = (defaults.min_cache.min(every), defaults.max_cache.min(every));
        let zones = pool.spec.reputation.zones.clone();
        state.checker.set_config(DnsblConfig { zones, min_cache, max_cache, ..defaults });
        state.tracker.retain_ips(&ips);
        let effective = state.checker.config().effective_zones();
        state.tracker.retain_zones(&effective);
        let report = state.checker.sweep(&ips, now).await;
        let changes: Vec<String> = state.tracker.observe(&report, now).iter().map(|c| describe(c, &names)).collect();
        let domains: Vec<String> = pool.spec.dkim.as_ref().map(|d| d.domains.clone()).unwrap_or_default();
        let dkim = dkim_input(&client, &pool).await;
        let mut summary =
            check_authentication(&dns, &egress, &domains, &relays, dkim.as_ref(), "sendfleet-operator").await;
        for (ip, s) in summary.ips.iter_mut() {
            s.listing = state.tracker.ip(*ip);
        }
        state.summary = summary;

        let now = Timestamp::now();
        let cool_down = SignedDuration::from_secs(
            api::parse_duration(&pool.spec.reputation.cool_down)
                .unwrap_or(api::defaults::REPUTATION_COOL_DOWN.seconds()) as i64,
        );
        let mut findings = Findings { zones: effective.clone(), ..Findings::default() };
        for e in &egress {
            let Some(listing) = state.tracker.ip(e.address) else { continue };
            findings.listings.insert(e.name.clone(), listing.listings.iter().map(|l| l.to_status()).collect());
            if listing.status == ListingStatus::Listed {
                state.cooling.insert(e.address);
            }
            let reason = quarantine_reason(&listing, state.cooling.contains(&e.address), cool_down, now);
            if reason.is_none() && listing.status == ListingStatus::Clean {
                state.cooling.remove(&e.address);
            }
            if pool.spec.reputation.on_listed == OnListed::Quarantine {
                if let Some(reason) = reason {
                    findings.quarantined.insert(e.name.clone(), reason);
                }
            }
        }
        findings.summary = Some(state.summary.clone());
        drop(state);
        {
            let mut stored = entry.findings.lock().unwrap_or_else(|p| p.into_inner());
            let mut pending = std::mem::take(&mut stored.changes);
            pending.extend(changes);
            findings.changes = pending;
            *stored = findings;
        }
        entry.running.store(false, Ordering::SeqCst);
    }
}

/// Out of rotation while listed, and (once it was listed) until clean for
/// the cool-down.
fn quarantine_reason(l: &IpListing, was_listed: bool, cool_down: SignedDuration, now: Timestamp) -> Option<String> {
    match l.status {
        ListingStatus::Listed => {
            let mut zones: Vec<&str> = l.listings.iter().map(|x| x.zone.as_str()).collect();
            zones.sort();
            Some(format!("listed in {}", zones.join(", ")))
        }
        ListingStatus::Clean if was_listed && !l.clean_for(cool_down, now) => {
            Some(format!("delisted; cooling down until clean for {}s", cool_down.as_secs()))
        }
        _ => None,
    }
}

fn describe(c: &ListingChange, names: &BTreeMap<IpAddr, String>) -> String {
    let name = |ip: &IpAddr| names.get(ip).map(|n| format!("{n} ({ip})")).unwrap_or_else(|| ip.to_string());
    match c {
        ListingChange::Listed { ip, listing } => format!("{} listed in {}", name(ip), listing.zone),
        ListingChange::Delisted { ip, zone, .. } => format!("{} delisted from {zone}", name(ip)),
        ListingChange::BecameUnknown { ip, zone, reason } => format!("{} unknown in {zone}: {reason}", name(ip)),
        other => format!("{other:?}"),
    }
}

/// The DKIM private key from the pool's Secret, if configured and readable.
async fn dkim_input(client: &Client, pool: &SendingPool) -> Option<DkimInput> {
    let d = pool.spec.dkim.as_ref()?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &pool.namespace()?);
    let secret = api.get_opt(&d.secret_name).await.ok()??;
    let pem = secret.data?.remove("private.key")?.0;
    Some(DkimInput { selector: d.selector.clone(), private_key_pem: pem })
}
