//! Where the upstream binaries (kube-apiserver, etcd, kubectl, helm,
//! prometheus, alertmanager, ...) are. `hack/build-upstream.sh` is the single source of truth for versions
//! and paths; this module asks it (`--print`) and, when something is missing,
//! runs the build itself so a test never skips for want of a binary.
//!
//! Never: download a binary, or look for one on PATH (a different version
//! there would make tests pass or fail for reasons outside the repo).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::LabError;

/// Paths of the built upstream binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubelet: PathBuf,
    pub kubectl: PathBuf,
    pub kube_proxy: PathBuf,
    pub helm: PathBuf,
    /// Prometheus and its rule/config checker (no web UI: HTTP API only).
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
    /// Alertmanager and its CLI (no web UI: HTTP API only).
    pub alertmanager: PathBuf,
    pub amtool: PathBuf,
    /// OCI image archive of the pod sandbox image, built from pause.c.
    pub pause_image: PathBuf,
    /// The reference containerd is told to use for it.
    pub pause_ref: String,
    /// OCI image archive of a busybox image for the lab's own tests.
    pub toolbox_image: PathBuf,
    /// Its reference once imported (`ControlPlane::ensure_node` imports it).
    pub toolbox_ref: String,
}

/// The repository root (the lab is only ever run from this checkout).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn script() -> PathBuf {
    repo_root().join("hack/build-upstream.sh")
}

fn print_paths() -> Result<Option<BTreeMap<String, PathBuf>>, LabError> {
    let out =
        Command::new(script()).arg("--print").stderr(Stdio::inherit()).output().map_err(LabError::io(script()))?;
    let map = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
    Ok(out.status.success().then_some(map))
}

impl Binaries {
    /// Locate the binaries, building them first if any is missing (a cold
    /// build takes 20-35 minutes on 2 cores; its progress goes to stderr). Cached for
    /// the life of the process.
    pub fn get() -> Result<&'static Binaries, LabError> {
        static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
        BINS.get_or_init(|| Self::locate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| LabError::Binaries(e.clone()))
    }

    fn locate() -> Result<Binaries, LabError> {
        let map = match print_paths()? {
            Some(m) => m,
            None => {
                eprintln!("sendfleet-lab: upstream binaries missing; running {} (cold: 20-35 min)", script().display());
                let status = Command::new(script()).stdout(Stdio::null()).status().map_err(LabError::io(script()))?;
                if !status.success() {
                    return Err(LabError::Binaries(format!(
                        "{} failed ({status}); its output is above. Inside a test's network namespace \
                         the Go module proxy and apt are unreachable: run `make upstream` first",
                        script().display()
                    )));
                }
                print_paths()?.ok_or_else(|| {
                    LabError::Binaries(format!(
                        "{} succeeded but --print still reports missing binaries",
                        script().display()
                    ))
                })?
            }
        };
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| LabError::Binaries(format!("{} --print did not name {k}", script().display())))
        };
        Ok(Binaries {
            etcd: get("etcd")?,
            kube_apiserver: get("kube-apiserver")?,
            kube_controller_manager: get("kube-controller-manager")?,
            kube_scheduler: get("kube-scheduler")?,
            kubelet: get("kubelet")?,
            kubectl: get("kubectl")?,
            kube_proxy: get("kube-proxy")?,
            helm: get("helm")?,
            prometheus: get("prometheus")?,
            promtool: get("promtool")?,
            alertmanager: get("alertmanager")?,
            amtool: get("amtool")?,
            pause_image: get("pause-image")?,
            pause_ref: get("pause-ref")?.display().to_string(),
            toolbox_image: get("toolbox-image")?,
            toolbox_ref: get("toolbox-ref")?.display().to_string(),
        })
    }
}
