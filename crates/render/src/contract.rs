//! The operator/agent contract: where the agent listens, what it serves, and
//! the JSON payload of its `/status` route.
//!
//! Both sides compile against these types, so a field renamed here breaks
//! the build of the other side instead of silently reading `null`. The agent
//! serialises [`AgentStatus`]; the operator deserialises it. The config hash
//! the operator compares with what it rendered is computed by one function,
//! [`config_hash`], on both sides.
//!
//! Pure serde types and pure helpers: no I/O, no clock (timestamps are passed
//! in as Unix seconds by whoever owns a clock). Nothing in a payload may hold
//! a recipient address in plaintext: domains, rule names, counts, hashes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Schema version of [`AgentStatus`]; bumped on incompatible change.
pub const STATUS_VERSION: u32 = 1;

/// TCP port of the agent's HTTP server (metrics, status, probes).
pub const AGENT_HTTP_PORT: u16 = 9187;
/// Prometheus text exposition.
pub const PATH_METRICS: &str = "/metrics";
/// [`AgentStatus`] as JSON.
pub const PATH_STATUS: &str = "/status";
/// Key of the pool's agent-token Secret that holds the bearer token the
/// operator (and Prometheus) send to [`PATH_STATUS`] and [`PATH_METRICS`].
pub const AGENT_TOKEN_KEY: &str = "token";
/// Largest `/status` body the operator reads; a larger answer is refused.
pub const MAX_STATUS_BODY: usize = 1 << 20;
/// Liveness: the agent's tasks are alive (200) or not (503). Open to the
/// kubelet's probes, like [`PATH_READYZ`]: it answers ok or not, nothing more.
pub const PATH_HEALTHZ: &str = "/healthz";
/// Readiness: a config is installed, Postfix runs, the policy socket listens.
pub const PATH_READYZ: &str = "/readyz";

/// Default path of the socketmap the rendered `main.cf` names in
/// `transport_maps = socketmap:unix:<path>:<name>, hash:...`.
pub const DEFAULT_POLICY_SOCKET: &str = "/run/sendfleet/policy.sock";
/// The Postfix configuration directory the agent installs into and runs
/// Postfix with (`postfix -c`): a symlink the agent swaps to a generation
/// directory beside it. Instance pods have a read-only root file system,
/// so [`POSTFIX_CONFIG_ROOT`], its parent, is a volume of its own.
pub const DEFAULT_POSTFIX_DIR: &str = "/var/lib/sendfleet/postfix/current";
/// The directory holding [`DEFAULT_POSTFIX_DIR`] and its generations.
pub const POSTFIX_CONFIG_ROOT: &str = "/var/lib/sendfleet/postfix";
/// The socketmap name the agent answers (the `:<name>` suffix above).
pub const SOCKETMAP_NAME: &str = "transport";
/// Name of the master.cf transport that relays to a peer instance.
pub const PEER_RELAY_TRANSPORT: &str = "peer-relay";

/// Stable hash of a rendered config directory: file name -> contents.
///
/// Computed by the operator over what it puts in the ConfigMap and by the
/// agent over what it installed, so "the config Postfix runs" can be compared
/// with "the config the operator wants". Dotfiles (the ConfigMap's `..data`
/// machinery) must be left out by the caller. Same bytes as
/// `crate::render::config_hash`: SHA-256 over `name NUL content NUL` in name
/// order, first 16 hex digits.
pub fn config_hash<'a, I>(files: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let sorted: BTreeMap<&str, &[u8]> = files.into_iter().collect();
    let mut h = Sha256::new();
    for (name, content) in sorted {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(content);
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What `GET /status` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub version: u32,
    /// Pool and instance from the installed policy (empty before the first install).
    pub pool: String,
    pub instance: String,
    /// Random id chosen when the agent process starts: a change means a restart.
    pub session_id: String,
    /// The pod the agent runs in (`POD_NAME`, from the downward API; empty
    /// outside a pod). The operator refuses a report whose pool, instance or
    /// pod is not the one it polled.
    #[serde(default)]
    pub pod: String,
    /// State files that did not parse at start, kept aside under these
    /// names in the state directory (never overwritten); empty normally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_files_kept_aside: Vec<String>,
    /// Unix seconds.
    pub started_at: u64,
    pub now: u64,
    pub config: ConfigStatus,
    pub postfix: PostfixStatus,
    pub counters: DeliveryCounters,
    pub queue: QueueStatus,
    /// Per recipient domain, most active first, at most the agent's top-N.
    pub domains: Vec<DomainHealth>,
    pub log: LogStats,
    /// What the agent decided on its own from the policy's rules (warm-up
    /// step, automatic exclusions, slow-downs), persisted in the queue volume.
    #[serde(default)]
    pub adaptive: AdaptiveStatus,
    /// Delivery latency of recently sent recipients.
    #[serde(default)]
    pub latency: DeliveryLatency,
    /// The DKIM signer (with `spec.dkim`; `None` without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<SignerStatus>,
}

