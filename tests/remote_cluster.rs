//! A GitSync that applies to another cluster (`spec.kubeConfig`): the second local control
//! plane (`hack/local-cluster.sh up --name remote`) stands for it. Its kubeconfig is put in
//! a Secret as a tenant would write it (inline values only); the objects land, are judged
//! and are pruned there, never here.

mod support;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use support::app::{LIMIT, apply_git_sync};
use support::git::{GitDaemon, GitRepo};
use support::gitops::sync_where;
use support::{ControllerProcess, TestNamespace, client, eventually, repo_root};
use weir::api::Rollout;
use weir::api::rollout::RolloutPhase;

/// The second local cluster's state directory.
fn remote_dir() -> std::path::PathBuf {
    std::env::var_os("WEIR_REMOTE_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local-cluster-remote"))
}

fn read(name: &str) -> String {
    let path = remote_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no remote cluster ({}: {e}); start it with: hack/local-cluster.sh up --name remote",
            path.display()
        )
    })
}

/// The test's own client of the remote cluster (its admin kubeconfig file).
async fn remote_client() -> Client {
    let path = remote_dir().join("kubeconfig");
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("a remote client: {e}"))
}

/// The remote cluster's kubeconfig as a tenant puts it in a Secret: every value inline.
fn inline_kubeconfig() -> String {
    let port = read("cluster.env")
        .lines()
        .find_map(|l| l.strip_prefix("API_PORT=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no API_PORT in the remote cluster's cluster.env"));
    let ca = base64::engine::general_purpose::STANDARD.encode(read("certs/apiserver.crt"));
    let token = read("admin.token");
    format!(
        "apiVersion: v1
kind: Config
current-context: remote
contexts:
- name: remote
  context: {{cluster: remote, user: admin}}
clusters:
- name: remote
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
"
    )
}

/// The namespace the test's own, in the remote cluster, with the tenant's ServiceAccount
/// bound to `admin` there, as a platform team sets a tenant up (the chart does it here).
async fn remote_tenant(remote: &Client, namespace: &str) {
    remote_namespace(remote, namespace).await;
    remote_service_account(remote, namespace).await;
}

async fn remote_namespace(remote: &Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(remote.clone());
    let object: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .expect("the namespace in the remote cluster");
}

async fn remote_service_account(remote: &Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(remote.clone(), namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "weir-gitsync"}})).expect("an account");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("the remote ServiceAccount");
    let bindings: Api<RoleBinding> = Api::namespaced(remote.clone(), namespace);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "weir-gitsync-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "weir-gitsync", "namespace": namespace}]
    }))
    .expect("a binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("the remote RoleBinding");
}

/// The remote cluster's kubeconfig in the Secret `remote-kubeconfig` of `ns`.
async fn kubeconfig_secret(ns: &TestNamespace, text: String) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "remote-kubeconfig"},
        "stringData": {"value": text}
    }))
    .expect("a Secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("the kubeconfig Secret");
}

/// The GitSync `app` following `url`'s `deploy/`, applying to the remote cluster with the
/// kubeconfig in `remote-kubeconfig`.
async fn remote_git_sync(ns: &TestNamespace, url: &str) {
    apply_git_sync(
        ns,
        "app",
        json!({"url": url, "ref": {"branch": "main"}, "path": "deploy", "interval": "1s",
            "kubeConfig": {"secretRef": {"name": "remote-kubeconfig"}}}),
    )
    .await;
}

fn settings(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"{value}\"\n"
    )
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:1
";

