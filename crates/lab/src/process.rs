//! Child processes of the lab (etcd, kube-apiserver, ...), started so that
//! none can outlive the process that started them.
//!
//! Each child gets `PR_SET_PDEATHSIG(SIGKILL)` in a `pre_exec` hook. The
//! kernel ties that signal to the *thread* that forked the child, and test
//! harnesses run every test on a short-lived thread, so all children are
//! forked from one dedicated spawner thread that lives as long as the
//! process. On a normal exit an `atexit` hook also kills them and removes the
//! temporary directories registered here; after a SIGKILL the children still
//! die (death signal) and the next lab start sweeps the stale directories.
//!
//! Never: signal a process the lab did not start, or remove a directory it
//! did not create.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::LabError;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

struct Registry {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { pids: Vec::new(), dirs: Vec::new() });
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    // Runs at process exit: best effort, never panics.
    let Ok(reg) = REGISTRY.lock() else { return };
    for &pid in &reg.pids {
        // SAFETY: plain syscalls on pids this process spawned and still owns
        // (a pid is removed from the registry once it has been reaped).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
    for d in &reg.dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(cleanup_at_exit) };
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this loop only ends when
                // the process does: children keep their parent thread.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the lab's spawner thread");
        Mutex::new(tx)
    })
}

/// A started child with its log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Start `program args` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(String, String)],
    ) -> Result<Proc, LabError> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(LabError::io(log))?;
        let err = out.try_clone().map_err(LabError::io(log))?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(out).stderr(err);
        Self::start(name, cmd, log)
    }

    /// Start a prepared command (its stdio already set; `log` is where
    /// error messages point) from the spawner thread, with the death signal.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, LabError> {
        let program = PathBuf::from(cmd.get_program());
        // SAFETY: the hook only calls async-signal-safe functions (prctl,
        // getppid, sigprocmask, _exit) between fork and exec.
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // A blocked signal mask is inherited through exec; the lab
                // CLI blocks SIGTERM to wait for it, the children must not.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        let send = spawner().lock().map_err(|_| LabError::Spawner)?.send((cmd, tx));
        send.map_err(|_| LabError::Spawner)?;
        let child = rx
            .recv()
            .map_err(|_| LabError::Spawner)?
            .map_err(|source| LabError::Spawn { program: program.clone(), source })?;
        REGISTRY.lock().map_err(|_| LabError::Spawner)?.pids.push(child.id());
        Ok(Proc { name: name.to_string(), child, log: log.to_path_buf() })
    }

    /// Fail with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), LabError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                unregister(self.child.id());
                Err(LabError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 40),
                })
            }
            Err(e) => Err(LabError::io(&self.log)(e)),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        unregister(self.child.id());
    }
}

fn unregister(pid: u32) {
    if let Ok(mut reg) = REGISTRY.lock() {
        reg.pids.retain(|&p| p != pid);
    }
}

/// Remove `dir` when the process exits normally.
pub fn remove_at_exit(dir: &Path) {
    if let Ok(mut reg) = REGISTRY.lock() {
        reg.dirs.push(dir.to_path_buf());
    }
}

/// Create `<tmp>/sendfleet-lab.<pid>.<n>` for a control plane, after removing
/// directories left by lab processes that no longer exist (killed with
/// SIGKILL, so their exit hook never ran).
pub fn temp_dir() -> Result<PathBuf, LabError> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tmp = std::env::temp_dir();
    for stale in stale_lab_entries(&tmp) {
        let _ = std::fs::remove_dir_all(stale);
    }
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tmp.join(format!("sendfleet-lab.{}.{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    remove_at_exit(&dir);
    Ok(dir)
}

/// Entries of `dir` named `sendfleet-lab.<pid>[.…]` whose process no longer
/// exists (and is not this one): what a lab killed with SIGKILL left behind.
pub fn stale_lab_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("sendfleet-lab."))
                .and_then(|rest| rest.split('.').next())
                .and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|e| e.path())
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Tests run in their own
/// network namespace, so nothing else races for it.
pub fn free_port() -> Result<u16, LabError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(LabError::io("127.0.0.1:0"))?;
    let port = l.local_addr().map_err(LabError::io("127.0.0.1:0"))?.port();
    Ok(port)
}

/// The last `lines` lines of a log file (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Poll `f` every `every` until it returns `Ok(Some(t))`, or fail after
/// `timeout` with `LabError::Timeout` naming `what` and the last error.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>, LabError>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("(never answered)");
    loop {
        match f() {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            // A dead process will not come back: fail at once.
            Err(e @ LabError::Exited { .. }) => return Err(e),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout { what: what.to_string(), after: timeout, last });
        }
        std::thread::sleep(every);
    }
}

/// Wait until process `pid` is gone (its /proc entry removed), at most
/// `timeout`; true when it is gone. For processes the lab does not reap
/// itself (a namespace init, a daemonized Postfix master).
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    poll(&format!("process {pid} to exit"), timeout, Duration::from_millis(50), || {
        Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(()))
    })
    .is_ok()
}

/// Add `addr`/32 to `lo` of the current network namespace (already there is
/// fine). Callers check first that this is a lab or test namespace.
pub fn add_lo_address(addr: &str) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{addr}/32"), "dev", "lo"])
        .output()
        .map_err(LabError::io("ip"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("File exists") {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("ip addr add {addr}/32 dev lo"),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

/// Stop the background process whose pid `pid_file` records (a server the
/// lab CLI started in its own session), if it still runs a
/// `sendfleet-lab <subcommand...>`: SIGTERM, then SIGKILL after 10 s.
/// Returns whether one was running. The pid file is removed. A process
/// left inside the lab's namespace would keep the namespace alive.
pub fn stop_recorded(pid_file: &Path, subcommand: &[&str]) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let _ = std::fs::remove_file(pid_file);
    let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
        return false;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // Only a pid that is still ours: a recycled pid runs something else.
    let marker = format!("sendfleet-lab\0{}", subcommand.join("\0"));
    let ours =
        std::fs::read(proc_dir.join("cmdline")).map(|c| String::from_utf8_lossy(&c).contains(&marker)).unwrap_or(false);
    if !ours {
        return false;
    }
    // SAFETY: signalling the pid the lab CLI recorded, checked above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    while proc_dir.exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
