//! DNS checks of a sending pool: DNS blocklists (DNSBL), reverse DNS
//! (PTR/FCrDNS), SPF, DKIM and DMARC.
//!
//! Layout:
//! - [`resolver`]: the [`Resolver`] trait, the real hickory-backed
//!   [`HickoryDns`] and the zone-text [`ZoneResolver`] for unit tests;
//! - [`dnsbl`]: sweeps with bounded concurrency, per-zone budget and a TTL
//!   cache; answer interpretation;
//! - [`listing`]: the pure [`ListingTracker`] (per-IP state, hysteresis,
//!   delisting times for the cool-down);
//! - [`ptr`], [`spf`], [`dkim`], [`dmarc`]: one check each; [`auth`] runs
//!   them for a pool and lists the records a pool needs published;
//! - [`summary`]: a pool's findings and the pure functions producing the
//!   `Listed` and `AuthenticationValid` conditions' status/reason/message.
//!
//! Findings are typed values, never errors: a timeout is an `Unknown` with a
//! reason, not an `Err`. Time is always passed in. This module must never act
//! on a finding (quarantine, Events, status writes are the operator's), never
//! read a clock, and never query anything but the configured nameservers.
#![forbid(unsafe_code)]

pub mod auth;
pub mod dkim;
pub mod dmarc;
pub mod dnsbl;
pub mod listing;
pub mod ptr;
pub mod records;
pub mod resolver;
pub mod spf;
pub mod summary;

pub use auth::{check_authentication, required_records, DkimInput, EgressIp, RelayRoute, TxtRecord};
pub use dkim::{check_dkim, public_key_from_pem, DkimVerdict, KeyType, PublicKey};
pub use dmarc::{check_dmarc, DmarcPolicy, DmarcRecord, DmarcVerdict};
pub use dnsbl::{DnsblChecker, DnsblConfig, SweepReport, ZoneOutcome, DEFAULT_ZONES};
pub use listing::{IpListing, Listing, ListingChange, ListingStatus, ListingTracker, TrackerConfig, ZoneState};
pub use ptr::{check_ptr, PtrVerdict};
pub use resolver::{Answer, HickoryDns, LookupFailure, Resolver, ResolverError, ResolverSettings, ZoneResolver};
pub use spf::{check_spf, spf_record, SpfCheck, SpfVerdict};
pub use summary::{
    authentication_condition, listed_condition, DomainSummary, IpSummary, PoolDnsSummary, RelayAddresses, RelaySummary,
};
