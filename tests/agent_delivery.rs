//! The agent on real Postfix, configured by the renderer (a one-address
//! pool whose mail expires after 6 s): delivery counters match the receiver
//! and the log (sent, deferred via 4xx, bounced via 5xx, expired via the
//! pool's queue lifetime, or by `postsuper -e`), address verification
//! probes are no outcome, and no recipient address leaks into /metrics,
//! /status or the agent's own stdout/stderr.

#[allow(dead_code)]
mod agent_support;

use std::process::Command;
use std::time::Duration;

use agent_support::*;

const SENDER: &str = "198.51.100.10";
const PROVIDER: &str = "203.0.113.20";
const DNS: &str = "127.0.0.53";

#[test]
fn counters_match_receiver_and_log_and_no_address_leaks() {
    require_postfix();
    let dns = Dns::start(DNS, &[("dest.test", PROVIDER), ("client.test", PROVIDER)]);
    let receiver = receiver(
        "deliv-rcv",
        PROVIDER,
        &["dest.test", "client.test"],
        &[
            ("soft.pii@dest.test", "450 4.7.0 too many messages, try again later"),
            ("hard.pii@dest.test", "550 5.1.1 no such user here"),
        ],
    );
    let pool = Pool::named("deliv").in_ns("test").with_ip("deliv-a", SENDER).retry("1s", "6s").build();
    let agent = fleet(pool, &dns).start("deliv-a");

    let s0 = agent.status();
    assert_eq!(s0.config.loaded_hash.as_deref(), Some(agent.pod.rendered.config_hash.as_str()), "not the render");
    assert!(!s0.session_id.is_empty());
    assert_eq!(s0.instance, "deliv-a");
    // The first queue scans race Postfix's start; that is start-up, not a
    // failure: the first scan that lands succeeds and nothing is reported.
    let s1 = agent.wait_for(Duration::from_secs(30), "a queue scan", |s| s.queue.scanned_at.is_some());
    assert_eq!(s1.queue.error, None);
    assert!(!agent.stderr().contains("queue scan failed"), "stderr:\n{}", agent.stderr());
    assert!(!agent.metrics().contains("sendfleet_agent_queue_scans_total{result=\"error\"}"), "{}", agent.metrics());

    agent.inject("someone.pii@client.test", "alice.pii@dest.test", 30, 3);
    agent.inject("someone.pii@client.test", "bob.pii@dest.test", 20, 2);
    agent.inject("someone.pii@client.test", "hard.pii@dest.test", 5, 1);
    agent.inject("someone.pii@client.test", "soft.pii@dest.test", 4, 1);

    // Everything leaves the queue: sent, bounced, or expired after 6 s.
    agent.wait_queue_empty(Duration::from_secs(90));
    let st = agent.wait_for(Duration::from_secs(30), "all outcomes counted", |s| {
        s.domains
            .iter()
            .any(|d| d.domain == "dest.test" && d.counts.sent == 50 && d.counts.bounced == 5 && d.counts.expired == 4)
    });
    let dest = st.domains.iter().find(|d| d.domain == "dest.test").unwrap();

    // The receiver saw exactly the sent ones.
    let got = receiver.deliveries();
    assert_eq!(got.to_domain("dest.test"), 50, "receiver log:\n{}", receiver.log());
    assert_eq!(got.to_address("alice.pii@dest.test"), 30);
    assert_eq!(got.to_address("bob.pii@dest.test"), 20);
    assert_eq!(dest.counts.sent as usize, got.to_domain("dest.test"));
    // Each 4xx attempt is a deferral; at least one per soft message.
    assert!(dest.counts.deferred >= 4, "{dest:?}");
    assert!(dest.categories.get("RateLimit").copied().unwrap_or(0) >= 4, "{dest:?}");
    assert_eq!(dest.categories.get("UnknownUser").copied(), Some(5), "{dest:?}");

    // The (redacted) log the agent re-emitted says the same.
    let log = agent.stdout();
    let count = |status: &str| {
        log.lines().filter(|l| l.contains("@dest.test>") && l.contains(&format!("status={status}"))).count()
    };
    assert_eq!(count("sent"), 50);
    assert_eq!(count("bounced"), 5);
    assert_eq!(count("deferred") as u64, dest.counts.deferred);
    assert_eq!(log.lines().filter(|l| l.contains("status=expired")).count(), 4);
    // Bounce notifications to the sender's domain were sent too.
    assert_eq!(got.to_domain("client.test"), 9);

    // Persisted sent-today counter (written within 5 s).
    wait_until("counters.json written", Duration::from_secs(10), || {
        std::fs::read_to_string(agent.state_dir().join("counters.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["sentTotal"] == 59)
    });
    assert_eq!(st.counters.sent_today, 59);

    // Metrics carry the counts (by rule, bounded labels).
    let metrics = agent.metrics();
    assert!(
        metrics.contains(
            "sendfleet_agent_deliveries_total{rule=\"none\",status=\"sent\",category=\"Accepted\",via=\"direct\"} 59"
        ),
        "{metrics}"
    );

    // PII: no local part of any address anywhere the agent publishes.
    let status = agent.status_raw();
    let stderr = agent.stderr();
    for (name, text) in [("metrics", &metrics), ("status", &status), ("stdout", &log), ("stderr", &stderr)] {
        for secret in ["alice.pii", "bob.pii", "hard.pii", "soft.pii", "someone.pii"] {
            assert!(!text.contains(secret), "{secret} found in agent {name}");
        }
    }
    // ... while the log still carries the domain and a stable hash.
    assert!(log.contains("@dest.test>"), "stdout lost the domains");
    assert!(log.lines().filter(|l| l.contains("to=<h-")).count() >= 59);
}

/// `postsuper -e` on deferred mail: at the next queue run Postfix 3.7's qmgr
/// logs the message `status=force-expired, returned to sender` (its
/// recipients were deferred before). The agent counts each still-deferred
/// recipient as expired, no line as malformed, and re-emits no address.
#[test]
fn force_expired_mail_counts_as_expired() {
    let (_dns, receiver, agent) = kept_an_hour("fexp", 1, ("soft.pii@dest.test", "450 4.7.0 try again later"));

    agent.inject("someone.pii@client.test", "soft.pii@dest.test", 3, 1);
    agent.wait_for(Duration::from_secs(60), "3 deferrals", |s| {
        s.domains.iter().any(|d| d.domain == "dest.test" && d.counts.deferred >= 3)
    });
    let out = Command::new("postsuper").arg("-c").arg(agent.postfix_dir()).args(["-e", "ALL"]).output().unwrap();
    assert!(out.status.success(), "postsuper -e: {}", String::from_utf8_lossy(&out.stderr));
    agent.flush();

    agent.wait_queue_empty(Duration::from_secs(60));
    let st = agent.wait_for(Duration::from_secs(30), "3 expiries", |s| {
        s.domains.iter().any(|d| d.domain == "dest.test" && d.counts.expired == 3)
    });
    let dest = st.domains.iter().find(|d| d.domain == "dest.test").unwrap();
    assert_eq!((dest.counts.sent, dest.counts.bounced), (0, 0), "{dest:?}");
    assert_eq!(st.log.malformed, 0, "{:?}", st.log);
    assert_eq!(st.counters.since_start.expired, 3);

    // What Postfix itself wrote (re-emitted redacted by the agent).
    let log = agent.stdout();
    assert_eq!(log.lines().filter(|l| l.contains("status=force-expired, returned to sender")).count(), 3, "{log}");
    assert!(log.contains("postfix/postsuper[") && log.contains("Force-expired: 3 messages"), "{log}");
    // The non-delivery notices reached the sender's domain; nothing reached dest.test.
    wait_until("3 notices delivered", Duration::from_secs(30), || receiver.deliveries().to_domain("client.test") == 3);
    assert_eq!(receiver.deliveries().to_domain("dest.test"), 0);
    assert_hashed(&agent, &["soft.pii", "someone.pii"]);
}

/// Address verification on real Postfix: `sendmail -bv` (user-requested)
/// makes the delivery agent probe up to RCPT TO and log `status=deliverable`
/// or `status=undeliverable` (`sent.c`, `bounce.c` via `trace.c`); a query
/// to the verify service with `address_verify_negative_cache = no` makes
/// `status=undeliverable-but-not-cached` (`verify.c`). None is an outcome:
/// nothing reaches the receiver for dest.test, nothing counts as sent or
/// bounced, no line is malformed, and the probed addresses leave hashed.
#[test]
fn verification_probes_are_no_delivery_outcomes() {
    let (_dns, receiver, agent) = kept_an_hour("vrfy", 2, ("hard.pii@dest.test", "550 5.1.1 no such user here"));
    // Read by the delivery agent when it reports a failed MTA probe
    // (bounce.c -> verify.c); no smtp process has started yet, so all read it.
    postconf(&agent, &["-e", "address_verify_negative_cache = no"]);

    for rcpt in ["good.pii@dest.test", "hard.pii@dest.test"] {
        let out = Command::new("sendmail")
            .arg("-C")
            .arg(agent.postfix_dir())
            .args(["-bv", "-f", "someone.pii@client.test", rcpt])
            .output()
            .unwrap();
        assert!(out.status.success(), "sendmail -bv {rcpt}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Each probe mails its report to the sender.
    wait_until("2 reports delivered", Duration::from_secs(60), || receiver.deliveries().to_domain("client.test") == 2);

    // An MTA probe whose negative result is not cached.
    let queue_dir = postconf(&agent, &["-h", "queue_directory"]);
    verify_query(&std::path::Path::new(queue_dir.trim()).join("private/verify"), "hard.pii@dest.test");
    wait_until("the MTA probe's result logged", Duration::from_secs(30), || {
        agent.stdout().contains(", status=undeliverable-but-not-cached (")
    });
    agent.wait_queue_empty(Duration::from_secs(30));

    let log = agent.stdout();
    let probes = |status: &str| {
        log.lines().filter(|l| l.contains("@dest.test>") && l.contains(&format!(", status={status} ("))).count()
    };
    let statuses = ["deliverable", "undeliverable", "undeliverable-but-not-cached"];
    assert_eq!(statuses.map(probes), [1, 1, 1], "{log}");
    let st = agent.status();
    assert_eq!(st.log.malformed, 0, "{:?}", st.log);
    assert!(st.log.ignored >= 3, "{:?}", st.log);
    assert!(st.domains.iter().all(|d| d.domain != "dest.test" || d.counts.sent + d.counts.bounced == 0), "{st:?}");
    assert_eq!(receiver.deliveries().to_domain("dest.test"), 0, "a probe was delivered");
    assert_hashed(&agent, &["good.pii", "hard.pii", "someone.pii"]);
}

/// A message never tried (held by a header/body_checks HOLD) and then
/// force-expired and released: qmgr sends its recipients to error(8) as
/// "message is administratively expired" (`qmgr_message.c`), then logs
/// `status=force-expired`. Each recipient counts as expired under its own
/// domain, and cleanup's `hold:` lines (which name sender and recipient)
/// leave hashed.
#[test]
fn force_expired_held_mail_counts_as_expired() {
    let (_dns, receiver, agent) = kept_an_hour("fxhd", 4, ("nobody@dest.test", "450 4.7.0 not used"));
    let checks = agent.postfix_dir().join("hold_checks");
    std::fs::write(&checks, "/./ HOLD held by the test\n").unwrap();
    // Before any mail: cleanup reads them when it starts. (smtp-source's
    // messages may carry no header, so the body is checked too.)
    let table = format!("regexp:{}", checks.display());
    postconf(&agent, &["-e", &format!("header_checks = {table}"), &format!("body_checks = {table}")]);
    agent.inject("someone.pii@client.test", "held.pii@dest.test", 2, 1);
    wait_until("2 messages held", Duration::from_secs(30), || agent.queue_counts().get("hold") == Some(&2));

    let postsuper = |args: &[&str]| {
        let out = Command::new("postsuper").arg("-c").arg(agent.postfix_dir()).args(args).output().unwrap();
        assert!(out.status.success(), "postsuper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    postsuper(&["-e", "ALL"]);
    postsuper(&["-H", "ALL"]);
    agent.wait_queue_empty(Duration::from_secs(60));
    let st = agent.wait_for(Duration::from_secs(30), "2 expiries", |s| {
        s.domains.iter().any(|d| d.domain == "dest.test" && d.counts.expired == 2)
    });
    assert_eq!(st.log.malformed, 0, "{:?}", st.log);
    let log = agent.stdout();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("postfix/error["), 2, "{log}");
    assert_eq!(count("status=deferred (message is administratively expired)"), 2, "{log}");
    assert_eq!(count("status=force-expired, returned to sender"), 2, "{log}");
    assert!(count(": hold: ") >= 2, "{log}");
    assert_eq!(receiver.deliveries().to_domain("dest.test"), 0);
    assert_hashed(&agent, &["held.pii", "someone.pii"]);
}

/// `soft_bounce = yes` (an operator's safety net while changing routes):
/// Postfix logs a 5xx answer `status=SOFTBOUNCE` with a 4.x.x DSN and keeps
/// the mail queued (`bounce.c`). The agent counts a deferral, no bounce, no
/// malformed line.
#[test]
fn soft_bounce_counts_as_deferral() {
    let (_dns, receiver, agent) = kept_an_hour("sbnc", 3, ("hard.pii@dest.test", "550 5.1.1 no such user here"));
    // Before any delivery: each smtp process reads it when it starts.
    postconf(&agent, &["-e", "soft_bounce = yes"]);
    agent.inject("someone.pii@client.test", "hard.pii@dest.test", 2, 1);
    let st = agent.wait_for(Duration::from_secs(60), "2 deferrals", |s| {
        s.domains.iter().any(|d| d.domain == "dest.test" && d.counts.deferred >= 2)
    });
    let dest = st.domains.iter().find(|d| d.domain == "dest.test").unwrap();
    assert_eq!((dest.counts.sent, dest.counts.bounced, dest.counts.expired), (0, 0, 0), "{dest:?}");
    assert_eq!(st.log.malformed, 0, "{:?}", st.log);
    let log = agent.stdout();
    let softbounced = log.lines().filter(|l| l.contains("@dest.test>") && l.contains(", status=SOFTBOUNCE (")).count();
    assert!(softbounced as u64 >= 2 && softbounced as u64 <= dest.counts.deferred, "{dest:?}\n{log}");
    assert!(log.contains("dsn=4.1.1, status=SOFTBOUNCE"), "{log}");
    assert_eq!(receiver.deliveries().to_domain("dest.test"), 0);
    assert_hashed(&agent, &["hard.pii", "someone.pii"]);
}

/// The address forms whose punctuation used to cut the redacted token
/// short (a quoted local part with a space, VERP, SRS, `'` and `=`), sent
/// and bounced through real Postfix (the bounce's log line quotes the
/// address in the provider's reply): no piece of a local part appears in
/// what the agent publishes, and each is logged as one hash with its
/// domain.
#[test]
fn quoted_verp_srs_and_punctuated_local_parts_never_leave_in_plaintext() {
    const VERP: &str = "bounce+verp.pii=client.test@dest.test";
    let (_dns, receiver, agent) = kept_an_hour("forms", 5, (VERP, "550 5.1.1 no such user here"));
    let forms = [
        "\"john doe.pii\"@dest.test",
        VERP,
        "SRS0=HHH=TT=orig.example=srs.pii@dest.test",
        "o'brien.pii@dest.test",
        "eq=sign.pii@dest.test",
    ];
    for rcpt in forms {
        agent.inject("someone.pii@client.test", rcpt, 1, 1);
    }
    let st = agent.wait_for(Duration::from_secs(60), "5 outcomes", |s| {
        s.domains.iter().any(|d| d.domain == "dest.test" && d.counts.sent + d.counts.bounced == 5)
    });
    let dest = st.domains.iter().find(|d| d.domain == "dest.test").unwrap();
    assert_eq!((dest.counts.sent, dest.counts.bounced), (4, 1), "{dest:?}");
    assert_eq!(receiver.deliveries().to_domain("dest.test"), 4, "{}", receiver.log());
    assert_hashed(
        &agent,
        &["john", "doe.pii", "verp.pii", "bounce+", "srs.pii", "orig.example", "SRS0", "brien", "eq=", "sign.pii"],
    );
    let log = agent.stdout();
    assert!(!agent.stderr().contains(".pii"), "stderr:\n{}", agent.stderr());
    // Each address is one token: its hash, then its domain.
    let key = sendfleet::agent::redact::Redactor::new(HASH_KEY.as_bytes());
    for rcpt in forms {
        let h = key.redact_address(rcpt.as_bytes());
        assert!(log.contains(&format!("to=<{h}>")), "{rcpt} not logged as {h}:\n{log}");
    }
}

/// No local part of `secrets` in what the agent publishes: `/metrics`,
/// `/status` and its re-emitted log.
fn assert_hashed(agent: &Instance, secrets: &[&str]) {
    for (name, text) in [("metrics", agent.metrics()), ("status", agent.status_raw()), ("stdout", agent.stdout())] {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} found in agent {name}");
        }
    }
}

/// `postconf -c <the instance's config> ARGS`: its output.
fn postconf(agent: &Instance, args: &[&str]) -> String {
    let out = Command::new("postconf").arg("-c").arg(agent.postfix_dir()).args(args).output().unwrap();
    assert!(out.status.success(), "postconf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A one-address pool whose mail is kept an hour (only the test ends it),
/// its DNS server and a receiver for dest.test and client.test answering
/// `answer` to one address. Addresses of its own (`n` > 0): the tests of
/// this file share one network namespace.
fn kept_an_hour(name: &str, n: u8, answer: (&str, &str)) -> (Dns, Receiver, Instance) {
    require_postfix();
    let (sender, provider) = (format!("198.51.100.{}", 10 + n), format!("203.0.113.{}", 20 + n));
    let dns = Dns::start(&format!("127.0.0.{}", 53 + n), &[("dest.test", &provider), ("client.test", &provider)]);
    let receiver = receiver(&format!("{name}-rcv"), &provider, &["dest.test", "client.test"], &[answer]);
    let pool = Pool::named(name).in_ns("test").with_ip(&format!("{name}-a"), &sender).retry("1s", "1h").build();
    let agent = fleet(pool, &dns).start(&format!("{name}-a"));
    agent.wait_for(Duration::from_secs(30), "a queue scan", |s| s.queue.scanned_at.is_some());
    (dns, receiver, agent)
}

/// One query to Postfix's verify service (`global/verify_clnt.c`: the
/// attribute protocol, `name\0value\0` pairs and a final `\0`), which makes
/// it send a probe for an address it has no result for.
fn verify_query(socket: &std::path::Path, addr: &str) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("request\0query\0address\0{addr}\0\0").as_bytes()).unwrap();
    // The server's protocol announcement, then status, recipient_status, reason.
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(7).any(|w| w == b"reason\0") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "verify closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.windows(9).any(|w| w == b"status\x000\0"), "{:?}", String::from_utf8_lossy(&got));
}
