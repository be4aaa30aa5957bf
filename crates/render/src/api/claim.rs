//! `EgressAddressClaim`: the cluster-wide lock on one egress address.
//!
//! An egress address is the unit of sending reputation and is bound on a
//! node: two pools sending from it, or one receiving the other's submissions
//! through its Service, must never happen, whatever namespaces they live in.
//! The operator therefore *creates* (never applies) one cluster-scoped claim
//! per address, named by [`claim_name`], before it writes anything for that
//! address. The API server's name uniqueness is the lock: of two pools
//! creating the claim at the same moment exactly one create succeeds, and
//! the claim outlives operator restarts because it is an API object.
//!
//! The name is derived from the address *value* (parsed with
//! [`std::net::IpAddr`], IPv4-mapped IPv6 folded to IPv4), never from the
//! text a user typed, so no other spelling of an address can take a second
//! lock on it.
//!
//! Data and name derivation only: no I/O. Who creates and releases claims is
//! `src/operator/pool/claim.rs` and `src/operator/claims.rs`.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the
// repeated keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::net::IpAddr;

use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The label that carries the owning pool's uid on a claim (one LIST finds
/// a pool's claims).
pub const LABEL_CLAIM_POOL_UID: &str = "sendfleet.io/pool-uid";

/// The lock on one egress address, held by one SendingPool. Created by the
/// operator before anything is written for the address; deleted by the
/// operator once the pool is gone or no longer lists the address. Cluster
/// administrators may read and delete claims; namespace users get no rights
/// on them.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sendfleet.io",
    version = "v1alpha1",
    kind = "EgressAddressClaim",
    shortname = "eac",
    category = "sendfleet",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address", description = "The claimed address"),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.pool.namespace",
        description = "Namespace of the owning SendingPool"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.pool.name",
        description = "The owning SendingPool"
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
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete the claim to release the address"))]
#[serde(rename_all = "camelCase")]
pub struct EgressAddressClaimSpec {
    /// The claimed address, in canonical form.
    #[schemars(length(min = 2, max = 39))]
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self)").message("must be an IPv4 or IPv6 address in canonical form"))]
    pub address: String,
    /// The SendingPool that owns the address.
    pub pool: ClaimOwner,
}

/// The owning pool, by uid: a pool deleted and created again under the same
/// name is another pool and claims again.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct ClaimOwner {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub uid: String,
}

impl std::fmt::Display for ClaimOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The address value a claim locks: IPv4-mapped IPv6 (`::ffff:a.b.c.d`)
/// is the IPv4 address it maps.
pub fn normalize(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The claim's object name for an address: IPv4 as its four decimal parts
/// joined by `-` (`10-250-1-11`); IPv6 as its eight groups, four lowercase
/// hex digits each, joined by `-` (`2001-0db8-0000-…-0001`). Both are
/// DNS-1123 labels, and the two shapes (4 parts, 8 parts) cannot collide.
pub fn claim_name(ip: IpAddr) -> String {
    match normalize(ip) {
        IpAddr::V4(v4) => v4.octets().map(|o| o.to_string()).join("-"),
        IpAddr::V6(v6) => v6.segments().map(|s| format!("{s:04x}")).join("-"),
    }
}

/// [`claim_name`] of an address written as text; `None` if it is no
/// address (such a pool is refused by validation before anything is
/// written).
pub fn claim_name_of(address: &str) -> Option<String> {
    address.parse::<IpAddr>().ok().map(claim_name)
}

/// Do two address texts name the same address?
pub fn same_address(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => normalize(a) == normalize(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        claim_name_of(s).unwrap()
    }

    #[test]
    fn ipv4_names_are_the_dotted_parts_joined_by_dashes() {
        assert_eq!(name("10.250.1.11"), "10-250-1-11");
        assert_eq!(name("192.0.2.1"), "192-0-2-1");
    }

    #[test]
    fn every_spelling_of_an_address_takes_the_same_lock() {
        // std refuses leading zeros in IPv4 (`10.000.0.1`): such a text
        // never reaches a claim (validation refuses it first), and cannot
        // name a second lock either.
        assert_eq!(claim_name_of("10.000.0.1"), None);
        assert_eq!(name("::ffff:10.0.0.1"), name("10.0.0.1"), "IPv4-mapped IPv6 is the IPv4 address");
        assert_eq!(name("::ffff:a00:1"), name("10.0.0.1"));
        let v6 = ["2001:db8::1", "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8:0:0::0:1"];
        for s in v6 {
            assert_eq!(name(s), "2001-0db8-0000-0000-0000-0000-0000-0001", "{s}");
        }
        assert!(same_address("2001:DB8::1", "2001:db8::0:1"));
        assert!(same_address("::ffff:192.0.2.1", "192.0.2.1"));
        assert!(!same_address("192.0.2.1", "192.0.2.2"));
        assert!(!same_address("x", "x"), "a non-address names nothing");
    }

    #[test]
    fn names_are_dns_labels_and_distinct_per_address() {
        let addrs = ["0.0.0.1", "255.255.255.254", "::1", "fe80::", "::", "2001:db8::", "1:2:3:4:5:6:7:8"];
        let mut seen = std::collections::BTreeSet::new();
        for a in addrs {
            let n = name(a);
            assert!(n.len() <= 63, "{n}");
            assert!(n.starts_with(|c: char| c.is_ascii_alphanumeric()), "{n}");
            assert!(n.ends_with(|c: char| c.is_ascii_alphanumeric()), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-'), "{n}");
            assert!(seen.insert(n), "{a}: two addresses, one name");
        }
        // The IPv4 shape (4 parts) and the IPv6 shape (8 parts) never meet.
        assert_eq!(name("0.0.0.1").split('-').count(), 4);
        assert_eq!(name("::1").split('-').count(), 8);
    }
}
