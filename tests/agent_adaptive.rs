//! Adaptive domain rules on real Postfix: automatic exclusion after hard
//! blocks (no message bounces because of it), adaptive slow-down with
//! stepwise recovery, and throttle accuracy at the receiver.
//!
//! The instances run what the renderer made of a pool and one DomainPolicy
//! `dp` (main.cf, master.cf with the rule's transports and the delivery
//! status filter, policy.json), through the test kit. Receivers are real
//! Postfix smtpd's that block one client address (access map) or rate-limit
//! it (anvil), like the providers in the seeds' incidents. The three tests are separate so they
//! run side by side: the 5-minute throttle measurement sets the binary's
//! wall time.

#[allow(dead_code)]
mod agent_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::*;
use sendfleet::agent::log::classify::classify;
use sendfleet::agent::log::parse::Status;
use sendfleet::core::contract::ResponseCategory;
use sendfleet::core::policy::DomainRule;
use sendfleet::core::postfix::dsn_filter;

/// A pool of `members` (name, address) with the DomainPolicy `dp`.
fn fleet_with(dns: &Dns, pool: &str, members: &[(&str, &str)], dp: Policy) -> Fleet {
    let mut p = Pool::named(pool).in_ns("test").fast_retries();
    for (name, addr) in members {
        p = p.with_ip(name, addr);
    }
    fleet(p.build(), dns).policy(dp.build())
}

fn dp(domain: &str) -> Policy {
    Policy::named("dp").in_ns("test").for_domains(&[domain])
}

/// The rule `dp` as rendered into the instance's policy.json.
fn rule(inst: &Instance) -> DomainRule {
    inst.pod.rendered.policy.domains.iter().find(|r| r.name == "dp").expect("rule dp rendered").clone()
}

/// Rewrite a receiver's main.cf and reload it (never a restart).
fn reconfigure_receiver(rcv: &Receiver, edit: impl Fn(String) -> String) {
    let path = rcv.dir.join("main.cf");
    let main = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(main)).unwrap();
    postfix(&rcv.dir, "reload");
}

/// Have `rcv` answer `554 5.7.1 ... blocked by provider policy` to `client`
/// for mail to `domains`, after its unknown users are refused (a
/// restriction class, so bounce notices to other domains still get
/// through), as a provider that blocks one sending IP does.
fn block_client(rcv: &Receiver, client: &str, domains: &[&str]) {
    let cidr = rcv.dir.join("blocked_clients");
    std::fs::write(&cidr, format!("{client}/32 554 5.7.1 Service unavailable; client blocked by provider policy\n"))
        .unwrap();
    let classes = rcv.dir.join("blocked_domains");
    std::fs::write(&classes, domains.iter().map(|d| format!("{d} block_a\n")).collect::<String>()).unwrap();
    let access = format!("check_recipient_access texthash:{}, ", rcv.dir.join("access").display());
    reconfigure_receiver(rcv, |m| {
        assert!(m.contains(&access), "{m}");
        m.replace(&access, &format!("{access}check_recipient_access texthash:{}, ", classes.display()))
            + &format!("smtpd_restriction_classes = block_a\nblock_a = check_client_access cidr:{}\n", cidr.display())
    });
}

/// Submit `count` messages with distinct recipients through `inst`.
fn inject_distinct(inst: &Instance, rcpt: &str, count: u32, sessions: u32) {
    inst.inject_distinct("app@client.test", rcpt, count, sessions);
}

