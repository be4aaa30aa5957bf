//! The demo's steps, once, for `sendfleet-lab demo` (what `make demo` /
//! hack/demo.sh runs after starting the lab) and for tests/e2e_chart.rs,
//! which runs the same [`run`] on the test's own lab, so a test covers the
//! demo: examples/ applied as a user would, the chart's operator as a pod,
//! two simulated providers reached by MX (three domains each sharing one
//! MX host), a DNSBL hit quarantining mta3, provider-a blocking mta1 and
//! the DomainPolicy's autoExclusion taking mta1 out for provider-a's
//! domains (incident 1 of issue 14), 500 messages submitted from a pod
//! through the pool's Service, and the status the operator reports.
//!
//! Who starts what around [`run`]: the caller starts the lab with a node,
//! imports the image and serves [`zones`] on [`DNS_SERVER`], the address
//! the node's pods resolve through (the CLI as background processes, the
//! test in process); [`run`] does the rest.
//! Never: send outside the lab's network namespace (every address here is a
//! documentation address on its `lo`), or ask a real DNS server.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::dns::{merge_zones, mx_zones, MxProvider, Zones};
use crate::kit::{examples_dir, repo_root};
use crate::monitoring::{chart_scrape_jobs, shipped_rules, Alertmanager, Prometheus, Webhook};
use crate::process::poll;
use crate::receiver::{add_lo_address, Cue, Receiver};
use crate::{ControlPlane, LabError};

pub const NS: &str = "mail";
pub const OP_NS: &str = "sendfleet-system";
pub const POOL: &str = "outbound";
/// The image `make image` builds, as the node knows it after the import.
pub const IMAGE: &str = "localhost/sendfleet:dev";
pub const IMAGE_BASE: &str = "localhost/sendfleet";
/// The lab's DNS server (hack/demo/zones): the node's pods resolve through it.
pub use crate::node::DNS_SERVER;
/// The egress IP the fake DNSBL zone lists.
pub const LISTED: &str = "mta3";
/// The egress IP provider-a blocks during the demo, and the provider.
pub const BLOCKED: &str = "mta1";
pub const BLOCKING: &str = "provider-a";
/// The DomainPolicy of hack/demo/providers.yaml whose autoExclusion reacts.
pub const BLOCKING_POLICY: &str = "demo-provider-a";
/// Messages submitted: to provider-a, to provider-b, and to a domain
/// provider-b defers (held in the queues, visible in the status).
pub const N_A: usize = 250;
pub const N_B: usize = 230;
pub const N_BUSY: usize = 20;
pub const EXPECTED: usize = N_A + N_B;
/// Recipient and count of each `smtp-source` run: provider-a's three
/// domains, provider-b's two accepting ones, and its busy one.
pub const SUBMISSIONS: [(&str, usize); 6] = [
    ("news@example.net", 100),
    ("news@webmail.test", 80),
    ("news@inbox.test", N_A - 180),
    ("signup@example.org", 130),
    ("signup@mailbox.test", N_B - 130),
    ("offer@busy.example.org", N_BUSY),
];

/// A simulated provider: name, its one MX host and that host's address,
/// the domains it receives for (all sharing the MX host, as a big mailbox
/// provider's do), and its standing access rules.
pub struct Provider {
    pub name: &'static str,
    pub mx_host: &'static str,
    pub addr: &'static str,
    pub domains: &'static [&'static str],
    pub access: &'static [(&'static str, &'static str)],
}

impl Provider {
    /// How DNS publishes it.
    pub fn mx(&self) -> MxProvider<'static> {
        MxProvider { name: self.name, mx_host: self.mx_host, addr: self.addr, domains: self.domains }
    }
}

/// The demo's providers; mail reaches them by MX ([`provider_zones`]).
pub const PROVIDERS: [Provider; 2] = [
    Provider {
        name: "provider-a",
        mx_host: "mx.provider-a.test",
        addr: "198.51.100.10",
        domains: &["example.net", "webmail.test", "inbox.test"],
        access: &[],
    },
    Provider {
        name: "provider-b",
        mx_host: "mx.provider-b.test",
        addr: "198.51.100.20",
        domains: &["example.org", "busy.example.org", "mailbox.test"],
        access: &[("busy.example.org", "450 4.7.1 rate limited, try again later")],
    },
];

