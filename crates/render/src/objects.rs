//! Kubernetes objects of a rendered pool, one builder per kind.
//!
//! Needs no client: names, labels and owner references are functions of the
//! pool, so the operator can server-side-apply the result and `sendfleet
//! render` can print the very same objects for review.
//!
//! Deliberately absent from the pod template: the config hash. A config
//! change must reach running Postfix by `postfix reload` (the agent watches
//! its ConfigMap), never by replacing the pod — a restart is what loses
//! in-flight mail and reputation warmth.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::api::{defaults, EgressMode, SendingPool, SendingPoolSpec};
use crate::contract::{AGENT_TOKEN_KEY, POSTFIX_CONFIG_ROOT};
use crate::render::{
    RenderedInstance, RenderedPool, Settings, CLIENT_CA_FILE, SUBMISSION_CERT_FILE, SUBMISSION_KEY_FILE,
    TRUSTED_CA_FILE,
};

/// Label keys.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_POOL: &str = "sendfleet.io/pool";
pub const LABEL_INSTANCE: &str = "sendfleet.io/instance";
/// On the Service whose endpoints expose a pool's agents' `/metrics`
/// (value `agent`): what the agents' ServiceMonitor selects.
pub const LABEL_METRICS: &str = "sendfleet.io/metrics";
/// Annotation on each instance ConfigMap: the rendered config hash.
pub const ANNOTATION_CONFIG_HASH: &str = "sendfleet.io/config-hash";
/// On each instance StatefulSet: the egress IP it was rendered for
/// (`name`, `address`, `heloName`, `nodeName` as JSON), so an instance whose
/// IP was removed from the spec can still be rendered, unchanged, while its
/// queue drains (`render::Observed::retired`).
pub const ANNOTATION_EGRESS_IP: &str = "sendfleet.io/egress-ip";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sendfleet-operator";

/// Where things live inside an instance container.
pub const CONFIG_MOUNT: &str = "/etc/sendfleet/config";
pub const RUN_MOUNT: &str = "/run/sendfleet";
pub const HASH_KEY_MOUNT: &str = "/etc/sendfleet/hash-key";
/// Where the pool's DKIM Secret (`spec.dkim.secretName`) is mounted,
/// read-only, root only (0400): the agent stages the keys for OpenDKIM.
pub const DKIM_KEYS_MOUNT: &str = "/etc/sendfleet/dkim-keys";
/// The pool's agent-token Secret, read-only: the agent's `--auth-token-file`.
pub const AGENT_TOKEN_MOUNT: &str = "/etc/sendfleet/agent-token";

/// The only capabilities the instance container keeps (all others are
/// dropped), each because Postfix fails without it. Measured on Postfix
/// 3.7 with each one removed in turn (docs/ARCHITECTURE.md, "Users and
/// privileges"): `CHOWN`, `DAC_OVERRIDE`, `FOWNER` — `post-install
/// create-missing` cannot create the queue directories on a new volume;
/// `SETUID`, `SETGID` — `postsuper` and the daemons cannot drop to the
/// `postfix` user; `NET_BIND_SERVICE` — the master cannot bind port 587 (or
/// 25); `KILL` — the master (root) signals its daemons (uid `postfix`) when
/// a reload removes a service and when it stops (nothing failed without it
/// in that run; kept so those signals are not refused).
pub const CAPABILITIES: [&str; 7] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "NET_BIND_SERVICE", "KILL"];

/// The instance container's command: tini (Debian's, in the image) as PID 1
/// starting the agent. See docs/ARCHITECTURE.md, "Postfix and the agent in one container".
pub const AGENT_COMMAND: [&str; 4] = ["tini", "--", "sendfleet", "agent"];

/// StatefulSet (and ConfigMap) name of an instance.
pub fn instance_object_name(pool: &str, instance: &str) -> String {
    format!("{pool}-{instance}")
}
/// ServiceAccount of a pool's instances.
pub fn service_account_name(pool: &str) -> String {
    format!("{pool}-instance")
}
/// Headless Service of a pool's instances.
pub fn headless_service_name(pool: &str) -> String {
    format!("{pool}-instances")
}
/// Secret with the key that hashes recipient addresses.
pub fn hash_key_secret_name(pool: &str) -> String {
    format!("{pool}-recipient-hash-key")
}
/// Secret with the bearer token the pool's agents require on /status and
/// /metrics (key `contract::AGENT_TOKEN_KEY`).
pub fn agent_token_secret_name(pool: &str) -> String {
    format!("{pool}-agent-token")
}

