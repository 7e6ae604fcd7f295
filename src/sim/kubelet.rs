//! A stand-in for the kubelet: there is none on the local control plane, so Pods would stay
//! Pending forever. It marks every Pod Running and Ready, the way a kubelet reports a healthy
//! container, unless the Pod is annotated `sim.weir.dev/ready: "false"`: then the Pod runs
//! but never becomes Ready, like a crash-looping version. The ReplicaSet controller counts
//! what it reports, so rollouts see ready and unready canaries as on a real node. A Job's Pod
//! runs to completion at once: Succeeded, or Failed when annotated `sim.weir.dev/exit-code`
//! with anything but "0" (its container's exit code), so the Job controller judges it as it
//! would a real one; annotated `sim.weir.dev/runs-until-deleted: "true"`, it runs (Ready)
//! until deleted, as a long check would.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

pub const READY_ANNOTATION: &str = "sim.weir.dev/ready";
pub const EXIT_CODE_ANNOTATION: &str = "sim.weir.dev/exit-code";
/// A Job's Pod so annotated (`"true"`) runs until it is deleted, as a long check would.
pub const RUNS_UNTIL_DELETED_ANNOTATION: &str = "sim.weir.dev/runs-until-deleted";

/// How many Pods to report on at once.
const CONCURRENCY: usize = 16;

/// Whether the Pod should look Ready: yes unless annotated `sim.weir.dev/ready: "false"`.
pub fn should_be_ready(pod: &Pod) -> bool {
    pod.annotations().get(READY_ANNOTATION).map(String::as_str) != Some("false")
}

/// The status patch a kubelet would send for this Pod now, or None when the Pod already
/// reports what it should (so an unchanged Pod costs no write). Transition times move only
/// when readiness really changes.
pub fn status_patch(pod: &Pod, now: &Time) -> Option<Value> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let runs_on = pod
        .annotations()
        .get(RUNS_UNTIL_DELETED_ANNOTATION)
        .is_some_and(|v| v == "true");
    if !runs_on
        && pod
            .owner_references()
            .iter()
            .any(|o| o.kind == "Job" && o.api_version == "batch/v1")
    {
        return completed(pod, now);
    }
    let ready = should_be_ready(pod);
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    let ready_word = if ready { "True" } else { "False" };
    let up_to_date = status.phase.as_deref() == Some("Running")
        && condition("Ready").is_some_and(|c| c.status == ready_word)
        && condition("ContainersReady").is_some_and(|c| c.status == ready_word);
    if up_to_date {
        return None;
    }
    let started = status.start_time.unwrap_or_else(|| now.clone());
    let since = |kind: &str, wanted: &str| -> Time {
        match condition(kind) {
            Some(PodCondition {
                status,
                last_transition_time: Some(time),
                ..
            }) if status == wanted => time.clone(),
            _ => now.clone(),
        }
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let container_statuses: Vec<Value> = containers
        .iter()
        .map(|container| {
            let state = if ready {
                json!({"running": {"startedAt": started}})
            } else {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "weir-sim: annotated sim.weir.dev/ready=false"}})
            };
            json!({
                "name": container.name,
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": ready,
                "started": ready,
                "restartCount": if ready { 0 } else { 1 },
                "state": state,
            })
        })
        .collect();
    Some(json!({
        "status": {
            "phase": "Running",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": since("PodScheduled", "True")},
                {"type": "Initialized", "status": "True", "lastTransitionTime": since("Initialized", "True")},
                {"type": "ContainersReady", "status": ready_word, "lastTransitionTime": since("ContainersReady", ready_word)},
                {"type": "Ready", "status": ready_word, "lastTransitionTime": since("Ready", ready_word)},
            ],
            "containerStatuses": container_statuses,
        }
    }))
}

/// The status of a Job's Pod that ran to completion: its exit code from the annotation (0
/// when there is none); None once it reports that.
fn completed(pod: &Pod, now: &Time) -> Option<Value> {
    let status = pod.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let code: i32 = pod
        .annotations()
        .get(EXIT_CODE_ANNOTATION)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    let (phase, reason) = if code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let started = status.start_time.unwrap_or_else(|| now.clone());
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let container_statuses: Vec<Value> = containers
        .iter()
        .map(|container| {
            json!({
                "name": container.name,
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason,
                    "startedAt": started, "finishedAt": now}},
            })
        })
        .collect();
    Some(json!({
        "status": {
            "phase": phase,
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            ],
            "containerStatuses": container_statuses,
        }
    }))
}

