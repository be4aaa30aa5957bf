//! `DomainPolicy`: how mail to some destination domains is sent by the
//! pools the policy selects — throttles, relay routes, TLS requirements,
//! excluded IPs, automatic exclusion after hard blocks, adaptive slow-down.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the
// repeated keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;
use super::defaults;
use super::limits::*;

/// Rules for a set of destination domains, applied to every SendingPool in
/// the namespace that `poolSelector` selects.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sendfleet.io",
    version = "v1alpha1",
    kind = "DomainPolicy",
    namespaced,
    status = "DomainPolicyStatus",
    shortname = "dp",
    category = "sendfleet",
    printcolumn(
        name = "Domains",
        type_ = "string",
        json_path = ".spec.domains",
        description = "Destination domain patterns"
    ),
    printcolumn(
        name = "Exclusions",
        type_ = "integer",
        json_path = ".status.activeExclusions",
        description = "IPs currently excluded"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    )
)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = Rule::new("!has(self.route) || !has(self.route.pool) || !has(self.throttle)").message("throttle has no effect when route.pool hands the mail to another pool; set the throttle on that pool's policies").field_path(".throttle"))]
#[serde(rename_all = "camelCase")]
pub struct DomainPolicySpec {
    /// Which pools in this namespace the policy applies to. An empty selector
    /// selects every pool in the namespace.
    #[serde(default)]
    pub pool_selector: LabelSelector,

    /// Destination domains: `example.com` (that domain only) or
    /// `*.example.com` (every subdomain, not example.com itself). Lowercase;
    /// internationalised names in their `xn--` form. 1 to 200 entries, unique.
    #[schemars(length(min = 1, max = MAX_DOMAINS), inner(length(min = 1, max = 255)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(cel_all_domain_patterns()).message("domains: each entry must be a lowercase domain name, optionally prefixed by '*.'"))]
    pub domains: Vec<String>,

    /// Per-IP throttle for these domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,

    /// Send these domains' mail through a relay host or another pool instead
    /// of directly to their MX hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,

    /// TLS required for these domains (overrides the pool's level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DomainTls>,

    /// Egress IP names (of the selected pools) that never send to these
    /// domains, e.g. because the provider blocks them. Their mail for these
    /// domains is relayed through the pool's other IPs.
    #[schemars(length(max = 256), inner(length(min = 1, max = MAX_INSTANCE_NAME)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(cel_all_instance_names()).message("excludedIPs: each entry must be an egress IP name"))]
    #[serde(default, rename = "excludedIPs")]
    pub excluded_ips: Vec<String>,

    /// Exclude an IP from these domains automatically after repeated hard
    /// blocks (5xx answers classified as IP/reputation blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_exclusion: Option<AutoExclusion>,

    /// Slow down automatically when these domains answer with rate-limit
    /// deferrals (4xx), and recover step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_down: Option<SlowDown>,

    /// Stop delivering to these domains (mail stays queued) with this reason,
    /// e.g. during a provider incident. Empty: not paused.
    #[schemars(length(max = MAX_REASON), regex(pattern = REASON_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// Where to hand these domains' mail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = Rule::new("has(self.relayHost) != has(self.pool)").message("route: set exactly one of relayHost or pool"))]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Relay host: a DNS name (its MX records are used unless `useMX` is
    /// false) or an IP address.
    #[schemars(length(min = 1, max = MAX_DNS_NAME))]
    #[x_kube(validation = Rule::new(cel_ip_or_dns_name()).message("route.relayHost must be a lowercase DNS name or an IP address"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_host: Option<String>,
    /// Port of the relay host. Default 25.
    #[schemars(range(min = 1, max = 65535))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Look up MX records of `relayHost` (true) or connect to the host's own
    /// address (false, the default, like Postfix's `[host]` form).
    #[serde(default, rename = "useMX")]
    pub use_mx: bool,
    /// Name of another SendingPool in this namespace whose submission
    /// Service receives these domains' mail.
    #[schemars(length(min = 1, max = MAX_LABEL), regex(pattern = label_pattern(MAX_LABEL)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// TLS requirement for a set of domains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct DomainTls {
    /// Security level for these domains (Postfix `smtp_tls_policy_maps`).
    pub level: TlsLevel,
    /// Lowest protocol for these domains, e.g. `TLSv1.2` for receivers that
    /// refuse older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_protocol: Option<TlsProtocol>,
}

/// Automatic per-domain exclusion of an IP after hard blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct AutoExclusion {
    /// Hard blocks from these domains within `window` that exclude the IP.
    #[schemars(range(min = 1, max = MAX_ANSWERS_IN_WINDOW))]
    pub hard_blocks: u32,
    /// Window in which blocks are counted. Default 1h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::auto_exclusion_window")]
    pub window: String,
    /// How long an exclusion lasts before the IP is tried again. Default 24h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::auto_exclusion_duration")]
    pub duration: String,
}

/// Adaptive slow-down on rate-limit deferrals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct SlowDown {
    /// Rate-limit deferrals within `window` that engage the slow-down.
    #[schemars(range(min = 1, max = MAX_ANSWERS_IN_WINDOW))]
    pub deferrals: u32,
    /// Window in which deferrals are counted. Default 10m.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::slow_down_window")]
    pub window: String,
    /// Messages per minute per IP while slowed down: 1 to 60, a divisor of 60.
    #[schemars(range(min = 1, max = MAX_MESSAGES_PER_MINUTE))]
    #[x_kube(validation = Rule::new(cel_divides_minute()).message(MESSAGES_PER_MINUTE_MESSAGE))]
    pub messages_per_minute: u32,
    /// Quiet time (no rate-limit deferral) after which one recovery step is
    /// taken back towards the normal throttle. Default 30m.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::slow_down_recovery_interval")]
    pub recovery_interval: String,
}

/// Observed state of a DomainPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of (pool, IP) exclusions in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_exclusions: Option<u32>,
    /// Exclusions in force, manual and automatic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<Exclusion>,
    /// Slow-downs in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slow_downs: Vec<SlowDownState>,
}

/// One IP excluded from this policy's domains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exclusion {
    pub pool: String,
    pub instance: String,
    pub reason: String,
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// True for an exclusion the fleet decided (`autoExclusion`), false for
    /// one listed in `spec.excludedIPs`.
    #[serde(default)]
    pub automatic: bool,
}

/// A slow-down in force on one instance of a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlowDownState {
    pub pool: String,
    /// Instance (egress IP name) that slowed down.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    pub reason: String,
    pub since: String,
    /// Messages per minute per IP while fully slowed (`slowDown.messagesPerMinute`).
    pub messages_per_minute: u32,
    /// Recovery progress, e.g. `2/4`: the share of this domain's mail still
    /// sent at the slowed rate, in steps; each quiet `recoveryInterval`
    /// takes one step back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// RFC 3339 time of the next recovery step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_recovery_at: Option<String>,
}
