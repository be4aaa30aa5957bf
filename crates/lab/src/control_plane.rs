//! A real Kubernetes control plane on loopback: etcd + kube-apiserver (RBAC
//! on, service-account tokens signed by a key of ours), optionally
//! kube-controller-manager, with an admin kubeconfig and helpers to mint
//! further identities, create per-test namespaces and wait for things.
//! When a test asks for a node, the control plane owns it (`node`) and
//! stops it before itself.
//!
//! Everything binds 127.0.0.1 only; test binaries run in their own network
//! namespace (hack/netns-run) and the demo runs the lab inside the
//! `sendfleet-lab` namespace, so none of it is reachable from outside.
//! Never: bind a non-loopback address, or talk to a cluster the lab did not
//! start (kubectl always gets an explicit `--kubeconfig`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::kubectl::{run, write_kubeconfig, Credentials, Kubectl};
use crate::node::{require_lab_netns, Cluster, Node, NodeInfo, SERVICE_CIDR};
use crate::pki::{write_private, Pki};
use crate::process::{self, poll, Proc};
use crate::LabError;

/// How long the API server may take to answer /readyz after a (re)start. Two
/// shared cores under a parallel `cargo build` make 10 s starts common.
pub const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Issuer of service-account tokens (the in-cluster default).
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    dir: Option<PathBuf>,
    controller_manager: bool,
    extra_sans: Vec<String>,
    apiserver_args: Vec<String>,
    kcm_controllers: Option<String>,
}

impl Options {
    /// Keep state (etcd data, logs, kubeconfig) in `dir` instead of a temp
    /// directory removed at exit.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// Also start kube-controller-manager (garbage collector, namespace and
    /// service-account controllers, ...).
    pub fn controller_manager(mut self, on: bool) -> Self {
        self.controller_manager = on;
        self
    }
    /// `--controllers` for kube-controller-manager (default `*`).
    pub fn kcm_controllers(mut self, list: impl Into<String>) -> Self {
        self.kcm_controllers = Some(list.into());
        self
    }
    /// Extra IPs/DNS names on the API server's serving certificate.
    pub fn extra_san(mut self, san: impl Into<String>) -> Self {
        self.extra_sans.push(san.into());
        self
    }
    /// Extra kube-apiserver flag (`--name=value`), appended last so it wins.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }
    /// Start it.
    pub fn start(self) -> Result<ControlPlane, LabError> {
        ControlPlane::start_with(self)
    }
}

/// A running etcd + kube-apiserver (+ controller manager).
pub struct ControlPlane {
    dir: PathBuf,
    bins: &'static Binaries,
    pki: Pki,
    server: String,
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    admin_token: String,
    etcd: Mutex<Proc>,
    apiserver: Mutex<Proc>,
    apiserver_args: Vec<String>,
    kcm: Mutex<Option<Proc>>,
    kcm_controllers: String,
    /// The lab node, once started: stopped before everything else.
    node: Mutex<Option<Node>>,
    counter: AtomicU32,
}

