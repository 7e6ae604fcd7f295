//! `kubectl weir lint`: manifests checked offline with the controller's own validation.
//! Pure: a file's name and text in, findings out.
//!
//! An Argo Rollouts manifest (`argoproj.io/v1alpha1`) is checked as weir would read it after
//! its `apiVersion` is changed, and the answer says whether that is all it takes.

use serde_json::Value;

use std::collections::BTreeMap;

use crate::analysis::run;
use crate::api::rollout::RolloutSpec;
use crate::validate::{self, Violation, ViolationKind};

const WEIR: &str = "weir.dev/v1alpha1";
const ARGO: &str = "argoproj.io/v1alpha1";

/// What linting one file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per finding.
    pub lines: Vec<String>,
    /// Findings that make the manifest wrong for weir.
    pub errors: usize,
    /// weir's documents checked.
    pub checked: usize,
}

pub fn lint(file: &str, text: &str) -> Report {
    lint_all(&[(file.to_owned(), text.to_owned())])
}

/// Lints several files as one set: a Rollout's analyses are checked against the templates
/// any of them define (templates kept elsewhere are not looked for).
pub fn lint_all(files: &[(String, String)]) -> Report {
    // Built within the controller's own memory bound: a hostile file (aliases that expand
    // to gigabytes) fails here as it would in a GitSync, not on the linting machine.
    let budget = crate::gitops::render::Limits::default().revision_bytes;
    let documents: Vec<(&str, Vec<Result<Value, String>>)> = files
        .iter()
        .map(|(file, text)| {
            let documents = crate::gitops::render::each_document_bounded(text, budget)
                .into_iter()
                .map(|d| d.map_err(|e| e.to_string()))
                .collect();
            (file.as_str(), documents)
        })
        .collect();
    let templates = templates_in(&documents);
    let mut report = Report::default();
    for (file, documents) in &documents {
        lint_documents(&mut report, file, documents, &templates);
    }
    report
}

/// The templates the documents define, by kind and name.
fn templates_in(documents: &[(&str, Vec<Result<Value, String>>)]) -> run::Fetched {
    let mut templates = BTreeMap::new();
    for value in documents.iter().flat_map(|(_, d)| d.iter().flatten()) {
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let cluster = match value["kind"].as_str() {
            Some("AnalysisTemplate") => false,
            Some("ClusterAnalysisTemplate") => true,
            _ => continue,
        };
        if api_version != WEIR && api_version != ARGO {
            continue;
        }
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(spec) = validate::read_leniently(&value["spec"]) {
            templates.insert((cluster, name.to_owned()), Some(spec));
        }
    }
    templates
}

/// A Rollout's analyses checked against the templates at hand: each template's own rules
/// (an unsupported provider, say) and the arguments it needs, under the Rollout's field.
fn analysis_findings(spec: &Value, templates: &run::Fetched) -> Vec<Violation> {
    let Some(spec) = validate::read_leniently::<RolloutSpec>(spec) else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for requested in run::requested(&spec) {
        // Templates kept elsewhere are not looked for: what is not among the files stays
        // unread, and only what was read is checked.
        let reach = run::reach(&requested.templates, templates);
        if !reach.reached.is_empty() {
            findings.extend(run::check(&requested, &reach));
        }
    }
    findings
}

