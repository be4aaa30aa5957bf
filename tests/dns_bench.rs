//! Benchmark (and its assertion): one DNSBL sweep of 64 IPs x 10 zones
//! against the real in-process DNS server completes in under 2 s with the
//! configured concurrency, and the server never sees more queries in flight
//! than that bound. Prints the figures; `make bench-dns` runs it with
//! `--nocapture`.
//!
//! Each answer takes 2 ms at the server (a stand-in for a network round trip),
//! so the bound is observable: with no delay, answers come back before the
//! next query is sent and in-flight counts say nothing.

mod dns_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dns_common::TestDns;
use jiff::Timestamp;
use sendfleet::dns::*;

const IPS: usize = 64;
const ZONES: usize = 10;
const CONCURRENCY: usize = 16;
const SERVICE_TIME: Duration = Duration::from_millis(2);
const LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_64_ips_by_10_zones() {
    // Every zone lists every 8th IP, with a TXT reason.
    let mut b = TestDns::builder().service_time(SERVICE_TIME);
    let zones: Vec<String> = (0..ZONES).map(|z| format!("bl{z}.bench.test")).collect();
    for zone in &zones {
        let mut text = String::new();
        for i in (0..IPS).step_by(8) {
            text.push_str(&format!("{i}.100.51.198 60 IN A 127.0.0.2\n{i}.100.51.198 60 IN TXT \"listed {i}\"\n"));
        }
        b = b.zone(zone, &text);
    }
    let server = b.start().await;
    let ips: Vec<IpAddr> = (0..IPS).map(|i| format!("198.51.100.{i}").parse().unwrap()).collect();
    let resolver = HickoryDns::new(&ResolverSettings {
        nameservers: vec![server.addr],
        timeout: Duration::from_secs(1),
        attempts: 1,
        max_in_flight_per_connection: CONCURRENCY,
    })
    .unwrap();
    let mut checker = DnsblChecker::new(
        resolver,
        DnsblConfig { zones: zones.clone(), concurrency: CONCURRENCY, ..DnsblConfig::default() },
    );

    let start = Instant::now();
    let report = checker.sweep(&ips, Timestamp::now()).await;
    let elapsed = start.elapsed();

    let mut listed = 0;
    let mut clean = 0;
    let mut other = Vec::new();
    for (ip, row) in &report.outcomes {
        for (zone, o) in row {
            match o {
                ZoneOutcome::Listed { .. } => listed += 1,
                ZoneOutcome::Clean => clean += 1,
                o => other.push(format!("{ip} {zone}: {o:?}")),
            }
        }
    }
    let server_max = server.stats.max_in_flight();
    println!("dns bench: sweep of {IPS} IPs x {ZONES} zones");
    println!("  elapsed                 {:.3} s (limit {} s)", elapsed.as_secs_f64(), LIMIT.as_secs());
    println!("  queries sent            {} ({} A + {} TXT for listings)", report.queries_sent, IPS * ZONES, listed);
    println!("  queries seen at server  {}", server.stats.total());
    println!("  concurrency configured  {CONCURRENCY}");
    println!("  max in flight (server)  {server_max}");
    println!("  max in flight (sweeper) {}", report.max_in_flight);
    println!("  server time per answer  {} ms", SERVICE_TIME.as_millis());
    println!("  throughput              {:.0} queries/s", report.queries_sent as f64 / elapsed.as_secs_f64());
    println!("  outcomes                {listed} listed, {clean} clean, {} other", other.len());

    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert_eq!(listed, (IPS / 8) * ZONES);
    assert_eq!(listed + clean, IPS * ZONES);
    assert_eq!(server.stats.total(), report.queries_sent, "every query reached the server once");
    assert!(server_max <= CONCURRENCY, "bound broken: {server_max} in flight > {CONCURRENCY}");
    assert!(server_max >= CONCURRENCY / 2, "sweep barely concurrent: {server_max} in flight");
    assert!(elapsed < LIMIT, "sweep took {elapsed:?}, limit {LIMIT:?}");
}
