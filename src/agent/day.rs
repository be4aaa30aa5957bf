//! The day ledger: what "today" is and what this instance has done today —
//! the sent-today counters ([`Counters`]) and the warm-up ledger
//! ([`Warmup`]: step, hold, pause window, reservations) — and the roll-over
//! that moves both at the day boundary of the warm-up plan's time zone.
//!
//! It owns the calendar (which zone, which day, when the next one starts),
//! the persistence of both files and the gauges that show them. It must
//! never decide a route (decisions does, reading this ledger), never take a
//! lock (its owner holds one around it) and never read the clock: the
//! caller passes the time in.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use sendfleet_render::contract::{DeliveryCounters, StatusCounts, WarmupProgress};
use sendfleet_render::policy::{AgentPolicy, WarmupPolicy};

use super::counters::{Counters, CountersError};
use super::metrics::{Metrics, RuleLabels};
use super::policy_slot::plan;
use super::warmup::{self, Warmup};

/// Sent-today counters and the warm-up ledger, rolled together.
pub struct DayLedger {
    pub counters: Counters,
    pub warmup: Warmup,
}

/// The time zone days are counted in: the warm-up plan's (UTC without a
/// plan, or with a name the bundled database does not know).
pub fn time_zone(policy: Option<&AgentPolicy>) -> TimeZone {
    plan(policy).and_then(|w| warmup::time_zone_database().get(&w.time_zone).ok()).unwrap_or(TimeZone::UTC)
}

/// The calendar day of `at` under `policy`.
pub fn today(at: jiff::Timestamp, policy: Option<&AgentPolicy>) -> Date {
    warmup::day_in(at, &time_zone(policy))
}

/// Unix seconds of the next day boundary after `at` under `policy`.
pub fn next_day_start(at: jiff::Timestamp, policy: Option<&AgentPolicy>) -> Option<u64> {
    warmup::next_day_start(at, &time_zone(policy))
}

impl DayLedger {
    /// The ledger persisted in `dir` beside `counters` (loaded by the
    /// caller, which refuses to start on an unreadable state dir). An
    /// unreadable warm-up ledger restarts on step 1, logged.
    pub fn load(dir: &std::path::Path, counters: Counters) -> Self {
        let warmup = Warmup::load(dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "warm-up ledger unreadable; this instance starts on step 1");
            Warmup::new(dir)
        });
        DayLedger { counters, warmup }
    }

    /// Start `today` if it is a new day: counters restart at zero and the
    /// warm-up ledger moves to the day's step (called every few seconds
    /// and on every policy change).
    pub fn roll(&mut self, plan: Option<&WarmupPolicy>, today: Date) {
        self.counters.roll(&today.to_string());
        self.warmup.roll(plan, today);
    }

    /// The figures the sent-today and warm-up gauges show.
    pub fn gauges(&self, plan: Option<&WarmupPolicy>) -> DayGauges {
        let progress = self.warmup.progress(plan, self.counters.sent_total, None);
        DayGauges {
            sent_by_rule: self.counters.sent_by_rule.clone(),
            step: progress.as_ref().map_or(0, |p| i64::from(p.step)),
            // -1: no cap (no plan, or warm).
            daily_cap: progress.as_ref().and_then(|p| p.daily_cap).map_or(-1, |c| c as i64),
            reserved: self.warmup.reservations.total() as i64,
            held: progress.as_ref().is_some_and(|p| p.held.is_some()),
        }
    }

    /// The /status counters, with the since-start counts kept elsewhere.
    pub fn counters_report(&self, since_start: StatusCounts) -> DeliveryCounters {
        DeliveryCounters {
            day: self.counters.day.clone(),
            sent_today: self.counters.sent_total,
            sent_today_by_rule: self.counters.sent_by_rule.clone(),
            since_start,
        }
    }

    /// The /status warm-up progress (`None` without a plan schedule).
    pub fn progress(&self, plan: Option<&WarmupPolicy>, next_day: Option<u64>) -> Option<WarmupProgress> {
        self.warmup.progress(plan, self.counters.sent_total, next_day)
    }

    /// Write what changed. A ledger that fails to save is logged and
    /// retried on the next flush; the counters' error is returned.
    pub fn save_dirty(&mut self) -> Result<(), CountersError> {
        if self.warmup.is_dirty() {
            if let Err(e) = self.warmup.save() {
                tracing::warn!(error = %e, "saving the warm-up ledger");
            }
        }
        if self.counters.is_dirty() {
            self.counters.save()?;
        }
        Ok(())
    }
}

/// A copy of the day's figures taken under the lock, published after it.
pub struct DayGauges {
    sent_by_rule: std::collections::BTreeMap<String, u64>,
    step: i64,
    daily_cap: i64,
    reserved: i64,
    /// The plan's pause rule holds (or will hold) the step.
    held: bool,
}

impl DayGauges {
    /// Set the `sent_today`, `warmup_step`, `warmup_daily_cap` and
    /// `warmup_reserved` gauges (every few seconds, not per delivery).
    pub fn publish(self, metrics: &Metrics) {
        metrics.sent_today.clear();
        for (r, n) in self.sent_by_rule {
            let rule = if r.is_empty() { "none".to_string() } else { r };
            metrics.sent_today.get_or_create(&RuleLabels { rule }).set(n as i64);
        }
        metrics.warmup_step.set(self.step);
        metrics.warmup_daily_cap.set(self.daily_cap);
        metrics.warmup_reserved.set(self.reserved);
        metrics.warmup_held.set(i64::from(self.held));
    }
}
