//! Reload under load: while mail flows, 20 config changes (main.cf
//! parameters, the policy switching a domain between its throttle and slow
//! transports) and one bad config are applied through the agent; no message
//! is lost or duplicated (count at the receiver == count injected), Postfix
//! is reloaded each time and never restarted.

#[allow(dead_code)]
mod agent_support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_support::*;
use sendfleet::core::policy::DomainRule;

const SENDER: &str = "127.0.12.1";
const PROVIDER: &str = "127.0.22.1";
const BATCH: u32 = 20;

fn config(generation: u32) -> InstanceConfig {
    let mut cfg = InstanceConfig::new("reload-a", SENDER);
    cfg.extra_main = format!(
        "# generation {generation}\nsmtp_connection_cache_time_limit = {}s\nmaximal_queue_lifetime = 1d\n",
        2 + generation % 3
    );
    cfg.transport = vec![("sink.test".into(), "dp-sink:".into())];
    cfg.throttles = vec![("dp-sink".into(), 4), ("dp-sink-slow".into(), 2)];
    cfg.policy.domains = vec![DomainRule {
        name: "sink".into(),
        patterns: vec!["sink.test".into()],
        throttle_transport: Some("dp-sink".into()),
        slow_transport: Some("dp-sink-slow".into()),
        slowed: generation % 2 == 1,
        ..Default::default()
    }];
    cfg
}

#[test]
fn twenty_config_changes_under_load_lose_and_duplicate_nothing() {
    require_postfix();
    let receiver = Receiver::start("reload-rcv", PROVIDER, &["sink.test", "client.test"], &[]);
    let mut agent = Agent::start(&config(0), &[("sink.test", PROVIDER), ("client.test", PROVIDER)]);
    let pid = agent.master_pid();
    assert!(!pid.is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    let injected = Arc::new(AtomicU32::new(0));
    let injector = {
        let (stop, injected) = (stop.clone(), injected.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                inject(SENDER, "app@client.test", &format!("user{n}@sink.test"), BATCH, 2);
                injected.fetch_add(BATCH, Ordering::Relaxed);
                n += 1;
            }
        })
    };

    let mut reloads_while_flowing = 0;
    for generation in 1..=20 {
        let before = injected.load(Ordering::Relaxed) as usize;
        let files = config(generation).files(&agent.base);
        agent.apply(&files, Duration::from_secs(30));
        // Injection progressed across the change: mail was flowing.
        if injected.load(Ordering::Relaxed) as usize > before {
            reloads_while_flowing += 1;
        }
        if generation == 10 {
            // A bad config in the middle is refused and changes nothing.
            let mut bad = config(99).files(&agent.base);
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
    eventually(Duration::from_secs(120), "deliveries finished", || {
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
    eventually(Duration::from_secs(30), "receiver has every message", || {
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
    // Both transports carried mail as the policy flipped.
    let log = agent.stdout();
    let via = |t: &str| {
        log.lines().filter(|l| l.contains(&format!("postfix/{t}/smtp[")) && l.contains("status=sent")).count()
    };
    assert!(
        via("dp-sink") > 0 && via("dp-sink-slow") > 0,
        "dp-sink {} dp-sink-slow {}",
        via("dp-sink"),
        via("dp-sink-slow")
    );
    assert_eq!(via("dp-sink") + via("dp-sink-slow"), total);
    eprintln!(
        "reload under load: {total} messages, 20 reloads ({reloads_while_flowing} while flowing), 0 lost, 0 duplicated"
    );
}
