//! The statistical judge on the local control plane: the simulated data plane answers each
//! version with noisy latencies drawn from a seed (`weir-sim traffic --seed`), labelled by
//! pod-template hash; Prometheus scrapes them; a Rollout's analysis step compares the
//! canary with the stable version (`{{args.baseline-hash}}`, filled by weir).

mod support;

use kube::api::ListParams;
use serde_json::{Value, json};
use support::app::{LIMIT, app, apply, latency_judge, mean_latency, phase, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, simulator_with};
use weir::api::analysis::{AnalysisPhase, AnalysisRun, Measurement};
use weir::api::rollout::RolloutPhase;

/// Measurements in the analysis window: one every 5 s for a minute.
const WINDOW: i32 = 12;

/// The judge (`support::app::latency_judge`) over the analysis window.
fn judged(ns: &TestNamespace) -> Value {
    latency_judge(ns, WINDOW)
}

/// A fixed threshold loose enough never to flap on the noise: 150 ms, the slowest answer
/// the stable version ever gives.
fn fixed_threshold(ns: &TestNamespace) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "latency"},
        "spec": {"args": [{"name": "canary-hash"}],
            "metrics": [{"name": "latency", "interval": "5s", "count": WINDOW,
                "initialDelay": "10s", "successCondition": "result[0] < 0.15",
                "provider": {"prometheus": {"query": mean_latency(ns, "canary-hash")}}}]}})
}

/// The Rollout at `version`, its pods answering in `latency_ms` on average.
fn rollout(version: u32, latency_ms: u32) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"},
                    "annotations": {"sim.weir.dev/latency-ms": latency_ms.to_string()}},
                "spec": {"containers": [{"name": "web", "image": format!("web:{version}")}]}},
            "strategy": {"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
                "steps": [{"setWeight": 50},
                    {"analysis": {"templates": [{"templateName": "latency"}]}}]}}}})
}

/// Healthy on version 1 at 100 ms, then version 2 at `canary_ms` under `template`, with
/// noise drawn from `seed`: the AnalysisRun once its verdict is in, and the Rollout then.
async fn canary(
    test: &str,
    seed: u64,
    canary_ms: u32,
    template: fn(&TestNamespace) -> Value,
) -> (AnalysisRun, RolloutPhase) {
    let ns = TestNamespace::new(&client().await, test).await;
    let seed = seed.to_string();
    let (_simulator, _target) = simulator_with(&ns, &["--seed", &seed]).await;
    let _controller = ControllerProcess::measuring(&ns.name);
    app(&ns).await;
    apply(&ns, template(&ns)).await;
    apply(&ns, rollout(1, 100)).await;
    wait_for(&ns, "Healthy on version 1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().is_some_and(|s| s.stable_rs.is_some())
    })
    .await;
    apply(&ns, rollout(2, canary_ms)).await;
    let runs = ns.api::<AnalysisRun>();
    let run = eventually("the analysis' verdict", LIMIT * 3, || async {
        let list = runs.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|run| {
            run.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| !matches!(p, AnalysisPhase::Pending | AnalysisPhase::Running))
        })
    })
    .await;
    let rollout = wait_for(&ns, "the Rollout to settle", |r| {
        matches!(
            phase(r),
            Some(RolloutPhase::Healthy | RolloutPhase::Degraded)
        ) && r
            .status
            .as_ref()
            .is_some_and(|s| s.abort || s.current_step_index == Some(2))
    })
    .await;
    (run, phase(&rollout).unwrap_or(RolloutPhase::Progressing))
}

fn measurements(run: &AnalysisRun) -> (i32, Vec<Measurement>) {
    run.status
        .as_ref()
        .and_then(|s| s.metric_results.first())
        .map(|result| (result.count, result.measurements.clone()))
        .unwrap_or_else(|| panic!("the run has its metric's results: {:?}", run.status))
}

fn figure(measurement: &Measurement, key: &str) -> f64 {
    measurement
        .metadata
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the measurement records {key}: {measurement:?}"))
}

#[tokio::test]
async fn a_canary_twenty_percent_slower_is_failed_by_the_judge_before_its_window_ends() {
    let (run, settled) = canary("judge-slower", 1, 120, judged).await;
    let (count, measurements) = measurements(&run);
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Failed),
        "{:?}",
        run.status
    );
    assert!(
        count < WINDOW,
        "failed at measurement {count}, before the window's {WINDOW}"
    );
    let failed = measurements
        .iter()
        .find(|m| m.phase == AnalysisPhase::Failed)
        .unwrap_or_else(|| panic!("a failed measurement: {measurements:?}"));
    eprintln!(
        "failed at measurement {count} of {WINDOW}: {}",
        failed.message.as_deref().unwrap_or_default()
    );
    let effect = figure(failed, "effect");
    assert!(
        (1.1..1.3).contains(&effect),
        "the canary measured about 1.2 times the baseline: {effect}"
    );
    assert!(figure(failed, "pValue") < 0.05, "{failed:?}");
    assert!(figure(failed, "canarySamples") >= 2.0, "{failed:?}");
    assert_eq!(failed.metadata["method"], "sequential means");
    assert_eq!(settled, RolloutPhase::Degraded, "the canary is aborted");
}

#[tokio::test]
async fn the_same_canary_passes_a_fixed_threshold_loose_enough_not_to_flap() {
    let (run, settled) = canary("judge-threshold", 1, 120, fixed_threshold).await;
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Successful),
        "{:?}",
        run.status
    );
    assert_eq!(
        settled,
        RolloutPhase::Healthy,
        "the slower canary is promoted"
    );
}

#[tokio::test]
async fn a_canary_equal_to_its_baseline_is_not_failed() {
    // One seed here; the false-alarm rate over many is the pure simulation's to check
    // (judge::sequential's tests).
    let (run, settled) = canary("judge-equal", 2, 100, judged).await;
    let (count, measurements) = measurements(&run);
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Successful),
        "{:?}",
        run.status
    );
    assert_eq!(count, WINDOW, "measured for the whole window");
    let last = measurements
        .last()
        .unwrap_or_else(|| panic!("measurements"));
    assert!((0.95..1.05).contains(&figure(last, "effect")), "{last:?}");
    assert_eq!(settled, RolloutPhase::Healthy);
}
