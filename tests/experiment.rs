//! Experiments on the local control plane: an Experiment of its own, written as Argo Rollouts
//! documents one, and a canary's `experiment` step that runs the stable version on a fresh
//! baseline beside the canary and lets the statistical judge compare the two. The simulated
//! data plane answers each version with noisy latencies (`weir-sim traffic --seed`), labelled
//! by pod-template hash; a second HTTPRoute sends traffic to the experiment's pods through
//! one Service per template, as a user routes a share to them.

mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::{Value, json};
use support::app::{LIMIT, app, apply, latency_judge, phase, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, simulator_with};
use weir::api::analysis::{AnalysisPhase, AnalysisRun};
use weir::api::contract::{EXPERIMENT_LABEL, EXPERIMENT_TEMPLATE_LABEL, POD_TEMPLATE_HASH_LABEL};
use weir::api::experiment::Experiment;
use weir::api::rollout::RolloutPhase;

/// Measurements in the analysis window: one every 5 s for a minute.
const WINDOW: i32 = 12;

/// One Service per experiment template (selected by the template label weir puts on its
/// pods) and a route sending traffic to both.
async fn experiment_traffic(ns: &TestNamespace) {
    for template in ["baseline", "canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("experiment-{template}")},
                "spec": {"selector": {EXPERIMENT_TEMPLATE_LABEL: template},
                    "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    apply(ns, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "experiment"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "experiment-baseline", "port": 80}, {"name": "experiment-canary", "port": 80}]}]}}))
    .await;
}

/// The Rollout at `version`, its pods answering in `latency_ms` on average; its second step
/// is the experiment, as Argo Rollouts documents a baseline-versus-canary step.
fn rollout(version: u32, latency_ms: u32) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"},
                    "annotations": {"sim.weir.dev/latency-ms": latency_ms.to_string()}},
                "spec": {"containers": [{"name": "web", "image": format!("web:{version}")}]}},
            "strategy": {"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
                "steps": [{"setWeight": 20},
                    {"experiment": {
                        "templates": [
                            {"name": "baseline", "specRef": "stable"},
                            {"name": "canary", "specRef": "canary"}],
                        "analyses": [{"name": "latency", "templateName": "latency",
                            "requiredForCompletion": true,
                            "args": [
                                {"name": "baseline-hash", "value": "{{templates.baseline.podTemplateHash}}"},
                                {"name": "canary-hash", "value": "{{templates.canary.podTemplateHash}}"}]}]}}]}}}})
}

/// Healthy on version 1 at 100 ms, then version 2 at `canary_ms` applied.
async fn release(ns: &TestNamespace, canary_ms: u32) {
    apply(ns, rollout(1, 100)).await;
    wait_for(ns, "Healthy on version 1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().is_some_and(|s| s.stable_rs.is_some())
    })
    .await;
    apply(ns, rollout(2, canary_ms)).await;
}

/// The first Experiment in the namespace whose phase passes `wanted`, waited for up to
/// `limit`.
async fn experiment_where(
    ns: &TestNamespace,
    what: &str,
    limit: std::time::Duration,
    wanted: impl Fn(AnalysisPhase) -> bool,
) -> Experiment {
    let experiments = ns.api::<Experiment>();
    eventually(what, limit, || async {
        let list = experiments.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.status.as_ref().and_then(|s| s.phase).is_some_and(&wanted))
    })
    .await
}

/// The Rollout's step Experiment, once running.
async fn step_experiment_running(ns: &TestNamespace) -> Experiment {
    experiment_where(ns, "the step's experiment running", LIMIT, |phase| {
        phase == AnalysisPhase::Running
    })
    .await
}

/// What keeps a test's world running: the simulated data plane, its scrape target and the
/// controller, stopped when dropped.
type Running = (support::Simulator, support::ScrapeTarget, ControllerProcess);

