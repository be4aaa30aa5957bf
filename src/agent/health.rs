//! Is the agent alive (and are all its own tasks), is it ready, what config
//! does Postfix run, is Postfix running: the facts behind /healthz, /readyz
//! and the `config` and `postfix` sections of /status.
//!
//! Written by the installer, the supervisor and the socketmap server; read
//! by the probes and the report. Never on the mail path: nothing a lookup
//! or a log line does takes this module's lock. It must never decide
//! whether to install or restart anything (install and supervise do), only
//! record what they did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use sendfleet_render::contract::{ConfigStatus, PostfixStatus, RefusedConfig};

use super::metrics::{Metrics, ResultLabels, TaskLabels};

#[derive(Default)]
struct Facts {
    config: ConfigStatus,
    postfix: PostfixStatus,
    /// The agent's own tasks that ended (they must run as long as it does).
    ended_tasks: Vec<&'static str>,
}

/// Liveness and readiness flags, the config loaded, Postfix's state.
#[derive(Default)]
pub struct Health {
    live: AtomicBool,
    socket_ready: AtomicBool,
    facts: Mutex<Facts>,
}

impl Health {
    fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_live(&self, v: bool) {
        self.live.store(v, Ordering::Relaxed);
    }
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
    pub fn set_socket_ready(&self, v: bool) {
        self.socket_ready.store(v, Ordering::Relaxed);
    }

    /// One of the agent's own tasks (`task`: a fixed name) ended: the agent
    /// is no longer healthy, so the liveness probe restarts the pod.
    pub fn task_ended(&self, metrics: &Metrics, task: &'static str) {
        metrics.tasks_ended.get_or_create(&TaskLabels { task }).inc();
        self.facts().ended_tasks.push(task);
    }

    /// Healthy (liveness): alive, and every task of the agent still runs.
    pub fn is_healthy(&self) -> bool {
        self.is_live() && self.facts().ended_tasks.is_empty()
    }

    /// Ready: alive, socket listening, a config installed, Postfix running
    /// (or `supervised` is false: Postfix runs elsewhere).
    pub fn is_ready(&self, supervised: bool) -> bool {
        if !self.is_live() || !self.socket_ready.load(Ordering::Relaxed) {
            return false;
        }
        let f = self.facts();
        f.config.loaded_hash.is_some() && (f.postfix.running || !supervised)
    }

    pub fn set_postfix_running(&self, metrics: &Metrics, running: bool) {
        metrics.postfix_up.set(i64::from(running));
        self.facts().postfix.running = running;
    }
    pub fn postfix_exited(&self, metrics: &Metrics) {
        self.facts().postfix.exits += 1;
        self.set_postfix_running(metrics, false);
    }
    pub fn postfix_running(&self) -> bool {
        self.facts().postfix.running
    }
    pub fn postfix_exits(&self) -> u64 {
        self.facts().postfix.exits
    }
    pub fn postfix_reloaded(&self) {
        self.facts().postfix.reloads += 1;
    }

    pub fn loaded_hash(&self) -> Option<String> {
        self.facts().config.loaded_hash.clone()
    }
    pub fn refused_hash(&self) -> Option<String> {
        self.facts().config.refused.as_ref().map(|r| r.hash.clone())
    }

    /// Config `hash` is installed and loaded, at `at` (Unix seconds).
    pub fn config_installed(&self, metrics: &Metrics, hash: String, at: u64) {
        metrics.config_installs.get_or_create(&ResultLabels { result: "installed" }).inc();
        let mut f = self.facts();
        f.config.loaded_hash = Some(hash);
        f.config.loaded_at = Some(at);
        f.config.installs += 1;
        f.config.refused = None;
    }

    /// Config `hash` was refused at `at`; the previous one stays loaded.
    pub fn config_refused(&self, metrics: &Metrics, hash: String, at: u64, reason: &str, message: String) {
        metrics.config_installs.get_or_create(&ResultLabels { result: "refused" }).inc();
        self.facts().config.refused = Some(RefusedConfig { hash, at, reason: reason.to_string(), message });
    }

    /// The `config` and `postfix` sections of /status.
    pub fn report(&self) -> (ConfigStatus, PostfixStatus) {
        let f = self.facts();
        (f.config.clone(), f.postfix.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_life_socket_config_and_a_running_postfix() {
        let (h, m) = (Health::default(), Metrics::new());
        h.set_live(true);
        h.set_socket_ready(true);
        assert!(!h.is_ready(true), "no config installed");
        h.config_installed(&m, "abc".into(), 1);
        assert!(!h.is_ready(true), "postfix not running");
        assert!(h.is_ready(false), "postfix runs elsewhere");
        h.set_postfix_running(&m, true);
        assert!(h.is_ready(true));
        h.postfix_exited(&m);
        assert!(!h.is_ready(true));
        h.set_socket_ready(false);
        assert!(!h.is_ready(false));
        let (_, postfix) = h.report();
        assert_eq!((postfix.running, postfix.exits), (false, 1));
    }

    #[test]
    fn an_ended_task_makes_the_agent_unhealthy_for_good() {
        let (h, m) = (Health::default(), Metrics::new());
        assert!(!h.is_healthy(), "not live yet");
        h.set_live(true);
        assert!(h.is_healthy());
        h.task_ended(&m, "queue monitor");
        assert!(!h.is_healthy());
        assert!(m.encode().contains("sendfleet_agent_tasks_ended_total{task=\"queue monitor\"} 1"), "{}", m.encode());
    }

    #[test]
    fn a_refusal_is_cleared_by_the_next_install() {
        let (h, m) = (Health::default(), Metrics::new());
        h.config_installed(&m, "old".into(), 1);
        h.config_refused(&m, "bad".into(), 2, "MainCfInvalid", "postconf: error".into());
        assert_eq!((h.loaded_hash().as_deref(), h.refused_hash().as_deref()), (Some("old"), Some("bad")));
        h.config_installed(&m, "new".into(), 3);
        let (config, _) = h.report();
        assert_eq!((config.loaded_hash.as_deref(), config.installs, config.refused), (Some("new"), 2, None));
        let text = m.encode();
        assert!(text.contains("sendfleet_agent_config_installs_total{result=\"refused\"} 1"), "{text}");
    }
}
