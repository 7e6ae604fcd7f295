//! How a GitSync applies on the local control plane: manifests as people write them (no
//! field that has a default), only what changed sent, and `dependsOn` ordering.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::ListParams;
use serde_json::{Value, json};
use support::app::{LIMIT, apply_git_sync, yaml_stream};
use support::git::GitRepo;
use support::gitops::{condition, gitsync_objects, ready_reason};
use support::{ControllerProcess, TestNamespace, client, eventually, free_port};
use weir::api::gitsync::{GitSync, GitSyncStatus};

/// What people write: ports without `protocol`, a Secret in `stringData`, no defaults.
fn app_as_written() -> String {
    yaml_stream(&[
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1",
                        "ports": [{"containerPort": 8080}]}]}}}}),
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "api"},
            "spec": {"selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "api:1",
                        "ports": [{"containerPort": 9090}]}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "stringData": {"user": "app"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"mode": "fast"}}),
    ])
}

async fn status_of(ns: &TestNamespace, name: &str) -> GitSyncStatus {
    ns.api::<GitSync>()
        .get(name)
        .await
        .ok()
        .and_then(|s| s.status)
        .unwrap_or_default()
}

async fn ready(ns: &TestNamespace, name: &str, reason: &str) -> GitSyncStatus {
    eventually(
        &format!("GitSync {name} Ready reason {reason}"),
        LIMIT,
        || async { Some(status_of(ns, name).await).filter(|s| ready_reason(s) == reason) },
    )
    .await
}

#[tokio::test]
async fn manifests_as_people_write_them_sync_and_an_unchanged_repository_is_only_read() {
    let ns = TestNamespace::new(&client().await, "gitsync-as-written").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("the app", &[("deploy/app.yaml", &app_as_written())]);
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let _controller = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &metrics]);
    apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"}),
    )
    .await;

    let status = ready(&ns, "app", "Applied").await;
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(first.as_str())
    );
    let service = ns.api::<Service>().get("web").await.expect("the Service");
    let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    let deployment = ns
        .api::<Deployment>()
        .get("web")
        .await
        .expect("the Deployment");
    let template = deployment.spec.map(|s| s.template).unwrap_or_default();
    let container_ports = template.spec.unwrap_or_default().containers[0]
        .ports
        .clone()
        .unwrap_or_default();
    assert_eq!(container_ports[0].protocol.as_deref(), Some("TCP"));
    let secret = ns.api::<Secret>().get("db").await.expect("the Secret");
    let user = secret.data.unwrap_or_default().get("user").cloned();
    assert_eq!(user.map(|b| b.0), Some(b"app".to_vec()));
    // The Rollout's own ReplicaSet is applied from a template without protocols too.
    eventually("the Rollout's ReplicaSet", LIMIT, || async {
        let sets = ns
            .api::<ReplicaSet>()
            .list(&ListParams::default().labels("app=api"))
            .await
            .ok()?;
        (!sets.items.is_empty()).then_some(())
    })
    .await;

    // Every interval (1s) compares; nothing drifted, so nothing is sent.
    let applied = eventually("the first apply counted", LIMIT, || async {
        Some(gitsync_objects(port, "applied").await).filter(|n| *n >= 5)
    })
    .await;
    let unchanged_then = gitsync_objects(port, "unchanged").await;
    eventually(
        "three intervals that found nothing to apply",
        LIMIT,
        || async {
            (gitsync_objects(port, "unchanged").await >= unchanged_then + 15).then_some(())
        },
    )
    .await;
    assert_eq!(
        gitsync_objects(port, "applied").await,
        applied,
        "an unchanged repository must send no apply"
    );

    // Drift is still repaired: an edit by hand is put back, with one apply.
    ns.api::<ConfigMap>()
        .patch(
            "settings",
            &kube::api::PatchParams::apply("someone").force(),
            &kube::api::Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings"}, "data": {"mode": "slow"}})),
        )
        .await
        .expect("edit by hand");
    eventually("the drift to be repaired", LIMIT, || async {
        let found = ns.api::<ConfigMap>().get("settings").await.ok()?;
        let mode = found.data?.get("mode").cloned();
        (mode.as_deref() == Some("fast")).then_some(())
    })
    .await;
    assert!(gitsync_objects(port, "applied").await > applied);
}

fn config_map(name: &str) -> String {
    yaml_stream(&[
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"from": name}}),
    ])
}

fn git_sync(url: &str, path: &str, depends_on: &[&str]) -> Value {
    let depends_on: Vec<Value> = depends_on.iter().map(|n| json!({"name": n})).collect();
    json!({"url": url, "ref": {"branch": "main"}, "path": path, "interval": "1s",
        "dependsOn": depends_on})
}

