//! Tenancy on a real API server that enforces RBAC: a GitSync acts as its ServiceAccount
//! (impersonated), is confined to its namespace, never shares a clone, and never
//! force-pushes a branch it does not own. Every tenant namespace of the harness has the
//! ServiceAccount `weir-gitsync` bound to `admin` there only (`TestNamespace::tenant`).

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;
use support::app::{LIMIT, healthy_on, routing, yaml_stream};
use support::git::GitRepo;
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::Rollout;
use weir::api::gitsync::GitSync;

/// Metrics on any free port: tests run in parallel.
const ANY_PORT: [&str; 2] = ["--metrics-addr", "127.0.0.1:0"];

fn config_map(name: &str, namespace: Option<&str>, value: &str) -> serde_json::Value {
    let mut metadata = json!({"name": name});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
        "data": {"value": value}})
}

/// Tenant A's application at `version`: its routing, a ConfigMap and a Rollout.
fn app(version: u32) -> Vec<serde_json::Value> {
    let mut documents = routing();
    documents.push(config_map("settings", None, &version.to_string()));
    documents.push(support::app::rollout(
        &format!("web:{version}"),
        json!([{"setWeight": 50}, {"pause": {"duration": "1s"}}]),
        json!({}),
    ));
    documents
}

async fn git_sync(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    let mut full = json!({"ref": {"branch": "main"}, "path": "deploy", "interval": "1s"});
    if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(spec.clone());
    }
    support::app::apply_git_sync(ns, name, full).await;
}

/// The GitSync's Ready condition once its reason is `reason` for `revision` (any when None).
async fn ready(ns: &TestNamespace, name: &str, reason: &str, revision: Option<&str>) -> String {
    let api = ns.api::<GitSync>();
    eventually(
        &format!("GitSync {name} Ready reason {reason}"),
        LIMIT,
        || async {
            let sync = api.get(name).await.ok()?;
            let status = sync.status.as_ref()?;
            let condition = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            let at_revision =
                revision.is_none_or(|r| status.last_attempted_revision.as_deref() == Some(r));
            (condition.reason == reason && at_revision).then(|| condition.message.clone())
        },
    )
    .await
}

async fn value(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.ok()??.data?.get("value").cloned()
}

