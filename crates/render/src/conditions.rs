//! The one condition vocabulary of sendfleet: every condition type and
//! reason the operator and the DNS checks set, each type's polarity (which
//! status is the bad one), which transitions raise a Warning Event, the one
//! message length limit, and the one builder that writes an observation
//! into a `status.conditions` list.
//!
//! Follows the Kubernetes conventions (`type`, `status`, `reason`,
//! `message`, `observedGeneration`, `lastTransitionTime` that moves only
//! when the status flips). Reason strings are stable: alerts match on them,
//! so a variant may be added but its `as_str()` never changes.
//!
//! Whoever observes a fact builds its [`Observation`] (the operator's
//! status step, the DNS summary); this module only names things and writes
//! them. It reads no clock (`now` is passed in) and does no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Longest condition message, in bytes (Kubernetes allows 32 KiB; a status
/// should stay readable in `kubectl describe`). Longer messages are cut at
/// a character boundary and end in [`TRUNCATED`].
pub const MAX_MESSAGE_LEN: usize = 2048;
/// What a cut message ends with.
pub const TRUNCATED: &str = " ... (truncated)";

/// A condition type. SendingPool: every type but `Accepted`; DomainPolicy
/// and WarmupPlan: `Accepted`, and `Ready` mirroring it (for generic
/// readers: Flux, Argo CD, `kubectl wait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// Every instance runs the rendered configuration and is ready.
    Ready,
    /// The operator is rolling out a change (objects or config not yet live).
    Progressing,
    /// Something is failing: an instance (crash loop, unschedulable, config
    /// refused), or the pool itself (invalid spec, missing reference, apply
    /// failed).
    Degraded,
    /// Some egress IP is on a DNS blocklist.
    Listed,
    /// Queued mail is older than the pool's backlog thresholds.
    QueueBacklog,
    /// At the current inflow and outflow, some destination domain's backlog
    /// will not drain before its oldest mail reaches the warn age: the
    /// forecast, set before `QueueBacklog` would be.
    BacklogForecast,
    /// Some instance is still under its warm-up plan's caps.
    WarmingUp,
    /// PTR, SPF, DKIM and DMARC are in order for every IP and domain.
    AuthenticationValid,
    /// (With `spec.dkim`) every reporting instance signs its submissions.
    DkimSigning,
    /// (DomainPolicy, WarmupPlan) The spec is valid and in use as written.
    Accepted,
    /// Some instance is handing its queue on before it goes (a removed or
    /// disabled egress IP, or a deleted pool); the message counts what is left.
    Draining,
    /// (With `spec.dnsRecords`) the records with a known value are written
    /// where the pool asked (an external-dns `DNSEndpoint`).
    DnsRecordsPublished,
}

/// Which status of a condition type means trouble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// `True` is good, `False` is bad (Ready, AuthenticationValid, Accepted).
    TrueIsGood,
    /// `False` is good, `True` is bad (Degraded, Listed, QueueBacklog,
    /// BacklogForecast).
    FalseIsGood,
    /// Neither status is a problem (Progressing, WarmingUp).
    Neutral,
}