/// Version 2 at `canary_ms` released over version 1: the step's Experiment once ended, and
/// its run.
async fn canary(
    test: &str,
    seed: u64,
    canary_ms: u32,
) -> (TestNamespace, Experiment, AnalysisRun, Running) {
    let ns = TestNamespace::new(&client().await, test).await;
    let seed = seed.to_string();
    let (simulator, target) = simulator_with(&ns, &["--seed", &seed]).await;
    let controller = ControllerProcess::measuring(&ns.name);
    app(&ns).await;
    experiment_traffic(&ns).await;
    apply(&ns, latency_judge(&ns, WINDOW)).await;
    release(&ns, canary_ms).await;
    let experiment = experiment_where(
        &ns,
        "the experiment's end",
        LIMIT * 3,
        AnalysisPhase::is_final,
    )
    .await;
    let runs = ns.api::<AnalysisRun>();
    let run = eventually("the experiment's run", LIMIT, || async {
        let list = runs
            .list(
                &ListParams::default()
                    .labels(&format!("{EXPERIMENT_LABEL}={}", experiment.name_any())),
            )
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    (ns, experiment, run, (simulator, target, controller))
}

/// The experiment's own ReplicaSets, each with the hash its pods carry, apart from the
/// Rollout's: the baseline runs the stable version on fresh pods.
async fn experiment_replica_sets(ns: &TestNamespace, experiment: &Experiment) -> Vec<ReplicaSet> {
    ns.api::<ReplicaSet>()
        .list(
            &ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={}", experiment.name_any())),
        )
        .await
        .unwrap_or_else(|e| panic!("listing the experiment's ReplicaSets: {e}"))
        .items
}

#[tokio::test]
async fn an_experiment_step_fails_a_canary_slower_than_its_fresh_baseline() {
    let (ns, experiment, run, _running) = canary("experiment-slower", 1, 120).await;
    let status = experiment.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(AnalysisPhase::Failed), "{status:?}");
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Failed),
        "{:?}",
        run.status
    );
    let hashes: Vec<String> = status
        .template_statuses
        .iter()
        .filter_map(|t| t.pod_template_hash.clone())
        .collect();
    assert_eq!(hashes.len(), 2, "{status:?}");
    // The run compared the two templates' pods, by the hashes the Experiment gave them.
    let args: Vec<String> = run
        .spec
        .template
        .args
        .iter()
        .filter_map(|a| a.value.clone())
        .collect();
    for hash in &hashes {
        assert!(args.contains(hash), "{hash} among {args:?}");
    }
    let rollout = wait_for(&ns, "the Rollout aborted", |r| {
        r.status.as_ref().is_some_and(|s| s.abort) && phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let message = rollout.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("experiment"), "{message}");
    let replica_sets = experiment_replica_sets(&ns, &experiment).await;
    assert_eq!(replica_sets.len(), 2);
    let stable = ns
        .api::<weir::api::Rollout>()
        .get("web")
        .await
        .ok()
        .and_then(|r| r.status)
        .and_then(|s| s.stable_rs)
        .unwrap_or_default();
    for rs in &replica_sets {
        let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL).cloned();
        assert!(
            hash.as_ref().is_some_and(|h| hashes.contains(h)),
            "{hash:?}"
        );
        assert_ne!(
            hash.as_deref(),
            Some(stable.as_str()),
            "a baseline of its own"
        );
    }
    // Scaled down once the scale-down delay (30 s, Argo's default) has passed.
    eventually(
        "the experiment's ReplicaSets scaled to 0",
        LIMIT,
        || async {
            let replica_sets = experiment_replica_sets(&ns, &experiment).await;
            replica_sets
                .iter()
                .all(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(0))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_experiment_step_passes_a_canary_equal_to_its_baseline_and_the_rollout_completes() {
    let (ns, experiment, run, _running) = canary("experiment-equal", 2, 100).await;
    let status = experiment.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(AnalysisPhase::Successful), "{status:?}");
    assert!(status.available_at.is_some() && status.ended_at.is_some());
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Successful)
    );
    let rollout = wait_for(&ns, "Healthy on version 2", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status
                .as_ref()
                .is_some_and(|s| s.stable_rs == s.canary_rs)
    })
    .await;
    assert_eq!(
        rollout.status.and_then(|s| s.current_step_index),
        Some(2),
        "through both steps"
    );
}

