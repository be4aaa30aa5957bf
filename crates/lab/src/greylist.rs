//! Greylisting for the lab's simulated providers: a Postfix policy service
//! (`check_policy_service`, the SMTPD_POLICY_README protocol) that defers
//! the first delivery attempt of each (client address, sender, recipient)
//! triplet for a set time and accepts the same triplet once that time has
//! passed, as postgrey does at real providers.
//!
//! It runs as threads of the process that owns the [`crate::Receiver`] (a
//! test, or `sendfleet-lab demo` while it runs), listening on the receiver's
//! own address; the receiver's main.cf names it only while greylisting is
//! on, and `smtpd_policy_service_default_action = DUNNO` there means a gone
//! service accepts rather than failing every message. Never: listen outside
//! the receiver's address, or keep a triplet anywhere but in memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::LabError;

/// Triplets seen and when each was first seen.
#[derive(Debug, Default)]
pub struct Greylist {
    delay: Duration,
    first_seen: HashMap<(String, String, String), Instant>,
}

impl Greylist {
    pub fn new(delay: Duration) -> Greylist {
        Greylist { delay, first_seen: HashMap::new() }
    }

    /// The policy answer for one request at `now`: a deferral while the
    /// triplet is younger than the delay (its first attempt included),
    /// `DUNNO` (go on, accept) after.
    pub fn decide(&mut self, client: &str, sender: &str, recipient: &str, now: Instant) -> String {
        let key = (client.to_string(), sender.to_ascii_lowercase(), recipient.to_ascii_lowercase());
        let first = *self.first_seen.entry(key).or_insert(now);
        let age = now.saturating_duration_since(first);
        if age < self.delay {
            // postgrey's wording; a 450 with "Greylisted" in the text.
            let left = (self.delay - age).as_secs().max(1);
            format!("DEFER_IF_PERMIT Greylisted, please try again in {left} seconds")
        } else {
            "DUNNO".to_string()
        }
    }
}

/// The service: stopped (listener closed) when dropped.
pub struct Service {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<Greylist>>,
}

impl Service {
    /// Listen on `ip`, a free port, deferring new triplets for `delay`.
    pub fn start(ip: &str, delay: Duration) -> Result<Service, LabError> {
        let listener = TcpListener::bind((ip, 0)).map_err(LabError::io(format!("greylist service on {ip}")))?;
        let addr = listener.local_addr().map_err(LabError::io(format!("greylist service on {ip}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(Greylist::new(delay)));
        let (stop2, state2) = (stop.clone(), state.clone());
        std::thread::Builder::new()
            .name(format!("greylist-{addr}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (stop3, state3) = (stop2.clone(), state2.clone());
                    let _ = std::thread::Builder::new().name("greylist-conn".into()).spawn(move || {
                        let _ = serve(conn, &stop3, &state3);
                    });
                }
            })
            .map_err(LabError::io("greylist thread"))?;
        Ok(Service { addr, stop, state })
    }

    /// Change the delay (new and known triplets alike; first-seen times stay).
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut g) = self.state.lock() {
            g.delay = delay;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One policy connection: requests (`name=value` lines, an empty line
/// ends one) answered with `action=...` and an empty line, until smtpd
/// closes it or the service stops.
fn serve(conn: TcpStream, stop: &AtomicBool, state: &Mutex<Greylist>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut attrs: HashMap<String, String> = HashMap::new();
    let mut line = String::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        if !line.ends_with('\n') {
            continue; // a partial line: read on
        }
        let l = line.trim_end();
        if l.is_empty() {
            let get = |k: &str| attrs.get(k).map(String::as_str).unwrap_or("");
            let action = match state.lock() {
                Ok(mut g) => g.decide(get("client_address"), get("sender"), get("recipient"), Instant::now()),
                Err(_) => "DUNNO".to_string(),
            };
            out.write_all(format!("action={action}\n\n").as_bytes())?;
            attrs.clear();
        } else if let Some((k, v)) = l.split_once('=') {
            attrs.insert(k.to_string(), v.to_string());
        }
        line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triplet_is_deferred_until_its_delay_has_passed_then_accepted() {
        let mut g = Greylist::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let first = g.decide("192.0.2.10", "a@s.test", "x@example.net", t0);
        assert!(first.starts_with("DEFER_IF_PERMIT Greylisted"), "{first}");
        assert!(first.contains("30 seconds"), "{first}");
        // Retried too early: still deferred, counting from the first attempt.
        let early = g.decide("192.0.2.10", "A@s.test", "x@example.net", t0 + Duration::from_secs(20));
        assert!(early.contains("10 seconds"), "{early}");
        assert_eq!(g.decide("192.0.2.10", "a@s.test", "x@example.net", t0 + Duration::from_secs(30)), "DUNNO");
        // Another client, sender or recipient is a new triplet.
        for (c, s, r) in [
            ("192.0.2.11", "a@s.test", "x@example.net"),
            ("192.0.2.10", "b@s.test", "x@example.net"),
            ("192.0.2.10", "a@s.test", "y@example.net"),
        ] {
            assert!(g.decide(c, s, r, t0 + Duration::from_secs(31)).starts_with("DEFER_IF_PERMIT"), "{c} {s} {r}");
        }
    }

    #[test]
    fn the_service_speaks_the_policy_protocol_over_one_connection() {
        let svc = Service::start("127.0.0.1", Duration::from_secs(60)).expect("service");
        let mut c = TcpStream::connect(svc.addr).expect("connect");
        let mut r = BufReader::new(c.try_clone().unwrap());
        let req = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nsender=a@s.test\nrecipient=x@example.net\n\n";
        let mut answers = vec![];
        for delay in [60, 0] {
            svc.set_delay(Duration::from_secs(delay));
            c.write_all(req.as_bytes()).unwrap();
            let (mut action, mut blank) = (String::new(), String::new());
            r.read_line(&mut action).unwrap();
            r.read_line(&mut blank).unwrap();
            assert_eq!(blank, "\n");
            answers.push(action.trim_end().to_string());
        }
        assert!(answers[0].starts_with("action=DEFER_IF_PERMIT Greylisted"), "{answers:?}");
        assert_eq!(answers[1], "action=DUNNO");
    }
}
