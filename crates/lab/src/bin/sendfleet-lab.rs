//! `sendfleet-lab`: the lab's control plane from the command line, for the
//! demo and for poking at it by hand.
//!
//!   sendfleet-lab up   --dir out/lab   # network namespace + etcd + API server + KCM, in the background
//!   sendfleet-lab exec --dir out/lab -- kubectl get ns   # run inside the namespace with KUBECONFIG etc.
//!   sendfleet-lab down --dir out/lab
//!   sendfleet-lab receiver start --dir out/lab --name provider-a --addr 198.51.100.10 --domain example.net
//!   sendfleet-lab receiver status --dir out/lab   # what each simulated provider accepted and refused, per client address
//!   sendfleet-lab receiver cue --dir out/lab --name provider-a --client 192.0.2.11 --cue blocked   # misbehave on cue
//!   sendfleet-lab dns start --dir out/lab --zones hack/demo/zones --demo-providers   # test zones + the demo providers' MX on 198.51.100.53, what pods resolve through
//!   sendfleet-lab monitoring start --dir out/lab   # Prometheus + Alertmanager for the demo's pool (chart ServiceMonitors and rules), alerts to DIR/monitoring/alerts.log
//!   sendfleet-lab demo --dir out/lab   # the demo's steps (crates/lab/src/demo.rs), as tests/e2e_chart.rs runs them
//!
//! The control plane runs inside the network namespace `sendfleet-lab`
//! (created here, only `lo` up), so nothing it serves is reachable from the
//! host's interfaces; clients enter the namespace (`ip netns exec`). Never:
//! serve on the host's network namespace, or wipe a directory that is not a
//! lab directory (marked by `.sendfleet-lab`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sendfleet_lab::{Binaries, ControlPlane};

const MARKER: &str = ".sendfleet-lab";

#[derive(Parser)]
#[command(about = "Real Kubernetes control plane for sendfleet's demo and tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the network namespace and start the control plane in it, in
    /// the background; writes DIR/kubeconfig and DIR/env.
    Up {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        #[arg(long, default_value = "sendfleet-lab")]
        netns: String,
        /// Run in the foreground (Ctrl-C stops it) instead of detaching.
        #[arg(long)]
        foreground: bool,
        #[command(flatten)]
        parts: Parts,
    },
    /// Stop the control plane of DIR and delete the network namespace.
    Down {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        #[arg(long, default_value = "sendfleet-lab")]
        netns: String,
        /// Leave the network namespace in place.
        #[arg(long)]
        keep_netns: bool,
    },
    /// Run a command inside the lab's network namespace with DIR/env set
    /// (KUBECONFIG, KUBECTL, HELM, ...); `kubectl`/`helm` resolve to the
    /// built binaries.
    Exec {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Import an image archive (docker-archive or OCI layout tar) into the
    /// lab node's containerd (needs `up --node`); pods use it with
    /// `imagePullPolicy: Never`.
    Import {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        /// Repository name for OCI layouts whose index only carries a tag.
        #[arg(long)]
        base_name: Option<String>,
        archive: PathBuf,
    },
    /// Simulated providers (Postfix receivers) inside the lab's network
    /// namespace, kept under DIR/receivers and stopped by `down`.
    Receiver {
        #[command(subcommand)]
        action: ReceiverCmd,
    },
    /// An authoritative DNS server for test zones inside the lab's network
    /// namespace, kept under DIR/dns and stopped by `down`.
    Dns {
        #[command(subcommand)]
        action: DnsCmd,
    },
    /// Prometheus and Alertmanager for the demo's pool, inside the lab's
    /// namespace, kept under DIR/monitoring and stopped by `down`.
    Monitoring {
        #[command(subcommand)]
        action: MonitoringCmd,
    },
    /// The demo's steps (crates/lab/src/demo.rs) on a lab that is up with a
    /// node, the image imported and the DNS server started: egress
    /// addresses, providers, helm install, examples/, 500 messages through
    /// the pool's Service, the status. hack/demo.sh runs it.
    Demo {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
    },
    /// Internal: run the control plane in the current network namespace
    /// until SIGTERM/SIGINT.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        netns: String,
        #[command(flatten)]
        parts: Parts,
    },
}