#[tokio::test]
async fn an_experiment_written_as_argo_documents_it_runs_its_duration_and_scales_down() {
    let ns = TestNamespace::new(&client().await, "experiment-alone").await;
    let _controller = ControllerProcess::start(&ns.name);
    // Argo Rollouts' documented shape, its defaults (replicas, scale-down delay) left out.
    apply(&ns, json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "purple-vs-orange"},
        "spec": {"duration": "10s", "progressDeadlineSeconds": 30, "templates": [
            {"name": "purple", "selector": {"matchLabels": {"app": "demo", "color": "purple"}},
             "template": {"metadata": {"labels": {"app": "demo", "color": "purple"}},
                "spec": {"containers": [{"name": "demo", "image": "demo:purple"}]}}},
            {"name": "orange", "replicas": 2, "selector": {"matchLabels": {"app": "demo", "color": "orange"}},
             "template": {"metadata": {"labels": {"app": "demo", "color": "orange"}},
                "spec": {"containers": [{"name": "demo", "image": "demo:orange"}]}}}]}})).await;
    let experiments = ns.api::<Experiment>();
    let running = eventually("running, its pods available", LIMIT, || async {
        let e = experiments.get("purple-vs-orange").await.ok()?;
        let status = e.status.clone()?;
        (status.phase == Some(AnalysisPhase::Running)).then_some(status)
    })
    .await;
    let available: Vec<(String, i32)> = running
        .template_statuses
        .iter()
        .map(|t| (t.name.clone(), t.available_replicas))
        .collect();
    assert_eq!(
        available,
        [("purple".to_owned(), 1), ("orange".to_owned(), 2)]
    );
    let ended = eventually("Successful after its duration", LIMIT, || async {
        let e = experiments.get("purple-vs-orange").await.ok()?;
        let status = e.status.clone()?;
        (status.phase == Some(AnalysisPhase::Successful)).then_some(status)
    })
    .await;
    let (Some(from), Some(to)) = (&ended.available_at, &ended.ended_at) else {
        panic!("its times recorded: {ended:?}");
    };
    let ran = weir::time::from_k8s(to) - weir::time::from_k8s(from);
    assert!(ran >= chrono::Duration::seconds(10), "ran {ran}");
    let names: Vec<String> = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for name in ["purple-vs-orange-purple", "purple-vs-orange-orange"] {
        assert!(names.iter().any(|n| n == name), "{name} among {names:?}");
    }
    eventually("scaled to 0 after the scale-down delay", LIMIT, || async {
        let list = ns
            .api::<ReplicaSet>()
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items
            .iter()
            .all(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(0))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn promoting_in_full_past_a_running_experiment_ends_it() {
    let ns = TestNamespace::new(&client().await, "experiment-promoted").await;
    let (_simulator, _target) = simulator_with(&ns, &["--seed", "3"]).await;
    let _controller = ControllerProcess::measuring(&ns.name);
    app(&ns).await;
    apply(&ns, latency_judge(&ns, WINDOW)).await;
    release(&ns, 100).await;
    let experiments = ns.api::<Experiment>();
    let running = step_experiment_running(&ns).await;
    support::app::status_patch(&ns, json!({"status": {"promoteFull": true}})).await;
    let ended = eventually("the experiment told to end, and ended", LIMIT, || async {
        let e = experiments.get(&running.name_any()).await.ok()?;
        let phase = e.status.as_ref().and_then(|s| s.phase)?;
        (e.spec.terminate && phase.is_final()).then_some(e)
    })
    .await;
    let status = ended.status.unwrap_or_default();
    assert_eq!(status.phase, Some(AnalysisPhase::Successful), "{status:?}");
    assert_eq!(
        status.message.as_deref(),
        Some("terminated by an operator"),
        "{status:?}"
    );
    // Its run is stopped with it, and the Rollout completes.
    let runs = ns.api::<AnalysisRun>();
    eventually("the experiment's run stopped", LIMIT, || async {
        let list = runs
            .list(
                &ListParams::default()
                    .labels(&format!("{EXPERIMENT_LABEL}={}", running.name_any())),
            )
            .await
            .ok()?;
        // Started with the Running phase, in the same reconcile.
        (!list.items.is_empty() && list.items.iter().all(|run| run.spec.terminate)).then_some(())
    })
    .await;
    wait_for(&ns, "Healthy on version 2", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status
                .as_ref()
                .is_some_and(|s| s.stable_rs == s.canary_rs)
    })
    .await;
}

#[tokio::test]
async fn a_missing_analysis_template_is_named_before_any_experiment_pod_starts() {
    let ns = TestNamespace::new(&client().await, "experiment-missing").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    // No AnalysisTemplate "latency".
    release(&ns, 100).await;
    let stuck = wait_for(&ns, "the ReconcileError condition", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "ReconcileError"))
    })
    .await;
    let message = stuck.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("MissingTemplate")
            && message.contains("latency")
            && message.contains("steps[1].experiment.analyses[0].templateName"),
        "{message}"
    );
    let experiments = ns
        .api::<Experiment>()
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing Experiments: {e}"));
    assert!(experiments.items.is_empty(), "{:?}", experiments.items);
}

