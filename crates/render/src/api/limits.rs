//! Every limit of the API, defined once: name lengths, value patterns, and
//! the CEL rules built from them.
//!
//! A limit is enforced twice on purpose — by the API server (OpenAPI
//! `pattern`/`maxLength` and CEL in the CRD) and by [`crate::validate`],
//! which never trusts that admission ran — but it is *written* once, here:
//! the schema attributes, the CEL rule strings (generated with `format!`)
//! and the validator all name these constants, so the CRD regex and the
//! Rust check cannot drift.
//!
//! Data and string building only: no I/O.

/// Longest egress IP name: it is part of StatefulSet, ConfigMap and Postfix
/// names, which have their own limits.
pub const MAX_INSTANCE_NAME: usize = 30;
/// Longest DomainPolicy name: it becomes a master.cf service name
/// (`dp-<name>-slow`).
pub const MAX_POLICY_NAME: usize = 40;
/// Longest SendingPool name (it prefixes Service names, DNS-1035 labels).
pub const MAX_POOL_NAME: usize = 40;
/// `<pool>-<instance>` names a StatefulSet, whose name may not exceed 52
/// (the controller appends a revision hash to it in pod labels).
pub const MAX_STATEFULSET_NAME: usize = 52;
/// A DNS label / Kubernetes object name used as a reference.
pub const MAX_LABEL: usize = 63;
/// A DNS name.
pub const MAX_DNS_NAME: usize = 253;
/// Longest duration text (`123456w` and a spare).
pub const MAX_DURATION_LEN: usize = 8;
/// Longest `paused` reason (it ends up in a deferral text).
pub const MAX_REASON: usize = 200;
/// Characters of a `paused` reason: none that mean something to Postfix tables.
pub const REASON_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9 .,:;()_/-]*$";
/// Shortest DNSBL check interval (`reputation.interval`): the lists rate-limit
/// clients that ask more often.
pub const MIN_REPUTATION_INTERVAL_SECONDS: u64 = 60;
/// Throttle `connections`.
pub const MAX_CONNECTIONS: u32 = 100;
/// Throttle `processes` (master.cf maxproc).
pub const MAX_PROCESSES: u32 = 200;
/// Throttle and slow-down `messagesPerMinute`: Postfix spaces deliveries by
/// whole seconds, so a rate is exact only when it divides 60.
pub const MAX_MESSAGES_PER_MINUTE: u32 = SECONDS_PER_MINUTE;
/// Postfix's rate delay is whole seconds: a per-minute rate must divide this.
pub const SECONDS_PER_MINUTE: u32 = 60;
/// What the API server and the renderer say when a `messagesPerMinute` does
/// not divide [`SECONDS_PER_MINUTE`].
pub const MESSAGES_PER_MINUTE_MESSAGE: &str =
    "must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60): Postfix spaces deliveries by whole seconds";

/// CEL (on a `messagesPerMinute`): the rate divides a minute in whole seconds.
pub fn cel_divides_minute() -> String {
    format!("self > 0 && {SECONDS_PER_MINUTE} % self == 0")
}
/// `autoExclusion.hardBlocks`, `slowDown.deferrals`: answers in a window.
pub const MAX_ANSWERS_IN_WINDOW: u32 = 10_000;
/// Warm-up daily caps (`steps[].dailyCap`, `ramp.start`, `ramp.ceiling`).
pub const MAX_DAILY_CAP: u64 = 100_000_000;
/// Warm-up `ramp.growthPercent`.
pub const MAX_GROWTH_PERCENT: u32 = 1000;
/// Longest warm-up schedule (`steps[].day`); the agent follows no further.
pub const MAX_WARMUP_DAYS: u32 = 3650;
/// Most domain patterns in one DomainPolicy.
pub const MAX_DOMAINS: usize = 200;

/// CEL for an egress address (on `egressIPs[].address`): an address an
/// EndpointSlice may list and mail may leave from — not unspecified,
/// loopback, link-local, multicast or the IPv4 broadcast address. The
/// renderer checks the same set (`validate::egress_address`).
pub const CEL_EGRESS_ADDRESS: &str = "!isIP(self) || ip(self).isGlobalUnicast()";
/// CEL (on `egressIPs`): no public address twice in a pool.
pub const CEL_PUBLIC_ADDRESSES_UNIQUE: &str = "self.all(a, !has(a.publicAddress) || self.exists_one(b, has(b.publicAddress) && b.publicAddress == a.publicAddress))";
/// What the API server and the renderer say when [`CEL_EGRESS_ADDRESS`]
/// refuses an address.
pub const EGRESS_ADDRESS_MESSAGE: &str = "must be a global unicast address: not unspecified, loopback, link-local (169.254.0.0/16, fe80::/10), multicast or broadcast (an EndpointSlice cannot list it)";