impl ConditionType {
    /// Every type, in the order `status.conditions` lists them (by name).
    pub const ALL: [ConditionType; 12] = [
        Self::Accepted,
        Self::AuthenticationValid,
        Self::BacklogForecast,
        Self::Degraded,
        Self::DkimSigning,
        Self::DnsRecordsPublished,
        Self::Draining,
        Self::Listed,
        Self::Progressing,
        Self::QueueBacklog,
        Self::Ready,
        Self::WarmingUp,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Listed => "Listed",
            Self::QueueBacklog => "QueueBacklog",
            Self::BacklogForecast => "BacklogForecast",
            Self::WarmingUp => "WarmingUp",
            Self::AuthenticationValid => "AuthenticationValid",
            Self::DkimSigning => "DkimSigning",
            Self::Accepted => "Accepted",
            Self::Draining => "Draining",
            Self::DnsRecordsPublished => "DnsRecordsPublished",
        }
    }

    pub const fn polarity(self) -> Polarity {
        match self {
            Self::Ready
            | Self::AuthenticationValid
            | Self::Accepted
            | Self::DkimSigning
            | Self::DnsRecordsPublished => Polarity::TrueIsGood,
            Self::Degraded | Self::Listed | Self::QueueBacklog | Self::BacklogForecast => Polarity::FalseIsGood,
            Self::Progressing | Self::WarmingUp | Self::Draining => Polarity::Neutral,
        }
    }

    /// Whether `status` is this type's bad status.
    pub fn is_bad(self, status: Status) -> bool {
        matches!(
            (self.polarity(), status),
            (Polarity::TrueIsGood, Status::False) | (Polarity::FalseIsGood, Status::True)
        )
    }

    /// The Event a flip to `status` raises: a Warning when the condition
    /// turns bad, a Normal one otherwise (recovery, neutral changes), none
    /// when it turns Unknown (not knowing is not news: the checks that
    /// could not run say so in their own logs and metrics).
    pub fn transition_event(self, status: Status) -> Option<EventKind> {
        match status {
            Status::Unknown => None,
            s if self.is_bad(s) => Some(EventKind::Warning),
            _ => Some(EventKind::Normal),
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of Event a condition flip raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    pub const fn from_bool(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a condition has its status. PascalCase and stable: alerts match on
/// the strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    // The pool as a whole (Ready, Progressing, Degraded when a step stops).
    /// The spec cannot be rendered as written; waits for a change.
    InvalidSpec,
    /// A referenced object (WarmupPlan, route or spam-route pool) is missing.
    MissingReference,
    /// Applying the rendered objects failed; retried.
    ApplyFailed,
    // The pool as a whole: what the administrator does not allow (nothing
    // is applied for it).
    /// `spec.image` is not among the images the administrator allows.
    ImageNotAllowed,
    /// An `egressIPs[].nodeName` names a node outside the administrator's
    /// node selector (or no node).
    NodeNotAllowed,
    /// The pool's namespace is not opted in for pools by the administrator.
    NamespaceNotAllowed,
    /// An object the pool would write exists and is not owned by the pool;
    /// it is left alone.
    ObjectConflict,
    /// An egress address is owned by another SendingPool (the message
    /// names it, `namespace/name`); nothing of the pool is written until
    /// the owner releases the address.
    AddressInUse,
    // Ready
    InstancesReady,
    InstancesNotReady,
    // Progressing
    RollingOut,
    ConfigPending,
    Converged,
    // Degraded
    InstanceFailing,
    AsExpected,
    // WarmingUp
    NoWarmupPlan,
    Warming,
    Warm,
    // QueueBacklog
    OlderThanWarnAge,
    OlderThanCriticalAge,
    NoBacklog,
    // BacklogForecast
    /// Some domain's inflow exceeds its outflow: its backlog grows.
    BacklogGrowing,
    /// Some domain's backlog drains, but only after its oldest mail
    /// reaches the warn age.
    DrainTooSlow,
    /// Every queued domain drains before its oldest mail reaches the warn age.
    DrainsInTime,
    // Listed (DNS)
    /// At least one IP is on a blocklist.
    Listed,
    /// Every IP answered clean in every zone.
    NotListed,
    // Listed and AuthenticationValid (DNS)
    /// Some check could not run for the configured number of sweeps
    /// (timeouts, SERVFAIL, the list refusing our resolver).
    CheckFailing,
    /// No complete sweep yet.
    NotYetChecked,
    // AuthenticationValid (DNS); `Valid` also for Accepted
    /// AuthenticationValid=True; Accepted=True.
    Valid,
    /// SPF does not authorize (at least) one egress IP.
    SpfNotAuthorized,
    /// The DKIM record is missing, revoked, malformed or another key; or the
    /// Secret's key is unreadable.
    DkimInvalid,
    /// No usable DMARC record.
    DmarcMissing,
    /// PTR missing, not forward-confirmed, or not the HELO name.
    ReverseDnsInvalid,
    /// Problems of more than one kind; the message lists them.
    MultipleFailures,
    // Draining
    /// No instance is draining.
    NothingToDrain,
    /// Instances hand their queues on; the message counts what is left.
    DrainingQueues,
    /// Queued mail cannot be handed on: no peer is in rotation. It stays
    /// queued on the draining instance.
    DrainBlocked,
    /// The pool is being deleted and its instances deliver their queues
    /// before its objects go (`spec.deletionPolicy: Drain`).
    PoolDeleting,
    /// The deleted pool's queues were not empty by `drain.timeout`: its
    /// objects go, the queue volumes are kept.
    DrainTimedOut,
    // DkimSigning
    /// DkimSigning=True: every reporting instance signs.
    Signing,
    /// Some instance has no usable key and holds new mail (4xx at
    /// submission); the message names it and the reason.
    KeyUnusable,
    /// Some instance has no usable key and sends unsigned, as
    /// `onKeyError: SendUnsigned` asks.
    SendingUnsigned,
    // DnsRecordsPublished
    /// DnsRecordsPublished=True: the pool's `DNSEndpoint` lists every
    /// record with a known value (the message names any left out).
    Published,
    /// The pool asks for a `DNSEndpoint` but its CRD
    /// (`dnsendpoints.externaldns.k8s.io`) is not installed; looked for
    /// again every minute.
    DNSEndpointNotInstalled,
    // Any type
    /// Nobody has observed this fact yet (status Unknown).
    NotObservedYet,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::MissingReference => "MissingReference",
            Self::ApplyFailed => "ApplyFailed",
            Self::ImageNotAllowed => "ImageNotAllowed",
            Self::NodeNotAllowed => "NodeNotAllowed",
            Self::NamespaceNotAllowed => "NamespaceNotAllowed",
            Self::ObjectConflict => "ObjectConflict",
            Self::AddressInUse => "AddressInUse",
            Self::InstancesReady => "InstancesReady",
            Self::InstancesNotReady => "InstancesNotReady",
            Self::RollingOut => "RollingOut",
            Self::ConfigPending => "ConfigPending",
            Self::Converged => "Converged",
            Self::InstanceFailing => "InstanceFailing",
            Self::AsExpected => "AsExpected",
            Self::NoWarmupPlan => "NoWarmupPlan",
            Self::Warming => "Warming",
            Self::Warm => "Warm",
            Self::OlderThanWarnAge => "OlderThanWarnAge",
            Self::OlderThanCriticalAge => "OlderThanCriticalAge",
            Self::NoBacklog => "NoBacklog",
            Self::BacklogGrowing => "BacklogGrowing",
            Self::DrainTooSlow => "DrainTooSlow",
            Self::DrainsInTime => "DrainsInTime",
            Self::Listed => "Listed",
            Self::NotListed => "NotListed",
            Self::CheckFailing => "CheckFailing",
            Self::NotYetChecked => "NotYetChecked",
            Self::Valid => "Valid",
            Self::SpfNotAuthorized => "SpfNotAuthorized",
            Self::DkimInvalid => "DkimInvalid",
            Self::DmarcMissing => "DmarcMissing",
            Self::ReverseDnsInvalid => "ReverseDnsInvalid",
            Self::MultipleFailures => "MultipleFailures",
            Self::NothingToDrain => "NothingToDrain",
            Self::DrainingQueues => "DrainingQueues",
            Self::DrainBlocked => "DrainBlocked",
            Self::PoolDeleting => "PoolDeleting",
            Self::DrainTimedOut => "DrainTimedOut",
            Self::Signing => "Signing",
            Self::KeyUnusable => "KeyUnusable",
            Self::SendingUnsigned => "SendingUnsigned",
            Self::Published => "Published",
            Self::DNSEndpointNotInstalled => "DNSEndpointNotInstalled",
            Self::NotObservedYet => "NotObservedYet",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one observation says about one condition type. The message is
/// already cut to [`MAX_MESSAGE_LEN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub type_: ConditionType,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Observation {
    pub fn new(type_: ConditionType, status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Observation { type_, status, reason, message: truncate_message(message.into()) }
    }

    /// `Unknown` with reason `NotObservedYet`: what a condition says until
    /// whoever observes its fact has done so.
    pub fn not_observed(type_: ConditionType) -> Self {
        Self::new(type_, Status::Unknown, Reason::NotObservedYet, "not observed yet")
    }

    /// The Event this observation raises if it is a flip (see
    /// [`ConditionType::transition_event`]).
    pub fn event(&self) -> Option<EventKind> {
        self.type_.transition_event(self.status)
    }
}

/// Cut `s` to [`MAX_MESSAGE_LEN`] bytes (at a character boundary), marking
/// the cut.
pub fn truncate_message(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN - TRUNCATED.len();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(TRUNCATED);
    }
    s
}

/// Set `obs` in `conditions`: an existing condition of that type keeps its
/// `lastTransitionTime` unless the status changes; the list stays sorted by
/// type. Returns whether the status flipped (worth an Event).
pub fn set(conditions: &mut Vec<Condition>, obs: &Observation, generation: Option<i64>, now: Timestamp) -> bool {
    let (type_, status) = (obs.type_.as_str(), obs.status.as_str());
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let flipped = c.status != status;
            if flipped {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = obs.reason.as_str().into();
            c.message = obs.message.clone();
            c.observed_generation = generation;
            flipped
        }
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: obs.reason.as_str().into(),
                message: obs.message.clone(),
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            true
        }
    }
}

