//! Postfix mail-log line parser, on bytes.
//!
//! Understands the prefix Postfix 3.7 writes with `maillog_file` (`Nov 23
//! 06:56:55 host postfix/smtp[5690]: ...`, the same shape as Debian's
//! traditional syslog), RFC 3339 syslog timestamps (`2026-11-23T06:56:55.123+00:00
//! host postfix/smtp[5690]: ...`), any `syslog_name` (`postfix-out/smtp`), and
//! the messages the agent uses: delivery results (`to=<..>, relay=..,
//! delays=a/b/c/d, dsn=.., status=.. (text)`) from any delivery agent or qmgr,
//! qmgr `from=` / `removed` / `status=expired` / `status=force-expired`
//! lines, cleanup `message-id=`, smtpd `client=` and `NOQUEUE: reject:`,
//! pickup, bounce notifications and warnings. Address verification results
//! (`status=deliverable`, `undeliverable`, `undeliverable-but-not-cached`)
//! share the delivery line's shape and are recognised as such, not as
//! deliveries. Every status word and queue id shape Postfix 3.7's format
//! strings can produce is in the corpus below, quoted from its source.
//!
//! Pure and allocation-free: returns slices of the input. Must never panic on
//! any input (a property test feeds it arbitrary bytes) and never interpret
//! an address beyond splitting off its domain.

/// A parsed line: prefix fields and the event.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    /// The master.cf service: with `-o syslog_name=postfix/NAME` Postfix 3.x
    /// tags lines `postfix/NAME/smtp`, so this is `NAME`; otherwise the
    /// program (`postfix/smtp` -> `smtp`).
    pub service: &'a [u8],
    /// The program after the last '/' (`smtp`, `qmgr`, `error`).
    pub program: &'a [u8],
    /// Queue id, if the message starts with one.
    pub queue_id: Option<&'a [u8]>,
    pub event: Event<'a>,
}

/// What a line says.
#[derive(Debug, PartialEq)]
pub enum Event<'a> {
    Delivery(Delivery<'a>),
    /// An address verification probe's result (`to=<..>, ..,
    /// status=deliverable|undeliverable|undeliverable-but-not-cached (..)`):
    /// a probe (from the verify service for `reject_unverified_*`, or
    /// `sendmail -bv`) stops at RCPT TO and is never delivered, so this is
    /// no delivery outcome of the recipient — and not malformed either.
    Verification {
        deliverable: bool,
    },
    /// qmgr: message entered the active queue.
    QueueActive {
        nrcpt: u32,
    },
    /// qmgr: message expired (`status=expired, returned to sender`), or an
    /// administrator expired it (`postsuper -e`: `status=force-expired`).
    /// Final only once the message is `removed`: see [`Event::ReturnFailed`].
    Expired,
    /// `global/abounce.c`, `bounce.c`: `"%s: status=deferred (%s failed)"`
    /// with "bounce" or "verp": the notice to the sender could not be
    /// queued, so the message stays queued (qmgr moves it back to the
    /// deferred queue, tries its recipients again and logs the expiry
    /// again at a later run). An expiry before it did not happen.
    ReturnFailed,
    /// qmgr: message left the queue.
    Removed,
    /// smtpd: a message was received from a client.
    Received,
    /// pickup: a locally submitted message.
    PickedUp,
    /// cleanup: message-id line (a message was accepted into the queue).
    MessageId,
    /// bounce: a notification was queued as a new message.
    Notification,
    /// smtpd/cleanup reject before or at queueing.
    Reject,
    /// `warning:`, `fatal:`, `panic:`, `error:` lines.
    Warning,
    /// A Postfix line whose message the agent does not use.
    Other,
}

/// Final or intermediate status of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
            Status::Expired => "expired",
        }
    }
}

/// A delivery attempt's result for one recipient.
#[derive(Debug, PartialEq)]
pub struct Delivery<'a> {
    /// Recipient address without the angle brackets. Never log it.
    pub to: &'a [u8],
    pub orig_to: Option<&'a [u8]>,
    pub relay: &'a [u8],
    pub delay: f32,
    /// a/b/c/d: before qmgr, in qmgr, connection setup, transmission.
    pub delays: [f32; 4],
    pub dsn: &'a [u8],
    pub status: Status,
    /// The text in parentheses after the status.
    pub response: &'a [u8],
}

/// Why a line gave no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No `host tag[pid]: ` prefix.
    Prefix,
    /// A delivery line whose fields do not parse.
    Delivery,
}

