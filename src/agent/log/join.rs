//! Per-queue-id join: turns parsed lines into per-recipient outcomes.
//!
//! Most outcomes are on one line (`to=<..>, status=sent|deferred|bounced`),
//! but expiry is logged once per *message* by qmgr (`from=<..>,
//! status=expired, returned to sender`, or `status=force-expired` after
//! `postsuper -e`, checked on Postfix 3.7): the
//! recipients it concerns are the ones still deferred for that queue id, so
//! the tracker remembers deferred recipients (as domain + keyed hash, never
//! the address) until the message is `removed`. The expiry counts when the
//! message is `removed`, not when qmgr announces it: if the notice to the
//! sender cannot be queued (`status=deferred (bounce failed)`, abounce.c)
//! qmgr keeps the message, tries its recipients again (they may still be
//! delivered) and announces the expiry again later. Memory is bounded: past
//! [`MAX_TRACKED`] queue ids the oldest half is forgotten (their expiries are
//! then counted under the domain `unknown`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sendfleet_render::contract::ResponseCategory;

use super::classify::classify;
use super::parse::{domain_of, Delivery, Event, Line, Status};
use crate::agent::redact::Fnv;

/// Queue ids remembered at most (a deferred queue of this size is already
/// an incident). Just under what a table of 2^19 buckets holds before it
/// doubles (7/8 of them), so the table never grows to 2^20 buckets for the
/// last tenth of its entries (the agent's memory at the bound:
/// docs/AGENT.md).
pub const MAX_TRACKED: usize = 458_000;

/// The domain recorded when the recipients of an expired message are unknown.
pub const UNKNOWN_DOMAIN: &str = "unknown";

/// One recipient's outcome (borrowing from the log line where it can: this
/// is the per-line hot path).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<'a> {
    /// Lowercase recipient domain.
    pub domain: Cow<'a, str>,
    pub status: Status,
    pub category: ResponseCategory,
    pub delays: Option<[f32; 4]>,
    /// The host Postfix connected to (`relay=HOST[addr]:port`): for mail
    /// routed by MX, the MX host. A host name, never an address of a person.
    pub relay_host: Option<&'a str>,
    /// Postfix `delay=`: seconds from arrival to this outcome.
    pub delay: Option<f32>,
    /// Relay endpoint `addr` and port, if the line named one.
    pub relay_addr: Option<&'a str>,
    pub relay_port: Option<u16>,
    /// Delivery agent (syslog service name) that produced it.
    pub service: &'a str,
}

#[derive(Default)]
struct Pending {
    /// (domain, keyed hash of the address) of recipients still deferred.
    rcpts: Vec<(Box<str>, u64)>,
    seq: u64,
    /// qmgr announced the expiry and no failed return undid it yet.
    expired: bool,
}

/// Keyed by a 64-bit hash of the queue id ([`qid_key`]), not the id
/// itself: no allocation per message. Queue ids are Postfix's own (not
/// chosen by a sender) and the map is bounded, so a fast non-keyed hash is
/// enough; two of at most [`MAX_TRACKED`] ids sharing a key (odds about
/// 1 in 10^8 for a full map) would only mix their deferred recipients'
/// domains in an expiry count. `removed` looks one up for every message.
type QidMap = HashMap<u64, Pending, BuildHasherDefault<Fnv>>;

/// The map key of a queue id: FNV-1a over its bytes (the redactor's [`Fnv`]).
fn qid_key(qid: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(qid);
    h.finish()
}

/// The join state.
#[derive(Default)]
pub struct Tracker {
    by_qid: QidMap,
    seq: u64,
    /// Messages that entered the active queue for the first time (inflow).
    pub received: u64,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tracked(&self) -> usize {
        self.by_qid.len()
    }

