//! The simulated providers misbehave on cue: a real Postfix receiver in
//! this test's network namespace, spoken to with real SMTP from chosen
//! client (egress) addresses on `lo`, answers each client as set
//! ([`Cue`]) and changes its answers while it runs; greylists new
//! triplets; requires STARTTLS with a certificate from the lab's mail CA,
//! TLS 1.2 at least. Every assertion about what happened reads the
//! receiver's own log ([`sendfleet_lab::receiver::parse_log`]).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::process::Command;
use std::time::Duration;

use sendfleet_lab::receiver::add_lo_address;
use sendfleet_lab::{Cue, MailCa, Receiver};

/// A TCP connection to `to`:25 from source address `from` (bound first,
/// as a hostNetwork instance binds its egress IP).
fn connect_from(from: &str, to: &str) -> TcpStream {
    let sa = |ip: &str, port: u16| {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        }
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a fresh descriptor with valid
    // sockaddr_in values; the descriptor is owned by the TcpStream after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let src = sa(from, 0);
        assert_eq!(libc::bind(fd, &src as *const _ as *const libc::sockaddr, len), 0, "bind {from}");
        let dst = sa(to, 25);
        let rc = libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect {to}:25 from {from}: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// One SMTP transaction from `from` to the receiver: the reply to RCPT TO
/// (and, when it was 250, to the end of DATA). Replies are `CODE text`.
fn send(from: &str, r: &Receiver, sender: &str, rcpt: &str) -> (String, Option<String>) {
    let s = connect_from(from, &r.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut rd = BufReader::new(s);
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            if rd.read_line(&mut l).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all.trim_end().to_string();
            }
        }
    };
    let mut cmd = |c: &str, reply: &mut dyn FnMut() -> String| {
        w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        reply()
    };
    assert!(reply().starts_with("220"), "banner");
    assert!(cmd("EHLO mta.example.com", &mut reply).starts_with("250"));
    let mail = cmd(&format!("MAIL FROM:<{sender}>"), &mut reply);
    if !mail.starts_with("250") {
        return (mail, None);
    }
    let rcpt_reply = cmd(&format!("RCPT TO:<{rcpt}>"), &mut reply);
    if !rcpt_reply.starts_with("250") {
        let _ = cmd("QUIT", &mut reply);
        return (rcpt_reply, None);
    }
    assert!(cmd("DATA", &mut reply).starts_with("354"));
    let end = cmd("Subject: cue test\r\n\r\nhello\r\n.", &mut reply);
    let _ = cmd("QUIT", &mut reply);
    (rcpt_reply, Some(end))
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

