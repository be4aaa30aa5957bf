//! The agent's shared state: the policy in force, counters, per-domain
//! health, queue and config status, and the metrics registry.
//!
//! Every task (socketmap, log pipeline, queue monitor, installer, HTTP)
//! holds an `Arc<State>`. Locks are held for microseconds and never across
//! an await. Only domains, rule names and counts are stored: never an address.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sendfleet_render::contract::{
    AdaptiveStatus, AgentStatus, ConfigStatus, DeliveryCounters, DomainCount, DomainHealth, LogStats, PostfixStatus,
    QueueStatus, RefusedConfig, ResponseCategory, StatusCounts, Suggestion, SuggestionKind, PEER_RELAY_TRANSPORT,
    STATUS_VERSION,
};
use sendfleet_render::policy::AgentPolicy;
use sha2::{Digest, Sha256};

use super::adaptive::{Adaptive, Change};
use super::clock::Clock;
use super::counters::{Counters, CountersError};
use super::log::join::Outcome;
use super::log::parse::Status;
use super::metrics::{AdaptiveLabels, Metrics, QueueLabels, RuleLabels};
use super::queue::parse::QueueScan;
use super::socketmap::decision::{decide, key_domain, share_for, Decision, NotFoundWhy, SentToday};
use super::warmup::{self, CapSource, Warmup};
use super::AgentArgs;

/// Domains tracked individually; past this, new domains count under `other`.
pub const MAX_DOMAINS: usize = 10_000;
/// Window over which rate-limit and block responses feed suggestions.
pub const SUGGESTION_WINDOW_SECS: u64 = 600;
/// Rate-limit deferrals in the window that suggest a slow-down.
pub const SLOW_DOWN_AFTER: u64 = 5;
/// IP/reputation blocks in the window that suggest an exclusion.
pub const EXCLUDE_AFTER: u64 = 3;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Default)]
struct DomainEntry {
    rule: Option<String>,
    counts: StatusCounts,
    categories: BTreeMap<&'static str, u64>,
    last_category: Option<ResponseCategory>,
    last_at: Option<u64>,
    /// (time, category) of recent RateLimit / IpBlock responses.
    recent: VecDeque<(u64, ResponseCategory)>,
}

#[derive(Default, Clone, Copy)]
struct FlowSample {
    at: u64,
    inflow: u64,
    outflow: u64,
    backlog: u64,
}

#[derive(Default)]
struct Inner {
    counters: Counters,
    warmup: Warmup,
    adaptive: Adaptive,
    /// Recipient domains seen, looked up for every outcome: FNV (bounded
    /// map, keys from this instance's own mail).
    domains: HashMap<String, DomainEntry, std::hash::BuildHasherDefault<super::redact::Fnv>>,
    since_start: StatusCounts,
    config: ConfigStatus,
    postfix: PostfixStatus,
    queue: QueueStatus,
    log: LogStats,
    outflow: u64,
    flow: VecDeque<FlowSample>,
}

pub struct State {
    pub args: AgentArgs,
    /// The agent's time (wall clock; shifted in tests by `--test-clock-file`).
    pub clock: Clock,
    pub session_id: String,
    pub started_at: u64,
    pub metrics: Metrics,
    policy: RwLock<Option<Arc<AgentPolicy>>>,
    inner: Mutex<Inner>,
    live: AtomicBool,
    socket_ready: AtomicBool,
    lookup_seq: AtomicU64,
    /// Messages that entered the queue (from the log).
    inflow: AtomicU64,
}

