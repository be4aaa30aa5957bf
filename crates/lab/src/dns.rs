//! A real authoritative DNS server for the lab: hickory-server serving zones
//! from master-file text on one address, UDP and TCP on the same port.
//!
//! Shared by the DNS tests (tests/dns_common wraps [`Zones::catalog`] in a
//! handler that can misbehave and count queries, then [`serve`]s it) and the
//! demo (`sendfleet-lab dns start`, a background process inside the lab's
//! network namespace, stopped by `sendfleet-lab down`). Never: listen on an
//! address of the host's network namespace, or serve a name it was not
//! given: it is authoritative for its test zones only and recurses nowhere,
//! so a query for a real name (a real DNSBL included) gets REFUSED, never an
//! answer from the Internet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::Name;
use hickory_server::server::RequestHandler;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

/// A zone as served: records can be changed while serving.
pub type ZoneHandle = Arc<InMemoryZoneHandler<TokioRuntimeProvider>>;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("zone {origin}: {message}")]
    Zone { origin: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("binding {addr} (UDP and TCP): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// SOA and NS lines every zone needs, prepended by [`Zones::load`]: zone
/// texts hold only the records that matter to the test or demo.
pub fn zone_header(origin: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60\n@ IN NS ns.{origin}.\n"
    )
}

/// A resolv.conf naming one nameserver, `ip` (port 53: resolv.conf has
/// no port), with short timeouts so a test sees a dead server quickly: what
/// the lab node hands its pods and what a test instance gets in place of
/// its pod's.
pub fn resolv_conf(ip: &str) -> String {
    format!("nameserver {ip}\noptions timeout:2 attempts:2\n")
}

/// A mailbox provider as DNS publishes it: one MX host (with its address)
/// that receives for all of the provider's domains, as Gmail's MX receives
/// for gmail.com and every Google Workspace domain.
#[derive(Clone, Copy, Debug)]
pub struct MxProvider<'a> {
    /// For the comment in the zone text only.
    pub name: &'a str,
    /// The MX host name every domain points to, e.g. `mx.provider-a.test`.
    pub mx_host: &'a str,
    /// The MX host's address (a receiver's).
    pub addr: &'a str,
    /// The domains it receives for.
    pub domains: &'a [&'a str],
}

/// Zone texts (`origin -> records`, for [`Zones::load`]) that route mail
/// for `providers` by MX: each domain gets `MX 10 <mx_host>`, each MX host
/// an A record. Each domain is its own zone; an MX host goes into the zone
/// of a domain it lies under, or else into a zone of its parent name.
/// Owner names are absolute, so the texts merge into other zones of the
/// same origin ([`merge_zones`], e.g. with hack/demo/zones).
pub fn mx_zones(providers: &[MxProvider<'_>]) -> BTreeMap<String, String> {
    let norm = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for p in providers {
        for d in p.domains {
            let d = norm(d);
            texts.entry(d.clone()).or_default().push_str(&format!("{d}. IN MX 10 {}.\n", norm(p.mx_host)));
        }
    }
    for p in providers {
        let host = norm(p.mx_host);
        let origin = texts
            .keys()
            .filter(|o| host == **o || host.ends_with(&format!(".{o}")))
            .max_by_key(|o| o.len())
            .cloned()
            .unwrap_or_else(|| host.split_once('.').map(|(_, parent)| parent.to_string()).unwrap_or(host.clone()));
        let text = texts.entry(origin).or_default();
        let a = format!("{host}. IN A {}\n", p.addr);
        if !text.contains(&a) {
            text.push_str(&format!("; MX host of {}\n{a}", p.name));
        }
    }
    texts
}

/// Add `more` to `into`, appending the records of an origin both have.
pub fn merge_zones(into: &mut BTreeMap<String, String>, more: BTreeMap<String, String>) {
    for (origin, text) in more {
        let t = into.entry(origin).or_default();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&text);
    }
}

/// Parsed zones: the catalog to answer from and each zone's handle.
pub struct Zones {
    pub catalog: Catalog,
    pub zones: BTreeMap<String, ZoneHandle>,
}

impl Zones {
    /// Parse `origin -> records` (master-file lines, relative names allowed;
    /// SOA and NS are added).
    pub fn load(texts: &BTreeMap<String, String>) -> Result<Zones, DnsError> {
        let mut catalog = Catalog::new();
        let mut zones = BTreeMap::new();
        for (origin, records) in texts {
            let origin = origin.trim_end_matches('.').to_ascii_lowercase();
            let err = |message: String| DnsError::Zone { origin: origin.clone(), message };
            let text = format!("{}{records}\n", zone_header(&origin));
            let name = Name::from_str(&format!("{origin}.")).map_err(|e| err(e.to_string()))?;
            let (_, records) =
                hickory_server::proto::serialize::txt::Parser::new(text.as_str(), None, Some(name.clone()))
                    .parse()
                    .map_err(|e| err(format!("does not parse: {e}")))?;
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                name.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(err)?;
            let handler = Arc::new(handler);
            zones.insert(origin.clone(), handler.clone());
            let handlers: Vec<Arc<dyn ZoneHandler>> = vec![handler];
            catalog.upsert(name.into(), handlers);
        }
        Ok(Zones { catalog, zones })
    }

