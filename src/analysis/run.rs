//! The analyses a Rollout asks for, checking them against their templates, and building an
//! AnalysisRun for one canary. Pure: the caller fetches the templates.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::args::{self, Known};
use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisRun, AnalysisRunMetadata, AnalysisRunSpec, AnalysisTemplateSpec, Argument, DryRun,
    MeasurementRetention,
};
use crate::api::contract::{
    ATTEMPT_LABEL, AnalysisKind, CANARY_HASH_LABEL, GIT_REVISION_ANNOTATION, ROLLOUT_LABEL,
    STEP_LABEL, is_weirs_own,
};
use crate::api::experiment::ExperimentAnalysis;
use crate::api::rollout::{AnalysisTemplateRef, RolloutSpec, StepAnalysis};
use crate::validate::{self, Violation, ViolationKind};

/// One analysis a Rollout asks for: a canary step's, the canary's background one, or a
/// blue-green pre- or post-promotion analysis; or one an Experiment runs (a step's
/// experiment, or an Experiment of its own).
pub struct Requested<'a> {
    /// Where it is written: `spec.strategy.canary.steps[2].analysis`.
    pub field: String,
    /// Which of the Rollout's runs it is; None for an Experiment's analysis, which the
    /// Experiment runs.
    pub kind: Option<AnalysisKind>,
    /// The templates it names: an Experiment's analysis names one, by `templateName`.
    pub templates: Cow<'a, [AnalysisTemplateRef]>,
    pub args: &'a [Argument],
    /// Metrics measured but never deciding, on top of the templates' own list.
    pub dry_run: &'a [DryRun],
    /// Measurements kept per metric; ahead of the templates' own entries.
    pub measurement_retention: &'a [MeasurementRetention],
    /// Labels and annotations for the run.
    pub metadata: Option<&'a AnalysisRunMetadata>,
}

impl<'a> Requested<'a> {
    fn of(field: String, kind: AnalysisKind, analysis: &'a StepAnalysis) -> Self {
        Requested {
            field,
            kind: Some(kind),
            templates: Cow::Borrowed(&analysis.templates),
            args: &analysis.args,
            dry_run: &analysis.dry_run,
            measurement_retention: &analysis.measurement_retention,
            metadata: analysis.analysis_run_metadata.as_ref(),
        }
    }

    /// One analysis of an Experiment, `at` where it is written
    /// (`spec.analyses[0]`), with the settings its Experiment gives every analysis.
    pub fn of_experiment(
        at: String,
        analysis: &'a ExperimentAnalysis,
        dry_run: &'a [DryRun],
        measurement_retention: &'a [MeasurementRetention],
        metadata: Option<&'a AnalysisRunMetadata>,
    ) -> Self {
        Requested {
            field: at,
            kind: None,
            templates: Cow::Owned(vec![AnalysisTemplateRef {
                template_name: analysis.template_name.clone(),
                cluster_scope: analysis.cluster_scope,
                ..AnalysisTemplateRef::default()
            }]),
            args: &analysis.args,
            dry_run,
            measurement_retention,
            metadata,
        }
    }

    /// Where its template `root` is named: `<field>.templates[root]`, or an Experiment
    /// analysis' `<field>.templateName`.
    pub fn template_field(&self, root: usize) -> String {
        match self.kind {
            Some(_) => format!("{}.templates[{root}]", self.field),
            None => format!("{}.templateName", self.field),
        }
    }
}

/// Every analysis of a Rollout: the canary steps' in order, then the background analysis;
/// or blue-green's pre- and post-promotion analyses.
pub fn requested(spec: &RolloutSpec) -> Vec<Requested<'_>> {
    if let Some(blue_green) = spec.strategy.blue_green.as_ref() {
        let at = "spec.strategy.blueGreen";
        return [
            (
                "prePromotionAnalysis",
                AnalysisKind::PrePromotion,
                &blue_green.pre_promotion_analysis,
            ),
            (
                "postPromotionAnalysis",
                AnalysisKind::PostPromotion,
                &blue_green.post_promotion_analysis,
            ),
        ]
        .into_iter()
        .filter_map(|(field, kind, analysis)| {
            analysis
                .as_ref()
                .map(|a| Requested::of(format!("{at}.{field}"), kind, a))
        })
        .collect();
    }
    let Some(canary) = spec.strategy.canary.as_ref() else {
        return Vec::new();
    };
    let steps = canary.steps.iter().enumerate().filter_map(|(index, step)| {
        step.analysis.as_ref().map(|a| {
            Requested::of(
                format!("spec.strategy.canary.steps[{index}].analysis"),
                AnalysisKind::Step(index),
                a,
            )
        })
    });
    let background = canary.analysis.as_ref().map(|a| Requested {
        field: "spec.strategy.canary.analysis".into(),
        kind: Some(AnalysisKind::Background),
        templates: Cow::Borrowed(&a.templates),
        args: &a.args,
        dry_run: &a.dry_run,
        measurement_retention: &a.measurement_retention,
        metadata: a.analysis_run_metadata.as_ref(),
    });
    // An experiment step's analyses are the Experiment's to run, but checked with the
    // Rollout's: a missing template stops the rollout before the Experiment starts.
    let experiments = canary.steps.iter().enumerate().flat_map(|(index, step)| {
        step.experiment.iter().flat_map(move |experiment| {
            experiment
                .analyses
                .iter()
                .enumerate()
                .map(move |(a, analysis)| {
                    Requested::of_experiment(
                        format!("spec.strategy.canary.steps[{index}].experiment.analyses[{a}]"),
                        analysis,
                        &experiment.dry_run,
                        &experiment.measurement_retention,
                        experiment.analysis_run_metadata.as_ref(),
                    )
                })
        })
    });
    steps.chain(background).chain(experiments).collect()
}