#[tokio::test]
async fn a_tenants_repository_reaches_nothing_outside_its_namespace() {
    let client = client().await;
    let a = TestNamespace::new(&client, "tenant-a").await;
    let b = TestNamespace::new(&client, "tenant-b").await;
    let repo = GitRepo::new(&a.name);
    let good = repo.commit("web 1", &[("deploy/app.yaml", &yaml_stream(&app(1)))]);
    // Analysis may query the cluster's Prometheus only.
    let prometheus = support::prometheus_url();
    let _controller = ControllerProcess::start_with(
        &a.name,
        &[
            ANY_PORT[0],
            ANY_PORT[1],
            "--allowed-metric-hosts",
            &prometheus,
        ],
    );
    git_sync(&a, "app", json!({"url": repo.file_url()})).await;
    ready(&a, "app", "Applied", Some(&good)).await;
    healthy_on(&a, "web:1").await;

    // Each hostile revision also changes A's own ConfigMap: a refusal applies nothing of it.
    let crb = format!("{}-takeover", a.name);
    let hostile = [
        (
            "an object in tenant B's namespace",
            config_map("planted", Some(&b.name), "x"),
            format!(
                "ConfigMap planted (deploy/z.yaml, document 0): metadata.namespace is \"{}\"",
                b.name
            ),
        ),
        (
            "a ClusterRoleBinding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": crb},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "weir-gitsync", "namespace": a.name}]}),
            format!(
                "ClusterRoleBinding {crb} (deploy/z.yaml, document 0): the kind is cluster-scoped"
            ),
        ),
        (
            "a Rollout in kube-system",
            {
                let mut rollout = support::app::rollout("evil:1", json!([]), json!({}));
                rollout["metadata"]["namespace"] = json!("kube-system");
                rollout
            },
            "Rollout web (deploy/z.yaml, document 0): metadata.namespace is \"kube-system\""
                .to_owned(),
        ),
        (
            "an AnalysisTemplate querying an address not allowed",
            json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": "steal"},
                "spec": {"metrics": [{"name": "up", "successCondition": "result[0] == 1",
                    "provider": {"prometheus": {"address": "https://metrics.evil.example",
                        "query": "up"}}}]}}),
            "AnalysisTemplate steal (deploy/z.yaml, document 0): spec.metrics[0].provider.prometheus.address".to_owned(),
        ),
    ];
    for (what, object, said) in hostile {
        let mut documents = app(1);
        documents[3] = config_map("settings", None, "hostile");
        let revision = repo.commit(
            what,
            &[
                ("deploy/app.yaml", &yaml_stream(&documents)),
                ("deploy/z.yaml", &yaml_stream(&[object])),
            ],
        );
        let message = ready(&a, "app", "Forbidden", Some(&revision)).await;
        assert!(message.contains(&said), "{what}: {message}");
        assert!(
            message.contains("nothing of this revision was applied"),
            "{what}: {message}"
        );
        assert_eq!(
            value(&client, &a.name, "settings").await.as_deref(),
            Some("1"),
            "{what}: nothing of the refused revision reached A"
        );
    }
    // Nothing reached B, the cluster scope or kube-system (read back).
    assert_eq!(value(&client, &b.name, "planted").await, None);
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(bindings.get_opt(&crb).await.ok().flatten().is_none());
    assert!(
        a.api::<weir::api::analysis::AnalysisTemplate>()
            .get_opt("steal")
            .await
            .ok()
            .flatten()
            .is_none(),
        "the template with a disallowed address never reached A"
    );
    let system: Api<Rollout> = Api::namespaced(client.clone(), "kube-system");
    assert!(
        system
            .list(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false),
        "no Rollout in kube-system"
    );

    // A's own next good revision rolls out.
    let next = repo.commit(
        "web 2",
        &[
            ("deploy/app.yaml", &yaml_stream(&app(2))),
            ("deploy/z.yaml", ""),
        ],
    );
    ready(&a, "app", "Applied", Some(&next)).await;
    healthy_on(&a, "web:2").await;
    assert_eq!(
        value(&client, &a.name, "settings").await.as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn under_lockdown_a_service_account_without_rights_applies_nothing_and_says_why() {
    let ns = TestNamespace::new(&client().await, "tenant-none").await;
    let repo = GitRepo::new(&ns.name);
    let revision = repo.commit(
        "settings",
        &[(
            "deploy/a.yaml",
            &yaml_stream(&[config_map("settings", None, "1")]),
        )],
    );
    // The chart's default ServiceAccount, never created in this namespace.
    let _controller = ControllerProcess::start_unlocked(
        &ns.name,
        &[
            ANY_PORT[0],
            ANY_PORT[1],
            "--default-service-account",
            "nobody-made-me",
        ],
        &[],
    );
    git_sync(&ns, "app", json!({"url": repo.file_url()})).await;
    let message = ready(&ns, "app", "Forbidden", Some(&revision)).await;
    assert!(
        message.contains("system:serviceaccount:")
            && message.contains("nobody-made-me")
            && message.contains("--default-service-account"),
        "{message}"
    );
    assert_eq!(value(&ns.client, &ns.name, "settings").await, None);
}

#[tokio::test]
async fn prune_under_impersonation_deletes_only_what_the_service_account_may_delete() {
    let client = client().await;
    let a = TestNamespace::new(&client, "tenant-prune-a").await;
    let b = TestNamespace::new(&client, "tenant-prune-b").await;
    // A platform team's GitSync in A, acting as `deployer`, which may write in A and, for
    // now, in B.
    a.tenant("deployer").await;
    let in_b = support::app::bind(
        &b,
        "deployer-in-b",
        "ClusterRole",
        "edit",
        &a.name,
        "deployer",
    )
    .await;
    let repo = GitRepo::new(&a.name);
    let first = repo.commit(
        "both",
        &[(
            "deploy/a.yaml",
            &yaml_stream(&[
                config_map("here", None, "1"),
                config_map("there", Some(&b.name), "1"),
            ]),
        )],
    );
    let _controller = ControllerProcess::start_with(
        &a.name,
        &[ANY_PORT[0], ANY_PORT[1], "--allow-cross-namespace"],
    );
    git_sync(
        &a,
        "app",
        json!({"url": repo.file_url(), "serviceAccountName": "deployer"}),
    )
    .await;
    ready(&a, "app", "Applied", Some(&first)).await;
    assert_eq!(value(&client, &b.name, "there").await.as_deref(), Some("1"));

    // B withdraws the right; the next revision drops both objects.
    Api::<RoleBinding>::namespaced(client.clone(), &b.name)
        .delete(&in_b, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting RoleBinding {in_b}: {e}"));
    let second = repo.commit(
        "neither",
        &[(
            "deploy/a.yaml",
            &yaml_stream(&[config_map("other", None, "1")]),
        )],
    );
    let message = ready(&a, "app", "Forbidden", Some(&second)).await;
    assert!(
        message.contains(&format!("ConfigMap {}/there to prune it", b.name))
            && message.contains("forbidden")
            && message.contains("deployer (spec.serviceAccountName)"),
        "{message}"
    );
    assert_eq!(
        value(&client, &a.name, "here").await,
        None,
        "A's was pruned"
    );
    assert_eq!(
        value(&client, &b.name, "there").await.as_deref(),
        Some("1"),
        "B's stays: the ServiceAccount may no longer delete it"
    );
    let sync = a
        .api::<GitSync>()
        .get("app")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sync.status
            .unwrap_or_default()
            .inventory
            .iter()
            .any(|e| e.name == "there"),
        "what could not be pruned stays in the inventory"
    );
}

#[tokio::test]
async fn write_back_never_force_pushes_a_branch_weir_does_not_own() {
    let ns = TestNamespace::new(&client().await, "tenant-branches").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "settings",
        &[(
            "deploy/a.yaml",
            &yaml_stream(&[config_map("settings", None, "1")]),
        )],
    );
    repo.tag("v1");
    let _controller = ControllerProcess::start(&ns.name);
    let author = json!({"enabled": true, "authorName": "weir", "authorEmail": "weir@example.com"});
    let with_branch = |branch: &str| {
        let mut write_back = author.clone();
        write_back["branch"] = json!(branch);
        json!({"writeBack": write_back})
    };
    // The tracked branch itself.
    git_sync(
        &ns,
        "tracked",
        json!({"url": repo.file_url(), "rollback": with_branch("main")}),
    )
    .await;
    let message = ready(&ns, "tracked", "InvalidSpec", None).await;
    assert!(
        message.contains("spec.rollback.writeBack.branch"),
        "{message}"
    );
    // A tag-tracking GitSync may not replace main, nor any branch outside weir/.
    git_sync(
        &ns,
        "tag",
        json!({"url": repo.file_url(), "ref": {"tag": "v1"}, "rollback": with_branch("main")}),
    )
    .await;
    let message = ready(&ns, "tag", "InvalidSpec", None).await;
    assert!(
        message.contains("does not start with \"weir/\""),
        "{message}"
    );
    // Nor a branch another GitSync follows.
    git_sync(
        &ns,
        "follower",
        json!({"url": repo.file_url(), "ref": {"branch": "weir/reverts"}}),
    )
    .await;
    git_sync(
        &ns,
        "tag",
        json!({"url": repo.file_url(), "ref": {"tag": "v1"}, "rollback": with_branch("weir/reverts")}),
    )
    .await;
    let message = eventually(
        "the tag GitSync refused for a followed branch",
        LIMIT,
        || async {
            let message = ready(&ns, "tag", "InvalidSpec", None).await;
            message
                .contains("a branch a GitSync follows")
                .then_some(message)
        },
    )
    .await;
    assert!(message.contains("weir/reverts"), "{message}");
    // A branch of weir's own is accepted.
    git_sync(
        &ns,
        "tag",
        json!({"url": repo.file_url(), "ref": {"tag": "v1"}, "rollback": with_branch("weir/tag-reverts")}),
    )
    .await;
    ready(&ns, "tag", "Applied", None).await;
}

