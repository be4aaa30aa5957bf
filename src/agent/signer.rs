//! The DKIM signer: OpenDKIM (Debian's package) as a milter of the
//! submission listener, run and fed by the agent.
//!
//! The renderer writes OpenDKIM's configuration, KeyTable and SigningTable
//! into the ConfigMap (`sendfleet_render::dkim`); the keys are in the pool's
//! Secret, mounted root-only. On every change of either the agent:
//! 1. finds each selector's key (`<selector>.key`, else `private.key`) and
//!    checks it parses as an RSA key (`crate::dns::dkim`);
//! 2. stages the files in a new generation directory owned by the signer's
//!    user (`opendkim`), keys 0600 in a 0700 directory, so only the signer
//!    (and root) can read them; the previous generation's keys are carried
//!    over, so a signer still running the old KeyTable finds its key;
//! 3. switches the `current` link and has OpenDKIM reload (SIGUSR1) or
//!    starts it (`opendkim -f`), and restarts it if it exits.
//!
//! A key that is missing or unusable is never staged. If a signer is
//! running, it keeps signing with the keys it has (a rotation whose new key
//! has not reached the Secret's volume yet signs with the old selector, not
//! unsigned); without one, Postfix cannot reach the milter and its rendered
//! `milter_default_action` decides: `tempfail` holds the mail at the client,
//! `accept` is the pool's opt-out. Either way `/status` says why.
//!
//! It must never log, report or copy key material anywhere but the staged
//! key files, and never stage a key it did not check.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sendfleet_render::contract::{SignerState, SignerStatus};
use sendfleet_render::dkim::{
    secret_key_for, selectors_in_key_table, CURRENT, KEYS_DIR, KEY_TABLE, OPENDKIM_CONF, SECRET_DEFAULT_KEY,
    SIGNER_USER, SIGNING_TABLE, SOCKET_DIR,
};
use sha2::{Digest as _, Sha256};
use tokio::process::{Child, Command};

use super::install::{read_source, Files};
use super::state::State;
use crate::dns::dkim::{public_key_from_pem, KeyType};

/// What the running signer was started or reloaded with.
struct Running {
    child: Child,
    /// Fingerprint of the inputs (files and keys) it runs.
    inputs: [u8; 32],
    selectors: Vec<String>,
    /// Digest of each selector's key.
    keys: BTreeMap<String, [u8; 32]>,
    generation: PathBuf,
}

/// The signer's supervisor (one per agent).
pub struct Signer {
    source: PathBuf,
    keys: PathBuf,
    dir: PathBuf,
    poll: Duration,
    running: Option<Running>,
    /// Inputs last refused (not staged), so a broken key is reported once
    /// per change rather than re-checked into the log every poll.
    refused: Option<[u8; 32]>,
    generation: u64,
}

/// The inputs of one evaluation.
struct Inputs {
    files: Vec<(&'static str, Vec<u8>)>,
    selectors: Vec<String>,
    /// Per selector: the key's PEM or why there is none.
    keys: BTreeMap<String, Result<Vec<u8>, String>>,
    /// The pool opted out of holding (`onKeyError: SendUnsigned`).
    send_unsigned: bool,
    fingerprint: [u8; 32],
}

impl Signer {
    /// A signer for these flags, or `None` without `--dkim-keys` (the pool
    /// has no `spec.dkim`).
    pub fn new(args: &super::AgentArgs) -> Option<Signer> {
        let keys = args.dkim_keys.clone()?;
        Some(Signer {
            source: args.config_source.clone(),
            keys,
            dir: args.dkim_dir.clone(),
            poll: args.poll(),
            running: None,
            refused: None,
            generation: 0,
        })
    }