impl State {
    pub fn new(args: AgentArgs, counters: Counters) -> Self {
        let started_at = unix_now();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(nanos.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        h.update(format!("{:p}", &started_at).as_bytes());
        let session_id = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let clock = Clock::new(args.test_clock_file.clone());
        let warmup = load_warmup(&args.state_dir);
        let adaptive = Adaptive::load(&args.state_dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "adaptive state unreadable; no exclusion or slow-down in force");
            Adaptive::default()
        });
        let s = State {
            args,
            clock,
            session_id,
            started_at,
            metrics: Metrics::new(),
            policy: RwLock::new(None),
            inner: Mutex::new(Inner { counters, warmup, adaptive, ..Default::default() }),
            live: AtomicBool::new(false),
            socket_ready: AtomicBool::new(false),
            lookup_seq: AtomicU64::new(0),
            inflow: AtomicU64::new(0),
        };
        s.roll_day();
        // Exclusions and slow-downs persisted before a restart are in force:
        // the gauges say so from the start.
        let (exclusions, slow_downs) = s.inner().adaptive.status(None);
        for e in exclusions {
            s.metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: e.rule }).set(1);
        }
        for d in slow_downs {
            s.metrics.slow_down_level.get_or_create(&RuleLabels { rule: d.rule }).set(i64::from(d.level));
        }
        s
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the mail path down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn policy(&self) -> Option<Arc<AgentPolicy>> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_policy(&self, policy: AgentPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(policy));
        self.roll_day();
    }

    /// Answer one socketmap lookup.
    pub fn decide(&self, key: &str) -> Decision {
        let seq = self.lookup_seq.fetch_add(1, Ordering::Relaxed);
        let Some(policy) = self.policy() else {
            return Decision::NotFound(super::socketmap::decision::NotFoundWhy::UnknownInstance);
        };
        let now = self.clock.unix_now();
        // Decide and reserve under one lock: two lookups cannot both take
        // the last slot of a cap.
        let mut guard = self.inner();
        let Inner { counters, warmup, adaptive, .. } = &mut *guard;
        warmup.reservations.expire(now, warmup::RESERVATION_TTL_SECS);
        let cap = warmup.cap(policy.warmup.as_ref());
        let sent = SentToday {
            total: counters.sent_total,
            by_share: Some(&counters.sent_by_share),
            reserved: warmup.reservations.total(),
            reserved_by_share: Some(warmup.reservations.by_share()),
            cap,
        };
        let changes = adaptive.tick(&policy, now);
        // This instance's own exclusions and slow-downs (agent::adaptive).
        let d = adaptive.overlay(&policy, decide(&policy, &sent, key, seq), key, seq);
        self.adaptive_changed(changes);
        let capped = match cap {
            CapSource::Policy => policy.this_instance().is_some_and(|i| i.daily_cap.is_some()),
            CapSource::Ledger(c) => c.is_some(),
        };
        // Only answers that make this instance send the mail itself to the
        // domain's receiver hold a slot (relay rules are not capped).
        if capped && matches!(d, Decision::NotFound(NotFoundWhy::Normal) | Decision::Slow { .. }) {
            let share = key_domain(key).and_then(|dom| share_for(&policy, &dom).map(|(k, _)| k));
            warmup.reservations.reserve(now, share.as_deref());
        }
        d
    }

    /// The time zone days are counted in: the warm-up plan's (UTC without a plan).
    fn time_zone(&self) -> jiff::tz::TimeZone {
        let tz_name = self.policy().and_then(|p| p.warmup.as_ref().map(|w| w.time_zone.clone()));
        tz_name.and_then(|n| warmup::time_zone_database().get(&n).ok()).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// "Today" in the warm-up plan's time zone (UTC without a plan).
    pub fn today(&self) -> String {
        warmup::day_in(self.clock.now(), &self.time_zone()).to_string()
    }

    /// Reset the day counters and move the warm-up ledger at the day
    /// boundary (called every few seconds and on every policy change).
    pub fn roll_day(&self) {
        let policy = self.policy();
        let today = warmup::day_in(self.clock.now(), &self.time_zone());
        let mut inner = self.inner();
        inner.counters.roll(&today.to_string());
        inner.warmup.roll(policy.as_ref().and_then(|p| p.warmup.as_ref()), today);
    }

    /// Copy the day counters to the `sent_today` gauges (every few seconds,
    /// not per delivery).
    pub fn publish_sent_today(&self) {
        let by_rule = self.inner().counters.sent_by_rule.clone();
        self.metrics.sent_today.clear();
        for (r, n) in by_rule {
            let rule = if r.is_empty() { "none".to_string() } else { r };
            self.metrics.sent_today.get_or_create(&RuleLabels { rule }).set(n as i64);
        }
        let policy = self.policy();
        let plan = policy.as_ref().and_then(|p| p.warmup.as_ref());
        let inner = self.inner();
        let progress = inner.warmup.progress(plan, inner.counters.sent_total, None);
        let step = progress.as_ref().map_or(0, |p| i64::from(p.step));
        // -1: no cap (no plan, or warm).
        let cap = progress.as_ref().and_then(|p| p.daily_cap).map_or(-1, |c| c as i64);
        self.metrics.warmup_step.set(step);
        self.metrics.warmup_daily_cap.set(cap);
        self.metrics.warmup_reserved.set(inner.warmup.reservations.total() as i64);
    }

    pub fn save_counters(&self) -> Result<(), CountersError> {
        self.roll_day();
        self.publish_sent_today();
        let policy = self.policy();
        let mut inner = self.inner();
        if let Some(p) = &policy {
            let changes = inner.adaptive.tick(p, self.clock.unix_now());
            self.adaptive_changed(changes);
        }
        if inner.adaptive.is_dirty() {
            if let Err(e) = inner.adaptive.save() {
                tracing::warn!(error = %e, "saving the adaptive state");
            }
        }
        if inner.warmup.is_dirty() {
            // The ledger is retried on the next flush; counters still save.
            if let Err(e) = inner.warmup.save() {
                tracing::warn!(error = %e, "saving the warm-up ledger");
            }
        }
        if inner.counters.is_dirty() {
            inner.counters.save()?;
        }
        Ok(())
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

    pub fn set_postfix_running(&self, running: bool) {
        self.metrics.postfix_up.set(i64::from(running));
        self.inner().postfix.running = running;
    }
    pub fn postfix_exited(&self) {
        self.inner().postfix.exits += 1;
        self.set_postfix_running(false);
    }
    pub fn postfix_reloaded(&self) {
        self.inner().postfix.reloads += 1;
    }

    /// Ready: config installed, Postfix running (or not supervised), socket listening.
    pub fn is_ready(&self) -> bool {
        let inner = self.inner();
        self.is_live()
            && self.socket_ready.load(Ordering::Relaxed)
            && inner.config.loaded_hash.is_some()
            && (inner.postfix.running || self.args.no_supervise)
    }

    pub fn loaded_hash(&self) -> Option<String> {
        self.inner().config.loaded_hash.clone()
    }
    pub fn refused_hash(&self) -> Option<String> {
        self.inner().config.refused.as_ref().map(|r| r.hash.clone())
    }

    pub fn config_installed(&self, hash: String) {
        self.metrics.config_installs.get_or_create(&res("installed")).inc();
        let mut inner = self.inner();
        inner.config.loaded_hash = Some(hash);
        inner.config.loaded_at = Some(unix_now());
        inner.config.installs += 1;
        inner.config.refused = None;
    }

    pub fn config_refused(&self, hash: String, reason: &str, message: String) {
        self.metrics.config_installs.get_or_create(&res("refused")).inc();
        self.inner().config.refused = Some(RefusedConfig { hash, at: unix_now(), reason: reason.to_string(), message });
    }

    /// Add a batch of log line counts.
    pub fn count_lines(&self, parsed: u64, ignored: u64, malformed: u64) {
        for (r, n) in [("parsed", parsed), ("ignored", ignored), ("malformed", malformed)] {
            if n > 0 {
                self.metrics.log_lines.get_or_create(&res(r)).inc_by(n);
            }
        }
        let mut inner = self.inner();
        inner.log.lines += parsed + ignored + malformed;
        inner.log.parsed += parsed;
        inner.log.ignored += ignored;
        inner.log.malformed += malformed;
    }

    pub fn set_inflow(&self, total: u64) {
        self.inflow.store(total, Ordering::Relaxed);
    }

    /// Apply one recipient outcome from the log, now.
    pub fn record_outcome(&self, o: &Outcome<'_>) {
        self.record_outcome_at(o, self.clock.unix_now());
    }

    /// Apply one recipient outcome read at `now` (the log pipeline reads the
    /// clock once per read of the log, not once per line).
    pub fn record_outcome_at(&self, o: &Outcome<'_>, now: u64) {
        let policy = self.policy();
        // One rule lookup per outcome (this runs for every recipient line).
        let rule_ref = policy.as_ref().and_then(|p| p.rule_for(&o.domain));
        let rule = rule_ref.map(|r| r.name.as_str());
        let share = policy.as_ref().and_then(|p| share_for(p, &o.domain)).map(|(k, _)| k);
        let via_peer = o.service == PEER_RELAY_TRANSPORT
            || policy.as_ref().is_some_and(|p| {
                o.relay_port == Some(p.peer_port)
                    && p.instances.iter().any(|i| i.name != p.instance && o.relay_addr == Some(i.address.as_str()))
            });
        self.metrics.deliveries.record(rule.unwrap_or("none"), o.status, o.category, via_peer, o.delays);
        // This instance's own attempt at the domain's receiver: not through a
        // peer, not a `retry:`/`error:` answer, not a relay route.
        let own_attempt =
            !via_peer && !matches!(o.service, "retry" | "error") && rule_ref.is_none_or(|r| r.relay.is_none());
        let mut inner = self.inner();
        if own_attempt {
            inner.warmup.reservations.release(share.as_deref());
            inner.warmup.record_attempt(policy.as_ref().and_then(|p| p.warmup.as_ref()), now, o.status);
            if let Some(r) = rule_ref {
                let change = inner.adaptive.observe(r, &o.domain, o.category, now);
                self.adaptive_changed(change);
            }
        }
        bump(&mut inner.since_start, o.status);
        if o.status != Status::Deferred {
            inner.outflow += 1;
        }
        if o.status == Status::Sent && !via_peer {
            let r = rule.unwrap_or("");
            // The sent_today gauges are published by `publish_sent_today`.
            inner.counters.record_sent(r, share.as_deref());
        }
        let known = inner.domains.contains_key(o.domain.as_ref());
        let key = if known || inner.domains.len() < MAX_DOMAINS { o.domain.as_ref() } else { "other" };
        if !known {
            inner.domains.entry(key.to_string()).or_default();
        }
        let e = inner.domains.get_mut(key).expect("inserted above");
        if e.rule.as_deref() != rule {
            e.rule = rule.map(str::to_string);
        }
        bump(&mut e.counts, o.status);
        if o.category != ResponseCategory::Accepted {
            *e.categories.entry(o.category.as_str()).or_default() += 1;
        }
        e.last_category = Some(o.category);
        e.last_at = Some(now);
        if matches!(o.category, ResponseCategory::RateLimit | ResponseCategory::IpBlock) {
            e.recent.push_back((now, o.category));
            while e.recent.len() > 1000 || e.recent.front().is_some_and(|(t, _)| t + SUGGESTION_WINDOW_SECS < now) {
                e.recent.pop_front();
            }
        }
    }

    /// Store a finished queue scan.
    pub fn set_queue(&self, scan: &QueueScan, warn: u64, critical: u64, error: Option<String>) {
        if let Some(e) = error {
            // Keep the last good figures; say the latest scan failed.
            self.metrics.queue_scans.get_or_create(&res("error")).inc();
            self.inner().queue.error = Some(e);
            return;
        }
        let now = unix_now();
        for (q, n) in &scan.messages {
            self.metrics.queue_messages.get_or_create(&QueueLabels { queue: q.clone() }).set(*n as i64);
        }
        for q in ["active", "deferred", "hold", "incoming", "maildrop"] {
            if !scan.messages.contains_key(q) {
                self.metrics.queue_messages.get_or_create(&QueueLabels { queue: q.to_string() }).set(0);
            }
        }
        self.metrics.queue_older_than_warn.set(scan.older_than_warn as i64);
        self.metrics.queue_older_than_critical.set(scan.older_than_critical as i64);
        self.metrics.queue_oldest_age.set(scan.oldest_age.unwrap_or(0) as i64);
        self.metrics.queue_scans.get_or_create(&res("ok")).inc();
        let inflow = self.inflow.load(Ordering::Relaxed);
        let mut inner = self.inner();
        let sample = FlowSample { at: now, inflow, outflow: inner.outflow, backlog: scan.backlog() };
        inner.flow.push_back(sample);
        while inner.flow.len() > 4 {
            inner.flow.pop_front();
        }
        let first = *inner.flow.front().unwrap_or(&sample);
        let minutes = (sample.at.saturating_sub(first.at)) as f64 / 60.0;
        let (inflow_pm, outflow_pm) = if minutes > 0.0 {
            (
                (sample.inflow - first.inflow.min(sample.inflow)) as f64 / minutes,
                (sample.outflow - first.outflow.min(sample.outflow)) as f64 / minutes,
            )
        } else {
            (0.0, 0.0)
        };
        let growing = inner.flow.len() >= 2
            && inner.flow.iter().zip(inner.flow.iter().skip(1)).all(|(a, b)| b.backlog > a.backlog);
        let net = outflow_pm - inflow_pm;
        let drain_eta_seconds = if sample.backlog == 0 {
            Some(0)
        } else if net > 0.0 {
            Some((sample.backlog as f64 / net * 60.0) as u64)
        } else {
            None
        };
        inner.queue = QueueStatus {
            scanned_at: Some(now),
            messages: scan.messages.clone(),
            older_than_warn: scan.older_than_warn,
            older_than_critical: scan.older_than_critical,
            warn_seconds: warn,
            critical_seconds: critical,
            oldest_age_seconds: scan.oldest_age,
            deferred_by_domain: scan
                .top_deferred(self.args.top_domains)
                .into_iter()
                .map(|(domain, count)| DomainCount { domain, count })
                .collect(),
            inflow_per_minute: inflow_pm,
            outflow_per_minute: outflow_pm,
            growing,
            drain_eta_seconds,
            malformed: scan.malformed,
            error: None,
        };
    }

    /// The /status payload.
    pub fn status(&self) -> AgentStatus {
        let policy = self.policy();
        let now = self.clock.unix_now();
        let next_day = warmup::next_day_start(self.clock.now(), &self.time_zone());
        let mut inner = self.inner();
        if let Some(p) = &policy {
            let changes = inner.adaptive.tick(p, now);
            self.adaptive_changed(changes);
        }
        let (exclusions, slow_downs) = inner.adaptive.status(policy.as_deref());
        let mut domains: Vec<(&String, &DomainEntry)> = inner.domains.iter().collect();
        let total = |c: &StatusCounts| c.sent + c.deferred + c.bounced + c.expired;
        domains.sort_by(|a, b| total(&b.1.counts).cmp(&total(&a.1.counts)).then_with(|| a.0.cmp(b.0)));
        let mut suggestions = Vec::new();
        for (domain, e) in &inner.domains {
            let recent = |c: ResponseCategory| {
                e.recent.iter().filter(|(t, k)| *k == c && t + SUGGESTION_WINDOW_SECS >= now).count() as u64
            };
            let rule = e.rule.clone().unwrap_or_default();
            let blocks = recent(ResponseCategory::IpBlock);
            if blocks >= EXCLUDE_AFTER {
                suggestions.push(Suggestion {
                    kind: SuggestionKind::Exclude,
                    rule: rule.clone(),
                    domain: domain.clone(),
                    evidence: blocks,
                    reason: format!("{blocks} IP/reputation blocks in {SUGGESTION_WINDOW_SECS} s"),
                });
            }
            let limits = recent(ResponseCategory::RateLimit);
            if limits >= SLOW_DOWN_AFTER {
                suggestions.push(Suggestion {
                    kind: SuggestionKind::SlowDown,
                    rule,
                    domain: domain.clone(),
                    evidence: limits,
                    reason: format!("{limits} rate-limit deferrals in {SUGGESTION_WINDOW_SECS} s"),
                });
            }
        }
        suggestions.sort_by(|a, b| a.domain.cmp(&b.domain));
        AgentStatus {
            version: STATUS_VERSION,
            pool: policy.as_ref().map(|p| p.pool.clone()).unwrap_or_default(),
            instance: policy.as_ref().map(|p| p.instance.clone()).unwrap_or_default(),
            session_id: self.session_id.clone(),
            started_at: self.started_at,
            now,
            config: inner.config.clone(),
            postfix: inner.postfix.clone(),
            counters: DeliveryCounters {
                day: inner.counters.day.clone(),
                sent_today: inner.counters.sent_total,
                sent_today_by_rule: inner.counters.sent_by_rule.clone(),
                since_start: inner.since_start,
            },
            queue: inner.queue.clone(),
            domains: domains
                .into_iter()
                .take(self.args.top_domains)
                .map(|(d, e)| DomainHealth {
                    domain: d.clone(),
                    rule: e.rule.clone(),
                    counts: e.counts,
                    categories: e.categories.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    last_category: e.last_category,
                    last_at: e.last_at,
                })
                .collect(),
            suggestions,
            log: inner.log,
            adaptive: AdaptiveStatus {
                warmup: inner.warmup.progress(
                    policy.as_ref().and_then(|p| p.warmup.as_ref()),
                    inner.counters.sent_total,
                    next_day,
                ),
                exclusions,
                slow_downs,
            },
        }
    }

    /// Log and count what the adaptive rules changed (called with the state
    /// lock held: no lock taken here).
    fn adaptive_changed(&self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            let (rule, change) = match &c {
                Change::Excluded { rule, reason, until } => {
                    tracing::warn!(rule, reason, until, "excluded this instance for the rule");
                    self.metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: rule.clone() }).set(1);
                    (rule, "Excluded")
                }
                Change::ExclusionLifted { rule } => {
                    tracing::info!(rule, "exclusion expired");
                    self.metrics.adaptive_excluded.get_or_create(&RuleLabels { rule: rule.clone() }).set(0);
                    (rule, "ExclusionLifted")
                }
                Change::SlowDownEngaged { rule, level, reason } => {
                    tracing::warn!(rule, level, reason, "slow-down engaged");
                    self.metrics
                        .slow_down_level
                        .get_or_create(&RuleLabels { rule: rule.clone() })
                        .set(i64::from(*level));
                    (rule, "SlowDownEngaged")
                }
                Change::SlowDownStepped { rule, level } => {
                    tracing::info!(rule, level, "slow-down recovery step");
                    self.metrics
                        .slow_down_level
                        .get_or_create(&RuleLabels { rule: rule.clone() })
                        .set(i64::from(*level));
                    (rule, "SlowDownStepped")
                }
            };
            self.metrics.adaptive_changes.get_or_create(&AdaptiveLabels { rule: rule.clone(), change }).inc();
        }
    }
}

