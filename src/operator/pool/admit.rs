//! Step 0, admit: does the administrator allow this pool at all? A pool
//! author may ask only for what the operator's configuration allows:
//!
//! - **namespace**: pools are reconciled only in namespaces the
//!   administrator opted in, by label (`--pool-namespace-label`, chart
//!   `operator.poolNamespaceLabel`) or by name (`--pool-namespace`);
//!   neither set: every namespace;
//! - **image**: `spec.image` is the operator's `--instance-image` or one of
//!   `--allowed-instance-image` (chart `instances.allowedImages`), compared
//!   as written;
//! - **placement**: every instance pod requires the administrator's node
//!   labels (`--instance-node-selector`, chart `instances.nodeSelector`;
//!   `objects.rs` writes them into the pod), and an `egressIPs[].nodeName`
//!   must name a node that carries them.
//!
//! A pool refused here gets `Ready=False` with reason `NamespaceNotAllowed`,
//! `ImageNotAllowed` or `NodeNotAllowed` and a message naming the value and
//! where the administrator sets the list; nothing is read on its behalf
//! (no Secrets, no agents) and nothing is applied. Objects applied before a
//! limit was tightened are left as they are: refusing must not drop queued
//! mail.
//!
//! The checks are pure functions of the pool, the limits and the Namespace
//! or Node labels; [`admit`] only reads those labels (from the watch-fed
//! metadata caches). Never: read anything
//! else of a Namespace or Node, or let a pool widen a limit.

use std::collections::{BTreeMap, BTreeSet};

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use sendfleet_render::api::SendingPool;
use sendfleet_render::conditions::Reason;
use sendfleet_render::render::Settings;

use crate::operator::context::Context;
use crate::operator::error::Retry;
pub use crate::operator::limits::Limits;

/// Where the administrator sets each limit, for the messages.
const WHERE_IMAGES: &str = "operator flag --allowed-instance-image, chart value instances.allowedImages";
const WHERE_NODES: &str = "operator flag --instance-node-selector, chart value instances.nodeSelector";
const WHERE_NAMESPACES: &str =
    "operator flags --pool-namespace-label and --pool-namespace, chart values operator.poolNamespaceLabel and poolNamespaces";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("namespace {namespace:?} is not opted in for SendingPools: {how} ({WHERE_NAMESPACES})")]
    NamespaceNotAllowed { namespace: String, how: String },
    #[error("spec.image: {image:?} is not an image the administrator allows; allowed: {allowed} ({WHERE_IMAGES})")]
    ImageNotAllowed { image: String, allowed: String },
    #[error("spec.egressIPs[{instance}].nodeName: node {node:?} {problem} ({WHERE_NODES})")]
    NodeNotAllowed { instance: String, node: String, problem: String },
    #[error("spec.pod.nodeSelector: {key}={value} replaces the administrator's {key}={required} ({WHERE_NODES})")]
    NodeSelectorNotAllowed { key: String, value: String, required: String },
    #[error("reading Namespace {name:?}")]
    GetNamespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading Node {name:?}")]
    GetNode {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Error::ImageNotAllowed { .. } => "ImageNotAllowed",
            Error::NodeNotAllowed { .. } | Error::NodeSelectorNotAllowed { .. } => "NodeNotAllowed",
            Error::GetNamespace { .. } => "GetNamespace",
            Error::GetNode { .. } => "GetNode",
        }
    }

    /// The image list changes only with the operator's flags (a restart
    /// reconciles every pool); labels on namespaces and nodes may change any
    /// time, so those are looked at again.
    pub fn retry(&self) -> Retry {
        match self {
            Error::ImageNotAllowed { .. } | Error::NodeSelectorNotAllowed { .. } => Retry::OnSpecChange,
            Error::NamespaceNotAllowed { .. } | Error::NodeNotAllowed { .. } => Retry::Blocked,
            Error::GetNamespace { .. } | Error::GetNode { .. } => Retry::Transient,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::NamespaceNotAllowed { .. } => Some(Reason::NamespaceNotAllowed),
            Error::ImageNotAllowed { .. } => Some(Reason::ImageNotAllowed),
            Error::NodeNotAllowed { .. } | Error::NodeSelectorNotAllowed { .. } => Some(Reason::NodeNotAllowed),
            Error::GetNamespace { .. } | Error::GetNode { .. } => None,
        }
    }
}