/// What the instance's DKIM signer (OpenDKIM) does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerStatus {
    /// `Signing` (every submission is signed), `Held` (no usable key:
    /// submissions get a 4xx, nothing leaves unsigned) or `Unsigned` (no
    /// usable key and the pool opted out of holding: mail leaves unsigned).
    pub state: SignerState,
    /// The selectors the running signer signs with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
    /// Why the rendered selectors' keys are not (all) in use: a missing or
    /// unreadable key, never the key itself. While `Signing`, the previous
    /// keys still sign (e.g. a rotation whose new key has not arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// See [`SignerStatus::state`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignerState {
    Signing,
    #[default]
    Held,
    Unsigned,
}

/// Total delivery latency (Postfix `delay=`: arrival to the receiver's
/// acceptance) of the recipients this instance delivered in the last
/// `window_seconds` (hand-offs to a peer are not deliveries and not counted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryLatency {
    pub window_seconds: u64,
    /// Recipients the percentiles are taken over.
    pub samples: u64,
    /// `None` without samples.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

/// The per-instance state the agent decides from the rules the operator
/// rendered (DomainPolicy `autoExclusion`/`slowDown`, WarmupPlan steps and
/// pause rules). The agent acts on it at once; the operator mirrors it into
/// the resources' status and into the peers' policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveStatus {
    /// Warm-up progress; `None` when the policy carries no warm-up schedule.
    /// A warm instance (past the plan) reports its step with no `dailyCap`.
    #[serde(default)]
    pub warmup: Option<WarmupProgress>,
    /// Automatic exclusions of this instance, one per domain rule.
    #[serde(default)]
    pub exclusions: Vec<ActiveExclusion>,
    /// Slow-downs in force on this instance, one per domain rule.
    #[serde(default)]
    pub slow_downs: Vec<ActiveSlowDown>,
}

/// Where one instance stands in its warm-up plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupProgress {
    pub plan: String,
    /// 1-based step (= plan day the instance is on; held steps do not advance).
    pub step: u32,
    /// Today's cap (messages/day); `None` once the plan is finished.
    pub daily_cap: Option<u64>,
    /// Sent today by this instance itself (not relayed through peers).
    pub sent_today: u64,
    /// Lookups answered "send from here" whose outcome is not logged yet;
    /// counted against the cap so in-flight mail cannot overshoot it.
    pub reserved: u64,
    /// Why the step is held (a pause rule fired), if it is.
    pub held: Option<String>,
    /// Unix seconds of the next day boundary, when the step may advance.
    pub next_step_at: Option<u64>,
}

/// This instance excluded for a domain rule after repeated hard blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveExclusion {
    pub rule: String,
    pub reason: String,
    /// Unix seconds.
    pub since: u64,
    pub until: u64,
    /// The MX hosts whose blocks engaged it: the provider blocks the IP, so
    /// every domain known to go there leaves through peers too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_hosts: Vec<String>,
    /// How many domains the instance knows go to those hosts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mx_domain_count: u32,
    /// The first of them (sorted, at most 20): domain names only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_domains: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A slow-down in force for a domain rule on this instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSlowDown {
    pub rule: String,
    /// Current level, 1..=`max_level`; each quiet `recoveryInterval` lowers it by one.
    pub level: u32,
    pub max_level: u32,
    pub reason: String,
    /// Unix seconds.
    pub since: u64,
    pub next_recovery_at: Option<u64>,
}

/// The configuration actually loaded into Postfix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// [`config_hash`] of the files installed and reloaded, if any.
    pub loaded_hash: Option<String>,
    pub loaded_at: Option<u64>,
    /// Number of successful installs since the agent started.
    pub installs: u64,
    /// The last config that was refused; cleared when a later one installs.
    pub refused: Option<RefusedConfig>,
}

/// A config the agent would not install (the previous one stays loaded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedConfig {
    pub hash: String,
    pub at: u64,
    /// Stable PascalCase reason, usable as an Event reason.
    pub reason: String,
    /// Human text (tool output, truncated).
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostfixStatus {
    pub running: bool,
    /// Times the supervised Postfix master exited unexpectedly.
    pub exits: u64,
    pub reloads: u64,
}

/// Delivery outcomes counted from the mail log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounters {
    /// The day "today" refers to (`YYYY-MM-DD` in the warm-up time zone, UTC otherwise).
    pub day: String,
    /// Messages sent today by this instance (all domains); persisted across restarts.
    pub sent_today: u64,
    /// Sent today per domain rule (`""` = no rule), persisted.
    pub sent_today_by_rule: BTreeMap<String, u64>,
    /// Since the agent started: recipients per final status.
    pub since_start: StatusCounts,
}

/// Recipient counts per delivery status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub expired: u64,
}

