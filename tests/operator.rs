//! The operator against a real kube-apiserver (+ kube-controller-manager for
//! garbage collection): admission of the CRDs, the objects a pool produces,
//! reactions to policy and spec changes, deletion, and status conditions.
//! The operator runs as its own process with exactly the RBAC of
//! src/operator/rbac.rs, authenticated as its ServiceAccount.

mod operator_support;

use std::time::Duration;

use operator_support::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn invalid_resources_are_refused_at_admission_naming_the_field() {
    let cp = control_plane(false);
    let ns = cp.namespace("admission").unwrap();
    let pool = |spec: &str| {
        format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: p, namespace: {}}}\nspec:\n{spec}",
            ns.name()
        )
    };
    let ip = "  egressIPs: [{name: a, address: 192.0.2.1, heloName: a.example.com}]\n";
    let policy = |name: &str, spec: &str| {
        format!("apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n{spec}", ns.name())
    };
    let plan = |spec: &str| {
        format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {{name: w, namespace: {}}}\nspec:\n{spec}",
            ns.name()
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("address with injected option", pool("  egressIPs: [{name: a, address: '1.2.3.4 -o content_filter=x', heloName: a.example.com}]\n"), "address"),
        ("loopback address", pool("  egressIPs: [{name: a, address: 127.0.0.2, heloName: a.example.com}]\n"), "loopback"),
        ("non-canonical IPv6", pool("  egressIPs: [{name: a, address: '2001:DB8::1', heloName: a.example.com}]\n"), "address"),
        ("HELO with newline", pool("  egressIPs: [{name: a, address: 192.0.2.1, heloName: \"a.example.com\\nrelayhost = x\"}]\n"), "heloName"),
        ("HELO unicode look-alike", pool("  egressIPs: [{name: a, address: 192.0.2.1, heloName: mх.example.com}]\n"), "heloName"),
        ("empty egress list", pool("  egressIPs: []\n"), "egressIPs"),
        ("duplicate names", pool("  egressIPs: [{name: a, address: 192.0.2.1, heloName: a.example.com}, {name: a, address: 192.0.2.2, heloName: b.example.com}]\n"), "egressIPs"),
        ("duplicate addresses", pool("  egressIPs: [{name: a, address: 192.0.2.1, heloName: a.example.com}, {name: b, address: 192.0.2.1, heloName: b.example.com}]\n"), "egressIPs"),
        ("unknown egress mode", pool(&format!("{ip}  egress: {{mode: Bridge}}\n")), "egress.mode"),
        ("backoff 0", pool(&format!("{ip}  retry: {{minimalBackoff: 0s}}\n")), "minimalBackoff"),
        ("backoff order", pool(&format!("{ip}  retry: {{minimalBackoff: 2h, maximalBackoff: 1h}}\n")), "minimalBackoff"),
        ("lifetime shorter than backoff", pool(&format!("{ip}  retry: {{maximalBackoff: 2h, maximalQueueLifetime: 1h, bounceQueueLifetime: 1h}}\n")), "maximalBackoff"),
        ("duration without unit", pool(&format!("{ip}  retry: {{queueRunDelay: '300'}}\n")), "queueRunDelay"),
        ("CIDR with host bits", pool(&format!("{ip}  submission: {{allowedCIDRs: [10.0.0.1/8]}}\n")), "allowedCIDRs"),
        ("open relay", pool(&format!("{ip}  submission: {{allowedCIDRs: [0.0.0.0/0]}}\n")), "open relay"),
        ("public client network", pool(&format!("{ip}  submission: {{allowedCIDRs: [10.0.0.0/8, '2001::/16']}}\n")), "open relay"),
        ("port out of range", pool(&format!("{ip}  submission: {{port: 70000}}\n")), "submission.port"),
        ("warn >= critical", pool(&format!("{ip}  backlog: {{warnAge: 12h, criticalAge: 4h}}\n")), "warnAge"),
        ("unknown onListed", pool(&format!("{ip}  reputation: {{onListed: Ignore}}\n")), "onListed"),
        ("pool name starting with a digit", pool(ip).replace("name: p,", "name: 1p,"), "metadata.name"),
        ("domain with newline", policy("dp", "  domains: [\"example.com\\nevil.com smtp:\"]\n"), "domains"),
        ("domain with space", policy("dp", "  domains: ['example.com smtp:']\n"), "domains"),
        ("empty domain list", policy("dp", "  domains: []\n"), "domains"),
        ("route with both", policy("dp", "  domains: [example.com]\n  route: {relayHost: relay.example.com, pool: other}\n"), "route"),
        ("relay host with port", policy("dp", "  domains: [example.com]\n  route: {relayHost: 'relay.example.com:25'}\n"), "relayHost"),
        ("policy name with dot", policy("gmail.com", "  domains: [gmail.com]\n"), "metadata.name"),
        ("unknown TLS level", policy("dp", "  domains: [example.com]\n  tls: {level: maybe}\n"), "tls.level"),
        ("steps and ramp", plan("  steps: [{day: 1, dailyCap: 5}]\n  ramp: {start: 1, growthPercent: 10, ceiling: 10}\n"), "steps or ramp"),
        ("first step not day 1", plan("  steps: [{day: 2, dailyCap: 5}]\n"), "day 1"),
        ("share over 100", plan("  steps: [{day: 1, dailyCap: 5}]\n  domainShares: [{domains: [gmail.com], maxPercent: 130}]\n"), "maxPercent"),
    ];
    assert!(cases.len() >= 20);
    for (what, yaml, field) in cases {
        let err = match cp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &yaml) {
            Ok(out) => panic!("{what}: accepted by the API server: {out}\n{yaml}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(field), "{what}: the API server's message should name {field:?}: {err}");
    }
    // A public client network is accepted once client certificates
    // authenticate submission.
    let certified = "  submission: {allowedCIDRs: [10.0.0.0/8, '2001::/16', 8.8.8.0/24], clientCertificates: {trustedCA: {secretName: clients-ca}, serverCertificateSecretName: submission-tls}}\n";
    cp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &pool(&format!("{ip}{certified}"))).unwrap();
    // And the examples are accepted.
    for f in std::fs::read_dir(examples_dir()).unwrap() {
        let text = read(&f.unwrap().path()).replace("namespace: mail", &format!("namespace: {}", ns.name()));
        cp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &text).unwrap();
    }
}

