//! The agent's HTTP port answers only who should ask (issue 15), and the
//! agent fails safe — on a real agent supervising real Postfix, with the
//! args the rendered pod gets (`--auth-token-file` among them):
//!
//! - /status and /metrics without a token, with a wrong one (or the old one
//!   after a rotation) get 401 and `WWW-Authenticate: Bearer`; with the
//!   token, 200; /healthz and /readyz stay open and say only ok/not ok;
//! - the operator's own poll (`agent_client::poll`) gets the status with
//!   the token, and refuses a report from another instance or pod than the
//!   one it polled, and a body over 1 MiB (a test server: pure protocol);
//! - an agent whose log pipeline ended fails /healthz (the pod restarts);
//! - a corrupt state file is kept aside and reported, never replaced.

#[allow(dead_code)]
mod agent_support;

use std::io::{Read, Write};
use std::time::Duration;

use agent_support::*;
use sendfleet::core::contract::MAX_STATUS_BODY;
use sendfleet::operator::agent_client::{self, PollError, Target};

const A: &str = "198.51.100.81";
const B: &str = "198.51.100.82";
const H: &str = "198.51.100.83";
const C: &str = "198.51.100.84";
const PROVIDER: &str = "203.0.113.81";

/// The raw response head and body of `GET path` with extra header lines.
fn raw_get(addr: &str, port: u16, path: &str, headers: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect((addr, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (head.to_string(), body.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn status_and_metrics_need_the_token_and_the_operator_believes_only_the_pod_it_polled() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("dest.test", PROVIDER)]);
    let pool = Pool::named("p").in_ns("t").host_network().with_ip("a", A).with_ip("b", B).build();
    let a = fleet(pool, &dns).start("a");
    assert!(
        a.pod.args.iter().any(|x| x.starts_with("--auth-token-file=") && x.ends_with("/agent-token/token")),
        "the rendered pod passes the token file: {:?}",
        a.pod.args
    );
    let port = a.agent_port;

    for path in ["/status", "/metrics"] {
        for (what, header) in [
            ("no token", String::new()),
            ("a wrong token", "Authorization: Bearer wrong-token-0123456789abcdef0123456789\r\n".to_string()),
            ("the token without its scheme", format!("Authorization: {AGENT_TOKEN}\r\n")),
            ("another scheme", format!("Authorization: Basic {AGENT_TOKEN}\r\n")),
        ] {
            let (head, body) = raw_get(A, port, path, &header);
            assert!(head.starts_with("HTTP/1.0 401") || head.starts_with("HTTP/1.1 401"), "{path} with {what}: {head}");
            assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{path} with {what}: {head}");
            assert!(!body.contains("sendfleet_agent") && !body.contains("sessionId"), "{path} leaked: {body}");
        }
        let (head, body) = raw_get(A, port, path, &format!("Authorization: Bearer {AGENT_TOKEN}\r\n"));
        assert!(head.contains(" 200 "), "{path} with the token: {head}");
        assert!(!body.is_empty());
    }
    // The probes stay open and say nothing but ok / not ok.
    assert_eq!(http_get(A, port, "/healthz").unwrap(), (200, "ok".to_string()));
    assert_eq!(http_get(A, port, "/readyz").unwrap(), (200, "ready".to_string()));
    let m = a.metrics();
    assert!(m.contains("sendfleet_agent_http_unauthorized_total 8"), "8 refused requests counted:\n{m}");

    // The operator's poll, as observe makes it.
    let rt = runtime();
    let token = a.agent_token();
    let target = Target { host: A, port, token: &token, pool: "t/p", instance: "a", pod: "p-a-0" };
    let st = rt.block_on(agent_client::poll(&target)).expect("the operator's poll with the token");
    assert_eq!((st.pool.as_str(), st.instance.as_str(), st.pod.as_str()), ("t/p", "a", "p-a-0"));
    assert!(st.config.loaded_hash.is_some(), "{st:?}");

    let wrong = Target { token: "wrong-token-0123456789abcdef0123456789", ..target.clone() };
    let e = rt.block_on(agent_client::poll(&wrong)).unwrap_err();
    assert!(matches!(&e, PollError::Failed(m) if m.contains("401")), "{e:?}");

    // b's address answered by a's agent (an address moved, a neighbour
    // holding it): the report names a, and is refused.
    let as_b = Target { instance: "b", pod: "p-b-0", ..target.clone() };
    let e = rt.block_on(agent_client::poll(&as_b)).unwrap_err();
    assert!(
        matches!(&e, PollError::IdentityMismatch(m) if m.contains("\"p-a-0\"") && m.contains("\"p-b-0\"")),
        "{e:?}"
    );
    let other_pool = Target { pool: "u/p", ..target.clone() };
    assert!(matches!(rt.block_on(agent_client::poll(&other_pool)), Err(PollError::IdentityMismatch(_))));

    // Rotation: the kubelet updates the mounted Secret; the old token is refused at once.
    let new = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    a.set_agent_token(new);
    assert!(matches!(rt.block_on(agent_client::poll(&target)), Err(PollError::Failed(m)) if m.contains("401")));
    let rotated = Target { token: new, ..target.clone() };
    assert_eq!(rt.block_on(agent_client::poll(&rotated)).unwrap().pod, "p-a-0");

    // Supervising Postfix, every task of the agent still runs: healthy.
    assert_eq!(http_get(A, port, "/healthz").unwrap(), (200, "ok".to_string()));
    let m = a.metrics();
    assert!(!m.contains("sendfleet_agent_tasks_ended_total{"), "{m}");
}

/// A server answering every connection with `200` and `len` bytes of JSON,
/// declared (Content-Length) or not (chunked).
fn oversized_server(rt: &tokio::runtime::Runtime, len: usize, chunked: bool) -> u16 {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req).await;
                let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(len));
                let head = if chunked {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n", body.len())
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
                };
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
                if chunked {
                    let _ = s.write_all(b"\r\n0\r\n\r\n").await;
                }
            }
        });
        port
    })
}

