//! The rendered files, fed to real Postfix (Debian's package): `postconf -n`
//! lists exactly the intended parameters, `postfix check` is clean, `postmap`
//! builds every table and answers the expected lookups. Also the golden
//! files of examples/ (set SENDFLEET_UPDATE_GOLDEN=1 to rewrite them).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use sendfleet_render::postfix::{HASH_MAPS, MAIN_CF};
use sendfleet_render::render::{render_pool, Observed, PoolInput, RenderedInstance, Settings};

fn require_postfix() {
    let ok = Command::new("postconf").arg("mail_version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "Postfix is not installed: run `make deps` (apt-get install -y postfix) — these tests need the real thing"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Render examples/ with queue and data directories inside `root`.
fn render_examples(root: &Path) -> Vec<RenderedInstance> {
    let r = support::examples();
    let settings = Settings {
        queue_directory: root.join("queue").display().to_string(),
        data_directory: root.join("data").display().to_string(),
        ..Settings::default()
    };
    let observed = Observed::default();
    let mut out = vec![];
    for pool in &r.pools {
        let plan = r.plans.iter().find(|p| p.metadata.name == pool.spec.warmup_plan_ref);
        let input = PoolInput { pool, policies: &r.policies, plan, pools: &r.pools, observed: &observed };
        let rp = render_pool(input, &settings).unwrap_or_else(|e| panic!("examples must render: {e}"));
        assert!(rp.invalid_policies.is_empty(), "{:?}", rp.invalid_policies);
        out.extend(rp.instances);
    }
    assert!(!out.is_empty());
    out
}

fn write_instance(dir: &Path, inst: &RenderedInstance) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in &inst.files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Postfix refuses `inet_interfaces` addresses that are not on an interface,
/// so the egress addresses go on `lo` — only ever inside the private network
/// namespace the cargo runner (hack/netns-run) gives each test binary.
fn add_egress_addresses(instances: &[RenderedInstance]) {
    assert_eq!(
        std::env::var("SENDFLEET_NETNS").as_deref(),
        Ok("1"),
        "refusing to add addresses to the host's lo: run through `cargo test` (runner hack/netns-run), not directly"
    );
    for i in instances {
        let _ = Command::new("ip").args(["addr", "add", &format!("{}/32", i.address), "dev", "lo"]).output();
    }
}

fn prepare_dirs(root: &Path) {
    std::fs::create_dir_all(root.join("queue")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    run(Command::new("chown").args(["postfix:postfix"]).arg(root.join("data")));
}

#[test]
fn postconf_lists_exactly_the_rendered_parameters() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    prepare_dirs(tmp.path());
    for inst in render_examples(tmp.path()) {
        let dir = tmp.path().join(&inst.name);
        write_instance(&dir, &inst);
        let listed = run(Command::new("postconf").arg("-c").arg(&dir).arg("-n"));
        // `postconf -c DIR` reports config_directory = DIR itself; everything
        // else it lists must be ours, and all of ours must be listed.
        let names: BTreeSet<String> = listed
            .lines()
            .filter_map(|l| {
                l.split_once(" = ").map(|(k, _)| k.to_string()).or_else(|| l.strip_suffix(" =").map(String::from))
            })
            .filter(|k| k != "config_directory")
            .collect();
        let intended: BTreeSet<String> = inst.files[MAIN_CF]
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(" = ").next().unwrap().trim_end_matches(" =").to_string())
            .collect();
        assert_eq!(names, intended, "postconf -n for {}:\n{listed}", inst.name);
        assert!(!listed.contains("postconf: warning"), "postconf warned for {}:\n{listed}", inst.name);
        // Values came through as rendered (spot checks on what matters).
        let get = |p: &str| run(Command::new("postconf").arg("-c").arg(&dir).arg("-h").arg(p)).trim().to_string();
        assert_eq!(get("smtp_bind_address"), inst.address);
        assert_eq!(get("myhostname"), inst.helo_name);
        assert_eq!(get("maillog_file"), "/dev/stdout");
        assert_eq!(get("maximal_backoff_time"), "3600s");
        assert_eq!(get("dp-bigmail_destination_rate_delay"), "2s");
        assert_eq!(get("dp-bigmail_destination_concurrency_limit"), "1");
        // master.cf services as Postfix parses them.
        let services = run(Command::new("postconf").arg("-c").arg(&dir).arg("-M"));
        for svc in ["587", "2525", "smtp", "peer-relay", "dp-bigmail", "dp-bigmail-slow", "retry", "rewrite-in"] {
            assert!(
                services.lines().any(|l| l.split_whitespace().next() == Some(svc)),
                "service {svc} missing:\n{services}"
            );
        }
        let bigmail = services.lines().find(|l| l.starts_with("dp-bigmail ")).unwrap();
        assert_eq!(bigmail.split_whitespace().nth(6), Some("2"), "maxproc of dp-bigmail: {bigmail}");
        let peer_in = run(Command::new("postconf").arg("-c").arg(&dir).arg("-P"));
        assert!(peer_in.contains("2525/inet/content_filter = smtp:"), "{peer_in}");
        // Listeners resolve through a rewrite service that never asks the
        // agent (a paused domain must queue, not be refused at RCPT).
        assert!(peer_in.contains("587/inet/rewrite_service_name = rewrite-in"), "{peer_in}");
        assert!(peer_in.contains("rewrite-in/unix/transport_maps = hash:$config_directory/transport"), "{peer_in}");
    }
}

#[test]
fn postfix_check_is_clean_and_postmap_builds_every_table() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    prepare_dirs(tmp.path());
    let instances = render_examples(tmp.path());
    add_egress_addresses(&instances);
    for inst in instances {
        let dir = tmp.path().join(&inst.name);
        write_instance(&dir, &inst);
        for map in HASH_MAPS {
            run(Command::new("postmap").arg("-c").arg(&dir).arg(format!("hash:{}", dir.join(map).display())));
            assert!(dir.join(format!("{map}.db")).exists(), "{map}.db not built");
        }
        let out = run(Command::new("postfix").arg("-c").arg(&dir).arg("check"));
        let bad: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(": warning:") || l.contains(": fatal:") || l.contains(": error:"))
            .collect();
        assert!(bad.is_empty(), "postfix check for {}:\n{out}", inst.name);
        let q = |map: &str, key: &str| {
            let o = Command::new("postmap")
                .arg("-c")
                .arg(&dir)
                .arg("-q")
                .arg(key)
                .arg(format!("hash:{}", dir.join(map).display()))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(q("transport", "bigmail.example"), "dp-bigmail:");
        assert_eq!(q("transport", ".bigmail.example"), "dp-bigmail:");
        assert_eq!(q("transport", "partner.example"), "smtp:[relay.partner.example]:25");
        assert_eq!(q("transport", "other.example"), "");
        assert_eq!(q("tls_policy", "bigmail.example"), "encrypt protocols=>=TLSv1.2");
        // A relay route's TLS requirement: Postfix looks smtp_tls_policy_maps
        // up by the next hop, verbatim as the transport entry names it, so
        // the key is that nexthop — taken here from the rendered transport
        // table — carrying the DomainPolicy's level and protocol floor.
        let relay = q("transport", "partner.example");
        let nexthop = relay.strip_prefix("smtp:").unwrap_or_else(|| panic!("relay route: {relay}"));
        assert_eq!(nexthop, "[relay.partner.example]:25");
        assert_eq!(q("tls_policy", nexthop), "verify protocols=>=TLSv1.2");
        // The recipient domain is not a next hop of relayed mail: no key.
        assert_eq!(q("tls_policy", "partner.example"), "");
    }
}

