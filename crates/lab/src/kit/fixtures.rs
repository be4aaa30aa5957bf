//! Fixture builders for the API resources, read like sentences:
//!
//! ```
//! use sendfleet_lab::kit::{Policy, Pool};
//! let pool = Pool::named("bulk").in_ns("mail").with_ips(3).fast_retries();
//! let policy = Policy::named("bigmail").in_ns("mail").for_domains(&["bigmail.example"]).paused("maintenance");
//! assert!(pool.yaml().contains("address: 198.18.0.12"));
//! assert_eq!(policy.build().spec.paused.as_deref(), Some("maintenance"));
//! ```
//!
//! Each builder writes the YAML a user would apply (`yaml()`, for the API
//! server) and parses it into the API type (`build()`, for `render_pool`),
//! so both paths read the same text. Addresses default to documentation
//! ranges. Never: fill in defaults the API types define themselves (the
//! resource stays as small as a user's).

use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};

const API_VERSION: &str = "sendfleet.io/v1alpha1";

/// A resource's YAML: metadata, then `spec:` with `first` (already
/// indented lines) and one line per further field.
fn manifest(kind: &str, name: &str, ns: &str, labels: &[(String, String)], first: &str, spec: &[String]) -> String {
    let mut s = format!("apiVersion: {API_VERSION}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
    if !labels.is_empty() {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        s.push_str(&format!("  labels: {{{}}}\n", l.join(", ")));
    }
    s.push_str("spec:\n");
    s.push_str(first);
    for l in spec {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse ({e}):\n{yaml}"))
}

fn list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", "))
}

/// The label that opts a namespace in for pools: the chart's default
/// `operator.poolNamespaceLabel` (an operator started with it reconciles
/// pools only in namespaces carrying it).
pub const POOL_NAMESPACE_LABEL: (&str, &str) = ("sendfleet.io/pools", "enabled");

/// A Namespace manifest (to apply before the resources in it), opted in for
/// pools ([`POOL_NAMESPACE_LABEL`]).
pub fn namespace(name: &str) -> String {
    let (k, v) = POOL_NAMESPACE_LABEL;
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{k}: {v}}}\n")
}

/// Several manifests as one multi-document YAML text.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// The address block of a (namespace, pool) in this process: 0 for the
/// first one asked for, then 1, 2, ... (see [`Pool::with_ips`]; the
/// benchmarking range 198.18.0.0/15 holds 512 blocks).
fn address_block(ns: &str, pool: &str) -> u32 {
    static BLOCKS: std::sync::Mutex<std::collections::BTreeMap<(String, String), u32>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut blocks = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    let next = blocks.len() as u32;
    assert!(next < 512, "more pools than address blocks");
    *blocks.entry((ns.to_string(), pool.to_string())).or_insert(next)
}

/// A SendingPool.
#[derive(Clone, Debug)]
pub struct Pool {
    name: String,
    ns: String,
    labels: Vec<(String, String)>,
    /// (name, address, heloName)
    ips: Vec<(String, String, String)>,
    /// Further `spec` fields, one YAML line each (flow style).
    spec: Vec<String>,
}

impl Pool {
    /// A pool named `name` in namespace `default`, without egress IPs yet.
    pub fn named(name: &str) -> Pool {
        Pool { name: name.into(), ns: "default".into(), labels: vec![], ips: vec![], spec: vec![] }
    }

    pub fn in_ns(mut self, ns: &str) -> Pool {
        self.ns = ns.into();
        self
    }

