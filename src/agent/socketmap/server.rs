//! The socketmap server: a unix socket Postfix's trivial-rewrite connects to.
//!
//! Each connection carries any number of netstring requests; each gets one
//! reply. The socket is mode 0666 (the postfix user must connect) inside a
//! directory only root can write. Keys are recipient addresses: only their
//! domain is ever logged.
//!
//! Lookups are on Postfix's delivery path and arrive one at a time per
//! connection (trivial-rewrite waits for each answer), so latency is the
//! throughput. A connection is served by its own thread with blocking I/O:
//! one `read` per request and one `write` per reply, no readiness round trip
//! through the async runtime. Postfix keeps few such connections (one per
//! trivial-rewrite process), and [`MAX_CONNECTIONS`] bounds the threads.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use sendfleet_render::contract::SOCKETMAP_NAME;
use thiserror::Error;
use tokio::net::UnixListener;

use super::codec::{decode, split_request, Decoded, Reply};
use super::decision::{Decision, NotFoundWhy};
use crate::agent::metrics::LookupLabels;
use crate::agent::state::State;

/// Connections served at once; more are closed at accept (Postfix retries).
pub const MAX_CONNECTIONS: usize = 256;

/// Stack of a connection thread (it holds two small buffers).
const THREAD_STACK: usize = 128 * 1024;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("preparing socket directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("binding {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

pub struct Server {
    listener: UnixListener,
}

impl Server {
    /// Bind `path` (a stale socket file is replaced).
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ServerError::Dir { path: dir.into(), source })?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ServerError::Bind { path: path.into(), source }),
        }
        let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind { path: path.into(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|source| ServerError::Bind { path: path.into(), source })?;
        Ok(Server { listener })
    }

    pub async fn run(self, state: Arc<State>) {
        state.set_socket_ready(true);
        let open = Arc::new(AtomicUsize::new(0));
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        tracing::warn!(limit = MAX_CONNECTIONS, "socketmap connection limit reached; closing");
                        continue;
                    }
                    if let Err(e) = spawn_connection(stream, state.clone(), open.clone()) {
                        tracing::warn!(error = %e, "socketmap connection not served");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "socketmap accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn spawn_connection(stream: tokio::net::UnixStream, state: Arc<State>, open: Arc<AtomicUsize>) -> std::io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    open.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name("socketmap".into()).stack_size(THREAD_STACK).spawn({
        let open = open.clone();
        move || {
            if let Err(e) = serve(stream, &state) {
                tracing::debug!(error = %e, "socketmap connection closed");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        }
    });
    if spawned.is_err() {
        open.fetch_sub(1, Ordering::Relaxed);
    }
    spawned.map(drop)
}

/// Serve one connection until EOF or a protocol error (which drops it, as
/// Postfix's own socketmap servers do).
fn serve<S: Read + Write>(mut stream: S, state: &State) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(512);
    let mut counters = Counters::default();
    loop {
        if filled == buf.len() {
            // Only a request longer than the buffer gets here (decode caps
            // requests at MAX_REQUEST, below the buffer's size).
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request too long"));
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut used = 0;
        loop {
            match decode(&buf[used..filled]) {
                Ok(Decoded::Frame(payload, len)) => {
                    answer(payload, state, &mut counters).encode_into(&mut out);
                    used += len;
                }
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    state.metrics.lookup_errors.inc();
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        }
        // Keep a partial request at the start of the buffer.
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
    }
}

/// The lookup counters this connection has touched, so a lookup costs an
/// atomic increment rather than a label hash under the family's lock.
#[derive(Default)]
struct Counters(Vec<(&'static str, &'static str, Counter)>);

impl Counters {
    fn inc(&mut self, state: &State, decision: &'static str, reason: &'static str) {
        if let Some((_, _, c)) = self.0.iter().find(|(d, r, _)| *d == decision && *r == reason) {
            c.inc();
            return;
        }
        let c = state.metrics.lookups.get_or_create(&LookupLabels { decision, reason }).clone();
        c.inc();
        self.0.push((decision, reason, c));
    }
}

fn answer(payload: &[u8], state: &State, counters: &mut Counters) -> Reply {
    let Ok((name, key)) = split_request(payload) else {
        return Reply::Perm("malformed request".into());
    };
    if name != SOCKETMAP_NAME.as_bytes() {
        return Reply::Perm("unknown map".into());
    }
    let Ok(key) = std::str::from_utf8(key) else {
        return Reply::NotFound;
    };
    let d = state.decide(key);
    let reason = match &d {
        Decision::NotFound(w) => match w {
            NotFoundWhy::NoDomain => "NoDomain",
            NotFoundWhy::RelayRule => "RelayRule",
            NotFoundWhy::UnknownInstance => "UnknownInstance",
            NotFoundWhy::Normal => "Normal",
        },
        Decision::Defer { text, .. } if text.contains("paused") => "Paused",
        Decision::Defer { .. } => "NoPeer",
        Decision::Peer { why, .. } => why.as_str(),
        Decision::Slow { .. } => "Slowed",
    };
    counters.inc(state, d.kind(), reason);
    if !matches!(d, Decision::NotFound(_)) {
        // Postfix asks with full recipient addresses: log the domain part
        // only, never the local part.
        let domain = key.rsplit_once('@').map_or(key, |(_, d)| d);
        tracing::debug!(domain, decision = d.kind(), reason, "transport lookup");
    }
    d.reply()
}
