//! DKIM: does `<selector>._domainkey.<domain>` publish the public half of
//! the private key the instances sign with?
//!
//! The private key arrives as PEM bytes (from a Kubernetes Secret; reading the
//! Secret is the operator's job): PKCS#8 (`PRIVATE KEY`, RSA or Ed25519) or
//! PKCS#1 (`RSA PRIVATE KEY`). The published key is compared as a key, not as
//! text: RSA `p=` may be SubjectPublicKeyInfo or bare RSAPublicKey DER
//! (both are seen in the wild), Ed25519 `p=` is the raw 32 bytes (RFC 8463).
//!
//! This module must never log or return the private key, and never return a
//! DNS failure as an error: every outcome is a [`DkimVerdict`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;

use super::resolver::{Answer, Resolver};

/// DKIM key algorithms (`k=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// The public half of a signing key.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    Ed25519([u8; 32]),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rsa(k) => write!(f, "Rsa({} bits)", k.size() * 8),
            Self::Ed25519(_) => f.write_str("Ed25519"),
        }
    }
}

impl PublicKey {
    pub fn key_type(&self) -> KeyType {
        match self {
            Self::Rsa(_) => KeyType::Rsa,
            Self::Ed25519(_) => KeyType::Ed25519,
        }
    }

    /// The TXT record value to publish for this key.
    pub fn txt_record(&self) -> String {
        let p = match self {
            // SubjectPublicKeyInfo: what opendkim-genkey and most providers publish.
            Self::Rsa(k) => k.to_public_key_der().map(|d| B64.encode(d.as_bytes())).unwrap_or_default(),
            Self::Ed25519(raw) => B64.encode(raw),
        };
        format!("v=DKIM1; k={}; p={}", self.key_type().as_str(), p)
    }
}

/// The private key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateKeyError {
    #[error("not UTF-8 PEM text")]
    NotText,
    #[error("no PEM block found")]
    NoPem,
    #[error("unsupported or unreadable key ({0}); expected RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8)")]
    Unreadable(String),
}

/// Derive the public key from PEM private-key bytes.
pub fn public_key_from_pem(pem: &[u8]) -> Result<PublicKey, PrivateKeyError> {
    let text = std::str::from_utf8(pem).map_err(|_| PrivateKeyError::NotText)?;
    let text = text.trim();
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .map(|k| PublicKey::Rsa(k.to_public_key()))
            .map_err(|e| PrivateKeyError::Unreadable(format!("PKCS#1: {e}")));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(PrivateKeyError::Unreadable(
            "the key is encrypted; store it unencrypted in the Secret".to_string(),
        ));
    }
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(PrivateKeyError::NoPem);
    }
    match rsa::RsaPrivateKey::from_pkcs8_pem(text) {
        Ok(k) => Ok(PublicKey::Rsa(k.to_public_key())),
        Err(rsa_err) => match ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            Ok(k) => Ok(PublicKey::Ed25519(k.verifying_key().to_bytes())),
            Err(ed_err) => Err(PrivateKeyError::Unreadable(format!("as RSA: {rsa_err}; as Ed25519: {ed_err}"))),
        },
    }
}

/// The DKIM finding for one (domain, selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimVerdict {
    /// The record publishes the signing key's public half.
    Match { key_type: KeyType },
    /// A key is published, but not this one.
    Mismatch { published: KeyType, expected: KeyType },
    /// No TXT record at the selector name.
    Missing,
    /// The record has an empty `p=` (key revoked).
    Revoked,
    /// A TXT record exists but is not a usable DKIM key record.
    Malformed { reason: String },
    /// The signing key in the Secret could not be read.
    BadPrivateKey { reason: String },
    /// DNS failed; no conclusion.
    Unknown { reason: String },
}

impl DkimVerdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Match { .. })
    }

    /// One line for a condition message.
    pub fn describe(&self) -> String {
        match self {
            Self::Match { key_type } => format!("DKIM {} key matches", key_type.as_str()),
            Self::Mismatch { published, expected } => format!(
                "DKIM record publishes a different key ({} published, {} expected)",
                published.as_str(),
                expected.as_str()
            ),
            Self::Missing => "no DKIM record".to_string(),
            Self::Revoked => "DKIM key revoked (empty p=)".to_string(),
            Self::Malformed { reason } => format!("DKIM record malformed: {reason}"),
            Self::BadPrivateKey { reason } => format!("DKIM private key unreadable: {reason}"),
            Self::Unknown { reason } => format!("DKIM lookup failed: {reason}"),
        }
    }
}

