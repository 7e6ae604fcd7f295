//! Hostile revisions: what a repository's author controls must cost the controller bounded
//! memory and time, be refused with a reason that names the file and the limit, apply
//! nothing, and leave the next good revision to apply as usual.

mod support;

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use support::app::LIMIT;
use support::git::GitRepo;
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::gitsync::GitSync;

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// The GitSync's Ready reason and message once it has attempted `revision`.
async fn attempted(ns: &TestNamespace, revision: &str) -> (String, String) {
    let api = ns.api::<GitSync>();
    eventually(&format!("GitSync to attempt {revision}"), LIMIT, || async {
        let sync = api.get("app").await.ok()?;
        let status = sync.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (status.last_attempted_revision.as_deref() == Some(revision))
            .then(|| (ready.reason.clone(), ready.message.clone()))
    })
    .await
}

async fn value(ns: &TestNamespace, name: &str) -> Option<String> {
    let found = ns.api::<ConfigMap>().get_opt(name).await.ok()??;
    found.data?.get("value").cloned()
}

/// The data of the ConfigMap an `envs` generator made, if any.
async fn leak_config_map(ns: &TestNamespace) -> std::collections::BTreeMap<String, String> {
    ns.api::<ConfigMap>()
        .get_opt("leak")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .unwrap_or_default()
}

/// Kilobytes of a process's memory: `VmRSS` now, `VmHWM` its peak.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .filter(|kib| *kib > 0)
        .unwrap_or_else(|| {
            panic!("no {field} for process {pid} in /proc: the bound would be untested")
        })
}

#[tokio::test]
async fn hostile_revisions_are_refused_in_bounded_memory_and_a_good_one_applies_after() {
    let ns = TestNamespace::new(&client().await, "hostile").await;
    let repo = GitRepo::new(&ns.name);
    let good = repo.commit("good", &[("deploy/a.yaml", &config_map("a", "1"))]);
    // A variable of weir's own: a kustomization's `envs` must never see it.
    let controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("WEIR_TEST_LEAK", Path::new("leaked-from-weir"))],
    );
    support::app::apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"}),
    )
    .await;
    assert_eq!(attempted(&ns, &good).await.0, "Applied");
    let idle = memory_kib(controller.pid(), "VmRSS:");

    // One anchor of 3,000 items aliased 3,000 times: 15 KB that expanded to 291 MB.
    let items = vec!["x"; 3_000].join(", ");
    let aliases = vec!["*a"; 3_000].join(", ");
    let bomb = format!(
        "{}x-anchor: &a [{items}]\nx-uses: [{aliases}]\n",
        config_map("bomb", "1")
    );
    let revision = repo.commit(
        "alias bomb",
        &[
            ("deploy/a.yaml", &config_map("a", "2")),
            ("deploy/bomb.yaml", &bomb),
        ],
    );
    let (reason, message) = attempted(&ns, &revision).await;
    assert_eq!(reason, "RenderFailed", "{message}");
    assert!(
        message.contains("deploy/bomb.yaml (document 0)")
            && message.contains("--max-document-bytes"),
        "{message}"
    );

    // A 50 MB file: refused by its size, before it is read.
    let big = "#".repeat(50 << 20);
    let revision = repo.commit(
        "50 MB",
        &[("deploy/bomb.yaml", ""), ("deploy/big.yaml", &big)],
    );
    let (reason, message) = attempted(&ns, &revision).await;
    assert_eq!(reason, "RenderFailed", "{message}");
    assert!(
        message.contains("deploy/big.yaml") && message.contains("--max-file-bytes"),
        "{message}"
    );

    // A kustomization with a remote base: refused before kustomize runs, naming it.
    let revision = repo.commit(
        "remote base",
        &[
            ("deploy/big.yaml", ""),
            (
                "deploy/kustomization.yaml",
                "resources:\n- a.yaml\n- https://example.com/remote.yaml\n",
            ),
        ],
    );
    let (reason, message) = attempted(&ns, &revision).await;
    assert_eq!(reason, "RenderFailed", "{message}");
    assert!(
        message.contains("resources[1]: https://example.com/remote.yaml")
            && message.contains("spec.kustomize.allowRemote"),
        "{message}"
    );
    assert_eq!(
        value(&ns, "a").await.as_deref(),
        Some("1"),
        "nothing applied"
    );

    // An `envs` generator naming a variable: built, but with nothing of weir's environment.
    let revision = repo.commit(
        "envs generator",
        &[
            (
                "deploy/kustomization.yaml",
                "resources:\n- a.yaml\nconfigMapGenerator:\n- name: leak\n  envs: [leak.env]\ngeneratorOptions:\n  disableNameSuffixHash: true\n",
            ),
            ("deploy/leak.env", "WEIR_TEST_LEAK\n"),
        ],
    );
    let (reason, message) = attempted(&ns, &revision).await;
    let leaked = leak_config_map(&ns).await;
    assert!(
        !leaked.values().any(|v| v.contains("leaked-from-weir")),
        "weir's environment reached the ConfigMap ({reason}: {message}): {leaked:?}"
    );

    // The next good revision applies as usual, by the same controller.
    let revision = repo.commit(
        "good again",
        &[
            ("deploy/kustomization.yaml", ""),
            ("deploy/leak.env", ""),
            ("deploy/a.yaml", &config_map("a", "3")),
        ],
    );
    assert_eq!(attempted(&ns, &revision).await.0, "Applied");
    assert_eq!(value(&ns, "a").await.as_deref(), Some("3"));
    let peak = memory_kib(controller.pid(), "VmHWM:");
    assert!(
        peak.saturating_sub(idle) < 64 * 1024,
        "peak RSS {peak} KiB, {} KiB above the idle {idle} KiB (limit 64 MiB)",
        peak.saturating_sub(idle)
    );
}

