//! Simulated providers for the lab: Debian's Postfix configured as a
//! receiving MTA on an address of the lab's own network namespace. It accepts
//! mail for its domains and discards it (each delivery is one
//! `postfix/discard` log line, joined by queue id to the client address that
//! handed it over), and answers per-recipient, per-domain or per-client codes
//! from an access table (`450 4.7.1 try again later`, `554 5.7.1 blocked`), as
//! real providers do when they defer or block an IP.
//!
//! Misbehaving on cue, changed while it runs (a `postfix reload`, never a
//! restart): a [`Cue`] per client (egress) address in the real providers'
//! wording (421/450 rate limits, 554 "blocked", a new address deferred),
//! at most N messages a minute per client ([`Receiver::set_rate_limit`]),
//! greylisting of new (client, sender, recipient) triplets
//! ([`crate::greylist`]), and STARTTLS offered or required with a
//! certificate for its MX host from the lab's mail CA
//! ([`crate::pki::MailCa`]), TLS 1.2 as the floor. Its own log is the
//! ground truth: [`parse_log`] reads what it accepted per client address,
//! what it refused to whom with which code, and the TLS protocol of each
//! client's sessions.
//!
//! Shared by the end-to-end tests (`Receiver::start_temp`, stopped on drop)
//! and the demo (`sendfleet-lab receiver start`, left running under the lab
//! directory and stopped by `sendfleet-lab down`). Never: listen on an
//! address of the host's network namespace (refused like the node), or keep
//! recipient addresses anywhere but its own log under its directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::pki::{write_private, MailCa};
use crate::LabError;

/// Postfix's internal services (no chroot: every path is absolute here).
const INTERNAL_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Marks a directory as a receiver's, so `stop_all` never runs `postfix
/// stop` on a configuration it did not write.
const MARKER: &str = ".sendfleet-receiver";

/// The client rules' table (texthash), next to the access table.
const CLIENTS: &str = "clients";

/// A running receiver.
pub struct Receiver {
    pub name: String,
    pub dir: PathBuf,
    pub addr: String,
    stop_on_drop: bool,
    /// The greylisting policy service while greylisting is on.
    greylist: Mutex<Option<crate::greylist::Service>>,
}

/// What a provider answers one client (egress) address, in the wording of
/// real providers, so that the product's classifier
/// (sendfleet_render::responses) sorts each as it would sort the real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cue {
    /// `421 4.7.28`: rate limited, and the session is closed (RateLimit).
    RateLimit421,
    /// `450 4.7.1`: rate limited, this recipient deferred (RateLimit).
    RateLimit450,
    /// `554 5.7.1`: this client address is blocked (IpBlock: the rendered
    /// status filter turns it into a deferral so nothing bounces).
    Blocked,
    /// `450 4.7.1`: a sending address the provider does not know yet is
    /// deferred (RateLimit, as the big providers phrase it).
    NewAddressDeferred,
    /// Any reply (`"CODE ENHANCED text"`, an access(5) action).
    Reply(String),
}

impl Cue {
    /// The access(5) action for `client`. Postfix sends it as
    /// `CODE ENHANCED <unknown[client]>: Client host rejected: text`.
    pub fn action(&self, client: &str) -> String {
        match self {
            Cue::RateLimit421 => {
                format!("421 4.7.28 Our system has detected an unusual rate of mail from [{client}]; try again later")
            }
            Cue::RateLimit450 => format!("450 4.7.1 Rate limit for [{client}] reached, try again later"),
            Cue::Blocked => {
                format!("554 5.7.1 Service unavailable; client [{client}] blocked using the provider's reputation list")
            }
            Cue::NewAddressDeferred => {
                format!("450 4.7.1 Messages from [{client}] temporarily deferred: new sending address, try again later")
            }
            Cue::Reply(r) => r.clone(),
        }
    }

