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
    weir::template_hash::of(
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
    log.caught_up(&ns).await;
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

/// A release of `web:2` gated by an analysis step of five measurements two seconds apart,
/// with the API server restarted while that analysis runs; returns how it ended and how
/// many AnalysisRuns the release made.
async fn release_restarted_mid_analysis() -> (Ending, usize) {
    use support::{MetricsServer, ScrapeTarget, prometheus_url};
    use weir::api::analysis::{AnalysisPhase, AnalysisRun};
    let ns = TestNamespace::new(&client().await, "fault-analysis").await;
    app(&ns).await;
    let series = format!("weir_test_success_rate{{test=\"{}\"}}", ns.name);
    let _server = MetricsServer::start(&format!("{series} 0.99\n")).await;
    let _target = ScrapeTarget::add(&ns.name, &_server.address, &[]);
    let prometheus = prometheus_http_query::Client::try_from(prometheus_url().as_str())
        .unwrap_or_else(|e| panic!("the Prometheus address: {e}"));
    eventually(
        "Prometheus to scrape the rate",
        support::app::LIMIT,
        || async {
            let response = prometheus.query(series.as_str()).get().await.ok()?;
            response.data().as_vector()?.first().map(|_| ())
        },
    )
    .await;
    support::app::apply(
        &ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "success-rate"},
            "spec": {"metrics": [{"name": "success-rate", "interval": "2s", "count": 5,
                "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"query": series}}}]}}),
    )
    .await;
    let steps = json!([{"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 60}, {"pause": {"duration": "2s"}}]);
    set_image(&ns, "web:1", &steps, &json!({})).await;
    let _controller = ControllerProcess::measuring(&ns.name);
    healthy_on(&ns, "web:1").await;
    let log = WeightLog::start(&ns);
    set_image(&ns, "web:2", &steps, &json!({})).await;
    let runs = ns.api::<AnalysisRun>();
    eventually(
        "the analysis running with a measurement taken",
        support::app::LIMIT,
        || async {
            let list = runs.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|run| {
                    run.status.as_ref().is_some_and(|s| {
                        s.phase == Some(AnalysisPhase::Running)
                            && s.metric_results.iter().any(|m| !m.measurements.is_empty())
                    })
                })
                .then_some(())
        },
    )
    .await;
    cluster(&["restart", "kube-apiserver"]);
    let ns = TestNamespace {
        name: ns.name.clone(),
        client: client().await,
    };
    // The first log's watch may not outlive the restart (its client's connections died
    // with the API server): a second one, on the fresh client, sees the steps after it.
    let after = WeightLog::start(&ns);
    let done = healthy_on(&ns, "web:2").await;
    let runs = ns
        .api::<AnalysisRun>()
        .list(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or_default();
    // The second log starts where the first one stopped hearing, if it did (the first log
    // then ends at the weight the restart found).
    let mut weights = log.weights();
    if !weights.contains(&60) {
        for weight in after.weights() {
            if weights.last() != Some(&weight) {
                weights.push(weight);
            }
        }
    }
    let ending = Ending {
        weights,
        stable: done.status.as_ref().and_then(|s| s.stable_rs.clone()),
        aborted: done.status.as_ref().is_some_and(|s| s.abort),
        abort_events: 0,
    };
    std::mem::forget(ns);
    (ending, runs)
}

// Two workers: the test's metrics server must answer Prometheus' scrapes while the test
// waits for the restart (a blocking call), or the series goes stale and the measurement
// is rightly Inconclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_ends_the_same_after_an_api_server_restart_mid_measurement() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (ending, runs) = release_restarted_mid_analysis().await;
    assert_eq!(ending.stable, Some(hash_of("web:2")), "{ending:?}");
    assert!(!ending.aborted, "no false abort: {ending:?}");
    assert_eq!(runs, 1, "the analysis step ran once, not again: {ending:?}");
    assert!(
        subsequence(&ending.weights, &[0, 20, 60, 100, 0]) && ending.weights.contains(&60),
        "every step once, in order: {ending:?}"
    );
    cluster(&["restart", "kube-controller-manager"]);
}

/// Where a rollback's fault strikes.
#[derive(Clone, Copy, Debug)]
enum RollbackFault {
    /// The API server restarts as soon as the GitSync has rejected the revision: the
    /// re-apply of the good revision and the prune are under way.
    ApiServerMidRollback,
    /// The API server restarts while weir's revert is being pushed.
    ApiServerMidWriteBack,
    /// The Git host dies while weir's revert is being pushed (the push's server side is
    /// killed too, so nothing lands) and comes back on the same port five seconds later.
    GitHostMidPush,
}

/// A GitSync'd release of v2 aborted by an operator and rolled back to v1 with write-back,
/// with `fault` injected on the way; returns once Git and the cluster agree, after checking
/// that they agree exactly as without a fault: one rejected revision, one revert on the
/// branch, v1's manifests applied and v2's Secret pruned.
async fn rollback_with(test: &str, fault: RollbackFault) {
    use support::git::{GitDaemon, GitRepo};
    use support::gitops::{
        commit_with, git_sync_every, revert_on_branch, secret, setting, sync_where,
    };
    let ns = TestNamespace::new(&client().await, test).await;
    let repo = GitRepo::new(&ns.name);
    repo.accept_pushes();
    // Each push names its server-side process, then takes a few seconds: the fault strikes
    // while it is in flight.
    let pushing = repo.dir.join(".git/push-in-flight");
    repo.hook(
        "pre-receive",
        &format!("#!/bin/sh\necho $PPID >> {}\nsleep 4\n", pushing.display()),
    );
    let mut daemon = GitDaemon::serve(&repo).await;
    let url = daemon.url(&repo);
    let held = json!([{"setWeight": 20}, {"pause": {}}]);
    let v1 = commit_with(&repo, &ns, 1, held.clone(), &[]);
    let _controller = ControllerProcess::start(&ns.name);
    git_sync_every(&ns, &url, true, "1s").await;
    healthy_on(&ns, "web:1").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    let v2 = commit_with(&repo, &ns, 2, held, &[secret()]);
    wait_for(&ns, "v2's canary paused", |r| {
        support::gitops::revisions(r).1.as_deref() == Some(v2.as_str())
            && support::app::phase(r) == Some(weir::api::rollout::RolloutPhase::Paused)
    })
    .await;
    support::app::status_patch(&ns, json!({"status": {"abort": true}})).await;
    let push_started = || async {
        eventually(
            "weir's revert push to start",
            support::app::LIMIT,
            || async {
                let attempts = std::fs::read_to_string(&pushing).ok()?;
                attempts.lines().next().map(str::to_owned)
            },
        )
        .await
    };
    match fault {
        RollbackFault::ApiServerMidRollback => {
            sync_where(&ns, "v2 rejected", |s| !s.rejected_revisions.is_empty()).await;
            cluster(&["restart", "kube-apiserver"]);
        }
        RollbackFault::ApiServerMidWriteBack => {
            push_started().await;
            cluster(&["restart", "kube-apiserver"]);
        }
        RollbackFault::GitHostMidPush => {
            let receiving = push_started().await;
            let port = daemon.port;
            drop(daemon);
            let _ = Command::new("kill").args(["-9", receiving.trim()]).status();
            tokio::time::sleep(Duration::from_secs(5)).await;
            daemon = GitDaemon::serve_on(&repo, port).await;
        }
    }
    let ns = TestNamespace {
        name: ns.name.clone(),
        client: client().await,
    };
    let status = sync_where(&ns, "the rollback finished and written back", |s| {
        s.rejected_revisions
            .first()
            .and_then(|r| r.revert.as_ref())
            .is_some_and(|revert| s.last_applied_revision.as_ref() == Some(revert))
    })
    .await;
    assert_eq!(
        status
            .rejected_revisions
            .iter()
            .map(|r| r.revision.as_str())
            .collect::<Vec<_>>(),
        vec![v2.as_str()],
        "{fault:?}: one rejected revision"
    );
    revert_on_branch(&repo, &v2, &v1);
    let subjects = repo.git(&["log", "--format=%s", "main"]);
    assert_eq!(
        subjects.lines().filter(|s| s.starts_with("Revert")).count(),
        1,
        "{fault:?}: one revert: {subjects}"
    );
    healthy_on(&ns, "web:1").await;
    assert_eq!(
        setting(&ns).await.as_deref(),
        Some("setting 1"),
        "{fault:?}"
    );
    eventually("v2's Secret pruned", support::app::LIMIT, || async {
        match ns
            .api::<k8s_openapi::api::core::v1::Secret>()
            .get_opt("extra")
            .await
        {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    if let RollbackFault::GitHostMidPush = fault {
        let attempts = std::fs::read_to_string(&pushing).unwrap_or_default();
        assert!(
            attempts.lines().count() >= 2,
            "the first push was cut off and a later one landed: {attempts:?}"
        );
    }
    drop(daemon);
    std::mem::forget(ns);
}

/// The Git host dies while the GitSync fetches every second: the GitSync says so and the
/// cluster keeps what it runs (nothing pruned, no canary); the host back, the commit made
/// meanwhile is released.
async fn git_host_lost_mid_fetch() {
    use support::git::{GitDaemon, GitRepo};
    use support::gitops::{commit_with, git_sync_every, revisions, sync_where};
    let ns = TestNamespace::new(&client().await, "fault-git-fetch").await;
    let repo = GitRepo::new(&ns.name);
    let daemon = GitDaemon::serve(&repo).await;
    let (url, port) = (daemon.url(&repo), daemon.port);
    let held = json!([{"setWeight": 20}, {"pause": {}}]);
    let v1 = commit_with(&repo, &ns, 1, held.clone(), &[]);
    let _controller = ControllerProcess::start(&ns.name);
    git_sync_every(&ns, &url, false, "1s").await;
    healthy_on(&ns, "web:1").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    drop(daemon);
    let v2 = commit_with(&repo, &ns, 2, held, &[]);
    let status = sync_where(&ns, "the fetch failure reported", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "FetchFailed")
    })
    .await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(v1.as_str()));
    let rollout = healthy_on(&ns, "web:1").await;
    assert_eq!(revisions(&rollout), (Some(v1.clone()), Some(v1.clone())));
    assert!(
        ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
            .get_opt("settings")
            .await
            .ok()
            .flatten()
            .is_some(),
        "nothing pruned while the host is away"
    );
    let _back = GitDaemon::serve_on(&repo, port).await;
    wait_for(&ns, "v2's canary once the host is back", |r| {
        revisions(r).1.as_deref() == Some(v2.as_str())
    })
    .await;
}

#[tokio::test]
async fn a_rollback_ends_the_same_after_an_api_server_restart_or_a_git_host_lost() {
    let _alone = ONE_AT_A_TIME.lock().await;
    rollback_with("fault-rollback", RollbackFault::ApiServerMidRollback).await;
    rollback_with("fault-writeback", RollbackFault::ApiServerMidWriteBack).await;
    rollback_with("fault-git-push", RollbackFault::GitHostMidPush).await;
    git_host_lost_mid_fetch().await;
    cluster(&["restart", "kube-controller-manager"]);
}
