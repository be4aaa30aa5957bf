//! Incident 3 on real Postfix configured only from rendered files: receivers
//! that require STARTTLS with a certificate from the lab's mail CA and TLS
//! 1.2 as the floor, DomainPolicies asking for `verify` with a TLSv1.2
//! minimum, and a pool whose `spec.tls.trustedCA` holds the mail CA.
//!
//! - Delivered, verified, and the receiver logs the protocol, for a domain
//!   routed by MX (the lab's DNS server serves the MX), a domain on a relay
//!   route (`route.relayHost`, looked up by the relay's nexthop key), and
//!   both when the instance is excluded for them and hands them to a peer
//!   (the peer delivers with the same requirement).
//! - Without the CA trusted, the same mail is deferred ("certificate not
//!   trusted"), never sent in the clear: the receivers get nothing from that
//!   instance.

#[allow(dead_code)]
mod agent_support;

use std::time::Duration;

use agent_support::*;
use sendfleet_lab::dns::{mx_zones, MxProvider};
use sendfleet_lab::MailCa;

/// The sending instance, its peer, and an instance that does not trust the CA.
const A: &str = "198.51.100.41";
const B: &str = "198.51.100.42";
const C: &str = "198.51.100.43";
/// The provider's MX host and the partner's relay.
const MX: &str = "203.0.113.41";
const MX_HOST: &str = "mx.provider-t.test";
const RELAY: &str = "203.0.113.42";
const RELAY_HOST: &str = "relay.partner-t.test";

const VERIFY: &str = "tls: {level: verify, minimumProtocol: TLSv1.2}";

/// Four DomainPolicies, each requiring `verify`: by MX, by relay route, and
/// the same two with instance `excluded` excluded (a peer delivers them).
fn policies(excluded: &str) -> Vec<Policy> {
    let p = |name: &str, domain: &str| Policy::named(name).in_ns("t").for_domains(&[domain]).spec(VERIFY);
    vec![
        p("by-mx", "mx.test"),
        p("by-relay", "relayed.test").relay(RELAY_HOST, 25),
        p("peer-mx", "peer-mx.test").excluding(&[excluded]),
        p("peer-relay", "peer-relayed.test").relay(RELAY_HOST, 25).excluding(&[excluded]),
    ]
}

fn fleet_of(pool: Pool, dns: &Dns, excluded: &str) -> Fleet {
    policies(excluded).into_iter().fold(fleet(pool.build(), dns), |f, p| f.policy(p.build()))
}

/// The first logged outcome (`status=`) of mail to `domain` in `inst`'s
/// log (the agent writes recipients as a keyed hash and the domain).
fn outcome(inst: &Instance, domain: &str) -> Option<String> {
    let log = inst.stdout();
    lines_with(&log, &[&format!("@{domain}>"), "status="]).first().map(|l| l.to_string())
}

