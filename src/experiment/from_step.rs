//! The Experiment a Rollout's `experiment` step starts, built from the step, the Rollout and
//! the stable version's pod template. Pure: the caller reads the stable ReplicaSet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::analysis::args::{self, Known};
use crate::api::Rollout;
use crate::api::contract::{
    ATTEMPT_LABEL, AnalysisKind, CANARY_HASH_LABEL, GIT_REVISION_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL, ROLLOUT_LABEL, STEP_LABEL,
};
use crate::api::experiment::{Experiment, ExperimentSpec, ExperimentTemplate, TemplateService};
use crate::api::rollout::{ExperimentStep, SpecRef};

/// The version a step's experiment is made for.
pub struct Made<'a> {
    /// The canary hash.
    pub hash: &'a str,
    /// The stable hash.
    pub stable: &'a str,
    pub attempt: i32,
    /// The step's index.
    pub step: usize,
}

/// `<rollout>-<hash>-<attempt>-<step>`, as a step's AnalysisRun is named.
pub fn name(rollout: &str, made: &Made<'_>) -> String {
    crate::analysis::run::name(
        rollout,
        made.hash,
        made.attempt,
        AnalysisKind::Step(made.step),
    )
}

/// The step's Experiment, owned by the Rollout and labelled as its runs are, so the Rollout
/// finds it again by attempt and step. `stable_template` is the stable version's pod template
/// as the Rollout had it. Arguments the Rollout resolves (`fieldRef`, `podTemplateHashValue`)
/// are resolved here; `{{templates.NAME.podTemplateHash}}` is left for the Experiment.
pub fn build(
    rollout: &Rollout,
    step: &ExperimentStep,
    stable_template: &PodTemplateSpec,
    made: &Made<'_>,
) -> Result<Experiment, String> {
    let rollout_name = rollout.name_any();
    let namespace = rollout.namespace().unwrap_or_default();
    let templates = step
        .templates
        .iter()
        .map(|template| {
            let mut pods = match template.spec_ref {
                SpecRef::Stable => stable_template.clone(),
                SpecRef::Canary => rollout.spec.template.clone(),
            };
            let metadata = pods.metadata.get_or_insert_with(ObjectMeta::default);
            let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
            // The Experiment hashes its own copy: the version's hash is not its.
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            if let Some(extra) = &template.metadata {
                labels.extend(extra.labels.clone());
                if !extra.annotations.is_empty() {
                    metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .extend(extra.annotations.clone());
                }
            }
            ExperimentTemplate {
                name: template.name.clone(),
                replicas: template.replicas,
                min_ready_seconds: (rollout.spec.min_ready_seconds > 0)
                    .then_some(rollout.spec.min_ready_seconds),
                selector: template
                    .selector
                    .clone()
                    .unwrap_or_else(|| rollout.spec.selector.clone()),
                template: pods,
                // A weighted template gets a Service: it is what the routers send its
                // share to (Argo Rollouts makes one too).
                service: template
                    .service
                    .clone()
                    .or_else(|| template.weight.map(|_| TemplateService::default())),
                ..ExperimentTemplate::default()
            }
        })
        .collect();
    let rollout_json = serde_json::to_value(rollout).unwrap_or_default();
    let known = Known {
        rollout: &rollout_json,
        kind: "Rollout",
        rollout_name: &rollout_name,
        namespace: &namespace,
        canary_hash: Some(made.hash),
        stable_hash: Some(made.stable),
    };
    let mut analyses = step.analyses.clone();
    for (index, analysis) in analyses.iter_mut().enumerate() {
        args::resolve(&mut analysis.args, &known).map_err(|why| {
            format!(
                "spec.strategy.canary.steps[{}].experiment.analyses[{index}]: {why}",
                made.step
            )
        })?;
    }
    let mut annotations = BTreeMap::new();
    if let Some(revision) = rollout.annotations().get(GIT_REVISION_ANNOTATION) {
        annotations.insert(GIT_REVISION_ANNOTATION.to_owned(), revision.clone());
    }
    let mut labels = BTreeMap::from([
        (ROLLOUT_LABEL.to_owned(), rollout_name.clone()),
        (CANARY_HASH_LABEL.to_owned(), made.hash.to_owned()),
        (ATTEMPT_LABEL.to_owned(), made.attempt.to_string()),
        (STEP_LABEL.to_owned(), made.step.to_string()),
    ]);
    crate::runtime::shard::follow_owner(&mut labels, rollout.labels());
    Ok(Experiment {
        metadata: ObjectMeta {
            name: Some(name(&rollout_name, made)),
            namespace: rollout.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: rollout.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: ExperimentSpec {
            templates,
            analyses,
            duration: step.duration.clone(),
            progress_deadline_seconds: Some(rollout.spec.progress_deadline_seconds),
            dry_run: step.dry_run.clone(),
            measurement_retention: step.measurement_retention.clone(),
            analysis_run_metadata: step.analysis_run_metadata.clone(),
            ..ExperimentSpec::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout() -> Rollout {
        let mut rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                "annotations": {GIT_REVISION_ANNOTATION: "abc123"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "strategy": {"canary": {"steps": [{"experiment": {
                    "duration": "10m",
                    "templates": [
                        {"name": "baseline", "specRef": "stable"},
                        {"name": "canary", "specRef": "canary", "replicas": 2,
                         "metadata": {"labels": {"role": "canary"}, "annotations": {"a": "b"}}}],
                    "analyses": [{"name": "judge", "templateName": "judge", "args": [
                        {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
                        {"name": "stable", "valueFrom": {"podTemplateHashValue": "Stable"}},
                        {"name": "rollout", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}]}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        rollout.metadata.uid = Some("u-1".into());
        rollout
    }

    fn stable_template() -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "s7"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn built(rollout: &Rollout) -> Experiment {
        let step = rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.steps[0].experiment.clone())
            .unwrap_or_default();
        let made = Made {
            hash: "c4",
            stable: "s7",
            attempt: 1,
            step: 0,
        };
        build(rollout, &step, &stable_template(), &made).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_step_makes_an_experiment_of_the_stable_and_the_canary_version() {
        let experiment = built(&rollout());
        assert_eq!(experiment.name_any(), "web-c4-1-0");
        let labels = experiment.labels();
        assert_eq!(labels[ROLLOUT_LABEL], "web");
        assert_eq!(labels[CANARY_HASH_LABEL], "c4");
        assert_eq!(labels[ATTEMPT_LABEL], "1");
        assert_eq!(labels[STEP_LABEL], "0");
        assert_eq!(experiment.annotations()[GIT_REVISION_ANNOTATION], "abc123");
        let owner = experiment.owner_references();
        assert_eq!(
            (owner[0].kind.as_str(), owner[0].controller),
            ("Rollout", Some(true))
        );

        let [baseline, canary] = &experiment.spec.templates[..] else {
            panic!("two templates: {:?}", experiment.spec.templates);
        };
        let image = |t: &ExperimentTemplate| {
            t.template
                .spec
                .as_ref()
                .map(|s| s.containers[0].image.clone())
        };
        assert_eq!(image(baseline), Some(Some("web:1".into())));
        assert_eq!(image(canary), Some(Some("web:2".into())));
        let pod_labels = |t: &ExperimentTemplate| {
            t.template
                .metadata
                .clone()
                .and_then(|m| m.labels)
                .unwrap_or_default()
        };
        assert!(!pod_labels(baseline).contains_key(POD_TEMPLATE_HASH_LABEL));
        assert_eq!(
            pod_labels(canary).get("role").map(String::as_str),
            Some("canary")
        );
        assert_eq!(baseline.replicas, None, "the Experiment's default of 1");
        assert_eq!(canary.replicas, Some(2));
        assert_eq!(baseline.selector, rollout().spec.selector);
        assert_eq!(experiment.spec.duration.as_deref(), Some("10m"));
        assert_eq!(experiment.spec.progress_deadline_seconds, Some(600));

        let args = &experiment.spec.analyses[0].args;
        let value = |name: &str| {
            args.iter()
                .find(|a| a.name == name)
                .and_then(|a| a.value.clone())
        };
        assert_eq!(
            value("baseline-hash").as_deref(),
            Some("{{templates.baseline.podTemplateHash}}"),
            "left for the Experiment"
        );
        assert_eq!(value("stable").as_deref(), Some("s7"));
        assert_eq!(value("rollout").as_deref(), Some("web"));
        // What the Experiment's own rules hold it to.
        assert_eq!(crate::validate::experiment(&experiment.spec), []);
    }
}
