//! Notifications on the local control plane: a real HTTP receiver in the test records what
//! weir's controller sends while a GitOps application's bad revision is caught, rejected and
//! reverted; the receiver can answer 500 for a while, or never answer at all.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::app::{LIMIT, healthy_on, wait_for};
use support::git::{GitDaemon, GitRepo};
use support::gitops::{commit_with, git_sync_every, sync_where, version_rates};
use support::{ControllerProcess, TestNamespace, client, eventually, prometheus_url};
use weir::api::notification::{NotificationRule, Notifier};
use weir::api::rollout::RolloutPhase;

const KEY: &str = "a shared secret for signatures";

/// What the receiver was sent, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    body: Value,
    signature: Option<String>,
    delivery: Option<String>,
    answered: u16,
}

/// An HTTP receiver on loopback that answers 500 to its first `failing` requests, then 200
/// to one, then 500 again until it is released (so the test knows a message waits).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    released: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(failing: usize) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicBool::new(false));
        let (sink, open) = (got.clone(), released.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (sink, seen, open) = (sink.clone(), seen.clone(), open.clone());
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let answered = if n < failing || (n > failing && !open.load(Ordering::SeqCst)) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let received = Received {
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        signature: header("x-signature").map(|s| {
                            // Checked here, against the very bytes sent.
                            let expected = weir::notify::message::signature(KEY.as_bytes(), &body);
                            if s == expected { s } else { format!("BAD {s}") }
                        }),
                        delivery: header("x-weir-delivery"),
                        answered: answered.as_u16(),
                    };
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(received);
                    answered
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the receiver: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            port,
            got,
            released,
            task,
        }
    }

    /// From now on every request is answered 200.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn accepted(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.answered == 200)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One commit status set: the request's path, its Authorization header, its body.
type StatusSet = (String, Option<String>, Value);

/// A Git host's commit status API on loopback: records each status set (its path, the
/// Authorization header and the body) and answers 201, as GitHub does.
struct GitHost {
    port: u16,
    statuses: Arc<Mutex<Vec<StatusSet>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GitHost {
    async fn start() -> GitHost {
        let statuses: Arc<Mutex<Vec<StatusSet>>> = Arc::default();
        let sink = statuses.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push((
                        uri.path().to_owned(),
                        auth,
                        body,
                    ));
                    StatusCode::CREATED
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the Git host: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitHost {
            port,
            statuses,
            task,
        }
    }

    fn statuses(&self) -> Vec<StatusSet> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for GitHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn create<K>(ns: &TestNamespace, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ns.api::<K>()
        .patch(
            &name,
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

/// A generic, signed Notifier `hook` to `address`, and a rule sending it `reasons` of every
/// Rollout and GitSync in the namespace.
async fn notify(ns: &TestNamespace, address: &str, reasons: &[&str]) {
    create::<k8s_openapi::api::core::v1::Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"},
            "stringData": {"token": KEY}}),
    )
    .await;
    create::<Notifier>(
        ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Notifier", "metadata": {"name": "hook"},
            "spec": {"type": "generic", "address": address, "secretRef": {"name": "hook"}}}),
    )
    .await;
    create::<NotificationRule>(
        ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "NotificationRule",
            "metadata": {"name": "releases"},
            "spec": {"notifierRef": {"name": "hook"},
                "eventSources": [{"kind": "Rollout"}, {"kind": "GitSync"}],
                "reasons": reasons}}),
    )
    .await;
}

fn analysed(version: &str) -> Value {
    json!([{"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "success-rate"}],
                      "args": [{"name": "version", "value": version}]}},
        {"setWeight": 60}])
}

