//! Name resolution for sending instances inside a test's network namespace:
//! the lab's authoritative DNS server ([`crate::dns`]) answering for the
//! test's destination domains (MX to the domain itself, A to its receiver),
//! and the resolv.conf an instance gets in place of its pod's (the cluster
//! DNS). Postfix then resolves exactly as in production: MX, then A, over
//! DNS, with the rendered main.cf untouched.
//!
//! Never: answer a name it was not given (REFUSED, like the lab's server),
//! or listen outside the test's namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::dns::{mx_zones, serve, MxProvider, ZoneHandle, Zones};

/// A DNS server on `<ip>:53`, stopped when dropped.
pub struct Dns {
    pub ip: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The served zones, to change during a test ([`Dns::set_zone`]).
    zones: BTreeMap<String, ZoneHandle>,
    /// The server thread's runtime (the zones' locks are async).
    runtime: tokio::runtime::Handle,
}

impl Dns {
    /// Serve each `(domain, address)`: `domain MX 10 domain.` and
    /// `domain A address`, on `ip` (added to `lo`), port 53 (resolv.conf
    /// has no port).
    pub fn start(ip: &str, records: &[(&str, &str)]) -> Dns {
        let providers: Vec<MxProvider<'_>> = records
            .iter()
            .map(|(domain, addr)| MxProvider {
                name: domain,
                mx_host: domain,
                addr,
                domains: std::slice::from_ref(domain),
            })
            .collect();
        Self::serve(ip, mx_zones(&providers))
    }

    /// Serve zones (`origin -> records`, as [`crate::dns::Zones::load`]
    /// reads them, e.g. hack/demo/zones) on `ip`:53.
    pub fn serve(ip: &str, texts: BTreeMap<String, String>) -> Dns {
        super::add_addr(ip);
        let addr: IpAddr = ip.parse().unwrap_or_else(|e| panic!("DNS address {ip}: {e}"));
        type Ready = Result<(BTreeMap<String, ZoneHandle>, tokio::runtime::Handle), String>;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("dns-{ip}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    let served = match Zones::load(&texts) {
                        Ok(zones) => serve(zones.catalog, addr, 53).await.map(|s| (s, zones.zones)),
                        Err(e) => Err(e),
                    };
                    match served {
                        Ok(((server, _), zones)) => {
                            let _ = ready_tx.send(Ok((zones, handle)));
                            let _ = stopped.await;
                            drop(server);
                        }
                        Err(e) => drop(ready_tx.send(Err(e.to_string()))),
                    }
                })
            })
            .expect("spawn the DNS thread");
        let (zones, runtime) = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(z)) => z,
            Ok(Err(e)) => panic!("DNS server on {ip}:53: {e}"),
            Err(e) => panic!("DNS server on {ip}:53 did not start: {e}"),
        };
        Dns { ip: ip.to_string(), stop: Some(stop), thread: Some(thread), zones, runtime }
    }

    /// Replace the records of served zone `origin` (records only, as
    /// [`Zones::load`] reads them) while the server runs: a DNSBL listing
    /// an address, or lifting it, during a test. Give records a short TTL
    /// when a resolver's cache must see the change soon.
    pub fn set_zone(&self, origin: &str, records: &str) {
        let served = self.zones.get(origin).unwrap_or_else(|| panic!("zone {origin} is not served here"));
        let fresh = Zones::load(&BTreeMap::from([(origin.to_string(), records.to_string())]))
            .unwrap_or_else(|e| panic!("zone {origin}: {e}"));
        let new = &fresh.zones[origin];
        self.runtime.block_on(async {
            let records = new.records().await.clone();
            *served.records_mut().await = records;
        });
    }

    /// The resolv.conf that points a process at this server.
    pub fn resolv_conf(&self) -> String {
        crate::dns::resolv_conf(&self.ip)
    }

    /// Write [`Dns::resolv_conf`] to `path`.
    pub fn write_resolv_conf(&self, path: &Path) {
        std::fs::write(path, self.resolv_conf()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
