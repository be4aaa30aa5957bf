//! What a pool refers to for authentication and TLS, end to end: the real
//! API server, the operator as a process, a real DNS server (hickory, in
//! process, on loopback).
//!
//! - Incident 8, forwarding breaks SPF: a DomainPolicy routes a domain
//!   through a relay whose address the sending domain's SPF record does not
//!   authorise. `AuthenticationValid=False`, reason `SpfNotAuthorized`,
//!   naming the address, the DomainPolicy and the record; publishing the
//!   address makes it `True`.
//! - `spec.tls.trustedCA` naming a Secret that does not exist (or lacks the
//!   key, or holds no certificate): `Ready=False`, reason
//!   `MissingReference`, naming it; creating it lets the pool render.

mod dns_common;
mod operator_support;

use std::sync::OnceLock;
use std::time::Duration;

use dns_common::TestDns;
use operator_support::*;
use sendfleet_lab::kit::{Policy, Pool};

const T: Duration = Duration::from_secs(60);

fn condition(cp: &sendfleet_lab::ControlPlane, ns: &str, pool: &str, t: &str) -> Option<(String, String, String)> {
    let p = get_json(cp, &["sendingpool", pool, "-n", ns])?;
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == t)?.clone();
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

/// The sending domain's SPF names the pool's one IP; the relay a partner's
/// DomainPolicy uses has its own address.
const SENDER_ZONE: &str = r#"
mail 60 IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc.mail 60 IN TXT "v=DMARC1; p=none"
"#;

/// One operator and one DNS server for the binary (tests run in parallel;
/// two operators would fight over the same pools). Both live as long as
/// the test process; the operator dies with it.
fn setup() -> &'static (tokio::runtime::Runtime, TestDns, Operator) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, TestDns, Operator)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dns = rt.block_on(
            TestDns::builder()
                .zone("shop.test", SENDER_ZONE)
                .zone("2.0.192.in-addr.arpa", "10 60 IN PTR ip0.auth.example.com.\n")
                .zone("auth.example.com", "ip0 60 IN A 192.0.2.10\n")
                .zone("partner.test", "relay 60 IN A 198.51.100.7\n")
                .start(),
        );
        let addr = dns.addr.to_string();
        let cp = control_plane(false);
        let op = Operator::start_with(
            cp,
            "authentication",
            &["--dns-server", &addr, "--dnsbl-interval-override", "2s", "--dns-timeout", "1s", "--no-leader-election"],
        );
        (rt, dns, op)
    })
}

#[test]
fn a_relay_address_the_sending_domains_spf_does_not_authorise_is_named() {
    let (rt, dns, _op) = setup();
    let cp = control_plane(false);
    let ns = cp.namespace("spf-relay").unwrap();
    // spec.dkim names the sending domain (the Secret is not needed for SPF:
    // without it DKIM is not checked).
    let pool = Pool::named("auth")
        .in_ns(ns.name())
        .with_ip_helo("ip0", "192.0.2.10", "ip0.auth.example.com")
        .spec("dkim: {secretName: no-key, selector: s1, domains: [mail.shop.test]}")
        .spec("reputation: {zones: [bl.test]}");
    cp.apply(&pool.yaml()).unwrap();
    let partner = Policy::named("partner").in_ns(ns.name()).for_domains(&["customers.partner.test"]);
    cp.apply(&partner.clone().relay("relay.partner.test", 25).yaml()).unwrap();

    let (_, reason, message) = wait_for("AuthenticationValid=False", T, || {
        condition(cp, ns.name(), "auth", "AuthenticationValid").filter(|c| c.0 == "False")
    });
    eprintln!("AuthenticationValid=False {reason}: {message}");
    assert_eq!(reason, "SpfNotAuthorized", "{message}");
    assert_eq!(
        message,
        "mail.shop.test: SPF fail for relay address 198.51.100.7 (DomainPolicy partner route.relayHost \
         relay.partner.test); record \"v=spf1 ip4:192.0.2.10 -all\""
    );

    // The domain's owner authorises the relay: the next sweep says so.
    rt.block_on(dns.remove_name("shop.test", "mail"));
    rt.block_on(dns.add_records("shop.test", "mail 60 IN TXT \"v=spf1 ip4:192.0.2.10 ip4:198.51.100.7 -all\"\n"));
    let (_, reason, message) = wait_for("AuthenticationValid=True", T, || {
        condition(cp, ns.name(), "auth", "AuthenticationValid").filter(|c| c.0 == "True")
    });
    assert_eq!(reason, "Valid");
    assert!(message.starts_with("SPF passes for 1 IP(s) and 1 relay address(es) in 1 domain(s)"), "{message}");
}

