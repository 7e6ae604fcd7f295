//! Test harness for integration tests against the local control plane
//! (`hack/local-cluster.sh up`): a client, a fresh namespace per test, Prometheus.
//!
//! Tests fail, never skip, when the cluster is missing: a skipped test would pass silently.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The repository root, where `.local-cluster/` lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cluster_dir() -> PathBuf {
    std::env::var_os("WEIR_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local-cluster"))
}

/// The kubeconfig of the local cluster: `$KUBECONFIG` when set, else the cluster's own.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| cluster_dir().join("kubeconfig"))
}

/// A copy of the local cluster's kubeconfig whose every user acts as `user` (impersonation,
/// which the admin may do): what the API server allows is then exactly what `user` may do.
pub fn kubeconfig_as(user: &str, file_name: &str) -> PathBuf {
    let path = kubeconfig_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for entry in config["users"].as_sequence_mut().into_iter().flatten() {
        entry["user"]["as"] = serde_yaml_ng::Value::from(user);
    }
    let written = std::env::temp_dir().join(file_name);
    let yaml = serde_yaml_ng::to_string(&config).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    std::fs::write(&written, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", written.display()));
    written
}

/// A kubeconfig that authenticates as ServiceAccount `account` of `ns` with its own token
/// (not by impersonation, which does not nest: a controller acting as it can then
/// impersonate GitSyncs' ServiceAccounts only as far as its own RBAC allows).
pub async fn kubeconfig_for_service_account(client: &Client, ns: &str, account: &str) -> PathBuf {
    use k8s_openapi::api::core::v1::Secret;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    // Before Kubernetes 1.24 the token controller makes a token Secret for each account.
    let token = eventually(
        &format!("a token for ServiceAccount {ns}/{account}"),
        Duration::from_secs(30),
        || async {
            let found = accounts.get_opt(account).await.ok()??;
            let name = found.secrets?.first()?.name.clone()?;
            let secret = secrets.get_opt(&name).await.ok()??;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        },
    )
    .await;
    let path = kubeconfig_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut user = serde_yaml_ng::Mapping::new();
    user.insert("token".into(), token.into());
    for entry in config["users"].as_sequence_mut().into_iter().flatten() {
        entry["user"] = serde_yaml_ng::Value::Mapping(user.clone());
    }
    let written = std::env::temp_dir().join(format!("{ns}-{account}.kubeconfig"));
    let yaml = serde_yaml_ng::to_string(&config).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    std::fs::write(&written, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", written.display()));
    written
}

const HOW_TO_START: &str =
    "start the local control plane with `hack/local-cluster.sh up` (or run `make test`)";

/// A client for the local cluster: `$KUBECONFIG` when set, else `.local-cluster/kubeconfig`.
pub async fn client() -> Client {
    let config = match std::env::var_os("KUBECONFIG") {
        Some(_) => Config::infer()
            .await
            .unwrap_or_else(|e| panic!("KUBECONFIG is set but unusable: {e}")),
        None => {
            let path = cluster_dir().join("kubeconfig");
            let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
                panic!("no local cluster ({}: {e}); {HOW_TO_START}", path.display())
            });
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", path.display()))
        }
    };
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("building a client: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("the API server does not answer ({e}); {HOW_TO_START}"));
    client
}

/// Polls `check` every 50 ms until it returns Some, or panics naming `what` after `limit`.
/// A liveness bound, not a performance assertion: limits are generous.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A namespace of its own for one test, deleted when the test ends (pass or fail), so tests
/// can run in parallel and leave nothing behind.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, test: &str) -> TestNamespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let suffix = format!(
            "{:x}{:x}{}",
            std::process::id(),
            nanos % 0xfffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut stem: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        stem.truncate(40);
        let name = format!("t-{}-{suffix}", stem.trim_matches('-'));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // Pods are refused until the namespace's default ServiceAccount exists and (before
        // Kubernetes 1.24) has its token Secret.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        eventually(
            "the default ServiceAccount and its token",
            Duration::from_secs(30),
            || async {
                let account = accounts.get_opt("default").await.ok().flatten()?;
                account.secrets.filter(|s| !s.is_empty())
            },
        )
        .await;
        let ns = TestNamespace {
            name,
            client: client.clone(),
        };
        ns.tenant(TENANT_SERVICE_ACCOUNT).await;
        ns
    }

    /// The ServiceAccount `account`, bound to the built-in `admin` role in this namespace only
    /// (weir's kinds join it through the chart's aggregated roles) and to HTTPRoutes, which
    /// no built-in role covers: what a platform team gives each tenant. Every test namespace
    /// has `weir-gitsync`, so GitSyncs run under lockdown as the chart sets it up.
    pub async fn tenant(&self, account: &str) {
        use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
        let params = PostParams::default();
        let meta = |name: &str| ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        };
        let subjects = Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(self.name.clone()),
            api_group: None,
        }]);
        self.api::<ServiceAccount>()
            .create(
                &params,
                &ServiceAccount {
                    metadata: meta(account),
                    ..ServiceAccount::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {account}: {e}"));
        let routes = format!("{account}-httproutes");
        self.api::<Role>()
            .create(
                &params,
                &Role {
                    metadata: meta(&routes),
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec!["gateway.networking.k8s.io".into()]),
                        resources: Some(vec!["httproutes".into()]),
                        verbs: [
                            "get", "list", "watch", "create", "update", "patch", "delete",
                        ]
                        .map(String::from)
                        .to_vec(),
                        ..PolicyRule::default()
                    }]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating Role {routes}: {e}"));
        for (binding, kind, role) in [
            (
                format!("{account}-admin"),
                "ClusterRole",
                "admin".to_owned(),
            ),
            (routes.clone(), "Role", routes.clone()),
        ] {
            self.api::<RoleBinding>()
                .create(
                    &params,
                    &RoleBinding {
                        metadata: meta(&binding),
                        role_ref: RoleRef {
                            api_group: Some("rbac.authorization.k8s.io".into()),
                            kind: kind.into(),
                            name: role,
                        },
                        subjects: subjects.clone(),
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("creating RoleBinding {binding}: {e}"));
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        if std::thread::panicking() {
            // A failed test shows what its controllers were doing (CI keeps only this output).
            let log = ControllerProcess::log(&name);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- the last {} lines the controllers in {name} logged ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        // Drop cannot await; a thread with its own runtime sends the delete before we go on.
        // It needs a client of its own: the test's client has its worker on the test's
        // runtime, which is blocked right here until the thread is done.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = client().await;
                // The test's controller is gone by now (dropped first), so nothing would
                // honour the Rollouts' route-cleanup finalizer: without this the namespace
                // stays Terminating and the namespace controller retries it for ever.
                let rollouts: Api<weir::api::Rollout> = Api::namespaced(client.clone(), &name);
                for rollout in rollouts.list(&Default::default()).await.ok()?.items {
                    let _ = rollouts
                        .patch(
                            &kube::ResourceExt::name_any(&rollout),
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(
                                serde_json::json!({"metadata": {"finalizers": null}}),
                            ),
                        )
                        .await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                namespaces
                    .delete(&name, &DeleteParams::background())
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!("warning: could not delete test namespace {}", self.name);
        }
    }
}

/// The local Prometheus: `$WEIR_PROMETHEUS_URL`, else the port in `.local-cluster/cluster.env`.
pub fn prometheus_url() -> String {
    if let Ok(url) = std::env::var("WEIR_PROMETHEUS_URL") {
        return url;
    }
    let env_file = cluster_dir().join("cluster.env");
    let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!(
            "no local cluster ({}: {e}); {HOW_TO_START}",
            env_file.display()
        )
    });
    let port = text
        .lines()
        .find_map(|line| line.strip_prefix("PROM_PORT="))
        .unwrap_or_else(|| panic!("{} has no PROM_PORT", env_file.display()));
    format!("http://127.0.0.1:{port}")
}