/// Watches every Pod in the cluster and reports each one's status, for as long as it runs.
/// Like a real kubelet it outlives the API server: a failed watch is retried with backoff,
/// never the end of the stand-in (the fault tests restart the API server under it). The
/// backoff is weir's own watches' (at most a few seconds): with kube's default (up to 30 s,
/// grown by restarts in a row and kept for two minutes) the stand-in stayed away for a minute
/// after the fault tests' last restart, and the next suite's pods never became ready.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let client = Arc::new(client);
    tracing::info!("kubelet stand-in: watching pods in all namespaces");
    watcher(pods, watcher::Config::default())
        .backoff(crate::runtime::watch::backoff())
        .applied_objects()
        .filter_map(|event| async move {
            event
                .inspect_err(|error| tracing::warn!(%error, "watching pods (retried)"))
                .ok()
        })
        .for_each_concurrent(CONCURRENCY, |pod| {
            let client = client.clone();
            async move { report(&client, &pod).await }
        })
        .await;
    Ok(())
}

async fn report(client: &Client, pod: &Pod) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let Some(patch) = status_patch(pod, &now) else {
        return;
    };
    let (Some(namespace), name) = (pod.namespace(), pod.name_any()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %name, %namespace, ready = should_be_ready(pod), "reported pod status")
        }
        // A Pod deleted meanwhile needs no status; anything else is retried on the next event.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => {
            tracing::warn!(pod = %name, %namespace, %error, "could not report pod status")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("ns".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some("web:v1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn apply(pod: &mut Pod, patch: &Value) {
        pod.status = Some(
            serde_json::from_value(patch["status"].clone()).expect("patch is a valid PodStatus"),
        );
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn ready_condition(pod: &Pod) -> PodCondition {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("a Ready condition")
    }

    #[test]
    fn a_new_pod_becomes_running_and_ready() {
        let mut pod = pod(&[]);
        let patch = status_patch(&pod, &time(100)).expect("a new pod needs a status");
        apply(&mut pod, &patch);
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        assert_eq!(ready_condition(&pod).status, "True");
        let containers = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        assert_eq!(containers.len(), 1);
        assert!(containers[0].ready);
    }

    #[test]
    fn a_pod_annotated_not_ready_runs_but_is_never_ready() {
        let mut pod = pod(&[(READY_ANNOTATION, "false")]);
        let patch = status_patch(&pod, &time(100)).expect("a new pod needs a status");
        apply(&mut pod, &patch);
        assert_eq!(ready_condition(&pod).status, "False");
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        assert_eq!(
            status_patch(&pod, &time(200)),
            None,
            "an unready pod that reports so needs nothing"
        );
    }

    #[test]
    fn a_reported_pod_needs_no_second_write() {
        let mut pod = pod(&[]);
        let patch = status_patch(&pod, &time(100)).expect("first report");
        apply(&mut pod, &patch);
        assert_eq!(status_patch(&pod, &time(200)), None);
    }

    #[test]
    fn readiness_follows_the_annotation_and_transition_times_move_only_on_change() {
        let mut pod = pod(&[]);
        let patch = status_patch(&pod, &time(100)).expect("first report");
        apply(&mut pod, &patch);
        pod.metadata.annotations =
            Some([(READY_ANNOTATION.to_string(), "false".to_string())].into());
        let patch = status_patch(&pod, &time(200)).expect("readiness changed");
        apply(&mut pod, &patch);
        let ready = ready_condition(&pod);
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time),
            ("False", Some(time(200)))
        );
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let scheduled = scheduled
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .expect("PodScheduled");
        assert_eq!(
            scheduled.last_transition_time,
            Some(time(100)),
            "unchanged conditions keep their time"
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.start_time.clone()),
            Some(time(100))
        );
    }

    #[test]
    fn a_terminating_pod_is_left_alone() {
        let mut pod = pod(&[]);
        pod.metadata.deletion_timestamp = Some(time(50));
        assert_eq!(status_patch(&pod, &time(100)), None);
    }

    fn job_pod(annotations: &[(&str, &str)]) -> Pod {
        let mut pod = pod(annotations);
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: "check-1".into(),
                uid: "u".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        pod
    }

    #[test]
    fn a_jobs_pod_runs_to_completion_with_its_exit_code() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for (annotations, phase, code) in [
            (vec![], "Succeeded", 0),
            (vec![(EXIT_CODE_ANNOTATION, "0")], "Succeeded", 0),
            (vec![(EXIT_CODE_ANNOTATION, "3")], "Failed", 3),
        ] {
            let mut pod = job_pod(&annotations);
            let patch = status_patch(&pod, &now).expect("a patch");
            assert_eq!(patch["status"]["phase"], phase);
            assert_eq!(
                patch["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
                code
            );
            // Reported once: a finished Pod is left as it is.
            pod.status = serde_json::from_value(patch["status"].clone()).expect("a status");
            assert_eq!(status_patch(&pod, &now), None);
        }
        // A Pod no Job owns still runs.
        let patch = status_patch(&pod(&[]), &now).expect("a patch");
        assert_eq!(patch["status"]["phase"], "Running");
        // As does a Job's Pod told to run until deleted.
        let long = job_pod(&[(RUNS_UNTIL_DELETED_ANNOTATION, "true")]);
        let patch = status_patch(&long, &now).expect("a patch");
        assert_eq!(patch["status"]["phase"], "Running");
    }
}
