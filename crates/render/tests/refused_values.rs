//! Malicious and malformed values the renderer must refuse, each with an
//! error naming the field — as if the API server's schema had been bypassed
//! (the resources are built directly, never admitted).

mod support;

use sendfleet_render::api::*;
use sendfleet_render::render::{render_pool, Observed, PoolInput, RenderError, Settings};

fn render_err(pool: &SendingPool, policies: &[DomainPolicy], plan: Option<&WarmupPlan>) -> String {
    let observed = Observed::default();
    let pools = vec![pool.clone()];
    let input = PoolInput { pool, policies, plan, pools: &pools, observed: &observed };
    match render_pool(input, &Settings::default()) {
        Err(e) => e.to_string(),
        Ok(rp) => match rp.invalid_policies.first() {
            // An invalid DomainPolicy does not stop the pool: it is skipped
            // and reported, so one team's typo cannot halt every pool.
            Some(e) => RenderError::Invalid(e.clone()).to_string(),
            None => panic!("render accepted it:\n{}", rp.instances[0].files["main.cf"]),
        },
    }
}

fn pool_with(f: impl FnOnce(&mut SendingPool)) -> SendingPool {
    let mut p = support::pool();
    f(&mut p);
    p
}

fn policy_with(f: impl FnOnce(&mut DomainPolicy)) -> DomainPolicy {
    let mut p = support::policy();
    f(&mut p);
    p
}

fn plan_with(f: impl FnOnce(&mut WarmupPlan)) -> WarmupPlan {
    let mut p: WarmupPlan = serde_yaml::from_str(
        "apiVersion: sendfleet.io/v1alpha1\nkind: WarmupPlan\nmetadata: {name: w, namespace: ns}\nspec:\n  steps: [{day: 1, dailyCap: 50}, {day: 2, dailyCap: 100}]\n",
    )
    .unwrap();
    f(&mut p);
    p
}

fn trusted_ca(secret: Option<&str>, config_map: Option<&str>, key: &str) -> TrustedCa {
    TrustedCa { secret_name: secret.map(String::from), config_map_name: config_map.map(String::from), key: key.into() }
}

/// (what is tried, how the resource is spoiled, the field the error must name)
type Case<T> = (&'static str, Box<dyn FnOnce(&mut T)>, &'static str);

#[track_caller]
fn refused(err: String, field: &str) {
    assert!(err.contains(field), "error should name {field:?}, got: {err}");
}

