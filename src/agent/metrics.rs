//! The agent's Prometheus metrics.
//!
//! One registry per agent (no process-global registry, so tests can build
//! several). Every label set is bounded: rule names come from the policy,
//! statuses and categories are enums, queue names are Postfix's five. Domains
//! are *not* labels (unbounded); per-domain detail is in /status.
//! Recipient addresses never appear here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Domain rule (`none` when no rule matched).
    pub rule: String,
    pub status: &'static str,
    pub category: &'static str,
    /// `direct` (sent from this IP) or `peer` (handed to a peer instance).
    pub via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `before_qmgr`, `in_qmgr`, `conn_setup`, `transmission` (Postfix's a/b/c/d).
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdaptiveLabels {
    pub rule: String,
    /// `Excluded`, `ExclusionLifted`, `SlowDownEngaged`, `SlowDownStepped`.
    pub change: &'static str,
}

pub const STAGES: [&str; 4] = ["before_qmgr", "in_qmgr", "conn_setup", "transmission"];

fn delay_histogram() -> Histogram {
    // 10 ms .. ~2.9 days.
    Histogram::new(exponential_buckets(0.01, 4.0, 14))
}

pub struct Metrics {
    pub registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delays: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// Cached handles of `delays` for the four stages, in [`STAGES`] order.
    pub stage_delays: [Histogram; 4],
    pub log_lines: Family<ResultLabels, Counter>,
    pub lookups: Family<LookupLabels, Counter>,
    pub lookup_errors: Counter,
    pub queue_messages: Family<QueueLabels, Gauge>,
    pub queue_older_than_warn: Gauge,
    pub queue_older_than_critical: Gauge,
    pub queue_oldest_age: Gauge,
    pub queue_scans: Family<ResultLabels, Counter>,
    pub config_installs: Family<ResultLabels, Counter>,
    pub postfix_up: Gauge,
    pub sent_today: Family<RuleLabels, Gauge>,
    pub adaptive_excluded: Family<RuleLabels, Gauge>,
    pub slow_down_level: Family<RuleLabels, Gauge>,
    pub adaptive_changes: Family<AdaptiveLabels, Counter>,
    pub warmup_step: Gauge,
    pub warmup_daily_cap: Gauge,
    pub warmup_reserved: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sendfleet_agent");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Recipient delivery outcomes from the mail log, by domain rule, status, response category and path",
            deliveries.clone(),
        );
        let delays = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            delay_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "delivery_delay",
            "Postfix delays=a/b/c/d split per delivery attempt: before the queue manager, in it, connection setup, transmission",
            Unit::Seconds,
            delays.clone(),
        );
        let log_lines = Family::<ResultLabels, Counter>::default();
        registry.register(
            "log_lines",
            "Mail log lines read: parsed (used), ignored (Postfix line not used), malformed",
            log_lines.clone(),
        );
        let lookups = Family::<LookupLabels, Counter>::default();
        registry.register("policy_lookups", "Transport socketmap lookups by decision and reason", lookups.clone());
        let lookup_errors = Counter::default();
        registry.register(
            "policy_protocol_errors",
            "Socketmap connections dropped for a protocol error",
            lookup_errors.clone(),
        );
        let queue_messages = Family::<QueueLabels, Gauge>::default();
        registry.register("queue_messages", "Messages per Postfix queue at the last scan", queue_messages.clone());
        let queue_older_than_warn = Gauge::default();
        registry.register(
            "queue_older_than_warn",
            "Queued messages older than the pool's backlog warning age",
            queue_older_than_warn.clone(),
        );
        let queue_older_than_critical = Gauge::default();
        registry.register(
            "queue_older_than_critical",
            "Queued messages older than the pool's backlog critical age",
            queue_older_than_critical.clone(),
        );
        let queue_oldest_age = Gauge::default();
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest queued message at the last scan",
            Unit::Seconds,
            queue_oldest_age.clone(),
        );
        let queue_scans = Family::<ResultLabels, Counter>::default();
        registry.register("queue_scans", "postqueue -j scans by result", queue_scans.clone());
        let config_installs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_installs",
            "Config install attempts: installed (and reloaded) or refused",
            config_installs.clone(),
        );
        let postfix_up = Gauge::default();
        registry.register("postfix_up", "1 while the supervised Postfix master runs", postfix_up.clone());
        let sent_today = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "sent_today",
            "Messages sent from this instance's IP today, per domain rule (persisted)",
            sent_today.clone(),
        );
        let warmup_step = Gauge::default();
        registry.register("warmup_step", "Warm-up step of this instance (0 without a plan)", warmup_step.clone());
        let warmup_daily_cap = Gauge::default();
        registry.register(
            "warmup_daily_cap",
            "Today's warm-up cap of this instance (-1: no cap, no plan or warm)",
            warmup_daily_cap.clone(),
        );
        let warmup_reserved = Gauge::default();
        registry.register(
            "warmup_reserved",
            "Lookups answered \"send from here\" under a cap whose outcome is not logged yet",
            warmup_reserved.clone(),
        );
        let adaptive_excluded = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "auto_excluded",
            "1 while this instance has excluded itself for the domain rule after hard blocks",
            adaptive_excluded.clone(),
        );
        let slow_down_level = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "slow_down_level",
            "Adaptive slow-down level per domain rule (0 = normal; level/4 of the rule's mail takes the slow transport)",
            slow_down_level.clone(),
        );
        let adaptive_changes = Family::<AdaptiveLabels, Counter>::default();
        registry.register(
            "adaptive_changes",
            "Automatic exclusions and slow-down changes this instance made, per domain rule",
            adaptive_changes.clone(),
        );
        let stage_delays = STAGES.map(|stage| delays.get_or_create(&StageLabels { stage }).clone());
        Metrics {
            registry,
            deliveries,
            delays,
            stage_delays,
            log_lines,
            lookups,
            lookup_errors,
            queue_messages,
            queue_older_than_warn,
            queue_older_than_critical,
            queue_oldest_age,
            queue_scans,
            config_installs,
            postfix_up,
            sent_today,
            adaptive_excluded,
            slow_down_level,
            adaptive_changes,
            warmup_step,
            warmup_daily_cap,
            warmup_reserved,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
