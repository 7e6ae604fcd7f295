//! GitSync on the local control plane: real Git repositories on loopback (`file://` and
//! `git daemon`), a `weir controller` process, and what it applies read back from the API
//! server.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::app::LIMIT;
use support::git::{GitDaemon, GitRepo};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::contract::{GIT_REVISION_ANNOTATION, GITSYNC_ANNOTATION, SYNC_REQUEST_ANNOTATION};
use weir::api::gitsync::GitSync;

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

async fn git_sync(ns: &TestNamespace, url: &str, extra: serde_json::Value) {
    git_sync_named(ns, "app", url, extra).await;
}

async fn git_sync_named(ns: &TestNamespace, name: &str, url: &str, extra: serde_json::Value) {
    let mut spec =
        json!({"url": url, "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let object = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
        "metadata": {"name": name}, "spec": spec});
    ns.api::<GitSync>()
        .patch(
            name,
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the GitSync: {e}"));
}

/// Waits until the GitSync's Ready condition has `reason`, and returns the GitSync.
async fn ready_with(ns: &TestNamespace, reason: &str, revision: Option<&str>) -> GitSync {
    let api = ns.api::<GitSync>();
    eventually(&format!("GitSync Ready reason {reason}"), LIMIT, || async {
        let sync = api.get("app").await.ok()?;
        let status = sync.status.as_ref()?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        let at_revision =
            revision.is_none_or(|r| status.last_attempted_revision.as_deref() == Some(r));
        (ready.reason == reason && at_revision).then_some(sync)
    })
    .await
}

fn ready_message(sync: &GitSync) -> String {
    sync.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn value_of(ns: &TestNamespace, name: &str) -> Option<String> {
    let found = ns.api::<ConfigMap>().get_opt(name).await.ok()??;
    found.data?.get("value").cloned()
}

#[tokio::test]
async fn a_branch_is_applied_pruned_and_kept_from_drifting() {
    let ns = TestNamespace::new(&client().await, "gitsync-apply").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit(
        "two config maps",
        &[
            ("deploy/a.yaml", &config_map("a", "1")),
            ("deploy/nested/b.yaml", &config_map("b", "1")),
            ("other/c.yaml", &config_map("c", "1")),
        ],
    );
    let _controller = ControllerProcess::start(&ns.name);
    git_sync(&ns, &repo.file_url(), json!({})).await;

    let synced = ready_with(&ns, "Applied", Some(&first)).await;
    let status = synced.status.clone().unwrap_or_default();
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(status.inventory.len(), 2, "only what is under spec.path");
    assert_eq!(status.history[0].subject, "two config maps");
    let a = ns.api::<ConfigMap>().get("a").await.expect("a applied");
    let annotations = a.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(GIT_REVISION_ANNOTATION), Some(&first));
    assert_eq!(
        annotations.get(GITSYNC_ANNOTATION),
        Some(&format!("{}/app", ns.name))
    );
    assert_eq!(value_of(&ns, "c").await, None);

    // Drift: someone edits a by hand; the next interval puts Git's value back.
    ns.api::<ConfigMap>()
        .patch(
            "a",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a"}, "data": {"value": "edited"}})),
        )
        .await
        .expect("edit");
    eventually("the drift to be repaired", LIMIT, || async {
        (value_of(&ns, "a").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    // ... and says so, in an Event on the GitSync (which notifications can select).
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = ns.api();
    let said = eventually("a DriftRepaired Event", LIMIT, || async {
        let listed = events
            .list(&kube::api::ListParams::default().fields("reason=DriftRepaired"))
            .await
            .ok()?;
        listed.items.into_iter().find_map(|e| e.message)
    })
    .await;
    assert!(
        said.starts_with("1 object(s) of revision ")
            && said.ends_with("had drifted in the cluster and were applied again"),
        "{said}"
    );

    // A commit that changes a and removes b: a follows, b is pruned.
    let second = repo.commit(
        "change a, drop b",
        &[
            ("deploy/a.yaml", &config_map("a", "2")),
            ("deploy/nested/b.yaml", ""),
        ],
    );
    let synced = ready_with(&ns, "Applied", Some(&second)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("2"));
    eventually("b to be pruned", LIMIT, || async {
        value_of(&ns, "b").await.is_none().then_some(())
    })
    .await;
    let status = synced.status.unwrap_or_default();
    assert_eq!(status.inventory.len(), 1);
    let revisions: Vec<_> = status.history.iter().map(|h| h.revision.clone()).collect();
    assert_eq!(revisions, vec![first, second]);
}

#[tokio::test]
async fn a_malformed_manifest_applies_nothing_of_its_revision() {
    let ns = TestNamespace::new(&client().await, "gitsync-bad").await;
    let repo = GitRepo::new(&ns.name);
    let good = repo.commit("good", &[("deploy/a.yaml", &config_map("a", "1"))]);
    // A platform team's GitSync: its last revision brings a Namespace of its own.
    let _controller =
        ControllerProcess::start_unlocked(&ns.name, &["--allow-cross-namespace"], &[]);
    git_sync(&ns, &repo.file_url(), json!({})).await;
    ready_with(&ns, "Applied", Some(&good)).await;

    let bad = repo.commit(
        "half broken",
        &[
            ("deploy/a.yaml", &config_map("a", "2")),
            (
                "deploy/b.yaml",
                &format!(
                    "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{}}\n",
                    config_map("b", "1")
                ),
            ),
        ],
    );
    let failed = ready_with(&ns, "RenderFailed", Some(&bad)).await;
    let message = ready_message(&failed);
    assert!(
        message.contains("deploy/b.yaml (document 1): metadata.name is missing"),
        "{message}"
    );
    let status = failed.status.unwrap_or_default();
    assert_eq!(status.last_applied_revision.as_deref(), Some(good.as_str()));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert_eq!(
        value_of(&ns, "a").await.as_deref(),
        Some("1"),
        "nothing of the bad revision"
    );
    assert_eq!(value_of(&ns, "b").await, None);

    // An object the API server refuses fails the dry run: still nothing applied.
    let refused = repo.commit(
        "refused by the server",
        &[
            ("deploy/b.yaml", &config_map("b", "1")),
            (
                "deploy/c.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\n",
            ),
        ],
    );
    let failed = ready_with(&ns, "ApplyFailed", Some(&refused)).await;
    assert!(
        ready_message(&failed).contains("Not_A_Valid_Name"),
        "{}",
        ready_message(&failed)
    );
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));
    assert_eq!(value_of(&ns, "b").await, None);

    // A bad object in a Namespace the revision brings can only be checked once that
    // Namespace exists: the Namespace is applied, then the check fails, and none of the
    // revision's other objects is applied.
    let extra = format!("{}-extra", ns.name);
    let late = repo.commit(
        "bad object in a new namespace",
        &[
            ("deploy/a.yaml", &config_map("a", "3")),
            ("deploy/c.yaml", ""),
            (
                "deploy/n.yaml",
                &format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {extra}\n---\n\
                     apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Late_Bad_Name\n  namespace: {extra}\n"
                ),
            ),
        ],
    );
    let failed = ready_with(&ns, "ApplyFailed", Some(&late)).await;
    assert!(
        ready_message(&failed).contains("Late_Bad_Name"),
        "{}",
        ready_message(&failed)
    );
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));
    let inventory = failed.status.unwrap_or_default().inventory;
    assert!(
        inventory
            .iter()
            .any(|e| e.kind == "Namespace" && e.name == extra),
        "the Namespace that was applied is in the inventory: {inventory:?}"
    );
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&extra, &Default::default())
        .await;
}

