//! The delivery status filter of the transports of DomainPolicies with
//! `autoExclusion`: a `regexp:` table (`smtp_delivery_status_filter`) that
//! turns a 5xx answer the agent's classifier calls an IP/reputation block
//! into the same answer with a 4 in front, so Postfix defers the message
//! instead of bouncing it. The agent counts the block, excludes this IP for
//! the rule at the threshold, and the retry leaves through a peer: no
//! message bounces because one IP is blocked.
//!
//! Generated from [`crate::responses`] alone, in the classifier's order: a
//! 5xx that an earlier category claims (TLS, timeout, mailbox full, unknown
//! user, rate limit) is left alone, so an unknown user still bounces. Postfix
//! applies the filter once per recipient, to a 5xx or to the last attempt,
//! with the key `enhanced-status-code SPACE text`; regexp tables match
//! case-insensitively by default. This module must never produce a rule that
//! softens a 5xx the classifier would not call `IpBlock`.

use super::maps::regex_escape;
use super::{comment_block, is_safe_line, UnsafeValue};
use crate::contract::ResponseCategory;
use crate::responses::{Evidence, ORDER};

/// `main.cf`/`master.cf` value naming the table (file [`super::DSN_FILTER`]).
pub fn table_ref() -> String {
    format!("regexp:$config_directory/{}", super::DSN_FILTER)
}

fn alternatives(e: &Evidence, extra: &[&str]) -> String {
    let details = e.details.iter().map(|d| format!("^5{} ", regex_escape(d)));
    let phrases = e.phrases.iter().map(|p| regex_escape(p));
    details.chain(phrases).chain(extra.iter().map(|s| s.to_string())).collect::<Vec<_>>().join("|")
}

/// The table's text, `header` as its first comment lines.
pub fn render(header: &str) -> Result<String, UnsafeValue> {
    let mut lines = vec!["if /^5\\.[0-9]+\\.[0-9]+ /".to_string()];
    let mut depth = 1;
    for (category, evidence) in ORDER {
        match category {
            ResponseCategory::IpBlock => {
                lines.push(format!("if /{}/", alternatives(&evidence, &[])));
                lines.push("/^5(.*)$/ 4$1".to_string());
                depth += 1;
            }
            ResponseCategory::RateLimit => {
                lines.push(format!("if !/{}/", alternatives(&evidence, &[" 421"])));
                depth += 1;
            }
            _ => {
                lines.push(format!("if !/{}/", alternatives(&evidence, &[])));
                depth += 1;
            }
        }
    }
    lines.extend(std::iter::repeat_n("endif".to_string(), depth));
    let mut out = comment_block(header);
    out.push_str(&comment_block(
        "5xx answers that mean \"this IP is blocked\" become 4xx (retried; the agent\nexcludes the IP for the domain and the retry leaves through a peer).",
    ));
    for l in lines {
        if !is_safe_line(&l) {
            return Err(UnsafeValue { place: super::DSN_FILTER.into(), value: l });
        }
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_nested_block_per_category_in_classifier_order() {
        let t = render("h").unwrap();
        let ifs = t.lines().filter(|l| l.starts_with("if ")).count();
        let endifs = t.lines().filter(|l| *l == "endif").count();
        assert_eq!(ifs, 1 + ORDER.len());
        assert_eq!(ifs, endifs);
        let order: Vec<&str> = t.lines().filter(|l| l.starts_with("if ")).collect();
        assert!(order[1].contains("starttls") && order[1].starts_with("if !/"), "{t}");
        assert!(order[4].contains("user unknown") && order[4].contains("^5\\.1\\.1 "), "{t}");
        assert!(order[5].contains("too much mail") && order[5].ends_with("| 421/"), "{t}");
        assert!(order[6].starts_with("if /") && order[6].contains("client host rejected"), "{t}");
        assert!(t.contains("\n/^5(.*)$/ 4$1\n"), "{t}");
        assert!(t.starts_with("# h\n"));
    }
}
