//! The log task: reads Postfix's log stream (the supervised master's stdout,
//! with `maillog_file = /dev/stdout`), feeds each line to the parser and the
//! join, applies outcomes to the shared state, and re-emits the line on the
//! agent's stdout with every address replaced by its keyed hash.
//!
//! Container logs leave the instance, so this is the one place plaintext
//! could escape: every byte written goes through [`Redactor::redact_line`].
//! Parse failures are counted, never logged line by line, never fatal.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::join::Tracker;
use super::parse::{parse_line, Event};
use crate::agent::redact::Redactor;
use crate::agent::state::State;

/// Longest line kept whole; longer lines are cut (and still redacted).
pub const MAX_LINE: usize = 64 * 1024;

/// Parse + join + count + redact, one line at a time (no I/O).
pub struct Processor {
    state: Arc<State>,
    redactor: Redactor,
    tracker: Tracker,
    /// Line counts not yet published (parsed, ignored, malformed).
    pending: [u64; 3],
}

impl Processor {
    pub fn new(state: Arc<State>, redactor: Redactor) -> Self {
        Processor { state, redactor, tracker: Tracker::new(), pending: [0; 3] }
    }

    /// Publish line counts to the shared state (per batch, not per line).
    pub fn publish(&mut self) {
        let [parsed, ignored, malformed] = std::mem::take(&mut self.pending);
        self.state.count_lines(parsed, ignored, malformed);
    }

    /// Process one line (without newline); append its redacted form and a newline to `out`.
    pub fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        match parse_line(line) {
            Ok(parsed) => {
                let used = !matches!(parsed.event, Event::Other | Event::Warning);
                self.pending[usize::from(!used)] += 1;
                let state = &self.state;
                self.tracker.feed(&parsed, rcpt_key, |o| state.record_outcome(&o));
                if matches!(parsed.event, Event::Received | Event::PickedUp) {
                    state.set_inflow(self.tracker.received);
                }
            }
            Err(_) => self.pending[2] += 1,
        }
        self.redactor.redact_line(line, out);
        out.push(b'\n');
    }
}

/// In-memory join key of a recipient (never leaves the process).
fn rcpt_key(addr: &[u8]) -> u64 {
    // FNV-1a over the lowercased bytes: the key only joins lines of one
    // queue id, so speed matters more than collision resistance.
    addr.iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3))
}

/// Run the pipeline from `input` to `output` until EOF.
pub async fn run<R, W>(input: R, mut output: W, state: Arc<State>, redactor: Redactor) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut proc = Processor::new(state, redactor);
    let mut line = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        line.truncate(MAX_LINE);
        proc.line(&line, &mut out);
        // Flush when the input has nothing more buffered, so log lines are
        // timely without a write per line under load.
        if reader.buffer().is_empty() || out.len() > 32 * 1024 {
            proc.publish();
            output.write_all(&out).await?;
            output.flush().await?;
            out.clear();
        }
    }
    proc.publish();
    output.write_all(&out).await?;
    output.flush().await
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

/// Read the mail log from the agent's stdin (when Postfix is not supervised).
pub fn spawn_stdin(state: Arc<State>, redactor: Redactor) {
    tokio::spawn(async move {
        if let Err(e) = run(tokio::io::stdin(), tokio::io::stdout(), state, redactor).await {
            tracing::warn!(error = %e, "reading mail log from stdin");
        }
    });
}