/// Parse one line (without its trailing newline; a trailing `\r` is tolerated).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, Malformed> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (tag, msg) = split_prefix(line).ok_or(Malformed::Prefix)?;
    let (queue_id, rest) = split_queue_id(msg);
    let event = classify_message(rest, queue_id.is_some())?;
    Ok(Line { service: tag.service, program: tag.program, queue_id, event })
}

/// The syslog tag split into what the agent needs.
struct Tag<'a> {
    service: &'a [u8],
    program: &'a [u8],
}

/// Split `TIMESTAMP HOST TAG[PID]: MESSAGE` into (TAG, MESSAGE).
///
/// One pass over the tag: it ends at `[` (then `PID]: ` must follow) or at
/// `: `; a space or a lone `:` inside it makes the line malformed.
fn split_prefix(line: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let after_ts = skip_timestamp(line)?;
    let sp = position(after_ts, b' ')?;
    if sp == 0 {
        return None; // empty host
    }
    let rest = &after_ts[sp + 1..];
    // The last two '/' of the tag: `postfix/NAME/smtp` names the service.
    let (mut last, mut before) = (None, None);
    let mut end = 0;
    while let Some(&b) = rest.get(end) {
        match TAG_BYTE[usize::from(b)] {
            TagByte::Plain => {}
            TagByte::Slash => (before, last) = (last, Some(end)),
            TagByte::End => break,
        }
        end += 1;
    }
    let tag = &rest[..end];
    let msg = match rest.get(end..)? {
        [b'[', after @ ..] => {
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            match &after[digits..] {
                [b']', b':', b' ', msg @ ..] if digits > 0 => msg,
                _ => return None,
            }
        }
        [b':', b' ', msg @ ..] => msg,
        _ => return None,
    };
    let program = match last {
        Some(i) => &tag[i + 1..],
        None => tag,
    };
    if program.is_empty() {
        return None;
    }
    // `postfix/NAME/smtp`: the segment before the program names the service
    // when there are at least two slashes.
    let service = match (before, last) {
        (Some(b), Some(l)) if b + 1 < l => &tag[b + 1..l],
        _ => program,
    };
    Some((Tag { service, program }, msg))
}

#[derive(Clone, Copy)]
enum TagByte {
    Plain,
    Slash,
    End,
}

/// What each byte means inside a syslog tag (one table load per byte: the
/// tag scan runs for every line).
const TAG_BYTE: [TagByte; 256] = {
    let mut t = [TagByte::Plain; 256];
    t[b'/' as usize] = TagByte::Slash;
    t[b'[' as usize] = TagByte::End;
    t[b':' as usize] = TagByte::End;
    t[b' ' as usize] = TagByte::End;
    t
};

/// The line after its timestamp and the space that ends it.
fn skip_timestamp(line: &[u8]) -> Option<&[u8]> {
    let first = *line.first()?;
    if first.is_ascii_digit() {
        // RFC 3339: one token.
        return Some(&line[position(line, b' ')? + 1..]);
    }
    if !first.is_ascii_alphabetic() {
        return None;
    }
    // "Nov 23 06:56:55 " and "Nov  3 06:56:55 " (what maillog_file writes),
    // checked in place; other spacing or fractional seconds take the slow way.
    if let Some(ts) = line.get(..16) {
        if ts[3] == b' '
            && ts[6] == b' '
            && ts[9] == b':'
            && ts[12] == b':'
            && ts[15] == b' '
            && (ts[4] == b' ' || ts[4].is_ascii_digit())
            && ts[5].is_ascii_digit()
        {
            return Some(&line[16..]);
        }
    }
    let rest = trim_start_spaces(line.get(3..)?);
    let sp = position(rest, b' ')?; // after day
    let rest = &rest[sp + 1..];
    let sp = position(rest, b' ')?; // after time
    Some(&rest[sp + 1..])
}

fn trim_start_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// Longest queue id Postfix makes (`global/mail_queue.h`). Short ids are
/// `MQID_SH_USEC_PAD` (5) hex digits of microseconds plus the inode number in
/// hex: 21 with 64-bit inode numbers. Long ids (`enable_long_queue_ids`) are
/// the seconds in base 52 (at least 6 digits, 12 for a 64-bit time), 4
/// base-52 digits of microseconds, `z`, and the inode number in base 51 (12
/// digits for 64 bits): 23 today, 29 at most.
pub const MAX_QUEUE_ID: usize = 29;

