//! Which Notifiers one of weir's events goes to: those of the NotificationRules in its
//! namespace that select it, and those Argo Rollouts' subscription annotations on its Rollout
//! name. Pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::notification::{NotificationRuleSpec, Severity};

/// One of weir's Events, as the notifications need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    /// The Event's uid: what a delivery is remembered by.
    pub uid: String,
    /// What it is about: `Rollout` or `GitSync`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub note: String,
    pub warning: bool,
    /// When it happened, in Unix seconds.
    pub at: i64,
}

/// What the event is about, as its object carries it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

/// Argo Rollouts' subscription annotations: `<prefix><trigger>.<service>`.
pub const ARGO_SUBSCRIBE: &str = "notifications.argoproj.io/subscribe.";

/// The weir reasons an Argo Rollouts trigger stands for. Argo's `on-analysis-run-running`
/// and `on-scaling-replica-set` have no weir event, so they select nothing.
pub fn argo_trigger(trigger: &str) -> &'static [&'static str] {
    match trigger {
        "on-rollout-completed" => &["RolloutCompleted"],
        "on-rollout-step-completed" => &["StepCompleted"],
        "on-rollout-updated" => &["RolloutStarted"],
        "on-rollout-aborted" => &["Aborted"],
        "on-rollout-paused" => &["Paused"],
        "on-analysis-run-failed" => &["AnalysisFailed"],
        "on-analysis-run-error" => &["AnalysisError"],
        _ => &[],
    }
}

/// Whether a rule selects the event.
pub fn selects(rule: &NotificationRuleSpec, event: &Told, subject: Subject) -> bool {
    if rule.event_severity == Severity::Error && !event.warning {
        return false;
    }
    if !rule.reasons.is_empty() && !rule.reasons.contains(&event.reason) {
        return false;
    }
    rule.event_sources.iter().any(|source| {
        let name_matches = match source.name.as_deref() {
            None | Some("*") | Some("") => true,
            Some(name) => name == event.name,
        };
        let labels_match = source.match_labels.iter().all(|(key, value)| {
            subject
                .labels
                .and_then(|labels| labels.get(key))
                .is_some_and(|v| v == value)
        });
        source.kind == event.kind && name_matches && labels_match
    })
}

/// The Notifiers (by name, in the event's namespace) the event goes to: each once, however
/// many rules and subscriptions name it.
pub fn notifiers<'r>(
    event: &Told,
    subject: Subject,
    rules: impl IntoIterator<Item = &'r NotificationRuleSpec>,
) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = rules
        .into_iter()
        .filter(|rule| selects(rule, event, subject))
        .map(|rule| rule.notifier_ref.name.clone())
        .collect();
    if event.kind == "Rollout"
        && let Some(annotations) = subject.annotations
    {
        for key in annotations.keys() {
            let Some((trigger, service)) = key
                .strip_prefix(ARGO_SUBSCRIBE)
                .and_then(|rest| rest.split_once('.'))
            else {
                continue;
            };
            if !service.is_empty() && argo_trigger(trigger).contains(&event.reason.as_str()) {
                names.insert(service.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn told(kind: &str, name: &str, reason: &str, warning: bool) -> Told {
        Told {
            uid: "u1".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            reason: reason.into(),
            note: "n".into(),
            warning,
            at: 100,
        }
    }

    fn rule(spec: serde_json::Value) -> NotificationRuleSpec {
        serde_json::from_value(spec).unwrap_or_else(|e| panic!("a rule: {e}"))
    }

    #[test]
    fn a_rule_selects_by_kind_name_labels_reason_and_severity() {
        let labels = BTreeMap::from([("team".to_owned(), "checkout".to_owned())]);
        let subject = Subject {
            labels: Some(&labels),
            annotations: None,
        };
        let any = rule(json!({"notifierRef": {"name": "hook"},
            "eventSources": [{"kind": "Rollout", "name": "*"}]}));
        assert!(selects(
            &any,
            &told("Rollout", "web", "Paused", false),
            subject
        ));
        assert!(!selects(
            &any,
            &told("GitSync", "web", "Paused", false),
            subject
        ));
        let named = rule(json!({"notifierRef": {"name": "hook"},
            "eventSources": [{"kind": "GitSync", "name": "app"}], "reasons": ["Rejected"]}));
        assert!(selects(
            &named,
            &told("GitSync", "app", "Rejected", true),
            subject
        ));
        assert!(!selects(
            &named,
            &told("GitSync", "other", "Rejected", true),
            subject
        ));
        assert!(!selects(
            &named,
            &told("GitSync", "app", "Applied", false),
            subject
        ));
        let labelled = rule(json!({"notifierRef": {"name": "hook"},
            "eventSources": [{"kind": "Rollout", "matchLabels": {"team": "checkout"}}]}));
        assert!(selects(
            &labelled,
            &told("Rollout", "web", "Paused", false),
            subject
        ));
        assert!(!selects(
            &labelled,
            &told("Rollout", "web", "Paused", false),
            Subject::default()
        ));
        let errors = rule(
            json!({"notifierRef": {"name": "hook"}, "eventSeverity": "error",
            "eventSources": [{"kind": "Rollout"}]}),
        );
        assert!(selects(
            &errors,
            &told("Rollout", "web", "AnalysisFailed", true),
            subject
        ));
        assert!(!selects(
            &errors,
            &told("Rollout", "web", "Paused", false),
            subject
        ));
    }

    #[test]
    fn argo_subscriptions_name_their_service_as_a_notifier() {
        let annotations = BTreeMap::from([
            (
                "notifications.argoproj.io/subscribe.on-rollout-aborted.slack".to_owned(),
                "my-channel".to_owned(),
            ),
            (
                "notifications.argoproj.io/subscribe.on-analysis-run-failed.team-hook".to_owned(),
                String::new(),
            ),
            ("unrelated".to_owned(), "x".to_owned()),
        ]);
        let subject = Subject {
            labels: None,
            annotations: Some(&annotations),
        };
        let no_rules: [&NotificationRuleSpec; 0] = [];
        assert_eq!(
            notifiers(&told("Rollout", "web", "Aborted", true), subject, no_rules),
            BTreeSet::from(["slack".to_owned()])
        );
        assert_eq!(
            notifiers(
                &told("Rollout", "web", "AnalysisFailed", true),
                subject,
                no_rules
            ),
            BTreeSet::from(["team-hook".to_owned()])
        );
        assert!(notifiers(&told("Rollout", "web", "Paused", false), subject, no_rules).is_empty());
        // Only a Rollout's own annotations subscribe.
        assert!(notifiers(&told("GitSync", "web", "Aborted", true), subject, no_rules).is_empty());
    }

    #[test]
    fn a_notifier_named_twice_gets_the_event_once() {
        let a =
            rule(json!({"notifierRef": {"name": "hook"}, "eventSources": [{"kind": "Rollout"}]}));
        let b = rule(
            json!({"notifierRef": {"name": "hook"}, "eventSources": [{"kind": "Rollout", "name": "web"}]}),
        );
        let got = notifiers(
            &told("Rollout", "web", "Paused", false),
            Subject::default(),
            [&a, &b],
        );
        assert_eq!(got, BTreeSet::from(["hook".to_owned()]));
    }
}
