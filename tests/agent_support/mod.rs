//! Real-Postfix harness for the agent's integration tests (and for the node
//! and end-to-end work to reuse): provider receivers, sending instances run
//! by `sendfleet agent`, a ConfigMap-like config source, injection with
//! `smtp-source`, and readers for the agent's HTTP routes and logs.
//!
//! Everything binds to 127.0.x.y addresses added to `lo` inside the test's
//! own network namespace (the cargo runner `hack/netns-run` creates it).
//! Name resolution without DNS: instances use `smtp_host_lookup = native`
//! with DNS disabled, and the agent (hence its Postfix) runs in a private
//! mount namespace where a test-owned hosts file is bind-mounted over
//! /etc/hosts, so `dest.test` resolves to its receiver's address exactly as
//! an MX would in production — including for mail a peer sends with
//! `content_filter=smtp:`. Nothing here skips: a missing tool is a panic
//! naming the package. Include it with `#[allow(dead_code)] mod agent_support;`
//! (each test uses part of it).

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sendfleet::core::contract::{config_hash, AgentStatus};
use sendfleet::core::policy::{AgentPolicy, InstancePolicy, POLICY_VERSION};

/// Port of the peer listener in these tests.
pub const PEER_PORT: u16 = 2526;
/// Port of the agent's HTTP server (on the instance's own address).
pub const HTTP_PORT: u16 = 9187;
/// Hash key used by the test agents.
pub const HASH_KEY: &str = "test-key-0123456789abcdef";

/// Panic loudly unless the Postfix tools this harness needs are installed.
pub fn require_postfix() {
    for tool in ["postconf", "postfix", "postqueue", "postmap", "smtp-source"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} || test -x /usr/sbin/{tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "{tool} is missing: install Debian's postfix package (`make test` runs apt-get install -y postfix)"
        );
    }
    // The tools live in /usr/sbin, which a test environment may not have on PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    if !path.split(':').any(|p| p == "/usr/sbin") {
        std::env::set_var("PATH", format!("{path}:/usr/sbin:/sbin"));
    }
}

/// Add `addr`/32 to `lo` (inside the test's network namespace).
pub fn add_addr(addr: &str) {
    let out =
        Command::new("ip").args(["addr", "add", &format!("{addr}/32"), "dev", "lo"]).output().expect("running ip");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || err.contains("File exists"), "ip addr add {addr}: {err}");
}

