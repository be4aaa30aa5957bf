//! Reload under load: while mail flows, 20 re-rendered configs (the
//! DomainPolicy's throttle changing main.cf and master.cf)
//! and one bad config are applied through the agent; no message is lost or
//! duplicated (count at the receiver == count injected), Postfix is reloaded
//! each time and never restarted.

#[allow(dead_code)]
mod agent_support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_support::*;

const SENDER: &str = "198.51.100.15";
const PROVIDER: &str = "203.0.113.22";
const BATCH: u32 = 20;

/// The pool's render at `generation`: the `sink` policy's connections and
/// processes change every time. (Its transport stays: a reload that drops a
/// master.cf service has Postfix's master SIGTERM that service's running
/// deliveries, and one killed after the receiver's 250 is sent again —
/// docs/AGENT.md, "Reloads".)
fn fleet_at(dns: &Dns, generation: u32) -> Fleet {
    let pool = Pool::named("reload").in_ns("test").with_ip("reload-a", SENDER).fast_retries();
    let sink = Policy::named("sink").in_ns("test").for_domains(&["sink.test"]).spec(&format!(
        "throttle: {{connections: {}, processes: {}}}",
        2 + generation % 3,
        4 + generation % 2
    ));
    fleet(pool.build(), dns).policy(sink.build())
}

#[test]
fn twenty_config_changes_under_load_lose_and_duplicate_nothing() {
    require_postfix();
    let dns = Dns::start("127.0.0.53", &[("sink.test", PROVIDER), ("client.test", PROVIDER)]);
    let receiver = receiver("reload-rcv", PROVIDER, &["sink.test", "client.test"], &[]);
    let mut agent = fleet_at(&dns, 0).start("reload-a");
    let pid = agent.master_pid();
    assert!(!pid.is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    let injected = Arc::new(AtomicU32::new(0));
    let injector = {
        let (stop, injected) = (stop.clone(), injected.clone());
        let port = agent.submission_port;
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                inject(SENDER, port, "app@client.test", &format!("user{n}@sink.test"), BATCH, 2, false);
                injected.fetch_add(BATCH, Ordering::Relaxed);
                n += 1;
            }
        })
    };

    let mut reloads_while_flowing = 0;
    for generation in 1..=20 {
        let before = injected.load(Ordering::Relaxed) as usize;
        agent.apply_render(&fleet_at(&dns, generation), Duration::from_secs(30));
        // Injection progressed across the change: mail was flowing.
        if injected.load(Ordering::Relaxed) as usize > before {
            reloads_while_flowing += 1;
        }
        if generation == 10 {
            // A bad config in the middle is refused and changes nothing.
            let mut bad = agent.pod.files.clone();
            bad.get_mut("master.cf").unwrap().push_str("broken unix - -\n");
            let bad_hash = agent.source.write(&bad);
            agent.wait_for(Duration::from_secs(30), "bad config refused", |s| {
                s.config.refused.as_ref().is_some_and(|r| r.hash == bad_hash && r.reason == "MasterCfInvalid")
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    injector.join().expect("injector failed (see smtp-source error above)");
    let total = injected.load(Ordering::Relaxed) as usize;
    assert!(reloads_while_flowing >= 15, "only {reloads_while_flowing} of 20 changes happened while mail flowed");

    // Postfix 3.7: a message whose delivery finished while `postfix reload`
    // replaced qmgr is logged `skipped, still being delivered` by the new
    // qmgr and its file (every recipient already marked done) waits in
    // `incoming` until qmgr scans it again. Flushing makes it scan; the
    // exact count at the receiver below shows nothing is sent twice.
    wait_until("deliveries finished", Duration::from_secs(120), || {
        receiver.deliveries().to_domain("sink.test") >= total
    });
    // Such a file is re-scanned only after a 60 s cool-down (its mtime is
    // pushed into the future), so flush until it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        agent.flush();
        if agent.queue_counts().values().sum::<usize>() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "queue not empty: {:?}", agent.queue_counts());
        std::thread::sleep(Duration::from_secs(5));
    }
    wait_until("receiver has every message", Duration::from_secs(30), || {
        receiver.deliveries().to_domain("sink.test") >= total
    });
    // Give a duplicate the time to show up.
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.deliveries().to_domain("sink.test");
    assert_eq!(got, total, "injected {total}, receiver got {got}");

    let st = agent.wait_for(Duration::from_secs(20), "agent counted every delivery", |s| {
        s.counters.sent_today_by_rule.get("sink").copied() == Some(total as u64)
    });
    assert_eq!(st.postfix.exits, 0);
    assert_eq!(st.postfix.reloads, 20);
    assert_eq!(st.config.installs, 21);
    assert!(st.config.refused.is_none());
    assert_eq!(agent.master_pid(), pid, "postfix master was restarted");
    // Every message left through the policy's own transport, whichever
    // generation of it was loaded.
    let log = agent.stdout();
    let via = log.lines().filter(|l| l.contains("postfix/dp-sink/smtp[") && l.contains("status=sent")).count();
    assert_eq!(via, total);
    eprintln!(
        "reload under load: {total} messages, 20 reloads ({reloads_while_flowing} while flowing), 0 lost, 0 duplicated"
    );
}
