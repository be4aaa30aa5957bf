//! The handle every task of the agent holds (`Arc<State>`): the flags, the
//! clock, the metrics registry, and the concerns below, each behind the
//! lock that fits how it is used. It composes them and owns the locking;
//! what each one knows lives in its own module:
//!
//! - [`policy_slot`](super::policy_slot): the policy in force;
//! - [`decisions`]: lookups answered and reserved,
//!   outcomes settled, with the [`day`] ledger (sent today,
//!   warm-up, roll-over) and the adaptive state;
//! - [`tally`](super::tally): outcome and line counts since start;
//! - [`flow`]: the queue's last scan and flow estimate;
//! - [`health`](super::health): liveness, readiness, config, Postfix;
//! - [`report`]: who reports in /status; [`State::status`]
//!   puts each concern's section over that header.
//!
//! Lock discipline. The mail path — a socketmap lookup, and every recipient
//! line of the log through [`State::record_outcome_at`] — takes the policy
//! slot's read lock (to copy an `Arc`) and then the one `books` mutex,
//! which holds everything a lookup or an outcome changes: a decision and
//! its reservation are one step, and so are an outcome's release, count
//! and tally. Health and the queue report have locks of their own, never
//! taken on the mail path. No method holds two of these locks at once,
//! every lock is held for microseconds and never across an await, and what
//! the adaptive rules changed is logged and counted after the lock is
//! dropped. The one exception to "microseconds" is the flush every
//! [`FLUSH_EVERY`], which writes the state files under `books` only when
//! they changed. Only domains, rule names and counts are stored here:
//! never an address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sendfleet_render::contract::{AdaptiveStatus, AgentStatus};
use sendfleet_render::policy::AgentPolicy;

use super::args::AgentArgs;
use super::clock::{wall_unix_now, Clock};
use super::counters::{Counters, CountersError};
use super::day::{self, DayLedger};
use super::decisions::{self, Decisions, OutcomeRoute};
use super::flow::{self, QueueReport, Scanned};
use super::health::Health;
use super::log::join::Outcome;
use super::log::parse::Status;
use super::metrics::{Metrics, ResultLabels};
use super::policy_slot::{plan, PolicySlot};
use super::queue::parse::QueueScan;
use super::report::{self, Identity};
use super::socketmap::decision::Decision;
use super::state_file;
use super::tally::{LatencyWindow, Tally};

/// How often changed state files (counters, warm-up ledger, adaptive
/// state) are written: a crash loses at most this much.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// What the mail path changes, under one lock.
struct Books {
    decisions: Decisions,
    tally: Tally,
    latency: LatencyWindow,
}

pub struct State {
    pub args: AgentArgs,
    /// The agent's time (wall clock; shifted in tests by `--test-clock-file`).
    pub clock: Clock,
    pub metrics: Metrics,
    identity: Identity,
    policy: PolicySlot,
    books: Mutex<Books>,
    health: Health,
    queue: Mutex<QueueReport>,
    /// Messages that entered the queue (from the log).
    inflow: AtomicU64,
    /// State files that did not parse, kept aside (`state_file`).
    kept_aside: Vec<String>,
    /// The DKIM signer's report (`signer`), with `spec.dkim`.
    pub signer: Mutex<Option<sendfleet_render::contract::SignerStatus>>,
}

