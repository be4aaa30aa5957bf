//! The DNS checks against a real DNS server: hickory-server in process on
//! 127.0.0.1 (inside the test's network namespace), serving DNSBL, reverse,
//! SPF, DKIM and DMARC zones, with names that answer late or never.
//!
//! The resolver under test is the production one ([`HickoryDns`]) aimed at
//! that server; only the address differs from production.

mod dns_common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dns_common::{openssl_genkey, openssl_to_pkcs1, txt, Misbehave, TestDns};
use jiff::{SignedDuration, Timestamp};
use sendfleet::dns::*;
use sendfleet_render::conditions::Status;

/// Client timeout for every test: short, so slow/dropped names cost little.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// Slow names answer after this: well past the timeout.
const SLOW: Duration = Duration::from_millis(3000);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

// 2001:db8::2 and 2001:db8::10 in reversed-nibble form (under a zone).
const V6_2: &str = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2";
const V6_10_REL: &str = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"; // under 8.b.d.0.1.0.0.2.ip6.arpa

fn blocklist_zones(b: dns_common::TestDnsBuilder) -> dns_common::TestDnsBuilder {
    b.zone(
        "bl-a.test",
        &format!(
            r#"
2.0.0.127 60 IN A 127.0.0.2
2.2.0.192 60 IN A 127.0.0.2
2.2.0.192 60 IN TXT "192.0.2.2 sent spam to our traps, see https://bl-a.test/q?192.0.2.2"
{V6_2} 60 IN A 127.0.0.3
{V6_2} 60 IN TXT "2001:db8::2 listed"
"#
        ),
    )
    .zone(
        "bl-b.test",
        r#"
2.2.0.192 60 IN A 127.0.0.4
2.2.0.192 60 IN A 127.0.0.10
3.2.0.192 60 IN A 127.0.0.2
"#,
    )
    // A list refusing our resolver answers 127.255.255.x for everything.
    .zone(
        "refuse.test",
        r#"
1.2.0.192 60 IN A 127.255.255.254
2.2.0.192 60 IN A 127.255.255.254
3.2.0.192 60 IN A 127.255.255.254
"#,
    )
    // A dead list that wildcards (answers outside 127/8).
    .zone("weird.test", "2.2.0.192 60 IN A 198.51.100.77\n")
    .zone("slow.test", "2.2.0.192 60 IN A 127.0.0.2\n")
    .zone("drop.test", "2.2.0.192 60 IN A 127.0.0.2\n")
    .zone("broken.test", "2.2.0.192 60 IN A 127.0.0.2\n")
    .rule("slow.test", Misbehave::Delay(SLOW))
    .rule("drop.test", Misbehave::Drop)
    .rule("broken.test", Misbehave::ServFail)
}

fn settings(dns: &TestDns) -> ResolverSettings {
    ResolverSettings { nameservers: vec![dns.addr], timeout: TIMEOUT, attempts: 1, max_in_flight_per_connection: 64 }
}

