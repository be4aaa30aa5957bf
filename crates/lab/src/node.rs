//! A real node for the lab: kube-scheduler, kube-proxy (nftables), and
//! kubelet with Debian's containerd and runc, so pods actually run and
//! Services route (issue 8).
//!
//! Isolation, so that nothing outlives the lab and nothing touches the host:
//! - network: the node IP is an extra address on `lo` of the lab's own
//!   network namespace (refused in the host's namespace); hostNetwork pods
//!   share that namespace, other pods get a CNI bridge inside it.
//! - processes and mounts: containerd and kubelet run under
//!   `unshare --pid --mount --fork --kill-child`, with a private mount
//!   namespace. When the lab process dies, the namespace's init is killed,
//!   the kernel kills every process in it (shims and containers included) and
//!   every mount made inside (overlay roots, volumes, pod netns) goes with
//!   the mount namespace.
//! - state: containerd root/state/socket, kubelet root dir, pod logs, CNI
//!   state all live under the lab directory; `/run` and `/var/log`, where
//!   containerd and kubelet hard-code paths, are private tmpfs mounts
//!   inside the namespace.
//! - cgroups: a cgroup root of its own (`/sendfleet-lab.<pid>.<n>`) in every
//!   hierarchy, removed on stop or swept by the next lab start.
//!
//! Never: use or configure a system-wide containerd, pull an image, or add
//! an address to the host's network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::kubectl::{write_kubeconfig, Credentials, Kubectl};
use crate::pki::{write_private, Pki};
use crate::process::{self, poll, Proc};
use crate::LabError;

/// The node's name.
pub const NODE_NAME: &str = "lab-node";
/// The node IP: an address on the lab namespace's `lo` (kubelet refuses
/// loopback addresses as node IPs).
pub const NODE_IP: &str = "10.250.0.1";
/// Pod CIDR of the CNI bridge inside the lab namespace: inside
/// 10.244.0.0/16, the pod network most clusters (kubeadm with flannel, kind)
/// use, so examples/ that admit "the cluster's pods" to submission work here
/// unchanged.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Service CIDR handed to the API server and routed to `lo` for kube-proxy.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// StorageClass of the pre-created local PersistentVolumes.
pub const STORAGE_CLASS: &str = "lab-local";
/// The lab's DNS server: the one address every pod of the node resolves
/// through (the kubelet's `resolvConf`, see [`RESOLV_CONF`]), and where the
/// demo and the tests serve their zones (MX/A of the simulated providers,
/// PTR, SPF, DMARC, fake DNSBLs). An address of 198.51.100.0/24
/// (TEST-NET-2), on the lab namespace's `lo` once a server listens there.
pub const DNS_SERVER: &str = "198.51.100.53";
/// The node's resolv.conf, under the node directory. The lab has no cluster
/// DNS (no `clusterDNS` in the kubelet config), so the kubelet falls back
/// to the `Default` policy for `ClusterFirst` pods and for the instances'
/// `ClusterFirstWithHostNet` alike, and hands every pod the nameservers,
/// search list and options of this file, as a real node hands its own.
pub const RESOLV_CONF: &str = "resolv.conf";

/// Debian packages the node needs, with a file that proves each is there.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
];

/// What tests need to know about the running node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub ip: String,
    /// containerd's socket (for `ctr`, image import).
    pub containerd_socket: PathBuf,
    /// The node's state directory (logs: containerd.log, kubelet.log).
    pub dir: PathBuf,
}

/// What the node needs of the control plane it joins (the control plane
/// hands it in: the node never names `ControlPlane`, which owns it).
pub(crate) struct Cluster<'a> {
    pub bins: &'static Binaries,
    /// The control plane's state directory; the node's is `node/` in it.
    pub dir: &'a Path,
    pub pki: &'a Pki,
    /// `https://127.0.0.1:PORT`.
    pub server: &'a str,
    /// kubectl as the lab admin.
    pub admin: Kubectl<'a>,
}

impl NodeInfo {
    /// `ctr --address <this node's containerd> -n k8s.io`.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.containerd_socket).args(["-n", "k8s.io"]);
        c
    }
}

pub(crate) struct Node {
    info: NodeInfo,
    init: Proc,
    /// Host pid of the namespace's init (our unshare's child).
    init_pid: Option<u32>,
    scheduler: Proc,
    proxy: Proc,
    cgroup_root: String,
    pvs: usize,
}

