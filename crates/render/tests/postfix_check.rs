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
/// Settings with the queue and data directories in a prepared `root`
/// (the mount directories stay the pod's).
fn scratch_settings(root: &Path) -> Settings {
    prepare_dirs(root);
    Settings {
        queue_directory: root.join("queue").display().to_string(),
        data_directory: root.join("data").display().to_string(),
        ..Settings::default()
    }
}

/// `pool` alone rendered: its first instance and the StatefulSets the
/// operator would create.
fn render_with_statefulsets(
    pool: &sendfleet_render::api::SendingPool,
    settings: &Settings,
) -> (RenderedInstance, Vec<k8s_openapi::api::apps::v1::StatefulSet>) {
    use sendfleet_render::objects::{self, Desired};
    let pools = vec![pool.clone()];
    let observed = Observed::default();
    let input = PoolInput { pool, policies: &[], plan: None, pools: &pools, observed: &observed };
    let rp = render_pool(input, settings).unwrap();
    let sts = objects::build(pool, &rp, settings)
        .into_iter()
        .filter_map(|d| match d {
            Desired::StatefulSet(s) => Some(s),
            _ => None,
        })
        .collect();
    (rp.instances.into_iter().next().unwrap(), sts)
}

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
        // A peer sends relay-routed and throttled mail handed to it on the
        // same route: its peer listener's FILTER is the transport entry,
        // read as texthash.
        let peer_routes = format!("texthash:{}", dir.join("peer_routes").display());
        let fq = |key: &str| {
            let o = Command::new("postmap").arg("-c").arg(&dir).arg("-q").arg(key).arg(&peer_routes).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(fq("partner.example"), format!("FILTER {relay}"));
        assert_eq!(fq("bigmail.example"), format!("FILTER {}", q("transport", "bigmail.example")));
        assert_eq!(fq("bigmail.example"), "FILTER dp-bigmail:");
        assert_eq!(fq("unlisted.example"), "");
        let peer_in = run(Command::new("postconf").arg("-c").arg(&dir).arg("-P"));
        assert!(
            peer_in.contains(
                "2525/inet/smtpd_recipient_restrictions = check_recipient_access,texthash:$config_directory/peer_routes,permit_mynetworks,reject"
            ),
            "{peer_in}"
        );
        // `.example.com` keys match subdomains there, as in `transport`.
        let parent = peer_in.lines().find(|l| l.starts_with("2525/inet/parent_domain_matches_subdomains = ")).unwrap();
        assert!(!parent.contains("smtpd_access_maps"), "{parent}");
        let limit =
            run(Command::new("postconf").arg("-c").arg(&dir).arg("-h").arg("peer-relay_destination_recipient_limit"));
        assert_eq!(limit.trim(), "1");
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

/// A plain SMTP responder (no STARTTLS) on `addr`: accepts every message.
fn plain_smtp_receiver(addr: &str) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut out) = conn else { continue };
            let reader = BufReader::new(out.try_clone().unwrap());
            let mut say = |s: &str| {
                let _ = out.write_all(format!("{s}\r\n").as_bytes());
            };
            say("220 relay.test ESMTP");
            let mut in_data = false;
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let upper = line.trim_end().to_ascii_uppercase();
                if in_data {
                    if upper == "." {
                        in_data = false;
                        say("250 queued");
                    }
                } else if upper.starts_with("EHLO") {
                    say("250-relay.test");
                    say("250 8BITMIME");
                } else if upper.starts_with("DATA") {
                    in_data = true;
                    say("354 go on");
                } else if upper.starts_with("QUIT") {
                    say("221 bye");
                    break;
                } else {
                    say("250 ok");
                }
            }
        }
    });
}