#[test]
fn golden_files_of_examples() {
    let golden = support::repo_root().join("crates/render/tests/golden");
    let update = std::env::var_os("SENDFLEET_UPDATE_GOLDEN").is_some();
    // Golden files use the pod layout's directories, as `sendfleet render` does.
    let r = support::examples();
    let observed = Observed::default();
    let settings = Settings::default();
    let mut seen = BTreeSet::new();
    for pool in &r.pools {
        let plan = r.plans.iter().find(|p| p.metadata.name == pool.spec.warmup_plan_ref);
        let input = PoolInput { pool, policies: &r.policies, plan, pools: &r.pools, observed: &observed };
        let rp = render_pool(input, &settings).unwrap();
        for inst in &rp.instances {
            let dir = golden.join(&rp.namespace).join(&rp.name).join(&inst.name);
            for (name, content) in &inst.files {
                let path = dir.join(name);
                seen.insert(path.clone());
                if update {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, content).unwrap();
                    continue;
                }
                let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                    panic!(
                        "missing golden file {}; run SENDFLEET_UPDATE_GOLDEN=1 cargo test -p sendfleet-render",
                        path.display()
                    )
                });
                assert_eq!(
                    content,
                    &want,
                    "{} differs from the render; review and run with SENDFLEET_UPDATE_GOLDEN=1",
                    path.display()
                );
            }
        }
    }
    assert!(seen.len() >= 15, "expected the examples' instances to produce golden files");
}