/// Queue ids: 5 to [`MAX_QUEUE_ID`] alphanumerics followed by ": ";
/// `NOQUEUE` counts as none.
fn split_queue_id(msg: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let n = msg.iter().take(MAX_QUEUE_ID + 1).take_while(|b| b.is_ascii_alphanumeric()).count();
    if (5..=MAX_QUEUE_ID).contains(&n) && msg[n..].starts_with(b": ") && looks_like_queue_id(&msg[..n]) {
        let id = &msg[..n];
        let rest = &msg[n + 2..];
        if id == b"NOQUEUE" {
            return (None, rest);
        }
        return (Some(id), rest);
    }
    (None, msg)
}

/// Tells a queue id from a lowercase word before ": " (`warning: `).
///
/// Short ids are uppercase hex, so they hold a digit or an uppercase letter.
/// A long id may, rarely, be all lowercase consonants, but always has its
/// time-inode separator `z` after the 10 time digits (`MQID_LG_TIME_PAD`;
/// the inode's base-51 digits never hold a `z`).
#[inline(always)]
fn looks_like_queue_id(id: &[u8]) -> bool {
    id.iter().any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        || id.iter().rposition(|&b| b == b'z').is_some_and(|z| z >= 10 && z + 1 < id.len())
}

fn classify_message(msg: &[u8], has_qid: bool) -> Result<Event<'_>, Malformed> {
    // Dispatch on the first byte: most lines are settled by one comparison.
    let event = match msg.first() {
        Some(b't') if msg.starts_with(b"to=<") => return parse_delivery(msg).ok_or(Malformed::Delivery),
        Some(b'w') if msg.starts_with(b"warning: ") => Event::Warning,
        Some(b'f') if msg.starts_with(b"fatal: ") => Event::Warning,
        Some(b'p') if msg.starts_with(b"panic: ") => Event::Warning,
        Some(b'e') if msg.starts_with(b"error: ") => Event::Warning,
        Some(b'r') if msg.starts_with(b"reject: ") => Event::Reject,
        Some(b'm') if msg.starts_with(b"milter-reject: ") => Event::Reject,
        _ if !has_qid => Event::Other,
        Some(b'r') if msg == b"removed" => Event::Removed,
        Some(b'f') if msg.starts_with(b"from=<") => queue_manager_from(&msg[6..]),
        Some(b'c') if msg.starts_with(b"client=") => Event::Received,
        Some(b'u') if msg.starts_with(b"uid=") => Event::PickedUp,
        Some(b's') if msg == b"status=deferred (bounce failed)" || msg == b"status=deferred (verp failed)" => {
            Event::ReturnFailed
        }
        Some(b'm') if msg.starts_with(b"message-id=") => Event::MessageId,
        _ if find(msg, b" notification: ").is_some() => Event::Notification,
        _ => Event::Other,
    };
    Ok(event)
}

/// qmgr's `from=<SENDER>, size=N, nrcpt=N (queue active)` or `from=<SENDER>,
/// status=expired, returned to sender`; `body` starts after `from=<`.
fn queue_manager_from(body: &[u8]) -> Event<'_> {
    // The sender may be empty (`from=<>`) or hold a quoted ">, ".
    let after = find_addr_end(body).map_or(body, |e| &body[e + 3..]);
    // qmgr/qmgr_active.c: `"%s: from=<%s>, status=%s, returned to sender"`
    // with "expired" (queue lifetime over) or "force-expired" (`postsuper
    // -e`, Postfix 3.7+); both end the message the same way.
    if let Some(s) = after.strip_prefix(b"status=") {
        if s.starts_with(b"expired, ") || s.starts_with(b"force-expired, ") {
            return Event::Expired;
        }
    }
    match find(after, b", nrcpt=") {
        Some(i) => {
            let digits = &after[i + 8..];
            let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            Event::QueueActive { nrcpt: parse_u32(&digits[..n]).unwrap_or(0) }
        }
        None => Event::Other,
    }
}

/// What a `status=` word on a `to=<..>` line says.
enum StatusWord {
    Delivery(Status),
    Verification { deliverable: bool },
}

/// The status words of `global/log_adhoc.c`'s `"%s: to=<%s>..., dsn=%s,
/// status=%s (%s)"`, from every caller in Postfix 3.7: `sent.c` "sent",
/// `defer.c` "deferred", `bounce.c` "bounced" or, with `soft_bounce = yes`,
/// "SOFTBOUNCE" (the recipient stays queued: a deferral); `verify.c` and
/// `trace.c` pass the probe's DSN action: "deliverable" (also
/// `cleanup_out_recipient.c` for an alias), "undeliverable", and
/// "undeliverable-but-not-cached" (`address_verify_negative_cache = no`).
/// Postfix never writes "expired" on this line (expiry is qmgr's `from=`
/// line); it is accepted as before.
fn status_word(word: &[u8]) -> Option<StatusWord> {
    Some(match word {
        b"sent" => StatusWord::Delivery(Status::Sent),
        b"deferred" | b"SOFTBOUNCE" => StatusWord::Delivery(Status::Deferred),
        b"bounced" => StatusWord::Delivery(Status::Bounced),
        b"expired" => StatusWord::Delivery(Status::Expired),
        b"deliverable" => StatusWord::Verification { deliverable: true },
        b"undeliverable" | b"undeliverable-but-not-cached" => StatusWord::Verification { deliverable: false },
        _ => return None,
    })
}

