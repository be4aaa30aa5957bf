//! `sendfleet render`, run as a user would: examples/ in, objects and
//! per-instance Postfix files out; a bad file out with the field named.

use std::process::Command;

fn sendfleet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sendfleet"))
}

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn render_writes_objects_and_instance_directories() {
    let out = tempfile::tempdir().unwrap();
    let status = sendfleet().arg("render").arg("-f").args(examples()).arg("--out").arg(out.path()).status().unwrap();
    assert!(status.success());
    let objects = std::fs::read_to_string(out.path().join("objects.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&objects).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let count = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).count();
    assert_eq!(count("StatefulSet"), 3, "one StatefulSet per egress IP");
    assert_eq!(count("ConfigMap"), 3, "one ConfigMap per instance");
    assert_eq!(count("Service"), 3, "submission + headless + agents (scraping)");
    assert_eq!(count("EndpointSlice"), 2, "host-network endpoints: submission, agents (scraping)");
    assert_eq!(count("PodDisruptionBudget"), 1);
    assert_eq!(count("ServiceAccount"), 1);
    for inst in ["mta1", "mta2", "mta3"] {
        let dir = out.path().join("mail/outbound").join(inst);
        for f in ["main.cf", "master.cf", "transport", "tls_policy", "policy.json"] {
            assert!(dir.join(f).exists(), "{inst}/{f} missing");
        }
        // The files on disk are the ConfigMap's data, byte for byte.
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == format!("outbound-{inst}").as_str())
            .unwrap();
        assert_eq!(cm["data"]["main.cf"].as_str().unwrap(), std::fs::read_to_string(dir.join("main.cf")).unwrap());
    }
    // Without --out: the same objects on stdout.
    let o = sendfleet().arg("render").arg("-f").args(examples()).output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8(o.stdout).unwrap(), objects);
}

#[test]
fn render_refuses_a_bad_value_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p}\nspec:\n  egressIPs:\n    - {name: a, address: \"1.2.3.4 -o content_filter=x\", heloName: a.example.com}\n",
    )
    .unwrap();
    let o = sendfleet().args(["render", "-f"]).arg(&f).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SendingPool default/p") && err.contains("spec.egressIPs[0].address"), "{err}");
    assert!(o.stdout.is_empty(), "nothing may be printed for an invalid input");
}

#[test]
fn render_records_name_the_address_receivers_see_behind_a_nat() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pool.yaml");
    std::fs::write(
        &f,
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: mail}\nspec:\n  egressIPs:\n    - {name: a, address: 10.0.0.10, publicAddress: 192.0.2.11, heloName: a.example.com}\n  dkim: {secretName: k, selector: s1, domains: [example.com]}\n",
    )
    .unwrap();
    let o = sendfleet().arg("render").arg("-f").arg(&f).arg("--records").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("11.2.0.192.in-addr.arpa. IN PTR a.example.com.\n"), "{text}");
    assert!(text.contains("example.com. IN TXT \"v=spf1 ip4:192.0.2.11 -all\"\n"), "{text}");
    assert!(!text.contains("10.0.0.10") && !text.contains("10.0.0.10.in-addr.arpa"), "{text}");
}

#[test]
fn render_records_lists_ptr_spf_dkim_and_dmarc_with_the_keys_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pool.yaml");
    std::fs::write(
        &f,
        "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: mail}\nspec:\n  egressIPs:\n    - {name: a, address: 192.0.2.10, heloName: a.example.com}\n  dkim: {secretName: k, selector: s1, domains: [example.com]}\n",
    )
    .unwrap();
    let o = sendfleet().arg("render").arg("-f").arg(&f).arg("--records").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("10.2.0.192.in-addr.arpa. IN PTR a.example.com.\n"), "{text}");
    assert!(text.contains("example.com. IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n"), "{text}");
    assert!(text.contains("_dmarc.example.com. IN TXT \"v=DMARC1; p=none\"\n"), "{text}");
    assert!(text.contains("; s1._domainkey.example.com. IN TXT (the public half of Secret \"k\""), "{text}");

    // With the key: the record's value is its public half, and nothing of
    // the private key is printed.
    let key = dir.path().join("s1.key");
    std::fs::write(&key, sendfleet_lab::pki::rsa_key_pem()).unwrap();
    let o = sendfleet().arg("render").arg("-f").arg(&f).arg("--records").arg("--dkim-key").arg(&key).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let pem = std::fs::read(&key).unwrap();
    let public = sendfleet::dns::public_key_from_pem(&pem).unwrap().txt_record();
    let line = text.lines().find(|l| l.starts_with("s1._domainkey.example.com. IN TXT ")).expect(&text);
    let joined: String = line.split('"').skip(1).step_by(2).collect();
    assert_eq!(joined, public);
    let secret_line = String::from_utf8(pem).unwrap().lines().nth(1).unwrap().to_string();
    assert!(!text.contains(&secret_line), "private key material printed");
}