#[test]
fn verify_with_the_trusted_lab_ca_delivers_by_mx_relay_and_peer_and_without_it_defers() {
    require_postfix();
    let ca = MailCa::shared().unwrap_or_else(|e| panic!("{e}"));
    let zones = mx_zones(&[
        MxProvider { name: "provider-t", mx_host: MX_HOST, addr: MX, domains: &["mx.test", "peer-mx.test"] },
        MxProvider {
            name: "partner-t",
            mx_host: RELAY_HOST,
            addr: RELAY,
            domains: &["relayed.test", "peer-relayed.test"],
        },
    ]);
    let dns = Dns::serve("127.0.0.53", zones);
    let mx = receiver("tls-mx", MX, &["mx.test", "peer-mx.test"], &[]);
    mx.require_tls(ca, &[MX_HOST]).unwrap();
    let relay = receiver("tls-relay", RELAY, &["relayed.test", "peer-relayed.test"], &[]);
    relay.require_tls(ca, &[RELAY_HOST]).unwrap();

    // The pool trusts the lab's mail CA through its Secret.
    let trusting = Pool::named("tls")
        .in_ns("t")
        .with_ip("tls-a", A)
        .with_ip("tls-b", B)
        .fast_retries()
        .spec("tls: {trustedCA: {secretName: lab-mail-ca}}");
    let fleet = fleet_of(trusting, &dns, "tls-a").trusted_ca(ca.ca_pem());
    let a = fleet.start("tls-a");
    let b = fleet.start("tls-b");
    assert!(a.pod.files["main.cf"].contains("smtp_tls_CApath = /etc/ssl/certs"), "{}", a.pod.files["main.cf"]);
    let domains = ["mx.test", "relayed.test", "peer-mx.test", "peer-relayed.test"];
    for d in domains {
        a.inject("app@client.test", &format!("user@{d}"), 3, 1);
    }
    wait_until("12 messages delivered over TLS", Duration::from_secs(90), || {
        mx.deliveries().total() == 6 && relay.deliveries().total() == 6
    });
    let (got_mx, got_relay) = (mx.deliveries(), relay.deliveries());
    assert_eq!(got_mx.to_domain_from("mx.test", A), 3, "{got_mx:?}");
    assert_eq!(got_relay.to_domain_from("relayed.test", A), 3, "{got_relay:?}");
    assert_eq!(got_mx.to_domain_from("peer-mx.test", B), 3, "the peer delivers: {got_mx:?}");
    assert_eq!(got_relay.to_domain_from("peer-relayed.test", B), 3, "the peer delivers: {got_relay:?}");
    // The receivers' own logs show each client's protocol: 1.2 or newer.
    for (rcv, client) in [(&got_mx, A), (&got_mx, B), (&got_relay, A), (&got_relay, B)] {
        let protocols = rcv.tls_protocols(client);
        assert!(!protocols.is_empty(), "{client} sent without TLS: {rcv:?}");
        assert!(protocols.iter().all(|p| ["TLSv1.2", "TLSv1.3"].contains(p)), "{client}: {protocols:?}");
    }
    // The senders verified the certificate against the host they meant.
    for (inst, host, ip) in [(&a, MX_HOST, MX), (&a, RELAY_HOST, RELAY), (&b, MX_HOST, MX), (&b, RELAY_HOST, RELAY)] {
        let log = inst.stdout();
        let verified = format!("Verified TLS connection established to {host}[{ip}]:25");
        assert!(!lines_with(&log, &[&verified]).is_empty(), "{} never verified {host}:\n{log}", inst.name);
    }
    // A handed the excluded domains to B; B sent them itself.
    for d in ["peer-mx.test", "peer-relayed.test"] {
        let line = outcome(&a, d).unwrap_or_else(|| panic!("no outcome for {d}:\n{}", a.stdout()));
        assert!(line.contains(&format!("relay={B}[{B}]:2525")) && line.contains("status=sent"), "{line}");
    }

    // Same policies, no trusted CA: deferred, not sent in the clear.
    let untrusting = Pool::named("plain").in_ns("t").with_ip("tls-c", C).fast_retries();
    let c = fleet_of(untrusting, &dns, "none").start("tls-c");
    assert!(!c.pod.files["main.cf"].contains("smtp_tls_CApath"));
    for d in ["mx.test", "relayed.test"] {
        c.inject("app@client.test", &format!("user@{d}"), 2, 1);
    }
    for (domain, host) in [("mx.test", MX_HOST), ("relayed.test", RELAY_HOST)] {
        wait_until(&format!("{domain} tried"), Duration::from_secs(60), || outcome(&c, domain).is_some());
        let line = outcome(&c, domain).unwrap();
        eprintln!("without the CA: {line}");
        assert!(line.contains("status=deferred"), "{line}");
        assert!(line.contains("certificate") && line.contains(host), "not a certificate failure: {line}");
    }
    // Give a retry time to happen, then count: nothing from C arrived.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mx.deliveries().from_client(C), 0);
    assert_eq!(relay.deliveries().from_client(C), 0);
    assert!(lines_with(&c.stdout(), &["status=sent"]).is_empty(), "{}", c.stdout());
    // All four still queued: deferred, or in the incoming or active queue
    // for a retry (fast retries: a scan can catch one on its way).
    let counts = c.queue_counts();
    let queued: usize = ["deferred", "incoming", "active"].iter().filter_map(|q| counts.get(*q)).sum();
    assert_eq!(queued, 4, "{}", c.queue_json());
}