#[tokio::test]
async fn an_unreachable_repository_is_fetch_failed() {
    let ns = TestNamespace::new(&client().await, "gitsync-down").await;
    let _controller = ControllerProcess::start(&ns.name);
    let port = support::free_port();
    git_sync(&ns, &format!("git://127.0.0.1:{port}/nothing"), json!({})).await;
    let failed = ready_with(&ns, "FetchFailed", None).await;
    let message = ready_message(&failed);
    assert!(
        message.starts_with("connecting to the repository"),
        "{message}"
    );
    assert!(
        failed.status.as_ref().is_some_and(|s| s
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "Retrying")),
        "a fetch that may work next time is still reconciling"
    );
    let status = failed.status.unwrap_or_default();
    assert!(status.inventory.is_empty() && status.last_applied_revision.is_none());
}

#[tokio::test]
async fn git_daemon_commits_are_applied_and_an_invalid_spec_is_reported() {
    let ns = TestNamespace::new(&client().await, "gitsync-daemon").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let daemon = GitDaemon::serve(&repo).await;
    let _controller = ControllerProcess::start(&ns.name);
    git_sync(&ns, &daemon.url(&repo), json!({})).await;
    ready_with(&ns, "Applied", Some(&first)).await;
    let second = repo.commit("second", &[("deploy/a.yaml", &config_map("a", "2"))]);
    ready_with(&ns, "Applied", Some(&second)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("2"));

    git_sync(&ns, &daemon.url(&repo), json!({"path": "../outside"})).await;
    let invalid = ready_with(&ns, "InvalidSpec", None).await;
    assert!(
        ready_message(&invalid).contains("spec.path"),
        "{}",
        ready_message(&invalid)
    );
}

