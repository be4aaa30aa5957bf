//! The operator at scale, on the real API server (`make bench-operator`):
//! 20, 100 and 200 pools × 5 egress IPs with 50 DomainPolicies, one
//! operator per size (watching only that size's namespace), no kubelet (pods
//! need not run; no agent answers).
//!
//! Each size prints, every figure beside its peer from the same run:
//! - the time from creating everything to every pool's objects applied
//!   (each pool's status at its generation: the status is the pipeline's
//!   last step) and the operator's CPU time and RSS then;
//! - API requests per minute at rest, by verb, from the API server's own
//!   `apiserver_request_total` (the operator is the only client; writes must
//!   be 0), and during a minute of steady changes (one DomainPolicy change
//!   every 2 s);
//! - the latency from a DomainPolicy change to the last affected ConfigMap
//!   written (10 ConfigMaps: the policy selects 2 pools), observed by a
//!   watch, p50/p99, as a ratio to the API server's own latency for a plain
//!   server-side apply of a ConfigMap observed by the same kind of watch in
//!   the same run.
//!
//! The policies: `probe` selects the two pools labelled `probe: "yes"` (its
//! changes are the ones timed), the other 49 each select the tenth of the
//! pools of their `team`, so every pool renders about five policies.

mod operator_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use operator_support::*;
use sendfleet::core::api::DomainPolicy;
use sendfleet_lab::kit::wait_until;
use sendfleet_lab::ControlPlane;

const IPS: usize = 5;
const POLICIES: usize = 50;

/// Requests the API server served so far, by verb (resource requests
/// other than the Lease's).
fn requests_by_verb(cp: &ControlPlane) -> BTreeMap<String, f64> {
    apiserver_requests(cp, |resource, verb| (resource != "leases").then(|| verb.to_string()))
}

fn per_minute(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, secs: f64) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), ((v - a.get(k).copied().unwrap_or(0.0)) * 60.0 / secs).round()))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

const WRITE_VERBS: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

fn writes(m: &BTreeMap<String, f64>) -> f64 {
    // `+ 0.0`: a sum of nothing is -0.0, printed "-0".
    m.iter().filter(|(k, _)| WRITE_VERBS.contains(&k.as_str())).map(|(_, v)| v).sum::<f64>() + 0.0
}

fn reads(m: &BTreeMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| ["GET", "LIST"].contains(&k.as_str())).map(|(_, v)| v).sum()
}

/// (user+system CPU seconds, RSS in MiB) of process `pid`.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    (ticks / 100.0, rss_kib / 1024.0)
}

fn policy_yaml(ns: &str, k: usize, connections: u32) -> String {
    let selector = if k == 0 { "{probe: \"yes\"}".to_string() } else { format!("{{team: t{}}}", k % 10) };
    format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: pol{k}, namespace: {ns}}}\nspec:\n  poolSelector: {{matchLabels: {selector}}}\n  domains: [d{k}.example]\n  throttle: {{connections: {connections}, messagesPerMinute: 6}}\n"
    )
}

/// Watches ConfigMaps of a namespace and records, per name, when each
/// version carrying `needle(text)` was first seen.
struct Seen {
    events: Arc<Mutex<Vec<(Instant, String, String)>>>,
}

impl Seen {
    fn start(rt: &tokio::runtime::Runtime, client: kube::Client, ns: &str) -> Seen {
        let events: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
        let api: Api<ConfigMap> = Api::namespaced(client, ns);
        let sink = events.clone();
        rt.spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(Ok(cm)) = stream.next().await {
                let text = cm.data.as_ref().and_then(|d| d.get("main.cf").or(d.get("v"))).cloned().unwrap_or_default();
                sink.lock().unwrap().push((Instant::now(), cm.metadata.name.unwrap_or_default(), text));
            }
        });
        Seen { events }
    }

    /// When the last of `names` was first seen carrying `text` after `since`.
    fn last_carrying(&self, names: &[String], text: &str, since: Instant) -> Option<Instant> {
        let events = self.events.lock().unwrap();
        let mut last = since;
        for n in names {
            let t = events.iter().find(|(t, name, body)| *t >= since && name == n && body.contains(text))?.0;
            last = last.max(t);
        }
        Some(last)
    }
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

