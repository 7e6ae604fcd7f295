//! The rules of a Notifier and a NotificationRule.

use super::violation::{Report, Violation};
use crate::api::notification::{NotificationRuleSpec, NotifierSpec, NotifierType};

/// The reasons weir's events carry, which a NotificationRule may select.
pub const REASONS: [&str; 26] = [
    "RolloutStarted",
    "TemplateChanged",
    "StepCompleted",
    "Paused",
    "Promoted",
    "PromotedFull",
    "Aborted",
    "AnalysisFailed",
    "AnalysisError",
    "ProgressDeadlineExceeded",
    "Retried",
    "RolloutCompleted",
    "RolledBack",
    "Rejected",
    "Applied",
    "Pinned",
    "RenderFailed",
    "ApplyFailed",
    "Forbidden",
    "FetchFailed",
    "Pushed",
    "NothingToRevert",
    "PushRefused",
    "PushFailed",
    "InvalidSpec",
    "DriftRepaired",
];

fn http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

pub fn notifier(spec: &NotifierSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    let repository = matches!(spec.kind, NotifierType::Github | NotifierType::Gitlab);
    match &spec.address {
        Some(address) if !http_url(address) => report.invalid(
            "spec.address",
            "must be an http:// or https:// URL with a host",
        ),
        Some(address)
            if repository
                && reqwest::Url::parse(address).is_ok_and(|u| {
                    u.path().split('/').filter(|s| !s.is_empty()).count() < 2
                }) =>
        {
            report.invalid(
                "spec.address",
                "a commit status needs the repository's web address: https://host/owner/repo",
            )
        }
        None if spec.secret_ref.is_none() => report.required(
            "spec.address",
            "name the receiver's URL here, or in the `address` key of a Secret named by spec.secretRef",
        ),
        _ => {}
    }
    if let Some(url) = &spec.dashboard_url
        && !http_url(url)
    {
        report.invalid("spec.dashboardUrl", "must be an http:// or https:// URL");
    }
    report.finish()
}

pub fn notification_rule(spec: &NotificationRuleSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    if spec.notifier_ref.name.is_empty() {
        report.required(
            "spec.notifierRef.name",
            "name the Notifier, in this namespace",
        );
    }
    if spec.event_sources.is_empty() {
        report.required(
            "spec.eventSources",
            "name the kinds whose events are sent: Rollout, GitSync",
        );
    }
    for (index, source) in spec.event_sources.iter().enumerate() {
        report.unsupported(&format!("spec.eventSources[{index}]"), source);
        if !matches!(source.kind.as_str(), "Rollout" | "GitSync") {
            report.invalid(
                format!("spec.eventSources[{index}].kind"),
                format!(
                    "{:?}: weir tells of Rollouts and GitSyncs only",
                    source.kind
                ),
            );
        }
    }
    for (index, reason) in spec.reasons.iter().enumerate() {
        if !REASONS.contains(&reason.as_str()) {
            report.invalid(
                format!("spec.reasons[{index}]"),
                format!(
                    "{reason:?} is no reason of weir's events ({})",
                    REASONS.join(", ")
                ),
            );
        }
    }
    report.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(violations: &[Violation]) -> Vec<String> {
        violations.iter().map(|v| v.field.clone()).collect()
    }

    #[test]
    fn a_notifier_needs_a_receiver_it_can_reach() {
        let read = |v: serde_json::Value| -> NotifierSpec {
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(
            notifier(&read(
                json!({"type": "generic", "address": "https://hooks.example/x"})
            ))
            .is_empty()
        );
        assert!(
            notifier(&read(
                json!({"type": "slack", "secretRef": {"name": "url"}})
            ))
            .is_empty()
        );
        assert_eq!(
            fields(&notifier(&read(json!({"type": "slack"})))),
            ["spec.address"]
        );
        assert_eq!(
            fields(&notifier(&read(
                json!({"type": "generic", "address": "file:///etc/passwd",
                "dashboardUrl": "javascript:alert(1)", "adress": "x"})
            ))),
            ["spec.address", "spec.dashboardUrl", "spec.adress"]
        );
    }

    #[test]
    fn a_rule_names_kinds_and_reasons_weir_has() {
        let rule: NotificationRuleSpec = serde_json::from_value(json!({
            "notifierRef": {"name": "hook"},
            "eventSources": [{"kind": "Rollout"}, {"kind": "Deployment"}],
            "reasons": ["Aborted", "RolloutAborted"]}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fields(&notification_rule(&rule)),
            ["spec.eventSources[1].kind", "spec.reasons[1]"]
        );
    }
}
