//! What the administrator allows pool authors, as the operator's flags set
//! it: one value, built once in `super::run` and kept in the context. The
//! checks against it are `pool/admit.rs`; the placement labels themselves
//! go into the render settings (`Settings::node_selector`), which write
//! them into every instance pod.
//!
//! Never: anything a pool's spec could change.

use std::collections::BTreeSet;

/// What the administrator allows pool authors, besides the placement in
/// `Settings::node_selector` and the default image in
/// `Settings::default_image` (`sendfleet_render::render::Settings`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Images `spec.image` may name besides the default one.
    pub allowed_images: BTreeSet<String>,
    /// `(key, value)` a Namespace must carry to hold pools.
    pub namespace_label: Option<(String, String)>,
    /// Namespaces that hold pools whatever their labels.
    pub namespaces: BTreeSet<String>,
}

impl Limits {
    /// Whether every namespace may hold pools (nothing opted in).
    pub fn every_namespace(&self) -> bool {
        self.namespace_label.is_none() && self.namespaces.is_empty()
    }
}

/// Parse `key=value` (a label, as the operator's flags take them).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    let (k, v) = (k.trim(), v.trim());
    let key_ok = !k.is_empty() && k.len() <= 317 && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    let value_ok = v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if key_ok && value_ok {
        Ok((k.into(), v.into()))
    } else {
        Err(format!("{s:?}: not a Kubernetes label KEY=VALUE"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_as_kubernetes_labels() {
        assert_eq!(parse_label("sendfleet.io/egress=true"), Ok(("sendfleet.io/egress".into(), "true".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        for bad in ["novalue", "=x", "a b=c", "k=v,w", "k=$(x)"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }
}
