//! Postfix supervision: the agent is the container entrypoint and runs
//! `postfix -c DIR start-fg` as its child. The master's stdout (the mail log,
//! `maillog_file = /dev/stdout`) feeds the log pipeline; its stderr is
//! forwarded redacted. If the master exits unexpectedly the agent exits
//! non-zero so the kubelet restarts the container (queue on the volume
//! survives); on SIGTERM the agent runs `postfix stop` and waits.
//!
//! Must never restart Postfix on its own for a config change (see install).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use super::log::pipeline;
use super::pipe::grow_pipe;
use super::redact::Redactor;
use super::state::State;

/// How long `postfix stop` may take before the master is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum SuperviseError {
    #[error("starting postfix: {0}")]
    Spawn(std::io::Error),
    #[error("postfix master exited unexpectedly ({0})")]
    Exited(String),
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
}

/// Start Postfix in the foreground with its log piped to the pipeline.
pub async fn start(dir: &Path, state: Arc<State>, redactor: Redactor) -> Result<Child, SuperviseError> {
    let mut child = Command::new("postfix")
        .arg("-c")
        .arg(dir)
        .arg("start-fg")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SuperviseError::Spawn)?;
    let stdout = child.stdout.take().ok_or_else(|| SuperviseError::Spawn(std::io::Error::other("no stdout")))?;
    let stderr = child.stderr.take().ok_or_else(|| SuperviseError::Spawn(std::io::Error::other("no stderr")))?;
    grow_pipe(&stdout);
    let st = state.clone();
    let r = redactor.clone();
    tokio::spawn(async move {
        if let Err(e) = pipeline::run(stdout, tokio::io::stdout(), st, r).await {
            tracing::warn!(error = %e, "mail log pipeline stopped");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = pipeline::forward(stderr, tokio::io::stderr(), redactor).await {
            tracing::debug!(error = %e, "postfix stderr forwarder stopped");
        }
    });
    state.set_postfix_running(true);
    tracing::info!(config_directory = %dir.display(), "postfix started");
    Ok(child)
}

/// Wait for SIGTERM/SIGINT (then stop Postfix gracefully) or for the master to exit.
pub async fn wait(child: Option<&mut Child>, dir: &Path, state: &State) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).map_err(SuperviseError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(SuperviseError::Signal)?;
    let Some(child) = child else {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        return Ok(());
    };
    tokio::select! {
        status = child.wait() => {
            state.postfix_exited();
            let s = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            tracing::error!(status = %s, "postfix master exited");
            return Err(SuperviseError::Exited(s).into());
        }
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping postfix");
    let _ = Command::new("postfix").arg("-c").arg(dir).arg("stop").status().await;
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("postfix did not stop in time; killing the master");
            let _ = child.kill().await;
        }
    }
    state.set_postfix_running(false);
    Ok(())
}
