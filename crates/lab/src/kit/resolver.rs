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

use crate::dns::{mx_zones, serve, MxProvider, Zones};

/// A DNS server on `<ip>:53`, stopped when dropped.
pub struct Dns {
    pub ip: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("dns-{ip}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                rt.block_on(async move {
                    let served = match Zones::load(&texts) {
                        Ok(zones) => serve(zones.catalog, addr, 53).await,
                        Err(e) => Err(e),
                    };
                    match served {
                        Ok((server, _)) => {
                            let _ = ready_tx.send(Ok(()));
                            let _ = stopped.await;
                            drop(server);
                        }
                        Err(e) => drop(ready_tx.send(Err(e.to_string()))),
                    }
                })
            })
            .expect("spawn the DNS thread");
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("DNS server on {ip}:53: {e}"),
            Err(e) => panic!("DNS server on {ip}:53 did not start: {e}"),
        }
        Dns { ip: ip.to_string(), stop: Some(stop), thread: Some(thread) }
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