/// A resource from examples/ (what users apply), parsed.
pub fn example<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fresh directory the postfix user can traverse.
pub fn test_dir(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("sendfleet-agent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    base
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn chown_postfix(p: &Path) {
    let st = Command::new("chown").arg("postfix").arg(p).status().unwrap();
    assert!(st.success());
}

/// Master.cf lines every instance needs (no chroot: paths are absolute here).
pub const INTERNAL_SERVICES: &str = "\
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

fn hostname_for(addr: &str) -> String {
    format!("h-{}.test", addr.replace(['.', ':'], "-"))
}

/// Wait until `addr:port` answers with an SMTP banner.
pub fn wait_banner(addr: &str, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = TcpStream::connect((addr, port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 256];
            if let Ok(n) = s.read(&mut buf) {
                if buf[..n].starts_with(b"220") {
                    let _ = s.write_all(b"QUIT\r\n");
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "no SMTP banner on {addr}:{port} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Postfix acting as a receiving provider: accepts mail for its domains
/// and discards it (each delivery is a `postfix/discard` log line), answers
/// per-recipient codes from an access table, logs to a file.
pub struct Receiver {
    pub dir: PathBuf,
    pub addr: String,
}

impl Receiver {
    /// `access`: recipient address -> SMTP reply (e.g. `450 4.7.0 slow down`).
    pub fn start(name: &str, addr: &str, domains: &[&str], access: &[(&str, &str)]) -> Receiver {
        add_addr(addr);
        let dir = test_dir(name);
        mkdir(&dir.join("queue"));
        mkdir(&dir.join("data"));
        chown_postfix(&dir.join("data"));
        let access_text: String = access.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        std::fs::write(dir.join("access"), access_text).unwrap();
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {q}\n\
             data_directory = {d}\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {prefix}\n\
             inet_interfaces = {addr}\n\
             inet_protocols = ipv4\n\
             myhostname = {host}\n\
             mydestination =\n\
             mynetworks = 127.255.255.254/32\n\
             relay_domains = {domains}\n\
             relay_transport = discard:\n\
             default_transport = discard:\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{access}, permit\n\
             smtpd_client_connection_rate_limit = 0\n\
             default_process_limit = 50\n",
            q = dir.join("queue").display(),
            d = dir.join("data").display(),
            log = dir.join("maillog").display(),
            prefix = dir.display(),
            host = hostname_for(addr),
            domains = domains.join(" "),
            access = dir.join("access").display(),
        );
        std::fs::write(dir.join("main.cf"), main).unwrap();
        let master = format!("{addr}:25 inet n - n - - smtpd\n{INTERNAL_SERVICES}");
        std::fs::write(dir.join("master.cf"), master).unwrap();
        postfix(&dir, "start");
        wait_banner(addr, 25, Duration::from_secs(30));
        Receiver { dir, addr: addr.to_string() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Deliveries accepted (discarded) per recipient domain, and per client
    /// address that handed the message over (joined by queue id).
    pub fn deliveries(&self) -> Deliveries {
        parse_receiver_log(&self.log())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.dir).arg("stop").output();
        // Keep the evidence when a test fails.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a receiver accepted.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// (recipient address, client address) per accepted recipient.
    pub accepted: Vec<(String, String)>,
}

impl Deliveries {
    pub fn to_domain(&self, domain: &str) -> usize {
        self.accepted.iter().filter(|(r, _)| r.ends_with(&format!("@{domain}"))).count()
    }
    pub fn to_domain_from(&self, domain: &str, client: &str) -> usize {
        self.accepted.iter().filter(|(r, c)| r.ends_with(&format!("@{domain}")) && c == client).count()
    }
    pub fn to_address(&self, addr: &str) -> usize {
        self.accepted.iter().filter(|(r, _)| r == addr).count()
    }
}

pub fn parse_receiver_log(log: &str) -> Deliveries {
    let mut client_of: BTreeMap<String, String> = BTreeMap::new();
    let mut d = Deliveries::default();
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("]: ") else {
            continue;
        };
        let Some((qid, rest)) = msg.split_once(": ") else {
            continue;
        };
        if let Some(c) = rest.strip_prefix("client=") {
            // client=unknown[127.0.1.2]
            let addr = c.split('[').nth(1).and_then(|s| s.split(']').next()).unwrap_or("").to_string();
            client_of.insert(qid.to_string(), addr);
        } else if line.contains("postfix/discard[") && rest.contains("status=sent") {
            let rcpt = rest.strip_prefix("to=<").and_then(|s| s.split('>').next()).unwrap_or("").to_string();
            d.accepted.push((rcpt, client_of.get(qid).cloned().unwrap_or_default()));
        }
    }
    d
}

/// Run `postfix -c DIR CMD` and insist it worked.
pub fn postfix(dir: &Path, cmd: &str) {
    let out = Command::new("postfix").arg("-c").arg(dir).arg(cmd).output().expect("running postfix");
    assert!(
        out.status.success(),
        "postfix -c {} {cmd}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ConfigMap volume as the kubelet writes it: files are symlinks through
/// `..data`, which is swapped atomically to a new timestamped directory.
pub struct ConfigSource {
    pub dir: PathBuf,
    generation: u32,
}

impl ConfigSource {
    pub fn new(dir: PathBuf) -> Self {
        mkdir(&dir);
        ConfigSource { dir, generation: 0 }
    }

    pub fn write(&mut self, files: &BTreeMap<String, String>) -> String {
        self.generation += 1;
        let data = format!("..gen_{:04}", self.generation);
        let gen_dir = self.dir.join(&data);
        mkdir(&gen_dir);
        for (name, content) in files {
            std::fs::write(gen_dir.join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for name in files.keys() {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        hash_of(files)
    }
}

pub fn hash_of(files: &BTreeMap<String, String>) -> String {
    config_hash(files.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
}

/// Settings of one sending instance's Postfix, shaped like the renderer's
/// output (agent socketmap first in transport_maps, a peer listener with
/// `content_filter=smtp:`, a `peer-relay` transport, throttle transports
/// logging under their own name).
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    pub name: String,
    pub addr: String,
    pub peers: Vec<String>,
    /// Static transport map lines (`domain transport:`).
    pub transport: Vec<(String, String)>,
    /// Extra throttle transports: (name, maxproc).
    pub throttles: Vec<(String, u32)>,
    /// Extra main.cf lines (retry schedule etc.).
    pub extra_main: String,
    /// Extra master.cf entries (e.g. a renderer's transport, verbatim).
    pub extra_master: String,
    /// Extra files installed beside main.cf (e.g. a rendered `dsn_filter`).
    pub extra_files: Vec<(String, String)>,
    pub policy: AgentPolicy,
}

impl InstanceConfig {
    pub fn new(name: &str, addr: &str) -> Self {
        InstanceConfig {
            name: name.into(),
            addr: addr.into(),
            peers: vec![],
            transport: vec![],
            throttles: vec![],
            extra_main: String::new(),
            extra_master: String::new(),
            extra_files: vec![],
            policy: AgentPolicy {
                version: POLICY_VERSION,
                pool: "test/pool".into(),
                instance: name.into(),
                instances: vec![instance(name, addr)],
                peer_port: PEER_PORT,
                backlog_warn_seconds: 4 * 3600,
                backlog_critical_seconds: 12 * 3600,
                ..Default::default()
            },
        }
    }

    /// The files the agent installs (`main.cf`, `master.cf`, `transport`, `policy.json`).
    pub fn files(&self, base: &Path) -> BTreeMap<String, String> {
        let peers_nets = if self.peers.is_empty() {
            format!("{}/32", self.addr)
        } else {
            self.peers.iter().map(|p| format!("{p}/32")).collect::<Vec<_>>().join(",")
        };
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {q}\n\
             data_directory = {d}\n\
             maillog_file = /dev/stdout\n\
             inet_interfaces = {addr}\n\
             inet_protocols = ipv4\n\
             smtp_bind_address = {addr}\n\
             myhostname = {host}\n\
             mydestination =\n\
             local_recipient_maps =\n\
             relay_domains =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_host_lookup = native\n\
             smtp_dns_support_level = disabled\n\
             smtp_tls_security_level = none\n\
             transport_maps = socketmap:unix:{sock}:transport, hash:$config_directory/transport\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             default_process_limit = 50\n\
             smtpd_client_connection_rate_limit = 0\n\
             {extra}",
            q = base.join("queue").display(),
            d = base.join("data").display(),
            addr = self.addr,
            host = hostname_for(&self.addr),
            sock = base.join("run/policy.sock").display(),
            extra = self.extra_main,
        );
        // smtpd resolves recipients too (relay checks) and would turn the
        // agent's `retry:` answer into a 450 at RCPT time, refusing mail
        // that should be queued. So smtpd uses its own trivial-rewrite
        // without the socketmap; only qmgr's resolves reach the agent.
        let mut master = format!(
            "{addr}:25 inet n - n - - smtpd\n  -o rewrite_service_name=rewrite-in\n\
             {addr}:{PEER_PORT} inet n - n - - smtpd\n  -o syslog_name=postfix/peer-in\n  -o mynetworks={peers_nets}\n  \
             -o smtpd_client_restrictions=permit_mynetworks,reject\n  -o smtpd_relay_restrictions=permit_mynetworks,reject\n  \
             -o content_filter=smtp:\n  -o rewrite_service_name=rewrite-in\n\
             {INTERNAL_SERVICES}\
             rewrite-in unix - - n - - trivial-rewrite\n  -o transport_maps=hash:$config_directory/transport\n\
             peer-relay unix - - n - - smtp\n  -o syslog_name=postfix/peer-relay\n",
            addr = self.addr
        );
        for (t, maxproc) in &self.throttles {
            master.push_str(&format!("{t} unix - - n - {maxproc} smtp\n  -o syslog_name=postfix/{t}\n"));
        }
        master.push_str(&self.extra_master);
        let transport: String = self.transport.iter().map(|(d, t)| format!("{d} {t}\n")).collect();
        let mut files = BTreeMap::new();
        files.insert("main.cf".to_string(), main);
        files.insert("master.cf".to_string(), master);
        files.insert("transport".to_string(), transport);
        files.insert("policy.json".to_string(), serde_json::to_string_pretty(&self.policy).unwrap());
        for (name, content) in &self.extra_files {
            files.insert(name.clone(), content.clone());
        }
        files
    }
}

pub fn instance(name: &str, addr: &str) -> InstancePolicy {
    InstancePolicy {
        name: name.into(),
        address: addr.into(),
        helo_name: hostname_for(addr),
        weight: 1,
        ..Default::default()
    }
}

/// A sending instance: `sendfleet agent` supervising its Postfix.
pub struct Agent {
    pub base: PathBuf,
    pub addr: String,
    pub source: ConfigSource,
    child: Option<Child>,
}

impl Agent {
    /// Start the agent for `cfg`, with `hosts` (name -> address) as the
    /// instance's /etc/hosts. Waits until /readyz answers 200.
    pub fn start(cfg: &InstanceConfig, hosts: &[(&str, &str)]) -> Agent {
        add_addr(&cfg.addr);
        let base = test_dir(&format!("inst-{}", cfg.name));
        for d in ["queue", "data", "run", "postfix", "state"] {
            mkdir(&base.join(d));
        }
        chown_postfix(&base.join("data"));
        let hosts_text: String = std::iter::once("127.0.0.1 localhost\n".to_string())
            .chain(hosts.iter().map(|(n, a)| format!("{a} {n}\n")))
            .collect();
        std::fs::write(base.join("hosts"), hosts_text).unwrap();
        std::fs::write(base.join("hash.key"), HASH_KEY).unwrap();
        let mut source = ConfigSource::new(base.join("config"));
        source.write(&cfg.files(&base));
        let child = spawn_agent(&base, &cfg.addr);
        let mut a = Agent { base, addr: cfg.addr.clone(), source, child: Some(child) };
        a.wait_ready(Duration::from_secs(60));
        wait_banner(&cfg.addr, 25, Duration::from_secs(30));
        a
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("agent exited early ({st}); stderr:\n{}\nstdout:\n{}", self.stderr(), self.stdout());
                }
            }
            if http_get(&self.addr, HTTP_PORT, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready; stderr:\n{}\nstdout:\n{}",
                self.stderr(),
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn postfix_dir(&self) -> PathBuf {
        self.base.join("postfix/current")
    }

    /// Move the agent's clock to wall time + `seconds` (its hidden
    /// `--test-clock-file`; the agent re-reads it whenever it reads the time).
    pub fn set_clock_offset(&self, seconds: i64) {
        let tmp = self.base.join(".clock.tmp");
        std::fs::write(&tmp, seconds.to_string()).unwrap();
        std::fs::rename(&tmp, self.base.join("clock")).unwrap();
    }

    pub fn status(&self) -> AgentStatus {
        let (code, body) = http_get(&self.addr, HTTP_PORT, "/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status JSON ({e}): {body}"))
    }

    pub fn status_raw(&self) -> String {
        http_get(&self.addr, HTTP_PORT, "/status").expect("GET /status").1
    }

    pub fn metrics(&self) -> String {
        let (code, body) = http_get(&self.addr, HTTP_PORT, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        body
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.base.join("agent.stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.base.join("agent.stderr")).unwrap_or_default()
    }

    /// Install a new config and wait until the agent reports it loaded.
    pub fn apply(&mut self, files: &BTreeMap<String, String>, timeout: Duration) -> String {
        let hash = self.source.write(files);
        self.wait_for(timeout, "config loaded", |s| s.config.loaded_hash.as_deref() == Some(hash.as_str()));
        hash
    }

    /// Poll /status until `pred` holds.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {}", self.status_raw());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Messages in the queue per queue name, counted from `postqueue -j` directly.
    pub fn queue_counts(&self) -> BTreeMap<String, usize> {
        let out = Command::new("postqueue").arg("-c").arg(self.postfix_dir()).arg("-j").output().unwrap();
        let mut m = BTreeMap::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            *m.entry(v["queue_name"].as_str().unwrap().to_string()).or_default() += 1;
        }
        m
    }

    pub fn queue_json(&self) -> String {
        let out = Command::new("postqueue").arg("-c").arg(self.postfix_dir()).arg("-j").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the queue is empty.
    pub fn wait_queue_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let q = self.queue_counts();
            if q.values().sum::<usize>() == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "queue not empty after {timeout:?}: {q:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `postqueue -f`: make qmgr scan every queue now.
    pub fn flush(&self) {
        let st = Command::new("postqueue").arg("-c").arg(self.postfix_dir()).arg("-f").status().unwrap();
        assert!(st.success(), "postqueue -f failed");
    }

    pub fn master_pid(&self) -> String {
        std::fs::read_to_string(self.base.join("queue/pid/master.pid")).unwrap_or_default().trim().to_string()
    }

    /// Stop the agent (SIGTERM; it stops Postfix and saves its state) and
    /// start it again on the same queue, state dir, config and clock.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn_agent(&self.base, &self.addr));
        self.wait_ready(Duration::from_secs(60));
        wait_banner(&self.addr, 25, Duration::from_secs(30));
    }

    /// SIGTERM the agent (it stops Postfix) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Belt and braces: never leave a master behind.
        let _ = Command::new("postfix").arg("-c").arg(self.postfix_dir()).arg("stop").output();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// `sendfleet agent` for the instance under `base` (its config source,
/// hosts file, state dir and test clock), in a private mount namespace with
/// the test's hosts file over /etc/hosts.
fn spawn_agent(base: &Path, addr: &str) -> Child {
    // Appended, so a restarted agent's output follows the previous one's.
    let append = |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(base.join(name)).unwrap();
    let (stdout, stderr) = (append("agent.stdout"), append("agent.stderr"));
    let bin = env!("CARGO_BIN_EXE_sendfleet");
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(base.join("hosts"))
        .arg(bin)
        .arg("agent")
        .arg("--config-source")
        .arg(base.join("config"))
        .arg("--postfix-dir")
        .arg(base.join("postfix/current"))
        .arg("--policy-socket")
        .arg(base.join("run/policy.sock"))
        .arg("--listen")
        .arg(format!("{addr}:{HTTP_PORT}"))
        .arg("--hash-key-file")
        .arg(base.join("hash.key"))
        .arg("--state-dir")
        .arg(base.join("state"))
        .arg("--queue-interval")
        .arg("1")
        .arg("--config-poll-ms")
        .arg("200")
        .arg("--test-clock-file")
        .arg(base.join("clock"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("starting sendfleet agent")
}

/// Inject `count` messages to `rcpt` through `addr:25` (smtp-source).
pub fn inject(addr: &str, from: &str, rcpt: &str, count: u32, sessions: u32) {
    let out = Command::new("smtp-source")
        .args(["-c", "-m", &count.to_string(), "-s", &sessions.to_string(), "-f", from, "-t", rcpt])
        .arg(format!("{addr}:25"))
        .output()
        .expect("running smtp-source");
    assert!(out.status.success(), "smtp-source to {rcpt}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Minimal HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((addr, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).ok()?;
    let code: u16 = status.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = String::new();
    r.read_to_string(&mut rest).ok()?;
    let body = rest.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// Wait until `f` holds, polling.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `sendfleet agent --no-supervise`: installs and validates the config and
/// answers the socketmap, without running Postfix (protocol tests, benches).
pub struct PolicyAgent {
    pub base: PathBuf,
    pub addr: String,
    pub socket: PathBuf,
    pub source: ConfigSource,
    child: Child,
}

impl PolicyAgent {
    pub fn start(cfg: &InstanceConfig) -> PolicyAgent {
        let base = test_dir(&format!("policy-{}", cfg.name));
        let files = cfg.files(&base);
        PolicyAgent::start_with_files(base, &cfg.addr, &files)
    }
}

impl Drop for PolicyAgent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

impl PolicyAgent {
    /// Like [`PolicyAgent::start`], from ready-made files (e.g. the renderer's)
    /// written under `base` (use [`test_dir`]); `addr` must be the instance's.
    pub fn start_with_files(base: PathBuf, addr: &str, files: &BTreeMap<String, String>) -> PolicyAgent {
        add_addr(addr);
        for d in ["queue", "data", "run", "postfix", "state"] {
            mkdir(&base.join(d));
        }
        std::fs::write(base.join("hash.key"), HASH_KEY).unwrap();
        let mut source = ConfigSource::new(base.join("config"));
        source.write(files);
        let socket = base.join("run/policy.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_sendfleet"))
            .arg("agent")
            .arg("--no-supervise")
            .arg("--config-source")
            .arg(base.join("config"))
            .arg("--postfix-dir")
            .arg(base.join("postfix/current"))
            .arg("--policy-socket")
            .arg(&socket)
            .arg("--listen")
            .arg(format!("{addr}:{HTTP_PORT}"))
            .arg("--hash-key-file")
            .arg(base.join("hash.key"))
            .arg("--state-dir")
            .arg(base.join("state"))
            .arg("--config-poll-ms")
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(base.join("agent.stderr")).unwrap())
            .spawn()
            .expect("starting sendfleet agent");
        let a = PolicyAgent { base, addr: addr.to_string(), socket, source, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(&a.addr, HTTP_PORT, "/readyz").is_some_and(|(c, _)| c == 200) {
                return a;
            }
            let status = http_get(&a.addr, HTTP_PORT, "/status").map(|(_, b)| b).unwrap_or_default();
            assert!(Instant::now() < deadline, "agent not ready with these files; /status: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn status(&self) -> AgentStatus {
        let (code, body) = http_get(&self.addr, HTTP_PORT, "/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status JSON ({e}): {body}"))
    }

    /// One socketmap lookup over a fresh connection.
    pub fn lookup(&self, key: &str) -> sendfleet::agent::socketmap::codec::Reply {
        use sendfleet::agent::socketmap::codec::{decode, encode_into, Decoded, Reply};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
}
