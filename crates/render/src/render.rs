//! Render one pool: (pool, selected DomainPolicies, WarmupPlan, observed
//! state, operator settings) -> per-instance Postfix files and agent policy.
//!
//! Precedence, from weakest to strongest: Postfix defaults < the pool spec
//! (retry, TLS, default throttle) < DomainPolicies (sorted by name; the first
//! policy to claim a domain pattern wins, later claims are reported as
//! conflicts) < observed state (quarantine, exclusions, slow-downs, warm-up
//! day), which only ever takes capacity *away*.
//!
//! Where each domain's mail goes (transports, nexthops, TLS keys) is not
//! decided here: [`crate::routing`] decides, this module writes the Postfix
//! files and `policy.json` from its [`RoutingModel`].
//!
//! Pure: same inputs, same bytes. No clock — the warm-up day and every
//! observation arrive in [`Observed`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::api::*;
use crate::contract::{AGENT_HTTP_PORT, DEFAULT_POLICY_SOCKET, PEER_RELAY_TRANSPORT, SOCKETMAP_NAME};
use crate::policy::{self, AgentPolicy, DomainRule, InstancePolicy, WarmupPolicy, WarmupShare};
use crate::postfix::main_cf::MainCf;
use crate::postfix::maps::{regex_escape, Table};
use crate::postfix::master_cf::{MasterCf, Service};
use crate::postfix::*;
use crate::routing::{self, RoutingModel, UnknownPool};
pub use crate::routing::{slow_transport, submission_host, table_pattern, throttle_transport};
use crate::validate::{self, FieldError, ValidDomainPolicy, ValidPool, ValidWarmupPlan, ValidationError};

/// The peer listener's `texthash:` recipient table
/// ([`RoutingModel::peer_filter_entries`]); read as text, no `postmap`.
pub const PEER_ROUTES_MAP: &str = "peer_routes";

/// `parent_domain_matches_subdomains` without `smtpd_access_maps` (Postfix's
/// default list otherwise): on the peer listener, `.example.com` in
/// [`PEER_ROUTES_MAP`] matches subdomains and `example.com` only itself,
/// as in the `transport` table the patterns come from.
const PEER_PARENT_MATCHES: &str =
    "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains";

/// Operator-wide settings that shape every instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Postfix queue directory inside the instance (the queue volume).
    pub queue_directory: String,
    /// Postfix data directory (master.lock, TLS session cache and PRNG
    /// state). On the queue volume by default: the pod's root file system is
    /// read-only, and Postfix's `post-install create-missing` creates it
    /// there owned by `postfix` (an emptyDir would be root-owned and
    /// world-writable, which Postfix warns about on every start).
    pub data_directory: String,
    /// Unix socket of the agent's transport policy service.
    pub policy_socket: String,
    /// Port on which instances accept mail relayed by peers.
    pub peer_port: u16,
    /// Port of the agent's HTTP server (/status, /metrics, probes).
    pub agent_port: u16,
    /// Cluster DNS domain, for Service names in relay routes.
    pub cluster_domain: String,
    /// Instance image when the pool names none.
    pub default_image: String,
    /// Node labels every instance pod requires (the administrator's
    /// placement, e.g. `sendfleet.io/egress=true`), in addition to the
    /// hostname of an `egressIPs[].nodeName`. Empty: any node.
    pub node_selector: BTreeMap<String, String>,
    /// Where the pool's `tls.trustedCA` bundle is mounted read-only; the
    /// bundle is the file [`TRUSTED_CA_FILE`] in it.
    pub trusted_ca_directory: String,
    /// Where the submission port's certificate Secret is mounted read-only
    /// with `submission.clientCertificates`: [`SUBMISSION_CERT_FILE`],
    /// [`SUBMISSION_KEY_FILE`].
    pub submission_tls_directory: String,
    /// Where `submission.clientCertificates.trustedCA` is mounted
    /// read-only; the bundle is the file [`CLIENT_CA_FILE`] in it.
    pub client_ca_directory: String,
    /// With `spec.dkim`: the agent's DKIM directory (an emptyDir), where it
    /// stages OpenDKIM's files and keys and OpenDKIM opens its milter
    /// socket (`crate::dkim`).
    pub dkim_directory: String,
}

/// The submission port's own certificate chain and key (the Secret's
/// `tls.crt` and `tls.key`) in [`Settings::submission_tls_directory`].
pub const SUBMISSION_CERT_FILE: &str = "tls.crt";
pub const SUBMISSION_KEY_FILE: &str = "tls.key";
/// The CAs whose client certificates may relay, in
/// [`Settings::client_ca_directory`] (the volume maps the user's key to
/// it).
pub const CLIENT_CA_FILE: &str = "client-ca.crt";
/// With client certificates: the `cidr:` table of every network that may
/// connect to the submission port (`submission.allowedCIDRs`, public ones
/// included, and the hand-off sources).
pub const SUBMISSION_CLIENTS_MAP: &str = "submission_clients";

