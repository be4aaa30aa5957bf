//! The operator mirrors what the agents decided on their own, with a real
//! API server, the operator as a process under its RBAC, and real agents
//! supervising real Postfix instances:
//!
//! - instance `a` is answered `554 ... blocked` by a provider until its agent
//!   excludes it for the DomainPolicy (`autoExclusion`): the DomainPolicy's
//!   status lists the automatic exclusion with its reason and times, and the
//!   policy rendered for the peer `b` (its ConfigMap) excludes `a` too, so
//!   `b` never relays that domain's mail to `a`;
//! - instance `b` warms up under a WarmupPlan: its step and cap appear in the
//!   pool's status, the plan's status and the WarmingUp condition.
//!
//! The instances' pods are API objects marked Running (no kubelet here);
//! the agents the operator polls answer on the instances' egress addresses,
//! as hostNetwork instances do. The agents run the test kit's render of the
//! same resources the test applies, not the ConfigMaps (the end-to-end tests
//! on a real node prove that path); `a` runs the pool's render before it
//! referenced the plan, so only `b` warms up.

#[allow(dead_code)]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::*;
use operator_support::*;

// Egress addresses must not be loopback (the API server refuses them as
// endpoints): TEST-NET-2 addresses on the test's own namespace's lo.
const A: &str = "198.51.100.31";
const B: &str = "198.51.100.32";
const PROVIDER: &str = "203.0.113.41";
const T: Duration = Duration::from_secs(90);

#[test]
fn agents_decisions_reach_domain_policy_and_warmup_plan_status_and_the_peers_policy() {
    require_postfix();
    let cp = control_plane(false);
    let _op = Operator::start_with(
        cp,
        "adaptive",
        &["--no-leader-election", "--agent-poll-interval", "2s", "--resync-interval", "5s"],
    );
    let ns = cp.namespace("adaptive").unwrap();
    let n = ns.name();

    let dns = Dns::start("127.0.0.53", &[("blocky.test", PROVIDER), ("client.test", PROVIDER)]);
    let receiver = receiver(
        "adaptive-rcv",
        PROVIDER,
        &["blocky.test"],
        &[("blocky.test", "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org")],
    );
    let plan = Plan::named("ramp-up").in_ns(n).step(1, 50).step(3, 200);
    let policy = Policy::named("blocky").in_ns(n).for_domains(&["blocky.test"]).auto_exclusion(3, "1h", "1h");
    let pool = Pool::named("bulk").in_ns(n).host_network().with_ip("a", A).with_ip("b", B).fast_retries();
    let rendered = fleet(pool.clone().warmup("ramp-up").build(), &dns).policy(policy.build()).plan(plan.build());
    let a = fleet(pool.build(), &dns).policy(policy.build()).start("a");
    let b = rendered.start("b");

    cp.apply(&format!("{}---\n{}---\n{}", plan.yaml(), policy.yaml(), pool.warmup("ramp-up").yaml())).unwrap();
    mount_pool_token(cp, n, "bulk", &[&a, &b]);
    running_pod(cp, n, "bulk", "a");
    running_pod(cp, n, "bulk", "b");

    // Before any block: the policy is accepted, nothing excluded.
    let dp = wait_for("DomainPolicy status", T, || {
        get_json(cp, &["domainpolicy", "blocky", "-n", n]).filter(|d| d["status"]["conditions"].is_array())
    });
    let accepted = &dp["status"]["conditions"][0];
    assert_eq!((accepted["type"].as_str(), accepted["status"].as_str()), (Some("Accepted"), Some("True")), "{dp}");
    assert_eq!(accepted["message"], "applies to pools: bulk");
    assert_eq!(dp["status"]["activeExclusions"], 0, "{dp}");

    // Three hard blocks: a's agent excludes a for the rule.
    a.inject("app@client.test", "user@blocky.test", 3, 1);
    let st = a.wait_for(T, "a excluded for blocky", |s| s.adaptive.exclusions.iter().any(|e| e.rule == "blocky"));
    let excl = st.adaptive.exclusions.iter().find(|e| e.rule == "blocky").unwrap().clone();
    assert!(receiver.deliveries().to_domain("blocky.test") == 0);

    // The operator mirrors it into the DomainPolicy's status ...
    let dp = wait_for("automatic exclusion in DomainPolicy status", T, || {
        get_json(cp, &["domainpolicy", "blocky", "-n", n]).filter(|d| d["status"]["activeExclusions"] == 1)
    });
    let e = &dp["status"]["exclusions"][0];
    assert_eq!(
        (e["pool"].as_str(), e["instance"].as_str(), e["automatic"].as_bool()),
        (Some("bulk"), Some("a"), Some(true))
    );
    assert_eq!(e["reason"].as_str(), Some(excl.reason.as_str()));
    let since: k8s_openapi::jiff::Timestamp = e["since"].as_str().unwrap().parse().unwrap();
    let until: k8s_openapi::jiff::Timestamp = e["until"].as_str().unwrap().parse().unwrap();
    assert_eq!((since.as_second() as u64, until.as_second() as u64), (excl.since, excl.until));

    // ... and into the policy rendered for the peer b.
    let policy_of = |inst: &str| -> serde_json::Value {
        let cm = get_json(cp, &["configmap", &format!("bulk-{inst}"), "-n", n]).unwrap();
        serde_json::from_str(cm["data"]["policy.json"].as_str().unwrap()).unwrap()
    };
    wait_for("b's policy excludes a for blocky", T, || {
        let p = policy_of("b");
        let a_entry = p["instances"].as_array()?.iter().find(|i| i["name"] == "a")?.clone();
        (a_entry["excludedRules"] == serde_json::json!(["blocky"])).then_some(())
    });

    // Warm-up: b reports step 1 with today's cap; pool and plan show it.
    let pool = wait_for("b's warm-up in the pool status", T, || {
        get_json(cp, &["sendingpool", "bulk", "-n", n]).filter(|p| {
            p["status"]["instances"]
                .as_array()
                .is_some_and(|is| is.iter().any(|i| i["name"] == "b" && i["warmup"].is_object()))
        })
    });
    let inst = |name: &str| {
        pool["status"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap().clone()
    };
    let wb = inst("b")["warmup"].clone();
    assert_eq!((wb["step"].as_u64(), wb["dailyCap"].as_u64()), (Some(1), Some(50)), "{wb}");
    assert!(wb["nextStepAt"].as_str().is_some_and(|s| s.ends_with('Z')), "{wb}");
    assert!(inst("a")["warmup"].is_null(), "a has no plan in its policy: {}", inst("a"));
    let warming =
        pool["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "WarmingUp").unwrap().clone();
    assert_eq!(warming["status"], "True", "{warming}");
    assert!(warming["message"].as_str().unwrap().ends_with(": b"), "{warming}");
    let plan = wait_for("WarmupPlan status", T, || {
        get_json(cp, &["warmupplan", "ramp-up", "-n", n]).filter(|p| p["status"]["warming"] == 1)
    });
    assert_eq!(plan["status"]["days"], 3, "{plan}");
    let pi = &plan["status"]["instances"][0];
    assert_eq!(
        (pi["pool"].as_str(), pi["instance"].as_str(), pi["step"].as_u64()),
        (Some("bulk"), Some("b"), Some(1)),
        "{plan}"
    );
    assert_eq!(b.status().adaptive.warmup.as_ref().map(|w| w.daily_cap), Some(Some(50)));
}