fn lint_documents(
    report: &mut Report,
    file: &str,
    documents: &[Result<Value, String>],
    templates: &run::Fetched,
) {
    for (index, document) in documents.iter().enumerate() {
        // Counted from 1, as people count documents in a file.
        let number = index + 1;
        let value = match document {
            Ok(Value::Null) => continue,
            Ok(value) => value.clone(),
            Err(error) => {
                report.errors += 1;
                report
                    .lines
                    .push(format!("{file}: document {number}: not YAML: {error}"));
                // The rest of the file cannot be read reliably after a syntax error.
                break;
            }
        };
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let kind = value["kind"].as_str().unwrap_or_default();
        let name = value["metadata"]["name"].as_str().unwrap_or("(no name)");
        if api_version != WEIR && api_version != ARGO {
            continue;
        }
        let place = format!("{file}: document {number} ({kind} {name})");
        let checked = match kind {
            // Argo has no GitSync: that kind is weir's alone.
            "GitSync" | "Notifier" | "NotificationRule" if api_version != WEIR => None,
            _ => validate::object_as(kind, &value["spec"]),
        };
        let checked = checked.map(|violations| {
            violations.map(|mut violations| {
                if kind == "Rollout" {
                    violations.extend(analysis_findings(&value["spec"], templates));
                    violations.sort();
                    violations.dedup();
                }
                violations
            })
        });
        let violations: Result<Vec<Violation>, String> = match (checked, kind) {
            (Some(violations), _) => violations,
            // Kinds weir has no counterpart for: said, never skipped quietly.
            _ => {
                report.errors += 1;
                report.lines.push(if api_version == ARGO {
                    format!("{place}: unsupported: weir has no {kind}")
                } else {
                    format!(
                        "{place}: error: {api_version} has no kind {kind:?} (Rollout, AnalysisTemplate, ClusterAnalysisTemplate, Experiment, GitSync, Notifier, NotificationRule)"
                    )
                });
                continue;
            }
        };
        report.checked += 1;
        if matches!(kind, "AnalysisTemplate" | "ClusterAnalysisTemplate") {
            report.lines.extend(
                weir_extensions(&value["spec"])
                    .into_iter()
                    .map(|note| format!("{place}: note: {note}")),
            );
        }
        match violations {
            Err(message) => {
                report.errors += 1;
                report.lines.push(format!("{place}: error: {message}"));
                if api_version == ARGO {
                    report.lines.push(format!(
                        "{place}: weir cannot run this Argo Rollouts manifest as it is: its spec is not one weir reads"
                    ));
                }
            }
            Ok(violations) => {
                for violation in &violations {
                    let label = match violation.kind {
                        ViolationKind::Unsupported => "unsupported",
                        ViolationKind::Required | ViolationKind::Invalid => "error",
                    };
                    report.lines.push(format!("{place}: {label}: {violation}"));
                }
                report.errors += violations.len();
                if api_version == ARGO {
                    let unsupported = violations
                        .iter()
                        .filter(|v| v.kind == ViolationKind::Unsupported)
                        .count();
                    report.lines.push(if violations.is_empty() {
                        format!(
                            "{place}: weir can run this Argo Rollouts manifest once apiVersion is {WEIR}"
                        )
                    } else {
                        format!(
                            "{place}: weir cannot run this Argo Rollouts manifest as it is: {unsupported} unsupported, {} other problems",
                            violations.len() - unsupported
                        )
                    });
                }
            }
        }
    }
}