fn signature(secret: &str, body: &str) -> String {
    weir::gitops::webhook::signature(secret.as_bytes(), body.as_bytes())
}

#[tokio::test]
async fn a_signed_push_webhook_syncs_at_once_and_nothing_else_does() {
    let ns = TestNamespace::new(&client().await, "gitsync-hook").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let daemon = GitDaemon::serve(&repo).await;
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook"},
            "stringData": {"token": "s3cret"}}),
    )
    .await;
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let secret = format!("{}/webhook", ns.name);
    let _controller = ControllerProcess::start_with(
        &ns.name,
        &["--metrics-addr", &address, "--webhook-secret", &secret],
    );
    // A long interval: within this test only the webhook can bring a new revision in.
    git_sync(&ns, &daemon.url(&repo), json!({"interval": "1h"})).await;
    ready_with(&ns, "Applied", Some(&first)).await;

    let second = repo.commit("second", &[("deploy/a.yaml", &config_map("a", "2"))]);
    let body = json!({"ref": "refs/heads/main", "after": second,
        "repository": {"clone_url": daemon.url(&repo), "html_url": "https://example.invalid/x"}})
    .to_string();
    let post = |headers: Vec<(&'static str, String)>, body: String| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        support::http_request(port, "POST", "/hooks/git", &headers, &body).await
    };
    let json_type = ("Content-Type", "application/json".to_owned());
    // Unsigned, signed with another secret, or a body changed after signing: 401.
    let refused = [
        (vec![json_type.clone()], body.clone()),
        (
            vec![
                json_type.clone(),
                ("X-Hub-Signature-256", signature("guess", &body)),
            ],
            body.clone(),
        ),
        (
            vec![
                json_type.clone(),
                ("X-Hub-Signature-256", signature("s3cret", &body)),
            ],
            body.replace("main", "evil"),
        ),
    ];
    for (headers, sent) in refused {
        let (code, answer) = post(headers, sent).await.expect("the webhook answers");
        assert_eq!(code, 401, "{answer}");
    }
    let sync = ns.api::<GitSync>().get("app").await.expect("GitSync");
    assert!(
        !sync
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(SYNC_REQUEST_ANNOTATION),
        "a refused call changes nothing"
    );
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));

    let sent = std::time::Instant::now();
    let (code, answer) = post(
        vec![
            json_type.clone(),
            ("X-GitHub-Event", "push".to_owned()),
            ("X-Hub-Signature-256", signature("s3cret", &body)),
        ],
        body.clone(),
    )
    .await
    .expect("the webhook answers");
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains(&format!("{}/app", ns.name)), "{answer}");
    let synced = ready_with(&ns, "Applied", Some(&second)).await;
    // Done-when figure for the GitSync issue: webhook call to the new revision applied
    // (read with --nocapture; not asserted).
    eprintln!(
        "webhook to revision applied: {} ms",
        sent.elapsed().as_millis()
    );
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("2"));
    let handled = synced
        .status
        .and_then(|s| s.last_handled_sync_request)
        .expect("the request is recorded as handled");
    let requested = synced
        .metadata
        .annotations
        .unwrap_or_default()
        .get(SYNC_REQUEST_ANNOTATION)
        .cloned();
    assert_eq!(Some(handled), requested);

    // GitHub's ping when the hook is created.
    let ping = "{\"zen\":\"Keep it logically awesome.\"}".to_owned();
    let (code, _) = post(
        vec![
            ("X-GitHub-Event", "ping".to_owned()),
            ("X-Hub-Signature-256", signature("s3cret", &ping)),
        ],
        ping,
    )
    .await
    .expect("the webhook answers");
    assert_eq!(code, 200);
}

