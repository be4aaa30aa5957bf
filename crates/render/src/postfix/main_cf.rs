//! `main.cf` writer: `name = value` lines from a fixed vocabulary.

use std::collections::BTreeMap;

use super::{comment_block, is_safe_line, UnsafeValue};

/// main.cf parameters, written sorted by name (deterministic output).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MainCf {
    params: BTreeMap<String, String>,
}

impl MainCf {
    /// Set a parameter. The name comes from code (or from a validated
    /// transport name); the value is checked to stay on one line.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> Result<(), UnsafeValue> {
        let name = name.into();
        let value = value.into();
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(UnsafeValue { place: "main.cf parameter name".into(), value: name });
        }
        if !is_safe_line(&value) {
            return Err(UnsafeValue { place: format!("main.cf parameter {name}"), value });
        }
        self.params.insert(name, value);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    pub fn render(&self, header: &str) -> String {
        let mut out = comment_block(header);
        for (k, v) in &self.params {
            out.push_str(k);
            out.push_str(" =");
            if !v.is_empty() {
                out.push(' ');
                out.push_str(v);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_values_that_add_lines_or_comments() {
        let mut m = MainCf::default();
        assert!(m.set("myhostname", "mx.example.com").is_ok());
        assert!(m.set("myhostname", "mx.example.com\ncontent_filter = x").is_err());
        assert!(m.set("myhostname", "mx # x").is_err());
        assert!(m.set("my hostname", "x").is_err());
        assert!(m.set("myhostname", "x\r").is_err());
    }
}
