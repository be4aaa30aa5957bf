//! Listing state per IP across sweeps, with hysteresis.
//!
//! [`ListingTracker`] folds [`SweepReport`]s into a per-(IP, zone) state and
//! reports what changed. Rules:
//! - a definite answer (listed / clean) is taken at once;
//! - a failed answer (timeout, SERVFAIL, refusal) never flips a state on its
//!   own: the previous state stands until `unknown_after` consecutive sweeps
//!   failed for that (IP, zone), and only then does it become `Unknown`;
//! - a broken zone (it lists its negative test point) is `Unknown` at once,
//!   with the zone's fault as the reason: its listings no longer stand;
//! - a delisting is reported with the time the IP was first seen clean, so
//!   the operator can hold an IP out of rotation for a cool-down period.
//!
//! Pure: no I/O, no clock (`now` is passed in), no DNS. It must never decide
//! what to do about a listing (quarantine or alert is the operator's policy).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use jiff::{SignedDuration, Timestamp};

use super::dnsbl::{SweepReport, ZoneOutcome};

/// Tracker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Consecutive failed sweeps of one (IP, zone) before its state becomes
    /// `Unknown` (>= 1). Below that, the previous state stands.
    pub unknown_after: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self { unknown_after: 3 }
    }
}

/// One listing of one IP in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub zone: String,
    /// Return codes (127.0.0.x), sorted; never empty.
    pub codes: Vec<Ipv4Addr>,
    /// The TXT reason the list published, if any.
    pub reason: Option<String>,
    /// When this listing was first seen.
    pub first_seen: Timestamp,
}

impl Listing {
    /// The pool-status form (`status.instances[].listings[]`): codes joined
    /// with commas, `since` in RFC 3339.
    pub fn to_status(&self) -> sendfleet_render::api::Listing {
        sendfleet_render::api::Listing {
            zone: self.zone.clone(),
            code: self.codes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
            reason: self.reason.clone(),
            since: self.first_seen.to_string(),
        }
    }

    /// Read a listing back from the pool status (for
    /// [`ListingTracker::restore_listing`] after a restart). `None` if the
    /// stored values do not parse.
    pub fn from_status(s: &sendfleet_render::api::Listing) -> Option<Self> {
        let codes: Option<Vec<Ipv4Addr>> = s.code.split(',').map(|c| c.trim().parse().ok()).collect();
        let codes = codes.filter(|c| !c.is_empty())?;
        Some(Self { zone: s.zone.clone(), codes, reason: s.reason.clone(), first_seen: s.since.parse().ok()? })
    }
}

/// State of one (IP, zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneState {
    /// No definite answer yet, and fewer than `unknown_after` failures.
    Pending,
    /// Not listed, since `since` (first clean answer after a listing, an
    /// unknown period, or the start).
    Clean {
        since: Timestamp,
    },
    Listed(Listing),
    /// `unknown_after` consecutive sweeps failed.
    Unknown {
        reason: String,
        since: Timestamp,
    },
}

/// What changed for one (IP, zone) in one sweep. Meant for Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingChange {
    /// Newly listed (or listed again after being clean).
    Listed { ip: IpAddr, listing: Listing },
    /// A listing is gone; `clean_since` starts the cool-down.
    Delisted { ip: IpAddr, zone: String, listed_since: Timestamp, clean_since: Timestamp },
    /// The zone could not be checked for `unknown_after` sweeps in a row.
    BecameUnknown { ip: IpAddr, zone: String, reason: String },
    /// A definite answer again after an unknown period, and it is clean
    /// (a listing after unknown is reported as `Listed`).
    Recovered { ip: IpAddr, zone: String },
}

#[derive(Debug, Clone)]
struct ZoneTrack {
    state: ZoneState,
    failures: u32,
    /// The listing the state had before it turned unknown, so a listing seen
    /// again after an outage keeps its first-seen time.
    listed_before_unknown: Option<Listing>,
}

impl ZoneTrack {
    fn new() -> Self {
        Self { state: ZoneState::Pending, failures: 0, listed_before_unknown: None }
    }
}

