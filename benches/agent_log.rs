//! Benchmark: the agent's mail-log pipeline vs pflogsumm on the same
//! generated 1,000,000-line Postfix log (maillog_file format).
//!
//! The agent side is the whole work the agent does in production
//! (`pipeline::run`: reading the log from a pipe, parse, per-queue-id join,
//! classify, count into the shared state and metrics, keyed-hash redaction
//! of every address, writing the redacted log), on one runtime thread, with
//! the policy the examples render for mta1 loaded (so every outcome goes
//! through rule matching, warm-up and adaptive bookkeeping; a tenth of the
//! mail is to the throttled example domain, a fiftieth to the relay-routed
//! one). pflogsumm (Debian) and `grep -c status=sent` (the cost of reading
//! the file once, the machine's limit) read the same file in the same
//! rounds. Prints the times, lines/s and both ratios; the targets (issue
//! 19) are at least 50x pflogsumm's speed and at most 4x `grep -c`'s time.
//! The host name is as long as an instance pod's (`<pool>-<instance>-0`),
//! since every line carries it.

#[path = "../tests/agent_support/mod.rs"]
#[allow(dead_code)]
mod agent_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use agent_support::{example, met};
use clap::Parser;
use sendfleet::agent::counters::Counters;
use sendfleet::agent::log::pipeline::run;
use sendfleet::agent::redact::Redactor;
use sendfleet::agent::state::State;
use sendfleet::agent::AgentArgs;
use sendfleet::core::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet::core::policy::AgentPolicy;
use sendfleet::core::render::{render_pool, Observed, PoolInput, Settings};

const LINES: usize = 1_000_000;
/// Rounds of each side, interleaved; medians are compared. Five, because on
/// a shared two-core machine single runs of either side vary by a third.
const ROUNDS: usize = 5;
/// The host field of every line: as long as an instance pod's name.
const HOST: &str = "outbound-transactional-mta1-0";
/// Targets: at least this many times pflogsumm's speed ...
const PFLOGSUMM_TARGET: f64 = 50.0;
/// ... and at most this many times `grep -c status=sent`'s time.
const GREP_TARGET: f64 = 4.0;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: AgentArgs,
}

/// A realistic mix: each message is 7 lines (connect, client, message-id,
/// qmgr from, delivery, removed, disconnect); 85% sent, 10% deferred with
/// provider texts, 5% bounced; IPv6 relays now and then; warnings sprinkled.
fn generate(path: &std::path::Path) -> usize {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut n = 0usize;
    let mut msg = 0u64;
    let mut sent = 0;
    while n < LINES {
        msg += 1;
        let qid = format!("{:011X}", 0x1000_0000u64 + msg * 7919);
        let ts = format!("Nov 23 {:02}:{:02}:{:02}", (msg / 3600) % 24, (msg / 60) % 60, msg % 60);
        let pid = 1000 + msg % 50;
        let dom = match msg % 50 {
            // The examples' DomainPolicies: throttled (with adaptive rules) and relay-routed.
            3 | 13 | 23 | 33 | 43 => "bigmail.example".to_string(),
            7 => "partner.example".to_string(),
            _ => format!("d{}.example", msg % 500),
        };
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
            format!("{ts} {HOST} postfix/smtpd[{pid}]: connect from app{}.internal[10.0.0.{}]", msg % 9, msg % 200),
            format!("{ts} {HOST} postfix/smtpd[{pid}]: {qid}: client=app{}.internal[10.0.0.{}]", msg % 9, msg % 200),
            format!("{ts} {HOST} postfix/cleanup[{}]: {qid}: message-id=<{msg}.{}@app.example>", pid + 1, msg * 31),
            format!("{ts} {HOST} postfix/qmgr[900]: {qid}: from=<noreply@app.example>, size={}, nrcpt=1 (queue active)", 1000 + msg % 9000),
            format!("{ts} {HOST} postfix/smtp[{}]: {qid}: to=<{rcpt}>, relay={relay}, delay=0.{}, delays=0.01/0/0.{}/0.{}, dsn={dsn}, status={status}", pid + 2, msg % 90 + 10, msg % 9, msg % 7),
            format!("{ts} {HOST} postfix/qmgr[900]: {qid}: removed"),
            format!("{ts} {HOST} postfix/smtpd[{pid}]: disconnect from app.internal[10.0.0.{}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", msg % 200),
        ];
        for l in lines {
            if n >= LINES {
                break;
            }
            sent += usize::from(l.contains("status=sent"));
            writeln!(f, "{l}").unwrap();
            n += 1;
        }
        if msg.is_multiple_of(1000) && n < LINES {
            writeln!(
                f,
                "{ts} {HOST} postfix/smtpd[{pid}]: warning: hostname app.internal does not resolve to address 10.0.0.1"
            )
            .unwrap();
            n += 1;
        }
    }
    f.flush().unwrap();
    sent
}

