//! The render core stays pure: no client, no runtime, no clock, no file
//! system, no processes, no environment. Checked on its manifest and source
//! so a careless `use std::fs` fails the build's tests, not a review.

use std::path::Path;

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn manifest_has_no_io_dependencies() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for forbidden in
        ["tokio", "kube ", "kube-client", "kube-runtime", "kube =", "hyper", "reqwest", "chrono", "jiff =", "time ="]
    {
        assert!(!deps.contains(forbidden), "render crate depends on {forbidden:?}:\n{deps}");
    }
}

#[test]
fn source_does_no_io_and_reads_no_clock() {
    let mut files = vec![];
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 5);
    for f in files {
        // Comments may name what the code must not do.
        let text: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for forbidden in [
            "std::fs",
            "std::env",
            "std::process",
            "std::time",
            "SystemTime",
            "Instant::",
            "TcpStream",
            "UdpSocket",
            "std::io::stdin",
            "println!",
            "eprintln!",
        ] {
            assert!(!text.contains(forbidden), "{} uses {forbidden}", f.display());
        }
    }
}