#[tokio::test]
async fn a_git_sync_applies_judges_and_prunes_in_the_cluster_its_kubeconfig_names() {
    let ns = TestNamespace::new(&client().await, "remote-apply").await;
    let remote = remote_client().await;
    remote_namespace(&remote, &ns.name).await;
    kubeconfig_secret(&ns, inline_kubeconfig()).await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    let v1 = repo.commit(
        "web and its settings",
        &[
            ("deploy/web.yaml", WEB),
            ("deploy/settings.yaml", &settings("1")),
        ],
    );
    let _controller = ControllerProcess::start(&ns.name);
    remote_git_sync(&ns, &daemon.url(&repo)).await;
    // Impersonation holds there too: the GitSync acts as its ServiceAccount in the remote
    // cluster, which has none yet, so the revision is Forbidden and nothing lands.
    sync_where(&ns, "Forbidden in the remote cluster", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.reason == "Forbidden" && c.message.contains("weir-gitsync")
        })
    })
    .await;
    let remote_settings: Api<ConfigMap> = Api::namespaced(remote.clone(), &ns.name);
    assert!(
        remote_settings
            .get_opt("settings")
            .await
            .expect("read")
            .is_none()
    );
    // The platform team gives the tenant its ServiceAccount there, as the chart does here.
    remote_service_account(&remote, &ns.name).await;
    // Good only once the remote Deployment is available (the remote kubelet stand-in).
    let status = sync_where(&ns, "v1 applied and good in the remote cluster", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    assert_eq!(status.inventory.len(), 2, "{:?}", status.inventory);
    let remote_web: Api<Deployment> = Api::namespaced(remote.clone(), &ns.name);
    let web = remote_web
        .get("web")
        .await
        .expect("web in the remote cluster");
    assert_eq!(web.status.and_then(|s| s.available_replicas), Some(1));
    let remote_settings: Api<ConfigMap> = Api::namespaced(remote.clone(), &ns.name);
    assert!(
        remote_settings
            .get_opt("settings")
            .await
            .expect("read")
            .is_some()
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .expect("read")
            .is_none()
            && ns
                .api::<Deployment>()
                .get_opt("web")
                .await
                .expect("read")
                .is_none(),
        "nothing lands in the cluster the GitSync lives in"
    );

    // The settings leave Git: pruned in the remote cluster.
    let v2 = repo.commit("settings go", &[("deploy/settings.yaml", "")]);
    sync_where(&ns, "v2 applied", |s| {
        s.last_applied_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    eventually(
        "the settings pruned in the remote cluster",
        LIMIT,
        || async {
            remote_settings
                .get_opt("settings")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;

    let namespaces: Api<Namespace> = Api::all(remote.clone());
    let _ = namespaces.delete(&ns.name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn a_kubeconfig_that_would_run_a_command_is_refused_and_nothing_is_applied() {
    let ns = TestNamespace::new(&client().await, "remote-exec").await;
    let hostile = inline_kubeconfig().replace(
        "    token:",
        "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/touch, args: [/tmp/weir-was-made-to-run-this]}\n    token:",
    );
    kubeconfig_secret(&ns, hostile).await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    repo.commit("settings", &[("deploy/settings.yaml", &settings("1"))]);
    let _controller = ControllerProcess::start(&ns.name);
    remote_git_sync(&ns, &daemon.url(&repo)).await;
    let status = sync_where(&ns, "the revision refused", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "False" && c.message.contains("users[].user.exec")
        })
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        !ready.contains(&read("admin.token")),
        "the token never shows: {ready}"
    );
    assert!(status.inventory.is_empty(), "nothing applied anywhere");
    assert!(
        !std::path::Path::new("/tmp/weir-was-made-to-run-this").exists(),
        "the command never ran"
    );
}

/// A Rollout as a team writes one, with no router: its canary is a share of its replicas.
fn rollout(version: u32) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:{version}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {{}}
"
    )
}

#[tokio::test]
async fn a_rollout_in_the_remote_cluster_decides_what_is_good_and_its_abort_rolls_back_there() {
    let ns = TestNamespace::new(&client().await, "remote-rollout").await;
    let remote = remote_client().await;
    remote_tenant(&remote, &ns.name).await;
    kubeconfig_secret(&ns, inline_kubeconfig()).await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    let v1 = repo.commit("web 1", &[("deploy/web.yaml", &rollout(1))]);
    // Here: the GitSync. There: weir's rollout controller, as the chart installs it there.
    let _controller = ControllerProcess::start(&ns.name);
    let remote_kubeconfig = remote_dir().join("kubeconfig");
    let _remote_controller =
        ControllerProcess::start_with_env(&ns.name, &[], &[("KUBECONFIG", &remote_kubeconfig)]);
    remote_git_sync(&ns, &daemon.url(&repo)).await;
    sync_where(&ns, "v1 good: the remote Rollout Healthy", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let rollouts: Api<Rollout> = Api::namespaced(remote.clone(), &ns.name);
    let web = rollouts
        .get("web")
        .await
        .expect("web in the remote cluster");
    assert_eq!(
        web.status.and_then(|s| s.phase),
        Some(RolloutPhase::Healthy)
    );
    assert!(
        ns.api::<Rollout>()
            .get_opt("web")
            .await
            .expect("read")
            .is_none(),
        "no Rollout here"
    );

    // v2's canary is aborted there (kubectl weir abort against that cluster): v2 is
    // rejected here, and the remote cluster goes back to v1.
    let v2 = repo.commit("web 2", &[("deploy/web.yaml", &rollout(2))]);
    eventually(
        "v2's canary paused in the remote cluster",
        LIMIT,
        || async {
            let web = rollouts.get("web").await.ok()?;
            let status = web.status?;
            (status.phase == Some(RolloutPhase::Paused)).then_some(())
        },
    )
    .await;
    rollouts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"abort": true}})),
        )
        .await
        .expect("abort the remote canary");
    let status = sync_where(&ns, "v2 rejected and the remote cluster back on v1", |s| {
        s.rejected_revisions.iter().any(|r| r.revision == v2)
            && s.history
                .iter()
                .any(|h| h.revision == v1 && h.outcome == "RolledBack")
    })
    .await;
    let rejected = status
        .rejected_revisions
        .iter()
        .find(|r| r.revision == v2)
        .expect("v2 rejected");
    assert_eq!(rejected.reason, "Aborted");
    eventually(
        "the remote Rollout's template back on v1",
        LIMIT,
        || async {
            let web = rollouts.get("web").await.ok()?;
            let image = web.spec.template.spec?.containers.first()?.image.clone()?;
            (image == "registry.example/web:1").then_some(())
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(remote.clone());
    let _ = namespaces.delete(&ns.name, &DeleteParams::default()).await;
}
