//! What the mail log said since the agent started: recipients per final
//! status, delivery health per recipient domain, how many log lines
//! parsed, and the delivery latency of the last few minutes
//! ([`LatencyWindow`]).
//!
//! A hand-off to a peer (sent or deferred through a peer's hand-off
//! listener) is not an outcome: the peer receives the message again and
//! counts its fate, so the fleet's sums count each recipient once. It still
//! left (or stays in) this instance's queue, so it counts in [`Tally::outflow`]
//! and [`Tally::left`], which the backlog forecast reads. A bounce or expiry
//! on the way to a peer is final here and counts as one.
//!
//! Counts only: domains, rule names, response categories and numbers —
//! never an address. The per-domain map is bounded ([`MAX_DOMAINS`]). It
//! must never feed a routing decision (decisions reads the day ledger and
//! the adaptive state, not this), never take a lock (its owner holds one)
//! and never allocate for a domain it already knows: it runs for every
//! recipient line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use sendfleet_render::contract::{DeliveryLatency, DomainHealth, LogStats, ResponseCategory, StatusCounts};

use super::log::parse::Status;
use super::redact::Fnv;

/// Domains tracked individually; past this, new domains count under [`OTHER`].
pub const MAX_DOMAINS: usize = 10_000;
/// Where domains past [`MAX_DOMAINS`] are counted.
pub const OTHER: &str = "other";

#[derive(Default)]
struct DomainEntry {
    rule: Option<String>,
    counts: StatusCounts,
    categories: BTreeMap<&'static str, u64>,
    last_category: Option<ResponseCategory>,
    last_at: Option<u64>,
    /// Recipients handed to a peer (not in `counts`: the peer counts them).
    handed_off: u64,
}

/// Outcome and line counts since start.
#[derive(Default)]
pub struct Tally {
    /// Recipient domains seen, looked up for every outcome: FNV (bounded
    /// map, keys from this instance's own mail).
    domains: HashMap<String, DomainEntry, BuildHasherDefault<Fnv>>,
    since_start: StatusCounts,
    /// Recipients handed to a peer since start (not in `since_start`).
    handed_off: u64,
    log: LogStats,
}

impl Tally {
    /// Count one recipient outcome toward `domain` at `now`; `via_peer`:
    /// the attempt went to a peer's hand-off listener (see the module doc).
    pub fn record(
        &mut self,
        domain: &str,
        rule: Option<&str>,
        status: Status,
        category: ResponseCategory,
        via_peer: bool,
        now: u64,
    ) {
        let hand_off = via_peer && matches!(status, Status::Sent | Status::Deferred);
        if !hand_off {
            bump(&mut self.since_start, status);
        }
        let known = self.domains.contains_key(domain);
        let overflow = !known && self.domains.len() >= MAX_DOMAINS;
        let key = if overflow { OTHER } else { domain };
        if !known && (!overflow || !self.domains.contains_key(OTHER)) {
            self.domains.insert(key.to_string(), DomainEntry::default());
        }
        let e = self.domains.get_mut(key).expect("inserted above");
        if e.rule.as_deref() != rule {
            e.rule = rule.map(str::to_string);
        }
        if hand_off {
            // A deferred hand-off stays queued here: neither an outcome nor outflow.
            let sent = u64::from(status == Status::Sent);
            e.handed_off += sent;
            self.handed_off += sent;
            return;
        }
        bump(&mut e.counts, status);
        if category != ResponseCategory::Accepted {
            *e.categories.entry(category.as_str()).or_default() += 1;
        }
        e.last_category = Some(category);
        e.last_at = Some(now);
    }

    /// Add a batch of log line counts.
    pub fn count_lines(&mut self, parsed: u64, ignored: u64, malformed: u64) {
        self.log.lines += parsed + ignored + malformed;
        self.log.parsed += parsed;
        self.log.ignored += ignored;
        self.log.malformed += malformed;
    }

