//! Egress addresses have one owner, cluster-wide, on the real API server:
//! a pool listing an address another namespace's pool owns is refused
//! (`Ready=False AddressInUse` naming the owner) and gets no object (a
//! running pool that adds one keeps what it ran, nothing for the new
//! address, its EndpointSlice unchanged); two
//! pools created at the same moment get exactly one owner; ownership
//! survives an operator restart; deleting the owner lets the waiting pool
//! proceed; an address an EndpointSlice would refuse is refused at
//! admission; a namespace user gets no right on claims.
//!
//! The operator runs as its own process under exactly the RBAC of
//! src/operator/rbac.rs. Addresses are 10.250.<test>.x: nothing is sent
//! (no kubelet runs), they only have to be distinct per test.

mod operator_support;

use std::time::Duration;

use operator_support::*;
use sendfleet_lab::kit::Pool;
use sendfleet_lab::ControlPlane;

const T: Duration = Duration::from_secs(90);

/// The restart test replaces the shared operator: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pool's `Ready` condition (reason, message), once it has one.
fn ready(cp: &ControlPlane, ns: &str, pool: &str) -> Option<(String, String)> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    Some((c["reason"].as_str()?.to_string(), c["message"].as_str()?.to_string()))
}

/// The pool's `Ready` once it says `AddressInUse` and the status is of the
/// current generation: its message.
fn refused(cp: &ControlPlane, ns: &str, pool: &str) -> Option<String> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    (c["reason"] == "AddressInUse" && c["observedGeneration"] == p["metadata"]["generation"])
        .then(|| c["message"].as_str().unwrap_or_default().to_string())
}

/// Owner (`namespace/name`) of the claim on an address, if claimed.
fn owner(cp: &ControlPlane, claim: &str) -> Option<String> {
    let c = get_json(cp, &["egressaddressclaim", claim])?;
    Some(format!("{}/{}", c["spec"]["pool"]["namespace"].as_str()?, c["spec"]["pool"]["name"].as_str()?))
}

/// Every object the operator writes for a pool, by kind (empty: none).
fn written(cp: &ControlPlane, ns: &str, pool: &str) -> Vec<String> {
    ["statefulsets", "configmaps", "services", "endpointslices", "poddisruptionbudgets", "serviceaccounts", "secrets"]
        .iter()
        .flat_map(|k| children(cp, k, ns, pool).into_iter().map(move |n| format!("{k}/{n}")))
        .collect()
}

/// The addresses of the pool's submission EndpointSlice, sorted.
fn endpoint_addresses(cp: &ControlPlane, ns: &str, pool: &str) -> Option<Vec<String>> {
    let s = get_json(cp, &["endpointslice", &format!("{pool}-submission"), "-n", ns])?;
    let mut a: Vec<String> = s["endpoints"]
        .as_array()?
        .iter()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    a.sort();
    Some(a)
}

#[test]
fn an_owned_address_refuses_another_namespace_across_restarts_until_the_owner_goes() {
    let _serial = serial();
    // With the garbage collector: the owner's StatefulSet carries the
    // address (its claim is held while it does) until the collector removes
    // it after the pool. `deletionPolicy: Retain` below: no agent runs here
    // to report an empty queue, and a draining pool keeps its addresses.
    let cp = control_plane(true);
    let ns1 = cp.namespace("claims-owner").unwrap();
    let ns2 = cp.namespace("claims-other").unwrap();
    let (ns1, ns2) = (ns1.name(), ns2.name());
    let op = shared_operator(cp);

    cp.apply(&Pool::named("a").in_ns(ns1).with_ip("ia", "10.250.1.11").spec("deletionPolicy: Retain").yaml()).unwrap();
    wait_for("pool a applied", T, || (children(cp, "statefulsets", ns1, "a") == ["a-ia"]).then_some(()));
    assert_eq!(owner(cp, "10-250-1-11").as_deref(), Some(format!("{ns1}/a").as_str()));

    // b lists a's address (second) and one of its own: the whole pool is
    // refused, naming the owner and the field.
    let b = Pool::named("b").in_ns(ns2).with_ip("ib", "10.250.1.12").with_ip("ia", "10.250.1.11");
    cp.apply(&b.yaml()).unwrap();
    let message = wait_for("b refused", T, || refused(cp, ns2, "b"));
    assert!(message.contains(&format!("SendingPool {ns1}/a")), "{message}");
    assert!(message.contains("spec.egressIPs[1].address: 10.250.1.11"), "{message}");
    assert_eq!(written(cp, ns2, "b"), Vec::<String>::new(), "nothing is written for a refused pool");
    // Claims are taken in address order and none after the first refusal:
    // b's other address stays free (no pool can hold one address each of
    // two and wait forever).
    assert_eq!(owner(cp, "10-250-1-12"), None);

    // Restart: the claims are API objects, the new operator refuses b again.
    {
        let mut op = op.lock().unwrap_or_else(|p| p.into_inner());
        op.sigkill();
        *op = Operator::start(cp, "op-restarted");
    }
    // A spec change after the restart (new generation) is judged by the new
    // operator: still refused, still nothing written, a still the owner.
    cp.apply(&b.clone().spec("backlog: {warnAge: 5h, criticalAge: 12h}").yaml()).unwrap();
    let message = wait_for("b refused after the restart", T, || refused(cp, ns2, "b"));
    assert!(message.contains(&format!("{ns1}/a")), "{message}");
    assert_eq!(written(cp, ns2, "b"), Vec::<String>::new());
    assert_eq!(owner(cp, "10-250-1-11").as_deref(), Some(format!("{ns1}/a").as_str()));
    assert_eq!(children(cp, "statefulsets", ns1, "a"), ["a-ia"]);

    // The owner goes: the claim is released and b proceeds at once (not on
    // the minute retry), owning both addresses; its Service's EndpointSlice
    // points at exactly its own addresses.
    let t0 = std::time::Instant::now();
    cp.kubectl_run(&["delete", "sendingpool", "a", "-n", ns1, "--wait=false"]).unwrap();
    wait_for("b owns the address", T, || (owner(cp, "10-250-1-11")? == format!("{ns2}/b")).then_some(()));
    wait_for("b applied", T, || (children(cp, "statefulsets", ns2, "b") == ["b-ia", "b-ib"]).then_some(()));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(45), "b waited for the retry, not the release: {took:?}");
    assert_eq!(owner(cp, "10-250-1-12").as_deref(), Some(format!("{ns2}/b").as_str()));
    let addrs = wait_for("b's EndpointSlice", T, || endpoint_addresses(cp, ns2, "b"));
    assert_eq!(addrs, ["10.250.1.11", "10.250.1.12"]);
    let (reason, message) =
        wait_for("b's Ready after the release", T, || ready(cp, ns2, "b").filter(|(r, _)| r != "AddressInUse"));
    assert_ne!(reason, "AddressInUse", "{message}");
}

