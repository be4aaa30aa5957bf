//! `SendingPool`: a fleet of Postfix instances, one per egress IP.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the
// repeated keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;
use super::defaults;
use super::limits::*;

/// A fleet of Postfix MTA instances that send mail from pinned egress IPs.
/// One instance is one pod, one StatefulSet, one queue volume and one egress
/// IP: the unit of sending reputation.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sendfleet.io",
    version = "v1alpha1",
    kind = "SendingPool",
    namespaced,
    status = "SendingPoolStatus",
    shortname = "sp",
    shortname = "pool",
    category = "sendfleet",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyInstances",
        description = "Ready instances / instances"
    ),
    printcolumn(
        name = "Listed",
        type_ = "integer",
        json_path = ".status.listedInstances",
        description = "Instances listed on a DNS blocklist"
    ),
    printcolumn(
        name = "Deferred",
        type_ = "integer",
        json_path = ".status.deferredMessages",
        description = "Messages in the deferred queues"
    ),
    printcolumn(
        name = "Oldest",
        type_ = "string",
        json_path = ".status.oldestQueuedAge",
        description = "Age of the oldest queued message"
    ),
    printcolumn(name = "Warmup", type_ = "string", json_path = ".status.warmup", description = "Warm-up state"),
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
#[serde(rename_all = "camelCase")]
pub struct SendingPoolSpec {
    /// Egress IPs of the pool; each becomes one instance. Names and addresses
    /// must be unique within the pool. At least one, at most 256.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.address == a.address))").message("egressIPs: addresses must be unique"))]
    #[serde(rename = "egressIPs")]
    pub egress_ips: Vec<EgressIP>,

    /// How instance pods get their egress IP.
    #[serde(default)]
    pub egress: Egress,

    /// Container image for the instances (Postfix + sendfleet agent). Empty:
    /// the operator's default image.
    #[schemars(length(max = 512), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Compute resources of each instance's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Queue storage: each instance's Postfix queue lives on its own
    /// PersistentVolumeClaim so queued mail survives pod restarts.
    #[serde(default)]
    pub queue: QueueStorage,

    /// Where applications hand mail to the pool.
    #[serde(default)]
    pub submission: Submission,

    /// Retry schedule and queue lifetimes (Postfix queue manager tuning).
    #[serde(default)]
    pub retry: Retry,

    /// Outbound TLS policy for the whole pool; DomainPolicies may require more
    /// for their domains.
    #[serde(default)]
    pub tls: Tls,

    /// DKIM key used to verify the published selector record (sendfleet
    /// checks DNS; signing happens before mail reaches the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<Dkim>,

    /// Throttle applied to every destination that no DomainPolicy throttles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_throttle: Option<Throttle>,

    /// Name of a WarmupPlan in the same namespace. New egress IPs start on its
    /// first step.
    #[schemars(length(max = MAX_LABEL), regex(pattern = label_pattern(MAX_LABEL)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_plan_ref: Option<String>,

    /// DNS blocklist monitoring and the reaction to a listing.
    #[serde(default)]
    pub reputation: Reputation,

    /// When queued mail counts as late (the QueueBacklog condition).
    #[serde(default)]
    pub backlog: Backlog,

    /// Send mail that upstream filters marked as spam through another pool,
    /// so it cannot dirty this pool's IPs or clog its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_route: Option<SpamRoute>,
}

/// One egress IP and its identity.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct EgressIP {
    /// Instance name, unique in the pool; part of the StatefulSet name. A
    /// DNS-1123 label of at most 30 characters.
    #[schemars(length(min = 1, max = MAX_INSTANCE_NAME), regex(pattern = label_pattern(MAX_INSTANCE_NAME)))]
    pub name: String,
    /// The IPv4 or IPv6 address mail leaves from, in canonical form.
    #[schemars(length(min = 2, max = 39))]
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self)").message("must be an IPv4 or IPv6 address in canonical form"))]
    #[x_kube(validation = Rule::new("!isIP(self) || !ip(self).isLoopback()").message("must not be a loopback address"))]
    pub address: String,
    /// Name sent in HELO/EHLO from this address; its PTR record should point
    /// to it and it should resolve back to the address.
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = DNS_NAME_PATTERN))]
    pub helo_name: String,
    /// Node that holds this address (HostNetwork mode pins the pod there).
    #[schemars(length(max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// False takes the IP out of rotation: it sends nothing and its queue
    /// drains through the other instances. The instance keeps running.
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
}

