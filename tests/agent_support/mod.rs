//! The agent tests' side of the test kit ([`sendfleet_lab::kit`]): the
//! `sendfleet` binary Cargo built for this test, and the socketmap client
//! (the codec is the root package's). Everything else — instances rendered
//! by `render_pool`, the receiver, the DNS server, the wait helper, the
//! fixtures — is the kit's, re-exported here.
//!
//! Include it with `#[allow(dead_code)] mod agent_support;` (each test
//! uses part of it).

#![allow(unused_imports)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

pub use sendfleet_lab::kit::instance::{test_dir, PodConfig, AGENT_TOKEN, HASH_KEY};
pub use sendfleet_lab::kit::*;
pub use sendfleet_lab::{Deliveries, Receiver};

use sendfleet::agent::socketmap::codec::{decode, encode_into, Decoded, Reply};
use sendfleet::core::api::SendingPool;

/// The binary under test.
pub const SENDFLEET: &str = env!("CARGO_BIN_EXE_sendfleet");

/// `pool`'s instances, rendered and run by this test's `sendfleet`.
/// How a benchmark prints a target's verdict.
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub fn fleet(pool: SendingPool, dns: &Dns) -> Fleet {
    Fleet::new(SENDFLEET, pool, dns)
}

/// A provider (the lab's receiver) on `addr`:25, stopped when dropped.
pub fn receiver(name: &str, addr: &str, domains: &[&str], access: &[(&str, &str)]) -> Receiver {
    Receiver::start_temp(name, addr, domains, access).unwrap_or_else(|e| panic!("receiver {name}: {e}"))
}

/// One socketmap `transport` lookup on an open connection.
pub fn lookup_on(s: &mut std::os::unix::net::UnixStream, key: &str) -> Reply {
    let mut out = Vec::new();
    encode_into(&mut out, format!("transport {key}").as_bytes());
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Decoded::Frame(p, _)) = decode(&buf) {
            return Reply::parse(p).expect("reply");
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "agent closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One socketmap lookup over a fresh connection to `socket`.
pub fn lookup(socket: &Path, key: &str) -> Reply {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    lookup_on(&mut s, key)
}

/// The lines of a mail log that contain every needle.
pub fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).collect()
}

/// Steady inflow: `count` distinct-recipient messages to `rcpt` through an
/// instance's submission port every `every`, from a thread, until stopped.
pub struct Feeder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    pub fn start(inst: &Instance, rcpt: &str, count: u32, every: Duration) -> Feeder {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, addr, port, rcpt) = (stop.clone(), inst.addr.clone(), inst.submission_port, rcpt.to_string());
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                inject(&addr, port, "app@client.test", &rcpt, count, 1, true);
                std::thread::sleep(every);
            }
        });
        Feeder { stop, thread: Some(thread) }
    }

    /// Stop feeding (after the submission in progress).
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
