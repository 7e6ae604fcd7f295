//! What can stop a reconcile, in a small fixed set of categories that double as Event reasons
//! and metric labels. Every message names the object and the field to fix.

use crate::traffic::RouterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Service {namespace}/{name} (spec.strategy.canary.{field}) not found: create it, or fix the field"
    )]
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
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("the Rollout changed while it was reconciled; reconciling again")]
    Conflict,
    #[error("this replica lost the leader lease; the leader carries on")]
    NotLeader,
    #[error("managing the finalizer weir.dev/route-cleanup: {0}")]
    Finalizer(String),
    #[error(
        "the reconcile did not finish within {0:?}: a request to the API server or the router got no answer; trying again"
    )]
    Stalled(std::time::Duration),
}

impl Error {
    pub fn api(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::Api {
            action,
            kind,
            name,
            source,
        }
    }

    /// The bounded category: an Event reason and a metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingService { .. } => "MissingService",
            Error::MissingTemplate { .. } => "MissingTemplate",
            Error::InvalidAnalysis { .. } => "InvalidAnalysis",
            Error::Router(_) => "RouterError",
            Error::Api { .. } => "ApiError",
            Error::Conflict => "Conflict",
            Error::NotLeader => "NotLeader",
            Error::Finalizer(_) => "FinalizerError",
            Error::Stalled(_) => "Stalled",
        }
    }
}