/// The relay-route fix on real Postfix, delivering: Postfix reads the TLS
/// requirement under the relay's nexthop key the renderer wrote. Two relay
/// routes to the same plain-SMTP relay (two ports): the one requiring
/// `encrypt` is deferred ("TLS is required, but was not offered"), the one
/// without a requirement is delivered — so the deferral is the key's doing.
/// The rendered main.cf runs with two changes only: the static transport
/// table without the agent's socketmap in front (the agent answers NOTFOUND
/// for relay rules, so the static table routes them either way), and a log
/// file instead of stdout.
#[test]
fn real_postfix_applies_the_tls_requirement_of_a_relay_route() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    prepare_dirs(tmp.path());
    let pool = support::pool();
    let relay = |name: &str, domain: &str, port: u16, tls: &str| -> sendfleet_render::api::DomainPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {{name: {name}, namespace: ns}}\n\
             spec:\n  domains: [{domain}]\n  route: {{relayHost: 127.0.0.2, port: {port}}}\n{tls}"
        ))
        .unwrap()
    };
    let policies = vec![
        relay("secure", "secure.test", 2526, "  tls: {level: encrypt, minimumProtocol: TLSv1.2}\n"),
        relay("plain", "plain.test", 2527, ""),
    ];
    let settings = Settings {
        queue_directory: tmp.path().join("queue").display().to_string(),
        data_directory: tmp.path().join("data").display().to_string(),
        ..Settings::default()
    };
    let observed = Observed::default();
    let pools = vec![pool.clone()];
    let input = PoolInput { pool: &pool, policies: &policies, plan: None, pools: &pools, observed: &observed };
    let rp = render_pool(input, &settings).unwrap();
    let inst = rp.instances.into_iter().next().unwrap();
    assert!(inst.files["tls_policy"].contains("[127.0.0.2]:2526\tencrypt protocols=>=TLSv1.2"));
    add_egress_addresses(std::slice::from_ref(&inst));
    let _ = Command::new("ip").args(["addr", "add", "127.0.0.2/32", "dev", "lo"]).output();
    plain_smtp_receiver("127.0.0.2:2526");
    plain_smtp_receiver("127.0.0.2:2527");

    let dir = tmp.path().join(&inst.name);
    write_instance(&dir, &inst);
    let log = tmp.path().join("maillog");
    run(Command::new("postconf").arg("-c").arg(&dir).arg("-e").args([
        "transport_maps = hash:$config_directory/transport".to_string(),
        format!("maillog_file_prefixes = {}", tmp.path().display()),
        format!("maillog_file = {}", log.display()),
    ]));
    for map in HASH_MAPS {
        run(Command::new("postmap").arg("-c").arg(&dir).arg(format!("hash:{}", dir.join(map).display())));
    }
    run(Command::new("postfix").arg("-c").arg(&dir).arg("start"));
    for rcpt in ["user@secure.test", "user@plain.test"] {
        let mut child = Command::new("sendmail")
            .arg("-C")
            .arg(&dir)
            .args(["-f", "app@client.test", rcpt])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"Subject: relay tls\n\nhello\n").unwrap();
        assert!(child.wait().unwrap().success(), "sendmail to {rcpt}");
    }
    let outcome = |rcpt: &str| -> Option<String> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=")).map(str::to_string)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while (outcome("user@secure.test").is_none() || outcome("user@plain.test").is_none())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let secure = outcome("user@secure.test");
    let plain = outcome("user@plain.test");
    let _ = Command::new("postfix").arg("-c").arg(&dir).arg("stop").output();
    let all = std::fs::read_to_string(&log).unwrap_or_default();
    let secure = secure.unwrap_or_else(|| panic!("no outcome for secure.test:\n{all}"));
    let plain = plain.unwrap_or_else(|| panic!("no outcome for plain.test:\n{all}"));
    assert!(secure.contains("relay=127.0.0.2[127.0.0.2]:2526"), "{secure}");
    assert!(
        secure.contains("status=deferred") && secure.contains("TLS is required, but was not offered"),
        "the relay route's requirement was not applied: {secure}"
    );
    assert!(plain.contains("relay=127.0.0.2[127.0.0.2]:2527") && plain.contains("status=sent"), "{plain}");
}

