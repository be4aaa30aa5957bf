//! The permissions the operator uses, and nothing more.
//!
//! This list is the contract with the Helm chart's ClusterRole/Role: a test
//! renders the chart and fails if it grants anything not listed here, and
//! the operator's integration tests run under exactly these permissions (as
//! the chart's ServiceAccount), which proves the list is enough.

/// One RBAC rule: API group, resource (with subresource), verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const WATCH: &[&str] = &["get", "list", "watch"];
/// Server-side apply is a `patch`, and a `create` when the object does not
/// exist yet; `delete` prunes objects no longer desired.
const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Cluster-wide rules (ClusterRole): the operator watches every namespace.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule { group: "sendfleet.io", resource: "sendingpools", verbs: WATCH },
    Rule { group: "sendfleet.io", resource: "domainpolicies", verbs: WATCH },
    Rule { group: "sendfleet.io", resource: "warmupplans", verbs: WATCH },
    Rule { group: "sendfleet.io", resource: "sendingpools/status", verbs: &["get", "patch"] },
    Rule { group: "sendfleet.io", resource: "domainpolicies/status", verbs: &["get", "patch"] },
    Rule { group: "sendfleet.io", resource: "warmupplans/status", verbs: &["get", "patch"] },
    // Owner references with blockOwnerDeletion need update on the owner's
    // finalizers subresource (OwnerReferencesPermissionEnforcement).
    Rule { group: "sendfleet.io", resource: "sendingpools/finalizers", verbs: &["update"] },
    Rule { group: "", resource: "configmaps", verbs: OWN },
    Rule { group: "", resource: "services", verbs: OWN },
    Rule { group: "", resource: "serviceaccounts", verbs: OWN },
    // The recipient-hash key: created once per pool, never read back; get
    // also checks a `tls.trustedCA` Secret (pool/dereference.rs).
    Rule { group: "", resource: "secrets", verbs: &["get", "create"] },
    Rule { group: "", resource: "pods", verbs: WATCH },
    Rule { group: "", resource: "events", verbs: &["create", "patch"] },
    Rule { group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
    Rule { group: "apps", resource: "statefulsets", verbs: OWN },
    Rule { group: "policy", resource: "poddisruptionbudgets", verbs: OWN },
    Rule { group: "discovery.k8s.io", resource: "endpointslices", verbs: OWN },
];

/// Rules in the operator's own namespace (Role): the leader-election Lease.
pub const NAMESPACE_RULES: &[Rule] =
    &[Rule { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "update"] }];