#[tokio::test]
async fn an_app_waits_for_its_infrastructure_and_a_cycle_is_refused() {
    let ns = TestNamespace::new(&client().await, "gitsync-depends").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "infra and app",
        &[
            ("infra/cm.yaml", &config_map("infra")),
            ("app/cm.yaml", &config_map("app")),
        ],
    );
    let url = repo.file_url();
    let _controller = ControllerProcess::start(&ns.name);
    apply_git_sync(&ns, "app", git_sync(&url, "app", &["infra"])).await;

    let waiting = ready(&ns, "app", "DependencyNotReady").await;
    let (_, _, message) = condition(&waiting, "Ready").unwrap_or_default();
    assert!(
        message.contains("GitSync infra does not exist"),
        "{message}"
    );
    assert!(waiting.last_applied_revision.is_none());
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("app")
            .await
            .expect("read")
            .is_none()
    );

    apply_git_sync(&ns, "infra", git_sync(&url, "infra", &[])).await;
    ready(&ns, "infra", "Applied").await;
    ready(&ns, "app", "Applied").await;
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("app")
            .await
            .expect("read")
            .is_some()
    );

    // infra now waits for app, which waits for infra: neither could ever apply again.
    apply_git_sync(&ns, "infra", git_sync(&url, "infra", &["app"])).await;
    let refused = ready(&ns, "infra", "InvalidSpec").await;
    let (_, _, message) = condition(&refused, "Ready").unwrap_or_default();
    assert!(
        message.contains("infra -> app -> infra is a cycle"),
        "{message}"
    );
}

fn web(image: &str, config_maps: &[&str]) -> String {
    let mut documents = vec![json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})];
    documents.extend(config_maps.iter().map(|name| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"from": name}})
    }));
    yaml_stream(&documents)
}

/// `kubectl weir diff ARGS -n NS` with the local cluster's kubeconfig.
fn weir_diff(ns: &TestNamespace, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .arg("diff")
        .args(args)
        .args(["-n", &ns.name])
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("running kubectl-weir");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_shows_what_a_pending_revision_would_change_and_prune() {
    let ns = TestNamespace::new(&client().await, "gitsync-diff").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit(
        "web 1",
        &[("deploy/app.yaml", &web("web:1", &["keep", "old"]))],
    );
    let _controller = ControllerProcess::start(&ns.name);
    let spec = json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"});
    apply_git_sync(&ns, "app", spec.clone()).await;
    ready(&ns, "app", "Applied").await;

    // Held where it is while the team looks at what comes next.
    let mut suspended = spec;
    suspended["suspend"] = json!(true);
    apply_git_sync(&ns, "app", suspended).await;
    let second = repo.commit(
        "web 2, without old",
        &[("deploy/app.yaml", &web("web:2", &["keep"]))],
    );

    let (code, out, err) = weir_diff(&ns, &["app"]);
    assert_eq!(code, Some(1), "a pending change exits 1: {out}{err}");
    let deployment = format!("~ change Deployment {}/web", ns.name);
    assert!(out.contains(&deployment), "{out}");
    let removed = out
        .lines()
        .any(|l| l.starts_with('-') && l.contains("image: web:1"));
    let added = out
        .lines()
        .any(|l| l.starts_with('+') && l.contains("image: web:2"));
    assert!(removed && added, "{out}");
    assert!(
        out.contains(&format!("- prune ConfigMap {}/old", ns.name)),
        "{out}"
    );
    assert!(
        !out.contains(&format!("ConfigMap {}/keep", ns.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!("revision {}", &second[..12])),
        "{out}"
    );
    assert!(
        out.contains("0 to create, 1 to change, 1 to prune, 1 unchanged"),
        "{out}"
    );

    // The applied revision itself: the live objects already are what it says.
    let (code, out, err) = weir_diff(&ns, &["app", "--revision", &first[..8]]);
    assert_eq!(code, Some(0), "nothing to change exits 0: {out}{err}");
    assert!(
        out.contains("0 to create, 0 to change, 0 to prune, 3 unchanged"),
        "{out}"
    );

    // Nothing of the previews was applied.
    let image = ns
        .api::<Deployment>()
        .get("web")
        .await
        .ok()
        .and_then(|d| d.spec)
        .map(|s| {
            s.template.spec.unwrap_or_default().containers[0]
                .image
                .clone()
        });
    assert_eq!(image, Some(Some("web:1".to_owned())));
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("old")
            .await
            .expect("read")
            .is_some()
    );
}