/// The file name of the trusted CA bundle in
/// [`Settings::trusted_ca_directory`] (the volume maps the user's key to
/// it, so no user-typed name reaches `main.cf`).
pub const TRUSTED_CA_FILE: &str = "ca.crt";

/// The image's system CAs: Debian's `ca-certificates`, one file, and the
/// same certificates as an OpenSSL hashed directory.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
const SYSTEM_CA_DIRECTORY: &str = "/etc/ssl/certs";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_directory: "/var/spool/postfix".into(),
            data_directory: "/var/spool/postfix/data".into(),
            policy_socket: DEFAULT_POLICY_SOCKET.into(),
            peer_port: 2525,
            agent_port: AGENT_HTTP_PORT,
            cluster_domain: "cluster.local".into(),
            default_image: "sendfleet:dev".into(),
            node_selector: BTreeMap::new(),
            trusted_ca_directory: "/etc/sendfleet/trusted-ca".into(),
            submission_tls_directory: "/etc/sendfleet/submission-tls".into(),
            client_ca_directory: "/etc/sendfleet/client-ca".into(),
            dkim_directory: "/run/sendfleet/dkim".into(),
        }
    }
}

/// What the operator has observed and decided about a pool's instances.
/// Every entry only ever restricts sending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Instances out of rotation, with the reason (e.g. a DNSBL quarantine).
    pub quarantined: BTreeMap<String, String>,
    /// (DomainPolicy name, instance) pairs excluded automatically, with reason.
    pub exclusions: BTreeMap<(String, String), String>,
    /// Warm-up day (1-based) of each instance; an instance not listed is on day 1.
    pub warmup_day: BTreeMap<String, u32>,
    /// Instances whose pod is not Ready (missing, starting, failing): their
    /// submission endpoint is not ready whatever their weight. Never part
    /// of the Postfix files or the policy, so a readiness flip changes no
    /// configuration.
    pub not_ready: BTreeSet<String>,
    /// Egress IPs removed from the spec whose StatefulSet still holds a
    /// queue: rendered out of rotation and draining until the operator sees
    /// their queue empty. One whose name or address the spec lists again is
    /// ignored (the spec's entry wins).
    pub retired: Vec<EgressIP>,
    /// Instances whose address has no finished DNS check yet: out of
    /// rotation (Pending is not clean).
    pub unchecked: BTreeSet<String>,
    /// The pool is being deleted and drains: every instance takes no new
    /// mail (endpoints not ready) and retries its queue.
    pub deleting: bool,
}

/// Everything one pool's render reads.
#[derive(Clone, Copy, Debug)]
pub struct PoolInput<'a> {
    pub pool: &'a SendingPool,
    /// All DomainPolicies of the namespace; the render selects.
    pub policies: &'a [DomainPolicy],
    /// The pool's WarmupPlan, if it references one and it exists.
    pub plan: Option<&'a WarmupPlan>,
    /// All pools of the namespace (for `route.pool` and `spamRoute.pool`).
    pub pools: &'a [SendingPool],
    pub observed: &'a Observed,
}

/// One instance's rendered configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedInstance {
    /// Egress IP name.
    pub name: String,
    pub address: String,
    pub helo_name: String,
    pub node_name: Option<String>,
    pub weight: u32,
    /// Its pod was last seen Ready (see [`Observed::not_ready`]).
    pub pod_ready: bool,
    /// File name -> content, exactly as the agent installs them.
    pub files: BTreeMap<String, String>,
    pub policy: AgentPolicy,
    /// [`config_hash`] of `files`.
    pub config_hash: String,
}

/// A rendered pool.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedPool {
    pub namespace: String,
    pub name: String,
    pub instances: Vec<RenderedInstance>,
    /// Names of the DomainPolicies that selected this pool (sorted).
    pub policies: Vec<String>,
    /// Policies skipped because they are invalid, with the reason.
    pub invalid_policies: Vec<ValidationError>,
    /// Domain patterns claimed by more than one policy: (pattern, winner, loser).
    pub conflicts: Vec<(String, String, String)>,
}

impl From<UnknownPool> for RenderError {
    fn from(e: UnknownPool) -> Self {
        RenderError::Reference {
            field: e.field,
            message: format!("SendingPool {:?} not found in namespace {}", e.pool, e.namespace),
        }
    }
}

/// Why a pool cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Unsafe(#[from] UnsafeValue),
    #[error("{field}: {message}")]
    Reference { field: String, message: String },
}

/// Stable hash of a set of files (see [`crate::contract::config_hash`]: the
/// agent computes the same over what it installed, so equal hashes mean
/// Postfix runs what was rendered).
pub fn config_hash(files: &BTreeMap<String, String>) -> String {
    crate::contract::config_hash(files.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
}

fn network(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{addr}]/128"),
        _ => format!("{addr}/32"),
    }
}

