//! Publishing a pool's DNS records through external-dns
//! (`spec.dnsRecords.publish: DNSEndpoint`), against the real API server
//! and the operator as a process.
//!
//! - Without the DNSEndpoint CRD the pool says so
//!   (`DnsRecordsPublished=False DNSEndpointNotInstalled`) and still lists
//!   its records in `status.dnsRecords`.
//! - Once the CRD (a fixture shaped like external-dns's) is installed, the
//!   operator writes one DNSEndpoint owned by the pool whose endpoints are
//!   exactly the records `sendfleet render --records --dkim-key` prints for
//!   the same pool and key (the real binary, its zone lines parsed), DKIM
//!   public key included, and `status.dnsRecords` says the same.
//! - A DNSEndpoint with a pool's name that it does not own is left alone
//!   (`Ready=False ObjectConflict` naming it).
//! - When the pool stops asking, the DNSEndpoint and the condition go.

mod operator_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use operator_support::*;

const T: Duration = Duration::from_secs(60);
/// The operator looks for a missing CRD again every minute.
const CRD_SEEN: Duration = Duration::from_secs(150);
const CRD: &str = "dnsendpoints.externaldns.k8s.io";

type Records = BTreeSet<(String, String, String)>;

fn pool_yaml(ns: &str, publish: bool) -> String {
    let publish = if publish { "  dnsRecords: {publish: DNSEndpoint}\n" } else { "" };
    format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: mail, namespace: {ns}}}\nspec:\n  \
         egressIPs:\n  \
         - {{name: ip0, address: 198.18.40.10, publicAddress: 192.0.2.40, heloName: ip0.mail.example.com}}\n  \
         - {{name: ip1, address: 198.18.40.11, heloName: ip1.mail.example.com}}\n  \
         dkim: {{secretName: dkim, selector: s1, domains: [example.com, news.example.com]}}\n{publish}"
    )
}

/// The records of `sendfleet render --records` zone lines: (name, type,
/// value), the TXT strings joined, comments (records without a value)
/// left out.
fn zone_records(zone: &str) -> Records {
    let mut out = Records::new();
    for line in zone.lines().filter(|l| !l.is_empty() && !l.starts_with(';')) {
        let mut parts = line.splitn(4, ' ');
        let (name, class, kind, data) =
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(class, "IN", "{line}");
        let value = match kind {
            "PTR" => data.trim_end_matches('.').to_string(),
            "TXT" => txt_value(data),
            other => panic!("unexpected record type {other}: {line}"),
        };
        out.insert((name.trim_end_matches('.').to_string(), kind.to_string(), value));
    }
    out
}

/// `"a" "b"` -> `ab`, with `\"` and `\\` unescaped.
fn txt_value(data: &str) -> String {
    let (mut out, mut inside, mut chars) = (String::new(), false, data.chars());
    while let Some(c) = chars.next() {
        match (c, inside) {
            ('"', _) => inside = !inside,
            ('\\', true) => out.extend(chars.next()),
            (c, true) => out.push(c),
            (_, false) => {}
        }
    }
    out
}

