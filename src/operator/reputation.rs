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
//!
//! No address is in rotation before its first finished DNSBL check
//! ([`Findings::checked`]: Pending is not clean). What must survive an
//! operator restart or a leader change is kept in the pool's status, by
//! address, and restored when the pool is first seen: when each address was
//! first checked (`status.instances[].checkedSince`), which addresses are
//! quarantined (`quarantine`), and since when a delisted one has been clean
//! (`coolDownSince`), so a restart neither puts a cooling IP back into
//! rotation nor holds every checked IP out until the next sweep.

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
    ListingStatus, ListingTracker, PoolDnsSummary, PublicKey, RelayRoute, TrackerConfig,
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
    /// Address -> when its DNSBL check first finished (every zone
    /// answered). An address not here sends nothing.
    pub checked: BTreeMap<String, Timestamp>,
    /// Instance -> since when its quarantined (delisted) address has been
    /// clean: the cool-down runs from here.
    pub cool_down_since: BTreeMap<String, Timestamp>,
    /// The public half of the DKIM key the last sweep read from the pool's
    /// Secret (never the private key): the value of the pool's DKIM record
    /// in `status.dnsRecords` and its `DNSEndpoint`.
    pub dkim_key: Option<DkimKey>,
}

/// A DKIM public key and where it was read: a spec that since names
/// another Secret or selector must not get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimKey {
    pub secret_name: String,
    pub selector: String,
    pub key: PublicKey,
}

impl Findings {
    /// The DKIM public key for `pool`'s current `spec.dkim` (same Secret
    /// and selector as read), if the last sweep could read one.
    pub fn dkim_public_key(&self, pool: &SendingPool) -> Option<&PublicKey> {
        let d = pool.spec.dkim.as_ref()?;
        self.dkim_key.as_ref().filter(|k| k.secret_name == d.secret_name && k.selector == d.selector).map(|k| &k.key)
    }
}

struct PoolState {
    checker: DnsblChecker<HickoryDns>,
    tracker: ListingTracker,
    summary: PoolDnsSummary,
    /// IPs seen listed and not yet through their cool-down. Only these cool
    /// down: an IP that was never listed is simply clean.
    cooling: std::collections::BTreeSet<IpAddr>,
    /// Cool-down starts restored from status (the tracker restarts its
    /// clean-since times); dropped when the IP is listed again.
    restored_clean_since: BTreeMap<IpAddr, Timestamp>,
    /// When each IP's check first finished.
    checked: BTreeMap<IpAddr, Timestamp>,
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
        // Keep listings across operator restarts: they are in status, by
        // instance; the listed address is the one receivers see.
        for inst in pool.status.iter().flat_map(|s| &s.instances) {
            let spec = pool.spec.egress_ips.iter().find(|e| e.name == inst.name);
            if let Ok(ip) = spec.map_or(inst.address.as_str(), |e| e.seen_address()).parse() {
                for l in &inst.listings {
                    if let Some(l) = crate::dns::Listing::from_status(l) {
                        tracker.restore_listing(ip, l);
                    }
                }
            }
        }
        let restored = Restored::from_status(pool);
        PoolEntry {
            running: AtomicBool::new(false),
            last_start: Default::default(),
            findings: std::sync::Mutex::new(restored.findings(pool)),
            state: Mutex::new(PoolState {
                checker: DnsblChecker::new(self.dns.clone(), DnsblConfig::default()),
                tracker,
                summary: PoolDnsSummary::default(),
                cooling: restored.cooling.clone(),
                restored_clean_since: restored.clean_since.clone(),
                checked: restored.checked.clone(),
            }),
        }
    }
}

/// What a pool's status says about its addresses' reputation, by address:
/// the state an operator restart must not lose.
#[derive(Clone, Debug, Default, PartialEq)]
struct Restored {
    checked: BTreeMap<IpAddr, Timestamp>,
    cooling: std::collections::BTreeSet<IpAddr>,
    clean_since: BTreeMap<IpAddr, Timestamp>,
    /// Address -> the quarantine reason shown (without the `Quarantined: ` prefix).
    quarantined: BTreeMap<IpAddr, String>,
}

/// The prefix `render.rs` gives a quarantine's reason in the instance rows.
const QUARANTINED: &str = "Quarantined: ";

impl Restored {
    fn from_status(pool: &SendingPool) -> Self {
        let mut r = Restored::default();
        for inst in pool.status.iter().flat_map(|s| &s.instances) {
            let Ok(ip) = inst.address.parse::<IpAddr>() else { continue };
            if let Some(t) = inst.checked_since.as_deref().and_then(|t| t.parse().ok()) {
                r.checked.insert(ip, t);
            }
            let since = inst.cool_down_since.as_deref().and_then(|t| t.parse().ok());
            let quarantined = inst.quarantine.as_deref().and_then(|q| q.strip_prefix(QUARANTINED));
            if let Some(reason) = quarantined {
                r.quarantined.insert(ip, reason.to_string());
            }
            if quarantined.is_some() || since.is_some() {
                r.cooling.insert(ip);
            }
            if let Some(t) = since {
                r.clean_since.insert(ip, t);
            }
        }
        r
    }

