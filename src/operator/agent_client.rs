//! Polls each instance's agent for its `/status` (the operator/agent
//! contract in `sendfleet_render::contract`), as CloudNativePG polls its
//! instance managers. One instance's failure is that instance's result,
//! never the pool's: the caller gets a result per instance.

use std::time::Duration;

use sendfleet_render::contract::{AgentStatus, PATH_STATUS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one poll may take before the instance counts as unreachable.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest /status body accepted.
const MAX_BODY: usize = 4 << 20;

/// GET http://addr:port/status, parsed. Errors are short human-readable
/// strings (they end up in a condition message).
pub async fn fetch_status(host: &str, port: u16) -> Result<AgentStatus, String> {
    tokio::time::timeout(POLL_TIMEOUT, fetch(host, port))
        .await
        .map_err(|_| format!("no answer within {POLL_TIMEOUT:?}"))?
}

async fn fetch(host: &str, port: u16) -> Result<AgentStatus, String> {
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut s = tokio::net::TcpStream::connect(&target).await.map_err(|e| format!("connect {target}: {e}"))?;
    // HTTP/1.0: the server answers with a plain body and closes.
    let req = format!("GET {PATH_STATUS} HTTP/1.0\r\nHost: {target}\r\nAccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_BODY as u64).read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
    parse_response(&buf)
}

/// Split an HTTP/1.x response and decode the JSON body.
pub fn parse_response(buf: &[u8]) -> Result<AgentStatus, String> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("agent answered {status_line:?}"));
    }
    serde_json::from_slice(&buf[split + 4..]).map_err(|e| format!("undecodable /status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_status_response_and_refuses_errors() {
        let body = serde_json::to_string(&AgentStatus { instance: "mta1".into(), ..Default::default() }).unwrap();
        let ok = format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}");
        assert_eq!(parse_response(ok.as_bytes()).unwrap().instance, "mta1");
        assert!(parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n{}").unwrap_err().contains("503"));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n{not json").unwrap_err().contains("undecodable"));
    }
}