#[tokio::test]
async fn file_urls_need_the_flag_and_two_gitsyncs_never_share_a_clone() {
    let ns = TestNamespace::new(&client().await, "tenant-clones").await;
    let repo = GitRepo::new(&ns.name);
    let revision = repo.commit(
        "settings",
        &[
            (
                "deploy/a.yaml",
                &yaml_stream(&[config_map("settings", None, "1")]),
            ),
            (
                "other/b.yaml",
                &yaml_stream(&[config_map("other", None, "1")]),
            ),
        ],
    );
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cache_dir = cache.path().display().to_string();
    let refusing = ControllerProcess::start_exactly(
        &ns.name,
        &[
            "--default-service-account",
            "weir-gitsync",
            "--git-cache-dir",
            &cache_dir,
        ],
        &[],
    );
    git_sync(&ns, "first", json!({"url": repo.file_url()})).await;
    let message = ready(&ns, "first", "InvalidSpec", None).await;
    assert!(message.contains("--allow-file-urls"), "{message}");
    assert_eq!(value(&ns.client, &ns.name, "settings").await, None);
    drop(refusing);

    let _allowing = ControllerProcess::start_with(
        &ns.name,
        &[ANY_PORT[0], ANY_PORT[1], "--git-cache-dir", &cache_dir],
    );
    git_sync(
        &ns,
        "second",
        json!({"url": repo.file_url(), "path": "other"}),
    )
    .await;
    ready(&ns, "first", "Applied", Some(&revision)).await;
    ready(&ns, "second", "Applied", Some(&revision)).await;
    let clones: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (first, second) = (uid(&ns, "first").await, uid(&ns, "second").await);
    assert_eq!(clones.len(), 2, "one clone each: {clones:?}");
    assert!(
        clones.iter().any(|c| c.starts_with(&first))
            && clones.iter().any(|c| c.starts_with(&second)),
        "clones are keyed by the GitSyncs' UIDs ({first}, {second}): {clones:?}"
    );
}

async fn uid(ns: &TestNamespace, name: &str) -> String {
    ns.api::<GitSync>()
        .get(name)
        .await
        .ok()
        .and_then(|s| s.metadata.uid)
        .unwrap_or_default()
}
