//! Config install: from the mounted ConfigMap to the directory Postfix runs
//! with, atomically, then `postfix reload`.
//!
//! Pipeline per change: read the source (ConfigMap volumes swap a `..data`
//! symlink, so a poll sees either the old or the new set, never a mix) ->
//! hash ([`config_hash`]) -> stage into a new generation directory ->
//! validate (policy.json, `postmap` of every indexed map main.cf/master.cf
//! name under `$config_directory`, `postconf -n`, `postconf -M`,
//! `maillog_file = /dev/stdout` when supervising) -> swap the `postfix_dir`
//! symlink to the generation with one rename -> `postfix reload`.
//!
//! Must never restart Postfix (queued and in-flight mail survive a reload)
//! and never leave a half-written config where Postfix reads it: a config
//! that fails any step is refused, the previous one stays, and the refusal
//! is reported in /status with a PascalCase reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sendfleet_render::contract::config_hash;
use sendfleet_render::policy::{AgentPolicy, POLICY_FILE, POLICY_VERSION};
use thiserror::Error;
use tokio::process::Command;

use super::args::AgentArgs;
use super::state::State;

/// Map types that need `postmap` (indexed files).
const INDEXED: [&str; 4] = ["hash", "btree", "lmdb", "cdb"];
/// Generations kept: the current one and the previous one (for a rollback).
const KEEP_GENERATIONS: usize = 2;
/// Tool output kept in a refusal message.
const MAX_MESSAGE: usize = 2000;

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("reading config source {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("policy.json: {0}")]
    Policy(String),
    #[error("map {map}: {output}")]
    Map { map: String, output: String },
    #[error("main.cf: {0}")]
    MainCf(String),
    #[error("master.cf: {0}")]
    MasterCf(String),
    #[error("maillog_file is {0:?}; the supervised Postfix must log to /dev/stdout")]
    Maillog(String),
    #[error("installing generation {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("postfix reload: {0}")]
    Reload(String),
}

impl InstallError {
    /// Stable PascalCase reason (Event reason, /status `refused.reason`).
    pub fn category(&self) -> &'static str {
        match self {
            InstallError::Read { .. } => "SourceUnreadable",
            InstallError::Policy(_) => "PolicyInvalid",
            InstallError::Map { .. } => "MapInvalid",
            InstallError::MainCf(_) => "MainCfInvalid",
            InstallError::MasterCf(_) => "MasterCfInvalid",
            InstallError::Maillog(_) => "MaillogNotStdout",
            InstallError::Io { .. } => "InstallFailed",
            InstallError::Reload(_) => "ReloadFailed",
        }
    }
}

pub struct Installer {
    source: PathBuf,
    link: PathBuf,
    generations: PathBuf,
    supervise: bool,
    poll: Duration,
}

/// Files of a config source: name -> contents (dotfiles and directories skipped).
pub type Files = BTreeMap<String, Vec<u8>>;

pub fn read_source(dir: &Path) -> Result<Files, InstallError> {
    let err = |source| InstallError::Read { path: dir.to_path_buf(), source };
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follows the ConfigMap's symlinks.
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(err)?;
        if !meta.is_file() {
            continue;
        }
        files.insert(name, std::fs::read(&path).map_err(err)?);
    }
    Ok(files)
}

