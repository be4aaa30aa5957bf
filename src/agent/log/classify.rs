//! Response classifier: what a receiver's answer means for the fleet.
//!
//! Maps a delivery status, DSN code and response text to a
//! [`ResponseCategory`]. The phrases are the ones large providers and Postfix
//! itself use; order matters (a TLS failure that also times out is a TLS
//! failure). Pure and allocation-free: every phrase is found in one
//! ASCII-case-insensitive pass over the text (Aho-Corasick), then the
//! categories are tried in order — a deferral burst classifies every line,
//! and a search per phrase (about 60) was the log pipeline's largest cost
//! after parsing.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use sendfleet_render::contract::ResponseCategory;
use sendfleet_render::responses::ORDER;

use super::parse::Status;

/// Bit of the `" 421"` reply code in the set of found phrases (the
/// categories take bits 0..ORDER.len()).
const REPLY_421: u32 = 1 << 31;

/// Classify one recipient's result. The phrases and their order are
/// `sendfleet_render::responses`, shared with the rendered delivery status
/// filter.
pub fn classify(status: Status, dsn: &[u8], response: &[u8]) -> ResponseCategory {
    if status == Status::Sent {
        return ResponseCategory::Accepted;
    }
    // DSN subject/detail: x.2.2 mailbox full, x.1.1 bad mailbox, x.7.28 rate, ...
    let detail = dsn.get(1..).unwrap_or(b"");
    let (matcher, bit_of) = matcher();
    // Which categories have a phrase in the text (one bit each).
    let found = matcher.find_overlapping_iter(response).fold(0u32, |f, m| f | bit_of[m.pattern().as_usize()]);
    for (i, (category, evidence)) in ORDER.iter().enumerate() {
        let category = *category;
        let hit = evidence.details.iter().any(|d| d.as_bytes() == detail)
            || found & (1 << i) != 0
            || (category == ResponseCategory::RateLimit && (found & REPLY_421 != 0 || response.starts_with(b"421")));
        if hit {
            return category;
        }
    }
    ResponseCategory::Other
}

/// Every phrase of every category and `" 421"`, in one automaton built once,
/// with the category bit of each pattern.
fn matcher() -> &'static (AhoCorasick, Vec<u32>) {
    static MATCHER: OnceLock<(AhoCorasick, Vec<u32>)> = OnceLock::new();
    MATCHER.get_or_init(|| {
        let mut patterns: Vec<&str> = Vec::new();
        let mut bits = Vec::new();
        for (i, (_, evidence)) in ORDER.iter().enumerate() {
            patterns.extend(evidence.phrases);
            bits.extend(evidence.phrases.iter().map(|_| 1u32 << i));
        }
        patterns.push(" 421");
        bits.push(REPLY_421);
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("the response phrases build an automaton");
        (ac, bits)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseCategory::*;

    #[test]
    fn provider_answers() {
        let cases: &[(Status, &str, &str, ResponseCategory)] = &[
            (Status::Sent, "2.0.0", "250 2.0.0 Ok", Accepted),
            (Status::Deferred, "4.7.28", "host mx[1.2.3.4] said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail", RateLimit),
            (Status::Deferred, "4.7.0", "host mx[1.2.3.4] said: 421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume", RateLimit),
            (Status::Deferred, "4.0.0", "host mx[1.2.3.4] said: 450 4.0.0 too many connections from your IP (in reply to RCPT TO command)", RateLimit),
            (Status::Bounced, "5.7.1", "host mx[1.2.3.4] said: 554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org", IpBlock),
            (Status::Bounced, "5.7.1", "host mx[1.2.3.4] said: 550 5.7.1 Mail from IP 1.2.3.4 refused due to poor reputation", IpBlock),
            (Status::Bounced, "5.1.1", "host mx[1.2.3.4] said: 550 5.1.1 <h-1@x>: Recipient address rejected: User unknown in virtual mailbox table", UnknownUser),
            (Status::Bounced, "5.5.0", "host mx said: 550 5.5.0 Requested action not taken: mailbox unavailable", UnknownUser),
            (Status::Deferred, "4.2.2", "host mx said: 452 4.2.2 The email account that you tried to reach is over quota", MailboxFull),
            (Status::Deferred, "4.4.2", "conversation with mx[1.2.3.4] timed out while receiving the initial server greeting", Timeout),
            (Status::Deferred, "4.7.5", "Cannot start TLS: handshake failure", TlsFailure),
            (Status::Deferred, "4.4.1", "delivery temporarily suspended: conversation with mx[1.2.3.4] timed out while sending RCPT TO", Timeout),
            (Status::Deferred, "4.4.1", "connect to mx[1.2.3.4]:25: Connection refused", Other),
            (Status::Expired, "4.4.7", "", Other),
            // Postfix's own smtpd (anvil limits).
            (Status::Deferred, "4.7.1", "host mx said: 450 4.7.1 Error: too much mail from 127.0.1.1 (in reply to MAIL FROM command)", RateLimit),
            (Status::Deferred, "4.7.0", "host mx said: 421 4.7.0 mx Error: too many connections from 127.0.1.1", RateLimit),
        ];
        for (status, dsn, text, want) in cases {
            assert_eq!(classify(*status, dsn.as_bytes(), text.as_bytes()), *want, "{text}");
        }
    }

    /// The definition the automaton must agree with: lowercase the text,
    /// try the categories in order, a detail or any phrase found decides.
    fn by_definition(status: Status, dsn: &[u8], response: &[u8]) -> ResponseCategory {
        if status == Status::Sent {
            return Accepted;
        }
        let text = String::from_utf8_lossy(response).to_ascii_lowercase();
        let detail = dsn.get(1..).unwrap_or(b"");
        for (category, e) in ORDER {
            if e.details.iter().any(|d| d.as_bytes() == detail)
                || e.phrases.iter().any(|p| text.contains(p))
                || (category == RateLimit && (text.contains(" 421") || text.starts_with("421")))
            {
                return category;
            }
        }
        Other
    }

    proptest::proptest! {
        /// Texts built from every category's phrases (in any case, in any
        /// order, amid noise) and DSN details classify as the definition says.
        #[test]
        fn one_pass_agrees_with_the_definition(
            picks in proptest::collection::vec((0usize..6, 0usize..20, proptest::bool::ANY), 0..4),
            noise in "[ -~]{0,30}",
            detail in proptest::sample::select(vec!["2.2", "1.1", "7.28", "7.5", "7.606", "0.0", "4.2"]),
        ) {
            let mut text = noise.clone();
            for (cat, phrase, upper) in &picks {
                let phrases = ORDER[*cat].1.phrases;
                let p = phrases[phrase % phrases.len()];
                text.push_str(&if *upper { p.to_ascii_uppercase() } else { p.to_string() });
                text.push_str(&noise);
            }
            for status in [Status::Deferred, Status::Bounced] {
                for dsn in [format!("4.{detail}"), format!("5.{detail}")] {
                    proptest::prop_assert_eq!(
                        classify(status, dsn.as_bytes(), text.as_bytes()),
                        by_definition(status, dsn.as_bytes(), text.as_bytes()),
                        "{}", text
                    );
                }
            }
        }
    }
}
