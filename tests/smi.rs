//! The SMI router on the local control plane: weir's TrafficSplit on the root Service, its
//! backend weights followed by the simulated data plane (`weir-sim traffic`), analysis in
//! Prometheus judging the canary's real share, and every weight watched.

#[path = "support/routers.rs"]
mod routers;
mod support;

use kube::Api;
use kube::api::DynamicObject;
use routers::{ObjectWeights, controller, delete_holding, healthy, share, simulator, templates};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, phase, traffic_splits, wait_for};
use support::{TestNamespace, client, eventually};
use weir::api::rollout::RolloutPhase;
use weir::traffic::smi;

/// The root Service clients call (all of the app's pods) and the two Services weir points.
async fn services(ns: &TestNamespace) {
    for service in ["web", "web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
}

/// The Rollout as Argo documents an SMI canary (only `apiVersion` differs), its canary
/// failing `error_rate` of requests.
fn rollout(image: &str, error_rate: &str, smi: Value) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"},
                "annotations": {"sim.weir.dev/error-rate": error_rate}},
            "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"smi": smi},
            "steps": [
                {"setWeight": 20},
                {"analysis": {"templates": [{"templateName": "share-20"}]}},
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "share-50"}]}}
            ]}}}})
}

/// TrafficSplits at the version the cluster serves.
fn canary_weight(split: &DynamicObject) -> i32 {
    smi::canary_share(&split.data["spec"], "web-stable", "web-canary").unwrap_or(-1)
}

/// Every canary weight the TrafficSplit `name` carried, in order: 0 while there is none.
fn split_log(api: Api<DynamicObject>, name: &str) -> ObjectWeights {
    ObjectWeights::start(
        api,
        Some(name),
        vec![0],
        |split| Some(canary_weight(split)),
        Some(0),
    )
}

#[tokio::test]
async fn an_smi_canary_with_analysis_walks_its_weights_to_healthy() {
    let ns = TestNamespace::new(&client().await, "smi").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    services(&ns).await;
    templates(&ns).await;
    // The TrafficSplit's name defaults to the Rollout's.
    let routing = json!({"rootService": "web"});
    apply(&ns, rollout("web:1", "0", routing.clone())).await;
    healthy(&ns, &rollout("web:1", "0", routing.clone())).await;
    let api = traffic_splits(&ns).await;
    let split = eventually("weir's TrafficSplit web", LIMIT, || async {
        api.get_opt("web").await.ok().flatten()
    })
    .await;
    // As weir makes it: all of the root Service to the stable, owned by the Rollout.
    assert_eq!(
        split.data["spec"],
        json!({"service": "web", "backends": [
            {"service": "web-stable", "weight": 100}, {"service": "web-canary", "weight": 0}]})
    );
    let owners: Vec<_> = split
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| (o.kind.as_str(), o.name.as_str(), o.controller))
        .collect();
    assert_eq!(owners, [("Rollout", "web", Some(true))]);
    let managers: Vec<String> = split
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["weir-rollout"]);
    let log = split_log(api.clone(), "web");

    apply(&ns, rollout("web:2", "0", routing.clone())).await;
    // The data plane follows the split before analysis judges it.
    share(&ns, |v| (0.17..=0.23).contains(&v)).await;
    healthy(&ns, &rollout("web:2", "0", routing.clone())).await;
    assert_eq!(
        log.states(),
        vec![0, 20, 50, 100, 0],
        "every weight the TrafficSplit carried, in order"
    );
    let runs = ns
        .api::<weir::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await
        .expect("runs")
        .items;
    let phases: Vec<_> = runs
        .iter()
        .map(|r| r.status.as_ref().and_then(|s| s.phase))
        .collect();
    assert_eq!(
        phases,
        [
            Some(weir::api::analysis::AnalysisPhase::Successful),
            Some(weir::api::analysis::AnalysisPhase::Successful)
        ],
        "both steps' analyses saw the canary's share in Prometheus"
    );
    share(&ns, |v| v == 0.0).await;
    let kept = api.get("web").await.expect("the TrafficSplit stays");
    assert_eq!(canary_weight(&kept), 0);
}