fn cidr_for_postfix(c: &str) -> String {
    match c.split_once('/') {
        Some((a, l)) if a.contains(':') => format!("[{a}]/{l}"),
        _ => c.to_string(),
    }
}

/// Who may use the submission port, in Postfix notation.
struct SubmissionAccess {
    /// Relay without authentication: the private allowed networks and the
    /// hand-off sources. Never a public network.
    mynetworks: Vec<String>,
    /// With client certificates: every network that may connect at all
    /// (all allowed networks and the hand-off sources). `None`: exactly
    /// mynetworks.
    clients: Option<Vec<String>>,
}

/// The one place `submission.allowedCIDRs` is split: an entry inside the
/// private networks ([`validate::private_client_network`]) relays without
/// authentication (mynetworks); any other entry, accepted only with
/// `clientCertificates`, may connect and must present a certificate.
/// Without client certificates every entry is private (validated), so all
/// go to mynetworks.
fn submission_access(spec: &SendingPoolSpec, hand_off_sources: &[String]) -> SubmissionAccess {
    let hand_offs = hand_off_sources.iter().map(|a| network(a));
    let allowed = &spec.submission.allowed_cidrs;
    let private = allowed.iter().filter(|c| validate::private_client_network(c).is_ok());
    let mynetworks = private.map(|c| cidr_for_postfix(c)).chain(hand_offs.clone()).collect();
    let clients = spec
        .submission
        .client_certificates
        .as_ref()
        .map(|_| allowed.iter().map(|c| cidr_for_postfix(c)).chain(hand_offs).collect());
    SubmissionAccess { mynetworks, clients }
}

/// Render a pool. See the module doc for precedence.
pub fn render_pool(input: PoolInput<'_>, settings: &Settings) -> Result<RenderedPool, RenderError> {
    let with_retired = with_retired(input.pool, &input.observed.retired);
    let pool = validate::pool(with_retired.as_ref())?;
    let plan = input.plan.map(validate::valid_warmup_plan).transpose()?;
    let (policies, invalid_policies) = routing::selected_policies(input.pool, input.policies);
    let routes = routing::route_pool(&policies, pool.namespace, input.pools, &settings.cluster_domain)?;
    let shared = Shared::build(&pool, routes, &input, settings)?;
    let instances_policy = instance_policies(&pool, &policies, input);
    let mut instances = vec![];
    for ip in &pool.spec.egress_ips {
        let mut inst = render_instance(&pool, ip, &shared, &instances_policy, &policies, plan.as_ref(), settings)?;
        inst.pod_ready = !input.observed.not_ready.contains(&ip.name) && !input.observed.deleting;
        instances.push(inst);
    }
    Ok(RenderedPool {
        namespace: pool.namespace.to_string(),
        name: pool.name.to_string(),
        instances,
        policies: policies.iter().map(|p| p.name.to_string()).collect(),
        invalid_policies,
        conflicts: shared.routes.conflicts.clone(),
    })
}

/// The pool with its retired egress IPs (see [`Observed::retired`])
/// appended, disabled, so they are validated and rendered like any other
/// (their StatefulSet must stay exactly as it was while they drain).
fn with_retired<'a>(pool: &'a SendingPool, retired: &[EgressIP]) -> std::borrow::Cow<'a, SendingPool> {
    let spec = &pool.spec.egress_ips;
    let extra: Vec<EgressIP> = retired
        .iter()
        .filter(|r| !spec.iter().any(|s| s.name == r.name || s.address == r.address))
        .map(|r| EgressIP { enabled: Some(false), ..r.clone() })
        .collect();
    if extra.is_empty() {
        return std::borrow::Cow::Borrowed(pool);
    }
    let mut p = pool.clone();
    p.spec.egress_ips.extend(extra);
    std::borrow::Cow::Owned(p)
}

/// Parts identical for every instance of the pool.
struct Shared {
    routes: RoutingModel,
    /// The peer listener's recipient table (relay routes' `FILTER`s), if
    /// the pool has relay routes.
    peer_routes: Option<Table>,
    /// Egress addresses of the pools that hand mail to this one.
    hand_off_sources: Vec<String>,
    transport: Table,
    tls_policy: Table,
    header_checks: Option<String>,
}

