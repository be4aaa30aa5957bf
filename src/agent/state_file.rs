//! The agent's small JSON state files in the state dir (on the queue
//! volume): sent-today counters, the warm-up ledger, automatic exclusions
//! and slow-downs. One way to read and write them, so every file survives a
//! crash the same way: written to a temp name, fsynced, renamed — a crash
//! leaves the old or the new file, never half of one.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Read `path`: `Ok(None)` when it does not exist, or when it does not parse
/// (logged with `what`: a lost state file must not stop mail); other read
/// errors are returned.
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice::<T>(&bytes)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "{what} unreadable, starting afresh"))
            .ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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
