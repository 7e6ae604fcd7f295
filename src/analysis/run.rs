//! Building an AnalysisRun from its templates for one canary. Pure: the caller fetches the
//! templates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::Rollout;
use crate::api::analysis::{AnalysisRun, AnalysisRunSpec, AnalysisTemplateSpec, Argument};
use crate::rollout::workload::{ROLLOUT_LABEL, owner_reference};

pub const HASH_LABEL: &str = "weir.dev/canary-hash";
pub const ATTEMPT_LABEL: &str = "weir.dev/attempt";
/// The step index a run gates, or `background`.
pub const STEP_LABEL: &str = "weir.dev/step";
pub const BACKGROUND: &str = "background";

/// Identifies a run: `<rollout>-<hash>-<attempt>-<step index | bg>`.
pub fn name(rollout: &str, hash: &str, attempt: i32, step: Option<usize>) -> String {
    match step {
        Some(step) => format!("{rollout}-{hash}-{attempt}-{step}"),
        None => format!("{rollout}-{hash}-{attempt}-bg"),
    }
}

/// Merges the templates (metrics and dry-run lists in order, arguments by name) and sets the
/// caller's arguments over the templates' defaults. Metric names that repeat across
/// templates are an error naming both templates.
pub fn build(
    rollout: &Rollout,
    templates: &[(String, AnalysisTemplateSpec)],
    args: &[Argument],
    hash: &str,
    attempt: i32,
    step: Option<usize>,
) -> Result<AnalysisRun, String> {
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
            if !spec.args.iter().any(|a| a.name == arg.name) {
                spec.args.push(arg.clone());
            }
        }
        spec.dry_run.extend(template_spec.dry_run.iter().cloned());
    }
    for arg in args {
        match spec.args.iter_mut().find(|a| a.name == arg.name) {
            Some(slot) => *slot = arg.clone(),
            None => spec.args.push(arg.clone()),
        }
    }
    let rollout_name = rollout.name_any();
    let step_value = step.map_or_else(|| BACKGROUND.to_owned(), |s| s.to_string());
    let labels = BTreeMap::from([
        (ROLLOUT_LABEL.to_owned(), rollout_name.clone()),
        (HASH_LABEL.to_owned(), hash.to_owned()),
        (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
        (STEP_LABEL.to_owned(), step_value),
    ]);
    Ok(AnalysisRun {
        metadata: ObjectMeta {
            name: Some(name(&rollout_name, hash, attempt, step)),
            namespace: rollout.namespace(),
            labels: Some(labels),
            owner_references: owner_reference(rollout).map(|o| vec![o]),
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
        let run = build(&rollout(), &templates, &args, "abc", 1, Some(2)).expect("builds");
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
    fn a_metric_in_two_templates_is_an_error_naming_both() {
        let templates = vec![
            ("a".to_string(), template(&["m"], json!([]))),
            ("b".to_string(), template(&["m"], json!([]))),
        ];
        let error = build(&rollout(), &templates, &[], "abc", 0, None).expect_err("duplicate");
        assert!(
            error.contains("template a") && error.contains("template b"),
            "{error}"
        );
    }
}