/// A condition of comprehensions nested `depth` deep: each level multiplied the time of the
/// unbounded evaluation by about four (11 levels took 4 s).
fn nested_condition(depth: usize) -> String {
    let names: Vec<String> = (0..depth).map(|i| format!("v{i}")).collect();
    let mut condition = "true".to_owned();
    for name in names.iter().rev() {
        condition = format!("result.all({name}, {condition})");
    }
    condition
}

/// The barrage: while tenant A's repository serves one hostile revision after
/// another and 1,000 webhook calls with bad signatures arrive, tenant B's canary, on the same
/// controller, walks every step. Each of A's revisions is refused with a named reason, the
/// controller never restarts, and its memory stays bounded.
#[tokio::test]
async fn tenant_b_releases_while_tenant_a_and_forged_webhooks_hammer_the_controller() {
    use support::app::{WeightLog, app, healthy_on, set_image};
    let ns = TestNamespace::new(&client().await, "barrage").await;
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook"},
            "stringData": {"token": "s3cret"}}),
    )
    .await;
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let secret = format!("{}/webhook", ns.name);
    let mut controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", &address, "--webhook-secret", &secret],
        &[("WEIR_TEST_LEAK", Path::new("leaked-from-weir"))],
    );

    // Tenant B: a Rollout at web:1.
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "1s"}},
        {"setWeight": 40}, {"pause": {"duration": "1s"}},
        {"setWeight": 60}, {"pause": {"duration": "1s"}},
        {"setWeight": 80}, {"pause": {"duration": "1s"}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;

    // Tenant A: a GitSync of its own repository, good at first.
    let repo = GitRepo::new(&ns.name);
    let good = repo.commit("good", &[("deploy/a.yaml", &config_map("a", "1"))]);
    support::app::apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"}),
    )
    .await;
    assert_eq!(attempted(&ns, &good).await.0, "Applied");
    let idle = memory_kib(controller.pid(), "VmRSS:");

    // The barrage begins: forged webhooks, then B's release, then A's revisions in turn.
    let forged = tokio::spawn(async move {
        let body = json!({"ref": "refs/heads/main", "repository": {"clone_url": "x"}}).to_string();
        let signature = weir::gitops::webhook::signature(b"guess", body.as_bytes());
        let mut refused = 0;
        for _ in 0..1_000 {
            let headers = [
                ("Content-Type", "application/json"),
                ("X-Hub-Signature-256", signature.as_str()),
            ];
            if let Some((401, _)) =
                support::http_request(port, "POST", "/hooks/git", &headers, &body).await
            {
                refused += 1;
            }
        }
        refused
    });
    let log = WeightLog::start(&ns);
    set_image(&ns, "web:2", &steps, &json!({})).await;

    let items = vec!["x"; 3_000].join(", ");
    let aliases = vec!["*a"; 3_000].join(", ");
    let bomb = format!(
        "{}x-anchor: &a [{items}]\nx-uses: [{aliases}]\n",
        config_map("bomb", "1")
    );
    let big = "#".repeat(50 << 20);
    let deep = format!(
        "apiVersion: weir.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: deep}}\nspec:\n  metrics:\n  - name: deep\n    successCondition: \"{}\"\n    provider: {{prometheus: {{query: up}}}}\n",
        nested_condition(20)
    );
    // Each revision: its subject, the files it writes (empty: deleted), what its refusal names.
    type Revision<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let revisions: [Revision; 5] = [
        (
            "alias bomb",
            vec![("deploy/bomb.yaml", bomb.as_str())],
            "--max-document-bytes",
        ),
        (
            "50 MB",
            vec![("deploy/bomb.yaml", ""), ("deploy/big.yaml", big.as_str())],
            "--max-file-bytes",
        ),
        (
            "remote base",
            vec![
                ("deploy/big.yaml", ""),
                (
                    "deploy/kustomization.yaml",
                    "resources:\n- a.yaml\n- https://example.com/remote.yaml\n",
                ),
            ],
            "spec.kustomize.allowRemote",
        ),
        (
            "envs generator",
            vec![
                (
                    "deploy/kustomization.yaml",
                    "resources:\n- a.yaml\nconfigMapGenerator:\n- name: leak\n  envs: [leak.env]\n",
                ),
                ("deploy/leak.env", "WEIR_TEST_LEAK\n"),
            ],
            // Built in the box: applied, with nothing of weir's environment (checked below).
            "",
        ),
        (
            "deeply nested condition",
            vec![
                ("deploy/kustomization.yaml", ""),
                ("deploy/leak.env", ""),
                ("deploy/deep.yaml", deep.as_str()),
            ],
            "AnalysisTemplate deep: spec.metrics[0].successCondition",
        ),
    ];
    for (subject, files, named) in &revisions {
        let revision = repo.commit(subject, files);
        let (reason, message) = attempted(&ns, &revision).await;
        if named.is_empty() {
            continue;
        }
        assert_eq!(reason, "RenderFailed", "{subject}: {message}");
        assert!(message.contains(named), "{subject}: {message}");
    }
    let leaked = leak_config_map(&ns).await;
    assert!(
        !leaked.values().any(|v| v.contains("leaked-from-weir")),
        "weir's environment reached the ConfigMap: {leaked:?}"
    );
    assert_eq!(
        value(&ns, "a").await.as_deref(),
        Some("1"),
        "nothing of A's refused revisions applied"
    );
    assert_eq!(
        forged.await.unwrap_or_default(),
        1_000,
        "every forged call refused"
    );

    // B's canary walked every step and completed, on the same controller.
    healthy_on(&ns, "web:2").await;
    let weights = log.weights();
    let mut steps_seen = weights.iter().filter(|w| [20, 40, 60, 80].contains(*w));
    for wanted in [20, 40, 60, 80] {
        assert!(
            steps_seen.any(|w| *w == wanted),
            "B's weight {wanted} in order: {weights:?}"
        );
    }
    assert!(
        controller.running(),
        "the controller never restarted (it is the process started at the beginning)"
    );
    let peak = memory_kib(controller.pid(), "VmHWM:");
    assert!(
        peak.saturating_sub(idle) < 64 * 1024,
        "peak RSS {peak} KiB, {} KiB above the idle {idle} KiB (limit 64 MiB)",
        peak.saturating_sub(idle)
    );
}
