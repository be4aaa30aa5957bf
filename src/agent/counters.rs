//! Sent-today counters, persisted in the queue volume.
//!
//! Warm-up caps and per-rule shares are decided from "sent today", which
//! must survive an agent or pod restart (the queue volume does). The file is
//! written to a temp name and renamed, so a crash leaves the old or the new
//! file, never half of one. Counters hold rule names and numbers only.
//!
//! A file format and its day roll, nothing more: it must never decide when
//! to save (the state's flush does) or what "today" is (the day ledger
//! does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const FILE: &str = "counters.json";

#[derive(Debug, Error)]
pub enum CountersError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// `YYYY-MM-DD` the counts belong to.
    pub day: String,
    pub sent_total: u64,
    /// Per rule name; `""` for mail no rule matched.
    pub sent_by_rule: BTreeMap<String, u64>,
    /// Per warm-up share key (`share:<patterns>`), for provider shares.
    #[serde(default)]
    pub sent_by_share: BTreeMap<String, u64>,
    #[serde(skip)]
    dir: PathBuf,
    #[serde(skip)]
    dirty: bool,
}

impl Counters {
    /// Load from `dir`; a missing file is an empty start, an unreadable one
    /// too (logged): refusing to start would stop mail for a counter file.
    pub fn load(dir: &Path) -> Result<Self, CountersError> {
        let path = dir.join(FILE);
        let mut c = match super::state_file::load::<Counters>(&path, "counter file") {
            Ok(c) => c.unwrap_or_default(),
            Err(source) => return Err(CountersError::Read { path, source }),
        };
        c.dir = dir.to_path_buf();
        Ok(c)
    }

    /// Start a new day if `today` differs from the stored one.
    pub fn roll(&mut self, today: &str) {
        if self.day != today {
            self.day = today.to_string();
            self.sent_total = 0;
            self.sent_by_rule.clear();
            self.sent_by_share.clear();
            self.dirty = true;
        }
    }

    pub fn record_sent(&mut self, rule: &str, share: Option<&str>) {
        self.sent_total += 1;
        bump(&mut self.sent_by_rule, rule);
        if let Some(s) = share {
            bump(&mut self.sent_by_share, s);
        }
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Write temp + fsync + rename; clears the dirty flag on success.
    pub fn save(&mut self) -> Result<(), CountersError> {
        let path = self.dir.join(FILE);
        super::state_file::save(&self.dir, FILE, self).map_err(|source| CountersError::Write { path, source })?;
        self.dirty = false;
        Ok(())
    }
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    match m.get_mut(k) {
        Some(n) => *n += 1,
        None => {
            m.insert(k.to_string(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_rolls_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counters::load(dir.path()).unwrap();
        c.roll("2026-11-23");
        c.record_sent("gmail", Some("share:gmail.com"));
        c.record_sent("gmail", None);
        c.record_sent("", None);
        c.save().unwrap();
        assert!(!c.is_dirty());
        let mut back = Counters::load(dir.path()).unwrap();
        assert_eq!(back.sent_total, 3);
        assert_eq!(back.sent_by_rule.get("gmail"), Some(&2));
        assert_eq!(back.sent_by_share.get("share:gmail.com"), Some(&1));
        back.roll("2026-11-23");
        assert_eq!(back.sent_total, 3);
        back.roll("2026-11-24");
        assert_eq!(back.sent_total, 0);
        assert!(back.sent_by_rule.is_empty());
        std::fs::write(dir.path().join(FILE), b"{garbage").unwrap();
        assert_eq!(Counters::load(dir.path()).unwrap().sent_total, 0);
    }
}
