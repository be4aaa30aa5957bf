//! The permissions the operator uses, and nothing more.
//!
//! This list is the contract with the Helm chart's ClusterRole/Roles: a test
//! renders the chart and fails if it grants anything not listed here, and
//! the operator's integration tests run under exactly these permissions (as
//! the chart's ServiceAccount), which proves the list is enough.
//!
//! Three sets: cluster-scoped reads (always a ClusterRole), the rights in
//! the namespaces holding pools ([`POOL_NAMESPACE_RULES`]: a ClusterRole
//! when every namespace is watched, a Role in the watched namespace when
//! `--watch-namespace` is set, so Secrets are then readable nowhere else),
//! and the leader-election Lease in the operator's own namespace.

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

/// Cluster-scoped rights (always the ClusterRole): the labels of a pool's
/// Namespace (opt-in) and of a Node an egress address names (placement),
/// read by `pool/admit.rs` as metadata only (from metadata-only watches,
/// `cache.rs`, hence list and watch); the egress address claims.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule { group: "", resource: "namespaces", verbs: WATCH },
    Rule { group: "", resource: "nodes", verbs: WATCH },
    // The cluster-wide lock on each egress address (cluster-scoped, so
    // always here, whatever the watched namespace): created (never
    // patched: the create is the lock) and released by the operator.
    // Namespace users get no rights on claims.
    Rule {
        group: "sendfleet.io",
        resource: "egressaddressclaims",
        verbs: &["get", "list", "watch", "create", "delete"],
    },
];

/// Rights in the namespaces whose pools the operator reconciles: the
/// ClusterRole's when every namespace is watched, a Role's in the watched
/// namespace otherwise ([`cluster_role`], [`watched_namespace_role`]).
pub const POOL_NAMESPACE_RULES: &[Rule] = &[
    // patch: the drain finalizer on the pool's metadata (pool/finalize.rs).
    Rule { group: "sendfleet.io", resource: "sendingpools", verbs: &["get", "list", "watch", "patch"] },
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
    // list, watch: the StatefulSet controller's FailedCreate Events say why
    // an instance has no pod (pool/observe.rs, cached by cache.rs).
    Rule { group: "", resource: "events", verbs: &["create", "patch", "list", "watch"] },
    Rule { group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
    Rule { group: "apps", resource: "statefulsets", verbs: OWN },
    // The queue claim of a drained, removed instance (pool/drain.rs).
    Rule { group: "", resource: "persistentvolumeclaims", verbs: &["delete"] },
    Rule { group: "policy", resource: "poddisruptionbudgets", verbs: OWN },
    Rule { group: "discovery.k8s.io", resource: "endpointslices", verbs: OWN },
    // The pool's external-dns DNSEndpoint (`spec.dnsRecords`,
    // pool/publish.rs): read, applied (create, patch) and deleted by name;
    // not watched (the CRD may not be installed), so no list or watch.
    Rule { group: "externaldns.k8s.io", resource: "dnsendpoints", verbs: &["get", "create", "patch", "delete"] },
];

/// Rules in the operator's own namespace (Role): the leader-election Lease.
pub const NAMESPACE_RULES: &[Rule] =
    &[Rule { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "update"] }];

/// The ClusterRole's rules for `watch_namespace` (empty: every namespace).
pub fn cluster_role(watch_namespace: &str) -> Vec<Rule> {
    let mut rules = CLUSTER_RULES.to_vec();
    if watch_namespace.is_empty() {
        rules.extend_from_slice(POOL_NAMESPACE_RULES);
    }
    rules
}

/// The rules of the Role in the watched namespace (none when every
/// namespace is watched: the ClusterRole holds them).
pub fn watched_namespace_role(watch_namespace: &str) -> Vec<Rule> {
    if watch_namespace.is_empty() {
        Vec::new()
    } else {
        POOL_NAMESPACE_RULES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_watched_namespace_no_namespaced_right_is_cluster_wide() {
        let everywhere = cluster_role("");
        assert!(everywhere.iter().any(|r| r.resource == "secrets"));
        assert!(watched_namespace_role("").is_empty());
        let narrowed = cluster_role("mail");
        assert_eq!(narrowed, CLUSTER_RULES, "only cluster-scoped rights stay cluster-wide");
        // Cluster-scoped kinds only: Namespace and Node metadata, and the
        // egress address claims (a Role cannot grant those).
        for r in &narrowed {
            match r.resource {
                "namespaces" | "nodes" => assert_eq!(r.verbs, ["get", "list", "watch"]),
                "egressaddressclaims" => assert!(!r.verbs.contains(&"patch") && !r.verbs.contains(&"update")),
                other => panic!("namespaced right {other} cluster-wide"),
            }
        }
        assert_eq!(watched_namespace_role("mail"), POOL_NAMESPACE_RULES);
    }
}