/// The queue as `postqueue -j` last showed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub scanned_at: Option<u64>,
    /// Messages per queue name (`active`, `deferred`, `hold`, `incoming`, `maildrop`).
    pub messages: BTreeMap<String, u64>,
    pub older_than_warn: u64,
    pub older_than_critical: u64,
    pub warn_seconds: u64,
    pub critical_seconds: u64,
    pub oldest_age_seconds: Option<u64>,
    /// Deferred recipients per domain, largest first.
    pub deferred_by_domain: Vec<DomainCount>,
    /// Messages entering the queue per minute (from the log, last window).
    pub inflow_per_minute: f64,
    /// Messages leaving the queue (sent, bounced, expired) per minute.
    pub outflow_per_minute: f64,
    /// Queue size (active + deferred + incoming) growing over the last scans.
    pub growing: bool,
    /// At the current rates, when the backlog would be empty (None: not draining).
    pub drain_eta_seconds: Option<u64>,
    /// Lines of `postqueue -j` output that did not parse.
    pub malformed: u64,
    pub error: Option<String>,
    /// Flow and forecast per destination domain: the DomainPolicies'
    /// domains and the largest backlogs (bounded), largest first.
    #[serde(default)]
    pub flows: Vec<DomainFlow>,
}

/// One destination domain's queue, flow and forecast on this instance.
/// Rates are recipients per minute over the agent's flow window: outflow
/// from the log (sent, bounced, expired), inflow = outflow + the change of
/// the queued count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainFlow {
    pub domain: String,
    /// The domain rule (DomainPolicy) that matched, if any.
    pub rule: Option<String>,
    /// Recipients queued (active, deferred, incoming).
    pub queued: u64,
    pub inflow_per_minute: f64,
    pub outflow_per_minute: f64,
    /// Inflow minus outflow: positive while the backlog grows.
    pub growth_per_minute: f64,
    pub oldest_age_seconds: u64,
    /// At the current rates, when the domain's backlog would be empty
    /// (`None`: it is not draining).
    pub drain_eta_seconds: Option<u64>,
    /// When the oldest queued recipient reaches the warn age (0: it has).
    pub warn_in_seconds: u64,
    /// The forecast: at these rates the backlog grows, or drains only after
    /// its oldest recipient reaches the warn age (confirmed over several
    /// scans, so a burst being delivered does not count).
    pub at_risk: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainCount {
    pub domain: String,
    pub count: u64,
}

/// Delivery health toward one recipient domain since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainHealth {
    pub domain: String,
    /// Rule that matched the domain, if any.
    pub rule: Option<String>,
    pub counts: StatusCounts,
    /// Non-success responses per category ([`ResponseCategory`] names).
    pub categories: BTreeMap<String, u64>,
    pub last_category: Option<ResponseCategory>,
    /// Unix seconds of the last outcome seen.
    pub last_at: Option<u64>,
}

/// What a receiver's answer means, from its text and DSN code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResponseCategory {
    Accepted,
    RateLimit,
    IpBlock,
    UnknownUser,
    MailboxFull,
    TlsFailure,
    Timeout,
    Other,
}

impl ResponseCategory {
    pub const ALL: [ResponseCategory; 8] = [
        Self::Accepted,
        Self::RateLimit,
        Self::IpBlock,
        Self::UnknownUser,
        Self::MailboxFull,
        Self::TlsFailure,
        Self::Timeout,
        Self::Other,
    ];

    /// Stable name (metric label value, map key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::RateLimit => "RateLimit",
            Self::IpBlock => "IpBlock",
            Self::UnknownUser => "UnknownUser",
            Self::MailboxFull => "MailboxFull",
            Self::TlsFailure => "TlsFailure",
            Self::Timeout => "Timeout",
            Self::Other => "Other",
        }
    }
}

/// Mail-log parsing health (every line is counted in exactly one bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStats {
    pub lines: u64,
    /// Understood and used.
    pub parsed: u64,
    /// A Postfix line whose message the agent does not use.
    pub ignored: u64,
    /// Not a Postfix log line at all (no prefix), or a known shape with bad fields.
    pub malformed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_is_order_independent_and_matches_the_renderer() {
        let a = config_hash([("main.cf", &b"x"[..]), ("master.cf", &b"y"[..])]);
        let b = config_hash([("master.cf", &b"y"[..]), ("main.cf", &b"x"[..])]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 16, "{a}");
        let c = config_hash([("a", &b"bc"[..])]);
        let d = config_hash([("ab", &b"c"[..])]);
        assert_ne!(c, d);
        let files: BTreeMap<String, String> =
            [("main.cf".to_string(), "x".to_string()), ("master.cf".to_string(), "y".to_string())].into();
        assert_eq!(a, crate::render::config_hash(&files));
    }

    #[test]
    fn status_round_trips_as_camel_case_json() {
        let s = AgentStatus {
            version: STATUS_VERSION,
            session_id: "abc".into(),
            domains: vec![DomainHealth {
                domain: "example.com".into(),
                last_category: Some(ResponseCategory::RateLimit),
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"sessionId\":\"abc\""), "{j}");
        assert!(j.contains("\"lastCategory\":\"RateLimit\""), "{j}");
        let back: AgentStatus = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }
}