#[test]
fn pool_values_are_refused_naming_the_field() {
    let cases: Vec<Case<SendingPool>> = vec![
        (
            "address with injected override",
            Box::new(|p| p.spec.egress_ips[0].address = "1.2.3.4 -o content_filter=x".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "address with newline",
            Box::new(|p| p.spec.egress_ips[0].address = "192.0.2.1\nrelayhost = evil".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "address not canonical",
            Box::new(|p| p.spec.egress_ips[0].address = "192.000.002.001".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "IPv6 upper case",
            Box::new(|p| p.spec.egress_ips[0].address = "2001:DB8::1".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "loopback address",
            Box::new(|p| p.spec.egress_ips[0].address = "127.0.31.1".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "unspecified address",
            Box::new(|p| p.spec.egress_ips[0].address = "0.0.0.0".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "link-local address (an EndpointSlice refuses it)",
            Box::new(|p| p.spec.egress_ips[0].address = "169.254.10.1".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "IPv6 link-local address",
            Box::new(|p| p.spec.egress_ips[0].address = "fe80::1".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "IPv4-mapped IPv6 address",
            Box::new(|p| p.spec.egress_ips[0].address = "::ffff:192.0.2.9".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "multicast address",
            Box::new(|p| p.spec.egress_ips[0].address = "224.0.0.1".into()),
            "spec.egressIPs[0].address",
        ),
        (
            "duplicate address",
            Box::new(|p| p.spec.egress_ips[1].address = "192.0.2.1".into()),
            "spec.egressIPs[1].address",
        ),
        ("duplicate name", Box::new(|p| p.spec.egress_ips[1].name = "a".into()), "spec.egressIPs[1].name"),
        ("name with space", Box::new(|p| p.spec.egress_ips[0].name = "a b".into()), "spec.egressIPs[0].name"),
        ("name with comma", Box::new(|p| p.spec.egress_ips[0].name = "a,b".into()), "spec.egressIPs[0].name"),
        (
            "HELO with newline",
            Box::new(|p| p.spec.egress_ips[0].helo_name = "mx.example.com\nmydestination = x".into()),
            "spec.egressIPs[0].heloName",
        ),
        (
            "HELO with hash",
            Box::new(|p| p.spec.egress_ips[0].helo_name = "mx.example.com#x".into()),
            "spec.egressIPs[0].heloName",
        ),
        (
            "HELO Cyrillic look-alike",
            Box::new(|p| p.spec.egress_ips[0].helo_name = "mх.example.com".into()),
            "spec.egressIPs[0].heloName",
        ),
        (
            "HELO with equals",
            Box::new(|p| p.spec.egress_ips[0].helo_name = "a=b.example.com".into()),
            "spec.egressIPs[0].heloName",
        ),
        (
            "HELO single label",
            Box::new(|p| p.spec.egress_ips[0].helo_name = "localhost".into()),
            "spec.egressIPs[0].heloName",
        ),
        ("no egress IPs", Box::new(|p| p.spec.egress_ips.clear()), "spec.egressIPs"),
        (
            "trusted CA Secret name with a path",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(Some("../kube-system/x"), None, "ca.crt"))),
            "spec.tls.trustedCA.secretName",
        ),
        (
            "trusted CA ConfigMap name with newline",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(None, Some("ca\nsmtp_tls_CAfile = /x"), "ca.crt"))),
            "spec.tls.trustedCA.configMapName",
        ),
        (
            "trusted CA Secret and ConfigMap both",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(Some("a"), Some("b"), "ca.crt"))),
            "spec.tls.trustedCA",
        ),
        (
            "trusted CA naming no object",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(None, None, "ca.crt"))),
            "spec.tls.trustedCA",
        ),
        (
            "trusted CA key escaping the volume",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(Some("lab-ca"), None, "../../etc/passwd"))),
            "spec.tls.trustedCA.key",
        ),
        (
            "trusted CA key of the kubelet's",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(Some("lab-ca"), None, "..data"))),
            "spec.tls.trustedCA.key",
        ),
        (
            "trusted CA key with space",
            Box::new(|p| p.spec.tls.trusted_ca = Some(trusted_ca(Some("lab-ca"), None, "ca crt"))),
            "spec.tls.trustedCA.key",
        ),
        ("backoff 0", Box::new(|p| p.spec.retry.minimal_backoff = "0s".into()), "spec.retry.minimalBackoff"),
        ("backoff order", Box::new(|p| p.spec.retry.minimal_backoff = "2h".into()), "spec.retry.minimalBackoff"),
        (
            "lifetime shorter than backoff",
            Box::new(|p| p.spec.retry.maximal_queue_lifetime = "10m".into()),
            "spec.retry.maximalBackoff",
        ),
        (
            "bounce lifetime longer",
            Box::new(|p| p.spec.retry.bounce_queue_lifetime = "6d".into()),
            "spec.retry.bounceQueueLifetime",
        ),
        (
            "duration without unit",
            Box::new(|p| p.spec.retry.queue_run_delay = "300".into()),
            "spec.retry.queueRunDelay",
        ),
        (
            "duration with newline",
            Box::new(|p| p.spec.retry.queue_run_delay = "300s\ncontent_filter=x".into()),
            "spec.retry.queueRunDelay",
        ),
        (
            "duration full-width digit",
            Box::new(|p| p.spec.retry.maximal_backoff = "３00s".into()),
            "spec.retry.maximalBackoff",
        ),
        (
            "CIDR with host bits",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["10.0.0.1/8".into()]),
            "spec.submission.allowedCIDRs[0]",
        ),
        (
            "CIDR list smuggled",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["10.0.0.0/8, 0.0.0.0/0".into()]),
            "spec.submission.allowedCIDRs[0]",
        ),
        (
            "open relay: every IPv4 client",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["0.0.0.0/0".into()]),
            "spec.submission.allowedCIDRs[0]",
        ),
        (
            "open relay: every IPv6 client",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["10.0.0.0/8".into(), "::/0".into()]),
            "spec.submission.allowedCIDRs[1]",
        ),
        (
            "client network overlapping public space",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["10.0.0.0/7".into()]),
            "spec.submission.allowedCIDRs[0]",
        ),
        (
            "public client network",
            Box::new(|p| p.spec.submission.allowed_cidrs = vec!["8.8.8.0/24".into()]),
            "spec.submission.allowedCIDRs[0]",
        ),
        (
            "public client network, client certificates with a CA key that is a path",
            Box::new(|p| {
                p.spec.submission.allowed_cidrs = vec!["8.8.8.0/24".into()];
                p.spec.submission.client_certificates = Some(ClientCertificates {
                    trusted_ca: trusted_ca(Some("clients-ca"), None, "../ca.crt"),
                    server_certificate_secret_name: "submission-tls".into(),
                });
            }),
            "spec.submission.clientCertificates.trustedCA.key",
        ),
        (
            "client certificates naming both a Secret and a ConfigMap",
            Box::new(|p| {
                p.spec.submission.client_certificates = Some(ClientCertificates {
                    trusted_ca: trusted_ca(Some("a"), Some("b"), "ca.crt"),
                    server_certificate_secret_name: "submission-tls".into(),
                });
            }),
            "spec.submission.clientCertificates.trustedCA",
        ),
        (
            "server certificate Secret name with a newline",
            Box::new(|p| {
                p.spec.submission.client_certificates = Some(ClientCertificates {
                    trusted_ca: trusted_ca(Some("clients-ca"), None, "ca.crt"),
                    server_certificate_secret_name: "tls\nsmtpd_tls_security_level = none".into(),
                });
            }),
            "spec.submission.clientCertificates.serverCertificateSecretName",
        ),
        ("submission port 0", Box::new(|p| p.spec.submission.port = 0), "spec.submission.port"),
        (
            "throttle 7/min",
            Box::new(|p| {
                p.spec.default_throttle = Some(Throttle { messages_per_minute: Some(7), ..Default::default() })
            }),
            "spec.defaultThrottle.messagesPerMinute",
        ),
        (
            "throttle connections 0",
            Box::new(|p| p.spec.default_throttle = Some(Throttle { connections: Some(0), ..Default::default() })),
            "spec.defaultThrottle.connections",
        ),
        ("queue size", Box::new(|p| p.spec.queue.size = "10GB".into()), "spec.queue.size"),
        ("image with space", Box::new(|p| p.spec.image = Some("img:1 --privileged".into())), "spec.image"),
        (
            "spam header regex",
            Box::new(|p| {
                p.spec.spam_route =
                    Some(SpamRoute { pool: "other".into(), header: "X-Spam/ FILTER x".into(), value: "YES".into() })
            }),
            "spec.spamRoute.header",
        ),
        (
            "spam to itself",
            Box::new(|p| {
                p.spec.spam_route = Some(SpamRoute { pool: "p".into(), header: "X-Spam".into(), value: "YES".into() })
            }),
            "spec.spamRoute.pool",
        ),
        ("warn >= critical", Box::new(|p| p.spec.backlog.warn_age = "12h".into()), "spec.backlog.warnAge"),
        (
            "DNSBL zone with space",
            Box::new(|p| p.spec.reputation.zones = vec!["zen.spamhaus.org bad".into()]),
            "spec.reputation.zones[0]",
        ),
        (
            "Multus without attachment",
            Box::new(|p| p.spec.egress.mode = EgressMode::Multus),
            "spec.egress.networkAttachment",
        ),
        (
            "pool name too long",
            Box::new(|p| p.metadata.name = Some("a-very-long-pool-name-indeed-longer-than-forty".into())),
            "metadata.name",
        ),
        ("pool name starts with digit", Box::new(|p| p.metadata.name = Some("1pool".into())), "metadata.name"),
        (
            "pool+instance too long",
            Box::new(|p| {
                p.metadata.name = Some("a-pool-name-of-thirty-chars-xx".into());
                p.spec.egress_ips[0].name = "an-instance-name-of-thirty-abc".into()
            }),
            "spec.egressIPs[0].name",
        ),
    ];
    let n = cases.len();
    for (what, mutate, field) in cases {
        let pool = pool_with(mutate);
        let err = render_err(&pool, &[], None);
        assert!(err.contains(field), "{what}: error should name {field:?}, got: {err}");
    }
    assert!(n >= 30);
}