/// A hand-off target's relay permission, as Postfix reads it: pool `main`
/// routes `handoff.test` to pool `bulk` (DomainPolicy `route.pool`), so
/// bulk's `mynetworks` names main's egress addresses, one host each, next
/// to what it named before (its allowed CIDRs and its own instances) — and
/// nothing of the pool that does not route to it.
#[test]
fn a_hand_off_target_lets_exactly_the_source_pools_addresses_relay() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    prepare_dirs(tmp.path());
    let pool = |name: &str, role: &str, ips: &str| -> sendfleet_render::api::SendingPool {
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\n\
             metadata: {{name: {name}, namespace: ns, labels: {{role: {role}}}}}\nspec:\n  egressIPs: {ips}\n"
        ))
        .unwrap()
    };
    let pools = vec![
        pool("bulk", "bulk", "[{name: b, address: 192.0.2.50, heloName: b.example.com}]"),
        pool(
            "main",
            "main",
            "[{name: a, address: 192.0.2.1, heloName: a.example.com}, {name: c, address: '2001:db8::1', heloName: c.example.com}]",
        ),
        pool("other", "other", "[{name: o, address: 192.0.2.99, heloName: o.example.com}]"),
    ];
    let policies: Vec<sendfleet_render::api::DomainPolicy> = vec![serde_yaml::from_str(
        "apiVersion: sendfleet.io/v1alpha1\nkind: DomainPolicy\nmetadata: {name: handoff, namespace: ns}\n\
         spec:\n  domains: [handoff.test]\n  route: {pool: bulk}\n  poolSelector: {matchLabels: {role: main}}\n",
    )
    .unwrap()];
    let settings = Settings {
        queue_directory: tmp.path().join("queue").display().to_string(),
        data_directory: tmp.path().join("data").display().to_string(),
        ..Settings::default()
    };
    let observed = Observed::default();
    let mynetworks = |target: usize| -> String {
        let input =
            PoolInput { pool: &pools[target], policies: &policies, plan: None, pools: &pools, observed: &observed };
        let inst = render_pool(input, &settings).unwrap().instances.remove(0);
        let dir = tmp.path().join(&inst.name);
        write_instance(&dir, &inst);
        run(Command::new("postconf").arg("-c").arg(&dir).arg("-h").arg("mynetworks")).trim().to_string()
    };
    // The target's own address (192.0.2.50) is not listed: its peers use
    // the peer listener, and a node process would come from that address.
    assert_eq!(mynetworks(0), "127.0.0.0/8 192.0.2.1/32 [2001:db8::1]/128");
    // The source pool and the bystander list only their clients: nobody
    // hands them mail.
    assert_eq!(mynetworks(1), "127.0.0.0/8");
    assert_eq!(mynetworks(2), "127.0.0.0/8");
}