/// `weir_webhook_requests_total{outcome}` as the controller's /metrics says.
async fn webhook_count(metrics_port: u16, outcome: &str) -> u64 {
    support::outcome_count(metrics_port, "weir_webhook_requests_total", outcome)
        .await
        .expect("the metrics answer")
}

#[tokio::test]
async fn a_webhook_on_its_own_port_refuses_bad_signatures_and_acts_on_a_delivery_once() {
    let ns = TestNamespace::new(&client().await, "gitsync-hook-once").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let daemon = GitDaemon::serve(&repo).await;
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook"},
            "stringData": {"token": "s3cret"}}),
    )
    .await;
    let (metrics_port, hook_port) = (support::free_port(), support::free_port());
    let (metrics_addr, hook_addr) = (
        format!("127.0.0.1:{metrics_port}"),
        format!("127.0.0.1:{hook_port}"),
    );
    let secret = format!("{}/webhook", ns.name);
    let _controller = ControllerProcess::start_with(
        &ns.name,
        &[
            "--metrics-addr",
            &metrics_addr,
            "--webhook-addr",
            &hook_addr,
            "--webhook-secret",
            &secret,
        ],
    );
    support::listening("the webhook", hook_port).await;
    git_sync(&ns, &daemon.url(&repo), json!({"interval": "1h"})).await;
    ready_with(&ns, "Applied", Some(&first)).await;

    let second = repo.commit("second", &[("deploy/a.yaml", &config_map("a", "2"))]);
    let body = json!({"ref": "refs/heads/main", "after": second,
        "repository": {"clone_url": daemon.url(&repo)}})
    .to_string();
    let post = |port: u16, headers: Vec<(&'static str, String)>, body: String| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        support::http_request(port, "POST", "/hooks/git", &headers, &body).await
    };
    let signed = |delivery: &str| {
        vec![
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", signature("s3cret", &body)),
        ]
    };
    let (code, _) = post(metrics_port, signed("d-0"), body.clone())
        .await
        .expect("the metrics port answers");
    assert_eq!(
        code, 404,
        "with --webhook-addr the metrics port serves no webhook"
    );

    for n in 0..1_000 {
        let forged = vec![
            ("X-GitHub-Delivery", format!("forged-{n}")),
            (
                "X-Hub-Signature-256",
                signature(&format!("guess-{n}"), &body),
            ),
        ];
        let (code, answer) = post(hook_port, forged, body.clone())
            .await
            .expect("the webhook answers");
        assert_eq!(code, 401, "{answer}");
    }
    assert_eq!(webhook_count(metrics_port, "bad_signature").await, 1_000);
    let untouched = ns.api::<GitSync>().get("app").await.expect("GitSync");
    assert!(
        !untouched
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(SYNC_REQUEST_ANNOTATION),
        "a refused call changes nothing"
    );

    // The Secret's watch may not have listed it in the first moments: 503 until it has.
    let (code, answer) = eventually("the webhook to know its token", LIMIT, || async {
        post(hook_port, signed("d-1"), body.clone())
            .await
            .filter(|(code, _)| *code != 503)
    })
    .await;
    assert_eq!(code, 202, "{answer}");
    let synced = ready_with(&ns, "Applied", Some(&second)).await;
    let requested = synced
        .metadata
        .annotations
        .unwrap_or_default()
        .get(SYNC_REQUEST_ANNOTATION)
        .cloned()
        .expect("the sync request");

    // The same delivery again, and the same signed body under a new id: acted on no more.
    for delivery in ["d-1", "d-2"] {
        let (code, answer) = post(hook_port, signed(delivery), body.clone())
            .await
            .expect("the webhook answers");
        assert_eq!(code, 200, "{answer}");
        assert!(answer.contains("already handled"), "{answer}");
    }
    assert_eq!(webhook_count(metrics_port, "replay").await, 2);
    assert_eq!(webhook_count(metrics_port, "sync_requested").await, 1);
    let after = ns.api::<GitSync>().get("app").await.expect("GitSync");
    assert_eq!(
        after
            .metadata
            .annotations
            .unwrap_or_default()
            .get(SYNC_REQUEST_ANNOTATION),
        Some(&requested),
        "a replay asks for no sync"
    );
}

