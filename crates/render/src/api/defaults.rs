//! Every default of the API, defined once.
//!
//! A default appears in several places: the serde default of the field (and
//! so the `default:` of the CRD schema), the renderer's fallback when a value
//! is absent, the agent's fallback, the operator's. Each of them names the
//! constant here instead of restating the literal, so a change is one edit.
//!
//! Durations are [`Duration`]s: the Postfix-syntax text the API shows
//! (`1h`) and its seconds, computed from the text at compile time — the two
//! cannot disagree, and a malformed text does not compile.
//!
//! Data only: no I/O.

/// A duration in the API's Postfix syntax (`300s`, `1h`, `5d`) with its
/// value in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration {
    text: &'static str,
    seconds: u64,
}

impl Duration {
    /// `text` must match [`super::limits::DURATION_OR_ZERO_PATTERN`]; anything
    /// else fails to compile where a constant is defined.
    pub const fn new(text: &'static str) -> Self {
        let b = text.as_bytes();
        assert!(b.len() >= 2, "a duration is a number and a unit");
        let mut n: u64 = 0;
        let mut i = 0;
        while i < b.len() - 1 {
            assert!(b[i].is_ascii_digit(), "a duration starts with a whole number");
            n = n * 10 + (b[i] - b'0') as u64;
            i += 1;
        }
        let unit = match b[b.len() - 1] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => panic!("a duration ends with s, m, h, d or w"),
        };
        Duration { text, seconds: n * unit }
    }

    /// As the API writes it, e.g. `1h`.
    pub const fn text(self) -> &'static str {
        self.text
    }

    /// In seconds.
    pub const fn seconds(self) -> u64 {
        self.seconds
    }
}

