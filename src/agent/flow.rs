//! The queue's section of /status: the last `postqueue -j` scan's figures,
//! and the flow estimate over the last scans — messages in and out per
//! minute, whether the backlog grows, when it would be empty — for the
//! whole queue and per destination domain, with the forecast the pool's
//! `BacklogForecast` condition is made of: will a domain's backlog drain
//! before its oldest mail reaches the warn age?
//!
//! Pure bookkeeping on figures handed in (scan, log counts, time): it must
//! never run `postqueue`, read a clock or take a lock (the queue monitor
//! scans, the state holds the lock), and a failed scan must never erase the
//! last good figures. Domains are tracked only within [`MAX_FLOW_DOMAINS`]
//! (the policy's domains and the largest backlogs): never an address.

use std::collections::{BTreeMap, VecDeque};

use sendfleet_render::contract::{DomainCount, DomainFlow, QueueStatus};
use sendfleet_render::policy::AgentPolicy;

use super::metrics::{Metrics, QueueLabels, ResultLabels};
use super::queue::parse::QueueScan;

/// How far back the rates look (with 30 s scans: 4 intervals; with the
/// tests' 1 s scans, the last two minutes).
pub const FLOW_WINDOW_SECONDS: u64 = 120;
/// Samples kept at most, whatever the scan interval.
const MAX_SAMPLES: usize = 128;
/// Scans over which "growing" means the backlog grew at every one.
pub const GROWTH_SAMPLES: usize = 4;
/// Rates over a shorter span are not a forecast yet.
pub const MIN_FORECAST_SPAN_SECONDS: u64 = 10;
/// Growth (recipients per minute) below this is noise, not a trend.
pub const MIN_GROWTH_PER_MINUTE: f64 = 1.0;
/// Consecutive scans a domain must be judged at risk before it is reported
/// so: a burst being delivered is briefly "inflow without outflow".
pub const CONFIRM_SCANS: u32 = 3;
/// Domains tracked per instance at most: the policy's domains first, then
/// the largest backlogs.
pub const MAX_FLOW_DOMAINS: usize = 20;
/// Domains without a DomainPolicy tracked: the largest backlogs.
pub const TOP_FLOW_DOMAINS: usize = 5;

/// The queues every scan reports, zero when empty.
const QUEUES: [&str; 5] = ["active", "deferred", "hold", "incoming", "maildrop"];

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: u64,
    inflow: u64,
    outflow: u64,
    backlog: u64,
}

/// What the last samples say about the queue's flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub inflow_per_minute: f64,
    pub outflow_per_minute: f64,
    /// The backlog grew at every one of the last scans (two at least).
    pub growing: bool,
    /// At the current rates, seconds until the backlog is empty (`None`:
    /// not draining).
    pub drain_eta_seconds: Option<u64>,
    /// Seconds the rates span.
    pub span_seconds: u64,
}

/// The (time, inflow, outflow, backlog) readings of the last
/// [`FLOW_WINDOW_SECONDS`].
#[derive(Default)]
pub struct FlowEstimator {
    samples: VecDeque<Sample>,
}

impl FlowEstimator {
    /// Add a reading at `at` (Unix seconds) of the running totals `inflow`
    /// (what entered the queue) and `outflow` (what left it) and the
    /// queue's `backlog`; the rates over the samples kept.
    pub fn sample(&mut self, at: u64, inflow: u64, outflow: u64, backlog: u64) -> Rates {
        let sample = Sample { at, inflow, outflow, backlog };
        self.samples.push_back(sample);
        // Keep the window, and always the reading before the newest.
        while self.samples.len() > MAX_SAMPLES
            || (self.samples.len() > 2 && self.samples[1].at + FLOW_WINDOW_SECONDS <= at)
        {
            self.samples.pop_front();
        }
        let first = *self.samples.front().unwrap_or(&sample);
        let span_seconds = sample.at.saturating_sub(first.at);
        let per_minute = |n: u64| if span_seconds > 0 { n as f64 * 60.0 / span_seconds as f64 } else { 0.0 };
        let inflow_pm = per_minute(sample.inflow.saturating_sub(first.inflow));
        let outflow_pm = per_minute(sample.outflow.saturating_sub(first.outflow));
        let recent = self.samples.iter().skip(self.samples.len().saturating_sub(GROWTH_SAMPLES));
        let growing = self.samples.len() >= 2 && recent.clone().zip(recent.skip(1)).all(|(a, b)| b.backlog > a.backlog);
        let net = outflow_pm - inflow_pm;
        let drain_eta_seconds = if sample.backlog == 0 {
            Some(0)
        } else if net > 0.0 {
            Some((sample.backlog as f64 / net * 60.0) as u64)
        } else {
            None
        };
        Rates { inflow_per_minute: inflow_pm, outflow_per_minute: outflow_pm, growing, drain_eta_seconds, span_seconds }
    }
}