/// `spec.tls.trustedCA`, as Postfix reads it and the pod mounts it: the
/// bundle's fixed path in `smtp_tls_CAfile`, the system CAs as the hashed
/// directory `smtp_tls_CApath` (OpenSSL trusts both), `postfix check`
/// clean; the StatefulSet mounts exactly the named key of the named Secret
/// (or ConfigMap), read-only, as that file. The user's names appear in the
/// pod spec only, never in main.cf. (Delivery with `verify` through the
/// bundle: tests/agent_tls.rs.)
#[test]
fn a_trusted_ca_bundle_is_trusted_beside_the_system_cas() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    let settings = scratch_settings(tmp.path());
    let observed = Observed::default();
    let render = |ca: &str| {
        let mut pool = support::pool();
        pool.spec.tls.trusted_ca = Some(serde_yaml::from_str(ca).unwrap());
        render_with_statefulsets(&pool, &settings)
    };
    let (inst, sts) = render("{secretName: partner-ca, key: bundle.pem}");
    assert!(!inst.files[MAIN_CF].contains("partner-ca") && !inst.files[MAIN_CF].contains("bundle.pem"));
    add_egress_addresses(std::slice::from_ref(&inst));
    let dir = tmp.path().join(&inst.name);
    write_instance(&dir, &inst);
    let get = |p: &str| run(Command::new("postconf").arg("-c").arg(&dir).arg("-h").arg(p)).trim().to_string();
    assert_eq!(get("smtp_tls_CAfile"), "/etc/sendfleet/trusted-ca/ca.crt");
    assert_eq!(get("smtp_tls_CApath"), "/etc/ssl/certs");
    assert!(
        std::fs::read_dir("/etc/ssl/certs").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".0")),
        "/etc/ssl/certs is not an OpenSSL hashed directory (Debian's ca-certificates makes it one)"
    );
    for map in HASH_MAPS {
        run(Command::new("postmap").arg("-c").arg(&dir).arg(format!("hash:{}", dir.join(map).display())));
    }
    let out = run(Command::new("postfix").arg("-c").arg(&dir).arg("check"));
    assert!(!out.contains("warning") && !out.contains("fatal"), "postfix check:\n{out}");
    assert_eq!(sts.len(), 2);
    for s in &sts {
        let pod = s.spec.template.spec.as_ref().unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "trusted-ca").expect("trusted-ca volume");
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("partner-ca"));
        let items = secret.items.as_ref().unwrap();
        assert_eq!((items.len(), items[0].key.as_str(), items[0].path.as_str()), (1, "bundle.pem", "ca.crt"));
        assert_eq!(secret.optional, None, "the pod waits for its bundle rather than defer every verify delivery");
        assert!(volume.config_map.is_none());
        let mount =
            pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "trusted-ca").expect("mount");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/sendfleet/trusted-ca", Some(true)));
    }
    // A ConfigMap (trust-manager's default target), default key `ca.crt`.
    let (inst, sts) = render("{configMapName: corp-bundle}");
    assert!(inst.files[MAIN_CF].contains("smtp_tls_CAfile = /etc/sendfleet/trusted-ca/ca.crt"));
    let pod = sts[0].spec.template.spec.as_ref().unwrap();
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "trusted-ca").unwrap();
    let cm = volume.config_map.as_ref().expect("a ConfigMap volume");
    assert_eq!(cm.name, "corp-bundle");
    assert_eq!(cm.items.as_ref().unwrap()[0].key, "ca.crt");
    assert!(volume.secret.is_none());
    // Without a bundle: the system file alone, as before.
    let pools = vec![support::pool()];
    let input = PoolInput { pool: &pools[0], policies: &[], plan: None, pools: &pools, observed: &observed };
    let plain = render_pool(input, &settings).unwrap().instances.remove(0);
    assert!(plain.files[MAIN_CF].contains("smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt"));
    assert!(!plain.files[MAIN_CF].contains("smtp_tls_CApath"));
}

