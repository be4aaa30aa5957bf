//! End-to-end on the lab's real node (issue 8): the sendfleet image built by
//! `make image` runs as instance pods started by a real kubelet through
//! containerd and runc, reconciled by `sendfleet operator` (a process on the
//! lab side, as its ServiceAccount — see tests/operator_support), with queues
//! on the lab's local PersistentVolumes, hostNetwork egress addresses, and
//! real Postfix receivers standing in for providers (the lab's
//! `Receiver`, which `make demo` uses too), reached by MX as in production:
//! the instances resolve through the lab's DNS server (the node's
//! resolv.conf names it), which publishes the providers' MX and A records.
//!
//! Everything runs inside the test's own network namespace (hack/netns-run):
//! node IP 10.250.0.1, egress 10.250.0.11-15, providers 10.250.0.50/.51,
//! DNS 198.51.100.53 — all on that namespace's `lo`. This file must never reach an address
//! outside it, and never skips: a missing image or tool is a panic saying
//! what to run.

mod e2e_support;
mod operator_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use operator_support::{control_plane, get_json, Operator};
use sendfleet_lab::dns::{mx_zones, MxProvider};
use sendfleet_lab::kit::{
    add_addr, documents, http_get, namespace, require_postfix, wait_for, wait_for_or, Dns, Policy, Pool,
};
use sendfleet_lab::{ControlPlane, Receiver, DNS_SERVER};
use sendfleet_render::objects::CAPABILITIES;

const NS: &str = "mail-e2e";
const POOL: &str = "e2e";
const EGRESS: [(&str, &str); 3] = [("mta1", "10.250.0.11"), ("mta2", "10.250.0.12"), ("mta3", "10.250.0.13")];
const PROVIDER: &str = "10.250.0.50";
const SLOW_PROVIDER: &str = "10.250.0.51";
const IMAGE_BASE: &str = "localhost/sendfleet";
const IMAGE: &str = "localhost/sendfleet:dev";
/// An image no registry has: its pull failure must show in the pool's status.
const MISSING_IMAGE: &str = "localhost/sendfleet:does-not-exist";

struct Lab {
    cp: &'static ControlPlane,
    _operator: Operator,
    provider: Receiver,
    slow: Receiver,
    _dns: Dns,
}

/// The providers as DNS publishes them: provider.test (and provider2.test,
/// which the policy change adds) behind one MX host, slow.test behind
/// another.
const MX: [MxProvider<'static>; 2] = [
    MxProvider {
        name: "e2e-provider",
        mx_host: "mx.provider.test",
        addr: PROVIDER,
        domains: &["provider.test", "provider2.test"],
    },
    MxProvider { name: "e2e-slow", mx_host: "mx.slow.test", addr: SLOW_PROVIDER, domains: &["slow.test"] },
];

/// A pool of the lab's instances: the image under test, queues on the
/// node's local volumes, clients from the test's 10.250.0.0/24.
fn lab_pool(name: &str, image: &str, ips: &[(&str, &str)]) -> Pool {
    let mut pool = Pool::named(name)
        .in_ns(NS)
        .host_network()
        .image(image)
        .queue("1Gi", sendfleet_lab::STORAGE_CLASS)
        .submission(587, &["10.250.0.0/24"]);
    for (ip, addr) in ips {
        pool = pool.with_ip_helo(ip, addr, &format!("{ip}.e2e.test"));
    }
    pool
}

fn pool_yaml() -> String {
    documents(&[
        namespace(NS),
        lab_pool(POOL, IMAGE, &EGRESS)
            .spec("retry: {queueRunDelay: 5s, minimalBackoff: 5s, maximalBackoff: 10s}")
            .yaml(),
        // No relay routes: mail goes by MX. The policy gives provider.test a
        // transport of its own (autoExclusion's status filter), so a change
        // of its domains changes the rendered configuration.
        Policy::named("provider").in_ns(NS).for_domains(&["provider.test"]).auto_exclusion(5, "1h", "1h").yaml(),
    ])
}