/// Will `queued` recipients, the oldest `oldest_age` seconds old, drain at
/// `rates` before that one reaches `warn` seconds? At risk when inflow
/// exceeds outflow (by [`MIN_GROWTH_PER_MINUTE`] at least), or when the
/// backlog drains only after the oldest reaches `warn`. Rates spanning
/// under [`MIN_FORECAST_SPAN_SECONDS`] forecast nothing, and neither does
/// a queue that neither moves nor grows (a stalled queue is the warn
/// age's business, `QueueBacklog`).
pub fn at_risk(queued: u64, rates: &Rates, oldest_age: u64, warn: u64) -> bool {
    if queued == 0 || rates.span_seconds < MIN_FORECAST_SPAN_SECONDS {
        return false;
    }
    if rates.inflow_per_minute - rates.outflow_per_minute >= MIN_GROWTH_PER_MINUTE {
        return true;
    }
    rates.drain_eta_seconds.is_some_and(|eta| eta > warn.saturating_sub(oldest_age))
}

/// One tracked domain: its readings and how many scans in a row it was at risk.
#[derive(Default)]
struct DomainTrack {
    flow: FlowEstimator,
    at_risk_scans: u32,
    last_queued: u64,
}

/// A domain picked for tracking this scan, with its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub domain: String,
    pub rule: Option<String>,
}

/// The domains to track after `scan`: every queued domain a DomainPolicy
/// rule matches and the [`TOP_FLOW_DOMAINS`] largest backlogs, largest
/// first, then the domains of `tracked` that had mail queued at their last
/// reading (one more reading shows them drained); [`MAX_FLOW_DOMAINS`] at
/// most.
pub fn pick_domains(scan: &QueueScan, policy: Option<&AgentPolicy>, tracked: &[String]) -> Vec<Pick> {
    let mut queued: Vec<(&String, u64)> =
        scan.queued_by_domain.iter().filter(|(_, q)| q.recipients > 0).map(|(d, q)| (d, q.recipients)).collect();
    queued.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let rule = |d: &str| policy.and_then(|p| p.rule_for(d)).map(|r| r.name.clone());
    let mut picks: Vec<Pick> = Vec::new();
    let mut others = 0;
    for (d, _) in queued {
        let r = rule(d);
        if r.is_none() {
            if others >= TOP_FLOW_DOMAINS {
                continue;
            }
            others += 1;
        }
        picks.push(Pick { domain: d.clone(), rule: r });
    }
    for d in tracked {
        if !picks.iter().any(|p| &p.domain == d) {
            picks.push(Pick { domain: d.clone(), rule: rule(d) });
        }
    }
    picks.truncate(MAX_FLOW_DOMAINS);
    picks
}

/// Flow and forecast per tracked domain.
#[derive(Default)]
pub struct DomainFlows {
    tracks: BTreeMap<String, DomainTrack>,
}

impl DomainFlows {
    /// Domains worth another reading: they had mail queued at their last.
    pub fn tracked(&self) -> Vec<String> {
        self.tracks.iter().filter(|(_, t)| t.last_queued > 0).map(|(d, _)| d.clone()).collect()
    }

