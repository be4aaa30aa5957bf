//! Benchmark: the agent's mail-log pipeline vs pflogsumm on the same
//! generated 1,000,000-line Postfix log (maillog_file format).
//!
//! The agent side is the whole per-line work the agent does in production
//! (parse, per-queue-id join, classify, count into the shared state and
//! metrics, keyed-hash redaction of every address, re-emission to a
//! buffer), on one core. pflogsumm (Debian) reads the same file. Prints both
//! times, lines/s and the ratio; targets: >= 20x and >= 1,000,000 lines/s.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use sendfleet::agent::counters::Counters;
use sendfleet::agent::log::pipeline::Processor;
use sendfleet::agent::redact::Redactor;
use sendfleet::agent::state::State;
use sendfleet::agent::AgentArgs;

const LINES: usize = 1_000_000;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: AgentArgs,
}

/// A realistic mix: each message is 7 lines (connect, client, message-id,
/// qmgr from, delivery, removed, disconnect); 85% sent, 10% deferred with
/// provider texts, 5% bounced; IPv6 relays now and then; warnings sprinkled.
fn generate(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut n = 0usize;
    let mut msg = 0u64;
    while n < LINES {
        msg += 1;
        let qid = format!("{:011X}", 0x1000_0000u64 + msg * 7919);
        let ts = format!("Nov 23 {:02}:{:02}:{:02}", (msg / 3600) % 24, (msg / 60) % 60, msg % 60);
        let pid = 1000 + msg % 50;
        let dom = format!("d{}.example", msg % 500);
        let rcpt = format!("user{}@{dom}", msg % 60_000);
        let relay = if msg.is_multiple_of(7) {
            format!("mx.{dom}[2001:db8::{:x}]:25", msg % 65_000)
        } else {
            format!("mx.{dom}[192.0.2.{}]:25", msg % 250)
        };
        let (dsn, status) = match msg % 20 {
            0 | 1 => ("4.7.28", format!("deferred (host {relay} said: 421-4.7.28 [192.0.2.9] Our system has detected an unusual rate of unsolicited mail (in reply to end of DATA command))")),
            2 => ("5.1.1", format!("bounced (host {relay} said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))")),
            _ => ("2.0.0", "sent (250 2.0.0 Ok: queued as 4ABCDEF)".to_string()),
        };
        let lines = [
            format!("{ts} mta1 postfix/smtpd[{pid}]: connect from app{}.internal[10.0.0.{}]", msg % 9, msg % 200),
            format!("{ts} mta1 postfix/smtpd[{pid}]: {qid}: client=app{}.internal[10.0.0.{}]", msg % 9, msg % 200),
            format!("{ts} mta1 postfix/cleanup[{}]: {qid}: message-id=<{msg}.{}@app.example>", pid + 1, msg * 31),
            format!("{ts} mta1 postfix/qmgr[900]: {qid}: from=<noreply@app.example>, size={}, nrcpt=1 (queue active)", 1000 + msg % 9000),
            format!("{ts} mta1 postfix/smtp[{}]: {qid}: to=<{rcpt}>, relay={relay}, delay=0.{}, delays=0.01/0/0.{}/0.{}, dsn={dsn}, status={status}", pid + 2, msg % 90 + 10, msg % 9, msg % 7),
            format!("{ts} mta1 postfix/qmgr[900]: {qid}: removed"),
            format!("{ts} mta1 postfix/smtpd[{pid}]: disconnect from app.internal[10.0.0.{}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", msg % 200),
        ];
        for l in lines {
            if n >= LINES {
                break;
            }
            writeln!(f, "{l}").unwrap();
            n += 1;
        }
        if msg.is_multiple_of(1000) && n < LINES {
            writeln!(
                f,
                "{ts} mta1 postfix/smtpd[{pid}]: warning: hostname app.internal does not resolve to address 10.0.0.1"
            )
            .unwrap();
            n += 1;
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let dir = std::env::temp_dir().join(format!("sendfleet-bench-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("maillog");
    generate(&log);
    let bytes = std::fs::read(&log).unwrap();
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(lines, LINES);

    // Breakdown: the parser alone, and the redactor alone.
    let t = Instant::now();
    let mut parsed = 0usize;
    for line in bytes.split(|&b| b == b'\n') {
        parsed += usize::from(sendfleet::agent::log::parse::parse_line(line).is_ok());
    }
    let parse_only = t.elapsed();
    assert_eq!(parsed, LINES);
    let mut red = Redactor::new(b"bench-key-0123456789abcdef");
    let mut sink = Vec::with_capacity(1 << 20);
    let t = Instant::now();
    for line in bytes.split(|&b| b == b'\n') {
        red.redact_line(line, &mut sink);
        if sink.len() > (1 << 20) - 4096 {
            std::hint::black_box(&sink);
            sink.clear();
        }
    }
    let redact_only = t.elapsed();

    // The agent's pipeline.
    let args = Wrap::parse_from(["bench", "--state-dir", dir.to_str().unwrap()]).args;
    let state = Arc::new(State::new(args, Counters::load(&dir).unwrap()));
    let mut proc = Processor::new(state.clone(), Redactor::new(b"bench-key-0123456789abcdef"));
    let mut out = Vec::with_capacity(1 << 20);
    let t = Instant::now();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        proc.line(line, &mut out);
        if out.len() > (1 << 20) - 4096 {
            std::hint::black_box(&out);
            out.clear();
        }
    }
    proc.publish();
    let agent = t.elapsed();
    let st = state.status();
    assert_eq!(st.log.lines as usize, LINES);
    assert_eq!(st.log.malformed, 0, "generated lines must all parse");
    let sent = st.counters.since_start.sent;
    assert!(sent > 100_000, "sent {sent}");

    // pflogsumm on the same file.
    let t = Instant::now();
    let out = std::process::Command::new("pflogsumm")
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("pflogsumm missing: apt-get install -y pflogsumm");
    let pfl = t.elapsed();
    assert!(out.status.success(), "pflogsumm failed");

    let rate = LINES as f64 / agent.as_secs_f64();
    let ratio = pfl.as_secs_f64() / agent.as_secs_f64();
    println!(
        "agent log pipeline: {LINES} lines in {:.3} s = {:.0} lines/s (parse+join+classify+count+redact, 1 core)",
        agent.as_secs_f64(),
        rate
    );
    println!(
        "  of which, measured alone: parse {:.3} s, keyed-hash redaction {:.3} s",
        parse_only.as_secs_f64(),
        redact_only.as_secs_f64()
    );
    println!(
        "pflogsumm:          {LINES} lines in {:.3} s = {:.0} lines/s",
        pfl.as_secs_f64(),
        LINES as f64 / pfl.as_secs_f64()
    );
    println!(
        "ratio: {ratio:.1}x faster than pflogsumm (target >= 20x: {}); rate target >= 1,000,000 lines/s: {}",
        if ratio >= 20.0 { "met" } else { "MISSED" },
        if rate >= 1_000_000.0 { "met" } else { "MISSED" }
    );
    let _ = std::fs::remove_dir_all(&dir);
}