/// How egress IPs are attached to pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// `HostNetwork`: the pod uses the node's network and binds the egress
    /// address, which must be configured on that node. `Multus`: a secondary
    /// interface from a NetworkAttachmentDefinition carries the address.
    /// `CiliumEgressGateway`: the cluster's egress gateway maps the pod to
    /// the address. `None`: no pinning (tests, or a NAT you manage).
    #[serde(default)]
    pub mode: EgressMode,
    /// NetworkAttachmentDefinition name (Multus mode only).
    #[schemars(length(max = MAX_LABEL), regex(pattern = label_pattern(MAX_LABEL)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment: Option<String>,
}

/// Egress attachment mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EgressMode {
    #[default]
    HostNetwork,
    Multus,
    CiliumEgressGateway,
    None,
}

/// Queue volume of each instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct QueueStorage {
    /// Size of each instance's queue PersistentVolumeClaim (a Kubernetes
    /// quantity such as `10Gi`).
    #[schemars(length(max = 32), regex(pattern = r"^[1-9][0-9]{0,9}(Ki|Mi|Gi|Ti)$"))]
    #[serde(default = "defaults::queue_size")]
    pub size: String,
    /// StorageClass of the claims; empty uses the cluster default.
    #[schemars(length(max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for QueueStorage {
    fn default() -> Self {
        Self { size: defaults::queue_size(), storage_class_name: None }
    }
}

/// Submission endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// TCP port the instances accept mail on (and the Service exposes).
    #[schemars(range(min = 1, max = 65535))]
    #[serde(default = "defaults::submission_port")]
    pub port: u16,
    /// Client networks allowed to submit (CIDRs). Everything else is refused.
    /// Default: the pod network ranges are not known to sendfleet, so the
    /// default is loopback only; list your cluster's pod CIDRs here.
    #[schemars(length(max = 64), inner(length(min = 1, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c).ip() == cidr(c).masked().ip())").message("allowedCIDRs: each entry must be a CIDR with no host bits set, e.g. 10.0.0.0/8"))]
    #[serde(default = "defaults::allowed_cidrs", rename = "allowedCIDRs")]
    pub allowed_cidrs: Vec<String>,
}

impl Default for Submission {
    fn default() -> Self {
        Self { port: defaults::submission_port(), allowed_cidrs: defaults::allowed_cidrs() }
    }
}

/// Retry schedule, as Postfix queue-manager parameters. Durations are a
/// whole number with a unit: `s`, `m`, `h`, `d` or `w`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(retry_rule_backoff_order()).message("retry.minimalBackoff must not exceed retry.maximalBackoff").field_path(".minimalBackoff"))]
#[x_kube(validation = Rule::new(retry_rule_backoff_lifetime()).message("retry.maximalBackoff must not exceed retry.maximalQueueLifetime").field_path(".maximalBackoff"))]
#[x_kube(validation = Rule::new(retry_rule_bounce_lifetime()).message("retry.bounceQueueLifetime must not exceed retry.maximalQueueLifetime").field_path(".bounceQueueLifetime"))]
#[x_kube(validation = Rule::new(retry_rule_run_delay()).message("retry.queueRunDelay must not exceed retry.maximalBackoff").field_path(".queueRunDelay"))]
pub struct Retry {
    /// How often the queue manager scans the deferred queue
    /// (`queue_run_delay`). Default 300s.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::queue_run_delay")]
    pub queue_run_delay: String,
    /// Shortest time a deferred message waits before a retry
    /// (`minimal_backoff_time`). Must be above zero. Default 300s.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::minimal_backoff")]
    pub minimal_backoff: String,
    /// Longest time between retries (`maximal_backoff_time`). Default 4000s.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::maximal_backoff")]
    pub maximal_backoff: String,
    /// How long mail may stay queued before it is returned as undeliverable
    /// (`maximal_queue_lifetime`). Default 5d.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::maximal_queue_lifetime")]
    pub maximal_queue_lifetime: String,
    /// The same for bounce messages (`bounce_queue_lifetime`). Default 5d.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::bounce_queue_lifetime")]
    pub bounce_queue_lifetime: String,
    /// Send the sender a "still trying" notice after this long
    /// (`delay_warning_time`); `0h` disables it. Default 0h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_OR_ZERO_PATTERN))]
    #[serde(default = "defaults::delay_warning_time")]
    pub delay_warning_time: String,
}

