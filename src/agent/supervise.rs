//! Postfix supervision: the agent is the container entrypoint and runs
//! `postfix -c DIR start-fg` as its child. The master's stdout (the mail log,
//! `maillog_file = /dev/stdout`) feeds the log pipeline; its stderr is
//! forwarded redacted. If the master exits unexpectedly the agent exits
//! non-zero so the kubelet restarts the container (queue on the volume
//! survives); on SIGTERM the agent runs `postfix stop` and waits.
//!
//! Postfix counts as running (and the pod as ready) only once its first
//! `inet` listener, the submission port, accepts a connection: `postfix
//! start-fg` first runs its checks and permission fixes, seconds on a busy
//! node, and a pod marked ready before that receives mail it refuses.
//!
//! The agent's own tasks (log pipeline, stderr forwarder, queue monitor,
//! config watch, socketmap server, state flush) run under [`spawn_task`]:
//! each must run as long as the agent does, so one that ends or panics is
//! logged and makes /healthz fail — the kubelet restarts the pod rather than
//! leave an instance that sends mail without counting it.
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
    spawn_task(&state, TASK_LOG_PIPELINE, pipeline::run(stdout, tokio::io::stdout(), state.clone(), redactor.clone()));
    spawn_task(&state, TASK_STDERR_FORWARDER, pipeline::forward(stderr, tokio::io::stderr(), redactor));
    tracing::info!(config_directory = %dir.display(), "postfix starting");
    match submission_listener(dir) {
        Some(addr) => {
            let exits = state.postfix_exits();
            tokio::spawn(async move {
                loop {
                    if state.postfix_exits() != exits {
                        return;
                    }
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        state.set_postfix_running(true);
                        tracing::info!(listener = %addr, "postfix accepting mail");
                        return;
                    }
                    tokio::time::sleep(LISTENER_POLL).await;
                }
            });
        }
        // No inet listener in master.cf (not a rendered configuration):
        // running as soon as the master is.
        None => state.set_postfix_running(true),
    }
    Ok(child)
}

/// Task names (metric label `task`, log field).
pub const TASK_LOG_PIPELINE: &str = "log pipeline";
pub const TASK_STDERR_FORWARDER: &str = "stderr forwarder";
pub const TASK_QUEUE_MONITOR: &str = "queue monitor";
pub const TASK_CONFIG_WATCH: &str = "config watch";
pub const TASK_SOCKETMAP: &str = "socketmap server";
pub const TASK_STATE_FLUSH: &str = "state flush";
pub const TASK_DRAIN: &str = "drain";
pub const TASK_SIGNER: &str = "dkim signer";

