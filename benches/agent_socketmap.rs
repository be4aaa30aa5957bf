//! Benchmark: transport lookups through the real socketmap protocol
//! (netstrings over the agent's unix socket), against the `sendfleet agent`
//! binary. Prints lookups/s and latency percentiles for one connection
//! (one trivial-rewrite process) and for four concurrent connections.
//! Targets: >= 50,000 lookups/s, p99 < 1 ms.

#[path = "../tests/agent_support/mod.rs"]
#[allow(dead_code)]
mod agent_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use agent_support::*;
use sendfleet::agent::socketmap::codec::{decode, encode_into, Decoded};
use sendfleet::core::policy::DomainRule;

const PER_CONN: usize = 100_000;

fn run(socket: &std::path::Path, conns: usize) -> (f64, Vec<u64>) {
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let keys = ["user{}@gmail.com", "user{}@paused.test", "user{}@mx.excluded.test", "user{}@other{}.org"];
                let mut lat = Vec::with_capacity(PER_CONN);
                let mut req = Vec::with_capacity(128);
                let mut buf = Vec::with_capacity(256);
                let mut chunk = [0u8; 256];
                for i in 0..PER_CONN {
                    let key = keys[i % keys.len()].replacen("{}", &(i * 7 + c).to_string(), 1).replacen(
                        "{}",
                        &(i % 97).to_string(),
                        1,
                    );
                    req.clear();
                    encode_into(&mut req, format!("transport {key}").as_bytes());
                    let t = Instant::now();
                    s.write_all(&req).unwrap();
                    buf.clear();
                    loop {
                        if let Ok(Decoded::Frame(_, _)) = decode(&buf) {
                            break;
                        }
                        let n = s.read(&mut chunk).unwrap();
                        assert!(n > 0, "agent closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / secs, all)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    require_postfix();
    let mut cfg = InstanceConfig::new("bench-sm", "127.0.15.1");
    cfg.policy.instances = vec![instance("bench-sm", "127.0.15.1"), instance("peer", "127.0.15.2")];
    cfg.policy.instances[0].excluded_rules = vec!["excl".into()];
    let mut paused = DomainRule { name: "paused".into(), patterns: vec!["paused.test".into()], ..Default::default() };
    paused.paused = Some("maintenance".into());
    cfg.policy.domains = vec![
        DomainRule {
            name: "gmail".into(),
            patterns: vec!["gmail.com".into(), ".gmail.com".into()],
            ..Default::default()
        },
        paused,
        DomainRule { name: "excl".into(), patterns: vec![".excluded.test".into()], ..Default::default() },
    ];
    for i in 0..50 {
        cfg.policy.domains.push(DomainRule {
            name: format!("r{i}"),
            patterns: vec![format!("p{i}.example")],
            ..Default::default()
        });
    }
    let agent = PolicyAgent::start(&cfg);
    for conns in [1usize, 4] {
        let (rate, lat) = run(&agent.socket, conns);
        println!(
            "socketmap lookups, {conns} connection(s): {} lookups, {rate:.0}/s, latency p50 {:.1} us, p99 {:.1} us, max {:.1} us (targets: >= 50,000/s: {}, p99 < 1 ms: {})",
            lat.len(),
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            if rate >= 50_000.0 { "met" } else { "MISSED" },
            if pct(&lat, 0.99) < 1000.0 { "met" } else { "MISSED" },
        );
    }
}