    pub fn since_start(&self) -> StatusCounts {
        self.since_start
    }

    /// Recipients that left the queue (sent, handed to a peer, bounced or
    /// expired) since start.
    pub fn outflow(&self) -> u64 {
        let c = &self.since_start;
        c.sent + self.handed_off + c.bounced + c.expired
    }

    /// Recipients of `domain` that left the queue (sent, handed to a peer,
    /// bounced or expired) since start; 0 for a domain not tracked
    /// individually.
    pub fn left(&self, domain: &str) -> u64 {
        self.domains.get(domain).map_or(0, |e| e.counts.sent + e.handed_off + e.counts.bounced + e.counts.expired)
    }

    pub fn log(&self) -> LogStats {
        self.log
    }

    /// The `n` most active domains, most outcomes first (ties by name).
    pub fn top_domains(&self, n: usize) -> Vec<DomainHealth> {
        let total = |c: &StatusCounts| c.sent + c.deferred + c.bounced + c.expired;
        let mut domains: Vec<(&String, &DomainEntry)> = self.domains.iter().collect();
        domains.sort_by(|a, b| total(&b.1.counts).cmp(&total(&a.1.counts)).then_with(|| a.0.cmp(b.0)));
        domains
            .into_iter()
            .take(n)
            .map(|(d, e)| DomainHealth {
                domain: d.clone(),
                rule: e.rule.clone(),
                counts: e.counts,
                categories: e.categories.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                last_category: e.last_category,
                last_at: e.last_at,
            })
            .collect()
    }
}

/// The window the delivery latency percentiles are taken over (seconds).
pub const LATENCY_WINDOW_SECONDS: u64 = 300;
/// Latencies kept at most: past this, the oldest go first (a burst of
/// 10,000 deliveries in the window is plenty for a p99).
pub const MAX_LATENCY_SAMPLES: usize = 10_000;

/// Total delivery latencies (Postfix `delay=`) of the last
/// [`LATENCY_WINDOW_SECONDS`], for the p50/p99 in /status.
#[derive(Default)]
pub struct LatencyWindow {
    /// (Unix seconds logged, latency in seconds), oldest first.
    samples: VecDeque<(u64, f32)>,
}

