//! The log task: reads Postfix's log stream (the supervised master's stdout,
//! with `maillog_file = /dev/stdout`), feeds each line to the parser and the
//! join, applies outcomes to the shared state, and re-emits the line on the
//! agent's stdout with every address replaced by its keyed hash.
//!
//! Container logs leave the instance, so this is the one place plaintext
//! could escape: every byte written goes through [`Redactor::redact_line`].
//! Parse failures are counted, never logged line by line, never fatal.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::join::Tracker;
use super::parse::{parse_line, Event};
use crate::agent::redact::Redactor;
use crate::agent::state::State;

/// Longest line kept whole; longer lines are cut (and still redacted).
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read from the log pipe at a time: the pipe's whole buffer.
const READ_BUFFER: usize = crate::agent::pipe::PIPE_BUFFER;

/// Parse + join + count, one line at a time (no I/O). Redaction is apart
/// ([`redact_lines`]) so the two can run on both cores.
pub struct Processor {
    state: Arc<State>,
    tracker: Tracker,
    /// Line counts not yet published (parsed, ignored, malformed).
    pending: [u64; 3],
    /// The time the current batch of lines was read.
    now: u64,
}

impl Processor {
    pub fn new(state: Arc<State>) -> Self {
        let now = state.clock.unix_now();
        Processor { state, tracker: Tracker::new(), pending: [0; 3], now }
    }

    /// A new batch of lines was read: outcomes in it are recorded at this time.
    pub fn read_at_now(&mut self) {
        self.now = self.state.clock.unix_now();
    }

    /// Publish line counts to the shared state (per batch, not per line).
    pub fn publish(&mut self) {
        let [parsed, ignored, malformed] = std::mem::take(&mut self.pending);
        self.state.count_lines(parsed, ignored, malformed);
    }

    /// Parse, join and count one line (without newline).
    pub fn line(&mut self, line: &[u8]) {
        match parse_line(line) {
            Ok(parsed) => {
                // A verification probe's result is a Postfix line the agent
                // recognises and does not use: no delivery happened.
                let used = !matches!(parsed.event, Event::Other | Event::Warning | Event::Verification { .. });
                self.pending[usize::from(!used)] += 1;
                let (state, now) = (&self.state, self.now);
                self.tracker.feed(&parsed, rcpt_key, |o| state.record_outcome_at(&o, now));
                if matches!(parsed.event, Event::Received | Event::PickedUp) {
                    state.set_inflow(self.tracker.received);
                }
            }
            Err(_) => self.pending[2] += 1,
        }
    }
}

/// In-memory join key of a recipient (never leaves the process).
fn rcpt_key(addr: &[u8]) -> u64 {
    // FNV-1a over the lowercased bytes: the key only joins lines of one
    // queue id, so speed matters more than collision resistance.
    addr.iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3))
}

/// The lines of a batch of whole lines (each ends with '\n'), each cut to
/// [`MAX_LINE`] bytes.
fn lines_of(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', batch).map(move |end| {
        let line = &batch[start..end];
        start = end + 1;
        &line[..line.len().min(MAX_LINE)]
    })
}

/// Append every line of `batch` to `out` redacted, each with its newline.
fn redact_lines(redactor: &mut Redactor, batch: &[u8], out: &mut Vec<u8>) {
    for line in lines_of(batch) {
        redactor.redact_line(line, out);
        out.push(b'\n');
    }
}

