//! Who is reporting in the /status payload ([`AgentStatus`], the
//! operator/agent contract): the schema version, pool and instance from the
//! policy in force (from the pod's env before one is installed), the pod's
//! name, and a session id that changes on every start, so the operator can
//! tell a restart from a steady agent and refuse a report from a pod it did
//! not mean to poll. The sections (config,
//! postfix, counters, queue, domains, log, adaptive) come from the concern
//! that owns each figure; `State::status` puts them over this header.
//!
//! It must never compute a section's figure, never take a lock or read the
//! shifted clock (the state hands it the time), and never put an address
//! in the payload.

use std::time::{SystemTime, UNIX_EPOCH};

use sendfleet_render::contract::{AgentStatus, STATUS_VERSION};
use sendfleet_render::policy::AgentPolicy;
use sha2::{Digest, Sha256};

use super::clock::wall_unix_now;

/// This run of the agent.
pub struct Identity {
    /// Random, chosen at start: a change tells the operator the agent restarted.
    pub session_id: String,
    /// Unix seconds (real time).
    pub started_at: u64,
    /// The pod (empty outside one).
    pub pod: String,
    /// Pool (`<namespace>/<name>`) and instance the pod was rendered for.
    pub pool: String,
    pub instance: String,
}

impl Identity {
    /// This run, in pod `pod` rendered for `pool`'s `instance`.
    pub fn of(pod: &str, pool: &str, instance: &str) -> Self {
        Identity { pod: pod.into(), pool: pool.into(), instance: instance.into(), ..Self::new() }
    }

    pub fn new() -> Self {
        let started_at = wall_unix_now();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(nanos.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        h.update(format!("{:p}", &started_at).as_bytes());
        let session_id = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Identity { session_id, started_at, pod: String::new(), pool: String::new(), instance: String::new() }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// The payload's header at `now` (the agent's clock) under `policy`: the
/// schema version and who is reporting. The caller fills in each concern's
/// section over it.
pub fn header(identity: &Identity, policy: Option<&AgentPolicy>, now: u64) -> AgentStatus {
    AgentStatus {
        version: STATUS_VERSION,
        pool: policy.map_or_else(|| identity.pool.clone(), |p| p.pool.clone()),
        instance: policy.map_or_else(|| identity.instance.clone(), |p| p.instance.clone()),
        session_id: identity.session_id.clone(),
        pod: identity.pod.clone(),
        started_at: identity.started_at,
        now,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_instance_and_this_run() {
        let id = Identity::new();
        let p = AgentPolicy { pool: "ns/pool".into(), instance: "mta1".into(), ..Default::default() };
        let h = header(&id, Some(&p), 42);
        assert_eq!((h.version, h.pool.as_str(), h.instance.as_str(), h.now), (STATUS_VERSION, "ns/pool", "mta1", 42));
        assert_eq!((h.session_id.as_str(), h.started_at), (id.session_id.as_str(), id.started_at));
        assert_eq!(header(&id, None, 42).instance, "", "no policy installed yet");
        let pod = Identity::of("pool-mta1-0", "ns/pool", "mta1");
        let h = header(&pod, None, 42);
        assert_eq!((h.pod.as_str(), h.pool.as_str(), h.instance.as_str()), ("pool-mta1-0", "ns/pool", "mta1"));
    }

    #[test]
    fn session_ids_differ_between_starts() {
        let (a, b) = (Identity::new(), Identity::new());
        assert_eq!(a.session_id.len(), 16, "{}", a.session_id);
        assert!(a.session_id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.session_id, b.session_id);
    }
}
