//! The DKIM signer's files: OpenDKIM's configuration, KeyTable and
//! SigningTable for a pool's `spec.dkim`, rendered into each instance's
//! ConfigMap beside the Postfix files, and the milter settings of the
//! submission listener.
//!
//! The agent (src/agent/signer.rs) stages these files with the key from the
//! pool's Secret into a generation directory under
//! [`Settings::dkim_directory`](crate::render::Settings) (`current` link)
//! and runs `opendkim -f -x <dir>/current/opendkim.conf`. Everything here
//! names paths under that directory, so what a pod runs is exactly what the
//! ConfigMap holds, apart from the key.
//!
//! It must never see or write key material (the key reaches only the agent,
//! from the Secret's volume), and never write a value that was not checked:
//! domains and selectors pass [`token`] (the validator refused anything
//! else before; this is the writer's own guard).

use std::fmt::Write as _;

use crate::api::{Dkim, DkimKeyErrorAction};
use crate::postfix::UnsafeValue;

/// OpenDKIM's configuration file in the ConfigMap and the staged directory.
pub const OPENDKIM_CONF: &str = "opendkim.conf";
/// The KeyTable: `<selector>._domainkey.<domain> <domain>:<selector>:<key file>`.
pub const KEY_TABLE: &str = "dkim-key.table";
/// The SigningTable (`refile:`): `*@<domain> <selector>._domainkey.<domain>`.
pub const SIGNING_TABLE: &str = "dkim-signing.table";
/// The link to the generation OpenDKIM runs with, in the DKIM directory.
pub const CURRENT: &str = "current";
/// Directory of the staged private keys in a generation (mode 0700, owned
/// by the signer's user; one `<selector>.private` each, mode 0600).
pub const KEYS_DIR: &str = "keys";
/// Directory of the milter socket in the DKIM directory.
pub const SOCKET_DIR: &str = "milter";
/// The unprivileged user OpenDKIM drops to (Debian's `opendkim` package
/// creates it); it alone can read the staged keys.
pub const SIGNER_USER: &str = "opendkim";
/// The key of a selector in the pool's Secret: `<selector>.key`; the
/// Secret's `private.key` serves a selector without its own key (the
/// layout the authentication check has always read).
pub const SECRET_DEFAULT_KEY: &str = "private.key";

/// The Secret key holding `selector`'s private key, if the Secret has one
/// of its own (see [`SECRET_DEFAULT_KEY`]).
pub fn secret_key_for(selector: &str) -> String {
    format!("{selector}.key")
}

/// The milter socket Postfix's submission listener connects to.
pub fn socket_path(dkim_directory: &str) -> String {
    format!("{dkim_directory}/{SOCKET_DIR}/opendkim.sock")
}

/// The staged key file of `selector` (inside the current generation).
pub fn key_path(dkim_directory: &str, selector: &str) -> String {
    format!("{dkim_directory}/{CURRENT}/{KEYS_DIR}/{selector}.private")
}

/// A value written into OpenDKIM's files: lowercase DNS characters only.
fn token<'a>(field: &'static str, value: &'a str) -> Result<&'a str, UnsafeValue> {
    let ok = !value.is_empty()
        && !value.starts_with(['.', '-'])
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(UnsafeValue { place: field.to_string(), value: value.to_string() })
    }
}

/// The milter overrides of the submission listener: OpenDKIM's socket, and
/// what Postfix does when the signer cannot be reached (no usable key: the
/// agent does not run it). `tempfail` holds the mail at the client (4xx);
/// `accept` is the pool's explicit opt-out.
pub fn submission_milter(dkim: &Dkim, dkim_directory: &str) -> Vec<(&'static str, String)> {
    let action = match dkim.on_key_error {
        DkimKeyErrorAction::Hold => "tempfail",
        DkimKeyErrorAction::SendUnsigned => "accept",
    };
    vec![
        ("smtpd_milters", format!("unix:{}", socket_path(dkim_directory))),
        ("milter_default_action", action.to_string()),
        ("milter_protocol", "6".to_string()),
    ]
}

