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
    /// `h-<hash>@domain`. The domain ends at whitespace or the punctuation
    /// Postfix puts around addresses (`<>()[],;:"='`). The local part is
    /// taken whole, as RFC 5321 allows it: `=` and `'` belong to it (VERP
    /// `list+john=example.com@`, SRS `SRS0=HHH=TT=example.com=john@`,
    /// `o'brien@`), and a quoted local part (`"john doe"@`) runs back to its
    /// opening quote; only whitespace and `<>()[],;:` end it. A stray
    /// `key=` glued to an unbracketed address is hashed along with it:
    /// over-redaction, never a leak.
    pub fn redact_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        let mut search = 0;
        while let Some(rel) = memchr(b'@', &line[search..]) {
            let at = search + rel;
            let start = local_part_start(line, at);
            let end = line[at + 1..].iter().position(|&b| is_delim(b) || b == b'@').map_or(line.len(), |i| at + 1 + i);
            search = end.max(at + 1);
            let local = &line[start..at];
            if local.is_empty() || start < copied || is_hash(local) {
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

/// Is `local` one of our hashes (`h-` and 16 lowercase hex digits)? Only
/// then is it left alone: `h-john.smith.1234` is someone's address.
fn is_hash(local: &[u8]) -> bool {
    local.len() == PREFIX.len() + HASH_HEX
        && local.starts_with(PREFIX)
        && local[PREFIX.len()..].iter().all(|b| HEX.contains(b))
}

/// Where the local part ending before `line[at] == b'@'` starts.
fn local_part_start(line: &[u8], at: usize) -> usize {
    let mut end = at;
    // A quoted local part: back to the opening quote (skipping `\"`), then
    // on over any unquoted text glued to it.
    if at > 0 && line[at - 1] == b'"' {
        let mut i = at - 1;
        while i > 0 {
            i -= 1;
            if line[i] == b'"' && !(i > 0 && line[i - 1] == b'\\') {
                end = i;
                break;
            }
        }
    }
    line[..end].iter().rposition(|&b| ends_local_part(b)).map_or(0, |i| i + 1)
}

/// Whitespace and the brackets and separators around an address; `"`, `=`
/// and `'` may be part of a local part.
fn ends_local_part(b: u8) -> bool {
    b.is_ascii_whitespace() || b"<>()[],;:".contains(&b)
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
        // A local part shaped like a hash but not hex is an address.
        assert!(!redact("to=<h-john.smith.12345@x.example>").contains("john"));
        // Null sender and lines without addresses are untouched.
        assert_eq!(redact("from=<>, size=1"), "from=<>, size=1");
        assert_eq!(redact("a @ b"), "a @ b");
    }

    /// The local-part forms that punctuation used to cut short: each
    /// address is hashed whole, no fragment of its local part is left.
    #[test]
    fn quoted_verp_srs_and_punctuated_local_parts_are_hashed_whole() {
        let corpus: &[(&str, &[&str])] = &[
            ("\"john doe\"@example.com", &["john", "doe"]),
            ("\"john\\\"q doe\"@example.com", &["john", "doe"]),
            ("bounce+john=example.com@lists.example.org", &["bounce+", "john", "example.com"]),
            ("SRS0=HHH=TT=example.com=john@forwarder.example", &["SRS0", "HHH", "john", "example.com"]),
            ("SRS1=XXX=orig.example==HHH=TT=example.com=john@forwarder.example", &["SRS1", "john", "example.com"]),
            ("o'brien@example.com", &["o'", "brien"]),
            ("a=b.mary@example.com", &["a=", "mary"]),
        ];
        for (addr, fragments) in corpus {
            let h = r().redact_address(addr.as_bytes());
            let domain = &addr[addr.rfind('@').unwrap()..];
            for line in [
                format!("Nov 23 06:56:55 h postfix/smtp[2]: ABCDE12345: to=<{addr}>, relay=x[1.2.3.4]:25, status=sent"),
                format!("status=bounced (host x said: 550 5.1.1 <{addr}>: unknown; {addr} refused)"),
                format!("orig_to=<{addr}> to=<{addr}>"),
            ] {
                let out = redact(&line);
                for f in *fragments {
                    assert!(!out.contains(f), "{f:?} survives in {out}");
                }
                assert!(out.contains(&h), "{addr}: the whole address's hash ({h}) is missing from {out}");
                assert!(out.contains(domain), "{out}");
                assert_eq!(redact(&out), out, "not idempotent");
            }
        }
        // The line's own structure is kept around bracketed addresses.
        let out = redact("orig_to=<o'brien@example.com>, status=sent");
        assert!(out.starts_with("orig_to=<h-") && out.ends_with("@example.com>, status=sent"), "{out}");
    }

    /// `text` with every `h-<16 hex>` token removed.
    fn without_hashes(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("h-") {
            out.push_str(&rest[..i]);
            let tail = &rest[i + 2..];
            let hex = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
            rest = if hex == HASH_HEX { &tail[hex..] } else { &rest[i + 2..] };
            if hex != HASH_HEX {
                out.push_str("h-");
            }
        }
        out.push_str(rest);
        out
    }

    proptest! {
        #[test]
        fn no_local_part_survives(local in "[a-z0-9._+-]{3,20}", domain in "[a-z]{2,10}\\.[a-z]{2,5}", pre in "[ -~]{0,30}", post in "[ -~]{0,30}") {
            let line = format!("{pre} <{local}@{domain}> {post}");
            let out = redact(&line);
            let addr = format!("{local}@{domain}");
            prop_assert!(!out.contains(&addr), "{}", out);
        }

        /// Any RFC 5322 atext local part (with `=`, `'`, `+`, `/`...), and a
        /// quoted one with spaces: neither the local part nor any piece of
        /// it between punctuation survives.
        #[test]
        fn no_piece_of_an_atext_or_quoted_local_part_survives(
            local in "[a-z0-9][a-z0-9!#$%&'*+/=?^_`{|}~.-]{2,24}",
            quoted in "[a-z0-9]{3,8} [a-z0-9 .]{3,12}",
            domain in "[a-z]{2,10}\\.[a-z]{2,5}",
        ) {
            for addr in [format!("{local}@{domain}"), format!("\"{quoted}\"@{domain}")] {
                let out = redact(&format!("to=<{addr}>, status=sent ({addr} said hi)"));
                // The hashes themselves are hex: a piece may match in them.
                let out = without_hashes(&out);
                let text = addr.rsplit_once('@').unwrap().0;
                let pieces = text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| p.len() >= 3);
                for piece in pieces {
                    // A piece can equal part of the domain or of the fixed text.
                    if domain.contains(piece) || "status sent said".contains(piece) {
                        continue;
                    }
                    prop_assert!(!out.contains(piece), "{} survives in {}", piece, out);
                }
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut out = Vec::new();
            r().redact_line(&bytes, &mut out);
        }
    }
}