#[tokio::test]
async fn a_failing_smi_canary_aborts_to_stable_and_its_split_goes_with_the_rollout() {
    let ns = TestNamespace::new(&client().await, "smi-abort").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    services(&ns).await;
    templates(&ns).await;
    // The root Service defaults to the stableService.
    let routing = json!({"trafficSplitName": "web-split"});
    apply(&ns, rollout("web:1", "0", routing.clone())).await;
    healthy(&ns, &rollout("web:1", "0", routing.clone())).await;
    let api = traffic_splits(&ns).await;
    let split = eventually("weir's TrafficSplit web-split", LIMIT, || async {
        api.get_opt("web-split").await.ok().flatten()
    })
    .await;
    assert_eq!(split.data["spec"]["service"], json!("web-stable"));
    let log = split_log(api.clone(), "web-split");

    apply(&ns, rollout("web:2", "0.5", routing.clone())).await;
    share(&ns, |v| (0.17..=0.23).contains(&v)).await;
    let aborted = wait_for(&ns, "the analysis to abort the rollout", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().is_some_and(|s| s.abort)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    let cause = aborted.status.and_then(|s| s.abort_cause).expect("a cause");
    assert_eq!(
        (cause.reason.as_str(), cause.metric.as_deref()),
        ("AnalysisFailed", Some("success-rate"))
    );
    assert_eq!(log.states(), vec![0, 20, 0]);
    share(&ns, |v| v == 0.0).await;

    delete_holding(
        &ns,
        "weir to remove its TrafficSplit while the Rollout is still there",
        || async { matches!(api.get_opt("web-split").await, Ok(None)) },
    )
    .await;
}

#[tokio::test]
async fn a_traffic_split_weir_did_not_make_is_left_alone_and_named() {
    let ns = TestNamespace::new(&client().await, "smi-foreign").await;
    let _controller = support::ControllerProcess::start(&ns.name);
    services(&ns).await;
    let api = traffic_splits(&ns).await;
    let version = api
        .resource_url()
        .split('/')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{}/{version}", smi::GROUP), "kind": "TrafficSplit",
        "metadata": {"name": "web"},
        "spec": smi::spec(&version, "web", "web-stable", "web-canary", 10)
    }))
    .expect("a TrafficSplit");
    api.create(&Default::default(), &foreign)
        .await
        .expect("creating a TrafficSplit of someone else's");
    apply(&ns, rollout("web:1", "0", json!({}))).await;
    let refused = wait_for(&ns, "the Rollout to name the TrafficSplit", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("TrafficSplit") && m.contains("trafficSplitName"))
    })
    .await;
    assert_ne!(phase(&refused), Some(RolloutPhase::Healthy));
    let left = api.get("web").await.expect("still there");
    assert_eq!(canary_weight(&left), 10, "weir wrote nothing to it");
}

/// The SMI application as a team keeps it in Git: the root Service (labelled `tier`), both
/// Services weir points and the Rollout; the TrafficSplit is weir's and in no commit.
fn smi_app_in_git(image: &str, tier: &str) -> String {
    let mut documents: Vec<Value> = ["web", "web-stable", "web-canary"]
        .iter()
        .map(|service| {
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "labels": {"tier": tier}},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        })
        .collect();
    documents.push(paused_rollout(image));
    support::app::yaml_stream(&documents)
}

/// The Rollout on the root Service `web`, with one step of 30% that waits to be promoted.
fn paused_rollout(image: &str) -> Value {
    let mut manifest = rollout(image, "0", json!({"rootService": "web"}));
    manifest["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    manifest
}

#[tokio::test]
async fn a_git_sync_never_resets_or_prunes_the_traffic_split_mid_canary() {
    use support::git::GitRepo;
    let ns = TestNamespace::new(&client().await, "smi-gitsync").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "web 1",
        &[("deploy/app.yaml", &smi_app_in_git("web:1", "a"))],
    );
    // Lockdown off: the GitSync acts as the controller.
    let _controller = support::ControllerProcess::start_unlocked(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[],
    );
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    healthy(&ns, &paused_rollout("web:1")).await;
    let api = traffic_splits(&ns).await;
    eventually("weir's TrafficSplit web", LIMIT, || async {
        api.get_opt("web").await.ok().flatten()
    })
    .await;
    let log = split_log(api.clone(), "web");

    repo.commit(
        "web 2",
        &[("deploy/app.yaml", &smi_app_in_git("web:2", "a"))],
    );
    wait_for(&ns, "the canary paused at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(30)
    })
    .await;
    // A new commit mid-canary changes the root Service: the sync applies it...
    repo.commit(
        "tier b",
        &[("deploy/app.yaml", &smi_app_in_git("web:2", "b"))],
    );
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    eventually("the sync to apply tier b", LIMIT, || async {
        let root = services.get("web").await.ok()?;
        (root.metadata.labels?.get("tier")? == "b").then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // ...and the TrafficSplit, in no commit, is neither pruned nor reset.
    let split = api
        .get_opt("web")
        .await
        .expect("get")
        .expect("the TrafficSplit survives the syncs");
    assert_eq!(canary_weight(&split), 30);
    assert_eq!(log.states(), vec![0, 30], "Git never moved the weight");

    support::app::status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy(&ns, &paused_rollout("web:2")).await;
    eventually("the split to return to stable", LIMIT, || async {
        (log.states() == vec![0, 30, 100, 0]).then_some(())
    })
    .await;
}