    /// Take a scan's readings of `picks` (with each one's running total of
    /// recipients that left the queue) at `at`; domains not picked are
    /// forgotten. The flows, largest backlog first.
    pub fn sample(&mut self, scan: &QueueScan, picks: &[(Pick, u64)], at: u64, warn: u64) -> Vec<DomainFlow> {
        self.tracks.retain(|d, _| picks.iter().any(|(p, _)| &p.domain == d));
        let mut flows: Vec<DomainFlow> = picks
            .iter()
            .map(|(pick, left)| {
                let q = scan.queued_by_domain.get(&pick.domain).copied().unwrap_or_default();
                let t = self.tracks.entry(pick.domain.clone()).or_default();
                // What entered = what is queued + what left (the constant
                // offset cancels out in the rates).
                let rates = t.flow.sample(at, q.recipients + left, *left, q.recipients);
                t.last_queued = q.recipients;
                t.at_risk_scans = if at_risk(q.recipients, &rates, q.oldest_age, warn) {
                    t.at_risk_scans.saturating_add(1)
                } else {
                    0
                };
                DomainFlow {
                    domain: pick.domain.clone(),
                    rule: pick.rule.clone(),
                    queued: q.recipients,
                    inflow_per_minute: rates.inflow_per_minute,
                    outflow_per_minute: rates.outflow_per_minute,
                    growth_per_minute: rates.inflow_per_minute - rates.outflow_per_minute,
                    oldest_age_seconds: q.oldest_age,
                    drain_eta_seconds: rates.drain_eta_seconds,
                    warn_in_seconds: warn.saturating_sub(q.oldest_age),
                    at_risk: t.at_risk_scans >= CONFIRM_SCANS,
                }
            })
            .collect();
        flows.sort_by(|a, b| b.queued.cmp(&a.queued).then_with(|| a.domain.cmp(&b.domain)));
        flows
    }
}

/// The queue as last scanned, with its flow.
#[derive(Default)]
pub struct QueueReport {
    flow: FlowEstimator,
    domains: DomainFlows,
    status: QueueStatus,
}

/// One successful scan and what it is read against.
pub struct Scanned<'a> {
    pub scan: &'a QueueScan,
    /// Age thresholds the scan counted with (seconds).
    pub warn: u64,
    pub critical: u64,
    /// When it was taken (real time, Unix seconds).
    pub at: u64,
    /// Running totals from the log: messages in, recipients out.
    pub inflow: u64,
    pub outflow: u64,
    /// Domains listed in `deferredByDomain`.
    pub top: usize,
    /// The domains to forecast ([`pick_domains`]), each with its running
    /// total of recipients that left the queue (from the log).
    pub picks: &'a [(Pick, u64)],
}

impl QueueReport {
    /// Domains worth another reading (see [`pick_domains`]).
    pub fn tracked_domains(&self) -> Vec<String> {
        self.domains.tracked()
    }

    /// Take a successful scan's figures.
    pub fn scanned(&mut self, s: Scanned<'_>) {
        let rates = self.flow.sample(s.at, s.inflow, s.outflow, s.scan.backlog());
        let flows = self.domains.sample(s.scan, s.picks, s.at, s.warn);
        self.status = QueueStatus {
            scanned_at: Some(s.at),
            messages: s.scan.messages.clone(),
            older_than_warn: s.scan.older_than_warn,
            older_than_critical: s.scan.older_than_critical,
            warn_seconds: s.warn,
            critical_seconds: s.critical,
            oldest_age_seconds: s.scan.oldest_age,
            deferred_by_domain: s
                .scan
                .top_deferred(s.top)
                .into_iter()
                .map(|(domain, count)| DomainCount { domain, count })
                .collect(),
            inflow_per_minute: rates.inflow_per_minute,
            outflow_per_minute: rates.outflow_per_minute,
            growing: rates.growing,
            drain_eta_seconds: rates.drain_eta_seconds,
            malformed: s.scan.malformed,
            error: None,
            flows,
        };
    }

    /// The latest scan failed: keep the last good figures, say why.
    pub fn failed(&mut self, error: String) {
        self.status.error = Some(error);
    }

    pub fn status(&self) -> QueueStatus {
        self.status.clone()
    }

    /// The per-domain flows of the last good scan.
    pub fn flows(&self) -> &[DomainFlow] {
        &self.status.flows
    }
}

/// Set the queue gauges from a successful scan and count it.
pub fn publish_scan(metrics: &Metrics, scan: &QueueScan) {
    for (q, n) in &scan.messages {
        metrics.queue_messages.get_or_create(&QueueLabels { queue: q.clone() }).set(*n as i64);
    }
    for q in QUEUES {
        if !scan.messages.contains_key(q) {
            metrics.queue_messages.get_or_create(&QueueLabels { queue: q.to_string() }).set(0);
        }
    }
    metrics.queue_older_than_warn.set(scan.older_than_warn as i64);
    metrics.queue_older_than_critical.set(scan.older_than_critical as i64);
    metrics.queue_oldest_age.set(scan.oldest_age.unwrap_or(0) as i64);
    metrics.queue_scans.get_or_create(&ResultLabels { result: "ok" }).inc();
}