pub fn hash_files(files: &Files) -> String {
    config_hash(files.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

impl Installer {
    pub fn new(args: &AgentArgs) -> Result<Self, InstallError> {
        let link = args.postfix_dir.clone();
        let parent = link.parent().unwrap_or(Path::new("/")).to_path_buf();
        let generations = parent.join("generations");
        std::fs::create_dir_all(&generations)
            .map_err(|source| InstallError::Io { path: generations.clone(), source })?;
        if let Ok(meta) = std::fs::symlink_metadata(&link) {
            if !meta.file_type().is_symlink() {
                return Err(InstallError::Io {
                    path: link,
                    source: std::io::Error::other("postfix dir exists and is not a symlink the agent owns"),
                });
            }
        }
        Ok(Installer {
            source: args.config_source.clone(),
            link,
            generations,
            supervise: !args.no_supervise,
            poll: args.poll(),
        })
    }

    /// Block until a first config is installed (Postfix cannot start without one).
    pub async fn install_first(&self, state: &State) {
        loop {
            if self.check(state, false).await {
                return;
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Poll the source and install every new config.
    pub async fn watch(self, state: Arc<State>) {
        loop {
            tokio::time::sleep(self.poll).await;
            // Supervised, a config that changes while Postfix is still
            // starting (`postfix start-fg` runs its checks first) waits
            // until it accepts mail: `postfix reload` would fail with "not
            // running" and the config would count as refused. Unsupervised,
            // Postfix may legitimately not run (yet): reload only a running one.
            let reload = if self.supervise {
                if !state.postfix_running() {
                    continue;
                }
                true
            } else {
                run_tool("postfix", &["-c", &self.link.display().to_string(), "status"]).await.0
            };
            self.check(&state, reload).await;
        }
    }

    /// Install the source if it changed; true if a config is loaded after.
    async fn check(&self, state: &State, reload: bool) -> bool {
        let files = match read_source(&self.source) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "config source unreadable");
                return state.loaded_hash().is_some();
            }
        };
        let hash = hash_files(&files);
        if state.loaded_hash().as_deref() == Some(hash.as_str())
            || state.refused_hash().as_deref() == Some(hash.as_str())
        {
            return state.loaded_hash().is_some();
        }
        match self.install(&files, &hash, reload).await {
            Ok(policy) => {
                tracing::info!(hash = %hash, pool = %policy.pool, instance = %policy.instance, "config installed");
                state.set_policy(policy);
                if reload {
                    state.postfix_reloaded();
                }
                state.config_installed(hash);
                true
            }
            Err(e) => {
                tracing::warn!(hash = %hash, reason = e.category(), error = %e, "config refused");
                let mut msg = e.to_string();
                truncate(&mut msg, MAX_MESSAGE);
                state.config_refused(hash, e.category(), msg);
                state.loaded_hash().is_some()
            }
        }
    }

    /// Stage, validate, swap, reload. Returns the new policy.
    pub async fn install(&self, files: &Files, hash: &str, reload: bool) -> Result<AgentPolicy, InstallError> {
        let policy = parse_policy(files)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let short = hash.trim_start_matches("sha256:").get(..12).unwrap_or("nohash");
        let gen = self.generations.join(format!("{nanos}-{short}"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| InstallError::Io { path, source }
        };
        std::fs::create_dir_all(&gen).map_err(io(&gen))?;
        let staged = self.stage_and_validate(files, &gen).await;
        if let Err(e) = staged {
            let _ = std::fs::remove_dir_all(&gen);
            return Err(e);
        }
        let previous = std::fs::read_link(&self.link).ok();
        swap_symlink(&gen, &self.link).map_err(io(&self.link))?;
        if reload {
            if let Err(e) = postfix_reload(&self.link).await {
                // Put the previous generation back so the files match what runs.
                if let Some(prev) = previous {
                    let _ = swap_symlink(&prev, &self.link);
                }
                let _ = std::fs::remove_dir_all(&gen);
                return Err(e);
            }
        }
        self.prune(&gen);
        Ok(policy)
    }

    async fn stage_and_validate(&self, files: &Files, gen: &Path) -> Result<(), InstallError> {
        for (name, content) in files {
            let path = gen.join(name);
            std::fs::write(&path, content).map_err(|source| InstallError::Io { path, source })?;
        }
        let dir = gen.display().to_string();
        let (ok, out) = run_tool("postconf", &["-c", &dir, "-n"]).await;
        if !ok || out.contains("fatal:") {
            // postconf reads master.cf too and names the file that failed.
            if out.contains("master.cf") {
                return Err(InstallError::MasterCf(out));
            }
            return Err(InstallError::MainCf(out));
        }
        let (ok, out) = run_tool("postconf", &["-c", &dir, "-M"]).await;
        if !ok || out.contains("fatal:") {
            return Err(InstallError::MasterCf(out));
        }
        let mut maps = Vec::new();
        for cf in ["main.cf", "master.cf"] {
            if let Some(text) = files.get(cf) {
                maps.extend(indexed_maps(&String::from_utf8_lossy(text)));
            }
        }
        maps.sort();
        maps.dedup();
        for (kind, name) in maps {
            if !files.contains_key(&name) {
                return Err(InstallError::Map { map: name, output: "referenced but not in the config".into() });
            }
            let target = format!("{kind}:{}", gen.join(&name).display());
            let (ok, out) = run_tool("postmap", &["-c", &gen.display().to_string(), &target]).await;
            // postmap exits 0 on malformed lines; its warnings name the file.
            let bad_line = out.lines().any(|l| l.contains("warning:") && l.contains(&name) && !l.contains("main.cf"));
            if !ok || bad_line {
                return Err(InstallError::Map { map: name, output: out });
            }
        }
        if self.supervise {
            let (ok, out) = run_tool_stdout("postconf", &["-c", &dir, "-h", "maillog_file"]).await;
            if !ok || out.trim() != "/dev/stdout" {
                return Err(InstallError::Maillog(out.trim().to_string()));
            }
        }
        Ok(())
    }

    fn prune(&self, current: &Path) {
        let Ok(rd) = std::fs::read_dir(&self.generations) else {
            return;
        };
        let mut gens: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        // Names start with a nanosecond timestamp: lexical order is age order.
        gens.sort();
        let keep_from = gens.len().saturating_sub(KEEP_GENERATIONS);
        for g in &gens[..keep_from] {
            if g != current {
                let _ = std::fs::remove_dir_all(g);
            }
        }
    }
}

fn parse_policy(files: &Files) -> Result<AgentPolicy, InstallError> {
    let raw = files.get(POLICY_FILE).ok_or_else(|| InstallError::Policy("missing".into()))?;
    let policy: AgentPolicy = serde_json::from_slice(raw).map_err(|e| InstallError::Policy(e.to_string()))?;
    if policy.version != POLICY_VERSION {
        return Err(InstallError::Policy(format!("version {} (this agent reads {POLICY_VERSION})", policy.version)));
    }
    if policy.this_instance().is_none() {
        return Err(InstallError::Policy(format!(
            "instance {:?} is not among the policy's instances",
            policy.instance
        )));
    }
    Ok(policy)
}

/// `(type, file name)` of every indexed map under `$config_directory`.
pub fn indexed_maps(cf: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in INDEXED {
        for dir in ["$config_directory/", "${config_directory}/", "$(config_directory)/"] {
            let pat = format!("{kind}:{dir}");
            let mut rest = cf;
            while let Some(i) = rest.find(&pat) {
                let after = &rest[i + pat.len()..];
                // `texthash:` is not `hash:`.
                if rest[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    rest = after;
                    continue;
                }
                let name: String =
                    after.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect();
                if !name.is_empty() {
                    out.push((kind.to_string(), name));
                }
                rest = after;
            }
        }
    }
    out
}

fn swap_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("sendfleet-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

async fn postfix_reload(dir: &Path) -> Result<(), InstallError> {
    let (ok, out) = run_tool("postfix", &["-c", &dir.display().to_string(), "reload"]).await;
    if ok {
        Ok(())
    } else {
        Err(InstallError::Reload(out))
    }
}

/// Run a Postfix tool; (success, stdout+stderr).
async fn run_tool(cmd: &str, args: &[&str]) -> (bool, String) {
    match Command::new(cmd).args(args).stdin(Stdio::null()).output().await {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stdout));
            (o.status.success(), s)
        }
        Err(e) => (false, format!("running {cmd}: {e}")),
    }
}

async fn run_tool_stdout(cmd: &str, args: &[&str]) -> (bool, String) {
    match Command::new(cmd).args(args).stdin(Stdio::null()).output().await {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(e) => (false, format!("running {cmd}: {e}")),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_indexed_maps_under_config_directory() {
        let cf =
            "transport_maps = socketmap:unix:/run/sendfleet/policy.sock:transport, hash:$config_directory/transport\n\
                  smtp_tls_policy_maps = hash:${config_directory}/tls_policy\n\
                  x = texthash:$config_directory/skip, hash:/etc/elsewhere\n\
                  -o smtp_sasl_password_maps=lmdb:$config_directory/sasl_passwd";
        assert_eq!(
            indexed_maps(cf),
            vec![
                ("hash".into(), "transport".into()),
                ("hash".into(), "tls_policy".into()),
                ("lmdb".into(), "sasl_passwd".into()),
            ]
        );
    }

    #[test]
    fn policy_must_name_this_instance_and_version() {
        let mut files = Files::new();
        assert_eq!(parse_policy(&files).unwrap_err().category(), "PolicyInvalid");
        files.insert(POLICY_FILE.into(), br#"{"version":1,"pool":"p","instance":"a","instances":[],"domains":[],"peerPort":2526,"backlogWarnSeconds":1,"backlogCriticalSeconds":2,"warmup":null}"#.to_vec());
        assert!(parse_policy(&files).unwrap_err().to_string().contains("not among"));
    }
}