/// `to=<a@b>, [orig_to=<..>, ]relay=.., [conn_use=N, ]delay=.., delays=a/b/c/d, [tls=.., ]dsn=x.y.z, status=S (text)`
fn parse_delivery(msg: &[u8]) -> Option<Event<'_>> {
    let body = &msg[4..];
    // A quoted local part may hold ">, ", so search from the '@' if any.
    let end = find_addr_end(body)?;
    let to = &body[..end];
    let mut rest = body.get(end + 3..)?; // skip ">, "
    let mut d = Delivery {
        to,
        orig_to: None,
        relay: b"",
        delay: 0.0,
        delays: [0.0; 4],
        dsn: b"",
        status: Status::Deferred,
        response: b"",
    };
    if let Some(r) = rest.strip_prefix(b"orig_to=<") {
        let e = find_addr_end(r)?;
        d.orig_to = Some(&r[..e]);
        rest = r.get(e + 3..)?;
    }
    loop {
        if let Some(s) = rest.strip_prefix(b"status=") {
            let n = s.iter().take_while(|&&b| b.is_ascii_alphabetic() || b == b'-').count();
            d.status = match status_word(&s[..n])? {
                StatusWord::Delivery(status) => status,
                StatusWord::Verification { deliverable } => return Some(Event::Verification { deliverable }),
            };
            let tail = &s[n..];
            if let Some(t) = tail.strip_prefix(b" (") {
                d.response = t.strip_suffix(b")").unwrap_or(t);
            } else if let Some(t) = tail.strip_prefix(b", ") {
                d.response = t;
            }
            return Some(Event::Delivery(d));
        }
        let comma = find(rest, b", ")?;
        let field = &rest[..comma];
        rest = &rest[comma + 2..];
        let eq = position(field, b'=')?;
        let (k, v) = (&field[..eq], &field[eq + 1..]);
        match k {
            b"relay" => d.relay = v,
            b"delay" => d.delay = parse_f32(v)?,
            b"delays" => {
                let mut parts = v.split(|&b| b == b'/');
                for slot in d.delays.iter_mut() {
                    *slot = parse_f32(parts.next()?)?;
                }
            }
            b"dsn" => d.dsn = v,
            _ => {} // conn_use=, and fields future versions add
        }
    }
}

