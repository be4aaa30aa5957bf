//! Lookup tables (`transport`, `tls_policy`, `header_checks`) as text.

use super::{comment_block, is_safe_line, is_safe_token, UnsafeValue};

/// A `hash:` table source: one `key value` line per entry, in insertion order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    name: &'static str,
    entries: Vec<(String, String)>,
}

impl Table {
    pub fn new(name: &'static str) -> Self {
        Table { name, entries: vec![] }
    }

    /// Add an entry. Keys are single tokens; values stay on one line.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), UnsafeValue> {
        if !is_safe_token(key) || key.contains(':') && !key.starts_with('[') {
            return Err(UnsafeValue { place: format!("{} table key", self.name), value: key.into() });
        }
        if value.is_empty() || !is_safe_line(value) || value.starts_with(' ') {
            return Err(UnsafeValue { place: format!("{} table value for {key}", self.name), value: value.into() });
        }
        self.entries.push((key.into(), value.into()));
        Ok(())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn render(&self, header: &str) -> String {
        let mut out = comment_block(header);
        for (k, v) in &self.entries {
            out.push_str(k);
            out.push('\t');
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

/// Escape a validated token for use inside a POSIX regular expression.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".[]()*+?{}|^$\\/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
