//! What every controller shares: the API client, render settings, metrics,
//! the Event recorder, the DNS reputation state and the fleet index.
//!
//! One value per operator process, built in [`super::run`] and handed to
//! the SendingPool, DomainPolicy and WarmupPlan controllers alike: the pool
//! reconcile fills the fleet index from the agents, the other two read it.

use kube::runtime::events::Recorder;
use kube::Client;
use sendfleet_render::render::Settings;

use super::fleet::FleetIndex;
use super::metrics::Metrics;
use super::reputation::Reputation;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// DNSBL and authentication state of every pool.
    pub reputation: Reputation,
    /// Requeue interval of a converged pool.
    pub resync: std::time::Duration,
    /// How often running instances' agents are polled; also the longest a
    /// DomainPolicy or WarmupPlan status waits to be re-derived.
    pub agent_poll: std::time::Duration,
    /// What every instance's agent last decided on its own (exclusions,
    /// slow-downs, warm-up progress).
    pub fleet: FleetIndex,
}
