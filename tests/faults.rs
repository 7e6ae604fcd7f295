//! Faults of the control plane, injected through `hack/local-cluster.sh restart|pause`:
//! after each one weir goes on as if nothing had happened.
//!
//! One test binary, its scenarios one after another (`ONE_AT_A_TIME`): a restarted API
//! server is an outage for every test running at that moment (cargo runs test binaries one
//! at a time, so no other binary's tests see it). Each scenario ends by restarting
//! kube-controller-manager, whose informers take up to a minute to recover on their own.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::app::{WeightLog, app, healthy_on, set_image, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, repo_root};
use weir::api::Rollout;

/// Faults are for the whole cluster: one scenario at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `hack/local-cluster.sh ARGS`; returns when it has (a restarted part is ready).
fn cluster(args: &[&str]) {
    let status = Command::new(repo_root().join("hack/local-cluster.sh"))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running hack/local-cluster.sh {args:?}: {e}"));
    assert!(status.success(), "hack/local-cluster.sh {args:?}: {status}");
}

fn hash_of(image: &str) -> String {
    weir::rollout::template_hash::of(
        &serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}}))
        .unwrap_or_else(|e| panic!("template: {e}")),
    )
}

/// How many times the restart scenario runs (`WEIR_FAULT_RUNS`, default 20).
fn runs() -> usize {
    std::env::var("WEIR_FAULT_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

#[tokio::test]
async fn after_an_api_server_restart_a_template_change_starts_its_canary() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let ns = TestNamespace::new(&client().await, "fault-restart").await;
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    set_image(&ns, "web:0", &steps, &json!({})).await;
    let _controller = ControllerProcess::start(&ns.name);
    healthy_on(&ns, "web:0").await;
    for run in 1..=runs() {
        cluster(&["restart", "kube-apiserver"]);
        let ready = Instant::now();
        // A fresh client: the test's own pooled connections died with the API server.
        let client = client().await;
        let image = format!("web:{run}");
        let rollout = support::app::rollout(&image, steps.clone(), json!({}));
        Api::<Rollout>::namespaced(client.clone(), &ns.name)
            .patch(
                "web",
                &PatchParams::apply("weir-test").force(),
                &Patch::Apply(&rollout),
            )
            .await
            .unwrap_or_else(|e| panic!("run {run}: changing the template: {e}"));
        let name = format!("web-{}", hash_of(&image));
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client, &ns.name);
        eventually(
            &format!("run {run}: the canary ReplicaSet {name} after the API server's restart"),
            Duration::from_secs(10).saturating_sub(ready.elapsed()),
            || async { replica_sets.get_opt(&name).await.ok().flatten() },
        )
        .await;
        eprintln!(
            "run {run}: canary {name} {:?} after the API server was ready",
            ready.elapsed()
        );
    }
    // kube-controller-manager recovers from many restarts in a row only after its own
    // backoff (up to a minute); the tests after this one need it at once.
    cluster(&["restart", "kube-controller-manager"]);
}

/// What a release ended as, and every canary weight the route was seen to carry.
#[derive(Debug, PartialEq)]
struct Ending {
    weights: Vec<i32>,
    stable: Option<String>,
    aborted: bool,
    abort_events: usize,
}

/// A release of `web:2` through two weights and timed pauses, with `fault` injected once the
/// canary carries its first weight.
async fn release(test: &str, fault: impl FnOnce()) -> Ending {
    let ns = TestNamespace::new(&client().await, test).await;
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "3s"}},
        {"setWeight": 60}, {"pause": {"duration": "3s"}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    let _controller = ControllerProcess::start(&ns.name);
    healthy_on(&ns, "web:1").await;
    let log = WeightLog::start(&ns);
    set_image(&ns, "web:2", &steps, &json!({})).await;
    wait_for(&ns, "the canary at 20%", |r| {
        r.status.as_ref().and_then(|s| s.canary_weight) == Some(20)
    })
    .await;
    fault();
    // The test's own client pooled connections to the API server the fault may have ended.
    let ns = TestNamespace {
        name: ns.name.clone(),
        client: client().await,
    };
    let done = healthy_on(&ns, "web:2").await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let abort_events = events
        .list(&Default::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|e| e.reason.as_deref().is_some_and(|r| r.contains("Abort")))
                .count()
        })
        .unwrap_or_default();
    let ending = Ending {
        weights: log.weights(),
        stable: done.status.as_ref().and_then(|s| s.stable_rs.clone()),
        aborted: done.status.as_ref().is_some_and(|s| s.abort),
        abort_events,
    };
    // This copy shares the namespace: only the first one deletes it.
    std::mem::forget(ns);
    ending
}

