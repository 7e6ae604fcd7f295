//! The Experiment resource, in Argo Rollouts' shape (issue 27): ReplicaSets run side by side
//! for a while, with analyses over them. `crate::experiment::plan` is its course.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis::{AnalysisPhase, AnalysisRunMetadata, Argument, DryRun, MeasurementRetention};
use super::schema::{Unsupported, keep_unknown_fields, keeps_unknown_fields};

/// Argo's default: ten minutes for the templates' pods to become available.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Argo's default: pods kept thirty seconds after the experiment ends.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;

/// ReplicaSets run side by side for a while, judged by analyses: a baseline and a canary
/// started together, say, so that neither is older or warmer than the other.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Experiment",
    doc = "ReplicaSets run side by side for a while, judged by analyses.",
    namespaced,
    status = "ExperimentStatus",
    shortname = "wexp",
    category = "weir",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ExperimentSpec {
    /// The ReplicaSets to run (validation requires at least one).
    #[serde(default)]
    pub templates: Vec<ExperimentTemplate>,
    /// Analyses started once every template's pods are available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<ExperimentAnalysis>,
    /// How long it runs once available (`1h`); without it, until every analysis
    /// `requiredForCompletion` has succeeded, or it is terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Seconds the templates have from the start to become available (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// Seconds the pods are kept after the end (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Ends it now: Successful, unless an analysis already failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    /// Metrics (by name, `*` for all) measured but never deciding, in every analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Measurements kept per metric, in every analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Labels and annotations put on every analysis' AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// One ReplicaSet of an experiment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ExperimentTemplate {
    /// Names the ReplicaSet (`<experiment>-<name>`) and `{{templates.NAME.podTemplateHash}}`.
    pub name: String,
    /// Pods to run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Seconds a new pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// Selects the template's pods; must match `template.metadata.labels`.
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    /// A Service in front of the template's pods, made with its ReplicaSet and deleted once
    /// its pods are gone; its ports are the containers' ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<TemplateService>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The Service of an experiment template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateService {
    /// Its name (default: the ReplicaSet's, `<experiment>-<template>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One analysis of an experiment: a run made from templates, as a Rollout's step makes one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ExperimentAnalysis {
    /// Names the run (`<experiment>-<name>`).
    pub name: String,
    /// The AnalysisTemplate (or, with `clusterScope`, ClusterAnalysisTemplate) to run.
    pub template_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
    /// Values for the template's arguments; `{{templates.NAME.podTemplateHash}}` names a
    /// template's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Without a `duration`, the experiment is done when every such analysis succeeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required_for_completion: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// Pending until every template's pods are available, Running after, then its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When every template's pods were first available; the duration counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Time>,
    /// When it ended; the scale-down delay counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_statuses: Vec<TemplateStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<ExperimentAnalysisRunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A template's ReplicaSet as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStatus {
    pub name: String,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    /// The hash its pods carry (`rollouts-pod-template-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash: Option<String>,
    /// Its Service, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// An analysis' run and its phase, as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentAnalysisRunStatus {
    pub name: String,
    pub analysis_run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

keeps_unknown_fields!(ExperimentSpec, ExperimentTemplate, ExperimentAnalysis);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argos_documented_experiment_reads_with_its_defaults_left_out() {
        // Written from Argo Rollouts' Experiment documentation: two templates, an analysis.
        let experiment: Experiment = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "purple-vs-orange"},
            "spec": {"duration": "20m", "progressDeadlineSeconds": 30,
                "templates": [
                    {"name": "purple", "selector": {"matchLabels": {"app": "demo", "color": "purple"}},
                     "template": {"metadata": {"labels": {"app": "demo", "color": "purple"}},
                        "spec": {"containers": [{"name": "demo", "image": "demo:purple"}]}}},
                    {"name": "orange", "replicas": 2,
                     "selector": {"matchLabels": {"app": "demo", "color": "orange"}},
                     "template": {"metadata": {"labels": {"app": "demo", "color": "orange"}},
                        "spec": {"containers": [{"name": "demo", "image": "demo:orange"}]}}}],
                "analyses": [{"name": "purple", "templateName": "http-benchmark",
                    "args": [{"name": "host", "value": "purple"}]}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let spec = &experiment.spec;
        assert_eq!(spec.templates.len(), 2);
        assert_eq!(
            spec.templates[0].replicas, None,
            "Argo's default of 1 is weir's"
        );
        assert_eq!(spec.templates[1].replicas, Some(2));
        assert_eq!(spec.analyses[0].template_name, "http-benchmark");
        assert!(!spec.analyses[0].required_for_completion);
        assert!(spec.unsupported.is_empty(), "{:?}", spec.unsupported);
    }
}
