//! The agent's Prometheus metrics.
//!
//! One registry per agent (no process-global registry, so tests can build
//! several). Every label set is bounded: rule names come from the policy,
//! statuses and categories are enums, queue names are Postfix's five.
//! Domains are labels only of the backlog forecast ([`FlowGauges`]), whose
//! domains are the flow tracker's bounded set (`flow::MAX_FLOW_DOMAINS`:
//! the policy's domains and the largest backlogs) and vanish with it; all
//! other per-domain detail is in /status. Recipient addresses never appear
//! here.
//!
//! Delivery outcomes and their delays are the one per-recipient path: they
//! are counted as plain integers in a [`DeliveryTally`] and encoded at scrape
//! time, so the log pipeline does not hash a label set, allocate, or touch
//! four histograms' atomics for every line it reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use sendfleet_render::contract::{DomainFlow, ResponseCategory};

use super::log::parse::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// One of the agent's own tasks (a fixed name from `supervise`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: &'static str,
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

/// Upper bounds of the delay histogram buckets: 10 ms .. ~2.9 days, then +Inf.
fn delay_bounds() -> [f64; DELAY_BUCKETS] {
    let mut b = [f64::INFINITY; DELAY_BUCKETS];
    for (i, bound) in exponential_buckets(0.01, 4.0, DELAY_BUCKETS as u16 - 1).enumerate() {
        b[i] = bound;
    }
    b
}

const DELAY_BUCKETS: usize = 15;
/// In declaration order: `Status as usize` indexes [`RuleCounts`], as
/// `ResponseCategory as usize` does (checked in the tests).
const STATUSES: [Status; 4] = [Status::Sent, Status::Deferred, Status::Bounced, Status::Expired];
const VIA: [&str; 2] = ["direct", "peer"];

/// Outcome counts of one rule: `[status][category][via]`.
type RuleCounts = [[[u64; 2]; ResponseCategory::ALL.len()]; STATUSES.len()];

/// One stage's delay histogram: per-bucket (not cumulative) counts.
#[derive(Debug, Clone, Copy)]
struct DelayHistogram {
    buckets: [u64; DELAY_BUCKETS],
    sum: f64,
    count: u64,
}

/// `sendfleet_agent_deliveries_total`, `sendfleet_agent_delivery_delay_seconds`
/// and `sendfleet_agent_delivery_latency_seconds`.
#[derive(Debug)]
pub struct DeliveryTally {
    bounds: [f64; DELAY_BUCKETS],
    inner: Mutex<Tally>,
}

#[derive(Debug)]
struct Tally {
    /// By rule name (`none` when no rule matched); rule names come from the policy.
    by_rule: BTreeMap<String, Box<RuleCounts>>,
    delays: [DelayHistogram; 4],
    /// Postfix `delay=` of recipients delivered (sent, not handed to a peer).
    latency: DelayHistogram,
    /// Of those, how many took longer than the pool's backlog warning and
    /// critical ages (`backlogWarnAge`, `backlogCriticalAge`).
    later_than: [u64; 2],
}

impl DelayHistogram {
    fn observe(&mut self, bounds: &[f64; DELAY_BUCKETS], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(DELAY_BUCKETS - 1);
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

impl Default for DeliveryTally {
    fn default() -> Self {
        let empty = DelayHistogram { buckets: [0; DELAY_BUCKETS], sum: 0.0, count: 0 };
        DeliveryTally {
            bounds: delay_bounds(),
            inner: Mutex::new(Tally {
                by_rule: BTreeMap::new(),
                delays: [empty; 4],
                latency: empty,
                later_than: [0; 2],
            }),
        }
    }
}

impl DeliveryTally {
    /// Count one recipient outcome and, if the line had them, its delays;
    /// a delivery (sent, not to a peer) with its total `delay`, and whether
    /// that passed the pool's backlog ages `ages` (warn, critical seconds).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        rule: &str,
        status: Status,
        category: ResponseCategory,
        via_peer: bool,
        delays: Option<[f32; 4]>,
        delay: Option<f32>,
        ages: Option<(u64, u64)>,
    ) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match t.by_rule.get_mut(rule) {
            Some(c) => c,
            None => t.by_rule.entry(rule.to_string()).or_default(),
        };
        counts[status as usize][category as usize][usize::from(via_peer)] += 1;
        if let Some(d) = delays {
            for (h, v) in t.delays.iter_mut().zip(d) {
                h.observe(&self.bounds, f64::from(v));
            }
        }
        if let (Status::Sent, false, Some(d)) = (status, via_peer, delay) {
            t.latency.observe(&self.bounds, f64::from(d));
            if let Some((warn, critical)) = ages {
                for (n, age) in t.later_than.iter_mut().zip([warn, critical]) {
                    *n += u64::from(f64::from(d) > age as f64);
                }
            }
        }
    }
}