    /// Feed one parsed line; `rcpt_key` maps an address to a keyed hash.
    pub fn feed<'l>(&mut self, line: &Line<'l>, rcpt_key: impl Fn(&[u8]) -> u64, mut emit: impl FnMut(Outcome<'l>)) {
        let Some(qid) = line.queue_id else {
            return;
        };
        match &line.event {
            Event::Delivery(d) => {
                let domain = domain_cow(d.to);
                if d.status == Status::Deferred {
                    let key = rcpt_key(d.to);
                    let p = self.entry(qid);
                    if !p.rcpts.iter().any(|(_, k)| *k == key) {
                        p.rcpts.push((domain.as_ref().into(), key));
                    }
                } else if self.by_qid.is_empty() {
                    // Nothing deferred anywhere: the common case.
                } else if let Some(p) = self.by_qid.get_mut(&qid_key(qid)) {
                    let key = rcpt_key(d.to);
                    p.rcpts.retain(|(_, k)| *k != key);
                }
                emit(outcome_of(d, domain, line.service, line.program));
            }
            Event::Expired => self.entry(qid).expired = true,
            Event::ReturnFailed => {
                if let Some(p) = self.by_qid.get_mut(&qid_key(qid)) {
                    p.expired = false;
                }
            }
            Event::Removed if !self.by_qid.is_empty() => {
                let Some(p) = self.by_qid.remove(&qid_key(qid)) else {
                    return;
                };
                if !p.expired {
                    return;
                }
                let service = std::str::from_utf8(line.service).unwrap_or("?");
                let mut emit_one = |domain: String| {
                    emit(Outcome {
                        domain: Cow::Owned(domain),
                        status: Status::Expired,
                        category: ResponseCategory::Other,
                        delays: None,
                        relay_host: None,
                        delay: None,
                        relay_addr: None,
                        relay_port: None,
                        service,
                    })
                };
                if p.rcpts.is_empty() {
                    emit_one(UNKNOWN_DOMAIN.to_string());
                }
                for (domain, _) in p.rcpts {
                    emit_one(domain.into());
                }
            }
            Event::Received | Event::PickedUp => {
                self.received += 1;
            }
            _ => {}
        }
    }

    fn entry(&mut self, qid: &[u8]) -> &mut Pending {
        let key = qid_key(qid);
        if self.by_qid.len() >= MAX_TRACKED && !self.by_qid.contains_key(&key) {
            // Forget the oldest half (by first-deferral sequence).
            let mut seqs: Vec<u64> = self.by_qid.values().map(|p| p.seq).collect();
            let mid = seqs.len() / 2;
            let (_, cut, _) = seqs.select_nth_unstable(mid);
            let cut = *cut;
            self.by_qid.retain(|_, p| p.seq > cut);
        }
        self.seq += 1;
        let seq = self.seq;
        self.by_qid.entry(key).or_insert_with(|| Pending { rcpts: Vec::new(), seq, expired: false })
    }
}

fn domain_cow(addr: &[u8]) -> Cow<'_, str> {
    let Some(d) = domain_of(addr) else {
        return Cow::Borrowed(UNKNOWN_DOMAIN);
    };
    match std::str::from_utf8(d) {
        Ok(s) if !s.ends_with('.') && !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
        _ => Cow::Owned(String::from_utf8_lossy(d).trim_end_matches('.').to_ascii_lowercase()),
    }
}

