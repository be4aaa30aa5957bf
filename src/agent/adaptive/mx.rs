//! Which MX host each recipient domain's mail goes to, as this instance's
//! own deliveries showed it (`relay=HOST[addr]:port` in the mail log).
//!
//! Large providers serve many domains behind one MX host (every Google
//! Workspace domain: `aspmx.l.google.com`), and a provider blocks an *IP*,
//! not a domain: when blocks from host H exclude this instance, every
//! domain known to go to H must leave through a peer too
//! ([`super::Adaptive::overlay`]). This map is how the agent knows which
//! domains those are without a DNS lookup on the socketmap path: it is
//! learnt from the log, bounded ([`MAX_DOMAINS`], the least recently seen
//! are forgotten first), and saved with the adaptive state.
//!
//! It must never hold an address: domain names and host names only. Pure:
//! time is passed in.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Domains remembered at most (beyond it the least recently seen tenth is
/// forgotten in one pass).
pub const MAX_DOMAINS: usize = 4096;

/// Domains a `/status` exclusion names at most (the count is exact).
pub const LISTED_DOMAINS: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    host: String,
    /// Unix seconds of the last delivery that named the host.
    at: u64,
}

/// Recipient domain -> the MX host its mail last went to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MxMap {
    domains: HashMap<String, Seen>,
}

impl MxMap {
    /// Record that `domain`'s mail went to `host` at `now`. Returns whether
    /// what the map says changed (a new domain or a new host: worth
    /// saving); a repeat only refreshes its time, allocation-free (this
    /// runs for every delivery line).
    pub fn learn(&mut self, domain: &str, host: &str, now: u64) -> bool {
        let host = host.trim_end_matches('.');
        if domain.is_empty() || host.is_empty() {
            return false;
        }
        if let Some(s) = self.domains.get_mut(domain) {
            s.at = now;
            if s.host.eq_ignore_ascii_case(host) {
                return false;
            }
            s.host = host.to_ascii_lowercase();
            return true;
        }
        if self.domains.len() >= MAX_DOMAINS {
            self.forget_oldest(MAX_DOMAINS / 10);
        }
        self.domains.insert(domain.to_ascii_lowercase(), Seen { host: host.to_ascii_lowercase(), at: now });
        true
    }

    fn forget_oldest(&mut self, n: usize) {
        let mut times: Vec<u64> = self.domains.values().map(|s| s.at).collect();
        let n = n.clamp(1, times.len().max(1));
        let (_, cut, _) = times.select_nth_unstable(n - 1);
        let cut = *cut;
        let mut left = n;
        self.domains.retain(|_, s| {
            if left > 0 && s.at <= cut {
                left -= 1;
                return false;
            }
            true
        });
    }

    /// The MX host `domain`'s mail went to last (lowercase).
    pub fn host_of(&self, domain: &str) -> Option<&str> {
        self.domains.get(domain).map(|s| s.host.as_str())
    }

    /// The domains known to go to any of `hosts`, sorted.
    pub fn domains_of<'a>(&'a self, hosts: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        let sorted: BTreeMap<&str, ()> =
            self.domains.iter().filter(|(_, s)| hosts.contains(&s.host)).map(|(d, _)| (d.as_str(), ())).collect();
        sorted.into_keys()
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_hosts_case_blind_and_reports_only_what_changed() {
        let mut m = MxMap::default();
        assert!(m.learn("a.test", "MX.Prov.test.", 1));
        assert!(!m.learn("a.test", "mx.prov.test", 2), "the same host again");
        assert!(m.learn("b.test", "mx.prov.test", 3));
        assert!(m.learn("c.test", "mx.other.test", 3));
        assert!(!m.learn("", "mx.prov.test", 3) && !m.learn("d.test", "", 3));
        assert_eq!(m.host_of("a.test"), Some("mx.prov.test"));
        let hosts = vec!["mx.prov.test".to_string()];
        assert_eq!(m.domains_of(&hosts).collect::<Vec<_>>(), ["a.test", "b.test"]);
        // A domain that moved to another provider follows it.
        assert!(m.learn("b.test", "mx.other.test", 4));
        assert_eq!(m.domains_of(&hosts).collect::<Vec<_>>(), ["a.test"]);
    }

    #[test]
    fn bounded_forgetting_the_least_recently_seen() {
        let mut m = MxMap::default();
        for i in 0..MAX_DOMAINS as u64 {
            m.learn(&format!("d{i}.test"), "mx.test", i);
        }
        // The oldest domain is seen again: it is kept.
        m.learn("d0.test", "mx.test", 10_000);
        assert!(m.learn("new.test", "mx.test", 10_001));
        assert_eq!(m.len(), MAX_DOMAINS - MAX_DOMAINS / 10 + 1);
        assert_eq!(m.host_of("d0.test"), Some("mx.test"));
        assert_eq!(m.host_of("d1.test"), None);
        assert_eq!(m.host_of(&format!("d{}.test", MAX_DOMAINS - 1)), Some("mx.test"));
    }
}