/// Defines a default duration constant and the serde default function that
/// returns its text (serde takes a function path, not a value).
macro_rules! durations {
    ($($(#[$doc:meta])* $name:ident, $serde_fn:ident = $text:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $name: Duration = Duration::new($text);
            #[doc = concat!("Serde default of the field: [`", stringify!($name), "`].")]
            pub fn $serde_fn() -> String {
                $name.text().to_string()
            }
        )*
        /// Every default duration, for tests that check them all.
        pub const ALL_DURATIONS: &[(&str, Duration)] = &[$((stringify!($name), $name)),*];
    };
}

durations! {
    /// SendingPool `retry.queueRunDelay`.
    QUEUE_RUN_DELAY, queue_run_delay = "300s";
    /// SendingPool `retry.minimalBackoff`.
    MINIMAL_BACKOFF, minimal_backoff = "300s";
    /// SendingPool `retry.maximalBackoff`.
    MAXIMAL_BACKOFF, maximal_backoff = "4000s";
    /// SendingPool `retry.maximalQueueLifetime`.
    MAXIMAL_QUEUE_LIFETIME, maximal_queue_lifetime = "5d";
    /// SendingPool `retry.bounceQueueLifetime`.
    BOUNCE_QUEUE_LIFETIME, bounce_queue_lifetime = "5d";
    /// SendingPool `retry.delayWarningTime` (0: no "still trying" notice).
    DELAY_WARNING_TIME, delay_warning_time = "0h";
    /// SendingPool `reputation.interval`.
    REPUTATION_INTERVAL, reputation_interval = "10m";
    /// SendingPool `reputation.coolDown`.
    REPUTATION_COOL_DOWN, reputation_cool_down = "1h";
    /// SendingPool `backlog.warnAge`.
    BACKLOG_WARN_AGE, backlog_warn_age = "4h";
    /// SendingPool `backlog.criticalAge`.
    BACKLOG_CRITICAL_AGE, backlog_critical_age = "12h";
    /// DomainPolicy `autoExclusion.window`.
    AUTO_EXCLUSION_WINDOW, auto_exclusion_window = "1h";
    /// DomainPolicy `autoExclusion.duration`.
    AUTO_EXCLUSION_DURATION, auto_exclusion_duration = "24h";
    /// DomainPolicy `slowDown.window`.
    SLOW_DOWN_WINDOW, slow_down_window = "10m";
    /// DomainPolicy `slowDown.recoveryInterval`.
    SLOW_DOWN_RECOVERY_INTERVAL, slow_down_recovery_interval = "30m";
    /// WarmupPlan `pause.window`.
    WARMUP_PAUSE_WINDOW, warmup_pause_window = "1h";
    /// SendingPool `drain.timeout`: how long a deleted pool waits for its
    /// queues.
    DRAIN_TIMEOUT, drain_timeout = "24h";
}

/// WarmupPlan `pause.minMessages`.
pub const WARMUP_PAUSE_MIN_MESSAGES: u32 = 20;
/// Serde default of `pause.minMessages`.
pub fn warmup_pause_min_messages() -> u32 {
    WARMUP_PAUSE_MIN_MESSAGES
}

/// WarmupPlan `timeZone`.
pub const TIME_ZONE: &str = "UTC";
/// Serde default of `timeZone`.
pub fn time_zone() -> String {
    TIME_ZONE.to_string()
}

/// SendingPool `submission.port`.
pub const SUBMISSION_PORT: u16 = 587;
/// Serde default of `submission.port`.
pub fn submission_port() -> u16 {
    SUBMISSION_PORT
}

/// SendingPool `submission.allowedCIDRs`: loopback only (sendfleet does not
/// know the cluster's pod networks).
pub const ALLOWED_CIDRS: &[&str] = &["127.0.0.0/8"];
/// Serde default of `submission.allowedCIDRs`.
pub fn allowed_cidrs() -> Vec<String> {
    ALLOWED_CIDRS.iter().map(|c| c.to_string()).collect()
}

/// SendingPool `queue.size`.
pub const QUEUE_SIZE: &str = "10Gi";
/// Serde default of `queue.size`.
pub fn queue_size() -> String {
    QUEUE_SIZE.to_string()
}

/// SendingPool `tls.trustedCA.key`: the key cert-manager and trust-manager
/// write CA bundles under.
pub const TRUSTED_CA_KEY: &str = "ca.crt";
/// Serde default of `tls.trustedCA.key`.
pub fn trusted_ca_key() -> String {
    TRUSTED_CA_KEY.to_string()
}

/// SendingPool `resources.requests.cpu` when neither a request nor a limit
/// names cpu: an instance is then Burstable, not BestEffort (evicted first).
/// Applied in `objects.rs`, not by the schema.
pub const INSTANCE_CPU_REQUEST: &str = "100m";
/// SendingPool `resources.requests.memory`, likewise (Postfix with its
/// daemons and the agent stay well below).
pub const INSTANCE_MEMORY_REQUEST: &str = "256Mi";

/// DomainPolicy `route.port`: SMTP.
pub const RELAY_PORT: u16 = 25;

/// Fixed, not in the API: recovery steps of an adaptive slow-down. At level
/// L, L/`SLOW_DOWN_LEVELS` of the rule's mail takes the slow transport; each
/// quiet `recoveryInterval` lowers L by one.
pub const SLOW_DOWN_LEVELS: u32 = 4;

/// SendingPool `egressIPs[].enabled`. Applied by the operator
/// (`EgressIP::is_enabled`), never by the API server: a schema default
/// inside a list item makes GitOps tools (Argo CD) show the resource
/// out of sync forever, since the live list item differs from the file's.
/// No field inside a list item has a schema default (`tests/crds.rs`).
pub const EGRESS_IP_ENABLED: bool = true;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{parse_duration, DURATION_OR_ZERO_PATTERN};

    #[test]
    fn every_default_duration_parses_to_its_seconds() {
        assert!(DURATION_OR_ZERO_PATTERN.starts_with('^'));
        for (name, d) in ALL_DURATIONS {
            assert_eq!(parse_duration(d.text()), Some(d.seconds()), "{name}");
        }
        assert_eq!(AUTO_EXCLUSION_WINDOW.seconds(), 3600);
        assert_eq!(AUTO_EXCLUSION_DURATION.seconds(), 86_400);
        assert_eq!(MAXIMAL_BACKOFF.seconds(), 4000);
        assert_eq!(auto_exclusion_window(), "1h");
    }
}