fn endpoint_records(obj: &serde_json::Value) -> Records {
    let mut out = Records::new();
    for e in obj["spec"]["endpoints"].as_array().expect("spec.endpoints") {
        let targets = e["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "an endpoint without targets: {e}");
        for t in targets {
            out.insert((
                e["dnsName"].as_str().unwrap().into(),
                e["recordType"].as_str().unwrap().into(),
                t.as_str().unwrap().into(),
            ));
        }
    }
    out
}

fn status_records(pool: &serde_json::Value) -> Option<Records> {
    let rows = pool["status"]["dnsRecords"].as_array()?;
    rows.iter()
        .map(|r| Some((r["name"].as_str()?.into(), r["type"].as_str()?.into(), r["value"].as_str()?.into())))
        .collect()
}

#[test]
fn a_pool_publishes_exactly_its_rendered_records_once_the_dnsendpoint_crd_is_there() {
    let cp = control_plane(false);
    let _op = Operator::start_with(cp, "dnsendpoint", &["--no-leader-election"]);
    let ns = cp.namespace("dnsep").unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The DKIM Secret, with the selector's own key.
    let key = dir.path().join("s1.key");
    std::fs::write(&key, sendfleet_lab::pki::rsa_key_pem()).unwrap();
    let pem = std::fs::read_to_string(&key).unwrap();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "dkim", "namespace": ns.name()},
        "stringData": {"s1.key": pem},
    });
    cp.apply(&secret.to_string()).unwrap();
    let pool_file = dir.path().join("pool.yaml");
    std::fs::write(&pool_file, pool_yaml(ns.name(), true)).unwrap();
    cp.apply(&pool_yaml(ns.name(), true)).unwrap();

    // What the CLI lists for the same pool and key.
    let o = Command::new(env!("CARGO_BIN_EXE_sendfleet"))
        .arg("render")
        .arg("-f")
        .arg(&pool_file)
        .arg("--records")
        .arg("--dkim-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let zone = String::from_utf8(o.stdout).unwrap();
    let rendered = zone_records(&zone);
    // PTR per seen address (the public one for ip0), SPF + DKIM + DMARC per
    // domain: the comparison below covers every kind of record.
    assert_eq!(rendered.len(), 2 + 3 * 2, "{zone}");
    assert!(rendered.iter().any(|r| r.0 == "40.2.0.192.in-addr.arpa" && r.2 == "ip0.mail.example.com"), "{zone}");
    assert!(!zone.contains("10.40.18.198"), "PTR of the bound, unseen address: {zone}");
    assert!(rendered.iter().any(|r| r.0 == "s1._domainkey.news.example.com" && r.2.contains("p=")), "{zone}");

    // No CRD: the pool says so, and lists its records all the same (the
    // DKIM value once the operator read the key's public half).
    let (_, _, message) = wait_for("DnsRecordsPublished=False DNSEndpointNotInstalled", T, || {
        condition(cp, "sendingpool", "mail", ns.name(), "DnsRecordsPublished")
            .filter(|c| c.0 == "False" && c.1 == "DNSEndpointNotInstalled")
    });
    assert!(message.contains(CRD), "{message}");
    let listed = wait_for("status.dnsRecords with every value", T, || {
        status_records(&get_json(cp, &["sendingpool", "mail", "-n", ns.name()])?)
    });
    assert_eq!(listed, rendered, "status.dnsRecords against `sendfleet render --records`:\n{zone}");

    // The CRD arrives: the operator finds it within its recheck.
    cp.apply(
        &std::fs::read_to_string(repo().join("tests/operator_support/fixtures/dnsendpoints.externaldns.k8s.io.yaml"))
            .unwrap(),
    )
    .unwrap();
    cp.wait_crd_established(CRD).unwrap();
    let endpoint = wait_for("the pool's DNSEndpoint", CRD_SEEN, || get_json(cp, &[CRD, "mail", "-n", ns.name()]));
    let published = endpoint_records(&endpoint);
    assert_eq!(published, rendered, "DNSEndpoint against `sendfleet render --records`:\n{zone}\n{endpoint:#}");
    assert!(!endpoint.to_string().contains("PRIVATE KEY"), "{endpoint}");
    let pool = get_json(cp, &["sendingpool", "mail", "-n", ns.name()]).unwrap();
    assert_eq!(endpoint["metadata"]["ownerReferences"][0]["uid"], pool["metadata"]["uid"], "{endpoint:#}");
    assert_eq!(endpoint["metadata"]["labels"]["sendfleet.io/pool"], "mail");
    // kubectl leaves managedFields out unless asked.
    let with_fields = get_json(cp, &[CRD, "mail", "-n", ns.name(), "--show-managed-fields"]).unwrap();
    let managers: Vec<&str> = with_fields["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| (m["operation"] == "Apply").then(|| m["manager"].as_str()).flatten())
        .collect();
    assert_eq!(managers, ["sendfleet-operator"], "{with_fields:#}");
    let (_, reason, message) = wait_for("DnsRecordsPublished=True", T, || {
        condition(cp, "sendingpool", "mail", ns.name(), "DnsRecordsPublished").filter(|c| c.0 == "True")
    });
    assert_eq!(reason, "Published");
    assert!(message.contains("lists 8 records"), "{message}");

    // A DNSEndpoint with a pool's name that the pool does not own is never
    // taken over: ObjectConflict naming it, the object left as it was.
    let foreign = serde_json::json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
        "metadata": {"name": "other", "namespace": ns.name()},
        "spec": {"endpoints": [{"dnsName": "keep.example.com", "recordType": "TXT", "targets": ["someone else's"]}]},
    });
    cp.apply(&foreign.to_string()).unwrap();
    cp.apply(&format!(
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: other, namespace: {}}}\nspec:\n  \
         egressIPs: [{{name: ip0, address: 198.18.40.20, heloName: ip0.other.example.com}}]\n  \
         dnsRecords: {{publish: DNSEndpoint}}\n",
        ns.name()
    ))
    .unwrap();
    let (_, _, message) = wait_for("other: Ready=False ObjectConflict", T, || {
        condition(cp, "sendingpool", "other", ns.name(), "Ready").filter(|c| c.1 == "ObjectConflict")
    });
    assert!(message.contains("DNSEndpoint \"other\""), "{message}");
    let kept = get_json(cp, &[CRD, "other", "-n", ns.name()]).unwrap();
    assert_eq!(kept["spec"], foreign["spec"], "{kept:#}");
    assert!(kept["metadata"]["ownerReferences"].is_null(), "{kept:#}");

    // The pool stops asking: its DNSEndpoint and the condition go, the
    // records stay listed.
    cp.apply(&pool_yaml(ns.name(), false)).unwrap();
    wait_for("the DNSEndpoint deleted", T, || get_json(cp, &[CRD, "mail", "-n", ns.name()]).is_none().then_some(()));
    wait_for("DnsRecordsPublished gone", T, || {
        condition(cp, "sendingpool", "mail", ns.name(), "DnsRecordsPublished").is_none().then_some(())
    });
    let pool = get_json(cp, &["sendingpool", "mail", "-n", ns.name()]).unwrap();
    assert_eq!(status_records(&pool).as_ref(), Some(&rendered), "the records are still listed");
}