    /// Read a zones directory: one `<origin>.zone` file per zone, records
    /// only (see [`Zones::load`]).
    pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, String>, DnsError> {
        let io = |source| DnsError::Io { path: dir.to_path_buf(), source };
        let mut texts = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let path = e.map_err(io)?.path();
            let Some(origin) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".zone")) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|source| DnsError::Io { path: path.clone(), source })?;
            texts.insert(origin.to_string(), text);
        }
        Ok(texts)
    }
}

/// Serve `handler` on `ip`, UDP and TCP on one port (hickory clients fall
/// back to TCP on truncation, and a resolver config names one port for
/// both). Port 0: a free port, the same for both. Stops when the returned
/// server is dropped.
pub async fn serve<H: RequestHandler>(handler: H, ip: IpAddr, port: u16) -> Result<(Server<H>, SocketAddr), DnsError> {
    let (udp, tcp) = loop {
        let addr = SocketAddr::new(ip, port);
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr, source })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp),
            // A random UDP port whose TCP twin is taken: try another.
            Err(_) if port == 0 => continue,
            Err(source) => return Err(DnsError::Bind { addr, source }),
        }
    };
    let addr = udp.local_addr().map_err(|source| DnsError::Bind { addr: SocketAddr::new(ip, port), source })?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
    Ok((server, addr))
}

/// `sendfleet-lab dns serve`: serve `texts` (`origin -> records`) on
/// `addr` until SIGTERM or SIGINT.
pub fn run(texts: &BTreeMap<String, String>, addr: SocketAddr) -> Result<(), DnsError> {
    let zones = Zones::load(texts)?;
    let names: Vec<String> = zones.zones.keys().cloned().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DnsError::Io { path: PathBuf::from("tokio runtime"), source })?;
    rt.block_on(async move {
        let (server, bound) = serve(zones.catalog, addr.ip(), addr.port()).await?;
        println!("sendfleet-lab: DNS server on {bound} (UDP+TCP) for {}", names.join(" "));
        let io = |source| DnsError::Io { path: PathBuf::from("signal"), source };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io)?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(io)?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        drop(server);
        Ok(())
    })
}

/// The pid file of a background server (`sendfleet-lab dns start`) under its
/// directory (DIR/dns of a lab).
pub const PID_FILE: &str = "pid";

/// Stop the background server of `dir` (DIR/dns of a lab), if one runs:
/// SIGTERM, then SIGKILL after 10 s. Returns whether one was running. A
/// process left inside the lab's namespace would keep the namespace alive.
pub fn stop(dir: &Path) -> Result<bool, DnsError> {
    Ok(crate::process::stop_recorded(&dir.join(PID_FILE), &["dns", "serve"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_zones_parse_with_their_origins() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/demo/zones");
        let texts = Zones::read_dir(&dir).expect("hack/demo/zones");
        let zones = Zones::load(&texts).expect("demo zones parse");
        let origins: Vec<&str> = zones.zones.keys().map(String::as_str).collect();
        assert_eq!(origins, ["2.0.192.in-addr.arpa", "bl.spamcop.net", "mail.example.com", "zen.spamhaus.org"]);
    }

    #[test]
    fn domains_of_a_provider_share_its_one_mx_host() {
        let a = MxProvider {
            name: "provider-a",
            mx_host: "mx.provider-a.test",
            addr: "198.51.100.10",
            domains: &["example.net", "a-mail.test"],
        };
        let b = MxProvider {
            name: "provider-b",
            mx_host: "mx.example.org",
            addr: "198.51.100.20",
            domains: &["example.org", "busy.example.org"],
        };
        let mut texts = mx_zones(&[a, b]);
        let origins: Vec<&str> = texts.keys().map(String::as_str).collect();
        assert_eq!(origins, ["a-mail.test", "busy.example.org", "example.net", "example.org", "provider-a.test"]);
        assert_eq!(texts["example.net"], "example.net. IN MX 10 mx.provider-a.test.\n");
        assert_eq!(texts["a-mail.test"], "a-mail.test. IN MX 10 mx.provider-a.test.\n");
        assert!(texts["provider-a.test"].ends_with("mx.provider-a.test. IN A 198.51.100.10\n"));
        // An MX host under one of the provider's own domains lives in that zone.
        assert!(texts["example.org"].contains("mx.example.org. IN A 198.51.100.20\n"), "{}", texts["example.org"]);
        assert_eq!(texts["busy.example.org"], "busy.example.org. IN MX 10 mx.example.org.\n");
        merge_zones(&mut texts, BTreeMap::from([("example.net".to_string(), "@ IN TXT \"v=spf1 -all\"".into())]));
        assert!(texts["example.net"].ends_with("MX 10 mx.provider-a.test.\n@ IN TXT \"v=spf1 -all\""));
        let zones = Zones::load(&texts).expect("MX zones parse");
        assert_eq!(zones.zones.len(), 5);
    }

    #[test]
    fn a_broken_zone_is_refused_naming_it() {
        let texts = BTreeMap::from([("bl.test".to_string(), "2.0.0.127 IN A not-an-address\n".to_string())]);
        let err = Zones::load(&texts).err().expect("refused");
        assert!(err.to_string().starts_with("zone bl.test: does not parse"), "{err}");
    }
}
