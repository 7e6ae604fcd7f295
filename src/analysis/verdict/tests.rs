use proptest::prelude::*;
use serde_json::json;

use super::*;

fn metric(fields: serde_json::Value) -> Metric {
    let mut base = json!({"name": "m", "provider": {"prometheus": {"query": "up"}}});
    if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
        base.extend(fields.clone());
    }
    serde_json::from_value(base).expect("metric")
}

fn vector(values: &[f64]) -> QueryValue {
    QueryValue::Vector(values.to_vec())
}

fn phase(metric: &Metric, value: &QueryValue) -> AnalysisPhase {
    judge(metric, value).phase
}

#[test]
fn argo_conditions_over_vectors() {
    use AnalysisPhase::*;
    let success = metric(json!({"successCondition": "result[0] >= 0.95"}));
    assert_eq!(phase(&success, &vector(&[0.97])), Successful);
    assert_eq!(phase(&success, &vector(&[0.5])), Failed);
    assert_eq!(phase(&success, &vector(&[1.0])), Successful, "1.0 >= 0.95");
    let int_literal = metric(json!({"successCondition": "result[0] == 0"}));
    assert_eq!(
        phase(&int_literal, &vector(&[0.0])),
        Successful,
        "a double equals an int literal of the same value"
    );
    let failure = metric(json!({"failureCondition": "result[0] > 0.05"}));
    assert_eq!(phase(&failure, &vector(&[0.01])), Successful);
    assert_eq!(phase(&failure, &vector(&[0.31])), Failed);
    let both = metric(
        json!({"successCondition": "result[0] >= 0.95", "failureCondition": "result[0] < 0.5"}),
    );
    assert_eq!(phase(&both, &vector(&[0.99])), Successful);
    assert_eq!(phase(&both, &vector(&[0.2])), Failed);
    assert_eq!(phase(&both, &vector(&[0.7])), Inconclusive);
    let all = metric(json!({"successCondition": "result.all(x, x < 1000)"}));
    assert_eq!(phase(&all, &vector(&[1.0, 999.0])), Successful);
    assert_eq!(phase(&all, &vector(&[1.0, 1000.0])), Failed);
    let size = metric(json!({"successCondition": "size(result) == 2 && result[1] > result[0]"}));
    assert_eq!(phase(&size, &vector(&[1.0, 2.0])), Successful);
}

#[test]
fn argo_conditions_over_scalars() {
    use AnalysisPhase::*;
    let scalar = metric(json!({"successCondition": "result >= 0.95"}));
    assert_eq!(phase(&scalar, &QueryValue::Scalar(0.99)), Successful);
    assert_eq!(phase(&scalar, &QueryValue::Scalar(0.9)), Failed);
    let indexed = metric(json!({"successCondition": "result[0] >= 0.95"}));
    let verdict = judge(&indexed, &QueryValue::Scalar(0.99));
    assert_eq!(verdict.phase, Error);
    assert!(
        verdict.message.contains("write `result`, not `result[0]`"),
        "{}",
        verdict.message
    );
}

#[test]
fn the_message_names_condition_and_value() {
    let success = metric(json!({"successCondition": "result[0] >= 0.95"}));
    assert_eq!(
        judge(&success, &vector(&[0.31])).message,
        "successCondition `result[0] >= 0.95` is false for [0.31]"
    );
    let failure = metric(json!({"failureCondition": "result > 5"}));
    assert_eq!(
        judge(&failure, &QueryValue::Scalar(7.0)).message,
        "failureCondition `result > 5` is true for 7"
    );
}

#[test]
fn no_data_is_inconclusive_unless_told_otherwise() {
    use AnalysisPhase::*;
    for value in [
        vector(&[]),
        vector(&[f64::NAN]),
        vector(&[0.99, f64::NAN]),
        QueryValue::Scalar(f64::NAN),
    ] {
        let plain = metric(json!({"successCondition": "result[0] >= 0.95"}));
        assert_eq!(
            judge(&plain, &value),
            Verdict::new(Inconclusive, NO_DATA),
            "{value}"
        );
        let failed = metric(json!({"successCondition": "true", "noDataAs": "Failed"}));
        assert_eq!(phase(&failed, &value), Failed);
        let error = metric(json!({"thresholdRange": {"min": 0}, "noDataAs": "Error"}));
        assert_eq!(phase(&error, &value), Error);
    }
}

#[test]
fn wide_vectors_are_shown_in_part() {
    let wide = QueryValue::Vector((0..25).map(f64::from).collect());
    assert_eq!(
        wide.to_string(),
        "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (25 samples)]"
    );
    assert_eq!(vector(&[0.5, 2.0]).to_string(), "[0.5, 2]");
}

