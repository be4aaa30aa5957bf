//! The seed incidents (../shared/seeds, issue 14), replayed on the lab's
//! real node: the chart's operator as a pod, instance pods from the image
//! `make image` built (hostNetwork, queues on the node's local volumes),
//! names resolved through the lab's DNS server as a production node's pods
//! resolve them (MX, then A; the kubelet's resolv.conf), and simulated
//! providers that are real Postfix receivers whose answers change on cue.
//!
//! Each test builds its incident in a namespace of its own (own pool, own
//! egress addresses `10.250.<k>.1x`, own providers `10.251.<k>.x`, own
//! domains `*.i<k>.test`) and then asserts, with no step a person would take
//! in between, on three witnesses: what the receivers logged (their own
//! logs are the ground truth), what the resources' status says, and what
//! the agents' metrics say. The tests run in parallel on one lab (one node,
//! one operator); most of their time is spent waiting for Postfix's queue
//! runs, not on the CPU.
//!
//! Everything stays inside the test binary's network namespace
//! (hack/netns-run): every address here exists only on its `lo`. Never
//! skips: a missing image, tool or binary is a panic saying what to run.

mod e2e_support;
mod operator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use operator_support::get_json;
use sendfleet_lab::demo::{self, IMAGE, OP_NS};
use sendfleet_lab::dns::{merge_zones, mx_zones, MxProvider};
use sendfleet_lab::kit::{
    add_addr, documents, inject, namespace, require_postfix, wait_for_or, Dns, Plan, Policy, Pool,
};
use sendfleet_lab::pki::MailCa;
use sendfleet_lab::receiver::Cue;
use sendfleet_lab::{ControlPlane, Receiver};
use serde_json::Value;

/// The agents' HTTP port on each egress address (hostNetwork).
const AGENT_PORT: u16 = sendfleet_render::contract::AGENT_HTTP_PORT;
/// Where the test submits from: the egress addresses' own /16.
const CLIENTS: &str = "10.250.0.0/16";
/// The DNSBL zone incident `k`'s pools consult (lists what its test adds;
/// one per incident, since a test replaces its zone's whole text).
fn bl_zone(k: u8) -> String {
    format!("bl{k}.incidents.test")
}
/// How many incidents the zones and providers are built for.
const INCIDENTS: u8 = 9;
/// Retries every few seconds: the incidents wait for queue runs, not for
/// Postfix's production back-off.
const FAST_RETRIES: &str = "retry: {queueRunDelay: 5s, minimalBackoff: 5s, maximalBackoff: 10s}";

// ---------------------------------------------------------------- the lab

struct Lab {
    cp: &'static ControlPlane,
    dns: Dns,
}

/// The one lab of this test binary: node, image, DNS, the chart's operator.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        require_postfix();
        let t0 = Instant::now();
        let archive = e2e_support::image_archive();
        let cp = ControlPlane::shared();
        cp.ensure_node(32).expect("lab node");
        cp.import_image(&archive, Some(demo::IMAGE_BASE)).expect("importing the sendfleet image");
        let dns = Dns::serve(sendfleet_lab::DNS_SERVER, zones());
        demo::install_operator(cp).expect("the chart's operator");
        eprintln!("incidents: lab, node, image, DNS and operator in {:.1}s", t0.elapsed().as_secs_f64());
        Lab { cp, dns }
    })
}

/// Every incident's DNS: its providers' MX and A records, the egress
/// addresses' PTR and A (FCrDNS), the sending domains' SPF, and the
/// (empty at start) DNSBL zone.
fn zones() -> BTreeMap<String, String> {
    let mut z: BTreeMap<String, String> = BTreeMap::new();
    let mut reverse = String::new();
    for k in 1..=INCIDENTS {
        let ps = providers(k);
        let domains: Vec<Vec<&str>> = ps.iter().map(|p| p.domains.iter().map(String::as_str).collect()).collect();
        let mx: Vec<MxProvider> = ps
            .iter()
            .zip(&domains)
            .map(|(p, d)| MxProvider { name: &p.name, mx_host: &p.host, addr: &p.addr, domains: d })
            .collect();
        merge_zones(&mut z, mx_zones(&mx));
        let mut records = String::new();
        for i in 1..=3u8 {
            records.push_str(&format!("mta{i} IN A 10.250.{k}.1{i}\n"));
            reverse.push_str(&format!("1{i}.{k} IN PTR mta{i}.i{k}.test.\n"));
        }
        // The sending domain publishes SPF for the pool's own addresses,
        // and receives its bounces at the incident's first provider.
        records.push_str(&format!("app IN TXT \"v=spf1 ip4:10.250.{k}.0/24 -all\"\n"));
        records.push_str(&format!("app IN MX 10 {}.\n", ps[0].host));
        records.push_str("_dmarc.app IN TXT \"v=DMARC1; p=reject\"\n");
        merge_zones(&mut z, BTreeMap::from([(format!("i{k}.test"), records)]));
    }
    z.insert("250.10.in-addr.arpa".into(), reverse);
    for k in 1..=INCIDENTS {
        z.insert(bl_zone(k), String::new());
    }
    // The cluster DNS's part (CoreDNS in a cluster): Service names, filled
    // in by the incident that hands mail to a pool's Service.
    z.insert("cluster.local".into(), String::new());
    z
}

/// A simulated provider of incident `k`: one MX host for its domains.
struct Provider {
    k: u8,
    name: String,
    host: String,
    addr: String,
    domains: Vec<String>,
}

fn provider(k: u8, n: u8, name: &str, domains: &[&str]) -> Provider {
    Provider {
        k,
        name: format!("i{k}-{name}"),
        host: format!("mx.{name}.i{k}.test"),
        addr: format!("10.251.{k}.1{n}"),
        domains: domains.iter().map(|d| format!("{d}.i{k}.test")).collect(),
    }
}

/// The providers each incident talks to (the zones and the tests read
/// the same table).
fn providers(k: u8) -> Vec<Provider> {
    match k {
        1 => vec![provider(1, 0, "bigmail", &["bigmail", "bigmail-alias", "workspace-customer"])],
        2 => vec![provider(2, 0, "slowmail", &["slowmail"])],
        3 => vec![provider(3, 0, "tlsmail", &["tlsmail"]), provider(3, 1, "partner", &["partner"])],
        4 => vec![provider(4, 0, "mail", &["mail"])],
        5 => vec![provider(5, 0, "carefulmail", &["carefulmail"])],
        6 => vec![
            provider(6, 0, "big", &["d0", "d1", "d2", "d3", "d4"]),
            provider(6, 1, "other", &["d5", "d6", "d7", "d8", "d9"]),
        ],
        7 => vec![provider(7, 0, "mail", &["mail"]), provider(7, 1, "victims", &["victims"])],
        8 => vec![provider(8, 0, "mail", &["mail"]), provider(8, 1, "relay", &["partner"])],
        9 => vec![provider(9, 0, "mail", &["expiring", "fine"])],
        _ => vec![],
    }
}