/// Whether `conditions` has a condition of `type_` at all.
pub fn has(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions.iter().any(|c| c.type_ == type_.as_str())
}

/// Conditions equal but for their transition times.
pub fn eq_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: Status, reason: Reason, message: &str) -> Observation {
        Observation::new(ConditionType::Ready, status, reason, message)
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut cs = vec![];
        assert!(set(&mut cs, &ready(Status::False, Reason::InstancesNotReady, "0/3"), Some(1), t0));
        assert!(!set(&mut cs, &ready(Status::False, Reason::InstancesNotReady, "1/3"), Some(2), t1));
        assert_eq!(cs[0].last_transition_time.0, t0);
        assert_eq!(cs[0].message, "1/3");
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(set(&mut cs, &ready(Status::True, Reason::InstancesReady, "3/3"), Some(2), t1));
        assert_eq!(cs[0].last_transition_time.0, t1);
        assert_eq!((cs[0].status.as_str(), cs[0].reason.as_str()), ("True", "InstancesReady"));
    }

    #[test]
    fn conditions_stay_sorted_by_type_and_compare_ignoring_time() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut a = vec![];
        for t in [ConditionType::Ready, ConditionType::Degraded, ConditionType::Listed] {
            set(&mut a, &Observation::not_observed(t), None, t0);
        }
        let types: Vec<&str> = a.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Degraded", "Listed", "Ready"]);
        let mut b = a.clone();
        b[0].last_transition_time = Time(t1);
        assert!(eq_ignoring_time(&a, &b));
        b[0].message.push('!');
        assert!(!eq_ignoring_time(&a, &b));
        assert!(has(&a, ConditionType::Listed) && !has(&a, ConditionType::Accepted));
    }

    #[test]
    fn polarity_decides_which_flips_are_warnings() {
        use ConditionType::*;
        use EventKind::*;
        let cases = [
            (Ready, Status::False, Some(Warning)),
            (Ready, Status::True, Some(Normal)),
            (AuthenticationValid, Status::False, Some(Warning)),
            (Accepted, Status::False, Some(Warning)),
            (Degraded, Status::True, Some(Warning)),
            (Degraded, Status::False, Some(Normal)),
            (Listed, Status::True, Some(Warning)),
            (QueueBacklog, Status::True, Some(Warning)),
            (QueueBacklog, Status::False, Some(Normal)),
            (BacklogForecast, Status::True, Some(Warning)),
            (BacklogForecast, Status::False, Some(Normal)),
            (Progressing, Status::True, Some(Normal)),
            (WarmingUp, Status::False, Some(Normal)),
            (Ready, Status::Unknown, None),
            (Listed, Status::Unknown, None),
        ];
        for (t, s, want) in cases {
            assert_eq!(t.transition_event(s), want, "{t}={s}");
        }
        // Every type has exactly one bad status, or none if neutral.
        for t in ConditionType::ALL {
            let bad = [Status::True, Status::False, Status::Unknown].into_iter().filter(|s| t.is_bad(*s)).count();
            assert_eq!(bad, usize::from(t.polarity() != Polarity::Neutral), "{t}");
        }
    }

    #[test]
    fn all_lists_every_type_sorted_by_name() {
        let names: Vec<&str> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 12);
    }

    #[test]
    fn long_messages_are_cut_at_one_limit_on_a_char_boundary() {
        let short = Observation::new(ConditionType::Listed, Status::True, Reason::Listed, "x");
        assert_eq!(short.message, "x");
        let long = "é".repeat(MAX_MESSAGE_LEN);
        let o = Observation::new(ConditionType::Listed, Status::True, Reason::Listed, long);
        assert!(o.message.len() <= MAX_MESSAGE_LEN, "{}", o.message.len());
        assert!(o.message.ends_with(TRUNCATED));
    }

    #[test]
    fn reason_strings_are_the_ones_alerts_match_on() {
        // A rename here breaks users' alerts: these strings are an API.
        let stable = [
            (Reason::InvalidSpec, "InvalidSpec"),
            (Reason::MissingReference, "MissingReference"),
            (Reason::ApplyFailed, "ApplyFailed"),
            (Reason::ImageNotAllowed, "ImageNotAllowed"),
            (Reason::NodeNotAllowed, "NodeNotAllowed"),
            (Reason::NamespaceNotAllowed, "NamespaceNotAllowed"),
            (Reason::ObjectConflict, "ObjectConflict"),
            (Reason::AddressInUse, "AddressInUse"),
            (Reason::NoWarmupPlan, "NoWarmupPlan"),
            (Reason::OlderThanWarnAge, "OlderThanWarnAge"),
            (Reason::OlderThanCriticalAge, "OlderThanCriticalAge"),
            (Reason::BacklogGrowing, "BacklogGrowing"),
            (Reason::DrainTooSlow, "DrainTooSlow"),
            (Reason::DrainsInTime, "DrainsInTime"),
            (Reason::NotObservedYet, "NotObservedYet"),
            (Reason::CheckFailing, "CheckFailing"),
            (Reason::NotYetChecked, "NotYetChecked"),
            (Reason::SpfNotAuthorized, "SpfNotAuthorized"),
            (Reason::ReverseDnsInvalid, "ReverseDnsInvalid"),
            (Reason::Published, "Published"),
            (Reason::DNSEndpointNotInstalled, "DNSEndpointNotInstalled"),
        ];
        for (r, s) in stable {
            assert_eq!(r.as_str(), s);
            assert_eq!(r.to_string(), s);
        }
    }
}
