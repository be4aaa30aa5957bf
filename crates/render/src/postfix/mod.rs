//! Postfix configuration of one instance: `main.cf`, `master.cf` and the
//! lookup tables, as text.
//!
//! The file writers ([`main_cf`], [`master_cf`], [`maps`]) are the last line
//! of defence: each refuses, with [`UnsafeValue`] naming the parameter, any
//! value that could end a line, start a comment, split a token or add an
//! override — even though [`crate::validate`] has already checked every
//! user value. Nothing outside these writers produces Postfix syntax.

pub mod dsn_filter;
pub mod main_cf;
pub mod maps;
pub mod master_cf;

use std::fmt;

/// File names inside an instance's configuration directory.
pub const MAIN_CF: &str = "main.cf";
pub const MASTER_CF: &str = "master.cf";
pub const TRANSPORT_MAP: &str = "transport";
pub const TLS_POLICY_MAP: &str = "tls_policy";
pub const HEADER_CHECKS: &str = "header_checks";
/// `regexp:` delivery status filter of transports with automatic exclusion.
pub const DSN_FILTER: &str = "dsn_filter";
/// Tables that `postmap` must build (`hash:` type) after installing.
pub const HASH_MAPS: &[&str] = &[TRANSPORT_MAP, TLS_POLICY_MAP];

/// A value that would break or extend a Postfix file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct UnsafeValue {
    /// Where: a main.cf parameter, a master.cf service, or a table key.
    pub place: String,
    pub value: String,
}

impl fmt::Display for UnsafeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing unsafe value {:?} for {}", self.value, self.place)
    }
}

/// Printable ASCII, no whitespace, none of `#`, `{`, `}`, `"`, `\`, and not
/// starting with `-` (a master.cf option). The set every user-derived token
/// must stay inside.
pub fn is_safe_token(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('-') && s.bytes().all(|b| b.is_ascii_graphic() && !b"#{}\"\\".contains(&b))
}

/// A value on one line: printable ASCII or spaces, no `#`, no line breaks.
pub fn is_safe_line(s: &str) -> bool {
    s.bytes().all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'#') && !s.ends_with(' ')
}

/// `header` as `#` comment lines: the first lines of every rendered file.
pub fn comment_block(header: &str) -> String {
    header.lines().map(|l| format!("# {l}\n")).collect()
}