/// The rendered filter softens exactly the 5xx answers the classifier calls
/// IP blocks (real `postmap -q` on the rendered table).
#[test]
fn dsn_filter_agrees_with_the_classifier() {
    require_postfix();
    let dir = test_dir("dsn-filter");
    let table = dir.join("dsn_filter");
    std::fs::write(&table, dsn_filter::render("test").unwrap()).unwrap();
    let corpus: &[(&str, &str)] = &[
        ("5.7.1", "host mx[192.0.2.1] said: 554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org (in reply to RCPT TO command)"),
        ("5.7.1", "host mx[192.0.2.1] said: 550 5.7.1 Mail from IP 192.0.2.9 refused due to poor reputation"),
        ("5.7.606", "host mx[192.0.2.1] said: 550 5.7.606 Access denied, banned sending IP [192.0.2.9]"),
        ("5.7.1", "host mx[192.0.2.1] said: 554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: blocked by provider"),
        ("5.1.1", "host mx[192.0.2.1] said: 550 5.1.1 <h-1@x.test>: Recipient address rejected: User unknown in virtual mailbox table"),
        ("5.1.1", "host mx[192.0.2.1] said: 550 5.1.1 blocked mailbox does not exist"),
        ("5.2.2", "host mx[192.0.2.1] said: 552 5.2.2 mailbox full, sender blocked"),
        ("5.7.1", "host mx[192.0.2.1] said: 550 5.7.1 too many connections, you are blocked"),
        ("5.7.10", "host mx[192.0.2.1] said: 530 5.7.10 Must issue a STARTTLS command first"),
        ("5.0.0", "host mx[192.0.2.1] said: 554 5.0.0 transaction failed"),
        ("5.7.1", "host mx[192.0.2.1] said: 550 5.7.1 relaying denied"),
        ("4.7.1", "host mx[192.0.2.1] said: 450 4.7.1 blocked temporarily"),
    ];
    let mut softened = 0;
    for (dsn, text) in corpus {
        let key = format!("{dsn} {text}");
        let out =
            Command::new("postmap").arg("-q").arg(&key).arg(format!("regexp:{}", table.display())).output().unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let is_block = dsn.starts_with('5')
            && classify(Status::Bounced, dsn.as_bytes(), text.as_bytes()) == ResponseCategory::IpBlock;
        if is_block {
            softened += 1;
            assert_eq!(answer, format!("4{}", &key[1..]), "block not softened: {key}");
        } else {
            assert!(answer.is_empty(), "{key} softened to {answer:?} though the classifier does not call it a block");
        }
    }
    assert_eq!(softened, 4, "corpus should hold 4 blocks");
    let _ = std::fs::remove_dir_all(&dir);
}

const BLK_A: &str = "198.51.100.31";
const BLK_B: &str = "198.51.100.32";
const BLK_RCV: &str = "203.0.113.31";

