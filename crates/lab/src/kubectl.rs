//! The lab's clients: kubectl bound to a kubeconfig ([`Kubectl`]), the
//! kubeconfigs themselves ([`write_kubeconfig`]), and running a client
//! command to completion with its stderr in the error (`run`).
//!
//! Shared by the control plane and the node, which both talk to the API
//! server, so neither has to import the other. It must never start a
//! long-running process (that is `process::Proc`) and never run kubectl
//! without an explicit `--kubeconfig`: the lab talks only to the cluster it
//! started.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;

use crate::pki::write_private;
use crate::LabError;

/// kubectl with one kubeconfig.
#[derive(Clone, Copy, Debug)]
pub struct Kubectl<'a> {
    bin: &'a Path,
    kubeconfig: &'a Path,
}

impl<'a> Kubectl<'a> {
    pub fn new(bin: &'a Path, kubeconfig: &'a Path) -> Self {
        Kubectl { bin, kubeconfig }
    }

    /// The kubeconfig it authenticates with.
    pub fn kubeconfig(&self) -> &'a Path {
        self.kubeconfig
    }

    /// `kubectl --kubeconfig <kubeconfig>`, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("--kubeconfig").arg(self.kubeconfig);
        c
    }

    /// Run with `args`; stdout on success, the command and its stderr on
    /// failure.
    pub fn run(&self, args: &[&str]) -> Result<String, LabError> {
        let mut c = self.command();
        c.args(args);
        run(c, None)
    }

    /// Run with `args` and `stdin` piped in (e.g. `apply -f -`).
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<String, LabError> {
        let mut c = self.command();
        c.args(args);
        run(c, Some(stdin))
    }

    /// `kubectl apply --server-side -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String, LabError> {
        self.run_stdin(&["apply", "--server-side", "--field-manager=sendfleet-lab", "-f", "-"], yaml)
    }
}

/// How a kubeconfig authenticates.
pub enum Credentials {
    Token(String),
    Cert { cert_pem: String, key_pem: String },
}

/// Write a single-context kubeconfig for `server` trusting `ca_pem`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    creds: &Credentials,
    user: &str,
) -> Result<(), LabError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user_yaml = match creds {
        Credentials::Token(t) => format!("    token: {t}\n"),
        Credentials::Cert { cert_pem, key_pem } => {
            format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(cert_pem), b64(key_pem))
        }
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user:?}\n  user:\n{user_yaml}contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: {user:?}\ncurrent-context: lab\n",
        ca = b64(ca_pem),
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(LabError::io(parent))?;
    }
    write_private(path, yaml.as_bytes())
}

/// Run a command to completion; stdout on success.
pub(crate) fn run(mut c: Command, stdin: Option<&str>) -> Result<String, LabError> {
    let desc = describe(&c);
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|source| LabError::Spawn { program: PathBuf::from(c.get_program()), source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // kubectl reads all of stdin before answering: no deadlock.
        pipe.write_all(input.as_bytes()).map_err(LabError::io(c.get_program()))?;
    }
    let Output { status, stdout, stderr } = child.wait_with_output().map_err(LabError::io(c.get_program()))?;
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: desc,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        })
    }
}

fn describe(c: &Command) -> String {
    let prog = Path::new(c.get_program()).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    // Leave out the kubeconfig path: long and the same every time.
    let mut shown = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--kubeconfig" {
            skip = true;
            continue;
        }
        shown.push(a.as_str());
    }
    format!("{prog} {}", shown.join(" "))
}
