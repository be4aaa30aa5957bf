//! What every controller does after an error: requeue by kind, with named
//! delays. The error enums themselves live with the steps that raise them
//! (`pool::*::Error`, `fleet_status::Error`); each variant has a fixed
//! PascalCase `category()` — the Event reason and the metric label — and a
//! [`Retry`] kind.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

/// First retry after a transient fault (API server, network, the host);
/// the controller's own backoff grows from there.
pub const REQUEUE_TRANSIENT: Duration = Duration::from_secs(5);
/// Retry while a referenced object is missing (it may be created soon; its
/// creation also triggers a reconcile through the watches).
pub const REQUEUE_MISSING_REFERENCE: Duration = Duration::from_secs(60);
/// Retry while something outside the spec refuses the pool (a namespace not
/// opted in, a node without the required labels, an object another owner
/// holds): the administrator or that owner may change it any time.
pub const REQUEUE_BLOCKED: Duration = Duration::from_secs(60);

/// How an error is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A fault outside the spec: try again soon.
    Transient,
    /// Something the spec names does not exist (yet).
    MissingReference,
    /// The spec itself is wrong: nothing changes until it does.
    OnSpecChange,
    /// Something outside the spec refuses the pool (see [`REQUEUE_BLOCKED`]).
    Blocked,
}

impl Retry {
    /// How long to wait; `None` waits for a change.
    pub const fn after(self) -> Option<Duration> {
        match self {
            Retry::Transient => Some(REQUEUE_TRANSIENT),
            Retry::MissingReference => Some(REQUEUE_MISSING_REFERENCE),
            Retry::OnSpecChange => None,
            Retry::Blocked => Some(REQUEUE_BLOCKED),
        }
    }

    pub fn action(self) -> Action {
        match self.after() {
            Some(d) => Action::requeue(d),
            None => Action::await_change(),
        }
    }
}

/// What every controller's `error_policy` does: log the failure with its
/// fields (kind, namespace, name, category, the error chain) and requeue by
/// kind.
pub fn after_failure<K: Resource<DynamicType = ()>>(
    obj: &K,
    category: &'static str,
    retry: Retry,
    error: &dyn std::error::Error,
) -> Action {
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = obj.namespace().as_deref().unwrap_or(""),
        name = %obj.name_any(),
        category,
        error = %super::events::chain(error),
        "reconcile failed"
    );
    retry.action()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_delay_and_an_invalid_spec_waits() {
        assert_eq!(Retry::Transient.after(), Some(REQUEUE_TRANSIENT));
        assert_eq!(Retry::MissingReference.after(), Some(REQUEUE_MISSING_REFERENCE));
        assert_eq!(Retry::OnSpecChange.after(), None);
        assert_eq!(Retry::OnSpecChange.action(), Action::await_change());
        assert_eq!(Retry::Transient.action(), Action::requeue(REQUEUE_TRANSIENT));
        assert!(REQUEUE_TRANSIENT < REQUEUE_MISSING_REFERENCE);
    }
}