/// The seed's incident without a human: a provider answers 554 "blocked" to
/// instance A only. After 3 blocks A excludes itself for the rule, the
/// domain's mail (the blocked messages' retries included) leaves through B,
/// every message arrives exactly once, and nothing bounces but an unknown
/// user.
#[test]
fn hard_blocks_exclude_the_ip_and_no_message_bounces() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("blocked.test", BLK_RCV), ("client.test", BLK_RCV)]);
    // Bounce notices go to client.test: the receiver takes them too.
    let rcv = receiver(
        "blk-rcv",
        BLK_RCV,
        &["blocked.test", "client.test"],
        &[("unknown@blocked.test", "550 5.1.1 User unknown")],
    );
    block_client(&rcv, BLK_A, &["blocked.test"]);

    let members = [("blk-a", BLK_A), ("blk-b", BLK_B)];
    let fleet = fleet_with(&dns, "blk", &members, dp("blocked.test").auto_exclusion(3, "10m", "1h"));
    let a = fleet.start("blk-a");
    let b = fleet.start("blk-b");
    let master = &a.pod.files["master.cf"];
    assert!(master.contains("smtp_delivery_status_filter=regexp:$config_directory/dsn_filter"), "{master}");
    let r = rule(&a);
    assert_eq!(r.throttle_transport.as_deref(), Some("dp-dp"));
    let a_rule = r.auto_exclusion.clone().expect("autoExclusion rendered");
    assert_eq!((a_rule.hard_blocks, a_rule.window_seconds, a_rule.duration_seconds), (3, 600, 3600));
    let started = a.status().now;

    // An unknown user still bounces (before any block: A sends it itself).
    a.inject("app@client.test", "unknown@blocked.test", 2, 1);
    a.wait_for(Duration::from_secs(30), "unknown users bounced", |s| s.counters.since_start.bounced == 2);
    inject_distinct(&a, "user@blocked.test", 30, 2);

    wait_until("30 messages delivered", Duration::from_secs(120), || rcv.deliveries().to_domain("blocked.test") >= 30);
    a.wait_queue_empty(Duration::from_secs(60));
    b.wait_queue_empty(Duration::from_secs(60));
    let got = rcv.deliveries();
    let to_blocked: Vec<&str> =
        got.accepted.iter().map(|(r, _)| r.as_str()).filter(|r| r.ends_with("@blocked.test")).collect();
    let recipients: BTreeSet<&str> = to_blocked.iter().copied().collect();
    assert_eq!(to_blocked.len(), 30, "every message exactly once: {got:?}");
    assert_eq!(recipients.len(), 30, "{got:?}");
    assert_eq!(got.to_domain_from("blocked.test", BLK_B), 30, "all through B: {got:?}");

    let log_a = a.stdout();
    let blocks = lines_with(&log_a, &["@blocked.test>", "status=deferred", "blocked by provider"]);
    assert!(blocks.len() >= 3, "A should have met the block at least 3 times:\n{log_a}");
    assert!(blocks.iter().all(|l| l.contains("dsn=4.7.1") && l.contains("postfix/dp-dp/smtp[")), "{blocks:#?}");
    // Only the unknown user bounced; the block never did.
    let bounced = lines_with(&log_a, &["status=bounced"]);
    assert_eq!(bounced.len(), 2, "{log_a}");
    assert!(bounced.iter().all(|l| l.contains("dsn=5.1.1") && l.contains("User unknown")), "{bounced:#?}");
    let via_b = format!("relay={BLK_B}[{BLK_B}]:{}", a.peer_port);
    assert!(lines_with(&log_a, &["@blocked.test>", &via_b, "status=sent"]).len() >= 27);

    let st = a.status();
    assert_eq!(st.counters.since_start.bounced, 2, "{:?}", st.counters);
    assert_eq!(st.adaptive.exclusions.len(), 1, "{:?}", st.adaptive);
    let ex = st.adaptive.exclusions[0].clone();
    assert_eq!(ex.rule, "dp");
    assert!(ex.reason.starts_with("3 IP/reputation blocks from blocked.test within 600s"), "{}", ex.reason);
    assert!(ex.since >= started && ex.since <= st.now, "{ex:?}");
    assert_eq!(ex.until, ex.since + 3600);
    assert!(b.status().adaptive.exclusions.is_empty());
    assert_eq!(b.status().counters.since_start.bounced, 0);
    let m = a.metrics();
    for needle in [
        "sendfleet_agent_auto_excluded{rule=\"dp\"} 1",
        "sendfleet_agent_adaptive_changes_total{rule=\"dp\",change=\"Excluded\"} 1",
        "sendfleet_agent_policy_lookups_total{decision=\"Peer\",reason=\"Excluded\"}",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    // Persisted on the queue volume's state dir.
    wait_until("adaptive.json written", Duration::from_secs(15), || {
        std::fs::read_to_string(a.state_dir().join("adaptive.json"))
            .is_ok_and(|s| s.contains("\"dp\"") && s.contains("until"))
    });

    // It survives an agent restart (state dir on the queue volume).
    let mut a = a;
    a.restart();
    let st = a.status();
    assert_eq!(st.adaptive.exclusions, vec![ex.clone()], "{:?}", st.adaptive);
    assert!(a.metrics().contains("sendfleet_agent_auto_excluded{rule=\"dp\"} 1"));

    // The exclusion expires on the agent's clock: A sends for the rule again.
    a.set_clock_offset(3601);
    let st = a.wait_for(Duration::from_secs(10), "exclusion lifted", |s| s.adaptive.exclusions.is_empty());
    assert!(st.now >= ex.until);
    assert!(a.metrics().contains("sendfleet_agent_adaptive_changes_total{rule=\"dp\",change=\"ExclusionLifted\"} 1"));
}

const MX_A: &str = "198.51.100.35";
const MX_B: &str = "198.51.100.36";
const MX_RCV: &str = "203.0.113.34";
const PROVIDER_MX: &str = "mx.provider.test";

