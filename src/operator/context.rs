//! What every controller shares: the API client, render settings, metrics,
//! the Event recorder, the DNS reputation state and the fleet index.
//!
//! One value per operator process, built in [`super::run`] and handed to
//! the SendingPool, DomainPolicy and WarmupPlan controllers alike: the pool
//! reconcile fills the fleet index from the agents' last polls, the other
//! two read it. The watch-fed caches belong to one leadership term: they are
//! set when the term's controllers start ([`Context::caches`]).

use std::sync::{Arc, RwLock};

use kube::runtime::events::Recorder;
use kube::Client;
use sendfleet_render::render::Settings;

use super::cache::Caches;
use super::fleet::FleetIndex;
use super::limits::Limits;
use super::metrics::Metrics;
use super::polls::Polls;
use super::reputation::Reputation;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// What the administrator allows pool authors (namespaces, images;
    /// placement is in `settings.node_selector`).
    pub limits: Limits,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// DNSBL and authentication state of every pool.
    pub reputation: Reputation,
    /// Requeue interval of a converged pool.
    pub resync: std::time::Duration,
    /// How often running instances' agents are polled (by the poller,
    /// `polling.rs`); also the longest a DomainPolicy or WarmupPlan status
    /// waits to be re-derived.
    pub agent_poll: std::time::Duration,
    /// What every instance's agent last decided on its own (exclusions,
    /// slow-downs, warm-up progress).
    pub fleet: FleetIndex,
    /// The last poll of every agent, filled by the poller.
    pub polls: Polls,
    /// The current leadership term's caches (`None` between terms).
    pub caches: RwLock<Option<Arc<Caches>>>,
}

impl Context {
    /// The caches of the running term. The controllers run only inside a
    /// term, after its caches were set and synced (`super::run_controller`).
    pub fn caches(&self) -> Arc<Caches> {
        self.caches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("caches are set before any controller runs")
    }
}
