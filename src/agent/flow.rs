//! The queue's section of /status: the last `postqueue -j` scan's figures,
//! and the flow estimate over the last few scans — messages in and out per
//! minute, whether the backlog grows, when it would be empty.
//!
//! Pure bookkeeping on figures handed in (scan, log counts, time): it must
//! never run `postqueue`, read a clock or take a lock (the queue monitor
//! scans, the state holds the lock), and a failed scan must never erase the
//! last good figures.

use std::collections::VecDeque;

use sendfleet_render::contract::{DomainCount, QueueStatus};

use super::metrics::{Metrics, QueueLabels, ResultLabels};
use super::queue::parse::QueueScan;

/// Scans the flow estimate looks back over (with 30 s scans: 1.5 minutes).
pub const FLOW_SAMPLES: usize = 4;

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
}

/// The last [`FLOW_SAMPLES`] (time, inflow, outflow, backlog) readings.
#[derive(Default)]
pub struct FlowEstimator {
    samples: VecDeque<Sample>,
}

impl FlowEstimator {
    /// Add a reading at `at` (Unix seconds) of the running totals `inflow`
    /// (messages that entered the queue) and `outflow` (recipients that left
    /// it) and the queue's `backlog`; the rates over the samples kept.
    pub fn sample(&mut self, at: u64, inflow: u64, outflow: u64, backlog: u64) -> Rates {
        let sample = Sample { at, inflow, outflow, backlog };
        self.samples.push_back(sample);
        while self.samples.len() > FLOW_SAMPLES {
            self.samples.pop_front();
        }
        let first = *self.samples.front().unwrap_or(&sample);
        let minutes = (sample.at.saturating_sub(first.at)) as f64 / 60.0;
        let (inflow_pm, outflow_pm) = if minutes > 0.0 {
            (
                (sample.inflow - first.inflow.min(sample.inflow)) as f64 / minutes,
                (sample.outflow - first.outflow.min(sample.outflow)) as f64 / minutes,
            )
        } else {
            (0.0, 0.0)
        };
        let growing = self.samples.len() >= 2
            && self.samples.iter().zip(self.samples.iter().skip(1)).all(|(a, b)| b.backlog > a.backlog);
        let net = outflow_pm - inflow_pm;
        let drain_eta_seconds = if sample.backlog == 0 {
            Some(0)
        } else if net > 0.0 {
            Some((sample.backlog as f64 / net * 60.0) as u64)
        } else {
            None
        };
        Rates { inflow_per_minute: inflow_pm, outflow_per_minute: outflow_pm, growing, drain_eta_seconds }
    }
}

/// The queue as last scanned, with its flow.
#[derive(Default)]
pub struct QueueReport {
    flow: FlowEstimator,
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
}

impl QueueReport {
    /// Take a successful scan's figures.
    pub fn scanned(&mut self, s: Scanned<'_>) {
        let rates = self.flow.sample(s.at, s.inflow, s.outflow, s.scan.backlog());
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
        };
    }

    /// The latest scan failed: keep the last good figures, say why.
    pub fn failed(&mut self, error: String) {
        self.status.error = Some(error);
    }

    pub fn status(&self) -> QueueStatus {
        self.status.clone()
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
    use super::*;

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
        // Rates span only the last FLOW_SAMPLES readings (t = 120..210).
        for at in [150, 180] {
            f.sample(at, 0, 0, 4);
        }
        let r = f.sample(210, 300, 0, 5);
        assert_eq!(r.inflow_per_minute, 300.0 / 1.5, "over 90 s, not since t = 0");
    }

    #[test]
    fn a_failed_scan_keeps_the_last_figures() {
        let mut q = QueueReport::default();
        let mut scan = QueueScan::default();
        scan.messages.insert("deferred".into(), 20);
        q.scanned(Scanned { scan: &scan, warn: 100, critical: 200, at: 5, inflow: 0, outflow: 0, top: 20 });
        q.failed("postqueue: down".into());
        let s = q.status();
        assert_eq!(s.messages.get("deferred"), Some(&20));
        assert_eq!((s.scanned_at, s.warn_seconds), (Some(5), 100));
        assert_eq!(s.error.as_deref(), Some("postqueue: down"));
        q.scanned(Scanned { scan: &scan, warn: 100, critical: 200, at: 35, inflow: 0, outflow: 0, top: 20 });
        assert_eq!(q.status().error, None, "a good scan clears the error");
    }
}