fn kind(reference: &AnalysisTemplateRef) -> &'static str {
    if reference.cluster_scope {
        "ClusterAnalysisTemplate"
    } else {
        "AnalysisTemplate"
    }
}

/// How many templates one analysis may reach, composition included: each is read from the
/// API server when a run is made, and a template may name others without end.
pub const MAX_TEMPLATES: usize = 32;

/// Templates read so far, by scope (cluster-wide or not) and name; None: it does not exist.
pub type Fetched = BTreeMap<(bool, String), Option<AnalysisTemplateSpec>>;

/// The key a reference is read and remembered by.
pub fn key(reference: &AnalysisTemplateRef) -> (bool, String) {
    (reference.cluster_scope, reference.template_name.clone())
}

/// A template an analysis reaches: one it names, or one composed into a template it reaches
/// (Argo Rollouts' `spec.templates`).
#[derive(Debug)]
pub struct Reached<'a> {
    pub reference: &'a AnalysisTemplateRef,
    /// Which of the analysis' own `templates` it was reached from.
    pub root: usize,
    /// The templates that compose it, outermost first; empty when the analysis names it.
    pub through: Vec<&'a AnalysisTemplateRef>,
    /// None: it does not exist.
    pub spec: Option<&'a AnalysisTemplateSpec>,
}

impl Reached<'_> {
    /// `AnalysisTemplate error-rate`, or `AnalysisTemplate error-rate (in AnalysisTemplate
    /// rates)` when composed.
    pub fn label(&self) -> String {
        let own = format!("{} {}", kind(self.reference), self.reference.template_name);
        if self.through.is_empty() {
            return own;
        }
        let through: Vec<String> = self
            .through
            .iter()
            .rev()
            .map(|r| format!("{} {}", kind(r), r.template_name))
            .collect();
        format!("{own} (in {})", through.join(" in "))
    }
}

/// What an analysis reaches with the templates read so far.
#[derive(Debug, Default)]
pub struct Reach<'a> {
    /// Each template once, in Argo Rollouts' order: a template before those it composes.
    pub reached: Vec<Reached<'a>>,
    /// Named by a template reached (or by the analysis) but not read yet.
    pub unread: Vec<AnalysisTemplateRef>,
    /// More than [`MAX_TEMPLATES`]: the walk stopped there.
    pub beyond_limit: bool,
}

impl Reach<'_> {
    /// Every template reached was read and exists.
    pub fn complete(&self) -> bool {
        !self.beyond_limit
            && self.unread.is_empty()
            && self.reached.iter().all(|r| r.spec.is_some())
    }
}

/// Walks from an analysis' templates through the ones they compose, each once (a template
/// reached twice, or a cycle, is taken once), at most [`MAX_TEMPLATES`]. The caller reads
/// `unread` and walks again until nothing is left unread.
pub fn reach<'a>(roots: &'a [AnalysisTemplateRef], fetched: &'a Fetched) -> Reach<'a> {
    let mut reach = Reach::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<(&AnalysisTemplateRef, usize, Vec<&AnalysisTemplateRef>)> = roots
        .iter()
        .enumerate()
        .rev()
        .map(|(root, reference)| (reference, root, Vec::new()))
        .collect();
    while let Some((reference, root, through)) = stack.pop() {
        if !seen.insert(key(reference)) {
            continue;
        }
        if reach.reached.len() + reach.unread.len() == MAX_TEMPLATES {
            reach.beyond_limit = true;
            break;
        }
        let Some(spec) = fetched.get(&key(reference)) else {
            reach.unread.push(reference.clone());
            continue;
        };
        if let Some(spec) = spec {
            let mut inner = through.clone();
            inner.push(reference);
            for composed in spec.templates.iter().rev() {
                stack.push((composed, root, inner.clone()));
            }
        }
        reach.reached.push(Reached {
            reference,
            root,
            through,
            spec: spec.as_ref(),
        });
    }
    reach
}

