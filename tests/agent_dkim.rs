//! DKIM signing on real Postfix with Debian's OpenDKIM, run by the agent on
//! the files the renderer produced, checked by a real verifier (python3-dkim,
//! Debian's `dkimpy`) against the lab DNS server:
//! - every message at the receiver carries a DKIM-Signature that verifies;
//!   the same message with a modified body does not;
//! - a key rotation to a second selector under load leaves no message
//!   unsigned or unverifiable, also when the config names the new selector
//!   before its key reaches the Secret's volume;
//! - a broken key holds the mail (4xx at submission, nothing sent unsigned)
//!   with the reason in the agent's status, and the opt-out sends unsigned.
//!
//! The receiver here is a small SMTP sink in the test process that keeps
//! each message's bytes (the lab's Postfix receiver discards them).

#[allow(dead_code)]
mod agent_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::*;
use sendfleet::core::contract::SignerState;
use sendfleet_lab::pki::rsa_key_pem;

// One DNS server and one receiver per test (the tests run in parallel in
// one network namespace).
const DNS: [&str; 3] = ["127.0.0.57", "127.0.0.58", "127.0.0.59"];
const SINK: [&str; 3] = ["203.0.113.57", "203.0.113.58", "203.0.113.59"];

/// A minimal SMTP server keeping every message's data (no extensions
/// advertised, so the client sends one command at a time).
struct Sink {
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    fn start(addr: &str) -> Sink {
        add_addr(addr);
        let listener = TcpListener::bind((addr, 25)).expect("binding the sink");
        let messages: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let store = messages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &store);
                });
            }
        });
        Sink { messages }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.messages.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

fn serve(conn: TcpStream, store: &Mutex<Vec<Vec<u8>>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        if cmd.starts_with("DATA") {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                // Undo dot-stuffing.
                let l = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
                data.extend_from_slice(l);
            }
            store.lock().unwrap().push(data);
            out.write_all(b"250 2.0.0 kept\r\n")?;
        } else if cmd.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"250 ok\r\n")?;
        }
    }
}

/// The selector record of `pem` as zone-file text (TXT strings of at most
/// 200 characters).
fn dkim_txt(selector: &str, pem: &str) -> String {
    let key = sendfleet::dns::dkim::public_key_from_pem(pem.as_bytes()).expect("a key");
    let value = key.txt_record();
    let parts: Vec<String> =
        value.as_bytes().chunks(200).map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap())).collect();
    format!("{selector}._domainkey IN TXT {}\n", parts.join(" "))
}

/// Zones: the recipients' domain with its MX at the sink, the signing
/// domain with the given selector records.
fn zones(sink: &str, records: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("rcpt.test".to_string(), format!("@ IN MX 10 mx.rcpt.test.\nmx IN A {sink}\n")),
        ("brand.test".to_string(), records.to_string()),
    ]
    .into()
}

/// Verify every message with python3-dkim against the lab DNS server:
/// one result per message, `true` when its signature verifies.
fn verify_all(dns: &str, messages: &[Vec<u8>]) -> Vec<bool> {
    let dir = test_dir(&format!("dkim-verify-{dns}"));
    for (i, m) in messages.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:05}.eml")), m).unwrap();
    }
    let script = r#"
import sys, os, dkim, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = [sys.argv[1]]
def txt(name, timeout=5):
    try:
        a = r.resolve(name.decode().rstrip('.'), 'TXT', lifetime=timeout)
    except Exception:
        return None
    for rr in a:
        return b''.join(rr.strings)
d = sys.argv[2]
for f in sorted(os.listdir(d)):
    m = open(os.path.join(d, f), 'rb').read()
    print('pass' if dkim.verify(m, dnsfunc=txt) else 'fail')
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(dns)
        .arg(&dir)
        .output()
        .expect("python3-dkim (Debian package python3-dkim)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res: Vec<bool> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l == "pass").collect();
    assert_eq!(res.len(), messages.len());
    res
}

/// The `s=` of each DKIM-Signature header of `m`.
fn selectors(m: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(m);
    let header = text.split("\r\n\r\n").next().unwrap_or_default().split("\n\n").next().unwrap_or_default();
    let unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ").replace("\n\t", " ").replace("\n ", " ");
    unfolded
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .filter_map(|l| l.split(';').map(str::trim).find_map(|t| t.strip_prefix("s=").map(|s| s.trim().to_string())))
        .collect()
}

