//! The health of every object a GitSync applies, on the local control plane: plain
//! Deployments and Jobs as people keep them in Git (every defaulted field left out), no
//! Rollout anywhere, the deployment and job controllers of kube-controller-manager, and the
//! kubelet stand-in making pods ready or not as their template's `sim.weir.dev/ready` says.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;
use support::app::{LIMIT, apply_git_sync};
use support::git::{GitDaemon, GitRepo};
use support::gitops::{condition, git_sync_every, ready_reason, revert_on_branch, sync_where};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::gitsync::{GitSyncStatus, RejectedRevision};

/// The Deployment `web` as a team writes it. `unready` is a broken version: its pods never
/// become ready, and the Deployment gives up after `progressDeadlineSeconds` when one is
/// given. No ports: the API server here (1.20) wants `protocol` on them for server-side
/// apply, and they change nothing about health.
fn web(version: u32, unready: bool, deadline: Option<u32>) -> String {
    let deadline = deadline
        .map(|seconds| format!("  progressDeadlineSeconds: {seconds}\n"))
        .unwrap_or_default();
    let annotations = match unready {
        true => "      annotations:\n        sim.weir.dev/ready: \"false\"\n",
        false => "",
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
{deadline}  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
{annotations}    spec:
      containers:
        - name: web
          image: registry.example/web:{version}
"
    )
}

fn settings(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"{value}\"\n"
    )
}

async fn setting(ns: &TestNamespace) -> Option<String> {
    support::gitops::setting(ns).await
}

fn rejection<'s>(status: &'s GitSyncStatus, revision: &str) -> Option<&'s RejectedRevision> {
    status
        .rejected_revisions
        .iter()
        .find(|r| r.revision == revision)
}

fn ready_message(status: &GitSyncStatus) -> String {
    condition(status, "Ready").map_or_else(String::new, |(_, _, message)| message.to_owned())
}

/// The Deployment's image and whether its template says its pods never become ready.
async fn template(ns: &TestNamespace) -> Option<(String, bool)> {
    let web = ns.api::<Deployment>().get_opt("web").await.ok()??;
    let template = web.spec?.template;
    let image = template.spec?.containers.first()?.image.clone()?;
    let unready = template
        .metadata
        .and_then(|m| m.annotations)
        .is_some_and(|a| a.contains_key("sim.weir.dev/ready"));
    Some((image, unready))
}