/// Overall listing status of one IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListingStatus {
    /// Listed in at least one zone.
    Listed,
    /// Not listed anywhere we could tell, and at least one zone unknown.
    Unknown,
    /// Not all zones answered yet (first sweeps), none listed or unknown.
    Pending,
    /// Every zone answered clean.
    Clean,
}

/// The view of one IP the operator turns into status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpListing {
    pub ip: IpAddr,
    pub status: ListingStatus,
    /// Current listings, sorted by zone.
    pub listings: Vec<Listing>,
    /// Zones whose state is unknown, with the reason, sorted by zone.
    pub unknown: Vec<(String, String)>,
    /// When every zone was last seen to be clean together: the latest of the
    /// zones' clean-since times. `None` unless `status` is `Clean`.
    pub clean_since: Option<Timestamp>,
}

impl IpListing {
    /// True when the IP is clean and has been for at least `cool_down`.
    pub fn clean_for(&self, cool_down: SignedDuration, now: Timestamp) -> bool {
        match self.clean_since {
            Some(since) => now.duration_since(since) >= cool_down,
            None => false,
        }
    }
}

/// Per-IP, per-zone listing state with hysteresis.
#[derive(Debug, Clone, Default)]
pub struct ListingTracker {
    config: TrackerConfig,
    ips: BTreeMap<IpAddr, BTreeMap<String, ZoneTrack>>,
}

impl ListingTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self { config, ips: BTreeMap::new() }
    }

    /// Seed a listing known from before (e.g. read back from the pool's
    /// status after an operator restart), so `first_seen` survives restarts.
    pub fn restore_listing(&mut self, ip: IpAddr, listing: Listing) {
        let track = self.ips.entry(ip).or_default().entry(listing.zone.clone()).or_insert_with(ZoneTrack::new);
        track.state = ZoneState::Listed(listing);
        track.failures = 0;
    }

    /// Forget IPs that are no longer in the pool.
    pub fn retain_ips(&mut self, keep: &[IpAddr]) {
        self.ips.retain(|ip, _| keep.contains(ip));
    }

    /// Forget zones that are no longer configured (their listings with them).
    pub fn retain_zones(&mut self, zones: &[String]) {
        for tracks in self.ips.values_mut() {
            tracks.retain(|zone, _| zones.contains(zone));
        }
    }

    /// Fold one sweep in; returns what changed, sorted by IP then zone.
    pub fn observe(&mut self, report: &SweepReport, now: Timestamp) -> Vec<ListingChange> {
        let unknown_after = self.config.unknown_after.max(1);
        let mut changes = Vec::new();
        for (ip, zones) in &report.outcomes {
            let tracks = self.ips.entry(*ip).or_default();
            for (zone, outcome) in zones {
                let track = tracks.entry(zone.clone()).or_insert_with(ZoneTrack::new);
                if let Some(change) = step(track, *ip, zone, outcome, now, unknown_after) {
                    changes.push(change);
                }
            }
        }
        changes
    }

    /// The view of one IP (`None` if never observed).
    pub fn ip(&self, ip: IpAddr) -> Option<IpListing> {
        self.ips.get(&ip).map(|zones| view(ip, zones))
    }

    /// Views of every tracked IP, sorted by IP.
    pub fn all(&self) -> Vec<IpListing> {
        self.ips.iter().map(|(ip, z)| view(*ip, z)).collect()
    }

    /// The raw state of one (IP, zone).
    pub fn zone_state(&self, ip: IpAddr, zone: &str) -> Option<&ZoneState> {
        self.ips.get(&ip)?.get(zone).map(|t| &t.state)
    }
}

