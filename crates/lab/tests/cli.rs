//! The `sendfleet-lab` command the demo uses: `up --node` creates its own
//! named network namespace and a working cluster in it, `exec` runs the
//! built kubectl inside, `dns start` and `receiver start/cue/status` work
//! inside it, `down` leaves no namespace and no process behind.
//! (A namespace name of its own, so a running `make cluster` is untouched.)

use std::path::Path;
use std::process::Command;

fn lab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sendfleet-lab")).args(args).output().expect("run sendfleet-lab")
}

#[test]
fn up_exec_down_in_a_named_network_namespace() {
    let dir = tempfile_dir();
    let netns = format!("sendfleet-lab-t{}", std::process::id());
    let d = dir.to_str().unwrap();
    let up = lab(&["up", "--dir", d, "--netns", &netns, "--node", "--pvs", "1"]);
    let guard = Down { dir: d.to_string(), netns: netns.clone() };
    assert!(up.status.success(), "up failed: {}", String::from_utf8_lossy(&up.stderr));
    assert!(Path::new("/run/netns").join(&netns).exists());
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(env.contains(&format!("SENDFLEET_LAB_NETNS='{netns}'")), "{env}");
    assert!(env.contains("CONTAINERD_ADDRESS="), "{env}");

    let nodes = lab(&["exec", "--dir", d, "--", "kubectl", "get", "nodes", "-o", "name"]);
    assert!(nodes.status.success(), "{}", String::from_utf8_lossy(&nodes.stderr));
    assert_eq!(String::from_utf8_lossy(&nodes.stdout).trim(), "node/lab-node");
    // The API server is not reachable from outside the lab's namespace.
    let port: u16 = env
        .lines()
        .find_map(|l| l.strip_prefix("export SENDFLEET_LAB_APISERVER_PORT='"))
        .and_then(|p| p.trim_end_matches('\'').parse().ok())
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // The demo's DNS server on the address the node's resolv.conf names,
    // with the providers' MX zones; a receiver told to block one client.
    let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/demo/zones");
    let dns = lab(&["dns", "start", "--dir", d, "--zones", zones.to_str().unwrap(), "--demo-providers"]);
    let dns_out = String::from_utf8_lossy(&dns.stdout);
    assert!(dns.status.success(), "{}", String::from_utf8_lossy(&dns.stderr));
    assert!(
        dns_out.contains(&format!("{}:53", sendfleet_lab::DNS_SERVER)) && dns_out.contains("webmail.test"),
        "{dns_out}"
    );
    let rcv = lab(&[
        "receiver",
        "start",
        "--dir",
        d,
        "--name",
        "provider-a",
        "--addr",
        "198.51.100.10",
        "--domain",
        "example.net",
    ]);
    assert!(rcv.status.success(), "{}", String::from_utf8_lossy(&rcv.stderr));
    let cue =
        lab(&["receiver", "cue", "--dir", d, "--name", "provider-a", "--client", "192.0.2.10", "--cue", "blocked"]);
    assert!(cue.status.success(), "{}", String::from_utf8_lossy(&cue.stderr));
    let status = lab(&["receiver", "status", "--dir", d]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("cue for 192.0.2.10: 554 5.7.1"), "{status}");
    let clear = lab(&["receiver", "cue", "--dir", d, "--name", "provider-a", "--client", "192.0.2.10", "--clear"]);
    assert!(clear.status.success(), "{}", String::from_utf8_lossy(&clear.stderr));
    let status = lab(&["receiver", "status", "--dir", d]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("cue for"), "cleared");

    let pid: u32 = std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap();
    drop(guard);
    assert!(!Path::new("/run/netns").join(&netns).exists(), "namespace left behind");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "lab process left behind");
    assert!(!dir.exists(), "lab dir left behind");
}

/// `down` even when an assertion failed.
struct Down {
    dir: String,
    netns: String,
}

impl Drop for Down {
    fn drop(&mut self) {
        let out = lab(&["down", "--dir", &self.dir, "--netns", &self.netns]);
        if out.status.success() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        assert!(out.status.success() || std::thread::panicking(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sendfleet-lab.{}.cli", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Processes whose command line mentions `needle`.
fn procs_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn sigkill_of_the_lab_leaves_no_process_behind() {
    let dir = std::env::temp_dir().join(format!("sendfleet-lab.{}.kill", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let netns = format!("sendfleet-lab-k{}", std::process::id());
    let up = lab(&["up", "--dir", d, "--netns", &netns, "--node", "--pvs", "1"]);
    let guard = Down { dir: d.to_string(), netns: netns.clone() };
    assert!(up.status.success(), "up failed: {}", String::from_utf8_lossy(&up.stderr));
    let running = procs_mentioning(d);
    for part in
        ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "containerd"]
    {
        assert!(running.iter().any(|p| p.contains(part)), "{part} not running: {running:#?}");
    }
    let pid: i32 = std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap();
    // SAFETY: killing the lab process this test started (pid from its own DIR/pid).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = std::time::Instant::now();
    loop {
        let left = procs_mentioning(d);
        if left.is_empty() {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "left after SIGKILL: {left:#?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(guard);
    assert!(!Path::new("/run/netns").join(&netns).exists());
}
