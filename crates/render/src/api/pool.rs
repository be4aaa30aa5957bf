//! `SendingPool`: a fleet of Postfix instances, one per egress IP.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the
// repeated keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, ResourceRequirements, Toleration};
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
    #[x_kube(validation = Rule::new(CEL_PUBLIC_ADDRESSES_UNIQUE).message("egressIPs: public addresses must be unique"))]
    #[serde(rename = "egressIPs")]
    pub egress_ips: Vec<EgressIP>,

    /// How instance pods get their egress IP.
    #[serde(default)]
    pub egress: Egress,

    /// Container image for the instances (Postfix + sendfleet agent). Empty:
    /// the operator's default image. Any other image must be one the
    /// administrator allows (chart value `instances.allowedImages`), or the
    /// pool is `Ready=False` with reason `ImageNotAllowed`.
    #[schemars(length(max = 512), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Compute resources of each instance's container. A request left out
    /// (and not implied by a limit) gets the operator's default (cpu 100m,
    /// memory 256Mi), so instances are never BestEffort: those are evicted
    /// first under node pressure.
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

    /// DKIM signing: every instance signs mail from `domains` with the key
    /// in the Secret (OpenDKIM in the instance pod), and sendfleet checks
    /// that the selector record publishes that key (docs/DNS.md).
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

    /// Placement and metadata of the instance pods (tolerations, affinity,
    /// node selector, priority class, pull secrets, labels, annotations),
    /// within what the administrator allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<InstancePod>,

    /// What deleting the pool does to queued mail. `Drain` (the default):
    /// the pool stays (a finalizer) while its instances take no new mail and
    /// deliver what is queued, until every queue is empty or `drain.timeout`
    /// has passed; then its objects go. `Retain`: the objects go at once and
    /// the queue volumes are kept (as Kubernetes' `persistentVolumeReclaimPolicy:
    /// Retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// How queues are drained: when an egress IP is removed (its mail goes
    /// to the peers, then its StatefulSet and queue volume go) and when the
    /// pool is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,

    /// Publishing the DNS records the pool needs (`status.dnsRecords`:
    /// PTR for each address receivers see, SPF, DKIM and DMARC for each
    /// `dkim.domains` entry) through a DNS controller. Absent: the records
    /// are only listed in status, for whoever runs the zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_records: Option<DnsRecords>,
}

/// How the pool's DNS records are published (`spec.dnsRecords`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct DnsRecords {
    /// `DNSEndpoint`: the operator writes one external-dns `DNSEndpoint`
    /// (`externaldns.k8s.io/v1alpha1`) named after the pool, owned by it,
    /// with every record whose value is known (a DKIM record waits for a
    /// readable key in `dkim.secretName`); external-dns (run with
    /// `--source=crd`) publishes it. The CRD must be installed: without it
    /// the pool says so (`DnsRecordsPublished=False`, reason
    /// `DNSEndpointNotInstalled`) and the operator looks again every
    /// minute. Removing `spec.dnsRecords` deletes the object.
    pub publish: DnsPublisher,
}

/// Where the pool's DNS records are published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DnsPublisher {
    /// An external-dns `DNSEndpoint` object in the pool's namespace.
    #[default]
    DNSEndpoint,
}

/// What deleting a pool does to queued mail (`spec.deletionPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Deliver the queues first (a finalizer holds the pool), at most for
    /// `drain.timeout`.
    #[default]
    Drain,
    /// Delete at once; the queue volumes are kept.
    Retain,
}

/// Drain settings (`spec.drain`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// How long a deleted pool waits for its queues to empty before its
    /// objects go anyway (the queue volumes are then kept). Default 24h.
    /// (No serde default: a default inside the spec would show as drift in
    /// GitOps tools; `drain_timeout_seconds` applies it.)
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Keep the queue volume (PersistentVolumeClaim) of a removed, drained
    /// egress IP instead of deleting it after its StatefulSet. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_queue_volumes: bool,
}

