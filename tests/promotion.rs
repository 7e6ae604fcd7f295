//! Promotion between environments on the local control plane: a staging GitSync and a
//! production GitSync following one repository, production applying only what staging
//! proved good (after a soak, and with approval when asked), never what staging rejected.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use support::app::{LIMIT, apply_git_sync};
use support::git::{GitDaemon, GitRepo};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::GitSync;
use weir::api::gitsync::GitSyncStatus;
use weir::time::from_k8s;

/// A Deployment for staging: a bad version's pods never become ready, and it gives up
/// after 10 s, which rejects its revision.
fn staging_web(version: u32, bad: bool) -> String {
    let annotations = if bad {
        "      annotations:\n        sim.weir.dev/ready: \"false\"\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-staging
spec:
  progressDeadlineSeconds: 10
  selector:
    matchLabels:
      app: web-staging
  template:
    metadata:
      labels:
        app: web-staging
{annotations}    spec:
      containers:
        - name: web
          image: registry.example/web:{version}
"
    )
}

fn settings(name: &str, value: u32) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// One commit of both environments at `version`.
fn release(repo: &GitRepo, version: u32, bad: bool) -> String {
    repo.commit(
        &format!("release {version}"),
        &[
            ("staging/web.yaml", &staging_web(version, bad)),
            (
                "staging/settings.yaml",
                &settings("staging-settings", version),
            ),
            ("prod/settings.yaml", &settings("prod-settings", version)),
        ],
    )
}

/// The GitSync `prod`, following `url`'s `prod/` and promoting from `staging` with
/// `settings` (soak, approval).
async fn promote_to_prod(ns: &TestNamespace, url: &str, settings: serde_json::Value) {
    let mut promotion = json!({"from": {"gitSync": "staging"}});
    if let (Some(promotion), Some(settings)) = (promotion.as_object_mut(), settings.as_object()) {
        promotion.extend(settings.clone());
    }
    apply_git_sync(
        ns,
        "prod",
        json!({"url": url, "ref": {"branch": "main"}, "path": "prod", "interval": "1s",
            "promotion": promotion}),
    )
    .await;
}

async fn status(ns: &TestNamespace, name: &str) -> GitSyncStatus {
    ns.api::<GitSync>()
        .get(name)
        .await
        .ok()
        .and_then(|s| s.status)
        .unwrap_or_default()
}

async fn status_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&GitSyncStatus) -> bool,
) -> GitSyncStatus {
    eventually(what, LIMIT, || async {
        Some(status(ns, name).await).filter(|s| check(s))
    })
    .await
}

/// `kubectl weir ARGS -n NS`, which must succeed: what it printed.
fn weir_plugin(ns: &TestNamespace, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .args(args)
        .args(["-n", &ns.name])
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("running kubectl-weir");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    said
}

async fn prod_value(ns: &TestNamespace) -> Option<String> {
    let found = ns
        .api::<ConfigMap>()
        .get_opt("prod-settings")
        .await
        .ok()??;
    found.data?.get("value").cloned()
}

