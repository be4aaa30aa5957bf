//! The lab node: kubelet + containerd + runc really run pods (pause image
//! built from k8s source), on the node IP inside the test's network
//! namespace, with local PersistentVolumes; and stopping the node leaves
//! no processes, mounts or cgroups behind.

use std::time::{Duration, Instant};

use sendfleet_lab::{ControlPlane, NODE_IP, NODE_NAME, STORAGE_CLASS};

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn pods_run_on_the_lab_node_with_host_network_cni_and_local_volumes() {
    let cp = ControlPlane::start().unwrap();
    let node = cp.ensure_node(2).unwrap();
    assert_eq!(node.name, NODE_NAME);
    let ip = cp
        .kubectl_run(&[
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .unwrap();
    assert_eq!(ip, NODE_IP);
    let pause = &cp.binaries().pause_ref;
    let ns = cp.namespace("node").unwrap();
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: host, namespace: {ns}}}
spec:
  hostNetwork: true
  containers: [{{name: c, image: "{pause}", imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: bridged, namespace: {ns}}}
spec:
  containers: [{{name: c, image: "{pause}", imagePullPolicy: Never}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}}}
spec:
  storageClassName: {STORAGE_CLASS}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: with-volume, namespace: {ns}}}
spec:
  containers:
  - {{name: c, image: "{pause}", imagePullPolicy: Never, volumeMounts: [{{name: data, mountPath: /data}}]}}
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
"#
    ))
    .unwrap();
    for pod in ["host", "bridged", "with-volume"] {
        wait_for(&format!("pod {pod} Running"), Duration::from_secs(90), || {
            let phase = cp.kubectl_run(&["get", "pod", pod, "-n", ns.name(), "-o", "jsonpath={.status.phase}"]).ok()?;
            (phase == "Running").then_some(phase)
        });
    }
    let ip =
        |pod: &str| cp.kubectl_run(&["get", "pod", pod, "-n", ns.name(), "-o", "jsonpath={.status.podIP}"]).unwrap();
    assert_eq!(ip("host"), NODE_IP, "hostNetwork pods share the lab namespace");
    assert!(ip("bridged").starts_with("10.251.0."), "{}", ip("bridged"));
    let pvc = cp.kubectl_run(&["get", "pvc", "data", "-n", ns.name(), "-o", "jsonpath={.status.phase}"]).unwrap();
    assert_eq!(pvc, "Bound");

    // Tear down and check nothing is left: no process from the node, no
    // mount under its directory, no cgroup.
    let dir = node.dir.clone();
    let cgroup = format!("{}", cp.dir().file_name().unwrap().to_string_lossy());
    cp.stop();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "mounts left under {}:\n{mounts}", dir.display());
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(dir.to_str().unwrap()))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(&cgroup))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}
