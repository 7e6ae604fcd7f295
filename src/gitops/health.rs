//! The health of one object a GitSync applied, read from its live state: the rules Flux
//! (kstatus) and Argo CD apply to each kind, in the shape of a Rollout's verdict. Pure: the
//! caller reads the objects.
//!
//! Deployments, StatefulSets, DaemonSets, Jobs and PersistentVolumeClaims have rules of
//! their own; an object of a custom kind is judged by its standard conditions (`Stalled`,
//! `Reconciling`, `Ready`); anything else is healthy once applied. Every rule first asks
//! whether the object's controller has seen the generation it has: a status behind its
//! spec describes an older spec, so it is never Healthy and never Failed. A custom object
//! with no status at all is current, as kstatus has it, except weir's own GitSync, which
//! waits until weir has recorded a status for its generation. A failure carries the time
//! its condition turned, so that one from before a revision was applied is not blamed on it
//! (`Health::since_applied`).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::inventory::group_of;
use crate::api::contract::{GIT_REVISION_ANNOTATION, GITSYNC_ANNOTATION};
use crate::conditions::bounded_text;

/// What one object's live state says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not there yet: what it waits for, in words ("1 of 3 replicas available").
    Progressing(String),
    Healthy,
    /// It will not get there by waiting: the condition that says so.
    Failed {
        reason: String,
        message: String,
        /// When that condition turned (its `lastTransitionTime`); None when it did not say,
        /// or the failure is not a condition's.
        since: Option<DateTime<Utc>>,
    },
}

impl Health {
    /// The verdict for a revision applied at `applied`. Every apply stamps every object
    /// with its revision, so a failure that set in before the apply (for a reason not in
    /// Git, say) is not that revision's doing, and must not reject one that may fix
    /// something else: it only waits, for the object to recover or for `healthTimeout`.
    /// A failure that gives no time, or a revision whose apply time is unknown, stands.
    pub fn since_applied(self, applied: Option<DateTime<Utc>>) -> Health {
        match self {
            Health::Failed {
                message,
                since: Some(since),
                ..
            } if applied.is_some_and(|applied| since < applied) => Health::Progressing(clean(
                &format!("failed before this revision was applied: {message}"),
            )),
            other => other,
        }
    }
}

/// How an object of some kind is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    PersistentVolumeClaim,
    /// A custom kind: its standard conditions, the way kstatus reads them.
    Conditions,
    /// weir's own GitSync: its standard conditions, once weir has seen its generation.
    GitSync,
}

/// What a GitSync sees of one object it applied that has a health rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment shop/web`.
    pub name: String,
    /// The revision it was last applied from (`weir.dev/git-revision`); None when it could
    /// not be read.
    pub revision: Option<String>,
    pub health: Health,
}

/// Groups the API server serves itself whose kinds carry no standard `Ready` condition:
/// only the kinds with a rule of their own are read from them.
const BUILT_IN_GROUPS: [&str; 17] = [
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// The rule for a kind, or None: healthy once applied, and never read.
pub fn rule(api_version: &str, kind: &str) -> Option<Rule> {
    match (group_of(api_version), kind) {
        ("apps" | "extensions", "Deployment") => Some(Rule::Deployment),
        ("apps", "StatefulSet") => Some(Rule::StatefulSet),
        ("apps" | "extensions", "DaemonSet") => Some(Rule::DaemonSet),
        ("batch", "Job") => Some(Rule::Job),
        ("", "PersistentVolumeClaim") => Some(Rule::PersistentVolumeClaim),
        // A GitSync applying GitSyncs waits for theirs.
        ("weir.dev", "GitSync") => Some(Rule::GitSync),
        // Rollouts are judged by their own phase (`rollback::ManagedRollout`); templates
        // have no status.
        ("weir.dev", _) => None,
        // Gateway API reports per parent (`status.parents[].conditions`), never a Ready of
        // its own.
        ("gateway.networking.k8s.io", _) => None,
        // The core group and the other groups without a dot are the API server's own.
        (group, _) if !group.contains('.') || BUILT_IN_GROUPS.contains(&group) => None,
        _ => Some(Rule::Conditions),
    }
}

/// `Kind namespace/name`, or `Kind name` for a cluster-scoped object.
pub fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// What the GitSync `owner` (`namespace/name`) sees of a live object: None when the object
/// has no health rule, or is not this GitSync's (another one has taken it over).
pub fn observe(object: &Value, owner: &str) -> Option<Workload> {
    let metadata = &object["metadata"];
    let annotations = &metadata["annotations"];
    if annotations[GITSYNC_ANNOTATION].as_str() != Some(owner) {
        return None;
    }
    let rule = rule(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    )?;
    Some(Workload {
        name: describe(
            object["kind"].as_str().unwrap_or_default(),
            metadata["namespace"].as_str(),
            metadata["name"].as_str().unwrap_or_default(),
        ),
        revision: annotations[GIT_REVISION_ANNOTATION]
            .as_str()
            .map(str::to_owned),
        health: assess(rule, object),
    })
}

/// An object that could not be read: it keeps its revision from being good, and never
/// rejects it.
pub fn unreadable(name: String, why: &str) -> Workload {
    Workload {
        name,
        revision: None,
        health: Health::Progressing(format!("could not be read: {}", clean(why))),
    }
}

/// The longest text copied from an object into a verdict: a controller's message is its own
/// to choose, and it ends up in the GitSync's status.
const TEXT_CHARS: usize = 256;

/// Text from an object on one line, bounded.
fn clean(text: &str) -> String {
    bounded_text(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        TEXT_CHARS,
    )
}

fn int(value: &Value) -> Option<i64> {
    value.as_i64()
}

/// One condition of `status.conditions`, as far as a verdict needs it.
struct Condition<'v> {
    status: &'v str,
    reason: &'v str,
    message: &'v str,
    observed_generation: Option<i64>,
    since: Option<DateTime<Utc>>,
}

