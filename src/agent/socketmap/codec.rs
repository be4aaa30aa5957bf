//! Netstring codec for Postfix's socketmap protocol (socketmap_table(5)).
//!
//! A request is the netstring `<len>:<name> <key>,`; a reply is the netstring
//! `<len>:OK <data>,` / `NOTFOUND ,` / `TEMP <reason>,` / `PERM <reason>,`.
//! Pure functions on byte slices: no I/O, never panics on any input (a
//! property test feeds it arbitrary bytes).

use thiserror::Error;

/// Largest request we accept. Postfix keys are addresses or domains; anything
/// longer is garbage or an attack, and the connection is dropped.
pub const MAX_REQUEST: usize = 10_000;

/// Why a byte stream is not a valid netstring.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("netstring length prefix is not a decimal number")]
    BadLength,
    #[error("netstring of {0} bytes exceeds the limit of {MAX_REQUEST}")]
    TooLong(usize),
    #[error("netstring is not terminated by ','")]
    MissingComma,
    #[error("request has no space between map name and key")]
    NoKey,
}

/// Result of trying to decode one netstring from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete netstring: its payload and the bytes consumed.
    Frame(&'a [u8], usize),
    /// More bytes are needed.
    Incomplete,
}

/// Decode one netstring from the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, CodecError> {
    let Some(colon) = buf.iter().take(6).position(|&b| b == b':') else {
        // At most 5 digits fit MAX_REQUEST; more digits without ':' is bad.
        if buf.len() >= 6 || !buf.iter().all(u8::is_ascii_digit) {
            return Err(CodecError::BadLength);
        }
        return Ok(Decoded::Incomplete);
    };
    let digits = &buf[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::BadLength);
    }
    let len = digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if len > MAX_REQUEST {
        return Err(CodecError::TooLong(len));
    }
    let start = colon + 1;
    let end = start + len;
    if buf.len() <= end {
        return Ok(Decoded::Incomplete);
    }
    if buf[end] != b',' {
        return Err(CodecError::MissingComma);
    }
    Ok(Decoded::Frame(&buf[start..end], end + 1))
}

/// Split a request payload into (map name, key).
pub fn split_request(payload: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let sp = payload.iter().position(|&b| b == b' ').ok_or(CodecError::NoKey)?;
    Ok((&payload[..sp], &payload[sp + 1..]))
}

/// Append `payload` as a netstring to `out`.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    encode_parts(out, b"", payload);
}

/// Append the netstring of `head` followed by `tail` (a reply word and its
/// text) without building the payload first: replies are written once per
/// lookup, on Postfix's delivery path.
fn encode_parts(out: &mut Vec<u8>, head: &[u8], tail: &[u8]) {
    push_decimal(out, head.len() + tail.len());
    out.push(b':');
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    out.push(b',');
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A socketmap reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    NotFound,
    Temp(String),
    Perm(String),
}

impl Reply {
    /// Append this reply as a netstring to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (word, text): (&[u8], &str) = match self {
            Reply::Ok(d) => (b"OK ", d),
            Reply::NotFound => (b"NOTFOUND ", ""),
            Reply::Temp(r) => (b"TEMP ", r),
            Reply::Perm(r) => (b"PERM ", r),
        };
        encode_parts(out, word, text.as_bytes());
    }

    /// Parse a reply payload (used by clients: tests and benchmarks).
    pub fn parse(payload: &[u8]) -> Option<Reply> {
        let s = std::str::from_utf8(payload).ok()?;
        let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
        Some(match word {
            "OK" => Reply::Ok(rest.to_string()),
            "NOTFOUND" => Reply::NotFound,
            "TEMP" => Reply::Temp(rest.to_string()),
            "PERM" => Reply::Perm(rest.to_string()),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_request_and_reports_consumed_bytes() {
        let buf = b"21:transport example.com,9:trailing";
        match decode(buf).unwrap() {
            Decoded::Frame(p, n) => {
                assert_eq!(p, b"transport example.com");
                assert_eq!(n, 25);
                assert_eq!(split_request(p).unwrap(), (&b"transport"[..], &b"example.com"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_and_bad_inputs() {
        assert_eq!(decode(b"").unwrap(), Decoded::Incomplete);
        assert_eq!(decode(b"12").unwrap(), Decoded::Incomplete);
        assert_eq!(decode(b"5:abc").unwrap(), Decoded::Incomplete);
        assert_eq!(decode(b"5:abcde").unwrap(), Decoded::Incomplete);
        assert_eq!(decode(b"5:abcdef"), Err(CodecError::MissingComma));
        assert_eq!(decode(b"x:"), Err(CodecError::BadLength));
        assert_eq!(decode(b":a,"), Err(CodecError::BadLength));
        assert_eq!(decode(b"999999:"), Err(CodecError::BadLength));
        assert_eq!(decode(b"99999:"), Err(CodecError::TooLong(99999)));
        assert_eq!(split_request(b"transport"), Err(CodecError::NoKey));
    }

    #[test]
    fn replies_encode_as_postfix_expects() {
        let mut out = Vec::new();
        Reply::NotFound.encode_into(&mut out);
        assert_eq!(out, b"9:NOTFOUND ,");
        out.clear();
        Reply::Ok("retry:4.7.1 paused".into()).encode_into(&mut out);
        assert_eq!(out, b"21:OK retry:4.7.1 paused,");
        assert_eq!(Reply::parse(b"OK retry:4.7.1 paused"), Some(Reply::Ok("retry:4.7.1 paused".into())));
        assert_eq!(Reply::parse(b"NOTFOUND "), Some(Reply::NotFound));
        out.clear();
        Reply::Perm("unknown map".into()).encode_into(&mut out);
        assert_eq!(out, b"16:PERM unknown map,");
        out.clear();
        encode_into(&mut out, b"");
        assert_eq!(out, b"0:,");
        out.clear();
        let long = "x".repeat(12_345);
        Reply::Temp(long.clone()).encode_into(&mut out);
        assert_eq!(out, format!("12350:TEMP {long},").as_bytes());
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let mut out = Vec::new();
            encode_into(&mut out, &bytes);
            prop_assert_eq!(decode(&out).unwrap(), Decoded::Frame(&bytes[..], out.len()));
        }

        #[test]
        fn split_frames_decode_after_all_parts_arrive(key in "[a-z.@]{1,40}", cut in 0usize..60) {
            let mut out = Vec::new();
            encode_into(&mut out, format!("transport {key}").as_bytes());
            let cut = cut.min(out.len() - 1);
            prop_assert_eq!(decode(&out[..cut]).unwrap(), Decoded::Incomplete);
            prop_assert!(matches!(decode(&out).unwrap(), Decoded::Frame(_, n) if n == out.len()));
        }
    }
}