/// Run the pipeline from `input` to `output` until EOF.
///
/// The log is read into batches of whole lines (1 MiB reads; only the
/// incomplete last line of a read is copied, to start the next batch). Each
/// batch is redacted on the runtime's blocking pool while this task parses,
/// joins and counts the same lines, so the two halves of the work use both
/// cores; then the counts are published and the redacted text written, so
/// log lines are timely without a write per line under load.
pub async fn run<R, W>(mut input: R, mut output: W, state: Arc<State>, redactor: Redactor) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A full pipe is drained in one read. With the 1M-line benchmark,
    // 256 KiB reads cost ~7% more CPU and 64 KiB reads ~40% more (more
    // reads, more writer wake-ups).
    let mut proc = Processor::new(state);
    let mut redactor = Some(redactor);
    let mut batch: Vec<u8> = Vec::with_capacity(READ_BUFFER + MAX_LINE);
    let mut spare: Vec<u8> = Vec::with_capacity(READ_BUFFER + MAX_LINE);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BUFFER + READ_BUFFER / 4);
    // Inside the dropped tail of a line longer than MAX_LINE.
    let mut skipping = false;
    loop {
        let start = batch.len();
        batch.reserve(READ_BUFFER);
        if input.read_buf(&mut batch).await? == 0 {
            break;
        }
        if skipping {
            match memchr::memchr(b'\n', &batch[start..]) {
                // The dropped tail ends here; `skipping` is set anew below.
                Some(i) => drop(batch.drain(start..start + i)),
                None => {
                    batch.truncate(start);
                    continue;
                }
            }
        }
        // The carried bytes before `start` hold no newline.
        let Some(last) = memchr::memrchr(b'\n', &batch[start..]) else {
            skipping = cap_line(&mut batch);
            continue;
        };
        let end = start + last + 1;
        spare.clear();
        spare.extend_from_slice(&batch[end..]);
        batch.truncate(end);
        let lines = Arc::new(std::mem::replace(&mut batch, std::mem::take(&mut spare)));
        skipping = cap_line(&mut batch);

        let (mut red, shared, mut text) = (redactor.take().expect("returned"), lines.clone(), std::mem::take(&mut out));
        let redacted = tokio::task::spawn_blocking(move || {
            redact_lines(&mut red, &shared, &mut text);
            (red, text)
        });
        proc.read_at_now();
        for line in lines_of(&lines) {
            proc.line(line);
        }
        proc.publish();
        let (red, text) = redacted.await.map_err(std::io::Error::other)?;
        redactor = Some(red);
        output.write_all(&text).await?;
        output.flush().await?;
        out = text;
        out.clear();
        // The redaction's reference is gone: reuse the buffer.
        spare = Arc::try_unwrap(lines).unwrap_or_default();
    }
    if !batch.is_empty() {
        // The last line had no newline.
        batch.push(b'\n');
        proc.read_at_now();
        for line in lines_of(&batch) {
            proc.line(line);
        }
        redact_lines(redactor.as_mut().expect("returned"), &batch, &mut out);
    }
    proc.publish();
    output.write_all(&out).await?;
    output.flush().await
}

/// Keep at most [`MAX_LINE`] bytes of an incomplete line; true when bytes
/// were dropped (the rest of the line up to its newline is dropped too, as
/// the parser would ignore it).
fn cap_line(line: &mut Vec<u8>) -> bool {
    let over = line.len() > MAX_LINE;
    line.truncate(MAX_LINE);
    over
}