fn load_warmup(dir: &std::path::Path) -> Warmup {
    Warmup::load(dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "warm-up ledger unreadable; this instance starts on step 1");
        Warmup::new(dir)
    })
}

fn res(result: &'static str) -> super::metrics::ResultLabels {
    super::metrics::ResultLabels { result }
}

fn bump(c: &mut StatusCounts, s: Status) {
    match s {
        Status::Sent => c.sent += 1,
        Status::Deferred => c.deferred += 1,
        Status::Bounced => c.bounced += 1,
        Status::Expired => c.expired += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn outcome(domain: &str, status: Status, category: ResponseCategory) -> Outcome<'_> {
        Outcome {
            domain: domain.into(),
            status,
            dsn_class: 4,
            category,
            delays: Some([0.1, 0.0, 0.2, 0.3]),
            relay_addr: Some("192.0.2.1"),
            relay_port: Some(25),
            service: "smtp",
        }
    }

    #[test]
    fn outcomes_feed_counts_health_and_suggestions() {
        let dir = tempfile::tempdir().unwrap();
        let args = Wrap::parse_from(["t", "--state-dir", dir.path().to_str().unwrap()]).args;
        let st = State::new(args, Counters::load(dir.path()).unwrap());
        for _ in 0..5 {
            st.record_outcome(&outcome("gmail.com", Status::Deferred, ResponseCategory::RateLimit));
        }
        for _ in 0..3 {
            st.record_outcome(&outcome("yahoo.com", Status::Bounced, ResponseCategory::IpBlock));
        }
        st.record_outcome(&outcome("yahoo.com", Status::Sent, ResponseCategory::Accepted));
        let s = st.status();
        assert_eq!(s.counters.since_start, StatusCounts { sent: 1, deferred: 5, bounced: 3, expired: 0 });
        assert_eq!(s.counters.sent_today, 1);
        assert_eq!(s.domains[0].domain, "gmail.com");
        assert_eq!(s.domains[0].categories.get("RateLimit"), Some(&5));
        let kinds: Vec<(SuggestionKind, &str)> = s.suggestions.iter().map(|g| (g.kind, g.domain.as_str())).collect();
        assert_eq!(kinds, vec![(SuggestionKind::SlowDown, "gmail.com"), (SuggestionKind::Exclude, "yahoo.com")]);
        // A sixth rate limit does not duplicate the suggestion.
        st.record_outcome(&outcome("gmail.com", Status::Deferred, ResponseCategory::RateLimit));
        assert_eq!(st.status().suggestions.len(), 2);
        let m = st.metrics.encode();
        assert!(m.contains("sendfleet_agent_deliveries_total{rule=\"none\",status=\"bounced\",category=\"IpBlock\",via=\"direct\"} 3"), "{m}");
        assert!(m.contains("sendfleet_agent_delivery_delay_seconds_count{stage=\"transmission\"} 10"), "{m}");
    }

    #[test]
    fn queue_flow_estimates_growth_and_drain() {
        let dir = tempfile::tempdir().unwrap();
        let args = Wrap::parse_from(["t", "--state-dir", dir.path().to_str().unwrap()]).args;
        let st = State::new(args, Counters::load(dir.path()).unwrap());
        let mut scan = QueueScan::default();
        scan.messages.insert("deferred".into(), 10);
        st.set_queue(&scan, 100, 200, None);
        scan.messages.insert("deferred".into(), 20);
        st.set_queue(&scan, 100, 200, None);
        let q = st.status().queue;
        assert!(q.growing);
        assert_eq!(q.messages.get("deferred"), Some(&20));
        // A failed scan keeps the last figures and reports the error.
        st.set_queue(&QueueScan::default(), 100, 200, Some("postqueue: down".into()));
        let q = st.status().queue;
        assert_eq!(q.messages.get("deferred"), Some(&20));
        assert_eq!(q.error.as_deref(), Some("postqueue: down"));
    }
}
