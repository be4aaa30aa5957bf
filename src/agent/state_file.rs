//! The agent's small JSON state files in the state dir (on the queue
//! volume): sent-today counters, the warm-up ledger, automatic exclusions
//! and slow-downs. One way to read and write them, so every file survives a
//! crash the same way: written to a temp name, fsynced, renamed — a crash
//! leaves the old or the new file, never half of one.
//!
//! A file that does not parse is kept aside as `<file>.corrupt-<unix
//! seconds>` before the agent starts afresh, and [`kept_aside`] lists those
//! for /status and the metrics: a lost ledger must not stop mail, but it
//! must never be silently replaced either (the evidence stays for a human).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Infix of a state file kept aside: `<file>.corrupt-<unix seconds>`.
pub const CORRUPT_INFIX: &str = ".corrupt-";

/// Read `path`: `Ok(None)` when it does not exist, or when it does not parse
/// (then it is renamed aside first, and logged with `what`); other read
/// errors, and a failure to keep a corrupt file aside, are returned.
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let aside = keep_aside(path)?;
                tracing::error!(
                    path = %path.display(), kept_as = %aside.display(), error = %e,
                    "{what} unreadable: kept aside, starting afresh"
                );
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Rename `path` to a `.corrupt-<time>` name not taken yet.
fn keep_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let free = (0..)
        .map(|n| {
            let suffix = if n == 0 { String::new() } else { format!(".{n}") };
            path.with_file_name(format!("{name}{CORRUPT_INFIX}{now}{suffix}"))
        })
        .find(|p| !p.exists())
        .expect("an unbounded range yields a free name");
    std::fs::rename(path, &free)?;
    Ok(free)
}

/// The state files kept aside in `dir` (file names, sorted).
pub fn kept_aside(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(CORRUPT_INFIX))
        .collect();
    names.sort();
    names
}

/// Write `value` to `dir/file` through `.file.tmp`, fsync, rename.
pub fn save<T: Serialize>(dir: &Path, file: &str, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_file_is_kept_aside_and_listed_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.json");
        std::fs::write(&path, b"{\"day\": \"2026-").unwrap();
        assert_eq!(load::<serde_json::Value>(&path, "counter file").unwrap(), None);
        assert!(!path.exists(), "moved away, so a save cannot replace it");
        let aside = kept_aside(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("counters.json.corrupt-"), "{aside:?}");
        assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), b"{\"day\": \"2026-");
        // A second corrupt file in the same second gets a name of its own.
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(load::<serde_json::Value>(&path, "counter file").unwrap(), None);
        assert_eq!(kept_aside(dir.path()).len(), 2);
        save(dir.path(), "counters.json", &serde_json::json!({"day": "x"})).unwrap();
        assert_eq!(load::<serde_json::Value>(&path, "x").unwrap(), Some(serde_json::json!({"day": "x"})));
        assert_eq!(kept_aside(dir.path()).len(), 2);
    }
}
