//! The agent's command-line flags (`sendfleet agent --help`): where the
//! config comes from, where Postfix and the agent's state live, where it
//! listens, and how often it polls.
//!
//! Plain data parsed by clap: no behaviour beyond reading the flags. It must
//! never hold a value the operator could change at run time (those arrive in
//! the rendered policy, see `policy_slot`).

use std::net::SocketAddr;
use std::path::PathBuf;
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
    pub(super) fn poll(&self) -> Duration {
        Duration::from_millis(self.config_poll_ms.max(50))
    }
}
