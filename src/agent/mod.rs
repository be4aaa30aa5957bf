//! `sendfleet agent`: runs beside Postfix in every instance pod.
//!
//! It is the container entrypoint and supervises Postfix (`postfix -c DIR
//! start-fg` as a child, `maillog_file = /dev/stdout` so the mail log arrives
//! on a pipe). It:
//! - installs the rendered config from the mounted ConfigMap atomically and
//!   runs `postfix reload` — never a restart ([`install`]);
//! - answers Postfix's transport lookups over a socketmap ([`socketmap`]);
//! - parses the mail log, counts outcomes, and re-emits every log line on its
//!   own stdout with recipient addresses replaced by a keyed hash ([`log`],
//!   [`redact`]);
//! - scans the queue with `postqueue -j` ([`queue`]);
//! - serves /metrics, /status, /healthz, /readyz ([`http`]).
//!
//! What it must never do: restart Postfix for a config change, let a
//! plaintext recipient address reach its stdout, stderr, metrics or /status,
//! or route mail the policy does not describe.

pub mod adaptive;
pub mod clock;
pub mod counters;
pub mod http;
pub mod install;
pub mod log;
pub mod metrics;
pub mod queue;
pub mod redact;
pub mod socketmap;
pub mod state;
pub mod state_file;
pub mod supervise;
pub mod warmup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sendfleet_render::contract;

/// Flags of `sendfleet agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Directory where the rendered config is mounted (a ConfigMap volume:
    /// main.cf, master.cf, maps, policy.json).
    #[arg(long, env = "SENDFLEET_CONFIG_SOURCE", default_value = "/etc/sendfleet/config")]
    pub config_source: PathBuf,
    /// Postfix config directory the agent installs into and runs Postfix
    /// with (`postfix -c`). The agent owns it: it is a symlink swapped
    /// atomically to a generation directory beside it.
    #[arg(long, env = "SENDFLEET_POSTFIX_DIR", default_value = "/var/lib/sendfleet/postfix/current")]
    pub postfix_dir: PathBuf,
    /// Unix socket of the transport socketmap (mode 0666 in a private directory).
    #[arg(long, env = "SENDFLEET_POLICY_SOCKET", default_value = contract::DEFAULT_POLICY_SOCKET)]
    pub policy_socket: PathBuf,
    /// Address of the HTTP server (metrics, status, probes).
    #[arg(long, env = "SENDFLEET_LISTEN", default_value = "0.0.0.0:9187")]
    pub listen: SocketAddr,
    /// File holding the key of the recipient-address hash (a mounted Secret;
    /// at least 16 bytes).
    #[arg(long, env = "SENDFLEET_HASH_KEY_FILE", default_value = "/etc/sendfleet/hash-key/key")]
    pub hash_key_file: PathBuf,
    /// Directory for persisted counters; put it on the queue volume so they
    /// survive restarts with the queue.
    #[arg(long, env = "SENDFLEET_STATE_DIR", default_value = "/var/spool/postfix/sendfleet")]
    pub state_dir: PathBuf,
    /// Seconds between queue scans with `postqueue -j`.
    #[arg(long, default_value_t = 30)]
    pub queue_interval: u64,
    /// Milliseconds between checks of the config source for changes.
    #[arg(long, default_value_t = 1000)]
    pub config_poll_ms: u64,
    /// Number of domains listed in /status (per-domain health, deferred top N).
    #[arg(long, default_value_t = 20)]
    pub top_domains: usize,
    /// Do not start Postfix (it runs elsewhere; the agent still installs,
    /// answers lookups and scans the queue; the mail log is read from stdin).
    #[arg(long)]
    pub no_supervise: bool,
    /// Tests only: a file holding seconds added to the wall clock (re-read
    /// whenever the agent reads the time), to fast-forward days.
    #[arg(long, hide = true)]
    pub test_clock_file: Option<PathBuf>,
}

impl AgentArgs {
    fn poll(&self) -> Duration {
        Duration::from_millis(self.config_poll_ms.max(50))
    }
}

/// Run the agent until SIGTERM/SIGINT or until Postfix exits unexpectedly.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    // The agent's own log is JSON on stderr (stdout carries the redacted
    // mail log). A subscriber set by the caller wins.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let redactor = redact::Redactor::from_file(&args.hash_key_file)?;
    std::fs::create_dir_all(&args.state_dir)?;
    let counters = counters::Counters::load(&args.state_dir)?;
    let state = Arc::new(state::State::new(args.clone(), counters));

    let http = http::serve(args.listen, state.clone()).await?;
    let socket = socketmap::server::Server::bind(&args.policy_socket)?;
    tokio::spawn(socket.run(state.clone()));

    state.set_live(true);
    // A config must be installed before Postfix can start.
    let installer = install::Installer::new(&args)?;
    installer.install_first(&state).await;

    let mut child = if args.no_supervise {
        log::pipeline::spawn_stdin(state.clone(), redactor.clone());
        None
    } else {
        Some(supervise::start(&args.postfix_dir, state.clone(), redactor.clone()).await?)
    };
    tokio::spawn(installer.watch(state.clone()));
    tokio::spawn(queue::monitor::run(state.clone()));
    tokio::spawn(counters::flush_loop(state.clone()));

    let result = supervise::wait(child.as_mut(), &args.postfix_dir, &state).await;
    state.set_live(false);
    if let Err(e) = state.save_counters() {
        tracing::warn!(error = %e, "saving counters at exit");
    }
    http.abort();
    let _ = std::fs::remove_file(&args.policy_socket);
    result
}