impl LatencyWindow {
    /// One delivery logged at `now` that took `delay` seconds.
    pub fn record(&mut self, now: u64, delay: f32) {
        if self.samples.len() >= MAX_LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, delay));
        self.expire(now);
    }

    fn expire(&mut self, now: u64) {
        while self.samples.front().is_some_and(|(at, _)| at + LATENCY_WINDOW_SECONDS <= now) {
            self.samples.pop_front();
        }
    }

    /// p50 and p99 (nearest rank) of the window ending at `now`.
    pub fn report(&mut self, now: u64) -> DeliveryLatency {
        self.expire(now);
        let mut v: Vec<f32> = self.samples.iter().map(|(_, d)| *d).collect();
        v.sort_by(f32::total_cmp);
        let rank = |p: f64| -> Option<f64> {
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
            // Postfix logs at most millisecond precision; f32 noise past it is not news.
            v.get(i).map(|d| (f64::from(*d) * 1000.0).round() / 1000.0)
        };
        DeliveryLatency {
            window_seconds: LATENCY_WINDOW_SECONDS,
            samples: v.len() as u64,
            p50_seconds: rank(0.50),
            p99_seconds: rank(0.99),
        }
    }
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

    #[test]
    fn counts_per_status_and_domain_most_active_first() {
        let mut t = Tally::default();
        for _ in 0..5 {
            t.record("gmail.com", Some("gmail"), Status::Deferred, ResponseCategory::RateLimit, false, 10);
        }
        for _ in 0..3 {
            t.record("yahoo.com", None, Status::Bounced, ResponseCategory::IpBlock, false, 11);
        }
        t.record("yahoo.com", None, Status::Sent, ResponseCategory::Accepted, false, 12);
        assert_eq!(t.since_start(), StatusCounts { sent: 1, deferred: 5, bounced: 3, expired: 0 });
        assert_eq!(t.outflow(), 4, "deferred mail has not left the queue");
        assert_eq!((t.left("yahoo.com"), t.left("gmail.com"), t.left("new.example")), (4, 0, 0));
        let top = t.top_domains(1);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].domain, "gmail.com");
        assert_eq!(top[0].rule.as_deref(), Some("gmail"));
        assert_eq!(top[0].categories.get("RateLimit"), Some(&5));
        let yahoo = &t.top_domains(2)[1];
        assert_eq!(yahoo.counts, StatusCounts { sent: 1, deferred: 0, bounced: 3, expired: 0 });
        assert_eq!(yahoo.categories.get("Accepted"), None, "only non-success answers are categorised");
        assert_eq!((yahoo.last_category, yahoo.last_at), (Some(ResponseCategory::Accepted), Some(12)));
    }

    #[test]
    fn a_hand_off_is_not_an_outcome_but_leaves_the_queue() {
        let mut t = Tally::default();
        t.record("gmail.com", Some("gmail"), Status::Sent, ResponseCategory::Accepted, true, 1);
        t.record("gmail.com", Some("gmail"), Status::Deferred, ResponseCategory::Other, true, 2);
        t.record("gmail.com", Some("gmail"), Status::Bounced, ResponseCategory::Other, true, 3);
        t.record("gmail.com", Some("gmail"), Status::Sent, ResponseCategory::Accepted, false, 4);
        // The peer counts the handed-off recipient; the bounce on the way is final here.
        assert_eq!(t.since_start(), StatusCounts { sent: 1, deferred: 0, bounced: 1, expired: 0 });
        assert_eq!((t.outflow(), t.left("gmail.com")), (3, 3), "the hand-off left this queue");
        assert_eq!(t.top_domains(1)[0].counts, StatusCounts { sent: 1, deferred: 0, bounced: 1, expired: 0 });
    }

    #[test]
    fn domains_past_the_bound_count_under_other() {
        let mut t = Tally::default();
        for i in 0..MAX_DOMAINS {
            t.record(&format!("d{i}.example"), None, Status::Sent, ResponseCategory::Accepted, false, 1);
        }
        for late in ["late.example", "later.example", "latest.example"] {
            t.record(late, None, Status::Sent, ResponseCategory::Accepted, false, 2);
        }
        // A known domain still counts under its own name.
        t.record("d0.example", None, Status::Sent, ResponseCategory::Accepted, false, 2);
        let top = t.top_domains(2);
        assert_eq!((top[0].domain.as_str(), top[0].counts.sent), (OTHER, 3));
        assert_eq!((top[1].domain.as_str(), top[1].counts.sent), ("d0.example", 2));
        assert_eq!(t.top_domains(usize::MAX).len(), MAX_DOMAINS + 1);
    }

    #[test]
    fn latency_percentiles_over_the_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.report(0), DeliveryLatency { window_seconds: LATENCY_WINDOW_SECONDS, ..Default::default() });
        // 100 deliveries at t = 10: 1 s .. 100 s.
        for i in 1..=100 {
            w.record(10, i as f32);
        }
        let r = w.report(10);
        assert_eq!((r.samples, r.p50_seconds, r.p99_seconds), (100, Some(50.0), Some(99.0)));
        // One slow delivery later; the first hundred leave the window.
        w.record(200, 7.5);
        assert_eq!(w.report(200).samples, 101);
        let r = w.report(10 + LATENCY_WINDOW_SECONDS);
        assert_eq!((r.samples, r.p50_seconds, r.p99_seconds), (1, Some(7.5), Some(7.5)));
        // Bounded whatever the rate.
        for _ in 0..MAX_LATENCY_SAMPLES + 5 {
            w.record(300, 0.5);
        }
        assert_eq!(w.report(300).samples, MAX_LATENCY_SAMPLES as u64);
    }
}
