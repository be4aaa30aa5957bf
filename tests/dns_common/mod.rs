//! A real authoritative DNS server for the DNS tests: the lab's server
//! (`sendfleet_lab::dns`: hickory-server, zones from master-file text, UDP
//! and TCP on one port), in process, on 127.0.0.1 at a random port.
//!
//! Behaviour rules make some names misbehave the way real servers do:
//! answers delayed beyond the client's timeout, or never sent at all. The
//! server counts queries and the most it had in flight at once, so tests can
//! prove caching, budgets and concurrency bounds from the server's side.
//!
//! Test traffic stays on loopback inside the test's own network namespace
//! (see hack/netns-run); the names served are test names and documentation
//! addresses, never real ones.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use hickory_server::Server;
use sendfleet_lab::dns::{ZoneHandle, Zones};

/// How names under a suffix misbehave.
#[derive(Debug, Clone, Copy)]
pub enum Misbehave {
    /// Answer after this delay.
    Delay(Duration),
    /// Never answer.
    Drop,
    /// Answer SERVFAIL.
    ServFail,
}

/// Query counters, as seen by the server.
#[derive(Debug, Default)]
pub struct Stats {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    total: AtomicUsize,
    names: Mutex<Vec<String>>,
}

impl Stats {
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
    /// Query names received (lowercase, no trailing dot), in order.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().expect("stats lock").clone()
    }
    /// Queries received for names ending in `suffix`.
    pub fn count_under(&self, suffix: &str) -> usize {
        let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
        self.names().iter().filter(|n| *n == &suffix || n.ends_with(&format!(".{suffix}"))).count()
    }
    pub fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.names.lock().expect("stats lock").clear();
    }
}

struct Handler {
    catalog: Catalog,
    rules: Vec<(String, Misbehave)>,
    /// Pretend work per query, so in-flight counts are observable.
    service_time: Duration,
    stats: Arc<Stats>,
}

struct InFlight<'a>(&'a Stats);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response_handle: R) -> ResponseInfo {
        let name = request
            .request_info()
            .map(|i| i.query.name().to_string())
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.stats.total.fetch_add(1, Ordering::SeqCst);
        self.stats.names.lock().expect("stats lock").push(name.clone());
        let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(&self.stats);

        let rule = self
            .rules
            .iter()
            .find(|(suffix, _)| name == *suffix || name.ends_with(&format!(".{suffix}")))
            .map(|(_, m)| *m);
        match rule {
            Some(Misbehave::Delay(d)) => tokio::time::sleep(d).await,
            // Far longer than any test; the task dies with the server.
            Some(Misbehave::Drop) => tokio::time::sleep(Duration::from_secs(3600)).await,
            Some(Misbehave::ServFail) => {
                let mut handle = response_handle;
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                return handle.send_response(response).await.expect("test DNS server: send SERVFAIL");
            }
            None => {
                if !self.service_time.is_zero() {
                    tokio::time::sleep(self.service_time).await;
                }
            }
        }
        self.catalog.handle_request::<R, T>(request, response_handle).await
    }
}

/// Zones and rules for a [`TestDns`].
#[derive(Default)]
pub struct TestDnsBuilder {
    zones: BTreeMap<String, String>,
    rules: Vec<(String, Misbehave)>,
    service_time: Duration,
}

impl TestDnsBuilder {
    /// Serve `origin` with these records (master-file lines, relative names
    /// allowed; SOA and NS are added).
    pub fn zone(mut self, origin: &str, records: &str) -> Self {
        self.zones.insert(origin.trim_end_matches('.').to_ascii_lowercase(), records.to_string());
        self
    }

    /// Names equal to or under `suffix` misbehave.
    pub fn rule(mut self, suffix: &str, m: Misbehave) -> Self {
        self.rules.push((suffix.trim_end_matches('.').to_ascii_lowercase(), m));
        self
    }

    /// Every well-behaved answer takes this long (default: none).
    pub fn service_time(mut self, d: Duration) -> Self {
        self.service_time = d;
        self
    }

    pub async fn start(self) -> TestDns {
        let Zones { catalog, zones } = Zones::load(&self.zones).unwrap_or_else(|e| panic!("test DNS server: {e}"));
        let stats = Arc::new(Stats::default());
        let handler = Handler { catalog, rules: self.rules, service_time: self.service_time, stats: stats.clone() };
        let (server, addr) = sendfleet_lab::dns::serve(handler, "127.0.0.1".parse().expect("ip"), 0)
            .await
            .unwrap_or_else(|e| panic!("test DNS server (is lo up in this namespace?): {e}"));
        TestDns { addr, stats, zones, _server: server }
    }
}

/// A running server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    zones: BTreeMap<String, ZoneHandle>,
    _server: Server<Handler>,
}

impl TestDns {
    pub fn builder() -> TestDnsBuilder {
        TestDnsBuilder::default()
    }

    fn zone(&self, zone: &str) -> &ZoneHandle {
        self.zones.get(zone.trim_end_matches('.')).unwrap_or_else(|| panic!("test DNS server does not serve {zone}"))
    }

    /// Delete every record of `name` (relative to `zone`) while serving:
    /// the name becomes NXDOMAIN.
    pub async fn remove_name(&self, zone: &str, name: &str) {
        let fqdn = Name::from_str(&format!("{name}.{zone}.")).expect("name");
        let lower = LowerName::from(fqdn);
        let mut records = self.zone(zone).records_mut().await;
        let before = records.len();
        records.retain(|k, _| k.name != lower);
        assert!(records.len() < before, "{name}.{zone} was not in the zone");
    }

    /// Add records (master-file lines relative to `zone`, TTLs required)
    /// while serving.
    pub async fn add_records(&self, zone: &str, text: &str) {
        let origin = Name::from_str(&format!("{}.", zone.trim_end_matches('.'))).expect("zone");
        let (_, sets) = hickory_server::proto::serialize::txt::Parser::new(text, None, Some(origin))
            .parse()
            .unwrap_or_else(|e| panic!("records do not parse: {e}\n{text}"));
        let handler = self.zone(zone);
        for set in sets.values() {
            for record in set.records_without_rrsigs() {
                assert!(handler.upsert(record.clone(), 2).await, "upsert {record}");
            }
        }
    }
}

/// A TXT value as master-file text: quoted, split into <=255-byte strings
/// (RFC 1035 character-strings), so long DKIM keys are valid.
pub fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Generate a private key with the openssl CLI (Debian's `openssl` package;
/// `make test-dns` installs it). `algorithm`: "RSA" or "ED25519".
pub fn openssl_genkey(algorithm: &str, extra: &[&str]) -> Vec<u8> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["genpkey", "-algorithm", algorithm]);
    cmd.args(extra);
    let out = cmd.output().expect("the openssl CLI is needed to generate test keys: apt-get install -y openssl");
    assert!(out.status.success(), "openssl genpkey failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Convert a PKCS#8 RSA key to traditional PKCS#1 PEM with openssl.
pub fn openssl_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["rsa", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl CLI");
    child.stdin.take().expect("stdin").write_all(pkcs8).expect("write key");
    let out = child.wait_with_output().expect("openssl rsa");
    assert!(out.status.success(), "openssl rsa failed");
    out.stdout
}
