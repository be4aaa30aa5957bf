//! Benchmark: the delivery cost of the fleet's own machinery. `smtp-source`
//! → one rendered instance (real Postfix under its agent) → `smtp-sink`,
//! messages per second with the agent's socketmap first in `transport_maps`
//! (as rendered: every recipient's transport is decided by the agent's
//! policy, here a DomainPolicy with automatic exclusion on the sink's
//! domain) against the same Postfix with the static table only
//! (`transport_maps = hash:$config_directory/transport`, installed through
//! the agent like any config change), interleaved rounds, same message
//! count. Target (issue 19): with the agent >= 95% of the static rate.
//!
//! Every recipient is distinct (`smtp-source -N`): qmgr caches its last
//! resolve, so repeated recipients would reach the socketmap only once.
//! A round's time runs from the first message submitted to the last one
//! counted sent by the agent (its log pipeline runs in both variants).
//! Traffic stays on addresses of the bench's own network namespace.

#[path = "../tests/agent_support/mod.rs"]
#[allow(dead_code)]
mod agent_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;

const MESSAGES: u32 = 2_000;
const SESSIONS: u32 = 8;
const ROUNDS: usize = 5;
const TARGET: f64 = 0.95;
const ADDR: &str = "198.51.100.17";
const SINK: &str = "203.0.113.40";
const DOMAIN: &str = "sink.example";

/// Kills the sink when the bench ends, however it ends.
struct Sink(std::process::Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One round: submit [`MESSAGES`] and wait until the agent counted them
/// all sent; messages per second.
fn round(inst: &Instance) -> f64 {
    let before = inst.status().counters.since_start.sent;
    let t = Instant::now();
    inst.inject_distinct("app@client.test", &format!("user@{DOMAIN}"), MESSAGES, SESSIONS);
    let want = before + u64::from(MESSAGES);
    inst.wait_for(Duration::from_secs(300), "every message sent", |s| s.counters.since_start.sent >= want);
    f64::from(MESSAGES) / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    require_postfix();
    add_addr(SINK);
    let sink = Sink(
        // As root smtp-sink refuses to run without a user to drop to.
        Command::new("smtp-sink")
            .args(["-u", "postfix", &format!("{SINK}:25"), "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (Debian package postfix)"),
    );
    sendfleet_lab::receiver::wait_banner(SINK, 25, Duration::from_secs(10)).expect("smtp-sink answers");
    let dns = Dns::start("127.0.0.53", &[(DOMAIN, SINK), ("client.test", SINK)]);
    let pool = Pool::named("bench").in_ns("bench").with_ip("bench-deliv", ADDR);
    let policy = Policy::named("sink").in_ns("bench").for_domains(&[DOMAIN]).auto_exclusion(3, "10m", "1h");
    let mut inst = fleet(pool.build(), &dns).as_in_production().policy(policy.build()).start("bench-deliv");

    let with_agent = inst.pod.files.clone();
    let mut static_only = with_agent.clone();
    let main_cf = static_only.get_mut("main.cf").expect("main.cf rendered");
    let rendered = main_cf.lines().find(|l| l.starts_with("transport_maps = socketmap:")).expect("socketmap first");
    *main_cf = main_cf.replace(rendered, "transport_maps = hash:$config_directory/transport");

    // Warm up both (first connections, the sink's and Postfix's processes).
    round(&inst);
    let (mut agent, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        inst.apply(&static_only, Duration::from_secs(60));
        plain.push(round(&inst));
        inst.apply(&with_agent, Duration::from_secs(60));
        agent.push(round(&inst));
    }
    let lookups = inst.metrics().lines().filter(|l| l.starts_with("sendfleet_agent_policy_lookups_total")).count();
    assert!(lookups > 0, "the agent answered lookups in the socketmap rounds");
    let fmt = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    let (a, p) = (median(agent.clone()), median(plain.clone()));
    println!(
        "delivery smtp-source -> instance -> smtp-sink, {MESSAGES} messages x {ROUNDS} rounds, {SESSIONS} sessions, distinct recipients:"
    );
    println!("  with the agent's socketmap in transport_maps: median {a:.0} msg/s (rounds {})", fmt(&agent));
    println!("  static transport table only (same Postfix):    median {p:.0} msg/s (rounds {})", fmt(&plain));
    println!(
        "  ratio {:.3} (target >= {TARGET}: {}); load average at the end: {}",
        a / p,
        met(a / p >= TARGET),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    drop(sink);
}