fn ensure_packages() -> Result<(), LabError> {
    let missing: Vec<&str> = NODE_PACKAGES.iter().filter(|(_, f)| !Path::new(f).exists()).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("sendfleet-lab: installing {} (node)", missing.join(" "));
    let install = |update: bool| -> bool {
        if update {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        }
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install(false) || install(true) {
        Ok(())
    } else {
        Err(LabError::Usage(format!(
            "the lab node needs Debian packages {m}: `apt-get install -y {m}` failed (inside a test's \
             network namespace apt cannot reach the network: run `make lab-deps` or `make upstream` first)",
            m = missing.join(" ")
        )))
    }
}

/// Refuse to run in the host's network namespace: the node IP would be
/// added to the host's `lo` and hostNetwork pods would bind host addresses.
/// A lab namespace has only `lo` and what the node itself adds (the CNI
/// bridge and its veths); the host's has real interfaces.
pub(crate) fn require_lab_netns() -> Result<(), LabError> {
    let dev = std::fs::read_to_string("/proc/net/dev").map_err(LabError::io("/proc/net/dev"))?;
    let foreign: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|i| *i != "lo" && *i != "lab0" && !i.starts_with("veth"))
        .collect();
    if !foreign.is_empty() {
        return Err(LabError::Usage(format!(
            "the lab node must run inside a lab network namespace (tests: the cargo runner \
             hack/netns-run; demo: `sendfleet-lab up --node`), but this one has interfaces {}",
            foreign.join(", ")
        )));
    }
    Ok(())
}

