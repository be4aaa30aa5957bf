//! Step 1, dereference: read what the pool refers to — the namespace's
//! DomainPolicies (the render selects), the other pools of the namespace
//! (route targets), the pool's WarmupPlan (these three from the watch-fed
//! caches, `crate::operator::cache`: no API request), and live the Secret or
//! ConfigMap of its CA bundles (`spec.tls.trustedCA`,
//! `spec.submission.clientCertificates.trustedCA`), and whether the
//! submission certificate's Secret exists.
//!
//! A WarmupPlan the pool names but that does not exist stops the pipeline
//! here: `Ready=False` with reason `MissingReference`, retried (the plan's
//! creation also triggers a reconcile). So does a CA bundle that is
//! missing, lacks its key or holds no PEM certificate, and a missing
//! submission certificate Secret: instances mounting them would wait for
//! the volume, or defer every `verify` delivery. Nothing here interprets a
//! spec beyond that; a bundle's content is read, checked and dropped, never
//! copied or logged, and of the certificate Secret only its metadata is
//! read (never its private key).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use sendfleet_render::api::{DomainPolicy, SendingPool, TrustedCa, WarmupPlan};
use sendfleet_render::conditions::Reason;
use sendfleet_render::validate;

use crate::operator::context::Context;
use crate::operator::error::Retry;

