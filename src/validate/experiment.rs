//! The rules of Experiments: templates that can run (named, selecting their own pods),
//! analyses that name a template and only templates that exist, durations that read.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::{check_args, check_run_settings, placeholder_bodies};
use super::names::{NameRule, check_name};
use super::selector::check_selector;
use super::violation::{Report, Violation};
use crate::api::experiment::{ExperimentAnalysis, ExperimentSpec};
use crate::api::rollout::ExperimentStep;
use crate::duration;

/// `{{templates.NAME.podTemplateHash}}`: the names a text refers to.
pub fn template_hash_references(text: &str) -> Vec<&str> {
    placeholder_bodies(text)
        .into_iter()
        .filter_map(|body| {
            body.strip_prefix("templates.")?
                .strip_suffix(".podTemplateHash")
        })
        .collect()
}

/// The most templates, and analyses, one experiment may run: each is a ReplicaSet or an
/// AnalysisRun weir creates for whoever wrote the experiment.
pub const MAX_TEMPLATES: usize = 16;
pub const MAX_ANALYSES: usize = 16;

fn check_counts(report: &mut Report, at: &str, templates: usize, analyses: usize) {
    if templates > MAX_TEMPLATES {
        report.invalid(
            format!("{at}.templates"),
            format!("{templates} templates; an experiment runs at most {MAX_TEMPLATES}"),
        );
    }
    if analyses > MAX_ANALYSES {
        report.invalid(
            format!("{at}.analyses"),
            format!("{analyses} analyses; an experiment runs at most {MAX_ANALYSES}"),
        );
    }
}

pub fn experiment(spec: &ExperimentSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    if spec.templates.is_empty() {
        report.required("spec.templates", "an experiment runs at least one template");
    }
    check_counts(
        &mut report,
        "spec",
        spec.templates.len(),
        spec.analyses.len(),
    );
    let mut names = BTreeSet::new();
    for (index, template) in spec.templates.iter().enumerate() {
        let at = format!("spec.templates[{index}]");
        report.unsupported(&at, template);
        check_template_name(&mut report, &at, &template.name, &mut names);
        if template.replicas.is_some_and(|r| r < 0) {
            report.invalid(format!("{at}.replicas"), "must be 0 or more");
        }
        if template.min_ready_seconds.is_some_and(|s| s < 0) {
            report.invalid(format!("{at}.minReadySeconds"), "must be 0 or more");
        }
        check_selector(
            &mut report,
            &at,
            &template.selector,
            template
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref()),
        );
    }
    check_duration(&mut report, "spec", spec.duration.as_deref());
    if spec.progress_deadline_seconds.is_some_and(|s| s < 1) {
        report.invalid("spec.progressDeadlineSeconds", "must be at least 1");
    }
    if spec.scale_down_delay_seconds.is_some_and(|s| s < 0) {
        report.invalid("spec.scaleDownDelaySeconds", "must be 0 or more");
    }
    check_analyses(&mut report, "spec", &spec.analyses, &names);
    check_run_settings(
        &mut report,
        "spec",
        &spec.dry_run,
        &spec.measurement_retention,
        spec.analysis_run_metadata.as_ref(),
    );
    report.finish()
}

/// A canary step's experiment, at `at`; `pod_labels` are the Rollout's template's.
pub(super) fn check_step(
    report: &mut Report,
    at: &str,
    step: &ExperimentStep,
    pod_labels: Option<&BTreeMap<String, String>>,
) {
    report.unsupported(at, step);
    if step.templates.is_empty() {
        report.required(
            format!("{at}.templates"),
            "an experiment runs at least one template",
        );
    }
    check_counts(report, at, step.templates.len(), step.analyses.len());
    let mut names = BTreeSet::new();
    for (index, template) in step.templates.iter().enumerate() {
        let at = format!("{at}.templates[{index}]");
        report.unsupported(&at, template);
        check_template_name(report, &at, &template.name, &mut names);
        if template.replicas.is_some_and(|r| r < 0) {
            report.invalid(format!("{at}.replicas"), "must be 0 or more");
        }
        let mut labels = pod_labels.cloned().unwrap_or_default();
        if let Some(metadata) = &template.metadata {
            report.unsupported(&format!("{at}.metadata"), metadata);
            labels.extend(metadata.labels.clone());
        }
        // Without one, the Rollout's selector, which validation holds to its template.
        if let Some(selector) = &template.selector {
            check_selector(report, &at, selector, Some(&labels));
        }
    }
    check_duration(report, at, step.duration.as_deref());
    check_analyses(report, at, &step.analyses, &names);
    check_run_settings(
        report,
        at,
        &step.dry_run,
        &step.measurement_retention,
        step.analysis_run_metadata.as_ref(),
    );
}

/// The ReplicaSet is `<experiment>-<name>`: the name must be a label of its own, once.
fn check_template_name<'a>(
    report: &mut Report,
    at: &str,
    name: &'a str,
    names: &mut BTreeSet<&'a str>,
) {
    check_name(report, &format!("{at}.name"), name, NameRule::Dns1123Label);
    if !names.insert(name) {
        report.invalid(
            format!("{at}.name"),
            format!("template {name:?} is defined twice"),
        );
    }
}

fn check_duration(report: &mut Report, at: &str, duration: Option<&str>) {
    if let Some(text) = duration
        && let Err(error) = duration::parse(text)
    {
        report.invalid(format!("{at}.duration"), error.to_string());
    }
}