impl Provider {
    /// Start this provider's receiver; it also takes the incident's
    /// bounces (`app.i<k>.test`).
    fn start(&self) -> Receiver {
        let app = format!("app.i{}.test", self.k);
        let domains: Vec<&str> = self.domains.iter().map(String::as_str).chain([app.as_str()]).collect();
        Receiver::start_temp(&self.name, &self.addr, &domains, &[]).expect("starting a provider")
    }

    /// [`Provider::start`], STARTTLS required (TLS 1.2 floor) with a
    /// certificate for the MX host from the lab's mail CA.
    fn start_tls(&self) -> Receiver {
        let rx = self.start();
        rx.require_tls(MailCa::shared().expect("the lab's mail CA"), &[&self.host]).expect("TLS on the provider");
        rx
    }
}

// ------------------------------------------------------------ an incident

/// One incident's namespace, pool(s) and helpers to read what happened.
struct Incident {
    k: u8,
    ns: String,
    cp: &'static ControlPlane,
    t0: Instant,
}

impl Incident {
    fn new(k: u8, name: &str) -> Incident {
        let lab = lab();
        let ns = format!("i{k}-{name}");
        lab.cp.apply(&namespace(&ns)).expect("namespace");
        Incident { k, ns, cp: lab.cp, t0: Instant::now() }
    }

    fn addr(&self, i: u8) -> String {
        format!("10.250.{}.1{i}", self.k)
    }

    /// A pool of `n` hostNetwork instances mta1..n on this incident's
    /// addresses, fast retries, the incident's DNSBL zone.
    fn pool(&self, name: &str, n: u8) -> Pool {
        self.pool_on(name, 1..=n).spec(FAST_RETRIES)
    }

    /// A pool of instances `ips` (no retry settings: the caller's).
    fn pool_on(&self, name: &str, ips: impl Iterator<Item = u8>) -> Pool {
        let mut pool = Pool::named(name)
            .in_ns(&self.ns)
            .host_network()
            .image(IMAGE)
            .queue("256Mi", sendfleet_lab::STORAGE_CLASS)
            .submission(587, &[CLIENTS])
            .spec(&format!("reputation: {{zones: [{}], coolDown: 40s}}", bl_zone(self.k)))
            // Nine incidents' instances (~25) share the lab node's 2 CPUs:
            // the default request (100m) would leave some unschedulable.
            .spec("resources: {requests: {cpu: 20m, memory: 64Mi}}");
        for i in ips {
            // On a real node the egress addresses are the node's own.
            add_addr(&self.addr(i));
            pool = pool.with_ip_helo(&format!("mta{i}"), &self.addr(i), &format!("mta{i}.i{}.test", self.k));
        }
        pool
    }

    fn policy(&self, name: &str, domains: &[&str]) -> Policy {
        let domains: Vec<String> = domains.iter().map(|d| format!("{d}.i{}.test", self.k)).collect();
        let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
        Policy::named(name).in_ns(&self.ns).for_domains(&domains)
    }

    fn domain(&self, d: &str) -> String {
        format!("{d}.i{}.test", self.k)
    }

    fn sender(&self) -> String {
        format!("app@app.i{}.test", self.k)
    }

    fn apply(&self, docs: &[String]) {
        self.cp.apply(&documents(docs)).unwrap_or_else(|e| panic!("applying incident {}: {e}", self.k));
    }

    fn get(&self, kind: &str, name: &str) -> Value {
        get_json(self.cp, &[kind, name, "-n", &self.ns]).unwrap_or_default()
    }

    /// Wait until the pool's `n` instances are Ready and run the
    /// configuration rendered with the incident's DomainPolicies (a pod can
    /// start on the one rendered before the operator saw them).
    fn wait_ready(&self, pool: &str, n: usize) {
        let want = format!("{n}/{n}");
        self.wait(&format!("pool {pool} {want} ready"), 240, || {
            (self.get("sendingpool", pool)["status"]["readyInstances"] == want.as_str()).then_some(())
        });
        let v = self.get("sendingpool", pool);
        for i in v["spec"]["egressIPs"].as_array().into_iter().flatten() {
            let addr = i["address"].as_str().unwrap_or("");
            if let Err(e) = sendfleet_lab::receiver::wait_banner(addr, 587, Duration::from_secs(5)) {
                let ss = std::process::Command::new("ss")
                    .arg("-ltnp")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                panic!("pool {pool} Ready but {addr}:587 does not answer: {e}\n{ss:?}\n{}", self.diagnose());
            }
        }
        self.wait_applied(pool);
    }

    /// Wait until every instance of the pool runs the configuration the
    /// operator rendered last (a ConfigMap change reaches a pod's volume
    /// within the kubelet's sync period, up to a minute or so).
    fn wait_applied(&self, pool: &str) {
        self.wait(&format!("pool {pool}'s instances on the rendered configuration"), 180, || {
            let v = self.get("sendingpool", pool);
            let all = v["status"]["instances"].as_array()?;
            all.iter()
                .all(|i| !i["desiredConfigHash"].is_null() && i["appliedConfigHash"] == i["desiredConfigHash"])
                .then_some(())
        });
    }