    /// The findings until the first sweep after a restart finishes: the
    /// restored quarantines hold, the checked addresses stay checked.
    fn findings(&self, pool: &SendingPool) -> Findings {
        let mut f = Findings::default();
        for e in &pool.spec.egress_ips {
            let Ok(ip) = e.address.parse::<IpAddr>() else { continue };
            if let Some(t) = self.checked.get(&ip) {
                f.checked.insert(e.address.clone(), *t);
            }
            if let Some(reason) = self.quarantined.get(&ip) {
                f.quarantined.insert(e.name.clone(), reason.clone());
            }
            if let Some(t) = self.clean_since.get(&ip) {
                f.cool_down_since.insert(e.name.clone(), *t);
            }
        }
        f
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
                    // Receivers, DNSBLs and PTR/SPF see the public
                    // address (a cloud's NAT), not the one Postfix binds.
                    address: e.seen_address().parse().ok()?,
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
        let dkim_key = pool.spec.dkim.as_ref().zip(dkim.as_ref()).and_then(|(d, input)| {
            let key = input.public_key.clone().ok()?;
            Some(DkimKey { secret_name: d.secret_name.clone(), selector: d.selector.clone(), key })
        });
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
        let mut findings = Findings { zones: effective.clone(), dkim_key, ..Findings::default() };
        for e in &egress {
            let Some(listing) = state.tracker.ip(e.address) else { continue };
            findings.listings.insert(e.name.clone(), listing.listings.iter().map(|l| l.to_status()).collect());
            if matches!(listing.status, ListingStatus::Clean | ListingStatus::Listed) {
                state.checked.entry(e.address).or_insert(now);
            }
            if let Some(t) = state.checked.get(&e.address) {
                findings.checked.insert(e.address.to_string(), *t);
            }
            if listing.status == ListingStatus::Listed {
                state.cooling.insert(e.address);
                state.restored_clean_since.remove(&e.address);
            }
            let cooling = state.cooling.contains(&e.address);
            // A cool-down restored from status started before the tracker's.
            let clean_since = match listing.status {
                ListingStatus::Clean => state.restored_clean_since.get(&e.address).copied().or(listing.clean_since),
                _ => None,
            };
            let reason = quarantine_reason(&listing, cooling, clean_since, cool_down, now);
            match (&reason, clean_since) {
                (None, _) if listing.status == ListingStatus::Clean => {
                    state.cooling.remove(&e.address);
                    state.restored_clean_since.remove(&e.address);
                }
                (Some(_), Some(since)) => {
                    findings.cool_down_since.insert(e.name.clone(), since);
                }
                _ => {}
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
/// the cool-down since `clean_since`. A cooling IP whose zones do not all
/// answer (pending after a restart, unknown in an outage) stays out: only a
/// clean answer ends a cool-down.
fn quarantine_reason(
    l: &IpListing,
    was_listed: bool,
    clean_since: Option<Timestamp>,
    cool_down: SignedDuration,
    now: Timestamp,
) -> Option<String> {
    let cooling = || format!("delisted; cooling down until clean for {}s", cool_down.as_secs());
    match l.status {
        ListingStatus::Listed => {
            let mut zones: Vec<&str> = l.listings.iter().map(|x| x.zone.as_str()).collect();
            zones.sort();
            Some(format!("listed in {}", zones.join(", ")))
        }
        _ if !was_listed => None,
        ListingStatus::Clean => match clean_since {
            Some(since) if now.duration_since(since) >= cool_down => None,
            _ => Some(cooling()),
        },
        ListingStatus::Pending | ListingStatus::Unknown => Some(cooling()),
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

/// The public half of the DKIM key in the pool's Secret, if configured and
/// readable. Only the selector's entry is taken from the Secret — the one
/// the instances sign with: `<selector>.key`, else `private.key`
/// (`src/agent/signer.rs`) — the rest is dropped at once, and the private
/// key only lives until its public half is derived (`DkimInput::from_pem`
/// wipes it); it is never logged.
async fn dkim_input(client: &Client, pool: &SendingPool) -> Option<DkimInput> {
    use sendfleet_render::dkim::{secret_key_for, SECRET_DEFAULT_KEY};
    let d = pool.spec.dkim.as_ref()?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &pool.namespace()?);
    let secret = api.get_opt(&d.secret_name).await.ok()??;
    let mut data = secret.data?;
    let pem = data.remove(&secret_key_for(&d.selector)).or_else(|| data.remove(SECRET_DEFAULT_KEY))?.0;
    drop(data);
    Some(DkimInput::from_pem(d.selector.clone(), pem))
}