    /// Bring the signer in line with the config source and the keys once
    /// (before Postfix starts, so the first submission finds it).
    pub async fn step(&mut self, state: &State) {
        if let Some(r) = &mut self.running {
            if let Ok(Some(status)) = r.child.try_wait() {
                tracing::warn!(%status, "opendkim exited; starting it again");
                self.running = None;
                self.refused = None;
            }
        }
        let files = match read_source(&self.source) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "reading the config source for the DKIM signer");
                return;
            }
        };
        let Some(inputs) = self.inputs(&files) else {
            // The pool dropped spec.dkim (the pod is being replaced).
            self.stop().await;
            *lock(state) = None;
            return;
        };
        if self.running.as_ref().is_some_and(|r| r.inputs == inputs.fingerprint)
            || self.refused == Some(inputs.fingerprint)
        {
            return;
        }
        let problems: Vec<String> = inputs
            .keys
            .iter()
            .filter_map(|(sel, k)| match k {
                Err(reason) => Some(format!("selector {sel}: {reason}")),
                Ok(pem) => self.reused_key(sel, pem).map(|old| {
                    format!(
                        "selector {sel}: its key is the one selector {old} signs with \
                         (waiting for {:?} in the Secret; a new selector needs a new key)",
                        secret_key_for(sel)
                    )
                }),
            })
            .collect();
        if !problems.is_empty() {
            let reason = problems.join("; ");
            tracing::warn!(reason = %reason, "DKIM key unusable: not staged");
            self.refused = Some(inputs.fingerprint);
            *lock(state) = Some(self.report(&inputs, Some(reason)));
            return;
        }
        match self.stage_and_run(&inputs).await {
            Ok(()) => {
                self.refused = None;
                *lock(state) = Some(self.report(&inputs, None));
            }
            Err(e) => {
                let reason = format!("starting the signer: {e}");
                tracing::warn!(reason = %reason, "DKIM signer");
                self.refused = Some(inputs.fingerprint);
                *lock(state) = Some(self.report(&inputs, Some(reason)));
            }
        }
    }

    /// Follow changes until the agent ends.
    pub async fn run(mut self, state: Arc<State>) {
        loop {
            tokio::time::sleep(self.poll).await;
            self.step(&state).await;
        }
    }

    /// A rotation names a new selector before its key reaches the Secret's
    /// volume: `private.key` (the old selector's key) would then sign under
    /// the new selector, whose record publishes another key. A key a running
    /// selector already uses is never taken for a new selector.
    fn reused_key(&self, selector: &str, pem: &[u8]) -> Option<String> {
        let r = self.running.as_ref()?;
        if r.keys.contains_key(selector) {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(pem).into();
        r.keys.iter().find(|(_, d)| **d == digest).map(|(s, _)| s.clone())
    }

    fn report(&self, inputs: &Inputs, reason: Option<String>) -> SignerStatus {
        let (state, selectors) = match &self.running {
            Some(r) => (SignerState::Signing, r.selectors.clone()),
            None if inputs.send_unsigned => (SignerState::Unsigned, vec![]),
            None => (SignerState::Held, vec![]),
        };
        SignerStatus { state, selectors, reason }
    }

    fn inputs(&self, files: &Files) -> Option<Inputs> {
        let mut picked = Vec::new();
        for name in [OPENDKIM_CONF, KEY_TABLE, SIGNING_TABLE] {
            picked.push((name, files.get(name)?.clone()));
        }
        let key_table = String::from_utf8_lossy(&picked[1].1).into_owned();
        let selectors = selectors_in_key_table(&key_table);
        let send_unsigned = files
            .get(sendfleet_render::postfix::MASTER_CF)
            .is_some_and(|m| String::from_utf8_lossy(m).contains("milter_default_action=accept"));
        let mut h = Sha256::new();
        for (name, data) in &picked {
            h.update(name.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        let mut keys = BTreeMap::new();
        for sel in &selectors {
            let key = self.read_key(sel);
            match &key {
                Ok(pem) => {
                    h.update(b"key");
                    h.update(Sha256::digest(pem));
                }
                Err(reason) => h.update(reason.as_bytes()),
            }
            keys.insert(sel.clone(), key);
        }
        Some(Inputs { files: picked, selectors, keys, send_unsigned, fingerprint: h.finalize().into() })
    }

    /// `selector`'s key from the Secret's volume, checked; the error names
    /// the Secret keys looked for, never content.
    fn read_key(&self, selector: &str) -> Result<Vec<u8>, String> {
        let own = secret_key_for(selector);
        let pem = match std::fs::read(self.keys.join(&own)) {
            Ok(p) => p,
            Err(_) => std::fs::read(self.keys.join(SECRET_DEFAULT_KEY))
                .map_err(|_| format!("the Secret has no key {own:?} or {SECRET_DEFAULT_KEY:?}"))?,
        };
        match public_key_from_pem(&pem) {
            Ok(k) if k.key_type() == KeyType::Rsa => Ok(pem),
            Ok(_) => Err("the key is Ed25519; the signer signs rsa-sha256 only".to_string()),
            Err(e) => Err(format!("unusable key: {e}")),
        }
    }

    async fn stage_and_run(&mut self, inputs: &Inputs) -> std::io::Result<()> {
        let (uid, gid) = signer_ids()?;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))?;
        let socket_dir = self.dir.join(SOCKET_DIR);
        std::fs::create_dir_all(&socket_dir)?;
        std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid))?;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o755))?;

        self.generation += 1;
        let gen = self.dir.join(format!("gen-{}-{}", std::process::id(), self.generation));
        let _ = std::fs::remove_dir_all(&gen);
        let keys_dir = gen.join(KEYS_DIR);
        std::fs::create_dir_all(&keys_dir)?;
        for d in [&gen, &keys_dir] {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        let write = |path: &Path, data: &[u8]| -> std::io::Result<()> {
            std::fs::write(path, data)?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        };
        // The previous generation's keys first: the running signer reads
        // its KeyTable's key files through `current` until it has reloaded.
        if let Some(r) = &self.running {
            for sel in &r.selectors {
                let old = r.generation.join(KEYS_DIR).join(format!("{sel}.private"));
                if let Ok(pem) = std::fs::read(&old) {
                    write(&keys_dir.join(format!("{sel}.private")), &pem)?;
                }
            }
        }
        for (sel, key) in &inputs.keys {
            if let Ok(pem) = key {
                write(&keys_dir.join(format!("{sel}.private")), pem)?;
            }
        }
        for (name, data) in &inputs.files {
            write(&gen.join(name), data)?;
        }
        let link = self.dir.join(CURRENT);
        let tmp = self.dir.join(format!(".{CURRENT}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&gen, &tmp)?;
        std::fs::rename(&tmp, &link)?;

        let previous = match self.running.take() {
            Some(mut r) => {
                let pid = r.child.id().map(|p| p.to_string()).unwrap_or_default();
                let reloaded = Command::new("kill").args(["-USR1", &pid]).status().await.is_ok_and(|s| s.success());
                if reloaded {
                    tracing::info!(selectors = ?inputs.selectors, "DKIM signer reloaded");
                    let old = std::mem::replace(&mut r.generation, gen.clone());
                    r.inputs = inputs.fingerprint;
                    r.selectors = inputs.selectors.clone();
                    r.keys = key_digests(inputs);
                    self.running = Some(r);
                    Some(old)
                } else {
                    let _ = r.child.kill().await;
                    None
                }
            }
            None => None,
        };
        if self.running.is_none() {
            let socket = socket_dir.join("opendkim.sock");
            let _ = std::fs::remove_file(&socket);
            let mut child = Command::new("opendkim")
                .arg("-f")
                .arg("-x")
                .arg(link.join(OPENDKIM_CONF))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            if let Err(e) = wait_for_socket(&socket, &mut child).await {
                let _ = child.kill().await;
                return Err(e);
            }
            self.running = Some(Running {
                child,
                inputs: inputs.fingerprint,
                selectors: inputs.selectors.clone(),
                keys: key_digests(inputs),
                generation: gen,
            });
            tracing::info!(selectors = ?inputs.selectors, "DKIM signer started");
        }
        self.prune(previous.as_deref());
        Ok(())
    }

    /// Remove generations other than the current one and `keep`.
    fn prune(&self, keep: Option<&Path>) {
        let Some(cur) = self.running.as_ref().map(|r| r.generation.clone()) else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("gen-") && p != cur && Some(p.as_path()) != keep {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }

    async fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill().await;
        }
    }
}

fn key_digests(inputs: &Inputs) -> BTreeMap<String, [u8; 32]> {
    inputs.keys.iter().filter_map(|(s, k)| Some((s.clone(), Sha256::digest(k.as_ref().ok()?).into()))).collect()
}

fn lock(state: &State) -> std::sync::MutexGuard<'_, Option<SignerStatus>> {
    state.signer.lock().unwrap_or_else(|e| e.into_inner())
}

/// The signer user's uid and gid, from /etc/passwd (the image's Debian
/// package created it).
fn signer_ids() -> std::io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == SIGNER_USER).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
        })
        .ok_or_else(|| std::io::Error::other(format!("no user {SIGNER_USER:?} (Debian package opendkim)")))
}

/// Wait until OpenDKIM listens (or exits: its error is on stderr).
async fn wait_for_socket(socket: &Path, child: &mut Child) -> std::io::Result<()> {
    for _ in 0..100 {
        if socket.exists() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!("opendkim exited at start: {status}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(std::io::Error::other("opendkim did not open its socket within 10 s"))
}
