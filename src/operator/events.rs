//! Events the operator publishes: one per condition flip (its type —
//! Normal or Warning — from the condition vocabulary's polarity), one per
//! failed reconcile (reason: the error's category), and free-form notes
//! such as DNSBL listing changes.
//!
//! An Event that cannot be published is logged and dropped: Events are for
//! people, and never fail a reconcile.

use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use sendfleet_render::conditions::{EventKind, Observation};

use super::context::Context;

/// Longest Event note (the events.k8s.io API refuses notes over 1 KiB).
pub const MAX_NOTE_LEN: usize = 1024;

fn note(text: String) -> Option<String> {
    let mut cut = text.len().min(MAX_NOTE_LEN);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(text[..cut].to_string())
}

async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, ev: Event) {
    match ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        Ok(()) => ctx.metrics.wrote("Event"),
        Err(error) => tracing::warn!(name = %obj.name_any(), %error, "could not publish event"),
    }
}

/// An Event for a condition whose status flipped; none for a flip to
/// Unknown (see `ConditionType::transition_event`).
pub async fn flip<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, o: &Observation) {
    let Some(kind) = o.event() else { return };
    let ev = Event {
        type_: match kind {
            EventKind::Warning => EventType::Warning,
            EventKind::Normal => EventType::Normal,
        },
        reason: o.reason.as_str().into(),
        note: note(format!("{} is {}: {}", o.type_, o.status, o.message)),
        action: format!("Set{}", o.type_),
        secondary: None,
    };
    publish(ctx, obj, ev).await;
}

/// A Warning for a reconcile that failed: the reason is the error's fixed
/// category, the note its chain of causes ([`chain`]).
pub async fn error<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, category: &'static str, causes: String) {
    let ev = Event {
        type_: EventType::Warning,
        reason: category.into(),
        note: note(causes),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish(ctx, obj, ev).await;
}

/// A Warning with a free-form note, e.g. a DNSBL listing change.
pub async fn warning<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, reason: &str, action: &str, text: &str) {
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: note(text.into()),
        action: action.into(),
        secondary: None,
    };
    publish(ctx, obj, ev).await;
}

/// `outer: inner: innermost`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut s = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("applying ConfigMap p-a")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn notes_carry_the_error_chain_and_stay_under_the_limit() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "applying ConfigMap p-a: connection refused");
        let long = note("é".repeat(MAX_NOTE_LEN)).unwrap();
        assert!(long.len() <= MAX_NOTE_LEN && long.len() >= MAX_NOTE_LEN - 1);
    }
}