/// One SMTP transaction; the reply code to the end of DATA (or the first
/// refusal).
fn submit(addr: &str, port: u16, from: &str, to: &str) -> u16 {
    let conn = TcpStream::connect((addr, port)).expect("connecting");
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    fn reply(r: &mut BufReader<TcpStream>) -> u16 {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).is_err() {
                return 0;
            }
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    }
    let greeting = reply(&mut r);
    let mut step = |cmd: &str, want: u16| -> Option<u16> {
        if out.write_all(cmd.as_bytes()).is_err() {
            return Some(0);
        }
        let c = reply(&mut r);
        (c != want).then_some(c)
    };
    if greeting != 220 {
        return greeting;
    }
    for (cmd, want) in [
        ("EHLO client.test\r\n".to_string(), 250),
        (format!("MAIL FROM:<{from}>\r\n"), 250),
        (format!("RCPT TO:<{to}>\r\n"), 250),
        ("DATA\r\n".to_string(), 354),
    ] {
        if let Some(c) = step(&cmd, want) {
            return c;
        }
    }
    let body = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: signed?\r\n\r\nhello\r\n.\r\n");
    let code = step(&body, 250).unwrap_or(250);
    let _ = step("QUIT\r\n", 221);
    code
}

fn pool(name: &str, ip: &str, dkim: &str) -> Pool {
    Pool::named(name).in_ns("t").with_ip(name, ip).fast_retries().spec(&format!("dkim: {dkim}"))
}