impl Condition<'_> {
    /// `Progressing is False (ProgressDeadlineExceeded): <message>`.
    fn words(&self, kind: &str) -> String {
        let mut words = format!("{kind} is {}", self.status);
        if !self.reason.is_empty() {
            words.push_str(&format!(" ({})", self.reason));
        }
        if !self.message.trim().is_empty() {
            words.push_str(&format!(": {}", self.message));
        }
        clean(&words)
    }
}

fn condition<'v>(object: &'v Value, kind: &str) -> Option<Condition<'v>> {
    let found = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind))?;
    Some(Condition {
        status: found["status"].as_str().unwrap_or_default(),
        reason: found["reason"].as_str().unwrap_or_default(),
        message: found["message"].as_str().unwrap_or_default(),
        observed_generation: int(&found["observedGeneration"]),
        since: found["lastTransitionTime"]
            .as_str()
            .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
            .map(|time| time.with_timezone(&Utc)),
    })
}

/// Judges a live object by `rule`.
pub fn assess(rule: Rule, object: &Value) -> Health {
    if object["metadata"]["deletionTimestamp"].is_string() {
        return Health::Progressing("being deleted".into());
    }
    let generation = int(&object["metadata"]["generation"]);
    let observed = int(&object["status"]["observedGeneration"]);
    // kstatus' generic rule, for every kind: a status behind the spec is about an older one.
    if let (Some(generation), Some(observed)) = (generation, observed)
        && observed < generation
    {
        return unobserved(generation, Some(observed));
    }
    match rule {
        Rule::Deployment => deployment(object, generation, observed),
        Rule::StatefulSet => stateful_set(object, generation, observed),
        Rule::DaemonSet => daemon_set(object, generation, observed),
        Rule::Job => job(object),
        Rule::PersistentVolumeClaim => claim(object),
        Rule::Conditions => conditions(object, generation),
        // A GitSync without a status weir wrote for its generation has not been synced yet;
        // kstatus would call it current (it has no conditions yet).
        Rule::GitSync => {
            seen(generation, observed).unwrap_or_else(|| conditions(object, generation))
        }
    }
}

fn unobserved(generation: i64, observed: Option<i64>) -> Health {
    Health::Progressing(match observed {
        Some(observed) => {
            format!("its controller has not seen generation {generation} yet (it saw {observed})")
        }
        None => format!("its controller has not seen generation {generation} yet"),
    })
}

/// The built-in workload controllers always report `observedGeneration` once they have
/// looked: without it nothing in the status is about this spec yet.
fn seen(generation: Option<i64>, observed: Option<i64>) -> Option<Health> {
    match (generation, observed) {
        (Some(generation), None) => Some(unobserved(generation, None)),
        _ => None,
    }
}

fn of(done: i64, wanted: i64, what: &str) -> Health {
    Health::Progressing(format!("{done} of {wanted} {what}"))
}

fn deployment(object: &Value, generation: Option<i64>, observed: Option<i64>) -> Health {
    if let Some(waiting) = seen(generation, observed) {
        return waiting;
    }
    let status = &object["status"];
    // The deployment controller gave up: progressDeadlineSeconds (600 unless set) passed
    // without progress. For this generation, since the controller has seen it.
    if let Some(progressing) = condition(object, "Progressing")
        && progressing.reason == "ProgressDeadlineExceeded"
    {
        return Health::Failed {
            reason: progressing.reason.to_owned(),
            message: progressing.words("Progressing"),
            since: progressing.since,
        };
    }
    let wanted = int(&object["spec"]["replicas"]).unwrap_or(1);
    let total = int(&status["replicas"]).unwrap_or(0);
    let updated = int(&status["updatedReplicas"]).unwrap_or(0);
    let available = int(&status["availableReplicas"]).unwrap_or(0);
    let paused = if object["spec"]["paused"] == Value::Bool(true) {
        " (paused: spec.paused is true)"
    } else {
        ""
    };
    let waiting = |health: Health| match health {
        Health::Progressing(words) => Health::Progressing(format!("{words}{paused}")),
        other => other,
    };
    if updated < wanted {
        return waiting(of(updated, wanted, "replicas updated"));
    }
    if total > updated {
        return waiting(Health::Progressing(format!(
            "{} old replicas pending termination",
            total - updated
        )));
    }
    if available < wanted {
        return waiting(of(available, wanted, "replicas available"));
    }
    Health::Healthy
}