struct Figures {
    pools: usize,
    converge: Duration,
    cpu_converge: f64,
    rss: f64,
    rest: BTreeMap<String, f64>,
    cpu_rest: f64,
    trickle: BTreeMap<String, f64>,
    cpu_trickle: f64,
    p50: Duration,
    p99: Duration,
    peer_p50: Duration,
    peer_p99: Duration,
}

fn run_size(cp: &'static ControlPlane, rt: &tokio::runtime::Runtime, client: &kube::Client, pools: usize) -> Figures {
    let ns = cp.namespace(&format!("scale{pools}")).unwrap();
    let n = ns.name().to_string();
    let op = Operator::start_with(cp, &format!("scale{pools}"), &["--no-leader-election", "--watch-namespace", &n]);
    let pid = op.pid();
    let seen = Seen::start(rt, client.clone(), &n);

    let mut all = String::new();
    for i in 0..pools {
        let probe = if i < 2 { ", probe: \"yes\"" } else { "" };
        all.push_str(&pool_yaml(&n, &format!("p{i}"), IPS, &format!("team: t{}{probe}", i % 10)));
        all.push_str("---\n");
    }
    for k in 0..POLICIES {
        all.push_str(&policy_yaml(&n, k, 1));
        all.push_str("---\n");
    }
    let (cpu0, _) = cpu_and_rss(pid);
    let t0 = Instant::now();
    cp.apply(&all).unwrap();
    wait_until(&format!("{pools} pools applied"), Duration::from_secs(900), || {
        let Some(list) = get_json(cp, &["sendingpools", "-n", &n]) else { return false };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items.len() == pools
            && items.iter().all(|p| {
                p["status"]["observedGeneration"] == p["metadata"]["generation"]
                    && p["status"]["readyInstances"] == format!("0/{IPS}")
            })
    });
    let converge = t0.elapsed();
    // Settled: the first DNS sweep (a background task; no DNS server here)
    // reported into every pool's status, so the quiet minute is quiet.
    wait_until(&format!("{pools} pools swept"), Duration::from_secs(900), || {
        let Some(list) = get_json(cp, &["sendingpools", "-n", &n]) else { return false };
        list["items"].as_array().is_some_and(|items| {
            items.iter().all(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Listed" && c["reason"] != "NotObservedYet"))
            })
        })
    });
    let (cpu1, rss) = cpu_and_rss(pid);
    let sts = get_json(cp, &["statefulsets", "-n", &n]).unwrap()["items"].as_array().map_or(0, Vec::len);
    assert_eq!(sts, pools * IPS, "every instance's StatefulSet");

    // At rest: a quiet minute after the aftermath of the creation.
    std::thread::sleep(Duration::from_secs(10));
    let rest_secs = 60.0;
    let (a, c0) = (requests_by_verb(cp), cpu_and_rss(pid).0);
    std::thread::sleep(Duration::from_secs_f64(rest_secs));
    let (b, c1) = (requests_by_verb(cp), cpu_and_rss(pid).0);
    let rest = per_minute(&a, &b, rest_secs);

    // A steady trickle: the probe policy changes every 2 s for a minute;
    // each change is timed to the last of its 10 ConfigMaps by the watch.
    let policies: Api<DomainPolicy> = Api::namespaced(client.clone(), &n);
    let probe_cms: Vec<String> = (0..2).flat_map(|i| (0..IPS).map(move |j| format!("p{i}-{}", ip_name(j)))).collect();
    let (a, c2) = (requests_by_verb(cp), cpu_and_rss(pid).0);
    let trickle_start = Instant::now();
    let mut samples = vec![];
    for round in 0..30u32 {
        let tick = trickle_start + Duration::from_secs(2 * round as u64);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let connections = 2 + round;
        let body: serde_json::Value = serde_yaml::from_str(&policy_yaml(&n, 0, connections)).unwrap();
        let t = Instant::now();
        rt.block_on(policies.patch("pol0", &PatchParams::apply("bench").force(), &Patch::Apply(&body))).unwrap();
        let text = format!("dp-pol0_destination_concurrency_limit = {connections}\n");
        let done = sendfleet_lab::kit::wait_for("the probe's ConfigMaps", Duration::from_secs(30), || {
            seen.last_carrying(&probe_cms, &text, t)
        });
        samples.push(done - t);
    }
    std::thread::sleep((trickle_start + Duration::from_secs(60)).saturating_duration_since(Instant::now()));
    let trickle_secs = trickle_start.elapsed().as_secs_f64();
    let (b, c3) = (requests_by_verb(cp), cpu_and_rss(pid).0);
    let trickle = per_minute(&a, &b, trickle_secs);

    // The peer: the API server's own latency for a plain server-side apply
    // of a ConfigMap, observed by the same watch, same sample count.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &n);
    let mut peer = vec![];
    for round in 0..30u32 {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "peer", "namespace": n},
            "data": {"v": format!("round {round}\n")},
        });
        let t = Instant::now();
        rt.block_on(cms.patch("peer", &PatchParams::apply("bench").force(), &Patch::Apply(&body))).unwrap();
        let done = sendfleet_lab::kit::wait_for("the peer ConfigMap", Duration::from_secs(30), || {
            seen.last_carrying(&["peer".to_string()], &format!("round {round}\n"), t)
        });
        peer.push(done - t);
    }
    drop(op);
    Figures {
        pools,
        converge,
        cpu_converge: cpu1 - cpu0,
        rss,
        rest,
        cpu_rest: (c1 - c0) / rest_secs,
        trickle,
        cpu_trickle: (c3 - c2) / trickle_secs,
        p50: percentile(&mut samples, 0.5),
        p99: percentile(&mut samples, 0.99),
        peer_p50: percentile(&mut peer, 0.5),
        peer_p99: percentile(&mut peer, 0.99),
    }
}

