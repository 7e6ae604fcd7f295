//! The analyses a Rollout asks for, checking them against their templates, and building an
//! AnalysisRun for one canary. Pure: the caller fetches the templates.

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
    STEP_LABEL,
};
use crate::api::rollout::{AnalysisTemplateRef, RolloutSpec, StepAnalysis};
use crate::validate::{self, Violation, ViolationKind};

/// One analysis a Rollout asks for: a canary step's, the canary's background one, or a
/// blue-green pre- or post-promotion analysis.
pub struct Requested<'a> {
    /// Where it is written: `spec.strategy.canary.steps[2].analysis`.
    pub field: String,
    pub kind: AnalysisKind,
    pub templates: &'a [AnalysisTemplateRef],
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
            kind,
            templates: &analysis.templates,
            args: &analysis.args,
            dry_run: &analysis.dry_run,
            measurement_retention: &analysis.measurement_retention,
            metadata: analysis.analysis_run_metadata.as_ref(),
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
        kind: AnalysisKind::Background,
        templates: &a.templates,
        args: &a.args,
        dry_run: &a.dry_run,
        measurement_retention: &a.measurement_retention,
        metadata: a.analysis_run_metadata.as_ref(),
    });
    steps.chain(background).collect()
}

fn kind(reference: &AnalysisTemplateRef) -> &'static str {
    if reference.cluster_scope {
        "ClusterAnalysisTemplate"
    } else {
        "AnalysisTemplate"
    }
}

/// Checks an analysis against its templates (None: not found, reported when the run is
/// started): each template must be valid, and every argument a template declares without a
/// default must be given by the Rollout or filled by weir. Findings name the Rollout field,
/// the template and the template's own field.
pub fn check(
    requested: &Requested<'_>,
    templates: &[Option<&AnalysisTemplateSpec>],
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, (reference, template)) in requested.templates.iter().zip(templates).enumerate() {
        let Some(template) = template else { continue };
        let at = format!("{}.templates[{index}]", requested.field);
        let kind = kind(reference);
        let name = &reference.template_name;
        let problems = if reference.cluster_scope {
            validate::cluster_analysis_template(template)
        } else {
            validate::analysis_template(template)
        };
        for problem in problems {
            violations.push(Violation {
                kind: problem.kind,
                field: at.clone(),
                message: format!("{kind} {name}: {problem}"),
            });
        }
        for arg in &template.args {
            let given = requested.args.iter().any(|a| a.name == arg.name);
            let defaulted = arg.value.is_some() || arg.value_from.is_some();
            let elsewhere = templates.iter().flatten().any(|t| {
                t.args
                    .iter()
                    .any(|a| a.name == arg.name && (a.value.is_some() || a.value_from.is_some()))
            });
            if !(given || defaulted || elsewhere || args::is_filled_by_weir(&arg.name)) {
                violations.push(Violation {
                    kind: ViolationKind::Required,
                    field: format!("{}.args", requested.field),
                    message: format!(
                        "{kind} {name} needs argument {:?}: give it a value here",
                        arg.name
                    ),
                });
            }
        }
    }
    // The Rollout's own dry-run and retention entries name metrics of these templates.
    if templates.iter().all(Option::is_some) {
        let metrics: Vec<&str> = templates
            .iter()
            .flatten()
            .flat_map(|t| t.metrics.iter().map(|m| m.name.as_str()))
            .collect();
        let named = |list: &str, index: usize, metric: &str| {
            (metric != "*" && !metrics.contains(&metric)).then(|| Violation {
                kind: ViolationKind::Invalid,
                field: format!("{}.{list}[{index}].metricName", requested.field),
                message: format!(
                    "{metric:?} is not a metric of the templates named here (use \"*\" for all)"
                ),
            })
        };
        let dry_run = requested.dry_run.iter().enumerate();
        violations.extend(dry_run.filter_map(|(i, d)| named("dryRun", i, &d.metric_name)));
        let kept = requested.measurement_retention.iter().enumerate();
        violations
            .extend(kept.filter_map(|(i, r)| named("measurementRetention", i, &r.metric_name)));
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

/// Merges the templates (metrics, dry-run and retention lists in order, arguments by name),
/// sets the Rollout's arguments over the templates' defaults and resolves the Rollout-side
/// sources; adds the Rollout's dry-run entries, puts its retention entries first (so they
/// win) and its run metadata on the run, under weir's own labels. Metric names that repeat across templates, and arguments left without a value,
/// are errors naming them.
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
    let rollout_name = rollout.name_any();
    let namespace = rollout.namespace().unwrap_or_default();
    let rollout_json = serde_json::to_value(rollout).unwrap_or_default();
    args::resolve(
        &mut spec.args,
        &Known {
            rollout: &rollout_json,
            rollout_name: &rollout_name,
            namespace: &namespace,
            canary_hash: hash,
            stable_hash: stable,
        },
    )?;
    if let Some(missing) = args::missing(&spec.args).first() {
        return Err(format!(
            "argument {missing:?} has no value: give it one in the analysis args"
        ));
    }
    let wanted = requested.metadata.cloned().unwrap_or_default();
    // weir finds its runs by these labels: the Rollout's own cannot replace them.
    let mut labels = wanted.labels;
    labels.extend([
        (ROLLOUT_LABEL.to_owned(), rollout_name.clone()),
        (CANARY_HASH_LABEL.to_owned(), hash.to_owned()),
        (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
        (STEP_LABEL.to_owned(), kind.label()),
    ]);
    let mut annotations = wanted.annotations;
    // The Git revision the measured version came from, for `kubectl weir history`.
    if let Some(revision) = rollout.annotations().get(GIT_REVISION_ANNOTATION) {
        annotations.insert(GIT_REVISION_ANNOTATION.to_owned(), revision.clone());
    }
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
        let fields: Vec<String> = check(&requested, &[Some(&found)])
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
            check(&requested, &[None]).is_empty(),
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

    /// A step analysis that gives `args` and nothing else.
    fn asking(args: &[Argument]) -> Requested<'_> {
        Requested {
            field: "spec.strategy.canary.steps[2].analysis".into(),
            kind: AnalysisKind::Step(2),
            templates: &[],
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
            kind: AnalysisKind::Step(1),
            templates: &refs,
            args: &args,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        };
        let mut broken = template(&["m"], json!([]));
        broken.metrics[0].success_condition = Some("all(result, # < 1)".into());
        let shared = template(&["n"], json!([]));
        let problems = check(&requested, &[Some(&broken), Some(&shared)]);
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
            check(&requested, &[None, None]).is_empty(),
            "missing templates are reported when a run starts"
        );
    }

    #[test]
    fn a_cluster_template_is_held_to_the_cluster_rules() {
        let (refs, args) = requested_of(json!([]));
        let requested = Requested {
            field: "spec.strategy.canary.analysis".into(),
            kind: AnalysisKind::Background,
            templates: &refs,
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
        assert!(check(&requested, &[Some(&with_token), Some(&other)]).is_empty());
        // Cluster-wide (refs[1]): it would be copied into every tenant's runs.
        let problems = check(&requested, &[Some(&other), Some(&with_token)]);
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
            kind: AnalysisKind::Background,
            templates: &refs,
            args: &none,
            dry_run: &[],
            measurement_retention: &[],
            metadata: None,
        };
        let problems = check(&requested, &[Some(&needs), Some(&gives_window)]);
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
        assert!(check(&requested, &[Some(&needs), Some(&gives_window)]).is_empty());
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
}