/// OpenDKIM's three files for `dkim`, by ConfigMap key.
pub fn render(dkim: &Dkim, dkim_directory: &str, header: &str) -> Result<Vec<(&'static str, String)>, UnsafeValue> {
    let selector = token("spec.dkim.selector", &dkim.selector)?;
    let comment: String = header.lines().map(|l| format!("# {l}\n")).collect();
    let current = format!("{dkim_directory}/{CURRENT}");
    let mut keys = comment.clone();
    let mut signing = comment.clone();
    for d in &dkim.domains {
        let d = token("spec.dkim.domains", d)?;
        let name = format!("{selector}._domainkey.{d}");
        let _ = writeln!(keys, "{name} {d}:{selector}:{}", key_path(dkim_directory, selector));
        // refile: `*` is a wildcard, the dots are literal.
        let _ = writeln!(signing, "*@{d} {name}");
    }
    let mut conf = comment;
    for (k, v) in [
        // Sign only: verification is the receivers' job.
        ("Mode", "s".to_string()),
        ("Socket", format!("local:{}", socket_path(dkim_directory))),
        // The socket 0666 (Postfix's smtpd runs as `postfix`); the keys are
        // protected by their directory's mode, not by this mask.
        ("UMask", "0111".to_string()),
        ("UserID", format!("{SIGNER_USER}:{SIGNER_USER}")),
        ("KeyTable", format!("file:{current}/{KEY_TABLE}")),
        ("SigningTable", format!("refile:{current}/{SIGNING_TABLE}")),
        // Every client Postfix lets submit is ours: Postfix decides who may
        // submit (mynetworks, client certificates), OpenDKIM signs it all.
        ("InternalHosts", "csl:0.0.0.0/0,::/0".to_string()),
        ("Canonicalization", "relaxed/relaxed".to_string()),
        ("OversignHeaders", "From".to_string()),
        ("SignatureAlgorithm", "rsa-sha256".to_string()),
        // A key it cannot use or any internal error: tempfail (the client
        // retries), never an unsigned message.
        ("On-Default", "tempfail".to_string()),
        ("On-InternalError", "tempfail".to_string()),
        ("On-KeyNotFound", "tempfail".to_string()),
        // OpenDKIM's own check also refuses a key below any group- or
        // world-writable directory, and the pod's emptyDir (like a test's
        // /tmp) is one. The agent stages each key 0600 in a 0700 directory
        // owned by the signer's user in a root-owned 0755 one, so the key
        // is the signer's alone either way (tests/agent_dkim.rs checks it).
        ("RequireSafeKeys", "no".to_string()),
        // No syslog in the pod; errors reach the agent's stderr.
        ("Syslog", "no".to_string()),
    ] {
        let _ = writeln!(conf, "{k}\t{v}");
    }
    Ok(vec![(OPENDKIM_CONF, conf), (KEY_TABLE, keys), (SIGNING_TABLE, signing)])
}

/// The selectors a rendered KeyTable names, in order, without duplicates.
pub fn selectors_in_key_table(key_table: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in key_table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some(value) = line.split_whitespace().nth(1) else { continue };
        let Some(sel) = value.split(':').nth(1) else { continue };
        if !out.iter().any(|s| s == sel) {
            out.push(sel.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dkim() -> Dkim {
        Dkim {
            secret_name: "k".into(),
            selector: "s1".into(),
            domains: vec!["example.com".into(), "mail.example.org".into()],
            on_key_error: DkimKeyErrorAction::Hold,
        }
    }

    #[test]
    fn tables_name_each_domain_with_the_selector() {
        let files = render(&dkim(), "/run/d", "h").unwrap();
        let keys = &files.iter().find(|(k, _)| *k == KEY_TABLE).unwrap().1;
        assert!(keys.contains("s1._domainkey.example.com example.com:s1:/run/d/current/keys/s1.private\n"));
        let signing = &files.iter().find(|(k, _)| *k == SIGNING_TABLE).unwrap().1;
        assert!(signing.contains("*@mail.example.org s1._domainkey.mail.example.org\n"));
        assert_eq!(selectors_in_key_table(keys), vec!["s1".to_string()]);
        let conf = &files.iter().find(|(k, _)| *k == OPENDKIM_CONF).unwrap().1;
        assert!(conf.contains("Socket\tlocal:/run/d/milter/opendkim.sock\n"));
    }

    #[test]
    fn a_value_that_could_split_a_line_is_refused() {
        for bad in ["ex ample.com", "a.com\nMode v", "A.com", "a:b", "-x"] {
            let mut d = dkim();
            d.domains = vec![bad.into()];
            assert!(render(&d, "/run/d", "h").is_err(), "{bad:?}");
        }
        let mut d = dkim();
        d.selector = "s1:x".into();
        assert!(render(&d, "/run/d", "h").is_err());
    }

    #[test]
    fn opt_out_accepts_without_the_signer() {
        let mut d = dkim();
        assert!(submission_milter(&d, "/r").contains(&("milter_default_action", "tempfail".into())));
        d.on_key_error = DkimKeyErrorAction::SendUnsigned;
        assert!(submission_milter(&d, "/r").contains(&("milter_default_action", "accept".into())));
    }
}
