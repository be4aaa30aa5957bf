//! Response classifier: what a receiver's answer means for the fleet.
//!
//! Maps a delivery status, DSN code and response text to a
//! [`ResponseCategory`]. The phrases are the ones large providers and Postfix
//! itself use; order matters (a TLS failure that also times out is a TLS
//! failure). Pure; never allocates more than one lowercase copy of the text.

use memchr::memmem;
use sendfleet_render::contract::ResponseCategory;

use super::parse::Status;

const TLS: &[&str] =
    &["tls ", "tls:", "starttls", "ssl", "certificate", "handshake", "tls is required", "encryption required"];
const TIMEOUT: &[&str] = &["timed out", "timeout"];
const MAILBOX_FULL: &[&str] = &[
    "mailbox full",
    "mailbox is full",
    "over quota",
    "quota exceeded",
    "exceeded storage",
    "insufficient storage",
    "out of storage",
];
const UNKNOWN_USER: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "does not exist",
    "mailbox unavailable",
    "invalid recipient",
    "recipient unknown",
    "unknown recipient",
    "no mailbox",
    "address rejected: user",
    "unrouteable address",
    "not found",
];
const RATE_LIMIT: &[&str] = &[
    "rate limit",
    "ratelimit",
    "rate of",
    "too many",
    "try again later",
    "try later",
    "throttl",
    "exceeded",
    "deferred due to",
    "temporarily deferred",
    "slow down",
    "unusual rate",
    "too fast",
    "frequency",
];
const IP_BLOCK: &[&str] = &[
    "block",
    "blacklist",
    "denylist",
    "spamhaus",
    "spamcop",
    "barracuda",
    "reputation",
    "dnsbl",
    "rbl",
    "listed",
    "banned",
    "poor",
    "not allowed",
    "refused to talk",
    "access denied",
    "client host rejected",
];

/// Classify one recipient's result.
pub fn classify(status: Status, dsn: &[u8], response: &[u8]) -> ResponseCategory {
    if status == Status::Sent {
        return ResponseCategory::Accepted;
    }
    let text = response.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| memmem::find(&text, w.as_bytes()).is_some());
    // DSN subject/detail: x.2.2 mailbox full, x.1.1 bad mailbox, x.7.28/x.7.0 rate.
    let detail = dsn.get(1..).unwrap_or(b"");
    if has(TLS) || detail == b".7.10" || detail == b".7.5" {
        return ResponseCategory::TlsFailure;
    }
    if has(TIMEOUT) {
        return ResponseCategory::Timeout;
    }
    if detail == b".2.2" || has(MAILBOX_FULL) {
        return ResponseCategory::MailboxFull;
    }
    if detail == b".1.1" || detail == b".1.10" || has(UNKNOWN_USER) {
        return ResponseCategory::UnknownUser;
    }
    if detail == b".7.28" || has(RATE_LIMIT) || memmem::find(&text, b" 421").is_some() || text.starts_with(b"421") {
        return ResponseCategory::RateLimit;
    }
    if has(IP_BLOCK) || detail == b".7.606" {
        return ResponseCategory::IpBlock;
    }
    ResponseCategory::Other
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
        ];
        for (status, dsn, text, want) in cases {
            assert_eq!(classify(*status, dsn.as_bytes(), text.as_bytes()), *want, "{text}");
        }
    }
}
