//! The socketmap server: a unix socket Postfix's trivial-rewrite connects to.
//!
//! Each connection carries any number of netstring requests; each gets one
//! reply. The socket is mode 0666 (the postfix user must connect) inside a
//! directory only root can write. Keys are recipient addresses: only their
//! domain is ever logged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sendfleet_render::contract::SOCKETMAP_NAME;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::codec::{decode, split_request, Decoded, Reply};
use super::decision::{Decision, NotFoundWhy};
use crate::agent::metrics::LookupLabels;
use crate::agent::state::State;

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
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, &state).await {
                            tracing::debug!(error = %e, "socketmap connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "socketmap accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn serve(mut stream: UnixStream, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        loop {
            match decode(&buf[used..]) {
                Ok(Decoded::Frame(payload, len)) => {
                    answer(payload, state).encode_into(&mut out);
                    used += len;
                }
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    state.metrics.lookup_errors.inc();
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        }
        buf.drain(..used);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

fn answer(payload: &[u8], state: &State) -> Reply {
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
    state.metrics.lookups.get_or_create(&LookupLabels { decision: d.kind(), reason }).inc();
    if !matches!(d, Decision::NotFound(_)) {
        // Only bare domains reach a non-NOTFOUND decision, so logging the key is safe.
        tracing::debug!(domain = key, decision = d.kind(), reason, "transport lookup");
    }
    d.reply()
}