fn ip_ok(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip").args(args).output().map_err(LabError::io("ip"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// cgroup v1 hierarchies (and the v2 one) under /sys/fs/cgroup.
fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// Remove a cgroup tree bottom-up (cgroup dirs are removed with rmdir).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Remove cgroup roots of lab processes that no longer exist.
pub(crate) fn sweep_cgroups() {
    for m in cgroup_mounts() {
        for stale in process::stale_lab_entries(&m) {
            remove_cgroup_tree(&stale);
        }
    }
}

impl Node {
    pub(crate) fn start(cluster: &Cluster<'_>, pvs: usize) -> Result<Node, LabError> {
        let t0 = Instant::now();
        require_lab_netns()?;
        ensure_packages()?;
        process::add_lo_address(NODE_IP)?;
        sweep_cgroups();
        let bins: &Binaries = cluster.bins;
        let dir = cluster.dir.join("node");
        for d in ["containerd", "kubelet/root", "cni/net.d", "cni/ipam", "pod-logs", "pv"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(LabError::io(&p))?;
        }
        let id = cluster
            .dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .filter(|f| f.starts_with("sendfleet-lab."))
            .unwrap_or_else(|| format!("sendfleet-lab.{}.node", std::process::id()));
        let cgroup_root = format!("/{id}");
        for m in cgroup_mounts() {
            let p = m.join(&id);
            std::fs::create_dir_all(&p).map_err(LabError::io(&p))?;
        }

        let sock = dir.join("containerd/containerd.sock");
        let d = dir.display();
        let containerd_toml = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{d}/containerd/containerd-ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, so
  # every sandbox failed ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#,
            sock = sock.display(),
            pause = bins.pause_ref,
        );
        let p = dir.join("containerd/config.toml");
        std::fs::write(&p, containerd_toml).map_err(LabError::io(&p))?;
        let cni = format!(
            r#"{{"cniVersion":"1.0.0","name":"lab","plugins":[{{"type":"bridge","bridge":"lab0","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{POD_CIDR}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{d}/cni/ipam"}}}}]}}"#
        );
        let p = dir.join("cni/net.d/10-lab.conflist");
        std::fs::write(&p, cni).map_err(LabError::io(&p))?;

        // Kubelet identity and serving certificate from the lab CA.
        let client = cluster.pki.client_cert(&format!("system:node:{NODE_NAME}"), Some("system:nodes"))?;
        let kubelet_kubeconfig = dir.join("kubelet/kubeconfig");
        write_kubeconfig(
            &kubelet_kubeconfig,
            cluster.server,
            cluster.pki.ca_pem(),
            &Credentials::Cert { cert_pem: client.cert_pem, key_pem: client.key_pem },
            &format!("system:node:{NODE_NAME}"),
        )?;
        let serving = cluster.pki.serving_cert(NODE_NAME, &[NODE_IP.to_string(), NODE_NAME.to_string()])?;
        write_private(&dir.join("kubelet/tls.crt"), serving.cert_pem.as_bytes())?;
        write_private(&dir.join("kubelet/tls.key"), serving.key_pem.as_bytes())?;
        let resolv = dir.join(RESOLV_CONF);
        std::fs::write(&resolv, crate::dns::resolv_conf(DNS_SERVER)).map_err(LabError::io(&resolv))?;
        let healthz_port = process::free_port()?;
        let kubelet_yaml = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine kind has cgroup v1; kubelet 1.37 refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
tlsCertFile: {d}/kubelet/tls.crt
tlsPrivateKeyFile: {d}/kubelet/tls.key
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
podLogsDir: {d}/pod-logs
# A shared 2-core dev machine: never evict or garbage-collect lab images
# because the host's disk or memory is busy. Absolute sizes, not percents:
# on a large, nearly full shared disk 1% is gigabytes, and the disk-pressure
# taint it sets leaves every pod Pending ("untolerated taint").
evictionHard: {{"memory.available": "1Mi", "nodefs.available": "100Mi", "imagefs.available": "100Mi", "nodefs.inodesFree": "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# ConfigMap volumes (the instances' rendered config) are refreshed at each
# pod sync: every 10 s instead of the default minute, so a policy change
# reaches the agents in seconds (tests wait for it; the default took 60-90 s).
syncFrequency: 10s
# No clusterDNS: pods get this file's nameserver (the lab's DNS server).
resolvConf: {resolv}
"#,
            resolv = dir.join(RESOLV_CONF).display(),
            ca = cluster.pki.ca_cert.display(),
            sock = sock.display(),
        );
        let p = dir.join("kubelet/config.yaml");
        std::fs::write(&p, kubelet_yaml).map_err(LabError::io(&p))?;

        // PID 1 of the node's pid+mount namespace.
        let init = format!(
            r#"#!/bin/sh
# PID 1 of the lab node's pid and mount namespaces (written by sendfleet-lab).
set -u
D='{d}'
# containerd and kubelet hard-code paths under /run and /var/log: give them
# private, empty ones (gone with this mount namespace; nothing made on the host).
mount -t tmpfs -o mode=0755 lab-run /run || exit 1
mount -t tmpfs -o mode=0755 lab-var-log /var/log || exit 1
containerd --config "$D/containerd/config.toml" >>"$D/containerd.log" 2>&1 &
i=0
while [ ! -S '{sock}' ]; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "containerd did not create its socket" >&2; exit 1; }}
  sleep 0.1
done
ctr --address '{sock}' -n k8s.io images import --base-name '{pause_repo}' '{pause_tar}' >>"$D/init.log" 2>&1 \
  || {{ echo "pause image import failed" >&2; exit 1; }}
ctr --address '{sock}' -n k8s.io images import --base-name '{toolbox_repo}' '{toolbox_tar}' >>"$D/init.log" 2>&1 \
  || {{ echo "toolbox image import failed" >&2; exit 1; }}
'{kubelet}' --config "$D/kubelet/config.yaml" --kubeconfig "$D/kubelet/kubeconfig" \
  --root-dir "$D/kubelet/root" --node-ip {NODE_IP} --hostname-override {NODE_NAME} --v=1 \
  >>"$D/kubelet.log" 2>&1 &
wait
"#,
            sock = sock.display(),
            pause_repo = bins.pause_ref.rsplit_once(':').map(|(r, _)| r).unwrap_or(&bins.pause_ref),
            pause_tar = bins.pause_image.display(),
            toolbox_repo = bins.toolbox_ref.rsplit_once(':').map(|(r, _)| r).unwrap_or(&bins.toolbox_ref),
            toolbox_tar = bins.toolbox_image.display(),
            kubelet = bins.kubelet.display(),
        );
        let init_path = dir.join("init.sh");
        std::fs::write(&init_path, init).map_err(LabError::io(&init_path))?;

        let init = Proc::spawn(
            "node (containerd + kubelet)",
            Path::new("unshare"),
            &[
                "--pid",
                "--mount",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([init_path.display().to_string()])
            .collect::<Vec<_>>(),
            &dir.join("init.log"),
            &[],
        )?;
        let admin = cluster.admin.kubeconfig().display().to_string();
        let scheduler = Proc::spawn(
            "kube-scheduler",
            &bins.kube_scheduler,
            &[
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--leader-elect=false".to_string(),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={}", process::free_port()?),
                "--v=1".to_string(),
            ],
            &dir.join("kube-scheduler.log"),
            &[],
        )?;
        // Services: a real kube-proxy (nftables mode) in the lab namespace.
        // Locally generated packets need a route before netfilter can DNAT
        // them, hence the service CIDR routed to lo.
        ip_ok(&["route", "replace", SERVICE_CIDR, "dev", "lo"])?;
        let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
        std::fs::write(fwd, "1").map_err(LabError::io(fwd))?;
        let proxy_health = process::free_port()?;
        let proxy = Proc::spawn(
            "kube-proxy",
            &bins.kube_proxy,
            &[
                format!("--kubeconfig={admin}"),
                format!("--hostname-override={NODE_NAME}"),
                "--proxy-mode=nftables".to_string(),
                format!("--cluster-cidr={POD_CIDR}"),
                format!("--healthz-bind-address=127.0.0.1:{proxy_health}"),
                format!("--metrics-bind-address=127.0.0.1:{}", process::free_port()?),
                // Do not touch the (host-wide) conntrack table size.
                "--conntrack-max-per-core=0".to_string(),
                "--v=1".to_string(),
            ],
            &dir.join("kube-proxy.log"),
            &[],
        )?;
        let mut node = Node {
            info: NodeInfo {
                name: NODE_NAME.to_string(),
                ip: NODE_IP.to_string(),
                containerd_socket: sock,
                dir: dir.clone(),
            },
            init_pid: None,
            init,
            scheduler,
            proxy,
            cgroup_root,
            pvs: 0,
        };
        let ready = poll("node Ready", Duration::from_secs(120), Duration::from_millis(300), || {
            node.init.check_running()?;
            node.scheduler.check_running()?;
            node.proxy.check_running()?;
            let out = cluster.admin.run(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            Ok(out.ok().filter(|s| s.trim() == "True").map(|_| ()))
        });
        node.init_pid = child_of(node.init.child.id());
        if let Err(e) = ready {
            let tail = process::log_tail(&dir.join("kubelet.log"), 20);
            let init_tail = process::log_tail(&dir.join("init.log"), 10);
            node.stop();
            return Err(LabError::Timeout {
                what: "the lab node to become Ready".into(),
                after: Duration::from_secs(120),
                last: format!("{e}\n--- kubelet.log ---\n{tail}\n--- init.log ---\n{init_tail}"),
            });
        }
        node.add_local_volumes(cluster.admin, pvs)?;
        // Pods reach the API server the in-cluster way: Service kubernetes
        // (10.96.0.1:443) -> this EndpointSlice -> the node IP, where the
        // API server listens (it binds all addresses of the lab namespace).
        let port = cluster.server.rsplit(':').next().unwrap_or_default();
        cluster.admin.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kubernetes-lab\n  namespace: default\n  labels: {{kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: sendfleet-lab}}\naddressType: IPv4\nendpoints: [{{addresses: [{NODE_IP}], conditions: {{ready: true}}}}]\nports: [{{name: https, port: {port}, protocol: TCP}}]\n"
        ))?;
        poll("kube-proxy /healthz", Duration::from_secs(60), Duration::from_millis(200), || {
            node.proxy.check_running()?;
            Ok(crate::kit::http::ok("127.0.0.1", proxy_health, "/healthz").then_some(()))
        })?;
        eprintln!("sendfleet-lab: node {NODE_NAME} ({NODE_IP}) Ready in {:.1} s", t0.elapsed().as_secs_f64());
        Ok(node)
    }

    pub(crate) fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Local PersistentVolumes created so far.
    pub(crate) fn pvs(&self) -> usize {
        self.pvs
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.init.check_running().is_ok()
            && self.scheduler.check_running().is_ok()
            && self.proxy.check_running().is_ok()
    }

    /// Create `StorageClass lab-local` and local PersistentVolumes until
    /// there are `count` (each a directory under the node dir).
    pub(crate) fn add_local_volumes(&mut self, admin: Kubectl<'_>, count: usize) -> Result<(), LabError> {
        let mut yaml = format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {STORAGE_CLASS}}}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Retain\n"
        );
        for i in self.pvs..count {
            let path = self.info.dir.join(format!("pv/lab-pv-{i}"));
            std::fs::create_dir_all(&path).map_err(LabError::io(&path))?;
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: lab-pv-{i}}}\nspec:\n  capacity: {{storage: 10Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: {STORAGE_CLASS}\n  local: {{path: {}}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: kubernetes.io/hostname, operator: In, values: [{NODE_NAME}]}}\n",
                path.display()
            ));
        }
        admin.apply(&yaml)?;
        self.pvs = self.pvs.max(count);
        Ok(())
    }

    /// Kill the node's namespaces (everything in them dies with their init),
    /// wait for that, then remove its cgroups.
    pub(crate) fn stop(&mut self) {
        self.scheduler.stop(Duration::from_secs(5));
        self.proxy.stop(Duration::from_secs(5));
        let init_pid = self.init_pid.or_else(|| child_of(self.init.child.id()));
        // SIGTERM ends unshare, whose --kill-child SIGKILLs the namespace init.
        self.init.stop(Duration::from_secs(5));
        if let Some(pid) = init_pid {
            process::wait_gone(pid, Duration::from_secs(30));
        }
        let id = self.cgroup_root.trim_start_matches('/');
        let t0 = Instant::now();
        // Emptied cgroups can take a moment to become removable.
        loop {
            let mut left = false;
            for m in cgroup_mounts() {
                let p = m.join(id);
                remove_cgroup_tree(&p);
                left |= p.exists();
            }
            if !left || t0.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The first child of `pid` (unshare's forked namespace init).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
}