/// A file-based service discovery entry: Prometheus scrapes `target` while this lives.
pub struct ScrapeTarget {
    path: PathBuf,
}

impl ScrapeTarget {
    pub fn add(name: &str, target: &str, labels: &[(&str, &str)]) -> ScrapeTarget {
        let dir = cluster_dir().join("prometheus/targets");
        let path = dir.join(format!("{name}.json"));
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let body = serde_json::json!([{"targets": [target], "labels": labels}]);
        // Written beside and renamed, so Prometheus never reads half a file.
        let partial = dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&partial, body.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", partial.display()));
        std::fs::rename(&partial, &path)
            .unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
        ScrapeTarget { path }
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The ServiceAccount every test namespace has for its GitSyncs (`TestNamespace::tenant`),
/// and that test controllers act as by default: lockdown, as the chart sets it.
pub const TENANT_SERVICE_ACCOUNT: &str = "weir-gitsync";

/// A `weir controller` process watching one namespace, killed when dropped. A real process,
/// so tests can SIGKILL it mid-rollout and start another. Under lockdown
/// (`--default-service-account weir-gitsync`) unless started `unlocked`; tests serve
/// repositories from their own disk, so `file://` is allowed.
pub struct ControllerProcess {
    child: std::process::Child,
}

impl ControllerProcess {
    pub fn start(namespace: &str) -> ControllerProcess {
        ControllerProcess::start_with(namespace, &["--metrics-addr", "127.0.0.1:0"])
    }

    /// Everything the controllers started for `namespace` have logged so far.
    pub fn log(namespace: &str) -> String {
        std::fs::read_to_string(controller_log_path(namespace)).unwrap_or_default()
    }

    pub fn start_with(namespace: &str, extra: &[&str]) -> ControllerProcess {
        ControllerProcess::start_with_env(namespace, extra, &[])
    }

    /// One that measures against the shared Prometheus, serving its metrics on a free port.
    pub fn measuring(namespace: &str) -> ControllerProcess {
        ControllerProcess::start_with(
            namespace,
            &[
                "--metrics-addr",
                "127.0.0.1:0",
                "--prometheus-url",
                &prometheus_url(),
            ],
        )
    }

    /// With environment variables of its own (SSL_CERT_FILE, say).
    pub fn start_with_env(
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ControllerProcess {
        let mut args = vec!["--default-service-account", TENANT_SERVICE_ACCOUNT];
        args.extend_from_slice(extra);
        ControllerProcess::start_unlocked(namespace, &args, env)
    }

    /// Lockdown off: GitSyncs that name no ServiceAccount act as the controller itself (a
    /// single-team cluster, or a platform team's GitSync with `--allow-cross-namespace`).
    pub fn start_unlocked(
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ControllerProcess {
        let mut args = vec!["--allow-file-urls"];
        args.extend_from_slice(extra);
        ControllerProcess::start_exactly(namespace, &args, env)
    }

    /// With no flag but `--namespace` and `extra`.
    pub fn start_exactly(
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> ControllerProcess {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| cluster_dir().join("kubeconfig"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(controller_log_path(namespace))
            .unwrap_or_else(|e| panic!("opening the controller log: {e}"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["controller", "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            // WEIR_TEST_LOG lets whoever chases a failure turn up the controllers' logging.
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("log: {e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting weir controller: {e}"));
        ControllerProcess { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still the one started (it has not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as the kubelet sends first: how the process ended, if it did within `limit`
    /// (polled; None if it still runs).
    pub async fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = i32::try_from(self.child.id()).expect("a pid fits an i32");
        // SAFETY: kill(2) with a signal number has no memory effects on this process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGKILL: no shutdown, no last status write.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn controller_log_path(namespace: &str) -> PathBuf {
    let log_dir = std::env::temp_dir().join("weir-test-controllers");
    let _ = std::fs::create_dir_all(&log_dir);
    log_dir.join(format!("{namespace}.log"))
}

/// Waits until something listens on the loopback `port` (a server a test started).
pub async fn listening(what: &str, port: u16) {
    eventually(
        &format!("{what} to listen on port {port}"),
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await;
}

/// A loopback port free right now, for a server a test starts.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("binding a port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("port: {e}"))
        .port()
}

/// GET http://127.0.0.1:{port}{path}: (status code, body), or None when nothing answers.
/// A counter `metric{outcome="..."}` as a controller's /metrics on `port` says: 0 before
/// its first count, None when nothing answers.
pub async fn outcome_count(port: u16, metric: &str, outcome: &str) -> Option<u64> {
    let (_, text) = http_get(port, "/metrics").await?;
    let prefix = format!("{metric}{{outcome=\"{outcome}\"}} ");
    Some(
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().expect("a count")),
    )
}

pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path, &[], "").await
}

/// One HTTP/1.1 request to 127.0.0.1:{port}: (status code, body), or None when nothing
/// answers.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

pub mod app;
pub mod git;
pub mod gitops;
pub mod sops_encrypt;
pub mod watch;

/// A Prometheus exposition endpoint whose body the test sets at will; served until dropped.
pub struct MetricsServer {
    pub address: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    pub async fn start(body: &str) -> MetricsServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the metrics server: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("metrics server address: {e}"))
            .to_string();
        let body = std::sync::Arc::new(std::sync::Mutex::new(body.to_owned()));
        let serving = body.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let body = serving.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        MetricsServer {
            address,
            body,
            task,
        }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().unwrap_or_else(|e| e.into_inner()) = body.to_owned();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Prometheus of the test's own (the binary `hack/local-cluster.sh` installs), scraping one
/// target every second, so a test can stop it without disturbing the others.
pub struct PrometheusProcess {
    pub url: String,
    child: Option<std::process::Child>,
    dir: PathBuf,
}

impl PrometheusProcess {
    pub async fn start(name: &str, target: &str) -> PrometheusProcess {
        PrometheusProcess::start_with(name, target, None).await
    }

    /// With `basic_auth` (user, bcrypt hash) every API call needs those credentials.
    pub async fn start_with(
        name: &str,
        target: &str,
        basic_auth: Option<(&str, &str)>,
    ) -> PrometheusProcess {
        let dir = std::env::temp_dir().join(format!("weir-test-prometheus-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut web_config = Vec::new();
        if let Some((user, hash)) = basic_auth {
            let path = dir.join("web.yml");
            std::fs::write(&path, format!("basic_auth_users:\n  {user}: {hash}\n"))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            web_config.push(format!("--web.config.file={}", path.display()));
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log"))
            .unwrap_or_else(|e| panic!("prometheus log: {e}"));
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(&web_config)
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("log: {e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting prometheus (hack/local-cluster.sh installs it): {e}")
            });
        let process = PrometheusProcess {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            dir,
        };
        // Behind basic auth, a 401 is the sign it is up; the test waits for data itself.
        let up = if basic_auth.is_some() { 401 } else { 200 };
        eventually(
            "the test's Prometheus to be ready",
            Duration::from_secs(30),
            || async {
                http_get(port, "/-/ready")
                    .await
                    .filter(|(code, _)| *code == up)
            },
        )
        .await;
        process
    }

    /// SIGKILL: it stops answering at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The simulated data plane (`weir-sim traffic`) for a namespace, killed on drop.
pub struct Simulator(std::process::Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The simulated data plane for the namespace, scraped by the shared Prometheus.
pub async fn simulator(ns: &TestNamespace) -> (Simulator, ScrapeTarget) {
    simulator_with(ns, &[]).await
}

/// The same, with more of `weir-sim traffic`'s flags (`--seed 7`).
pub async fn simulator_with(ns: &TestNamespace, flags: &[&str]) -> (Simulator, ScrapeTarget) {
    let port = free_port();
    let simulator = Simulator(
        std::process::Command::new(env!("CARGO_BIN_EXE_weir-sim"))
            .args(["traffic", "--namespace", &ns.name, "--rps", "200"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("KUBECONFIG", kubeconfig_path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weir-sim traffic"),
    );
    listening("the traffic simulator", port).await;
    let target = ScrapeTarget::add(&ns.name, &format!("127.0.0.1:{port}"), &[]);
    (simulator, target)
}

/// The API server's audit log (hack/local-cluster.sh): the bench counts writers and reads
/// from it, tests the requests a controller made.
pub fn audit_log() -> PathBuf {
    cluster_dir().join("audit.log")
}

/// The audit log's entries from byte `from` on, as hack/local-cluster.sh keeps it: writes to
/// weir's kinds, ReplicaSets and HTTPRoutes, and every read but of Leases.
pub fn audit_entries(log: &Path, from: u64) -> Vec<serde_json::Value> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let _ = file.seek(std::io::SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The weir replica that sent an audited request: its identity, from its user agent
/// (`weir/<version> (<identity>)`).
pub fn weir_identity(entry: &serde_json::Value) -> Option<&str> {
    entry["userAgent"]
        .as_str()
        .and_then(|agent| agent.strip_prefix("weir/"))
        .and_then(|agent| agent.split_once(" ("))
        .and_then(|(_, identity)| identity.strip_suffix(')'))
}
