//! Simulated providers for the lab: Debian's Postfix configured as a
//! receiving MTA on an address of the lab's own network namespace. It accepts
//! mail for its domains and discards it (each delivery is one
//! `postfix/discard` log line, joined by queue id to the client address that
//! handed it over), and answers per-recipient, per-domain or per-client codes
//! from an access table (`450 4.7.1 try again later`, `554 5.7.1 blocked`), as
//! real providers do when they defer or block an IP.
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
use std::time::Duration;

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

/// A running receiver.
pub struct Receiver {
    pub name: String,
    pub dir: PathBuf,
    pub addr: String,
    stop_on_drop: bool,
}

/// What a receiver accepted.
#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    /// (recipient address, client address) per accepted recipient.
    pub accepted: Vec<(String, String)>,
    /// Recipients refused with a 4xx code (deferred by this provider).
    pub deferred: usize,
    /// Recipients refused with a 5xx code.
    pub rejected: usize,
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
}

/// Parse a receiver's mail log.
pub fn parse_log(log: &str) -> Deliveries {
    let mut client_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut d = Deliveries::default();
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("]: ") else {
            continue;
        };
        if let Some(rest) = msg.strip_prefix("NOQUEUE: reject: RCPT from ") {
            // "... 450 4.7.1 <a@b>: Recipient address rejected: ..."
            match rest.split_once("]: ").map(|(_, r)| r.as_bytes().first().copied()) {
                Some(Some(b'4')) => d.deferred += 1,
                Some(Some(b'5')) => d.rejected += 1,
                _ => {}
            }
            continue;
        }
        let Some((qid, rest)) = msg.split_once(": ") else {
            continue;
        };
        if let Some(c) = rest.strip_prefix("client=") {
            // client=unknown[127.0.1.2]
            let addr = c.split('[').nth(1).and_then(|s| s.split(']').next()).unwrap_or("");
            client_of.insert(qid, addr);
        } else if line.contains("postfix/discard[") && rest.contains("status=sent") {
            let rcpt = rest.strip_prefix("to=<").and_then(|s| s.split('>').next()).unwrap_or("").to_string();
            d.accepted.push((rcpt, client_of.get(qid).copied().unwrap_or("").to_string()));
        }
    }
    d
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

impl Receiver {
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
             mydestination =\n\
             mynetworks = 127.255.255.254/32\n\
             relay_domains = {domains}\n\
             relay_transport = discard:\n\
             default_transport = discard:\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             smtpd_client_restrictions = check_client_access texthash:{access}\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{access}, permit\n\
             smtpd_client_connection_rate_limit = 0\n\
             default_process_limit = 50\n",
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
        let r = Receiver { name: name.to_string(), dir, addr: addr.to_string(), stop_on_drop: false };
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
        self.postfix("reload")
    }

    /// End every SMTP session in progress (SIGTERM to this receiver's
    /// `smtpd` processes, children of its own master), as a provider does
    /// when it changes its limits: a sender's cached connection would keep
    /// the old limits until the process exits. New sessions get the
    /// configuration of the last reload.
    pub fn end_sessions(&self) -> Result<(), LabError> {
        let pid_file = self.dir.join("queue/pid/master.pid");
        let master = std::fs::read_to_string(&pid_file).map_err(LabError::io(&pid_file))?;
        let master = master.trim();
        let children = format!("/proc/{master}/task/{master}/children");
        let list = std::fs::read_to_string(&children).map_err(LabError::io(&children))?;
        for pid in list.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "smtpd") {
                // SAFETY: a child of this receiver's own Postfix master,
                // checked above to be its smtpd.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        Ok(())
    }

    fn postfix(&self, cmd: &str) -> Result<(), LabError> {
        Self::postfix_in(&self.dir, cmd)
    }

    fn postfix_in(dir: &Path, cmd: &str) -> Result<(), LabError> {
        let mut c = Command::new("postfix");
        c.arg("-c").arg(dir).arg(cmd);
        // /usr/sbin may be missing from PATH in test environments.
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{path}:/usr/sbin:/sbin"));
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
        Some(Receiver { name: name.into(), dir, addr: addr.into(), stop_on_drop: false })
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
}