/// `submission.clientCertificates` with a public allowed network, as
/// Postfix reads it: mynetworks keeps only the private entries; the
/// submission service requires STARTTLS with the mounted server
/// certificate, asks for a client certificate checked against the mounted
/// client CA, lets only allowed networks connect (its `cidr:` table holds
/// every allowed network) and relays for mynetworks or a certified client.
/// The pod mounts the server Secret (key readable by root only) and the CA
/// bundle. (Real clients with and without a certificate:
/// tests/agent_relay.rs.)
#[test]
fn client_certificates_let_public_networks_connect_but_not_into_mynetworks() {
    require_postfix();
    let tmp = tempfile::tempdir().unwrap();
    let settings = scratch_settings(tmp.path());
    let mut pool = support::pool();
    pool.spec.submission.allowed_cidrs = vec!["10.0.0.0/8".into(), "100.0.0.0/8".into(), "2001:4860::/32".into()];
    pool.spec.submission.client_certificates = Some(
        serde_yaml::from_str("{trustedCA: {configMapName: clients-ca}, serverCertificateSecretName: submission-tls}")
            .unwrap(),
    );
    let (inst, sts) = render_with_statefulsets(&pool, &settings);
    add_egress_addresses(std::slice::from_ref(&inst));
    let dir = tmp.path().join(&inst.name);
    write_instance(&dir, &inst);
    let get = |p: &str| run(Command::new("postconf").arg("-c").arg(&dir).arg("-h").arg(p)).trim().to_string();
    assert_eq!(get("mynetworks"), "10.0.0.0/8", "a public network never enters mynetworks");
    let port = pool.spec.submission.port;
    let service = |p: &str| {
        let out = run(Command::new("postconf").arg("-c").arg(&dir).arg("-Ph").arg(format!("{port}/inet/{p}")));
        out.trim().to_string()
    };
    assert_eq!(service("smtpd_tls_security_level"), "encrypt");
    assert_eq!(service("smtpd_tls_ask_ccert"), "yes");
    assert_eq!(service("smtpd_tls_cert_file"), "/etc/sendfleet/submission-tls/tls.crt");
    assert_eq!(service("smtpd_tls_key_file"), "/etc/sendfleet/submission-tls/tls.key");
    assert_eq!(service("smtpd_tls_CAfile"), "/etc/sendfleet/client-ca/client-ca.crt");
    assert_eq!(service("smtpd_relay_restrictions"), "permit_mynetworks,permit_tls_all_clientcerts,reject");
    assert_eq!(service("smtpd_recipient_restrictions"), "permit_mynetworks,permit_tls_all_clientcerts,reject");
    assert!(service("smtpd_client_restrictions").ends_with("submission_clients,reject"));
    // The peer listener is untouched: its own mynetworks, no certificates.
    let peer = run(Command::new("postconf").arg("-c").arg(&dir).arg("-P")).to_string();
    assert!(!peer.lines().any(|l| l.starts_with("2525/") && l.contains("clientcerts")), "{peer}");
    let table = format!("cidr:{}", dir.join("submission_clients").display());
    let lookup = |addr: &str| {
        let out = Command::new("postmap").arg("-c").arg(&dir).arg("-q").arg(addr).arg(&table).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for inside in ["10.1.2.3", "100.1.2.3", "2001:4860::8888"] {
        assert_eq!(lookup(inside), "OK", "{inside} may connect");
    }
    for outside in ["8.8.8.8", "192.168.1.1", "2001:db8::1"] {
        assert_eq!(lookup(outside), "", "{outside} may not connect");
    }
    for map in HASH_MAPS {
        run(Command::new("postmap").arg("-c").arg(&dir).arg(format!("hash:{}", dir.join(map).display())));
    }
    let out = run(Command::new("postfix").arg("-c").arg(&dir).arg("check"));
    assert!(!out.contains("fatal"), "postfix check:\n{out}");
    let pod = sts[0].spec.template.spec.as_ref().unwrap();
    let volume = |n: &str| pod.volumes.as_ref().unwrap().iter().find(|v| v.name == n).cloned().expect(n);
    let cert = volume("submission-tls").secret.expect("a Secret volume");
    assert_eq!(cert.secret_name.as_deref(), Some("submission-tls"));
    let items: Vec<(String, Option<i32>)> = cert.items.unwrap().into_iter().map(|i| (i.path, i.mode)).collect();
    assert_eq!(items, [("tls.crt".to_string(), Some(0o444)), ("tls.key".to_string(), Some(0o400))]);
    let ca = volume("client-ca").config_map.expect("a ConfigMap volume");
    assert_eq!((ca.name.as_str(), ca.items.unwrap()[0].path.as_str()), ("clients-ca", "client-ca.crt"));
    let mounts: Vec<(String, String, Option<bool>)> = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.name == "submission-tls" || m.name == "client-ca")
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("submission-tls".into(), "/etc/sendfleet/submission-tls".into(), Some(true)),
            ("client-ca".into(), "/etc/sendfleet/client-ca".into(), Some(true)),
        ]
    );
}