/// The selector record name.
pub fn dkim_record_name(selector: &str, domain: &str) -> String {
    format!("{}._domainkey.{}", selector.trim_matches('.'), domain.trim_end_matches('.'))
}

/// Parsed `tag=value` list of a DKIM key record (RFC 6376 §3.6.1).
enum Parsed {
    Key(PublicKey),
    Revoked,
    Bad(String),
}

fn parse_record(txt: &str) -> Parsed {
    let mut k = "rsa".to_string();
    let mut p: Option<String> = None;
    for part in txt.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((tag, value)) = part.split_once('=') else {
            return Parsed::Bad(format!("tag without '=': {part:?}"));
        };
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match tag.trim() {
            "v" if value != "DKIM1" => return Parsed::Bad(format!("v={value}, not DKIM1")),
            "k" => k = value.to_ascii_lowercase(),
            "p" => p = Some(value),
            _ => {}
        }
    }
    let Some(p) = p else {
        return Parsed::Bad("no p= tag".to_string());
    };
    if p.is_empty() {
        return Parsed::Revoked;
    }
    let der = match B64.decode(p.as_bytes()) {
        Ok(d) => d,
        Err(e) => return Parsed::Bad(format!("p= is not base64: {e}")),
    };
    match k.as_str() {
        "rsa" => {
            match rsa::RsaPublicKey::from_public_key_der(&der).or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der)) {
                Ok(key) => Parsed::Key(PublicKey::Rsa(key)),
                Err(e) => Parsed::Bad(format!("p= is not an RSA public key: {e}")),
            }
        }
        "ed25519" => match <[u8; 32]>::try_from(der.as_slice()) {
            Ok(raw) => Parsed::Key(PublicKey::Ed25519(raw)),
            Err(_) => Parsed::Bad(format!("ed25519 p= has {} bytes, not 32", der.len())),
        },
        other => Parsed::Bad(format!("unsupported k={other}")),
    }
}

/// Compare published TXT records with the expected key. Pure.
pub fn judge_records(records: &[String], expected: &PublicKey) -> DkimVerdict {
    let mut published: Option<KeyType> = None;
    let mut revoked = false;
    let mut bad: Vec<String> = Vec::new();
    for txt in records {
        match parse_record(txt) {
            Parsed::Key(key) if &key == expected => return DkimVerdict::Match { key_type: key.key_type() },
            Parsed::Key(key) => published = Some(key.key_type()),
            Parsed::Revoked => revoked = true,
            Parsed::Bad(reason) => bad.push(reason),
        }
    }
    if let Some(published) = published {
        DkimVerdict::Mismatch { published, expected: expected.key_type() }
    } else if revoked {
        DkimVerdict::Revoked
    } else if bad.is_empty() {
        DkimVerdict::Missing
    } else {
        DkimVerdict::Malformed { reason: bad.join("; ") }
    }
}

/// Check that `<selector>._domainkey.<domain>` publishes the public half of
/// `private_key_pem`.
pub async fn check_dkim<R: Resolver>(
    resolver: &R,
    domain: &str,
    selector: &str,
    private_key_pem: &[u8],
) -> DkimVerdict {
    match public_key_from_pem(private_key_pem) {
        Ok(k) => check_dkim_key(resolver, domain, selector, &k).await,
        Err(e) => DkimVerdict::BadPrivateKey { reason: e.to_string() },
    }
}

/// Check that `<selector>._domainkey.<domain>` publishes `expected` (the
/// public key the operator derived from the Secret and kept, instead of the
/// private key).
pub async fn check_dkim_key<R: Resolver>(
    resolver: &R,
    domain: &str,
    selector: &str,
    expected: &PublicKey,
) -> DkimVerdict {
    let name = dkim_record_name(selector, domain);
    match resolver.txt(&name).await {
        Answer::Records { records, .. } => judge_records(&records, expected),
        Answer::NxDomain { .. } | Answer::NoData { .. } => DkimVerdict::Missing,
        Answer::Failed(f) => DkimVerdict::Unknown { reason: f.to_string() },
    }
}
