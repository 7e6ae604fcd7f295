use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::analysis::args::ArgValue;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0)
        .single()
        .expect("time")
}

fn spec(metrics: serde_json::Value, extra: serde_json::Value) -> AnalysisRunSpec {
    let mut raw = json!({"metrics": metrics});
    if let (Some(raw), Some(extra)) = (raw.as_object_mut(), extra.as_object()) {
        raw.extend(extra.clone());
    }
    serde_json::from_value(raw).expect("run spec")
}

fn metric(name: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut base = json!({"name": name, "successCondition": "true", "provider": {"prometheus": {"query": "up"}}});
    if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
        base.extend(fields.clone());
    }
    base
}

fn schedule(fields: serde_json::Value) -> Schedule {
    schedules(
        &spec(json!([metric("m", fields)]), json!({})),
        &BTreeMap::new(),
    )
    .expect("schedule")
    .remove(0)
}

fn measurement(phase: AnalysisPhase, finished: i64) -> Measurement {
    Measurement {
        phase,
        value: Some("[1]".into()),
        query: Some("up".into()),
        message: Some(format!("{phase:?} at {finished}")),
        metadata: Default::default(),
        started_at: to_k8s(at(finished)),
        finished_at: Some(to_k8s(at(finished))),
    }
}

fn recorded(schedule: &Schedule, phases: &[AnalysisPhase]) -> AnalysisRunStatus {
    let mut status = AnalysisRunStatus {
        started_at: Some(to_k8s(at(0))),
        ..AnalysisRunStatus::default()
    };
    for (i, phase) in phases.iter().enumerate() {
        record(&mut status, schedule, measurement(*phase, i as i64));
    }
    status
}

fn phase_after(schedule: &Schedule, phases: &[AnalysisPhase]) -> AnalysisPhase {
    recorded(schedule, phases).metric_results[0].phase
}

#[test]
fn schedules_default_like_argo() {
    let once = schedule(json!({}));
    assert_eq!(
        once.count,
        Some(1),
        "no interval, no count: one measurement"
    );
    assert_eq!(once.failure_limit, 0);
    assert_eq!(once.inconclusive_limit, 0);
    assert_eq!(once.consecutive_error_limit, 4);
    assert_eq!(once.retention, 10);
    assert_eq!(once.initial_delay, Duration::ZERO);
    let unbounded = schedule(json!({"interval": "30s"}));
    assert_eq!(
        unbounded.count, None,
        "an interval without a count runs until stopped"
    );
    assert_eq!(unbounded.interval, Some(Duration::from_secs(30)));
    let counted =
        schedule(json!({"interval": "1m", "count": 3, "initialDelay": "10s", "failureLimit": 2}));
    assert_eq!(counted.count, Some(3));
    assert_eq!(counted.failure_limit, 2);
    assert_eq!(counted.initial_delay, Duration::from_secs(10));
}

#[test]
fn schedule_fields_take_arguments_and_bad_values_name_metric_and_field() {
    let run = spec(
        json!([metric(
            "latency",
            json!({"count": "{{args.n}}", "interval": "{{args.every}}"})
        )]),
        json!({"measurementRetention": [{"metricName": "*", "limit": 3}], "dryRun": [{"metricName": "latency"}]}),
    );
    let args = BTreeMap::from([
        (
            "n".to_string(),
            ArgValue {
                value: "5".into(),
                secret: false,
            },
        ),
        (
            "every".to_string(),
            ArgValue {
                value: "2s".into(),
                secret: false,
            },
        ),
    ]);
    let found = schedules(&run, &args).expect("schedules").remove(0);
    assert_eq!(
        (found.count, found.interval),
        (Some(5), Some(Duration::from_secs(2)))
    );
    assert_eq!(found.retention, 3);
    assert!(found.dry_run);

    let error = schedules(&run, &BTreeMap::new()).expect_err("no args");
    assert_eq!(
        error,
        "spec.metrics[0].count (metric \"latency\"): argument \"n\" has no value"
    );
    let bad = spec(
        json!([metric("m", json!({"failureLimit": "lots"}))]),
        json!({}),
    );
    let error = schedules(&bad, &BTreeMap::new()).expect_err("bad number");
    assert!(
        error.starts_with("spec.metrics[0].failureLimit (metric \"m\")"),
        "{error}"
    );
}