/// The instance names `Pool::with_ips` gives.
fn ip_name(j: usize) -> String {
    format!("ip{j}")
}

#[test]
fn operator_at_20_100_and_200_pools() {
    let cp = control_plane(false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    });
    let sizes: Vec<usize> = std::env::var("SCALE_POOLS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20, 100, 200]);
    let mut figures = vec![];
    for &pools in &sizes {
        let f = run_size(cp, &rt, &client, pools);
        eprintln!(
            "{} pools x {IPS} IPs, {POLICIES} DomainPolicies: applied in {:.1?} (operator CPU {:.1} s, RSS {:.0} MiB); \
             at rest {:?}/min (operator CPU {:.1}%); trickle (a change every 2 s) {:?}/min (CPU {:.1}%); \
             change -> last of 10 ConfigMaps p50 {:?} p99 {:?}, plain SSA of a ConfigMap p50 {:?} p99 {:?}: ratio p50 {:.1}x p99 {:.1}x",
            f.pools, f.converge, f.cpu_converge, f.rss, f.rest, f.cpu_rest * 100.0, f.trickle, f.cpu_trickle * 100.0,
            f.p50, f.p99, f.peer_p50, f.peer_p99,
            f.p50.as_secs_f64() / f.peer_p50.as_secs_f64(), f.p99.as_secs_f64() / f.peer_p99.as_secs_f64()
        );
        figures.push(f);
    }
    eprintln!("\n| pools x IPs | applied in | CPU (s) | RSS (MiB) | at rest /min | writes at rest | trickle /min | change p50 / p99 | plain SSA p50 / p99 | ratio p50 / p99 |");
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &figures {
        eprintln!(
            "| {} x {IPS} | {:.1} s | {:.1} | {:.0} | {:?} | {} | {:?} | {} / {} ms | {} / {} ms | {:.1}x / {:.1}x |",
            f.pools,
            f.converge.as_secs_f64(),
            f.cpu_converge,
            f.rss,
            f.rest,
            writes(&f.rest),
            f.trickle,
            f.p50.as_millis(),
            f.p99.as_millis(),
            f.peer_p50.as_millis(),
            f.peer_p99.as_millis(),
            f.p50.as_secs_f64() / f.peer_p50.as_secs_f64(),
            f.p99.as_secs_f64() / f.peer_p99.as_secs_f64(),
        );
    }
    for f in &figures {
        assert_eq!(writes(&f.rest), 0.0, "{} pools: writes at rest {:?}", f.pools, f.rest);
        assert!(f.p99 < Duration::from_secs(1), "{} pools: change -> ConfigMap p99 {:?}", f.pools, f.p99);
    }
    // Reads at rest do not grow with pools squared: from the smallest to the
    // largest size they grow at most linearly (plus the watches' constant).
    if let (Some(small), Some(large)) = (figures.first(), figures.last()) {
        let scale = large.pools as f64 / small.pools as f64;
        assert!(
            reads(&large.rest) <= reads(&small.rest) * scale + 10.0,
            "reads at rest {:?} at {} pools vs {:?} at {}",
            large.rest,
            large.pools,
            small.rest,
            small.pools
        );
    }
}
