//! The operator under disruption, against the real API server: SIGKILL in
//! the middle of reconciling 10 pools, an API server restart, and a second
//! replica waiting on the leader-election Lease. Its own test binary (and so
//! its own control plane): these tests kill things other tests rely on.

mod operator_support;

use std::time::Duration;

use operator_support::*;

const T: Duration = Duration::from_secs(90);

/// These tests disrupt the one control plane and operator they share: one
/// at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn all_converged(cp: &sendfleet_lab::ControlPlane, ns: &str, pools: usize, ips: usize) -> bool {
    (0..pools).all(|i| {
        let p = format!("p{i}");
        children(cp, "statefulsets", ns, &p).len() == ips && children(cp, "configmaps", ns, &p).len() == ips
    })
}

/// Egress IPs per pool in the SIGKILL test.
const IPS: usize = 8;

#[test]
fn sigkill_mid_reconcile_then_restart_converges_without_duplicates() {
    let _serial = serial();
    let cp = control_plane(false);
    let ns = cp.namespace("sigkill").unwrap();
    let mut op = Operator::start(cp, "killed");
    let mut all = String::new();
    for i in 0..10 {
        all.push_str(&pool_yaml(ns.name(), &format!("p{i}"), IPS, ""));
        all.push_str("---\n");
    }
    cp.apply(&all).unwrap();
    // Kill as soon as the first objects appear: mid-way through the batch
    // (8 IPs per pool: 80 ConfigMaps and 80 StatefulSets to write).
    let count = |kind: &str| {
        let out = cp.kubectl_run(&["get", kind, "-n", ns.name(), "-l", "sendfleet.io/pool", "-o", "name"]);
        out.map(|s| s.lines().count()).unwrap_or(0)
    };
    wait_for("first ConfigMap", T, || (count("configmaps") > 0).then_some(()));
    op.sigkill();
    let partial = count("statefulsets");
    assert!(partial < 10 * IPS, "the kill came too late to interrupt anything ({partial} StatefulSets already)");
    // The killed process still held the Lease; the new one waits for it to
    // expire (15 s) and then takes over.
    let op2 = Operator::start(cp, "restarted");
    wait_for("10 pools converged", T, || all_converged(cp, ns.name(), 10, IPS).then_some(()));
    // No duplicates: exactly the desired names, each exactly once.
    for i in 0..10 {
        let p = format!("p{i}");
        let want: Vec<String> = (0..IPS).map(|i| format!("{p}-ip{i}")).collect();
        assert_eq!(children(cp, "statefulsets", ns.name(), &p), want);
        assert_eq!(
            children(cp, "services", ns.name(), &p),
            [p.clone(), format!("{p}-agents"), format!("{p}-instances")]
        );
        // Each created once (create, not apply: a second create is refused).
        let secrets = children(cp, "secrets", ns.name(), &p);
        assert_eq!(secrets, [format!("{p}-agent-token"), format!("{p}-recipient-hash-key")], "one hash key, one token");
    }
    drop(op2);
}

#[test]
fn an_api_server_restart_is_survived() {
    let _serial = serial();
    let cp = control_plane(false);
    let ns = cp.namespace("apiserver-restart").unwrap();
    let op = shared_operator(cp);
    cp.apply(&pool_yaml(ns.name(), "before", 2, "")).unwrap();
    wait_for("pool before restart", T, || all_converged_named(cp, ns.name(), "before", 2).then_some(()));
    let down = cp.restart_apiserver().unwrap();
    eprintln!("API server unavailable for {down:?}");
    // Watches resume: a pool created after the restart is reconciled, and
    // a spec change to the old one is seen.
    cp.apply(&pool_yaml(ns.name(), "after", 2, "")).unwrap();
    cp.apply(&pool_yaml(ns.name(), "before", 3, "")).unwrap();
    wait_for("pool created after restart", T, || all_converged_named(cp, ns.name(), "after", 2).then_some(()));
    wait_for("pool changed after restart", T, || all_converged_named(cp, ns.name(), "before", 3).then_some(()));
    let op = op.lock().unwrap_or_else(|p| p.into_inner());
    assert!(op.metrics().is_ok(), "operator died: {}", op.log_tail());
}

fn all_converged_named(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, ips: usize) -> bool {
    children(cp, "statefulsets", ns, pool).len() == ips && children(cp, "configmaps", ns, pool).len() == ips
}

#[test]
fn a_second_replica_waits_and_takes_over_on_shutdown() {
    let _serial = serial();
    let cp = control_plane(false);
    // Serialize with the other tests' operator: this test needs the Lease.
    let shared = shared_operator(cp);
    let mut leader = shared.lock().unwrap_or_else(|p| p.into_inner());
    let ns = cp.namespace("leader").unwrap();
    let follower = Operator::start(cp, "follower");
    cp.apply(&pool_yaml(ns.name(), "one", 1, "")).unwrap();
    wait_for("reconciled by the leader", T, || all_converged_named(cp, ns.name(), "one", 1).then_some(()));
    let lease = get_json(cp, &["lease", "sendfleet-operator", "-n", OPERATOR_NS]).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], leader.identity.as_str());
    assert_eq!(follower.writes(), 0, "the follower wrote while not leading");
    // Graceful shutdown releases the Lease: the follower takes over at once
    // (well inside the 15 s lease duration).
    let status = leader.sigterm();
    assert!(status.success(), "leader exit: {status}: {}", leader.log_tail());
    let t0 = std::time::Instant::now();
    cp.apply(&pool_yaml(ns.name(), "two", 1, "")).unwrap();
    wait_for("reconciled by the new leader", Duration::from_secs(30), || {
        all_converged_named(cp, ns.name(), "two", 1).then_some(())
    });
    let lease = get_json(cp, &["lease", "sendfleet-operator", "-n", OPERATOR_NS]).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "follower");
    assert!(follower.writes() > 0);
    eprintln!("takeover after graceful shutdown: {:?}", t0.elapsed());
    *leader = Operator::start(cp, "op-a");
    drop(follower);
}