/// MX and A records of [`PROVIDERS`].
pub fn provider_zones() -> BTreeMap<String, String> {
    mx_zones(&PROVIDERS.iter().map(Provider::mx).collect::<Vec<_>>())
}

/// Everything the demo's DNS server serves: hack/demo/zones (PTR, A, SPF,
/// DMARC of the sending side, fake DNSBLs) and [`provider_zones`].
pub fn zones() -> Result<BTreeMap<String, String>, LabError> {
    let dir = repo_root().join("hack/demo/zones");
    let mut texts = Zones::read_dir(&dir).map_err(|e| LabError::Usage(e.to_string()))?;
    merge_zones(&mut texts, provider_zones());
    Ok(texts)
}

/// How the demo reaches the cluster: the test's [`ControlPlane`], or the
/// lab started by `sendfleet-lab up` (its DIR/env).
pub trait Cluster {
    /// `kubectl ARGS` as admin: stdout, or the command and its stderr.
    fn kubectl(&self, args: &[&str]) -> Result<String, LabError>;
    /// `helm` as admin, ready for arguments.
    fn helm(&self) -> Command;
}

impl Cluster for ControlPlane {
    fn kubectl(&self, args: &[&str]) -> Result<String, LabError> {
        self.kubectl_run(args)
    }
    fn helm(&self) -> Command {
        ControlPlane::helm(self)
    }
}

/// A lab started by `sendfleet-lab up`, from the variables of its DIR/env.
pub struct LabEnv {
    pub vars: BTreeMap<String, String>,
}

impl LabEnv {
    fn var<'a>(&'a self, k: &'a str) -> &'a str {
        self.vars.get(k).map(String::as_str).unwrap_or(k)
    }
}