#[test]
fn the_operator_refuses_a_status_body_over_one_mebibyte() {
    let rt = runtime();
    for chunked in [false, true] {
        let port = oversized_server(&rt, MAX_STATUS_BODY + 1, chunked);
        let e = rt.block_on(agent_client::fetch_status("127.0.0.1", port, "t")).unwrap_err();
        assert!(e.contains("larger than 1048576 bytes refused"), "chunked={chunked}: {e}");
        // Just under the bound is read (and then is no status).
        let port = oversized_server(&rt, MAX_STATUS_BODY - 100, chunked);
        let e = rt.block_on(agent_client::fetch_status("127.0.0.1", port, "t")).unwrap_err();
        assert!(e.contains("undecodable"), "chunked={chunked}: {e}");
    }
}

#[test]
fn an_agent_whose_log_pipeline_ended_is_unhealthy() {
    require_postfix();
    let dns = Dns::start("127.0.0.54", &[("dest.test", PROVIDER)]);
    let pool = Pool::named("p").in_ns("t").host_network().with_ip("h", H).build();
    // Unsupervised, the mail log is the agent's stdin, which the kit closes:
    // the log pipeline ends at once, as it would if Postfix's pipe broke.
    let a = fleet(pool, &dns).start_unsupervised("h");
    wait_until("/healthz 503", Duration::from_secs(10), || {
        http_get(H, a.agent_port, "/healthz").is_ok_and(|r| r.0 == 503)
    });
    assert_eq!(http_get(H, a.agent_port, "/healthz").unwrap(), (503, "not ok".to_string()));
    let m = a.metrics();
    assert!(m.contains("sendfleet_agent_tasks_ended_total{task=\"log pipeline\"} 1"), "{m}");
    assert!(a.stderr().contains("agent task ended"), "{}", a.stderr());
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_reported_never_replaced() {
    require_postfix();
    let dns = Dns::start("127.0.0.55", &[("dest.test", PROVIDER)]);
    let pool = Pool::named("p").in_ns("t").host_network().with_ip("c", C).build();
    let mut a = fleet(pool, &dns).start_unsupervised("c");
    assert!(a.status().state_files_kept_aside.is_empty());
    let garbage = b"{\"day\":\"2026-12-02\",\"sent_tot";
    a.restart_after(|a| std::fs::write(a.state_dir().join("counters.json"), garbage).unwrap());

    let kept = a.status().state_files_kept_aside;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("counters.json.corrupt-"), "{kept:?}");
    assert_eq!(std::fs::read(a.state_dir().join(&kept[0])).unwrap(), garbage, "kept as it was");
    assert!(a.metrics().contains("sendfleet_agent_state_files_kept_aside 1"));
    assert!(a.stderr().contains("kept aside"), "logged: {}", a.stderr());
    // Still reported after the next start: the evidence stays until a human removes it.
    a.restart();
    assert_eq!(a.status().state_files_kept_aside, kept);
}
