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
//! as hostNetwork instances do. The agents run the harness's configuration,
//! not the ConfigMaps (the end-to-end tests on a real node prove that path).

#[allow(dead_code)]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::{inject, instance, require_postfix, Agent, InstanceConfig, Receiver};
use operator_support::*;
use sendfleet::core::policy::{AutoExclusionRule, DomainRule, WarmupPolicy, WarmupSchedule, WarmupStepCap};

// Egress addresses must not be loopback (the API server refuses them as
// endpoints): TEST-NET-2 addresses on the test's own namespace's lo.
const A: &str = "198.51.100.31";
const B: &str = "198.51.100.32";
const PROVIDER: &str = "127.0.41.1";
const T: Duration = Duration::from_secs(90);

fn config(name: &str, addr: &str) -> InstanceConfig {
    let mut cfg = InstanceConfig::new(name, addr);
    cfg.peers = vec![if addr == A { B.into() } else { A.into() }];
    // Clients connect from the egress addresses themselves here.
    cfg.extra_main = "mynetworks = 127.0.0.0/8, 198.51.100.0/24\n".into();
    cfg.policy.instances = vec![instance("a", A), instance("b", B)];
    cfg.policy.domains = vec![DomainRule {
        name: "blocky".into(),
        patterns: vec!["blocky.test".into()],
        auto_exclusion: Some(AutoExclusionRule { hard_blocks: 3, window_seconds: 3600, duration_seconds: 3600 }),
        ..Default::default()
    }];
    if name == "b" {
        cfg.policy.warmup = Some(WarmupPolicy {
            plan: "ramp-up".into(),
            time_zone: "UTC".into(),
            schedule: WarmupSchedule {
                steps: vec![WarmupStepCap { day: 1, daily_cap: 50 }, WarmupStepCap { day: 3, daily_cap: 200 }],
                ramp: None,
            },
            ..Default::default()
        });
    }
    cfg
}

fn running_pod(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, instance: &str) {
    // No controller manager here to create the namespace's default account.
    cp.apply(&format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n")).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pool}-{instance}-0\n  namespace: {ns}\n  labels: {{sendfleet.io/pool: {pool}, sendfleet.io/instance: {instance}}}\nspec:\n  nodeName: no-such-node\n  automountServiceAccountToken: false\n  containers: [{{name: instance, image: sendfleet:test}}]\n"
    ))
    .unwrap();
    cp.kubectl_run(&[
        "patch",
        "pod",
        &format!("{pool}-{instance}-0"),
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .unwrap();
}

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

    let receiver = Receiver::start(
        "adaptive-rcv",
        PROVIDER,
        &["blocky.test"],
        &[("blocky.test", "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org")],
    );
    let hosts = [("blocky.test", PROVIDER)];
    let a = Agent::start(&config("a", A), &hosts);
    let b = Agent::start(&config("b", B), &hosts);

    cp.apply(&format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {{name: ramp-up, namespace: {n}}}\nspec:\n  steps: [{{day: 1, dailyCap: 50}}, {{day: 3, dailyCap: 200}}]\n---\n\
apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: blocky, namespace: {n}}}\nspec:\n  domains: [blocky.test]\n  autoExclusion: {{hardBlocks: 3, window: 1h, duration: 1h}}\n---\n\
apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: bulk, namespace: {n}}}\nspec:\n  warmupPlanRef: ramp-up\n  egress: {{mode: HostNetwork}}\n  egressIPs:\n  - {{name: a, address: {A}, heloName: a.sendfleet.test}}\n  - {{name: b, address: {B}, heloName: b.sendfleet.test}}\n"
    ))
    .unwrap();
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
    inject(A, "app@client.test", "user@blocky.test", 3, 1);
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
