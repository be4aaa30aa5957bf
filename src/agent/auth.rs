//! Who may read the agent's /status and /metrics: whoever presents the
//! pool's agent token (`Authorization: Bearer <token>`). On a hostNetwork
//! pod the agent's port is on the node's network, where any neighbour can
//! connect; the token lives in a Secret only the operator and the pod read
//! (docs/SECURITY.md).
//!
//! The token file is re-read on every check, so a rotated Secret takes
//! effect as soon as the kubelet updates the mount; a file that cannot be
//! read then refuses every request (fail closed). At start the file must be
//! readable and long enough, or the agent does not start.
//!
//! It must never compare a token in time that depends on where it differs,
//! log a token, or let an absent or empty token match anything.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Shortest token accepted: 32 characters (the operator writes 64 hex digits).
pub const MIN_TOKEN_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the auth token in {path} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort { path: PathBuf },
}

/// What /status and /metrics require.
#[derive(Clone, Debug)]
pub enum Access {
    /// No `--auth-token-file`: open (tests and local runs only; the rendered
    /// pod always passes the flag).
    Open,
    /// A bearer token equal to the file's content.
    Token(PathBuf),
}

impl Access {
    /// From the flag; with a file, it must hold a usable token now.
    pub fn from_file(path: Option<&Path>) -> Result<Access, AuthError> {
        match path {
            None => Ok(Access::Open),
            Some(p) => {
                read_token(p)?;
                Ok(Access::Token(p.to_path_buf()))
            }
        }
    }

    /// Does a request with this `Authorization` header value get in?
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Access::Token(path) = self else { return true };
        let Some(presented) = authorization.and_then(bearer) else { return false };
        match read_token(path) {
            Ok(token) => same(presented, &token),
            Err(e) => {
                tracing::warn!(error = %e, "auth token unreadable: refusing the request");
                false
            }
        }
    }
}

/// The file's token: its content without trailing line ends.
fn read_token(path: &Path) -> Result<Vec<u8>, AuthError> {
    let mut t = std::fs::read(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
    while t.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        t.pop();
    }
    if t.len() < MIN_TOKEN_LEN {
        return Err(AuthError::TooShort { path: path.into() });
    }
    Ok(t)
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive, RFC 9110 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

/// Equal, in time independent of where they differ (a length difference is
/// no secret: every token the operator writes has the same length).
fn same(presented: &[u8], token: &[u8]) -> bool {
    !token.is_empty() && bool::from(presented.ct_eq(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

    fn token_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn only_the_exact_bearer_token_gets_in() {
        let (_d, path) = token_file(&format!("{TOKEN}\n"));
        let a = Access::from_file(Some(&path)).unwrap();
        assert!(a.allows(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(a.allows(Some(format!("bearer {TOKEN}").as_bytes())), "the scheme is case-insensitive");
        assert!(!a.allows(None));
        assert!(!a.allows(Some(b"Bearer ")));
        assert!(!a.allows(Some(TOKEN.as_bytes())), "no scheme");
        assert!(!a.allows(Some(format!("Basic {TOKEN}").as_bytes())));
        assert!(!a.allows(Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]).as_bytes())), "a prefix");
        assert!(!a.allows(Some(format!("Bearer {TOKEN}0").as_bytes())), "longer");
        assert!(!a.allows(Some(format!("Bearer {}", TOKEN.to_uppercase()).as_bytes())));
    }

    #[test]
    fn a_rotated_file_takes_effect_and_a_vanished_one_refuses_everything() {
        let (_d, path) = token_file(TOKEN);
        let a = Access::from_file(Some(&path)).unwrap();
        let new = "fedcba9876543210fedcba9876543210fedcba9876543210";
        std::fs::write(&path, new).unwrap();
        assert!(!a.allows(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(a.allows(Some(format!("Bearer {new}").as_bytes())));
        std::fs::remove_file(&path).unwrap();
        assert!(!a.allows(Some(format!("Bearer {new}").as_bytes())));
    }

    #[test]
    fn a_missing_or_short_token_file_stops_the_start_and_no_flag_is_open() {
        let (_d, path) = token_file("short\n");
        assert!(matches!(Access::from_file(Some(&path)), Err(AuthError::TooShort { .. })));
        let (_d2, empty) = token_file("");
        assert!(Access::from_file(Some(&empty)).is_err());
        assert!(matches!(Access::from_file(Some(Path::new("/nonexistent/token"))), Err(AuthError::Read { .. })));
        assert!(Access::from_file(None).unwrap().allows(None));
    }
}