#[test]
fn a_running_pool_that_adds_an_owned_address_writes_nothing_for_it() {
    let _serial = serial();
    let cp = control_plane(false);
    let ns1 = cp.namespace("claims-running-1").unwrap();
    let ns2 = cp.namespace("claims-running-2").unwrap();
    let (ns1, ns2) = (ns1.name(), ns2.name());
    let _op = shared_operator(cp);
    cp.apply(&Pool::named("c").in_ns(ns1).with_ip("ia", "10.250.4.11").yaml()).unwrap();
    let d = Pool::named("d").in_ns(ns2).with_ip("ib", "10.250.4.12");
    cp.apply(&d.yaml()).unwrap();
    wait_for("c and d applied", T, || {
        (children(cp, "statefulsets", ns1, "c") == ["c-ia"] && children(cp, "statefulsets", ns2, "d") == ["d-ib"])
            .then_some(())
    });
    wait_for("d's EndpointSlice", T, || endpoint_addresses(cp, ns2, "d").filter(|a| a == &["10.250.4.12"]));
    // d adds c's address: refused as a whole; what it ran before stays as
    // it was, and nothing points at c's address.
    cp.apply(&d.with_ip("ia", "10.250.4.11").yaml()).unwrap();
    let message = wait_for("d refused", T, || refused(cp, ns2, "d"));
    assert!(message.contains(&format!("{ns1}/c")), "{message}");
    assert_eq!(children(cp, "statefulsets", ns2, "d"), ["d-ib"]);
    assert_eq!(children(cp, "configmaps", ns2, "d"), ["d-ib"]);
    assert_eq!(endpoint_addresses(cp, ns2, "d").unwrap(), ["10.250.4.12"]);
    assert_eq!(owner(cp, "10-250-4-11"), Some(format!("{ns1}/c")));
    assert_eq!(owner(cp, "10-250-4-12"), Some(format!("{ns2}/d")), "d keeps the address it owns");
}