fn retry_rule_backoff_order() -> String {
    format!("{} <= {}", cel_seconds("self.minimalBackoff"), cel_seconds("self.maximalBackoff"))
}
fn retry_rule_backoff_lifetime() -> String {
    format!("{} <= {}", cel_seconds("self.maximalBackoff"), cel_seconds("self.maximalQueueLifetime"))
}
fn retry_rule_bounce_lifetime() -> String {
    format!("{} <= {}", cel_seconds("self.bounceQueueLifetime"), cel_seconds("self.maximalQueueLifetime"))
}
fn retry_rule_run_delay() -> String {
    format!("{} <= {}", cel_seconds("self.queueRunDelay"), cel_seconds("self.maximalBackoff"))
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            queue_run_delay: defaults::queue_run_delay(),
            minimal_backoff: defaults::minimal_backoff(),
            maximal_backoff: defaults::maximal_backoff(),
            maximal_queue_lifetime: defaults::maximal_queue_lifetime(),
            bounce_queue_lifetime: defaults::bounce_queue_lifetime(),
            delay_warning_time: defaults::delay_warning_time(),
        }
    }
}

/// Pool-wide outbound TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// Lowest protocol version offered to receivers. Default TLSv1.2.
    #[serde(default)]
    pub minimum_protocol: TlsProtocol,
    /// Default security level (`smtp_tls_security_level`). Default `may`.
    #[serde(default)]
    pub security_level: TlsLevel,
    /// Certificate authorities trusted in addition to the system's (the
    /// image's `ca-certificates`), for receivers and relays whose
    /// certificates a private CA issued. Used by the `verify` and `secure`
    /// levels. A missing Secret or ConfigMap, or one whose key holds no PEM
    /// certificate, makes the pool `Ready=False` with reason
    /// `MissingReference`.
    #[serde(default, rename = "trustedCA", skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<TrustedCa>,
}

/// A PEM bundle of CA certificates in a Secret or a ConfigMap of the pool's
/// namespace (as cert-manager writes `ca.crt` into a certificate's Secret,
/// and trust-manager a bundle into ConfigMaps or Secrets). Name exactly one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.configMapName)").message("tls.trustedCA: name exactly one of secretName and configMapName"))]
pub struct TrustedCa {
    /// Secret holding the bundle.
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = OBJECT_NAME_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// ConfigMap holding the bundle.
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = OBJECT_NAME_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Key of the bundle in the Secret or ConfigMap: one or more PEM
    /// certificates. Default `ca.crt`.
    #[schemars(length(min = 1, max = MAX_DATA_KEY), regex(pattern = DATA_KEY_PATTERN))]
    #[serde(default = "defaults::trusted_ca_key")]
    pub key: String,
}

/// DKIM key reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Dkim {
    /// Secret (same namespace) holding the private key under `private.key`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub secret_name: String,
    /// DKIM selector (`<selector>._domainkey.<domain>`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub selector: String,
    /// Sending domains signed with this key.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new(cel_all_dns_names("d")).message("dkim.domains: each entry must be a lowercase DNS name"))]
    pub domains: Vec<String>,
}

/// DNSBL monitoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Reputation {
    /// DNSBL zones to query for every egress IP. Empty: sendfleet's default
    /// list of widely used IP blocklists.
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new(cel_all_dns_names("z")).message("reputation.zones: each entry must be a lowercase DNS name"))]
    #[serde(default)]
    pub zones: Vec<String>,
    /// How often to check. Default 10m; at least 1m.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(format!("{} >= {MIN_REPUTATION_INTERVAL_SECONDS}", cel_seconds("self"))).message(::kube_core::Message::Message(format!("reputation.interval must be at least {MIN_REPUTATION_INTERVAL_SECONDS}s"))))]
    #[serde(default = "defaults::reputation_interval")]
    pub interval: String,
    /// What a listing does: `Quarantine` takes the IP out of rotation until
    /// it has been clean for `coolDown`; `Alert` only reports.
    #[serde(default)]
    pub on_listed: OnListed,
    /// How long an IP must be clean before a quarantine ends. Default 1h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_OR_ZERO_PATTERN))]
    #[serde(default = "defaults::reputation_cool_down")]
    pub cool_down: String,
}

impl Default for Reputation {
    fn default() -> Self {
        Self {
            zones: vec![],
            interval: defaults::reputation_interval(),
            on_listed: OnListed::default(),
            cool_down: defaults::reputation_cool_down(),
        }
    }
}

/// Reaction to a DNSBL listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OnListed {
    #[default]
    Quarantine,
    Alert,
}