/// Wait until the receiver's log has `n` accepted recipients (the discard
/// delivery is logged a moment after the 250).
fn wait_accepted(r: &Receiver, n: usize) {
    let t0 = std::time::Instant::now();
    while r.deliveries().total() < n {
        assert!(t0.elapsed() < Duration::from_secs(20), "{} accepted, want {n}:\n{}", r.deliveries().total(), r.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_client_address_gets_its_cue_and_cues_change_while_the_receiver_runs() {
    let r = Receiver::start_temp("cues", "198.51.100.10", &["example.net", "inbox.test"], &[]).expect("receiver");
    let (blocked, limited, new, limited450, fine) =
        ("192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14");
    for a in [blocked, limited, new, limited450, fine] {
        add_lo_address(a).unwrap();
    }
    r.set_client(blocked, Cue::Blocked).unwrap();
    r.set_client(limited, Cue::RateLimit421).unwrap();
    r.set_client(new, Cue::NewAddressDeferred).unwrap();
    r.set_client(limited450, Cue::RateLimit450).unwrap();
    assert_eq!(r.client_rules().len(), 4);

    let (b, _) = send(blocked, &r, "app@mail.example.com", "a@example.net");
    assert_eq!(code(&b), "554", "{b}");
    assert!(b.contains("blocked") && b.contains(blocked), "{b}");
    let (l, _) = send(limited, &r, "app@mail.example.com", "a@example.net");
    assert_eq!(code(&l), "421", "{l}");
    let (n, _) = send(new, &r, "app@mail.example.com", "a@inbox.test");
    assert_eq!(code(&n), "450", "{n}");
    let (l4, _) = send(limited450, &r, "app@mail.example.com", "a@inbox.test");
    assert_eq!(code(&l4), "450", "{l4}");
    let (ok, end) = send(fine, &r, "app@mail.example.com", "a@example.net");
    assert_eq!(code(&ok), "250", "{ok}");
    assert_eq!(end.as_deref().map(code), Some("250"));

    // The provider changes its mind: the blocked address is accepted, the
    // accepted one blocked, without a restart.
    r.clear_client(blocked).unwrap();
    r.set_client(fine, Cue::Blocked).unwrap();
    let (b2, _) = send(blocked, &r, "app@mail.example.com", "b@example.net");
    assert_eq!(code(&b2), "250", "{b2}");
    let (f2, _) = send(fine, &r, "app@mail.example.com", "b@example.net");
    assert_eq!(code(&f2), "554", "{f2}");

    wait_accepted(&r, 2);
    let d = r.deliveries();
    assert_eq!(d.rejected_with(blocked, 554), 1, "{d:?}");
    assert_eq!(d.rejected_with(limited, 421), 1, "{d:?}");
    assert_eq!(d.rejected_with(new, 450), 1, "{d:?}");
    assert_eq!(d.rejected_with(limited450, 450), 1, "{d:?}");
    assert_eq!(d.rejected_with(fine, 554), 1, "{d:?}");
    assert_eq!(d.from_client(fine), 1, "{d:?}");
    assert_eq!(d.from_client(blocked), 1, "{d:?}");
    assert_eq!(d.by_client().values().sum::<usize>(), 2);
    assert_eq!((d.deferred, d.rejected), (3, 2), "{d:?}");
    let stages: Vec<&str> = d.rejections.iter().map(|x| x.stage.as_str()).collect();
    assert!(stages.iter().all(|s| *s == "RCPT"), "{stages:?}");
}

#[test]
fn a_provider_that_accepts_n_a_minute_defers_the_excess_per_client() {
    let r = Receiver::start_temp("rate", "198.51.100.13", &["example.net"], &[]).expect("receiver");
    let (a, b) = ("192.0.2.40", "192.0.2.41");
    for c in [a, b] {
        add_lo_address(c).unwrap();
    }
    r.set_rate_limit(Some(2)).unwrap();
    let codes: Vec<String> =
        (0..3).map(|i| code(&send(a, &r, "app@mail.example.com", &format!("{i}@example.net")).0).to_string()).collect();
    assert_eq!(codes, ["250", "250", "450"]);
    // Per client: another address still has its two.
    let (other, _) = send(b, &r, "app@mail.example.com", "x@example.net");
    assert_eq!(code(&other), "250", "{other}");
    r.set_rate_limit(None).unwrap();
    let (after, _) = send(a, &r, "app@mail.example.com", "y@example.net");
    assert_eq!(code(&after), "250", "no limit: {after}");

    wait_accepted(&r, 4);
    let d = r.deliveries();
    assert_eq!(d.from_client(a), 3, "{d:?}");
    assert_eq!(d.rejected_with(a, 450), 1, "{d:?}");
    let refusal = d.rejections_of(a).next().unwrap();
    assert!(refusal.text.contains("too much mail"), "{refusal:?}");
}

#[test]
fn greylisting_defers_a_new_triplet_until_its_delay_has_passed() {
    let r = Receiver::start_temp("grey", "198.51.100.11", &["example.org"], &[]).expect("receiver");
    let client = "192.0.2.20";
    add_lo_address(client).unwrap();
    r.set_greylisting(Some(Duration::from_secs(3))).unwrap();
    let (first, _) = send(client, &r, "app@mail.example.com", "x@example.org");
    assert_eq!(code(&first), "450", "{first}");
    assert!(first.contains("Greylisted"), "{first}");
    let (again, _) = send(client, &r, "app@mail.example.com", "x@example.org");
    assert_eq!(code(&again), "450", "too early: {again}");
    std::thread::sleep(Duration::from_secs(3));
    let (later, end) = send(client, &r, "app@mail.example.com", "x@example.org");
    assert_eq!(code(&later), "250", "{later}");
    assert_eq!(end.as_deref().map(code), Some("250"));
    // A new recipient is a new triplet; off again, it is accepted at once.
    let (other, _) = send(client, &r, "app@mail.example.com", "y@example.org");
    assert_eq!(code(&other), "450", "{other}");
    r.set_greylisting(None).unwrap();
    let (off, _) = send(client, &r, "app@mail.example.com", "z@example.org");
    assert_eq!(code(&off), "250", "{off}");

    wait_accepted(&r, 2);
    let d = r.deliveries();
    assert_eq!(d.rejected_with(client, 450), 3, "{d:?}");
    assert_eq!(d.from_client(client), 2, "{d:?}");
    // Off means off in main.cf, not a gone policy service.
    assert!(!r.log().contains("problem talking to server"), "{}", r.log());
}

fn posttls_finger(r: &Receiver, ca: &MailCa, host: &str, protocols: &str) -> String {
    let out = Command::new("/usr/sbin/posttls-finger")
        .args(["-c", "-l", "secure", "-p", protocols, "-t", "10", "-T", "10"])
        .arg("-F")
        .arg(&ca.cert_path)
        .arg(format!("[{}]:25", r.addr))
        .arg(host)
        .output()
        .expect("posttls-finger (Debian package postfix)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn starttls_is_required_with_a_mail_ca_certificate_for_the_mx_host_and_tls12_at_least() {
    let r = Receiver::start_temp("tls", "198.51.100.12", &["example.net"], &[]).expect("receiver");
    let ca = MailCa::shared().expect("mail CA");
    assert!(std::fs::read_to_string(&ca.cert_path).unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(ca.ca_pem(), std::fs::read_to_string(&ca.cert_path).unwrap());
    let host = "mx.provider-a.test";
    r.require_tls(ca, &[host, "relay.partner.test"]).expect("TLS required");

    // Plain SMTP: no mail without STARTTLS.
    let client = "192.0.2.30";
    add_lo_address(client).unwrap();
    let (plain, _) = send(client, &r, "app@mail.example.com", "a@example.net");
    assert_eq!(code(&plain), "530", "{plain}");

    // The certificate verifies against the mail CA for the MX host name,
    // with TLS 1.3 by default and TLS 1.2 when the client offers no more.
    let v13 = posttls_finger(&r, ca, host, ">=TLSv1.2");
    assert!(v13.contains("Verified TLS connection established"), "{v13}");
    let v12 = posttls_finger(&r, ca, host, ">=TLSv1.2,<=TLSv1.2");
    assert!(v12.contains("Verified TLS connection established") && v12.contains("TLSv1.2"), "{v12}");
    // A relay name it was issued for verifies too; another name does not.
    let relay = posttls_finger(&r, ca, "relay.partner.test", ">=TLSv1.2");
    assert!(relay.contains("Verified TLS connection established"), "{relay}");
    let wrong = posttls_finger(&r, ca, "mx.elsewhere.test", ">=TLSv1.2");
    assert!(!wrong.contains("Verified TLS connection"), "{wrong}");
    // Below the floor there is no TLS session at all.
    let old = posttls_finger(&r, ca, host, "<=TLSv1.1");
    assert!(!old.contains("TLS connection established"), "{old}");

    let d = r.deliveries();
    // posttls-finger connects from the kernel's choice of source: the
    // receiver's own address on `lo`. Four sessions: TLS 1.3, TLS 1.2, the
    // relay name's, and the wrong name's (the server cannot tell; the
    // client refuses).
    let protos = d.tls_protocols(&r.addr);
    assert_eq!(protos.iter().filter(|p| **p == "TLSv1.2").count(), 1, "{d:?}\n{}", r.log());
    assert!(protos.iter().all(|p| *p == "TLSv1.2" || *p == "TLSv1.3"), "{protos:?}");
    assert_eq!(protos.len(), 4, "{protos:?}");
    assert!(d.tls_protocols(client).is_empty());
    assert_eq!(d.total(), 0);
}
