//! The rules of Experiments: templates that can run (named, selecting their own pods),
//! analyses that name a template and only templates that exist, durations that read.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::{check_args, check_run_settings, placeholder_bodies};
use super::names::{NameRule, check_name};
use super::selector::check_selector;
use super::violation::{Report, Violation};
use crate::api::experiment::{ExperimentAnalysis, ExperimentSpec, TemplateService};
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
    let mut services = BTreeSet::new();
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
        if let Some(service) = &template.service {
            let ports = crate::api::rollout::declares_ports(&template.template);
            check_service(&mut report, &at, service, ports, (&mut services, &[]));
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

/// A template's Service: a valid name, given once among the templates and never one of
/// `taken` (the Rollout's own Services), and ports to serve.
fn check_service<'a>(
    report: &mut Report,
    at: &str,
    service: &'a TemplateService,
    ports: bool,
    (named, taken): (&mut BTreeSet<&'a str>, &[&str]),
) {
    if let Some(name) = &service.name {
        let field = format!("{at}.service.name");
        check_name(report, &field, name, NameRule::Dns1035Label);
        if taken.contains(&name.as_str()) {
            report.invalid(
                field,
                format!("Service {name} is the Rollout's own; name another"),
            );
        } else if !named.insert(name) {
            report.invalid(
                field,
                format!("Service {name} is named by another template too; name each apart"),
            );
        }
    }
    if !ports {
        report.invalid(
            format!("{at}.service"),
            "the template's containers declare no ports, so its Service would have none: add a containerPort, or remove service",
        );
    }
}

/// What a canary step's experiment may ask of the Rollout it runs in.
pub(super) struct StepContext<'a> {
    /// The Rollout's pod labels.
    pub pod_labels: Option<&'a BTreeMap<String, String>>,
    /// Whether the Rollout's containers declare a port.
    pub ports: bool,
    /// The canary's weight at this step (the last setWeight before it).
    pub canary_weight: i32,
    /// Why template weights cannot be routed (None: the Rollout's routers can carry them).
    pub no_weights: Option<&'static str>,
    /// The Rollout's own Services (stable and canary), which no template's may be.
    pub services: Vec<&'a str>,
}

/// A canary step's experiment, at `at`.
pub(super) fn check_step(
    report: &mut Report,
    at: &str,
    step: &ExperimentStep,
    context: &StepContext,
) {
    let pod_labels = context.pod_labels;
    report.unsupported(at, step);
    if step.templates.is_empty() {
        report.required(
            format!("{at}.templates"),
            "an experiment runs at least one template",
        );
    }
    check_counts(report, at, step.templates.len(), step.analyses.len());
    let mut names = BTreeSet::new();
    let mut services = BTreeSet::new();
    for (index, template) in step.templates.iter().enumerate() {
        let at = format!("{at}.templates[{index}]");
        report.unsupported(&at, template);
        check_template_name(report, &at, &template.name, &mut names);
        if template.replicas.is_some_and(|r| r < 0) {
            report.invalid(format!("{at}.replicas"), "must be 0 or more");
        }
        if let Some(weight) = template.weight {
            if !(0..=100).contains(&weight) {
                report.invalid(format!("{at}.weight"), "a percentage: 0 to 100");
            } else if let Some(why) = context.no_weights {
                report.invalid(format!("{at}.weight"), why);
            }
        }
        if let Some(service) = &template.service {
            let named = (&mut services, context.services.as_slice());
            check_service(report, &at, service, context.ports, named);
        } else if template.weight.is_some() && !context.ports {
            report.invalid(
                format!("{at}.weight"),
                "a weighted template gets a Service, and the Rollout's containers declare no ports for it: add a containerPort",
            );
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
    let weights: i64 = step
        .templates
        .iter()
        .filter_map(|t| t.weight)
        .map(|w| i64::from(w.clamp(0, 100)))
        .sum();
    if weights > 0 && weights + i64::from(context.canary_weight) > 100 {
        report.invalid(
            format!("{at}.templates"),
            format!(
                "the templates' weights ({weights}) and the canary's weight at this step ({}) add up to more than 100; the stable's share is what is left",
                context.canary_weight
            ),
        );
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
    fn a_templates_service_needs_a_port_and_a_service_name() {
        let mut served = template("baseline", "blue");
        served["service"] = json!({});
        served["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
        let mut named = served.clone();
        named["name"] = json!("canary");
        named["service"] = json!({"name": "canary-svc"});
        assert_eq!(
            fields(&experiment(&spec(json!({"templates": [served, named]})))),
            []
        );
        let mut twice = named.clone();
        twice["name"] = json!("again");
        assert_eq!(
            fields(&experiment(&spec(
                json!({"templates": [named.clone(), twice]})
            ))),
            [(Invalid, "spec.templates[1].service.name")]
        );
        let mut portless = template("baseline", "blue");
        portless["service"] = json!({"name": "9-lives"});
        assert_eq!(
            fields(&experiment(&spec(json!({"templates": [portless]})))),
            [
                (Invalid, "spec.templates[0].service"),
                (Invalid, "spec.templates[0].service.name")
            ]
        );
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