impl Collector for DeliveryTally {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut family = encoder.encode_descriptor(
                "deliveries",
                "Recipient delivery outcomes from the mail log, by domain rule, status, response category and path",
                None,
                MetricType::Counter,
            )?;
            for (rule, counts) in &t.by_rule {
                for (status, by_category) in STATUSES.iter().zip(counts.iter()) {
                    for (category, by_via) in ResponseCategory::ALL.iter().zip(by_category) {
                        for (via, n) in VIA.iter().zip(by_via).filter(|(_, n)| **n > 0) {
                            let labels = [
                                ("rule", rule.as_str()),
                                ("status", status.as_str()),
                                ("category", category.as_str()),
                                ("via", via),
                            ];
                            family.encode_family(&labels)?.encode_counter::<NoLabelSet, u64, u64>(n, None)?;
                        }
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "delivery_delay",
                "Postfix delays=a/b/c/d split per delivery attempt: before the queue manager, in it, connection setup, transmission",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (stage, h) in STAGES.iter().zip(&t.delays) {
                let buckets: Vec<(f64, u64)> = self.bounds.iter().copied().zip(h.buckets).collect();
                family
                    .encode_family(&[("stage", *stage)])?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            }
        }
        for ((name, help), n) in LATER_THAN.iter().zip(t.later_than) {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
        }
        let h = &t.latency;
        let buckets: Vec<(f64, u64)> = self.bounds.iter().copied().zip(h.buckets).collect();
        encoder
            .encode_descriptor(
                "delivery_latency",
                "Postfix delay= of delivered recipients (sent, not handed to a peer): arrival to the receiver's acceptance",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }
}

/// Name and help of the "delivered, but late" counters, warn then critical:
/// divided by `delivery_latency_seconds_count` they are the share of
/// delivered mail that took longer than each age (the seeds' "delayed 4 h /
/// 12 h" panels), exact at the pool's own ages whatever the histogram's
/// buckets.
const LATER_THAN: [(&str, &str); 2] = [
    (
        "delivered_after_warn_age",
        "Delivered recipients (sent, not handed to a peer) whose delay= exceeded the pool's backlog warning age",
    ),
    (
        "delivered_after_critical_age",
        "Delivered recipients (sent, not handed to a peer) whose delay= exceeded the pool's backlog critical age",
    ),
];

/// The backlog forecast per tracked domain (`sendfleet_agent_backlog_*`),
/// as of the last queue scan: encoded at scrape time from that scan's
/// flows, so a domain no longer tracked is no longer exposed.
#[derive(Debug, Default)]
pub struct FlowGauges {
    flows: Mutex<Vec<DomainFlow>>,
}

impl FlowGauges {
    /// The flows of the latest scan.
    pub fn set(&self, flows: Vec<DomainFlow>) {
        *self.flows.lock().unwrap_or_else(|p| p.into_inner()) = flows;
    }
}

/// A value of `None` is not exposed (Prometheus' text format has no
/// infinity a gauge could portably carry).
type FlowGauge = (&'static str, &'static str, Option<Unit>, fn(&DomainFlow) -> Option<f64>);

/// Name, help, unit and value of each forecast gauge.
const FLOW_GAUGES: [FlowGauge; 6] = [
    ("backlog_recipients", "Recipients queued per tracked destination domain", None, |f| Some(f.queued as f64)),
    (
        "backlog_inflow_recipients_per_second",
        "Recipients entering the queue per tracked domain (over the flow window)",
        None,
        |f| Some(f.inflow_per_minute / 60.0),
    ),
    (
        "backlog_outflow_recipients_per_second",
        "Recipients leaving the queue per tracked domain: sent, bounced, expired (over the flow window)",
        None,
        |f| Some(f.outflow_per_minute / 60.0),
    ),
    ("backlog_oldest_age", "Age of the oldest queued message per tracked domain", Some(Unit::Seconds), |f| {
        Some(f.oldest_age_seconds as f64)
    }),
    (
        "backlog_drain_forecast",
        "At the current rates, time until the domain's backlog is empty (absent: not draining)",
        Some(Unit::Seconds),
        |f| f.drain_eta_seconds.map(|s| s as f64),
    ),
    (
        "backlog_at_risk",
        "1 when the domain's backlog is forecast not to drain before its oldest mail reaches the pool's warnAge",
        None,
        |f| Some(f64::from(u8::from(f.at_risk))),
    ),
];

impl Collector for FlowGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        for (name, help, unit, value) in &FLOW_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            for (f, v) in flows.iter().filter_map(|f| Some((f, value(f)?))) {
                family.encode_family(&[("domain", f.domain.as_str())])?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    pub registry: Registry,
    /// Delivery outcomes and delays (see [`DeliveryTally`]).
    pub deliveries: Arc<DeliveryTally>,
    /// The backlog forecast per domain (see [`FlowGauges`]).
    pub flows: Arc<FlowGauges>,
    pub log_lines: Family<ResultLabels, Counter>,
    pub lookups: Family<LookupLabels, Counter>,
    pub lookup_errors: Counter,
    pub queue_messages: Family<QueueLabels, Gauge>,
    pub queue_older_than_warn: Gauge,
    pub queue_older_than_critical: Gauge,
    pub queue_oldest_age: Gauge,
    /// The pool's backlog warning and critical ages in force (seconds): the
    /// boundaries of `queue_older_than_*` and `delivered_after_*`.
    pub backlog_warn_age: Gauge,
    pub backlog_critical_age: Gauge,
    /// Messages that entered the queue (hand-offs from peers included).
    pub received_messages: Counter,
    pub queue_scans: Family<ResultLabels, Counter>,
    pub config_installs: Family<ResultLabels, Counter>,
    pub postfix_up: Gauge,
    pub tasks_ended: Family<TaskLabels, Counter>,
    pub http_unauthorized: Counter,
    pub state_files_kept_aside: Gauge,
    pub sent_today: Family<RuleLabels, Gauge>,
    pub adaptive_excluded: Family<RuleLabels, Gauge>,
    pub slow_down_level: Family<RuleLabels, Gauge>,
    pub adaptive_changes: Family<AdaptiveLabels, Counter>,
    pub warmup_step: Gauge,
    pub warmup_daily_cap: Gauge,
    pub warmup_reserved: Gauge,
    pub warmup_held: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sendfleet_agent");
        let deliveries = Arc::new(DeliveryTally::default());
        registry.register_collector(Box::new(deliveries.clone()));
        let flows = Arc::new(FlowGauges::default());
        registry.register_collector(Box::new(flows.clone()));
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
        let backlog_warn_age = Gauge::default();
        registry.register_with_unit(
            "backlog_warn_age",
            "The pool's backlog warning age in force (backlogWarnAge)",
            Unit::Seconds,
            backlog_warn_age.clone(),
        );
        let backlog_critical_age = Gauge::default();
        registry.register_with_unit(
            "backlog_critical_age",
            "The pool's backlog critical age in force (backlogCriticalAge)",
            Unit::Seconds,
            backlog_critical_age.clone(),
        );
        let received_messages = Counter::default();
        registry.register(
            "received_messages",
            "Messages that entered the queue, hand-offs from peers included (subtract the fleet's via=\"peer\" sent deliveries for the fleet's inflow)",
            received_messages.clone(),
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
        let tasks_ended = Family::<TaskLabels, Counter>::default();
        registry.register(
            "tasks_ended",
            "The agent's own tasks (log pipeline, stderr forwarder, queue monitor, ...) that ended; any makes /healthz fail",
            tasks_ended.clone(),
        );
        let http_unauthorized = Counter::default();
        registry.register(
            "http_unauthorized",
            "Requests to /status or /metrics refused for a missing or wrong bearer token",
            http_unauthorized.clone(),
        );
        let state_files_kept_aside = Gauge::default();
        registry.register(
            "state_files_kept_aside",
            "State files that did not parse, kept aside in the state directory (*.corrupt-<time>)",
            state_files_kept_aside.clone(),
        );
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
        let warmup_held = Gauge::default();
        registry.register(
            "warmup_held",
            "1 while the warm-up plan's pause rule holds this instance's step (deferrals or bounces over its threshold)",
            warmup_held.clone(),
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
        Metrics {
            registry,
            deliveries,
            flows,
            log_lines,
            lookups,
            lookup_errors,
            queue_messages,
            queue_older_than_warn,
            queue_older_than_critical,
            queue_oldest_age,
            backlog_warn_age,
            backlog_critical_age,
            received_messages,
            queue_scans,
            config_installs,
            postfix_up,
            tasks_ended,
            http_unauthorized,
            state_files_kept_aside,
            sent_today,
            adaptive_excluded,
            slow_down_level,
            adaptive_changes,
            warmup_step,
            warmup_daily_cap,
            warmup_reserved,
            warmup_held,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_indexes_follow_the_enums() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        for (i, c) in ResponseCategory::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    #[test]
    fn tally_encodes_counters_and_histograms_at_scrape() {
        let m = Metrics::new();
        m.deliveries.record(
            "none",
            Status::Sent,
            ResponseCategory::Accepted,
            false,
            Some([0.005, 0.5, 3.0, 1e9]),
            Some(2.5),
            Some((2, 3)),
        );
        for _ in 0..2 {
            m.deliveries.record(
                "gmail",
                Status::Deferred,
                ResponseCategory::RateLimit,
                true,
                None,
                Some(1.0),
                Some((2, 3)),
            );
        }
        // Sent to a peer: a hand-off, not a delivery.
        m.deliveries.record("gmail", Status::Sent, ResponseCategory::Accepted, true, None, Some(9.0), Some((2, 3)));
        m.flows.set(vec![DomainFlow {
            domain: "bigmail.test".into(),
            queued: 40,
            inflow_per_minute: 60.0,
            outflow_per_minute: 12.0,
            oldest_age_seconds: 30,
            at_risk: true,
            ..Default::default()
        }]);
        let text = m.encode();
        for want in [
            "sendfleet_agent_deliveries_total{rule=\"none\",status=\"sent\",category=\"Accepted\",via=\"direct\"} 1",
            "sendfleet_agent_deliveries_total{rule=\"gmail\",status=\"deferred\",category=\"RateLimit\",via=\"peer\"} 2",
            "sendfleet_agent_delivery_delay_seconds_count{stage=\"before_qmgr\"} 1",
            // 0.005 s falls in the first bucket (le 0.01); 1e9 s only in +Inf.
            "sendfleet_agent_delivery_delay_seconds_bucket{le=\"0.01\",stage=\"before_qmgr\"} 1",
            "sendfleet_agent_delivery_delay_seconds_bucket{le=\"0.16\",stage=\"in_qmgr\"} 0",
            "sendfleet_agent_delivery_delay_seconds_bucket{le=\"0.64\",stage=\"in_qmgr\"} 1",
            "sendfleet_agent_delivery_delay_seconds_bucket{le=\"+Inf\",stage=\"transmission\"} 1",
            "sendfleet_agent_delivery_latency_seconds_count 1",
            "sendfleet_agent_delivery_latency_seconds_sum 2.5",
            "sendfleet_agent_delivery_latency_seconds_bucket{le=\"2.56\"} 1",
            // 2.5 s against ages of 2 s and 3 s; the 9 s hand-off is no delivery.
            "sendfleet_agent_delivered_after_warn_age_total 1",
            "sendfleet_agent_delivered_after_critical_age_total 0",
            "sendfleet_agent_backlog_recipients{domain=\"bigmail.test\"} 40.0",
            "sendfleet_agent_backlog_inflow_recipients_per_second{domain=\"bigmail.test\"} 1.0",
            "sendfleet_agent_backlog_outflow_recipients_per_second{domain=\"bigmail.test\"} 0.2",
            "sendfleet_agent_backlog_oldest_age_seconds{domain=\"bigmail.test\"} 30.0",
            "sendfleet_agent_backlog_at_risk{domain=\"bigmail.test\"} 1.0",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
        assert!(!text.contains("sendfleet_agent_backlog_drain_forecast_seconds{"), "not draining: absent\n{text}");
        assert!(!text.contains("status=\"bounced\""), "zero counts are not encoded\n{text}");
    }
}