fn reasons_of(received: &[Received]) -> Vec<String> {
    let mut reasons: Vec<String> = received
        .iter()
        .map(|r| r.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    reasons.sort();
    reasons
}

#[tokio::test]
async fn a_failed_canary_is_told_once_each_signed_across_a_restart_and_an_outage() {
    let ns = TestNamespace::new(&client().await, "notify").await;
    let (_metrics, _target) = version_rates(&ns).await;
    // The receiver is down for its first two requests.
    let receiver = Receiver::start(2).await;
    let repo = GitRepo::new(&ns.name);
    repo.accept_pushes();
    let daemon = GitDaemon::serve(&repo).await;
    let v1 = commit_with(&repo, &ns, 1, analysed("web:1"), &[]);
    let start =
        || ControllerProcess::start_with(&ns.name, &["--prometheus-url", &prometheus_url()]);
    let controller = start();
    git_sync_every(&ns, &daemon.url(&repo), true, "1s").await;
    healthy_on(&ns, "web:1").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let address = format!("http://127.0.0.1:{}/hook", receiver.port);
    notify(
        &ns,
        &address,
        &["AnalysisFailed", "Aborted", "Rejected", "Pushed"],
    )
    .await;
    // The rule says it is valid and its Notifier there.
    eventually("the rule Ready", LIMIT, || async {
        let rule = ns.api::<NotificationRule>().get("releases").await.ok()?;
        let conditions = rule.status?.conditions;
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    // And the rejected revision's commit status, on a GitHub Enterprise-style host.
    let git_host = GitHost::start().await;
    create::<k8s_openapi::api::core::v1::Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-host"},
            "stringData": {"token": "t0k3n"}}),
    )
    .await;
    create::<Notifier>(
        &ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Notifier", "metadata": {"name": "statuses"},
            "spec": {"type": "github", "address": format!("http://127.0.0.1:{}/acme/shop", git_host.port),
                "secretRef": {"name": "git-host"}}}),
    )
    .await;
    create::<NotificationRule>(
        &ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "NotificationRule",
            "metadata": {"name": "statuses"},
            "spec": {"notifierRef": {"name": "statuses"}, "eventSources": [{"kind": "GitSync"}],
                "reasons": ["Rejected"]}}),
    )
    .await;

    // v3 is bad: its analysis fails, the canary is aborted, the revision rejected and
    // reverted in Git.
    let v3 = commit_with(&repo, &ns, 3, analysed("web:3"), &[]);
    // One message accepted, and the next one tried (and refused) after it.
    eventually(
        "a message accepted and the next one waiting",
        LIMIT,
        || async {
            let all = receiver.all();
            let first = all.iter().position(|r| r.answered == 200)?;
            all[first + 1..]
                .iter()
                .any(|r| r.answered == 500)
                .then_some(())
        },
    )
    .await;
    // Killed between two messages, and started again: none lost, none repeated.
    controller.kill();
    assert_eq!(receiver.accepted().len(), 1);
    receiver.release();
    let _controller = start();
    eventually("all four messages accepted", LIMIT * 2, || async {
        (reasons_of(&receiver.accepted()) == ["Aborted", "AnalysisFailed", "Pushed", "Rejected"])
            .then_some(())
    })
    .await;
    // Time for a duplicate to show, if one were coming.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let accepted = receiver.accepted();
    assert_eq!(
        reasons_of(&accepted),
        ["Aborted", "AnalysisFailed", "Pushed", "Rejected"],
        "exactly one of each: {accepted:#?}"
    );
    for message in &accepted {
        let signature = message.signature.clone().unwrap_or_default();
        assert!(
            signature.starts_with("sha256="),
            "signed with the Secret's token: {signature}"
        );
        assert_eq!(message.delivery.as_deref(), message.body["id"].as_str());
        assert!(
            message.body["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&ns.name)),
            "{message:?}"
        );
    }
    // Every message refused with a 500 was sent again until accepted.
    let refused: std::collections::BTreeSet<String> = receiver
        .all()
        .iter()
        .filter(|r| r.answered == 500)
        .filter_map(|r| r.delivery.clone())
        .collect();
    let delivered: std::collections::BTreeSet<String> =
        accepted.iter().filter_map(|r| r.delivery.clone()).collect();
    assert!(
        refused.len() >= 2 && refused.is_subset(&delivered),
        "{refused:?} {delivered:?}"
    );
    let statuses = eventually("the rejected revision's commit status", LIMIT, || async {
        let statuses = git_host.statuses();
        (!statuses.is_empty()).then_some(statuses)
    })
    .await;
    let (path, auth, body) = &statuses[0];
    assert_eq!(path, &format!("/api/v3/repos/acme/shop/statuses/{v3}"));
    assert_eq!(auth.as_deref(), Some("Bearer t0k3n"));
    assert_eq!(body["state"], "failure");
    assert_eq!(body["context"], format!("weir/gitsync/{}/app", ns.name));
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let notifier = ns
        .api::<Notifier>()
        .get("hook")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = notifier.status.unwrap_or_default();
    assert!(status.delivered.len() >= 4, "{status:?}");
    assert!(
        !format!("{status:?}").contains(KEY),
        "the key never reaches the status"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_no_canary() {
    let ns = TestNamespace::new(&client().await, "notify-silent").await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = silent.local_addr().map(|a| a.port()).unwrap_or(0);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let _controller = ControllerProcess::start(&ns.name);
    support::app::app(&ns).await;
    notify(&ns, &format!("http://127.0.0.1:{port}/hook"), &[]).await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 60},
        {"pause": {"duration": "1s"}}]);
    support::app::set_image(&ns, "web:1", &steps, &json!({})).await;
    healthy_on(&ns, "web:1").await;
    support::app::set_image(&ns, "web:2", &steps, &json!({})).await;
    // The canary walks every step while its messages wait on the silent receiver.
    let done = wait_for(&ns, "web:2 through its steps", |r| {
        support::app::phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(4)
    })
    .await;
    assert_eq!(support::app::phase(&done), Some(RolloutPhase::Healthy));
    let notifier = eventually(
        "the Notifier to say it is not delivering",
        LIMIT,
        || async {
            let notifier = ns.api::<Notifier>().get("hook").await.ok()?;
            let status = notifier.status.clone().unwrap_or_default();
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .map(|c| c.message.clone())
        },
    )
    .await;
    assert!(notifier.contains("no answer within 10s"), "{notifier}");
    assert!(
        !notifier.contains("/hook"),
        "the address' path is not shown: {notifier}"
    );
    held.abort();
}