/// The application of the Rollout tests, as a user keeps it in Git: two Services, an
/// HTTPRoute between them (no weights: those are the rollout engine's), and the Rollout.
fn app_in_git(image: &str) -> String {
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let mut documents = support::app::routing();
    documents.push(support::app::rollout(image, steps, json!({})));
    support::app::yaml_stream(&documents)
}

async fn route_hostnames(ns: &TestNamespace) -> Vec<String> {
    let route = ns
        .api::<gateway_api::apis::standard::httproutes::HttpRoute>()
        .get("web")
        .await
        .expect("the route");
    route.spec.hostnames.unwrap_or_default()
}

#[tokio::test]
async fn a_new_revision_starts_a_canary_and_sync_and_rollout_never_undo_each_other() {
    use support::app::{WeightLog, healthy_on, phase, service_hash, status_patch, wait_for};
    use weir::api::rollout::RolloutPhase;

    let ns = TestNamespace::new(&client().await, "gitsync-canary").await;
    let repo = GitRepo::new(&ns.name);
    let r1 = repo.commit("web 1", &[("deploy/app.yaml", &app_in_git("web:1"))]);
    let port = support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let _controller = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &metrics]);
    git_sync(&ns, &repo.file_url(), json!({})).await;
    let first = healthy_on(&ns, "web:1").await;
    let revisions = |r: &weir::api::Rollout| {
        r.status.as_ref().map(|s| {
            (
                s.stable_revision.clone().unwrap_or_default(),
                s.canary_revision.clone().unwrap_or_default(),
            )
        })
    };
    assert_eq!(revisions(&first), Some((r1.clone(), r1.clone())));
    let v1 = first.status.and_then(|s| s.stable_rs).expect("stable hash");
    let weights = WeightLog::start(&ns);

    let second = repo.commit("web 2", &[("deploy/app.yaml", &app_in_git("web:2"))]);
    ready_with(&ns, "Applied", Some(&second)).await;
    let paused = wait_for(&ns, "the canary paused at 20%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(20)
    })
    .await;
    assert_eq!(
        revisions(&paused),
        Some((r1.clone(), second.clone())),
        "the canary is the new revision's, the stable the old one's"
    );
    let v2 = paused
        .status
        .and_then(|s| s.canary_rs)
        .expect("canary hash");

    // The sync goes on applying the route every second (shown by a hand edit being
    // repaired), and the weights and selectors the rollout set stay as they are.
    ns.api::<gateway_api::apis::standard::httproutes::HttpRoute>()
        .patch(
            "web",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&json!({"apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute", "metadata": {"name": "web"},
                "spec": {"hostnames": ["edited.example"]}})),
        )
        .await
        .expect("hand edit");
    eventually("the hand edit to be repaired", LIMIT, || async {
        (route_hostnames(&ns).await == ["shop.example"]).then_some(())
    })
    .await;
    // Three more sync intervals with the canary held at 20%: the route's live weights are
    // what its apply would send, so nothing is applied.
    // (The repair's own apply is counted when its sync ends: one interval later.)
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let applied = support::gitops::gitsync_objects(port, "applied").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        support::gitops::gitsync_objects(port, "applied").await,
        applied,
        "an unchanged revision mid-canary sends no apply, the route's included"
    );
    assert_eq!(
        weights.states(),
        vec![Some(0), Some(20)],
        "Git never moved or dropped the weights"
    );
    assert_eq!(
        service_hash(&ns, "web-stable").await.as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(
        service_hash(&ns, "web-canary").await.as_deref(),
        Some(v2.as_str())
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    let promoted = healthy_on(&ns, "web:2").await;
    assert_eq!(revisions(&promoted), Some((second.clone(), second.clone())));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        weights.states(),
        vec![Some(0), Some(20), Some(100), Some(0)],
        "every weight the route carried, in order"
    );
    assert_eq!(
        service_hash(&ns, "web-stable").await.as_deref(),
        Some(v2.as_str())
    );
    let sync = ready_with(&ns, "Applied", Some(&second)).await;
    assert_eq!(
        sync.status.and_then(|s| s.last_applied_revision).as_deref(),
        Some(second.as_str())
    );
}

