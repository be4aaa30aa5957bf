//! The one HTTP GET of the tests and the lab: HTTP/1.0 over a plain TCP
//! connection, enough for the agent's routes, the operator's /metrics and
//! the components' health endpoints. Never follows redirects or speaks TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `addr:port`: (status code, body).
pub fn http_get(addr: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_as(addr, port, path, None)
}

/// `GET path` on `addr:port` with `Authorization: Bearer <token>` when
/// `token` is given (the agent's /status and /metrics): (status code, body).
pub fn http_get_as(addr: &str, port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((addr, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP status line: {status:?}"))
    })?;
    let mut rest = String::new();
    r.read_to_string(&mut rest)?;
    let body = rest.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// `GET path` on `addr:port` answers 200.
pub fn ok(addr: &str, port: u16, path: &str) -> bool {
    http_get(addr, port, path).is_ok_and(|(code, _)| code == 200)
}
