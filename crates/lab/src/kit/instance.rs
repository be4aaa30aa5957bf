//! Sending instances on real Postfix, configured by the renderer alone.
//!
//! A [`Fleet`] is a pool with its DomainPolicies, WarmupPlan and observed
//! state. For each instance it runs `render_pool` and `objects::build`, the
//! operator's own path, and takes what the instance's pod would get: the
//! data of its ConfigMap (main.cf, master.cf, maps, policy.json) and the
//! container's args and env. [`Fleet::start`] hands those files to
//! `sendfleet agent` through a directory laid out like a kubelet's ConfigMap
//! volume ([`ConfigSource`]) and runs the agent with the container's args.
//!
//! What differs from a pod, and only that:
//! - paths: [`Settings`] puts the queue, data directory and policy socket
//!   under the instance's test directory (pods each have their own
//!   filesystem; here instances share one), and the ConfigMap, Secret and
//!   image paths of the args are mapped to it; the trusted CA bundle
//!   ([`Fleet::trusted_ca`]) and the submission TLS files
//!   ([`Fleet::submission_tls`]) are written where their volumes would be, and the
//!   agent token ([`AGENT_TOKEN`], or the pool's Secret's through
//!   [`Instance::set_agent_token`]) where the token Secret's volume would be;
//! - the network: a pod on the pod network listens on `0.0.0.0` of its own
//!   namespace; here that is the instance's address in the test's namespace,
//!   and the tests' clients connect from it, so [`Fleet::new`] lists each
//!   instance address in `submission.allowedCIDRs` (a user lists the pod
//!   network);
//! - name resolution: the agent runs in a private mount namespace with the
//!   test's resolv.conf over /etc/resolv.conf ([`super::Dns`]);
//! - test speed: queue scans every second, config polls every 200 ms, and
//!   the agent's hidden test clock file (benchmarks turn all three off with
//!   [`Fleet::as_in_production`]).
//!
//! Never: write or edit a line of main.cf or master.cf (a test that needs
//! another Postfix setting changes the resources, as a user would), or leave
//! a process behind (agents die with the test process, see
//! [`crate::process`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::contract::AgentStatus;
use sendfleet_render::contract::AGENT_TOKEN_KEY;
use sendfleet_render::objects::{self, Desired, AGENT_TOKEN_MOUNT, CONFIG_MOUNT, DKIM_KEYS_MOUNT, HASH_KEY_MOUNT};
use sendfleet_render::render::{
    config_hash, render_pool, Observed, PoolInput, RenderedInstance, Settings, CLIENT_CA_FILE, SUBMISSION_CERT_FILE,
    SUBMISSION_KEY_FILE, TRUSTED_CA_FILE,
};

use super::http::{http_get, http_get_as};
use super::resolver::Dns;
use super::wait::wait_until;
use crate::pki::{write_private, ClientCert};
use crate::process::Proc;
use crate::receiver::wait_banner;

/// Key of the recipient-address hash (the pool's Secret in production).
pub const HASH_KEY: &str = "test-key-0123456789abcdef";
/// The bearer token an instance's agent requires on /status and /metrics
/// until the test sets another (the pool's agent-token Secret in production).
pub const AGENT_TOKEN: &str = "test-agent-token-0123456789abcdef0123456789abcdef";

/// Panic unless the Postfix tools the kit runs are installed, and put
/// /usr/sbin on PATH (a test environment may lack it).
pub fn require_postfix() {
    let path = std::env::var("PATH").unwrap_or_default();
    if !path.split(':').any(|p| p == "/usr/sbin") {
        std::env::set_var("PATH", format!("{path}:/usr/sbin:/sbin"));
    }
    for tool in ["postconf", "postfix", "postqueue", "postmap", "smtp-source"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} is missing: install Debian's postfix package (`make deps` does)");
    }
}