/// Analyses named once, each naming a template, its arguments well formed and referring
/// only to templates among `templates`.
fn check_analyses(
    report: &mut Report,
    at: &str,
    analyses: &[ExperimentAnalysis],
    templates: &BTreeSet<&str>,
) {
    let mut names = BTreeSet::new();
    for (index, analysis) in analyses.iter().enumerate() {
        let at = format!("{at}.analyses[{index}]");
        report.unsupported(&at, analysis);
        check_name(
            report,
            &format!("{at}.name"),
            &analysis.name,
            NameRule::Dns1123Label,
        );
        if !names.insert(analysis.name.as_str()) {
            report.invalid(
                format!("{at}.name"),
                format!("analysis {:?} is defined twice", analysis.name),
            );
        }
        if analysis.template_name.trim().is_empty() {
            report.required(
                format!("{at}.templateName"),
                "name the AnalysisTemplate to run",
            );
        }
        check_args(report, &format!("{at}.args"), &analysis.args);
        for (a, arg) in analysis.args.iter().enumerate() {
            for name in template_hash_references(arg.value.as_deref().unwrap_or_default()) {
                if !templates.contains(name) {
                    report.invalid(
                        format!("{at}.args[{a}].value"),
                        format!("refers to template {name:?}, which the experiment's templates do not define"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ViolationKind::{self, Invalid, Required};
    use serde_json::json;

    fn fields(violations: &[Violation]) -> Vec<(ViolationKind, &str)> {
        violations
            .iter()
            .map(|v| (v.kind, v.field.as_str()))
            .collect()
    }

    fn spec(value: serde_json::Value) -> ExperimentSpec {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn template(name: &str, color: &str) -> serde_json::Value {
        json!({"name": name, "selector": {"matchLabels": {"app": "demo", "color": color}},
            "template": {"metadata": {"labels": {"app": "demo", "color": color}},
                "spec": {"containers": [{"name": "demo", "image": format!("demo:{color}")}]}}})
    }

    #[test]
    fn a_baseline_and_canary_experiment_as_argo_documents_it_passes() {
        let spec = spec(json!({"duration": "1h",
            "templates": [template("baseline", "blue"), template("canary", "green")],
            "analyses": [{"name": "judge", "templateName": "canary-vs-baseline",
                "args": [
                    {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
                    {"name": "canary-hash", "value": "{{ templates.canary.podTemplateHash }}"}]}]}));
        assert_eq!(fields(&experiment(&spec)), []);
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut mismatched = template("canary", "green");
        mismatched["selector"]["matchLabels"]["color"] = json!("red");
        let spec = spec(json!({"duration": "an hour", "progressDeadlineSeconds": 0,
            "templates": [template("Baseline", "blue"), mismatched, template("canary", "green")],
            "analyses": [{"name": "judge", "templateName": " ",
                "args": [{"name": "h", "value": "{{templates.baseline.podTemplateHash}}"}]}]}));
        assert_eq!(
            fields(&experiment(&spec)),
            [
                (Required, "spec.analyses[0].templateName"),
                (Invalid, "spec.analyses[0].args[0].value"),
                (Invalid, "spec.duration"),
                (Invalid, "spec.progressDeadlineSeconds"),
                (Invalid, "spec.templates[0].name"),
                (Invalid, "spec.templates[1].template.metadata.labels"),
                (Invalid, "spec.templates[2].name"),
            ]
        );
        let empty = spec_of_nothing();
        assert_eq!(fields(&experiment(&empty)), [(Required, "spec.templates")]);
    }

    #[test]
    fn an_experiment_runs_a_bounded_number_of_templates_and_analyses() {
        let templates: Vec<_> = (0..=MAX_TEMPLATES)
            .map(|i| template(&format!("t{i}"), "blue"))
            .collect();
        let analyses: Vec<_> = (0..=MAX_ANALYSES)
            .map(|i| json!({"name": format!("a{i}"), "templateName": "t"}))
            .collect();
        let spec = spec(json!({"templates": templates, "analyses": analyses}));
        assert_eq!(
            fields(&experiment(&spec)),
            [(Invalid, "spec.analyses"), (Invalid, "spec.templates")]
        );
        let at_most = spec_with(MAX_TEMPLATES);
        assert_eq!(fields(&experiment(&at_most)), []);
    }

    fn spec_with(templates: usize) -> ExperimentSpec {
        let templates: Vec<_> = (0..templates)
            .map(|i| template(&format!("t{i}"), "blue"))
            .collect();
        spec(json!({"templates": templates}))
    }

    #[test]
    fn a_run_cannot_be_labelled_as_a_rollouts_own() {
        let spec = spec(json!({"templates": [template("baseline", "blue")],
            "analysisRunMetadata": {"labels": {"weir.dev/rollout": "web", "team": "shop"}}}));
        let violations = experiment(&spec);
        assert_eq!(
            fields(&violations),
            [(Invalid, "spec.analysisRunMetadata.labels")]
        );
        assert!(
            violations[0].message.contains("\"weir.dev/rollout\""),
            "{}",
            violations[0]
        );
    }

    fn spec_of_nothing() -> ExperimentSpec {
        ExperimentSpec::default()
    }

    #[test]
    fn template_hash_references_are_read_with_spaces_and_among_other_text() {
        assert_eq!(
            template_hash_references(
                "a-{{templates.baseline.podTemplateHash}}-{{ templates.canary.podTemplateHash }}-{{args.x}}"
            ),
            ["baseline", "canary"]
        );
        assert_eq!(
            template_hash_references("{{templates.x.name}} {{"),
            Vec::<&str>::new()
        );
    }
}