fn outcome_of<'a>(d: &Delivery<'a>, domain: Cow<'a, str>, service: &'a [u8], program: &[u8]) -> Outcome<'a> {
    let (relay_addr, relay_port) = match super::parse::relay_endpoint(d.relay) {
        Some((a, p)) => (std::str::from_utf8(a).ok(), p),
        None => (None, None),
    };
    // Our own deferrals (the `retry:` transport, `error`) say why *we* held
    // the mail; they are not the receiver's answer.
    let category = if program == b"error" { ResponseCategory::Other } else { classify(d.status, d.dsn, d.response) };
    Outcome {
        domain,
        status: d.status,
        category,
        delays: Some(d.delays),
        relay_host: super::parse::relay_host(d.relay).and_then(|h| std::str::from_utf8(h).ok()),
        delay: Some(d.delay),
        relay_addr,
        relay_port,
        service: std::str::from_utf8(service).unwrap_or("?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::log::parse::parse_line;

    /// The expiry sequence captured from Postfix 3.7.11 (addresses changed).
    const EXPIRY: &str = "\
Nov 23 07:02:23 h postfix/smtpd[17770]: 7CBE0984B4D: client=unknown[127.0.1.5]
Nov 23 07:02:23 h postfix/qmgr[17708]: 7CBE0984B4D: from=<a@sender.test>, size=361, nrcpt=2 (queue active)
Nov 23 07:02:23 h postfix/smtp[17774]: 7CBE0984B4D: to=<soft@dest.test>, relay=127.0.2.1[127.0.2.1]:25, delay=0.09, delays=0.02/0.01/0.02/0.04, dsn=4.2.0, status=deferred (host 127.0.2.1[127.0.2.1] said: 450 4.2.0 <soft@dest.test>: Recipient address rejected: try later (in reply to RCPT TO command))
Nov 23 07:02:23 h postfix/smtp[17774]: 7CBE0984B4D: to=<x@Other.Test>, relay=127.0.2.1[127.0.2.1]:25, delay=0.09, delays=0.02/0.01/0.02/0.04, dsn=4.2.0, status=deferred (host 127.0.2.1[127.0.2.1] said: 421 4.7.0 too many connections)
Nov 23 07:02:24 h postfix/qmgr[17708]: 7CBE0984B4D: from=<a@sender.test>, size=361, nrcpt=2 (queue active)
Nov 23 07:02:24 h postfix/smtp[17780]: 7CBE0984B4D: to=<soft@dest.test>, relay=127.0.2.1[127.0.2.1]:25, delay=1.1, delays=1.1/0/0/0, dsn=4.2.0, status=deferred (host 127.0.2.1[127.0.2.1] said: 450 4.2.0 <soft@dest.test>: Recipient address rejected: try later (in reply to RCPT TO command))
Nov 23 07:02:24 h postfix/smtp[17780]: 7CBE0984B4D: to=<x@other.test>, relay=127.0.2.1[127.0.2.1]:25, delay=1.1, delays=1.1/0/0/0, dsn=2.0.0, status=sent (250 ok)
Nov 23 07:02:27 h postfix/qmgr[17708]: 7CBE0984B4D: from=<a@sender.test>, status=expired, returned to sender
Nov 23 07:02:27 h postfix/bounce[17784]: 7CBE0984B4D: sender non-delivery notification: 9DAC1984018
Nov 23 07:02:27 h postfix/qmgr[17708]: 7CBE0984B4D: removed
Nov 23 07:02:27 h postfix/qmgr[17708]: ABCDEF12345: from=<a@sender.test>, status=expired, returned to sender
Nov 23 07:02:27 h postfix/qmgr[17708]: ABCDEF12345: removed
";

    /// An expiry whose notice to the sender could not be queued
    /// (`global/abounce.c`: "%s: status=deferred (%s failed)", the bounce
    /// service down or timing out): qmgr keeps the message and tries its
    /// recipients again. 1A2B3C4D5E6: the retry delivers one recipient and
    /// the other expires again, counted once; 6E5D4C3B2A1 (VERP): the retry
    /// delivers it, no expiry at all.
    const EXPIRY_RETURN_FAILED: &str = "\
Dec 02 01:00:00 h postfix/smtp[1]: 1A2B3C4D5E6: to=<a@dest.test>, relay=dest.test[203.0.113.21]:25, delay=9, delays=0/0/0/9, dsn=4.2.0, status=deferred (host dest.test[203.0.113.21] said: 450 4.2.0 try later (in reply to RCPT TO command))
Dec 02 01:00:00 h postfix/smtp[1]: 1A2B3C4D5E6: to=<b@other.test>, relay=other.test[203.0.113.22]:25, delay=9, delays=0/0/0/9, dsn=4.2.0, status=deferred (host other.test[203.0.113.22] said: 450 4.2.0 try later (in reply to RCPT TO command))
Dec 02 01:00:00 h postfix/qmgr[2]: 1A2B3C4D5E6: from=<s@sender.test>, status=expired, returned to sender
Dec 02 01:00:00 h postfix/qmgr[2]: 1A2B3C4D5E6: status=deferred (bounce failed)
Dec 02 01:00:00 h postfix/smtp[1]: 6E5D4C3B2A1: to=<c@dest.test>, relay=dest.test[203.0.113.21]:25, delay=9, delays=0/0/0/9, dsn=4.2.0, status=deferred (host dest.test[203.0.113.21] said: 450 4.2.0 try later (in reply to RCPT TO command))
Dec 02 01:00:00 h postfix/qmgr[2]: 6E5D4C3B2A1: from=<s@sender.test>, status=force-expired, returned to sender
Dec 02 01:00:00 h postfix/qmgr[2]: 6E5D4C3B2A1: status=deferred (verp failed)
Dec 02 01:05:00 h postfix/qmgr[2]: 1A2B3C4D5E6: from=<s@sender.test>, size=390, nrcpt=2 (queue active)
Dec 02 01:05:00 h postfix/smtp[1]: 1A2B3C4D5E6: to=<a@dest.test>, relay=dest.test[203.0.113.21]:25, delay=309, delays=300/0/0/9, dsn=4.2.0, status=deferred (host dest.test[203.0.113.21] said: 450 4.2.0 try later (in reply to RCPT TO command))
Dec 02 01:05:00 h postfix/smtp[1]: 1A2B3C4D5E6: to=<b@other.test>, relay=other.test[203.0.113.22]:25, delay=309, delays=300/0/0/9, dsn=2.0.0, status=sent (250 ok)
Dec 02 01:05:00 h postfix/qmgr[2]: 1A2B3C4D5E6: from=<s@sender.test>, status=expired, returned to sender
Dec 02 01:05:00 h postfix/bounce[3]: 1A2B3C4D5E6: sender non-delivery notification: 9F8E7D6C5B4
Dec 02 01:05:00 h postfix/qmgr[2]: 1A2B3C4D5E6: removed
Dec 02 01:05:01 h postfix/smtp[1]: 6E5D4C3B2A1: to=<c@dest.test>, relay=dest.test[203.0.113.21]:25, delay=309, delays=300/0/0/9, dsn=2.0.0, status=sent (250 ok)
Dec 02 01:05:01 h postfix/qmgr[2]: 6E5D4C3B2A1: removed
";

    /// `postsuper -e ALL` then `postqueue -f`, captured from Postfix 3.7.11
    /// in `tests/agent_delivery.rs` (addresses changed; the queue id made 21
    /// characters long, as with a 64-bit inode number). Then a message never
    /// tried (a long queue id): qmgr/qmgr_message.c sends its recipients to
    /// the retry service (error(8)) "administratively expired" first, as
    /// Postfix does for held mail in `force_expired_held_mail_counts_as_expired`.
    const FORCE_EXPIRY: &str = "\
Dec 02 00:26:06 h postfix/smtp[12041]: 2CFDEFEDCBA9876543210: to=<soft@dest.test>, relay=dest.test[203.0.113.21]:25, delay=0.15, delays=0.02/0.1/0/0.03, dsn=4.7.0, status=deferred (host dest.test[203.0.113.21] said: 450 4.7.0 <soft@dest.test>: Recipient address rejected: try again later (in reply to RCPT TO command))
Dec 02 00:26:06 h postfix/postsuper[12047]: Force-expired: 3 messages
Dec 02 00:26:06 h postfix/qmgr[12030]: 2CFDEFEDCBA9876543210: from=<a@client.test>, size=390, nrcpt=1 (queue active)
Dec 02 00:26:06 h postfix/qmgr[12030]: 2CFDEFEDCBA9876543210: from=<a@client.test>, status=force-expired, returned to sender
Dec 02 00:26:06 h postfix/bounce[12045]: 2CFDEFEDCBA9876543210: sender non-delivery notification: 6B2CD986681
Dec 02 00:26:06 h postfix/qmgr[12030]: 2CFDEFEDCBA9876543210: removed
Dec 02 00:26:07 h postfix/qmgr[12030]: 4fLKq2BcDfz3Jk5mNpQrStV: from=<a@client.test>, size=390, nrcpt=1 (queue active)
Dec 02 00:26:07 h postfix/error[12050]: 4fLKq2BcDfz3Jk5mNpQrStV: to=<held@hold.test>, relay=none, delay=9, delays=9/0/0/0, dsn=4.7.0, status=deferred (message is administratively expired)
Dec 02 00:26:07 h postfix/qmgr[12030]: 4fLKq2BcDfz3Jk5mNpQrStV: from=<a@client.test>, status=force-expired, returned to sender
Dec 02 00:26:07 h postfix/qmgr[12030]: 4fLKq2BcDfz3Jk5mNpQrStV: removed
";

    /// Feed a captured log through a fresh tracker: the tracker and the outcomes.
    fn feed_all(log: &'static str) -> (Tracker, Vec<Outcome<'static>>) {
        let mut t = Tracker::new();
        let mut out = Vec::new();
        for l in log.lines() {
            let p = parse_line(l.as_bytes()).unwrap();
            t.feed(&p, |a| a.len() as u64 * 7 + a[0] as u64, |o| out.push(o));
        }
        (t, out)
    }

    /// (domain, status, category) of each outcome.
    fn summary(out: &[Outcome<'_>]) -> Vec<(String, &'static str, ResponseCategory)> {
        out.iter().map(|o| (o.domain.to_string(), o.status.as_str(), o.category)).collect()
    }

    #[test]
    fn force_expiry_counts_as_expiry_of_the_deferred_recipients() {
        let (t, out) = feed_all(FORCE_EXPIRY);
        assert_eq!(
            summary(&out),
            vec![
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("dest.test".into(), "expired", ResponseCategory::Other),
                ("hold.test".into(), "deferred", ResponseCategory::Other),
                ("hold.test".into(), "expired", ResponseCategory::Other),
            ]
        );
        assert_eq!(t.received, 0);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn an_expiry_whose_return_failed_counts_only_when_it_finally_happens() {
        let (t, out) = feed_all(EXPIRY_RETURN_FAILED);
        assert_eq!(
            summary(&out),
            vec![
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("other.test".into(), "deferred", ResponseCategory::RateLimit),
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("other.test".into(), "sent", ResponseCategory::Accepted),
                ("dest.test".into(), "expired", ResponseCategory::Other),
                ("dest.test".into(), "sent", ResponseCategory::Accepted),
            ]
        );
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn expiry_is_attributed_to_the_still_deferred_recipients() {
        let (t, out) = feed_all(EXPIRY);
        assert_eq!(
            summary(&out),
            vec![
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("other.test".into(), "deferred", ResponseCategory::RateLimit),
                ("dest.test".into(), "deferred", ResponseCategory::RateLimit),
                ("other.test".into(), "sent", ResponseCategory::Accepted),
                ("dest.test".into(), "expired", ResponseCategory::Other),
                ("unknown".into(), "expired", ResponseCategory::Other),
            ]
        );
        assert_eq!(t.received, 1);
        assert_eq!(t.tracked(), 0);
        assert_eq!(out[0].relay_port, Some(25));
    }
}
