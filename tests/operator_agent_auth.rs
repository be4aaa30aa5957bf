//! The operator reaches its agents only with the pool's token and believes
//! only the pod it polled (issue 15), on a real API server with the
//! operator as a process under its RBAC and a real agent:
//!
//! - applying a pool creates `<pool>-agent-token` (64 hex digits, owned by
//!   the pool), and the instance StatefulSet mounts it read-only (mode
//!   0400) and passes `--auth-token-file` — read back from the API;
//! - while the agent holds another token the operator's polls are refused
//!   (the agent counts them) and nothing of the agent reaches the status;
//!   once the agent has the Secret's token (as the kubelet mounts it), the
//!   instance row carries the config hash the agent reports;
//! - when another pod than the one answering holds the instance's labels,
//!   the report is refused with a Warning Event `AgentIdentityMismatch`.
//!
//! As in `operator_flow.rs`, pods are API objects marked Running and the
//! agent answers on the instance's egress address (hostNetwork).

#[allow(dead_code)]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::*;
use operator_support::*;

const A: &str = "198.51.100.91";
const PROVIDER: &str = "203.0.113.91";
const T: Duration = Duration::from_secs(90);

fn instance_row(cp: &sendfleet_lab::ControlPlane, ns: &str) -> Option<serde_json::Value> {
    let p = get_json(cp, &["sendingpool", "bulk", "-n", ns])?;
    p["status"]["instances"].as_array()?.iter().find(|i| i["name"] == "a").cloned()
}

fn unauthorized(a: &Instance) -> u64 {
    let m = a.metrics();
    m.lines()
        .find_map(|l| l.strip_prefix("sendfleet_agent_http_unauthorized_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn polls_carry_the_pools_token_from_its_secret_and_a_report_from_another_pod_is_refused() {
    require_postfix();
    let cp = control_plane(false);
    let _op = Operator::start_with(
        cp,
        "agentauth",
        &["--no-leader-election", "--agent-poll-interval", "1s", "--resync-interval", "2s"],
    );
    let ns = cp.namespace("agentauth").unwrap();
    let n = ns.name();
    let dns = Dns::start("127.0.0.53", &[("dest.test", PROVIDER)]);
    let pool = Pool::named("bulk").in_ns(n).host_network().with_ip("a", A);
    let a = fleet(pool.build(), &dns).start_unsupervised("a");
    cp.apply(&pool.yaml()).unwrap();

    // The Secret: random, hex, owned by the pool.
    let secret = wait_for("Secret bulk-agent-token", T, || get_json(cp, &["secret", "bulk-agent-token", "-n", n]));
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("SendingPool"), Some("bulk")), "{secret}");
    let token = pool_agent_token(cp, n, "bulk");
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_ne!(token, AGENT_TOKEN);

    // The StatefulSet mounts it read-only and the agent is told to require it.
    let sts = wait_for("StatefulSet bulk-a", T, || get_json(cp, &["statefulset", "bulk-a", "-n", n]));
    let pod = &sts["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "agent-token").cloned();
    let volume = volume.unwrap_or_else(|| panic!("no agent-token volume: {pod}"));
    assert_eq!(volume["secret"]["secretName"], "bulk-agent-token", "{volume}");
    assert_eq!(volume["secret"]["defaultMode"], 0o400, "{volume}");
    assert!(volume["secret"]["optional"].is_null() || volume["secret"]["optional"] == false, "{volume}");
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "agent-token").cloned().unwrap();
    assert_eq!(
        (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
        (Some("/etc/sendfleet/agent-token"), Some(true))
    );
    assert!(
        c["args"].as_array().unwrap().iter().any(|a| a == "--auth-token-file=/etc/sendfleet/agent-token/token"),
        "{}",
        c["args"]
    );

    // The agent still holds the kit's token: every poll is refused, and
    // nothing the agent knows reaches the pool's status.
    running_pod(cp, n, "bulk", "a");
    wait_until("the operator's polls refused by the agent", T, || unauthorized(&a) >= 2);
    let row = instance_row(cp, n);
    assert!(row.as_ref().is_none_or(|r| r["appliedConfigHash"].is_null()), "{row:?}");

    // The kubelet mounts the Secret: the operator's polls get in.
    mount_pool_token(cp, n, "bulk", &[&a]);
    let loaded = a.status().config.loaded_hash.expect("the agent installed its config");
    wait_for("the agent's config hash in the instance row", T, || {
        (instance_row(cp, n)?["appliedConfigHash"] == loaded.as_str()).then_some(())
    });
    let refused = unauthorized(&a);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(unauthorized(&a), refused, "no poll refused once the token is mounted");

    // Another pod holds the instance's labels while a's agent (pod
    // bulk-a-0) answers on the address: the report is refused and said so.
    cp.kubectl_run(&["delete", "pod", "bulk-a-0", "-n", n, "--force", "--grace-period=0"]).unwrap();
    running_pod_named(cp, n, "bulk", "a", "bulk-a-impostor");
    let event = wait_for("a Warning Event AgentIdentityMismatch", T, || {
        let evs = get_json(cp, &["events.events.k8s.io", "-n", n])?;
        evs["items"].as_array()?.iter().find(|e| e["reason"] == "AgentIdentityMismatch").cloned()
    });
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.contains("\"bulk-a-impostor\"") && note.contains("\"bulk-a-0\""), "{event}");
    assert_eq!(event["type"], "Warning", "{event}");
}