fn stateful_set(object: &Value, generation: Option<i64>, observed: Option<i64>) -> Health {
    if let Some(waiting) = seen(generation, observed) {
        return waiting;
    }
    let (spec, status) = (&object["spec"], &object["status"]);
    let wanted = int(&spec["replicas"]).unwrap_or(1);
    let total = int(&status["replicas"]).unwrap_or(0);
    let ready = int(&status["readyReplicas"]).unwrap_or(0);
    let updated = int(&status["updatedReplicas"]).unwrap_or(0);
    if wanted == 0 {
        // Scaled to nothing: done once its pods are gone (the revisions it reports need not
        // meet when no pod carries them).
        return match total {
            0 => Health::Healthy,
            n => Health::Progressing(format!("{n} replicas pending termination")),
        };
    }
    if total < wanted {
        return of(total, wanted, "replicas created");
    }
    if ready < wanted {
        return of(ready, wanted, "replicas ready");
    }
    if total > wanted {
        return Health::Progressing(format!("{} replicas pending termination", total - wanted));
    }
    let strategy = &spec["updateStrategy"];
    // OnDelete: pods change only when someone deletes them, so old ones are expected.
    if strategy["type"].as_str() == Some("OnDelete") {
        return Health::Healthy;
    }
    // A partition updates only the pods numbered from it up.
    if let Some(partition) = int(&strategy["rollingUpdate"]["partition"]).filter(|p| *p > 0) {
        let due = (wanted - partition).max(0);
        return match updated < due {
            true => of(updated, due, "replicas above the partition updated"),
            false => Health::Healthy,
        };
    }
    if updated < wanted {
        return of(updated, wanted, "replicas updated");
    }
    let current = status["currentRevision"].as_str().unwrap_or_default();
    let update = status["updateRevision"].as_str().unwrap_or_default();
    if current != update {
        return Health::Progressing(format!(
            "rolling update from revision {current} to {update} not finished"
        ));
    }
    Health::Healthy
}

fn daemon_set(object: &Value, generation: Option<i64>, observed: Option<i64>) -> Health {
    if let Some(waiting) = seen(generation, observed) {
        return waiting;
    }
    let status = &object["status"];
    let Some(desired) = int(&status["desiredNumberScheduled"]) else {
        return Health::Progressing("its controller has not counted its nodes yet".into());
    };
    let updated = int(&status["updatedNumberScheduled"]).unwrap_or(0);
    let available = int(&status["numberAvailable"]).unwrap_or(0);
    // OnDelete: pods change only when someone deletes them.
    let on_delete = object["spec"]["updateStrategy"]["type"].as_str() == Some("OnDelete");
    if !on_delete && updated < desired {
        return of(updated, desired, "pods updated");
    }
    if available < desired {
        return of(available, desired, "pods available");
    }
    Health::Healthy
}

fn job(object: &Value) -> Health {
    let is_true = |kind: &str| condition(object, kind).filter(|c| c.status == "True");
    // backoffLimit or activeDeadlineSeconds reached: the job controller will not retry.
    if let Some(failed) = is_true("Failed") {
        return Health::Failed {
            reason: match failed.reason {
                "" => "JobFailed".to_owned(),
                reason => reason.to_owned(),
            },
            message: failed.words("Failed"),
            since: failed.since,
        };
    }
    if is_true("Complete").is_some() {
        return Health::Healthy;
    }
    // Suspended on purpose (kstatus counts it current).
    if object["spec"]["suspend"] == Value::Bool(true) && is_true("Suspended").is_some() {
        return Health::Healthy;
    }
    let status = &object["status"];
    Health::Progressing(format!(
        "not complete: {} succeeded, {} active, {} failed",
        int(&status["succeeded"]).unwrap_or(0),
        int(&status["active"]).unwrap_or(0),
        int(&status["failed"]).unwrap_or(0)
    ))
}

fn claim(object: &Value) -> Health {
    match object["status"]["phase"].as_str() {
        // Pending counts as healthy. Argo CD (Progressing) and kstatus (InProgress) wait for
        // it, but for weir a wait that outlasts healthTimeout rejects the revision, and a
        // claim on a WaitForFirstConsumer StorageClass stays Pending until a pod uses it,
        // which may never come from this revision (weir does not read StorageClasses to
        // tell). A claim a workload needs is waited for through that workload's own health.
        Some("Bound" | "Pending") => Health::Healthy,
        // Its volume is gone: nothing will bind it again.
        Some("Lost") => Health::Failed {
            reason: "ClaimLost".into(),
            message: clean(&format!(
                "phase is Lost: its PersistentVolume {} no longer exists",
                object["spec"]["volumeName"].as_str().unwrap_or("(none)")
            )),
            since: None,
        },
        Some(phase) => Health::Progressing(clean(&format!("not bound yet (phase {phase})"))),
        None => Health::Progressing("not bound yet".into()),
    }
}

/// kstatus' rules for a kind it knows nothing about: `Stalled` True fails, `Reconciling`
/// True waits, then `Ready` decides (False or Unknown waits: only `Stalled` says a
/// controller gave up); without any of them the object is current once applied.
fn conditions(object: &Value, generation: Option<i64>) -> Health {
    // A condition that says which generation it describes is believed only for this one.
    let current = |c: &Condition| match (c.observed_generation, generation) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => true,
    };
    let find = |kind: &str| condition(object, kind).filter(|c| current(c));
    if let Some(stalled) = find("Stalled").filter(|c| c.status == "True") {
        return Health::Failed {
            reason: match stalled.reason {
                "" => "Stalled".to_owned(),
                reason => reason.to_owned(),
            },
            message: stalled.words("Stalled"),
            since: stalled.since,
        };
    }
    if let Some(reconciling) = find("Reconciling").filter(|c| c.status == "True") {
        return Health::Progressing(reconciling.words("Reconciling"));
    }
    match condition(object, "Ready") {
        Some(ready) if !current(&ready) => {
            unobserved(generation.unwrap_or_default(), ready.observed_generation)
        }
        Some(ready) if ready.status == "True" => Health::Healthy,
        Some(ready) => Health::Progressing(ready.words("Ready")),
        None => Health::Healthy,
    }
}