#[test]
fn measurements_are_due_after_the_initial_delay_then_each_interval() {
    let every = schedule(json!({"interval": "10s", "count": 2, "initialDelay": "5s"}));
    let mut status = AnalysisRunStatus {
        started_at: Some(to_k8s(at(0))),
        ..AnalysisRunStatus::default()
    };
    assert_eq!(
        due(std::slice::from_ref(&every), &status, at(4)),
        (vec![], Some(at(5)))
    );
    assert_eq!(
        due(std::slice::from_ref(&every), &status, at(5)),
        (vec![0], None)
    );
    record(
        &mut status,
        &every,
        measurement(AnalysisPhase::Successful, 6),
    );
    assert_eq!(
        due(std::slice::from_ref(&every), &status, at(7)),
        (vec![], Some(at(16))),
        "the interval runs from the end of the last measurement"
    );
    record(
        &mut status,
        &every,
        measurement(AnalysisPhase::Successful, 16),
    );
    assert_eq!(
        due(std::slice::from_ref(&every), &status, at(100)),
        (vec![], None),
        "count reached"
    );
}

#[test]
fn the_earliest_of_several_metrics_sets_the_requeue() {
    let run = spec(
        json!([
            metric("a", json!({"interval": "30s"})),
            metric("b", json!({"initialDelay": "7s"}))
        ]),
        json!({}),
    );
    let all = schedules(&run, &BTreeMap::new()).expect("schedules");
    let mut status = AnalysisRunStatus {
        started_at: Some(to_k8s(at(0))),
        ..AnalysisRunStatus::default()
    };
    assert_eq!(due(&all, &status, at(0)), (vec![0], Some(at(7))));
    record(
        &mut status,
        &all[0],
        measurement(AnalysisPhase::Successful, 1),
    );
    assert_eq!(due(&all, &status, at(8)), (vec![1], Some(at(31))));
}

#[test]
fn records_keep_counts_and_only_the_newest_measurements() {
    use AnalysisPhase::*;
    let kept = schedule(json!({"interval": "1s", "consecutiveErrorLimit": 10}));
    let kept = Schedule {
        retention: 2,
        ..kept
    };
    let status = recorded(&kept, &[Error, Error, Successful, Error, Failed]);
    let result = &status.metric_results[0];
    assert_eq!(result.count, 5);
    assert_eq!((result.successful, result.failed, result.error), (1, 1, 3));
    assert_eq!(
        result.consecutive_error, 0,
        "a non-error ends the run of errors"
    );
    let times: Vec<_> = result
        .measurements
        .iter()
        .map(|m| m.message.clone())
        .collect();
    assert_eq!(
        times,
        vec![Some("Error at 3".into()), Some("Failed at 4".into())]
    );
}

#[test]
fn limits_are_passed_when_exceeded_not_reached() {
    use AnalysisPhase::*;
    let tolerant = schedule(
        json!({"interval": "1s", "failureLimit": 1, "inconclusiveLimit": 1, "consecutiveErrorLimit": 2}),
    );
    assert_eq!(phase_after(&tolerant, &[Failed]), Running);
    assert_eq!(phase_after(&tolerant, &[Failed, Failed]), Failed);
    assert_eq!(phase_after(&tolerant, &[Inconclusive]), Running);
    assert_eq!(
        phase_after(&tolerant, &[Inconclusive, Inconclusive]),
        Inconclusive
    );
    assert_eq!(phase_after(&tolerant, &[Error, Error]), Running);
    assert_eq!(phase_after(&tolerant, &[Error, Error, Error]), Error);
    assert_eq!(
        phase_after(&tolerant, &[Error, Error, Successful, Error, Error]),
        Running,
        "only consecutive errors count"
    );
    let strict = schedule(json!({}));
    assert_eq!(
        phase_after(&strict, &[Failed]),
        Failed,
        "failureLimit 0: one failure fails"
    );
    assert_eq!(phase_after(&strict, &[Successful]), Successful);
}

