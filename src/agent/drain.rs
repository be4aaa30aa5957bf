//! Draining: while the policy marks this instance `draining` (its egress
//! IP was removed or disabled, or its pool is being deleted), retry the
//! deferred queue at once and then on a short cycle, so queued mail leaves
//! now instead of after its backoff. Where it goes is not decided here: the
//! socketmap answers as for any lookup (out of rotation: a peer in
//! rotation; no peer left: deferred, and it stays queued).
//!
//! Never: delete, bounce or requeue mail (`postsuper`), or flush while not
//! draining (a flush defeats the backoff the pool's retry schedule asks for).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use crate::agent::state::State;

/// Longest wait between two flushes while deferred mail is left.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// What to do on one tick. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not draining: nothing.
    Idle,
    /// Draining and there is deferred mail (or the drain just began): flush.
    Flush,
    /// Draining, nothing deferred: wait.
    Wait,
}

/// Flush when the drain begins, and afterwards while mail is deferred.
pub fn step(draining: bool, was_draining: bool, deferred: u64) -> Step {
    match (draining, was_draining, deferred) {
        (false, ..) => Step::Idle,
        (true, false, _) => Step::Flush,
        (true, true, 0) => Step::Wait,
        (true, true, _) => Step::Flush,
    }
}

/// `postqueue -c DIR -f`: schedule every queued message for immediate
/// delivery.
pub async fn flush(postfix_dir: &Path) -> std::io::Result<()> {
    let out = Command::new("postqueue")
        .arg("-c")
        .arg(postfix_dir)
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "postqueue -f: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The drain task: ticks with the queue scans (at most [`FLUSH_EVERY`]).
/// A failed flush is logged and tried again on the next tick.
pub async fn run(state: Arc<State>) {
    let every = Duration::from_secs(state.args.queue_interval.max(1)).min(FLUSH_EVERY);
    let mut tick = tokio::time::interval(every);
    let mut was_draining = false;
    loop {
        tick.tick().await;
        let draining = state.policy().is_some_and(|p| p.this_instance().is_some_and(|i| i.draining));
        let step = step(draining, was_draining, state.queued("deferred"));
        if step == Step::Flush {
            if !was_draining {
                tracing::info!("draining: handing the queue on");
            }
            if let Err(e) = flush(&state.args.postfix_dir).await {
                tracing::warn!(error = %e, "draining: flushing the queue");
            }
        }
        was_draining = draining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_flushes_at_once_then_only_while_mail_is_deferred() {
        assert_eq!(step(false, false, 10), Step::Idle, "not draining: the backoff rules");
        assert_eq!(step(false, true, 10), Step::Idle);
        assert_eq!(step(true, false, 0), Step::Flush, "the drain begins: flush even before a scan saw mail");
        assert_eq!(step(true, true, 0), Step::Wait);
        assert_eq!(step(true, true, 3), Step::Flush);
    }
}