impl ControlPlane {
    /// The control plane shared by every test of this test binary: started
    /// on first use, killed when the process exits. Panics (with the logs'
    /// tails) if it cannot start, so a test never silently skips.
    pub fn shared() -> &'static ControlPlane {
        match Self::try_shared() {
            Ok(cp) => cp,
            Err(e) => panic!("the lab control plane did not start: {e}"),
        }
    }

    /// [`ControlPlane::shared`] without the panic.
    pub fn try_shared() -> Result<&'static ControlPlane, LabError> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| ControlPlane::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| LabError::Shared(e.clone()))
    }

    /// Start etcd and kube-apiserver in a fresh temp directory.
    pub fn start() -> Result<ControlPlane, LabError> {
        Self::builder().start()
    }

    /// Options for a non-default start.
    pub fn builder() -> Options {
        Options::default()
    }

    fn start_with(opts: Options) -> Result<ControlPlane, LabError> {
        let t0 = Instant::now();
        let bins = Binaries::get()?;
        let dir = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(LabError::io(d))?;
                d.canonicalize().map_err(LabError::io(d))?
            }
            None => process::temp_dir()?,
        };
        let (etcd_port, peer_port, api_port) = (process::free_port()?, process::free_port()?, process::free_port()?);
        let mut sans: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec();
        sans.extend(opts.extra_sans.iter().cloned());
        let pki = Pki::create(&dir.join("pki"), &sans)?;

        let admin_token = random_hex(24)?;
        let tokens = dir.join("tokens.csv");
        write_private(&tokens, format!("{admin_token},lab-admin,lab-admin,\"system:masters\"\n").as_bytes())?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_dir = dir.join("etcd");
        std::fs::create_dir_all(&etcd_dir).map_err(LabError::io(&etcd_dir))?;
        std::fs::set_permissions(&etcd_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(LabError::io(&etcd_dir))?;
        let etcd_args = vec![
            "--name=lab".to_string(),
            format!("--data-dir={}", etcd_dir.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=lab={peer_url}"),
            // Test data is thrown away: fsync only costs time on 2 cores.
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut etcd = Proc::spawn("etcd", &bins.etcd, &etcd_args, &dir.join("etcd.log"), &[])?;
        poll("etcd /health", Duration::from_secs(30), Duration::from_millis(100), || {
            etcd.check_running()?;
            Ok(etcd_healthy(etcd_port).then_some(()))
        })?;

        let server = format!("https://127.0.0.1:{api_port}");
        // Inside a lab network namespace (only lo) the API server listens on
        // all its addresses, so pods on the node reach it at the node IP.
        // Anywhere else, loopback only.
        let bind = if require_lab_netns().is_ok() { "0.0.0.0" } else { "127.0.0.1" };
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={bind}"),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-issuer={SA_ISSUER}"),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!("--service-account-signing-key-file={}", pki.sa_key.display()),
            format!("--token-auth-file={}", tokens.display()),
            // Node: kubelets (group system:nodes) get exactly what their
            // pods need, as in a real cluster; everyone else goes by RBAC.
            "--authorization-mode=Node,RBAC".to_string(),
            "--enable-admission-plugins=NodeRestriction".to_string(),
            // `kubectl logs/exec` reach a kubelet at its node IP over TLS
            // verified against the lab CA.
            format!("--kubelet-client-certificate={}", pki.kubelet_client_cert.display()),
            format!("--kubelet-client-key={}", pki.kubelet_client_key.display()),
            format!("--kubelet-certificate-authority={}", pki.ca_cert.display()),
            "--kubelet-preferred-address-types=InternalIP".to_string(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // The `kubernetes` Service's endpoints would point at 127.0.0.1,
            // which endpoint validation refuses; nothing in the lab needs it.
            "--endpoint-reconciler-type=none".to_string(),
            "--allow-privileged=true".to_string(),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            "--profiling=false".to_string(),
            "--v=1".to_string(),
        ];
        apiserver_args.extend(opts.apiserver_args.iter().cloned());

        let admin_kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            pki.ca_pem(),
            &Credentials::Token(admin_token.clone()),
            "lab-admin",
        )?;

        let apiserver =
            Proc::spawn("kube-apiserver", &bins.kube_apiserver, &apiserver_args, &dir.join("kube-apiserver.log"), &[])?;
        let cp = ControlPlane {
            dir,
            bins,
            pki,
            server,
            etcd_url,
            admin_kubeconfig,
            admin_token,
            etcd: Mutex::new(etcd),
            apiserver: Mutex::new(apiserver),
            apiserver_args,
            kcm: Mutex::new(None),
            kcm_controllers: opts.kcm_controllers.unwrap_or_else(|| "*".to_string()),
            node: Mutex::new(None),
            counter: AtomicU32::new(0),
        };
        cp.wait_ready()?;
        if opts.controller_manager {
            cp.ensure_controller_manager()?;
        }
        eprintln!(
            "sendfleet-lab: control plane ready at {} in {:.1} s (state in {})",
            cp.server,
            t0.elapsed().as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }
    /// etcd's client URL.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }
    /// Admin kubeconfig (group system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }
    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
    /// The state directory (logs: `<name>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Paths of all upstream binaries.
    pub fn binaries(&self) -> &'static Binaries {
        self.bins
    }
    /// The built kubectl.
    pub fn kubectl_path(&self) -> &Path {
        &self.bins.kubectl
    }
    /// The built helm.
    pub fn helm_path(&self) -> &Path {
        &self.bins.helm
    }
    /// The lab CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }
    /// The lab PKI (to sign more certificates, e.g. for a kubelet).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// kubectl as admin.
    pub fn admin(&self) -> Kubectl<'_> {
        Kubectl::new(&self.bins.kubectl, &self.admin_kubeconfig)
    }

    /// `kubectl --kubeconfig <admin>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        self.admin().command()
    }

    /// `helm --kubeconfig <admin>`, with helm's caches inside the lab dir.
    pub fn helm(&self) -> Command {
        let mut c = Command::new(&self.bins.helm);
        let home = self.dir.join("helm");
        c.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        c
    }

    /// Run kubectl as admin; stdout on success, the command and its stderr
    /// on failure.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String, LabError> {
        self.admin().run(args)
    }

    /// Run kubectl as admin with `stdin` piped in (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String, LabError> {
        self.admin().run_stdin(args, stdin)
    }

    /// `kubectl apply --server-side -f -` of `yaml` as admin.
    pub fn apply(&self, yaml: &str) -> Result<String, LabError> {
        self.admin().apply(yaml)
    }

    /// Wait until /readyz answers `ok` (fails at once if the API server died).
    pub fn wait_ready(&self) -> Result<(), LabError> {
        poll("kube-apiserver /readyz", APISERVER_READY_TIMEOUT, Duration::from_millis(250), || {
            self.apiserver_proc().check_running()?;
            let mut c = self.kubectl();
            c.args(["get", "--raw", "/readyz", "--request-timeout=5s"]);
            Ok(run(c, None).ok().filter(|s| s.trim() == "ok").map(|_| ()))
        })
        .map_err(|e| self.with_log(e, "kube-apiserver.log"))
    }

    /// Wait until CRD `name` (e.g. `sendingpools.sendfleet.io`) is Established.
    pub fn wait_crd_established(&self, name: &str) -> Result<(), LabError> {
        poll(&format!("CRD {name} Established"), Duration::from_secs(60), Duration::from_millis(200), || {
            let out = self.kubectl_run(&[
                "get",
                "crd",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])?;
            Ok((out.trim() == "True").then_some(()))
        })
    }

    /// Create a namespace unique in this control plane, named after `prefix`
    /// (usually the test's name). Deleted (without waiting) on drop, unless
    /// the test is panicking: then it stays for the post-mortem.
    pub fn namespace(&self, prefix: &str) -> Result<Namespace<'_>, LabError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut base: String =
            prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        base.truncate(40);
        let base = base.trim_matches('-');
        let base = if base.is_empty() { "test" } else { base };
        let name = format!("{base}-{n}-{}", &random_hex(2)?);
        self.kubectl_run(&["create", "namespace", &name])?;
        Ok(Namespace { cp: self, name })
    }

    /// A kubeconfig authenticating as ServiceAccount `ns/name` with a real
    /// token from the TokenRequest API (`kubectl create token`). Creates the
    /// ServiceAccount if it does not exist. It has only the permissions RBAC
    /// gives that ServiceAccount.
    pub fn kubeconfig_for_service_account(&self, ns: &str, name: &str) -> Result<PathBuf, LabError> {
        match self.kubectl_run(&["create", "serviceaccount", name, "-n", ns]) {
            Ok(_) => {}
            Err(LabError::Command { ref stderr, .. })
                if stderr.contains("AlreadyExists") || stderr.contains("already exists") => {}
            Err(e) => return Err(e),
        }
        let token = self.kubectl_run(&["create", "token", name, "-n", ns, "--duration=24h"])?;
        let path = self.dir.join("kubeconfigs").join(format!("sa-{ns}-{name}"));
        write_kubeconfig(
            &path,
            &self.server,
            self.ca_pem(),
            &Credentials::Token(token.trim().to_string()),
            &format!("system:serviceaccount:{ns}:{name}"),
        )?;
        Ok(path)
    }

    /// A kubeconfig authenticating as `user` (optionally in `group`) with a
    /// client certificate signed by the lab CA.
    pub fn kubeconfig_for_user(&self, user: &str, group: Option<&str>) -> Result<PathBuf, LabError> {
        let cert = self.pki.client_cert(user, group)?;
        let safe: String = user.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let path = self.dir.join("kubeconfigs").join(format!("user-{safe}"));
        write_kubeconfig(
            &path,
            &self.server,
            self.ca_pem(),
            &Credentials::Cert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
            user,
        )?;
        Ok(path)
    }

    /// Stop the API server (SIGTERM) and start it again with the same flags,
    /// port and etcd; returns once /readyz is ok again. Returns how long the
    /// server was unavailable.
    pub fn restart_apiserver(&self) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        {
            let mut api = self.apiserver_proc();
            api.stop(Duration::from_secs(20));
            *api = Proc::spawn(
                "kube-apiserver",
                &self.bins.kube_apiserver,
                &self.apiserver_args,
                &self.dir.join("kube-apiserver.log"),
                &[],
            )?;
        }
        self.wait_ready()?;
        Ok(t0.elapsed())
    }

    /// The running API server's process id (changes on restart).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver_proc().child.id()
    }

    /// Start kube-controller-manager if it is not running yet (idempotent).
    /// Waits until its service-account controller made `default/default`, a
    /// sign that its controllers run.
    pub fn ensure_controller_manager(&self) -> Result<(), LabError> {
        let mut kcm = self.kcm.lock().map_err(|_| LabError::Poisoned)?;
        if let Some(p) = kcm.as_mut() {
            if p.check_running().is_ok() {
                return Ok(());
            }
        }
        let args = vec![
            format!("--kubeconfig={}", self.admin_kubeconfig.display()),
            format!("--authentication-kubeconfig={}", self.admin_kubeconfig.display()),
            format!("--authorization-kubeconfig={}", self.admin_kubeconfig.display()),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", process::free_port()?),
            format!("--cert-dir={}", self.dir.join("kcm-certs").display()),
            "--leader-elect=false".to_string(),
            format!("--controllers={}", self.kcm_controllers),
            format!("--service-account-private-key-file={}", self.pki.sa_key.display()),
            format!("--root-ca-file={}", self.pki.ca_cert.display()),
            format!("--cluster-signing-cert-file={}", self.pki.ca_cert.display()),
            format!("--cluster-signing-key-file={}", self.pki.ca_key.display()),
            "--use-service-account-credentials=false".to_string(),
            "--profiling=false".to_string(),
            "--v=1".to_string(),
        ];
        let mut p = Proc::spawn(
            "kube-controller-manager",
            &self.bins.kube_controller_manager,
            &args,
            &self.dir.join("kube-controller-manager.log"),
            &[],
        )?;
        let ready = poll(
            "kube-controller-manager (ServiceAccount default/default)",
            Duration::from_secs(90),
            Duration::from_millis(300),
            || {
                p.check_running()?;
                Ok(self.kubectl_run(&["get", "serviceaccount", "default", "-n", "default"]).ok().map(|_| ()))
            },
        );
        *kcm = Some(p);
        ready.map_err(|e| self.with_log(e, "kube-controller-manager.log"))
    }

    /// Whether kube-controller-manager is running.
    pub fn has_controller_manager(&self) -> bool {
        self.kcm.lock().map(|mut k| k.as_mut().is_some_and(|p| p.check_running().is_ok())).unwrap_or(false)
    }

    /// Stop everything (node, controller manager, API server, etcd), in
    /// that order.
    pub fn stop(&self) {
        self.stop_node();
        if let Ok(mut k) = self.kcm.lock() {
            if let Some(p) = k.as_mut() {
                p.stop(Duration::from_secs(10));
            }
            *k = None;
        }
        self.apiserver_proc().stop(Duration::from_secs(20));
        if let Ok(mut e) = self.etcd.lock() {
            e.stop(Duration::from_secs(10));
        }
    }

    /// `export NAME=value` lines describing this control plane (DIR/env).
    pub fn env_lines(&self) -> String {
        let b = self.bins;
        [
            ("KUBECONFIG", self.admin_kubeconfig.display().to_string()),
            ("SENDFLEET_LAB_SERVER", self.server.clone()),
            // For hostNetwork pods: KUBERNETES_SERVICE_HOST=127.0.0.1 and
            // this port reach the API server (no kube-proxy for 10.96.0.1).
            ("SENDFLEET_LAB_APISERVER_PORT", self.server.rsplit(':').next().unwrap_or_default().to_string()),
            ("SENDFLEET_LAB_DIR", self.dir.display().to_string()),
            ("KUBECTL", b.kubectl.display().to_string()),
            ("HELM", b.helm.display().to_string()),
            ("KUBE_SCHEDULER", b.kube_scheduler.display().to_string()),
            ("KUBELET", b.kubelet.display().to_string()),
        ]
        .into_iter()
        .chain(self.node_info().map(|n| ("CONTAINERD_ADDRESS", n.containerd_socket.display().to_string())))
        .chain(self.node_info().map(|n| ("SENDFLEET_LAB_NODE_IP", n.ip)))
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect()
    }

    /// Start the lab node (kube-scheduler; kubelet + containerd + runc in
    /// their own pid/mount namespaces) if it is not running yet, with
    /// kube-controller-manager and `pvs` local PersistentVolumes of
    /// StorageClass `lab-local`. Idempotent; only inside a lab network
    /// namespace. Waits until the node is Ready.
    pub fn ensure_node(&self, pvs: usize) -> Result<NodeInfo, LabError> {
        self.ensure_controller_manager()?;
        let mut node = self.node.lock().map_err(|_| LabError::Poisoned)?;
        if let Some(n) = node.as_mut() {
            if n.is_running() {
                if pvs > n.pvs() {
                    n.add_local_volumes(self.admin(), pvs)?;
                }
                return Ok(n.info().clone());
            }
            n.stop();
        }
        let n = Node::start(&self.cluster(), pvs)?;
        let info = n.info().clone();
        *node = Some(n);
        Ok(info)
    }

    /// The node, if started.
    pub fn node_info(&self) -> Option<NodeInfo> {
        self.node.lock().ok().and_then(|n| n.as_ref().map(|n| n.info().clone()))
    }

    /// `ctr --address <lab containerd> -n k8s.io` (fails if no node).
    pub fn ctr(&self) -> Result<Command, LabError> {
        let info = self.node_info().ok_or_else(|| LabError::Usage("no lab node: call ensure_node first".into()))?;
        Ok(info.ctr())
    }

    /// Import an image archive (docker-archive or OCI layout tar) into the
    /// node's containerd, so pods can use it with `imagePullPolicy: Never`.
    /// `base_name` names OCI-layout images whose index only carries a tag.
    pub fn import_image(&self, archive: &Path, base_name: Option<&str>) -> Result<String, LabError> {
        let mut c = self.ctr()?;
        c.args(["images", "import"]);
        if let Some(b) = base_name {
            c.args(["--base-name", b]);
        }
        c.arg(archive);
        run(c, None)
    }

    fn stop_node(&self) {
        if let Ok(mut n) = self.node.lock() {
            if let Some(node) = n.as_mut() {
                node.stop();
            }
            *n = None;
        }
    }

    /// What a node needs of this control plane to join it.
    fn cluster(&self) -> Cluster<'_> {
        Cluster { bins: self.bins, dir: &self.dir, pki: &self.pki, server: &self.server, admin: self.admin() }
    }

    fn apiserver_proc(&self) -> MutexGuard<'_, Proc> {
        // A poisoned lock only means a test panicked while holding it; the
        // process handle inside is still valid.
        self.apiserver.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_log(&self, e: LabError, log: &str) -> LabError {
        match e {
            LabError::Timeout { what, after, last } => {
                let path = self.dir.join(log);
                LabError::Timeout {
                    what,
                    after,
                    last: format!("{last}\n--- last lines of {} ---\n{}", path.display(), process::log_tail(&path, 30)),
                }
            }
            other => other,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A namespace created for one test.
pub struct Namespace<'a> {
    cp: &'a ControlPlane,
    name: String,
}

impl Namespace<'_> {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for Namespace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.cp.kubectl_run(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("\"health\":\"true\"")
}

/// `n` random bytes from the kernel, hex-encoded.
pub(crate) fn random_hex(n: usize) -> Result<String, LabError> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(LabError::io("/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