#[test]
fn a_metric_that_never_succeeded_never_passes() {
    use AnalysisPhase::*;
    let three =
        schedule(json!({"interval": "1s", "count": 3, "failureLimit": 5, "inconclusiveLimit": 5}));
    assert_eq!(
        phase_after(&three, &[Error, Error, Error]),
        Error,
        "every measurement errored"
    );
    assert_eq!(phase_after(&three, &[Failed, Error, Inconclusive]), Failed);
    assert_eq!(
        phase_after(&three, &[Inconclusive, Error, Inconclusive]),
        Inconclusive
    );
    assert_eq!(
        phase_after(&three, &[Failed, Failed, Successful]),
        Successful,
        "failures within the limit"
    );
    let status = recorded(&three, &[Error, Error, Error]);
    let message = status.metric_results[0].message.clone().unwrap_or_default();
    assert!(
        message.starts_with("no measurement succeeded (0 failed, 0 inconclusive, 3 errored)"),
        "{message}"
    );
}

#[test]
fn the_worst_metric_decides_and_names_itself() {
    use AnalysisPhase::*;
    let run = spec(
        json!([
            metric("a", json!({})),
            metric("b", json!({})),
            metric("c", json!({}))
        ]),
        json!({}),
    );
    let all = schedules(&run, &BTreeMap::new()).expect("schedules");
    let mut status = AnalysisRunStatus {
        started_at: Some(to_k8s(at(0))),
        ..AnalysisRunStatus::default()
    };
    record(&mut status, &all[0], measurement(Inconclusive, 1));
    conclude(&mut status, &all, false, at(1));
    assert_eq!(
        status.phase,
        Some(Inconclusive),
        "a metric ending badly ends the run"
    );
    let mut status = AnalysisRunStatus {
        started_at: Some(to_k8s(at(0))),
        ..AnalysisRunStatus::default()
    };
    record(&mut status, &all[0], measurement(Inconclusive, 1));
    record(&mut status, &all[1], measurement(Failed, 1));
    record(&mut status, &all[2], measurement(Successful, 1));
    conclude(&mut status, &all, false, at(2));
    assert_eq!(status.phase, Some(Failed));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message
            .starts_with("metric \"b\" Failed: 1 failed measurement (failureLimit 0): Failed at 1"),
        "{message}"
    );
    assert_eq!(status.completed_at, Some(to_k8s(at(2))));
    let summary = status.run_summary.clone().unwrap_or_default();
    assert_eq!(
        (
            summary.count,
            summary.successful,
            summary.failed,
            summary.inconclusive
        ),
        (3, 1, 1, 1)
    );

    conclude(&mut status, &all, true, at(9));
    assert_eq!(
        status.completed_at,
        Some(to_k8s(at(2))),
        "a final run is never revisited"
    );
}

#[test]
fn dry_run_metrics_are_recorded_but_never_decide() {
    use AnalysisPhase::*;
    let run = spec(
        json!([metric("real", json!({})), metric("trial", json!({}))]),
        json!({"dryRun": [{"metricName": "trial"}]}),
    );
    let all = schedules(&run, &BTreeMap::new()).expect("schedules");
    let mut status = AnalysisRunStatus::default();
    record(&mut status, &all[1], measurement(Failed, 1));
    conclude(&mut status, &all, false, at(1));
    assert_eq!(
        status.phase,
        Some(Running),
        "the dry-run failure decides nothing"
    );
    record(&mut status, &all[0], measurement(Successful, 2));
    conclude(&mut status, &all, false, at(2));
    assert_eq!(status.phase, Some(Successful));
    assert_eq!(status.dry_run_summary.map(|s| s.failed), Some(1));
}

#[test]
fn stopping_ends_what_is_still_measuring() {
    use AnalysisPhase::*;
    let run = spec(
        json!([
            metric("bg", json!({"interval": "10s"})),
            metric("late", json!({"initialDelay": "1h"}))
        ]),
        json!({}),
    );
    let all = schedules(&run, &BTreeMap::new()).expect("schedules");
    let mut status = AnalysisRunStatus::default();
    record(&mut status, &all[0], measurement(Successful, 1));
    conclude(&mut status, &all, false, at(1));
    assert_eq!(status.phase, Some(Running));
    conclude(&mut status, &all, true, at(5));
    assert_eq!(
        status.phase,
        Some(Inconclusive),
        "a metric stopped before measuring did not pass"
    );
    let late = status
        .metric_results
        .iter()
        .find(|r| r.name == "late")
        .map(|r| r.message.clone());
    assert_eq!(late, Some(Some("stopped before any measurement".into())));
}

