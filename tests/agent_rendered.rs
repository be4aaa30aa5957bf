//! The operator/agent contract on the renderer's real output: the files
//! `render_pool` produces for an instance of examples/ (its ConfigMap, with
//! the pod's args) are accepted by the agent's install checks (real
//! `postconf`, `postmap`), the config hash the agent reports equals the
//! renderer's, and the rendered policy drives the socketmap answers
//! (slow-down and exclusion from observed state).

#[allow(dead_code)]
mod agent_support;

use agent_support::*;
use sendfleet::agent::socketmap::codec::Reply;
use sendfleet::core::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet::core::render::Observed;

// Egress addresses cannot be loopback (the renderer refuses them): TEST-NET-2
// addresses on this test binary's own namespace's lo.
const ADDRS: [&str; 3] = ["198.51.100.171", "198.51.100.172", "198.51.100.173"];

#[test]
fn agent_installs_rendered_files_and_reports_the_renderers_hash() {
    require_postfix();
    let mut pool: SendingPool = example("sendingpool.yaml");
    for (ip, addr) in pool.spec.egress_ips.iter_mut().zip(ADDRS) {
        ip.address = addr.to_string();
    }
    let policy: DomainPolicy = example("domainpolicy-throttled-provider.yaml");
    let plan: WarmupPlan = example("warmupplan.yaml");
    let mut observed = Observed::default();
    observed.exclusions.insert(("bigmail".into(), "mta2".into()), "5 hard blocks".into());
    let dns = Dns::start("127.0.0.53", &[]);
    let fleet = fleet(pool, &dns).policy(policy).plan(plan).observed(observed);

    let agent = fleet.start_unsupervised("mta2");
    let st = agent.status();
    assert_eq!(
        st.config.loaded_hash.as_deref(),
        Some(agent.pod.rendered.config_hash.as_str()),
        "agent and renderer disagree on the hash"
    );
    assert!(st.config.refused.is_none(), "{:?}", st.config.refused);
    assert_eq!(st.instance, "mta2");

    // mta2 is excluded for bigmail: its mail goes to a peer in rotation.
    match lookup(&agent.policy_socket(), "someone@bigmail.example") {
        Reply::Ok(r) => assert!(
            r == format!("peer-relay:[{}]:{}", ADDRS[0], agent.peer_port)
                || r == format!("peer-relay:[{}]:{}", ADDRS[2], agent.peer_port),
            "{r}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(lookup(&agent.policy_socket(), "someone@other.example"), Reply::NotFound);
    drop(agent);

    // mta1 is not excluded and has no slow-down of its own (that is the
    // agent's decision, agent::adaptive): the static map routes, and the
    // rendered rule names the slow transport a slow-down would use.
    let agent = fleet.start_unsupervised("mta1");
    let slow = agent
        .pod
        .rendered
        .policy
        .rule_for("bigmail.example")
        .and_then(|r| r.slow_transport.clone())
        .expect("slow transport rendered");
    assert_eq!(slow, "dp-bigmail-slow");
    assert_eq!(lookup(&agent.policy_socket(), "a@mx.bigmail.example"), Reply::NotFound);
    assert_eq!(agent.status().config.loaded_hash.as_deref(), Some(agent.pod.rendered.config_hash.as_str()));
}