/// Checks an analysis against the templates it reaches (those not found are reported when
/// the run is started): each template must be valid, no metric may be defined twice, and
/// every argument a template declares without a default must be given by the Rollout or
/// filled by weir. Findings name the Rollout field, the template (and what composes it) and
/// the template's own field.
pub fn check(requested: &Requested<'_>, reach: &Reach<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    if reach.beyond_limit {
        violations.push(Violation {
            kind: ViolationKind::Invalid,
            field: match requested.kind {
                Some(_) => format!("{}.templates", requested.field),
                None => requested.template_field(0),
            },
            message: format!(
                "reaches more than {MAX_TEMPLATES} templates, counting those they compose: name fewer, or compose fewer"
            ),
        });
    }
    let found: Vec<(&Reached<'_>, &AnalysisTemplateSpec)> = reach
        .reached
        .iter()
        .filter_map(|r| r.spec.map(|spec| (r, spec)))
        .collect();
    let mut defined_by: BTreeMap<&str, String> = BTreeMap::new();
    for (reached, template) in &found {
        let at = requested.template_field(reached.root);
        let label = reached.label();
        let problems = if reached.reference.cluster_scope {
            validate::cluster_analysis_template(template)
        } else {
            validate::analysis_template(template)
        };
        for problem in problems {
            violations.push(Violation {
                kind: problem.kind,
                field: at.clone(),
                message: format!("{label}: {problem}"),
            });
        }
        for metric in &template.metrics {
            if let Some(first) = defined_by.insert(&metric.name, label.clone()) {
                violations.push(Violation {
                    kind: ViolationKind::Invalid,
                    field: at.clone(),
                    message: format!(
                        "metric {:?} is defined by both {first} and {label}: a run measures each metric once",
                        metric.name
                    ),
                });
            }
        }
        for arg in &template.args {
            let given = requested.args.iter().any(|a| a.name == arg.name);
            let defaulted =
                |a: &Argument| a.name == arg.name && (a.value.is_some() || a.value_from.is_some());
            let elsewhere = found.iter().any(|(_, t)| t.args.iter().any(defaulted));
            // weir fills its own arguments for a Rollout's runs; an Experiment's analysis
            // names its versions with `{{templates.NAME.podTemplateHash}}` instead.
            let filled = requested.kind.is_some() && args::is_filled_by_weir(&arg.name);
            if !(given || elsewhere || filled) {
                violations.push(Violation {
                    kind: ViolationKind::Required,
                    field: format!("{}.args", requested.field),
                    message: format!(
                        "{label} needs argument {:?}: give it a value here",
                        arg.name
                    ),
                });
            }
        }
    }
    // Dry-run and retention entries of the Rollout, and of a template that composes others,
    // name metrics of everything reached: checked once all of it was read.
    if reach.complete() {
        let metrics: Vec<&str> = found
            .iter()
            .flat_map(|(_, t)| t.metrics.iter().map(|m| m.name.as_str()))
            .collect();
        let named = |at: &str, list: &str, index: usize, metric: &str| {
            (metric != "*" && !metrics.contains(&metric)).then(|| Violation {
                kind: ViolationKind::Invalid,
                field: format!("{at}.{list}[{index}].metricName"),
                message: format!(
                    "{metric:?} is not a metric of the templates named here (use \"*\" for all)"
                ),
            })
        };
        let field = requested.field.as_str();
        let dry_run = requested.dry_run.iter().enumerate();
        violations.extend(dry_run.filter_map(|(i, d)| named(field, "dryRun", i, &d.metric_name)));
        let kept = requested.measurement_retention.iter().enumerate();
        violations.extend(
            kept.filter_map(|(i, r)| named(field, "measurementRetention", i, &r.metric_name)),
        );
        for (reached, template) in found.iter().filter(|(_, t)| !t.templates.is_empty()) {
            let at = requested.template_field(reached.root);
            let label = reached.label();
            let in_template = |list: &str, index: usize, metric: &str| {
                named("spec", list, index, metric).map(|v| Violation {
                    field: at.clone(),
                    message: format!("{label}: {}: {}", v.field, v.message),
                    ..v
                })
            };
            let dry_run = template.dry_run.iter().enumerate();
            violations
                .extend(dry_run.filter_map(|(i, d)| in_template("dryRun", i, &d.metric_name)));
            let kept = template.measurement_retention.iter().enumerate();
            violations.extend(
                kept.filter_map(|(i, r)| in_template("measurementRetention", i, &r.metric_name)),
            );
        }
    }
    violations.sort();
    violations.dedup();
    violations
}

/// Identifies a run: `<rollout>-<hash>-<attempt>-<step index | bg | pre | post>`.
pub fn name(rollout: &str, hash: &str, attempt: i32, kind: AnalysisKind) -> String {
    format!("{rollout}-{hash}-{attempt}-{}", kind.name_suffix())
}

/// The canary a run is built for.
pub struct Canary<'a> {
    pub hash: &'a str,
    pub stable: &'a str,
    pub attempt: i32,
    pub kind: AnalysisKind,
}

