//! No open relay, on real Postfix running the renderer's files: a
//! hostNetwork instance on a "node" of the test's own network namespace
//! (lo holds the node's address with its subnet, the client addresses and
//! the egress address).
//!
//! - A client outside `submission.allowedCIDRs` is refused when it
//!   connects: 554 instead of the banner.
//! - A connection from the node's own address is refused the same way:
//!   `mynetworks` is exactly the allowed CIDRs, never the host's networks
//!   (`mynetworks_style`), read back with `postconf`.
//! - An allowed client relays to an outside domain, delivered to a lab
//!   receiver from the egress address.
//! - With the egress address gone from the node, mail defers
//!   (`smtp_bind_address_enforce`) instead of leaving from another address.
//! - With `submission.clientCertificates`, a client from a public allowed
//!   network connects but relays only after STARTTLS with a certificate the
//!   configured CA signed (none, or another CA's: refused); a client
//!   outside allowedCIDRs is still refused at connect, and a private
//!   allowed client relays without a certificate.

#[allow(dead_code)]
mod agent_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use agent_support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sendfleet_lab::pki::{ClientCert, MailCa};

const EGRESS: &str = "198.51.100.61";
/// Inside `submission.allowedCIDRs`.
const ALLOWED_CLIENT: &str = "10.61.0.5";
const ALLOWED_CIDR: &str = "10.61.0.0/24";
/// A private address, but not an allowed one.
const OUTSIDE_CLIENT: &str = "10.62.0.5";
/// The node: its address and subnet, as Postfix's `mynetworks_style =
/// subnet` would find them.
const NODE: &str = "10.63.0.1";
const NODE_NET: &str = "10.63.0.1/24";
const PROVIDER: &str = "203.0.113.61";
const DOMAIN: &str = "outside.test";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A TCP connection to `dst:port` from the local address `src`.
fn connect_from(src: &str, dst: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(src.parse().unwrap(), 0))?;
            s.connect(SocketAddr::new(dst.parse().unwrap(), port)).await
        })
        .unwrap_or_else(|e| panic!("connect {src} -> {dst}:{port}: {e}"));
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// An SMTP session, reply by reply, in clear text or after STARTTLS.
struct Session<S: Read + Write = TcpStream> {
    stream: BufReader<S>,
}

impl Session {
    fn open(src: &str, dst: &str, port: u16) -> (Session, String) {
        let mut session = Session { stream: BufReader::new(connect_from(src, dst, port)) };
        let greeting = session.reply();
        (session, greeting)
    }

