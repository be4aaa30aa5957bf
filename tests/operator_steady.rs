//! Steady state and latency, against the real API server.
//!
//! - Zero writes: with 10 converged pools, a DomainPolicy selecting them
//!   all and a WarmupPlan, and a resync every 10 s (so every pool, the
//!   policy and the plan are reconciled about six times), a quiet minute
//!   shows no mutating request at the API server (its own request counters)
//!   other than the leader-election Lease renewals, which are reported
//!   separately; and no LIST at all (the reconciles read the watch-fed
//!   caches), at most the pools' Secret rechecks as GETs.
//! - Reconcile latency: from a DomainPolicy change to the ConfigMaps that
//!   carry it, p50 and p99 over repeated changes (printed; `make bench`).

mod operator_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use operator_support::*;

const WRITES: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];
const READS: &[&str] = &["GET", "LIST"];

/// Requests served by the API server so far with one of `verbs`, by
/// resource/verb.
fn requests(cp: &sendfleet_lab::ControlPlane, verbs: &[&str]) -> BTreeMap<String, f64> {
    apiserver_requests(cp, |resource, verb| verbs.contains(&verb).then(|| format!("{resource}/{verb}")))
}

/// Mutating requests served by the API server so far, by resource.
fn mutating_requests(cp: &sendfleet_lab::ControlPlane) -> BTreeMap<String, f64> {
    requests(cp, WRITES)
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .filter_map(|(k, v)| {
            let d = v - a.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

#[test]
fn converged_pools_make_no_writes_in_a_quiet_minute_and_latency_is_measured() {
    let cp = control_plane(false);
    let op = Operator::start_with(cp, "steady", &["--resync-interval", "10s"]);
    let ns = cp.namespace("steady").unwrap();
    let mut all = String::new();
    for i in 0..10 {
        all.push_str(&pool_yaml(ns.name(), &format!("p{i}"), 3, "tier: bulk"));
        all.push_str("---\n");
    }
    // The DomainPolicy and WarmupPlan controllers re-derive these on every
    // resync too: they must write nothing either.
    all.push_str(&format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: steady, namespace: {n}}}\nspec:\n  poolSelector: {{matchLabels: {{tier: bulk}}}}\n  domains: [steady.example]\n  excludedIPs: [ip1]\n---\n\
apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {{name: steady, namespace: {n}}}\nspec:\n  steps: [{{day: 1, dailyCap: 50}}]\n",
        n = ns.name()
    ));
    cp.apply(&all).unwrap();
    let accepted = |kind: &str| {
        get_json(cp, &[kind, "steady", "-n", ns.name()])
            .and_then(|o| o["status"]["conditions"][0]["message"].as_str().map(String::from))
    };
    let pools: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    wait_for("DomainPolicy and WarmupPlan status", Duration::from_secs(120), || {
        (accepted("domainpolicy") == Some(format!("applies to pools: {}", pools.join(", ")))
            && accepted("warmupplan").as_deref() == Some("valid; no pool uses it"))
        .then_some(())
    });
    // Converged: status for the current generation, and the first DNSBL
    // sweep (a background task) has reported.
    wait_for("10 pools converged with status", Duration::from_secs(120), || {
        (0..10)
            .all(|i| {
                let Some(p) = get_json(cp, &["sendingpool", &format!("p{i}"), "-n", ns.name()]) else { return false };
                let swept = p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Listed" && c["reason"] != "NotObservedYet"));
                p["status"]["observedGeneration"] == p["metadata"]["generation"]
                    && p["status"]["readyInstances"] == "0/3"
                    && swept
            })
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let reconciles = Operator::reconciles;
    let before = mutating_requests(cp);
    let reads_before = requests(cp, READS);
    let reconciles_before = reconciles(&op);
    let writes_before = op.writes();
    let quiet_secs: u64 = std::env::var("QUIET_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    std::thread::sleep(Duration::from_secs(quiet_secs));
    let after = mutating_requests(cp);
    let reads = diff(&reads_before, &requests(cp, READS));
    let quiet = diff(&before, &after);
    let reconciled = reconciles(&op) - reconciles_before;
    let leases: f64 = quiet.iter().filter(|(k, _)| k.starts_with("leases/")).map(|(_, v)| v).sum();
    let others: BTreeMap<_, _> = quiet.iter().filter(|(k, _)| !k.starts_with("leases/")).collect();
    eprintln!("quiet minute: {reconciled} reconciles of 10 pools, mutating requests other than Lease renewals: {others:?}, Lease renewals: {leases}");
    let expected = 10.0 * (quiet_secs as f64 / 10.0 - 1.0);
    assert!(reconciled >= expected, "the resync should have reconciled every pool several times, saw {reconciled}");
    assert!(others.is_empty(), "writes in a quiet minute: {others:?}\n{}", op.log_tail());
    assert_eq!(op.writes(), writes_before, "the operator counted its own writes");
    // Reads: every reconcile reads the watch-fed caches, so the quiet
    // minute's ~60 pool reconciles (and the claims' and statuses') LIST
    // nothing; what is left are the Lease's GETs and the pools' Secrets,
    // checked live at most every 5 minutes (`cache::SECRET_RECHECK`).
    let reads_other: BTreeMap<_, _> = reads.iter().filter(|(k, _)| !k.starts_with("leases/")).collect();
    eprintln!("quiet minute: reads other than the Lease's: {reads_other:?}");
    let lists: Vec<_> = reads_other.iter().filter(|(k, _)| k.ends_with("/LIST")).collect();
    assert!(lists.is_empty(), "LISTs in a quiet minute (the caches should answer): {lists:?}");
    let gets: f64 = reads_other.values().copied().sum();
    assert!(gets <= 2.0 * 10.0, "reads in a quiet minute beyond the Secrets' rechecks: {reads_other:?}");

    // Latency: DomainPolicy change -> every selected pool's ConfigMap.
    let mut samples = vec![];
    for round in 0..20u32 {
        let mpm = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20][round as usize % 10];
        let conns = 1 + round;
        let yaml = format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: lat, namespace: {}}}\nspec:\n  poolSelector: {{matchLabels: {{tier: bulk}}}}\n  domains: [lat.example]\n  throttle: {{connections: {conns}, messagesPerMinute: {mpm}}}\n",
            ns.name()
        );
        let t0 = Instant::now();
        cp.apply(&yaml).unwrap();
        let want = format!("dp-lat_destination_concurrency_limit = {conns}\n");
        wait_for("ConfigMap carries the change", Duration::from_secs(30), || {
            let v = get_json(cp, &["configmaps", "-n", ns.name(), "-l", "sendfleet.io/pool=p9"])?;
            v["items"]
                .as_array()?
                .iter()
                .all(|cm| cm["data"]["main.cf"].as_str().is_some_and(|m| m.contains(&want)))
                .then_some(())
        });
        samples.push(t0.elapsed());
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "reconcile latency, DomainPolicy change -> ConfigMaps of the last of 10 selected pools (30 ConfigMaps), {} samples, measured through kubectl polling: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(), p(0.5), p(0.99), samples[samples.len() - 1]
    );
    assert!(p(0.5) < Duration::from_secs(10));
}
