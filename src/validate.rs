//! Semantic validation of weir's resources: the rules a CRD schema cannot express. Pure: the
//! controller (as status conditions) and `kubectl weir lint` (offline) report the same
//! violations, each naming the field and what to do.

mod analysis;
mod gitsync;
mod names;
mod rollout;
mod routes;
mod violation;

use crate::api::analysis::AnalysisTemplateSpec;
use crate::api::gitsync::GitSyncSpec;
use crate::api::rollout::RolloutSpec;

pub use analysis::{
    MAX_QUERY_TIMEOUT_SECONDS, analysis_template, cluster_analysis_template, placeholders,
};
pub use gitsync::{SHA_LEN, git_sync, is_full_sha};
pub use rollout::rollout;
pub use violation::{Violation, ViolationKind};

/// The violations of one of weir's objects (`weir.dev/*`, by its `kind`), as the controllers
/// would find them; None for any other object. Err: its spec is not one weir reads.
pub fn object(object: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    if !object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("weir.dev/"))
    {
        return None;
    }
    object_as(object["kind"].as_str().unwrap_or_default(), &object["spec"])
}

/// The violations of a `spec` of weir's kind `kind`; None for a kind weir does not check.
pub fn object_as(kind: &str, spec: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    fn parse<T: serde::de::DeserializeOwned>(spec: &serde_json::Value) -> Result<T, String> {
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec does not parse: {e}"))
    }
    Some(match kind {
        "Rollout" => parse::<RolloutSpec>(spec).map(|s| rollout(&s)),
        "AnalysisTemplate" => parse::<AnalysisTemplateSpec>(spec).map(|s| analysis_template(&s)),
        "ClusterAnalysisTemplate" => {
            parse::<AnalysisTemplateSpec>(spec).map(|s| cluster_analysis_template(&s))
        }
        "GitSync" => parse::<GitSyncSpec>(spec).map(|s| git_sync(&s)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unknown_field_tests;
