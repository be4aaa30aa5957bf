//! A pool whose DKIM key is unusable holds its mail, and the pool's own
//! status says so (issue 16): a real agent on real Postfix, configured by
//! the renderer with the pool's `spec.dkim` and a Secret key that is no
//! key, refuses submissions with a 4xx rather than send unsigned (shown by
//! tests/agent_dkim.rs, on the same agent and Postfix); the real
//! operator, polling it with the pool's token on the real API server,
//! shows `DkimSigning=False KeyUnusable` naming the instance and the
//! agent's reason, and the instance row carries it (`Held: ...`). The
//! signing itself, rotation and the opt-out: tests/agent_dkim.rs.
//!
//! As in `operator_agent_auth.rs`, pods are API objects marked Running and
//! the agent answers on the instance's egress address (hostNetwork).

#[allow(dead_code)]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::*;
use operator_support::*;

const A: &str = "198.51.100.95";
const PROVIDER: &str = "203.0.113.95";
const T: Duration = Duration::from_secs(90);

#[test]
fn an_unusable_key_shows_in_the_pool_status_naming_the_instance_and_the_reason() {
    require_postfix();
    let cp = control_plane(false);
    let _op = Operator::start_with(
        cp,
        "dkim",
        &["--no-leader-election", "--agent-poll-interval", "1s", "--resync-interval", "2s"],
    );
    let ns = cp.namespace("dkim-held").unwrap();
    let n = ns.name();
    let dns = Dns::start("127.0.0.54", &[("dest.test", PROVIDER)]);
    let pool = Pool::named("signed")
        .in_ns(n)
        .host_network()
        .with_ip("a", A)
        .spec("dkim: {secretName: dk, selector: s1, domains: [app.test]}");
    // The Secret's key for selector s1 holds no PEM key.
    let a = fleet(pool.build(), &dns).dkim_key("s1.key", "not a key\n").start_unsupervised("a");
    cp.apply(&pool.yaml()).unwrap();
    wait_for("Secret signed-agent-token", T, || get_json(cp, &["secret", "signed-agent-token", "-n", n]));
    running_pod(cp, n, "signed", "a");
    mount_pool_token(cp, n, "signed", &[&a]);

    let (status, _, message) = wait_for("DkimSigning=False KeyUnusable", T, || {
        condition(cp, "sendingpool", "signed", n, "DkimSigning").filter(|c| c.1 == "KeyUnusable")
    });
    assert_eq!(status, "False");
    assert!(message.contains("holding new mail") && message.contains("a: Held: "), "{message}");
    assert!(message.contains("s1"), "the reason names the selector: {message}");
    assert!(!message.contains("not a key"), "key material in the status: {message}");
    let p = get_json(cp, &["sendingpool", "signed", "-n", n]).unwrap();
    let row = p["status"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == "a").unwrap().clone();
    assert!(row["dkim"].as_str().unwrap_or("").starts_with("Held: "), "{row}");
}
