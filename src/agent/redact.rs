//! Keyed hashing of recipient addresses: the only form in which an address
//! leaves the agent.
//!
//! `SipHash-2-4-128(k, lowercase(address))`, first 8 bytes in hex, kept with
//! the domain (`h-0123456789abcdef@example.com`) so per-domain analysis still
//! works and the same address correlates across lines and instances sharing
//! the key, while nobody without the key can confirm a guessed address. `k`
//! is 128 bits derived with SHA-256 from the key file (a mounted Secret).
//!
//! Why SipHash and not HMAC-SHA256: both are keyed pseudo-random functions,
//! which is all a pseudonym needs; SipHash was designed for exactly this
//! (short inputs, secret 128-bit key) and costs a fraction of HMAC's two
//! SHA-256 compressions per token — it was the largest single cost of the
//! log pipeline, which hashes every message-id and recipient it re-emits.
//!
//! This module must never log, store or return an address in plaintext.

use memchr::memchr;
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;
use thiserror::Error;

/// Hex digits of the hash kept (64 bits: collisions are irrelevant at the
/// scale of one pool's recipients per day, and shorter lines stay readable).
const HASH_HEX: usize = 16;
/// Marker so a hashed local part is recognisable (and never re-hashed as new PII).
const PREFIX: &[u8] = b"h-";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("reading hash key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("hash key file {path} holds {len} bytes; at least 16 are required")]
    TooShort { path: String, len: usize },
}

/// The keyed hasher.
#[derive(Clone)]
pub struct Redactor {
    /// SipHash key halves, derived from the key file.
    k0: u64,
    k1: u64,
}

impl Redactor {
    /// Key bytes as given (trailing newline stripped by [`Redactor::from_file`]).
    pub fn new(key: &[u8]) -> Self {
        // Any key length in, 128 bits out; the label keeps this use of the
        // key apart from any other.
        let d = Sha256::new().chain_update(b"sendfleet recipient pseudonym v2\0").chain_update(key).finalize();
        let k0 = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
        Redactor { k0, k1 }
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
        let key = raw.strip_suffix(b"\n").unwrap_or(&raw);
        if key.len() < 16 {
            return Err(KeyError::TooShort { path: path.display().to_string(), len: key.len() });
        }
        Ok(Self::new(key))
    }

    /// Hash of a whole address, as `h-<16 hex>` (the local part's replacement).
    pub fn hash_local(&self, address: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&self.hex(address));
    }

    fn hex(&self, address: &[u8]) -> [u8; HASH_HEX] {
        let mut mac = SipHasher24::new_with_keys(self.k0, self.k1);
        let mut lower = [0u8; 64];
        for chunk in address.chunks(64) {
            let l = &mut lower[..chunk.len()];
            l.copy_from_slice(chunk);
            l.make_ascii_lowercase();
            mac.write(l);
        }
        let digest = mac.finish128().as_bytes();
        let mut hex = [0u8; HASH_HEX];
        for (i, b) in digest[..HASH_HEX / 2].iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        hex
    }

    /// `h-<hash>@domain` for an address (domain lowercased).
    pub fn redact_address(&self, address: &[u8]) -> String {
        let mut out = Vec::with_capacity(HASH_HEX + 2 + address.len());
        self.hash_local(address, &mut out);
        if let Some(at) = address.iter().rposition(|&b| b == b'@') {
            out.push(b'@');
            out.extend(address[at + 1..].iter().map(u8::to_ascii_lowercase));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Copy `line` to `out` with every `local@domain` token replaced by
    /// `h-<hash>@domain`. Tokens are delimited by whitespace and the
    /// punctuation Postfix puts around addresses (`<>()[],;:"='`).
    pub fn redact_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        let mut search = 0;
        while let Some(rel) = memchr(b'@', &line[search..]) {
            let at = search + rel;
            let start = line[..at].iter().rposition(|&b| is_delim(b)).map_or(0, |i| i + 1);
            let end = line[at + 1..].iter().position(|&b| is_delim(b) || b == b'@').map_or(line.len(), |i| at + 1 + i);
            search = end.max(at + 1);
            let local = &line[start..at];
            if local.is_empty() || start < copied || local.starts_with(PREFIX) && local.len() == PREFIX.len() + HASH_HEX
            {
                continue;
            }
            out.extend_from_slice(&line[copied..start]);
            // No cache of hashes: SipHash of a short token costs about what
            // a cache lookup would (measured with `make bench-agent`).
            self.hash_local(&line[start..end], out);
            out.push(b'@');
            out.extend_from_slice(&line[at + 1..end]);
            copied = end;
        }
        out.extend_from_slice(&line[copied..]);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// FNV-1a for in-memory maps keyed by short tokens (the queue-id join):
/// speed matters there, and the keys are Postfix's own, not an attacker's.
#[derive(Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn is_delim(b: u8) -> bool {
    DELIM[usize::from(b)]
}

/// Whitespace and the punctuation around addresses: a table, because the
/// token scan around every `@` in the log asks it once per byte.
const DELIM: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_whitespace();
        b += 1;
    }
    let punct = b"<>()[],;:\"='";
    let mut i = 0;
    while i < punct.len() {
        t[punct[i] as usize] = true;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r() -> Redactor {
        Redactor::new(b"0123456789abcdef0123")
    }

    fn redact(s: &str) -> String {
        let mut out = Vec::new();
        r().redact_line(s.as_bytes(), &mut out);
        let mut again = Vec::new();
        let mut cached = r();
        cached.redact_line(s.as_bytes(), &mut Vec::new());
        cached.redact_line(s.as_bytes(), &mut again);
        assert_eq!(again, out, "the same line redacts the same way every time");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hashes_are_keyed_stable_and_case_insensitive() {
        let a = r().redact_address(b"Bob@Example.COM");
        assert_eq!(a, r().redact_address(b"bob@example.com"));
        assert!(a.starts_with("h-") && a.ends_with("@example.com") && a.len() == 2 + 16 + 12, "{a}");
        assert_ne!(a, Redactor::new(b"another key, 16+ bytes").redact_address(b"bob@example.com"));
    }

    #[test]
    fn every_address_in_a_line_is_replaced() {
        let line = "Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<bob@dest.test>, orig_to=<alice.smith+tag@corp.example>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host x said: 550 5.1.1 <bob@dest.test>: Recipient address rejected; from=<carol@s.example> to=<bob@dest.test>)";
        let out = redact(line);
        for secret in ["bob@", "alice.smith", "carol@"] {
            assert!(!out.contains(secret), "{out}");
        }
        let h = r().redact_address(b"bob@dest.test");
        assert_eq!(out.matches(h.as_str()).count(), 3, "{out}");
        assert!(out.contains("relay=x[1.2.3.4]:25, delay=1"), "{out}");
        // Idempotent: a redacted line passes unchanged.
        assert_eq!(redact(&out), out);
        // Null sender and lines without addresses are untouched.
        assert_eq!(redact("from=<>, size=1"), "from=<>, size=1");
        assert_eq!(redact("a @ b"), "a @ b");
    }

    proptest! {
        #[test]
        fn no_local_part_survives(local in "[a-z0-9._+-]{3,20}", domain in "[a-z]{2,10}\\.[a-z]{2,5}", pre in "[ -~]{0,30}", post in "[ -~]{0,30}") {
            let line = format!("{pre} <{local}@{domain}> {post}");
            let out = redact(&line);
            let addr = format!("{local}@{domain}");
            prop_assert!(!out.contains(&addr), "{}", out);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut out = Vec::new();
            r().redact_line(&bytes, &mut out);
        }
    }
}