/// What the pool refers to.
#[derive(Clone, Debug)]
pub struct Refs {
    pub namespace: String,
    pub name: String,
    /// Every DomainPolicy of the namespace.
    pub policies: Vec<DomainPolicy>,
    /// Every SendingPool of the namespace, this one included.
    pub pools: Vec<SendingPool>,
    /// The pool's WarmupPlan, if it names one.
    pub plan: Option<WarmupPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the SendingPool has no namespace")]
    NoNamespace,
    #[error("listing the DomainPolicies of namespace {namespace}")]
    ListPolicies {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the SendingPools of namespace {namespace}")]
    ListPools {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading WarmupPlan {name:?}")]
    GetWarmupPlan {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("spec.warmupPlanRef: WarmupPlan {name:?} not found in namespace {namespace}")]
    MissingWarmupPlan { name: String, namespace: String },
    #[error("reading {kind} {name:?} ({field})")]
    GetReference {
        field: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{field}: {kind} {name:?} {problem}")]
    Reference { field: &'static str, kind: &'static str, name: String, problem: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoNamespace => "NoNamespace",
            Error::ListPolicies { .. } => "ListDomainPolicies",
            Error::ListPools { .. } => "ListSendingPools",
            Error::GetWarmupPlan { .. } => "GetWarmupPlan",
            Error::GetReference { kind: "Secret", .. } => "GetSecret",
            Error::GetReference { .. } => "GetConfigMap",
            Error::MissingWarmupPlan { .. } | Error::Reference { .. } => "MissingReference",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::NoNamespace => Retry::OnSpecChange,
            Error::MissingWarmupPlan { .. } | Error::Reference { .. } => Retry::MissingReference,
            _ => Retry::Transient,
        }
    }

    /// The reason `Ready=False` shows, when the pool's status should say.
    pub fn reason(&self) -> Option<Reason> {
        matches!(self, Error::MissingWarmupPlan { .. } | Error::Reference { .. }).then_some(Reason::MissingReference)
    }
}

pub async fn dereference(ctx: &Context, pool: &SendingPool) -> Result<Refs, Error> {
    let client = &ctx.client;
    let namespace = pool.namespace().ok_or(Error::NoNamespace)?;
    let caches = ctx.caches();
    let in_ns = |meta: &kube::api::ObjectMeta| meta.namespace.as_deref() == Some(namespace.as_str());
    // Sorted by name, as a LIST returns them: the render must not depend on
    // a store's order (a different order must never look like a change).
    let mut policies: Vec<DomainPolicy> =
        caches.policies.state().iter().filter(|p| in_ns(&p.metadata)).map(|p| (**p).clone()).collect();
    policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // This pool as the controller handed it (the cache may not hold this
    // very version yet), with the namespace's other pools from the cache.
    let mut pools: Vec<SendingPool> = caches
        .pools
        .state()
        .iter()
        .filter(|p| in_ns(&p.metadata) && p.metadata.name != pool.metadata.name)
        .map(|p| (**p).clone())
        .collect();
    pools.push(pool.clone());
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let plan = match &pool.spec.warmup_plan_ref {
        None => None,
        Some(name) => Some(
            caches
                .plans
                .get(&ObjectRef::new(name).within(&namespace))
                .map(|p| (*p).clone())
                .ok_or_else(|| Error::MissingWarmupPlan { name: name.clone(), namespace: namespace.clone() })?,
        ),
    };
    // CA bundles and the certificate Secret are read live: Secrets are not
    // cached (that would need `list` on every Secret), and only pools that
    // name them pay the reads.
    if let Some(ca) = &pool.spec.tls.trusted_ca {
        check_trusted_ca(client, &namespace, "spec.tls.trustedCA", ca).await?;
    }
    if let Some(cc) = &pool.spec.submission.client_certificates {
        check_trusted_ca(client, &namespace, "spec.submission.clientCertificates.trustedCA", &cc.trusted_ca).await?;
        check_server_certificate(client, &namespace, &cc.server_certificate_secret_name).await?;
    }
    Ok(Refs { namespace, name: pool.name_any(), policies, pools, plan })
}

/// Read a CA bundle's object (`field` names the reference) and check it
/// holds the key with at least one PEM certificate. A reference the renderer will refuse
/// (invalid name or key, or not exactly one object named) is not read: the
/// render step reports it as `InvalidSpec`.
async fn check_trusted_ca(
    client: &kube::Client,
    namespace: &str,
    field: &'static str,
    ca: &TrustedCa,
) -> Result<(), Error> {
    if validate::data_key(&ca.key).is_err() {
        return Ok(());
    }
    let (kind, name) = match (&ca.secret_name, &ca.config_map_name) {
        (Some(n), None) => ("Secret", n),
        (None, Some(n)) => ("ConfigMap", n),
        _ => return Ok(()),
    };
    if validate::object_name(name).is_err() {
        return Ok(());
    }
    let get = |source| Error::GetReference { field, kind, name: name.clone(), source };
    let data: Option<Option<Vec<u8>>> = if kind == "Secret" {
        Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(get)?
            .map(|s| s.data.and_then(|mut d| d.remove(&ca.key)).map(|b| b.0))
    } else {
        Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(name).await.map_err(get)?.map(|c| {
            c.data
                .and_then(|mut d| d.remove(&ca.key))
                .map(String::into_bytes)
                .or_else(|| c.binary_data.and_then(|mut d| d.remove(&ca.key)).map(|b| b.0))
        })
    };
    let problem = match data {
        None => format!("not found in namespace {namespace}"),
        Some(None) => format!("has no key {:?}", ca.key),
        Some(Some(bytes)) => match pem_certificates(&bytes) {
            0 => format!("key {:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", ca.key),
            _ => return Ok(()),
        },
    };
    Err(Error::Reference { field, kind, name: name.clone(), problem })
}

/// The submission certificate's Secret exists (metadata only: its key is
/// for the pod, not the operator). An invalid name is left to the render.
async fn check_server_certificate(client: &kube::Client, namespace: &str, name: &str) -> Result<(), Error> {
    const FIELD: &str = "spec.submission.clientCertificates.serverCertificateSecretName";
    if validate::object_name(name).is_err() {
        return Ok(());
    }
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(name)
        .await
        .map_err(|source| Error::GetReference { field: FIELD, kind: "Secret", name: name.to_string(), source })?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::Reference {
            field: FIELD,
            kind: "Secret",
            name: name.to_string(),
            problem: format!("not found in namespace {namespace}"),
        }),
    }
}

/// How many complete PEM certificate blocks `bundle` holds.
fn pem_certificates(bundle: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bundle);
    let mut count = 0;
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        rest = &rest[start..];
        match rest.find("-----END CERTIFICATE-----") {
            Some(end) => {
                count += 1;
                rest = &rest[end..];
            }
            None => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_certificates_counts_complete_blocks_only() {
        let one = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(one.as_bytes()), 1);
        assert_eq!(pem_certificates(format!("# lab CA\n{one}{one}").as_bytes()), 2);
        assert_eq!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n"), 0, "a cut-off block");
        assert_eq!(pem_certificates(b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"), 0);
        assert_eq!(pem_certificates(b""), 0);
    }

    #[test]
    fn a_bad_bundle_is_a_missing_reference_naming_the_object() {
        let e = Error::Reference {
            field: "spec.tls.trustedCA",
            kind: "Secret",
            name: "lab-ca".into(),
            problem: "has no key \"ca.crt\"".into(),
        };
        assert_eq!(
            (e.category(), e.retry(), e.reason()),
            ("MissingReference", Retry::MissingReference, Some(Reason::MissingReference))
        );
        assert_eq!(e.to_string(), "spec.tls.trustedCA: Secret \"lab-ca\" has no key \"ca.crt\"");
    }
}
