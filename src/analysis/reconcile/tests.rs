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

fn values(pairs: &[(&str, &str, bool)]) -> BTreeMap<String, ArgValue> {
    pairs
        .iter()
        .map(|(name, value, secret)| {
            (
                (*name).to_owned(),
                ArgValue {
                    value: (*value).to_owned(),
                    secret: *secret,
                },
            )
        })
        .collect()
}

#[test]
fn conditions_are_judged_with_their_arguments_filled_and_checked_again() {
    let at = "spec.metrics[0] (metric \"m\")";
    let filled = with_conditions_filled(
        &metric("result[0] >= {{args.min}}"),
        at,
        &values(&[("min", "0.95", false)]),
    )
    .expect("filled");
    assert_eq!(
        filled.success_condition.as_deref(),
        Some("result[0] >= 0.95")
    );
    assert_eq!(
        verdict::judge(&filled, &verdict::QueryValue::Vector(vec![0.97])).phase,
        AnalysisPhase::Successful
    );
    // A value that makes the condition what validation would refuse is refused now, naming
    // the field, with a Secret value masked.
    let Err(Unready::Never(why)) = with_conditions_filled(
        &metric("result[0] >= {{args.min}}"),
        at,
        &values(&[("min", "result.all(a, result.all(b, a < b))", true)]),
    ) else {
        panic!("refused");
    };
    assert!(
        why.contains("successCondition") && why.contains("<secret>"),
        "{why}"
    );
    assert!(!why.contains("result.all(a"), "{why}");
    // Without placeholders the metric is as it was.
    let plain = metric("result[0] >= 0.9");
    assert_eq!(
        with_conditions_filled(&plain, at, &values(&[]))
            .map(|m| m == plain)
            .ok(),
        Some(true)
    );
}
