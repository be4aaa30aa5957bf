//! What receivers' answers say: the phrases and enhanced status details that
//! sort a response into a [`crate::contract::ResponseCategory`].
//!
//! One list, two readers: the agent's classifier reads the mail log with it,
//! and the rendered delivery status filter (`postfix::dsn_filter`) turns the
//! 5xx answers it calls IP/reputation blocks into 4xx so Postfix retries them
//! instead of bouncing. If the two disagreed, a block could bounce mail
//! before the agent excluded the IP, or an unknown user could be retried
//! for days; so both are generated from these constants and nothing else.
//!
//! Categories are tested in the order of [`ORDER`]: the first that matches
//! wins (a TLS failure that also times out is a TLS failure). Phrases are
//! lowercase and matched as substrings of the lowercased response text.
//! Data only.

/// One category's evidence: phrases in the text, or an enhanced status
/// detail (the part after the class digit, e.g. `.7.10`).
#[derive(Clone, Copy, Debug)]
pub struct Evidence {
    pub phrases: &'static [&'static str],
    pub details: &'static [&'static str],
}

pub const TLS: Evidence = Evidence {
    phrases: &["tls ", "tls:", "starttls", "ssl", "certificate", "handshake", "tls is required", "encryption required"],
    details: &[".7.10", ".7.5"],
};
pub const TIMEOUT: Evidence = Evidence { phrases: &["timed out", "timeout"], details: &[] };
pub const MAILBOX_FULL: Evidence = Evidence {
    phrases: &[
        "mailbox full",
        "mailbox is full",
        "over quota",
        "quota exceeded",
        "exceeded storage",
        "insufficient storage",
        "out of storage",
    ],
    details: &[".2.2"],
};
pub const UNKNOWN_USER: Evidence = Evidence {
    phrases: &[
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
    ],
    details: &[".1.1", ".1.10"],
};
/// Also: a reply code 421 anywhere in the text (` 421` or at the start).
pub const RATE_LIMIT: Evidence = Evidence {
    phrases: &[
        "rate limit",
        "ratelimit",
        "rate of",
        "too many",
        "too much mail",
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
    ],
    details: &[".7.28"],
};
pub const IP_BLOCK: Evidence = Evidence {
    phrases: &[
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
    ],
    details: &[".7.606"],
};

/// The categories with evidence, in the order they are tested. A response
/// matching none of them is `Other` (or `Accepted` when it was sent).
pub const ORDER: [(crate::contract::ResponseCategory, Evidence); 6] = {
    use crate::contract::ResponseCategory::*;
    [
        (TlsFailure, TLS),
        (Timeout, TIMEOUT),
        (MailboxFull, MAILBOX_FULL),
        (UnknownUser, UNKNOWN_USER),
        (RateLimit, RATE_LIMIT),
        (IpBlock, IP_BLOCK),
    ]
};
