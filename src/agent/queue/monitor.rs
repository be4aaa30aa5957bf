//! Periodic queue scan with `postqueue -c DIR -j`, stream-parsed line by line
//! (the queue may hold hundreds of thousands of messages; nothing per message
//! is kept). Failures are reported in /status and as a metric, never fatal.
//!
//! The first scans race Postfix's start: until the master has created the
//! queue and its showq service, postqueue says the mail system is down. That
//! is not an incident, so while no scan has succeeded yet and the agent is
//! within [`STARTUP_GRACE`], such a failure is retried shortly and not
//! reported ([`judge`]). Any other failure, or the same one later, is.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::parse::{QueueScan, QueueScanner};
use crate::agent::clock::wall_unix_now;
use crate::agent::state::State;

/// Default backlog ages when the policy has none (the seeds' 4 h and 12 h):
/// the API's defaults, defined once in the render core.
pub const DEFAULT_WARN: u64 = sendfleet_render::api::defaults::BACKLOG_WARN_AGE.seconds();
pub const DEFAULT_CRITICAL: u64 = sendfleet_render::api::defaults::BACKLOG_CRITICAL_AGE.seconds();

/// How long after the agent's start "mail system is down" means Postfix is
/// still starting (the master is up within a second or two; a stuck start
/// must still show up as an error).
pub const STARTUP_GRACE: Duration = Duration::from_secs(60);

/// Retry delay for a scan that ran before Postfix was up.
pub const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// Why a scan failed.
#[derive(Debug, Error)]
pub enum ScanError {
    #[error("running postqueue -j: {0}")]
    Io(#[from] std::io::Error),
    #[error("postqueue -j: {status}: {stderr}")]
    Failed { status: String, stderr: String },
}

impl ScanError {
    /// postqueue could not reach the master's showq service. As root it then
    /// reads the queue itself, which fails while the queue directory is not
    /// set up yet ("Mail system is down -- accessing queue directly", then
    /// "malformed showq server response"); unprivileged it says "Queue report
    /// unavailable - mail system is down".
    pub fn mail_system_down(&self) -> bool {
        match self {
            ScanError::Failed { stderr, .. } => stderr.to_ascii_lowercase().contains("mail system is down"),
            ScanError::Io(_) => false,
        }
    }
}

/// What a failed scan means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Postfix is still starting: retry soon, report nothing.
    NotYetUp,
    /// A real failure: report it in /status and the metric.
    Report,
}

/// Judge a failed scan: "mail system is down" before the first successful
/// scan and within [`STARTUP_GRACE`] of the agent's start is start-up, not an error.
pub fn judge(err: &ScanError, scanned_once: bool, since_start: Duration) -> Verdict {
    if !scanned_once && since_start < STARTUP_GRACE && err.mail_system_down() {
        Verdict::NotYetUp
    } else {
        Verdict::Report
    }
}

/// Run `postqueue -j` once and fold its output.
pub async fn scan(postfix_dir: &Path, warn: u64, critical: u64) -> Result<QueueScan, ScanError> {
    let mut child = Command::new("postqueue")
        .arg("-c")
        .arg(postfix_dir)
        .arg("-j")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    // A large queue is tens of MB of JSON: with a 64 KiB pipe postqueue
    // would stop every 64 KiB until this task is scheduled again.
    crate::agent::pipe::grow_pipe(&stdout);
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut scanner = QueueScanner::new(wall_unix_now(), warn, critical);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        scanner.line(&line);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ScanError::Failed { status: out.status.to_string(), stderr });
    }
    Ok(scanner.finish())
}

pub async fn run(state: Arc<State>) {
    let started = std::time::Instant::now();
    let mut scanned_once = false;
    let mut tick = tokio::time::interval(Duration::from_secs(state.args.queue_interval.max(1)));
    loop {
        tick.tick().await;
        state.roll_day();
        let (warn, critical) = match state.policy() {
            Some(p) if p.backlog_warn_seconds > 0 && p.backlog_critical_seconds > 0 => {
                (p.backlog_warn_seconds, p.backlog_critical_seconds)
            }
            _ => (DEFAULT_WARN, DEFAULT_CRITICAL),
        };
        match scan(&state.args.postfix_dir, warn, critical).await {
            Ok(s) => {
                scanned_once = true;
                state.queue_scanned(&s, warn, critical);
            }
            Err(e) if judge(&e, scanned_once, started.elapsed()) == Verdict::NotYetUp => {
                tracing::debug!(error = %e, "queue scan before postfix is up; retrying");
                tick.reset_after(STARTUP_RETRY);
            }
            Err(e) => {
                tracing::warn!(error = %e, "queue scan failed");
                state.queue_scan_failed(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> ScanError {
        ScanError::Failed { status: "exit status: 69".into(), stderr: stderr.into() }
    }

    #[test]
    fn mail_system_down_at_start_is_not_an_error() {
        // Both forms Postfix 3.7 prints (as root, and unprivileged).
        let root = failed("postqueue: warning: Mail system is down -- accessing queue directly (Connect to the Postfix showq service: No such file or directory)\npostqueue: fatal: malformed showq server response");
        let user = failed("postqueue: fatal: Queue report unavailable - mail system is down");
        for e in [&root, &user] {
            assert!(e.mail_system_down());
            assert_eq!(judge(e, false, Duration::from_secs(1)), Verdict::NotYetUp);
            // After a good scan, or past the grace, Postfix being down is news.
            assert_eq!(judge(e, true, Duration::from_secs(1)), Verdict::Report);
            assert_eq!(judge(e, false, STARTUP_GRACE), Verdict::Report);
        }
    }

    #[test]
    fn other_failures_are_reported_at_once() {
        let e = failed("postqueue: fatal: open /etc/postfix/main.cf: No such file or directory");
        assert!(!e.mail_system_down());
        assert_eq!(judge(&e, false, Duration::ZERO), Verdict::Report);
        let io = ScanError::Io(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(judge(&io, false, Duration::ZERO), Verdict::Report);
    }
}