#[tokio::test]
async fn a_kustomization_is_built_with_its_bases_and_a_broken_one_applies_nothing() {
    let ns = TestNamespace::new(&client().await, "gitsync-kustomize").await;
    let repo = GitRepo::new(&ns.name);
    let good = repo.commit(
        "base and overlay",
        &[
            ("base/a.yaml", &config_map("a", "1")),
            ("base/kustomization.yaml", "resources:\n- a.yaml\n"),
            (
                "overlays/prod/kustomization.yaml",
                "resources:\n- ../../base\nnamePrefix: prod-\n",
            ),
        ],
    );
    let _controller = ControllerProcess::start(&ns.name);
    git_sync(&ns, &repo.file_url(), json!({"path": "overlays/prod"})).await;
    let synced = ready_with(&ns, "Applied", Some(&good)).await;
    assert_eq!(value_of(&ns, "prod-a").await.as_deref(), Some("1"));
    assert_eq!(
        value_of(&ns, "a").await,
        None,
        "only what the overlay builds"
    );
    let inventory = synced.status.unwrap_or_default().inventory;
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].name, "prod-a");

    let broken = repo.commit(
        "base names a file that is not there",
        &[
            ("base/a.yaml", &config_map("a", "2")),
            (
                "base/kustomization.yaml",
                "resources:\n- a.yaml\n- missing.yaml\n",
            ),
        ],
    );
    let failed = ready_with(&ns, "RenderFailed", Some(&broken)).await;
    let message = ready_message(&failed);
    assert!(
        message.contains("overlays/prod/kustomization.yaml")
            && message.contains("missing.yaml")
            && !message.contains("weir-kustomize-"),
        "names the kustomization and the missing file, not the work tree: {message}"
    );
    assert_eq!(
        value_of(&ns, "prod-a").await.as_deref(),
        Some("1"),
        "nothing of the broken revision"
    );
}

#[tokio::test]
async fn ssh_uses_the_secrets_key_and_refuses_any_host_key_it_was_not_given() {
    use support::git::SshServer;
    let ns = TestNamespace::new(&client().await, "gitsync-ssh").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let sshd = SshServer::serve(&ns.name).await;
    let _controller = ControllerProcess::start(&ns.name);

    // Without a Secret: refused before connecting.
    git_sync(&ns, &sshd.url(&repo), json!({})).await;
    let failed = ready_with(&ns, "FetchFailed", None).await;
    assert!(
        ready_message(&failed).contains("known_hosts"),
        "{}",
        ready_message(&failed)
    );

    // Someone else's host key at the server's address: refused, nothing applied, and no
    // key material in what weir says.
    let secret = |known_hosts: String| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-ssh"},
            "stringData": {"identity": sshd.client_key(), "known_hosts": known_hosts}})
    };
    support::app::apply(&ns, secret(sshd.impostor_known_hosts())).await;
    git_sync(
        &ns,
        &sshd.url(&repo),
        json!({"secretRef": {"name": "git-ssh"}}),
    )
    .await;
    let refused = eventually("the host key to be refused", LIMIT, || async {
        let sync = ns.api::<GitSync>().get("app").await.ok()?;
        let message = ready_message(&sync);
        message
            .to_lowercase()
            .contains("host key verification failed")
            .then_some(message)
    })
    .await;
    // A line from the middle of the key, not just its PEM armour.
    let key = sshd.client_key();
    let key_line = key
        .lines()
        .nth(2)
        .expect("an OpenSSH private key has a body")
        .to_owned();
    assert!(!refused.contains(&key_line), "{refused}");
    assert_eq!(value_of(&ns, "a").await, None);

    // The server's own host key: fetched with the Secret's key and applied.
    support::app::apply(&ns, secret(sshd.known_hosts())).await;
    let synced = ready_with(&ns, "Applied", Some(&first)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));
    let everything = format!(
        "{}{}{}",
        serde_json::to_string(&synced.status).unwrap_or_default(),
        events_of(&ns).await,
        ControllerProcess::log(&ns.name)
    );
    assert!(
        everything.contains("Host key verification failed") && !everything.contains(&key_line),
        "no key material in status, Events or the log"
    );
}

/// Every Event message in the namespace, one per line.
async fn events_of(ns: &TestNamespace) -> String {
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&Default::default())
        .await
        .expect("events");
    events
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn credentials_secret(ns: &TestNamespace, data: serde_json::Value) {
    support::app::apply(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-http"},
            "stringData": data}),
    )
    .await;
}