impl State {
    /// The state, with the counters loaded from the state dir (the caller
    /// refuses to start when they cannot be read) and the warm-up ledger
    /// and adaptive state loaded beside them.
    pub fn new(args: AgentArgs, counters: Counters) -> Self {
        let clock = Clock::new(args.test_clock_file.clone());
        let day = DayLedger::load(&args.state_dir, counters);
        let decisions = Decisions::load(&args.state_dir, day);
        let metrics = Metrics::new();
        decisions::publish_restored(&metrics, &decisions.adaptive);
        // Every state file was loaded above: any kept aside is known now.
        let kept_aside = state_file::kept_aside(&args.state_dir);
        metrics.state_files_kept_aside.set(kept_aside.len() as i64);
        let identity = Identity::of(&args.pod_name, &args.pool, &args.instance);
        let s = State {
            args,
            clock,
            metrics,
            identity,
            kept_aside,
            policy: PolicySlot::default(),
            books: Mutex::new(Books { decisions, tally: Tally::default(), latency: LatencyWindow::default() }),
            health: Health::default(),
            queue: Mutex::new(QueueReport::default()),
            inflow: AtomicU64::new(0),
            signer: Mutex::new(None),
        };
        s.roll_day();
        s
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // A panic elsewhere must not take the mail path down with it.
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, QueueReport> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- policy and days ---------------------------------------------------

    pub fn policy(&self) -> Option<Arc<AgentPolicy>> {
        self.policy.get()
    }

    /// Put a newly installed policy in force (its plan may move the day).
    pub fn set_policy(&self, policy: AgentPolicy) {
        if let Some(me) = policy.this_instance() {
            let followed = self.books().decisions.follow_address(&self.args.state_dir, &me.address);
            match followed {
                Ok(Some((previous, cleared))) => {
                    tracing::warn!(
                        previous,
                        address = me.address,
                        "the state dir held another address's warm-up ledger and exclusions: kept aside, this address starts afresh"
                    );
                    decisions::publish(&self.metrics, cleared);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "recording the address the state dir belongs to"),
            }
        }
        self.policy.set(policy);
        self.roll_day();
    }

    /// Reset the day counters and move the warm-up ledger at the day
    /// boundary (called every few seconds and on every policy change).
    pub fn roll_day(&self) {
        let policy = self.policy.get();
        let today = day::today(self.clock.now(), policy.as_deref());
        self.books().decisions.day.roll(plan(policy.as_deref()), today);
    }

    /// Roll the day, publish its gauges, let the adaptive rules tick, and
    /// write whatever changed (every [`FLUSH_EVERY`] and at exit).
    pub fn save_counters(&self) -> Result<(), CountersError> {
        self.roll_day();
        let policy = self.policy.get();
        let now = self.clock.unix_now();
        let (gauges, changes, saved) = {
            let mut b = self.books();
            let gauges = b.decisions.day.gauges(plan(policy.as_deref()));
            let changes = b.decisions.tick(policy.as_deref(), now);
            (gauges, changes, b.decisions.save_dirty())
        };
        gauges.publish(&self.metrics);
        decisions::publish(&self.metrics, changes);
        if let Some(p) = policy.as_deref() {
            decisions::declare(&self.metrics, p);
        }
        saved
    }

    // --- the mail path -----------------------------------------------------

    /// Answer one socketmap lookup.
    pub fn decide(&self, key: &str) -> Decision {
        let policy = self.policy.get();
        let now = self.clock.unix_now();
        let (d, changes) = self.books().decisions.decide(policy.as_deref(), key, now);
        decisions::publish(&self.metrics, changes);
        d
    }

    /// Apply one recipient outcome read at `now` (the log pipeline reads the
    /// clock once per read of the log, not once per line).
    pub fn record_outcome_at(&self, o: &Outcome<'_>, now: u64) {
        let policy = self.policy.get();
        let route = OutcomeRoute::of(policy.as_deref(), o);
        let rule = route.rule_name();
        let m = &self.metrics;
        let ages = policy.as_deref().map(|p| (p.backlog_warn_seconds, p.backlog_critical_seconds));
        m.deliveries.record(rule.unwrap_or("none"), o.status, o.category, route.via_peer, o.delays, o.delay, ages);
        let change = {
            let mut b = self.books();
            let change = b.decisions.settle(policy.as_deref(), &route, o, now);
            b.tally.record(&o.domain, rule, o.status, o.category, route.via_peer, now);
            // A hand-off to a peer is not a delivery: the peer reports its own.
            if let (Status::Sent, false, Some(delay)) = (o.status, route.via_peer, o.delay) {
                b.latency.record(now, delay);
            }
            change
        };
        decisions::publish(&self.metrics, change);
    }

    /// Add a batch of log line counts.
    pub fn count_lines(&self, parsed: u64, ignored: u64, malformed: u64) {
        for (result, n) in [("parsed", parsed), ("ignored", ignored), ("malformed", malformed)] {
            if n > 0 {
                self.metrics.log_lines.get_or_create(&ResultLabels { result }).inc_by(n);
            }
        }
        self.books().tally.count_lines(parsed, ignored, malformed);
    }

    /// Messages that entered the queue so far (from the log).
    pub fn set_inflow(&self, total: u64) {
        let before = self.inflow.swap(total, Ordering::Relaxed);
        self.metrics.received_messages.inc_by(total.saturating_sub(before));
    }

    // --- the queue ---------------------------------------------------------

    /// Store a successful queue scan counted against `warn`/`critical`.
    pub fn queue_scanned(&self, scan: &QueueScan, warn: u64, critical: u64) {
        flow::publish_scan(&self.metrics, scan);
        self.metrics.backlog_warn_age.set(warn as i64);
        self.metrics.backlog_critical_age.set(critical as i64);
        let policy = self.policy.get();
        let tracked = self.queue().tracked_domains();
        let picks = flow::pick_domains(scan, policy.as_deref(), &tracked);
        let (outflow, picks) = {
            let b = self.books();
            let picks: Vec<_> = picks
                .into_iter()
                .map(|p| {
                    let left = b.tally.left(&p.domain);
                    (p, left)
                })
                .collect();
            (b.tally.outflow(), picks)
        };
        let flows = {
            let mut q = self.queue();
            q.scanned(Scanned {
                scan,
                warn,
                critical,
                at: wall_unix_now(),
                inflow: self.inflow.load(Ordering::Relaxed),
                outflow,
                top: self.args.top_domains,
                picks: &picks,
            });
            q.flows().to_vec()
        };
        self.metrics.flows.set(flows);
    }

    /// Messages in queue `name` (`deferred`, `active`, ...) at the last scan.
    pub fn queued(&self, name: &str) -> u64 {
        self.queue().status().messages.get(name).copied().unwrap_or(0)
    }

    /// The latest queue scan failed: the last figures stay, with the error.
    pub fn queue_scan_failed(&self, error: String) {
        flow::publish_failure(&self.metrics);
        self.queue().failed(error);
    }

    // --- health ------------------------------------------------------------

    pub fn set_live(&self, v: bool) {
        self.health.set_live(v);
    }
    pub fn is_live(&self) -> bool {
        self.health.is_live()
    }
    /// Liveness: alive and none of the agent's tasks has ended.
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }
    /// One of the agent's own tasks ended (see `supervise::spawn_task`).
    pub fn task_ended(&self, task: &'static str) {
        self.health.task_ended(&self.metrics, task);
    }
    pub fn set_socket_ready(&self, v: bool) {
        self.health.set_socket_ready(v);
    }
    /// Ready: config installed, Postfix running (or not supervised), socket listening.
    pub fn is_ready(&self) -> bool {
        self.health.is_ready(!self.args.no_supervise)
    }
    pub fn set_postfix_running(&self, running: bool) {
        self.health.set_postfix_running(&self.metrics, running);
    }
    pub fn postfix_exited(&self) {
        self.health.postfix_exited(&self.metrics);
    }
    /// Postfix accepts mail (its submission listener answered).
    pub fn postfix_running(&self) -> bool {
        self.health.postfix_running()
    }
    /// How often the Postfix master has exited since the agent started.
    pub fn postfix_exits(&self) -> u64 {
        self.health.postfix_exits()
    }
    pub fn postfix_reloaded(&self) {
        self.health.postfix_reloaded();
    }
    pub fn loaded_hash(&self) -> Option<String> {
        self.health.loaded_hash()
    }
    pub fn refused_hash(&self) -> Option<String> {
        self.health.refused_hash()
    }
    pub fn config_installed(&self, hash: String) {
        self.health.config_installed(&self.metrics, hash, wall_unix_now());
    }
    pub fn config_refused(&self, hash: String, reason: &str, message: String) {
        self.health.config_refused(&self.metrics, hash, wall_unix_now(), reason, message);
    }