impl Shared {
    fn build(
        pool: &ValidPool<'_>,
        routes: RoutingModel,
        input: &PoolInput<'_>,
        settings: &Settings,
    ) -> Result<Self, RenderError> {
        let mut transport = Table::new(TRANSPORT_MAP);
        for (key, value) in routes.transport_entries() {
            transport.insert(&key, &value)?;
        }
        let mut tls_policy = Table::new(TLS_POLICY_MAP);
        for (key, value) in routes.tls_entries() {
            tls_policy.insert(&key, &value)?;
        }
        let header_checks = match &pool.spec.spam_route {
            Some(s) => {
                let port = routing::submission_port(input.pools, &s.pool, pool.namespace).ok_or_else(|| {
                    RenderError::from(UnknownPool {
                        field: "spec.spamRoute.pool".into(),
                        pool: s.pool.clone(),
                        namespace: pool.namespace.to_string(),
                    })
                })?;
                let nexthop = routing::pool_nexthop(&s.pool, pool.namespace, &settings.cluster_domain, port);
                let line = format!(
                    "/^{}:[[:space:]]*{}([[:space:]]|$)/ FILTER {}:{nexthop}",
                    regex_escape(&s.header),
                    regex_escape(&s.value),
                    routing::SMTP_TRANSPORT,
                );
                if !is_safe_line(&line) {
                    return Err(UnsafeValue { place: "header_checks".into(), value: line }.into());
                }
                Some(format!("# Spam-classified mail goes to pool {}.\n{line}\n", s.pool))
            }
            None => None,
        };
        let mut peer_routes = Table::new(PEER_ROUTES_MAP);
        for (key, value) in routes.peer_filter_entries() {
            peer_routes.insert(&key, &value)?;
        }
        let peer_routes = (!peer_routes.entries().is_empty()).then_some(peer_routes);
        let hand_off_sources =
            routing::hand_off_sources(pool.name, pool.namespace, input.pools, input.policies, &settings.cluster_domain);
        Ok(Shared { routes, peer_routes, hand_off_sources, transport, tls_policy, header_checks })
    }
}

