//! Polls each instance's agent for its `/status` (the operator/agent
//! contract in `sendfleet_render::contract`), as CloudNativePG polls its
//! instance managers. One instance's failure is that instance's result,
//! never the pool's: the caller gets a result per instance.
//!
//! Each poll is one HTTP/1.1 request on hyper's client (the HTTP stack kube
//! already uses) carrying the pool's agent token, bounded in time
//! ([`POLL_TIMEOUT`], connect included) and in size
//! ([`MAX_STATUS_BODY`]: a larger body is refused, not truncated). A report
//! is used only when it names the pool, instance and pod polled: an
//! address that another pod (or a neighbour on the node's network) answers
//! is reported as a mismatch, never believed.
//!
//! It must never follow a redirect, log or return the token, or read a body
//! without a bound.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sendfleet_render::contract::{AgentStatus, MAX_STATUS_BODY, PATH_STATUS};

/// How long one poll may take before the instance counts as unreachable.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// One agent to poll and who it must be.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// Address the agent listens on (egress address or pod IP).
    pub host: &'a str,
    pub port: u16,
    /// The pool's agent token (the `<pool>-agent-token` Secret).
    pub token: &'a str,
    /// Who must answer: `<namespace>/<pool>`, the instance, the pod's name.
    pub pool: &'a str,
    pub instance: &'a str,
    pub pod: &'a str,
}

/// Why a poll gave no report. Displayed as a short human-readable string
/// (it may end up in a condition message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// No usable answer: unreachable, slow, refused the token, too large, undecodable.
    #[error("{0}")]
    Failed(String),
    /// An answer from another pool, instance or pod than the one polled.
    #[error("{0}")]
    IdentityMismatch(String),
}

const UNAUTHORIZED: &str = "agent refused the pool's token (401)";

impl PollError {
    /// The agent refused the pool's token: it may have been rotated, the
    /// caller reads it again.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, PollError::Failed(m) if m == UNAUTHORIZED)
    }
}

/// GET /status from `target`'s agent, parsed and checked to come from the
/// expected pod.
pub async fn poll(target: &Target<'_>) -> Result<AgentStatus, PollError> {
    let status = fetch_status(target.host, target.port, target.token).await.map_err(PollError::Failed)?;
    check_identity(&status, target).map_err(PollError::IdentityMismatch)?;
    Ok(status)
}

/// GET http://host:port/status with the bearer `token`, parsed.
pub async fn fetch_status(host: &str, port: u16, token: &str) -> Result<AgentStatus, String> {
    tokio::time::timeout(POLL_TIMEOUT, fetch(host, port, token))
        .await
        .map_err(|_| format!("no answer within {POLL_TIMEOUT:?}"))?
}

async fn fetch(host: &str, port: u16, token: &str) -> Result<AgentStatus, String> {
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("http: {e}"))?;
    // The connection is driven until the response is read; it closes with
    // `sender` (one request per connection).
    let driver = tokio::spawn(conn);
    let request = Request::get(PATH_STATUS)
        .header(HOST, &authority)
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| format!("http: {e}"))?;
        let code = response.status();
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_STATUS_BODY as u64) {
            return Err(too_large());
        }
        let body = Limited::new(response.into_body(), MAX_STATUS_BODY)
            .collect()
            .await
            .map_err(|e| if e.is::<http_body_util::LengthLimitError>() { too_large() } else { format!("read: {e}") })?
            .to_bytes();
        decode(code, &body)
    }
    .await;
    driver.abort();
    result
}

fn too_large() -> String {
    format!("/status body larger than {MAX_STATUS_BODY} bytes refused")
}

/// The report in a response with status `code` and `body`.
fn decode(code: StatusCode, body: &[u8]) -> Result<AgentStatus, String> {
    match code {
        StatusCode::OK => serde_json::from_slice(body).map_err(|e| format!("undecodable /status: {e}")),
        StatusCode::UNAUTHORIZED => Err(UNAUTHORIZED.into()),
        c => Err(format!("agent answered {c}")),
    }
}

/// The report names the pool, instance and pod that were polled.
pub fn check_identity(status: &AgentStatus, target: &Target<'_>) -> Result<(), String> {
    let expected = (target.pool, target.instance, target.pod);
    let answered = (status.pool.as_str(), status.instance.as_str(), status.pod.as_str());
    if answered == expected {
        return Ok(());
    }
    Err(format!(
        "identity mismatch at {}: expected pool {:?} instance {:?} pod {:?}, answered pool {:?} instance {:?} pod {:?} (report not used)",
        target.host, expected.0, expected.1, expected.2, answered.0, answered.1, answered.2
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target { host: "192.0.2.1", port: 9187, token: "t", pool: "ns/p", instance: "a", pod: "p-a-0" }
    }

    #[test]
    fn decodes_a_status_and_refuses_errors() {
        let body = serde_json::to_vec(&AgentStatus { instance: "mta1".into(), ..Default::default() }).unwrap();
        assert_eq!(decode(StatusCode::OK, &body).unwrap().instance, "mta1");
        assert!(decode(StatusCode::SERVICE_UNAVAILABLE, b"{}").unwrap_err().contains("503"));
        assert!(decode(StatusCode::UNAUTHORIZED, b"").unwrap_err().contains("token"));
        assert!(decode(StatusCode::OK, b"{not json").unwrap_err().contains("undecodable"));
    }

    #[test]
    fn only_the_expected_pool_instance_and_pod_are_believed() {
        let ok = AgentStatus { pool: "ns/p".into(), instance: "a".into(), pod: "p-a-0".into(), ..Default::default() };
        assert_eq!(check_identity(&ok, &target()), Ok(()));
        for wrong in [
            AgentStatus { pool: "other/p".into(), ..ok.clone() },
            AgentStatus { instance: "b".into(), ..ok.clone() },
            AgentStatus { pod: "p-b-0".into(), ..ok.clone() },
            AgentStatus { pod: String::new(), ..ok.clone() },
        ] {
            let e = check_identity(&wrong, &target()).unwrap_err();
            assert!(e.contains("identity mismatch") && e.contains("not used"), "{e}");
        }
    }
}
