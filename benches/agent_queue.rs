//! Benchmark: the agent's queue scan (`postqueue -j` stream-parsed and
//! folded, as `agent::queue::monitor::scan` runs it) on a real
//! 100,000-message deferred queue, vs `postqueue -j` alone writing to
//! /dev/null. Target: the agent adds < 10% to postqueue's own time.
//!
//! The queue is made real and quickly: a Postfix instance with
//! `defer_transports = smtp` accepts mail from 10 parallel smtp-source
//! clients and moves every message to the deferred queue ("deferred
//! transport"); no delivery is attempted.

#[path = "../tests/agent_support/mod.rs"]
#[allow(dead_code)]
mod agent_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;

const MESSAGES: usize = 100_000;
const CLIENTS: usize = 10;
const ADDR: &str = "127.0.16.1";

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_files(&p);
        } else {
            n += 1;
        }
    }
    n
}

fn main() {
    require_postfix();
    add_addr(ADDR);
    let dir = test_dir("bench-queue");
    for d in ["queue", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    Command::new("chown").arg("postfix").arg(dir.join("data")).status().unwrap();
    let main_cf = format!(
        "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmaillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
         inet_interfaces = {ADDR}\ninet_protocols = ipv4\nmyhostname = bench.test\nmydestination =\nmynetworks = 127.0.0.0/8\n\
         defer_transports = smtp\nqueue_run_delay = 3600s\nminimal_backoff_time = 3600s\nmaximal_backoff_time = 7200s\n\
         default_process_limit = 100\nsmtpd_client_connection_rate_limit = 0\nhash_queue_depth = 1\n",
        q = dir.join("queue").display(),
        d = dir.join("data").display(),
    );
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    std::fs::write(dir.join("master.cf"), format!("{ADDR}:25 inet n - n - - smtpd\n{INTERNAL_SERVICES}")).unwrap();
    postfix(&dir, "start");
    wait_banner(ADDR, 25, Duration::from_secs(30));

    let t = Instant::now();
    let per = MESSAGES / CLIENTS;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let rcpt = format!("user{c}@provider{}.example", c % 7);
                inject(ADDR, "app@client.test", &rcpt, per as u32, 4);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let deferred_dir = dir.join("queue/deferred");
    eventually(Duration::from_secs(600), "100k messages deferred", || count_files(&deferred_dir) >= MESSAGES);
    println!("built a {MESSAGES}-message deferred queue in {:.1} s", t.elapsed().as_secs_f64());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut pq = Vec::new();
    let mut agent = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        let st = Command::new("postqueue").arg("-c").arg(&dir).arg("-j").stdout(Stdio::null()).status().unwrap();
        assert!(st.success());
        pq.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let scan = rt.block_on(sendfleet::agent::queue::monitor::scan(&dir, 4 * 3600, 12 * 3600)).expect("agent scan");
        agent.push(t.elapsed().as_secs_f64());
        last = Some(scan);
    }
    let scan = last.unwrap();
    assert_eq!(scan.messages.get("deferred").copied(), Some(MESSAGES as u64), "{:?}", scan.messages);
    assert_eq!(scan.malformed, 0);
    let top = scan.top_deferred(3);
    assert_eq!(top.len(), 3);
    pq.sort_by(|a, b| a.partial_cmp(b).unwrap());
    agent.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p, a) = (pq[2], agent[2]);
    let overhead = (a / p - 1.0) * 100.0;
    println!("postqueue -j > /dev/null:  median {:.3} s over 5 runs ({:.0} msgs/s)", p, MESSAGES as f64 / p);
    println!(
        "agent queue scan:          median {:.3} s over 5 runs (postqueue -j piped + streamed JSON parse + fold)",
        a
    );
    println!(
        "agent overhead vs postqueue alone: {overhead:+.1}% (target < 10%: {}); top deferred domains: {top:?}",
        if overhead < 10.0 { "met" } else { "MISSED" }
    );
    postfix(&dir, "stop");
    let _ = std::fs::remove_dir_all(&dir);
}