fn zones(z: &[&str]) -> Vec<String> {
    z.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsbl_answers_are_interpreted() {
    let server = blocklist_zones(TestDns::builder()).start().await;
    let resolver = HickoryDns::new(&settings(&server)).unwrap();
    let mut checker = DnsblChecker::new(
        resolver,
        DnsblConfig {
            zones: zones(&[
                "bl-a.test",
                "bl-b.test",
                "refuse.test",
                "weird.test",
                "slow.test",
                "drop.test",
                "broken.test",
                "unserved.test",
            ]),
            concurrency: 8,
            ..DnsblConfig::default()
        },
    );
    let ips = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"), ip("2001:db8::2")];
    let rep = checker.sweep(&ips, t(0)).await;
    let o = |a: &str, z: &str| rep.outcomes[&ip(a)][z].clone();

    assert_eq!(
        o("192.0.2.2", "bl-a.test"),
        ZoneOutcome::Listed {
            codes: vec![v4("127.0.0.2")],
            reason: Some("192.0.2.2 sent spam to our traps, see https://bl-a.test/q?192.0.2.2".into())
        }
    );
    assert_eq!(
        o("192.0.2.2", "bl-b.test"),
        ZoneOutcome::Listed { codes: vec![v4("127.0.0.4"), v4("127.0.0.10")], reason: None }
    );
    assert_eq!(o("192.0.2.3", "bl-b.test"), ZoneOutcome::Listed { codes: vec![v4("127.0.0.2")], reason: None });
    assert_eq!(o("192.0.2.1", "bl-a.test"), ZoneOutcome::Clean);
    assert_eq!(o("192.0.2.3", "bl-a.test"), ZoneOutcome::Clean);
    // IPv6, reversed nibbles.
    assert_eq!(
        o("2001:db8::2", "bl-a.test"),
        ZoneOutcome::Listed { codes: vec![v4("127.0.0.3")], reason: Some("2001:db8::2 listed".into()) }
    );
    assert_eq!(o("2001:db8::2", "bl-b.test"), ZoneOutcome::Clean);
    // Refusal answers are never listings.
    for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_eq!(o(a, "refuse.test"), ZoneOutcome::Refused { code: v4("127.255.255.254") });
    }
    match o("192.0.2.2", "weird.test") {
        ZoneOutcome::Failed { reason } => assert!(reason.contains("198.51.100.77"), "{reason}"),
        other => panic!("weird.test: {other:?}"),
    }
    assert_eq!(o("192.0.2.2", "slow.test"), ZoneOutcome::Failed { reason: "timeout".into() });
    assert_eq!(o("192.0.2.2", "drop.test"), ZoneOutcome::Failed { reason: "timeout".into() });
    assert_eq!(o("192.0.2.2", "broken.test"), ZoneOutcome::Failed { reason: "SERVFAIL".into() });
    assert_eq!(o("192.0.2.2", "unserved.test"), ZoneOutcome::Failed { reason: "REFUSED".into() });

    // Folded into the tracker: listings with first-seen; the failing zones
    // are not Unknown after one sweep (unknown_after = 2), and never listings.
    let mut tracker = ListingTracker::new(TrackerConfig { unknown_after: 2 });
    let changes = tracker.observe(&rep, t(0));
    let listed: Vec<(IpAddr, String)> = changes
        .iter()
        .filter_map(|c| match c {
            ListingChange::Listed { ip, listing } => Some((*ip, listing.zone.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (ip("192.0.2.2"), "bl-a.test".to_string()),
            (ip("192.0.2.2"), "bl-b.test".to_string()),
            (ip("192.0.2.3"), "bl-b.test".to_string()),
            (ip("2001:db8::2"), "bl-a.test".to_string()),
        ]
    );
    assert!(!changes.iter().any(|c| matches!(c, ListingChange::BecameUnknown { .. })));
    assert_eq!(tracker.ip(ip("192.0.2.1")).unwrap().status, ListingStatus::Pending);
    let rep2 = checker.sweep(&ips, t(1)).await;
    let changes = tracker.observe(&rep2, t(1));
    assert!(changes.iter().any(|c| matches!(c,
        ListingChange::BecameUnknown { ip: i, zone, reason } if *i == ip("192.0.2.1") && zone == "refuse.test" && reason.contains("127.255.255.254"))),
        "{changes:?}");
    let v = tracker.ip(ip("192.0.2.1")).unwrap();
    assert_eq!(v.status, ListingStatus::Unknown);
    assert!(v.listings.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsbl_cache_by_ttl_and_per_zone_budget_seen_at_server() {
    let server = TestDns::builder().zone("bl-a.test", "2.2.0.192 60 IN A 127.0.0.2\n").start().await;
    let ips: Vec<IpAddr> = (1..=5).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    let mut checker = DnsblChecker::new(
        HickoryDns::new(&settings(&server)).unwrap(),
        DnsblConfig {
            zones: zones(&["bl-a.test"]),
            concurrency: 2,
            per_zone_budget: 3,
            min_cache: SignedDuration::from_secs(1),
            max_cache: SignedDuration::from_secs(3600),
        },
    );
    let rep = checker.sweep(&ips, t(0)).await;
    let not_checked = rep.outcomes.values().filter(|z| z["bl-a.test"] == ZoneOutcome::NotChecked).count();
    assert_eq!(not_checked, 2, "{rep:?}");
    // The negative test point, 3 A queries (budget), one of them listed
    // -> +1 TXT.
    assert_eq!(server.stats.count_under("bl-a.test"), 5, "{:?}", server.stats.names());
    assert_eq!(rep.queries_sent, 5);

    // Next sweep: the 3 answers are cached (TTL 60), the other 2 are asked.
    server.stats.reset();
    let rep = checker.sweep(&ips, t(10)).await;
    assert_eq!(rep.cache_hits, 3);
    assert_eq!(server.stats.count_under("bl-a.test"), 2, "{:?}", server.stats.names());
    assert!(rep.outcomes.values().all(|z| z["bl-a.test"] != ZoneOutcome::NotChecked));

    // Within TTL nothing is asked; after it, everything (within budget) is.
    server.stats.reset();
    let rep = checker.sweep(&ips, t(59)).await;
    assert_eq!((rep.cache_hits, server.stats.total()), (5, 0));
    let rep = checker.sweep(&ips, t(75)).await;
    assert!(rep.cache_hits < 5);
    assert!(server.stats.total() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsbl_concurrency_bound_holds_at_server() {
    let server = TestDns::builder()
        .zone("bl-a.test", "2.2.0.192 60 IN A 127.0.0.2\n")
        .zone("bl-b.test", "3.2.0.192 60 IN A 127.0.0.2\n")
        .service_time(Duration::from_millis(20))
        .start()
        .await;
    let ips: Vec<IpAddr> = (1..=40).map(|i| ip(&format!("192.0.2.{i}"))).collect();
    let mut checker = DnsblChecker::new(
        HickoryDns::new(&settings(&server)).unwrap(),
        DnsblConfig { zones: zones(&["bl-a.test", "bl-b.test"]), concurrency: 4, ..DnsblConfig::default() },
    );
    let rep = checker.sweep(&ips, t(0)).await;
    let seen = server.stats.max_in_flight();
    assert!(seen <= 4, "server saw {seen} queries in flight, bound is 4");
    assert!(seen >= 2, "server saw {seen} in flight: sweep is not concurrent");
    assert!(rep.max_in_flight <= 4);
    assert_eq!(server.stats.total(), 80 + 2 + 2, "80 A + 2 TXT + each zone's negative test point");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_outage_keeps_state_until_unknown_after() {
    let server = blocklist_zones(TestDns::builder()).start().await;
    let addr_settings = settings(&server);
    let mut checker = DnsblChecker::new(
        HickoryDns::new(&addr_settings).unwrap(),
        DnsblConfig {
            zones: zones(&["bl-a.test"]),
            // Cache nothing, so every sweep asks.
            min_cache: SignedDuration::ZERO,
            max_cache: SignedDuration::ZERO,
            ..DnsblConfig::default()
        },
    );
    let ips = [ip("192.0.2.1"), ip("192.0.2.2")];
    let mut tracker = ListingTracker::new(TrackerConfig { unknown_after: 3 });
    let rep = checker.sweep(&ips, t(0)).await;
    tracker.observe(&rep, t(0));
    assert_eq!(tracker.ip(ip("192.0.2.2")).unwrap().status, ListingStatus::Listed);
    assert_eq!(tracker.ip(ip("192.0.2.1")).unwrap().status, ListingStatus::Clean);

    drop(server); // the DNS server goes away
    for s in 1..=2 {
        let rep = checker.sweep(&ips, t(s * 60)).await;
        assert!(rep.outcomes[&ip("192.0.2.2")]["bl-a.test"].is_failure(), "{rep:?}");
        let ch = tracker.observe(&rep, t(s * 60));
        assert!(ch.is_empty(), "sweep {s} changed state: {ch:?}");
        assert_eq!(tracker.ip(ip("192.0.2.2")).unwrap().status, ListingStatus::Listed);
        assert_eq!(tracker.ip(ip("192.0.2.1")).unwrap().status, ListingStatus::Clean);
    }
    let rep = checker.sweep(&ips, t(180)).await;
    let ch = tracker.observe(&rep, t(180));
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert_eq!(tracker.ip(ip("192.0.2.2")).unwrap().status, ListingStatus::Unknown);
    assert_eq!(tracker.ip(ip("192.0.2.1")).unwrap().status, ListingStatus::Unknown);
}

fn sender_zone(extra: &str) -> String {
    let mut z = String::from(
        r#"
mta1 A 192.0.2.10
mta2 A 192.0.2.99
mta3 A 192.0.2.12
mta6 AAAA 2001:db8::10
relay A 192.0.2.20
mx1 A 192.0.2.21
pass TXT "v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/64 -all"
fail TXT "v=spf1 ip4:198.51.100.1 -all"
soft TXT "v=spf1 ip4:198.51.100.1 ~all"
neutral TXT "v=spf1 ?all"
redir TXT "v=spf1 redirect=pass.sender.test"
inc TXT "v=spf1 include:_spf1.sender.test -all"
_spf1 TXT "v=spf1 ip4:198.51.100.0/24 include:_spf2.sender.test -all"
_spf2 TXT "v=spf1 a:relay.sender.test mx:mxhost.sender.test -all"
mxhost MX 10 mx1.sender.test.
viamx TXT "v=spf1 mx -all"
viamx MX 10 mx1.sender.test.
tempfail TXT "v=spf1 include:spf.slow.test -all"
_dmarc.pass TXT "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test"
_dmarc.soft TXT "v=DMARC1; p=none; sp=quarantine; pct=50"
_dmarc.dup TXT "v=DMARC1; p=none"
_dmarc.dup TXT "v=DMARC1; p=reject"
"#,
    );
    // Ten DNS-querying terms are allowed, the eleventh is a permerror.
    for i in 1..=11 {
        z.push_str(&format!("l{i} TXT \"v=spf1 ip4:203.0.113.{i} -all\"\n"));
    }
    let incs = |n: usize| (1..=n).map(|i| format!("include:l{i}.sender.test")).collect::<Vec<_>>().join(" ");
    // Longer than one 255-byte string: split (RFC 7208 §3.3 joins them).
    let rec = |n| txt(&format!("v=spf1 {} ip4:192.0.2.0/24 -all", incs(n)));
    z.push_str(&format!("ten TXT {}\neleven TXT {}\n", rec(10), rec(11)));
    z.push_str(extra);
    z
}

fn auth_server(extra: &str) -> dns_common::TestDnsBuilder {
    TestDns::builder()
        .zone("sender.test", &sender_zone(extra))
        .zone(
            "2.0.192.in-addr.arpa",
            "10 PTR mta1.sender.test.\n11 PTR mta2.sender.test.\n12 PTR mta3.sender.test.\n50 PTR mta1.sender.test.\n",
        )
        .zone("8.b.d.0.1.0.0.2.ip6.arpa", &format!("{V6_10_REL} PTR mta6.sender.test.\n"))
        .zone("slow.test", "spf TXT \"v=spf1 -all\"\n")
        .rule("slow.test", Misbehave::Delay(SLOW))
        .rule("50.2.0.192.in-addr.arpa", Misbehave::Drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_dns_fcrdns_and_helo() {
    let server = auth_server("").start().await;
    let r = HickoryDns::new(&settings(&server)).unwrap();
    assert_eq!(
        check_ptr(&r, ip("192.0.2.10"), "mta1.sender.test").await,
        PtrVerdict::Valid { name: "mta1.sender.test".into() }
    );
    assert_eq!(
        check_ptr(&r, ip("192.0.2.11"), "mta2.sender.test").await,
        PtrVerdict::NotForwardConfirmed { names: vec!["mta2.sender.test".into()] }
    );
    assert_eq!(
        check_ptr(&r, ip("192.0.2.12"), "mail.sender.test").await,
        PtrVerdict::HeloMismatch { confirmed: vec!["mta3.sender.test".into()], helo: "mail.sender.test".into() }
    );
    assert_eq!(check_ptr(&r, ip("192.0.2.13"), "mta1.sender.test").await, PtrVerdict::Missing);
    assert_eq!(
        check_ptr(&r, ip("2001:db8::10"), "mta6.sender.test").await,
        PtrVerdict::Valid { name: "mta6.sender.test".into() }
    );
    assert!(matches!(check_ptr(&r, ip("192.0.2.50"), "mta1.sender.test").await, PtrVerdict::Unknown { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_real_evaluation() {
    let server = auth_server("").start().await;
    let r = HickoryDns::new(&settings(&server)).unwrap();
    let ips = [ip("192.0.2.10"), ip("192.0.2.20"), ip("192.0.2.21"), ip("2001:db8::10")];
    let spf = |d: &'static str| {
        let r = r.clone();
        async move { check_spf(&r, d, &ips, "mta1.sender.test", "checker.sendfleet.test").await }
    };
    use SpfVerdict::*;
    let v = |c: &SpfCheck| c.per_ip.values().copied().collect::<Vec<_>>();

    // ip4 /28 covers .10 only; ip6 covers 2001:db8::10.
    assert_eq!(v(&spf("pass.sender.test").await), vec![Pass, Fail, Fail, Pass]);
    assert_eq!(v(&spf("redir.sender.test").await), vec![Pass, Fail, Fail, Pass]);
    // include -> include -> a: (relay = .20) and mx: (mx1 = .21).
    assert_eq!(v(&spf("inc.sender.test").await), vec![Fail, Pass, Pass, Fail]);
    assert_eq!(v(&spf("viamx.sender.test").await), vec![Fail, Fail, Pass, Fail]);
    assert_eq!(v(&spf("fail.sender.test").await), vec![Fail; 4]);
    assert_eq!(v(&spf("soft.sender.test").await), vec![SoftFail; 4]);
    assert_eq!(v(&spf("neutral.sender.test").await), vec![Neutral; 4]);
    assert_eq!(v(&spf("nothing.sender.test").await), vec![SpfVerdict::None; 4]);
    // The 10-lookup limit: 10 includes are fine, 11 are a permerror.
    let ten = spf("ten.sender.test").await;
    assert_eq!(ten.per_ip[&ip("192.0.2.10")], Pass, "{ten:?}");
    let eleven = spf("eleven.sender.test").await;
    assert_eq!(eleven.per_ip[&ip("192.0.2.10")], PermError, "{eleven:?}");
    // A slow include is a temperror, not a fail.
    let temp = check_spf(&r, "tempfail.sender.test", &ips[..1], "mta1.sender.test", "c.test").await;
    assert_eq!(temp.per_ip[&ip("192.0.2.10")], TempError, "{temp:?}");
}

fn pubkey_record(pem: &[u8]) -> String {
    public_key_from_pem(pem).unwrap().txt_record()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_key_matching_and_dmarc() {
    let rsa_key = openssl_genkey("RSA", &["-pkeyopt", "rsa_keygen_bits:2048"]);
    let rsa_pkcs1 = openssl_to_pkcs1(&rsa_key);
    let other_rsa = openssl_genkey("RSA", &["-pkeyopt", "rsa_keygen_bits:1024"]);
    let ed_key = openssl_genkey("ED25519", &[]);
    let other_ed = openssl_genkey("ED25519", &[]);

    // The same RSA key also published as bare RSAPublicKey (PKCS#1) DER.
    let pkcs1_pub = match public_key_from_pem(&rsa_key).unwrap() {
        PublicKey::Rsa(k) => {
            use base64::Engine as _;
            use rsa::pkcs1::EncodeRsaPublicKey as _;
            base64::engine::general_purpose::STANDARD.encode(k.to_pkcs1_der().unwrap().as_bytes())
        }
        PublicKey::Ed25519(_) => unreachable!(),
    };
    let extra = format!(
        "s1._domainkey.pass TXT {}\n\
         s2._domainkey.pass TXT {}\n\
         ed._domainkey.pass TXT {}\n\
         wrong._domainkey.pass TXT {}\n\
         wronged._domainkey.pass TXT {}\n\
         revoked._domainkey.pass TXT \"v=DKIM1; k=rsa; p=\"\n\
         junk._domainkey.pass TXT \"v=DKIM1; k=rsa; p=bm90IGEga2V5\"\n",
        txt(&pubkey_record(&rsa_key)),
        txt(&format!("v=DKIM1; k=rsa; p={pkcs1_pub}")),
        txt(&pubkey_record(&ed_key)),
        txt(&pubkey_record(&other_rsa)),
        txt(&pubkey_record(&other_ed)),
    );
    let server = auth_server(&extra).start().await;
    let r = HickoryDns::new(&settings(&server)).unwrap();
    let d = "pass.sender.test";

    let rsa = DkimVerdict::Match { key_type: KeyType::Rsa };
    assert_eq!(check_dkim(&r, d, "s1", &rsa_key).await, rsa);
    assert_eq!(check_dkim(&r, d, "s1", &rsa_pkcs1).await, rsa, "PKCS#1 private key");
    assert_eq!(check_dkim(&r, d, "s2", &rsa_key).await, rsa, "PKCS#1 public key in DNS");
    assert_eq!(check_dkim(&r, d, "ed", &ed_key).await, DkimVerdict::Match { key_type: KeyType::Ed25519 });
    assert_eq!(
        check_dkim(&r, d, "wrong", &rsa_key).await,
        DkimVerdict::Mismatch { published: KeyType::Rsa, expected: KeyType::Rsa }
    );
    assert_eq!(
        check_dkim(&r, d, "wronged", &ed_key).await,
        DkimVerdict::Mismatch { published: KeyType::Ed25519, expected: KeyType::Ed25519 }
    );
    assert_eq!(
        check_dkim(&r, d, "ed", &rsa_key).await,
        DkimVerdict::Mismatch { published: KeyType::Ed25519, expected: KeyType::Rsa }
    );
    assert_eq!(check_dkim(&r, d, "absent", &rsa_key).await, DkimVerdict::Missing);
    assert_eq!(check_dkim(&r, d, "revoked", &rsa_key).await, DkimVerdict::Revoked);
    assert!(matches!(check_dkim(&r, d, "junk", &rsa_key).await, DkimVerdict::Malformed { .. }));
    assert!(matches!(
        check_dkim(&r, d, "s1", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").await,
        DkimVerdict::BadPrivateKey { .. }
    ));

    // DMARC present / absent / with subdomain policy / duplicated.
    assert_eq!(
        check_dmarc(&r, d).await,
        DmarcVerdict::Present(DmarcRecord { policy: DmarcPolicy::Reject, subdomain_policy: None, pct: 100 })
    );
    assert_eq!(
        check_dmarc(&r, "soft.sender.test").await,
        DmarcVerdict::Present(DmarcRecord {
            policy: DmarcPolicy::None,
            subdomain_policy: Some(DmarcPolicy::Quarantine),
            pct: 50
        })
    );
    assert_eq!(check_dmarc(&r, "fail.sender.test").await, DmarcVerdict::Missing);
    assert!(matches!(check_dmarc(&r, "dup.sender.test").await, DmarcVerdict::Malformed { .. }));
    assert!(matches!(check_dmarc(&r, "x.slow.test").await, DmarcVerdict::Unknown { .. }));

    // The whole pool summary turned into the two conditions.
    let ips = [ip("192.0.2.10")];
    let mut summary = PoolDnsSummary::default();
    summary.ips.insert(
        ips[0],
        IpSummary { name: "mta1".into(), listing: None, ptr: Some(check_ptr(&r, ips[0], "mta1.sender.test").await) },
    );
    summary.domains.insert(
        d.into(),
        DomainSummary {
            spf: Some(check_spf(&r, d, &ips, "mta1.sender.test", "checker.test").await),
            dkim: Some(check_dkim(&r, d, "s1", &rsa_key).await),
            dmarc: Some(check_dmarc(&r, d).await),
        },
    );
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::True, "Valid"), "{}", c.message);
    summary.domains.insert(
        "fail.sender.test".into(),
        DomainSummary {
            spf: Some(check_spf(&r, "fail.sender.test", &ips, "mta1.sender.test", "c.test").await),
            dkim: Some(check_dkim(&r, d, "wrong", &rsa_key).await),
            dmarc: Some(check_dmarc(&r, "fail.sender.test").await),
        },
    );
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::False, "MultipleFailures"));
    assert_eq!(
        c.message,
        "fail.sender.test: DKIM record publishes a different key (rsa published, rsa expected); \
         fail.sender.test: SPF fail for 192.0.2.10; fail.sender.test: no DMARC record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_records_published_make_authentication_valid() {
    // Round trip: what required_records() says to publish, once published,
    // passes every check; PTRs as the pool renders HELO names.
    let key = openssl_genkey("ED25519", &[]);
    let public = public_key_from_pem(&key).unwrap();
    let ips = [ip("192.0.2.10"), ip("2001:db8::10")];
    let records = required_records("fresh.test", &ips, Some(("sf1", &public)), "quarantine");
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["_dmarc.fresh.test", "fresh.test", "sf1._domainkey.fresh.test"]);
    assert_eq!(records[1].value, "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all");
    let mut zone = String::new();
    for r in &records {
        zone.push_str(&format!("{}. TXT {}\n", r.name, txt(&r.value)));
    }
    let server = auth_server("").zone("fresh.test", &zone).start().await;
    let r = HickoryDns::new(&settings(&server)).unwrap();
    let egress = [
        EgressIp { name: "mta1".into(), address: ips[0], helo_name: "mta1.sender.test".into() },
        EgressIp { name: "mta6".into(), address: ips[1], helo_name: "mta6.sender.test".into() },
    ];
    let dkim = DkimInput::from_pem("sf1", key.clone());
    let summary = check_authentication(&r, &egress, &["fresh.test".into()], &[], Some(&dkim), "op.test").await;
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::True, "Valid"), "{}", c.message);
    assert!(c.message.contains("fresh.test: DMARC p=quarantine"), "{}", c.message);

    // A third IP the SPF record does not name: SpfNotAuthorized, naming it.
    let mut egress = egress.to_vec();
    egress.push(EgressIp { name: "mta1b".into(), address: ip("192.0.2.11"), helo_name: "mta2.sender.test".into() });
    let summary = check_authentication(&r, &egress, &["fresh.test".into()], &[], Some(&dkim), "op.test").await;
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::False, "MultipleFailures"));
    assert_eq!(
        c.message,
        "fresh.test: SPF fail for 192.0.2.11; mta1b (192.0.2.11): PTR mta2.sender.test does not resolve back to the IP"
    );
}

/// Incident 8, forwarding breaks SPF: a DomainPolicy routes mail through a
/// relay (`route.relayHost`), so receivers see the relay's address; the
/// sending domain's SPF record names only the pool's own IP. The relay's
/// address — resolved through the operator's resolver, or the literal —
/// makes `AuthenticationValid=False`, naming the address, the route and
/// the record; a record that names it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_address_the_spf_record_does_not_authorise_is_named() {
    let server = auth_server("")
        .zone(
            "forward.test",
            r#"
@ TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc TXT "v=DMARC1; p=none"
"#,
        )
        .zone(
            "covered.test",
            r#"
@ TXT "v=spf1 ip4:192.0.2.10 ip4:198.51.100.7 ip6:2001:db8:5::7 ip4:198.51.100.9 -all"
_dmarc TXT "v=DMARC1; p=none"
"#,
        )
        .zone("partner.test", "relay A 198.51.100.7\nrelay AAAA 2001:db8:5::7\n")
        .start()
        .await;
    let r = HickoryDns::new(&settings(&server)).unwrap();
    let egress = [EgressIp { name: "mta1".into(), address: ip("192.0.2.10"), helo_name: "mta1.sender.test".into() }];
    let relays = [
        RelayRoute { policy: "partner".into(), host: "relay.partner.test".into() },
        RelayRoute { policy: "partner-eu".into(), host: "relay.partner.test".into() },
        RelayRoute { policy: "literal".into(), host: "198.51.100.9".into() },
    ];
    // Without the relays the pool is fine: its own IP is authorised.
    let summary = check_authentication(&r, &egress, &["forward.test".into()], &[], None, "op.test").await;
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::True, "Valid"), "{}", c.message);

    let summary = check_authentication(&r, &egress, &["forward.test".into()], &relays, None, "op.test").await;
    assert_eq!(
        summary.relays["relay.partner.test"],
        RelaySummary {
            policies: vec!["partner".into(), "partner-eu".into()],
            addresses: RelayAddresses::Resolved(vec![ip("198.51.100.7"), ip("2001:db8:5::7")]),
        }
    );
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::False, "SpfNotAuthorized"), "{}", c.message);
    assert_eq!(
        c.message,
        "forward.test: SPF fail for relay address 198.51.100.7 (DomainPolicy partner,partner-eu route.relayHost \
         relay.partner.test); record \"v=spf1 ip4:192.0.2.10 -all\"; \
         forward.test: SPF fail for relay address 198.51.100.9 (DomainPolicy literal route.relayHost 198.51.100.9); \
         record \"v=spf1 ip4:192.0.2.10 -all\"; \
         forward.test: SPF fail for relay address 2001:db8:5::7 (DomainPolicy partner,partner-eu route.relayHost \
         relay.partner.test); record \"v=spf1 ip4:192.0.2.10 -all\""
    );

    // The record that names every address the mail leaves from passes.
    let summary = check_authentication(&r, &egress, &["covered.test".into()], &relays, None, "op.test").await;
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::True, "Valid"), "{}", c.message);
    assert!(c.message.starts_with("SPF passes for 1 IP(s) and 3 relay address(es) in 1 domain(s)"), "{}", c.message);

    // A relay that does not resolve cannot be checked: Unknown, named.
    let gone = [RelayRoute { policy: "old".into(), host: "gone.partner.test".into() }];
    let summary = check_authentication(&r, &egress, &["covered.test".into()], &gone, None, "op.test").await;
    let c = authentication_condition(&summary);
    assert_eq!((c.status, c.reason.as_str()), (Status::Unknown, "CheckFailing"), "{}", c.message);
    assert_eq!(c.message, "Not checkable: DomainPolicy old route.relayHost gone.partner.test: no A or AAAA record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_delisting_seen_through_ttl_cache_with_cool_down() {
    let server = TestDns::builder()
        .zone("bl-a.test", "2.2.0.192 60 IN A 127.0.0.2\n2.2.0.192 60 IN TXT \"trap hit\"\n")
        .start()
        .await;
    let mut checker = DnsblChecker::new(
        HickoryDns::new(&settings(&server)).unwrap(),
        DnsblConfig { zones: zones(&["bl-a.test"]), min_cache: SignedDuration::from_secs(1), ..DnsblConfig::default() },
    );
    let mut tracker = ListingTracker::new(TrackerConfig::default());
    let a = ip("192.0.2.2");
    let cool_down = SignedDuration::from_secs(300);

    let ch = tracker.observe(&checker.sweep(&[a], t(0)).await, t(0));
    assert!(
        matches!(&ch[..], [ListingChange::Listed { listing, .. }]
        if listing.first_seen == t(0) && listing.reason.as_deref() == Some("trap hit")),
        "{ch:?}"
    );

    // The list delists the IP. Within the answer's TTL (60 s) we still see
    // the cached listing; after it, the delisting.
    server.remove_name("bl-a.test", "2.2.0.192").await;
    let rep = checker.sweep(&[a], t(30)).await;
    assert_eq!(rep.cache_hits, 1);
    assert!(tracker.observe(&rep, t(30)).is_empty());
    assert_eq!(tracker.ip(a).unwrap().status, ListingStatus::Listed);

    let ch = tracker.observe(&checker.sweep(&[a], t(61)).await, t(61));
    assert_eq!(
        ch,
        vec![ListingChange::Delisted { ip: a, zone: "bl-a.test".into(), listed_since: t(0), clean_since: t(61) }]
    );
    let view = tracker.ip(a).unwrap();
    assert_eq!(view.status, ListingStatus::Clean);
    assert!(!view.clean_for(cool_down, t(61 + 299)));
    assert!(view.clean_for(cool_down, t(61 + 300)));

    // Listed again later, with another code: a new listing, new first-seen.
    server.add_records("bl-a.test", "2.2.0.192 60 IN A 127.0.0.3\n").await;
    let ch = tracker.observe(&checker.sweep(&[a], t(400)).await, t(400));
    assert!(
        matches!(&ch[..], [ListingChange::Listed { listing, .. }]
        if listing.first_seen == t(400) && listing.codes == vec![v4("127.0.0.3")] && listing.reason.is_none()),
        "{ch:?}"
    );
}