/// What a task's future may end with: nothing, or a result whose error is logged.
pub trait TaskEnd {
    fn error(self) -> Option<String>;
}
impl TaskEnd for () {
    fn error(self) -> Option<String> {
        None
    }
}
impl<E: std::fmt::Display> TaskEnd for Result<(), E> {
    fn error(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// Run `task` in the background; when it ends — returns, fails or panics —
/// while the agent is live, the agent stops being healthy (`/healthz`
/// 503). Ending during shutdown (not live any more) is expected.
pub fn spawn_task<F>(state: &Arc<State>, name: &'static str, task: F)
where
    F: std::future::Future + Send + 'static,
    F::Output: TaskEnd + Send,
{
    let state = state.clone();
    let handle = tokio::spawn(task);
    tokio::spawn(async move {
        let error = match handle.await {
            Ok(end) => end.error(),
            Err(e) if e.is_panic() => Some("panicked".to_string()),
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        };
        if !state.is_live() {
            return;
        }
        tracing::error!(task = name, error = error.as_deref().unwrap_or("ended"), "agent task ended: unhealthy");
        state.task_ended(name);
    });
}

/// How often to try the submission listener while Postfix starts.
const LISTENER_POLL: Duration = Duration::from_millis(200);

/// Where the first `inet` service of `dir/master.cf` listens: its
/// `[host:]port`, the host defaulting to `inet_interfaces` of main.cf when
/// that names one address, else loopback.
fn submission_listener(dir: &Path) -> Option<std::net::SocketAddr> {
    let master = std::fs::read_to_string(dir.join("master.cf")).ok()?;
    let main = std::fs::read_to_string(dir.join("main.cf")).unwrap_or_default();
    listener_of(&master, &main)
}

fn listener_of(master_cf: &str, main_cf: &str) -> Option<std::net::SocketAddr> {
    let service = master_cf.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let name = f.next().filter(|n| !n.starts_with('#') && !l.starts_with(char::is_whitespace))?;
        (f.next() == Some("inet")).then_some(name)
    })?;
    let (host, port) = match service.rsplit_once(':') {
        Some((h, p)) => (Some(h.trim_matches(['[', ']']).to_string()), p),
        None => (None, service),
    };
    let port: u16 = port.parse().ok()?;
    let interfaces = main_cf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "inet_interfaces").then(|| v.trim().to_string())
    });
    let host = host.or(interfaces.filter(|i| i.parse::<std::net::IpAddr>().is_ok())).unwrap_or("127.0.0.1".into());
    Some(std::net::SocketAddr::new(host.parse().ok()?, port))
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
    // Shutting down: the tasks that end with Postfix's output end as expected.
    state.set_live(false);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::agent::counters::Counters;
    use crate::agent::AgentArgs;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: AgentArgs,
    }

    async fn unhealthy_soon(state: &State) {
        for _ in 0..200 {
            if !state.is_healthy() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("still healthy after 2 s");
    }

    #[tokio::test]
    async fn a_task_that_ends_or_panics_makes_the_agent_unhealthy_unless_it_is_shutting_down() {
        let dir = tempfile::tempdir().unwrap();
        let args = Wrap::parse_from(["t", "--state-dir", dir.path().to_str().unwrap()]).args;
        let state = Arc::new(State::new(args, Counters::load(dir.path()).unwrap()));
        state.set_live(true);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        spawn_task(&state, TASK_QUEUE_MONITOR, async move {
            if rx.await.is_ok() {
                panic!("queue monitor bug");
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(state.is_healthy(), "still running");
        tx.send(()).unwrap();
        unhealthy_soon(&state).await;
        assert!(state.metrics.encode().contains("sendfleet_agent_tasks_ended_total{task=\"queue monitor\"} 1"));

        let dir = tempfile::tempdir().unwrap();
        let args = Wrap::parse_from(["t", "--state-dir", dir.path().to_str().unwrap()]).args;
        let state = Arc::new(State::new(args, Counters::load(dir.path()).unwrap()));
        state.set_live(true);
        spawn_task(&state, TASK_LOG_PIPELINE, async { Err::<(), _>(std::io::Error::other("broken pipe")) });
        unhealthy_soon(&state).await;
        state.set_live(false);
        let ended = state.metrics.encode();
        spawn_task(&state, TASK_STDERR_FORWARDER, async {});
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(state.metrics.encode(), ended, "an end during shutdown is not counted");
    }

    #[test]
    fn the_submission_listener_is_the_first_inet_service_at_inet_interfaces() {
        let master = "# comment\npickup unix n - n 60 1 pickup\n587 inet n - - - - smtpd\n  -o syslog_name=x\n2525 inet n - - - - smtpd\n";
        assert_eq!(listener_of(master, "inet_interfaces = 10.0.0.5\n"), Some("10.0.0.5:587".parse().unwrap()));
        assert_eq!(listener_of(master, "inet_interfaces = all\n"), Some("127.0.0.1:587".parse().unwrap()));
        assert_eq!(listener_of("[192.0.2.1]:25 inet n - - - - smtpd\n", ""), Some("192.0.2.1:25".parse().unwrap()));
        assert_eq!(listener_of("pickup unix n - n 60 1 pickup\n", ""), None);
    }
}
