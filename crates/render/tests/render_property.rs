//! Property: whatever the input, an accepted render never produces a Postfix
//! file with parameters, services, overrides or table keys beyond the
//! intended ones. Inputs mix valid values with hostile strings (newlines,
//! `#`, `,`, `=`, ` -o `, brackets, Unicode) in every user-controlled field.

mod support;

use std::collections::BTreeSet;

use proptest::prelude::*;
use sendfleet_render::api::*;
use sendfleet_render::render::{render_pool, table_pattern, Observed, PoolInput, Settings};

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.example.com".to_string()),
        Just("*.example.net".to_string()),
        Just("192.0.2.7".to_string()),
        Just("300s".to_string()),
        "[a-z0-9.*]{1,20}",
        "[a-z0-9.\\-\n#, =:\\[\\]/*\t{}$]{0,30}",
        "[a-z]{1,8}\\.[a-z]{2,5}( -o content_filter=x|\nrelayhost = x|#x|,x)",
        any::<String>(),
    ]
}

const STATIC_PARAMS: &[&str] = &[
    "compatibility_level",
    "myhostname",
    "mydestination",
    "local_recipient_maps",
    "local_transport",
    "alias_maps",
    "alias_database",
    "relay_domains",
    "notify_classes",
    "biff",
    "append_dot_mydomain",
    "smtputf8_enable",
    "queue_directory",
    "data_directory",
    "maillog_file",
    "inet_interfaces",
    "smtp_bind_address",
    "smtp_bind_address6",
    "smtp_bind_address_enforce",
    "inet_protocols",
    "mynetworks",
    "smtpd_delay_reject",
    "smtpd_client_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_banner",
    "queue_run_delay",
    "minimal_backoff_time",
    "maximal_backoff_time",
    "maximal_queue_lifetime",
    "bounce_queue_lifetime",
    "delay_warning_time",
    "transport_maps",
    "smtp_tls_security_level",
    "smtp_tls_protocols",
    "smtp_tls_mandatory_protocols",
    "smtp_tls_CAfile",
    "smtp_tls_loglevel",
    "smtp_tls_session_cache_database",
    "smtp_tls_policy_maps",
    "smtp_dns_support_level",
    "header_checks",
    // One recipient per hand-off to a peer (relay routes' peer FILTER).
    "peer-relay_destination_recipient_limit",
];
const OVERRIDES: &[&str] = &[
    "syslog_name",
    "mynetworks",
    "smtpd_client_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "content_filter",
    "rewrite_service_name",
    "transport_maps",
    "parent_domain_matches_subdomains",
    // submission.clientCertificates on the submission listener.
    "smtpd_tls_security_level",
    "smtpd_tls_cert_file",
    "smtpd_tls_key_file",
    "smtpd_tls_mandatory_protocols",
    "smtpd_tls_protocols",
    "smtpd_tls_ask_ccert",
    "smtpd_tls_CAfile",
    "smtpd_tls_loglevel",
];
const SERVICES: &[&str] = &[
    "pickup",
    "cleanup",
    "qmgr",
    "tlsmgr",
    "rewrite",
    "bounce",
    "defer",
    "trace",
    "verify",
    "flush",
    "proxymap",
    "proxywrite",
    "showq",
    "error",
    "retry",
    "discard",
    "anvil",
    "scache",
    "postlog",
    "smtp",
    "relay",
    "peer-relay",
    "rewrite-in",
];

/// Mostly the field's valid value, sometimes something hostile, so that
/// plenty of renders are accepted and their output gets checked.
fn field(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![17 => Just(valid.to_string()), 3 => hostile()]
}

#[derive(Debug, Clone)]
struct Input {
    address: String,
    helo: String,
    domain0: String,
    domain1: String,
    relay: String,
    backoff: String,
    cidr: String,
    paused: String,
    name: String,
    zone: String,
    policy_name: String,
}

fn inputs() -> impl Strategy<Value = Input> {
    (
        (
            field("192.0.2.9"),
            field("b.example.com"),
            field("example.net"),
            field("*.example.net"),
            field("relay.example.org"),
            field("1h"),
        ),
        (field("10.0.0.0/8"), field("provider incident"), field("bb"), field("zen.example.org"), field("dp")),
    )
        .prop_map(
            |((address, helo, domain0, domain1, relay, backoff), (cidr, paused, name, zone, policy_name))| Input {
                address,
                helo,
                domain0,
                domain1,
                relay,
                backoff,
                cidr,
                paused,
                name,
                zone,
                policy_name,
            },
        )
}

#[test]
fn accepted_renders_stay_inside_the_intended_vocabulary() {
    use proptest::test_runner::{Config, TestRunner};
    let accepted = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config { cases: 1024, ..Config::default() });
    runner
        .run(&inputs(), |i| {
            let ok = check(i)?;
            if ok {
                accepted.set(accepted.get() + 1)
            } else {
                refused.set(refused.get() + 1)
            }
            Ok(())
        })
        .unwrap();
    // The property is only meaningful if both sides were exercised.
    assert!(accepted.get() >= 100, "only {} renders accepted", accepted.get());
    assert!(refused.get() >= 100, "only {} renders refused", refused.get());
}