/// Whether `seen` is `all` with some entries missing (a watch may miss a state while the
/// API server is away), in the same order and with nothing added or repeated.
fn subsequence(seen: &[i32], all: &[i32]) -> bool {
    let mut rest = all.iter();
    seen.iter().all(|w| rest.any(|a| a == w))
}

#[tokio::test]
async fn a_release_ends_the_same_after_an_api_server_restart_or_an_etcd_stall_mid_canary() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let baseline = release("fault-none", || {}).await;
    assert_eq!(baseline.stable.as_deref(), Some(hash_of("web:2").as_str()));
    assert!(
        !baseline.aborted && baseline.abort_events == 0,
        "{baseline:?}"
    );
    for (name, fault) in [
        ("fault-apiserver", ["restart", "kube-apiserver", ""]),
        ("fault-etcd", ["pause", "etcd", "15"]),
    ] {
        let ending = release(name, || {
            let args: Vec<&str> = fault.iter().copied().filter(|a| !a.is_empty()).collect();
            cluster(&args);
        })
        .await;
        assert_eq!(ending.stable, baseline.stable, "{name}: {ending:?}");
        assert!(
            !ending.aborted && ending.abort_events == 0,
            "{name}: no false abort: {ending:?}"
        );
        assert!(
            subsequence(&ending.weights, &baseline.weights)
                && ending.weights.last() == baseline.weights.last(),
            "{name}: the same steps, none doubled: {ending:?} against {baseline:?}"
        );
    }
    cluster(&["restart", "kube-controller-manager"]);
}

/// The Rollout `web` at `image` whose canary pods never become ready (the kubelet
/// stand-in honours `sim.weir.dev/ready: "false"`), with a 30 s progress deadline.
fn never_ready(image: &str) -> serde_json::Value {
    let mut rollout = support::app::rollout(
        image,
        json!([{"setWeight": 20}, {"pause": {}}]),
        json!({"progressDeadlineSeconds": 30}),
    );
    rollout["spec"]["template"]["metadata"]["annotations"] =
        json!({weir::sim::kubelet::READY_ANNOTATION: "false"});
    rollout
}

#[tokio::test]
async fn an_api_server_outage_does_not_count_towards_the_progress_deadline() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let ns = TestNamespace::new(&client().await, "fault-deadline").await;
    app(&ns).await;
    set_image(
        &ns,
        "web:1",
        &json!([{"setWeight": 20}, {"pause": {}}]),
        &json!({}),
    )
    .await;
    let _controller = ControllerProcess::start(&ns.name);
    healthy_on(&ns, "web:1").await;
    support::app::apply(&ns, never_ready("web:2")).await;
    let waiting = |r: &Rollout| {
        r.status
            .as_ref()
            .and_then(|s| s.waiting_since.as_ref())
            .map(weir::time::from_k8s)
    };
    let before = wait_for(&ns, "the canary waiting for its pods", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.canary_rs != s.stable_rs)
            && waiting(r).is_some()
    })
    .await;
    let since = waiting(&before).unwrap_or_default();
    // Down for longer than the whole deadline: counted, the canary would abort at once.
    let down = Instant::now();
    cluster(&["outage", "kube-apiserver", "40"]);
    let unheard = down.elapsed();
    let ns = TestNamespace {
        name: ns.name.clone(),
        client: client().await,
    };
    let moved = wait_for(&ns, "the outage taken off the deadline", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.outages_excluded_until.is_some())
    })
    .await;
    let status = moved.status.clone().unwrap_or_default();
    assert!(!status.abort, "no abort for the outage: {status:?}");
    let shift = waiting(&moved).unwrap_or_default() - since;
    assert!(
        shift >= chrono::Duration::seconds(40)
            && shift
                <= chrono::Duration::from_std(unheard).unwrap_or_default()
                    + chrono::Duration::seconds(15),
        "waitingSince moved by {shift} for an outage of {unheard:?}: {status:?}"
    );
    // The deadline still holds for heard time.
    let aborted = wait_for(&ns, "the abort at the moved deadline", |r| {
        r.status.as_ref().is_some_and(|s| s.abort)
    })
    .await;
    let status = aborted.status.unwrap_or_default();
    let aborted_at = status
        .aborted_at
        .as_ref()
        .map(weir::time::from_k8s)
        .unwrap_or_default();
    assert!(
        aborted_at >= since + shift + chrono::Duration::seconds(30),
        "aborted at {aborted_at}, before 30 heard seconds from {since} + {shift}: {status:?}"
    );
    assert_eq!(
        status.abort_cause.as_ref().map(|c| c.reason.as_str()),
        Some("ProgressDeadlineExceeded"),
        "{status:?}"
    );
    std::mem::forget(ns);
    cluster(&["restart", "kube-controller-manager"]);
}