    /// STARTTLS, trusting `ca_pem` for the server's certificate (issued for
    /// `server_ip`), presenting `client` if given; then EHLO again.
    fn starttls(mut self, ca_pem: &str, server_ip: &str, client: Option<&ClientCert>) -> Session<TlsStream> {
        self.expect("STARTTLS", "220");
        let pem = |p: &str| CertificateDer::pem_slice_iter(p.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(pem(ca_pem));
        let builder = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(c) => builder
                .with_client_auth_cert(pem(&c.cert_pem), PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(server_ip.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(config.into(), name).unwrap();
        // Nothing is buffered: the server waits for the handshake.
        let mut tls = Session { stream: BufReader::new(rustls::StreamOwned::new(conn, self.stream.into_inner())) };
        tls.expect("EHLO client.test", "250");
        tls
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl<S: Read + Write> Session<S> {
    /// One (possibly multi-line) reply; its last line.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).expect("reading a reply");
            assert!(n > 0, "server closed the connection");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    fn command(&mut self, cmd: &str) -> String {
        let w = self.stream.get_mut();
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        self.reply()
    }

    /// `cmd` must be answered with `code`.
    fn expect(&mut self, cmd: &str, code: &str) {
        let r = self.command(cmd);
        assert!(r.starts_with(code), "{cmd}: expected {code}, got {r:?}");
    }
}

/// Submit one message from `src` to `rcpt` through the instance.
fn relay(src: &str, rcpt: &str) {
    let (mut s, greeting) = Session::open(src, EGRESS, 587);
    assert!(greeting.starts_with("220 "), "allowed client {src} not greeted: {greeting:?}");
    s.expect("EHLO client.test", "250");
    s.expect("MAIL FROM:<app@client.test>", "250");
    s.expect(&format!("RCPT TO:<{rcpt}>"), "250");
    s.expect("DATA", "354");
    s.expect("Subject: relay test\r\n\r\nhello\r\n.", "250");
    s.expect("QUIT", "221");
}

/// Outcome lines (`status=<status>`) of mail to DOMAIN in the agent's log.
fn outcomes(inst: &Instance, status: &str) -> usize {
    lines_with(&inst.stdout(), &[&format!("@{DOMAIN}>"), &format!("status={status}")]).len()
}

#[test]
fn only_allowed_clients_relay_and_mail_never_leaves_from_another_address() {
    require_postfix();
    // The kit adds the egress address when it starts the instance.
    for a in [ALLOWED_CLIENT, OUTSIDE_CLIENT] {
        add_addr(a);
    }
    // The node's address with its subnet (no dummy interfaces in every
    // kernel: on lo, which is as much the host's network to Postfix).
    ip(&["addr", "add", NODE_NET, "dev", "lo"]);

    let dns = Dns::start("127.0.0.53", &[(DOMAIN, PROVIDER)]);
    let receiver = receiver("relay-rcv", PROVIDER, &[DOMAIN], &[]);
    let pool = Pool::named("relay")
        .in_ns("test")
        .host_network()
        .with_ip("relay-a", EGRESS)
        .submission(587, &[ALLOWED_CIDR])
        .fast_retries()
        .build();
    let inst = fleet(pool, &dns).start("relay-a");

    // mynetworks is the allowed CIDRs (the kit adds the instance's own
    // address: the kit's clients connect from it), nothing of the node.
    let out = Command::new("postconf").arg("-c").arg(inst.postfix_dir()).args(["-h", "mynetworks"]).output().unwrap();
    let mynetworks = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(mynetworks, format!("{ALLOWED_CIDR} {EGRESS}/32"));

    // Refused at connect: the reply in place of the banner is 554.
    for (who, src) in [("a client outside allowedCIDRs", OUTSIDE_CLIENT), ("the node's address", NODE)] {
        let (mut s, greeting) = Session::open(src, EGRESS, 587);
        assert!(greeting.starts_with("554 "), "{who} ({src}) was greeted: {greeting:?}");
        // ... and nothing it says afterwards gets mail in.
        let r = s.command("MAIL FROM:<spam@client.test>");
        assert!(!r.starts_with("250"), "{who}: MAIL FROM accepted after refusal: {r:?}");
    }

    // The allowed client relays to an outside domain, sent from the
    // egress address.
    relay(ALLOWED_CLIENT, &format!("first.pii@{DOMAIN}"));
    wait_until("relayed mail delivered", Duration::from_secs(30), || receiver.deliveries().to_domain(DOMAIN) == 1);
    assert_eq!(receiver.deliveries().from_client(EGRESS), 1, "receiver log:\n{}", receiver.log());

    // The egress address disappears from the node while mail is queued:
    // the provider defers first, then the address goes, then the provider
    // accepts again. The mail must defer, not leave from another address.
    receiver.set_access(&[(DOMAIN, "450 4.7.0 try again later")]).unwrap();
    relay(ALLOWED_CLIENT, &format!("second.pii@{DOMAIN}"));
    wait_until("first deferral", Duration::from_secs(30), || outcomes(&inst, "deferred") >= 1);
    ip(&["addr", "del", &format!("{EGRESS}/32"), "dev", "lo"]);
    // Past Postfix's connection cache time (2 s): no session opened from the
    // egress address before it went is reused.
    std::thread::sleep(Duration::from_secs(3));
    receiver.set_access(&[]).unwrap();
    let before = outcomes(&inst, "deferred");
    // Retries every second or two (the pool's retry schedule).
    wait_until("a deferral without the egress address", Duration::from_secs(30), || {
        outcomes(&inst, "deferred") > before
    });
    std::thread::sleep(Duration::from_secs(5));
    let log = inst.stdout();
    let last = lines_with(&log, &[&format!("@{DOMAIN}>"), "status=deferred"]).last().map(|l| l.to_string());
    assert_eq!(receiver.deliveries().to_domain(DOMAIN), 1, "delivered without its egress address:\n{log}");
    assert_eq!(outcomes(&inst, "sent"), 1, "{log}");
    assert!(outcomes(&inst, "deferred") >= before + 2, "not retried:\n{log}");
    // Postfix's own words for a refused bind with enforcement on.
    let last = last.expect("a deferral");
    assert!(last.contains("dsn=4.4.0, status=deferred (server configuration error)"), "{last}");

    // Put the address back so the instance stops cleanly.
    ip(&["addr", "add", &format!("{EGRESS}/32"), "dev", "lo"]);
}

const CERT_EGRESS: &str = "198.51.100.62";
/// A public network (6to4 relay anycast, retired), on lo in this netns.
const PUBLIC_CIDR: &str = "192.88.99.0/24";
const PUBLIC_CLIENT: &str = "192.88.99.5";
/// Public, not allowed.
const PUBLIC_OUTSIDE: &str = "192.88.98.5";
const CERT_PRIVATE_CLIENT: &str = "10.64.0.5";
const CERT_PRIVATE_CIDR: &str = "10.64.0.0/24";
const CERT_PROVIDER: &str = "203.0.113.62";
const CERT_DOMAIN: &str = "certs-outside.test";

#[test]
fn a_public_allowed_network_relays_only_with_a_client_certificate() {
    require_postfix();
    for a in [PUBLIC_CLIENT, PUBLIC_OUTSIDE, CERT_PRIVATE_CLIENT] {
        add_addr(a);
    }
    let ca = MailCa::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rogue = MailCa::create(dir.path()).unwrap();
    let dns = Dns::start("127.0.0.54", &[(CERT_DOMAIN, CERT_PROVIDER)]);
    let receiver = receiver("certs-rcv", CERT_PROVIDER, &[CERT_DOMAIN], &[]);
    let mut pool = Pool::named("certs")
        .in_ns("test")
        .host_network()
        .with_ip("certs-a", CERT_EGRESS)
        .submission(587, &[CERT_PRIVATE_CIDR, PUBLIC_CIDR])
        .fast_retries()
        .build();
    pool.spec.submission.client_certificates = Some(
        serde_yaml::from_str("{trustedCA: {secretName: clients-ca}, serverCertificateSecretName: submission-tls}")
            .unwrap(),
    );
    let server = ca.server_cert(&["submission.certs.test"], CERT_EGRESS).unwrap();
    let inst = fleet(pool, &dns).submission_tls(server, ca.ca_pem()).start("certs-a");

    // The public network never enters mynetworks.
    let out = Command::new("postconf").arg("-c").arg(inst.postfix_dir()).args(["-h", "mynetworks"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{CERT_PRIVATE_CIDR} {CERT_EGRESS}/32"));

    // Outside allowedCIDRs: refused at connect, certificate or not.
    let (_, greeting) = Session::open(PUBLIC_OUTSIDE, CERT_EGRESS, 587);
    assert!(greeting.starts_with("554 "), "{PUBLIC_OUTSIDE} was greeted: {greeting:?}");

    let rcpt = format!("RCPT TO:<app.pii@{CERT_DOMAIN}>");
    let greeted = |src: &str| {
        let (mut s, greeting) = Session::open(src, CERT_EGRESS, 587);
        assert!(greeting.starts_with("220 "), "{src} not greeted: {greeting:?}");
        s.expect("EHLO client.test", "250");
        s
    };
    // In clear text nobody gets as far as MAIL FROM (STARTTLS required).
    let r = greeted(PUBLIC_CLIENT).command("MAIL FROM:<app@client.test>");
    assert!(r.starts_with("530 "), "MAIL FROM without STARTTLS: {r:?}");
    // TLS without a certificate, or with one another CA signed: no relay.
    for (what, cert) in
        [("no certificate", None), ("another CA's certificate", Some(rogue.client_cert("app").unwrap()))]
    {
        let mut s = greeted(PUBLIC_CLIENT).starttls(ca.ca_pem(), CERT_EGRESS, cert.as_ref());
        s.expect("MAIL FROM:<app@client.test>", "250");
        let r = s.command(&rcpt);
        assert!(r.starts_with("554 "), "{what}: {rcpt}: {r:?}");
    }
    // A certificate the configured CA signed relays to an outside domain,
    // and a private allowed client relays over TLS without one.
    let app = ca.client_cert("app.client.test").unwrap();
    for (src, cert) in [(PUBLIC_CLIENT, Some(&app)), (CERT_PRIVATE_CLIENT, None)] {
        let mut s = greeted(src).starttls(ca.ca_pem(), CERT_EGRESS, cert);
        s.expect("MAIL FROM:<app@client.test>", "250");
        s.expect(&rcpt, "250");
        s.expect("DATA", "354");
        s.expect("Subject: certificate relay test\r\n\r\nhello\r\n.", "250");
        s.expect("QUIT", "221");
    }
    wait_until("both messages delivered", Duration::from_secs(30), || {
        receiver.deliveries().to_domain(CERT_DOMAIN) == 2
    });
    assert_eq!(receiver.deliveries().from_client(CERT_EGRESS), 2, "receiver log:\n{}", receiver.log());
}