fn any_phase() -> impl Strategy<Value = AnalysisPhase> {
    prop::sample::select(vec![
        AnalysisPhase::Successful,
        AnalysisPhase::Failed,
        AnalysisPhase::Inconclusive,
        AnalysisPhase::Error,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any limits and any order of outcomes: counts add up, a run is Successful only
    /// when every deciding metric had a success, all-error is never Successful, and a final
    /// phase never changes.
    #[test]
    fn counting_rules_hold_for_every_sequence(
        failure_limit in 0i32..3,
        inconclusive_limit in 0i32..3,
        error_limit in 0i32..3,
        count in 1i32..6,
        outcomes in prop::collection::vec((0usize..2, any_phase()), 0..14),
        stop in any::<bool>(),
    ) {
        let fields = json!({"interval": "1s", "count": count, "failureLimit": failure_limit,
            "inconclusiveLimit": inconclusive_limit, "consecutiveErrorLimit": error_limit});
        let run = spec(json!([metric("a", fields.clone()), metric("b", fields)]), json!({}));
        let all = schedules(&run, &BTreeMap::new()).expect("schedules");
        let mut status = AnalysisRunStatus { started_at: Some(to_k8s(at(0))), ..AnalysisRunStatus::default() };
        let mut final_phase = None;
        for (step, (which, phase)) in outcomes.iter().enumerate() {
            let now = at(step as i64 + 1);
            let (due_now, _) = due(&all, &status, at(1_000_000));
            if status.phase.is_some_and(AnalysisPhase::is_final) || !due_now.contains(which) {
                continue;
            }
            record(&mut status, &all[*which], measurement(*phase, step as i64));
            conclude(&mut status, &all, false, now);
            if let Some(seen) = final_phase {
                prop_assert_eq!(status.phase, Some(seen));
            } else if status.phase.is_some_and(AnalysisPhase::is_final) {
                final_phase = status.phase;
            }
        }
        conclude(&mut status, &all, stop, at(100));
        if let Some(seen) = final_phase {
            prop_assert_eq!(status.phase, Some(seen), "a final phase never changes");
        }
        for result in &status.metric_results {
            prop_assert_eq!(result.count, result.successful + result.failed + result.inconclusive + result.error);
            prop_assert!(result.consecutive_error <= result.error);
            prop_assert!(result.count <= count);
        }
        if status.phase == Some(AnalysisPhase::Successful) {
            for name in ["a", "b"] {
                let result = status.metric_results.iter().find(|r| r.name == name);
                prop_assert!(result.is_some_and(|r| r.successful > 0), "metric {} passed without a success", name);
            }
        }
        let errors_only = status.metric_results.iter().any(|r| r.count > 0 && r.error == r.count);
        if errors_only {
            prop_assert_ne!(status.phase, Some(AnalysisPhase::Successful));
        }
    }
}

#[test]
fn a_limit_of_minus_one_is_no_limit() {
    use AnalysisPhase::*;
    let unlimited =
        schedule(json!({"interval": "1s", "failureLimit": -1, "inconclusiveLimit": "-1"}));
    assert_eq!(unlimited.failure_limit, -1);
    let many = [Failed, Inconclusive, Failed, Inconclusive, Failed];
    assert_eq!(phase_after(&unlimited, &many), Running);
    let bounded = schedule(json!({"interval": "1s", "count": 3, "failureLimit": -1}));
    assert_eq!(
        phase_after(&bounded, &[Failed, Successful, Failed]),
        Successful,
        "at the count, a metric that succeeded passes"
    );
    assert_eq!(
        phase_after(&bounded, &[Failed, Failed, Failed]),
        Failed,
        "but never without a success"
    );
    let refused = schedules(
        &spec(json!([metric("m", json!({"failureLimit": -2}))]), json!({})),
        &BTreeMap::new(),
    );
    assert!(refused.is_err(), "below -1 is no limit Argo knows");
}

#[test]
fn consecutive_successes_end_a_metric_successfully() {
    use AnalysisPhase::*;
    let three =
        schedule(json!({"interval": "1s", "failureLimit": -1, "consecutiveSuccessLimit": 3}));
    assert_eq!(phase_after(&three, &[Successful, Successful]), Running);
    assert_eq!(
        phase_after(
            &three,
            &[Successful, Successful, Failed, Successful, Successful]
        ),
        Running,
        "a failure restarts the streak"
    );
    let status = recorded(&three, &[Failed, Successful, Successful, Successful]);
    let result = &status.metric_results[0];
    assert_eq!(result.phase, Successful);
    assert_eq!(result.consecutive_success, 3);
    assert!(
        result
            .message
            .as_deref()
            .is_some_and(|m| m.contains("consecutiveSuccessLimit 3")),
        "{result:?}"
    );
    let (due_now, later) = due(std::slice::from_ref(&three), &status, at(100));
    assert!(due_now.is_empty() && later.is_none(), "it stops measuring");
}

/// The rules of `metric_phase` for an unbounded metric, written out plainly: what the
/// limits make of a sequence of outcomes.
fn expected_phase(
    outcomes: &[AnalysisPhase],
    failure_limit: i32,
    inconclusive_limit: i32,
    error_limit: i32,
    success_limit: i32,
) -> AnalysisPhase {
    use AnalysisPhase::*;
    let count = |phase| outcomes.iter().filter(|p| **p == phase).count() as i32;
    let trailing = |phase| outcomes.iter().rev().take_while(|p| **p == phase).count() as i32;
    if failure_limit >= 0 && count(Failed) > failure_limit {
        Failed
    } else if inconclusive_limit >= 0 && count(Inconclusive) > inconclusive_limit {
        Inconclusive
    } else if trailing(Error) > error_limit {
        Error
    } else if success_limit > 0 && trailing(Successful) >= success_limit {
        Successful
    } else {
        Running
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any limits, -1 and consecutiveSuccessLimit included, and any outcomes: the metric
    /// ends at the first outcome that passes a limit (or completes a run of successes), in
    /// that phase, and runs on until then.
    #[test]
    fn limits_of_minus_one_and_success_streaks_hold_for_every_sequence(
        failure_limit in -1i32..3,
        inconclusive_limit in -1i32..3,
        error_limit in 0i32..3,
        success_limit in 0i32..4,
        outcomes in prop::collection::vec(any_phase(), 0..14),
    ) {
        let schedule = schedule(json!({"interval": "1s", "failureLimit": failure_limit,
            "inconclusiveLimit": inconclusive_limit, "consecutiveErrorLimit": error_limit,
            "consecutiveSuccessLimit": success_limit}));
        let mut status = AnalysisRunStatus { started_at: Some(to_k8s(at(0))), ..AnalysisRunStatus::default() };
        for (index, outcome) in outcomes.iter().enumerate() {
            record(&mut status, &schedule, measurement(*outcome, index as i64));
            let result = &status.metric_results[0];
            let expected = expected_phase(&outcomes[..=index], failure_limit, inconclusive_limit, error_limit, success_limit);
            prop_assert_eq!(result.phase, expected, "after {:?}", &outcomes[..=index]);
            prop_assert!(result.consecutive_success <= result.successful);
            if expected != AnalysisPhase::Running {
                break;
            }
        }
    }
}

#[test]
fn looks_with_no_verdict_yet_end_inconclusive_saying_why() {
    use AnalysisPhase::*;
    // A judge records each look before it has seen enough as Running: the metric ends
    // Inconclusive, never Successful, and says what the last look said.
    let three = schedule(json!({"interval": "10s", "count": 3}));
    let status = recorded(&three, &[Running, Running, Running]);
    let result = &status.metric_results[0];
    assert_eq!(result.phase, Inconclusive);
    assert_eq!(result.count, 3);
    assert_eq!(
        result.message.as_deref(),
        Some("no measurement succeeded (0 failed, 0 inconclusive, 0 errored): Running at 2")
    );
    // Two looks in, it is still running.
    assert_eq!(phase_after(&three, &[Running, Running]), Running);
}
