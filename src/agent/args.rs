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
    #[arg(long, env = "SENDFLEET_POSTFIX_DIR", default_value = contract::DEFAULT_POSTFIX_DIR)]
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
    /// File holding the bearer token /status and /metrics require
    /// (`Authorization: Bearer <token>`; a trailing newline is ignored): the
    /// pool's agent-token Secret, mounted read-only. Re-read on every
    /// request, so a rotated Secret takes effect when the kubelet updates the
    /// mount. Without this flag (tests, local runs) those routes are open;
    /// the rendered pod always passes it. /healthz and /readyz stay open to
    /// the kubelet's probes.
    #[arg(long, env = "SENDFLEET_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The pod the agent runs in (downward API), reported in /status so the
    /// operator can tell it polled the pod it meant to.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// `<namespace>/<pool>` and instance name the pod was rendered for,
    /// reported in /status until a policy is installed (then the policy's).
    #[arg(long, env = "SENDFLEET_POOL", default_value = "")]
    pub pool: String,
    #[arg(long, env = "SENDFLEET_INSTANCE", default_value = "")]
    pub instance: String,
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
    /// With `spec.dkim`: the mounted DKIM Secret (`<selector>.key`, or
    /// `private.key`), read by the agent only (`signer`).
    #[arg(long, env = "SENDFLEET_DKIM_KEYS")]
    pub dkim_keys: Option<PathBuf>,
    /// With `spec.dkim`: where the agent stages OpenDKIM's files and keys
    /// (`current` link; must match the render's `Settings::dkim_directory`).
    #[arg(long, env = "SENDFLEET_DKIM_DIR", default_value = "/run/sendfleet/dkim")]
    pub dkim_dir: PathBuf,
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
