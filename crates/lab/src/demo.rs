//! The demo's steps, once, for `sendfleet-lab demo` (what `make demo` /
//! hack/demo.sh runs after starting the lab) and for tests/e2e_chart.rs,
//! which runs the same [`run`] on the test's own lab, so a test covers the
//! demo: examples/ applied as a user would, the chart's operator as a pod,
//! two simulated providers, a DNSBL hit quarantining mta3, 500 messages
//! submitted from a pod through the pool's Service, and the status the
//! operator reports.
//!
//! Who starts what around [`run`]: the caller starts the lab with a node,
//! imports the image and serves hack/demo/zones on [`DNS_SERVER`] (the CLI
//! as background processes, the test in process); [`run`] does the rest.
//! Never: send outside the lab's network namespace (every address here is a
//! documentation address on its `lo`), or ask a real DNS server.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::dns::{merge_zones, mx_zones, MxProvider, Zones};
use crate::kit::{examples_dir, repo_root};
use crate::process::poll;
use crate::receiver::{add_lo_address, Receiver};
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
/// Messages submitted: to provider-a, to provider-b, and to a domain
/// provider-b defers (held in the queues, visible in the status).
pub const N_A: usize = 250;
pub const N_B: usize = 230;
pub const N_BUSY: usize = 20;
pub const EXPECTED: usize = N_A + N_B;

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
    /// [`LISTED`]'s quarantine reason in the pool status.
    pub quarantine: String,
    /// Sent messages the pool status counts (the operator pod polled the agents).
    pub status_sent: usize,
    /// Deferred messages the pool status counts.
    pub status_deferred: usize,
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

/// Steps 5-9 of the demo, printing as they go (see the module doc for what
/// the caller has started before).
pub fn run(c: &dyn Cluster, providers: &[Receiver], out: &mut dyn Write) -> Result<Report, LabError> {
    let repo = repo_root();
    let t0 = Instant::now();
    let step = |out: &mut dyn Write, s: &str| {
        let _ = writeln!(out, "\n== {s} ({:.1}s)", t0.elapsed().as_secs_f64());
    };
    // The examples' pool has no storageClassName: the lab's local volumes
    // serve as the cluster default, as a cloud's default class would.
    c.kubectl(&[
        "annotate",
        "storageclass",
        crate::STORAGE_CLASS,
        "storageclass.kubernetes.io/is-default-class=true",
        "--overwrite",
    ])?;

    step(out, "helm install sendfleet charts/sendfleet (the operator as a pod)");
    // Short poll and sweep intervals so the status follows within seconds;
    // the DNS checks ask the lab's DNS server, never a public resolver.
    let mut helm = c.helm();
    helm.args(["upgrade", "--install", "sendfleet"])
        .arg(repo.join("charts/sendfleet"))
        .args(["--namespace", OP_NS, "--create-namespace"])
        .args(["--set", "image.registry=localhost", "--set", "image.repository=sendfleet", "--set", "image.tag=dev"])
        .args(["--set", "operator.agentPollInterval=2s", "--set", "operator.resyncInterval=10s"])
        .args(["--set", "operator.logFormat=text"])
        .args(["--set", &format!("operator.dnsServers={{{DNS_SERVER}:53}}")])
        .args(["--set", "operator.extraArgs={--dnsbl-interval-override=5s}"]);
    checked(helm)?;
    c.kubectl(&["-n", OP_NS, "rollout", "status", "deployment/sendfleet", "--timeout=180s"])?;
    let _ = write!(out, "{}", c.kubectl(&["-n", OP_NS, "get", "pods", "-o", "wide"])?);

    step(out, "kubectl apply -f examples/ -f hack/demo/providers.yaml");
    if let Err(e) = c.kubectl(&["create", "namespace", NS]) {
        if !e.to_string().contains("AlreadyExists") {
            return Err(e);
        }
    }
    let examples = examples_dir().display().to_string();
    let providers_yaml = repo.join("hack/demo/providers.yaml").display().to_string();
    let _ = write!(out, "{}", c.kubectl(&["apply", "-f", &examples, "-f", &providers_yaml])?);

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

    let submitted = N_A + N_B + N_BUSY;
    step(out, &format!("submit {submitted} messages from a pod through Service {NS}/{POOL} (kube-proxy)"));
    let svc = jsonpath(c, "service", POOL, "{.spec.clusterIP}:{.spec.ports[0].port}");
    c.kubectl(&["delete", "pod", "submit", "-n", NS, "--ignore-not-found", "--wait=true"])?;
    let t_send = Instant::now();
    let script = format!(
        "set -e
  /usr/sbin/smtp-source -N -m {N_A} -s 10 -f app@mail.example.com -t news@example.net {svc} & a=$!
  /usr/sbin/smtp-source -N -m {N_B} -s 10 -f app@mail.example.com -t signup@example.org {svc} & b=$!
  /usr/sbin/smtp-source -N -m {N_BUSY} -s 2 -f app@mail.example.com -t offer@busy.example.org {svc} & c=$!
  wait $a; wait $b; wait $c
  echo submitted {submitted} messages to {svc}"
    );
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

    step(out, &format!("waiting until the providers accepted {EXPECTED} messages"));
    let total = || providers.iter().map(|p| p.deliveries().total()).sum::<usize>();
    wait(&format!("{EXPECTED} messages at the providers"), 120, || (total() >= EXPECTED).then_some(()))?;
    let submit_to_delivered = t_send.elapsed();
    let delivered = total();
    let mut by_client = BTreeMap::new();
    for p in providers {
        for (client, n) in p.deliveries().by_client() {
            *by_client.entry(client).or_insert(0) += n;
        }
    }
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
    let _ = wait("the deferred messages in the pool status", 45, || {
        (sum("{.status.deferredMessages}") == N_BUSY).then_some(())
    });

    step(out, &format!("kubectl get sendingpools,domainpolicies,warmupplans -n {NS}"));
    let _ = write!(out, "{}", c.kubectl(&["get", "sendingpools,domainpolicies,warmupplans", "-n", NS])?);
    step(out, &format!("conditions of SendingPool {NS}/{POOL}"));
    let conds =
        "{range .status.conditions[*]}{.type}{\"\\t\"}{.status}{\"\\t\"}{.reason}{\"\\t\"}{.message}{\"\\n\"}{end}";
    let _ = write!(out, "{}", jsonpath(c, "sendingpool", POOL, conds));
    step(out, &format!("instances of SendingPool {NS}/{POOL} (status, as the operator sees them)"));
    let insts = "{range .status.instances[*]}{.name}{\"\\t\"}{.address}{\"\\t\"}{.phase}{\"\\tweight \"}{.weight}{\"\\tsent \"}{.deliveries.sent}{\"\\tdeferred \"}{.deliveries.deferred}{\"\\tqueued \"}{.queue.deferred}{\"\\twarm-up \"}{.warmup.sentToday}/{.warmup.dailyCap}{\"\\t\"}{.quarantine}{\"\\n\"}{end}";
    let _ = write!(out, "{}", jsonpath(c, "sendingpool", POOL, insts));
    step(out, "what the simulated providers received (their own logs)");
    for p in providers {
        let d = p.deliveries();
        let _ = writeln!(
            out,
            "  {}: {} accepted, by client {:?}, {} deferred",
            p.name,
            d.total(),
            d.by_client(),
            d.deferred
        );
    }
    Ok(Report {
        delivered,
        by_client,
        quarantine,
        status_sent: sum(sent_path),
        status_deferred: sum("{.status.deferredMessages}"),
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