/// Count a failed scan.
pub fn publish_failure(metrics: &Metrics) {
    metrics.queue_scans.get_or_create(&ResultLabels { result: "error" }).inc();
}

#[cfg(test)]
mod tests {
    use sendfleet_render::policy::DomainRule;

    use super::*;
    use crate::agent::queue::parse::DomainQueue;

    #[test]
    fn rates_over_the_last_samples() {
        let mut f = FlowEstimator::default();
        // First reading: no interval yet.
        let r = f.sample(0, 100, 50, 10);
        assert_eq!((r.inflow_per_minute, r.outflow_per_minute, r.growing), (0.0, 0.0, false));
        assert_eq!(r.drain_eta_seconds, None, "not draining without an outflow rate");
        // One minute later: 60 in, 120 out, backlog down to 6.
        let r = f.sample(60, 160, 170, 6);
        assert_eq!((r.inflow_per_minute, r.outflow_per_minute), (60.0, 120.0));
        assert!(!r.growing);
        assert_eq!(r.drain_eta_seconds, Some(6), "6 messages at a net 60/min");
        let r = f.sample(120, 160, 170, 0);
        assert_eq!(r.drain_eta_seconds, Some(0), "an empty backlog is drained");
    }

    #[test]
    fn growth_needs_every_step_up_and_old_samples_age_out() {
        let mut f = FlowEstimator::default();
        for (at, backlog) in [(0, 1), (30, 2), (60, 3)] {
            f.sample(at, 0, 0, backlog);
        }
        assert!(f.sample(90, 0, 0, 4).growing);
        // A step down: not growing, although the backlog is above the first.
        assert!(!f.sample(120, 0, 0, 3).growing);
        // Only the last GROWTH_SAMPLES count: three steps up after it.
        for (at, backlog) in [(150, 4), (180, 5)] {
            f.sample(at, 0, 0, backlog);
        }
        assert!(f.sample(210, 0, 0, 6).growing);
        // Rates span only the last FLOW_WINDOW_SECONDS (t = 90..210).
        let r = f.sample(210, 300, 0, 6);
        assert_eq!(r.span_seconds, FLOW_WINDOW_SECONDS);
        assert_eq!(r.inflow_per_minute, 300.0 / 2.0, "over 120 s, not since t = 0");
        // However long the gap, the reading before the newest stays.
        assert_eq!(f.sample(10_000, 300, 0, 6).span_seconds, 10_000 - 210);
    }

    #[test]
    fn the_forecast_needs_growth_or_a_drain_past_the_warn_age() {
        let rates = |i: f64, o: f64, eta: Option<u64>| Rates {
            inflow_per_minute: i,
            outflow_per_minute: o,
            growing: false,
            drain_eta_seconds: eta,
            span_seconds: 60,
        };
        // Inflow 60/min into a provider taking 12/min: at risk at once.
        assert!(at_risk(50, &rates(60.0, 12.0, None), 30, 3600));
        // Draining, and empty long before the oldest is an hour old.
        assert!(!at_risk(50, &rates(12.0, 60.0, Some(63)), 30, 3600));
        // Draining, but only after the oldest reaches the warn age.
        assert!(at_risk(5000, &rates(10.0, 12.0, Some(150_000)), 600, 3600));
        // Noise, a stalled queue, nothing queued, too short a window: no forecast.
        assert!(!at_risk(50, &rates(12.5, 12.0, None), 30, 3600));
        assert!(!at_risk(50, &rates(0.0, 0.0, None), 30, 3600));
        assert!(!at_risk(0, &rates(60.0, 0.0, Some(0)), 0, 3600));
        let short = Rates { span_seconds: MIN_FORECAST_SPAN_SECONDS - 1, ..rates(60.0, 0.0, None) };
        assert!(!at_risk(50, &short, 30, 3600));
    }

    fn scan_of(domains: &[(&str, u64, u64)]) -> QueueScan {
        let mut scan = QueueScan::default();
        for (d, recipients, oldest_age) in domains {
            scan.queued_by_domain
                .insert(d.to_string(), DomainQueue { recipients: *recipients, oldest_age: *oldest_age });
        }
        scan
    }

