//! The socketmap service through its real protocol (netstrings on the unix
//! socket Postfix connects to), against a running `sendfleet agent`:
//! answers, socket permissions, pipelining, and a refused bad config that
//! leaves the previous policy in force.

#[allow(dead_code)]
mod agent_support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use agent_support::*;
use sendfleet::agent::socketmap::codec::{decode, encode_into, Decoded, Reply};

const ADDR: &str = "198.51.100.13";
const PEER: &str = "198.51.100.14";

/// sm-a and sm-b; `paused.test` held while `paused`, sm-a never sends
/// `*.excluded.test`.
fn fleet_with(dns: &Dns, paused: bool) -> Fleet {
    let pool = Pool::named("sm").in_ns("test").with_ip("sm-a", ADDR).with_ip("sm-b", PEER);
    let mut on_hold = Policy::named("paused").in_ns("test").for_domains(&["paused.test"]);
    if paused {
        on_hold = on_hold.paused("maintenance");
    }
    fleet(pool.build(), dns)
        .policy(on_hold.build())
        .policy(Policy::named("excl").in_ns("test").for_domains(&["*.excluded.test"]).excluding(&["sm-a"]).build())
}

#[test]
fn socketmap_answers_over_the_real_protocol_and_bad_config_is_refused() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[]);
    let mut agent = fleet_with(&dns, true).start_unsupervised("sm-a");
    let good = agent.pod.files.clone();
    let good_hash = agent.pod.rendered.config_hash.clone();
    let sock = agent.policy_socket();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "postfix must be able to connect");

    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(lookup_on(&mut s, "PAUSED.test"), Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into()));
    // Postfix asks with the full recipient address (socketmap is a pattern table).
    assert_eq!(
        lookup_on(&mut s, "user+ext@paused.test"),
        Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into())
    );
    assert_eq!(lookup_on(&mut s, "*"), Reply::NotFound);
    assert_eq!(lookup_on(&mut s, ".excluded.test"), Reply::NotFound);
    assert_eq!(lookup_on(&mut s, "mx.excluded.test"), Reply::Ok(format!("peer-relay:[{PEER}]:{}", agent.peer_port)));
    assert_eq!(lookup_on(&mut s, "other.test"), Reply::NotFound);

    // Pipelined requests on one connection, split at odd boundaries.
    let mut out = Vec::new();
    for k in ["a.test", "paused.test", "b.test"] {
        encode_into(&mut out, format!("transport {k}").as_bytes());
    }
    for part in out.chunks(7) {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 512];
    while replies.len() < 3 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Decoded::Frame(p, used)) = decode(&buf) {
            replies.push(Reply::parse(p).unwrap());
            buf.drain(..used);
        }
    }
    assert_eq!(replies[0], Reply::NotFound);
    assert!(matches!(&replies[1], Reply::Ok(r) if r.starts_with("retry:")));
    assert_eq!(replies[2], Reply::NotFound);

    // A bad main.cf is refused; the previous config and policy stay.
    let mut bad = good.clone();
    bad.get_mut("main.cf").unwrap().push_str("this line is not a parameter\n");
    let bad_hash = agent.source.write(&bad);
    agent.wait_for(Duration::from_secs(20), "bad config refused", |st| {
        st.config.refused.as_ref().is_some_and(|r| r.hash == bad_hash && r.reason == "MainCfInvalid")
            && st.config.loaded_hash.as_deref() == Some(good_hash.as_str())
    });
    // A policy that does not parse is refused too.
    let mut bad_policy = good.clone();
    bad_policy.insert("policy.json".into(), "{\"version\": 1, \"pool\": 3}".into());
    let bad_policy_hash = agent.source.write(&bad_policy);
    agent.wait_for(Duration::from_secs(20), "bad policy refused", |st| {
        st.config.refused.as_ref().is_some_and(|r| r.hash == bad_policy_hash && r.reason == "PolicyInvalid")
    });
    assert_eq!(lookup_on(&mut s, "paused.test"), Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into()));
    let m = agent.metrics();
    assert!(m.contains("sendfleet_agent_config_installs_total{result=\"refused\"} 2"), "{m}");

    // A good change (the policy unpaused, re-rendered) installs and takes
    // effect on the live connection.
    let fixed_hash = agent.apply_render(&fleet_with(&dns, false), Duration::from_secs(20));
    let st = agent.status();
    assert!(st.config.refused.is_none() && st.config.loaded_hash.as_deref() == Some(fixed_hash.as_str()), "{st:?}");
    assert_eq!(lookup_on(&mut s, "paused.test"), Reply::NotFound);
}