/// Three pools, each with a bad bundle reference from the start (a
/// reconcile shows it at once); then the Secret is fixed and the pool
/// renders on the next retry (a missing reference is retried every minute).
#[test]
fn a_missing_or_unusable_trusted_ca_makes_the_pool_not_ready_naming_it() {
    setup();
    let cp = control_plane(false);
    let ns = cp.namespace("trusted-ca").unwrap();
    let n = ns.name();
    let secret = |data: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: partner-ca, namespace: {n}}}\nstringData: {data}\n")
    };
    cp.apply(&secret("{tls.crt: x}")).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: corp-bundle, namespace: {n}}}\ndata: {{ca.crt: not a certificate}}\n"
    ))
    .unwrap();
    let pool =
        |name: &str, ca: &str| Pool::named(name).in_ns(n).with_ips(1).spec(&format!("tls: {{trustedCA: {ca}}}")).yaml();
    // Admission: the API server refuses a reference that names two objects
    // or none, or a name or key that could leave the volume.
    for (what, ca, field) in [
        ("both", "{secretName: a, configMapName: b}", "exactly one of secretName and configMapName"),
        ("neither", "{key: ca.crt}", "exactly one of secretName and configMapName"),
        ("key with a path", "{secretName: a, key: ../x}", "trustedCA.key"),
        ("name with a path", "{secretName: ../x}", "trustedCA.secretName"),
    ] {
        let err = match cp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &pool("adm", ca)) {
            Ok(out) => panic!("{what}: accepted by the API server: {out}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(field), "{what}: the API server's message should name {field:?}: {err}");
    }
    // submission.clientCertificates: its CA bundle is checked the same way
    // (the field named), its server certificate Secret must exist.
    let dir = tempfile::tempdir().unwrap();
    let pki = sendfleet_lab::pki::Pki::create(dir.path(), &[]).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: clients-ca, namespace: {n}}}\nstringData: {{ca.crt: {:?}}}\n",
        pki.ca_pem()
    ))
    .unwrap();
    let certified = |name: &str, ca: &str| {
        let submission = format!(
            "submission: {{allowedCIDRs: [10.0.0.0/8, 8.8.8.0/24], clientCertificates: {{trustedCA: {{secretName: {ca}}}, serverCertificateSecretName: {name}-tls}}}}"
        );
        Pool::named(name).in_ns(n).with_ips(1).spec(&submission).yaml()
    };
    cp.apply(&certified("certs", "clients-ca")).unwrap();
    cp.apply(&certified("certs-ca", "partner-ca")).unwrap();
    cp.apply(&pool("missing", "{secretName: lab-mail-ca}")).unwrap();
    cp.apply(&pool("keyless", "{secretName: partner-ca}")).unwrap();
    cp.apply(&pool("junk", "{configMapName: corp-bundle}")).unwrap();
    let not_ready = |pool: &'static str| {
        let (status, _, message) = wait_for(&format!("{pool}: Ready=False MissingReference"), T, || {
            condition(cp, n, pool, "Ready").filter(|c| c.1 == "MissingReference")
        });
        assert_eq!(status, "False");
        message
    };
    assert_eq!(not_ready("missing"), format!("spec.tls.trustedCA: Secret \"lab-mail-ca\" not found in namespace {n}"));
    assert_eq!(not_ready("keyless"), "spec.tls.trustedCA: Secret \"partner-ca\" has no key \"ca.crt\"");
    assert_eq!(
        not_ready("junk"),
        "spec.tls.trustedCA: ConfigMap \"corp-bundle\" key \"ca.crt\" holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    assert_eq!(
        not_ready("certs"),
        format!(
            "spec.submission.clientCertificates.serverCertificateSecretName: Secret \"certs-tls\" not found in namespace {n}"
        )
    );
    assert_eq!(
        not_ready("certs-ca"),
        "spec.submission.clientCertificates.trustedCA: Secret \"partner-ca\" has no key \"ca.crt\""
    );
    let none = cp.kubectl_run(&["get", "statefulset", "missing-ip0", "-n", n]);
    assert!(none.is_err(), "rendered before its CA bundle existed: {none:?}");

    // A real bundle under the key: the pool renders; its StatefulSet mounts
    // the key, read-only. The server certificate Secret appears: the
    // certified pool renders and mounts both.
    cp.apply(&secret(&format!("{{ca.crt: {:?}}}", pki.ca_pem()))).unwrap();
    cp.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: certs-tls, namespace: {n}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: cert, tls.key: key}}\n"
    ))
    .unwrap();
    let sts = wait_for("certs: StatefulSet rendered", Duration::from_secs(120), || {
        get_json(cp, &["statefulset", "certs-ip0", "-n", n])
    });
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let find = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{volumes:?}"));
    assert_eq!(find("submission-tls")["secret"]["secretName"], "certs-tls");
    assert_eq!(find("client-ca")["secret"]["secretName"], "clients-ca");
    let sts = wait_for("keyless: StatefulSet rendered", Duration::from_secs(120), || {
        get_json(cp, &["statefulset", "keyless-ip0", "-n", n])
    });
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let ca = volumes.iter().find(|v| v["name"] == "trusted-ca").unwrap_or_else(|| panic!("{volumes:?}"));
    assert_eq!(ca["secret"]["secretName"], "partner-ca");
    assert_eq!(ca["secret"]["items"][0]["key"], "ca.crt");
    assert_eq!(ca["secret"]["items"][0]["path"], "ca.crt");
}
