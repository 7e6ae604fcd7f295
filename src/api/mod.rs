//! weir's resource types (group `weir.dev`, version `v1alpha1`) and their CRDs. Types and
//! defaults only: rules a schema cannot express live in `crate::validate`.

pub mod analysis;
pub mod contract;
pub mod experiment;
pub mod gitsync;
pub mod notification;
pub mod rollout;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
pub use gitsync::GitSync;
pub use rollout::Rollout;

pub use contract::GROUP;

/// Every CRD weir defines, in the order they should be installed, made installable on every
/// API server weir supports (1.20 and newer).
pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    [
        Rollout::crd(),
        AnalysisTemplate::crd(),
        ClusterAnalysisTemplate::crd(),
        AnalysisRun::crd(),
        experiment::Experiment::crd(),
        GitSync::crd(),
        notification::Notifier::crd(),
        notification::NotificationRule::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let mut value = serde_json::to_value(crd)?;
        schema::make_installable(&mut value);
        serde_json::from_value(value)
    })
    .collect()
}
