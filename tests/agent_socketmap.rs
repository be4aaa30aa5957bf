//! The socketmap service through its real protocol (netstrings on the unix
//! socket Postfix connects to), against a running `sendfleet agent`:
//! answers, socket permissions, pipelining, and a refused bad config that
//! leaves the previous policy in force.

#[allow(dead_code)]
mod agent_support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::*;
use sendfleet::agent::socketmap::codec::{decode, encode_into, Decoded, Reply};
use sendfleet::core::policy::DomainRule;

const ADDR: &str = "127.0.13.1";

fn lookup(s: &mut UnixStream, key: &str) -> Reply {
    let mut out = Vec::new();
    encode_into(&mut out, format!("transport {key}").as_bytes());
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Decoded::Frame(p, _)) = decode(&buf) {
            return Reply::parse(p).expect("reply");
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "agent closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn socketmap_answers_over_the_real_protocol_and_bad_config_is_refused() {
    require_postfix();
    add_addr(ADDR);
    let mut cfg = InstanceConfig::new("sm-a", ADDR);
    cfg.policy.instances = vec![instance("sm-a", ADDR), instance("sm-b", "127.0.13.2")];
    cfg.policy.instances[0].excluded_rules = vec!["excl".into()];
    let mut paused = DomainRule { name: "paused".into(), patterns: vec!["paused.test".into()], ..Default::default() };
    paused.paused = Some("maintenance".into());
    cfg.policy.domains =
        vec![paused, DomainRule { name: "excl".into(), patterns: vec![".excluded.test".into()], ..Default::default() }];
    let base = test_dir("sm");
    for d in ["queue", "data", "run", "postfix", "state"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(base.join("hash.key"), HASH_KEY).unwrap();
    let mut source = ConfigSource::new(base.join("config"));
    let good = cfg.files(&base);
    let good_hash = source.write(&good);
    let sock = base.join("run/policy.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendfleet"))
        .arg("agent")
        .arg("--no-supervise")
        .arg("--config-source")
        .arg(base.join("config"))
        .arg("--postfix-dir")
        .arg(base.join("postfix/current"))
        .arg("--policy-socket")
        .arg(&sock)
        .arg("--listen")
        .arg(format!("{ADDR}:{HTTP_PORT}"))
        .arg("--hash-key-file")
        .arg(base.join("hash.key"))
        .arg("--state-dir")
        .arg(base.join("state"))
        .arg("--config-poll-ms")
        .arg("100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "agent ready", || {
        http_get(ADDR, HTTP_PORT, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "postfix must be able to connect");

    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(lookup(&mut s, "PAUSED.test"), Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into()));
    // Postfix asks with the full recipient address (socketmap is a pattern table).
    assert_eq!(
        lookup(&mut s, "user+ext@paused.test"),
        Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into())
    );
    assert_eq!(lookup(&mut s, "*"), Reply::NotFound);
    assert_eq!(lookup(&mut s, ".excluded.test"), Reply::NotFound);
    assert_eq!(lookup(&mut s, "mx.excluded.test"), Reply::Ok(format!("peer-relay:[127.0.13.2]:{PEER_PORT}")));
    assert_eq!(lookup(&mut s, "other.test"), Reply::NotFound);

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
    let bad_hash = source.write(&bad);
    eventually(Duration::from_secs(20), "bad config refused", || {
        let body = http_get(ADDR, HTTP_PORT, "/status").map(|(_, b)| b).unwrap_or_default();
        let st: sendfleet::core::contract::AgentStatus = serde_json::from_str(&body).unwrap();
        st.config.refused.as_ref().is_some_and(|r| r.hash == bad_hash && r.reason == "MainCfInvalid")
            && st.config.loaded_hash.as_deref() == Some(good_hash.as_str())
    });
    // A policy that does not parse is refused too.
    let mut bad_policy = good.clone();
    bad_policy.insert("policy.json".into(), "{\"version\": 1, \"pool\": 3}".into());
    let bad_policy_hash = source.write(&bad_policy);
    eventually(Duration::from_secs(20), "bad policy refused", || {
        let body = http_get(ADDR, HTTP_PORT, "/status").map(|(_, b)| b).unwrap_or_default();
        let st: sendfleet::core::contract::AgentStatus = serde_json::from_str(&body).unwrap();
        st.config.refused.as_ref().is_some_and(|r| r.hash == bad_policy_hash && r.reason == "PolicyInvalid")
    });
    assert_eq!(lookup(&mut s, "paused.test"), Reply::Ok("retry:4.7.1 paused by policy paused: maintenance".into()));
    let m = http_get(ADDR, HTTP_PORT, "/metrics").unwrap().1;
    assert!(m.contains("sendfleet_agent_config_installs_total{result=\"refused\"} 2"), "{m}");

    // A good change installs and takes effect on the live connection.
    let mut fixed = good.clone();
    let mut p = cfg.policy.clone();
    p.domains[0].paused = None;
    fixed.insert("policy.json".into(), serde_json::to_string(&p).unwrap());
    let fixed_hash = source.write(&fixed);
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        last = http_get(ADDR, HTTP_PORT, "/status").map(|(_, b)| b).unwrap_or(last);
        let st: sendfleet::core::contract::AgentStatus = serde_json::from_str(&last).unwrap();
        if st.config.loaded_hash.as_deref() == Some(fixed_hash.as_str()) && st.config.refused.is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "fixed config not installed: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lookup(&mut s, "paused.test"), Reply::NotFound);

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&base);
}
