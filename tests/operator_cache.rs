//! The operator at scale, against the real API server: what a change wakes
//! and what an agent can hold up.
//!
//! - A DomainPolicy change reconciles the pools it selects (and the ones it
//!   stops selecting), not every pool of the namespace: counted by the
//!   operator's own reconcile counter, with twelve pools of which two are
//!   selected.
//! - A pool whose agent accepts the connection and never answers gets a
//!   DomainPolicy change into its ConfigMap as fast as a pool with no agent:
//!   agents are polled on the poller's own schedule, never inside a
//!   reconcile (before, every reconcile of that pool waited the 3 s poll
//!   timeout).

mod operator_support;

use std::time::{Duration, Instant};

use operator_support::*;
use sendfleet_lab::kit::{wait_until, Pool};

const T: Duration = Duration::from_secs(120);

fn policy(ns: &str, tier: &str, connections: u32) -> String {
    format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: sel, namespace: {ns}}}\nspec:\n  poolSelector: {{matchLabels: {{tier: {tier}}}}}\n  domains: [sel.example]\n  throttle: {{connections: {connections}, messagesPerMinute: 6}}\n"
    )
}

/// Whether every ConfigMap of `pool` has `main.cf` containing `text`.
fn config_maps_carry(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, text: &str) -> bool {
    get_json(cp, &["configmaps", "-n", ns, "-l", &format!("sendfleet.io/pool={pool}")])
        .and_then(|v| v["items"].as_array().cloned())
        .is_some_and(|items| {
            !items.is_empty() && items.iter().all(|cm| cm["data"]["main.cf"].as_str().is_some_and(|m| m.contains(text)))
        })
}