/// Waits until the Deployment runs `image` on all its replicas, every one available.
async fn available_on(ns: &TestNamespace, image: &str) {
    eventually(&format!("web available on {image}"), LIMIT, || async {
        let web = ns.api::<Deployment>().get_opt("web").await.ok()??;
        let status = web.status.clone()?;
        let done = web.metadata.generation == status.observed_generation
            && status.replicas == Some(2)
            && status.updated_replicas == Some(2)
            && status.available_replicas == Some(2);
        let running = template(ns).await?.0;
        (done && running == image).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deployment_that_never_becomes_available_rolls_the_whole_app_back() {
    let ns = TestNamespace::new(&client().await, "health-deployment").await;
    let repo = GitRepo::new(&ns.name);
    repo.accept_pushes();
    let daemon = GitDaemon::serve(&repo).await;
    let v1 = repo.commit(
        "web 1",
        &[
            ("deploy/web.yaml", &web(1, false, None)),
            ("deploy/settings.yaml", &settings("1")),
        ],
    );
    let _controller = ControllerProcess::start(&ns.name);
    git_sync_every(&ns, &daemon.url(&repo), true, "1s").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let web_v1 = ns.api::<Deployment>().get("web").await.expect("web");
    assert_eq!(
        web_v1.status.and_then(|s| s.available_replicas),
        Some(2),
        "v1 was good only once its Deployment was available"
    );

    // v2's pods never become ready: its Deployment passes its progress deadline.
    let v2 = repo.commit(
        "web 2: a version that never starts",
        &[
            ("deploy/web.yaml", &web(2, true, Some(10))),
            ("deploy/settings.yaml", &settings("2")),
        ],
    );
    let who = format!("Deployment {}/web", ns.name);
    let waiting = sync_where(&ns, "Ready to say what v2 waits for", |s| {
        s.last_applied_revision.as_deref() == Some(v2.as_str())
            && ready_message(s).contains(&format!("; waiting for {who}: "))
    })
    .await;
    assert_eq!(ready_reason(&waiting), "Applied");
    assert_eq!(
        waiting.last_good_revision.as_deref(),
        Some(v1.as_str()),
        "not good while its Deployment is not available"
    );
    assert_eq!(
        condition(&waiting, "Reconciling").map(|(status, reason, _)| (status, reason)),
        Some(("True", "Progressing"))
    );
    assert_eq!(setting(&ns).await.as_deref(), Some("2"));

    let status = sync_where(&ns, "v2 rejected and the app rolled back to v1", |s| {
        rejection(s, &v2).is_some()
            && s.history
                .iter()
                .any(|h| h.revision == v1 && h.outcome == "RolledBack")
    })
    .await;
    let rejected = rejection(&status, &v2).expect("v2 rejected");
    assert_eq!(
        (
            rejected.reason.as_str(),
            rejected.object.as_deref(),
            rejected.rollout.as_deref()
        ),
        ("HealthCheckFailed", Some(who.as_str()), None)
    );
    let message = rejected.message.clone().unwrap_or_default();
    assert!(
        message.contains("Progressing is False (ProgressDeadlineExceeded)"),
        "the rejection names the condition: {message}"
    );
    // The whole application is v1's again: the Deployment's template and the ConfigMap.
    available_on(&ns, "registry.example/web:1").await;
    assert_eq!(
        template(&ns).await,
        Some(("registry.example/web:1".to_owned(), false))
    );
    assert_eq!(setting(&ns).await.as_deref(), Some("1"));

    // Git agrees: weir's revert on the branch, fetched, applied and found healthy.
    let status = sync_where(&ns, "the revert applied and good", |s| {
        let revert = rejection(s, &v2).and_then(|r| r.revert.clone());
        revert.is_some() && s.last_good_revision == revert
    })
    .await;
    revert_on_branch(&repo, &v2, &v1);
    assert_eq!(status.rejected_revisions.len(), 1);
    assert_eq!(
        template(&ns).await,
        Some(("registry.example/web:1".to_owned(), false))
    );
}

#[tokio::test]
async fn a_job_that_fails_rejects_its_revision() {
    let ns = TestNamespace::new(&client().await, "health-job").await;
    let repo = GitRepo::new(&ns.name);
    let v1 = repo.commit("settings 1", &[("deploy/settings.yaml", &settings("1"))]);
    let _controller = ControllerProcess::start(&ns.name);
    git_sync_every(&ns, &repo.file_url(), false, "1s").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;

    // A migration whose one attempt fails (the kubelet stand-in ends its pod with the exit
    // code annotated): the job controller fails it, no retry allowed.
    let job = "apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        sim.weir.dev/exit-code: \"1\"
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: registry.example/migrate:2
";
    let v2 = repo.commit(
        "migrate the schema",
        &[
            ("deploy/settings.yaml", &settings("2")),
            ("deploy/migrate.yaml", job),
        ],
    );
    let status = sync_where(&ns, "v2 rejected and rolled back", |s| {
        rejection(s, &v2).is_some() && ready_reason(s) == "RolledBack"
    })
    .await;
    let rejected = rejection(&status, &v2).expect("v2 rejected");
    assert_eq!(
        (rejected.reason.as_str(), rejected.object.clone()),
        (
            "HealthCheckFailed",
            Some(format!("Job {}/migrate", ns.name))
        )
    );
    let message = rejected.message.clone().unwrap_or_default();
    assert!(
        message.contains("Failed is True (BackoffLimitExceeded)"),
        "{message}"
    );
    assert!(
        ready_message(&status).contains(&format!("Job {}/migrate: HealthCheckFailed", ns.name)),
        "Ready says why: {}",
        ready_message(&status)
    );
    assert_eq!(status.last_applied_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status.last_good_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(setting(&ns).await.as_deref(), Some("1"));
    eventually("v2's Job pruned", LIMIT, || async {
        let found = ns.api::<Job>().get_opt("migrate").await.ok()?;
        found
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_workload_not_healthy_in_time_is_rejected_on_time_across_a_restart() {
    let ns = TestNamespace::new(&client().await, "health-timeout").await;
    let repo = GitRepo::new(&ns.name);
    let v1 = repo.commit("web 1", &[("deploy/web.yaml", &web(1, false, None))]);
    let controller = ControllerProcess::start(&ns.name);
    apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy",
            "interval": "1s", "healthTimeout": "15s"}),
    )
    .await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;

    // Never ready, and the Deployment's own deadline (600s by default) far away: only the
    // GitSync's timeout can end the wait.
    let v2 = repo.commit("web 2", &[("deploy/web.yaml", &web(2, true, None))]);
    let applied = sync_where(&ns, "v2 applied", |s| {
        s.last_applied_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    let applied_at = applied
        .history
        .iter()
        .rfind(|h| h.revision == v2 && h.outcome == "Applied")
        .map(|h| h.time.0)
        .expect("v2's apply recorded");
    // The controller that applied v2 dies; its successor knows when from the status alone.
    controller.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _restarted = ControllerProcess::start(&ns.name);

    let status = sync_where(&ns, "v2 rejected for its timeout", |s| {
        rejection(s, &v2).is_some()
    })
    .await;
    let rejected = rejection(&status, &v2).expect("v2 rejected");
    assert_eq!(
        (rejected.reason.as_str(), rejected.object.clone()),
        ("HealthTimeout", Some(format!("Deployment {}/web", ns.name)))
    );
    let message = rejected.message.clone().unwrap_or_default();
    assert!(
        message.contains("not healthy 15s after the revision was applied")
            && message.contains("replicas"),
        "{message}"
    );
    let waited = rejected.rejected_at.0.duration_since(applied_at);
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::from_secs(15)
            && waited < k8s_openapi::jiff::SignedDuration::from_secs(30),
        "rejected {waited:?} after v2 was applied, for a timeout of 15s"
    );
    available_on(&ns, "registry.example/web:1").await;
    let status = sync_where(&ns, "rolled back", |s| ready_reason(s) == "RolledBack").await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(v1.as_str()));
}