/// Refuse the pool unless its namespace, image and nodes are allowed.
/// Reads the Namespace only when namespaces are opted in by label, and a
/// Node only when a node selector is set and an address names it — both
/// from the metadata caches (`crate::operator::cache`): a label change
/// wakes the pools concerned, and a refusal is retried anyway, so a cache a
/// moment behind delays an admission or refusal, it never makes one up.
pub fn admit(ctx: &Context, pool: &SendingPool) -> Result<(), Error> {
    let (limits, settings) = (&ctx.limits, &ctx.settings);
    let namespace = pool.namespace().unwrap_or_default();
    if !limits.every_namespace() && !limits.namespaces.contains(&namespace) {
        let ns = ctx.caches().namespaces.as_ref().and_then(|s| s.get(&ObjectRef::new(&namespace)));
        check_namespace(&namespace, ns.as_ref().map(|n| n.labels()), limits)?;
    }
    check_image(pool.spec.image.as_deref(), settings, limits)?;
    if let Some(pod) = &pool.spec.pod {
        check_node_selector(&pod.node_selector, &settings.node_selector)?;
    }
    if settings.node_selector.is_empty() {
        return Ok(());
    }
    let caches = ctx.caches();
    let mut seen = BTreeSet::new();
    for ip in &pool.spec.egress_ips {
        let Some(node) = ip.node_name.as_deref() else { continue };
        if !seen.insert(node) {
            continue;
        }
        let live = caches.nodes.as_ref().and_then(|s| s.get(&ObjectRef::new(node)));
        check_node(&ip.name, node, live.as_ref().map(|n| n.labels()), &settings.node_selector)?;
    }
    Ok(())
}

/// The namespace is listed, or carries the opt-in label (`labels`: `None`
/// when the Namespace was not found).
pub fn check_namespace(
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    limits: &Limits,
) -> Result<(), Error> {
    if limits.every_namespace() || limits.namespaces.contains(namespace) {
        return Ok(());
    }
    let labelled = |(k, v): &(String, String)| labels.and_then(|l| l.get(k)) == Some(v);
    if limits.namespace_label.as_ref().is_some_and(labelled) {
        return Ok(());
    }
    let how = match &limits.namespace_label {
        Some((k, v)) => format!("the administrator labels it {k}={v}"),
        None => "the administrator lists it".to_string(),
    };
    Err(Error::NamespaceNotAllowed { namespace: namespace.into(), how })
}

/// `spec.image` is absent, the default, or on the administrator's list.
pub fn check_image(image: Option<&str>, settings: &Settings, limits: &Limits) -> Result<(), Error> {
    let Some(image) = image else { return Ok(()) };
    if image == settings.default_image || limits.allowed_images.contains(image) {
        return Ok(());
    }
    let mut allowed = vec![format!("{:?} (the default)", settings.default_image)];
    allowed.extend(limits.allowed_images.iter().map(|i| format!("{i:?}")));
    Err(Error::ImageNotAllowed { image: image.into(), allowed: allowed.join(", ") })
}

/// The node exists (`labels`: `None` when it was not found) and carries
/// every label of `selector`.
pub fn check_node(
    instance: &str,
    node: &str,
    labels: Option<&BTreeMap<String, String>>,
    selector: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let refuse = |problem: String| Error::NodeNotAllowed { instance: instance.into(), node: node.into(), problem };
    let Some(labels) = labels else {
        return Err(refuse("does not exist".into()));
    };
    let missing: Vec<String> =
        selector.iter().filter(|(k, v)| labels.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(refuse(format!(
            "is not among the nodes instances may run on: it lacks {} (required: {})",
            missing.join(", "),
            format_labels(selector)
        )))
    }
}

/// The author's `spec.pod.nodeSelector` may add terms to the
/// administrator's `selector`, never give one of its keys another value
/// (the rendered pod would carry the administrator's anyway; refusing says
/// so instead of silently dropping the author's).
pub fn check_node_selector(
    author: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
) -> Result<(), Error> {
    match author.iter().find(|(k, v)| selector.get(*k).is_some_and(|r| r != *v)) {
        Some((k, v)) => {
            Err(Error::NodeSelectorNotAllowed { key: k.clone(), value: v.clone(), required: selector[k].clone() })
        }
        None => Ok(()),
    }
}