/// Incident 1, provider-wide: one provider's MX host serves three domains
/// and answers 554 "blocked" to instance A. Only `big.test` is in a policy
/// with autoExclusion; `team.test` is in a throttle-only policy and
/// `free.test` in none (and A has never sent to it: its MX is unknown).
/// After the threshold A is excluded for all three, all their mail leaves
/// through B (`team.test` on B's throttle transport), nothing bounces, and
/// once the exclusion has expired (the agent's clock moved) A is tried
/// again: the receiver logs new attempts from it.
#[test]
fn blocks_from_one_mx_host_exclude_the_ip_for_every_domain_behind_it() {
    require_postfix();
    let domains = ["big.test", "team.test", "free.test"];
    let mut zones = BTreeMap::new();
    zones.insert("provider.test".to_string(), format!("mx IN A {MX_RCV}\n"));
    for d in domains.iter().chain(&["client.test"]) {
        zones.insert(d.to_string(), format!("@ IN MX 10 {PROVIDER_MX}.\n"));
    }
    let dns = Dns::serve("127.0.0.56", zones);
    let rcv = receiver("mx-rcv", MX_RCV, &["big.test", "team.test", "free.test", "client.test"], &[]);
    let members = [("mx-a", MX_A), ("mx-b", MX_B)];
    let team = Policy::named("team").in_ns("test").for_domains(&["team.test"]).throttled(2, 60, 2);
    let fleet = fleet_with(&dns, "mx", &members, dp("big.test").auto_exclusion(3, "10m", "1h")).policy(team.build());
    let a = fleet.start("mx-a");
    let b = fleet.start("mx-b");
    // Every transport to an MX softens blocks once a policy has autoExclusion.
    let master = &a.pod.files["master.cf"];
    let filter = "-o smtp_delivery_status_filter=regexp:$config_directory/dsn_filter";
    for service in ["smtp unix", "dp-dp unix", "dp-team unix"] {
        let block = master.split(&format!("\n{service}")).nth(1).unwrap_or_else(|| panic!("{service}: {master}"));
        let options: String = block.lines().skip(1).take_while(|l| l.starts_with("  ")).collect();
        assert!(options.contains(filter), "{service} without the status filter:\n{master}");
    }

    // A sends to two of the domains while the provider still accepts it:
    // its log teaches it their MX host.
    a.inject("app@client.test", "first@big.test", 1, 1);
    a.inject("app@client.test", "first@team.test", 1, 1);
    wait_until("A's first messages delivered", Duration::from_secs(60), || {
        let d = rcv.deliveries();
        d.to_domain_from("big.test", MX_A) == 1 && d.to_domain_from("team.test", MX_A) == 1
    });

    block_client(&rcv, MX_A, &domains);
    let started = a.status().now;
    inject_distinct(&a, "user@big.test", 5, 1);
    let st = a.wait_for(Duration::from_secs(60), "A excluded", |s| !s.adaptive.exclusions.is_empty());
    assert_eq!(st.adaptive.exclusions[0].mx_hosts, [PROVIDER_MX], "{:?}", st.adaptive);
    // The other two domains: known MX (team.test) and unknown (free.test).
    inject_distinct(&a, "user@team.test", 10, 1);
    inject_distinct(&a, "user@free.test", 10, 1);
    wait_until("every message delivered", Duration::from_secs(120), || {
        let d = rcv.deliveries();
        d.to_domain("big.test") >= 6 && d.to_domain("team.test") >= 11 && d.to_domain("free.test") >= 10
    });
    a.wait_queue_empty(Duration::from_secs(60));
    b.wait_queue_empty(Duration::from_secs(60));

    let got = rcv.deliveries();
    for (domain, from_a, from_b) in [("big.test", 1, 5), ("team.test", 1, 10), ("free.test", 0, 10)] {
        let rcpts: Vec<&str> = got.accepted.iter().map(|(r, _)| r.as_str()).filter(|r| r.ends_with(domain)).collect();
        assert_eq!(rcpts.len(), from_a + from_b, "{domain}: every message exactly once: {got:?}");
        assert_eq!(rcpts.iter().collect::<BTreeSet<_>>().len(), rcpts.len(), "{domain}: duplicates: {got:?}");
        assert_eq!(got.to_domain_from(domain, MX_A), from_a, "{domain}: nothing from A after the block: {got:?}");
        assert_eq!(got.to_domain_from(domain, MX_B), from_b, "{domain}: the rest through B: {got:?}");
    }
    let (log_a, log_b) = (a.stdout(), b.stdout());
    for (who, log, st) in [("A", &log_a, a.status()), ("B", &log_b, b.status())] {
        assert!(lines_with(log, &["status=bounced"]).is_empty(), "{who} bounced:\n{log}");
        assert_eq!(st.counters.since_start.bounced, 0, "{who}: {:?}", st.counters);
    }
    // The cold domain: A's first attempts met the block on plain smtp and
    // were deferred (the status filter), which taught A its MX host.
    let cold = lines_with(&log_a, &["@free.test>", "status=deferred", "blocked by provider"]);
    assert!(!cold.is_empty(), "{log_a}");
    assert!(cold.iter().all(|l| l.contains("postfix/smtp[") && l.contains("dsn=4.7.1")), "{cold:#?}");
    // team.test never left A after the exclusion: its MX was known.
    assert!(lines_with(&log_a, &["@team.test>", "blocked by provider"]).is_empty(), "{log_a}");
    // On B each domain keeps its own transport: the throttle for team.test.
    for (domain, transport) in [
        ("@big.test>", "postfix/dp-dp/smtp["),
        ("@team.test>", "postfix/dp-team/smtp["),
        ("@free.test>", "postfix/smtp["),
    ] {
        let sent = lines_with(&log_b, &[domain, "status=sent"]);
        assert!(
            !sent.is_empty() && sent.iter().all(|l| l.contains(transport)),
            "{domain} not on {transport}: {sent:#?}"
        );
    }

    // What /status says (the DomainPolicy status mirrors `reason`).
    let st = a.status();
    let [ex] = &st.adaptive.exclusions[..] else { panic!("{:?}", st.adaptive) };
    assert_eq!(ex.rule, "dp");
    assert_eq!(ex.mx_hosts, [PROVIDER_MX]);
    assert_eq!(ex.mx_domain_count, 3, "{ex:?}");
    assert_eq!(ex.mx_domains, ["big.test", "free.test", "team.test"]);
    assert!(
        ex.reason.contains(&format!("provider-wide: every domain known to go to MX {PROVIDER_MX} leaves")),
        "{}",
        ex.reason
    );
    assert!(ex.since >= started && ex.until == ex.since + 3600, "{ex:?}");
    let raw = a.status_raw();
    for field in ["\"mxHosts\"", "\"mxDomainCount\"", "\"mxDomains\""] {
        assert!(raw.contains(field), "{field} missing: {raw}");
    }
    let m = a.metrics();
    assert!(m.contains("sendfleet_agent_policy_lookups_total{decision=\"Peer\",reason=\"ExcludedMx\"}"), "{m}");
    assert!(b.status().adaptive.exclusions.is_empty());

    // The exclusion expires on A's clock: A is tried again for the
    // provider's domains. The provider still blocks it, so the receiver
    // logs new refusals of A, the blocks engage the exclusion again, and the
    // mail still arrives through B without a bounce.
    let refusals = |log: &str| lines_with(log, &["NOQUEUE: reject: RCPT from", &format!("[{MX_A}]: 554")]).len();
    let before = refusals(&rcv.log());
    a.set_clock_offset(3601);
    a.wait_for(Duration::from_secs(10), "exclusion lifted", |s| s.adaptive.exclusions.is_empty());
    inject_distinct(&a, "late@team.test", 4, 1);
    wait_until("A tried again", Duration::from_secs(60), || refusals(&rcv.log()) > before);
    a.wait_for(Duration::from_secs(60), "A excluded again", |s| !s.adaptive.exclusions.is_empty());
    wait_until("the late mail delivered", Duration::from_secs(120), || rcv.deliveries().to_domain("team.test") >= 15);
    a.wait_queue_empty(Duration::from_secs(60));
    assert_eq!(rcv.deliveries().to_domain_from("team.test", MX_B), 14);
    assert_eq!(a.status().counters.since_start.bounced, 0);
    assert!(lines_with(&a.stdout(), &["status=bounced"]).is_empty());
}