    /// The reply code the client sees.
    pub fn code(&self) -> u16 {
        self.action("").get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

impl std::str::FromStr for Cue {
    type Err = String;
    /// `blocked`, `rate-limit-421`, `rate-limit-450`, `new-address`, or a
    /// reply of its own (`451 4.3.0 text`).
    fn from_str(s: &str) -> Result<Cue, String> {
        Ok(match s {
            "blocked" => Cue::Blocked,
            "rate-limit-421" => Cue::RateLimit421,
            "rate-limit-450" => Cue::RateLimit450,
            "new-address" => Cue::NewAddressDeferred,
            r if r.len() > 4
                && r.as_bytes()[3] == b' '
                && r[..3].parse::<u16>().is_ok_and(|c| (400..600).contains(&c)) =>
            {
                Cue::Reply(r.to_string())
            }
            other => {
                return Err(format!(
                "{other:?}: expected blocked, rate-limit-421, rate-limit-450, new-address or a reply \"4NN/5NN text\""
            ))
            }
        })
    }
}

/// One refusal in the receiver's log (`reject: STAGE from name[client]: CODE ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub client: String,
    /// SMTP stage: `RCPT`, `MAIL`, `CONNECT`, `DATA`, `END-OF-MESSAGE`.
    pub stage: String,
    pub code: u16,
    /// The reply text after the code.
    pub text: String,
}

/// What a receiver accepted, refused and negotiated, from its log.
#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    /// (recipient address, client address) per accepted recipient.
    pub accepted: Vec<(String, String)>,
    /// Recipients refused with a 4xx code (deferred by this provider).
    pub deferred: usize,
    /// Recipients refused with a 5xx code.
    pub rejected: usize,
    /// Every refusal, in log order.
    pub rejections: Vec<Rejection>,
    /// (client address, TLS protocol) per TLS session, in log order.
    pub tls: Vec<(String, String)>,
    /// Second of the day each [`Deliveries::accepted`] entry was logged
    /// (same order), when the line's `Mmm dd hh:mm:ss` prefix parsed.
    pub accepted_at: Vec<Option<i64>>,
}

impl Deliveries {
    pub fn total(&self) -> usize {
        self.accepted.len()
    }
    pub fn to_domain(&self, domain: &str) -> usize {
        self.accepted.iter().filter(|(r, _)| r.ends_with(&format!("@{domain}"))).count()
    }
    pub fn to_domain_from(&self, domain: &str, client: &str) -> usize {
        self.accepted.iter().filter(|(r, c)| r.ends_with(&format!("@{domain}")) && c == client).count()
    }
    pub fn to_address(&self, addr: &str) -> usize {
        self.accepted.iter().filter(|(r, _)| r == addr).count()
    }
    /// Accepted recipients per client address.
    pub fn by_client(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, c) in &self.accepted {
            *m.entry(c.clone()).or_insert(0) += 1;
        }
        m
    }
    /// Per client, the most recipients in `domain` accepted within any 60 s
    /// window: what a throttle of N per minute bounds at N (+1 for the
    /// window's edge).
    pub fn busiest_minute(&self, domain: &str) -> BTreeMap<String, usize> {
        let suffix = format!("@{domain}");
        let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for ((rcpt, client), at) in self.accepted.iter().zip(&self.accepted_at) {
            if let (true, Some(t)) = (rcpt.ends_with(&suffix), at) {
                times.entry(client).or_default().push(*t);
            }
        }
        times
            .into_iter()
            .map(|(c, mut ts)| {
                ts.sort_unstable();
                let most = (0..ts.len()).map(|i| ts[i..].iter().take_while(|t| **t < ts[i] + 60).count()).max();
                (c.to_string(), most.unwrap_or(0))
            })
            .collect()
    }
    /// Accepted recipients from `client`.
    pub fn from_client(&self, client: &str) -> usize {
        self.accepted.iter().filter(|(_, c)| c == client).count()
    }
    /// Refusals of `client`, in log order.
    pub fn rejections_of<'a>(&'a self, client: &'a str) -> impl Iterator<Item = &'a Rejection> + 'a {
        self.rejections.iter().filter(move |r| r.client == client)
    }
    /// Refusals of `client` with reply code `code`.
    pub fn rejected_with(&self, client: &str, code: u16) -> usize {
        self.rejections_of(client).filter(|r| r.code == code).count()
    }
    /// Refusals per client address and code.
    pub fn rejections_by_client(&self) -> BTreeMap<String, BTreeMap<u16, usize>> {
        let mut m: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
        for r in &self.rejections {
            *m.entry(r.client.clone()).or_default().entry(r.code).or_insert(0) += 1;
        }
        m
    }
    /// The TLS protocols of `client`'s sessions (`TLSv1.2`, `TLSv1.3`), in
    /// log order; empty when it never used TLS.
    pub fn tls_protocols(&self, client: &str) -> Vec<&str> {
        self.tls.iter().filter(|(c, _)| c == client).map(|(_, p)| p.as_str()).collect()
    }
}

/// The address inside `name[addr]` (`unknown[192.0.2.10]` -> `192.0.2.10`).
fn bracketed(s: &str) -> &str {
    s.split('[').nth(1).and_then(|s| s.split(']').next()).unwrap_or("")
}

