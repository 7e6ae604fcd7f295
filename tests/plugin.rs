//! `kubectl weir` on the local control plane: the real binary, run directly and through
//! Debian's kubectl (plugin discovery on PATH), against Rollouts a `weir controller` drives.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use support::app::{LIMIT, app, healthy_on, phase, set_image, wait_for};
use support::git::GitRepo;
use support::{ControllerProcess, TestNamespace, client, eventually, kubeconfig_path};
use weir::api::gitsync::GitSync;
use weir::api::rollout::RolloutPhase;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-weir");

/// Runs `kubectl-weir ARGS -n NS` with the local cluster's kubeconfig.
fn weir(ns: &TestNamespace, args: &[&str]) -> Output {
    weir_with(ns, &kubeconfig_path(), args)
}

fn weir_with(ns: &TestNamespace, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(PLUGIN)
        .args(args)
        .args(["-n", &ns.name])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl-weir: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// `kubectl weir get web -w` running off a terminal, its lines collected; killed on drop,
/// also when an assertion fails first.
struct Watching {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Watching {
    fn start(ns: &TestNamespace) -> Watching {
        use std::io::BufRead;
        let mut child = Command::new(PLUGIN)
            .args(["get", "web", "-w", "-n", &ns.name])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("get -w");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Watching { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn steps() -> serde_json::Value {
    json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}])
}

async fn paused_canary(ns: &TestNamespace, image: &str) {
    set_image(ns, image, &steps(), &json!({})).await;
    wait_for(ns, &format!("{image}'s canary paused"), |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
}

#[tokio::test]
async fn operators_promote_abort_and_retry_and_ci_waits_on_exit_codes() {
    let ns = TestNamespace::new(&client().await, "plugin").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    healthy_on(&ns, "web:1").await;

    let healthy = weir(&ns, &["status", "web", "--timeout", "30s"]);
    assert_eq!(code(&healthy), Some(0), "{}", stdout(&healthy));
    assert!(
        stdout(&healthy).starts_with("web: Healthy on "),
        "{}",
        stdout(&healthy)
    );
    let list = weir(&ns, &["list"]);
    assert_eq!(code(&list), Some(0), "{}", stderr(&list));
    let lines: Vec<String> = stdout(&list).lines().map(str::to_owned).collect();
    assert!(
        lines[0].starts_with("NAME   PHASE     STEP   WEIGHT"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("web    Healthy   3/3"), "{lines:?}");

    let refused = weir(&ns, &["promote", "web"]);
    assert_eq!(code(&refused), Some(1));
    assert!(
        stderr(&refused).starts_with("error: web has no canary in progress (Healthy, on ")
            && stderr(&refused).trim_end().ends_with("nothing to promote"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        stderr(&refused).lines().count(),
        1,
        "one line, no backtrace"
    );

    paused_canary(&ns, "web:2").await;
    let get = weir(&ns, &["get", "web"]);
    let view = stdout(&get);
    assert!(view.contains("[x] 1  setWeight 20%"), "{view}");
    assert!(view.contains("[>] 2  pause (until promoted)"), "{view}");
    assert!(
        view.contains("[####................] stable 80%  canary 20%"),
        "{view}"
    );
    // The router's own weight, read from the HTTPRoute, beside what the status says.
    let route = format!("Gateway API HTTPRoute {}/web", ns.name);
    assert!(
        view.lines()
            .any(|l| l.contains(&route) && l.split_whitespace().any(|w| w == "20%")),
        "{view}"
    );
    let waiting = weir(&ns, &["status", "web", "--timeout", "2s"]);
    assert_eq!(code(&waiting), Some(2), "{}", stdout(&waiting));
    assert!(
        stdout(&waiting).contains("Paused: step 2/3, canary weight 20%"),
        "{}",
        stdout(&waiting)
    );

    // `get -w` off a terminal: one line per change.
    let watching = Watching::start(&ns);
    eventually("get -w to print the paused canary", LIMIT, || async {
        watching.lines().first().cloned()
    })
    .await;
    let promoted = weir(&ns, &["promote", "web"]);
    assert_eq!(code(&promoted), Some(0), "{}", stderr(&promoted));
    assert_eq!(
        stdout(&promoted).trim(),
        "web: promoted past step 2; it goes on to step 3 (setWeight 60%)"
    );
    let healthy = weir(&ns, &["status", "web", "--timeout", "60s"]);
    assert_eq!(code(&healthy), Some(0), "{}", stdout(&healthy));
    healthy_on(&ns, "web:2").await;
    let lines = eventually("get -w to print Healthy", LIMIT, || async {
        let lines = watching.lines();
        lines
            .last()
            .is_some_and(|l| l.starts_with("web Healthy step=3/3"))
            .then_some(lines)
    })
    .await;
    assert!(
        lines[0].starts_with("web Paused step=2/3 weight=20%"),
        "{lines:?}"
    );
    drop(watching);

    paused_canary(&ns, "web:3").await;
    let aborted = weir(&ns, &["abort", "web"]);
    assert_eq!(code(&aborted), Some(0), "{}", stderr(&aborted));
    assert!(stdout(&aborted).contains("traffic returns to the stable version"));
    let degraded = weir(&ns, &["status", "web", "--timeout", "60s"]);
    assert_eq!(code(&degraded), Some(1), "{}", stdout(&degraded));
    assert!(
        stdout(&degraded).contains("Degraded"),
        "{}",
        stdout(&degraded)
    );
    let again = weir(&ns, &["abort", "web"]);
    assert_eq!(code(&again), Some(1));
    assert_eq!(stderr(&again).trim(), "error: web is aborted already");

    let retried = weir(&ns, &["retry", "web"]);
    assert_eq!(code(&retried), Some(0), "{}", stderr(&retried));
    wait_for(&ns, "the canary retried and paused", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status
                .as_ref()
                .is_some_and(|s| !s.abort && s.canary_weight == Some(20))
    })
    .await;

    // Pause and resume are spec.paused.
    let paused = weir(&ns, &["pause", "web"]);
    assert_eq!(code(&paused), Some(0), "{}", stderr(&paused));
    wait_for(&ns, "spec.paused", |r| r.spec.paused).await;
    let resumed = weir(&ns, &["resume", "web"]);
    assert_eq!(code(&resumed), Some(0), "{}", stderr(&resumed));
    wait_for(&ns, "spec.paused off", |r| !r.spec.paused).await;

    // Without a GitSync, undo during a canary puts the stable template back (web:2), so
    // traffic is all on it at once.
    let undone = weir(&ns, &["undo", "web"]);
    assert_eq!(code(&undone), Some(0), "{}", stderr(&undone));
    assert!(
        stdout(&undone).contains("the template of ReplicaSet"),
        "{}",
        stdout(&undone)
    );
    healthy_on(&ns, "web:2").await;

    let json = weir(&ns, &["get", "web", "-o", "json"]);
    let object: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("get -o json prints the object");
    assert_eq!(object["metadata"]["name"], "web");

    let gone = weir(&ns, &["status", "nosuch", "--timeout", "10s"]);
    assert_eq!(
        code(&gone),
        Some(3),
        "status could not tell: {}",
        stderr(&gone)
    );
    let usage = weir(&ns, &["status", "web", "--timeout", "5x"]);
    assert_eq!(
        code(&usage),
        Some(3),
        "a wrong command line is not a verdict"
    );

    let missing = weir(&ns, &["get", "nosuch"]);
    assert_eq!(code(&missing), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        format!("error: rollout nosuch not found in namespace {}", ns.name)
    );
}

#[tokio::test]
async fn kubectl_finds_the_plugin_and_permissions_are_explained() {
    let ns = TestNamespace::new(&client().await, "plugin-kubectl").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    set_image(&ns, "web:1", &steps(), &json!({})).await;
    healthy_on(&ns, "web:1").await;
    paused_canary(&ns, "web:2").await;

    // kubectl's plugin discovery: an executable named kubectl-weir on PATH.
    let bin = Path::new(PLUGIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let through_kubectl = Command::new("kubectl")
        .args(["weir", "list", "-n", &ns.name])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("running kubectl");
    assert_eq!(
        code(&through_kubectl),
        Some(0),
        "{}",
        stderr(&through_kubectl)
    );
    assert!(
        stdout(&through_kubectl).contains("web    Paused   2/3    20%"),
        "{}",
        stdout(&through_kubectl)
    );

    // A user who may read Rollouts but not change them.
    let viewer = format!("viewer-{}", ns.name);
    let rbac = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "rollout-viewer", "namespace": ns.name},
            "rules": [{"apiGroups": ["weir.dev"], "resources": ["rollouts"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rollout-viewer", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollout-viewer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": viewer}]}),
    ];
    for object in rbac {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let file = std::env::temp_dir().join(format!("{}-{kind}.json", ns.name));
        std::fs::write(&file, object.to_string()).expect("write");
        let applied = Command::new("kubectl")
            .args(["apply", "-f"])
            .arg(&file)
            .env("KUBECONFIG", kubeconfig_path())
            .output()
            .expect("kubectl apply");
        assert!(applied.status.success(), "{}", stderr(&applied));
    }
    let viewer_config = support::kubeconfig_as(&viewer, &format!("{}-viewer.kubeconfig", ns.name));
    let listed = weir_with(&ns, &viewer_config, &["list"]);
    assert_eq!(code(&listed), Some(0), "{}", stderr(&listed));
    let denied = eventually("RBAC to apply", LIMIT, || async {
        let output = weir_with(&ns, &viewer_config, &["abort", "web"]);
        stderr(&output).contains("no permission").then_some(output)
    })
    .await;
    assert_eq!(code(&denied), Some(1));
    assert!(
        stderr(&denied).starts_with(&format!(
            "error: no permission to patch rollouts/status in namespace {}",
            ns.name
        )),
        "{}",
        stderr(&denied)
    );
    let rollout = wait_for(&ns, "still paused", |_| true).await;
    assert!(!rollout.status.is_some_and(|s| s.abort), "nothing changed");
}

#[tokio::test]
async fn undo_and_history_go_through_the_gitsync() {
    let ns = TestNamespace::new(&client().await, "plugin-git").await;
    let repo = GitRepo::new(&ns.name);
    let manifest = |image: &str| {
        let mut documents = support::app::routing();
        documents.push(support::app::rollout(
            image,
            json!([{"setWeight": 20}]),
            json!({}),
        ));
        support::app::yaml_stream(&documents)
    };
    let v1 = repo.commit("web one", &[("deploy/app.yaml", &manifest("web:1"))]);
    let _controller = ControllerProcess::start(&ns.name);
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    healthy_on(&ns, "web:1").await;
    let v2 = repo.commit("web two", &[("deploy/app.yaml", &manifest("web:2"))]);
    healthy_on(&ns, "web:2").await;

    let view = stdout(&weir(&ns, &["get", "web"]));
    assert!(
        view.contains(&format!("stable {} \"web two\"", &v2[..7])),
        "the commit subject beside the revision: {view}"
    );
    let undone = weir(&ns, &["undo", "web"]);
    assert_eq!(code(&undone), Some(0), "{}", stderr(&undone));
    assert!(
        stdout(&undone).contains(&format!("applies revision {} \"web one\"", &v1[..7])),
        "{}",
        stdout(&undone)
    );
    healthy_on(&ns, "web:1").await;
    let pinned = eventually("the GitSync pinned", LIMIT, || async {
        let sync = ns.api::<GitSync>().get("app").await.ok()?;
        sync.status?.pinned
    })
    .await;
    assert_eq!(
        (pinned.revision, pinned.ref_revision),
        (v1.clone(), v2.clone())
    );

    let history = eventually("history to show the pin", LIMIT, || async {
        let text = stdout(&weir(&ns, &["history", "web"]));
        text.contains("pinned by hand").then_some(text)
    })
    .await;
    let rows: Vec<&str> = history.lines().collect();
    assert!(rows[0].starts_with("REVISION"), "{history}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&v2[..7]) && r.contains("web two")),
        "{history}"
    );
    let refused = weir(&ns, &["undo", "web", "--to-revision", &v1[..7]]);
    assert_eq!(code(&refused), Some(1));
    assert!(
        stderr(&refused).contains("is the one applied now"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn version_and_completions_need_no_cluster() {
    let version = Command::new(PLUGIN)
        .arg("version")
        .output()
        .expect("version");
    assert_eq!(
        stdout(&version).trim(),
        format!("kubectl-weir {}", env!("CARGO_PKG_VERSION"))
    );
    let bash = Command::new(PLUGIN)
        .args(["completion", "bash"])
        .output()
        .expect("completion");
    assert_eq!(code(&bash), Some(0));
    assert!(
        stdout(&bash).contains("promote") && stdout(&bash).contains("--to-revision"),
        "a completion script for every command and flag"
    );
}

#[test]
fn lint_checks_weir_and_argo_manifests_offline() {
    let root = support::repo_root();
    let examples = [
        "examples/rollout.yaml",
        "examples/blue-green.yaml",
        "examples/analysistemplate.yaml",
        "examples/gitsync.yaml",
    ];
    let output = Command::new(PLUGIN)
        .arg("lint")
        .args(examples.iter().map(|e| root.join(e)))
        .output()
        .expect("lint");
    assert_eq!(code(&output), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).ends_with("4 weir documents checked, 0 problems\n"),
        "{}",
        stdout(&output)
    );

    let dir = std::env::temp_dir().join(format!("weir-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The canary and blue-green examples written in Argo's shape, as Argo users have them.
    for example in [
        "examples/argo-rollouts/canary.yaml",
        "examples/argo-rollouts/experiment.yaml",
        "examples/argo-rollouts/experiment-weighted.yaml",
        "examples/blue-green.yaml",
    ] {
        let argo_file = dir.join("argo.yaml");
        let argo_text = std::fs::read_to_string(root.join(example))
            .expect("the example")
            .replace(
                "apiVersion: weir.dev/v1alpha1",
                "apiVersion: argoproj.io/v1alpha1",
            );
        assert!(argo_text.contains("argoproj.io"), "{example}");
        std::fs::write(&argo_file, argo_text).expect("write");
        let argo = Command::new(PLUGIN)
            .arg("lint")
            .arg(&argo_file)
            .output()
            .expect("lint");
        assert_eq!(code(&argo), Some(0), "{example}: {}", stdout(&argo));
        assert!(
            stdout(&argo).contains(
                "weir can run this Argo Rollouts manifest once apiVersion is weir.dev/v1alpha1"
            ),
            "{example}: {}",
            stdout(&argo)
        );
    }

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n  strategy:\n    blueGreen: {activeService: web, maxUnavailable: 1}\n",
    )
    .expect("write");
    let output = Command::new(PLUGIN)
        .arg("lint")
        .arg(&bad)
        .output()
        .expect("lint");
    assert_eq!(code(&output), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "{}: document 1 (Rollout web): unsupported: spec.strategy.blueGreen.maxUnavailable",
            bad.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("weir cannot run this Argo Rollouts manifest as it is: 1 unsupported"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lint_reports_every_finding_of_a_mixed_argo_file_with_its_path() {
    let dir = std::env::temp_dir().join(format!("weir-lint-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("mixed.yaml");
    // A Rollout (one typo, one value that does not parse), the template it names (which
    // uses a provider weir lacks), a template of templates and an AnalysisRun.
    std::fs::write(
        &file,
        "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
  strategy:
    canary:
      steps:
      - setWeight: twenty
      - pause: {duraton: 10s}
      - analysis: {templates: [{templateName: composed}]}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  metrics:
  - name: errors
    successCondition: result[0] < 0.01
    provider:
      datadog: {query: 'sum:errors{*}'}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: composed}
spec:
  templates: [{templateName: errors}]
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {name: run}
spec:
  metrics:
  - name: m
    provider: {prometheus: {query: up}}
",
    )
    .expect("write");
    let output = Command::new(PLUGIN)
        .arg("lint")
        .arg(&file)
        .output()
        .expect("lint");
    let text = stdout(&output);
    assert_eq!(code(&output), Some(1), "{text}");
    let shown = file.display();
    for expected in [
        format!(
            "{shown}: document 1 (Rollout web): error: spec.strategy.canary.steps[0].setWeight: does not parse"
        ),
        format!(
            "{shown}: document 1 (Rollout web): unsupported: spec.strategy.canary.steps[1].pause.duraton: weir does not support this field yet; did you mean duration?"
        ),
        format!(
            "{shown}: document 1 (Rollout web): unsupported: spec.strategy.canary.steps[2].analysis.templates[0]: AnalysisTemplate errors (in AnalysisTemplate composed): spec.metrics[0].provider.datadog"
        ),
        format!(
            "{shown}: document 2 (AnalysisTemplate errors): unsupported: spec.metrics[0].provider.datadog"
        ),
        format!(
            "{shown}: document 3 (AnalysisTemplate composed): weir can run this Argo Rollouts manifest once apiVersion is weir.dev/v1alpha1"
        ),
        format!("{shown}: document 4 (AnalysisRun run): error: spec.metrics[0].successCondition"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("missing field"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