#[test]
fn a_domain_policy_change_reconciles_only_the_pools_it_selects_and_unselects() {
    let cp = control_plane(false);
    let op = Operator::start_with(cp, "selective", &["--no-leader-election", "--resync-interval", "10m"]);
    let ns = cp.namespace("selective").unwrap();
    let n = ns.name();
    let mut all = String::new();
    for i in 0..12 {
        let tier = if i < 2 { "a" } else { "b" };
        all.push_str(&pool_yaml(n, &format!("p{i}"), 1, &format!("tier: {tier}")));
        all.push_str("---\n");
    }
    all.push_str(&policy(n, "a", 1));
    cp.apply(&all).unwrap();
    let marker = |c: u32| format!("dp-sel_destination_concurrency_limit = {c}\n");
    wait_until("the selected pools carry the policy", T, || {
        (0..2).all(|i| config_maps_carry(cp, n, &format!("p{i}"), &marker(1)))
    });
    // Converged: status at the generation, and the first DNS sweep (a
    // background task that wakes its pool when done) reported.
    wait_until("all 12 pools converged and swept", T, || {
        (0..12).all(|i| {
            get_json(cp, &["sendingpool", &format!("p{i}"), "-n", n]).is_some_and(|p| {
                let swept = p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Listed" && c["reason"] != "NotObservedYet"));
                p["status"]["observedGeneration"] == p["metadata"]["generation"] && swept
            })
        })
    });
    // And quiet: the sweeps' wake-ups (an address leaving Pending rewrites
    // its pool's ConfigMap and endpoints) done, no reconcile for 3 s.
    let mut last = op.reconciles();
    wait_until("no reconcile for 3 s", T, || {
        std::thread::sleep(Duration::from_secs(3));
        let now = op.reconciles();
        std::mem::replace(&mut last, now) == now
    });
    for i in 2..12 {
        assert!(!config_maps_carry(cp, n, &format!("p{i}"), "dp-sel"), "p{i} is not selected");
    }

    // A change of the policy: only p0 and p1 are reconciled. Each reconcile
    // that writes its ConfigMap is woken once more by that write (and finds
    // nothing to do), so a selected pool costs up to about three; the
    // namespace-wide mapping cost at least twelve.
    let before = op.reconciles();
    cp.apply(&policy(n, "a", 2)).unwrap();
    wait_until("the change reached p0 and p1", T, || {
        (0..2).all(|i| config_maps_carry(cp, n, &format!("p{i}"), &marker(2)))
    });
    std::thread::sleep(Duration::from_secs(3));
    let woken = op.reconciles() - before;
    eprintln!("DomainPolicy change selecting 2 of 12 pools: {woken} pool reconciles");
    assert!(
        (2.0..=7.0).contains(&woken),
        "reconciles after a change selecting 2 of 12 pools: {woken}\n{}",
        op.log_tail()
    );

    // A selector that no longer matches p0/p1 wakes them (the old version
    // selected them) and their ConfigMaps drop the policy's transport.
    let before = op.reconciles();
    cp.apply(&policy(n, "c", 2)).unwrap();
    wait_until("p0 and p1 dropped the unselecting policy", T, || {
        (0..2).all(|i| {
            get_json(cp, &["configmaps", "-n", n, "-l", &format!("sendfleet.io/pool=p{i}")])
                .and_then(|v| v["items"].as_array().cloned())
                .is_some_and(|items| {
                    !items.is_empty()
                        && items.iter().all(|cm| cm["data"]["main.cf"].as_str().is_some_and(|m| !m.contains("dp-sel")))
                })
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    let woken = op.reconciles() - before;
    eprintln!("DomainPolicy change unselecting 2 of 12 pools: {woken} pool reconciles");
    assert!((2.0..=7.0).contains(&woken), "reconciles after unselecting 2 of 12 pools: {woken}\n{}", op.log_tail());
}

#[test]
fn a_hanging_agent_does_not_delay_any_reconcile() {
    let cp = control_plane(false);
    let op = Operator::start_with(
        cp,
        "hanging",
        &["--no-leader-election", "--agent-poll-interval", "1s", "--resync-interval", "10m"],
    );
    let ns = cp.namespace("hanging").unwrap();
    let n = ns.name();
    // The hanging agent: its address on this test's own loopback, a socket
    // that accepts (the kernel completes the handshake) and never answers.
    let addr = "198.19.7.10";
    sendfleet_lab::process::add_lo_address(addr).unwrap();
    let _hang = std::net::TcpListener::bind((addr, sendfleet::core::contract::AGENT_HTTP_PORT)).unwrap();
    let hang = Pool::named("hang").in_ns(n).host_network().with_ip("a", addr).labeled("tier", "x");
    let calm = Pool::named("calm").in_ns(n).with_ips(1).labeled("tier", "x");
    cp.apply(&format!("{}---\n{}---\n{}", hang.yaml(), calm.yaml(), policy(n, "x", 1))).unwrap();
    running_pod(cp, n, "hang", "a");
    let marker = |c: u32| format!("dp-sel_destination_concurrency_limit = {c}\n");
    wait_until("both pools carry the policy", T, || {
        ["hang", "calm"].iter().all(|p| config_maps_carry(cp, n, p, &marker(1)))
    });
    // Let the poller ask the hanging agent a few times (1 s rounds, each
    // poll giving up after 3 s).
    std::thread::sleep(Duration::from_secs(5));

    // Each change timed to each pool's ConfigMap by the same loop: the
    // pool with the hanging agent must not lag the pool without one.
    let mut worst_lag = Duration::ZERO;
    for c in 2..=6u32 {
        let t0 = Instant::now();
        cp.apply(&policy(n, "x", c)).unwrap();
        let (mut hang_at, mut calm_at) = (None, None);
        wait_until("the change reached both pools", T, || {
            for (pool, at) in [("hang", &mut hang_at), ("calm", &mut calm_at)] {
                if at.is_none() && config_maps_carry(cp, n, pool, &marker(c)) {
                    *at = Some(t0.elapsed());
                }
            }
            hang_at.is_some() && calm_at.is_some()
        });
        let (hang_at, calm_at) = (hang_at.unwrap(), calm_at.unwrap());
        eprintln!("change {c}: pool with a hanging agent {hang_at:?}, pool without agents {calm_at:?}");
        worst_lag = worst_lag.max(hang_at.saturating_sub(calm_at));
    }
    // Polled inside the reconcile, every change waited the 3 s poll timeout.
    assert!(
        worst_lag < Duration::from_millis(1500),
        "the pool with a hanging agent lagged by {worst_lag:?}\n{}",
        op.log_tail()
    );
}
