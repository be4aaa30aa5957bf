//! PID 1 of an instance container is tini, not the agent: Postfix leaves
//! orphans (reparented to PID 1) that only an init reaps, and the agent must
//! not reap processes that are not its own (it would steal exit statuses
//! from tokio's child handling). Checked where it can be lost: the pods the
//! operator renders, the image `make image` builds (its config and its
//! files), and the Containerfile.
//!
//! `image_runs_the_agent_under_tini` needs the image archive for the current
//! release binary (`make image`; `make test-e2e` builds it and runs this).

#[allow(dead_code)]
mod e2e_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sendfleet_lab::kit::{examples_dir, repo_root as repo};
use sendfleet_render::objects::AGENT_COMMAND;

const ENTRYPOINT: [&str; 3] = ["/usr/bin/tini", "--", "/usr/local/bin/sendfleet"];

#[test]
fn instance_pods_start_the_agent_under_tini() {
    assert_eq!(AGENT_COMMAND, ["tini", "--", "sendfleet", "agent"]);
    let examples: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_sendfleet")).arg("render").arg("-f").args(&examples).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let sets: Vec<&serde_yaml::Value> = docs.iter().filter(|d| d["kind"] == "StatefulSet").collect();
    assert!(!sets.is_empty(), "the examples render no StatefulSet:\n{text}");
    for s in sets {
        let containers = s["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
        let mta = containers.iter().find(|c| c["name"] == "mta").expect("mta container");
        let command: Vec<&str> = mta["command"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(command, ["tini", "--", "sendfleet", "agent"], "{}", s["metadata"]["name"].as_str().unwrap());
    }
}

#[test]
fn containerfile_installs_tini_as_the_entrypoint() {
    let cf = std::fs::read_to_string(repo().join("Containerfile")).unwrap();
    let install = cf.lines().find(|l| l.contains("apt-get install")).expect("apt-get install line");
    assert!(install.split_whitespace().any(|w| w == "tini"), "{install}");
    let want = format!("ENTRYPOINT [{}]", ENTRYPOINT.map(|e| format!("\"{e}\"")).join(", "));
    assert!(cf.lines().any(|l| l.trim() == want), "Containerfile lacks `{want}`");
    // hack/build-image.sh (the image the tests run) says the same.
    let script = std::fs::read_to_string(repo().join("hack/build-image.sh")).unwrap();
    let packages = script.lines().find(|l| l.starts_with("PACKAGES=(")).expect("PACKAGES line");
    assert!(packages.contains(" tini"), "{packages}");
    assert!(script.lines().any(|l| l == format!("ENTRYPOINT=({})", ENTRYPOINT.join(" "))), "build-image.sh entrypoint");
}

/// One file out of the (uncompressed) OCI archive.
fn archive_file(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("tar").arg("-xOf").arg(archive).arg(format!("./{name}")).output().unwrap();
    assert!(out.status.success(), "{name} not in {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    archive_file(archive, &format!("blobs/{}", digest.replacen(':', "/", 1)))
}

#[test]
fn image_runs_the_agent_under_tini() {
    let archive = e2e_support::image_archive();
    let index: serde_json::Value = serde_json::from_slice(&archive_file(&archive, "index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().expect("index names a manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&archive, manifest_digest)).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&archive, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(ENTRYPOINT), "{config}");

    // tini and the agent are files of the image, where the entrypoint and
    // the pods' command (PATH lookup) expect them.
    let dir = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let path = dir.path().join("layer");
        std::fs::write(&path, blob(&archive, layer["digest"].as_str().unwrap())).unwrap();
        let list = Command::new("tar").arg("-tf").arg(&path).output().unwrap();
        assert!(list.status.success());
        found.extend(
            String::from_utf8_lossy(&list.stdout)
                .lines()
                .map(|l| l.trim_start_matches("./").to_string())
                .filter(|l| l == "usr/bin/tini" || l == "usr/local/bin/sendfleet"),
        );
    }
    found.sort();
    assert_eq!(found, ["usr/bin/tini", "usr/local/bin/sendfleet"], "files in the image's layers");
    let path = config["config"]["Env"].as_array().unwrap().iter().find_map(|e| e.as_str()?.strip_prefix("PATH="));
    let path = path.expect("PATH in the image config");
    assert!(path.split(':').any(|d| d == "/usr/bin") && path.split(':').any(|d| d == "/usr/local/bin"), "{path}");
}
