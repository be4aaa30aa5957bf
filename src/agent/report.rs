//! The /status payload ([`AgentStatus`], the operator/agent contract):
//! who this agent is (pool, instance, a session id that changes on every
//! start) and each concern's section, assembled in one place.
//!
//! It must never compute a figure (each concern reports its own section),
//! never take a lock or read a clock (the state hands it snapshots and the
//! time), and never put an address in the payload: domains, rule names,
//! counts, hashes.

use std::time::{SystemTime, UNIX_EPOCH};

use sendfleet_render::contract::{
    AdaptiveStatus, AgentStatus, ConfigStatus, DeliveryCounters, DomainHealth, LogStats, PostfixStatus, QueueStatus,
    STATUS_VERSION,
};
use sendfleet_render::policy::AgentPolicy;
use sha2::{Digest, Sha256};

use super::clock::wall_unix_now;

/// This run of the agent.
pub struct Identity {
    /// Random, chosen at start: a change tells the operator the agent restarted.
    pub session_id: String,
    /// Unix seconds (real time).
    pub started_at: u64,
}

impl Identity {
    pub fn new() -> Self {
        let started_at = wall_unix_now();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(nanos.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        h.update(format!("{:p}", &started_at).as_bytes());
        let session_id = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Identity { session_id, started_at }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// Each concern's section of the payload, snapshotted by its owner.
pub struct Sections {
    pub config: ConfigStatus,
    pub postfix: PostfixStatus,
    pub counters: DeliveryCounters,
    pub queue: QueueStatus,
    pub domains: Vec<DomainHealth>,
    pub log: LogStats,
    pub adaptive: AdaptiveStatus,
}

/// The payload at `now` (the agent's clock) under `policy`.
pub fn build(identity: &Identity, policy: Option<&AgentPolicy>, now: u64, s: Sections) -> AgentStatus {
    // Destructured without `..`: a new section cannot be left out.
    let Sections { config, postfix, counters, queue, domains, log, adaptive } = s;
    AgentStatus {
        version: STATUS_VERSION,
        pool: policy.map(|p| p.pool.clone()).unwrap_or_default(),
        instance: policy.map(|p| p.instance.clone()).unwrap_or_default(),
        session_id: identity.session_id.clone(),
        started_at: identity.started_at,
        now,
        config,
        postfix,
        counters,
        queue,
        domains,
        log,
        adaptive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_differ_between_starts() {
        let (a, b) = (Identity::new(), Identity::new());
        assert_eq!(a.session_id.len(), 16, "{}", a.session_id);
        assert!(a.session_id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.session_id, b.session_id);
    }
}
