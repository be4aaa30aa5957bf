//! The lab node: kubelet + containerd + runc really run pods (images built
//! here: pause from k8s source, a busybox toolbox), on the node IP inside
//! the test's network namespace, with CNI, local PersistentVolumes, logs and
//! exec through the API server, Services through a real kube-proxy, names
//! through the lab's DNS server (the kubelet's resolv.conf); and
//! stopping the node leaves no processes, mounts or cgroups behind.

use std::time::{Duration, Instant};

use sendfleet_lab::kit::Dns;
use sendfleet_lab::{ControlPlane, DNS_SERVER, NODE_IP, NODE_NAME, STORAGE_CLASS};

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
fn pods_run_on_the_lab_node_with_volumes_logs_exec_and_services() {
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
    let toolbox = &cp.binaries().toolbox_ref;
    let ns = cp.namespace("node").unwrap();
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: host, namespace: {ns}}}
spec:
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  containers: [{{name: c, image: "{toolbox}", imagePullPolicy: Never, command: [sleep, "3600"]}}]
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
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  containers:
  - name: c
    image: "{toolbox}"
    imagePullPolicy: Never
    command: [sh, -c, "echo persisted > /data/proof && mkdir -p /www && echo hello-from-pod > /www/index.html && echo started && exec httpd -f -p 8080 -h /www"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    ))
    .unwrap();
    for pod in ["host", "web"] {
        wait_for(&format!("pod {pod} Running"), Duration::from_secs(90), || {
            let phase = cp.kubectl_run(&["get", "pod", pod, "-n", ns.name(), "-o", "jsonpath={.status.phase}"]).ok()?;
            (phase == "Running").then_some(phase)
        });
    }
    let ip =
        |pod: &str| cp.kubectl_run(&["get", "pod", pod, "-n", ns.name(), "-o", "jsonpath={.status.podIP}"]).unwrap();
    assert_eq!(ip("host"), NODE_IP, "hostNetwork pods share the lab namespace");
    assert!(ip("web").starts_with("10.244.0."), "CNI bridge address, got {}", ip("web"));
    let pvc = cp.kubectl_run(&["get", "pvc", "data", "-n", ns.name(), "-o", "jsonpath={.status.phase}"]).unwrap();
    assert_eq!(pvc, "Bound");

    // kubectl logs and exec go API server -> kubelet at the node IP (TLS both ways).
    let logs = wait_for("pod web's log", Duration::from_secs(30), || {
        cp.kubectl_run(&["logs", "web", "-n", ns.name()]).ok().filter(|l| l.contains("started"))
    });
    assert!(logs.contains("started"), "{logs}");
    let proof = cp.kubectl_run(&["exec", "web", "-n", ns.name(), "--", "cat", "/data/proof"]).unwrap();
    assert_eq!(proof.trim(), "persisted");
    // The PVC is one of the lab's local PVs: the file is on disk there.
    let pv = cp.kubectl_run(&["get", "pvc", "data", "-n", ns.name(), "-o", "jsonpath={.spec.volumeName}"]).unwrap();
    let on_disk = std::fs::read_to_string(node.dir.join("pv").join(&pv).join("proof")).unwrap();
    assert_eq!(on_disk.trim(), "persisted");

    // Name resolution as on a real node: both pods (hostNetwork with
    // ClusterFirstWithHostNet, and a pod-network one) resolve through the
    // lab's DNS server, MX included, from the resolv.conf the kubelet hands
    // them (the lab has no cluster DNS).
    let _dns = Dns::start(DNS_SERVER, &[("provider.test", "198.51.100.10")]);
    for pod in ["host", "web"] {
        let resolv = cp.kubectl_run(&["exec", pod, "-n", ns.name(), "--", "cat", "/etc/resolv.conf"]).unwrap();
        assert!(resolv.lines().any(|l| l.trim() == format!("nameserver {DNS_SERVER}")), "{pod}: {resolv}");
        let mx = cp
            .kubectl_run(&["exec", pod, "-n", ns.name(), "--", "nslookup", "-type=mx", "provider.test"])
            .unwrap_or_else(|e| panic!("{pod}: nslookup MX: {e}"));
        assert!(mx.contains("mail exchanger = 10 provider.test"), "{pod}: {mx}");
    }

    // Pods reach the API server the in-cluster way (Service kubernetes -> kube-proxy).
    // (busybox's static wget segfaults here, so a TCP connect with nc; a
    // port the Service does not have must fail, so the check can fail.)
    let nc = |port: &str| {
        cp.kubectl_run(&["exec", "web", "-n", ns.name(), "--", "sh", "-c", &format!("echo | nc -w 5 10.96.0.1 {port}")])
    };
    nc("443").unwrap();
    assert!(nc("444").is_err(), "10.96.0.1:444 must not connect");

    // A ClusterIP Service routes through the real kube-proxy, from the test's namespace.
    let cluster_ip =
        cp.kubectl_run(&["get", "svc", "web", "-n", ns.name(), "-o", "jsonpath={.spec.clusterIP}"]).unwrap();
    let body = wait_for("Service web to answer", Duration::from_secs(30), || {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect_timeout(&format!("{cluster_ip}:80").parse().unwrap(), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.contains("hello-from-pod").then_some(buf)
    });
    assert!(body.starts_with("HTTP/1.") && body.contains(" 200 "), "{body}");

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