/// Parse a receiver's mail log.
pub fn parse_log(log: &str) -> Deliveries {
    let mut client_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut d = Deliveries::default();
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("]: ") else {
            continue;
        };
        // "NOQUEUE: reject: RCPT from unknown[192.0.2.12]: 450 4.7.1 <a@b>: ..."
        // (a queue id instead of NOQUEUE once the transaction has one).
        if let Some((_, rest)) = msg.split_once(": reject: ") {
            let Some((stage, rest)) = rest.split_once(" from ") else {
                continue;
            };
            let Some((client, reply)) = rest.split_once("]: ") else {
                continue;
            };
            let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            match code / 100 {
                4 => d.deferred += 1,
                5 => d.rejected += 1,
                _ => {}
            }
            d.rejections.push(Rejection {
                client: bracketed(&format!("{client}]")).to_string(),
                stage: stage.to_string(),
                code,
                text: reply.get(4..).unwrap_or("").to_string(),
            });
            continue;
        }
        // Postfix's own rate limits log a warning, not a `reject:` line:
        // "warning: Message delivery request rate limit exceeded: 3 from unknown[192.0.2.40] for service ..."
        if let Some((what, rest)) = msg.strip_prefix("warning: ").and_then(|m| m.split_once(" rate limit exceeded: ")) {
            let client = rest.split_once(" from ").map(|(_, c)| bracketed(c)).unwrap_or("").to_string();
            // smtpd's replies for each limit (smtpd.c).
            let (stage, code, text) = match what {
                "Connection" => ("CONNECT", 421, format!("4.7.0 Error: too many connections from {client}")),
                "Recipient address" => ("RCPT", 450, format!("4.7.1 Error: too many recipients from {client}")),
                _ => ("MAIL", 450, format!("4.7.1 Error: too much mail from {client}")),
            };
            d.deferred += 1;
            d.rejections.push(Rejection { client, stage: stage.to_string(), code, text });
            continue;
        }
        // "Anonymous TLS connection established from unknown[192.0.2.10]: TLSv1.3 with cipher ..."
        if let Some((_, rest)) = msg.split_once("TLS connection established from ") {
            if let Some((client, proto)) = rest.split_once("]: ") {
                let proto = proto.split_whitespace().next().unwrap_or("");
                d.tls.push((bracketed(&format!("{client}]")).to_string(), proto.to_string()));
            }
            continue;
        }
        let Some((qid, rest)) = msg.split_once(": ") else {
            continue;
        };
        if let Some(c) = rest.strip_prefix("client=") {
            // client=unknown[127.0.1.2]
            client_of.insert(qid, bracketed(c));
        } else if line.contains("postfix/discard[") && rest.contains("status=sent") {
            let rcpt = rest.strip_prefix("to=<").and_then(|s| s.split('>').next()).unwrap_or("").to_string();
            d.accepted.push((rcpt, client_of.get(qid).copied().unwrap_or("").to_string()));
            d.accepted_at.push(log_seconds(line));
        }
    }
    d
}

/// Second of the day of a Postfix log line's `Mmm dd hh:mm:ss` prefix.
fn log_seconds(line: &str) -> Option<i64> {
    let hms = line.split_whitespace().nth(2)?;
    let mut p = hms.split(':').map(|x| x.parse::<i64>().ok());
    Some(p.next()?? * 3600 + p.next()?? * 60 + p.next()??)
}

/// /usr/sbin may be missing from PATH in test environments.
fn with_sbin(c: &mut Command) {
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{path}:/usr/sbin:/sbin"));
}