/// The same public client network the cases above refuse is accepted once
/// client certificates authenticate submission; without them it is refused.
#[test]
fn a_public_client_network_needs_client_certificates() {
    let public = |certs: bool| {
        pool_with(|p| {
            p.spec.submission.allowed_cidrs = vec!["10.0.0.0/8".into(), "8.8.8.0/24".into()];
            p.spec.submission.client_certificates = certs.then(|| ClientCertificates {
                trusted_ca: trusted_ca(Some("clients-ca"), None, "ca.crt"),
                server_certificate_secret_name: "submission-tls".into(),
            });
        })
    };
    refused(render_err(&public(false), &[], None), "spec.submission.allowedCIDRs[1]");
    let pool = public(true);
    let pools = vec![pool.clone()];
    let observed = Observed::default();
    let input = PoolInput { pool: &pool, policies: &[], plan: None, pools: &pools, observed: &observed };
    let rp = render_pool(input, &Settings::default()).expect("accepted with client certificates");
    let main_cf = &rp.instances[0].files["main.cf"];
    assert!(main_cf.contains("mynetworks = 10.0.0.0/8\n"), "{main_cf}");
    assert!(rp.instances[0].files["submission_clients"].contains("8.8.8.0/24\tOK"));
}

#[test]
fn domain_policy_values_are_refused_naming_the_field() {
    let cases: Vec<Case<DomainPolicy>> = vec![
        (
            "newline in a domain",
            Box::new(|p| p.spec.domains[0] = "example.net\nevil.com smtp:[1.2.3.4]".into()),
            "spec.domains[0]",
        ),
        ("space in a domain", Box::new(|p| p.spec.domains[0] = "example.net smtp:".into()), "spec.domains[0]"),
        ("comma list in a domain", Box::new(|p| p.spec.domains[0] = "a.net,b.net".into()), "spec.domains[0]"),
        ("regexp in a domain", Box::new(|p| p.spec.domains[0] = "/.*/".into()), "spec.domains[0]"),
        ("unicode look-alike domain", Box::new(|p| p.spec.domains[0] = "gmaіl.com".into()), "spec.domains[0]"),
        ("empty domain list", Box::new(|p| p.spec.domains.clear()), "spec.domains"),
        ("duplicate domain", Box::new(|p| p.spec.domains[1] = "example.net".into()), "spec.domains[1]"),
        ("bad wildcard", Box::new(|p| p.spec.domains[0] = "*example.net".into()), "spec.domains[0]"),
        (
            "relay host with port smuggled",
            Box::new(|p| p.spec.route.as_mut().unwrap().relay_host = Some("relay.example.org:25 x".into())),
            "spec.route.relayHost",
        ),
        (
            "relay host bracketed",
            Box::new(|p| p.spec.route.as_mut().unwrap().relay_host = Some("[1.2.3.4]".into())),
            "spec.route.relayHost",
        ),
        ("route both", Box::new(|p| p.spec.route.as_mut().unwrap().pool = Some("other".into())), "spec.route"),
        ("excluded IP name", Box::new(|p| p.spec.excluded_ips = vec!["a\nb".into()]), "spec.excludedIPs[0]"),
        ("paused reason with newline", Box::new(|p| p.spec.paused = Some("incident\nOK smtp:".into())), "spec.paused"),
        (
            "throttle 45/min",
            Box::new(|p| p.spec.throttle.as_mut().unwrap().messages_per_minute = Some(45)),
            "spec.throttle.messagesPerMinute",
        ),
        ("processes 0", Box::new(|p| p.spec.throttle.as_mut().unwrap().processes = Some(0)), "spec.throttle.processes"),
        ("policy name with dot", Box::new(|p| p.metadata.name = Some("gmail.com".into())), "metadata.name"),
        (
            "auto-exclusion window",
            Box::new(|p| {
                p.spec.auto_exclusion =
                    Some(AutoExclusion { hard_blocks: 3, window: "1 h".into(), duration: "1d".into() })
            }),
            "spec.autoExclusion.window",
        ),
    ];
    for (what, mutate, field) in cases {
        let policy = policy_with(mutate);
        let err = render_err(&support::pool(), &[policy], None);
        assert!(err.contains(field), "{what}: error should name {field:?}, got: {err}");
        assert!(err.contains("DomainPolicy ns/"), "{what}: error should name the resource: {err}");
    }
}