/// What the lab starts besides etcd and the API server (`up` hands these
/// on to `serve`).
#[derive(clap::Args, Clone, Copy)]
struct Parts {
    /// Do not start kube-controller-manager.
    #[arg(long)]
    no_controller_manager: bool,
    /// Also start a node (kube-scheduler, kubelet, containerd) so pods run.
    #[arg(long)]
    node: bool,
    /// Local PersistentVolumes (StorageClass lab-local) to create with --node.
    #[arg(long, default_value_t = 8)]
    pvs: usize,
}

#[derive(Subcommand)]
enum ReceiverCmd {
    /// Start (or restart) a receiver on ADDR:25 inside the lab's namespace.
    Start {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        addr: String,
        /// A domain it accepts mail for (repeat for more).
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// `KEY=REPLY`: a recipient, domain or client address and the SMTP
        /// reply it gets, e.g. `busy.example.org=450 4.7.1 try again later`.
        #[arg(long = "access")]
        access: Vec<String>,
    },
    /// Make one receiver answer one client (egress) address on cue, from
    /// its next SMTP session on (a reload), or accept it again (--clear).
    Cue {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        /// The receiver's name (`receiver status` lists them).
        #[arg(long)]
        name: String,
        /// The client (egress) address, e.g. 192.0.2.10.
        #[arg(long)]
        client: String,
        /// blocked | rate-limit-421 | rate-limit-450 | new-address | "4NN/5NN text".
        #[arg(long, required_unless_present = "clear")]
        cue: Option<sendfleet_lab::Cue>,
        #[arg(long, conflicts_with = "cue")]
        clear: bool,
    },
    /// Print what each receiver accepted (total, per client address) and
    /// refused.
    Status {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        /// Print only the number of accepted messages, all receivers together.
        #[arg(long)]
        total: bool,
    },
    /// Stop every receiver of DIR.
    Stop {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum MonitoringCmd {
    /// Start Prometheus (127.0.0.1:9090) and Alertmanager (127.0.0.1:9093)
    /// inside the lab's namespace, in the background (demo::Watch):
    /// the chart's ServiceMonitors and rules, alerts posted to
    /// DIR/monitoring/alerts.log.
    Start {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
    },
    /// Stop them.
    Stop {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
    },
    /// Internal: run in the foreground (what `start` runs).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DnsCmd {
    /// Start (or restart) the server on ADDR:53 (UDP and TCP) inside the
    /// lab's namespace, in the background.
    Start {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
        /// The lab's DNS server address by default: the one the node's
        /// pods resolve through (their resolv.conf names it).
        #[arg(long, default_value = sendfleet_lab::DNS_SERVER)]
        addr: std::net::IpAddr,
        /// One `<origin>.zone` file per zone: master-file records, relative
        /// names allowed, SOA and NS added.
        #[arg(long)]
        zones: PathBuf,
        /// Also serve the MX and A records of the demo's providers
        /// (crates/lab/src/demo.rs PROVIDERS), so mail routes by MX.
        #[arg(long)]
        demo_providers: bool,
    },
    /// Stop the server of DIR.
    Stop {
        #[arg(long, default_value = "out/lab")]
        dir: PathBuf,
    },
    /// Internal: serve in the foreground (what `start` runs).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        zones: PathBuf,
        #[arg(long)]
        demo_providers: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Up { dir, netns, foreground, parts: p } => {
            up(&dir, &netns, foreground, p.no_controller_manager, p.node.then_some(p.pvs))
        }
        Cmd::Down { dir, netns, keep_netns } => down(&dir, &netns, keep_netns),
        Cmd::Exec { dir, command } => return exec(&dir, &command),
        Cmd::Import { dir, base_name, archive } => import(&dir, base_name.as_deref(), &archive),
        Cmd::Receiver { action } => receiver(action),
        Cmd::Dns { action } => dns(action),
        Cmd::Monitoring { action } => monitoring(action),
        Cmd::Demo { dir } => demo(&dir),
        Cmd::Serve { dir, netns, parts: p } => serve(&dir, &netns, p.no_controller_manager, p.node.then_some(p.pvs)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendfleet-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (it creates a network namespace)");
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn netns_exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}

fn pid_alive(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("pid")).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Prepare DIR: create it, or empty it if it is a previous lab directory.
fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let empty = std::fs::read_dir(&dir)?.next().is_none();
    if !empty && !dir.join(MARKER).exists() {
        bail!("{} is not empty and not a lab directory (no {MARKER}); refusing to wipe it", dir.display());
    }
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::write(dir.join(MARKER), "state of `sendfleet-lab up`; wiped by the next up\n")?;
    Ok(dir)
}

fn up(dir: &Path, netns: &str, foreground: bool, no_kcm: bool, node: Option<usize>) -> Result<()> {
    require_root()?;
    if pid_alive(dir).is_some() {
        println!("sendfleet-lab: already up; environment in {}/env", dir.display());
        return Ok(());
    }
    // Build (or find) the binaries here, in the foreground, so a cold build's
    // progress is visible.
    Binaries::get()?;
    // Receivers of a previous lab would keep the namespace alive and their
    // directories are about to be wiped.
    sendfleet_lab::receiver::stop_all(&dir.join("receivers"))?;
    sendfleet_lab::dns::stop(&dir.join("dns"))?;
    let dir = fresh_dir(dir)?;
    if !netns_exists(netns) {
        ip(&["netns", "add", netns])?;
    }
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    let exe = std::env::current_exe()?;
    // nsenter, not `ip netns exec`: the latter also makes a mount namespace
    // with a fresh /sys, which hides the cgroup mounts kubelet needs.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(&exe)
        .arg("serve")
        .arg("--dir")
        .arg(&dir)
        .arg("--netns")
        .arg(netns);
    if no_kcm {
        cmd.arg("--no-controller-manager");
    }
    if let Some(pvs) = node {
        cmd.arg("--node").arg("--pvs").arg(pvs.to_string());
    }
    if foreground {
        let st = cmd.status()?;
        if !st.success() {
            bail!("serve exited: {st}");
        }
        return Ok(());
    }
    let log = std::fs::File::create(dir.join("lab.log"))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid is async-signal-safe; detaches from our terminal's
    // session so the lab survives the shell that ran `make cluster`.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting `ip netns exec ... serve`")?;
    let env = dir.join("env");
    loop {
        if env.exists() {
            break;
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "the lab exited ({st}) before it was ready; last lines of {}/lab.log:\n{}",
                dir.display(),
                sendfleet_lab::process::log_tail(&dir.join("lab.log"), 40)
            );
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("the lab was not ready after 300 s; see {}/lab.log", dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "sendfleet-lab: up in {:.1} s, inside network namespace {netns}\n\
         environment: {dir}/env (source it inside the namespace)\n\
         try:  ip netns exec {netns} sh -c '. {dir}/env && $KUBECTL get ns'\n\
         or:   sendfleet-lab exec --dir {dir} -- kubectl get ns",
        t0.elapsed().as_secs_f64(),
        dir = dir.display()
    );
    Ok(())
}

fn serve(dir: &Path, netns: &str, no_kcm: bool, node: Option<usize>) -> Result<()> {
    // Block the stop signals before any thread exists so every thread
    // inherits the mask and sigwait below receives them (children get an
    // empty mask back in their pre_exec hook).
    // SAFETY: plain signal-mask syscalls on a zero-initialised sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let cp = ControlPlane::builder().dir(dir).controller_manager(!no_kcm).start()?;
    if let Some(pvs) = node {
        cp.ensure_node(pvs)?;
    }
    std::fs::write(dir.join("pid"), format!("{}\n", std::process::id()))?;
    let env = format!("{}export SENDFLEET_LAB_NETNS='{netns}'\n", cp.env_lines());
    // Written last and atomically: its existence means "ready".
    let tmp = dir.join("env.tmp");
    std::fs::write(&tmp, env)?;
    std::fs::rename(&tmp, dir.join("env"))?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is a valid, initialised sigset; `sig` is a valid out-param.
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("sendfleet-lab: signal {sig}, stopping");
    let _ = std::fs::remove_file(dir.join("env"));
    cp.stop();
    let _ = std::fs::remove_file(dir.join("pid"));
    Ok(())
}

fn down(dir: &Path, netns: &str, keep_netns: bool) -> Result<()> {
    require_root()?;
    // Receivers first: a process left inside the namespace would keep it
    // (and its addresses) alive after `ip netns del`.
    match sendfleet_lab::receiver::stop_all(&dir.join("receivers")) {
        Ok(stopped) if !stopped.is_empty() => println!("sendfleet-lab: receivers stopped: {}", stopped.join(", ")),
        Ok(_) => {}
        // Go on: the control plane and the namespace must still go.
        Err(e) => eprintln!("sendfleet-lab: stopping receivers: {e}"),
    }
    if sendfleet_lab::process::stop_recorded(&dir.join("monitoring").join("pid"), &["monitoring", "serve"]) {
        println!("sendfleet-lab: Prometheus and Alertmanager stopped");
    }
    match sendfleet_lab::dns::stop(&dir.join("dns")) {
        Ok(true) => println!("sendfleet-lab: DNS server stopped"),
        Ok(false) => {}
        Err(e) => eprintln!("sendfleet-lab: stopping the DNS server: {e}"),
    }
    if let Some(pid) = pid_alive(dir) {
        // SAFETY: signalling the pid our own `up` recorded in DIR/pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            if t0.elapsed() > Duration::from_secs(60) {
                // Its children die with it (PR_SET_PDEATHSIG).
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("sendfleet-lab: stopped (pid {pid})");
    } else {
        println!("sendfleet-lab: no control plane running for {}", dir.display());
    }
    let _ = std::fs::remove_file(dir.join("env"));
    let _ = std::fs::remove_file(dir.join("pid"));
    if !keep_netns && netns_exists(netns) {
        ip(&["netns", "del", netns])?;
        println!("sendfleet-lab: network namespace {netns} deleted");
    }
    Ok(())
}

fn read_env(dir: &Path) -> Result<Vec<(String, String)>> {
    let env_file = dir.join("env");
    let text = std::fs::read_to_string(&env_file)
        .with_context(|| format!("reading {} (is the lab up? `sendfleet-lab up`)", env_file.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect())
}

fn import(dir: &Path, base_name: Option<&str>, archive: &Path) -> Result<()> {
    let vars = read_env(dir)?;
    let sock = vars
        .iter()
        .find(|(k, _)| k == "CONTAINERD_ADDRESS")
        .map(|(_, v)| v.clone())
        .context("the lab has no node (start it with `sendfleet-lab up --node`)")?;
    let mut c = Command::new("ctr");
    c.arg("--address").arg(&sock).args(["-n", "k8s.io", "images", "import"]);
    if let Some(b) = base_name {
        c.args(["--base-name", b]);
    }
    let st = c.arg(archive).status().context("running ctr (Debian package containerd)")?;
    if !st.success() {
        bail!("ctr images import {} failed: {st}", archive.display());
    }
    Ok(())
}

fn exec(dir: &Path, command: &[String]) -> ExitCode {
    let run = || -> Result<ExitCode> {
        let vars = read_env(dir)?;
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let netns = get("SENDFLEET_LAB_NETNS").context("SENDFLEET_LAB_NETNS missing in env")?;
        let (prog, args) = command.split_first().context("no command")?;
        // `kubectl` and `helm` mean the lab's own builds, not whatever is on PATH.
        let prog = match prog.as_str() {
            "kubectl" => get("KUBECTL").unwrap_or_else(|| prog.clone()),
            "helm" => get("HELM").unwrap_or_else(|| prog.clone()),
            _ => prog.clone(),
        };
        let st = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(prog)
            .args(args)
            .envs(vars)
            .status()
            .context("running `ip netns exec`")?;
        Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
    };
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendfleet-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Enter the lab's network namespace (named in DIR/env) for the rest of this
/// process; only called before any thread is started.
fn enter_netns(dir: &Path) -> Result<()> {
    let vars = read_env(dir)?;
    let netns = vars
        .iter()
        .find(|(k, _)| k == "SENDFLEET_LAB_NETNS")
        .map(|(_, v)| v.clone())
        .context("SENDFLEET_LAB_NETNS missing in env")?;
    let path = Path::new("/run/netns").join(&netns);
    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd; the process is single-threaded.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
        bail!("entering network namespace {netns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn demo(dir: &Path) -> Result<()> {
    require_root()?;
    let vars = read_env(dir)?;
    enter_netns(dir)?;
    let t0 = Instant::now();
    sendfleet_lab::demo::add_egress_addresses()?;
    let providers = sendfleet_lab::demo::start_providers(Some(dir))?;
    let lab = sendfleet_lab::demo::LabEnv { vars: vars.into_iter().collect() };
    let report = sendfleet_lab::demo::run(&lab, &providers, &mut std::io::stdout())?;
    println!(
        "\ndelivered {} messages {:.1} s after submitting ({:.1} s for the demo's steps); {} quarantined: {}",
        report.delivered,
        report.submit_to_delivered.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        sendfleet_lab::demo::LISTED,
        report.quarantine
    );
    println!(
        "{} blocked {} {} times; excluded: {}; bounced: {}",
        sendfleet_lab::demo::BLOCKING,
        sendfleet_lab::demo::BLOCKED,
        report.blocks,
        if report.exclusions.is_empty() { "(none yet)".to_string() } else { report.exclusions.join("; ") },
        report.status_bounced
    );
    Ok(())
}

fn monitoring(action: MonitoringCmd) -> Result<()> {
    match action {
        MonitoringCmd::Start { dir } => {
            require_root()?;
            let state = dir.join("monitoring");
            sendfleet_lab::process::stop_recorded(&state.join("pid"), &["monitoring", "serve"]);
            std::fs::create_dir_all(&state)?;
            let state = state.canonicalize()?;
            let _ = std::fs::remove_file(state.join("ready"));
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["monitoring", "serve", "--dir"]).arg(dir.canonicalize()?);
            // Until `monitoring stop` or `down`.
            let ready = state.join("ready");
            spawn_detached(cmd, &state, "pid", "Prometheus and Alertmanager", Duration::from_secs(120), || {
                ready.exists()
            })
        }
        MonitoringCmd::Stop { dir } => {
            let stopped =
                sendfleet_lab::process::stop_recorded(&dir.join("monitoring").join("pid"), &["monitoring", "serve"]);
            println!("sendfleet-lab: monitoring {}", if stopped { "stopped" } else { "was not running" });
            Ok(())
        }
        MonitoringCmd::Serve { dir } => {
            let vars = read_env(&dir)?;
            enter_netns(&dir)?;
            let lab = sendfleet_lab::demo::LabEnv { vars: vars.into_iter().collect() };
            let state = dir.join("monitoring");
            let watch = sendfleet_lab::demo::Watch::start(&lab, &state, &dir.join("kubeconfig"))?;
            println!(
                "Prometheus on 127.0.0.1:{} and Alertmanager on 127.0.0.1:{} (lab namespace); alerts to {}",
                watch.prometheus.port(),
                watch.alertmanager.port(),
                state.join("alerts.log").display()
            );
            std::fs::write(state.join("ready"), "")?;
            // Until SIGTERM (`monitoring stop`, `down`): Prometheus and
            // Alertmanager die with this process (PR_SET_PDEATHSIG).
            loop {
                watch.refresh_token(&lab);
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

fn receiver(action: ReceiverCmd) -> Result<()> {
    match action {
        ReceiverCmd::Start { dir, name, addr, domains, access } => {
            require_root()?;
            enter_netns(&dir)?;
            let access: Vec<(&str, &str)> = access
                .iter()
                .map(|a| a.split_once('=').with_context(|| format!("--access {a:?}: expected KEY=REPLY")))
                .collect::<Result<_>>()?;
            let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
            let r =
                sendfleet_lab::Receiver::start(&name, &dir.join("receivers").join(&name), &addr, &domains, &access)?;
            println!(
                "sendfleet-lab: receiver {name} on {addr}:25 for {} (log {})",
                domains.join(" "),
                r.dir.join("maillog").display()
            );
            Ok(())
        }
        ReceiverCmd::Cue { dir, name, client, cue, clear } => {
            require_root()?;
            let r = sendfleet_lab::Receiver::open(&dir.join("receivers").join(&name))
                .with_context(|| format!("no receiver {name} under {}/receivers", dir.display()))?;
            enter_netns(&dir)?;
            match cue {
                Some(cue) if !clear => {
                    r.set_client(&client, cue.clone())?;
                    println!("sendfleet-lab: {name} answers {client}: {}", cue.action(&client));
                }
                _ => {
                    r.clear_client(&client)?;
                    println!("sendfleet-lab: {name} accepts {client} again");
                }
            }
            Ok(())
        }
        ReceiverCmd::Status { dir, total } => {
            let all = sendfleet_lab::receiver::list(&dir.join("receivers"));
            if total {
                println!("{}", all.iter().map(|r| r.deliveries().total()).sum::<usize>());
                return Ok(());
            }
            println!(
                "{:<12} {:<15} {:>9} {:>9} {:>8}  ACCEPTED PER CLIENT ADDRESS",
                "RECEIVER", "ADDRESS", "ACCEPTED", "DEFERRED", "REJECTED"
            );
            for r in all {
                let d = r.deliveries();
                let by: Vec<String> = d.by_client().iter().map(|(c, n)| format!("{c}={n}")).collect();
                println!(
                    "{:<12} {:<15} {:>9} {:>9} {:>8}  {}",
                    r.name,
                    r.addr,
                    d.total(),
                    d.deferred,
                    d.rejected,
                    by.join(" ")
                );
                for (client, codes) in d.rejections_by_client() {
                    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}x{n}")).collect();
                    println!("{:<12} refused {client}: {}", "", codes.join(" "));
                }
                for (client, action) in r.client_rules() {
                    println!("{:<12} cue for {client}: {action}", "");
                }
            }
            Ok(())
        }
        ReceiverCmd::Stop { dir } => {
            let stopped = sendfleet_lab::receiver::stop_all(&dir.join("receivers"))?;
            println!("sendfleet-lab: receivers stopped: {}", stopped.join(", "));
            Ok(())
        }
    }
}

fn dns(action: DnsCmd) -> Result<()> {
    match action {
        DnsCmd::Start { dir, addr, zones, demo_providers } => {
            require_root()?;
            // Parse here, so a broken zone fails the start with its message.
            sendfleet_lab::dns::Zones::load(&zone_texts(&zones, demo_providers)?)?;
            let zones = zones.canonicalize()?;
            let state = dir.join("dns");
            sendfleet_lab::dns::stop(&state)?;
            std::fs::create_dir_all(&state)?;
            enter_netns(&dir)?;
            sendfleet_lab::receiver::add_lo_address(&addr.to_string())?;
            let sock = std::net::SocketAddr::new(addr, 53);
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["dns", "serve", "--addr", &sock.to_string(), "--zones"]).arg(&zones);
            if demo_providers {
                cmd.arg("--demo-providers");
            }
            // Until `dns stop` or `down`.
            spawn_detached(cmd, &state, sendfleet_lab::dns::PID_FILE, "the DNS server", Duration::from_secs(10), || {
                std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok()
            })
        }
        DnsCmd::Stop { dir } => {
            let stopped = sendfleet_lab::dns::stop(&dir.join("dns"))?;
            println!("sendfleet-lab: DNS server {}", if stopped { "stopped" } else { "was not running" });
            Ok(())
        }
        DnsCmd::Serve { addr, zones, demo_providers } => {
            Ok(sendfleet_lab::dns::run(&zone_texts(&zones, demo_providers)?, addr)?)
        }
    }
}

/// Start `cmd` in a session of its own (it outlives this command and the
/// demo's shell), its output in `state/log` and its pid in `state/pid_file`,
/// and wait until `ready` says it serves (or it exits, or `timeout`
/// passes: then its log's text is the error). Prints its log so far.
fn spawn_detached(
    mut cmd: Command,
    state: &Path,
    pid_file: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<()> {
    let log_path = state.join("log");
    let log = std::fs::File::create(&log_path)?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    std::fs::write(state.join(pid_file), child.id().to_string())?;
    let t0 = Instant::now();
    while !ready() {
        if t0.elapsed() > timeout || !Path::new(&format!("/proc/{}", child.id())).exists() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("{what} did not come up; {}:\n{tail}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    print!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    Ok(())
}

/// The zones of `dir`, with the demo providers' MX zones if asked.
fn zone_texts(dir: &Path, demo_providers: bool) -> Result<std::collections::BTreeMap<String, String>> {
    let mut texts = sendfleet_lab::dns::Zones::read_dir(dir)?;
    if demo_providers {
        sendfleet_lab::dns::merge_zones(&mut texts, sendfleet_lab::demo::provider_zones());
    }
    Ok(texts)
}