/// Every instance as the agents see it (weights, caps, exclusions).
fn instance_policies(
    pool: &ValidPool<'_>,
    policies: &[ValidDomainPolicy<'_>],
    input: PoolInput<'_>,
) -> Vec<InstancePolicy> {
    pool.spec
        .egress_ips
        .iter()
        .map(|ip| {
            let retired = input.observed.retired.iter().any(|r| r.name == ip.name)
                && !input.pool.spec.egress_ips.iter().any(|s| s.name == ip.name);
            // The one place an IP's weight is decided: the first reason
            // that applies takes it out of rotation.
            let reason = if retired {
                Some("Draining: removed from spec.egressIPs".to_string())
            } else if !ip.is_enabled() {
                Some("Disabled: spec.egressIPs[].enabled is false".to_string())
            } else if ip.is_spare() {
                Some("Spare: spec.egressIPs[].role is Spare".to_string())
            } else if let Some(r) = input.observed.quarantined.get(&ip.name) {
                Some(format!("Quarantined: {r}"))
            } else if input.observed.unchecked.contains(&ip.name) {
                Some("Pending: the address's first DNS check has not finished".to_string())
            } else {
                None
            };
            let draining = retired || !ip.is_enabled() || input.observed.deleting;
            let mut excluded: BTreeSet<String> = policies
                .iter()
                .filter(|p| p.spec.excluded_ips.iter().any(|n| n == &ip.name))
                .map(|p| p.name.to_string())
                .collect();
            for (policy, inst) in input.observed.exclusions.keys() {
                if inst == &ip.name && policies.iter().any(|p| p.name == policy) {
                    excluded.insert(policy.clone());
                }
            }
            let day = input.observed.warmup_day.get(&ip.name).copied().unwrap_or(1);
            InstancePolicy {
                name: ip.name.clone(),
                address: ip.address.clone(),
                helo_name: ip.helo_name.clone(),
                weight: if reason.is_some() { 0 } else { 1 },
                out_of_rotation_reason: reason,
                daily_cap: input.plan.and_then(|p| p.spec.cap_on_day(day)),
                excluded_rules: excluded.into_iter().collect(),
                draining,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn render_instance(
    pool: &ValidPool<'_>,
    ip: &EgressIP,
    shared: &Shared,
    instances: &[InstancePolicy],
    policies: &[ValidDomainPolicy<'_>],
    plan: Option<&ValidWarmupPlan<'_>>,
    settings: &Settings,
) -> Result<RenderedInstance, RenderError> {
    let spec = pool.spec;
    let addr: IpAddr = ip
        .address
        .parse()
        .map_err(|_| FieldError { field: "spec.egressIPs[].address".into(), message: "not an address".into() })
        .map_err(|e| ValidationError { resource: "SendingPool".into(), errors: vec![e] })?;
    let pinned = matches!(spec.egress.mode, EgressMode::HostNetwork | EgressMode::Multus);
    let r = pool.retry_seconds;

    let mut m = MainCf::default();
    m.set("compatibility_level", "3.6")?;
    m.set("myhostname", ip.helo_name.clone())?;
    m.set("mydestination", "")?;
    m.set("local_recipient_maps", "")?;
    m.set("local_transport", "error:5.1.1 local delivery is disabled")?;
    m.set("alias_maps", "")?;
    m.set("alias_database", "")?;
    m.set("relay_domains", "")?;
    m.set("notify_classes", "")?;
    m.set("biff", "no")?;
    m.set("append_dot_mydomain", "no")?;
    m.set("smtputf8_enable", "no")?;
    m.set("queue_directory", settings.queue_directory.clone())?;
    m.set("data_directory", settings.data_directory.clone())?;
    m.set("maillog_file", "/dev/stdout")?;
    if pinned {
        m.set("inet_interfaces", ip.address.clone())?;
        m.set(if addr.is_ipv4() { "smtp_bind_address" } else { "smtp_bind_address6" }, ip.address.clone())?;
        // If the egress address is gone from the node, Postfix would log a
        // warning and send from whatever address the kernel picks (the
        // node's own): defer instead (Postfix >= 3.7).
        m.set("smtp_bind_address_enforce", "yes")?;
        m.set("inet_protocols", if addr.is_ipv4() { "ipv4" } else { "ipv6" })?;
    } else {
        m.set("inet_interfaces", "all")?;
        m.set("inet_protocols", "all")?;
    }
    // Submission: only the listed client networks and the egress addresses
    // of the pools that hand mail to this one (`route.pool`, `spamRoute`;
    // one host each) may send through the pool. Set explicitly, so
    // `mynetworks_style` never adds the host's networks (with hostNetwork:
    // the node's subnet). The pool's own addresses are not listed: peers
    // relay on the peer listener, which has its own list, and a process on
    // the node connecting to a local egress address comes *from* that
    // address. Every other client is refused when it connects
    // (`smtpd_delay_reject = no` evaluates the client restrictions before
    // the banner).
    // With client certificates, public allowed networks may connect but
    // never enter mynetworks (`submission_access`).
    let access = submission_access(spec, &shared.hand_off_sources);
    m.set("mynetworks", access.mynetworks.join(" "))?;
    m.set("smtpd_delay_reject", "no")?;
    m.set("smtpd_client_restrictions", "permit_mynetworks, reject")?;
    m.set("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination")?;
    m.set("smtpd_recipient_restrictions", "permit_mynetworks, reject")?;
    m.set("smtpd_banner", "$myhostname ESMTP")?;
    // Retry schedule.
    m.set("queue_run_delay", format!("{}s", r.queue_run_delay))?;
    m.set("minimal_backoff_time", format!("{}s", r.minimal_backoff))?;
    m.set("maximal_backoff_time", format!("{}s", r.maximal_backoff))?;
    m.set("maximal_queue_lifetime", format!("{}s", r.maximal_queue_lifetime))?;
    m.set("bounce_queue_lifetime", format!("{}s", r.bounce_queue_lifetime))?;
    m.set("delay_warning_time", format!("{}s", r.delay_warning_time))?;
    // Routing: the agent first (dynamic decisions), then the static table.
    m.set(
        "transport_maps",
        format!("socketmap:unix:{}:{SOCKETMAP_NAME}, hash:$config_directory/{TRANSPORT_MAP}", settings.policy_socket),
    )?;
    // TLS.
    m.set("smtp_tls_security_level", spec.tls.security_level.as_postfix())?;
    m.set("smtp_tls_protocols", spec.tls.minimum_protocol.as_postfix())?;
    m.set("smtp_tls_mandatory_protocols", spec.tls.minimum_protocol.as_postfix())?;
    // Postfix hands both to OpenSSL (SSL_CTX_load_verify_locations): the
    // file's CAs and the directory's are trusted together. With a private
    // bundle the system CAs come from the hashed directory instead of the
    // file; the bundle's path is ours, never a name the user typed.
    match &spec.tls.trusted_ca {
        None => m.set("smtp_tls_CAfile", SYSTEM_CA_FILE)?,
        Some(_) => {
            m.set("smtp_tls_CAfile", format!("{}/{TRUSTED_CA_FILE}", settings.trusted_ca_directory))?;
            m.set("smtp_tls_CApath", SYSTEM_CA_DIRECTORY)?;
        }
    }
    m.set("smtp_tls_loglevel", "1")?;
    m.set("smtp_tls_session_cache_database", "btree:$data_directory/smtp_scache")?;
    m.set("smtp_tls_policy_maps", format!("hash:$config_directory/{TLS_POLICY_MAP}"))?;
    let dane = spec.tls.security_level == TlsLevel::Dane
        || policies.iter().any(|p| p.spec.tls.as_ref().is_some_and(|t| t.level == TlsLevel::Dane));
    if dane {
        m.set("smtp_dns_support_level", "dnssec")?;
    }
    if shared.header_checks.is_some() {
        m.set("header_checks", format!("regexp:$config_directory/{HEADER_CHECKS}"))?;
    }
    // Throttles: the pool default on `smtp`, one transport per policy.
    let mut smtp_maxproc = "-".to_string();
    if let Some(t) = &spec.default_throttle {
        throttle_params(&mut m, "smtp", t)?;
        if let Some(p) = t.processes {
            smtp_maxproc = p.to_string();
        }
    }
    for t in shared.routes.transports() {
        throttle_params(&mut m, &t.name, &t.throttle)?;
    }
    if shared.peer_routes.is_some() {
        // One recipient per hand-off to a peer: the peer's FILTER (relay
        // route, throttle transport) applies to a whole message.
        m.set(format!("{PEER_RELAY_TRANSPORT}_destination_recipient_limit"), "1")?;
    }

    // master.cf
    let mut mc = MasterCf::default();
    let listen = |port: u16| -> String { port.to_string() };
    // smtpd resolves recipients through trivial-rewrite too; if it asked
    // the agent, a paused domain would be refused at RCPT time instead of
    // queued. Listeners get their own rewrite service that reads only the
    // static table: the agent's dynamic answers apply at delivery (qmgr).
    let in_rewrite = "rewrite-in";
    let listener = |port: u16| Service::internal(&listen(port), "inet", "n", "-", "-", "smtpd");
    let mut submission = listener(spec.submission.port)
        .with("syslog_name", "postfix/submission")
        .with("rewrite_service_name", in_rewrite);
    if spec.submission.client_certificates.is_some() {
        // STARTTLS is mandatory and every client is asked for a
        // certificate. A client connects if it is in any allowed network;
        // it relays if it is in mynetworks (the private ones) or presents a
        // certificate one of the client CAs signed.
        let dir = &settings.submission_tls_directory;
        let relay = "permit_mynetworks,permit_tls_all_clientcerts,reject";
        submission = submission
            .with("smtpd_tls_security_level", "encrypt")
            .with("smtpd_tls_cert_file", format!("{dir}/{SUBMISSION_CERT_FILE}"))
            .with("smtpd_tls_key_file", format!("{dir}/{SUBMISSION_KEY_FILE}"))
            .with("smtpd_tls_mandatory_protocols", spec.tls.minimum_protocol.as_postfix())
            .with("smtpd_tls_protocols", spec.tls.minimum_protocol.as_postfix())
            .with("smtpd_tls_ask_ccert", "yes")
            .with("smtpd_tls_CAfile", format!("{}/{CLIENT_CA_FILE}", settings.client_ca_directory))
            .with("smtpd_tls_loglevel", "1")
            .with(
                "smtpd_client_restrictions",
                format!("permit_mynetworks,check_client_access,cidr:$config_directory/{SUBMISSION_CLIENTS_MAP},reject"),
            )
            .with("smtpd_relay_restrictions", relay)
            .with("smtpd_recipient_restrictions", relay);
    }
    // DKIM: submissions pass OpenDKIM (the agent runs it); peers and
    // hand-offs arrive signed by the instance that took them first.
    if let Some(d) = &spec.dkim {
        for (k, v) in crate::dkim::submission_milter(d, &settings.dkim_directory) {
            submission = submission.with(k, v);
        }
    }
    mc.push(submission);
    // Mail relayed by a peer is sent directly from here and never relayed
    // again: content_filter forces a transport, bypassing the agent's
    // transport lookups (see docs/ARCHITECTURE.md).
    let peers: Vec<String> = instances.iter().filter(|i| i.name != ip.name).map(|i| network(&i.address)).collect();
    // A FILTER from the peer_routes table overrides content_filter and
    // keeps relay-routed and throttled mail on its relay route or the
    // domain's own transport (routing::RoutingModel::peer_filter_entries).
    let peer_nets = if peers.is_empty() { network(&ip.address) } else { peers.join(",") };
    let mut peer_in = listener(settings.peer_port)
        .with("syslog_name", "postfix/peer-in")
        .with("mynetworks", peer_nets)
        .with("smtpd_client_restrictions", "permit_mynetworks,reject")
        .with("smtpd_relay_restrictions", "permit_mynetworks,reject");
    peer_in = match &shared.peer_routes {
        Some(_) => peer_in
            .with(
                "smtpd_recipient_restrictions",
                format!("check_recipient_access,texthash:$config_directory/{PEER_ROUTES_MAP},permit_mynetworks,reject"),
            )
            .with("parent_domain_matches_subdomains", PEER_PARENT_MATCHES),
        None => peer_in.with("smtpd_recipient_restrictions", "permit_mynetworks,reject"),
    };
    mc.push(
        peer_in
            .with("content_filter", format!("{}:", routing::SMTP_TRANSPORT))
            .with("rewrite_service_name", in_rewrite),
    );
    // qmgr wakes every 30 s, not Postfix's 300: a reload (every config
    // change) starts a new qmgr while the old one's deliveries are in
    // flight; it puts those messages back in `incoming` ("skipped, still
    // being delivered") and only a wakeup or new mail scans `incoming`
    // again, so with 300 s they waited five minutes after every reload.
    for (name, kind, private, wakeup, maxproc, command) in [
        ("pickup", "unix", "n", "60", "1", "pickup"),
        ("cleanup", "unix", "n", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "30", "1", "qmgr"),
        ("tlsmgr", "unix", "-", "1000?", "1", "tlsmgr"),
        ("rewrite", "unix", "-", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "1", "verify"),
        ("flush", "unix", "n", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "-", "proxymap"),
        ("proxywrite", "unix", "-", "-", "1", "proxymap"),
        ("showq", "unix", "n", "-", "-", "showq"),
        ("error", "unix", "-", "-", "-", "error"),
        ("retry", "unix", "-", "-", "-", "error"),
        ("discard", "unix", "-", "-", "-", "discard"),
        ("anvil", "unix", "-", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "1", "scache"),
        ("postlog", "unix-dgram", "n", "-", "1", "postlogd"),
    ] {
        mc.push(Service::internal(name, kind, private, wakeup, maxproc, command));
    }
    mc.push(
        Service::internal(in_rewrite, "unix", "-", "-", "-", "trivial-rewrite")
            .with("transport_maps", format!("hash:$config_directory/{TRANSPORT_MAP}")),
    );
    let smtp = Service::internal(routing::SMTP_TRANSPORT, "unix", "-", "-", &smtp_maxproc, "smtp");
    mc.push(match shared.routes.smtp_status_filter() {
        true => smtp.with("smtp_delivery_status_filter", dsn_filter::table_ref()),
        false => smtp,
    });
    mc.push(Service::internal("relay", "unix", "-", "-", "-", "smtp"));
    mc.push(
        Service::internal(PEER_RELAY_TRANSPORT, "unix", "-", "-", "-", "smtp")
            .with("syslog_name", format!("postfix/{PEER_RELAY_TRANSPORT}")),
    );
    for t in shared.routes.transports() {
        let mp = t.throttle.processes.map_or("-".to_string(), |p| p.to_string());
        let mut svc = Service::internal(&t.name, "unix", "-", "-", &mp, "smtp")
            .with("syslog_name", format!("postfix/{}", t.name));
        if t.status_filter {
            svc = svc.with("smtp_delivery_status_filter", dsn_filter::table_ref());
        }
        mc.push(svc);
    }

    let header = format!(
        "Rendered by sendfleet for SendingPool {}/{}, instance {} ({}).\nDo not edit: the sendfleet agent replaces this file on every change.",
        pool.namespace, pool.name, ip.name, ip.address
    );
    let mut files = BTreeMap::new();
    files.insert(MAIN_CF.to_string(), m.render(&header));
    files.insert(MASTER_CF.to_string(), mc.render(&header)?);
    files.insert(TRANSPORT_MAP.to_string(), shared.transport.render(&header));
    files.insert(TLS_POLICY_MAP.to_string(), shared.tls_policy.render(&header));
    if let Some(t) = &shared.peer_routes {
        files.insert(PEER_ROUTES_MAP.to_string(), t.render(&header));
    }
    if let Some(h) = &shared.header_checks {
        files.insert(HEADER_CHECKS.to_string(), format!("{}{h}", comment_block(&header)));
    }
    if let Some(clients) = access.clients {
        let mut t = Table::new(SUBMISSION_CLIENTS_MAP);
        for net in clients {
            t.insert(&net, "OK")?;
        }
        files.insert(SUBMISSION_CLIENTS_MAP.to_string(), t.render(&header));
    }
    if shared.routes.smtp_status_filter() {
        files.insert(DSN_FILTER.to_string(), dsn_filter::render(&header)?);
    }
    if let Some(d) = &spec.dkim {
        for (k, v) in crate::dkim::render(d, &settings.dkim_directory, &header)? {
            files.insert(k.to_string(), v);
        }
    }

    let agent_policy = AgentPolicy {
        version: policy::POLICY_VERSION,
        pool: format!("{}/{}", pool.namespace, pool.name),
        instance: ip.name.clone(),
        instances: instances.to_vec(),
        // Routes come one per policy, in the policies' order (route_pool):
        // the routing part from the model, pause and adaptive rules (in
        // validated seconds) from the policy.
        domains: shared
            .routes
            .routes
            .iter()
            .zip(policies)
            .map(|(route, p)| DomainRule {
                paused: p.spec.paused.clone(),
                auto_exclusion: p.auto_exclusion.clone(),
                slow_down: p.slow_down.clone(),
                ..route.domain_rule()
            })
            .collect(),
        peer_port: settings.peer_port,
        backlog_warn_seconds: pool.backlog_warn,
        backlog_critical_seconds: pool.backlog_critical,
        warmup: plan.map(|plan| WarmupPolicy {
            plan: plan.name.to_string(),
            time_zone: plan.spec.time_zone.clone(),
            shares: plan
                .spec
                .domain_shares
                .iter()
                .map(|s| WarmupShare {
                    patterns: s.domains.iter().map(|d| table_pattern(d)).collect(),
                    max_percent: s.max_percent,
                })
                .collect(),
            schedule: plan.spec.schedule(),
            pause: plan.pause.clone(),
        }),
    };
    // policy.json is part of the installed configuration: a policy change
    // is a config change, and the hash must show it.
    let policy_json = serde_json::to_string_pretty(&agent_policy).expect("policy serializes");
    files.insert(policy::POLICY_FILE.to_string(), policy_json + "\n");
    let me = instances.iter().find(|i| i.name == ip.name).expect("instance listed");
    Ok(RenderedInstance {
        name: ip.name.clone(),
        address: ip.address.clone(),
        helo_name: ip.helo_name.clone(),
        node_name: ip.node_name.clone(),
        weight: me.weight,
        pod_ready: true,
        config_hash: config_hash(&files),
        files,
        policy: agent_policy,
    })
}

fn throttle_params(m: &mut MainCf, transport: &str, t: &Throttle) -> Result<(), UnsafeValue> {
    if let Some(c) = t.connections {
        m.set(format!("{transport}_destination_concurrency_limit"), c.to_string())?;
    }
    if let Some(mpm) = t.messages_per_minute {
        // validate::messages_per_minute guarantees 60 % mpm == 0.
        m.set(format!("{transport}_destination_rate_delay"), format!("{}s", 60 / mpm.max(1)))?;
    }
    Ok(())
}

#[cfg(test)]
mod lifecycle_tests {
    //! The weight of an IP (issue 16): removed and draining, disabled,
    //! spare, quarantined and not yet checked are out of rotation.
    use super::*;

    fn pool() -> SendingPool {
        serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: ns, uid: u1}\nspec:\n  egressIPs:\n    - {name: a, address: 192.0.2.1, heloName: a.example.com}\n    - {name: b, address: 192.0.2.2, heloName: b.example.com, role: Spare}\n    - {name: c, address: 192.0.2.3, heloName: c.example.com}\n",
        )
        .unwrap()
    }

    fn render(observed: &Observed) -> RenderedPool {
        let pool = pool();
        let input = PoolInput { pool: &pool, policies: &[], plan: None, pools: &[], observed };
        render_pool(input, &Settings::default()).unwrap()
    }

    fn weights(r: &RenderedPool) -> Vec<(String, u32, bool)> {
        let a = &r.instances[0].policy;
        a.instances.iter().map(|i| (i.name.clone(), i.weight, i.draining)).collect()
    }

    #[test]
    fn pending_is_not_clean_and_a_spare_never_sends() {
        let observed = Observed { unchecked: BTreeSet::from(["c".to_string()]), ..Default::default() };
        let r = render(&observed);
        assert_eq!(
            weights(&r),
            [("a".into(), 1, false), ("b".into(), 0, false), ("c".into(), 0, false)],
            "b is a spare, c has no finished DNS check"
        );
        let c = r.instances[2].policy.this_instance().unwrap();
        assert!(c.out_of_rotation_reason.as_deref().unwrap().starts_with("Pending"), "{c:?}");
        let b = r.instances[1].policy.this_instance().unwrap();
        assert!(b.out_of_rotation_reason.as_deref().unwrap().starts_with("Spare"), "{b:?}");
    }

    #[test]
    fn a_removed_ip_is_rendered_out_of_rotation_and_draining_until_it_is_gone() {
        let old = EgressIP {
            name: "d".into(),
            address: "192.0.2.4".into(),
            helo_name: "d.example.com".into(),
            ..Default::default()
        };
        let observed = Observed { retired: vec![old.clone()], ..Default::default() };
        let r = render(&observed);
        assert_eq!(r.instances.len(), 4);
        let d = &r.instances[3];
        assert_eq!((d.name.as_str(), d.weight), ("d", 0));
        let me = d.policy.this_instance().unwrap();
        assert!(me.draining && me.out_of_rotation_reason.as_deref().unwrap().starts_with("Draining"), "{me:?}");
        assert!(d.files["main.cf"].contains("192.0.2.4"), "rendered for its own address");
        // Its peers in rotation: a and c, never the spare.
        let peers: Vec<&str> = d.policy.peers_in_rotation().map(|p| p.name.as_str()).collect();
        assert_eq!(peers, ["a", "c"]);
        // An entry the spec lists again (same address, new name) wins.
        let renamed = EgressIP { address: "192.0.2.3".into(), ..old };
        let r = render(&Observed { retired: vec![renamed], ..Default::default() });
        assert_eq!(r.instances.len(), 3);
        // A pool being deleted: everyone drains at its own weight, no endpoint ready.
        let r = render(&Observed { deleting: true, ..Default::default() });
        assert!(r.instances.iter().all(|i| !i.pod_ready && i.policy.this_instance().unwrap().draining));
        assert_eq!(r.instances[0].weight, 1);
    }
}
