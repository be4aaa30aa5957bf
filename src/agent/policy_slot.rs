//! The policy in force: the `policy.json` the installer last accepted, held
//! behind one swap point every task reads from.
//!
//! Readers take an `Arc` and drop the lock at once, so a lookup or a log
//! line never waits for an install, and a policy swapped mid-lookup is seen
//! whole or not at all. This module must never validate or interpret a
//! policy (the installer validates; decisions, the day ledger and the
//! report read it) and never hold its lock beyond the copy of the `Arc`.

use std::sync::{Arc, RwLock};

use sendfleet_render::policy::{AgentPolicy, WarmupPolicy};

/// `None` until the first config is installed.
#[derive(Default)]
pub struct PolicySlot(RwLock<Option<Arc<AgentPolicy>>>);

impl PolicySlot {
    /// The policy in force, if any.
    pub fn get(&self) -> Option<Arc<AgentPolicy>> {
        // A panic elsewhere must not take the mail path down with it.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put `policy` in force.
    pub fn set(&self, policy: AgentPolicy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(policy));
    }
}

/// The warm-up part of an optional policy.
pub fn plan(policy: Option<&AgentPolicy>) -> Option<&WarmupPolicy> {
    policy.and_then(|p| p.warmup.as_ref())
}