/// RFC 5782's negative test point on the real server: a zone that answers
/// for every name (a wildcard, as a list that lists everything does) or
/// that lists 127.0.0.1 by mistake is a broken zone. It lists nothing: every
/// IP's outcome there is `Broken`, unknown at once with the zone's fault as
/// the reason, and a listing it reported before no longer stands. A healthy
/// zone asked in the same sweep is unaffected; once the zone is fixed its
/// answers count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_listing_its_negative_test_point_is_broken_and_lists_nothing() {
    let server = TestDns::builder()
        .zone("everything.test", "* 60 IN A 127.0.0.2\n* 60 IN TXT \"listed\"\n")
        .zone("lists-loopback.test", "1.0.0.127 60 IN A 127.0.0.2\n2.2.0.192 60 IN A 127.0.0.2\n")
        .zone("healthy.test", "2.0.0.127 60 IN A 127.0.0.2\n2.2.0.192 60 IN A 127.0.0.4\n")
        .start()
        .await;
    let all = ["everything.test", "lists-loopback.test", "healthy.test"];
    let mut checker = DnsblChecker::new(
        HickoryDns::new(&settings(&server)).unwrap(),
        DnsblConfig { zones: zones(&all), min_cache: SignedDuration::from_secs(1), ..DnsblConfig::default() },
    );
    let ips = [ip("192.0.2.1"), ip("192.0.2.2")];
    let rep = checker.sweep(&ips, t(0)).await;
    // The wildcard really answers for anything: the test point is listed.
    for a in &ips {
        for zone in ["everything.test", "lists-loopback.test"] {
            match &rep.outcomes[a][zone] {
                ZoneOutcome::Broken { reason } => {
                    assert!(reason.contains("negative test point 127.0.0.1 (127.0.0.2)"), "{reason}")
                }
                other => panic!("{a} in {zone}: {other:?}"),
            }
        }
    }
    assert_eq!(
        rep.outcomes[&ip("192.0.2.2")]["healthy.test"],
        ZoneOutcome::Listed { codes: vec![v4("127.0.0.4")], reason: None }
    );
    assert_eq!(rep.outcomes[&ip("192.0.2.1")]["healthy.test"], ZoneOutcome::Clean);
    // Only the test points were asked of the broken zones.
    assert_eq!(server.stats.count_under("everything.test"), 1, "{:?}", server.stats.names());
    assert_eq!(server.stats.count_under("lists-loopback.test"), 1, "{:?}", server.stats.names());

    // Unknown at once (no hysteresis), reason surfaced; no listing.
    let mut tracker = ListingTracker::new(TrackerConfig::default());
    tracker.observe(&rep, t(0));
    let view = tracker.ip(ip("192.0.2.2")).unwrap();
    assert_eq!(view.listings.iter().map(|l| l.zone.as_str()).collect::<Vec<_>>(), vec!["healthy.test"]);
    let view = tracker.ip(ip("192.0.2.1")).unwrap();
    assert_eq!(view.status, ListingStatus::Unknown, "{view:?}");
    assert!(view.listings.is_empty(), "{view:?}");
    let unknown: Vec<&str> = view.unknown.iter().map(|(z, _)| z.as_str()).collect();
    assert_eq!(unknown, vec!["everything.test", "lists-loopback.test"]);
    assert!(view.unknown.iter().all(|(_, r)| r.starts_with("broken zone")), "{view:?}");

    // A zone that breaks after listing an IP: the listing goes at once.
    let server2 = TestDns::builder().zone("turns.test", "2.2.0.192 60 IN A 127.0.0.2\n").start().await;
    let mut checker2 = DnsblChecker::new(
        HickoryDns::new(&settings(&server2)).unwrap(),
        DnsblConfig {
            zones: zones(&["turns.test"]),
            min_cache: SignedDuration::from_secs(1),
            ..DnsblConfig::default()
        },
    );
    let a = ip("192.0.2.2");
    tracker.observe(&checker2.sweep(&[a], t(0)).await, t(0));
    assert!(tracker.ip(a).unwrap().listings.iter().any(|l| l.zone == "turns.test"));
    server2.add_records("turns.test", "* 60 IN A 127.0.0.2\n").await;
    // The clean test point was cached for its negative TTL (60 s).
    let rep = checker2.sweep(&[a], t(120)).await;
    assert!(matches!(rep.outcomes[&a]["turns.test"], ZoneOutcome::Broken { .. }), "{rep:?}");
    tracker.observe(&rep, t(120));
    assert!(!tracker.ip(a).unwrap().listings.iter().any(|l| l.zone == "turns.test"), "{:?}", tracker.ip(a));

    // Fixed: its answers count again.
    server2.remove_name("turns.test", "*").await;
    let rep = checker2.sweep(&[a], t(240)).await;
    assert_eq!(rep.outcomes[&a]["turns.test"], ZoneOutcome::Listed { codes: vec![v4("127.0.0.2")], reason: None });
}