#[test]
fn conditions_that_do_not_give_a_bool_are_errors() {
    let number = metric(json!({"successCondition": "result[0] + 1.0"}));
    let verdict = judge(&number, &vector(&[1.0]));
    assert_eq!(verdict.phase, AnalysisPhase::Error);
    assert!(
        verdict.message.contains("must give true or false"),
        "{}",
        verdict.message
    );
    let out_of_range = metric(json!({"successCondition": "result[3] > 1.0"}));
    assert_eq!(phase(&out_of_range, &vector(&[1.0])), AnalysisPhase::Error);
}

#[test]
fn threshold_ranges_hold_for_every_sample() {
    use AnalysisPhase::*;
    let range = metric(json!({"thresholdRange": {"min": 0.95}}));
    assert_eq!(phase(&range, &vector(&[0.99, 0.96])), Successful);
    assert_eq!(phase(&range, &vector(&[0.99, 0.5])), Failed);
    let max = metric(json!({"thresholdRange": {"max": 500}}));
    assert_eq!(phase(&max, &QueryValue::Scalar(500.0)), Successful);
    let verdict = judge(&max, &QueryValue::Scalar(501.0));
    assert_eq!(verdict.phase, Failed);
    assert_eq!(verdict.message, "501 is above the thresholdRange max 500");
}

#[test]
fn invalid_cel_is_rejected_with_argo_hints() {
    assert_eq!(check_condition("result[0] >= 0.95"), Ok(()));
    assert_eq!(check_condition("result.exists(x, x > 5.0)"), Ok(()));
    assert_eq!(
        check_condition("result > 1"),
        Ok(()),
        "type errors depend on the shape"
    );
    let error = check_condition("all(result, # < 1000)").expect_err("expr syntax");
    assert!(error.contains("`result.all(x, x < 1000)`"), "{error}");
    let error = check_condition("result[0] > 1 and result[1] < 2").expect_err("and");
    assert!(error.contains("`&&`"), "{error}");
    let error = check_condition("isNaN(result[0])").expect_err("isNaN");
    assert!(
        error.contains("\"isNaN\" is not defined") && error.contains("no data"),
        "{error}"
    );
    let error = check_condition("reslt[0] > 1").expect_err("typo");
    assert!(error.contains("\"reslt\""), "{error}");
    let error = check_condition("result[0] > 0.5 || foo").expect_err("behind ||");
    assert!(error.contains("\"foo\""), "{error}");
    let error = check_condition("result[0] < 0.5 && bar(result[0])").expect_err("behind &&");
    assert!(error.contains("\"bar\""), "{error}");
    assert_eq!(
        check_condition("result.map(v, v * 2.0).all(w, w > 1.0)"),
        Ok(())
    );
    let deep = format!("{}result{}", "(".repeat(40), ")".repeat(40));
    assert!(check_condition(&deep).is_err());
    assert!(check_condition(&"result[0] > 1.0 && ".repeat(100)).is_err());
    let error = check_condition("result[0] >=").expect_err("syntax");
    assert!(error.starts_with("not valid CEL"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No data never passes, whatever the conditions say.
    #[test]
    fn no_data_is_never_successful(
        condition in prop::sample::select(vec!["true", "result[0] >= 0.0", "size(result) == 0", "!false"]),
        nans in 0usize..3,
        values in prop::collection::vec(-1e6f64..1e6, 0..3),
    ) {
        let mut samples = values;
        samples.extend(std::iter::repeat_n(f64::NAN, nans));
        let value = QueryValue::Vector(samples);
        prop_assume!(value.is_no_data());
        let metric = metric(json!({"successCondition": condition}));
        prop_assert_ne!(judge(&metric, &value).phase, AnalysisPhase::Successful);
    }

    /// A threshold range and the equivalent CEL condition agree on every value.
    #[test]
    fn threshold_range_matches_its_cel_form(
        min in -100.0f64..100.0,
        width in 0.0f64..100.0,
        values in prop::collection::vec(-300.0f64..300.0, 1..4),
    ) {
        let max = min + width;
        let value = QueryValue::Vector(values);
        let range = metric(json!({"thresholdRange": {"min": min, "max": max}}));
        let cel = metric(json!({"successCondition": format!("result.all(x, x >= {min:?} && x <= {max:?})")}));
        prop_assert_eq!(judge(&range, &value).phase, judge(&cel, &value).phase);
    }
}
