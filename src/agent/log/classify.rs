//! Response classifier: what a receiver's answer means for the fleet.
//!
//! Maps a delivery status, DSN code and response text to a
//! [`ResponseCategory`]. The phrases are the ones large providers and Postfix
//! itself use; order matters (a TLS failure that also times out is a TLS
//! failure). Pure; never allocates more than one lowercase copy of the text.

use std::sync::OnceLock;

use memchr::memmem;
use sendfleet_render::contract::ResponseCategory;
use sendfleet_render::responses::ORDER;

use super::parse::Status;

/// Classify one recipient's result. The phrases and their order are
/// `sendfleet_render::responses`, shared with the rendered delivery status
/// filter.
pub fn classify(status: Status, dsn: &[u8], response: &[u8]) -> ResponseCategory {
    if status == Status::Sent {
        return ResponseCategory::Accepted;
    }
    let text = response.to_ascii_lowercase();
    // DSN subject/detail: x.2.2 mailbox full, x.1.1 bad mailbox, x.7.28 rate, ...
    let detail = dsn.get(1..).unwrap_or(b"");
    let (finders, reply_421) = finders();
    for ((category, evidence), phrases) in ORDER.iter().zip(finders) {
        let category = *category;
        let found = evidence.details.iter().any(|d| d.as_bytes() == detail)
            || phrases.iter().any(|f| f.find(&text).is_some())
            || (category == ResponseCategory::RateLimit
                && (reply_421.find(&text).is_some() || text.starts_with(b"421")));
        if found {
            return category;
        }
    }
    ResponseCategory::Other
}

/// The phrase searchers, built once: building a searcher costs more than
/// running it on one response, and deferral bursts classify every line.
fn finders() -> &'static (Vec<Vec<memmem::Finder<'static>>>, memmem::Finder<'static>) {
    static FINDERS: OnceLock<(Vec<Vec<memmem::Finder<'static>>>, memmem::Finder<'static>)> = OnceLock::new();
    FINDERS.get_or_init(|| {
        let per_category =
            ORDER.iter().map(|(_, e)| e.phrases.iter().map(|p| memmem::Finder::new(p.as_bytes())).collect()).collect();
        (per_category, memmem::Finder::new(b" 421"))
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
}