fn mkdir(p: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(p).map_err(LabError::io(p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(LabError::io(p))
}

fn checked(mut c: Command, what: &str) -> Result<String, LabError> {
    let out = c.output().map_err(|source| LabError::Spawn { program: what.into(), source })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: what.to_string(),
            status: out.status.to_string(),
            stderr: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Add `addr`/32 to `lo` of the current (lab) network namespace.
pub fn add_lo_address(addr: &str) -> Result<(), LabError> {
    crate::node::require_lab_netns()?;
    crate::process::add_lo_address(addr)
}

/// Wait until `addr:port` answers with an SMTP banner (a receiver's or a
/// sending instance's Postfix).
pub fn wait_banner(addr: &str, port: u16, timeout: Duration) -> Result<(), LabError> {
    let what = format!("an SMTP banner on {addr}:{port}");
    crate::process::poll(&what, timeout, Duration::from_millis(100), || {
        let mut s = TcpStream::connect((addr, port)).map_err(LabError::io(format!("{addr}:{port}")))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).map_err(LabError::io(format!("{addr}:{port}")))?;
        if buf[..n].starts_with(b"220") {
            let _ = s.write_all(b"QUIT\r\n");
            return Ok(Some(()));
        }
        Err(LabError::Usage(format!("not a banner: {}", String::from_utf8_lossy(&buf[..n]))))
    })
}

fn access_text(access: &[(&str, &str)]) -> String {
    access.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}

/// `smtpd_recipient_restrictions`: the access table, then the greylisting
/// policy service while one listens.
fn recipient_restrictions(access: &Path, greylist: Option<std::net::SocketAddr>) -> String {
    let policy = greylist.map(|a| format!("check_policy_service inet:{a}, ")).unwrap_or_default();
    format!("check_recipient_access texthash:{}, {policy}permit", access.display())
}

impl Receiver {
    fn new(name: &str, dir: PathBuf, addr: &str) -> Receiver {
        Receiver {
            name: name.to_string(),
            dir,
            addr: addr.to_string(),
            stop_on_drop: false,
            greylist: Mutex::new(None),
        }
    }

    /// Start a receiver named `name` in `dir` (created; a previous receiver's
    /// directory is reused after stopping it) on `addr`:25, accepting mail
    /// for `domains`. `access`: recipient, domain or client address -> SMTP
    /// reply. Left running when dropped: stop it with [`Receiver::stop_dir`]
    /// or [`stop_all`].
    pub fn start(
        name: &str,
        dir: &Path,
        addr: &str,
        domains: &[&str],
        access: &[(&str, &str)],
    ) -> Result<Receiver, LabError> {
        add_lo_address(addr)?;
        if dir.join(MARKER).exists() {
            Self::stop_dir(dir)?;
            std::fs::remove_dir_all(dir).map_err(LabError::io(dir))?;
        }
        mkdir(dir)?;
        let dir = dir.canonicalize().map_err(LabError::io(dir))?;
        std::fs::write(dir.join(MARKER), format!("{name} {addr}\n")).map_err(LabError::io(&dir))?;
        mkdir(&dir.join("queue"))?;
        mkdir(&dir.join("data"))?;
        let mut chown = Command::new("chown");
        chown.arg("postfix").arg(dir.join("data"));
        checked(chown, "chown postfix (Debian package postfix)")?;
        let p = dir.join(CLIENTS);
        std::fs::write(&p, "").map_err(LabError::io(&p))?;
        let p = dir.join("access");
        std::fs::write(&p, access_text(access)).map_err(LabError::io(&p))?;
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {q}\n\
             data_directory = {d}\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {prefix}\n\
             inet_interfaces = {addr}\n\
             inet_protocols = ipv4\n\
             myhostname = {name}.lab.test\n\
             alias_maps =\n\
             alias_database =\n\
             mydestination =\n\
             mynetworks = 127.255.255.254/32\n\
             relay_domains = {domains}\n\
             relay_transport = discard:\n\
             default_transport = discard:\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             smtpd_client_restrictions = check_client_access texthash:{clients}, check_client_access texthash:{access}\n\
             smtpd_recipient_restrictions = {recipient_restrictions}\n\
             smtpd_policy_service_default_action = DUNNO\n\
             smtpd_tls_loglevel = 1\n\
             smtpd_tls_protocols = >=TLSv1.2\n\
             smtpd_tls_mandatory_protocols = >=TLSv1.2\n\
             smtpd_client_connection_rate_limit = 0\n\
             service_throttle_time = 1s\n\
             default_process_limit = 50\n",
            clients = dir.join(CLIENTS).display(),
            recipient_restrictions = recipient_restrictions(&p, None),
            q = dir.join("queue").display(),
            d = dir.join("data").display(),
            log = dir.join("maillog").display(),
            prefix = dir.display(),
            domains = domains.join(" "),
            access = p.display(),
        );
        let p = dir.join("main.cf");
        std::fs::write(&p, main).map_err(LabError::io(&p))?;
        let p = dir.join("master.cf");
        std::fs::write(&p, format!("{addr}:25 inet n - n - - smtpd\n{INTERNAL_SERVICES}")).map_err(LabError::io(&p))?;
        let r = Receiver::new(name, dir, addr);
        r.postfix("start")?;
        wait_banner(addr, 25, Duration::from_secs(30))?;
        Ok(r)
    }

    /// [`Receiver::start`] in a fresh temp directory, stopped (and the
    /// directory removed unless the thread is panicking) on drop: for tests.
    pub fn start_temp(name: &str, addr: &str, domains: &[&str], access: &[(&str, &str)]) -> Result<Receiver, LabError> {
        let dir = std::env::temp_dir().join(format!("sendfleet-receiver-{}-{name}", std::process::id()));
        let mut r = Self::start(name, &dir, addr, domains, access)?;
        r.stop_on_drop = true;
        Ok(r)
    }

    /// Replace the access table and reload (the provider changes its mind).
    pub fn set_access(&self, access: &[(&str, &str)]) -> Result<(), LabError> {
        let p = self.dir.join("access");
        std::fs::write(&p, access_text(access)).map_err(LabError::io(&p))?;
        self.reload()
    }

    /// Answer `client` with `cue` from its next SMTP session on (a
    /// reload; sessions in progress keep the old rules until they end, see
    /// [`Receiver::end_sessions`]).
    pub fn set_client(&self, client: &str, cue: Cue) -> Result<(), LabError> {
        let mut rules = self.client_rules();
        rules.insert(client.to_string(), cue.action(client));
        self.write_client_rules(&rules)
    }

    /// Back to accepting `client` (its next sessions).
    pub fn clear_client(&self, client: &str) -> Result<(), LabError> {
        let mut rules = self.client_rules();
        rules.remove(client);
        self.write_client_rules(&rules)
    }

    /// Client address -> access action, as in force after the last change.
    pub fn client_rules(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.join(CLIENTS))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }

    fn write_client_rules(&self, rules: &BTreeMap<String, String>) -> Result<(), LabError> {
        for (client, action) in rules {
            if client.parse::<std::net::IpAddr>().is_err() || action.contains('\n') {
                return Err(LabError::Usage(format!(
                    "client rule {client:?} -> {action:?}: an IP address and one line"
                )));
            }
        }
        let p = self.dir.join(CLIENTS);
        let text: String = rules.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        std::fs::write(&p, text).map_err(LabError::io(&p))?;
        self.reload()
    }

    /// Accept at most `per_minute` messages a minute from each client
    /// address (`None`: no limit), as a provider that takes N a minute:
    /// Postfix's own anvil limit, answering the excess `450 4.7.1 Error:
    /// too much mail from ADDR` at MAIL FROM (RateLimit to the classifier).
    pub fn set_rate_limit(&self, per_minute: Option<u32>) -> Result<(), LabError> {
        let n = per_minute.unwrap_or(0);
        self.postconf(&[&format!("smtpd_client_message_rate_limit={n}"), "anvil_rate_time_unit=60s"])?;
        self.reload()
    }

    /// Greylist new (client, sender, recipient) triplets for `delay`
    /// (`None`: off). The policy service runs in this process
    /// ([`crate::greylist`]): greylisting ends with this `Receiver` value.
    /// Changing the delay keeps the triplets already seen.
    pub fn set_greylisting(&self, delay: Option<Duration>) -> Result<(), LabError> {
        let mut slot = self.greylist.lock().map_err(|_| LabError::Poisoned)?;
        let addr = match (delay, slot.as_ref()) {
            (None, _) => {
                *slot = None;
                None
            }
            (Some(d), Some(svc)) => {
                svc.set_delay(d);
                return Ok(());
            }
            (Some(d), None) => {
                let svc = crate::greylist::Service::start(&self.addr, d)?;
                let a = svc.addr;
                *slot = Some(svc);
                Some(a)
            }
        };
        self.postconf(&[&format!(
            "smtpd_recipient_restrictions={}",
            recipient_restrictions(&self.dir.join("access"), addr)
        )])?;
        self.reload()
    }

    /// Require STARTTLS (no mail without it), presenting a certificate
    /// from `ca` for `names` (the MX host first; a relay host name too if a
    /// route names one) and this receiver's address; TLS 1.2 is the floor.
    /// The log then shows each client's protocol.
    pub fn require_tls(&self, ca: &MailCa, names: &[&str]) -> Result<(), LabError> {
        self.set_tls(Some((ca, names)), "encrypt")
    }

    /// Offer STARTTLS (plain SMTP still accepted), as [`Receiver::require_tls`].
    pub fn offer_tls(&self, ca: &MailCa, names: &[&str]) -> Result<(), LabError> {
        self.set_tls(Some((ca, names)), "may")
    }

    /// No STARTTLS at all (the receiver's start state).
    pub fn no_tls(&self) -> Result<(), LabError> {
        self.set_tls(None, "none")
    }

    fn set_tls(&self, cert: Option<(&MailCa, &[&str])>, level: &str) -> Result<(), LabError> {
        let mut settings = vec![format!("smtpd_tls_security_level={level}")];
        if let Some((ca, names)) = cert {
            let c = ca.server_cert(names, &self.addr)?;
            // One file, key first then its chain (any key type, Postfix >= 3.4).
            let p = self.dir.join("tls-chain.pem");
            write_private(&p, format!("{}{}", c.key_pem, c.cert_pem).as_bytes())?;
            settings.push(format!("smtpd_tls_chain_files={}", p.display()));
        }
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        self.postconf(&settings)?;
        self.reload()
    }

    /// `postconf -c DIR -e SETTING...`: edit this receiver's main.cf.
    fn postconf(&self, settings: &[&str]) -> Result<(), LabError> {
        let mut c = Command::new("postconf");
        c.arg("-c").arg(&self.dir).arg("-e").args(settings);
        with_sbin(&mut c);
        checked(c, &format!("postconf -c {} -e (Debian package postfix)", self.dir.display())).map(|_| ())
    }

    /// End every SMTP session in progress (SIGTERM to this receiver's
    /// `smtpd` processes, children of its own master), as a provider does
    /// when it changes its limits: a sender's cached connection would keep
    /// the old limits until the process exits. New sessions get the
    /// configuration of the last reload.
    ///
    /// The master takes a child that dies by a signal before it served a
    /// connection (one it spawned just now, e.g. after a reload) for a
    /// broken command and stops the service for `service_throttle_time`:
    /// 60 s by default, during which the receiver accepts nothing. The
    /// receiver's main.cf sets it to 1 s so ending sessions never does that.
    pub fn end_sessions(&self) -> Result<(), LabError> {
        for pid in self.smtpd_pids()? {
            // SAFETY: a child of this receiver's own Postfix master,
            // checked by smtpd_pids to be its smtpd.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        Ok(())
    }

    /// This receiver's `smtpd` processes (children of its own master).
    fn smtpd_pids(&self) -> Result<Vec<libc::pid_t>, LabError> {
        let pid_file = self.dir.join("queue/pid/master.pid");
        let master = std::fs::read_to_string(&pid_file).map_err(LabError::io(&pid_file))?;
        let master = master.trim();
        let children = format!("/proc/{master}/task/{master}/children");
        let list = std::fs::read_to_string(&children).map_err(LabError::io(&children))?;
        Ok(list
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "smtpd"))
            .collect())
    }

    /// `postfix reload`, then wait (at most 3 s) until the smtpd processes
    /// that ran before it are gone. A new smtpd reads main.cf and its tables
    /// when it starts, but the master handles the reload asynchronously:
    /// without the wait, an idle old smtpd could still take the next
    /// connection with the old rules. One busy with a session (a sender's
    /// cached connection) ends with that session ([`Receiver::end_sessions`]).
    fn reload(&self) -> Result<(), LabError> {
        let before = self.smtpd_pids().unwrap_or_default();
        self.postfix("reload")?;
        let t0 = std::time::Instant::now();
        while before.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) && t0.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn postfix(&self, cmd: &str) -> Result<(), LabError> {
        Self::postfix_in(&self.dir, cmd)
    }

    fn postfix_in(dir: &Path, cmd: &str) -> Result<(), LabError> {
        let mut c = Command::new("postfix");
        c.arg("-c").arg(dir).arg(cmd);
        with_sbin(&mut c);
        checked(c, &format!("postfix -c {} {cmd} (Debian package postfix)", dir.display())).map(|_| ())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// What it accepted so far, per recipient and client address.
    pub fn deliveries(&self) -> Deliveries {
        parse_log(&self.log())
    }

    /// The receiver whose directory is `dir` (for status of a running one).
    pub fn open(dir: &Path) -> Option<Receiver> {
        let tag = std::fs::read_to_string(dir.join(MARKER)).ok()?;
        let (name, addr) = tag.trim().split_once(' ')?;
        // Postfix wants an absolute configuration directory.
        let dir = dir.canonicalize().ok()?;
        Some(Receiver::new(name, dir, addr))
    }

    /// Stop the receiver in `dir`, if it is running: SIGTERM to its master
    /// (what `postfix stop` sends), which ends its children, then SIGKILL
    /// after 10 s. Not `postfix stop`: that refuses to run outside the
    /// namespace holding `inet_interfaces`, and `down` must work from the host.
    pub fn stop_dir(dir: &Path) -> Result<(), LabError> {
        if !dir.join(MARKER).exists() {
            return Err(LabError::Usage(format!("{} is not a receiver directory", dir.display())));
        }
        let Some(pid) = std::fs::read_to_string(dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
            .filter(|p| *p > 1)
        else {
            return Ok(());
        };
        let alive = || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "master");
        if !alive() {
            return Ok(());
        }
        // SAFETY: signalling the pid Postfix recorded for this receiver's
        // master, checked above to still be a Postfix master.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if !crate::process::wait_gone(pid as u32, Duration::from_secs(10)) && alive() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = Self::stop_dir(&self.dir);
            // Keep the evidence when a test fails.
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Receivers under `parent` (one directory each), sorted by name.
pub fn list(parent: &Path) -> Vec<Receiver> {
    let mut v: Vec<Receiver> = std::fs::read_dir(parent)
        .map(|rd| rd.flatten().filter_map(|e| Receiver::open(&e.path())).collect())
        .unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Stop every receiver under `parent`; returns their names.
pub fn stop_all(parent: &Path) -> Result<Vec<String>, LabError> {
    let mut names = vec![];
    for r in list(parent) {
        Receiver::stop_dir(&r.dir)?;
        names.push(r.name.clone());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_joined_per_queue_id_and_refusals_counted() {
        let log = "\
Nov 23 12:00:00 h postfix/smtpd[10]: 4AB: client=unknown[192.0.2.10]
Nov 23 12:00:00 h postfix/smtpd[10]: 4AC: client=unknown[192.0.2.11]
Nov 23 12:00:01 h postfix/discard[11]: 4AB: to=<1a@example.net>, relay=none, status=sent (example.net)
Nov 23 12:00:01 h postfix/discard[11]: 4AC: to=<2a@example.net>, relay=none, status=sent (example.net)
Nov 23 12:00:01 h postfix/discard[11]: 4AC: to=<3a@example.org>, relay=none, status=sent (example.org)
Nov 23 12:00:02 h postfix/smtpd[10]: NOQUEUE: reject: RCPT from unknown[192.0.2.12]: 450 4.7.1 <x@busy.example.org>: Recipient address rejected: later; from=<a@b> to=<x@busy.example.org>
Nov 23 12:00:02 h postfix/smtpd[10]: NOQUEUE: reject: RCPT from unknown[192.0.2.12]: 554 5.7.1 <192.0.2.12>: Client host rejected: blocked
";
        let d = parse_log(log);
        assert_eq!(d.total(), 3);
        assert_eq!(d.to_domain("example.net"), 2);
        assert_eq!(d.to_domain_from("example.net", "192.0.2.10"), 1);
        assert_eq!(d.to_domain_from("example.org", "192.0.2.11"), 1);
        assert_eq!(d.by_client().get("192.0.2.11"), Some(&2));
        assert_eq!((d.deferred, d.rejected), (1, 1));
    }

    #[test]
    fn the_busiest_minute_counts_one_clients_deliveries_to_a_domain_within_60_s() {
        let line = |t: &str, q: &str, r: &str| {
            format!("Nov 23 {t} h postfix/discard[11]: {q}: to=<{r}@example.net>, relay=none, status=sent (x)\n")
        };
        let mut log = String::new();
        for q in ["A1", "A2", "A3", "A4"] {
            log.push_str(&format!("Nov 23 12:00:00 h postfix/smtpd[10]: {q}: client=unknown[192.0.2.10]\n"));
        }
        log += &line("12:00:00", "A1", "1");
        log += &line("12:00:59", "A2", "2");
        log += &line("12:01:00", "A3", "3");
        log += &line("12:01:30", "A4", "4");
        let d = parse_log(&log);
        assert_eq!(d.busiest_minute("example.net").get("192.0.2.10"), Some(&3));
        assert!(d.busiest_minute("example.org").is_empty());
    }

    #[test]
    fn rejections_carry_client_stage_and_code_and_tls_sessions_their_protocol() {
        let log = "\
Dec 01 23:30:13 h postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.10]: 554 5.7.1 <unknown[192.0.2.10]>: Client host rejected: Service unavailable; client [192.0.2.10] blocked; from=<a@s.test> to=<x@example.net> proto=ESMTP helo=<m>
Dec 01 23:30:13 h postfix/smtpd[1]: NOQUEUE: reject: RCPT from mx.example[192.0.2.11]: 421 4.7.28 <mx.example[192.0.2.11]>: Client host rejected: unusual rate; from=<a@s.test> to=<x@example.net> proto=ESMTP helo=<m>
Dec 01 23:30:14 h postfix/smtpd[1]: 4XY: client=unknown[192.0.2.12]
Dec 01 23:30:14 h postfix/smtpd[1]: 4XY: reject: RCPT from unknown[192.0.2.12]: 450 4.7.1 <y@example.org>: Recipient address rejected: Greylisted, please try again in 3 seconds; from=<a@s.test> to=<y@example.org> proto=ESMTP helo=<m>
Dec 01 23:30:26 h postfix/smtpd[2]: Anonymous TLS connection established from unknown[192.0.2.12]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519
Dec 01 23:30:27 h postfix/smtpd[2]: Trusted TLS connection established from unknown[192.0.2.10]: TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)
Dec 01 23:30:28 h postfix/smtpd[2]: SSL_accept error from unknown[192.0.2.11]: -1
Dec 01 23:45:32 h postfix/smtpd[9]: warning: Message delivery request rate limit exceeded: 3 from unknown[192.0.2.40] for service 198.51.100.13:25
";
        let d = parse_log(log);
        assert_eq!(d.rejections.len(), 4);
        let limited = d.rejections_of("192.0.2.40").next().expect("the rate-limit warning");
        assert_eq!((limited.stage.as_str(), limited.code), ("MAIL", 450));
        assert_eq!(limited.text, "4.7.1 Error: too much mail from 192.0.2.40");
        assert_eq!(d.rejected_with("192.0.2.10", 554), 1);
        assert_eq!(d.rejected_with("192.0.2.11", 421), 1);
        assert_eq!(d.rejected_with("192.0.2.12", 450), 1);
        assert_eq!(d.rejected_with("192.0.2.12", 554), 0);
        let grey = d.rejections_of("192.0.2.12").next().expect("the queue-id reject");
        assert_eq!(grey.stage, "RCPT");
        assert!(grey.text.starts_with("4.7.1 <y@example.org>: Recipient address rejected: Greylisted"), "{grey:?}");
        assert_eq!((d.deferred, d.rejected), (3, 1));
        let by = d.rejections_by_client();
        assert_eq!(by["192.0.2.11"], BTreeMap::from([(421, 1)]));
        assert_eq!(d.tls_protocols("192.0.2.12"), ["TLSv1.3"]);
        assert_eq!(d.tls_protocols("192.0.2.10"), ["TLSv1.2"]);
        assert!(d.tls_protocols("192.0.2.11").is_empty(), "a failed handshake is no session");
        assert_eq!(d.total(), 0);
    }

    /// The first category of the product's response evidence
    /// (sendfleet_render::responses::ORDER) that a reply matches, as its
    /// classifier and the rendered status filter test them.
    fn category(reply: &str) -> Option<sendfleet_render::contract::ResponseCategory> {
        let text = reply.to_ascii_lowercase();
        let detail = reply.get(5..).and_then(|r| r.split_whitespace().next()).unwrap_or("");
        sendfleet_render::responses::ORDER.iter().find_map(|(cat, e)| {
            let hit = e.phrases.iter().any(|p| text.contains(p)) || e.details.iter().any(|d| detail.ends_with(d));
            hit.then_some(*cat)
        })
    }

    #[test]
    fn cues_are_worded_so_the_products_evidence_sorts_them_as_real_ones() {
        use sendfleet_render::contract::ResponseCategory::*;
        let c = "192.0.2.10";
        // What the sender hears: Postfix puts the client's name in front.
        let heard = |cue: &Cue| {
            let a = cue.action(c);
            let (code, text) = a.split_at(10);
            format!("{code}<unknown[{c}]>: Client host rejected: {text}")
        };
        assert_eq!(category(&heard(&Cue::Blocked)), Some(IpBlock), "{}", heard(&Cue::Blocked));
        assert_eq!(category(&heard(&Cue::RateLimit421)), Some(RateLimit));
        assert_eq!(category(&heard(&Cue::RateLimit450)), Some(RateLimit));
        assert_eq!(category(&heard(&Cue::NewAddressDeferred)), Some(RateLimit));
        let codes: Vec<u16> = [Cue::Blocked, Cue::RateLimit421, Cue::RateLimit450, Cue::NewAddressDeferred]
            .iter()
            .map(Cue::code)
            .collect();
        assert_eq!(codes, [554, 421, 450, 450]);
        assert_eq!(Cue::Reply("451 4.3.0 later".into()).code(), 451);
        assert_eq!("blocked".parse::<Cue>(), Ok(Cue::Blocked));
        assert_eq!("new-address".parse::<Cue>(), Ok(Cue::NewAddressDeferred));
        assert_eq!("451 4.3.0 later".parse::<Cue>(), Ok(Cue::Reply("451 4.3.0 later".into())));
        assert!("250 ok".parse::<Cue>().is_err() && "blocke".parse::<Cue>().is_err());
    }
}