fn owner_uid(obj: &serde_json::Value) -> Option<String> {
    obj["metadata"]["ownerReferences"][0]["uid"].as_str().map(String::from)
}

#[test]
fn a_pool_produces_its_objects_owned_by_it_and_status() {
    let cp = control_plane(false);
    let _op = shared_operator(cp);
    let ns = cp.namespace("pool-objects").unwrap();
    cp.apply(&pool_yaml(ns.name(), "outbound", 3, "")).unwrap();
    let uid = get_json(cp, &["sendingpool", "outbound", "-n", ns.name()]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let sts = wait_for("3 StatefulSets", T, || {
        Some(children(cp, "statefulsets", ns.name(), "outbound")).filter(|v| v.len() == 3)
    });
    assert_eq!(sts, ["outbound-ip0", "outbound-ip1", "outbound-ip2"]);
    assert_eq!(children(cp, "configmaps", ns.name(), "outbound"), ["outbound-ip0", "outbound-ip1", "outbound-ip2"]);
    assert_eq!(children(cp, "services", ns.name(), "outbound"), ["outbound", "outbound-agents", "outbound-instances"]);
    for (kind, name) in [
        ("statefulset", "outbound-ip1"),
        ("configmap", "outbound-ip1"),
        ("service", "outbound"),
        ("pdb", "outbound"),
        ("serviceaccount", "outbound-instance"),
        ("endpointslice", "outbound-submission"),
        // What Prometheus scrapes: the agents at the egress addresses (docs/MONITORING.md).
        ("endpointslice", "outbound-agents"),
        ("secret", "outbound-recipient-hash-key"),
    ] {
        let obj = get_json(cp, &[kind, name, "-n", ns.name()]).unwrap_or_else(|| panic!("{kind}/{name} missing"));
        assert_eq!(owner_uid(&obj).as_deref(), Some(uid.as_str()), "{kind}/{name} not owned by the pool");
    }
    let cm = get_json(cp, &["configmap", "outbound-ip1", "-n", ns.name()]).unwrap();
    let pool = get_json(cp, &["sendingpool", "outbound", "-n", ns.name()]).unwrap();
    let ip1 = pool["spec"]["egressIPs"][1]["address"].as_str().unwrap();
    assert!(cm["data"]["main.cf"].as_str().unwrap().contains(&format!("smtp_bind_address = {ip1}\n")));
    assert!(cm["metadata"]["annotations"]["sendfleet.io/config-hash"].is_string());
    let sts = get_json(cp, &["statefulset", "outbound-ip1", "-n", ns.name()]).unwrap();
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "queue");
    // Status: no kubelet runs here, so instances are not ready — and say so.
    let status = wait_for("status with conditions", T, || {
        let p = get_json(cp, &["sendingpool", "outbound", "-n", ns.name()])?;
        let n = p["status"]["conditions"].as_array().map_or(0, |c| c.len());
        (n >= 7).then_some(p)
    });
    let cond =
        |t: &str| status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).cloned().unwrap();
    assert_eq!(cond("Ready")["status"], "False");
    assert_eq!(cond("Ready")["reason"], "InstancesNotReady");
    assert_eq!(cond("Ready")["observedGeneration"], status["metadata"]["generation"]);
    assert_eq!(status["status"]["readyInstances"], "0/3");
    assert_eq!(status["status"]["observedGeneration"], status["metadata"]["generation"]);
    // kubectl get shows the printer columns.
    let table = cp.kubectl_run(&["get", "sendingpools", "-n", ns.name()]).unwrap();
    assert!(table.contains("READY") && table.contains("0/3"), "{table}");
    // An Event for the condition transition.
    let events = cp.kubectl_run(&["get", "events", "-n", ns.name(), "-o", "json"]).unwrap();
    assert!(events.contains("InstancesNotReady"), "no event for Ready=False: {events}");
}