#[tokio::test]
async fn production_applies_only_what_staging_proved_good_after_its_soak_and_approval() {
    let ns = TestNamespace::new(&client().await, "promotion").await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    let url = daemon.url(&repo);
    let v1 = release(&repo, 1, false);
    let _controller = ControllerProcess::start(&ns.name);
    apply_git_sync(
        &ns,
        "staging",
        json!({"url": url, "ref": {"branch": "main"}, "path": "staging", "interval": "1s"}),
    )
    .await;
    promote_to_prod(&ns, &url, json!({"soak": "5s"})).await;

    // v1: good in staging, then, once it has soaked there, applied in production.
    let staging = status_where(&ns, "staging", "v1 good in staging", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let good_since = staging
        .good_revisions
        .iter()
        .find(|g| g.revision == v1)
        .map(|g| from_k8s(&g.since))
        .expect("v1 noted good");
    let prod = status_where(&ns, "prod", "v1 applied in production", |s| {
        s.last_applied_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let applied_at = prod
        .history
        .iter()
        .find(|h| h.revision == v1)
        .map(|h| from_k8s(&h.time))
        .expect("v1 in production's history");
    assert!(
        applied_at >= good_since + chrono::Duration::seconds(5),
        "applied {applied_at} only after soaking from {good_since}"
    );
    assert_eq!(prod_value(&ns).await.as_deref(), Some("1"));

    // v2 is bad: staging rejects it, and production never sees it.
    let v2 = release(&repo, 2, true);
    status_where(&ns, "staging", "v2 rejected in staging", |s| {
        s.rejected_revisions.iter().any(|r| r.revision == v2)
    })
    .await;
    // v3 mends it: good in staging, then in production, v2 skipped.
    let v3 = release(&repo, 3, false);
    status_where(&ns, "prod", "v3 applied in production", |s| {
        s.last_applied_revision.as_deref() == Some(v3.as_str())
    })
    .await;
    assert_eq!(prod_value(&ns).await.as_deref(), Some("3"));
    let prod = status(&ns, "prod").await;
    let tried: Vec<&str> = prod.history.iter().map(|h| h.revision.as_str()).collect();
    assert_eq!(
        tried,
        [v1.as_str(), v3.as_str()],
        "v2 never reached production"
    );
    // The fleet view says so: v2 rejected in staging, never in production.
    let fleet = weir_plugin(&ns, &["fleet"]);
    let v2_row = fleet
        .lines()
        .find(|l| l.starts_with(&v2[..12]))
        .unwrap_or_default()
        .to_owned();
    assert!(
        v2_row.contains("rejected (HealthCheckFailed)") && v2_row.trim_end().ends_with('-'),
        "{fleet}"
    );

    // With manual approval, v4 waits for a person once it has soaked.
    promote_to_prod(&ns, &url, json!({"approval": "Manual"})).await;
    let v4 = release(&repo, 4, false);
    let waiting = status_where(&ns, "prod", "v4 waiting for approval", |s| {
        s.promotion
            .as_ref()
            .is_some_and(|p| p.revision == v4 && p.waiting_for.starts_with("approval"))
    })
    .await;
    assert_eq!(waiting.last_applied_revision.as_deref(), Some(v3.as_str()));
    assert_eq!(prod_value(&ns).await.as_deref(), Some("3"));
    // A person approves what waits, with the plugin.
    let said = weir_plugin(&ns, &["promote", "gitsync/prod"]);
    assert!(said.contains(&format!("approved revision {v4}")), "{said}");
    status_where(&ns, "prod", "v4 applied once approved", |s| {
        s.last_applied_revision.as_deref() == Some(v4.as_str()) && s.promotion.is_none()
    })
    .await;
    assert_eq!(prod_value(&ns).await.as_deref(), Some("4"));
}

#[tokio::test]
async fn a_controller_killed_mid_promotion_loses_nothing_and_promotes_nothing_twice() {
    let ns = TestNamespace::new(&client().await, "promotion-kill").await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    let url = daemon.url(&repo);
    let v1 = release(&repo, 1, false);
    let controller = ControllerProcess::start(&ns.name);
    apply_git_sync(
        &ns,
        "staging",
        json!({"url": url, "ref": {"branch": "main"}, "path": "staging", "interval": "1s"}),
    )
    .await;
    promote_to_prod(&ns, &url, json!({"soak": "4s"})).await;
    // Killed while production waits for v1's soak: what waits is in the status, and the
    // next controller takes it from there.
    let soaking = status_where(&ns, "prod", "v1 soaking for production", |s| {
        s.promotion
            .as_ref()
            .is_some_and(|p| p.revision == v1 && p.until.is_some())
    })
    .await;
    controller.kill();
    assert_eq!(soaking.last_applied_revision, None);
    let controller = ControllerProcess::start(&ns.name);
    status_where(&ns, "prod", "v1 applied in production", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str()) && s.promotion.is_none()
    })
    .await;
    // Killed again right after, and again: v1 is applied once, never again.
    controller.kill();
    let _controller = ControllerProcess::start(&ns.name);
    let v2 = release(&repo, 2, false);
    let prod = status_where(&ns, "prod", "v2 applied in production", |s| {
        s.last_good_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    let applied: Vec<&str> = prod
        .history
        .iter()
        .filter(|h| h.outcome == "Applied")
        .map(|h| h.revision.as_str())
        .collect();
    assert_eq!(applied, [v1.as_str(), v2.as_str()], "each promoted once");
    assert_eq!(prod_value(&ns).await.as_deref(), Some("2"));
}