#[test]
fn pools_created_at_the_same_moment_get_exactly_one_owner() {
    let _serial = serial();
    let cp = control_plane(false);
    let ns1 = cp.namespace("claims-race-1").unwrap();
    let ns2 = cp.namespace("claims-race-2").unwrap();
    let (ns1, ns2) = (ns1.name(), ns2.name());
    let _op = shared_operator(cp);
    for round in 0..5 {
        // The same two addresses, listed in opposite orders: neither pool
        // may end up with one address each (lock ordering).
        let (x, y) = (format!("10.250.2.{}", 10 + 2 * round), format!("10.250.2.{}", 11 + 2 * round));
        let name = format!("r{round}");
        let p = Pool::named(&name).in_ns(ns1).with_ip("ia", &x).with_ip("ib", &y).yaml();
        let q = Pool::named(&name).in_ns(ns2).with_ip("ib", &y).with_ip("ia", &x).yaml();
        std::thread::scope(|s| {
            let a = s.spawn(|| cp.kubectl_stdin(&["create", "-f", "-"], &p));
            let b = s.spawn(|| cp.kubectl_stdin(&["create", "-f", "-"], &q));
            a.join().unwrap().unwrap();
            b.join().unwrap().unwrap();
        });
        let (winner, loser) = wait_for("one pool refused", T, || {
            if refused(cp, ns1, &name).is_some() {
                Some((ns2, ns1))
            } else if refused(cp, ns2, &name).is_some() {
                Some((ns1, ns2))
            } else {
                None
            }
        });
        let claims = [x.replace('.', "-"), y.replace('.', "-")];
        for c in &claims {
            assert_eq!(owner(cp, c), Some(format!("{winner}/{name}")), "round {round}: claim {c}");
        }
        wait_for("the winner applied", T, || (children(cp, "statefulsets", winner, &name).len() == 2).then_some(()));
        let message = refused(cp, loser, &name).expect("the loser stays refused");
        assert!(message.contains(&format!("SendingPool {winner}/{name}")), "round {round}: {message}");
        assert_eq!(written(cp, loser, &name), Vec::<String>::new(), "round {round}");
        assert!(refused(cp, winner, &name).is_none(), "round {round}: both refused");
    }
}

#[test]
fn an_address_an_endpoint_slice_refuses_is_refused_at_admission() {
    let cp = control_plane(false);
    let ns = cp.namespace("claims-admission").unwrap();
    for address in ["169.254.10.1", "fe80::1", "224.0.0.1", "0.0.0.0", "127.0.0.1"] {
        let yaml = Pool::named("p").in_ns(ns.name()).with_ip("a", address).yaml();
        let err = match cp.kubectl_stdin(&["create", "-f", "-"], &yaml) {
            Ok(out) => panic!("{address}: accepted by the API server: {out}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("spec.egressIPs[0].address"), "{address}: the error should name the field: {err}");
        assert!(err.contains("global unicast"), "{address}: {err}");
    }
    assert!(get_json(cp, &["sendingpool", "p", "-n", ns.name()]).is_none());
}

#[test]
fn a_namespace_user_cannot_create_or_delete_claims() {
    let _serial = serial();
    let cp = control_plane(false);
    let ns = cp.namespace("claims-rbac").unwrap();
    // Everything on sendfleet.io in their own namespace: a Role cannot
    // reach the cluster-scoped claims.
    cp.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pools, namespace: {0}}}\n\
rules: [{{apiGroups: [sendfleet.io], resources: ['*'], verbs: ['*']}}]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: pools, namespace: {0}}}\n\
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pools}}\nsubjects: [{{kind: User, name: alice}}]\n",
        ns.name()
    ))
    .unwrap();
    let can = |verb: &str, resource: &str, ns: &str| {
        cp.kubectl_run(&["auth", "can-i", verb, resource, "--as", "alice", "-n", ns]).is_ok_and(|s| s.trim() == "yes")
    };
    assert!(can("create", "sendingpools.sendfleet.io", ns.name()), "the fixture grants pools");
    // Squatting an address by creating its claim first: refused (acting
    // as alice, for real).
    let claim = "apiVersion: sendfleet.io/v1alpha1\nkind: EgressAddressClaim\nmetadata: {name: 10-250-3-12}\n\
spec: {address: 10.250.3.12, pool: {namespace: other, name: pool, uid: u}}\n";
    let err = cp.kubectl_stdin(&["--as", "alice", "create", "-f", "-"], claim).unwrap_err().to_string();
    assert!(err.contains("forbidden"), "alice created a claim: {err}");
    // Her own pool's claim, taken by the operator: she can neither delete
    // it (to free the address) nor change it.
    let _op = shared_operator(cp);
    let pool = Pool::named("p").in_ns(ns.name()).with_ip("ia", "10.250.3.11").yaml();
    cp.kubectl_stdin(&["--as", "alice", "create", "-f", "-"], &pool).unwrap();
    wait_for("the operator claims the address", T, || owner(cp, "10-250-3-11"));
    for verb in
        [&["delete", "egressaddressclaim", "10-250-3-11"][..], &["label", "egressaddressclaim", "10-250-3-11", "a=b"]]
    {
        let mut args = vec!["--as", "alice"];
        args.extend_from_slice(verb);
        let err = cp.kubectl_run(&args).unwrap_err().to_string();
        assert!(err.contains("forbidden"), "alice may {verb:?}: {err}");
    }
    // A claim changes owner only by delete and create, even for an
    // administrator: its spec is immutable.
    let patch = r#"{"spec":{"pool":{"uid":"w"}}}"#;
    let err = cp
        .kubectl_run(&["patch", "egressaddressclaim", "10-250-3-11", "--type=merge", "-p", patch])
        .unwrap_err()
        .to_string();
    assert!(err.contains("immutable"), "{err}");
}