#[tokio::test]
async fn https_basic_auth_comes_from_the_secret_and_never_shows() {
    use support::git::GitHttpServer;
    let ns = TestNamespace::new(&client().await, "gitsync-basic").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let server = GitHttpServer::serve(&repo, "ci", "correct-horse", true).await;
    let certificate = server
        .certificate()
        .expect("a TLS server has a certificate");
    let _controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("SSL_CERT_FILE", &certificate)],
    );

    credentials_secret(&ns, json!({"username": "ci", "password": "wrong-battery"})).await;
    git_sync(
        &ns,
        &server.url(&repo),
        json!({"secretRef": {"name": "git-http"}}),
    )
    .await;
    let refused = ready_with(&ns, "FetchFailed", None).await;
    let message = ready_message(&refused);
    assert!(
        message.contains("401") || message.to_lowercase().contains("auth"),
        "says the server refused the credentials: {message}"
    );
    assert!(
        !message.contains("wrong-battery") && !message.contains("correct-horse"),
        "{message}"
    );
    assert_eq!(value_of(&ns, "a").await, None);

    credentials_secret(&ns, json!({"username": "ci", "password": "correct-horse"})).await;
    let synced = ready_with(&ns, "Applied", Some(&first)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));
    let everything = format!(
        "{}{}",
        serde_json::to_string(&synced).unwrap_or_default(),
        events_of(&ns).await
    );
    assert!(
        !everything.contains("correct-horse") && !everything.contains("wrong-battery"),
        "no password in status or Events"
    );
    let log = ControllerProcess::log(&ns.name);
    assert!(
        log.contains("FetchFailed")
            && !log.contains("correct-horse")
            && !log.contains("wrong-battery"),
        "the controller logged the failure, and no password"
    );
}