/// Ok(true): accepted and the output checked; Ok(false): refused.
fn check(i: Input) -> Result<bool, TestCaseError> {
    let Input { address, helo, domain0, domain1, relay, backoff, cidr, paused, name, zone, policy_name } = i;
    {
        let mut pool = support::pool();
        pool.spec.egress_ips[0].address = address;
        pool.spec.egress_ips[1].helo_name = helo;
        pool.spec.egress_ips[1].name = name;
        pool.spec.retry.maximal_backoff = backoff;
        // Half the cases authenticate submission by client certificate
        // (public CIDRs accepted), with a hostile name for its Secret.
        if cidr.len() % 2 == 1 {
            pool.spec.submission.client_certificates = Some(ClientCertificates {
                trusted_ca: TrustedCa { secret_name: Some(zone.clone()), config_map_name: None, key: "ca.crt".into() },
                server_certificate_secret_name: relay.clone(),
            });
        }
        pool.spec.submission.allowed_cidrs = vec![cidr];
        pool.spec.reputation.zones = vec![zone];
        let mut policy = support::policy();
        policy.metadata.name = Some(policy_name);
        policy.spec.domains = vec![domain0, domain1];
        policy.spec.route.as_mut().unwrap().relay_host = Some(relay.clone());
        policy.spec.paused = Some(paused);
        policy.spec.slow_down = Some(SlowDown {
            deferrals: 3,
            window: "10m".into(),
            messages_per_minute: 6,
            recovery_interval: "30m".into(),
        });
        let pools = vec![pool.clone()];
        let observed = Observed::default();
        let policies = [policy.clone()];
        let input = PoolInput { pool: &pool, policies: &policies, plan: None, pools: &pools, observed: &observed };
        let Ok(rp) = render_pool(input, &Settings::default()) else {
            return Ok(false);
        };

        let mut transports: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
        transports.insert(pool.spec.submission.port.to_string());
        transports.insert(Settings::default().peer_port.to_string());
        let mut params: BTreeSet<String> = STATIC_PARAMS.iter().map(|s| s.to_string()).collect();
        for t in ["smtp".to_string()]
            .into_iter()
            .chain(rp.policies.iter().flat_map(|p| [format!("dp-{p}"), format!("dp-{p}-slow")]))
        {
            params.insert(format!("{t}_destination_concurrency_limit"));
            params.insert(format!("{t}_destination_rate_delay"));
            transports.insert(t);
        }
        // Transport entries are keyed by domain; the relay route's TLS
        // requirement by its nexthop (Postfix's tls_policy lookup key).
        let (transport_keys, tls_keys): (BTreeSet<String>, BTreeSet<String>) = if rp.policies.is_empty() {
            Default::default()
        } else {
            (policy.spec.domains.iter().map(|d| table_pattern(d)).collect(), [format!("[{relay}]:2525")].into())
        };

        for inst in &rp.instances {
            for line in inst.files["main.cf"].lines().filter(|l| !l.starts_with('#')) {
                let name = line.split(" =").next().unwrap();
                prop_assert!(params.contains(name), "unexpected main.cf line {line:?}");
                prop_assert!(
                    line.len() == name.len() + 2 || line[name.len()..].starts_with(" = "),
                    "malformed line {line:?}"
                );
            }
            for line in inst.files["master.cf"].lines().filter(|l| !l.starts_with('#')) {
                if let Some(o) = line.strip_prefix("  -o ") {
                    let (k, v) = o.split_once('=').unwrap();
                    prop_assert!(OVERRIDES.contains(&k), "unexpected override {line:?}");
                    prop_assert!(!v.contains(char::is_whitespace), "override value with whitespace {line:?}");
                } else {
                    let fields: Vec<&str> = line.split(' ').collect();
                    prop_assert_eq!(fields.len(), 8, "service line {:?}", line);
                    prop_assert!(transports.contains(fields[0]), "unexpected service {line:?}");
                }
            }
            // The peer listener's FILTERs: the relay route's domains only.
            let peer_keys = if inst.files.contains_key("peer_routes") { &transport_keys } else { &BTreeSet::new() };
            for (table, keys) in [("transport", &transport_keys), ("tls_policy", &tls_keys), ("peer_routes", peer_keys)]
            {
                let Some(text) = inst.files.get(table) else { continue };
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    let (k, v) = line.split_once('\t').unwrap();
                    prop_assert!(keys.contains(k), "unexpected {table} key {line:?}");
                    prop_assert!(!v.contains('\n') && !v.contains('#'));
                }
            }
            for f in inst.files.values() {
                prop_assert!(f.is_ascii(), "non-ASCII reached a file");
            }
        }
        Ok(true)
    }
}
