//! The sendfleet lab: real upstream Kubernetes components (etcd,
//! kube-apiserver, kube-controller-manager; kubectl and helm as clients),
//! built from their Go modules by `hack/build-upstream.sh` and started on
//! loopback for the project's integration tests and for the demo.
//!
//! ```no_run
//! use sendfleet_lab::ControlPlane;
//! let cp = ControlPlane::shared();            // once per test binary
//! let ns = cp.namespace("my-test").unwrap();  // one namespace per test
//! cp.kubectl_run(&["get", "configmaps", "-n", ns.name()]).unwrap();
//! let kubeconfig = cp.kubeconfig_for_service_account(ns.name(), "operator").unwrap();
//! # let _ = kubeconfig;
//! ```
//!
//! [`argocd`] runs the Argo CD health checks the docs ship on real objects.
//!
//! [`monitoring`] runs a real Prometheus and Alertmanager (built the same
//! way) and records what Alertmanager posts to a webhook.
//!
//! [`kit`] is the test kit every test binary and benchmark shares: one wait
//! helper, one HTTP GET, fixtures, the receiver and DNS server, and sending
//! instances configured by the renderer alone.
//!
//! It must never be shipped or linked into the product, never download
//! anything, never skip a test for want of a component (it builds or fails
//! loudly), and never leave processes behind: children die with the process
//! that started them (see `process`).

pub mod argocd;
pub mod binaries;
pub mod control_plane;
pub mod demo;
pub mod dns;
pub mod greylist;
pub mod kit;
pub mod kubectl;
pub mod monitoring;
pub mod node;
pub mod pki;
pub mod process;
pub mod receiver;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use binaries::Binaries;
pub use control_plane::{ControlPlane, Namespace, Options};
pub use kubectl::{write_kubeconfig, Credentials, Kubectl};
pub use node::{NodeInfo, DNS_SERVER, NODE_IP, NODE_NAME, POD_CIDR, SERVICE_CIDR, STORAGE_CLASS};
pub use pki::MailCa;
pub use receiver::{Cue, Deliveries, Receiver, Rejection};

/// Everything that can go wrong in the lab. Messages carry what is needed to
/// debug a failed start without rerunning (log tails, commands, stderr).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("upstream binaries: {0}")]
    Binaries(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the lab's spawner thread is gone")]
    Spawner,
    #[error("a lab lock was poisoned by a panic")]
    Poisoned,
    #[error("{name} exited ({status}); last lines of {log}:\n{tail}", log = log.display())]
    Exited { name: String, status: String, log: PathBuf, tail: String },
    #[error("timed out after {after:?} waiting for {what}; last error: {last}")]
    Timeout { what: String, after: Duration, last: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("generating {what}: {source}")]
    Pki {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("shared control plane failed to start: {0}")]
    Shared(String),
    #[error("{0}")]
    Usage(String),
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
}

impl LabError {
    /// `map_err` helper for I/O on `path`.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.as_ref().to_path_buf();
        move |source| LabError::Io { path, source }
    }
}
