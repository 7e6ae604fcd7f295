//! An Experiment's AnalysisRuns, built from its analyses and the templates they name. Pure:
//! the caller reads the templates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::analysis::args::{self, Known};
use crate::analysis::run::{self, Requested};
use crate::api::analysis::{AnalysisRun, AnalysisRunSpec, AnalysisTemplateSpec};
use crate::api::contract::{EXPERIMENT_ANALYSIS_LABEL, EXPERIMENT_LABEL};
use crate::api::experiment::{Experiment, ExperimentSpec};

/// `<experiment>-<analysis>`.
pub fn run_name(experiment: &str, analysis: &str) -> String {
    format!("{experiment}-{analysis}")
}

/// The experiment's analysis `index` as the analysis module reads one, at
/// `spec.analyses[index]`.
pub fn requested(spec: &ExperimentSpec, index: usize) -> Option<Requested<'_>> {
    let analysis = spec.analyses.get(index)?;
    Some(Requested::of_experiment(
        format!("spec.analyses[{index}]"),
        analysis,
        &spec.dry_run,
        &spec.measurement_retention,
        spec.analysis_run_metadata.as_ref(),
    ))
}

/// `text` with each `{{templates.NAME.podTemplateHash}}` replaced by that template's hash;
/// other placeholders (`{{args.x}}`) are left as they are. A name without a template is an
/// error naming it.
pub fn fill_template_hashes(
    text: &str,
    hashes: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut filled = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        filled.push_str(&rest[..start]);
        let body = after[..end].trim();
        let named = body
            .strip_prefix("templates.")
            .and_then(|b| b.strip_suffix(".podTemplateHash"));
        match named {
            Some(template) => match hashes.get(template) {
                Some(hash) => filled.push_str(hash),
                None => {
                    return Err(format!(
                        "{{{{templates.{template}.podTemplateHash}}}} names no template of the experiment"
                    ));
                }
            },
            None => filled.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    filled.push_str(rest);
    Ok(filled)
}

/// The run of analysis `index`: its templates merged with the experiment's settings, each
/// template's hash filled in, `fieldRef` read from the Experiment, under weir's own labels.
/// `hashes` are the templates' pod-template hashes by template name.
pub fn build(
    experiment: &Experiment,
    index: usize,
    templates: &[(String, AnalysisTemplateSpec)],
    hashes: &BTreeMap<String, String>,
) -> Result<AnalysisRun, String> {
    let Some(requested) = requested(&experiment.spec, index) else {
        return Err(format!("spec.analyses[{index}] does not exist"));
    };
    let analysis = &experiment.spec.analyses[index];
    let mut spec = run::merged(templates, &requested)?;
    for arg in &mut spec.args {
        if let Some(value) = arg.value.as_mut() {
            *value = fill_template_hashes(value, hashes)
                .map_err(|why| format!("argument {:?}: {why}", arg.name))?;
        }
    }
    let name = experiment.name_any();
    let namespace = experiment.namespace().unwrap_or_default();
    let experiment_json = serde_json::to_value(experiment).unwrap_or_default();
    args::resolve(
        &mut spec.args,
        &Known {
            rollout: &experiment_json,
            kind: "Experiment",
            rollout_name: &name,
            namespace: &namespace,
            canary_hash: None,
            stable_hash: None,
        },
    )?;
    if let Some(missing) = args::missing(&spec.args).first() {
        return Err(format!(
            "argument {missing:?} has no value: give it one in spec.analyses[{index}].args"
        ));
    }
    let (labels, annotations) = run::run_metadata(
        requested.metadata,
        [
            (EXPERIMENT_LABEL, name.clone()),
            (EXPERIMENT_ANALYSIS_LABEL, analysis.name.clone()),
        ],
        experiment.annotations(),
    );
    let mut labels = labels;
    crate::runtime::shard::follow_owner(&mut labels, experiment.labels());
    Ok(AnalysisRun {
        metadata: ObjectMeta {
            name: Some(run_name(&name, &analysis.name)),
            namespace: experiment.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: experiment.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: AnalysisRunSpec {
            template: spec,
            terminate: false,
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::contract::GIT_REVISION_ANNOTATION;
    use serde_json::json;

    fn experiment() -> Experiment {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "web-c4-1-0", "namespace": "shop", "uid": "u-2",
                "annotations": {GIT_REVISION_ANNOTATION: "abc123"}},
            "spec": {"templates": [],
                "dryRun": [{"metricName": "latency"}],
                "analysisRunMetadata": {"labels": {"team": "shop"}},
                "analyses": [{"name": "judge", "templateName": "judge", "args": [
                    {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
                    {"name": "canary-hash", "value": "{{ templates.canary.podTemplateHash }}"},
                    {"name": "where", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn template() -> AnalysisTemplateSpec {
        serde_json::from_value(json!({
            "args": [{"name": "baseline-hash"}, {"name": "canary-hash"}, {"name": "where"},
                {"name": "window", "value": "30s"}],
            "metrics": [{"name": "latency", "provider": {"prometheus": {"query": "up"}}}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn hashes() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("baseline".to_owned(), "b1".to_owned()),
            ("canary".to_owned(), "c2".to_owned()),
        ])
    }

    #[test]
    fn a_run_names_each_templates_pods_by_hash() {
        let run = build(
            &experiment(),
            0,
            &[("AnalysisTemplate judge".into(), template())],
            &hashes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.name_any(), "web-c4-1-0-judge");
        let value = |name: &str| {
            run.spec
                .template
                .args
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(value("baseline-hash"), "b1");
        assert_eq!(value("canary-hash"), "c2");
        assert_eq!(value("where"), "shop");
        assert_eq!(value("window"), "30s");
        let labels = run.labels();
        assert_eq!(labels[EXPERIMENT_LABEL], "web-c4-1-0");
        assert_eq!(labels[EXPERIMENT_ANALYSIS_LABEL], "judge");
        assert_eq!(labels["team"], "shop");
        assert_eq!(run.annotations()[GIT_REVISION_ANNOTATION], "abc123");
        assert_eq!(run.spec.template.dry_run.len(), 1);
        let owner = run.owner_references();
        assert_eq!(owner[0].kind, "Experiment");
    }

    #[test]
    fn weir_fills_no_hash_argument_of_an_experiments_analysis() {
        let mut experiment = experiment();
        experiment.spec.analyses[0]
            .args
            .retain(|a| a.name != "canary-hash");
        let error = build(
            &experiment,
            0,
            &[("AnalysisTemplate judge".into(), template())],
            &hashes(),
        )
        .err()
        .unwrap_or_default();
        assert!(error.contains("\"canary-hash\" has no value"), "{error}");
    }

    #[test]
    fn template_hashes_are_filled_and_other_placeholders_kept() {
        let hashes = hashes();
        let filled = fill_template_hashes(
            "pod=~\"web-{{templates.canary.podTemplateHash}}-.*\",x=\"{{args.x}}\" {{ templates.baseline.podTemplateHash }}{{",
            &hashes,
        );
        assert_eq!(
            filled.as_deref(),
            Ok("pod=~\"web-c2-.*\",x=\"{{args.x}}\" b1{{")
        );
        let unknown = fill_template_hashes("{{templates.other.podTemplateHash}}", &hashes);
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.contains("names no template")),
            "{unknown:?}"
        );
    }
}