/// Regex (OpenAPI `pattern`) for a duration in Postfix syntax, above zero: a
/// whole number followed by one unit, `s`econds, `m`inutes, `h`ours, `d`ays
/// or `w`eeks (`300s`, `4h`, `5d`). Postfix itself accepts a bare number
/// too, with a per-parameter default unit; requiring the unit keeps the
/// meaning obvious.
pub const DURATION_PATTERN: &str = "^([1-9][0-9]{0,5})[smhdw]$";
/// The same, where zero is meaningful (`0h`: off).
pub const DURATION_OR_ZERO_PATTERN: &str = "^(0|[1-9][0-9]{0,5})[smhdw]$";

/// Regex for a DNS name (lowercase, at least two labels, LDH labels, A-labels
/// for internationalised names). Refuses look-alike Unicode by construction.
pub const DNS_NAME_PATTERN: &str = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Regex for a destination domain pattern: a DNS name, optionally prefixed by
/// `*.` to mean "every subdomain" (the name itself is not included).
pub const DOMAIN_PATTERN_PATTERN: &str =
    "^(\\*\\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Regex for a Kubernetes object name (a DNS-1123 subdomain: Secrets,
/// ConfigMaps, nodes, StorageClasses): dot-separated labels of at most 63
/// characters each — exactly what `validate::object_name` accepts (a DNS
/// name or one label), so the API server refuses what the renderer does
/// (`a..b` too). The length (253) is the field's `maxLength`.
pub const OBJECT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";

/// Regex for a key of a Secret's or ConfigMap's data: what the API server
/// accepts, less keys starting with `..` (the kubelet's own names in a
/// volume). The key only picks a file of the volume; it never reaches a
/// Postfix file.
pub const DATA_KEY_PATTERN: &str = "^\\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$";
/// Longest Secret or ConfigMap data key.
pub const MAX_DATA_KEY: usize = 253;

/// Regex for a DNS-1123 label of at most `max` characters (`max` >= 2).
pub fn label_pattern(max: usize) -> String {
    format!("^[a-z0-9]([-a-z0-9]{{0,{}}}[a-z0-9])?$", max - 2)
}

/// Regex for a SendingPool name: a label of at most [`MAX_POOL_NAME`]
/// characters that starts with a letter (Service names are DNS-1035).
pub fn pool_name_pattern() -> String {
    format!("^[a-z]([-a-z0-9]{{0,{}}}[a-z0-9])?$", MAX_POOL_NAME - 2)
}

/// A regex as a CEL string literal (single quotes, backslashes doubled).
pub fn cel_regex(pattern: &str) -> String {
    format!("'{}'", pattern.replace('\\', "\\\\"))
}

/// CEL: every entry of a list of domain patterns is one.
pub fn cel_all_domain_patterns() -> String {
    format!("self.all(d, size(d) <= {MAX_DNS_NAME} && d.matches({}))", cel_regex(DOMAIN_PATTERN_PATTERN))
}

/// CEL: every entry of a list is a DNS name (`var` names the entry).
pub fn cel_all_dns_names(var: &str) -> String {
    format!("self.all({var}, {var}.matches({}) && size({var}) <= {MAX_DNS_NAME})", cel_regex(DNS_NAME_PATTERN))
}

/// CEL: a single value is a DNS name or an IP address in canonical form
/// (as `validate::ip_address` wants it).
pub fn cel_ip_or_dns_name() -> String {
    format!("(isIP(self) && ip.isCanonical(self)) || self.matches({})", cel_regex(DNS_NAME_PATTERN))
}

/// CEL (on WarmupPlan `steps`): days strictly increasing — sorted, and no
/// day twice (the renderer reads the steps in order).
pub const CEL_STEPS_INCREASING: &str =
    "self.map(s, s.day).isSorted() && self.all(s, self.filter(t, t.day == s.day).size() == 1)";

/// CEL (top level of a SendingPool): a spam route names another pool.
pub const CEL_SPAM_ROUTE_ELSEWHERE: &str =
    "!has(self.spec.spamRoute) || self.spec.spamRoute.pool != self.metadata.name";

/// CEL: every entry of a list is an egress IP name.
pub fn cel_all_instance_names() -> String {
    format!("self.all(n, n.matches({}))", cel_regex(&label_pattern(MAX_INSTANCE_NAME)))
}

