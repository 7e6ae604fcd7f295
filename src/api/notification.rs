//! Notifications, in Flux's shape: a `Notifier` says where messages go (a signed generic
//! webhook, a Slack-compatible or a Microsoft Teams incoming webhook) and a
//! `NotificationRule` which of weir's events about which Rollouts and GitSyncs go there.
//! Argo Rollouts' subscription annotations on a Rollout
//! (`notifications.argoproj.io/subscribe.<trigger>.<service>`) name a Notifier too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::gitsync::LocalObjectReference;
use super::schema::Unsupported;
use super::schema::keep_unknown_fields;
use super::schema::keeps_unknown_fields;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Notifier",
    doc = "Where weir's notifications go: a signed webhook, Slack, Microsoft Teams, or commit statuses on GitHub or GitLab.",
    namespaced,
    status = "NotifierStatus",
    category = "weir",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct NotifierSpec {
    /// `generic` (JSON, signed with HMAC-SHA256 when the Secret has a `token`), `slack`
    /// (any Slack-compatible incoming webhook), `msteams`, or a commit status on the revision
    /// concerned: `github` or `gitlab` (the Secret's `token` authenticates).
    #[serde(rename = "type")]
    pub kind: NotifierType,
    /// The receiver's URL; for `github` and `gitlab`, the repository's web address
    /// (`https://github.com/org/repo`). A Secret's `address` key, when `secretRef` has one,
    /// wins: Slack and Teams URLs are credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Slack: the channel to post in, when the webhook lets it be chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A Secret in this namespace: `token` (the HMAC key of a generic webhook) and/or
    /// `address`. Read as `serviceAccountName`, never shown in a message, status or log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// The ServiceAccount, in this namespace, the Secret is read as (default: the
    /// controller's `--default-service-account`, as for GitSyncs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The dashboard's address (`kubectl weir dashboard`, or one served for the team):
    /// messages link to the page of what they are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// Hold every message (queued ones are kept) until set back to false.
    #[serde(default)]
    pub suspend: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierType {
    Generic,
    Slack,
    Msteams,
    Github,
    Gitlab,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    /// The events delivered (their Event's uid), the newest kept: a restarted or new leader
    /// sends none of them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<Delivered>,
    /// Ready: the last message was delivered (or none was due); False with why otherwise
    /// (the receiver answered 500, the Secret cannot be read, the queue overflowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivered {
    /// The uid of the Event the message told.
    pub event: String,
    pub at: Time,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "NotificationRule",
    doc = "Which of weir's events about which Rollouts and GitSyncs go to a Notifier.",
    namespaced,
    status = "NotificationRuleStatus",
    category = "weir",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Notifier","type":"string","jsonPath":".spec.notifierRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct NotificationRuleSpec {
    /// The Notifier, in this namespace.
    pub notifier_ref: LocalObjectReference,
    /// The objects whose events are sent: by kind, and by name (`*` or left out: any) or
    /// labels.
    pub event_sources: Vec<EventSource>,
    /// The event reasons sent (`AnalysisFailed`, `Aborted`, `Rejected`, `Pushed`, ...; see
    /// the README); none: every reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// `info` (every event) or `error` (warnings only).
    #[serde(default)]
    pub event_severity: Severity,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRuleStatus {
    /// Ready: the rule is valid and its Notifier exists; False with what to fix otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct EventSource {
    /// `Rollout` or `GitSync`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Error,
}

keeps_unknown_fields!(NotifierSpec, NotificationRuleSpec, EventSource);
