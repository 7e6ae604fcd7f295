//! What can stop a Rollout's reconcile: its own refusals (each message names the object and
//! the field to fix) and the shared ones (`runtime::error`), in one bounded set of categories
//! that double as Event reasons and metric labels.

use crate::runtime::error::{self, Classified};
use crate::traffic::RouterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Service {namespace}/{name} ({field}) not found: create it, or fix the field")]
    MissingService {
        namespace: String,
        name: String,
        field: &'static str,
    },
    #[error("{kind} {name} ({field}) not found: create it, or fix the field")]
    MissingTemplate {
        kind: &'static str,
        name: String,
        field: String,
    },
    #[error("cannot build the analysis run for {field}: {reason}")]
    InvalidAnalysis { field: String, reason: String },
    #[error("cannot build the experiment for {field}: {reason}")]
    InvalidExperiment { field: String, reason: String },
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("managing the finalizer weir.dev/route-cleanup: {0}")]
    Finalizer(String),
    /// An API error, a conflict, a lost lease, a stall.
    #[error(transparent)]
    Core(#[from] error::Error),
}

/// A Rollout's conflict and stall, in its words.
pub const CONFLICT: &str = "the Rollout changed while it was reconciled; reconciling again";

pub fn stalled(limit: std::time::Duration) -> Error {
    Error::Core(error::Error::Stalled {
        work: "the reconcile",
        waited_on: "the API server or the router",
        limit,
    })
}

impl Error {
    pub fn api(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let api = error::Error::api(action, kind, name);
        move |source| Error::Core(api(source))
    }
}

impl Classified for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::MissingService { .. } => "MissingService",
            Error::MissingTemplate { .. } => "MissingTemplate",
            Error::InvalidAnalysis { .. } => "InvalidAnalysis",
            Error::InvalidExperiment { .. } => "InvalidExperiment",
            Error::Router(_) => "RouterError",
            Error::Finalizer(_) => "FinalizerError",
            Error::Core(core) => core.category(),
        }
    }

    /// A missing Service, template or route is retried soon, as before: nothing watches
    /// Services, and the same apply often creates them a moment after the Rollout.
    fn transient(&self) -> bool {
        match self {
            Error::Router(RouterError::Api { source, .. }) => error::transient(source),
            Error::Core(core) => core.transient(),
            _ => true,
        }
    }

    fn core(&self) -> Option<&error::Error> {
        match self {
            Error::Core(core) => Some(core),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_stay_one_bounded_set() {
        let missing = Error::MissingService {
            namespace: "ns".into(),
            name: "web-stable".into(),
            field: "spec.strategy.canary.stableService",
        };
        assert_eq!(missing.category(), "MissingService");
        assert!(missing.transient(), "retried soon, as before");
        assert_eq!(Error::Finalizer("x".into()).category(), "FinalizerError");
        let refused = Error::api("reading", "Rollout", "web")(kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ));
        assert_eq!(refused.category(), "ApiError");
        assert!(!refused.transient());
        assert_eq!(
            stalled(std::time::Duration::from_secs(60)).category(),
            "Stalled"
        );
        assert_eq!(
            stalled(std::time::Duration::from_secs(60)).to_string(),
            "the reconcile did not finish within 60s: a request to the API server or the router got no answer; trying again"
        );
        assert_eq!(
            Error::from(error::Error::Conflict(CONFLICT)).to_string(),
            CONFLICT
        );
    }
}
