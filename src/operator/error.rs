//! Reconcile errors, each with a fixed category (Event reason and metric
//! label) and a requeue policy by kind.

use std::time::Duration;

use sendfleet_render::render::RenderError;

/// Requeue after a transient API error (first retry; the controller's own
/// backoff grows from there).
pub const REQUEUE_TRANSIENT: Duration = Duration::from_secs(5);
/// Requeue while a referenced object is missing (it may be created soon).
pub const REQUEUE_MISSING_REFERENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be rendered as written; waits for a change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A referenced object (WarmupPlan, route pool) does not exist.
    #[error("missing reference: {0}")]
    MissingReference(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
}

impl Error {
    /// Fixed PascalCase category: Event reason and metric label (bounded).
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingReference(_) => "MissingReference",
            Error::Kube(_) => "KubeApi",
            Error::Serialize(..) => "Serialize",
        }
    }

    /// How long to wait before trying again; `None` waits for a change.
    pub fn requeue(&self) -> Option<Duration> {
        match self {
            Error::InvalidSpec(_) => None,
            Error::MissingReference(_) => Some(REQUEUE_MISSING_REFERENCE),
            Error::Kube(_) | Error::Serialize(..) => Some(REQUEUE_TRANSIENT),
        }
    }
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Reference { .. } => Error::MissingReference(e.to_string()),
            other => Error::InvalidSpec(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