#[test]
fn every_message_is_signed_and_verifies_and_a_modified_body_fails() {
    require_postfix();
    let k1 = rsa_key_pem();
    let dns = Dns::serve(DNS[0], zones(SINK[0], &dkim_txt("s1", &k1)));
    let sink = Sink::start(SINK[0]);
    let p = pool("dk-a", "198.51.100.57", "{secretName: dk, selector: s1, domains: [brand.test]}");
    let fleet = fleet(p.build(), &dns).dkim_key("private.key", &k1);
    let a = fleet.start("dk-a");
    assert!(a.pod.files.contains_key("opendkim.conf"), "the renderer writes the signer's files");
    let st = a.status().dkim.expect("signer status");
    assert_eq!(st.state, SignerState::Signing, "{st:?}");

    a.inject_distinct("app@brand.test", "user@rcpt.test", 30, 3);
    wait_until("30 messages at the receiver", Duration::from_secs(90), || sink.count() >= 30);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 30);
    for m in &msgs {
        assert_eq!(selectors(m), vec!["s1".to_string()], "{}", String::from_utf8_lossy(m));
    }
    let verdicts = verify_all(DNS[0], &msgs);
    assert!(verdicts.iter().all(|v| *v), "every signature verifies: {verdicts:?}");

    // The same message with one body byte changed fails.
    let mut tampered = msgs[0].clone();
    let body_at = tampered.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
    assert!(body_at > 0 && body_at < tampered.len(), "a body");
    let i = tampered[body_at..].iter().position(|b| b.is_ascii_alphanumeric()).expect("body text") + body_at;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    assert_eq!(verify_all(DNS[0], &[msgs[0].clone(), tampered]), vec![true, false]);

    // The key file the signer reads: the signer's user only.
    let current = a.base.join("run/dkim/current");
    let key = current.join("keys/s1.private");
    let meta = std::fs::metadata(&key).expect("the staged key");
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(current.join("keys")).unwrap().permissions().mode() & 0o777, 0o700);
    let opendkim_uid: u32 = String::from_utf8(Command::new("id").args(["-u", "opendkim"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(meta.uid(), opendkim_uid);
    // Key material never reaches the agent's output.
    let key_line = k1.lines().nth(1).unwrap();
    assert!(!a.stdout().contains(key_line) && !a.stderr().contains(key_line), "key material in the logs");
}

/// Submissions from a thread until stopped: (accepted, refused).
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU32>,
    refused: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, port: u16) -> Load {
        let (stop, accepted, refused): (_, Arc<AtomicU32>, Arc<AtomicU32>) =
            (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let (s, a, r, addr) = (stop.clone(), Arc::clone(&accepted), Arc::clone(&refused), addr.to_string());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                match submit(&addr, port, "app@brand.test", &format!("u{n}@rcpt.test")) {
                    250 => a.fetch_add(1, Ordering::Relaxed),
                    _ => r.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Load { stop, accepted, refused, thread: Some(thread) }
    }

    fn stop(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.accepted.load(Ordering::Relaxed), self.refused.load(Ordering::Relaxed))
    }
}

#[test]
fn rotation_to_a_second_selector_under_load_leaves_nothing_unsigned_or_unverifiable() {
    require_postfix();
    let (k1, k2) = (rsa_key_pem(), rsa_key_pem());
    // Both selectors are published before the switch (docs/DNS.md).
    let dns = Dns::serve(DNS[1], zones(SINK[1], &format!("{}{}", dkim_txt("s1", &k1), dkim_txt("s2", &k2))));
    let sink = Sink::start(SINK[1]);
    let spec = |sel: &str| format!("{{secretName: dk, selector: {sel}, domains: [brand.test]}}");
    let mut fleet = fleet(pool("dk-r", "198.51.100.58", &spec("s1")).build(), &dns).dkim_key("private.key", &k1);
    let mut a = fleet.start("dk-r");
    let load = Load::start(&a.addr, a.submission_port);
    wait_until("mail flowing", Duration::from_secs(60), || sink.count() >= 20);

    // The ConfigMap names s2 before the Secret's volume has s2.key: the
    // signer keeps signing with s1 (never s2 with s1's key).
    fleet.pool.spec.dkim.as_mut().expect("spec.dkim").selector = "s2".into();
    a.apply_render(&fleet, Duration::from_secs(30));
    let st = a.wait_for(Duration::from_secs(10), "the signer waits for s2's key", |s| {
        s.dkim.as_ref().is_some_and(|d| d.reason.is_some())
    });
    let d = st.dkim.unwrap();
    assert_eq!((d.state, d.selectors.clone()), (SignerState::Signing, vec!["s1".to_string()]), "{d:?}");
    assert!(d.reason.as_deref().unwrap().contains("s2"), "{d:?}");
    let before = sink.count();
    wait_until("more mail while waiting", Duration::from_secs(60), || sink.count() >= before + 20);

    // The key arrives: the signer switches to s2 without a restart.
    a.set_dkim_key("s2.key", Some(&k2));
    a.wait_for(Duration::from_secs(10), "signing with s2", |s| {
        s.dkim.as_ref().is_some_and(|d| d.selectors == ["s2"] && d.reason.is_none())
    });
    let switched = sink.count();
    wait_until("mail signed after the switch", Duration::from_secs(60), || sink.count() >= switched + 30);
    let (accepted, refused) = load.stop();
    a.wait_queue_empty(Duration::from_secs(60));
    wait_until("every accepted message at the receiver", Duration::from_secs(30), || sink.count() >= accepted as usize);

    let msgs = sink.messages();
    assert_eq!(msgs.len(), accepted as usize, "accepted {accepted}, received {}", msgs.len());
    assert_eq!(refused, 0, "no submission refused during the rotation");
    let sels: Vec<Vec<String>> = msgs.iter().map(|m| selectors(m)).collect();
    assert!(sels.iter().all(|s| s.len() == 1), "every message signed once: {sels:?}");
    let s1 = sels.iter().filter(|s| s[0] == "s1").count();
    let s2 = sels.iter().filter(|s| s[0] == "s2").count();
    assert!(s1 >= 40 && s2 >= 30, "s1 {s1}, s2 {s2}");
    let verdicts = verify_all(DNS[1], &msgs);
    let bad: Vec<usize> = verdicts.iter().enumerate().filter(|(_, v)| !**v).map(|(i, _)| i).collect();
    assert!(bad.is_empty(), "unverifiable: {bad:?} of {}", msgs.len());
}

#[test]
fn a_broken_key_holds_mail_with_the_reason_and_the_opt_out_sends_unsigned() {
    require_postfix();
    let k1 = rsa_key_pem();
    let dns = Dns::serve(DNS[2], zones(SINK[2], &dkim_txt("s1", &k1)));
    let sink = Sink::start(SINK[2]);
    let p = pool("dk-h", "198.51.100.59", "{secretName: dk, selector: s1, domains: [brand.test]}");
    let fleet_h = fleet(p.build(), &dns)
        .dkim_key("private.key", "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n");
    let h = fleet_h.start("dk-h");
    let d = h.status().dkim.expect("signer status");
    assert_eq!(d.state, SignerState::Held, "{d:?}");
    assert!(d.reason.as_deref().is_some_and(|r| r.contains("s1") && r.contains("unusable key")), "{d:?}");
    let code = submit(&h.addr, h.submission_port, "app@brand.test", "held@rcpt.test");
    assert!((400..500).contains(&code), "held with a 4xx, got {code}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 0, "nothing sent unsigned");

    // The key is fixed in the Secret: the signer starts, mail flows signed.
    h.set_dkim_key("private.key", Some(&k1));
    h.wait_for(Duration::from_secs(10), "signing", |s| {
        s.dkim.as_ref().is_some_and(|d| d.state == SignerState::Signing && d.reason.is_none())
    });
    assert_eq!(submit(&h.addr, h.submission_port, "app@brand.test", "later@rcpt.test"), 250);
    wait_until("the message at the receiver", Duration::from_secs(60), || sink.count() == 1);
    assert_eq!(verify_all(DNS[2], &sink.messages()), vec![true]);

    // The opt-out: a missing key, and mail leaves unsigned (as asked).
    let p = pool(
        "dk-u",
        "198.51.100.60",
        "{secretName: dk, selector: s1, domains: [brand.test], onKeyError: SendUnsigned}",
    );
    let u = fleet(p.build(), &dns).start("dk-u");
    let d = u.status().dkim.expect("signer status");
    assert_eq!(d.state, SignerState::Unsigned, "{d:?}");
    assert!(d.reason.as_deref().is_some_and(|r| r.contains("no key")), "{d:?}");
    assert_eq!(submit(&u.addr, u.submission_port, "app@brand.test", "unsigned@rcpt.test"), 250);
    wait_until("the unsigned message at the receiver", Duration::from_secs(60), || sink.count() == 2);
    assert!(selectors(&sink.messages()[1]).is_empty(), "sent unsigned");
}