/// One egress IP and its identity.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct EgressIP {
    /// Instance name, unique in the pool; part of the StatefulSet name. A
    /// DNS-1123 label of at most 30 characters.
    #[schemars(length(min = 1, max = MAX_INSTANCE_NAME), regex(pattern = label_pattern(MAX_INSTANCE_NAME)))]
    pub name: String,
    /// The IPv4 or IPv6 address mail leaves from, in canonical form: a
    /// global unicast address (not loopback, link-local, multicast,
    /// unspecified or broadcast). One SendingPool in the whole cluster may
    /// use an address; a pool listing an address another pool owns is
    /// refused (`Ready=False`, reason `AddressInUse`).
    #[schemars(length(min = 2, max = 39))]
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self)").message("must be an IPv4 or IPv6 address in canonical form"))]
    #[x_kube(validation = Rule::new(CEL_EGRESS_ADDRESS).message(EGRESS_ADDRESS_MESSAGE))]
    pub address: String,
    /// Name sent in HELO/EHLO from this address; its PTR record should point
    /// to it and it should resolve back to the address.
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = DNS_NAME_PATTERN))]
    pub helo_name: String,
    /// Node that holds this address (HostNetwork mode pins the pod there).
    /// It must carry the node labels the administrator requires of instance
    /// pods (chart value `instances.nodeSelector`), or the pool is
    /// `Ready=False` with reason `NodeNotAllowed`.
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// False takes the IP out of rotation: it sends nothing and its queue
    /// drains through the other instances. The instance keeps running.
    /// Absent means true; the operator applies that (not the API server: a
    /// default inside a list item would show as drift in GitOps tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The address receivers see when it differs from `address` (a cloud's
    /// NAT: an AWS Elastic IP, a GCP or Azure public IP mapped to the
    /// node's private `address`). Postfix binds `address`; the DNSBL, PTR
    /// and SPF checks ask about this one. Claimed cluster-wide like
    /// `address`: two pools never share a public address either.
    #[schemars(length(min = 2, max = 39))]
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self)").message("must be an IPv4 or IPv6 address in canonical form"))]
    #[x_kube(validation = Rule::new(CEL_EGRESS_ADDRESS).message(EGRESS_ADDRESS_MESSAGE))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// `Spare`: the address is checked (DNSBL, PTR/FCrDNS, SPF when
    /// `dkim.domains` names domains) and its instance runs (and warms up
    /// under the pool's plan), but it takes no mail until its role is
    /// changed. Absent or `Active`: in rotation once its first DNS check
    /// has finished clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<EgressRole>,
}

impl SendingPoolSpec {
    /// `drain.timeout` in seconds, its default when absent or malformed.
    pub fn drain_timeout_seconds(&self) -> u64 {
        self.drain
            .as_ref()
            .and_then(|d| d.timeout.as_deref())
            .and_then(super::parse_duration)
            .unwrap_or(defaults::DRAIN_TIMEOUT.seconds())
    }
}

/// An egress IP's part in the pool (`egressIPs[].role`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EgressRole {
    #[default]
    Active,
    Spare,
}

impl EgressIP {
    /// Listed as a spare: checked, never in rotation.
    pub fn is_spare(&self) -> bool {
        self.role == Some(EgressRole::Spare)
    }

    /// `enabled`, with its default ([`defaults::EGRESS_IP_ENABLED`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(defaults::EGRESS_IP_ENABLED)
    }

    /// The address receivers see, which DNS checks ask about:
    /// `publicAddress`, else `address`.
    pub fn seen_address(&self) -> &str {
        self.public_address.as_deref().unwrap_or(&self.address)
    }

    /// Every address this IP holds cluster-wide, with its field name:
    /// `address`, and `publicAddress` when set.
    pub fn held_addresses(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("address", self.address.as_str()))
            .chain(self.public_address.as_deref().map(|a| ("publicAddress", a)))
    }
}

/// How egress IPs are attached to pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'Multus' || has(self.networkAttachment)").message("required when egress.mode is Multus").field_path(".networkAttachment"))]
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
    #[schemars(length(max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
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
#[x_kube(validation = Rule::new(cel_private_client_networks()).message("allowedCIDRs: each entry must lie inside a private, shared (100.64.0.0/10), loopback, unique-local or documentation network unless clientCertificates is set: without client authentication a public client network would make the pool an open relay").field_path(".allowedCIDRs"))]
pub struct Submission {
    /// TCP port the instances accept mail on (and the Service exposes).
    #[schemars(range(min = 1, max = 65535))]
    #[serde(default = "defaults::submission_port")]
    pub port: u16,
    /// Client networks allowed to submit (CIDRs); every other client is
    /// refused when it connects. Without `clientCertificates`, each entry
    /// must lie inside a network that is never routed on the Internet
    /// (RFC 1918, 100.64.0.0/10, loopback, fc00::/7, ::1, the documentation
    /// networks): `0.0.0.0/0`, `::/0` or any range containing public
    /// addresses is refused. With `clientCertificates`, other entries are
    /// accepted: a client from them may connect but relays only after
    /// presenting a certificate the configured CAs signed. Default: the pod network ranges
    /// are not known to sendfleet, so the default is loopback only; list
    /// your cluster's pod CIDRs here. Never list the nodes' network with
    /// hostNetwork egress: every process on a node would then relay.
    #[schemars(length(max = 64), inner(length(min = 1, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c).ip() == cidr(c).masked().ip())").message("allowedCIDRs: each entry must be a CIDR with no host bits set, e.g. 10.0.0.0/8"))]
    #[serde(default = "defaults::allowed_cidrs", rename = "allowedCIDRs")]
    pub allowed_cidrs: Vec<String>,
    /// Authenticate submission clients by TLS client certificate. When set,
    /// the submission port requires STARTTLS (with `serverCertificate`),
    /// asks every client for a certificate, and relays for a client outside
    /// the private networks of `allowedCIDRs` only when its certificate was
    /// signed by one of `trustedCA`'s certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificates>,
}