/// CEL (top level): the object's name is a valid SendingPool name.
pub fn cel_pool_name() -> String {
    format!("self.metadata.name.matches({})", cel_regex(&pool_name_pattern()))
}

/// CEL (top level): pool name + `-` + every egress IP name fits a
/// StatefulSet name.
pub fn cel_statefulset_names() -> String {
    format!("self.spec.egressIPs.all(e, size(self.metadata.name) + size(e.name) <= {})", MAX_STATEFULSET_NAME - 1)
}

/// CEL (top level): the object's name is a valid DomainPolicy name.
pub fn cel_policy_name() -> String {
    format!("self.metadata.name.matches({})", cel_regex(&label_pattern(MAX_POLICY_NAME)))
}

/// Pod label keys the operator sets itself (`objects.rs`) and a pool may
/// not set: they select the instance pods. Plus every key under
/// [`RESERVED_KEY_PREFIX`].
pub const RESERVED_POD_LABELS: &[&str] =
    &["app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/managed-by"];
/// Pod annotation keys the operator sets itself (Multus mode).
pub const RESERVED_POD_ANNOTATIONS: &[&str] = &["k8s.v1.cni.cncf.io/networks"];
/// sendfleet's own label and annotation keys.
pub const RESERVED_KEY_PREFIX: &str = "sendfleet.io/";
/// What the API server and the renderer say of a reserved pod label.
pub const RESERVED_POD_LABELS_MESSAGE: &str = "the operator sets app.kubernetes.io/name, app.kubernetes.io/component, app.kubernetes.io/managed-by and sendfleet.io/ labels itself";
/// What the API server and the renderer say of a reserved pod annotation.
pub const RESERVED_POD_ANNOTATIONS_MESSAGE: &str =
    "the operator sets k8s.v1.cni.cncf.io/networks and sendfleet.io/ annotations itself";

/// Whether a pod label or annotation key is the operator's (`reserved`:
/// [`RESERVED_POD_LABELS`] or [`RESERVED_POD_ANNOTATIONS`]).
pub fn reserved_key(key: &str, reserved: &[&str]) -> bool {
    key.starts_with(RESERVED_KEY_PREFIX) || reserved.contains(&key)
}

/// CEL (on a map of labels or annotations): no key is reserved.
pub fn cel_no_reserved_keys(reserved: &[&str]) -> String {
    let list: Vec<String> = reserved.iter().map(|k| format!("'{k}'")).collect();
    format!("self.all(k, !k.startsWith('{RESERVED_KEY_PREFIX}') && !(k in [{}]))", list.join(", "))
}

/// The networks a submission client may come from without an
/// authentication method (`submission.allowedCIDRs`): ranges that are never
/// routed on the Internet, so no stranger can reach the pool from them.
/// RFC 1918 private, RFC 6598 shared (CGNAT, used by some pod networks),
/// loopback, the RFC 5737 documentation networks (the test kit's addresses),
/// IPv6 unique-local (RFC 4193), loopback and documentation (RFC 3849).
/// An entry must lie inside one of them: one that merely overlaps (e.g.
/// `10.0.0.0/7`, `0.0.0.0/0`) contains public space and is refused.
pub const PRIVATE_CLIENT_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "fc00::/7",
    "::1/128",
    "2001:db8::/32",
];

/// CEL (on `submission`): client certificates are configured, or every
/// allowed CIDR lies inside one of [`PRIVATE_CLIENT_NETWORKS`]. Entries
/// that are not CIDRs are left to the list's own rule (which names them).
pub fn cel_private_client_networks() -> String {
    let nets: Vec<String> = PRIVATE_CLIENT_NETWORKS.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "has(self.clientCertificates) || !has(self.allowedCIDRs) || self.allowedCIDRs.all(c, !isCIDR(c) || [{}].exists(p, cidr(p).containsCIDR(cidr(c))))",
        nets.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_patterns_read_as_written_before() {
        assert_eq!(label_pattern(MAX_LABEL), "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$");
        assert_eq!(label_pattern(MAX_INSTANCE_NAME), "^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$");
        assert_eq!(pool_name_pattern(), "^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$");
        assert_eq!(cel_regex("^a\\.b$"), "'^a\\\\.b$'");
        assert_eq!(
            cel_statefulset_names(),
            "self.spec.egressIPs.all(e, size(self.metadata.name) + size(e.name) <= 51)"
        );
    }
}
