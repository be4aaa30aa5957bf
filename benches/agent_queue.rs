//! Benchmark: the agent's queue scan (`postqueue -j` stream-parsed and
//! folded, as `agent::queue::monitor::scan` runs it) on a real
//! 100,000-message deferred queue, vs `postqueue -j` alone writing to
//! /dev/null. Target: the agent adds < 10% to postqueue's own time.
//!
//! The queue is made real and quickly: a rendered instance whose pool has a
//! paused DomainPolicy for every destination accepts mail from 10 parallel
//! smtp-source clients, and its agent answers each lookup `retry:`, which
//! moves every message to the deferred queue; no delivery is attempted.
//!
//! Then the agent's memory with what a million-message backlog makes it
//! remember: an agent whose log pipeline reads 1,000,000 deferrals to
//! 100,000 recipient domains (the log Postfix would write for them; no test
//! could make Postfix defer a million messages in time) reports its RSS,
//! with the bounds that hold it (docs/AGENT.md).

#[path = "../tests/agent_support/mod.rs"]
#[allow(dead_code)]
mod agent_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;

const MESSAGES: usize = 100_000;
const CLIENTS: usize = 10;
const ADDR: &str = "198.51.100.16";
const MEM_ADDR: &str = "198.51.100.18";
/// Deferred messages in the log the memory measurement feeds the agent ...
const LOG_MESSAGES: usize = 1_000_000;
/// ... to this many recipient domains.
const LOG_DOMAINS: usize = 100_000;
/// As long as an instance pod's name, as on every line of a pod's log.
const HOST: &str = "outbound-transactional-mta1-0";

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
    let dns = Dns::start("127.0.0.53", &[]);
    if std::env::var_os("AGENT_MEMORY_ONLY").is_some() {
        // The memory measurement alone (it needs no queue).
        log_memory(&dns);
        return;
    }
    let domains: Vec<String> = (0..7).map(|i| format!("provider{i}.example")).collect();
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    // The pool's default retry schedule: nothing is retried during the run.
    let pool = Pool::named("bench").in_ns("bench").with_ip("bench-queue", ADDR);
    let held = Policy::named("held").in_ns("bench").for_domains(&domains).paused("benchmark queue");
    let inst = fleet(pool.build(), &dns).as_in_production().policy(held.build()).start("bench-queue");
    let dir = inst.postfix_dir();

    let t = Instant::now();
    let per = MESSAGES / CLIENTS;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let port = inst.submission_port;
            std::thread::spawn(move || {
                let rcpt = format!("user{c}@provider{}.example", c % 7);
                inject(ADDR, port, "app@client.test", &rcpt, per as u32, 4, false);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let deferred_dir = inst.base.join("queue/deferred");
    wait_until("100k messages deferred", Duration::from_secs(600), || count_files(&deferred_dir) >= MESSAGES);
    println!("built a {MESSAGES}-message deferred queue in {:.1} s", t.elapsed().as_secs_f64());
    // The agent's own memory with this queue: its log pipeline has joined
    // every deferral (each message is tracked until it leaves the queue)
    // and its own scan, at the rendered interval, has folded the queue.
    let (rss_before, _) = inst.agent_memory_kib();
    inst.wait_for(Duration::from_secs(120), "the agent's own scan counted the whole queue", |s| {
        s.queue.messages.get("deferred").copied() == Some(MESSAGES as u64)
    });
    let (rss, peak) = inst.agent_memory_kib();
    println!(
        "agent memory with the {MESSAGES}-message deferred queue scanned and every deferral joined: RSS {:.1} MiB, peak {:.1} MiB (RSS {:.1} MiB before its scan)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );

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
        met(overhead < 10.0)
    );
    log_memory(&dns);
}

/// An agent's memory after its log pipeline read [`LOG_MESSAGES`]
/// deferrals to [`LOG_DOMAINS`] domains: the qmgr and smtp lines Postfix
/// logs for each, one recipient a message, every message still queued.
fn log_memory(dns: &Dns) {
    let pool = Pool::named("mem").in_ns("bench").with_ip("bench-mem", MEM_ADDR);
    let mut inst = fleet(pool.build(), dns).as_in_production().start_reading_log("bench-mem");
    let (rss_start, _) = inst.agent_memory_kib();
    let input = inst.log_input();
    let t = Instant::now();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, input);
    for i in 0..LOG_MESSAGES {
        let qid = format!("{:011X}", 0x1000_0000 + i * 7);
        let (dom, min, sec) = (i % LOG_DOMAINS, (i / 60) % 60, i % 60);
        let ip = dom % 250;
        writeln!(
            w,
            "Dec  2 10:{min:02}:{sec:02} {HOST} postfix/qmgr[900]: {qid}: from=<app@client.test>, size=1200, nrcpt=1 (queue active)\n\
             Dec  2 10:{min:02}:{sec:02} {HOST} postfix/smtp[901]: {qid}: to=<user{i}@d{dom}.example>, relay=mx.d{dom}.example[192.0.2.{ip}]:25, delay=1.2, delays=0.01/0/0.6/0.6, dsn=4.2.0, status=deferred (host mx.d{dom}.example[192.0.2.{ip}] said: 450 4.2.0 Try again later (in reply to RCPT TO command))",
        )
        .unwrap();
    }
    w.flush().unwrap();
    let lines = 2 * LOG_MESSAGES as u64;
    let st = inst.wait_for(Duration::from_secs(600), "every log line read", |s| s.log.lines >= lines);
    let took = t.elapsed().as_secs_f64();
    let (rss, peak) = inst.agent_memory_kib();
    // The pipe stays open until now: its end would end the pipeline.
    drop(w);
    assert_eq!(st.counters.since_start.deferred, LOG_MESSAGES as u64, "every deferral counted");
    assert_eq!(st.log.malformed, 0);
    println!(
        "agent memory after its log pipeline read {LOG_MESSAGES} deferrals to {LOG_DOMAINS} domains ({lines} lines in {took:.1} s): RSS {:.1} MiB, peak {:.1} MiB (RSS {:.1} MiB at start)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_start as f64 / 1024.0
    );
}