const SLOW_A: &str = "198.51.100.33";
const SLOW_RCV: &str = "203.0.113.32";

/// A receiver that answers 450 above 10 messages per 5 s from one client:
/// the slow-down engages, the deferrals stop, and once the receiver relaxes
/// the level steps down one quiet interval at a time while the delivery rate
/// at the receiver rises.
#[test]
fn rate_limits_engage_the_slow_down_and_it_recovers_step_by_step() {
    require_postfix();
    let dns = Dns::start("127.0.0.54", &[("busy.test", SLOW_RCV), ("client.test", SLOW_RCV)]);
    let rcv = receiver("slow-rcv", SLOW_RCV, &["busy.test"], &[]);
    let strict = "smtpd_client_message_rate_limit = 10\nanvil_rate_time_unit = 5s\n";
    reconfigure_receiver(&rcv, |m| m + strict);
    let members = [("slow-a", SLOW_A)];
    let a = fleet_with(&dns, "slow", &members, dp("busy.test").slow_down(3, "1m", 60, "15s")).start("slow-a");
    let sd = rule(&a).slow_down.clone().expect("slowDown rendered");
    assert_eq!((sd.deferrals, sd.window_seconds, sd.recovery_interval_seconds, sd.levels), (3, 60, 15, 4));
    let main = &a.pod.files["main.cf"];
    assert!(main.contains("dp-dp-slow_destination_rate_delay = 1s"), "{main}");

    // 4 messages a second, distinct recipients, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let port = a.submission_port;
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                inject(SLOW_A, port, "app@client.test", &format!("b{batch}@busy.test"), 4, 1, true);
                batch += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        })
    };
    let deferred = |a: &Instance| {
        a.status()
            .domains
            .iter()
            .find(|d| d.domain == "busy.test")
            .map_or(0, |d| *d.categories.get("RateLimit").unwrap_or(&0))
    };

    let st = a.wait_for(Duration::from_secs(90), "slow-down engaged", |s| {
        s.adaptive.slow_downs.iter().any(|d| d.rule == "dp" && d.level == 4)
    });
    let engaged = Instant::now();
    let sd = &st.adaptive.slow_downs[0];
    assert_eq!(sd.max_level, 4);
    assert!(sd.reason.starts_with("3 rate-limit deferrals from busy.test within 60s"), "{}", sd.reason);
    let before = deferred(&a);
    assert!(before >= 3, "{before}");
    // Mail already handed to the normal transport, and the receiver's
    // current 5 s window, may still defer a few; then it stops.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(engaged.elapsed()));
    let (d1, n1, t1) = (deferred(&a), rcv.deliveries().to_domain("busy.test"), Instant::now());
    std::thread::sleep(Duration::from_secs(11).saturating_sub(engaged.elapsed()));
    let (d2, n2) = (deferred(&a), rcv.deliveries().to_domain("busy.test"));
    assert!(d2 - d1 <= 1, "deferrals kept coming while slowed: {d1} -> {d2} (before engaging: {before})");
    assert_eq!(a.status().adaptive.slow_downs[0].level, 4, "stepped down while the receiver still limits");
    // Fully slowed, everything takes the slow transport (60/min).
    let r4 = (n2 - n1) as f64 / t1.elapsed().as_secs_f64();
    assert!(r4 > 0.5 && r4 < 1.5, "slow transport at {r4:.2}/s, expected about 1/s");

    // The receiver relaxes: the level steps down one quiet interval at a time.
    // Its smtpd processes still talking to A (A caches its connections) keep
    // the strict limits until they exit, so it also ends those sessions, as
    // a provider does when it changes its limits.
    reconfigure_receiver(&rcv, |m| m.replace(strict, ""));
    rcv.end_sessions().expect("ending the receiver's sessions");
    let relaxed = Instant::now();
    let mut samples: Vec<(Duration, Option<u32>, usize)> = vec![];
    loop {
        let st = a.status();
        let level = st.adaptive.slow_downs.iter().find(|d| d.rule == "dp").map(|d| d.level);
        samples.push((relaxed.elapsed(), level, rcv.deliveries().to_domain("busy.test")));
        if level.is_none() {
            break;
        }
        assert!(relaxed.elapsed() < Duration::from_secs(120), "no full recovery: {samples:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();

    // Levels seen, in order, each once: 4, 3, 2, 1, then none (the first
    // step may come before the first sample).
    let mut seen: Vec<Option<u32>> = vec![];
    let mut first_at: BTreeMap<Option<u32>, (Duration, usize)> = BTreeMap::new();
    for (t, l, n) in &samples {
        if seen.last() != Some(l) {
            seen.push(*l);
            first_at.insert(*l, (*t, *n));
        }
    }
    if seen.first() == Some(&Some(4)) {
        seen.remove(0);
    }
    assert_eq!(seen, vec![Some(3), Some(2), Some(1), None], "{samples:?}");
    // One step per quiet interval (15 s), give or take the sampling.
    for (hi, lo) in [(3, 2), (2, 1)] {
        let gap = first_at[&Some(lo)].0 - first_at[&Some(hi)].0;
        assert!(gap >= Duration::from_secs(14) && gap <= Duration::from_secs(17), "level {hi} -> {lo} took {gap:?}");
    }
    // The delivery rate at the receiver rises as the level falls.
    let rate = |from: Option<u32>, to: Option<u32>| {
        let (t0, n0) = first_at[&from];
        let (t1, n1) = first_at[&to];
        (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
    };
    let (r3, r1) = (rate(Some(3), Some(2)), rate(Some(1), None));
    assert!(r1 > r3 && r3 > r4 + 0.25 && r1 > 2.0 * r4, "rates per level: 4: {r4:.2}/s, 3: {r3:.2}/s, 1: {r1:.2}/s\nsamples (since relaxed, level, delivered): {samples:?}\nreceiver log:\n{}", rcv.log());
    let log = a.stdout();
    assert!(!lines_with(&log, &["postfix/dp-dp-slow/smtp[", "@busy.test>", "status=sent"]).is_empty());
    assert!(lines_with(&log, &["status=bounced"]).is_empty(), "{log}");
    let m = a.metrics();
    assert!(m.contains("sendfleet_agent_slow_down_level{rule=\"dp\"} 0"), "{m}");
    assert!(m.contains("sendfleet_agent_policy_lookups_total{decision=\"Slow\",reason=\"Slowed\"}"), "{m}");
}

const PACE_A: &str = "198.51.100.34";
const PACE_RCV: &str = "203.0.113.33";

/// A DomainPolicy throttle of 30 messages a minute, measured at the
/// receiver over 5 minutes with a backlog that never runs dry: 150 ± 10%.
#[test]
fn throttle_rate_is_observed_at_the_receiver_within_ten_percent() {
    require_postfix();
    let dns = Dns::start("127.0.0.55", &[("paced.test", PACE_RCV), ("client.test", PACE_RCV)]);
    let rcv = receiver("pace-rcv", PACE_RCV, &["paced.test"], &[]);
    let members = [("pace-a", PACE_A)];
    let paced = dp("paced.test").spec("throttle: {messagesPerMinute: 30}");
    let a = fleet_with(&dns, "pace", &members, paced).start("pace-a");
    let main = &a.pod.files["main.cf"];
    assert!(main.contains("dp-dp_destination_rate_delay = 2s"), "{main}");
    inject_distinct(&a, "user@paced.test", 200, 4);

    // Receiver log times (whole seconds of the day) of accepted deliveries.
    let times = || -> Vec<u32> {
        rcv.log()
            .lines()
            .filter(|l| l.contains("postfix/discard[") && l.contains("@paced.test>") && l.contains("status=sent"))
            .filter_map(|l| {
                let hms = l.split_whitespace().nth(2)?;
                let mut it = hms.split(':').map(|x| x.parse::<u32>().ok());
                Some(it.next()?? * 3600 + it.next()?? * 60 + it.next()??)
            })
            .collect()
    };
    wait_until("first delivery", Duration::from_secs(60), || !times().is_empty());
    let first = times()[0];
    wait_until("5 minutes of deliveries", Duration::from_secs(330), || {
        times().last().is_some_and(|t| t.wrapping_sub(first) >= 300)
    });
    let in_window = times().iter().filter(|t| t.wrapping_sub(first) < 300).count();
    assert!((135..=165).contains(&in_window), "{in_window} deliveries in 300 s at 30/min (expected 150 ± 10%)");
    let q = a.queue_counts().values().sum::<usize>();
    assert!(q > 0, "the backlog ran dry, so the supply and not the throttle may have set the pace");
    assert!(lines_with(&a.stdout(), &["postfix/dp-dp/smtp[", "@paced.test>", "status=sent"]).len() >= in_window);
}