    pub fn labeled(mut self, key: &str, value: &str) -> Pool {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// `n` egress IPs `ip0..` (at most 200), HELO
    /// `ip<i>.<pool>.example.com`. An address has one owner in a cluster,
    /// so every (namespace, pool) of a process gets addresses of its own
    /// (call `in_ns` first): 198.18.<k>.10.. (the benchmarking range, which
    /// no explicit `with_ip` in the tests uses), the k-th pool asked for
    /// block k, the same pool always the same addresses.
    pub fn with_ips(mut self, n: usize) -> Pool {
        assert!(n <= 200, "with_ips: at most 200 addresses per pool");
        let first = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 10)) + address_block(&self.ns, &self.name) * 256;
        for i in 0..n {
            let helo = format!("ip{i}.{}.example.com", self.name);
            let address = std::net::Ipv4Addr::from(first + i as u32);
            self.ips.push((format!("ip{i}"), address.to_string(), helo));
        }
        self
    }

    /// One egress IP `name` at `address`, HELO `<name>.<pool>.example.com`.
    pub fn with_ip(self, name: &str, address: &str) -> Pool {
        let helo = format!("{name}.{}.example.com", self.name);
        self.with_ip_helo(name, address, &helo)
    }

    pub fn with_ip_helo(mut self, name: &str, address: &str, helo: &str) -> Pool {
        self.ips.push((name.into(), address.into(), helo.into()));
        self
    }

    /// Retries every second (tests wait seconds, not the 300 s default),
    /// mail kept a day.
    pub fn fast_retries(self) -> Pool {
        self.retry("1s", "1d")
    }

    /// Retries every second; mail (and bounces) expire after `lifetime`.
    pub fn retry(self, min_backoff: &str, lifetime: &str) -> Pool {
        self.spec(&format!(
            "retry: {{queueRunDelay: {min_backoff}, minimalBackoff: {min_backoff}, maximalBackoff: 2s, \
             maximalQueueLifetime: {lifetime}, bounceQueueLifetime: {lifetime}}}"
        ))
    }

    /// The port clients submit mail to (default 587).
    pub fn submission_port(self, port: u16) -> Pool {
        self.spec(&format!("submission: {{port: {port}}}"))
    }

    /// Clients submit on `port`, from `cidrs` (besides the pool's own addresses).
    pub fn submission(self, port: u16, cidrs: &[&str]) -> Pool {
        self.spec(&format!("submission: {{port: {port}, allowedCIDRs: {}}}", list(cidrs)))
    }

    /// Queue volume of `size` from StorageClass `class`.
    pub fn queue(self, size: &str, class: &str) -> Pool {
        self.spec(&format!("queue: {{size: {size}, storageClassName: {class}}}"))
    }

    pub fn image(self, image: &str) -> Pool {
        self.spec(&format!("image: {image}"))
    }

    /// Instances bind their egress addresses on the node (`HostNetwork`).
    pub fn host_network(self) -> Pool {
        self.spec("egress: {mode: HostNetwork}")
    }

    pub fn warmup(self, plan: &str) -> Pool {
        self.spec(&format!("warmupPlanRef: {plan}"))
    }

    /// Any other `spec` field, as one YAML line (`image: x`, `queue: {size: 1Gi}`).
    pub fn spec(mut self, line: &str) -> Pool {
        self.spec.push(line.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn yaml(&self) -> String {
        let ips: String = self
            .ips
            .iter()
            .map(|(name, address, helo)| format!("    - {{name: {name}, address: {address}, heloName: {helo}}}\n"))
            .collect();
        manifest("SendingPool", &self.name, &self.ns, &self.labels, &format!("  egressIPs:\n{ips}"), &self.spec)
    }

    pub fn build(&self) -> SendingPool {
        parse(&self.yaml())
    }
}

/// A DomainPolicy (selects every pool of its namespace unless told).
#[derive(Clone, Debug)]
pub struct Policy {
    name: String,
    ns: String,
    domains: Vec<String>,
    spec: Vec<String>,
}

impl Policy {
    pub fn named(name: &str) -> Policy {
        Policy { name: name.into(), ns: "default".into(), domains: vec![], spec: vec![] }
    }

    pub fn in_ns(mut self, ns: &str) -> Policy {
        self.ns = ns.into();
        self
    }

    pub fn for_domains(mut self, domains: &[&str]) -> Policy {
        self.domains.extend(domains.iter().map(|d| d.to_string()));
        self
    }

    /// Only pools labelled `key: value`.
    pub fn selecting(self, key: &str, value: &str) -> Policy {
        self.spec(&format!("poolSelector: {{matchLabels: {{{key}: {value}}}}}"))
    }

    /// Hold the domains' mail in the queue, with the reason.
    pub fn paused(self, reason: &str) -> Policy {
        self.spec(&format!("paused: {reason:?}"))
    }

    /// Connections per IP, messages per minute, delivery processes.
    pub fn throttled(self, connections: u32, per_minute: u32, processes: u32) -> Policy {
        self.spec(&format!(
            "throttle: {{connections: {connections}, messagesPerMinute: {per_minute}, processes: {processes}}}"
        ))
    }

    /// Send the domains to `host:port` instead of their MX.
    pub fn relay(self, host: &str, port: u16) -> Policy {
        self.spec(&format!("route: {{relayHost: {host}, port: {port}}}"))
    }

    /// Never send these domains from these egress IPs (names).
    pub fn excluding(self, ips: &[&str]) -> Policy {
        self.spec(&format!("excludedIPs: {}", list(ips)))
    }

    /// An instance stops sending the domains after `hard_blocks` IP blocks
    /// within `window`, for `duration`.
    pub fn auto_exclusion(self, hard_blocks: u32, window: &str, duration: &str) -> Policy {
        self.spec(&format!("autoExclusion: {{hardBlocks: {hard_blocks}, window: {window}, duration: {duration}}}"))
    }

    /// Slow to `per_minute` after `deferrals` within `window`; recover
    /// stepwise every `recovery`.
    pub fn slow_down(self, deferrals: u32, window: &str, per_minute: u32, recovery: &str) -> Policy {
        self.spec(&format!(
            "slowDown: {{deferrals: {deferrals}, window: {window}, messagesPerMinute: {per_minute}, recoveryInterval: {recovery}}}"
        ))
    }

    /// Any other `spec` field, as one YAML line.
    pub fn spec(mut self, line: &str) -> Policy {
        self.spec.push(line.into());
        self
    }

    pub fn yaml(&self) -> String {
        let domains: Vec<&str> = self.domains.iter().map(String::as_str).collect();
        manifest("DomainPolicy", &self.name, &self.ns, &[], &format!("  domains: {}\n", list(&domains)), &self.spec)
    }

    pub fn build(&self) -> DomainPolicy {
        parse(&self.yaml())
    }
}

/// A WarmupPlan.
#[derive(Clone, Debug)]
pub struct Plan {
    name: String,
    ns: String,
    steps: Vec<(u32, u64)>,
    spec: Vec<String>,
}

impl Plan {
    pub fn named(name: &str) -> Plan {
        Plan { name: name.into(), ns: "default".into(), steps: vec![], spec: vec![] }
    }

    pub fn in_ns(mut self, ns: &str) -> Plan {
        self.ns = ns.into();
        self
    }

    /// From `day` on, at most `daily_cap` messages a day.
    pub fn step(mut self, day: u32, daily_cap: u64) -> Plan {
        self.steps.push((day, daily_cap));
        self
    }

    /// Days roll at midnight in `zone` (IANA name).
    pub fn time_zone(self, zone: &str) -> Plan {
        self.spec(&format!("timeZone: {zone}"))
    }

    /// At most `max_percent` of a day's cap to `domains`.
    pub fn share(self, domains: &[&str], max_percent: u32) -> Plan {
        self.spec(&format!("domainShares: [{{domains: {}, maxPercent: {max_percent}}}]", list(domains)))
    }

    /// Hold the step when deferrals or bounces exceed these percentages
    /// over `window` (at least `min_messages` attempts).
    pub fn pause(self, max_deferral_percent: u32, max_bounce_percent: u32, window: &str, min_messages: u32) -> Plan {
        self.spec(&format!(
            "pause: {{maxDeferralPercent: {max_deferral_percent}, maxBouncePercent: {max_bounce_percent}, \
             window: {window}, minMessages: {min_messages}}}"
        ))
    }

    pub fn spec(mut self, line: &str) -> Plan {
        self.spec.push(line.into());
        self
    }

    pub fn yaml(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|(d, c)| format!("{{day: {d}, dailyCap: {c}}}")).collect();
        manifest("WarmupPlan", &self.name, &self.ns, &[], &format!("  steps: [{}]\n", steps.join(", ")), &self.spec)
    }

    pub fn build(&self) -> WarmupPlan {
        parse(&self.yaml())
    }
}