/// Every object a pool owns, in apply order (ServiceAccount and ConfigMaps
/// before the StatefulSets that mount them).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
// A few per pool, built once per reconcile: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Desired {
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Service(Service),
    EndpointSlice(EndpointSlice),
    StatefulSet(StatefulSet),
    PodDisruptionBudget(PodDisruptionBudget),
}

impl Desired {
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::ServiceAccount(_) => "ServiceAccount",
            Desired::ConfigMap(_) => "ConfigMap",
            Desired::Service(_) => "Service",
            Desired::EndpointSlice(_) => "EndpointSlice",
            Desired::StatefulSet(_) => "StatefulSet",
            Desired::PodDisruptionBudget(_) => "PodDisruptionBudget",
        }
    }
    pub fn name(&self) -> &str {
        let m = match self {
            Desired::ServiceAccount(o) => &o.metadata,
            Desired::ConfigMap(o) => &o.metadata,
            Desired::Service(o) => &o.metadata,
            Desired::EndpointSlice(o) => &o.metadata,
            Desired::StatefulSet(o) => &o.metadata,
            Desired::PodDisruptionBudget(o) => &o.metadata,
        };
        m.name.as_deref().unwrap_or_default()
    }
    /// The object as JSON with apiVersion and kind set (for apply and print).
    pub fn to_json(&self) -> serde_json::Value {
        use k8s_openapi::Resource;
        fn with<T: Resource + Serialize>(o: &T) -> serde_json::Value {
            let mut v = serde_json::to_value(o).expect("object serializes");
            v["apiVersion"] = T::API_VERSION.into();
            v["kind"] = T::KIND.into();
            v
        }
        match self {
            Desired::ServiceAccount(o) => with(o),
            Desired::ConfigMap(o) => with(o),
            Desired::Service(o) => with(o),
            Desired::EndpointSlice(o) => with(o),
            Desired::StatefulSet(o) => with(o),
            Desired::PodDisruptionBudget(o) => with(o),
        }
    }
}