#[test]
fn changing_a_domain_policy_changes_only_the_selected_pools() {
    let cp = control_plane(false);
    let _op = shared_operator(cp);
    let ns = cp.namespace("policy-change").unwrap();
    cp.apply(&pool_yaml(ns.name(), "bulk", 2, "tier: bulk")).unwrap();
    cp.apply(&pool_yaml(ns.name(), "tx", 2, "tier: tx")).unwrap();
    wait_for("both pools applied", T, || {
        (children(cp, "configmaps", ns.name(), "bulk").len() == 2
            && children(cp, "configmaps", ns.name(), "tx").len() == 2)
            .then_some(())
    });
    // And past their first DNS sweep: an address leaves `Pending` (out of
    // rotation until checked) with a ConfigMap write of its own.
    let checked = |pool: &str| {
        let p = get_json(cp, &["sendingpool", pool, "-n", ns.name()])?;
        let rows = p["status"]["instances"].as_array()?;
        (rows.len() == 2 && rows.iter().all(|r| !r["quarantine"].as_str().unwrap_or("").starts_with("Pending")))
            .then_some(())
    };
    wait_for("every address checked", T, || checked("bulk").and(checked("tx")));
    let rv = |name: &str| {
        get_json(cp, &["configmap", name, "-n", ns.name()]).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before_tx = (rv("tx-ip0"), rv("tx-ip1"));
    let policy = |mpm: u32| {
        format!("apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: bigmail, namespace: {}}}\nspec:\n  poolSelector: {{matchLabels: {{tier: bulk}}}}\n  domains: [bigmail.example]\n  throttle: {{connections: 1, messagesPerMinute: {mpm}}}\n", ns.name())
    };
    cp.apply(&policy(30)).unwrap();
    let main_cf = |name: &str| {
        get_json(cp, &["configmap", name, "-n", ns.name()]).unwrap()["data"]["main.cf"].as_str().unwrap().to_string()
    };
    wait_for("bulk pool throttled", T, || {
        main_cf("bulk-ip0").contains("dp-bigmail_destination_rate_delay = 2s").then_some(())
    });
    cp.apply(&policy(10)).unwrap();
    wait_for("bulk pool re-throttled", T, || {
        main_cf("bulk-ip1").contains("dp-bigmail_destination_rate_delay = 6s").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((rv("tx-ip0"), rv("tx-ip1")), before_tx, "the unselected pool's ConfigMaps were written");
    assert!(!main_cf("tx-ip0").contains("dp-bigmail"));
}

#[test]
fn removing_an_egress_ip_removes_its_instance_and_a_missing_plan_is_reported() {
    let cp = control_plane(false);
    let _op = shared_operator(cp);
    let ns = cp.namespace("remove-ip").unwrap();
    cp.apply(&pool_yaml(ns.name(), "p", 3, "")).unwrap();
    wait_for("3 StatefulSets", T, || (children(cp, "statefulsets", ns.name(), "p").len() == 3).then_some(()));
    cp.apply(&pool_yaml(ns.name(), "p", 2, "")).unwrap();
    // No agent answers here, so nobody has seen ip2's queue empty: it is
    // kept, out of rotation and draining, never deleted with its mail
    // (its removal once drained: tests/operator_lifecycle.rs and, on the
    // node, tests/e2e_lifecycle.rs).
    let row = || {
        let p = get_json(cp, &["sendingpool", "p", "-n", ns.name()])?;
        p["status"]["instances"].as_array()?.iter().find(|i| i["name"] == "ip2").cloned()
    };
    let ip2 = wait_for("ip2 draining", T, || row().filter(|r| r["phase"] == "Draining"));
    assert_eq!(ip2["weight"], 0, "{ip2}");
    assert_eq!(children(cp, "statefulsets", ns.name(), "p"), ["p-ip0", "p-ip1", "p-ip2"]);

    // A pool that names a WarmupPlan that does not exist says so, and
    // recovers when the plan appears (the plan watch maps to the pool).
    let with_plan = pool_yaml(ns.name(), "p", 2, "").replace("spec:\n", "spec:\n  warmupPlanRef: later\n");
    cp.apply(&with_plan).unwrap();
    let ready_reason =
        || {
            let p = get_json(cp, &["sendingpool", "p", "-n", ns.name()])?;
            p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").map(|c| {
                (c["reason"].as_str().unwrap_or("").to_string(), c["message"].as_str().unwrap_or("").to_string())
            })
        };
    let (reason, message) =
        wait_for("Ready=False MissingReference", T, || ready_reason().filter(|(r, _)| r == "MissingReference"));
    assert_eq!(reason, "MissingReference");
    assert!(message.contains("warmupPlanRef") && message.contains("later"), "{message}");
    let pool = get_json(cp, &["sendingpool", "p", "-n", ns.name()]).unwrap();
    let ready = pool["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False", "{ready}");
    cp.apply(&format!("apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {{name: later, namespace: {}}}\nspec:\n  steps: [{{day: 1, dailyCap: 50}}]\n", ns.name())).unwrap();
    wait_for("plan picked up", T, || ready_reason().filter(|(r, _)| r == "InstancesNotReady"));
    let warm = get_json(cp, &["sendingpool", "p", "-n", ns.name()]).unwrap();
    // ip2 still runs (draining), on the pool's plan like the others.
    assert_eq!(warm["status"]["warmup"], "later: 3/3 warming");
}

/// `(status, reason, message)` of the `Accepted` condition of `kind/name`.
fn accepted(cp: &sendfleet_lab::ControlPlane, kind: &str, name: &str, ns: &str) -> Option<(String, String, String)> {
    let obj = get_json(cp, &[kind, name, "-n", ns])?;
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Accepted")?.clone();
    let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((field("status"), field("reason"), field("message")))
}

#[test]
fn domain_policies_and_warmup_plans_get_their_status_without_any_pool() {
    let cp = control_plane(false);
    let _op = shared_operator(cp);
    let ns = cp.namespace("no-pool").unwrap();
    let n = ns.name();
    // The "bad" plan passes admission (no pattern lists the time zones)
    // and is refused by the renderer's own validation, which names the
    // field. (Every other renderer refusal is the API server's too:
    // tests/operator_validation.rs.)
    let resource = |kind: &str, name: &str, spec: &str| {
        format!("apiVersion: sendfleet.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n{spec}---\n")
    };
    let all = [
        resource("DomainPolicy", "good", "  poolSelector: {matchLabels: {tier: bulk}}\n  domains: [good.example]\n"),
        resource("WarmupPlan", "ramp", "  steps: [{day: 1, dailyCap: 50}, {day: 3, dailyCap: 200}]\n"),
        resource("WarmupPlan", "bad-zone", "  steps: [{day: 1, dailyCap: 50}]\n  timeZone: Mars/Olympus\n"),
    ]
    .concat();
    cp.apply(&all).unwrap();

    let good = wait_for("DomainPolicy good Accepted", T, || accepted(cp, "domainpolicy", "good", n));
    assert_eq!(good, ("True".into(), "Valid".into(), "valid; selects no SendingPool in this namespace".into()));
    let plan = wait_for("WarmupPlan ramp Accepted", T, || accepted(cp, "warmupplan", "ramp", n));
    assert_eq!(plan, ("True".into(), "Valid".into(), "valid; no pool uses it".into()));
    assert_eq!(get_json(cp, &["warmupplan", "ramp", "-n", n]).unwrap()["status"]["days"], 3);
    let (status, reason, message) =
        wait_for("WarmupPlan bad-zone Accepted", T, || accepted(cp, "warmupplan", "bad-zone", n));
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"), "{message}");
    assert!(message.contains("spec.timeZone"), "the message should name the field: {message}");
    // Being refused is worth a Warning Event on the resource.
    wait_for("a Warning Event for the invalid WarmupPlan", T, || {
        let events = get_json(cp, &["events", "-n", n])?;
        events["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["type"] == "Warning" && e["reason"] == "InvalidSpec" && e["involvedObject"]["name"] == "bad-zone"
            })
            .then_some(())
    });

    // A pool appearing is seen by the DomainPolicy and WarmupPlan
    // controllers (they watch the pools): both now name it.
    let pool = pool_yaml(n, "bulk", 1, "tier: bulk").replace("spec:\n", "spec:\n  warmupPlanRef: ramp\n");
    cp.apply(&pool).unwrap();
    wait_for("DomainPolicy good names the pool", T, || {
        accepted(cp, "domainpolicy", "good", n).filter(|(_, _, m)| m == "applies to pools: bulk")
    });
    wait_for("WarmupPlan ramp names the pool", T, || {
        accepted(cp, "warmupplan", "ramp", n).filter(|(_, _, m)| m == "used by pools: bulk")
    });
}

#[test]
fn deleting_a_pool_removes_its_children() {
    let cp = control_plane(true);
    let _op = shared_operator(cp);
    let ns = cp.namespace("delete-pool").unwrap();
    // deletionPolicy: Retain: no agent runs here to report empty queues,
    // and the default (Drain) would hold the pool for drain.timeout
    // (tests/operator_lifecycle.rs).
    cp.apply(&pool_yaml(ns.name(), "gone", 2, "").replace("spec:\n", "spec:\n  deletionPolicy: Retain\n")).unwrap();
    wait_for("children", T, || (children(cp, "statefulsets", ns.name(), "gone").len() == 2).then_some(()));
    cp.kubectl_run(&["delete", "sendingpool", "gone", "-n", ns.name(), "--wait=true"]).unwrap();
    for kind in ["statefulsets", "configmaps", "services", "poddisruptionbudgets", "endpointslices", "secrets"] {
        wait_for(&format!("{kind} garbage-collected"), T, || {
            children(cp, kind, ns.name(), "gone").is_empty().then_some(())
        });
    }
}
