//! The `sendfleet-lab` command the demo uses: `up --node` creates its own
//! named network namespace and a working cluster in it, `exec` runs the
//! built kubectl inside, `down` leaves no namespace and no process behind.
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