fn pool_labels(pool: &str) -> BTreeMap<String, String> {
    [(LABEL_NAME, "sendfleet"), (LABEL_COMPONENT, "instance"), (LABEL_MANAGED_BY, FIELD_MANAGER), (LABEL_POOL, pool)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector_labels(pool: &str, instance: Option<&str>) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> =
        [(LABEL_NAME.to_string(), "sendfleet".to_string()), (LABEL_POOL.to_string(), pool.to_string())].into();
    if let Some(i) = instance {
        l.insert(LABEL_INSTANCE.into(), i.into());
    }
    l
}

/// external-dns's `DNSEndpoint` (`spec.dnsRecords.publish: DNSEndpoint`):
/// API group, version, kind and plural. A CRD sendfleet does not install.
pub const DNS_ENDPOINT_GROUP: &str = "externaldns.k8s.io";
pub const DNS_ENDPOINT_VERSION: &str = "v1alpha1";
pub const DNS_ENDPOINT_KIND: &str = "DNSEndpoint";
pub const DNS_ENDPOINT_PLURAL: &str = "dnsendpoints";

/// The pool's `DNSEndpoint`, named after the pool, labelled and owned like
/// its other objects: one endpoint per record name and type, `targets` in
/// the order given. `records`: (name without the trailing dot, type, value)
/// of every record whose value is known; a record without a value is never
/// written (external-dns would publish an empty one).
pub fn dns_endpoint(pool: &SendingPool, records: &[(&str, &str, &str)]) -> serde_json::Value {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut endpoints: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for &(dns_name, record_type, value) in records {
        match endpoints.iter_mut().find(|(n, t, _)| *n == dns_name && *t == record_type) {
            Some((_, _, targets)) => targets.push(value),
            None => endpoints.push((dns_name, record_type, vec![value])),
        }
    }
    let endpoints: Vec<serde_json::Value> = endpoints
        .into_iter()
        .map(|(n, t, targets)| serde_json::json!({"dnsName": n, "recordType": t, "targets": targets}))
        .collect();
    let mut labels = serde_json::Map::new();
    for (k, v) in [(LABEL_NAME, "sendfleet"), (LABEL_MANAGED_BY, FIELD_MANAGER), (LABEL_POOL, name.as_str())] {
        labels.insert(k.into(), v.into());
    }
    let mut metadata = serde_json::json!({"name": name, "labels": labels});
    if let Some(ns) = &pool.metadata.namespace {
        metadata["namespace"] = ns.clone().into();
    }
    if let Some(o) = owner_reference(pool) {
        metadata["ownerReferences"] = serde_json::json!([o]);
    }
    serde_json::json!({
        "apiVersion": format!("{DNS_ENDPOINT_GROUP}/{DNS_ENDPOINT_VERSION}"),
        "kind": DNS_ENDPOINT_KIND,
        "metadata": metadata,
        "spec": {"endpoints": endpoints},
    })
}

/// Owner reference to the pool (absent when the pool has no uid yet, e.g.
/// when rendering from a file).
pub fn owner_reference(pool: &SendingPool) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
        kind: "SendingPool".into(),
        name: pool.metadata.name.clone()?,
        uid: pool.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn meta(rp: &RenderedPool, name: String, instance: Option<&str>, owner: &Option<OwnerReference>) -> ObjectMeta {
    let mut labels = pool_labels(&rp.name);
    if let Some(i) = instance {
        labels.insert(LABEL_INSTANCE.into(), i.into());
    }
    ObjectMeta {
        name: Some(name),
        namespace: Some(rp.namespace.clone()),
        labels: Some(labels),
        owner_references: owner.clone().map(|o| vec![o]),
        ..Default::default()
    }
}

/// Build every object of a rendered pool.
pub fn build(pool: &SendingPool, rp: &RenderedPool, settings: &Settings) -> Vec<Desired> {
    let owner = owner_reference(pool);
    let mut out = vec![Desired::ServiceAccount(ServiceAccount {
        metadata: meta(rp, service_account_name(&rp.name), None, &owner),
        automount_service_account_token: Some(false),
        ..Default::default()
    })];
    for inst in &rp.instances {
        out.push(Desired::ConfigMap(config_map(rp, inst, &owner)));
    }
    out.extend(services(pool, rp, settings, &owner));
    for inst in &rp.instances {
        out.push(Desired::StatefulSet(stateful_set(pool, rp, inst, settings, &owner)));
    }
    out.push(Desired::PodDisruptionBudget(PodDisruptionBudget {
        metadata: meta(rp, rp.name.clone(), None, &owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(&rp.name, None)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }));
    out
}

fn config_map(rp: &RenderedPool, inst: &RenderedInstance, owner: &Option<OwnerReference>) -> ConfigMap {
    let mut m = meta(rp, instance_object_name(&rp.name, &inst.name), Some(&inst.name), owner);
    m.annotations = Some([(ANNOTATION_CONFIG_HASH.to_string(), inst.config_hash.clone())].into());
    ConfigMap { metadata: m, data: Some(inst.files.clone()), ..Default::default() }
}

fn services(
    pool: &SendingPool,
    rp: &RenderedPool,
    settings: &Settings,
    owner: &Option<OwnerReference>,
) -> Vec<Desired> {
    let port = pool.spec.submission.port;
    let host_network = pool.spec.egress.mode == EgressMode::HostNetwork;
    let smtp_port = ServicePort {
        name: Some("smtp".into()),
        port: port as i32,
        target_port: Some(IntOrString::Int(port as i32)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut out = vec![];
    // With host networking every instance binds its own egress address on
    // the same port, so pod IPs (the node's) would be wrong endpoints: the
    // submission Service has no selector and its EndpointSlice lists the
    // egress addresses of the instances in rotation.
    out.push(Desired::Service(Service {
        metadata: meta(rp, rp.name.clone(), None, owner),
        spec: Some(ServiceSpec {
            selector: (!host_network).then(|| selector_labels(&rp.name, None)),
            ports: Some(vec![smtp_port]),
            ..Default::default()
        }),
        ..Default::default()
    }));
    if host_network {
        // In rotation and its pod Ready: kube-proxy sends submissions only
        // to endpoints that can take them.
        let ready = |i: &RenderedInstance| i.weight > 0 && i.pod_ready;
        out.push(instance_slice(rp, owner, &rp.name, "submission", ("smtp", port), ready));
    }
    let headless = meta(rp, headless_service_name(&rp.name), None, owner);
    out.push(agent_port_service(headless, Some(selector_labels(&rp.name, None)), settings));
    // What Prometheus scrapes (docs/MONITORING.md): the agents where they
    // listen. With host networking that is each egress address, not the
    // pod IP (the node's), so, as for submission, the Service has no
    // selector and the operator writes its EndpointSlice: every instance,
    // hostname = its egressIPs[].name (the `egress_ip` target label).
    let agents = agents_service_name(&rp.name);
    let mut m = meta(rp, agents.clone(), None, owner);
    m.labels.get_or_insert_default().insert(LABEL_METRICS.into(), "agent".into());
    out.push(agent_port_service(m, (!host_network).then(|| selector_labels(&rp.name, None)), settings));
    if host_network {
        out.push(instance_slice(rp, owner, &agents, "agents", ("http", settings.agent_port), |i| i.pod_ready));
    }
    out
}

/// A headless Service on the agent's port (`http`), not-ready pods included.
fn agent_port_service(
    metadata: ObjectMeta,
    selector: Option<BTreeMap<String, String>>,
    settings: &Settings,
) -> Desired {
    Desired::Service(Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector,
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: settings.agent_port as i32,
                target_port: Some(IntOrString::Int(settings.agent_port as i32)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The Service the agents' ServiceMonitor selects (label
/// [`LABEL_METRICS`]`=agent`): `<pool>-agents`.
pub fn agents_service_name(pool: &str) -> String {
    format!("{pool}-agents")
}

/// An EndpointSlice `<pool>-<suffix>` for the selector-less Service
/// `service`: one endpoint per instance at its egress address (of the first
/// instance's family), hostname = the instance name, on `port`.
fn instance_slice(
    rp: &RenderedPool,
    owner: &Option<OwnerReference>,
    service: &str,
    suffix: &str,
    (port_name, port): (&str, u16),
    ready: impl Fn(&RenderedInstance) -> bool,
) -> Desired {
    let mut m = meta(rp, format!("{}-{suffix}", rp.name), None, owner);
    m.labels.get_or_insert_default().insert("kubernetes.io/service-name".into(), service.to_string());
    m.labels.get_or_insert_default().insert("endpointslice.kubernetes.io/managed-by".into(), "sendfleet.io".into());
    let v6 = rp.instances.first().is_some_and(|i| i.address.contains(':'));
    Desired::EndpointSlice(EndpointSlice {
        metadata: m,
        address_type: if v6 { "IPv6".into() } else { "IPv4".into() },
        endpoints: Some(
            rp.instances
                .iter()
                .filter(|i| i.address.contains(':') == v6)
                .map(|i| Endpoint {
                    addresses: vec![i.address.clone()],
                    conditions: Some(EndpointConditions { ready: Some(ready(i)), ..Default::default() }),
                    hostname: Some(i.name.clone()),
                    node_name: i.node_name.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    })
}

/// The pool's `tls.trustedCA` bundle as a read-only volume and its mount:
/// only the named key, as the file `main.cf` names
/// ([`crate::render::TRUSTED_CA_FILE`]). Not optional: a pod without its
/// bundle would defer every `verify` delivery, so it waits for the object
/// (the operator reports it missing before it renders).
fn trusted_ca_volume(spec: &SendingPoolSpec, settings: &Settings) -> Option<(Volume, VolumeMount)> {
    let ca = spec.tls.trusted_ca.as_ref()?;
    Some(ca_bundle_volume(ca, "trusted-ca", TRUSTED_CA_FILE, &settings.trusted_ca_directory))
}

/// The pool's DKIM Secret with `spec.dkim`: every key, 0400 (root: the
/// agent copies a selector's key to a file only the signer's user can
/// read). Optional: a missing Secret must not keep the pod (and its queued
/// mail) from starting; the agent holds new mail and reports the reason.
fn dkim_keys_volume(spec: &SendingPoolSpec) -> Option<(Volume, VolumeMount)> {
    let d = spec.dkim.as_ref()?;
    let volume = Volume {
        name: "dkim-keys".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(d.secret_name.clone()),
            default_mode: Some(0o400),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "dkim-keys".into(),
        mount_path: DKIM_KEYS_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    };
    Some((volume, mount))
}

/// The submission port's TLS files with `submission.clientCertificates`:
/// its certificate Secret (`tls.crt`, and `tls.key` readable by root only:
/// smtpd reads it before it drops privileges) and the client CA bundle.
/// Not optional either: without them STARTTLS, which is mandatory, fails.
fn submission_tls_volumes(spec: &SendingPoolSpec, settings: &Settings) -> Vec<(Volume, VolumeMount)> {
    let Some(cc) = &spec.submission.client_certificates else { return vec![] };
    let item = |key: &str, mode| KeyToPath { key: key.into(), path: key.into(), mode, ..Default::default() };
    let cert = Volume {
        name: "submission-tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(cc.server_certificate_secret_name.clone()),
            items: Some(vec![item(SUBMISSION_CERT_FILE, Some(0o444)), item(SUBMISSION_KEY_FILE, Some(0o400))]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "submission-tls".into(),
        mount_path: settings.submission_tls_directory.clone(),
        read_only: Some(true),
        ..Default::default()
    };
    vec![(cert, mount), ca_bundle_volume(&cc.trusted_ca, "client-ca", CLIENT_CA_FILE, &settings.client_ca_directory)]
}

/// A CA bundle reference as a read-only volume `name` mounted at
/// `directory`: only the named key, as the file `file` (so no user-typed
/// name reaches a Postfix file).
fn ca_bundle_volume(ca: &crate::api::TrustedCa, name: &str, file: &str, directory: &str) -> (Volume, VolumeMount) {
    let items = Some(vec![KeyToPath { key: ca.key.clone(), path: file.into(), ..Default::default() }]);
    let volume = Volume {
        name: name.into(),
        secret: ca.secret_name.as_ref().map(|n| SecretVolumeSource {
            secret_name: Some(n.clone()),
            items: items.clone(),
            ..Default::default()
        }),
        config_map: ca.config_map_name.as_ref().map(|n| ConfigMapVolumeSource {
            name: n.clone(),
            items: items.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount =
        VolumeMount { name: name.into(), mount_path: directory.into(), read_only: Some(true), ..Default::default() };
    (volume, mount)
}

/// The instance container's privileges: root (Postfix's master must start
/// as root and drops to `postfix` itself), only [`CAPABILITIES`], no
/// privilege escalation (no setuid binary is used: mail enters over SMTP,
/// never through the setgid `postdrop`), and a read-only root file system.
/// What Postfix and the agent write are volumes: the queue volume (queue,
/// `data_directory`, the agent's state), `run` (the policy socket),
/// `postfix-config` (the installed configuration generations).
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(CAPABILITIES.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    }
}

/// The pool's resources with the default requests
/// ([`defaults::INSTANCE_CPU_REQUEST`], [`defaults::INSTANCE_MEMORY_REQUEST`])
/// for each resource that names neither a request nor a limit (a limit alone
/// is also the request, and a default above it would be refused).
fn with_default_requests(resources: Option<ResourceRequirements>) -> ResourceRequirements {
    let mut r = resources.unwrap_or_default();
    for (name, default) in [("cpu", defaults::INSTANCE_CPU_REQUEST), ("memory", defaults::INSTANCE_MEMORY_REQUEST)] {
        let named = |m: &Option<BTreeMap<String, Quantity>>| m.as_ref().is_some_and(|m| m.contains_key(name));
        if !named(&r.requests) && !named(&r.limits) {
            r.requests.get_or_insert_default().insert(name.into(), Quantity(default.into()));
        }
    }
    r
}

fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
}

/// A writable `data_directory` when it is not on the queue volume (only
/// when a non-default one is configured): an emptyDir, since the root file
/// system is read-only. It is a cache (TLS sessions, master.lock).
fn data_volume(settings: &Settings) -> Option<(Volume, VolumeMount)> {
    let queue = format!("{}/", settings.queue_directory.trim_end_matches('/'));
    if settings.data_directory.starts_with(&queue) {
        return None;
    }
    let mount = VolumeMount { name: "data".into(), mount_path: settings.data_directory.clone(), ..Default::default() };
    Some((empty_dir("data"), mount))
}

/// The [`ANNOTATION_EGRESS_IP`] value of an instance.
fn egress_ip_annotation(inst: &RenderedInstance) -> String {
    let ip = crate::api::EgressIP {
        name: inst.name.clone(),
        address: inst.address.clone(),
        helo_name: inst.helo_name.clone(),
        node_name: inst.node_name.clone(),
        // Absent = enabled; the public address is not needed to drain.
        ..Default::default()
    };
    serde_json::to_string(&ip).unwrap_or_default()
}

/// The egress IP a StatefulSet was rendered for, from its
/// [`ANNOTATION_EGRESS_IP`]; `None` without one (or a malformed one: the
/// renderer validates what it gets anyway).
pub fn egress_ip_of(sts: &StatefulSet) -> Option<crate::api::EgressIP> {
    let v = sts.metadata.annotations.as_ref()?.get(ANNOTATION_EGRESS_IP)?;
    serde_json::from_str(v).ok()
}

fn stateful_set(
    pool: &SendingPool,
    rp: &RenderedPool,
    inst: &RenderedInstance,
    settings: &Settings,
    owner: &Option<OwnerReference>,
) -> StatefulSet {
    let spec = &pool.spec;
    let name = instance_object_name(&rp.name, &inst.name);
    let mode = spec.egress.mode;
    let host_network = mode == EgressMode::HostNetwork;
    let probe_host = host_network.then(|| inst.address.clone());
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            host: probe_host.clone(),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let author = spec.pod.clone().unwrap_or_default();
    // The author's labels and annotations first, the operator's over them
    // (validate.rs refuses reserved keys; this holds even without it).
    let mut pod_meta = ObjectMeta {
        labels: Some(author.labels.clone()),
        annotations: (!author.annotations.is_empty()).then(|| author.annotations.clone()),
        ..Default::default()
    };
    pod_meta.labels.get_or_insert_default().extend(selector_labels(&rp.name, Some(&inst.name)));
    pod_meta.labels.get_or_insert_default().extend(pool_labels(&rp.name));
    if mode == EgressMode::Multus {
        if let Some(nad) = &spec.egress.network_attachment {
            let prefix = if inst.address.contains(':') { 128 } else { 32 };
            let v = serde_json::json!([{ "name": nad, "ips": [format!("{}/{prefix}", inst.address)] }]);
            pod_meta
                .annotations
                .get_or_insert_default()
                .insert("k8s.v1.cni.cncf.io/networks".to_string(), v.to_string());
        }
    }
    // With hostNetwork the API server defaults hostPort = containerPort, and
    // the scheduler treats a hostPort without hostIP as 0.0.0.0: a node's
    // second instance would then be unschedulable ("didn't have free ports").
    // Each instance binds only its own egress address, so say so.
    let port = |name: &str, p: u16| ContainerPort {
        name: Some(name.into()),
        container_port: p as i32,
        protocol: Some("TCP".into()),
        host_ip: host_network.then(|| inst.address.clone()),
        ..Default::default()
    };
    let env = |n: &str, v: &str| EnvVar { name: n.into(), value: Some(v.into()), ..Default::default() };
    let trusted_ca = trusted_ca_volume(spec, settings);
    let submission_tls = submission_tls_volumes(spec, settings);
    let data = data_volume(settings);
    let dkim_keys = dkim_keys_volume(spec);
    let dkim_args = dkim_keys
        .as_ref()
        .map(|_| [format!("--dkim-keys={DKIM_KEYS_MOUNT}"), format!("--dkim-dir={}", settings.dkim_directory)]);
    let container = Container {
        name: "mta".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| settings.default_image.clone())),
        image_pull_policy: Some("IfNotPresent".into()),
        // tini is PID 1: it reaps the processes Postfix orphans, which the
        // agent cannot do without racing its own child handling.
        command: Some(AGENT_COMMAND.iter().map(|s| s.to_string()).collect()),
        args: Some(
            vec![
                format!("--config-source={CONFIG_MOUNT}"),
                format!("--policy-socket={}", settings.policy_socket),
                // Counters live beside the queue so they survive with it.
                format!("--state-dir={}/sendfleet", settings.queue_directory),
                format!("--hash-key-file={HASH_KEY_MOUNT}/key"),
                format!("--auth-token-file={AGENT_TOKEN_MOUNT}/{AGENT_TOKEN_KEY}"),
                format!(
                    "--listen={}:{}",
                    if host_network { inst.address.as_str() } else { "0.0.0.0" },
                    settings.agent_port
                ),
            ]
            .into_iter()
            .chain(dkim_args.into_iter().flatten())
            .collect(),
        ),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            env("SENDFLEET_POOL", &format!("{}/{}", rp.namespace, rp.name)),
            env("SENDFLEET_INSTANCE", &inst.name),
        ]),
        ports: Some(vec![
            port("smtp", spec.submission.port),
            port("peer", settings.peer_port),
            port("http", settings.agent_port),
        ]),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        // When the container fails, the kubelet keeps the log's tail as the
        // termination message: Postfix's own `fatal:` line (a port already
        // taken, a bad file) reaches the pool's Degraded condition.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: Some(with_default_requests(spec.resources.clone())),
        security_context: Some(container_security_context()),
        volume_mounts: Some(
            vec![
                VolumeMount {
                    name: "config".into(),
                    mount_path: CONFIG_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount { name: "run".into(), mount_path: RUN_MOUNT.into(), ..Default::default() },
                VolumeMount {
                    name: "postfix-config".into(),
                    mount_path: POSTFIX_CONFIG_ROOT.into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "hash-key".into(),
                    mount_path: HASH_KEY_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "agent-token".into(),
                    mount_path: AGENT_TOKEN_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "queue".into(),
                    mount_path: settings.queue_directory.clone(),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(trusted_ca.as_ref().map(|(_, mount)| mount.clone()))
            .chain(submission_tls.iter().map(|(_, mount)| mount.clone()))
            .chain(data.as_ref().map(|(_, mount)| mount.clone()))
            .chain(dkim_keys.as_ref().map(|(_, mount)| mount.clone()))
            .collect(),
        ),
        ..Default::default()
    };
    // The administrator's labels always, the address's node when named
    // (the operator refused a node outside those labels before rendering),
    // over the author's: an author may add terms, never replace the
    // administrator's (admit.rs refuses a pool that tries).
    let mut node_selector = author.node_selector.clone();
    node_selector.extend(inst.node_name.iter().map(|n| ("kubernetes.io/hostname".to_string(), n.clone())));
    node_selector.extend(settings.node_selector.clone());
    let node_selector = (!node_selector.is_empty()).then_some(node_selector);
    let mut metadata = meta(rp, name.clone(), Some(&inst.name), owner);
    metadata.annotations = Some([(ANNOTATION_EGRESS_IP.to_string(), egress_ip_annotation(inst))].into());
    StatefulSet {
        metadata,
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_service_name(&rp.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&rp.name, Some(&inst.name))),
                ..Default::default()
            },
            // Queues outlive the pool object: deleting a pool must not
            // delete mail. Remove the claims by hand once they are empty.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    host_network: host_network.then_some(true),
                    dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
                    node_selector,
                    affinity: author.affinity.clone(),
                    tolerations: (!author.tolerations.is_empty()).then(|| author.tolerations.clone()),
                    priority_class_name: author.priority_class_name.clone(),
                    image_pull_secrets: (!author.image_pull_secrets.is_empty())
                        .then(|| author.image_pull_secrets.clone()),
                    service_account_name: Some(service_account_name(&rp.name)),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(
                        vec![
                            Volume {
                                name: "config".into(),
                                config_map: Some(ConfigMapVolumeSource { name: name.clone(), ..Default::default() }),
                                ..Default::default()
                            },
                            empty_dir("run"),
                            empty_dir("postfix-config"),
                            Volume {
                                name: "hash-key".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(hash_key_secret_name(&rp.name)),
                                    optional: Some(true),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            // Not optional: the agent refuses to start
                            // without its token rather than serve openly.
                            // 0400: root (the agent) only, not the postfix
                            // user Postfix's daemons run as.
                            Volume {
                                name: "agent-token".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(agent_token_secret_name(&rp.name)),
                                    default_mode: Some(0o400),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]
                        .into_iter()
                        .chain(trusted_ca.map(|(volume, _)| volume))
                        .chain(submission_tls.into_iter().map(|(volume, _)| volume))
                        .chain(data.map(|(volume, _)| volume))
                        .chain(dkim_keys.map(|(volume, _)| volume))
                        .collect(),
                    ),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("queue".into()),
                    labels: Some(selector_labels(&rp.name, Some(&inst.name))),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.queue.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some([("storage".to_string(), Quantity(spec.queue.size.clone()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render_pool, Observed, PoolInput};

    fn pod_template(pod: serde_json::Value, resources: serde_json::Value) -> serde_json::Value {
        let pool: SendingPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "sendfleet.io/v1alpha1", "kind": "SendingPool",
            "metadata": {"name": "p", "namespace": "mail", "uid": "u1"},
            "spec": {
                "egressIPs": [{"name": "a", "address": "192.0.2.1", "heloName": "a.example.com"}],
                "pod": pod, "resources": resources,
            }
        }))
        .unwrap();
        let settings = Settings::default();
        let pools = [pool.clone()];
        let input = PoolInput { pool: &pool, policies: &[], plan: None, pools: &pools, observed: &Observed::default() };
        let rendered = render_pool(input, &settings).unwrap();
        // Even a reserved key that validate.rs would refuse loses to the
        // operator's: build with it added after rendering.
        let mut pool = pool;
        if let Some(pod) = pool.spec.pod.as_mut() {
            pod.labels.insert(LABEL_NAME.into(), "mine".into());
        }
        let sts = build(&pool, &rendered, &settings).into_iter().find(|d| d.kind() == "StatefulSet").unwrap();
        sts.to_json()["spec"]["template"].clone()
    }

    #[test]
    fn a_dns_endpoint_is_owned_by_its_pool_with_one_endpoint_per_name_and_type() {
        let pool: SendingPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "sendfleet.io/v1alpha1", "kind": "SendingPool",
            "metadata": {"name": "p", "namespace": "mail", "uid": "u1"},
            "spec": {"egressIPs": [{"name": "a", "address": "192.0.2.1", "heloName": "a.example.com"}]}
        }))
        .unwrap();
        let o = dns_endpoint(
            &pool,
            &[
                ("1.2.0.192.in-addr.arpa", "PTR", "a.example.com"),
                ("example.com", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
                ("example.com", "TXT", "other"),
            ],
        );
        assert_eq!(o["apiVersion"], "externaldns.k8s.io/v1alpha1");
        assert_eq!(o["kind"], "DNSEndpoint");
        assert_eq!(o["metadata"]["name"], "p");
        assert_eq!(o["metadata"]["namespace"], "mail");
        assert_eq!(o["metadata"]["labels"][LABEL_POOL], "p");
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(
            o["spec"]["endpoints"],
            serde_json::json!([
                {"dnsName": "1.2.0.192.in-addr.arpa", "recordType": "PTR", "targets": ["a.example.com"]},
                {"dnsName": "example.com", "recordType": "TXT", "targets": ["v=spf1 ip4:192.0.2.1 -all", "other"]},
            ])
        );
    }

    #[test]
    fn the_authors_pod_fields_reach_the_pod_and_the_operators_labels_win() {
        let t = pod_template(
            serde_json::json!({
                "labels": {"team": "mail"},
                "annotations": {"prometheus.io/scrape": "false"},
                "tolerations": [{"key": "dedicated", "value": "mail", "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone"}}]}},
                "priorityClassName": "mail-critical",
                "imagePullSecrets": [{"name": "registry"}],
            }),
            serde_json::Value::Null,
        );
        assert_eq!(t["metadata"]["labels"]["team"], "mail");
        assert_eq!(t["metadata"]["labels"][LABEL_NAME], "sendfleet", "the operator's label wins");
        assert_eq!(t["metadata"]["labels"][LABEL_INSTANCE], "a");
        assert_eq!(t["metadata"]["annotations"]["prometheus.io/scrape"], "false");
        let spec = &t["spec"];
        assert_eq!(spec["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
            1
        );
        assert_eq!(spec["priorityClassName"], "mail-critical");
        assert_eq!(spec["imagePullSecrets"][0]["name"], "registry");
        // Not BestEffort by default.
        let requests = &spec["containers"][0]["resources"]["requests"];
        assert_eq!((requests["cpu"].as_str(), requests["memory"].as_str()), (Some("100m"), Some("256Mi")));
    }

    #[test]
    fn a_default_request_never_exceeds_the_authors_limit() {
        let t = pod_template(
            serde_json::Value::Null,
            serde_json::json!({"limits": {"memory": "128Mi"}, "requests": {"cpu": "2"}}),
        );
        let r = &t["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"]["cpu"], "2");
        // A memory limit alone is also the request: no default beside it.
        assert!(r["requests"].get("memory").is_none(), "{r}");
        assert_eq!(r["limits"]["memory"], "128Mi");
        // Nothing set: no annotations, no tolerations written.
        assert!(t["metadata"].get("annotations").is_none() && t["spec"].get("tolerations").is_none());
    }

    #[test]
    fn the_operators_pod_labels_and_annotations_are_reserved() {
        for k in pool_labels("p").keys().chain(selector_labels("p", Some("a")).keys()) {
            assert!(crate::api::reserved_key(k, crate::api::RESERVED_POD_LABELS), "{k}");
        }
        assert!(crate::api::reserved_key("k8s.v1.cni.cncf.io/networks", crate::api::RESERVED_POD_ANNOTATIONS));
    }
}