/// The run's template: the templates merged (metrics, dry-run and retention lists in order,
/// arguments by name), the analysis' arguments set over the templates' defaults, its dry-run
/// entries added and its retention entries put first (so they win). A metric name that
/// repeats across templates is an error naming both.
pub fn merged(
    templates: &[(String, AnalysisTemplateSpec)],
    requested: &Requested<'_>,
) -> Result<AnalysisTemplateSpec, String> {
    let mut spec = AnalysisTemplateSpec::default();
    let mut metric_from: BTreeMap<String, String> = BTreeMap::new();
    for (template, template_spec) in templates {
        for metric in &template_spec.metrics {
            if let Some(first) = metric_from.insert(metric.name.clone(), template.clone()) {
                return Err(format!(
                    "metric {:?} is defined by both template {first} and template {template}",
                    metric.name
                ));
            }
            spec.metrics.push(metric.clone());
        }
        for arg in &template_spec.args {
            let has_value = arg.value.is_some() || arg.value_from.is_some();
            match spec.args.iter_mut().find(|a| a.name == arg.name) {
                None => spec.args.push(arg.clone()),
                // A default from a later template fills a declaration without one, as
                // `check` assumes; the first default stays otherwise.
                Some(slot) if has_value && slot.value.is_none() && slot.value_from.is_none() => {
                    *slot = arg.clone();
                }
                Some(_) => {}
            }
        }
        spec.dry_run.extend(template_spec.dry_run.iter().cloned());
        spec.measurement_retention
            .extend(template_spec.measurement_retention.iter().cloned());
    }
    spec.dry_run.extend(requested.dry_run.iter().cloned());
    spec.measurement_retention = requested
        .measurement_retention
        .iter()
        .chain(&spec.measurement_retention)
        .cloned()
        .collect();
    for arg in requested.args {
        match spec.args.iter_mut().find(|a| a.name == arg.name) {
            Some(slot) => *slot = arg.clone(),
            None => spec.args.push(arg.clone()),
        }
    }
    Ok(spec)
}

/// A run's labels and annotations: the analysis' run metadata without weir's own keys
/// (validation refuses them; a run is never labelled as another's), then weir's labels, by
/// which it finds its runs, and the Git revision the measured version came from (from its
/// owner's annotations), for `kubectl weir history`.
pub fn run_metadata<const N: usize>(
    wanted: Option<&AnalysisRunMetadata>,
    own: [(&str, String); N],
    owner_annotations: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let wanted = wanted.cloned().unwrap_or_default();
    let mut labels = wanted.labels;
    labels.retain(|key, _| !is_weirs_own(key));
    labels.extend(own.map(|(key, value)| (key.to_owned(), value)));
    let mut annotations = wanted.annotations;
    if let Some(revision) = owner_annotations.get(GIT_REVISION_ANNOTATION) {
        annotations.insert(GIT_REVISION_ANNOTATION.to_owned(), revision.clone());
    }
    (labels, annotations)
}