/// The route's backends of its one rule: name, weight and port.
async fn route_backends(ns: &TestNamespace) -> Vec<(String, Option<i32>, Option<i32>)> {
    let route = ns
        .api::<gateway_api::apis::standard::httproutes::HttpRoute>()
        .get("web")
        .await
        .unwrap_or_else(|e| panic!("reading HTTPRoute web: {e}"));
    route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.backend_refs.iter().flatten())
        .map(|b| (b.name.clone(), b.weight, b.port))
        .collect()
}

#[tokio::test]
async fn weighted_experiment_templates_get_their_share_of_the_route_while_the_experiment_runs() {
    let ns = TestNamespace::new(&client().await, "experiment-weights").await;
    let (_simulator, _target) = simulator_with(&ns, &["--seed", "5"]).await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    // Argo Rollouts' documented weighted experiment step: a share for each template, taken
    // from the stable's; the pods declare the port their Services get.
    let rollout = |version: u32| {
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": format!("web:{version}"),
                        "ports": [{"name": "http", "containerPort": 8080}]}]}},
                "strategy": {"canary": {
                    "stableService": "web-stable", "canaryService": "web-canary",
                    "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
                    "steps": [{"setWeight": 20},
                        {"experiment": {"duration": "15s", "templates": [
                            {"name": "baseline", "specRef": "stable", "weight": 10},
                            {"name": "canary", "specRef": "canary", "weight": 5}]}},
                        {"pause": {}}]}}}})
    };
    apply(&ns, rollout(1)).await;
    wait_for(&ns, "Healthy on version 1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    apply(&ns, rollout(2)).await;
    let running = step_experiment_running(&ns).await;
    let name = running.name_any();
    let (baseline, canary) = (format!("{name}-baseline"), format!("{name}-canary"));
    let shared = vec![
        ("web-stable".to_owned(), Some(65), Some(80)),
        ("web-canary".to_owned(), Some(20), Some(80)),
        (baseline.clone(), Some(10), Some(8080)),
        (canary.clone(), Some(5), Some(8080)),
    ];
    eventually("the templates' shares on the route", LIMIT, || async {
        (route_backends(&ns).await == shared).then_some(())
    })
    .await;
    // Each Service selects its template's pods alone, on the containers' port.
    let services = ns.api::<k8s_openapi::api::core::v1::Service>();
    let statuses = running.status.clone().unwrap_or_default().template_statuses;
    for (service, template) in [(&baseline, "baseline"), (&canary, "canary")] {
        let found = services
            .get(service)
            .await
            .unwrap_or_else(|e| panic!("Service {service}: {e}"));
        let spec = found.spec.unwrap_or_default();
        let hash = statuses
            .iter()
            .find(|t| t.name == template)
            .and_then(|t| t.pod_template_hash.clone());
        let selector = spec.selector.unwrap_or_default();
        assert_eq!(
            selector.get(POD_TEMPLATE_HASH_LABEL),
            hash.as_ref(),
            "{selector:?}"
        );
        let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [8080]);
    }
    let rollouts = ns.api::<weir::api::Rollout>();
    let recorded = rollouts
        .get("web")
        .await
        .ok()
        .and_then(|r| r.status)
        .map(|s| s.experiment_services)
        .unwrap_or_default();
    assert_eq!(recorded, [baseline.clone(), canary.clone()]);
    // The experiment ends: the shares go back to the stable, the step after it is reached.
    wait_for(&ns, "the pause after the experiment", |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(2)
    })
    .await;
    let back = vec![
        ("web-stable".to_owned(), Some(80), Some(80)),
        ("web-canary".to_owned(), Some(20), Some(80)),
    ];
    eventually(
        "the route back to stable and canary alone",
        LIMIT,
        || async { (route_backends(&ns).await == back).then_some(()) },
    )
    .await;
    wait_for(&ns, "no experiment Service recorded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.experiment_services.is_empty())
    })
    .await;
    // Deleted once the pods behind them are gone (after the scale-down delay, 30 s).
    eventually("the experiment's Services deleted", LIMIT * 2, || async {
        let left = services
            .list(&ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}")))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}