    // --- the report --------------------------------------------------------

    /// The /status payload.
    pub fn status(&self) -> AgentStatus {
        let policy = self.policy.get();
        let policy = policy.as_deref();
        let now = self.clock.unix_now();
        let next_day = day::next_day_start(self.clock.now(), policy);
        let (changes, counters, domains, log, adaptive, latency) = {
            let mut b = self.books();
            let latency = b.latency.report(now);
            let changes = b.decisions.tick(policy, now);
            let (exclusions, slow_downs) = b.decisions.adaptive.status(policy);
            let warmup = b.decisions.day.progress(plan(policy), next_day);
            let counters = b.decisions.day.counters_report(b.tally.since_start());
            let domains = b.tally.top_domains(self.args.top_domains);
            (changes, counters, domains, b.tally.log(), AdaptiveStatus { warmup, exclusions, slow_downs }, latency)
        };
        decisions::publish(&self.metrics, changes);
        let (config, postfix) = self.health.report();
        let queue = self.queue().status();
        AgentStatus {
            config,
            postfix,
            counters,
            queue,
            domains,
            log,
            adaptive,
            latency,
            state_files_kept_aside: self.kept_aside.clone(),
            dkim: self.signer.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ..report::header(&self.identity, policy, now)
        }
    }
}

/// Periodically write changed state files (see [`State::save_counters`]).
pub async fn flush_loop(state: Arc<State>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = state.save_counters() {
            tracing::warn!(error = %e, "saving counters");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sendfleet_render::contract::{ResponseCategory, StatusCounts};

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn state(dir: &std::path::Path) -> State {
        let args = Wrap::parse_from(["t", "--state-dir", dir.to_str().unwrap()]).args;
        State::new(args, Counters::load(dir).unwrap())
    }

    fn outcome(domain: &str, status: Status, category: ResponseCategory) -> Outcome<'_> {
        Outcome {
            domain: domain.into(),
            status,
            category,
            delays: Some([0.1, 0.0, 0.2, 0.3]),
            relay_host: Some("mx.example"),
            delay: Some(0.6),
            relay_addr: Some("192.0.2.1"),
            relay_port: Some(25),
            service: "smtp",
        }
    }

    #[test]
    fn outcomes_feed_counts_health_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        for _ in 0..5 {
            st.record_outcome_at(&outcome("gmail.com", Status::Deferred, ResponseCategory::RateLimit), 1);
        }
        for _ in 0..3 {
            st.record_outcome_at(&outcome("yahoo.com", Status::Bounced, ResponseCategory::IpBlock), 2);
        }
        // Logged now: inside the latency window of the status read next.
        st.record_outcome_at(&outcome("yahoo.com", Status::Sent, ResponseCategory::Accepted), st.clock.unix_now());
        let s = st.status();
        assert_eq!(s.counters.since_start, StatusCounts { sent: 1, deferred: 5, bounced: 3, expired: 0 });
        assert_eq!(s.counters.sent_today, 1);
        assert_eq!(s.counters.sent_today_by_rule.get(""), Some(&1), "no rule: counted under \"\"");
        assert_eq!(s.domains[0].domain, "gmail.com");
        assert_eq!(s.domains[0].categories.get("RateLimit"), Some(&5));
        assert!(!s.session_id.is_empty());
        // The one sent recipient's delay= is the window's latency.
        assert_eq!((s.latency.samples, s.latency.p50_seconds, s.latency.p99_seconds), (1, Some(0.6), Some(0.6)));
        let m = st.metrics.encode();
        assert!(m.contains("sendfleet_agent_deliveries_total{rule=\"none\",status=\"bounced\",category=\"IpBlock\",via=\"direct\"} 3"), "{m}");
        assert!(m.contains("sendfleet_agent_delivery_delay_seconds_count{stage=\"transmission\"} 9"), "{m}");
        // The day's counts reach the gauges and the state dir at a flush.
        st.save_counters().unwrap();
        assert_eq!(Counters::load(dir.path()).unwrap().sent_total, 1);
        assert!(st.metrics.encode().contains("sendfleet_agent_sent_today{rule=\"none\"} 1"));
    }

    #[test]
    fn queue_scans_reach_status_and_metrics_and_a_failure_keeps_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let mut scan = QueueScan::default();
        scan.messages.insert("deferred".into(), 10);
        st.queue_scanned(&scan, 100, 200);
        scan.messages.insert("deferred".into(), 20);
        st.queue_scanned(&scan, 100, 200);
        let q = st.status().queue;
        assert!(q.growing);
        assert_eq!(q.messages.get("deferred"), Some(&20));
        // A failed scan keeps the last figures and reports the error.
        st.queue_scan_failed("postqueue: down".into());
        let q = st.status().queue;
        assert_eq!(q.messages.get("deferred"), Some(&20));
        assert_eq!(q.error.as_deref(), Some("postqueue: down"));
        let m = st.metrics.encode();
        assert!(m.contains("sendfleet_agent_queue_scans_total{result=\"error\"} 1"), "{m}");
        assert!(m.contains("sendfleet_agent_queue_messages{queue=\"hold\"} 0"), "{m}");
    }
}