/// A run for one canary: the templates `merged`, the Rollout-side sources resolved, the
/// analysis' run metadata on it under weir's own labels. Arguments left without a value are
/// errors naming them.
pub fn build(
    rollout: &Rollout,
    templates: &[(String, AnalysisTemplateSpec)],
    requested: &Requested<'_>,
    target: &Canary<'_>,
) -> Result<AnalysisRun, String> {
    let Canary {
        hash,
        stable,
        attempt,
        kind,
    } = *target;
    let mut spec = merged(templates, requested)?;
    let rollout_name = rollout.name_any();
    let namespace = rollout.namespace().unwrap_or_default();
    let rollout_json = serde_json::to_value(rollout).unwrap_or_default();
    args::resolve(
        &mut spec.args,
        &Known {
            rollout: &rollout_json,
            kind: "Rollout",
            rollout_name: &rollout_name,
            namespace: &namespace,
            canary_hash: Some(hash),
            stable_hash: Some(stable),
        },
    )?;
    if let Some(missing) = args::missing(&spec.args).first() {
        return Err(format!(
            "argument {missing:?} has no value: give it one in the analysis args"
        ));
    }
    let (labels, annotations) = run_metadata(
        requested.metadata,
        [
            (ROLLOUT_LABEL, rollout_name.clone()),
            (CANARY_HASH_LABEL, hash.to_owned()),
            (ATTEMPT_LABEL, attempt.to_string()),
            (STEP_LABEL, kind.label()),
        ],
        rollout.annotations(),
    );
    let mut labels = labels;
    crate::runtime::shard::follow_owner(&mut labels, rollout.labels());
    Ok(AnalysisRun {
        metadata: ObjectMeta {
            name: Some(name(&rollout_name, hash, attempt, kind)),
            namespace: rollout.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: kube::Resource::controller_owner_ref(rollout, &()).map(|o| vec![o]),
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
    use serde_json::json;

    fn template(metrics: &[&str], args: serde_json::Value) -> AnalysisTemplateSpec {
        let metrics: Vec<_> = metrics
            .iter()
            .map(|m| json!({"name": m, "successCondition": "true", "provider": {"prometheus": {"query": "up"}}}))
            .collect();
        serde_json::from_value(json!({"metrics": metrics, "args": args})).expect("template")
    }

    fn rollout() -> Rollout {
        let mut rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}, "strategy": {"canary": {}}}
        }))
        .expect("rollout");
        rollout.metadata.uid = Some("uid-1".into());
        rollout
    }

    #[test]
    fn templates_merge_and_step_args_win() {
        let templates = vec![
            (
                "a".to_string(),
                template(
                    &["success"],
                    json!([{"name": "service"}, {"name": "window", "value": "1m"}]),
                ),
            ),
            (
                "b".to_string(),
                template(&["latency"], json!([{"name": "window", "value": "5m"}])),
            ),
        ];
        let args: Vec<Argument> =
            serde_json::from_value(json!([{"name": "service", "value": "web-canary"}]))
                .expect("args");
        let target = Canary {
            hash: "abc",
            stable: "s1",
            attempt: 1,
            kind: AnalysisKind::Step(2),
        };
        let run = build(&rollout(), &templates, &asking(&args), &target).expect("builds");
        assert_eq!(run.metadata.name.as_deref(), Some("web-abc-1-2"));
        let names: Vec<_> = run
            .spec
            .template
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, vec!["success", "latency"]);
        let args: Vec<_> = run
            .spec
            .template
            .args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_deref()))
            .collect();
        assert_eq!(
            args,
            vec![("service", Some("web-canary")), ("window", Some("1m"))],
            "the first template's default stays"
        );
        let labels = run.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(STEP_LABEL).map(String::as_str), Some("2"));
        assert_eq!(labels.get(ATTEMPT_LABEL).map(String::as_str), Some("1"));
        let owners = run.metadata.owner_references.unwrap_or_default();
        assert_eq!(
            owners.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(),
            vec!["uid-1"]
        );
    }

    #[test]
    fn a_rollouts_dry_run_retention_and_run_metadata_reach_the_run() {
        let mut first = template(&["rate", "latency"], json!([]));
        first.measurement_retention =
            serde_json::from_value(json!([{"metricName": "rate", "limit": 3}])).expect("retention");
        let templates = vec![("a".to_string(), first)];
        let analysis: StepAnalysis = serde_json::from_value(json!({
            "templates": [{"templateName": "a"}],
            "dryRun": [{"metricName": "latency"}],
            "measurementRetention": [{"metricName": "rate", "limit": 20}],
            "analysisRunMetadata": {
                "labels": {"team": "web", (ROLLOUT_LABEL): "someone-else"},
                "annotations": {"note": "canary of the week"}
            }
        }))
        .expect("step analysis");
        let requested = Requested::of(
            "spec.strategy.canary.steps[2].analysis".into(),
            AnalysisKind::Step(2),
            &analysis,
        );
        let target = Canary {
            hash: "abc",
            stable: "s1",
            attempt: 1,
            kind: AnalysisKind::Step(2),
        };
        let run = build(&rollout(), &templates, &requested, &target).expect("builds");
        let labels = run.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(ROLLOUT_LABEL).map(String::as_str),
            Some("web"),
            "weir's own labels win"
        );
        let annotations = run.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("note").map(String::as_str),
            Some("canary of the week")
        );
        let schedules =
            crate::analysis::assess::schedules(&run.spec, &Default::default()).expect("schedules");
        let of = |name: &str| {
            schedules
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .expect("metric")
        };
        assert!(of("latency").dry_run, "the Rollout's dry run applies");
        assert!(!of("rate").dry_run);
        assert_eq!(of("rate").retention, 20, "the Rollout's retention wins");
    }

    #[test]
    fn a_rollouts_dry_run_and_retention_must_name_metrics_of_its_templates() {
        let analysis: StepAnalysis = serde_json::from_value(json!({
            "templates": [{"templateName": "a"}],
            "dryRun": [{"metricName": "*"}, {"metricName": "latncy"}],
            "measurementRetention": [{"metricName": "rate", "limit": 2}, {"metricName": "nope", "limit": 2}]
        }))
        .expect("step analysis");
        let requested = Requested::of(
            "spec.strategy.canary.analysis".into(),
            AnalysisKind::Background,
            &analysis,
        );
        let found = template(&["rate", "latency"], json!([]));
        let fields: Vec<String> = check_with(&requested, &[Some(&found)])
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.strategy.canary.analysis.dryRun[1].metricName",
                "spec.strategy.canary.analysis.measurementRetention[1].metricName",
            ]
        );
        assert!(
            check_with(&requested, &[None]).is_empty(),
            "a missing template is reported elsewhere"
        );
    }

    #[test]
    fn a_metric_in_two_templates_is_an_error_naming_both() {
        let templates = vec![
            ("a".to_string(), template(&["m"], json!([]))),
            ("b".to_string(), template(&["m"], json!([]))),
        ];
        let target = Canary {
            hash: "abc",
            stable: "s1",
            attempt: 0,
            kind: AnalysisKind::Background,
        };
        let error = build(&rollout(), &templates, &asking(&[]), &target).expect_err("duplicate");
        assert!(
            error.contains("template a") && error.contains("template b"),
            "{error}"
        );
    }

    /// Checks with the templates the analysis names read as `specs`, in its order.
    fn check_with(
        requested: &Requested<'_>,
        specs: &[Option<&AnalysisTemplateSpec>],
    ) -> Vec<Violation> {
        let fetched: Fetched = requested
            .templates
            .iter()
            .zip(specs)
            .map(|(r, spec)| (key(r), spec.cloned()))
            .collect();
        check(requested, &reach(&requested.templates, &fetched))
    }

    /// A step analysis that gives `args` and nothing else.
    fn asking(args: &[Argument]) -> Requested<'_> {
        Requested {
            field: "spec.strategy.canary.steps[2].analysis".into(),
            kind: Some(AnalysisKind::Step(2)),
            templates: Cow::Borrowed(&[]),
            args,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        }
    }

    fn requested_of(args: serde_json::Value) -> (Vec<AnalysisTemplateRef>, Vec<Argument>) {
        let refs = serde_json::from_value(
            json!([{"templateName": "a"}, {"templateName": "shared", "clusterScope": true}]),
        )
        .expect("refs");
        (refs, serde_json::from_value(args).expect("args"))
    }

    #[test]
    fn checks_name_rollout_field_template_and_template_field() {
        let (refs, args) = requested_of(json!([]));
        let requested = Requested {
            field: "spec.strategy.canary.steps[1].analysis".into(),
            kind: Some(AnalysisKind::Step(1)),
            templates: Cow::Borrowed(&refs),
            args: &args,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        };
        let mut broken = template(&["m"], json!([]));
        broken.metrics[0].success_condition = Some("all(result, # < 1)".into());
        let shared = template(&["n"], json!([]));
        let problems = check_with(&requested, &[Some(&broken), Some(&shared)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].field,
            "spec.strategy.canary.steps[1].analysis.templates[0]"
        );
        assert!(
            problems[0]
                .message
                .starts_with("AnalysisTemplate a: spec.metrics[0].successCondition: not valid CEL"),
            "{}",
            problems[0].message
        );
        assert!(
            check_with(&requested, &[None, None]).is_empty(),
            "missing templates are reported when a run starts"
        );
    }

    #[test]
    fn a_cluster_template_is_held_to_the_cluster_rules() {
        let (refs, args) = requested_of(json!([]));
        let requested = Requested {
            field: "spec.strategy.canary.analysis".into(),
            kind: Some(AnalysisKind::Background),
            templates: Cow::Borrowed(&refs),
            args: &args,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        };
        let mut with_token = template(&["m"], json!([]));
        with_token.metrics[0]
            .provider
            .prometheus
            .as_mut()
            .expect("prometheus")
            .headers =
            serde_json::from_value(json!([{"key": "Authorization", "value": "Bearer xyz"}]))
                .expect("headers");
        let other = template(&["n"], json!([]));
        // Namespaced (refs[0]): the tenant's own header, in the tenant's own runs.
        assert!(check_with(&requested, &[Some(&with_token), Some(&other)]).is_empty());
        // Cluster-wide (refs[1]): it would be copied into every tenant's runs.
        let problems = check_with(&requested, &[Some(&other), Some(&with_token)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.starts_with(
                "ClusterAnalysisTemplate shared: spec.metrics[0].provider.prometheus.headers[0].value"
            ),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn every_declared_argument_must_be_given_somewhere() {
        let needs = template(
            &["m"],
            json!([{"name": "service"}, {"name": "canary-hash"}, {"name": "window"}]),
        );
        let gives_window = template(&["n"], json!([{"name": "window", "value": "5m"}]));
        let (refs, none) = requested_of(json!([]));
        let requested = Requested {
            field: "spec.strategy.canary.analysis".into(),
            kind: Some(AnalysisKind::Background),
            templates: Cow::Borrowed(&refs),
            args: &none,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        };
        let problems = check_with(&requested, &[Some(&needs), Some(&gives_window)]);
        let messages: Vec<_> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            vec![(
                "spec.strategy.canary.analysis.args",
                "AnalysisTemplate a needs argument \"service\": give it a value here"
            )],
            "canary-hash is weir's, window has a default in the other template"
        );
        let (_, given) = requested_of(json!([{"name": "service", "value": "web"}]));
        let requested = Requested {
            args: &given,
            ..requested
        };
        assert!(check_with(&requested, &[Some(&needs), Some(&gives_window)]).is_empty());
    }

    #[test]
    fn building_resolves_rollout_sources_and_rejects_what_is_left_empty() {
        let templates = vec![(
            "a".to_string(),
            template(
                &["m"],
                json!([{"name": "stable"}, {"name": "stable-hash"}, {"name": "who"}]),
            ),
        )];
        let args: Vec<Argument> = serde_json::from_value(json!([
            {"name": "stable", "valueFrom": {"podTemplateHashValue": "Stable"}},
            {"name": "who", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ]))
        .expect("args");
        let target = Canary {
            hash: "c1",
            stable: "s1",
            attempt: 0,
            kind: AnalysisKind::Step(0),
        };
        let run = build(&rollout(), &templates, &asking(&args), &target).expect("builds");
        let values: Vec<_> = run
            .spec
            .template
            .args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_deref()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("stable", Some("s1")),
                ("stable-hash", Some("s1")),
                ("who", Some("shop"))
            ]
        );
        let filled_later = vec![
            (
                "a".to_string(),
                template(&["m"], json!([{"name": "window"}])),
            ),
            (
                "b".to_string(),
                template(&["n"], json!([{"name": "window", "value": "5m"}])),
            ),
        ];
        let run = build(&rollout(), &filled_later, &asking(&[]), &target)
            .expect("the default of b fills a's");
        assert_eq!(run.spec.template.args[0].value.as_deref(), Some("5m"));
        let error =
            build(&rollout(), &templates, &asking(&[]), &target).expect_err("stable and who unset");
        assert_eq!(
            error,
            "argument \"stable\" has no value: give it one in the analysis args"
        );
    }

    fn reference(name: &str, cluster_scope: bool) -> AnalysisTemplateRef {
        AnalysisTemplateRef {
            template_name: name.into(),
            cluster_scope,
            ..AnalysisTemplateRef::default()
        }
    }

    /// A template with `metrics` that composes `names` (namespaced).
    fn composing(metrics: &[&str], names: &[&str]) -> AnalysisTemplateSpec {
        let mut spec = template(metrics, json!([]));
        spec.templates = names.iter().map(|n| reference(n, false)).collect();
        spec
    }

    fn labels(reach: &Reach<'_>) -> Vec<String> {
        reach.reached.iter().map(Reached::label).collect()
    }

    #[test]
    fn composed_templates_are_reached_once_each_a_template_before_those_it_composes() {
        let mut fetched = Fetched::new();
        fetched.insert(
            key(&reference("rates", false)),
            Some(composing(&[], &["errors", "latency"])),
        );
        fetched.insert(
            key(&reference("errors", false)),
            Some(composing(&["e"], &["base"])),
        );
        fetched.insert(
            key(&reference("latency", false)),
            Some(composing(&["l"], &["base", "rates"])),
        );
        fetched.insert(key(&reference("base", false)), Some(composing(&["b"], &[])));
        let roots = vec![reference("rates", false), reference("base", true)];
        let reach = reach(&roots, &fetched);
        assert_eq!(
            labels(&reach),
            vec![
                "AnalysisTemplate rates",
                "AnalysisTemplate errors (in AnalysisTemplate rates)",
                "AnalysisTemplate base (in AnalysisTemplate errors in AnalysisTemplate rates)",
                "AnalysisTemplate latency (in AnalysisTemplate rates)",
            ],
            "a diamond and a cycle each taken once"
        );
        assert_eq!(
            reach.unread,
            vec![reference("base", true)],
            "a ClusterAnalysisTemplate is not the AnalysisTemplate of that name"
        );
        assert!(reach.reached.iter().all(|r| r.root == 0));
        assert!(!reach.complete());
    }

    #[test]
    fn a_composed_template_that_does_not_exist_is_reached_without_what_it_would_compose() {
        let mut fetched = Fetched::new();
        fetched.insert(
            key(&reference("rates", false)),
            Some(composing(&[], &["gone"])),
        );
        fetched.insert(key(&reference("gone", false)), None);
        let roots = vec![reference("rates", false)];
        let reach = reach(&roots, &fetched);
        assert_eq!(reach.reached.len(), 2);
        assert!(reach.reached[1].spec.is_none());
        assert!(reach.unread.is_empty());
        assert!(!reach.complete(), "a template missing is not complete");
    }

    #[test]
    fn a_chain_longer_than_the_limit_stops_there_and_is_named() {
        let mut fetched = Fetched::new();
        for n in 0..100 {
            let next = format!("t{}", n + 1);
            fetched.insert(
                (false, format!("t{n}")),
                Some(composing(&[&format!("m{n}")], &[&next])),
            );
        }
        let roots = vec![reference("t0", false)];
        let reach = reach(&roots, &fetched);
        assert_eq!(reach.reached.len(), MAX_TEMPLATES);
        assert!(reach.beyond_limit);
        let analysis: StepAnalysis =
            serde_json::from_value(json!({"templates": [{"templateName": "t0"}]}))
                .expect("analysis");
        let requested = Requested::of(
            "spec.strategy.canary.analysis".into(),
            AnalysisKind::Background,
            &analysis,
        );
        let problems = check(&requested, &reach);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.strategy.canary.analysis.templates");
        assert!(
            problems[0].message.contains("more than 32 templates"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn a_composed_template_is_checked_and_named_through_what_composes_it() {
        let mut broken = template(&["inner"], json!([{"name": "service"}]));
        broken.metrics[0].success_condition = Some("all(result, # < 1)".into());
        let mut rates = composing(&["rate"], &["broken", "again"]);
        rates.dry_run =
            serde_json::from_value(json!([{"metricName": "inner"}, {"metricName": "nope"}]))
                .expect("dry run");
        let mut fetched = Fetched::new();
        fetched.insert(key(&reference("rates", false)), Some(rates));
        fetched.insert(key(&reference("broken", false)), Some(broken));
        fetched.insert(
            key(&reference("again", false)),
            Some(template(&["rate"], json!([]))),
        );
        let analysis: StepAnalysis = serde_json::from_value(
            json!({"templates": [{"templateName": "other"}, {"templateName": "rates"}]}),
        )
        .expect("analysis");
        fetched.insert(
            key(&reference("other", false)),
            Some(template(&["o"], json!([]))),
        );
        let requested = Requested::of(
            "spec.strategy.canary.steps[1].analysis".into(),
            AnalysisKind::Step(1),
            &analysis,
        );
        let problems: Vec<(String, String)> =
            check(&requested, &reach(&requested.templates, &fetched))
                .into_iter()
                .map(|v| (v.field, v.message))
                .collect();
        let at = "spec.strategy.canary.steps[1].analysis.templates[1]";
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems.iter().any(|(f, m)| f == "spec.strategy.canary.steps[1].analysis.args"
            && m == "AnalysisTemplate broken (in AnalysisTemplate rates) needs argument \"service\": give it a value here"));
        assert!(problems.iter().any(|(f, m)| f == at
            && m.starts_with("AnalysisTemplate broken (in AnalysisTemplate rates): spec.metrics[0].successCondition")));
        assert!(problems.iter().any(|(f, m)| f == at
            && m == "metric \"rate\" is defined by both AnalysisTemplate rates and AnalysisTemplate again (in AnalysisTemplate rates): a run measures each metric once"));
        assert!(
            problems.iter().any(|(f, m)| f == at
                && m.starts_with(
                    "AnalysisTemplate rates: spec.dryRun[1].metricName: \"nope\" is not a metric"
                )),
            "the composing template's dry run names the composed metrics: inner is one, nope is not"
        );
    }

    /// Every template reachable from the roots through the map, by a plain breadth-first walk.
    fn reachable(
        roots: &[AnalysisTemplateRef],
        fetched: &Fetched,
    ) -> std::collections::BTreeSet<(bool, String)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut queue: std::collections::VecDeque<(bool, String)> = roots.iter().map(key).collect();
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next.clone()) {
                continue;
            }
            if let Some(Some(spec)) = fetched.get(&next) {
                queue.extend(spec.templates.iter().map(key));
            }
        }
        seen
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// For any graph of templates (cycles, diamonds, missing ones, either scope), reading
        /// what is unread until nothing is: ends within the limit's rounds; reaches each
        /// template once; and reaches exactly what is reachable, or stops at the limit.
        #[test]
        fn reading_until_nothing_is_unread_reaches_everything_once_or_stops_at_the_limit(
            edges in proptest::collection::vec(proptest::collection::vec((0usize..48, proptest::bool::ANY), 0..4), 48),
            exists in proptest::collection::vec(proptest::bool::weighted(0.9), 48),
            roots in proptest::collection::vec((0usize..48, proptest::bool::ANY), 1..4),
        ) {
            let at = |(n, cluster): (usize, bool)| reference(&format!("t{n}"), cluster);
            let store: Fetched = (0..48)
                .flat_map(|n| [(n, false), (n, true)])
                .map(|(n, cluster)| {
                    let spec = exists[n].then(|| {
                        let mut spec = template(&[&format!("m{n}{cluster}")], json!([]));
                        spec.templates = edges[n].iter().copied().map(at).collect();
                        spec
                    });
                    (key(&at((n, cluster))), spec)
                })
                .collect();
            let roots: Vec<AnalysisTemplateRef> = roots.into_iter().map(at).collect();
            let mut fetched = Fetched::new();
            let mut rounds = 0;
            loop {
                let unread = reach(&roots, &fetched).unread;
                if unread.is_empty() {
                    break;
                }
                rounds += 1;
                proptest::prop_assert!(rounds <= MAX_TEMPLATES, "reading goes on");
                for r in unread {
                    let spec = store.get(&key(&r)).cloned().flatten();
                    fetched.insert(key(&r), spec);
                }
            }
            let reach = reach(&roots, &fetched);
            let keys: Vec<(bool, String)> = reach.reached.iter().map(|r| key(r.reference)).collect();
            let unique: std::collections::BTreeSet<_> = keys.iter().cloned().collect();
            proptest::prop_assert_eq!(unique.len(), keys.len(), "each template once");
            proptest::prop_assert!(keys.len() <= MAX_TEMPLATES);
            let all = reachable(&roots, &store);
            if reach.beyond_limit {
                proptest::prop_assert!(all.len() > MAX_TEMPLATES);
            } else {
                proptest::prop_assert_eq!(unique, all);
            }
            for reached in &reach.reached {
                match reached.through.last() {
                    None => proptest::prop_assert_eq!(&roots[reached.root], reached.reference),
                    Some(parent) => {
                        let composes = store.get(&key(parent)).cloned().flatten().map(|s| s.templates.contains(reached.reference));
                        proptest::prop_assert_eq!(composes, Some(true));
                    }
                }
            }
        }
    }
}