#[tokio::test]
async fn https_trusts_only_what_the_controller_trusts() {
    use support::git::GitHttpServer;
    let ns = TestNamespace::new(&client().await, "gitsync-https").await;
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    let server = GitHttpServer::serve(
        &repo,
        weir::gitops::credentials::TOKEN_USERNAME,
        "token-123",
        true,
    )
    .await;
    credentials_secret(&ns, json!({"password": "token-123"})).await;

    // A self-signed certificate nobody told the controller about: refused.
    let untrusting = ControllerProcess::start(&ns.name);
    git_sync(
        &ns,
        &server.url(&repo),
        json!({"secretRef": {"name": "git-http"}}),
    )
    .await;
    let refused = ready_with(&ns, "FetchFailed", None).await;
    assert!(
        ready_message(&refused)
            .to_lowercase()
            .contains("certificate"),
        "{}",
        ready_message(&refused)
    );
    assert_eq!(value_of(&ns, "a").await, None);
    drop(untrusting);

    // The same certificate given to the controller as its trust store: fetched with the
    // token (and the username weir sends with a bare token).
    let certificate = server
        .certificate()
        .expect("a TLS server has a certificate");
    let _trusting = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("SSL_CERT_FILE", &certificate)],
    );
    ready_with(&ns, "Applied", Some(&first)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_remote_that_never_answers_is_abandoned_and_blocks_no_one() {
    let ns = TestNamespace::new(&client().await, "gitsync-stuck").await;
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("port").port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            connections.push(connection);
        }
    });
    let repo = GitRepo::new(&ns.name);
    let first = repo.commit("first", &[("deploy/a.yaml", &config_map("a", "1"))]);
    // One fetch at a time, so the silent remote holds the only slot until its timeout.
    let _controller = ControllerProcess::start_with(
        &ns.name,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--max-concurrent-fetches",
            "1",
            "--fetch-timeout",
            "2s",
        ],
    );
    git_sync_named(
        &ns,
        "silent",
        &format!("git://127.0.0.1:{port}/repo"),
        json!({}),
    )
    .await;
    git_sync(&ns, &repo.file_url(), json!({})).await;

    ready_with(&ns, "Applied", Some(&first)).await;
    let api = ns.api::<GitSync>();
    let stuck = eventually("the silent remote to be abandoned", LIMIT, || async {
        let sync = api.get("silent").await.ok()?;
        let message = ready_message(&sync);
        message
            .contains("did not answer within 2s")
            .then_some(message)
    })
    .await;
    assert!(stuck.contains("--fetch-timeout"), "{stuck}");
    // The silent remote keeps failing; the other GitSync keeps syncing.
    let second = repo.commit("second", &[("deploy/a.yaml", &config_map("a", "2"))]);
    ready_with(&ns, "Applied", Some(&second)).await;
    assert_eq!(value_of(&ns, "a").await.as_deref(), Some("2"));
    let silent = api.get("silent").await.expect("silent GitSync");
    assert!(
        silent
            .status
            .is_some_and(|s| s.last_attempted_revision.is_none() && s.inventory.is_empty())
    );
    // The abandoned fetch's socket times out too, so the silent remote is tried again (it
    // would answer if it recovered) instead of holding its GitSync for good.
    eventually("the silent remote to be tried again", LIMIT, || async {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    held.abort();
}

#[tokio::test]
async fn a_revision_brings_its_namespace_and_crd_and_suspend_holds_everything() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    let ns = TestNamespace::new(&client().await, "gitsync-crd").await;
    let group = format!("{}.weir.test", ns.name);
    let extra = format!("{}-extra", ns.name);
    // JSON is YAML.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
    .to_string();
    let in_extra =
        |text: String| text.replace("metadata:\n", &format!("metadata:\n  namespace: {extra}\n"));
    let widget = in_extra(format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: 3\n"
    ));
    let files = |value: &str| {
        vec![
            // Git's order is the wrong way round on purpose: weir applies Namespaces, then
            // CRDs, then the rest.
            ("deploy/1-widget.yaml".to_owned(), widget.clone()),
            (
                "deploy/2-config.yaml".to_owned(),
                in_extra(config_map("c", value)),
            ),
            ("deploy/3-crd.yaml".to_owned(), crd.clone()),
            (
                "deploy/4-namespace.yaml".to_owned(),
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {extra}\n"),
            ),
        ]
    };
    let repo = GitRepo::new(&ns.name);
    let commit = |subject: &str, files: Vec<(String, String)>| {
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        repo.commit(subject, &borrowed)
    };
    let first = commit("namespace, CRD and objects", files("1"));
    // A platform team's GitSync: cluster-scoped kinds and another namespace.
    let _controller =
        ControllerProcess::start_unlocked(&ns.name, &["--allow-cross-namespace"], &[]);
    git_sync(&ns, &repo.file_url(), json!({})).await;
    let synced = ready_with(&ns, "Applied", Some(&first)).await;
    assert_eq!(synced.status.unwrap_or_default().inventory.len(), 4);
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Widget"),
        "widgets",
    );
    let widgets: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(ns.client.clone(), &extra, &resource);
    let applied = widgets.get("w").await.expect("the Widget");
    assert_eq!(applied.data["spec"]["size"], 3);
    let configs = kube::Api::<ConfigMap>::namespaced(ns.client.clone(), &extra);
    let value = || async {
        configs
            .get_opt("c")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data?.get("value").cloned())
    };
    assert_eq!(value().await.as_deref(), Some("1"));

    // Suspended: a new revision waits, however many intervals pass.
    git_sync(&ns, &repo.file_url(), json!({"suspend": true})).await;
    let held = commit("while suspended", files("2"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(value().await.as_deref(), Some("1"));
    let sync = ns.api::<GitSync>().get("app").await.expect("GitSync");
    assert_eq!(
        sync.status.and_then(|s| s.last_attempted_revision),
        Some(first.clone())
    );
    git_sync(&ns, &repo.file_url(), json!({"suspend": false})).await;
    ready_with(&ns, "Applied", Some(&held)).await;
    assert_eq!(value().await.as_deref(), Some("2"));

    // Everything leaves Git: the objects, the CRD and the Namespace are pruned.
    let empty = commit(
        "nothing left",
        files("2")
            .into_iter()
            .map(|(path, _)| (path, String::new()))
            .chain([("deploy/keep.txt".to_owned(), "x".to_owned())])
            .collect(),
    );
    let emptied = ready_with(&ns, "Applied", Some(&empty)).await;
    assert!(emptied.status.unwrap_or_default().inventory.is_empty());
    let crds = kube::Api::<CustomResourceDefinition>::all(ns.client.clone());
    let namespaces = kube::Api::<Namespace>::all(ns.client.clone());
    eventually("the CRD and the Namespace to go", LIMIT, || async {
        let crd_gone = crds
            .get_opt(&format!("widgets.{group}"))
            .await
            .ok()?
            .is_none();
        let namespace_going = namespaces
            .get_opt(&extra)
            .await
            .ok()?
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
        (crd_gone && namespace_going).then_some(())
    })
    .await;
}