fn step(
    track: &mut ZoneTrack,
    ip: IpAddr,
    zone: &str,
    outcome: &ZoneOutcome,
    now: Timestamp,
    unknown_after: u32,
) -> Option<ListingChange> {
    match outcome {
        ZoneOutcome::NotChecked => None,
        ZoneOutcome::Listed { codes, reason } => {
            track.failures = 0;
            let earlier = match &track.state {
                ZoneState::Listed(l) => Some(l.first_seen),
                ZoneState::Unknown { .. } => track.listed_before_unknown.as_ref().map(|l| l.first_seen),
                _ => None,
            };
            let was_listed = matches!(track.state, ZoneState::Listed(_));
            let was_unknown_listed = matches!(track.state, ZoneState::Unknown { .. }) && earlier.is_some();
            let listing = Listing {
                zone: zone.to_string(),
                codes: codes.clone(),
                reason: reason.clone(),
                first_seen: earlier.unwrap_or(now),
            };
            track.state = ZoneState::Listed(listing.clone());
            track.listed_before_unknown = None;
            if was_listed || was_unknown_listed {
                None
            } else {
                Some(ListingChange::Listed { ip, listing })
            }
        }
        ZoneOutcome::Clean => {
            track.failures = 0;
            let prev = std::mem::replace(&mut track.state, ZoneState::Pending);
            let listed_before = track.listed_before_unknown.take();
            match prev {
                ZoneState::Clean { since } => {
                    track.state = ZoneState::Clean { since };
                    None
                }
                ZoneState::Pending => {
                    track.state = ZoneState::Clean { since: now };
                    None
                }
                ZoneState::Listed(l) => {
                    track.state = ZoneState::Clean { since: now };
                    Some(ListingChange::Delisted {
                        ip,
                        zone: zone.to_string(),
                        listed_since: l.first_seen,
                        clean_since: now,
                    })
                }
                ZoneState::Unknown { .. } => {
                    track.state = ZoneState::Clean { since: now };
                    Some(match listed_before {
                        Some(l) => ListingChange::Delisted {
                            ip,
                            zone: zone.to_string(),
                            listed_since: l.first_seen,
                            clean_since: now,
                        },
                        None => ListingChange::Recovered { ip, zone: zone.to_string() },
                    })
                }
            }
        }
        // A broken zone is a definite fact about the zone: unknown at once,
        // and whatever it listed before no longer stands.
        ZoneOutcome::Refused { .. } | ZoneOutcome::Failed { .. } | ZoneOutcome::Broken { .. } => {
            track.failures = match outcome {
                ZoneOutcome::Broken { .. } => unknown_after.max(1),
                _ => track.failures.saturating_add(1),
            };
            let reason = outcome.failure_reason().unwrap_or_default();
            match &mut track.state {
                ZoneState::Unknown { reason: r, .. } => {
                    // Keep `since`; refresh the reason so the message is current.
                    *r = reason;
                    None
                }
                _ if track.failures >= unknown_after => {
                    let prev =
                        std::mem::replace(&mut track.state, ZoneState::Unknown { reason: reason.clone(), since: now });
                    if let ZoneState::Listed(l) = prev {
                        track.listed_before_unknown = Some(l);
                    }
                    Some(ListingChange::BecameUnknown { ip, zone: zone.to_string(), reason })
                }
                _ => None,
            }
        }
    }
}

fn view(ip: IpAddr, zones: &BTreeMap<String, ZoneTrack>) -> IpListing {
    let mut listings = Vec::new();
    let mut unknown = Vec::new();
    let mut pending = false;
    let mut clean_since: Option<Timestamp> = None;
    for (zone, t) in zones {
        match &t.state {
            ZoneState::Listed(l) => listings.push(l.clone()),
            ZoneState::Unknown { reason, .. } => unknown.push((zone.clone(), reason.clone())),
            ZoneState::Pending => pending = true,
            ZoneState::Clean { since } => {
                clean_since = Some(clean_since.map_or(*since, |c| c.max(*since)));
            }
        }
    }
    let status = if !listings.is_empty() {
        ListingStatus::Listed
    } else if !unknown.is_empty() {
        ListingStatus::Unknown
    } else if pending || zones.is_empty() {
        ListingStatus::Pending
    } else {
        ListingStatus::Clean
    };
    IpListing {
        ip,
        status,
        listings,
        unknown,
        clean_since: if status == ListingStatus::Clean { clean_since } else { None },
    }
}