impl Cluster for LabEnv {
    fn kubectl(&self, args: &[&str]) -> Result<String, LabError> {
        let mut c = Command::new(self.var("KUBECTL"));
        c.arg("--kubeconfig").arg(self.var("KUBECONFIG")).args(args);
        checked(c)
    }
    fn helm(&self) -> Command {
        let mut c = Command::new(self.var("HELM"));
        let home = Path::new(self.var("SENDFLEET_LAB_DIR")).join("helm");
        c.arg("--kubeconfig")
            .arg(self.var("KUBECONFIG"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        c
    }
}

fn checked(mut c: Command) -> Result<String, LabError> {
    let what = format!("{c:?}");
    let out = c.output().map_err(|source| LabError::Spawn { program: c.get_program().into(), source })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: what,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The egress addresses of examples/sendingpool.yaml, added to `lo` (on a
/// real node they are the node's; hostNetwork instances bind them).
pub fn add_egress_addresses() -> Result<Vec<String>, LabError> {
    let pool = std::fs::read_to_string(examples_dir().join("sendingpool.yaml")).map_err(LabError::io("examples"))?;
    let addrs: Vec<String> =
        pool.lines().filter_map(|l| l.trim().strip_prefix("address:")).map(|a| a.trim().to_string()).collect();
    for a in &addrs {
        add_lo_address(a)?;
    }
    Ok(addrs)
}

/// Start [`PROVIDERS`]: under `dir/receivers` (left running, stopped by
/// `sendfleet-lab down`), or in temp directories stopped on drop (tests).
pub fn start_providers(dir: Option<&Path>) -> Result<Vec<Receiver>, LabError> {
    PROVIDERS
        .iter()
        .map(|p| match dir {
            Some(d) => Receiver::start(p.name, &d.join("receivers").join(p.name), p.addr, p.domains, p.access),
            None => Receiver::start_temp(p.name, p.addr, p.domains, p.access),
        })
        .collect()
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages the providers accepted, all together.
    pub delivered: usize,
    /// Accepted messages per client (egress) address.
    pub by_client: BTreeMap<String, usize>,
    /// Accepted messages per provider, per client address.
    pub by_provider: BTreeMap<String, BTreeMap<String, usize>>,
    /// [`BLOCKED`]'s egress address.
    pub blocked_addr: String,
    /// The 554 answers [`BLOCKING`] gave [`BLOCKED`] (its own log).
    pub blocks: usize,
    /// [`BLOCKING_POLICY`]'s status.exclusions, one `instance reason` line each.
    pub exclusions: Vec<String>,
    /// Bounced messages the pool status counts.
    pub status_bounced: usize,
    /// [`LISTED`]'s quarantine reason in the pool status.
    pub quarantine: String,
    /// Sent messages the pool status counts (the operator pod polled the agents).
    pub status_sent: usize,
    /// Messages the pool status counts as queued (deferred, or in the
    /// active queue for a retry at the moment of the agents' queue scan).
    pub status_queued: usize,
    /// Submit (pod start) to delivered.
    pub submit_to_delivered: Duration,
}

fn jsonpath(c: &dyn Cluster, kind: &str, name: &str, path: &str) -> String {
    c.kubectl(&["get", kind, name, "-n", NS, "-o", &format!("jsonpath={path}")]).unwrap_or_default()
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> Option<()>) -> Result<(), LabError> {
    let mut f = f;
    poll(what, Duration::from_secs(secs), Duration::from_millis(500), || Ok(f()))
}

/// The chart's operator as a pod on the lab's node, as the demo and the
/// incident replays (tests/incidents.rs) run it: the image `make image`
/// built, agents polled every 2 s and DNS swept every 5 s so status follows
/// within seconds, the DNS checks asking only the lab's DNS server. The
/// lab's local volumes become the default StorageClass (the examples' pool
/// names none, as a user on a cloud with a default class would).
pub fn install_operator(c: &dyn Cluster) -> Result<(), LabError> {
    c.kubectl(&[
        "annotate",
        "storageclass",
        crate::STORAGE_CLASS,
        "storageclass.kubernetes.io/is-default-class=true",
        "--overwrite",
    ])?;
    let mut helm = c.helm();
    helm.args(["upgrade", "--install", "sendfleet"])
        .arg(repo_root().join("charts/sendfleet"))
        .args(["--namespace", OP_NS, "--create-namespace"])
        .args(["--set", "image.registry=localhost", "--set", "image.repository=sendfleet", "--set", "image.tag=dev"])
        .args(["--set", "operator.agentPollInterval=2s", "--set", "operator.resyncInterval=10s"])
        .args(["--set", "operator.logFormat=text"])
        .args(["--set", &format!("operator.dnsServers={{{DNS_SERVER}:53}}")])
        .args(["--set", "operator.extraArgs={--dnsbl-interval-override=5s}"]);
    checked(helm)?;
    c.kubectl(&["-n", OP_NS, "rollout", "status", "deployment/sendfleet", "--timeout=180s"])?;
    Ok(())
}

// ------------------------------------------------------------ monitoring

/// Where the demo's Prometheus and Alertmanager listen: 127.0.0.1 inside
/// the lab's network namespace (`sendfleet-lab exec -- curl ...`).
pub const PROMETHEUS_PORT: u16 = 9090;
pub const ALERTMANAGER_PORT: u16 = 9093;
/// The `for:` of every shipped alert in the demo's copy of the rules: the
/// demo lasts minutes, the production holds are 1-30 minutes.
pub const DEMO_HOLD: &str = "10s";

/// The demo's monitoring, as a cluster with the Prometheus Operator would
/// run it from the chart: Prometheus discovers the operator and the demo
/// pool's agents through the API server with the chart's ServiceMonitors
/// (the agents with the pool's token from its `<pool>-agent-token`
/// Secret) and evaluates the chart's rules file; Alertmanager posts every
/// alert to a webhook that writes `alerts.log` in the directory (the chat
/// channel). Stopped on drop.
pub struct Watch {
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub webhook: Webhook,
    pub dir: PathBuf,
    token_file: PathBuf,
}

impl Watch {
    /// Start everything in `dir` (kept; `alerts.log`, each binary's log and
    /// data). The pool need not exist yet: targets appear as the operator
    /// writes their EndpointSlices, and [`Watch::refresh_token`] fills the
    /// token file Prometheus reads at every scrape.
    pub fn start(c: &dyn Cluster, dir: &Path, kubeconfig: &Path) -> Result<Watch, LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
        let token_file = dir.join("agent-token");
        let version = c.kubectl(&["version", "-o", "json"])?;
        let jobs = chart_scrape_jobs(c.helm(), &version, OP_NS, &[(NS, POOL)], kubeconfig, &token_file)?;
        let webhook = Webhook::start_logging(&dir.join("alerts.log"))?;
        let alertmanager = Alertmanager::start_in(&webhook, &dir.join("alertmanager"), ALERTMANAGER_PORT)?;
        let mut prom = Prometheus::builder()
            .dir(dir.join("prometheus"))
            .port(PROMETHEUS_PORT)
            .interval(Duration::from_secs(2))
            .rules("sendfleet.rules.yaml", &shipped_rules(DEMO_HOLD)?)
            .alertmanager(&alertmanager);
        for job in jobs {
            prom = prom.scrape(job);
        }
        let prometheus = prom.start()?;
        Ok(Watch { prometheus, alertmanager, webhook, dir: dir.to_path_buf(), token_file })
    }

    /// Write the demo pool's agent token where Prometheus reads it, once
    /// the operator has created its Secret. Returns whether it is there.
    pub fn refresh_token(&self, c: &dyn Cluster) -> bool {
        use base64::Engine;
        if self.token_file.exists() {
            return true;
        }
        let secret = format!("{POOL}-agent-token");
        let Ok(b64) = c.kubectl(&["get", "secret", &secret, "-n", NS, "-o", "jsonpath={.data.token}"]) else {
            return false;
        };
        let Ok(token) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        !token.is_empty() && std::fs::write(&self.token_file, token).is_ok()
    }
}

/// Steps 5-9 of the demo, printing as they go (see the module doc for what
/// the caller has started before).
pub fn run(c: &dyn Cluster, providers: &[Receiver], out: &mut dyn Write) -> Result<Report, LabError> {
    let repo = repo_root();
    let t0 = Instant::now();
    let step = |out: &mut dyn Write, s: &str| {
        let _ = writeln!(out, "\n== {s} ({:.1}s)", t0.elapsed().as_secs_f64());
    };
    step(out, "helm install sendfleet charts/sendfleet (the operator as a pod)");
    install_operator(c)?;
    let _ = write!(out, "{}", c.kubectl(&["-n", OP_NS, "get", "pods", "-o", "wide"])?);

    step(out, "kubectl apply -f examples/ -f hack/demo/providers.yaml");
    if let Err(e) = c.kubectl(&["create", "namespace", NS]) {
        if !e.to_string().contains("AlreadyExists") {
            return Err(e);
        }
    }
    // The chart's operator reconciles pools only in opted-in namespaces.
    let (k, v) = crate::kit::fixtures::POOL_NAMESPACE_LABEL;
    c.kubectl(&["label", "namespace", NS, &format!("{k}={v}"), "--overwrite"])?;
    let examples = examples_dir().display().to_string();
    let providers_yaml = repo.join("hack/demo/providers.yaml").display().to_string();
    let _ = write!(out, "{}", c.kubectl(&["apply", "-f", &examples, "-f", &providers_yaml])?);

    step(out, "the demo's clock and calendar (kubectl patch)");
    // examples/ retry deferred mail every 5 min and start each IP at 50 a
    // day: right for production, too slow for a demo of a few minutes. The
    // blocked messages' retries (through mta2) and 500 messages on day 1
    // need both shorter.
    c.kubectl(&[
        "patch",
        "sendingpool",
        POOL,
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"retry":{"queueRunDelay":"10s","minimalBackoff":"10s","maximalBackoff":"1m"}}}"#,
    ])?;
    c.kubectl(&[
        "patch",
        "warmupplan",
        "new-ip",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"steps":[{"day":1,"dailyCap":1000},{"day":2,"dailyCap":2000}]}}"#,
    ])?;
    let _ = writeln!(out, "  retry every 10 s (examples/: 5 min); warm-up day 1 cap 1000 per IP (examples/: 50)");

    step(out, "waiting for the pool's three instances (StatefulSet pods, hostNetwork)");
    wait("pool 3/3 ready", 180, || {
        (jsonpath(c, "sendingpool", POOL, "{.status.readyInstances}") == "3/3").then_some(())
    })?;
    let _ = write!(out, "{}", c.kubectl(&["get", "pods", "-n", NS, "-o", "wide"])?);

    step(out, &format!("waiting for the DNS checks: {LISTED} listed by the fake zen.spamhaus.org, quarantined"));
    let q = format!("{{.status.instances[?(@.name==\"{LISTED}\")].quarantine}}");
    let mut quarantine = String::new();
    wait(&format!("{LISTED} quarantined"), 60, || {
        quarantine = jsonpath(c, "sendingpool", POOL, &q);
        (!quarantine.is_empty()).then_some(())
    })?;
    let _ = writeln!(out, "  {LISTED}: {quarantine}");

    let blocked_addr =
        jsonpath(c, "sendingpool", POOL, &format!("{{.status.instances[?(@.name==\"{BLOCKED}\")].address}}"));
    let blocking = providers
        .iter()
        .find(|p| p.name == BLOCKING)
        .ok_or_else(|| LabError::Usage(format!("no provider {BLOCKING} among those started")))?;
    step(out, &format!("{BLOCKING} starts blocking {BLOCKED} ({blocked_addr}), as a provider does (incident 1)"));
    blocking.set_client(&blocked_addr, Cue::Blocked)?;
    let _ = writeln!(out, "  {BLOCKING} answers {blocked_addr}: {}", Cue::Blocked.action(&blocked_addr));

    let submitted: usize = SUBMISSIONS.iter().map(|(_, n)| n).sum();
    step(out, &format!("submit {submitted} messages from a pod through Service {NS}/{POOL} (kube-proxy)"));
    let svc = jsonpath(c, "service", POOL, "{.spec.clusterIP}:{.spec.ports[0].port}");
    c.kubectl(&["delete", "pod", "submit", "-n", NS, "--ignore-not-found", "--wait=true"])?;
    let t_send = Instant::now();
    let runs: String = SUBMISSIONS
        .iter()
        .map(|(to, n)| {
            format!(
                "  /usr/sbin/smtp-source -N -m {n} -s 5 -f app@mail.example.com -t {to} {svc} & pids=\"$pids $!\"\n"
            )
        })
        .collect();
    let script =
        format!("set -e\n{runs}  for p in $pids; do wait $p; done\n  echo submitted {submitted} messages to {svc}");
    let image = format!("--image={IMAGE}");
    let run = ["run", "submit", "-n", NS, &image, "--image-pull-policy=Never", "--restart=Never", "--command"];
    c.kubectl(&[&run[..], &["--", "sh", "-c", &script]].concat())?;
    let mut phase = String::new();
    wait("the submitting pod to finish", 120, || {
        phase = jsonpath(c, "pod", "submit", "{.status.phase}");
        (phase == "Succeeded" || phase == "Failed").then_some(())
    })?;
    let _ = write!(out, "{}", c.kubectl(&["logs", "submit", "-n", NS]).unwrap_or_default());
    if phase != "Succeeded" {
        return Err(LabError::Usage(format!("the submitting pod ended {phase}")));
    }

    step(
        out,
        &format!("waiting until the providers accepted {EXPECTED} messages (the blocked ones retried through a peer)"),
    );
    let total = || providers.iter().map(|p| p.deliveries().total()).sum::<usize>();
    wait(&format!("{EXPECTED} messages at the providers"), 240, || (total() >= EXPECTED).then_some(()))?;
    let submit_to_delivered = t_send.elapsed();
    let delivered = total();
    let mut by_client = BTreeMap::new();
    let mut by_provider = BTreeMap::new();
    for p in providers {
        let d = p.deliveries().by_client();
        for (client, n) in &d {
            *by_client.entry(client.clone()).or_insert(0) += n;
        }
        by_provider.insert(p.name.clone(), d);
    }
    let blocks = blocking.deliveries().rejected_with(&blocked_addr, 554);
    let _ =
        writeln!(out, "  delivered {delivered} messages {:.1}s after submitting", submit_to_delivered.as_secs_f64());

    // The operator polls each agent every 2 s; the agents scan their queues
    // every 30 s (the busy provider's deferrals show up after a scan).
    let sum = |path: &str| -> usize {
        jsonpath(c, "sendingpool", POOL, path).split_whitespace().filter_map(|n| n.parse::<usize>().ok()).sum()
    };
    let sent_path = "{range .status.instances[*]}{.deliveries.sent} {end}";
    let _ = wait("the pool status to count what the providers accepted", 30, || {
        (sum(sent_path) >= delivered).then_some(())
    });
    // Deferred or active: with the demo's 10 s retries a scan can find a
    // busy message in the active queue for its next attempt.
    let queued_path = "{range .status.instances[*]}{.queue.deferred} {.queue.active} {end}";
    let _ = wait("the queued messages in the pool status", 45, || (sum(queued_path) == N_BUSY).then_some(()));
    let excl_path = "{range .status.exclusions[*]}{.instance}{\" \"}{.reason}{\" until \"}{.until}{\"\\n\"}{end}";
    let mut exclusions = vec![];
    let _ = wait(&format!("{BLOCKED} in DomainPolicy {BLOCKING_POLICY}'s exclusions"), 60, || {
        exclusions = jsonpath(c, "domainpolicy", BLOCKING_POLICY, excl_path).lines().map(str::to_string).collect();
        exclusions.iter().any(|l| l.starts_with(&format!("{BLOCKED} "))).then_some(())
    });

    step(out, &format!("kubectl get sendingpools,domainpolicies,warmupplans -n {NS}"));
    let _ = write!(out, "{}", c.kubectl(&["get", "sendingpools,domainpolicies,warmupplans", "-n", NS])?);
    step(out, &format!("conditions of SendingPool {NS}/{POOL}"));
    let conds =
        "{range .status.conditions[*]}{.type}{\"\\t\"}{.status}{\"\\t\"}{.reason}{\"\\t\"}{.message}{\"\\n\"}{end}";
    let _ = write!(out, "{}", jsonpath(c, "sendingpool", POOL, conds));
    step(out, &format!("instances of SendingPool {NS}/{POOL} (status, as the operator sees them)"));
    let insts = "{range .status.instances[*]}{.name}{\"\\t\"}{.address}{\"\\t\"}{.phase}{\"\\tweight \"}{.weight}{\"\\tsent \"}{.deliveries.sent}{\"\\tdeferred \"}{.deliveries.deferred}{\"\\tbounced \"}{.deliveries.bounced}{\"\\tqueued \"}{.queue.deferred}{\"\\twarm-up \"}{.warmup.sentToday}/{.warmup.dailyCap}{\"\\t\"}{.quarantine}{\"\\n\"}{end}";
    let _ = write!(out, "{}", jsonpath(c, "sendingpool", POOL, insts));
    step(out, &format!("exclusions of DomainPolicy {NS}/{BLOCKING_POLICY} (status.exclusions)"));
    for l in &exclusions {
        let _ = writeln!(out, "  {l}");
    }
    step(out, "what the simulated providers received and refused (their own logs)");
    for p in providers {
        let d = p.deliveries();
        let _ = writeln!(
            out,
            "  {}: {} accepted, by client {:?}; refused by client and code {:?}",
            p.name,
            d.total(),
            d.by_client(),
            d.rejections_by_client()
        );
    }
    Ok(Report {
        delivered,
        by_client,
        by_provider,
        blocked_addr,
        blocks,
        exclusions,
        status_bounced: sum("{range .status.instances[*]}{.deliveries.bounced} {end}"),
        quarantine,
        status_sent: sum(sent_path),
        status_queued: sum(queued_path),
        submit_to_delivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_serves_its_zones_and_every_provider_domain_has_the_providers_mx() {
        let texts = zones().expect("demo zones");
        let loaded = Zones::load(&texts).expect("they parse");
        for p in &PROVIDERS {
            for d in p.domains {
                assert!(loaded.zones.contains_key(*d), "{d}");
                assert!(texts[*d].contains(&format!("MX 10 {}.", p.mx_host)), "{d}: {}", texts[*d]);
            }
        }
        assert!(loaded.zones.contains_key("zen.spamhaus.org") && loaded.zones.contains_key("mail.example.com"));
    }
}