/// What the operator renders for mta1 from examples/ (pool, both
/// DomainPolicies, the WarmupPlan).
fn example_policy() -> AgentPolicy {
    let pool: SendingPool = example("sendingpool.yaml");
    let policies: Vec<DomainPolicy> =
        vec![example("domainpolicy-throttled-provider.yaml"), example("domainpolicy-relay-route.yaml")];
    let plan: WarmupPlan = example("warmupplan.yaml");
    let pools = vec![pool.clone()];
    let input = PoolInput {
        pool: &pool,
        policies: &policies,
        plan: Some(&plan),
        pools: &pools,
        observed: &Observed::default(),
    };
    let rendered = render_pool(input, &Settings::default()).expect("examples render");
    let policy = rendered.instances.into_iter().next().expect("an instance").policy;
    assert!(policy.domains.len() >= 2 && policy.warmup.is_some(), "the examples' rules and plan reach the policy");
    policy
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Took {
    wall: f64,
    cpu: f64,
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`: every thread,
/// the runtime's blocking pool included) or of its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(who, &mut ru) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The agent's pipeline as it runs in production: `pipeline::run` reading a
/// pipe (here `cat`'s stdout; in production the Postfix master's) and writing
/// the redacted log through tokio (to /dev/null here, to the container's
/// stdout in production), on a one-thread runtime, with fresh state. CPU
/// time is this process's (not `cat`'s: that is Postfix's part).
fn agent_once(log: &Path, state_dir: &Path, policy: &AgentPolicy) -> Took {
    std::fs::create_dir_all(state_dir).unwrap();
    let args = Wrap::parse_from(["bench", "--state-dir", state_dir.to_str().unwrap()]).args;
    let state = Arc::new(State::new(args, Counters::load(state_dir).unwrap()));
    state.set_policy(policy.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let took = rt.block_on(async {
        let mut cat = tokio::process::Command::new("cat").arg(log).stdout(Stdio::piped()).spawn().expect("cat");
        let input = cat.stdout.take().unwrap();
        // As supervise::start does for the master's stdout.
        sendfleet::agent::pipe::grow_pipe(&input);
        let output = tokio::fs::File::create("/dev/null").await.unwrap();
        let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
        run(input, output, state.clone(), Redactor::new(b"bench-key-0123456789abcdef")).await.unwrap();
        let took = Took { wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds(libc::RUSAGE_SELF) - c };
        assert!(cat.wait().await.unwrap().success());
        took
    });
    let st = state.status();
    assert_eq!(st.log.lines as usize, LINES);
    assert_eq!(st.log.malformed, 0, "generated lines must all parse");
    let sent = st.counters.since_start.sent;
    assert!(sent > 100_000, "sent {sent}");
    took
}

/// pflogsumm (Debian) on the same file, its report read into memory.
fn pflogsumm_once(log: &Path) -> Took {
    let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_CHILDREN));
    let out = Command::new("pflogsumm")
        .arg(log)
        .stdout(Stdio::piped())
        .output()
        .expect("pflogsumm missing: apt-get install -y pflogsumm");
    let took = Took { wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds(libc::RUSAGE_CHILDREN) - c };
    assert!(out.status.success(), "pflogsumm failed");
    took
}

/// The log through the pipe alone: `cat` into a pipe grown as the agent
/// grows the master's (1 MiB), read in 1 MiB reads and dropped. What any
/// reader of Postfix's log pipe pays before it looks at a byte: the cost of
/// the agent's input path on this machine.
fn pipe_once(log: &Path) -> Took {
    use std::io::Read;
    let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF) + cpu_seconds(libc::RUSAGE_CHILDREN));
    let mut cat = Command::new("cat").arg(log).stdout(Stdio::piped()).spawn().expect("cat");
    let mut out = cat.stdout.take().unwrap();
    sendfleet::agent::pipe::grow_pipe(&out);
    let mut buf = vec![0u8; sendfleet::agent::pipe::PIPE_BUFFER];
    let mut n = 0;
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    assert!(cat.wait().unwrap().success());
    let took = Took {
        wall: t.elapsed().as_secs_f64(),
        cpu: cpu_seconds(libc::RUSAGE_SELF) + cpu_seconds(libc::RUSAGE_CHILDREN) - c,
    };
    assert_eq!(n as u64, std::fs::metadata(log).unwrap().len());
    took
}

/// `grep -c status=sent` on the same file: reading it once with a
/// vectorised search, the floor any log reader stands on.
fn grep_once(log: &Path, sent: usize) -> Took {
    let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_CHILDREN));
    let out = Command::new("grep").arg("-c").arg("status=sent").arg(log).stdout(Stdio::piped()).output().expect("grep");
    let took = Took { wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds(libc::RUSAGE_CHILDREN) - c };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sent.to_string(), "grep -c counts the sent lines");
    took
}

/// The file's lines, split as the pipeline splits them (memchr).
fn lines_of(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).map(move |end| {
        let line = &bytes[start..end];
        start = end + 1;
        line
    })
}

fn median(v: &[Took], f: impl Fn(&Took) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let dir = std::env::temp_dir().join(format!("sendfleet-bench-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("maillog");
    let sent = generate(&log);
    let policy = example_policy();
    if let Some(n) = std::env::var("AGENT_LOG_ONLY").ok().and_then(|n| n.parse::<usize>().ok()) {
        // For a profiler (`AGENT_LOG_ONLY=8 perf record ...`): n rounds of
        // the agent alone, no pflogsumm, no grep.
        for round in 0..n {
            let t = agent_once(&log, &dir.join(format!("state-{round}")), &policy);
            println!("agent {:.3}/{:.3}", t.wall, t.cpu);
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let bytes = std::fs::read(&log).unwrap();
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(lines, LINES);

    // Breakdown: the parser alone, and the redactor alone.
    let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
    let mut parsed = 0usize;
    for line in lines_of(&bytes) {
        parsed += usize::from(sendfleet::agent::log::parse::parse_line(line).is_ok());
    }
    let parse_only = Took { wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds(libc::RUSAGE_SELF) - c };
    assert_eq!(parsed, LINES);
    let mut red = Redactor::new(b"bench-key-0123456789abcdef");
    let mut sink = Vec::with_capacity(1 << 20);
    let (t, c) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
    for line in lines_of(&bytes) {
        red.redact_line(line, &mut sink);
        if sink.len() > (1 << 20) - 4096 {
            std::hint::black_box(&sink);
            sink.clear();
        }
    }
    let redact_only = Took { wall: t.elapsed().as_secs_f64(), cpu: cpu_seconds(libc::RUSAGE_SELF) - c };

    // Rounds with the agent and pflogsumm interleaved, so both see the same
    // machine load; medians are compared. On a shared machine wall time
    // mostly measures the neighbours, so CPU time is printed beside it.
    let mut agent_runs = Vec::new();
    let mut pfl_runs = Vec::new();
    let mut grep_runs = Vec::new();
    let mut pipe_runs = Vec::new();
    for round in 0..ROUNDS {
        grep_runs.push(grep_once(&log, sent));
        pipe_runs.push(pipe_once(&log));
        agent_runs.push(agent_once(&log, &dir.join(format!("state-{round}")), &policy));
        pfl_runs.push(pflogsumm_once(&log));
    }
    let fmt = |v: &[Took]| v.iter().map(|t| format!("{:.3}/{:.3}", t.wall, t.cpu)).collect::<Vec<_>>().join(", ");
    let (aw, ac) = (median(&agent_runs, |t| t.wall), median(&agent_runs, |t| t.cpu));
    let (pw, pc) = (median(&pfl_runs, |t| t.wall), median(&pfl_runs, |t| t.cpu));
    let (gw, gc) = (median(&grep_runs, |t| t.wall), median(&grep_runs, |t| t.cpu));
    let (iw, ic) = (median(&pipe_runs, |t| t.wall), median(&pipe_runs, |t| t.cpu));
    let n = LINES as f64;
    println!(
        "agent log pipeline: {LINES} lines, median of {ROUNDS}: wall {aw:.3} s = {:.0} lines/s, CPU {ac:.3} s = {:.0} lines/CPU-s (pipe read+parse+join+classify+count+redact+write; redaction on a second thread; runs wall/CPU: {})",
        n / aw,
        n / ac,
        fmt(&agent_runs)
    );
    println!(
        "  of which, measured alone (wall/CPU): parse {:.3}/{:.3} s, keyed-hash redaction {:.3}/{:.3} s",
        parse_only.wall, parse_only.cpu, redact_only.wall, redact_only.cpu
    );
    println!(
        "pflogsumm:          {LINES} lines, median of {ROUNDS}: wall {pw:.3} s = {:.0} lines/s, CPU {pc:.3} s (runs wall/CPU: {})",
        n / pw,
        fmt(&pfl_runs)
    );
    println!(
        "grep -c status=sent: {LINES} lines, median of {ROUNDS}: wall {gw:.3} s = {:.0} lines/s, CPU {gc:.3} s (runs wall/CPU: {})",
        n / gw,
        fmt(&grep_runs)
    );
    println!(
        "the pipe alone (cat -> 1 MiB pipe -> 1 MiB reads, dropped): median of {ROUNDS}: wall {iw:.3} s, CPU {ic:.3} s (cat's and the reader's; runs wall/CPU: {}); the agent takes {:.2}x its wall time; 50x pflogsumm would be {:.2}x it",
        fmt(&pipe_runs),
        aw / iw,
        pw / PFLOGSUMM_TARGET / iw
    );
    let (pfl_wall, pfl_cpu) = (pw / aw, pc / ac);
    let (grep_wall, grep_cpu) = (aw / gw, ac / gc.max(1e-6));
    println!(
        "ratio vs pflogsumm: wall {pfl_wall:.1}x faster, CPU {pfl_cpu:.1}x (target >= {PFLOGSUMM_TARGET}x: {})",
        met(pfl_wall >= PFLOGSUMM_TARGET)
    );
    println!(
        "ratio vs grep -c:   wall {grep_wall:.2}x grep's time, CPU {grep_cpu:.2}x (target <= {GREP_TARGET}x: {})",
        met(grep_wall <= GREP_TARGET)
    );
    println!(
        "log pipeline targets (wall, same run): {}; load average at the end: {}",
        met(pfl_wall >= PFLOGSUMM_TARGET && grep_wall <= GREP_TARGET),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
