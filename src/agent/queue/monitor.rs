//! Periodic queue scan with `postqueue -c DIR -j`, stream-parsed line by line
//! (the queue may hold hundreds of thousands of messages; nothing per message
//! is kept). Failures are reported in /status and as a metric, never fatal.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::parse::{QueueScan, QueueScanner};
use crate::agent::state::{unix_now, State};

/// Default backlog ages when the policy has none (the seeds' 4 h and 12 h).
pub const DEFAULT_WARN: u64 = 4 * 3600;
pub const DEFAULT_CRITICAL: u64 = 12 * 3600;

/// Run `postqueue -j` once and fold its output.
pub async fn scan(postfix_dir: &Path, warn: u64, critical: u64) -> std::io::Result<QueueScan> {
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
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut scanner = QueueScanner::new(unix_now(), warn, critical);
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
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(std::io::Error::other(format!("postqueue -j: {}: {}", out.status, err.trim())));
    }
    Ok(scanner.finish())
}

pub async fn run(state: Arc<State>) {
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
            Ok(s) => state.set_queue(&s, warn, critical, None),
            Err(e) => {
                tracing::warn!(error = %e, "queue scan failed");
                state.set_queue(&QueueScan::default(), warn, critical, Some(e.to_string()));
            }
        }
    }
}
