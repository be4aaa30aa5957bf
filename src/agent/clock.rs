//! The agent's notion of "now": the wall clock, plus — in tests only — an
//! offset in seconds read from a file, so a test can fast-forward days
//! (warm-up steps, windows, expiries) instead of sleeping through them.
//!
//! The offset file is named by the hidden `--test-clock-file` flag; nothing
//! in the CRDs, the chart or the rendered config can set it. The file is
//! re-read every time the time is read, so a test moves the clock by
//! rewriting it. The shifted clock must never be the source of queue ages
//! (those are Postfix's file times, real time: [`wall_unix_now`]) and never
//! fails the mail path: an unreadable offset counts as 0, with a warning.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Real time in Unix seconds, never shifted: for what is compared with
/// Postfix's own file times (queue ages) or reported as when something
/// happened on the host (config installs, queue scans).
pub fn wall_unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Wall clock, optionally shifted by a test offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_file: Option<PathBuf>,
}

impl Clock {
    pub fn new(offset_file: Option<PathBuf>) -> Self {
        Clock { offset_file }
    }

    /// The test offset in seconds (0 without a file, or if the file is
    /// missing or does not hold an integer).
    pub fn offset_seconds(&self) -> i64 {
        let Some(path) = &self.offset_file else {
            return 0;
        };
        match std::fs::read_to_string(path) {
            Ok(s) => s.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(path = %path.display(), "test clock file does not hold whole seconds; offset 0");
                0
            }),
            Err(_) => 0,
        }
    }

    /// Now, as a timestamp (for calendar days in a time zone).
    pub fn now(&self) -> jiff::Timestamp {
        let now = jiff::Timestamp::now();
        match self.offset_seconds() {
            0 => now,
            off => now.checked_add(jiff::SignedDuration::from_secs(off)).unwrap_or(now),
        }
    }

    /// Now, in Unix seconds.
    pub fn unix_now(&self) -> u64 {
        wall_unix_now().saturating_add_signed(self.offset_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_file_shifts_both_readings_and_is_reread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let c = Clock::new(Some(file.clone()));
        let real = Clock::default();
        assert!(c.unix_now().abs_diff(real.unix_now()) <= 1, "missing file = no offset");
        std::fs::write(&file, "86400\n").unwrap();
        assert!((c.unix_now() - real.unix_now()).abs_diff(86400) <= 1);
        assert!((c.now().as_second() - real.now().as_second() - 86400).abs() <= 1);
        std::fs::write(&file, "-3600").unwrap();
        assert!((real.unix_now() - c.unix_now()).abs_diff(3600) <= 1);
        std::fs::write(&file, "tomorrow").unwrap();
        assert_eq!(c.offset_seconds(), 0);
    }
}
