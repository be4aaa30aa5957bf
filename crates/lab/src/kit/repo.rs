//! The repository the tests run from: its root, `examples/` (what users
//! apply; tests render and apply these very files) and reading files
//! with the path in the panic message. Never writes into the repository.

use std::path::{Path, PathBuf};

/// The workspace root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// A file's text; panics naming the path.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A resource from examples/, parsed (a SendingPool, DomainPolicy, ...).
pub fn example<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = examples_dir().join(name);
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
