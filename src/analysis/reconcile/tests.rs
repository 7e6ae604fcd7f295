use super::*;

fn metric(condition: &str) -> Metric {
    serde_json::from_value(serde_json::json!({"name": "m",
        "provider": {"prometheus": {"query": "q"}}, "successCondition": condition}))
    .expect("metric")
}

fn samples() -> verdict::QueryValue {
    verdict::QueryValue::Vector(vec![0.01; verdict::MAX_SAMPLES])
}

#[tokio::test]
async fn a_verdict_comes_from_the_blocking_pool() {
    let verdict = judge_off_the_workers(
        &metric("result.all(x, x < 0.05)"),
        samples(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(verdict.phase, AnalysisPhase::Successful, "{verdict:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_judge_past_its_limit_is_an_error_and_the_worker_is_free() {
    // A limit no judge of 10,000 samples meets: the reconcile gets its answer at once, and the
    // single async worker is never blocked by the judging.
    let started = std::time::Instant::now();
    let verdict = judge_off_the_workers(
        &metric("result.all(x, x < 0.05 && x >= 0.0)"),
        samples(),
        Duration::ZERO,
    )
    .await;
    assert_eq!(verdict.phase, AnalysisPhase::Error, "{verdict:?}");
    assert_eq!(
        verdict.message,
        "judging the result took longer than 0s; simplify successCondition and failureCondition (one pass over result)"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}