#[test]
fn warmup_plan_values_are_refused_naming_the_field() {
    let cases: Vec<Case<WarmupPlan>> = vec![
        ("first step not day 1", Box::new(|p| p.spec.steps.as_mut().unwrap()[0].day = 2), "spec.steps[0].day"),
        ("days not increasing", Box::new(|p| p.spec.steps.as_mut().unwrap()[1].day = 1), "spec.steps[1].day"),
        ("cap 0", Box::new(|p| p.spec.steps.as_mut().unwrap()[0].daily_cap = 0), "spec.steps[0].dailyCap"),
        (
            "steps and ramp",
            Box::new(|p| p.spec.ramp = Some(Ramp { start: 1, growth_percent: 10, ceiling: 10 })),
            "spec",
        ),
        ("time zone injection", Box::new(|p| p.spec.time_zone = "UTC\nx".into()), "spec.timeZone"),
        // Passes the name pattern, but is no zone: the agent would count days in UTC.
        ("unknown time zone", Box::new(|p| p.spec.time_zone = "Asia/Tokio".into()), "spec.timeZone"),
        (
            "share over 100",
            Box::new(|p| {
                p.spec.domain_shares = vec![DomainShare { domains: vec!["gmail.com".into()], max_percent: 130 }]
            }),
            "spec.domainShares[0].maxPercent",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut pool = support::pool();
        pool.spec.warmup_plan_ref = Some("w".into());
        let plan = plan_with(mutate);
        let err = render_err(&pool, &[], Some(&plan));
        assert!(err.contains(field), "{what}: error should name {field:?}, got: {err}");
    }
}

#[test]
fn schema_bypass_in_a_policy_skips_only_that_policy() {
    let good = support::policy();
    let bad = policy_with(|p| {
        p.metadata.name = Some("zz-bad".into());
        p.spec.domains = vec!["evil.example\nx".into()];
    });
    let observed = Observed::default();
    let pool = support::pool();
    let pools = vec![pool.clone()];
    let policies = [good, bad];
    let rp = render_pool(
        PoolInput { pool: &pool, policies: &policies, plan: None, pools: &pools, observed: &observed },
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(rp.policies, vec!["dp".to_string()]);
    assert_eq!(rp.invalid_policies.len(), 1);
    refused(rp.invalid_policies[0].to_string(), "spec.domains[0]");
    assert!(!rp.instances[0].files["transport"].contains("evil"));
}
