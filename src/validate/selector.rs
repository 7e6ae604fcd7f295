//! A workload's selector against its pod template's labels: Rollouts' and Experiments'
//! templates are held to the same rule.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::violation::Report;

/// The selector at `{at}.selector` must select something, and select the labels of the
/// template at `{at}.template`.
pub(super) fn check_selector(
    report: &mut Report,
    at: &str,
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector
        .match_expressions
        .as_ref()
        .filter(|e| !e.is_empty());
    if match_labels.is_none() && expressions.is_none() {
        report.required(
            format!("{at}.selector"),
            "an empty selector would select every pod in the namespace; set matchLabels",
        );
        return;
    }
    for (key, value) in match_labels.into_iter().flatten() {
        if labels.get(key) != Some(value) {
            report.invalid(
                format!("{at}.template.metadata.labels"),
                format!("must include {key}: {value}, which {at}.selector.matchLabels requires"),
            );
        }
    }
    for (index, expression) in expressions.into_iter().flatten().enumerate() {
        let field = format!("{at}.selector.matchExpressions[{index}]");
        let values = expression.values.as_deref().unwrap_or_default();
        let present = labels.get(&expression.key);
        let matches = match expression.operator.as_str() {
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => {
                report.invalid(
                    format!("{field}.operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                );
                continue;
            }
        };
        if !matches {
            report.invalid(
                format!("{at}.template.metadata.labels"),
                format!("do not satisfy {field} (key {:?})", expression.key),
            );
        }
    }
}