impl Default for Submission {
    fn default() -> Self {
        Self { port: defaults::submission_port(), allowed_cidrs: defaults::allowed_cidrs(), client_certificates: None }
    }
}

/// TLS client-certificate authentication on the submission port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificates {
    /// The CAs whose client certificates are accepted. Use a CA of your
    /// own that issues only submission clients: every certificate it
    /// signed may relay. A missing object, or a key with no PEM
    /// certificate, makes the pool `Ready=False` with reason
    /// `MissingReference`.
    #[serde(rename = "trustedCA")]
    pub trusted_ca: TrustedCa,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`, as
    /// cert-manager writes them) in the pool's namespace: the certificate
    /// the submission port presents in STARTTLS. Its name should be the
    /// name clients connect to (the pool's Service).
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = OBJECT_NAME_PATTERN))]
    pub server_certificate_secret_name: String,
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
/// Used by `tls.trustedCA` (outbound) and
/// `submission.clientCertificates.trustedCA` (submission clients).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.configMapName)").message("trustedCA: name exactly one of secretName and configMapName"))]
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
    /// Secret (same namespace) holding the private key of a selector `S`
    /// under `S.key`, or under `private.key` (docs/DNS.md).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: String,
    /// DKIM selector (`<selector>._domainkey.<domain>`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub selector: String,
    /// Sending domains signed with this key.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new(cel_all_dns_names("d")).message("dkim.domains: each entry must be a lowercase DNS name"))]
    pub domains: Vec<String>,
    /// What an instance does while the selector's key is missing or
    /// unusable: `Hold` (default) refuses submissions with a 4xx, so the
    /// client keeps the mail and retries, and nothing leaves unsigned;
    /// `SendUnsigned` accepts and sends it unsigned (an explicit opt-out).
    #[serde(default, skip_serializing_if = "DkimKeyErrorAction::is_default")]
    pub on_key_error: DkimKeyErrorAction,
}

/// What an instance does without a usable DKIM key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DkimKeyErrorAction {
    /// Refuse submissions with a 4xx until the key is usable.
    #[default]
    Hold,
    /// Accept and send unsigned.
    SendUnsigned,
}

impl DkimKeyErrorAction {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
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

/// What a pool author may set on its instance pods. The operator's own
/// settings win: its labels and annotations, the administrator's node
/// selector (`--instance-node-selector`: a key the administrator set may
/// not be given another value here, `Ready=False NodeNotAllowed`), and the
/// pod's security context. `affinity` is ANDed with the node selector by
/// the scheduler, so it can narrow placement, never widen it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct InstancePod {
    /// Labels added to every instance pod. The operator's own keys
    /// (`app.kubernetes.io/name`, `/component`, `/managed-by`, and every
    /// `sendfleet.io/` key) are refused: they select the pods.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(cel_no_reserved_keys(RESERVED_POD_LABELS)).message(RESERVED_POD_LABELS_MESSAGE))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every instance pod. `sendfleet.io/` keys and
    /// the Multus network annotation (the operator writes it) are refused.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(cel_no_reserved_keys(RESERVED_POD_ANNOTATIONS)).message(RESERVED_POD_ANNOTATIONS_MESSAGE))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node labels the pods require, in addition to the administrator's.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod (anti-)affinity of the pods, e.g. spreading a pool's
    /// instances over zones. ANDed with the node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate (e.g. nodes dedicated to mail egress).
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of the pods: instances hold queued mail, so give them
    /// one above batch workloads.
    #[schemars(length(min = 1, max = MAX_DNS_NAME), regex(pattern = OBJECT_NAME_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets (in the pool's namespace) to pull `spec.image` with.
    #[schemars(length(max = 16))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
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
    /// The DNS records the pool needs published, as `sendfleet render
    /// --records` lists them: PTR for each address receivers see, then
    /// SPF, DKIM and DMARC for each `dkim.domains` entry. A DKIM record's
    /// value is absent until the operator could read the key's public half.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecordStatus>,
}

/// One DNS record the pool needs (`status.dnsRecords[]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecordStatus {
    /// Absolute name without the trailing dot.
    pub name: String,
    /// `PTR` or `TXT`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The record's data (a TXT record's text, unquoted; a PTR's target
    /// name); absent when not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
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
    /// RFC 3339 time of the first finished DNS check of this address. An
    /// address is in rotation only once it has one (restored from here
    /// after an operator restart, by address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_since: Option<String>,
    /// RFC 3339 time from which this address, quarantined for a listing,
    /// has been seen clean: its cool-down runs from here. Kept in status so
    /// an operator restart or a leader change continues the cool-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_down_since: Option<String>,
    /// The DKIM signer as the agent last reported it (with `spec.dkim`):
    /// `Signing (s1)`, `Held: <reason>`, `Unsigned: <reason>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
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
