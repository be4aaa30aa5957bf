//! `master.cf` writer: service lines with `-o name=value` overrides.
//!
//! Fields are whitespace-separated and an override is a separate token, so
//! every field and override value must be a single safe token.

use super::{comment_block, is_safe_token, UnsafeValue};

/// One master.cf service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service name (or `host:port` / `port` for inet listeners).
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo`, `pass`.
    pub kind: &'static str,
    pub private: &'static str,
    pub unprivileged: &'static str,
    pub chroot: &'static str,
    pub wakeup: String,
    pub maxproc: String,
    pub command: &'static str,
    pub overrides: Vec<(String, String)>,
}

impl Service {
    /// An internal Postfix service with the usual columns (`chroot n`: the
    /// container is the sandbox, and chroot would need copies of /etc files).
    pub fn internal(
        name: &str,
        kind: &'static str,
        private: &'static str,
        wakeup: &str,
        maxproc: &str,
        command: &'static str,
    ) -> Self {
        Service {
            name: name.into(),
            kind,
            private,
            unprivileged: "-",
            chroot: "n",
            wakeup: wakeup.into(),
            maxproc: maxproc.into(),
            command,
            overrides: vec![],
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.overrides.push((name.into(), value.into()));
        self
    }
}

/// A whole master.cf, in service order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterCf {
    pub services: Vec<Service>,
}

impl MasterCf {
    pub fn push(&mut self, s: Service) {
        self.services.push(s);
    }

    pub fn render(&self, header: &str) -> Result<String, UnsafeValue> {
        let mut out = comment_block(header);
        for s in &self.services {
            let place = |what: &str| format!("master.cf service {:?} {what}", s.name);
            for (what, v) in [("name", &s.name), ("wakeup", &s.wakeup), ("maxproc", &s.maxproc)] {
                // "-" means "default" in every column.
                if v != "-" && !is_safe_token(v) {
                    return Err(UnsafeValue { place: place(what), value: v.clone() });
                }
            }
            out.push_str(&format!(
                "{} {} {} {} {} {} {} {}\n",
                s.name, s.kind, s.private, s.unprivileged, s.chroot, s.wakeup, s.maxproc, s.command
            ));
            for (k, v) in &s.overrides {
                let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !name_ok || !is_safe_token(v) {
                    return Err(UnsafeValue { place: place(&format!("override {k}")), value: v.clone() });
                }
                out.push_str(&format!("  -o {k}={v}\n"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_tokens_that_add_overrides() {
        let mut m = MasterCf::default();
        m.push(
            Service::internal("smtp", "unix", "-", "-", "-", "smtp")
                .with("smtp_bind_address", "1.2.3.4 -o content_filter=x"),
        );
        assert!(m.render("").is_err());
        let mut m = MasterCf::default();
        m.push(Service::internal("smtp", "unix", "-", "-", "-", "smtp").with("smtp_bind_address", "-o"));
        assert!(m.render("").is_err());
        let mut m = MasterCf::default();
        m.push(Service::internal("smtp", "unix", "-", "-", "-", "smtp").with("smtp_bind_address", "1.2.3.4"));
        assert_eq!(m.render("").unwrap(), "smtp unix - - n - - smtp\n  -o smtp_bind_address=1.2.3.4\n");
    }
}