/// Add `addr`/32 to `lo` of the test's network namespace, or panic.
pub fn add_addr(addr: &str) {
    crate::receiver::add_lo_address(addr).unwrap_or_else(|e| panic!("{e}"));
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

/// Submit `count` messages to `rcpt` through `addr:port` with `smtp-source`
/// (`sessions` in parallel). `distinct`: `-N`, a distinct recipient per
/// message (qmgr caches its last resolve, so identical recipients in a row
/// reach the agent's socketmap only once).
pub fn inject(addr: &str, port: u16, from: &str, rcpt: &str, count: u32, sessions: u32, distinct: bool) {
    let mut c = Command::new("smtp-source");
    c.arg("-c");
    if distinct {
        c.arg("-N");
    }
    c.args(["-m", &count.to_string(), "-s", &sessions.to_string(), "-f", from, "-t", rcpt]);
    let out = c.arg(format!("{addr}:{port}")).output().expect("running smtp-source (Debian package postfix)");
    assert!(out.status.success(), "smtp-source to {rcpt} via {addr}:{port}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh directory the postfix user can traverse.
pub fn test_dir(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("sendfleet-kit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    mkdir(&base);
    base
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// A ConfigMap volume as the kubelet writes it: each file is a symlink
/// through `..data`, which is swapped atomically to a new directory.
pub struct ConfigSource {
    pub dir: PathBuf,
    generation: u32,
}

impl ConfigSource {
    pub fn new(dir: PathBuf) -> Self {
        mkdir(&dir);
        ConfigSource { dir, generation: 0 }
    }

    /// Publish `files` as the volume's new content; returns their hash.
    pub fn write(&mut self, files: &BTreeMap<String, String>) -> String {
        self.generation += 1;
        let data = format!("..gen_{:04}", self.generation);
        let gen_dir = self.dir.join(&data);
        mkdir(&gen_dir);
        for (name, content) in files {
            write(&gen_dir.join(name), content);
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
        config_hash(files)
    }
}

/// What one instance's pod gets, as rendered for a test directory.
#[derive(Clone, Debug)]
pub struct PodConfig {
    pub rendered: RenderedInstance,
    /// The ConfigMap's data: the files the agent installs.
    pub files: BTreeMap<String, String>,
    /// The container's args, paths mapped under the test directory.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub submission_port: u16,
}

/// A pool and everything its render reads.
#[derive(Clone)]
pub struct Fleet {
    bin: PathBuf,
    pub pool: SendingPool,
    pub policies: Vec<DomainPolicy>,
    pub plan: Option<WarmupPlan>,
    /// Other pools of the namespace (routes to a pool name them).
    pub other_pools: Vec<SendingPool>,
    pub observed: Observed,
    resolv_conf: String,
    /// The bundle the pool's `tls.trustedCA` names (the Secret's or
    /// ConfigMap's value under its key), as the kubelet would mount it.
    trusted_ca: Option<String>,
    /// What `submission.clientCertificates` names: the server Secret's
    /// certificate and key, the client CA bundle.
    submission_tls: Option<(ClientCert, String)>,
    /// The pool's DKIM Secret (`spec.dkim.secretName`): key -> PEM.
    dkim_keys: BTreeMap<String, String>,
    /// Start agents with the test clock file (see [`Instance::set_clock_offset`])
    /// and the tests' short queue-scan and config-poll intervals.
    test_timing: bool,
}

impl Fleet {
    /// `bin`: the `sendfleet` binary (`env!("CARGO_BIN_EXE_sendfleet")`);
    /// `dns`: the resolver the instances use.
    pub fn new(bin: &str, mut pool: SendingPool, dns: &Dns) -> Fleet {
        // The tests submit to an instance's address from the test's
        // namespace, so they connect *from* that address (a local
        // destination is its own source): list each as a client network,
        // as a user lists the pod network. Submission refuses every other
        // client at connect.
        for ip in &pool.spec.egress_ips {
            let host =
                if ip.address.contains(':') { format!("{}/128", ip.address) } else { format!("{}/32", ip.address) };
            if !pool.spec.submission.allowed_cidrs.contains(&host) {
                pool.spec.submission.allowed_cidrs.push(host);
            }
        }
        Fleet {
            bin: bin.into(),
            pool,
            policies: vec![],
            plan: None,
            other_pools: vec![],
            observed: Observed::default(),
            resolv_conf: dns.resolv_conf(),
            trusted_ca: None,
            submission_tls: None,
            dkim_keys: BTreeMap::new(),
            test_timing: true,
        }
    }

    /// Agents run on the rendered arguments alone, as in production: the
    /// wall clock (no `--test-clock-file`; [`Instance::set_clock_offset`]
    /// refuses), the rendered queue-scan and config-poll intervals (not the
    /// tests' 1 s and 200 ms). For benchmarks: the test clock re-reads its
    /// file every time the agent reads the time (every socketmap lookup),
    /// and a scan a second of a large queue competes with what is measured.
    pub fn as_in_production(mut self) -> Fleet {
        self.test_timing = false;
        self
    }

    pub fn policy(mut self, p: DomainPolicy) -> Fleet {
        self.policies.push(p);
        self
    }

    /// Another pool of the namespace: a pool this one routes to
    /// (`route.pool`, `spamRoute`), or one that hands mail to this one.
    /// Start that pool's instances from a fleet of its own that lists this
    /// pool in turn, so both render from the same resources.
    pub fn other_pool(mut self, p: SendingPool) -> Fleet {
        self.other_pools.push(p);
        self
    }

    pub fn plan(mut self, p: WarmupPlan) -> Fleet {
        self.plan = Some(p);
        self
    }

    /// The PEM bundle in the Secret or ConfigMap that the pool's
    /// `spec.tls.trustedCA` names: each instance finds it where its pod's
    /// volume would put it (`Settings::trusted_ca_directory`).
    pub fn trusted_ca(mut self, pem: &str) -> Fleet {
        self.trusted_ca = Some(pem.to_string());
        self
    }

    /// The objects `spec.submission.clientCertificates` names: the server
    /// certificate Secret (`server`) and the client CA bundle
    /// (`client_ca_pem`), where the pod's volumes would put them
    /// (`Settings::submission_tls_directory`, `client_ca_directory`).
    pub fn submission_tls(mut self, server: ClientCert, client_ca_pem: &str) -> Fleet {
        self.submission_tls = Some((server, client_ca_pem.to_string()));
        self
    }

    /// One key of the pool's DKIM Secret (`private.key`, `<selector>.key`),
    /// where the pod's volume would put it ([`Instance::set_dkim_key`]
    /// changes it while the instance runs).
    pub fn dkim_key(mut self, key: &str, pem: &str) -> Fleet {
        self.dkim_keys.insert(key.to_string(), pem.to_string());
        self
    }

    pub fn observed(mut self, o: Observed) -> Fleet {
        self.observed = o;
        self
    }

    fn settings(base: &Path) -> Settings {
        Settings {
            queue_directory: base.join("queue").display().to_string(),
            data_directory: base.join("data").display().to_string(),
            policy_socket: base.join("run/policy.sock").display().to_string(),
            trusted_ca_directory: base.join("trusted-ca").display().to_string(),
            submission_tls_directory: base.join("submission-tls").display().to_string(),
            client_ca_directory: base.join("client-ca").display().to_string(),
            dkim_directory: base.join("run/dkim").display().to_string(),
            ..Settings::default()
        }
    }

    /// Render the pool for instance `name` living under `base`: its
    /// ConfigMap data and container args, as the operator would create them.
    pub fn render(&self, name: &str, base: &Path) -> PodConfig {
        let settings = Self::settings(base);
        let mut pools = vec![self.pool.clone()];
        pools.extend(self.other_pools.iter().cloned());
        let input = PoolInput {
            pool: &self.pool,
            policies: &self.policies,
            plan: self.plan.as_ref(),
            pools: &pools,
            observed: &self.observed,
        };
        let rp = render_pool(input, &settings).unwrap_or_else(|e| panic!("render_pool: {e}"));
        assert!(rp.invalid_policies.is_empty(), "policies refused by the renderer: {:?}", rp.invalid_policies);
        let rendered =
            rp.instances.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no instance {name}")).clone();
        let object = objects::instance_object_name(&rp.name, name);
        let desired = objects::build(&self.pool, &rp, &settings);
        let files: BTreeMap<String, String> = desired
            .iter()
            .find_map(|d| match d {
                Desired::ConfigMap(cm) if d.name() == object => cm.data.clone(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ConfigMap {object} rendered"))
            .into_iter()
            .collect();
        let container = desired
            .iter()
            .find_map(|d| match d {
                Desired::StatefulSet(s) if d.name() == object => {
                    s.spec.template.spec.as_ref()?.containers.first().cloned()
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no StatefulSet {object} rendered"));
        let map_path = |a: &str| {
            let a = a.replace(CONFIG_MOUNT, &base.join("config").display().to_string());
            let a = a.replace(HASH_KEY_MOUNT, &base.join("hash-key").display().to_string());
            let a = a.replace(AGENT_TOKEN_MOUNT, &base.join("agent-token").display().to_string());
            let a = a.replace(DKIM_KEYS_MOUNT, &base.join("dkim-keys").display().to_string());
            // The pod network's 0.0.0.0 is the pod's own address.
            a.replace("=0.0.0.0:", &format!("={}:", rendered.address))
        };
        let args = container.args.unwrap_or_default().iter().map(|a| map_path(a)).collect();
        let env = container
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                // POD_NAME comes from the downward API.
                let v = e.value.unwrap_or_else(|| format!("{object}-0"));
                (e.name, v)
            })
            .collect();
        let submission_port = self.pool.spec.submission.port;
        assert_eq!(config_hash(&files), rendered.config_hash, "ConfigMap data and render disagree");
        PodConfig { rendered, files, args, env, submission_port }
    }

    /// Start instance `name` (Postfix supervised by the agent); waits until
    /// /readyz answers and Postfix greets on the submission port.
    pub fn start(&self, name: &str) -> Instance {
        Instance::start(self, name, true)
    }

    /// Start instance `name`'s agent with `--no-supervise`: it installs and
    /// validates the config and answers the socketmap, without Postfix.
    pub fn start_unsupervised(&self, name: &str) -> Instance {
        Instance::start(self, name, false)
    }

    /// Start instance `name`'s agent with `--no-supervise`, its log
    /// pipeline reading its stdin as Postfix's log stream (as that mode
    /// does), a pipe [`Instance::log_input`] hands out. For measuring what
    /// the agent keeps from a log no test could make Postfix write in time
    /// (a million deferrals). The log's end ends the pipeline, and the
    /// agent then reports itself not live: keep the pipe open while asking.
    pub fn start_reading_log(&self, name: &str) -> Instance {
        let mut inst = Instance::prepare(self, name, false);
        inst.log_pipe = true;
        inst.spawn();
        inst
    }
}

/// One sending instance: `sendfleet agent` on its rendered config.
pub struct Instance {
    pub name: String,
    pub addr: String,
    pub base: PathBuf,
    pub submission_port: u16,
    pub agent_port: u16,
    pub peer_port: u16,
    pub source: ConfigSource,
    /// The render the instance was started with (or last given).
    pub pod: PodConfig,
    bin: PathBuf,
    supervise: bool,
    test_timing: bool,
    proc: Option<Proc>,
    /// The agent's stdin is a pipe for a mail log ([`Fleet::start_reading_log`]).
    log_pipe: bool,
}

impl Instance {
    fn start(fleet: &Fleet, name: &str, supervise: bool) -> Instance {
        let mut inst = Instance::prepare(fleet, name, supervise);
        inst.spawn();
        inst
    }

    /// The instance's files, rendered, with the agent not yet started.
    fn prepare(fleet: &Fleet, name: &str, supervise: bool) -> Instance {
        let base = test_dir(&format!("inst-{name}"));
        let pod = fleet.render(name, &base);
        let addr = pod.rendered.address.clone();
        add_addr(&addr);
        for d in ["queue", "data", "run", "postfix", "hash-key", "agent-token", "dkim-keys"] {
            mkdir(&base.join(d));
        }
        let st = Command::new("chown").arg("postfix").arg(base.join("data")).status().expect("chown");
        assert!(st.success(), "chown postfix {}", base.join("data").display());
        write(&base.join("hash-key/key"), HASH_KEY);
        write(&base.join("agent-token").join(AGENT_TOKEN_KEY), &format!("{AGENT_TOKEN}\n"));
        if let (Some(_), Some(pem)) = (&fleet.pool.spec.tls.trusted_ca, &fleet.trusted_ca) {
            mkdir(&base.join("trusted-ca"));
            write(&base.join("trusted-ca").join(TRUSTED_CA_FILE), pem);
        }
        if let (Some(_), Some((server, ca))) = (&fleet.pool.spec.submission.client_certificates, &fleet.submission_tls)
        {
            mkdir(&base.join("submission-tls"));
            write(&base.join("submission-tls").join(SUBMISSION_CERT_FILE), &server.cert_pem);
            write_private(&base.join("submission-tls").join(SUBMISSION_KEY_FILE), server.key_pem.as_bytes())
                .expect("writing the submission key");
            mkdir(&base.join("client-ca"));
            write(&base.join("client-ca").join(CLIENT_CA_FILE), ca);
        }
        for (key, pem) in &fleet.dkim_keys {
            write_private(&base.join("dkim-keys").join(key), pem.as_bytes()).expect("writing a DKIM key");
        }
        write(&base.join("resolv.conf"), &fleet.resolv_conf);
        let mut source = ConfigSource::new(base.join("config"));
        source.write(&pod.files);
        let settings = Fleet::settings(&base);
        Instance {
            name: name.into(),
            addr,
            base,
            submission_port: pod.submission_port,
            agent_port: settings.agent_port,
            peer_port: settings.peer_port,
            source,
            pod,
            bin: fleet.bin.clone(),
            supervise,
            test_timing: fleet.test_timing,
            proc: None,
            log_pipe: false,
        }
    }

    /// Run the agent with the pod's args (appending to its logs, so a
    /// restarted agent's output follows the previous one's) and wait ready.
    fn spawn(&mut self) {
        let append = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(self.base.join(name)).expect("agent log")
        };
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
            .arg(self.base.join("resolv.conf"))
            .arg(&self.bin)
            .arg("agent")
            .args(&self.pod.args)
            .arg(format!("--postfix-dir={}", self.postfix_dir().display()))
            .args(if self.test_timing {
                vec![
                    "--queue-interval=1".to_string(),
                    "--config-poll-ms=200".to_string(),
                    format!("--test-clock-file={}", self.base.join("clock").display()),
                ]
            } else {
                vec![]
            })
            .envs(self.pod.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(if self.log_pipe { Stdio::piped() } else { Stdio::null() })
            .stdout(append("agent.stdout"))
            .stderr(append("agent.stderr"));
        if !self.supervise {
            c.arg("--no-supervise");
        }
        let proc = Proc::start(&format!("agent {}", self.name), c, &self.base.join("agent.stderr"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.proc = Some(proc);
        self.wait_ready(Duration::from_secs(60));
        if self.supervise {
            wait_banner(&self.addr, self.submission_port, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let (addr, port) = (self.addr.clone(), self.agent_port);
        let mut proc = self.proc.take();
        let ready = crate::process::poll("agent /readyz", timeout, Duration::from_millis(100), || {
            if let Some(p) = proc.as_mut() {
                p.check_running()?;
            }
            Ok(http_get(&addr, port, "/readyz").is_ok_and(|(c, _)| c == 200).then_some(()))
        });
        self.proc = proc;
        if let Err(e) = ready {
            panic!("{e}\n/status: {}\nstdout:\n{}", self.status_raw(), self.stdout());
        }
    }

    /// The write end of the agent's log pipe ([`Fleet::start_reading_log`]).
    pub fn log_input(&mut self) -> std::process::ChildStdin {
        self.proc.as_mut().and_then(|p| p.child.stdin.take()).expect("an agent started with start_reading_log")
    }

    /// The agent's resident memory now and at its peak (`VmRSS`, `VmHWM`
    /// of /proc/<pid>/status), in KiB.
    pub fn agent_memory_kib(&self) -> (u64, u64) {
        let pid = self.proc.as_ref().expect("the agent runs").child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn postfix_dir(&self) -> PathBuf {
        self.base.join("postfix/current")
    }

    /// The agent's state directory (on the queue volume, as in the pod).
    pub fn state_dir(&self) -> PathBuf {
        self.base.join("queue/sendfleet")
    }

    pub fn policy_socket(&self) -> PathBuf {
        self.base.join("run/policy.sock")
    }

    /// Move the agent's clock to wall time + `seconds` (re-read whenever
    /// the agent reads the time).
    pub fn set_clock_offset(&self, seconds: i64) {
        assert!(self.test_timing, "instance {} runs with the production clock (Fleet::as_in_production)", self.name);
        let tmp = self.base.join(".clock.tmp");
        write(&tmp, &seconds.to_string());
        std::fs::rename(&tmp, self.base.join("clock")).unwrap();
    }

    /// The token file the agent reads (`--auth-token-file`, mapped).
    pub fn agent_token_file(&self) -> PathBuf {
        self.base.join("agent-token").join(AGENT_TOKEN_KEY)
    }

    /// The bearer token the agent requires now.
    /// Set (`Some`) or remove one key of the DKIM Secret's volume, as the
    /// kubelet updates a mounted Secret.
    pub fn set_dkim_key(&self, key: &str, pem: Option<&str>) {
        let path = self.base.join("dkim-keys").join(key);
        match pem {
            Some(pem) => {
                let tmp = self.base.join("dkim-keys").join(format!(".{key}.tmp"));
                write_private(&tmp, pem.as_bytes()).expect("writing a DKIM key");
                std::fs::rename(&tmp, &path).expect("replacing a DKIM key");
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    pub fn agent_token(&self) -> String {
        std::fs::read_to_string(self.agent_token_file()).unwrap_or_default().trim_end().to_string()
    }

    /// Replace the token, as the kubelet updates a mounted Secret (the
    /// agent re-reads the file on every request).
    pub fn set_agent_token(&self, token: &str) {
        let tmp = self.base.join("agent-token/.token.tmp");
        write(&tmp, token);
        std::fs::rename(&tmp, self.agent_token_file()).unwrap();
    }

    /// `GET path` with the agent's token: (status code, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get_as(&self.addr, self.agent_port, path, Some(&self.agent_token()))
    }

    pub fn status_raw(&self) -> String {
        self.get("/status").map(|(_, b)| b).unwrap_or_else(|e| format!("({e})"))
    }

    pub fn status(&self) -> AgentStatus {
        let (code, body) = self.get("/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status JSON ({e}): {body}"))
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        body
    }

    /// The agent's stdout: Postfix's mail log, redacted.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.base.join("agent.stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.base.join("agent.stderr")).unwrap_or_default()
    }

    /// Poll /status until `pred` holds.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
        let caller = std::panic::Location::caller();
        crate::process::poll(what, timeout, super::wait::EVERY, || {
            let s = self.status();
            Ok(pred(&s).then_some(s))
        })
        .unwrap_or_else(|e| panic!("{caller}: {e}; status: {}", self.status_raw()))
    }

    /// Publish `files` through the config source and wait until the agent
    /// reports them loaded; returns their hash.
    pub fn apply(&mut self, files: &BTreeMap<String, String>, timeout: Duration) -> String {
        let hash = self.source.write(files);
        self.wait_for(timeout, "config loaded", |s| s.config.loaded_hash.as_deref() == Some(hash.as_str()));
        hash
    }

    /// Re-render from `fleet` (changed resources) and apply, as the
    /// operator's ConfigMap update would.
    pub fn apply_render(&mut self, fleet: &Fleet, timeout: Duration) -> String {
        self.pod = fleet.render(&self.name, &self.base);
        let files = self.pod.files.clone();
        self.apply(&files, timeout)
    }

    /// Submit `count` messages to `rcpt` on this instance's submission port.
    pub fn inject(&self, from: &str, rcpt: &str, count: u32, sessions: u32) {
        inject(&self.addr, self.submission_port, from, rcpt, count, sessions, false);
    }

    /// Like [`Instance::inject`], a distinct recipient per message (`-N`).
    pub fn inject_distinct(&self, from: &str, rcpt: &str, count: u32, sessions: u32) {
        inject(&self.addr, self.submission_port, from, rcpt, count, sessions, true);
    }

    pub fn queue_json(&self) -> String {
        let out = Command::new("postqueue").arg("-c").arg(self.postfix_dir()).arg("-j").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Messages per queue name, from `postqueue -j` directly.
    pub fn queue_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in self.queue_json().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            *m.entry(v["queue_name"].as_str().unwrap().to_string()).or_default() += 1;
        }
        m
    }

    pub fn wait_queue_empty(&self, timeout: Duration) {
        wait_until("the queue to empty", timeout, || self.queue_counts().values().sum::<usize>() == 0);
    }

    /// `postqueue -f`: make qmgr scan every queue now.
    pub fn flush(&self) {
        let st = Command::new("postqueue").arg("-c").arg(self.postfix_dir()).arg("-f").status().unwrap();
        assert!(st.success(), "postqueue -f failed");
    }

    pub fn master_pid(&self) -> String {
        std::fs::read_to_string(self.base.join("queue/pid/master.pid")).unwrap_or_default().trim().to_string()
    }

    /// SIGTERM the agent (it stops Postfix and saves its state) and start it
    /// again on the same queue, state, config and clock.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Like [`Instance::restart`], running `between` while the agent is
    /// down (e.g. to damage a state file as a crash or a full disk would).
    pub fn restart_after(&mut self, between: impl FnOnce(&Instance)) {
        self.stop();
        between(self);
        self.spawn();
    }

    /// SIGTERM the agent (it stops Postfix) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(40));
        }
        if self.supervise {
            // Never leave a master behind, even if the agent was killed.
            let _ = Command::new("postfix").arg("-c").arg(self.postfix_dir()).arg("stop").output();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
        // Keep the evidence when a test fails.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