/// Queue-age thresholds for the QueueBacklog condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("{} < {}", cel_seconds("self.warnAge"), cel_seconds("self.criticalAge"))).message("backlog.warnAge must be shorter than backlog.criticalAge").field_path(".warnAge"))]
pub struct Backlog {
    /// Queued longer than this is late (warning). Default 4h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::backlog_warn_age")]
    pub warn_age: String,
    /// Queued longer than this is critical. Default 12h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::backlog_critical_age")]
    pub critical_age: String,
}

impl Default for Backlog {
    fn default() -> Self {
        Self { warn_age: defaults::backlog_warn_age(), critical_age: defaults::backlog_critical_age() }
    }
}

/// Route for spam-classified mail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct SpamRoute {
    /// SendingPool (same namespace) that sends spam-classified mail.
    #[schemars(length(min = 1, max = MAX_LABEL), regex(pattern = label_pattern(MAX_LABEL)))]
    pub pool: String,
    /// Header that marks spam, e.g. `X-Spam-Flag`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9-]*$"))]
    pub header: String,
    /// Header value that marks spam (whole word), e.g. `YES` (quote it in
    /// YAML: unquoted YES is a boolean to most YAML parsers).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub value: String,
}

/// Observed state of a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendingPoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, Listed, QueueBacklog, BacklogForecast,
    /// WarmingUp, AuthenticationValid (Kubernetes condition conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// "ready/total" instances, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<String>,
    /// Instances currently listed on a DNSBL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_instances: Option<u32>,
    /// Deferred messages across instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_messages: Option<u64>,
    /// Age of the oldest queued message across instances (e.g. `2h13m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_age: Option<String>,
    /// Warm-up summary, e.g. `plan-a: 1/3 warming`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<String>,
    /// Hash of the rendered configuration of each instance, by instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
}

/// Observed state of one instance (egress IP).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Egress IP name.
    pub name: String,
    /// Egress address.
    pub address: String,
    /// Pending (no StatefulSet yet), Starting (not ready yet), Ready, or Failed (a pod
    /// or config problem, in `message`), from the StatefulSet, pod and agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the instance is in this phase, when not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Rotation weight rendered for it (0 = out of rotation).
    #[serde(default)]
    pub weight: u32,
    /// Hash of the configuration rendered for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_config_hash: Option<String>,
    /// Hash of the configuration its agent reports as loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_config_hash: Option<String>,
    /// Warm-up progress, if the pool has a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<InstanceWarmup>,
    /// Current DNSBL listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listings: Vec<Listing>,
    /// Whether the instance is quarantined, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// Queue as last reported by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSummary>,
    /// Delivery outcomes counted by the agent since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliveryCounts>,
    /// Delivery latency of the recipients the instance delivered recently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_latency: Option<DeliveryLatencySummary>,
}

/// Total delivery latency (Postfix `delay=`, arrival to acceptance by the
/// receiver) of the recipients an instance delivered in the last
/// `windowSeconds`; hand-offs to peers are not counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryLatencySummary {
    pub window_seconds: u64,
    /// Recipients the percentiles are taken over.
    pub samples: u64,
    /// Median latency; absent without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_milliseconds: Option<u64>,
    /// 99th percentile latency; absent without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_milliseconds: Option<u64>,
}

/// Warm-up progress of one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceWarmup {
    pub step: u32,
    pub daily_cap: u64,
    pub sent_today: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_at: Option<String>,
}

/// A DNSBL listing of one IP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub zone: String,
    /// The A record returned (127.0.0.x).
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 time the listing was first seen.
    pub since: String,
}

/// Queue counts of one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSummary {
    pub active: u64,
    pub deferred: u64,
    pub older_than_warn: u64,
    pub older_than_critical: u64,
    pub oldest_age_seconds: u64,
    /// Per destination domain (the DomainPolicies' domains and the largest
    /// backlogs): flow and forecast, largest backlog first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<DomainFlowSummary>,
}

/// One destination domain's backlog on an instance, its flow (recipients
/// per minute, rounded) and the agent's forecast.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainFlowSummary {
    pub domain: String,
    /// Recipients queued.
    pub queued: u64,
    pub inflow_per_minute: u64,
    pub outflow_per_minute: u64,
    pub oldest_age_seconds: u64,
    /// At the current rates, seconds until the backlog is empty; absent
    /// when it is not draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_eta_seconds: Option<u64>,
    /// Seconds until the oldest queued message reaches the pool's warnAge.
    pub warn_in_seconds: u64,
    /// The backlog is forecast not to drain before its oldest message
    /// reaches warnAge (see the BacklogForecast condition).
    #[serde(default)]
    pub at_risk: bool,
}

/// Delivery outcomes counted by the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub expired: u64,
}