    fn policy_for(domains: &[(&str, &str)]) -> AgentPolicy {
        AgentPolicy {
            domains: domains
                .iter()
                .map(|(name, pattern)| DomainRule {
                    name: name.to_string(),
                    patterns: vec![pattern.to_string()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn tracked_domains_are_the_policies_and_the_largest_backlogs_bounded() {
        let mut many: Vec<(String, u64, u64)> = (0..40).map(|i| (format!("d{i:02}.example"), 100 + i, 1)).collect();
        many.push(("small.bigmail.test".into(), 1, 1));
        many.push(("idle.example".into(), 0, 0));
        let refs: Vec<(&str, u64, u64)> = many.iter().map(|(d, n, a)| (d.as_str(), *n, *a)).collect();
        let scan = scan_of(&refs);
        let policy = policy_for(&[("bigmail", ".bigmail.test")]);
        let picks = pick_domains(&scan, Some(&policy), &["gone.example".into()]);
        let names: Vec<&str> = picks.iter().map(|p| p.domain.as_str()).collect();
        // The five largest, the policy's domain however small, then what
        // was tracked before; never the idle one.
        assert_eq!(
            names,
            [
                "d39.example",
                "d38.example",
                "d37.example",
                "d36.example",
                "d35.example",
                "small.bigmail.test",
                "gone.example"
            ]
        );
        assert_eq!(picks[5].rule.as_deref(), Some("bigmail"));
        // A policy matching everything is still bounded.
        let all = policy_for(&[("all", ".example")]);
        assert_eq!(pick_domains(&scan, Some(&all), &[]).len(), MAX_FLOW_DOMAINS);
    }

    #[test]
    fn a_throttled_domain_is_forecast_at_risk_after_confirmation_and_a_burst_is_not() {
        let mut flows = DomainFlows::default();
        let pick = |d: &str| Pick { domain: d.into(), rule: None };
        let warn = 600;
        // slow.test: 60 in, 12 out per minute (one reading each 5 s);
        // burst.test: 50 at once, all gone at the next scan.
        let mut last = vec![];
        for step in 0..8u64 {
            let at = 1000 + step * 5;
            let slow_queued = 4 * step + 1;
            let slow_left = step;
            let burst = if step == 2 { 50 } else { 0 };
            let burst_left = if step > 2 { 50 } else { 0 };
            let scan = scan_of(&[("slow.test", slow_queued, step * 5), ("burst.test", burst, 0)]);
            let picks = [(pick("slow.test"), slow_left), (pick("burst.test"), burst_left)];
            last = flows.sample(&scan, &picks, at, warn);
            let slow = last.iter().find(|f| f.domain == "slow.test").unwrap();
            // Span 10 s from step 2 on: confirmed at the third scan at risk.
            assert_eq!(slow.at_risk, step >= 4, "step {step}: {slow:?}");
            let burst = last.iter().find(|f| f.domain == "burst.test").unwrap();
            assert!(!burst.at_risk, "step {step}: {burst:?}");
        }
        let slow = &last[0];
        assert_eq!((slow.domain.as_str(), slow.queued), ("slow.test", 29));
        assert_eq!((slow.inflow_per_minute, slow.outflow_per_minute, slow.growth_per_minute), (60.0, 12.0, 48.0));
        assert_eq!((slow.drain_eta_seconds, slow.oldest_age_seconds, slow.warn_in_seconds), (None, 35, 565));
        // Tracked again while it had mail queued; forgotten once not picked.
        assert_eq!(flows.tracked(), ["slow.test"]);
        let none = flows.sample(&QueueScan::default(), &[], 2000, warn);
        assert!(none.is_empty() && flows.tracked().is_empty());
    }

    #[test]
    fn a_failed_scan_keeps_the_last_figures() {
        let mut q = QueueReport::default();
        let mut scan = QueueScan::default();
        scan.messages.insert("deferred".into(), 20);
        let picks = [(Pick { domain: "d.test".into(), rule: None }, 0)];
        let s =
            |at| Scanned { scan: &scan, warn: 100, critical: 200, at, inflow: 0, outflow: 0, top: 20, picks: &picks };
        q.scanned(s(5));
        q.failed("postqueue: down".into());
        let s5 = q.status();
        assert_eq!(s5.messages.get("deferred"), Some(&20));
        assert_eq!((s5.scanned_at, s5.warn_seconds), (Some(5), 100));
        assert_eq!(s5.error.as_deref(), Some("postqueue: down"));
        assert_eq!(q.flows().len(), 1);
        q.scanned(s(35));
        assert_eq!(q.status().error, None, "a good scan clears the error");
    }
}
