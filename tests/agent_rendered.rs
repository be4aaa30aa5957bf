//! The operator/agent contract on the renderer's real output: the files
//! `render_pool` produces for an instance (from examples/) are accepted by
//! the agent's install checks (real `postconf`, `postmap`), the config hash
//! the agent reports equals the renderer's, and the rendered policy drives
//! the socketmap answers (slow-down and exclusion from observed state).

#[allow(dead_code)]
mod agent_support;

use agent_support::*;
use sendfleet::agent::socketmap::codec::Reply;
use sendfleet::core::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet::core::render::{render_pool, Observed, PoolInput, Settings};

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

    let base = test_dir("rendered-mta2");
    let settings = Settings {
        queue_directory: base.join("queue").display().to_string(),
        data_directory: base.join("data").display().to_string(),
        policy_socket: base.join("run/policy.sock").display().to_string(),
        ..Settings::default()
    };
    let pools = vec![pool.clone()];
    let policies = vec![policy];
    let rendered = render_pool(
        PoolInput { pool: &pool, policies: &policies, plan: Some(&plan), pools: &pools, observed: &observed },
        &settings,
    )
    .expect("render");
    let mta2 = rendered.instances.iter().find(|i| i.name == "mta2").expect("mta2 rendered");

    let agent = PolicyAgent::start_with_files(base, ADDRS[1], &mta2.files);
    let st = agent.status();
    assert_eq!(
        st.config.loaded_hash.as_deref(),
        Some(mta2.config_hash.as_str()),
        "agent and renderer disagree on the hash"
    );
    assert!(st.config.refused.is_none(), "{:?}", st.config.refused);
    assert_eq!(st.instance, "mta2");

    // mta2 is excluded for bigmail: its mail goes to a peer in rotation.
    match agent.lookup("someone@bigmail.example") {
        Reply::Ok(r) => assert!(
            r == format!("peer-relay:[{}]:{}", ADDRS[0], settings.peer_port)
                || r == format!("peer-relay:[{}]:{}", ADDRS[2], settings.peer_port),
            "{r}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(agent.lookup("someone@other.example"), Reply::NotFound);
    drop(agent);

    // mta1 is not excluded and has no slow-down of its own (that is the
    // agent's decision, agent::adaptive): the static map routes, and the
    // rendered rule names the slow transport a slow-down would use.
    let base = test_dir("rendered-mta1");
    let mta1 = rendered.instances.iter().find(|i| i.name == "mta1").unwrap();
    let agent = PolicyAgent::start_with_files(base, ADDRS[0], &mta1.files);
    let slow = mta1
        .policy
        .rule_for("bigmail.example")
        .and_then(|r| r.slow_transport.clone())
        .expect("slow transport rendered");
    assert_eq!(slow, "dp-bigmail-slow");
    assert_eq!(agent.lookup("a@mx.bigmail.example"), Reply::NotFound);
    assert_eq!(agent.status().config.loaded_hash.as_deref(), Some(mta1.config_hash.as_str()));
}