/// What a template uses that is weir's own: said, not counted as a problem, so that
/// nobody takes it to Argo Rollouts expecting it to run there.
fn weir_extensions(spec: &Value) -> Vec<String> {
    let metrics = spec["metrics"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    metrics
        .iter()
        .enumerate()
        .filter(|(_, metric)| !metric["provider"]["judge"].is_null())
        .map(|(index, _)| {
            format!(
                "spec.metrics[{index}].provider.judge is a weir extension (Argo Rollouts has no judge provider): this template runs on weir only"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_name_file_document_object_and_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n\
            apiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n\
            spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n\
            \x20   spec: {containers: [{name: web, image: web:1}]}\n  strategy:\n    canary:\n      steps: [{setWeight: 120}]\n";
        let report = lint("app.yaml", text);
        assert_eq!(report.checked, 1, "the Service is not weir's");
        assert_eq!(report.errors, 1);
        assert!(
            report.lines[0].starts_with(
                "app.yaml: document 2 (Rollout web): error: spec.strategy.canary.steps[0].setWeight:"
            ),
            "{:?}",
            report.lines
        );
    }

    #[test]
    fn a_judge_metric_is_said_to_be_weirs_own_without_counting_as_a_problem() {
        let text = "apiVersion: weir.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: latency}\n\
            spec:\n  args: [{name: baseline-hash}, {name: canary-hash}]\n  metrics:\n  - name: latency\n\
            \x20   interval: 10s\n    provider:\n      judge:\n\
            \x20       baseline: 'mean{hash=\"{{args.baseline-hash}}\"}'\n\
            \x20       canary: 'mean{hash=\"{{args.canary-hash}}\"}'\n";
        let report = lint("judge.yaml", text);
        assert_eq!(report.errors, 0, "{:?}", report.lines);
        assert_eq!(
            report.lines,
            [
                "judge.yaml: document 1 (AnalysisTemplate latency): note: spec.metrics[0].provider.judge is a weir extension (Argo Rollouts has no judge provider): this template runs on weir only"
            ]
        );
    }

    #[test]
    fn a_cluster_template_is_linted_with_the_cluster_rules() {
        let template = |kind: &str| {
            format!(
                "apiVersion: weir.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: shared}}\n\
                spec:\n  metrics:\n  - name: m\n    successCondition: 'true'\n    provider:\n      prometheus:\n\
                \x20       query: up\n        headers: [{{key: Authorization, value: Bearer xyz}}]\n"
            )
        };
        assert_eq!(lint("t.yaml", &template("AnalysisTemplate")).errors, 0);
        let report = lint("t.yaml", &template("ClusterAnalysisTemplate"));
        assert_eq!(report.errors, 1, "{:?}", report.lines);
        assert!(
            report.lines[0].starts_with(
                "t.yaml: document 1 (ClusterAnalysisTemplate shared): error: spec.metrics[0].provider.prometheus.headers[0].value:"
            ),
            "{:?}",
            report.lines
        );
    }

    #[test]
    fn unknown_kinds_are_said_not_skipped() {
        let report = lint(
            "x.yaml",
            "apiVersion: weir.dev/v1alpha1\nkind: Rolout\nmetadata: {name: web}\n---\napiVersion: argoproj.io/v1alpha1\nkind: RolloutManager\nmetadata: {name: e}\n",
        );
        assert_eq!(report.errors, 2);
        assert_eq!(
            report.lines,
            vec![
                "x.yaml: document 1 (Rolout web): error: weir.dev/v1alpha1 has no kind \"Rolout\" (Rollout, AnalysisTemplate, ClusterAnalysisTemplate, Experiment, GitSync, Notifier, NotificationRule)".to_owned(),
                "x.yaml: document 2 (RolloutManager e): unsupported: weir has no RolloutManager".to_owned(),
            ]
        );
    }

    #[test]
    fn broken_yaml_and_unparsable_specs_are_errors() {
        let report = lint("bad.yaml", "kind: [unclosed\n");
        assert_eq!(report.errors, 1);
        assert!(report.lines[0].contains("not YAML"), "{:?}", report.lines);
        let report = lint(
            "bad.yaml",
            "apiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec: {replicas: many}\n",
        );
        assert_eq!(report.errors, 1);
        assert!(
            report.lines[0].contains("spec.replicas: does not parse")
                && report.lines[0].contains("spec: does not parse: missing field `selector`"),
            "every value that does not parse is named, with its field: {:?}",
            report.lines
        );
    }

    #[test]
    fn a_rollout_is_checked_through_the_templates_its_templates_compose() {
        let files = [
            (
                "rollout.yaml".to_owned(),
                "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n\
                spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n\
                \x20   spec: {containers: [{name: web, image: web:1}]}\n  strategy:\n    canary:\n      steps:\n\
                \x20     - setWeight: 20\n      - analysis: {templates: [{templateName: checks}]}\n"
                    .to_owned(),
            ),
            (
                "templates.yaml".to_owned(),
                "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: checks}\n\
                spec:\n  templates: [{templateName: web-check}, {templateName: kept-elsewhere}]\n---\n\
                apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: web-check}\n\
                spec:\n  metrics:\n  - name: errors\n    successCondition: 'result < 1'\n    provider:\n\
                \x20     datadog: {query: 'sum:errors{*}'}\n"
                    .to_owned(),
            ),
        ];
        let report = lint_all(&files);
        let rollout: Vec<&String> = report
            .lines
            .iter()
            .filter(|l| l.starts_with("rollout.yaml: document 1 (Rollout web): unsupported: spec.strategy.canary.steps[1].analysis.templates[0]: AnalysisTemplate web-check (in AnalysisTemplate checks): spec.metrics[0].provider.datadog"))
            .collect();
        assert_eq!(rollout.len(), 1, "{:#?}", report.lines);
        assert!(
            report.lines.iter().all(|l| !l.contains("kept-elsewhere")),
            "a template not among the files is not looked for: {:#?}",
            report.lines
        );
    }
}