/// First occurrence of `needle`: the first byte found with memchr (SIMD
/// over long texts, a word-at-a-time loop over short ones), the rest
/// compared in place. Inlined so the needle is a constant at each use.
#[inline(always)]
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = memchr::memchr(first, &hay[from..]) {
        let at = from + i;
        if hay[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// First `byte` in a short token (tens of bytes: a plain loop beats a call).
#[inline(always)]
fn position(s: &[u8], byte: u8) -> Option<usize> {
    s.iter().position(|&b| b == byte)
}

/// End of an address inside `<...>` followed by ", ".
fn find_addr_end(s: &[u8]) -> Option<usize> {
    let from = position(s, b'@').unwrap_or(0);
    find(&s[from..], b">, ").map(|i| i + from)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    s.iter().try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
}

/// Postfix prints delays as `12`, `0.06`, `1.2e+02` never; keep it simple and strict.
fn parse_f32(s: &[u8]) -> Option<f32> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut int: u64 = 0;
    let mut frac: u64 = 0;
    let mut scale: u64 = 1;
    let mut seen_dot = false;
    for &b in s {
        match b {
            b'0'..=b'9' if !seen_dot => int = int * 10 + u64::from(b - b'0'),
            b'0'..=b'9' => {
                frac = frac * 10 + u64::from(b - b'0');
                scale *= 10;
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    Some(int as f32 + frac as f32 / scale as f32)
}

/// Domain part of an address (after the last '@'), if any.
pub fn domain_of(addr: &[u8]) -> Option<&[u8]> {
    let at = addr.iter().rposition(|&b| b == b'@')?;
    let d = &addr[at + 1..];
    (!d.is_empty()).then_some(d)
}

/// `host[addr]:port` -> host from a `relay=` value: the name Postfix
/// connected to (for mail routed by MX, the MX host). `None` for
/// `relay=none`, a local transport (`dovecot[private/..]` has no port) or
/// an empty name.
pub fn relay_host(relay: &[u8]) -> Option<&[u8]> {
    let open = position(relay, b'[')?;
    let host = &relay[..open];
    let tail = &relay[open..];
    let close = position(tail, b']')?;
    (!host.is_empty() && tail.get(close + 1) == Some(&b':')).then_some(host)
}

/// `host[addr]:port` -> (addr, port) from a `relay=` value.
pub fn relay_endpoint(relay: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let open = position(relay, b'[')?;
    let close = open + position(&relay[open..], b']')?;
    let addr = &relay[open + 1..close];
    let port = relay
        .get(close + 1..)
        .and_then(|r| r.strip_prefix(b":"))
        .and_then(parse_u32)
        .and_then(|p| u16::try_from(p).ok());
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delivery(line: &str) -> Delivery<'_> {
        match parse_line(line.as_bytes()).unwrap().event {
            Event::Delivery(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maillog_file_sent_line() {
        let l = "Nov 23 06:56:55 sender postfix/smtp[5690]: 83AF79842A5: to=<bob@dest.test>, relay=127.0.2.1[127.0.2.1]:2525, delay=0.06, delays=0.04/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)";
        let p = parse_line(l.as_bytes()).unwrap();
        assert_eq!(p.service, b"smtp");
        assert_eq!(p.queue_id, Some(&b"83AF79842A5"[..]));
        let Event::Delivery(d) = p.event else { panic!() };
        assert_eq!(d.to, b"bob@dest.test");
        assert_eq!(d.status, Status::Sent);
        assert_eq!(d.dsn, b"2.0.0");
        assert_eq!(d.delays, [0.04, 0.01, 0.0, 0.0]);
        assert_eq!(d.response, b"250 2.0.0 Ok");
        assert_eq!(relay_endpoint(d.relay), Some((&b"127.0.2.1"[..], Some(2525))));
        assert_eq!(relay_host(d.relay), Some(&b"127.0.2.1"[..]));
    }

    #[test]
    fn relay_host_is_the_name_postfix_connected_to() {
        assert_eq!(
            relay_host(b"gmail-smtp-in.l.google.com[2a00:1450:400c:c07::1a]:25"),
            Some(&b"gmail-smtp-in.l.google.com"[..])
        );
        for none in [&b"none"[..], b"dovecot[private/dovecot-lmtp]", b"[192.0.2.1]:25", b"mx[192.0.2.1", b""] {
            assert_eq!(relay_host(none), None, "{}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn rfc3339_prefix_custom_syslog_name_ipv6_and_conn_use() {
        let d = delivery("2026-11-23T06:56:55.123456+00:00 mx1 postfix-out/throttle-gmail[77]: 4Xyz12AbCdEfG: to=<a@gmail.com>, orig_to=<alias@corp.example>, relay=gmail-smtp-in.l.google.com[2a00:1450:400c:c07::1a]:25, conn_use=3, delay=1.5, delays=0.1/0/0.4/1, dsn=4.7.28, status=deferred (host gmail-smtp-in.l.google.com[2a00:1450:400c:c07::1a] said: 421-4.7.28 [2001:db8::5] Our system has detected an unusual rate of unsolicited mail (in reply to end of DATA command))");
        assert_eq!(d.orig_to, Some(&b"alias@corp.example"[..]));
        assert_eq!(d.status, Status::Deferred);
        assert_eq!(d.dsn, b"4.7.28");
        assert!(d.response.ends_with(b"(in reply to end of DATA command)"));
        assert_eq!(relay_endpoint(d.relay).unwrap().0, b"2a00:1450:400c:c07::1a");
        let p = parse_line(b"2026-11-23T06:56:55+00:00 mx1 postfix-out/throttle-gmail[77]: 4Xyz12AbCdEfG: removed")
            .unwrap();
        assert_eq!(p.service, b"throttle-gmail");
        assert_eq!(p.program, b"throttle-gmail");
        let p = parse_line(b"Nov 23 07:25:01 h postfix/dp-slow-slow/smtp[23548]: ABCDE12345: removed").unwrap();
        assert_eq!((p.service, p.program), (&b"dp-slow-slow"[..], &b"smtp"[..]));
        let p = parse_line(b"Nov 23 07:25:01 h postfix/smtp[23548]: ABCDE12345: removed").unwrap();
        assert_eq!((p.service, p.program), (&b"smtp"[..], &b"smtp"[..]));
        assert_eq!(p.event, Event::Removed);
    }

    #[test]
    fn corpus_of_line_shapes() {
        let cases: &[(&str, &str)] = &[
            ("Nov  3 01:02:03 h postfix/qmgr[1]: ABCDE12345: from=<a@b.c>, size=354, nrcpt=2 (queue active)", "QueueActive"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: from=<a@b.c>, status=expired, returned to sender", "Expired"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: to=<x@y.z>, relay=none, delay=3, delays=3/0/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to y.z[1.2.3.4]:25: Connection refused)", "Delivery"),
            ("Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=300, delays=0/0/0/300, dsn=4.4.2, status=deferred (conversation with y.z[1.2.3.4] timed out while receiving the initial server greeting)", "Delivery"),
            ("Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<\"odd, >, local\"@y.z>, relay=y.z[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host y.z[1.2.3.4] said: 550 5.1.1 <\"odd\"@y.z>: Recipient address rejected: [no such user] (in reply to RCPT TO command))", "Delivery"),
            ("Nov 23 06:56:55 h postfix/error[3]: ABCDE12345: to=<x@y.z>, relay=none, delay=0.1, delays=0/0/0/0.1, dsn=4.7.1, status=deferred (paused by policy gmail)", "Delivery"),
            ("Nov 23 06:56:55 h postfix/lmtp[3]: ABCDE12345: to=<x@y.z>, relay=dovecot[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Saved)", "Delivery"),
            ("Nov 23 06:56:55 h postfix/cleanup[4]: ABCDE12345: message-id=<1@vm>", "MessageId"),
            ("Nov 23 06:56:55 h postfix/smtpd[5]: ABCDE12345: client=unknown[127.0.1.5]", "Received"),
            ("Nov 23 06:56:55 h postfix/pickup[6]: ABCDE12345: uid=0 from=<root>", "PickedUp"),
            ("Nov 23 06:56:55 h postfix/bounce[7]: ABCDE12345: sender non-delivery notification: FEDCBA9876", "Notification"),
            ("Nov 23 06:56:55 h postfix/smtpd[5]: NOQUEUE: reject: RCPT from unknown[127.0.0.9]: 554 5.7.1 <x@y.z>: Relay access denied; from=<a@b> to=<x@y.z> proto=ESMTP helo=<h>", "Reject"),
            ("Nov 23 06:56:55 h postfix/smtpd[5]: warning: dict_nis_init: NIS domain name not set - NIS lookups disabled", "Warning"),
            ("Nov 23 06:56:55 h postfix/smtpd[5]: connect from unknown[127.0.1.5]", "Other"),
            ("Nov 23 06:56:55 h postfix/master[5651]: daemon started -- version 3.7.11, configuration /tmp/pfx/a", "Other"),
            ("Nov 23 06:56:55 h postfix/postfix-script[5650]: starting the Postfix mail system", "Other"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: removed", "Removed"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: from=<>, size=2, nrcpt=1 (queue active)", "QueueActive"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: from=<>, status=expired, returned to sender", "Expired"),
            ("Nov 23 06:56:55 h postfix/qmgr[1]: ABCDE12345: from=<\"a>, b\"@c.d>, size=2, nrcpt=3 (queue active)", "QueueActive { nrcpt: 3 }"),
            // Fractional seconds, and a tag without [pid].
            ("Nov 23 06:56:55.123456 h postfix/qmgr: ABCDE12345: removed", "Removed"),
        ];
        for (line, want) in cases {
            let got = parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e:?}: {line}"));
            let name = format!("{:?}", got.event);
            assert!(name.starts_with(want), "{line}\n=> {name}");
        }
        let d = delivery(cases[4].0);
        assert_eq!(d.to, b"\"odd, >, local\"@y.z");
        assert_eq!(d.status, Status::Bounced);
        assert_eq!(domain_of(d.to), Some(&b"y.z"[..]));
    }

    /// Shapes from Postfix 3.7's format strings that the first corpus
    /// missed (issue 19). Each line is quoted from the source that writes it
    /// (vdukhovni/postfix, `postfix/src/...`); the force-expired sequence is
    /// also made by real Postfix in `tests/agent_delivery.rs`.
    #[test]
    fn postfix_source_shapes() {
        // qmgr/qmgr_active.c: "%s: from=<%s>, status=%s, returned to sender"
        // with "force-expired" after `postsuper -e` (3.7+).
        for l in [
            "Dec  2 00:20:01 h postfix/qmgr[1]: ABCDE12345: from=<a@b.c>, status=force-expired, returned to sender",
            "Dec  2 00:20:01 h postfix/qmgr[1]: ABCDE12345: from=<>, status=force-expired, returned to sender",
            "Dec  2 00:20:01 h postfix/qmgr[1]: ABCDE12345: from=<a@b.c>, status=expired, returned to sender",
        ] {
            assert_eq!(parse_line(l.as_bytes()).unwrap().event, Event::Expired, "{l}");
        }
        // Not an expiry: a sender that merely starts like one, and
        // postsuper's own "%s: expired" (qmgr's line follows it).
        for l in [
            "Dec  2 00:20:01 h postfix/qmgr[1]: ABCDE12345: from=<a@b.c>, status=expiredish",
            "Dec  2 00:20:01 h postfix/postsuper[9]: ABCDE12345: expired",
            "Dec  2 00:20:01 h postfix/postsuper[9]: Force-expired: 1 message",
        ] {
            assert_eq!(parse_line(l.as_bytes()).unwrap().event, Event::Other, "{l}");
        }
        // qmgr/qmgr_message.c: a force-expired message without a defer log
        // (never tried, e.g. on hold) has its recipients redirected to the
        // retry service (error(8)) with "4.7.0 message is administratively
        // expired", which logs them deferred before qmgr's force-expired line.
        let d = delivery("Dec  2 00:20:01 h postfix/error[3]: ABCDE12345: to=<x@y.z>, relay=none, delay=12, delays=12/0/0/0, dsn=4.7.0, status=deferred (message is administratively expired)");
        assert_eq!((d.status, d.dsn), (Status::Deferred, &b"4.7.0"[..]));
        // postsuper/postsuper.c "%s: removed" (postsuper -d) ends a message too.
        let p = parse_line(b"Dec  2 00:20:01 h postfix/postsuper[9]: ABCDE12345: removed").unwrap();
        assert_eq!((p.program, p.event), (&b"postsuper"[..], Event::Removed));

        // global/log_adhoc.c since 3.11: ", tls=%s" (pol_stats_format(): features
        // joined by '/', '!' for a violation, ':final', '?' undecided) before dsn=.
        let d = delivery("Dec  2 00:20:01 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=1, delays=0/0/0/1, tls=!dane:may/sts?, dsn=2.0.0, status=sent (250 ok)");
        assert_eq!((d.status, d.dsn), (Status::Sent, &b"2.0.0"[..]));

        // global/bounce.c: with soft_bounce = yes the status is "SOFTBOUNCE",
        // the DSN's first digit becomes 4 and the recipient stays queued.
        let d = delivery("Dec  2 00:20:01 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=4.1.1, status=SOFTBOUNCE (host y.z[1.2.3.4] said: 550 5.1.1 <x@y.z>: Recipient address rejected: User unknown (in reply to RCPT TO command))");
        assert_eq!(d.status, Status::Deferred);

        // global/verify.c, sent.c, bounce.c, defer.c: address verification
        // probes log the DSN action instead of a delivery status.
        for (l, deliverable) in [
            ("Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4D: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=5.1.1, status=undeliverable-but-not-cached (host y.z[1.2.3.4] said: 550 5.1.1 <x@y.z>: Recipient address rejected: User unknown (in reply to RCPT TO command))", false),
            ("Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4D: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=5.1.1, status=undeliverable (host y.z[1.2.3.4] said: 550 5.1.1 unknown (in reply to RCPT TO command))", false),
            ("Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4D: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=4.4.1, status=undeliverable (connect to y.z[1.2.3.4]:25: Connection refused)", false),
            ("Dec  2 00:20:01 h postfix/smtp[2]: 3F2A1984B4D: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=0.1, delays=0/0/0.05/0.05, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)", true),
            ("Dec  2 00:20:01 h postfix/cleanup[4]: 3F2A1984B4D: to=<x@y.z>, orig_to=<alias@y.z>, relay=none, delay=0, delays=0/0/0/0, dsn=2.0.0, status=deliverable (aliased to x@y.z)", true),
        ] {
            assert_eq!(parse_line(l.as_bytes()).unwrap().event, Event::Verification { deliverable }, "{l}");
        }
        // A status word Postfix does not write is still malformed.
        for bad in ["undeliverable-but", "Sent", "sent-", "-"] {
            let l = format!("Dec  2 00:20:01 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, relay=none, delay=1, delays=0/0/0/1, dsn=2.0.0, status={bad} (x)");
            assert_eq!(parse_line(l.as_bytes()), Err(Malformed::Delivery), "{l}");
        }
    }

    /// The sender's notice that could not be queued (`global/abounce.c`,
    /// `bounce.c`: "%s: status=deferred (%s failed)"): after a "bounce" or
    /// "verp" failure qmgr keeps the message, so an expiry announced before
    /// did not happen; a failed delay warning or trace changes nothing.
    /// The prefix is `util/msg_logger.c`'s "%b %d %H:%M:%S " (day zero-padded).
    #[test]
    fn failed_returns_to_the_sender() {
        for (what, want) in [
            ("bounce", Event::ReturnFailed),
            ("verp", Event::ReturnFailed),
            ("delay warning", Event::Other),
            ("trace", Event::Other),
        ] {
            let l = format!("Dec 02 01:00:00 h postfix/qmgr[2]: 1A2B3C4D5E6: status=deferred ({what} failed)");
            let p = parse_line(l.as_bytes()).unwrap();
            assert_eq!((p.queue_id, p.event), (Some(&b"1A2B3C4D5E6"[..]), want), "{l}");
        }
    }

    /// Queue ids at every length Postfix makes (`global/mail_queue.h`).
    #[test]
    fn queue_ids_up_to_the_longest_postfix_makes() {
        let ids = [
            // Short: "%05X" microseconds + "%lX" inode. 21 with a 64-bit inode.
            "83AF7FEDCBA9876543210",
            "83AF79842A5",
            // Long: base-52 seconds (6 digits until 2594) + 4 base-52
            // microseconds + 'z' + base-51 inode (12 digits for 64 bits).
            "4fLKq2BcDfz3Jk5mNpQrStV",
            "4fLKq2BcDfz3",
            // ... with a 64-bit time: 12 + 4 + 1 + 12.
            "9YYYYYYYYYYYBcDfz3Jk5mNpQrStV",
            // ... all lowercase (time and inode digits can be).
            "bcdfghjklmzznpqrstvwxybc",
            "bcdfghjklmznp",
        ];
        for id in ids {
            let l = format!("Dec  2 00:20:01 h postfix/smtp[2]: {id}: to=<x@y.z>, relay=y.z[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)");
            let p = parse_line(l.as_bytes()).unwrap();
            assert_eq!(p.queue_id, Some(id.as_bytes()), "{id}");
            assert!(matches!(p.event, Event::Delivery(Delivery { status: Status::Sent, .. })), "{id}");
        }
        assert_eq!(ids[0].len(), 21);
        assert_eq!(ids[4].len(), MAX_QUEUE_ID);
        // Not queue ids: too long, lowercase words (no 'z' after 10 time
        // digits, or nothing after it), NOQUEUE.
        for msg in [
            "9YYYYYYYYYYYBcDfz3Jk5mNpQrStVW: removed",
            "warning: x",
            "statistics: max connection rate 1/60s",
            "bcdfghjklz: removed",
            "bcdfghjklmz: removed",
            "NOQUEUE: reject: RCPT from x[1.2.3.4]: 554 5.7.1 denied",
        ] {
            let l = format!("Dec  2 00:20:01 h postfix/smtpd[2]: {msg}");
            assert_eq!(parse_line(l.as_bytes()).unwrap().queue_id, None, "{msg}");
        }
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            "Nov 23 06:56:55 h postfix/smtp[]: ABCDE12345: removed",
            "Nov 23 06:56:55 h postfix/smtp[12x]: ABCDE12345: removed",
            "Nov 23 06:56:55 h postfix/smtp[12] ABCDE12345: removed",
            "Nov 23 06:56:55 h postfix smtp[12]: ABCDE12345: removed",
            "Nov 23 06:56:55 h postfix/[12]: ABCDE12345: removed",
            "Nov 23 06:56:55  postfix/smtp[12]: ABCDE12345: removed",
        ] {
            assert_eq!(parse_line(bad.as_bytes()), Err(Malformed::Prefix), "{bad}");
        }
        assert_eq!(parse_line(b""), Err(Malformed::Prefix));
        assert_eq!(parse_line(b"garbage"), Err(Malformed::Prefix));
        assert_eq!(parse_line(b"Nov 23 06:56:55 host"), Err(Malformed::Prefix));
        assert_eq!(
            parse_line(b"Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, delay=abc, status=sent (x)"),
            Err(Malformed::Delivery)
        );
        assert_eq!(
            parse_line(b"Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, relay=a, status=weird (x)"),
            Err(Malformed::Delivery)
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_real_lines(cut in 0usize..200, junk in "[ -~]{0,20}") {
            let base = "Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<x@y.z>, orig_to=<q@r>, relay=y.z[1.2.3.4]:25, conn_use=2, delay=300, delays=0/0/0/300, dsn=4.4.2, status=deferred (conversation timed out)";
            let cut = cut.min(base.len());
            let s = format!("{}{}{}", &base[..cut], junk, &base[cut..]);
            let _ = parse_line(s.as_bytes());
        }
    }
}