/// The pool's pods, each mapped by `f`, sorted.
fn pool_pods<T: Ord>(cp: &ControlPlane, f: impl Fn(&serde_json::Value) -> T) -> Vec<T> {
    let v = get_json(cp, &["pods", "-n", NS, "-l", &format!("sendfleet.io/pool={POOL}")]).unwrap_or_default();
    let mut out: Vec<T> = v["items"].as_array().map(|a| a.iter().map(f).collect()).unwrap_or_default();
    out.sort();
    out
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Pods of the pool: (name, uid, phase, ready).
fn pods(cp: &ControlPlane) -> Vec<(String, String, String, bool)> {
    pool_pods(cp, |p| {
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let ready = ready && p["metadata"]["deletionTimestamp"].is_null();
        (text(&p["metadata"]["name"]), text(&p["metadata"]["uid"]), text(&p["status"]["phase"]), ready)
    })
}

/// Everything a reader needs when pods do not come up.
fn diagnose(cp: &ControlPlane) -> String {
    let mut s = String::new();
    for args in [
        &["get", "pods,pvc,sts", "-n", NS, "-o", "wide"][..],
        &["describe", "pods", "-n", NS],
        &["get", "events", "-n", NS, "--sort-by=.lastTimestamp"],
        &["get", "sendingpools", "-n", NS, "-o", "yaml"],
    ] {
        s.push_str(&format!(
            "$ kubectl {}\n{}\n",
            args.join(" "),
            cp.kubectl_run(args).unwrap_or_else(|e| e.to_string())
        ));
    }
    for (name, _) in EGRESS {
        let pod = format!("{POOL}-{name}-0");
        let logs = cp.kubectl_run(&["logs", "-n", NS, &pod, "--tail=30"]).unwrap_or_else(|e| e.to_string());
        s.push_str(&format!("$ kubectl logs {pod}\n{logs}\n"));
    }
    if let Some(n) = cp.node_info() {
        let log = std::fs::read_to_string(n.dir.join("kubelet.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        s.push_str(&format!("kubelet.log (last 30, newest first):\n{}\n", tail.join("\n")));
    }
    s
}

fn wait_pods_ready(cp: &ControlPlane, timeout: Duration, what: &str) {
    let all_ready = || {
        let p = pods(cp);
        (p.len() == EGRESS.len() && p.iter().all(|(_, _, phase, ready)| phase == "Running" && *ready)).then_some(())
    };
    wait_for_or(what, timeout, all_ready, || format!("pods: {:?}\n{}", pods(cp), diagnose(cp)));
}

/// Lab + node + image + operator + receivers + pool. Owned by the one test
/// so the receivers and the operator are stopped when it ends (statics are
/// never dropped).
fn lab() -> Lab {
    {
        require_postfix();
        let t0 = Instant::now();
        let archive = e2e_support::image_archive();
        let cp = control_plane(true);
        let t_cp = t0.elapsed();
        // One volume per instance: 3 for the pool, one each for the two
        // pools that cannot start.
        let node = cp.ensure_node(5).expect("lab node");
        let t_node = t0.elapsed();
        let t = Instant::now();
        cp.import_image(&archive, Some(IMAGE_BASE)).expect("importing the sendfleet image into the node's containerd");
        let t_import = t.elapsed();
        // The egress and provider addresses live on the namespace's lo,
        // like the node IP: hostNetwork pods share this namespace.
        for (_, addr) in EGRESS {
            add_addr(addr);
        }
        let dns = Dns::serve(DNS_SERVER, mx_zones(&MX));
        let provider = Receiver::start_temp("e2e-provider", PROVIDER, &["provider.test", "provider2.test"], &[])
            .expect("provider");
        let slow = Receiver::start_temp(
            "e2e-slow",
            SLOW_PROVIDER,
            &["slow.test"],
            &[("slow.test", "450 4.7.1 try again later")],
        )
        .expect("slow provider");
        // The pools name the image under test and a missing one (below):
        // both listed, as an administrator would (`instances.allowedImages`).
        let operator = Operator::start_with(
            cp,
            "e2e",
            &[
                "--resync-interval",
                "10s",
                "--agent-poll-interval",
                "2s",
                "--allowed-instance-image",
                IMAGE,
                "--allowed-instance-image",
                MISSING_IMAGE,
            ],
        );
        let t = Instant::now();
        cp.apply(&pool_yaml()).expect("applying the pool");
        wait_pods_ready(cp, Duration::from_secs(240), "first start");
        let t_ready = t.elapsed();
        eprintln!(
            "e2e timings: control plane {:.1}s, node {} ready at {:.1}s, image import {:.1}s, \
             pool applied -> 3 pods Running+Ready {:.1}s, total {:.1}s",
            t_cp.as_secs_f64(),
            node.ip,
            t_node.as_secs_f64(),
            t_import.as_secs_f64(),
            t_ready.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        Lab { cp, _operator: operator, provider, slow, _dns: dns }
    }
}

/// `smtp-source` into one instance's submission port; panics on failure.
fn inject(addr: &str, count: usize, rcpt: &str) {
    let out = Command::new("smtp-source")
        .args(["-c", "-N", "-m", &count.to_string(), "-s", "10", "-f", "from@example.com", "-t", rcpt])
        .arg(format!("{addr}:587"))
        .output()
        .expect("running smtp-source");
    assert!(
        out.status.success(),
        "smtp-source to {addr}:587 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test, in order: the pool comes up (3 pods Running and Ready through
/// the agent's /readyz), 500 messages are delivered from the egress
/// addresses, then a pod holding 200 deferred messages is deleted and its
/// mail survives on the same volume.
#[test]
fn pool_on_the_real_node_end_to_end() {
    let lab = lab();
    pods_run_confined_as_rendered(&lab);
    pool_of_three_runs_and_delivers_from_its_egress_addresses(&lab);
    policy_change_reaches_running_pods_without_restart(&lab);
    deleted_pod_comes_back_on_its_volume_and_delivers_its_deferred_mail(&lab);
    pod_that_cannot_start_is_reported_in_the_pool_conditions(&lab);
    instance_whose_port_is_taken_is_reported_with_the_cause(&lab);
}

/// The running pods have the securityContext the operator renders, read
/// back from the API (seccomp RuntimeDefault, no privilege escalation, only
/// the listed capabilities, read-only root file system), and the root file
/// system really is read-only inside the container while the volumes
/// Postfix and the agent write are not. The deliveries that follow prove
/// Postfix works so confined.
fn pods_run_confined_as_rendered(lab: &Lab) {
    let cp = lab.cp;
    let v = get_json(cp, &["pods", "-n", NS, "-l", &format!("sendfleet.io/pool={POOL}")]).unwrap_or_default();
    let contexts: Vec<(String, serde_json::Value, serde_json::Value)> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let mta = p["spec"]["containers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "mta"));
                    let sc = mta.map(|m| m["securityContext"].clone()).unwrap_or_default();
                    (text(&p["metadata"]["name"]), p["spec"]["securityContext"].clone(), sc)
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(contexts.len(), 3, "{contexts:?}");
    for (pod, pod_sc, sc) in &contexts {
        assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{pod}: {pod_sc}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{pod}: {sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{pod}: {sc}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{pod}: {sc}");
        assert_eq!(sc["capabilities"]["add"], serde_json::json!(CAPABILITIES), "{pod}: {sc}");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false, "{pod}: {sc}");
    }
    let pod = &contexts[0].0;
    let sh = |script: &str| {
        let out = cp.kubectl().args(["exec", "-n", NS, pod, "-c", "mta", "--", "sh", "-c", script]).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    for path in ["/etc/postfix/x", "/usr/local/bin/x", "/var/lib/postfix/x", "/tmp/x"] {
        let (ok, out) = sh(&format!("touch {path}"));
        assert!(!ok && out.contains("Read-only file system"), "{pod}: touch {path} should fail read-only: {out}");
    }
    for path in ["/var/spool/postfix/data/x", "/var/lib/sendfleet/postfix/x", "/run/sendfleet/x"] {
        let (ok, out) = sh(&format!("touch {path} && rm {path}"));
        assert!(ok, "{pod}: {path} should be writable: {out}");
    }
    eprintln!("e2e confinement: {} pods with seccomp RuntimeDefault, no privilege escalation, caps {CAPABILITIES:?}, read-only root", contexts.len());
}

fn pool_status(cp: &ControlPlane, pool: &str) -> serde_json::Value {
    get_json(cp, &["sendingpool", "-n", NS, pool]).map(|v| v["status"].clone()).unwrap_or_default()
}

/// (pod name, uid, restart count) of the pool's pods.
fn pod_restarts(cp: &ControlPlane) -> Vec<(String, String, u64)> {
    pool_pods(cp, |p| {
        let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(u64::MAX);
        (text(&p["metadata"]["name"]), text(&p["metadata"]["uid"]), restarts)
    })
}

/// (desired, applied) config hash per instance, from the pool's status.
fn config_hashes(cp: &ControlPlane) -> Vec<(String, String, String)> {
    let st = pool_status(cp, POOL);
    st["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or("").to_string(),
                        i["desiredConfigHash"].as_str().unwrap_or("").to_string(),
                        i["appliedConfigHash"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A DomainPolicy change is rendered, reaches the running agents (the hash
/// each agent reports loaded equals the newly rendered one) with no pod
/// restart, and mail injected while it happens is all delivered.
fn policy_change_reaches_running_pods_without_restart(lab: &Lab) {
    let cp = lab.cp;
    let before_pods = pod_restarts(cp);
    let before = wait_for("applied == desired config hash before the change", Duration::from_secs(60), || {
        let h = config_hashes(cp);
        (h.len() == 3 && h.iter().all(|(_, d, a)| !d.is_empty() && d == a)).then_some(h)
    });
    let delivered_before = lab.provider.deliveries().to_domain("provider.test");
    let t0 = Instant::now();
    const M: usize = 100;
    std::thread::scope(|s| {
        s.spawn(|| inject(EGRESS[1].1, M, "during-change@provider.test"));
        cp.kubectl_run(&[
            "patch",
            "domainpolicy",
            "-n",
            NS,
            "provider",
            "--type=merge",
            "-p",
            r#"{"spec":{"domains":["provider.test","provider2.test"]}}"#,
        ])
        .expect("patching the DomainPolicy");
    });
    let after = wait_for_or(
        "every agent to load the new rendered config",
        Duration::from_secs(90),
        || {
            let h = config_hashes(cp);
            let changed =
                h.len() == 3 && h.iter().all(|(n, d, a)| d == a && before.iter().any(|(bn, bd, _)| bn == n && bd != d));
            changed.then_some(h)
        },
        || format!("before {before:?}, now {:?}\n{}", config_hashes(cp), diagnose(cp)),
    );
    let t_applied = t0.elapsed();
    assert_eq!(pod_restarts(cp), before_pods, "same pods, no container restart");
    wait_for("mail injected during the change delivered", Duration::from_secs(90), || {
        (lab.provider.deliveries().to_domain("provider.test") >= delivered_before + M).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.provider.deliveries().to_domain("provider.test"), delivered_before + M, "none lost or doubled");
    eprintln!(
        "e2e policy change: applied by all 3 agents in {:.1}s without restart ({:?}); {M} messages sent meanwhile all delivered",
        t_applied.as_secs_f64(),
        after.iter().map(|(n, d, _)| format!("{n}={d}")).collect::<Vec<_>>()
    );
}

/// A pool whose image does not exist: the pool's conditions say why.
fn pod_that_cannot_start_is_reported_in_the_pool_conditions(lab: &Lab) {
    let cp = lab.cp;
    add_addr("10.250.0.14");
    let yaml = lab_pool("broken", MISSING_IMAGE, &[("mta9", "10.250.0.14")]).yaml();
    let t0 = Instant::now();
    cp.apply(&yaml).expect("applying the broken pool");
    let msg = wait_for("the broken pool's Degraded condition naming the image pull", Duration::from_secs(120), || {
        let st = pool_status(cp, "broken");
        let conds = st["conditions"].as_array()?.clone();
        let degraded = conds.iter().find(|c| c["type"] == "Degraded" && c["status"] == "True")?;
        let ready = conds.iter().find(|c| c["type"] == "Ready")?;
        let m = degraded["message"].as_str().unwrap_or("").to_string();
        (ready["status"] == "False" && (m.contains("ErrImagePull") || m.contains("ImagePullBackOff")))
            .then(|| format!("{}: {m}", degraded["reason"].as_str().unwrap_or("")))
    });
    eprintln!("e2e bad image: reported in {:.1}s as Degraded {msg}", t0.elapsed().as_secs_f64());
    cp.kubectl_run(&["delete", "sendingpool", "-n", NS, "broken", "--wait=false"]).expect("deleting the broken pool");
}

/// An instance whose submission port is already taken on its egress address
/// (another process on the node bound it first): Postfix cannot bind, the
/// container crash-loops, and the pool's Degraded condition names the
/// instance and Postfix's own reason. Once the port is free the same pod
/// comes up and the condition clears: the port was the cause.
fn instance_whose_port_is_taken_is_reported_with_the_cause(lab: &Lab) {
    let cp = lab.cp;
    const ADDR: &str = "10.250.0.15";
    add_addr(ADDR);
    // hostNetwork pods share this namespace: this listener is "another
    // process on the node" as far as the instance is concerned.
    let squatter = std::net::TcpListener::bind((ADDR, 587)).expect("binding 10.250.0.15:587 before the instance");
    let yaml = lab_pool("taken", IMAGE, &[("mta8", ADDR)]).yaml();
    let t0 = Instant::now();
    cp.apply(&yaml).expect("applying the pool whose port is taken");
    let (degraded, instance) =
        wait_for("the pool's Degraded condition naming mta8 and the bind failure", Duration::from_secs(180), || {
            let st = pool_status(cp, "taken");
            let conds = st["conditions"].as_array()?.clone();
            let degraded = conds.iter().find(|c| c["type"] == "Degraded" && c["status"] == "True")?;
            let ready = conds.iter().find(|c| c["type"] == "Ready")?;
            let m = degraded["message"].as_str().unwrap_or("");
            let inst = st["instances"].as_array()?.iter().find(|i| i["name"] == "mta8")?.clone();
            (ready["status"] == "False"
                && m.contains("mta8:")
                && m.contains("Address already in use")
                && m.contains("587")
                && inst["phase"] == "Failed"
                && inst["message"].as_str().is_some_and(|im| im.contains("Address already in use")))
            .then(|| (format!("{}: {m}", degraded["reason"].as_str().unwrap_or("")), inst["message"].clone()))
        });
    let t_reported = t0.elapsed();
    assert!(degraded.starts_with("InstanceFailing: "), "{degraded}");
    eprintln!(
        "e2e port taken: reported in {:.1}s as Degraded {degraded}; instance message {instance}",
        t_reported.as_secs_f64()
    );
    drop(squatter);
    wait_for("the pool taken Ready and no longer Degraded once 587 is free", Duration::from_secs(180), || {
        let st = pool_status(cp, "taken");
        let conds = st["conditions"].as_array()?.clone();
        let ok = |t: &str, s: &str| conds.iter().any(|c| c["type"] == t && c["status"] == s);
        (st["readyInstances"] == "1/1" && ok("Ready", "True") && ok("Degraded", "False")).then_some(())
    });
    eprintln!("e2e port taken: port freed -> pool Ready at {:.1}s", t0.elapsed().as_secs_f64());
    cp.kubectl_run(&["delete", "sendingpool", "-n", NS, "taken", "--wait=false"]).expect("deleting the pool");
}

fn pool_of_three_runs_and_delivers_from_its_egress_addresses(lab: &Lab) {
    let cp = lab.cp;
    let p = pods(cp);
    assert_eq!(p.len(), 3, "{p:?}");
    // Each instance serves its agent on its own egress address (hostNetwork):
    // what the kubelet's readiness probe saw.
    for (name, addr) in EGRESS {
        let body = agent_get(addr, "/readyz");
        assert!(body.is_some(), "agent of {name} does not answer on {addr}:9187/readyz");
    }

    let t0 = Instant::now();
    let per = [167usize, 167, 166];
    std::thread::scope(|s| {
        for ((name, addr), n) in EGRESS.iter().zip(per) {
            s.spawn(move || inject(addr, n, &format!("{name}@provider.test")));
        }
    });
    let t_inject = t0.elapsed();
    let total: usize = per.iter().sum();
    let d = wait_for("500 deliveries at the provider", Duration::from_secs(180), || {
        let d = lab.provider.deliveries();
        (d.to_domain("provider.test") >= total).then_some(d)
    });
    let t_delivered = t0.elapsed();
    // Nothing more arrives (no duplicates).
    std::thread::sleep(Duration::from_secs(3));
    let d2 = lab.provider.deliveries();
    assert_eq!(d2.to_domain("provider.test"), total, "duplicates at the provider");
    let distinct: BTreeSet<&String> = d2.accepted.iter().map(|(r, _)| r).collect();
    assert_eq!(distinct.len(), total, "each message once");
    let mut by_source = String::new();
    let mut from_egress = 0;
    for (name, addr) in EGRESS {
        let n = d.to_domain_from("provider.test", addr);
        by_source.push_str(&format!("{name} {addr}: {n}; "));
        assert!(n > 0, "nothing arrived from egress address {addr}");
        from_egress += n;
        // Mail submitted to an instance leaves from that instance's address.
        let own = d.accepted.iter().filter(|(r, c)| r.ends_with(&format!("{name}@provider.test")) && c == addr).count();
        assert_eq!(own, per[EGRESS.iter().position(|(n, _)| *n == name).unwrap()], "mail of {name} from {addr}");
    }
    assert_eq!(from_egress, total, "every message came from one of the pool's egress addresses: {by_source}");
    // The pool's status (agents' counts, polled by the operator) matches
    // what the provider counted, instance by instance.
    let counted = wait_for("pool status delivery counts == the provider's", Duration::from_secs(60), || {
        let st = pool_status(cp, POOL);
        let inst = st["instances"].as_array()?.clone();
        let sent: Vec<(String, u64)> = inst
            .iter()
            .map(|i| (i["address"].as_str().unwrap_or("").to_string(), i["deliveries"]["sent"].as_u64().unwrap_or(0)))
            .collect();
        sent.iter().all(|(a, n)| *n as usize == d.to_domain_from("provider.test", a)).then_some(sent)
    });
    eprintln!("e2e pool status deliveries.sent per instance: {counted:?}");
    eprintln!(
        "e2e mail: {total} injected in {:.1}s, all delivered at {:.1}s; by source address: {by_source}",
        t_inject.as_secs_f64(),
        t_delivered.as_secs_f64()
    );
}

/// The agent's answer to `GET path` on its egress address, when 200.
fn agent_get(addr: &str, path: &str) -> Option<String> {
    http_get(addr, 9187, path).ok().and_then(|(code, body)| (code == 200).then_some(body))
}

/// Messages in one instance's Postfix queue, read inside the pod (distinct
/// queue ids: showq scans one queue directory after another, so a message
/// moving between them mid-scan can be listed twice or not at all — callers
/// poll until the count settles).
fn queued(cp: &ControlPlane, pod: &str) -> Option<usize> {
    let out = cp.kubectl_run(&["exec", "-n", NS, pod, "-c", "mta", "--", "postqueue", "-j"]).ok()?;
    let ids: BTreeSet<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["queue_id"].as_str().map(String::from))
        .collect();
    Some(ids.len())
}

fn pvc_volume(cp: &ControlPlane, pod: &str) -> String {
    let v = get_json(cp, &["pvc", "-n", NS, &format!("queue-{pod}")]).expect("queue PVC");
    v["spec"]["volumeName"].as_str().unwrap_or("").to_string()
}

fn deleted_pod_comes_back_on_its_volume_and_delivers_its_deferred_mail(lab: &Lab) {
    let cp = lab.cp;
    const N: usize = 200;
    let (name, addr) = EGRESS[0];
    let pod = format!("{POOL}-{name}-0");
    let before = pods(cp).into_iter().find(|p| p.0 == pod).expect("pod of mta1");
    let volume = pvc_volume(cp, &pod);
    assert!(!volume.is_empty());

    inject(addr, N, "deferred@slow.test");
    // All N deferred in mta1's queue: the provider answered 450 to each.
    wait_for("200 deferred messages in mta1's queue", Duration::from_secs(90), || {
        (queued(cp, &pod) == Some(N) && lab.slow.log().matches("450 4.7.1").count() >= 1).then_some(())
    });
    assert_eq!(lab.slow.deliveries().to_domain("slow.test"), 0);

    let t0 = Instant::now();
    cp.kubectl_run(&["delete", "pod", "-n", NS, &pod, "--wait=true"]).expect("deleting the pod");
    wait_for("a new mta1 pod", Duration::from_secs(120), || {
        pods(cp).into_iter().find(|p| p.0 == pod && p.1 != before.1).map(|_| ())
    });
    wait_pods_ready(cp, Duration::from_secs(120), "after deleting mta1's pod");
    let t_back = t0.elapsed();
    assert_eq!(pvc_volume(cp, &pod), volume, "the new pod uses the same queue volume");
    // The queue survived the pod: the same N messages, none lost or added.
    wait_for("mta1's queue to list the 200 deferred messages again", Duration::from_secs(30), || {
        (queued(cp, &pod) == Some(N)).then_some(())
    });

    // The provider now accepts.
    lab.slow.set_access(&[]).expect("the slow provider accepting again");
    let t1 = Instant::now();
    wait_for("200 deliveries at the slow provider", Duration::from_secs(120), || {
        (lab.slow.deliveries().to_domain("slow.test") >= N).then_some(())
    });
    let t_delivered = t1.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let d = lab.slow.deliveries();
    assert_eq!(d.to_domain("slow.test"), N, "0 lost, 0 duplicated");
    let distinct: BTreeSet<&String> = d.accepted.iter().map(|(r, _)| r).collect();
    assert_eq!(distinct.len(), N);
    assert_eq!(d.to_domain_from("slow.test", addr), N, "delivered from mta1's egress address");
    wait_for("mta1's queue empty", Duration::from_secs(30), || (queued(cp, &pod) == Some(0)).then_some(()));
    eprintln!(
        "e2e restart: pod deleted -> back Running+Ready on volume {volume} in {:.1}s; \
         {N} deferred messages delivered {:.1}s after the provider accepted",
        t_back.as_secs_f64(),
        t_delivered.as_secs_f64()
    );
}