/// `k=v,k2=v2`, sorted (a `BTreeMap`'s order).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn opted_in() -> Limits {
        Limits { namespace_label: Some(("sendfleet.io/pools".into(), "enabled".into())), ..Limits::default() }
    }

    #[test]
    fn without_limits_every_namespace_and_node_is_allowed_and_only_the_default_image() {
        let (limits, settings) = (Limits::default(), Settings::default());
        check_namespace("anywhere", None, &limits).unwrap();
        check_node("a", "any-node", Some(&labels(&[])), &settings.node_selector).unwrap();
        check_image(None, &settings, &limits).unwrap();
        check_image(Some(&settings.default_image), &settings, &limits).unwrap();
        let e = check_image(Some("evil.example/root-shell:latest"), &settings, &limits).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::ImageNotAllowed));
        assert_eq!(
            e.to_string(),
            "spec.image: \"evil.example/root-shell:latest\" is not an image the administrator allows; allowed: \
             \"sendfleet:dev\" (the default) (operator flag --allowed-instance-image, chart value instances.allowedImages)"
        );
        assert_eq!(e.retry(), Retry::OnSpecChange);
    }

    #[test]
    fn a_listed_image_is_allowed_compared_as_written() {
        let limits =
            Limits { allowed_images: ["registry.example/sendfleet:1.2".to_string()].into(), ..Limits::default() };
        let settings = Settings::default();
        check_image(Some("registry.example/sendfleet:1.2"), &settings, &limits).unwrap();
        let e = check_image(Some("registry.example/sendfleet:1.3"), &settings, &limits).unwrap_err();
        assert!(e.to_string().contains("\"registry.example/sendfleet:1.2\""), "{e}");
    }

    #[test]
    fn a_namespace_needs_the_label_or_the_list() {
        let limits = opted_in();
        check_namespace("mail", Some(&labels(&[("sendfleet.io/pools", "enabled")])), &limits).unwrap();
        for l in [None, Some(labels(&[])), Some(labels(&[("sendfleet.io/pools", "disabled")]))] {
            let e = check_namespace("team-x", l.as_ref(), &limits).unwrap_err();
            assert_eq!((e.category(), e.reason()), ("NamespaceNotAllowed", Some(Reason::NamespaceNotAllowed)));
            assert_eq!(e.retry(), Retry::Blocked);
            assert!(
                e.to_string().starts_with(
                    "namespace \"team-x\" is not opted in for SendingPools: the administrator labels it sendfleet.io/pools=enabled ("
                ),
                "{e}"
            );
        }
        let listed = Limits { namespaces: ["team-x".to_string()].into(), ..opted_in() };
        check_namespace("team-x", None, &listed).unwrap();
        let only_listed = Limits { namespaces: ["mail".to_string()].into(), ..Limits::default() };
        assert!(check_namespace("team-x", Some(&labels(&[("sendfleet.io/pools", "enabled")])), &only_listed).is_err());
    }

    #[test]
    fn a_node_must_exist_and_carry_every_selector_label() {
        let selector = labels(&[("sendfleet.io/egress", "true"), ("zone", "a")]);
        check_node("a", "n1", Some(&labels(&[("sendfleet.io/egress", "true"), ("zone", "a"), ("x", "y")])), &selector)
            .unwrap();
        let e = check_node("a", "n2", Some(&labels(&[("zone", "a")])), &selector).unwrap_err();
        assert_eq!((e.reason(), e.retry()), (Some(Reason::NodeNotAllowed), Retry::Blocked));
        assert_eq!(
            e.to_string(),
            "spec.egressIPs[a].nodeName: node \"n2\" is not among the nodes instances may run on: it lacks \
             sendfleet.io/egress=true (required: sendfleet.io/egress=true,zone=a) (operator flag \
             --instance-node-selector, chart value instances.nodeSelector)"
        );
        let e = check_node("b", "gone", None, &selector).unwrap_err();
        assert!(e.to_string().contains("node \"gone\" does not exist"), "{e}");
    }

    #[test]
    fn an_authors_node_selector_adds_terms_but_never_replaces_the_administrators() {
        let admin = labels(&[("sendfleet.io/egress", "true")]);
        check_node_selector(&labels(&[("zone", "a"), ("sendfleet.io/egress", "true")]), &admin).unwrap();
        let e = check_node_selector(&labels(&[("sendfleet.io/egress", "false")]), &admin).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::NodeNotAllowed));
        assert!(e.to_string().starts_with("spec.pod.nodeSelector: sendfleet.io/egress=false replaces"), "{e}");
    }

    #[test]
    fn instance_pods_require_the_administrators_labels_and_their_node() {
        use sendfleet_render::api::DomainPolicy;
        use sendfleet_render::render::{render_pool, Observed, PoolInput};
        let pool: SendingPool = serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: mail, uid: u1}\n\
             spec:\n  egressIPs:\n    - {name: a, address: 192.0.2.1, heloName: a.example.com, nodeName: n1}\n    \
             - {name: b, address: 192.0.2.2, heloName: b.example.com}\n  \
             pod: {nodeSelector: {zone: a, sendfleet.io/egress: 'false'}}\n",
        )
        .unwrap();
        let settings = Settings { node_selector: labels(&[("sendfleet.io/egress", "true")]), ..Settings::default() };
        let policies: [DomainPolicy; 0] = [];
        let input = PoolInput {
            pool: &pool,
            policies: &policies,
            plan: None,
            pools: std::slice::from_ref(&pool),
            observed: &Observed::default(),
        };
        let rendered = render_pool(input, &settings).unwrap();
        let selectors: Vec<_> = sendfleet_render::objects::build(&pool, &rendered, &settings)
            .iter()
            .filter_map(|d| d.to_json()["spec"]["template"]["spec"]["nodeSelector"].as_object().cloned())
            .map(|m| m.into_iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            selectors,
            [
                vec!["kubernetes.io/hostname=n1".to_string(), "sendfleet.io/egress=true".into(), "zone=a".into()],
                vec!["sendfleet.io/egress=true".to_string(), "zone=a".into()],
            ]
        );
    }
}