/// Forward a stream that is not the mail log (Postfix's stderr): redacted, uncounted.
pub async fn forward<R, W>(input: R, mut output: W, mut redactor: Redactor) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut out = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        out.clear();
        redactor.redact_line(&line, &mut out);
        output.write_all(&out).await?;
        output.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use clap::Parser;
    use tokio::io::ReadBuf;

    use super::*;
    use crate::agent::args::AgentArgs;
    use crate::agent::counters::Counters;

    /// Hands out its bytes a few at a time, as a pipe under load may.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let chunk: Vec<u8> = self.0.drain(..n).collect();
            buf.put_slice(&chunk);
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn state(dir: &std::path::Path) -> Arc<State> {
        let args = Wrap::parse_from(["t", "--state-dir", dir.to_str().unwrap()]).args;
        Arc::new(State::new(args, Counters::load(dir).unwrap()))
    }

    const LOG: &str = "\
Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: from=<a@b.example>, size=354, nrcpt=1 (queue active)
Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<bob@dest.test>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)
garbage
Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: removed
Nov 23 06:56:56 h postfix/smtp[2]: FEDCB54321: to=<carol@dest.test>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (550 5.1.1 <carol@dest.test> unknown)";

    #[tokio::test]
    async fn lines_split_across_reads_are_whole_and_every_address_is_hashed() {
        for chunk in [1, 7, 64, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let st = state(dir.path());
            let red = Redactor::new(b"0123456789abcdef0123");
            let mut out = Vec::new();
            run(Trickle(LOG.as_bytes().to_vec(), chunk), &mut out, st.clone(), red.clone()).await.unwrap();
            // The same text as line-by-line redaction, with the last line
            // (no newline in the input) terminated.
            let mut want = Vec::new();
            let mut r = red.clone();
            for l in LOG.lines() {
                r.redact_line(l.as_bytes(), &mut want);
                want.push(b'\n');
            }
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want), "chunk {chunk}");
            let s = st.status();
            assert_eq!((s.log.lines, s.log.malformed), (5, 1), "chunk {chunk}");
            assert_eq!((s.counters.since_start.sent, s.counters.since_start.bounced), (1, 1), "chunk {chunk}");
        }
    }

    /// Issue 19's shapes through the whole pipeline: verification probes are
    /// recognised and unused (not malformed, no outcome), a 21-character
    /// queue id keeps its outcome, force-expiry counts as expiry, and every
    /// address on those lines leaves hashed.
    #[tokio::test]
    async fn probes_long_queue_ids_and_force_expiry_are_counted_right_and_redacted() {
        const LOG: &str = "\
Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4D: to=<probe.pii@dest.test>, relay=x[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=5.1.1, status=undeliverable-but-not-cached (host x[1.2.3.4] said: 550 5.1.1 <probe.pii@dest.test>: User unknown (in reply to RCPT TO command))
Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4E: to=<probe.pii@dest.test>, relay=x[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)
Dec  2 00:20:02 h postfix/smtp[2]: 83AF7FEDCBA9876543210: to=<long.pii@dest.test>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)
Dec  2 00:20:03 h postfix/smtp[2]: 4fLKq2BcDfz3Jk5mNpQrStV: to=<soft.pii@dest.test>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=4.2.0, status=deferred (450 try later)
Dec  2 00:20:04 h postfix/qmgr[1]: 4fLKq2BcDfz3Jk5mNpQrStV: from=<sender.pii@client.test>, status=force-expired, returned to sender
Dec  2 00:20:04 h postfix/qmgr[1]: 4fLKq2BcDfz3Jk5mNpQrStV: removed
";
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let mut out = Vec::new();
        run(LOG.as_bytes(), &mut out, st.clone(), Redactor::new(b"0123456789abcdef0123")).await.unwrap();
        let s = st.status();
        assert_eq!((s.log.lines, s.log.malformed), (6, 0));
        let c = &s.counters.since_start;
        assert_eq!((c.sent, c.deferred, c.bounced, c.expired), (1, 1, 0, 1), "{c:?}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(!text.contains(".pii@"), "an address left in plaintext:\n{text}");
        assert_eq!(text.matches("<h-").count(), 6, "{text}");
    }

    #[tokio::test]
    async fn a_line_with_hundreds_of_addresses_is_redacted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let addrs: Vec<String> = (0..300).map(|i| format!("<user{i}@dest.test>")).collect();
        let line = format!("Nov 23 06:56:55 h postfix/smtpd[5]: warning: {}\n", addrs.join(" "));
        let input = format!("{line}{line}");
        for chunk in [100_000, 1000] {
            let mut out = Vec::new();
            run(
                Trickle(input.clone().into_bytes(), chunk),
                &mut out,
                st.clone(),
                Redactor::new(b"0123456789abcdef0123"),
            )
            .await
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.matches("@dest.test").count(), 2 * addrs.len(), "chunk {chunk}");
            assert!(!text.contains("<user"), "chunk {chunk}: a local part survived");
        }
    }

    #[tokio::test]
    async fn overlong_lines_are_cut_not_split() {
        let long = format!("Nov 23 06:56:55 h postfix/smtpd[5]: warning: {}", "x".repeat(3 * MAX_LINE));
        let removed = "Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: removed";
        // Across reads (skipped tail), within one read, the newline alone
        // in the next read, and an overlong last line without a newline.
        for (input, chunk) in [
            (format!("{long}\n{removed}\n"), 10_000),
            (format!("{long}\n{removed}\n"), 1 << 20),
            (format!("{long}\n{removed}\n"), long.len()),
            (format!("{removed}\n{long}"), 10_000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let st = state(dir.path());
            let mut out = Vec::new();
            let first_long = input.starts_with(&long[..100]);
            run(Trickle(input.into_bytes(), chunk), &mut out, st.clone(), Redactor::new(b"0123456789abcdef0123"))
                .await
                .unwrap();
            let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
            assert_eq!(lines.len(), 3, "two lines and the final newline (chunk {chunk})");
            let (cut, other) = if first_long { (lines[0], lines[1]) } else { (lines[1], lines[0]) };
            assert_eq!(cut, &long.as_bytes()[..MAX_LINE], "chunk {chunk}");
            assert_eq!(other, removed.as_bytes(), "chunk {chunk}");
            assert_eq!(st.status().log.lines, 2, "chunk {chunk}");
        }
    }
}