/// What the applied revision still waits for, in words: the first of its objects (at that
/// revision, or unreadable) that is not healthy, and how many more there are.
pub fn waiting(revision: &str, workloads: &[Workload]) -> Option<String> {
    let mut pending = workloads.iter().filter(|w| {
        w.revision.as_deref().is_none_or(|r| r == revision) && w.health != Health::Healthy
    });
    let first = pending.next()?;
    let what = match &first.health {
        Health::Progressing(words) => words.clone(),
        Health::Failed { message, .. } => message.clone(),
        Health::Healthy => String::new(),
    };
    Some(match pending.count() {
        0 => format!("{}: {what}", first.name),
        n => format!("{}: {what} (and {n} more)", first.name),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn object(api_version: &str, kind: &str, spec: Value, status: Value) -> Value {
        json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "web", "namespace": "shop", "generation": 2,
                "annotations": {GITSYNC_ANNOTATION: "shop/app", GIT_REVISION_ANNOTATION: "v2"}},
            "spec": spec, "status": status})
    }

    fn deployment(status: Value) -> Value {
        object("apps/v1", "Deployment", json!({"replicas": 3}), status)
    }

    fn progressing(words: &str) -> Health {
        Health::Progressing(words.into())
    }

    fn judged(object: &Value) -> Health {
        let rule = rule(
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
        )
        .expect("a kind with a rule");
        assess(rule, object)
    }

    #[test]
    fn only_workloads_and_custom_kinds_have_rules() {
        for (api_version, kind, expected) in [
            ("apps/v1", "Deployment", Some(Rule::Deployment)),
            ("extensions/v1beta1", "Deployment", Some(Rule::Deployment)),
            ("apps/v1", "StatefulSet", Some(Rule::StatefulSet)),
            ("apps/v1", "DaemonSet", Some(Rule::DaemonSet)),
            ("batch/v1", "Job", Some(Rule::Job)),
            (
                "v1",
                "PersistentVolumeClaim",
                Some(Rule::PersistentVolumeClaim),
            ),
            ("cert-manager.io/v1", "Certificate", Some(Rule::Conditions)),
            ("weir.dev/v1alpha1", "GitSync", Some(Rule::GitSync)),
            ("weir.dev/v1alpha1", "Rollout", None),
            ("weir.dev/v1alpha1", "AnalysisTemplate", None),
            ("gateway.networking.k8s.io/v1", "HTTPRoute", None),
            ("v1", "ConfigMap", None),
            ("v1", "Service", None),
            ("v1", "Pod", None),
            ("batch/v1", "CronJob", None),
            ("apps/v1", "ReplicaSet", None),
            ("policy/v1", "PodDisruptionBudget", None),
            ("rbac.authorization.k8s.io/v1", "RoleBinding", None),
            ("networking.k8s.io/v1", "Ingress", None),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition", None),
        ] {
            assert_eq!(rule(api_version, kind), expected, "{api_version} {kind}");
        }
    }

    #[test]
    fn a_deployment_is_healthy_when_every_replica_is_updated_and_available() {
        let status = |replicas: i64, updated: i64, available: i64| {
            deployment(json!({"observedGeneration": 2, "replicas": replicas,
                "updatedReplicas": updated, "availableReplicas": available}))
        };
        assert_eq!(judged(&status(3, 3, 3)), Health::Healthy);
        assert_eq!(
            judged(&status(3, 1, 3)),
            progressing("1 of 3 replicas updated")
        );
        assert_eq!(
            judged(&status(5, 3, 3)),
            progressing("2 old replicas pending termination")
        );
        assert_eq!(
            judged(&status(3, 3, 1)),
            progressing("1 of 3 replicas available")
        );
        let mut paused = status(3, 1, 3);
        paused["spec"]["paused"] = json!(true);
        assert_eq!(
            judged(&paused),
            progressing("1 of 3 replicas updated (paused: spec.paused is true)")
        );
        // No spec.replicas: the API server's default of 1.
        let mut one = status(1, 1, 1);
        one["spec"] = json!({});
        assert_eq!(judged(&one), Health::Healthy);
        let mut zero = deployment(json!({"observedGeneration": 2}));
        zero["spec"]["replicas"] = json!(0);
        assert_eq!(judged(&zero), Health::Healthy, "scaled to zero");
    }

    #[test]
    fn a_deployment_is_judged_only_for_the_generation_it_has() {
        let behind = deployment(json!({"observedGeneration": 1, "replicas": 3,
            "updatedReplicas": 3, "availableReplicas": 3}));
        assert_eq!(
            judged(&behind),
            progressing("its controller has not seen generation 2 yet (it saw 1)")
        );
        let never = deployment(json!({}));
        assert_eq!(
            judged(&never),
            progressing("its controller has not seen generation 2 yet")
        );
        // A deadline passed for the older template says nothing about this one.
        let old_deadline = deployment(json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}));
        assert!(matches!(judged(&old_deadline), Health::Progressing(_)));
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_failed() {
        let failed = deployment(json!({"observedGeneration": 2, "replicas": 4,
            "updatedReplicas": 1, "availableReplicas": 3, "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-5d9\" has timed out\nprogressing."}]}));
        assert_eq!(
            judged(&failed),
            Health::Failed {
                reason: "ProgressDeadlineExceeded".into(),
                message: "Progressing is False (ProgressDeadlineExceeded): ReplicaSet \"web-5d9\" has timed out progressing.".into(),
                since: None
            }
        );
        let going = deployment(json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 3, "availableReplicas": 3, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}));
        assert_eq!(judged(&going), Health::Healthy);
    }

    fn stateful_set(spec: Value, status: Value) -> Value {
        object("apps/v1", "StatefulSet", spec, status)
    }

    #[test]
    fn a_stateful_set_is_healthy_when_ready_and_rolled_to_its_update_revision() {
        let spec = json!({"replicas": 3});
        let status = |total: i64, ready: i64, updated: i64, current: &str| {
            json!({"observedGeneration": 2, "replicas": total, "readyReplicas": ready,
                "updatedReplicas": updated, "currentRevision": current,
                "updateRevision": "web-b"})
        };
        let cases = [
            (status(3, 3, 3, "web-b"), Health::Healthy),
            (
                status(2, 2, 2, "web-b"),
                progressing("2 of 3 replicas created"),
            ),
            (
                status(3, 2, 3, "web-b"),
                progressing("2 of 3 replicas ready"),
            ),
            (
                status(4, 4, 3, "web-b"),
                progressing("1 replicas pending termination"),
            ),
            (
                status(3, 3, 1, "web-a"),
                progressing("1 of 3 replicas updated"),
            ),
            (
                status(3, 3, 3, "web-a"),
                progressing("rolling update from revision web-a to web-b not finished"),
            ),
            (
                json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3}),
                progressing("its controller has not seen generation 2 yet (it saw 1)"),
            ),
            (
                json!({}),
                progressing("its controller has not seen generation 2 yet"),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(
                judged(&stateful_set(spec.clone(), status.clone())),
                expected,
                "{status}"
            );
        }
    }

    #[test]
    fn a_stateful_set_with_a_partition_or_on_delete_waits_only_for_what_it_updates() {
        let partitioned = json!({"replicas": 4,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 3}}});
        let status = |updated: i64| {
            json!({"observedGeneration": 2, "replicas": 4, "readyReplicas": 4,
                "updatedReplicas": updated, "currentRevision": "web-a", "updateRevision": "web-b"})
        };
        assert_eq!(
            judged(&stateful_set(partitioned.clone(), status(0))),
            progressing("0 of 1 replicas above the partition updated")
        );
        assert_eq!(
            judged(&stateful_set(partitioned, status(1))),
            Health::Healthy
        );
        let on_delete = json!({"replicas": 4, "updateStrategy": {"type": "OnDelete"}});
        assert_eq!(
            judged(&stateful_set(on_delete.clone(), status(0))),
            Health::Healthy
        );
        let mut unready = status(0);
        unready["readyReplicas"] = json!(2);
        assert_eq!(
            judged(&stateful_set(on_delete, unready)),
            progressing("2 of 4 replicas ready")
        );
        let zero = json!({"replicas": 0});
        assert_eq!(
            judged(&stateful_set(
                zero.clone(),
                json!({"observedGeneration": 2, "replicas": 0,
                "currentRevision": "web-a", "updateRevision": "web-b"})
            )),
            Health::Healthy
        );
        assert_eq!(
            judged(&stateful_set(
                zero,
                json!({"observedGeneration": 2, "replicas": 1})
            )),
            progressing("1 replicas pending termination")
        );
    }

    fn daemon_set(spec: Value, status: Value) -> Value {
        object("apps/v1", "DaemonSet", spec, status)
    }

    #[test]
    fn a_daemon_set_is_healthy_when_every_node_runs_an_updated_available_pod() {
        let status = |desired: i64, updated: i64, available: i64| {
            json!({"observedGeneration": 2, "desiredNumberScheduled": desired,
                "currentNumberScheduled": desired, "updatedNumberScheduled": updated,
                "numberAvailable": available, "numberReady": available})
        };
        let cases = [
            (status(3, 3, 3), Health::Healthy),
            (status(0, 0, 0), Health::Healthy),
            (status(3, 1, 3), progressing("1 of 3 pods updated")),
            (status(3, 3, 2), progressing("2 of 3 pods available")),
            (
                json!({"observedGeneration": 2}),
                progressing("its controller has not counted its nodes yet"),
            ),
            (
                json!({}),
                progressing("its controller has not seen generation 2 yet"),
            ),
            (
                json!({"observedGeneration": 1, "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3, "numberAvailable": 3}),
                progressing("its controller has not seen generation 2 yet (it saw 1)"),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(
                judged(&daemon_set(json!({}), status.clone())),
                expected,
                "{status}"
            );
        }
        let on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
        assert_eq!(
            judged(&daemon_set(on_delete, status(3, 0, 3))),
            Health::Healthy
        );
    }

    fn job(spec: Value, status: Value) -> Value {
        let mut job = object("batch/v1", "Job", spec, status);
        // Jobs report no observedGeneration: their template cannot change.
        job["metadata"]["generation"] = json!(1);
        job
    }

    #[test]
    fn a_job_is_healthy_once_complete_and_failed_when_its_controller_gives_up() {
        let complete = job(
            json!({}),
            json!({"succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(judged(&complete), Health::Healthy);
        let running = job(
            json!({}),
            json!({"active": 1, "failed": 2,
            "startTime": "2027-01-01T00:00:00Z"}),
        );
        assert_eq!(
            judged(&running),
            progressing("not complete: 0 succeeded, 1 active, 2 failed")
        );
        assert_eq!(
            judged(&job(json!({}), json!({}))),
            progressing("not complete: 0 succeeded, 0 active, 0 failed")
        );
        let failed = job(
            json!({}),
            json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
             "message": "Job was active longer than specified deadline"}]}),
        );
        assert_eq!(
            judged(&failed),
            Health::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Failed is True (DeadlineExceeded): Job was active longer than specified deadline".into(),
                since: None
            }
        );
        let no_reason = job(
            json!({}),
            json!({"conditions": [{"type": "Failed", "status": "True"}]}),
        );
        assert!(
            matches!(judged(&no_reason), Health::Failed { reason, .. } if reason == "JobFailed")
        );
        let not_yet = job(
            json!({}),
            json!({"conditions": [{"type": "Failed", "status": "False"}]}),
        );
        assert!(matches!(judged(&not_yet), Health::Progressing(_)));
        let suspended = job(
            json!({"suspend": true}),
            json!({"conditions": [
            {"type": "Suspended", "status": "True"}]}),
        );
        assert_eq!(judged(&suspended), Health::Healthy);
        let resumed = job(
            json!({"suspend": false}),
            json!({"conditions": [
            {"type": "Suspended", "status": "True"}]}),
        );
        assert!(matches!(judged(&resumed), Health::Progressing(_)));
    }

    #[test]
    fn a_claim_is_healthy_when_bound_or_pending_and_failed_when_lost() {
        let claim = |phase: Value| {
            let mut claim = object(
                "v1",
                "PersistentVolumeClaim",
                json!({"volumeName": "pv-7"}),
                json!({"phase": phase}),
            );
            claim["metadata"]
                .as_object_mut()
                .map(|m| m.remove("generation"));
            claim
        };
        assert_eq!(judged(&claim(json!("Bound"))), Health::Healthy);
        // A claim on a WaitForFirstConsumer class stays Pending until a pod uses it: waiting
        // for it would time every revision out.
        assert_eq!(judged(&claim(json!("Pending"))), Health::Healthy);
        assert_eq!(judged(&claim(Value::Null)), progressing("not bound yet"));
        assert_eq!(
            judged(&claim(json!("Lost"))),
            Health::Failed {
                reason: "ClaimLost".into(),
                message: "phase is Lost: its PersistentVolume pv-7 no longer exists".into(),
                since: None
            }
        );
    }

    fn custom(conditions: Value, observed: Option<i64>) -> Value {
        let mut status = json!({"conditions": conditions});
        if let Some(observed) = observed {
            status["observedGeneration"] = json!(observed);
        }
        object("cert-manager.io/v1", "Certificate", json!({}), status)
    }

    #[test]
    fn a_custom_object_is_judged_by_its_standard_conditions() {
        let ready = |status: &str| {
            json!([{"type": "Ready", "status": status, "reason": "Issuing",
                "message": "waiting for the issuer"}])
        };
        assert_eq!(judged(&custom(ready("True"), Some(2))), Health::Healthy);
        assert_eq!(
            judged(&custom(ready("False"), Some(2))),
            progressing("Ready is False (Issuing): waiting for the issuer")
        );
        assert_eq!(
            judged(&custom(ready("Unknown"), None)),
            progressing("Ready is Unknown (Issuing): waiting for the issuer")
        );
        assert_eq!(
            judged(&custom(ready("True"), Some(1))),
            progressing("its controller has not seen generation 2 yet (it saw 1)")
        );
        let stalled = json!([{"type": "Ready", "status": "False", "reason": "Failed"},
            {"type": "Stalled", "status": "True", "reason": "InvalidIssuer",
             "message": "issuer \"le\" not found"}]);
        assert_eq!(
            judged(&custom(stalled, Some(2))),
            Health::Failed {
                reason: "InvalidIssuer".into(),
                message: "Stalled is True (InvalidIssuer): issuer \"le\" not found".into(),
                since: None
            }
        );
        let reconciling = json!([{"type": "Ready", "status": "True"},
            {"type": "Reconciling", "status": "True", "reason": "Progressing"}]);
        assert_eq!(
            judged(&custom(reconciling, Some(2))),
            progressing("Reconciling is True (Progressing)")
        );
        assert_eq!(
            judged(&custom(json!([]), None)),
            Health::Healthy,
            "no conditions"
        );
        assert_eq!(judged(&custom(Value::Null, None)), Health::Healthy);
    }

    #[test]
    fn a_gitsync_is_healthy_only_once_weir_recorded_a_status_for_its_generation() {
        let sync = |status: Value| object("weir.dev/v1alpha1", "GitSync", json!({}), status);
        let ready = json!([{"type": "Ready", "status": "True", "reason": "Applied"}]);
        assert_eq!(
            judged(&sync(Value::Null)),
            progressing("its controller has not seen generation 2 yet"),
            "created, never synced"
        );
        assert_eq!(
            judged(&sync(json!({"conditions": ready.clone()}))),
            progressing("its controller has not seen generation 2 yet")
        );
        assert_eq!(
            judged(&sync(
                json!({"observedGeneration": 1, "conditions": ready.clone()})
            )),
            progressing("its controller has not seen generation 2 yet (it saw 1)")
        );
        assert_eq!(
            judged(&sync(json!({"observedGeneration": 2, "conditions": ready}))),
            Health::Healthy
        );
        // Any other custom kind with no status yet is current, as kstatus has it: nothing
        // says it has a controller that will write one.
        assert_eq!(judged(&custom(Value::Null, None)), Health::Healthy);
        let mut bare = custom(Value::Null, None);
        bare.as_object_mut().map(|o| o.remove("status"));
        assert_eq!(judged(&bare), Health::Healthy);
    }

    #[test]
    fn a_failure_keeps_when_its_condition_turned_and_one_from_before_the_apply_only_waits() {
        let applied = DateTime::parse_from_rfc3339("2027-01-01T00:00:10Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let failed_at = |time: &str| {
            deployment(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                "availableReplicas": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "timed out", "lastTransitionTime": time}]}),
            )
        };
        let before = judged(&failed_at("2027-01-01T00:00:09Z"));
        assert!(
            matches!(&before, Health::Failed { since: Some(_), .. }),
            "{before:?}"
        );
        assert_eq!(
            before.clone().since_applied(applied),
            progressing(
                "failed before this revision was applied: Progressing is False (ProgressDeadlineExceeded): timed out"
            )
        );
        assert_eq!(
            before.clone().since_applied(None),
            before,
            "apply time unknown"
        );
        for at_or_after in ["2027-01-01T00:00:10Z", "2027-01-01T00:05:00Z"] {
            let failed = judged(&failed_at(at_or_after));
            assert_eq!(
                failed.clone().since_applied(applied),
                failed,
                "{at_or_after}"
            );
        }
        // No time given: the failure stands.
        let untimed = judged(&failed_at("yesterday"));
        assert!(matches!(untimed, Health::Failed { since: None, .. }));
        assert_eq!(untimed.clone().since_applied(applied), untimed);
        let stalled = custom(
            json!([{"type": "Stalled", "status": "True", "reason": "InvalidIssuer",
                "lastTransitionTime": "2027-01-01T00:00:00Z"}]),
            Some(2),
        );
        assert!(matches!(
            judged(&stalled).since_applied(applied),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn a_condition_about_an_older_generation_is_not_believed() {
        let old_ready = json!([{"type": "Ready", "status": "True", "observedGeneration": 1}]);
        assert_eq!(
            judged(&custom(old_ready, None)),
            progressing("its controller has not seen generation 2 yet (it saw 1)")
        );
        let old_stall = json!([{"type": "Stalled", "status": "True", "observedGeneration": 1},
            {"type": "Ready", "status": "True", "observedGeneration": 2}]);
        assert_eq!(judged(&custom(old_stall, None)), Health::Healthy);
    }

    #[test]
    fn an_object_being_deleted_is_not_healthy() {
        let mut gone = deployment(json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 3, "availableReplicas": 3}));
        gone["metadata"]["deletionTimestamp"] = json!("2027-01-01T00:00:00Z");
        assert_eq!(judged(&gone), progressing("being deleted"));
    }

    #[test]
    fn only_this_gitsyncs_objects_with_a_rule_are_observed() {
        let live = deployment(json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 3, "availableReplicas": 3}));
        assert_eq!(
            observe(&live, "shop/app"),
            Some(Workload {
                name: "Deployment shop/web".into(),
                revision: Some("v2".into()),
                health: Health::Healthy
            })
        );
        assert_eq!(
            observe(&live, "shop/other"),
            None,
            "taken over by another GitSync"
        );
        let config = object("v1", "ConfigMap", Value::Null, Value::Null);
        assert_eq!(observe(&config, "shop/app"), None);
        assert_eq!(describe("Namespace", None, "shop"), "Namespace shop");
    }

    #[test]
    fn waiting_names_the_first_object_not_healthy_at_the_revision() {
        let workload = |name: &str, revision: Option<&str>, health: Health| Workload {
            name: name.into(),
            revision: revision.map(str::to_owned),
            health,
        };
        let all = vec![
            workload(
                "Deployment shop/old",
                Some("v1"),
                progressing("0 of 1 replicas available"),
            ),
            workload("Deployment shop/api", Some("v2"), Health::Healthy),
            workload(
                "Deployment shop/web",
                Some("v2"),
                progressing("1 of 3 replicas available"),
            ),
            workload(
                "Job shop/migrate",
                None,
                progressing("could not be read: timeout"),
            ),
        ];
        assert_eq!(
            waiting("v2", &all).as_deref(),
            Some("Deployment shop/web: 1 of 3 replicas available (and 1 more)")
        );
        assert_eq!(
            waiting("v2", &all[..3]).as_deref(),
            Some("Deployment shop/web: 1 of 3 replicas available")
        );
        assert_eq!(waiting("v2", &all[1..2]), None);
        assert_eq!(
            waiting("v3", &all[..3]),
            None,
            "objects of other revisions are not this one's"
        );
        let unreadable = unreadable("Job shop/migrate".into(), "forbidden:\n  no");
        assert_eq!(
            unreadable.health,
            progressing("could not be read: forbidden: no")
        );
    }

    #[test]
    fn text_from_an_object_is_one_bounded_line() {
        let long = "x\n".repeat(10_000);
        let failed = job(
            json!({}),
            json!({"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": long}]}),
        );
        match judged(&failed) {
            Health::Failed { message, .. } => {
                assert!(message.chars().count() <= TEXT_CHARS, "{}", message.len());
                assert!(!message.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }

    fn kind() -> impl Strategy<Value = (&'static str, &'static str)> {
        prop::sample::select(vec![
            ("apps/v1", "Deployment"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("batch/v1", "Job"),
            ("v1", "PersistentVolumeClaim"),
            ("example.com/v1", "Widget"),
        ])
    }

    fn count() -> impl Strategy<Value = Value> {
        prop_oneof![Just(Value::Null), (0i64..5).prop_map(Value::from)]
    }

    fn word(options: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            prop::sample::select(options).prop_map(Value::from)
        ]
    }

    prop_compose! {
        fn condition_value()(
            kind in word(&["Ready", "Stalled", "Reconciling", "Progressing", "Available",
                "Complete", "Failed", "Suspended"]),
            status in word(&["True", "False", "Unknown"]),
            reason in word(&["ProgressDeadlineExceeded", "BackoffLimitExceeded", "Issuing", ""]),
            observed in count(),
        ) -> Value {
            json!({"type": kind, "status": status, "reason": reason, "message": "m",
                "observedGeneration": observed})
        }
    }

    prop_compose! {
        /// Any status a controller could write, and many it could not.
        fn any_status()(
            replicas in count(), updated in count(), available in count(), ready in count(),
            total in count(), desired in count(),
            phase in word(&["Bound", "Pending", "Lost"]),
            current in word(&["web-a", "web-b"]), update in word(&["web-a", "web-b"]),
            strategy in word(&["RollingUpdate", "OnDelete"]), partition in count(),
            suspend in prop::option::of(any::<bool>()),
            conditions in prop::collection::vec(condition_value(), 0..4),
        ) -> (Value, Value) {
            let spec = json!({"replicas": replicas, "suspend": suspend,
                "updateStrategy": {"type": strategy, "rollingUpdate": {"partition": partition}}});
            let status = json!({"replicas": total, "updatedReplicas": updated,
                "availableReplicas": available, "readyReplicas": ready,
                "desiredNumberScheduled": desired, "updatedNumberScheduled": updated,
                "numberAvailable": available, "phase": phase, "currentRevision": current,
                "updateRevision": update, "succeeded": updated, "conditions": conditions});
            (spec, status)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A status its controller wrote for an older generation is never Healthy and never
        /// Failed, whatever else it says, for every kind.
        #[test]
        fn a_status_behind_its_generation_is_never_judged(
            (api_version, kind) in kind(),
            (spec, mut status) in any_status(),
            generation in 2i64..10,
            behind in 1i64..3,
        ) {
            status["observedGeneration"] = json!(generation - behind);
            let mut live = object(api_version, kind, spec, status);
            live["metadata"]["generation"] = json!(generation);
            let rule = rule(api_version, kind).expect("a rule");
            prop_assert!(matches!(assess(rule, &live), Health::Progressing(_)), "{}", live);
        }

        /// Only a condition (or a lost volume) fails an object: counts alone only wait, and
        /// a verdict is the same however often it is taken.
        #[test]
        fn only_a_condition_fails_an_object(
            (api_version, kind) in kind(),
            (spec, mut status) in any_status(),
            observed in count(),
        ) {
            status["conditions"] = Value::Null;
            status["observedGeneration"] = observed;
            let live = object(api_version, kind, spec, status);
            let rule = rule(api_version, kind).expect("a rule");
            let health = assess(rule, &live);
            let lost = live["status"]["phase"] == "Lost" && rule == Rule::PersistentVolumeClaim;
            prop_assert!(!matches!(health, Health::Failed { .. }) || lost, "{:?}", health);
            prop_assert_eq!(assess(rule, &live), health);
        }

        /// A condition that turned before the revision was applied never fails it (only a
        /// lost volume, which says no time, does), whatever the object says.
        #[test]
        fn a_failure_from_before_the_apply_is_never_the_revisions(
            (api_version, kind) in kind(),
            (spec, mut status) in any_status(),
            early in prop::collection::vec(0i64..3600, 4),
        ) {
            let applied = DateTime::from_timestamp(1_800_003_600, 0);
            if let Some(conditions) = status["conditions"].as_array_mut() {
                for (condition, early) in conditions.iter_mut().zip(early) {
                    let time = DateTime::from_timestamp(1_800_003_599 - early, 0);
                    condition["lastTransitionTime"] = json!(time.map(|t| t.to_rfc3339()));
                }
            }
            let live = object(api_version, kind, spec, status);
            let rule = rule(api_version, kind).expect("a rule");
            let health = assess(rule, &live).since_applied(applied);
            let lost = live["status"]["phase"] == "Lost" && rule == Rule::PersistentVolumeClaim;
            prop_assert!(!matches!(health, Health::Failed { .. }) || lost, "{:?}", health);
        }
    }
}