    fn wait<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        wait_for_or(&format!("incident {}: {what}", self.k), Duration::from_secs(secs), f, || self.diagnose())
    }

    /// Submit `count` messages to distinct recipients `<n>local@domain`
    /// through instance `i`'s submission port.
    fn submit(&self, i: u8, local: &str, domain: &str, count: u32) {
        inject(&self.addr(i), 587, &self.sender(), &format!("{local}@{domain}"), count, 4, true);
    }

    /// The pool status of instance `name`.
    fn instance(&self, pool: &str, name: &str) -> Value {
        let v = self.get("sendingpool", pool);
        v["status"]["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// Sum of an agent metric over instances `ips`, over the series whose
    /// labels contain every `label="value"` of `filter`.
    fn metric(&self, ips: &[u8], name: &str, filter: &[&str]) -> f64 {
        let tokens = self.agent_tokens();
        ips.iter()
            .map(|i| {
                // /metrics wants the token of the instance's pool: the one that gets a 200.
                let body = tokens
                    .iter()
                    .find_map(|t| {
                        let r = sendfleet_lab::kit::http_get_as(&self.addr(*i), AGENT_PORT, "/metrics", Some(t));
                        r.ok().filter(|(code, _)| *code == 200).map(|(_, body)| body)
                    })
                    .unwrap_or_default();
                metric_sum(&body, name, filter)
            })
            .sum()
    }

    /// The agent tokens of this incident's pools (their `<pool>-agent-token` Secrets).
    fn agent_tokens(&self) -> Vec<String> {
        use base64::Engine;
        let secrets = get_json(self.cp, &["secrets", "-n", &self.ns]).unwrap_or_default();
        let key = sendfleet::core::contract::AGENT_TOKEN_KEY;
        secrets["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-agent-token")))
            .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s["data"][key].as_str()?).ok())
            .filter_map(|b| String::from_utf8(b).ok())
            .collect()
    }

    fn condition(&self, kind: &str, name: &str, ty: &str) -> Value {
        let v = self.get(kind, name);
        v["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == ty).cloned())
            .unwrap_or_default()
    }

    fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn diagnose(&self) -> String {
        let mut s = String::new();
        for args in [
            &["get", "pods", "-n", &self.ns, "-o", "wide"][..],
            &["get", "sendingpools,domainpolicies,warmupplans", "-n", &self.ns, "-o", "yaml"],
            &["get", "events", "-n", &self.ns, "--sort-by=.lastTimestamp"],
            &["logs", "-n", OP_NS, "-l", "app.kubernetes.io/component=operator", "--tail=30"],
        ] {
            let out = self.cp.kubectl_run(args).unwrap_or_else(|e| e.to_string());
            s.push_str(&format!("$ kubectl {}\n{}\n", args.join(" "), tail(&out, 200)));
        }
        // Each instance's own account: the redacted mail log on stdout and
        // the agent's decisions on stderr, interleaved as the kubelet kept them.
        let pods = self.cp.kubectl_run(&["get", "pods", "-n", &self.ns, "-o", "name"]).unwrap_or_default();
        for pod in pods.lines() {
            let args = ["logs", "-n", &self.ns, pod, "--tail=40"];
            let out = self.cp.kubectl_run(&args).unwrap_or_else(|e| e.to_string());
            s.push_str(&format!("$ kubectl {}\n{}\n", args.join(" "), out));
        }
        s
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sum of the samples of `name` (exact metric name) whose label set
/// contains each of `filter` (`key="value"`).
fn metric_sum(text: &str, name: &str, filter: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && filter.iter().all(|f| labels.contains(f))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Distinct accepted recipients and the total (a duplicate is a recipient
/// accepted twice).
fn distinct(r: &Receiver) -> (usize, usize) {
    let d = r.deliveries();
    let set: BTreeSet<&str> = d.accepted.iter().map(|(rcpt, _)| rcpt.as_str()).collect();
    (set.len(), d.total())
}

// -------------------------------------------------------------- incidents

/// Seed 000: a provider blocks one egress IP.
#[test]
fn incident_1_a_provider_blocks_one_ip_for_every_domain_behind_its_mx() {
    let inc = Incident::new(1, "block");
    let p = &providers(1)[0];
    let rx = p.start();
    let blocked = inc.addr(1);
    rx.set_client(&blocked, Cue::Blocked).unwrap();
    // One DomainPolicy names one of the provider's domains; the other two
    // share its MX host (an alias and a hosted customer domain, as Gmail
    // hosts Workspace domains).
    // The exclusion engages at the third block; at 30 a minute the blocks
    // come 2 s apart, so the first blocked message must not be due for its
    // retry 5 s later (FAST_RETRIES), before the agent has read the third
    // block from the log: that retry would go out from the blocked IP again.
    // A 20 s backoff leaves the log pipeline 15 s, not 1.
    // The exclusion lasts 4 minutes: long enough for all mail of both
    // rounds to leave through the peers on a loaded machine. When it
    // expires, mail still queued on mta1 is tried from it again (that is
    // the design: the provider may have lifted the block), so a shorter
    // one would make "never twice" depend on the machine's speed.
    inc.apply(&[
        inc.pool_on("pool", 1..=3).spec("retry: {queueRunDelay: 5s, minimalBackoff: 20s, maximalBackoff: 30s}").yaml(),
        inc.policy("bigmail", &["bigmail"]).auto_exclusion(3, "5m", "4m").throttled(4, 30, 4).yaml(),
    ]);
    inc.wait_ready("pool", 3);

    let per_domain = 20u32;
    for d in &p.domains {
        inc.submit(1, "u", d, per_domain);
    }
    let total = per_domain as usize * p.domains.len();
    inc.wait(&format!("{total} messages at the provider"), 240, || (rx.deliveries().total() >= total).then_some(()));
    let d = rx.deliveries();
    let by_client = d.by_client();
    assert_eq!(by_client.get(&blocked), None, "nothing accepted from the blocked IP: {by_client:?}");
    assert_eq!(distinct(&rx), (total, total), "each message delivered once");
    for d in &p.domains {
        assert_eq!(rx.deliveries().to_domain(d), per_domain as usize, "{d}");
    }

    // Excluded for the policy's rule, reported in the DomainPolicy status.
    let excl = inc.get("domainpolicy", "bigmail")["status"]["exclusions"].clone();
    let mine = excl.as_array().and_then(|a| a.iter().find(|e| e["instance"] == "mta1").cloned()).unwrap_or_default();
    assert_eq!(mine["automatic"], true, "mta1's automatic exclusion in the DomainPolicy status: {excl}");
    let reason = mine["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&format!("MX {}", p.host)), "provider-wide, naming the MX host: {reason}");
    // Domains in no policy behind the same MX left mta1 through peers
    // because of it (the agent's own lookup counts).
    let mx_wide = inc.metric(&[1], "sendfleet_agent_policy_lookups_total", &["reason=\"ExcludedMx\""]);
    assert!(mx_wide > 0.0, "lookups sent to a peer because the MX host excluded mta1: {mx_wide}");
    // Postfix resolves a message's transport when it enters the active
    // queue, so the messages already there when the exclusion engaged get
    // one blocked attempt each (then retry through a peer) — never two.
    let blocked_rcpts: Vec<String> = rx
        .deliveries()
        .rejections_of(&blocked)
        .filter(|r| r.code == 554)
        .filter_map(|r| r.text.split(" to=<").nth(1).and_then(|t| t.split('>').next()).map(String::from))
        .collect();
    let once: BTreeSet<&String> = blocked_rcpts.iter().collect();
    assert!(blocked_rcpts.len() >= 3, "the provider answered the blocks: {blocked_rcpts:?}");
    assert_eq!(once.len(), blocked_rcpts.len(), "a message tried twice from the blocked IP: {blocked_rcpts:?}");
    // Once excluded, the IP tries none of the provider's domains again:
    // new mail to all three (two in no policy) leaves through the peers.
    let before = blocked_rcpts.len();
    for d in &p.domains {
        inc.submit(1, "later", d, 10);
    }
    let total = total + 10 * p.domains.len();
    inc.wait(&format!("{total} messages at the provider"), 180, || (rx.deliveries().total() >= total).then_some(()));
    let rejected = rx.deliveries().rejected_with(&blocked, 554);
    assert_eq!(rejected, before, "blocks answered to the excluded IP after the exclusion engaged");
    // No message bounced because of the block (the agents' own counts).
    let bounced = inc.metric(&[1, 2, 3], "sendfleet_agent_deliveries_total", &["status=\"bounced\""]);
    assert_eq!(bounced, 0.0, "bounced deliveries");
    // Peers carried the domain at its throttle (30/min per instance).
    for (client, n) in rx.deliveries().busiest_minute(&inc.domain("bigmail")) {
        assert!(n <= 31, "{client} sent {n} messages to bigmail in one minute (throttle 30/min)");
    }

    // The provider lifts the block; when the exclusion expires, the IP is
    // tried again and delivers.
    // The configuration rendered while the exclusion holds: its expiry
    // changes it (below).
    let excluded_config = inc.instance("pool", "mta1")["desiredConfigHash"].clone();
    rx.clear_client(&blocked).unwrap();
    inc.wait("mta1's exclusion to expire", 300, || {
        let excl = inc.get("domainpolicy", "bigmail")["status"]["exclusions"].clone();
        (!excl.as_array().is_some_and(|a| a.iter().any(|e| e["instance"] == "mta1" && e["automatic"] == true)))
            .then_some(())
    });
    // The operator drops mta1 from the peers' (and its own) rendered
    // exclusions at the same expiry; wait for that config to be rendered
    // (the status can say "expired" a reconcile before the render does)
    // and to run.
    inc.wait("the configuration without mta1's exclusion rendered", 120, || {
        (inc.instance("pool", "mta1")["desiredConfigHash"] != excluded_config).then_some(())
    });
    inc.wait_applied("pool");
    inc.submit(1, "again", &inc.domain("bigmail"), 5);
    inc.wait("mta1 delivering again", 120, || {
        (rx.deliveries().by_client().get(&blocked).copied() >= Some(1)).then_some(())
    });
    eprintln!(
        "incident 1: {rejected} blocks answered, {total} delivered by peers, retried after expiry ({:.0}s)",
        inc.elapsed()
    );
}

/// Seed 001: a provider that accepts N per minute while inflow grows past
/// it; the pool forecasts the backlog before any message is warnAge old.
#[test]
fn incident_2_growing_inflow_is_forecast_before_mail_is_warn_age_old() {
    let inc = Incident::new(2, "forecast");
    let p = &providers(2)[0];
    let rx = p.start();
    inc.apply(&[
        inc.pool("pool", 1).spec("backlog: {warnAge: 15m, criticalAge: 1h}").yaml(),
        inc.policy("slowmail", &["slowmail"]).throttled(1, 20, 1).yaml(),
    ]);
    inc.wait_ready("pool", 1);
    let domain = inc.domain("slowmail");
    // Inflow 10/min for a minute, then 60/min: past the 20/min the
    // provider takes.
    let t_start = Instant::now();
    for round in 0..6u32 {
        let n = if round < 2 { 5 } else { 30 };
        inc.submit(1, &format!("r{round}"), &domain, n);
        std::thread::sleep(Duration::from_secs(30));
        let c = inc.condition("sendingpool", "pool", "BacklogForecast");
        if c["status"] == "True" {
            break;
        }
    }
    let c = inc.wait("the backlog forecast condition", 180, || {
        let c = inc.condition("sendingpool", "pool", "BacklogForecast");
        (c["status"] == "True").then_some(c)
    });
    let msg = c["message"].as_str().unwrap_or("");
    assert!(["BacklogGrowing", "DrainTooSlow"].contains(&c["reason"].as_str().unwrap_or("")), "a forecast reason: {c}");
    assert!(msg.starts_with(&format!("{domain}: inflow ")) && msg.contains("/min, outflow "), "domain and growth: {c}");
    assert!(msg.contains("reaches warnAge 15m in "), "the forecast against warnAge: {c}");
    let at_risk = inc.metric(&[1], "sendfleet_agent_backlog_at_risk", &[&format!("domain=\"{domain}\"")]);
    assert_eq!(at_risk, 1.0, "the agent's at-risk gauge for {domain}");
    // The provider took mail at the 20/min it accepts, no faster.
    for (client, n) in rx.deliveries().busiest_minute(&domain) {
        assert!(n <= 21, "{client} delivered {n} to {domain} in one minute (the provider takes 20/min)");
    }
    let oldest = inc.instance("pool", "mta1")["queue"]["oldestAgeSeconds"].as_u64().unwrap_or(0);
    assert!(oldest < 15 * 60, "forecast before any message is warnAge (15m) old: oldest {oldest}s");
    assert!(t_start.elapsed() < Duration::from_secs(15 * 60));
    eprintln!(
        "incident 2: {} {} — {msg} ({:.0}s; {} delivered so far)",
        c["type"],
        c["reason"],
        inc.elapsed(),
        rx.deliveries().total()
    );
}

/// A receiver that speaks only TLS 1.2+ with a lab CA certificate, and a
/// DomainPolicy asking for `verify`: by MX, by relay route and via a peer.
#[test]
fn incident_3_verified_tls_holds_by_mx_by_relay_route_and_through_a_peer() {
    let inc = Incident::new(3, "tls");
    let ps = providers(3);
    let mx = ps[0].start_tls();
    let relay = ps[1].start_tls();
    let ca = MailCa::shared().expect("the lab's mail CA").ca_pem().to_string();
    inc.apply(&[
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: lab-ca\n  namespace: {}\nstringData:\n  ca.crt: |\n{}",
            inc.ns,
            ca.lines().map(|l| format!("    {l}\n")).collect::<String>()
        ),
        inc.pool("pool", 2).spec("tls: {trustedCA: {secretName: lab-ca}}").yaml(),
        inc.policy("tlsmail", &["tlsmail"])
            .spec("tls: {level: verify, minimumProtocol: TLSv1.2}")
            .excluding(&["mta1"])
            .yaml(),
        inc.policy("partner", &["partner"])
            .spec("tls: {level: verify, minimumProtocol: TLSv1.2}")
            .relay(&ps[1].host, 25)
            .yaml(),
    ]);
    inc.wait_ready("pool", 2);
    let tlsmail = inc.domain("tlsmail");
    let partner = inc.domain("partner");
    // By MX from mta2; through the peer: mta1 is excluded for tlsmail and
    // hands its mail to mta2, which delivers with the requirement.
    inc.submit(2, "direct", &tlsmail, 5);
    inc.submit(1, "peer", &tlsmail, 5);
    inc.submit(2, "relay", &partner, 5);
    inc.wait("10 at the TLS provider and 5 at the relay", 180, || {
        (mx.deliveries().total() >= 10 && relay.deliveries().total() >= 5).then_some(())
    });
    for (rx, n) in [(&mx, 10), (&relay, 5)] {
        let d = rx.deliveries();
        assert_eq!(d.total(), n, "{}", rx.name);
        assert_eq!(d.by_client().keys().collect::<Vec<_>>(), vec![&inc.addr(2)], "{}: only mta2 delivers", rx.name);
        let protocols = d.tls_protocols(&inc.addr(2));
        assert!(
            !protocols.is_empty() && protocols.iter().all(|p| *p == "TLSv1.2" || *p == "TLSv1.3"),
            "{}: TLS protocols of mta2's sessions {protocols:?}",
            rx.name
        );
    }
    assert_eq!(inc.metric(&[1, 2], "sendfleet_agent_deliveries_total", &["status=\"bounced\""]), 0.0);
    inc.wait("the pool status counting mta2's deliveries", 60, || {
        (inc.instance("pool", "mta2")["deliveries"]["sent"].as_u64() >= Some(15)).then_some(())
    });
    eprintln!("incident 3: 15 delivered over verified TLS ({:.0}s)", inc.elapsed());
}

/// An IP listed by a DNSBL while mail waits in its queue.
#[test]
fn incident_4_a_listed_ip_is_quarantined_and_its_queue_drains_through_peers() {
    let inc = Incident::new(4, "listed");
    let p = &providers(4)[0];
    let rx = p.start();
    let listed = inc.addr(1);
    // The provider defers mta1 so mail waits in its queue.
    rx.set_client(&listed, Cue::RateLimit450).unwrap();
    inc.apply(&[inc.pool("pool", 3).yaml()]);
    inc.wait_ready("pool", 3);
    let domain = inc.domain("mail");
    inc.submit(1, "q", &domain, 30);
    inc.wait("30 messages deferred in mta1's queue", 120, || {
        (inc.instance("pool", "mta1")["queue"]["deferred"].as_u64() >= Some(30)).then_some(())
    });
    assert_eq!(rx.deliveries().total(), 0);

    // mta1 gets listed.
    let rev = listed.split('.').rev().collect::<Vec<_>>().join(".");
    lab().dns.set_zone(&bl_zone(4), &format!("{rev} IN A 127.0.0.2\n{rev} IN TXT \"listed by the incident-4 trap\"\n"));
    inc.wait("mta1 quarantined", 90, || {
        inc.instance("pool", "mta1")["quarantine"].as_str().filter(|q| !q.is_empty()).map(String::from)
    });
    inc.wait("the 30 messages delivered by the peers", 180, || (rx.deliveries().total() >= 30).then_some(()));
    inc.wait("mta1's queue empty", 60, || {
        (inc.instance("pool", "mta1")["queue"]["deferred"].as_u64() == Some(0)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(distinct(&rx), (30, 30), "0 lost, 0 duplicated");
    assert_eq!(rx.deliveries().by_client().get(&listed), None);
    let handed = inc.metric(&[1], "sendfleet_agent_policy_lookups_total", &["reason=\"OutOfRotation\""]);
    assert!(handed > 0.0, "mta1's agent sent its queue to peers as out of rotation: {handed}");

    // Delisted: restored after the cool-down, and sends again.
    lab().dns.set_zone(&bl_zone(4), "");
    rx.clear_client(&listed).unwrap();
    inc.wait("mta1 restored after the cool-down", 180, || {
        let i = inc.instance("pool", "mta1");
        (i["quarantine"].is_null() && i["weight"].as_u64() > Some(0)).then_some(())
    });
    inc.wait_applied("pool");
    inc.submit(1, "back", &domain, 3);
    inc.wait("mta1 delivering again", 120, || {
        (rx.deliveries().by_client().get(&listed).copied() >= Some(1)).then_some(())
    });
    eprintln!("incident 4: quarantined, 30 drained through peers, restored ({:.0}s)", inc.elapsed());
}

/// Seed 001: a new IP that a provider defers; the day's cap holds across
/// an agent restart.
#[test]
fn incident_5_a_new_ip_deferred_by_a_provider_keeps_to_its_daily_cap_across_a_restart() {
    let inc = Incident::new(5, "warmup");
    let p = &providers(5)[0];
    let rx = p.start();
    // The provider defers what it has not seen before (greylisting).
    rx.set_greylisting(Some(Duration::from_secs(20))).unwrap();
    let cap = 12u64;
    inc.apply(&[
        Plan::named("new-ips").in_ns(&inc.ns).step(1, cap).yaml(),
        inc.pool("pool", 1).warmup("new-ips").yaml(),
    ]);
    inc.wait_ready("pool", 1);
    let domain = inc.domain("carefulmail");
    inc.submit(1, "w", &domain, 40);
    inc.wait(&format!("{cap} accepted from the new IP"), 180, || (rx.deliveries().total() as u64 >= cap).then_some(()));
    assert!(rx.deliveries().deferred > 0, "the provider deferred the new address first");

    // The agent restarts (the pod is replaced; the queue volume stays).
    inc.cp.kubectl_run(&["delete", "pod", "pool-mta1-0", "-n", &inc.ns, "--wait=true"]).unwrap();
    inc.wait_ready("pool", 1);
    // Several queue runs (5 s) after the restart.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(rx.deliveries().total() as u64, cap, "the cap held across the restart");
    let w = inc.instance("pool", "mta1")["warmup"].clone();
    assert_eq!((w["sentToday"].as_u64(), w["dailyCap"].as_u64()), (Some(cap), Some(cap)), "{w}");
    // The rest is held in the queue (the restarted agent's first queue scan
    // reaches the status within a poll or two).
    inc.wait("the rest held in mta1's queue", 60, || {
        (inc.instance("pool", "mta1")["queue"]["deferred"].as_u64() >= Some(40 - cap)).then_some(())
    });
    assert_eq!(rx.deliveries().total() as u64, cap, "still the cap");
    assert_eq!(
        inc.metric(&[1], "sendfleet_agent_warmup_daily_cap", &[]),
        cap as f64,
        "the agent's cap after the restart"
    );
    assert_eq!(inc.metric(&[1], "sendfleet_agent_warmup_step", &[]), 1.0);
    eprintln!("incident 5: {cap}/{cap} sent, the rest held across a restart ({:.0}s)", inc.elapsed());
}

/// A signup burst: 1,000 messages in a minute to 10 domains, warm pool.
#[test]
fn incident_6_a_signup_burst_is_delivered_within_caps_and_throttles() {
    let inc = Incident::new(6, "burst");
    let ps = providers(6);
    let rxs: Vec<Receiver> = ps.iter().map(Provider::start).collect();
    let per_minute = 60u32;
    let cap = 500u64;
    inc.apply(&[
        Plan::named("warm").in_ns(&inc.ns).step(1, cap).yaml(),
        inc.pool("pool", 3).warmup("warm").yaml(),
        inc.policy("big", &["d0", "d1", "d2", "d3", "d4"]).throttled(4, per_minute, 4).yaml(),
        inc.policy("other", &["d5", "d6", "d7", "d8", "d9"]).throttled(4, per_minute, 4).yaml(),
    ]);
    inc.wait_ready("pool", 3);
    let t_send = Instant::now();
    std::thread::scope(|s| {
        for n in 0..10u8 {
            let domain = inc.domain(&format!("d{n}"));
            let inc = &inc;
            s.spawn(move || inc.submit(1 + n % 3, "signup", &domain, 100));
        }
    });
    let submitted_in = t_send.elapsed();
    assert!(submitted_in < Duration::from_secs(60), "1,000 submitted in {submitted_in:?}");
    let total = || rxs.iter().map(|r| r.deliveries().total()).sum::<usize>();
    inc.wait("1,000 delivered", 300, || (total() >= 1000).then_some(()));
    let delivered_in = t_send.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let (distinct_n, total_n) = rxs.iter().map(distinct).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!((distinct_n, total_n), (1000, 1000), "each delivered once");
    let mut by_client: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rxs {
        for (c, n) in r.deliveries().by_client() {
            *by_client.entry(c).or_default() += n;
        }
    }
    for (c, n) in &by_client {
        assert!(*n as u64 <= cap, "{c} sent {n}, over its cap {cap}");
    }
    for (r, p) in rxs.iter().zip(&ps) {
        for d in &p.domains {
            for (c, n) in r.deliveries().busiest_minute(d) {
                assert!(n as u32 <= per_minute + 1, "{c} sent {n} to {d} in one minute (throttle {per_minute})");
            }
        }
    }
    let latencies = inc.metric(&[1, 2, 3], "sendfleet_agent_delivery_latency_seconds_count", &[]);
    assert_eq!(latencies, 1000.0, "one latency sample per delivered recipient in the agents' histograms");
    // Delivery latency as the pool status reports it (each agent's last
    // five minutes).
    let latency: Vec<(u64, u64)> = (1..=3u8)
        .map(|i| {
            let l = inc.instance("pool", &format!("mta{i}"))["deliveryLatency"].clone();
            assert!(l["samples"].as_u64() > Some(0), "mta{i}'s deliveryLatency in the pool status: {l}");
            (l["p50Milliseconds"].as_u64().unwrap_or(0), l["p99Milliseconds"].as_u64().unwrap_or(0))
        })
        .collect();
    eprintln!(
        "incident 6: 1,000 submitted in {:.1}s, delivered in {:.1}s, by client {by_client:?}; latency (p50, p99) per instance {latency:?} ms",
        submitted_in.as_secs_f64(),
        delivered_in.as_secs_f64()
    );
}

/// Seed 002: a spam relay explosion, sent through `spamRoute` to a pool
/// of its own; the main pool's mail stays as fast as without it.
#[test]
fn incident_7_a_spam_explosion_goes_to_its_own_pool_and_leaves_the_main_pool_alone() {
    let inc = Incident::new(7, "spam");
    let ps = providers(7);
    let main_rx = ps[0].start();
    let victims = ps[1].start();
    victims.set_access(&[(&ps[1].domains[0], "450 4.7.1 too much mail, try again later")]).unwrap();
    inc.apply(&[
        inc.pool_on("main", 1..=2).spec(FAST_RETRIES).spec("spamRoute: {pool: spam, header: X-Spam-Flag, value: 'YES'}").yaml(),
        inc.pool_on("spam", 3..=3)
            .spec("retry: {queueRunDelay: 5s, minimalBackoff: 5s, maximalBackoff: 10s, maximalQueueLifetime: 60s, bounceQueueLifetime: 60s}")
            .yaml(),
    ]);
    inc.wait_ready("main", 2);
    inc.wait_ready("spam", 1);
    // The hand-off's nexthop is the spam pool's Service name; in a cluster
    // CoreDNS answers it, here the lab's DNS server does.
    let service_ip = inc.get("service", "spam")["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(!service_ip.is_empty(), "the spam pool's Service has a cluster IP");
    lab().dns.set_zone("cluster.local", &format!("spam.{}.svc.cluster.local. 30 IN A {service_ip}\n", inc.ns));
    let domain = inc.domain("mail");

    // Baseline: 100 messages, no spam.
    let t = Instant::now();
    inc.submit(1, "base", &domain, 50);
    inc.submit(2, "base", &domain, 50);
    inc.wait("baseline delivered", 180, || (main_rx.deliveries().total() >= 100).then_some(()));
    let base = t.elapsed();

    // The same with 300 tagged messages at once.
    let spam_file = std::env::temp_dir().join(format!("incident7-spam-{}.eml", std::process::id()));
    std::fs::write(&spam_file, "From: app@app.i7.test\r\nSubject: cheap\r\nX-Spam-Flag: YES\r\n\r\nspam\r\n").unwrap();
    let t = Instant::now();
    let mut max_main_queue = 0u64;
    std::thread::scope(|s| {
        let victim = format!("v@{}", ps[1].domains[0]);
        let spam_file = &spam_file;
        let inc_ref = &inc;
        s.spawn(move || {
            for i in [1u8, 2] {
                let out = std::process::Command::new("smtp-source")
                    .args(["-c", "-N", "-m", "150", "-s", "4", "-f", "app@app.i7.test", "-t", &victim, "-F"])
                    .arg(spam_file)
                    .arg(format!("{}:587", inc_ref.addr(i)))
                    .output()
                    .expect("smtp-source");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        });
        inc.submit(1, "busy", &domain, 50);
        inc.submit(2, "busy", &domain, 50);
    });
    inc.wait("the main mail delivered during the spam", 180, || {
        for i in ["mta1", "mta2"] {
            let q = inc.instance("main", i)["queue"]["deferred"].as_u64().unwrap_or(0);
            max_main_queue = max_main_queue.max(q);
        }
        (main_rx.deliveries().total() >= 200).then_some(())
    });
    let busy = t.elapsed();
    assert!(busy <= base * 2 + Duration::from_secs(10), "main mail took {busy:?} with the spam, {base:?} without");
    assert_eq!(max_main_queue, 0, "the main pool's deferred queue stayed empty");
    // The spam left through the spam pool only, and its hand-off was accepted.
    let v = victims.deliveries();
    assert!(v.deferred > 0, "the victims' provider saw the spam pool's attempts");
    let from_main = victims
        .log()
        .lines()
        .filter(|l| {
            l.contains("NOQUEUE")
                && (l.contains(&format!("[{}]", inc.addr(1))) || l.contains(&format!("[{}]", inc.addr(2))))
        })
        .count();
    assert_eq!(from_main, 0, "no spam attempt from the main pool's addresses");
    assert_eq!(
        inc.metric(&[1, 2], "sendfleet_agent_deliveries_total", &["status=\"bounced\""]),
        0.0,
        "the hand-off accepted"
    );
    // Bounded by its lifetime: the spam pool's queue empties after 60 s.
    inc.wait("the spam pool's queue bounded by its lifetime", 240, || {
        let i = inc.instance("spam", "mta3");
        (i["queue"]["deferred"].as_u64() == Some(0) && i["deliveries"]["expired"].as_u64() > Some(0)).then_some(())
    });
    let _ = std::fs::remove_file(&spam_file);
    eprintln!("incident 7: main mail {base:?} alone, {busy:?} beside 300 spam ({:.0}s)", inc.elapsed());
}

/// Forwarding through a relay whose address the sender's SPF does not
/// authorise.
#[test]
fn incident_8_a_relay_address_outside_spf_makes_authentication_invalid() {
    let inc = Incident::new(8, "spf");
    let ps = providers(8);
    let relay_addr = ps[1].addr.clone();
    let relay = ps[1].start();
    inc.apply(&[
        inc.pool("pool", 1)
            .spec("dkim: {secretName: none, selector: s1, domains: [app.i8.test], onKeyError: SendUnsigned}")
            .yaml(),
        inc.policy("partner", &["partner"]).relay(&ps[1].host, 25).yaml(),
    ]);
    let c = inc.wait("AuthenticationValid=False naming the relay", 120, || {
        let c = inc.condition("sendingpool", "pool", "AuthenticationValid");
        (c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains(&relay_addr))).then_some(c)
    });
    let msg = c["message"].as_str().unwrap_or("");
    assert_eq!(c["reason"], "SpfNotAuthorized", "{c}");
    assert_eq!(
        msg,
        format!(
            "app.i8.test: SPF fail for relay address {relay_addr} (DomainPolicy partner route.relayHost {}); \
             record \"v=spf1 ip4:10.250.8.0/24 -all\"",
            ps[1].host
        ),
        "names the address, the route and the record"
    );
    // The route itself works: the partner's relay takes the mail (it is
    // the receivers downstream that would fail SPF).
    inc.wait_ready("pool", 1);
    inc.submit(1, "fwd", &inc.domain("partner"), 3);
    inc.wait("3 messages at the partner's relay", 120, || {
        (relay.deliveries().from_client(&inc.addr(1)) >= 3).then_some(())
    });
    // The agent counts a delivery when Postfix logs it, just after the
    // relay's 250.
    inc.wait("mta1's agent to count the 3 sent", 30, || {
        (inc.metric(&[1], "sendfleet_agent_deliveries_total", &["status=\"sent\""]) >= 3.0).then_some(())
    });
    eprintln!("incident 8: {} {}: {msg} ({:.0}s)", c["status"], c["reason"], inc.elapsed());
}

/// Seeds 000 and 001, as their teams watched them (issue 17): a real
/// Prometheus discovers the operator and the pool's three agents through
/// the API server with the ServiceMonitors the chart renders (EndpointSlices
/// the operator writes for the hostNetwork agents, the pool's agent token),
/// and evaluates the chart's rules file; a real Alertmanager posts to the
/// test's webhook (the team's chat channel). A provider that starts
/// deferring one domain until its mail expires raises the expired-ratio
/// alert naming the pool and the IP, which resolves once mail flows again;
/// an IP that gets listed raises the listing alert, which resolves when it
/// is delisted. Then every panel of the shipped Grafana dashboard has data
/// over the incident's time range, through the Prometheus HTTP API.
#[test]
fn incident_9_the_watched_fleet_alerts_on_expiry_and_listing_naming_pool_and_ip() {
    use sendfleet_lab::monitoring::{chart_scrape_jobs, shipped_rules, Alertmanager, Prometheus, Webhook};

    let inc = Incident::new(9, "watched");
    let p = &providers(9)[0];
    let rx = p.start();
    let (expiring, fine) = (inc.domain("expiring"), inc.domain("fine"));
    // Mail the provider defers is kept a minute, retried every 30 s: three
    // deferrals, then it expires (and its notice is sent to the sender), so
    // a fifth of the attempts expire. The minute also spans two of the
    // agents' 30 s queue scans (the backlog panel).
    inc.apply(&[
        inc.pool_on("pool", 1..=3)
            .warmup("warm")
            .spec("retry: {queueRunDelay: 5s, minimalBackoff: 30s, maximalBackoff: 30s, maximalQueueLifetime: 1m, bounceQueueLifetime: 1m}")
            .yaml(),
        inc.policy("fine", &["fine"]).auto_exclusion(3, "5m", "10m").slow_down(5, "1m", 30, "1m").yaml(),
        Plan::named("warm").in_ns(&inc.ns).step(1, 100_000).yaml(),
    ]);
    inc.wait_ready("pool", 3);

    let dir = std::env::temp_dir().join(format!("sendfleet-incident-9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    let token = inc.agent_tokens().pop().expect("the pool's agent token Secret");
    std::fs::write(&token_file, token).unwrap();
    // What the chart ships for a cluster with the Prometheus Operator,
    // rendered for this cluster's version.
    let version = inc.cp.kubectl_run(&["version", "-o", "json"]).unwrap();
    let jobs =
        chart_scrape_jobs(inc.cp.helm(), &version, OP_NS, &[(&inc.ns, "pool")], inc.cp.kubeconfig(), &token_file)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(jobs.len(), 2, "the operator's and the pool's ServiceMonitors");
    let hook = Webhook::start().unwrap_or_else(|e| panic!("{e}"));
    let am = Alertmanager::start(&hook).unwrap_or_else(|e| panic!("{e}"));
    let mut prom = Prometheus::builder().rules("sendfleet.rules.yaml", &shipped_rules("2s").unwrap()).alertmanager(&am);
    for job in jobs {
        prom = prom.scrape(job);
    }
    let prom = prom.start().unwrap_or_else(|e| panic!("{e}"));
    let t_watch = Instant::now();

    // Scraped: the operator and each agent, labelled by pool and IP.
    let up = inc.wait("Prometheus to scrape the operator and three agents", 120, || {
        let up = prom.query("up == 1").ok()?;
        (up.len() == 4).then_some(up)
    });
    let mut ips: Vec<&str> = up.iter().filter_map(|s| s.labels.get("egress_ip").map(String::as_str)).collect();
    ips.sort();
    assert_eq!(ips, ["mta1", "mta2", "mta3"], "{up:?}");
    for s in up.iter().filter(|s| s.labels.contains_key("egress_ip")) {
        assert_eq!(
            (s.labels["pool_namespace"].as_str(), s.labels["pool"].as_str()),
            (inc.ns.as_str(), "pool"),
            "{s:?}"
        );
    }
    let operator_series = prom
        .query(&format!(r#"sendfleet_operator_instance_config_current{{pool_namespace="{}",pool="pool"}}"#, inc.ns))
        .unwrap();
    assert_eq!(operator_series.len(), 3, "the operator's series name pool and IP: {operator_series:?}");
    assert!(
        operator_series.iter().all(|s| !s.labels.keys().any(|k| k.starts_with("exported_"))),
        "{operator_series:?}"
    );

    // Mail flows to the healthy domain from every instance.
    for i in 1..=3 {
        inc.submit(i, "ok", &fine, 20);
    }
    inc.wait("60 messages for the healthy domain", 180, || (rx.deliveries().to_domain(&fine) >= 60).then_some(()));

    // The provider starts deferring one domain: mail to it expires. Its
    // first expiries create the series (increase() counts from a series'
    // first sample), then the incident's bulk.
    rx.set_access(&[(&expiring, "450 4.7.0 try again later")]).unwrap();
    inc.submit(1, "first", &expiring, 2);
    let expired = r#"sendfleet_agent_deliveries_total{status="expired",egress_ip="mta1"}"#;
    inc.wait("the first expiries scraped", 240, || prom.query(expired).ok().filter(|v| !v.is_empty()));
    inc.submit(1, "x", &expiring, 30);
    // The lab's one operator serves every incident's pools: this pool's alerts only.
    let mine = [("pool_namespace", inc.ns.as_str())];
    let alert = "SendfleetExpiredRatioJump";
    let fired = hook
        .wait_alert_with(alert, "firing", &mine, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}\nratios: {:?}\n{}", prom.query("sendfleet:delivery_ratio:1h"), inc.diagnose()));
    eprintln!("incident 9: the webhook got {alert}: {:?}", fired.annotations.get("summary"));
    let label = |k: &str| fired.labels.get(k).map(String::as_str).unwrap_or("");
    assert_eq!((label("pool_namespace"), label("pool"), label("egress_ip")), (inc.ns.as_str(), "pool", "mta1"));
    assert_eq!(label("rule"), "none", "the domain is in no DomainPolicy");
    let description = fired.annotations.get("description").cloned().unwrap_or_default();
    assert!(description.starts_with(&format!("Pool {}/pool, IP mta1: ", inc.ns)), "{description}");

    // The provider takes mail again; as mail flows the hour's expired share
    // falls under a tenth and the alert resolves.
    rx.set_access(&[]).unwrap();
    let before = rx.deliveries().to_domain(&expiring);
    inc.submit(1, "after", &expiring, 400);
    inc.wait("400 messages delivered after the incident", 240, || {
        (rx.deliveries().to_domain(&expiring) >= before + 400).then_some(())
    });
    let resolved = hook.wait_alert_with(alert, "resolved", &mine, Duration::from_secs(180)).unwrap_or_else(|e| {
        panic!("{e}\nratios: {:?}", prom.query(r#"sendfleet:delivery_ratio:1h{status="expired"}"#))
    });
    assert_eq!(resolved.labels.get("egress_ip").map(String::as_str), Some("mta1"));

    // mta2 gets listed: the listing alert names pool, IP and zone; mail
    // submitted to it meanwhile leaves through its peers.
    let listed = inc.addr(2);
    let rev = listed.split('.').rev().collect::<Vec<_>>().join(".");
    lab().dns.set_zone(&bl_zone(9), &format!("{rev} IN A 127.0.0.2\n{rev} IN TXT \"listed by the incident-9 trap\"\n"));
    let alert = "SendfleetIPListed";
    let fired = hook
        .wait_alert_with(alert, "firing", &mine, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", inc.diagnose()));
    let label = |k: &str| fired.labels.get(k).map(String::as_str).unwrap_or("");
    assert_eq!((label("pool_namespace"), label("pool"), label("egress_ip")), (inc.ns.as_str(), "pool", "mta2"));
    assert_eq!(label("zone"), bl_zone(9));
    inc.wait("mta2 quarantined", 120, || {
        inc.instance("pool", "mta2")["quarantine"].as_str().filter(|q| !q.is_empty()).map(String::from)
    });
    inc.wait_applied("pool");
    let (at_fine, from_listed) = (rx.deliveries().to_domain(&fine), rx.deliveries().from_client(&listed));
    inc.submit(2, "listed", &fine, 10);
    inc.wait("mta2's mail delivered by its peers", 180, || {
        (rx.deliveries().to_domain(&fine) >= at_fine + 10).then_some(())
    });
    assert_eq!(rx.deliveries().from_client(&listed), from_listed, "nothing left from the listed IP");
    lab().dns.set_zone(&bl_zone(9), "");
    let resolved =
        hook.wait_alert_with(alert, "resolved", &mine, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.labels.get("egress_ip").map(String::as_str), Some("mta2"));

    // Every panel of the shipped dashboard draws data over the incident,
    // as Grafana would ask for it with this pool selected. (A panel's
    // second series may be absent by design: the drain forecast is not
    // exposed while a backlog is not draining.)
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            sendfleet_lab::binaries::repo_root().join("charts/sendfleet/files/sendfleet-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let vars = |q: &str| q.replace("$pool_namespace", &inc.ns).replace("$pool", "pool");
    let span = t_watch.elapsed() + Duration::from_secs(10);
    let mut with_data: BTreeMap<String, bool> = BTreeMap::new();
    let mut empty_queries = Vec::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        let got =
            prom.query_range(&vars(&expr), span, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{title}: {e}"));
        let data = got.iter().any(|(_, points)| *points > 0);
        if !data {
            empty_queries.push(format!("{title}: {expr}"));
        }
        *with_data.entry(title).or_default() |= data;
    }
    let panels = with_data.len();
    let empty: Vec<&String> = with_data.iter().filter(|(_, d)| !**d).map(|(t, _)| t).collect();
    assert!(panels >= 10, "the dashboard's panels: {with_data:?}");
    assert!(empty.is_empty(), "panels without data: {empty:?}\nqueries without data:\n{}", empty_queries.join("\n"));
    if !empty_queries.is_empty() {
        eprintln!("incident 9: queries without data (their panels have other series):\n{}", empty_queries.join("\n"));
    }
    // The dashboard's variables list this pool.
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) else { continue };
        let Some((metric, label)) =
            q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).and_then(|q| q.rsplit_once(", "))
        else {
            continue;
        };
        let values = prom.query(&format!("group by ({label}) ({})", vars(metric))).unwrap();
        let want = if label == "pool" { "pool" } else { inc.ns.as_str() };
        assert!(values.iter().any(|s| s.labels.get(label).map(String::as_str) == Some(want)), "{q}: {values:?}");
    }
    eprintln!("incident 9: {panels} dashboard panels with data, alerts fired and resolved ({:.0}s)", inc.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// (panel title, query) of every target of every panel, rows included.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((p["title"].as_str().unwrap_or("").to_string(), expr.to_string()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}
