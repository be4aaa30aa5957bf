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
    PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::api::{EgressMode, SendingPool, SendingPoolSpec};
use crate::render::{RenderedInstance, RenderedPool, Settings, TRUSTED_CA_FILE};

/// Label keys.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_POOL: &str = "sendfleet.io/pool";
pub const LABEL_INSTANCE: &str = "sendfleet.io/instance";
/// Annotation on each instance ConfigMap: the rendered config hash.
pub const ANNOTATION_CONFIG_HASH: &str = "sendfleet.io/config-hash";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sendfleet-operator";

/// Where things live inside an instance container.
pub const CONFIG_MOUNT: &str = "/etc/sendfleet/config";
pub const RUN_MOUNT: &str = "/run/sendfleet";
pub const HASH_KEY_MOUNT: &str = "/etc/sendfleet/hash-key";

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
        let mut m = meta(rp, format!("{}-submission", rp.name), None, owner);
        m.labels.get_or_insert_default().insert("kubernetes.io/service-name".into(), rp.name.clone());
        m.labels.get_or_insert_default().insert("endpointslice.kubernetes.io/managed-by".into(), "sendfleet.io".into());
        let v6 = rp.instances.first().is_some_and(|i| i.address.contains(':'));
        out.push(Desired::EndpointSlice(EndpointSlice {
            metadata: m,
            address_type: if v6 { "IPv6".into() } else { "IPv4".into() },
            endpoints: Some(
                rp.instances
                    .iter()
                    .filter(|i| i.address.contains(':') == v6)
                    .map(|i| Endpoint {
                        addresses: vec![i.address.clone()],
                        conditions: Some(EndpointConditions { ready: Some(i.weight > 0), ..Default::default() }),
                        hostname: Some(i.name.clone()),
                        node_name: i.node_name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("smtp".into()),
                port: Some(port as i32),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }));
    }
    out.push(Desired::Service(Service {
        metadata: meta(rp, headless_service_name(&rp.name), None, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&rp.name, None)),
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
    }));
    out
}

/// The pool's `tls.trustedCA` bundle as a read-only volume and its mount:
/// only the named key, as the file `main.cf` names
/// ([`crate::render::TRUSTED_CA_FILE`]). Not optional: a pod without its
/// bundle would defer every `verify` delivery, so it waits for the object
/// (the operator reports it missing before it renders).
fn trusted_ca_volume(spec: &SendingPoolSpec, settings: &Settings) -> Option<(Volume, VolumeMount)> {
    let ca = spec.tls.trusted_ca.as_ref()?;
    let items = Some(vec![KeyToPath { key: ca.key.clone(), path: TRUSTED_CA_FILE.into(), ..Default::default() }]);
    let volume = Volume {
        name: "trusted-ca".into(),
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
    let mount = VolumeMount {
        name: "trusted-ca".into(),
        mount_path: settings.trusted_ca_directory.clone(),
        read_only: Some(true),
        ..Default::default()
    };
    Some((volume, mount))
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
    let mut pod_meta = ObjectMeta { labels: Some(selector_labels(&rp.name, Some(&inst.name))), ..Default::default() };
    pod_meta.labels.get_or_insert_default().extend(pool_labels(&rp.name));
    if mode == EgressMode::Multus {
        if let Some(nad) = &spec.egress.network_attachment {
            let prefix = if inst.address.contains(':') { 128 } else { 32 };
            let v = serde_json::json!([{ "name": nad, "ips": [format!("{}/{prefix}", inst.address)] }]);
            pod_meta.annotations = Some([("k8s.v1.cni.cncf.io/networks".to_string(), v.to_string())].into());
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
    let container = Container {
        name: "mta".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| settings.default_image.clone())),
        image_pull_policy: Some("IfNotPresent".into()),
        // tini is PID 1: it reaps the processes Postfix orphans, which the
        // agent cannot do without racing its own child handling.
        command: Some(AGENT_COMMAND.iter().map(|s| s.to_string()).collect()),
        args: Some(vec![
            format!("--config-source={CONFIG_MOUNT}"),
            format!("--policy-socket={}", settings.policy_socket),
            // Counters live beside the queue so they survive with it.
            format!("--state-dir={}/sendfleet", settings.queue_directory),
            format!("--hash-key-file={HASH_KEY_MOUNT}/key"),
            format!(
                "--listen={}:{}",
                if host_network { inst.address.as_str() } else { "0.0.0.0" },
                settings.agent_port
            ),
        ]),
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
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            // Postfix's master starts as root, binds its ports and drops to
            // the postfix user itself; nothing else is needed.
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(
                    ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "NET_BIND_SERVICE", "KILL"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
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
                    name: "hash-key".into(),
                    mount_path: HASH_KEY_MOUNT.into(),
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
            .collect(),
        ),
        ..Default::default()
    };
    let node_selector = inst.node_name.as_ref().map(|n| [("kubernetes.io/hostname".to_string(), n.clone())].into());
    StatefulSet {
        metadata: meta(rp, name.clone(), Some(&inst.name), owner),
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
                    service_account_name: Some(service_account_name(&rp.name)),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(
                        vec![
                            Volume {
                                name: "config".into(),
                                config_map: Some(ConfigMapVolumeSource { name: name.clone(), ..Default::default() }),
                                ..Default::default()
                            },
                            Volume {
                                name: "run".into(),
                                empty_dir: Some(EmptyDirVolumeSource::default()),
                                ..Default::default()
                            },
                            Volume {
                                name: "hash-key".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(hash_key_secret_name(&rp.name)),
                                    optional: Some(true),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]
                        .into_iter()
                        .chain(trusted_ca.map(|(volume, _)| volume))
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
