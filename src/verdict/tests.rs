use std::time::{Duration, Instant};

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
fn argo_web_conditions_over_the_selected_json() {
    use AnalysisPhase::*;
    let json = |value: serde_json::Value| QueryValue::Json(value);
    let both = metric(json!({"successCondition": "result.ok && result.successPercent >= 0.90"}));
    assert!(check_condition("result.ok && result.successPercent >= 0.90").is_ok());
    assert_eq!(
        phase(&both, &json(json!({"ok": true, "successPercent": 0.95}))),
        Successful
    );
    assert_eq!(
        phase(&both, &json(json!({"ok": true, "successPercent": 0.5}))),
        Failed
    );
    assert_eq!(
        phase(&both, &json(json!({"ok": false, "successPercent": 1}))),
        Failed
    );
    let flag = metric(json!({"successCondition": "result == true"}));
    assert_eq!(phase(&flag, &json(json!(true))), Successful);
    assert_eq!(phase(&flag, &json(json!(false))), Failed);
    let text = metric(json!({"successCondition": "result.status == 'healthy'"}));
    assert_eq!(
        phase(&text, &json(json!({"status": "healthy"}))),
        Successful
    );
    let count = metric(json!({"successCondition": "size(result) >= 2 && result.all(x, x < 5)"}));
    assert_eq!(phase(&count, &json(json!([1, 2, 3]))), Successful);
    assert_eq!(phase(&count, &json(json!([1, 9]))), Failed);
    // Nothing selected is no data, never judged.
    assert_eq!(phase(&flag, &json(serde_json::Value::Null)), Inconclusive);
    // A range judges JSON numbers, and says so of anything else.
    let range = metric(json!({"thresholdRange": {"max": 0.05}}));
    assert_eq!(phase(&range, &json(json!(0.01))), Successful);
    assert_eq!(phase(&range, &json(json!([0.01, 0.2]))), Failed);
    let verdict = judge(&range, &json(json!({"rate": 0.01})));
    assert_eq!(verdict.phase, Error);
    assert!(
        verdict.message.contains("thresholdRange judges numbers"),
        "{verdict:?}"
    );
    assert_eq!(
        json(json!({"a": "x".repeat(300)})).to_string().len(),
        200 + "... (311 bytes)".len()
    );
}

#[test]
fn json_results_past_their_bounds_are_named() {
    assert_eq!(json_beyond_bounds(&json!({"a": [1, 2, {"b": "c"}]})), None);
    let wide = json!((0..MAX_JSON_VALUES).collect::<Vec<usize>>());
    assert!(json_beyond_bounds(&wide).is_some_and(|w| w.contains("values")));
    let mut deep = json!(1);
    for _ in 0..=MAX_JSON_DEPTH {
        deep = json!([deep]);
    }
    assert!(json_beyond_bounds(&deep).is_some_and(|w| w.contains("nests")));
    let long = json!("x".repeat(MAX_JSON_TEXT + 1));
    assert!(json_beyond_bounds(&long).is_some_and(|w| w.contains("string")));
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

/// `result.all(a, result.all(b, ...))`, `levels` deep: the shape that took 4 s at 11 levels.
fn nested_all(levels: usize) -> String {
    let names: Vec<String> = (0..levels).map(|i| format!("v{i}")).collect();
    let mut text = format!("{} < 1.0", names[levels - 1]);
    for name in names.iter().rev() {
        text = format!("result.all({name}, {text})");
    }
    text
}

fn samples(n: usize) -> QueryValue {
    QueryValue::Vector((0..n).map(|i| (i % 1000) as f64 / 2000.0).collect())
}

#[test]
fn deeply_nested_comprehensions_are_refused_without_running() {
    let condition = nested_all(11);
    assert!(condition.len() < MAX_CONDITION, "fits the length limit");
    let started = Instant::now();
    let error = check_condition(&condition).expect_err("11 nested comprehensions");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused statically, took {:?}",
        started.elapsed()
    );
    assert_eq!(
        error,
        "nests 11 comprehensions (all, exists, exists_one, map, filter) inside each other; at most 2 are accepted: compare each sample once, e.g. result.all(x, x < 0.05), and join tests on one sample with && inside one comprehension"
    );
}

#[test]
fn two_passes_nested_over_result_are_refused_by_cost() {
    let error =
        check_condition("result.all(a, result.all(b, a <= b || b <= a))").expect_err("10^8 steps");
    assert!(
        error.starts_with("nests 2 comprehensions over result: estimated about 1.2e9 steps for 10,000 samples, above the limit of 150,000; compare each sample once"),
        "{error}"
    );
    // One pass inside a pass, without nesting: `in` walks the list once per sample.
    let error = check_condition("result.all(x, x in result)").expect_err("in over result");
    assert!(
        error.starts_with(
            "estimated about 1.0e8 steps for 10,000 samples, above the limit of 150,000"
        ),
        "{error}"
    );
    // Over short literals, nesting is cheap; inside a pass over result, even a short inner
    // loop multiplies the pass (each iteration costs about 60 ns a step).
    assert_eq!(
        check_condition("[0.5, 0.9].all(t, [1.0, 2.0].exists(u, t < u)) && result[0] < 0.5"),
        Ok(())
    );
    let error = check_condition("result.all(x, [0.5, 0.9].exists(t, x < t))")
        .expect_err("a loop per sample");
    assert!(error.starts_with("estimated 280,003 steps"), "{error}");
    // Two full passes are over the budget at 10,000 samples; one pass testing both is not.
    let error = check_condition("result.all(x, x < 0.05) && result.exists(x, x > 0.01)")
        .expect_err("two passes");
    assert!(error.starts_with("estimated 170,007 steps"), "{error}");
    assert_eq!(
        check_condition("result.all(x, x < 0.05 && x > 0.01)"),
        Ok(())
    );
}

#[test]
fn the_estimate_follows_lengths_through_the_expression() {
    let cost = |source: &str| estimated_cost(source).expect("parses");
    // One step per node, plus what a call is given.
    assert_eq!(cost("result[0] >= 0.95"), 5);
    assert_eq!(cost("true"), 1);
    // A comprehension pays its body (the condition and the step, 7 nodes) per sample, and its
    // range and result once.
    assert_eq!(cost("result.all(x, x < 0.05)"), 80_003);
    assert_eq!(cost("[1, 2, 3].all(x, x < 0.05)"), 30);
    // Comparing lists touches every element of both.
    assert_eq!(cost("result == result"), 20_003);
    // Lengths add up through `+`, and map and filter keep their range's length.
    assert!(cost("(result + result).all(x, x < 1.0)") > 2 * cost("result.all(x, x < 1.0)") - 10);
    // map appends in place: its pass costs its transform per sample.
    assert_eq!(
        cost("result.map(x, x * 2.0).all(y, y < 1.0)"),
        cost("result.all(x, x < 1.0)") + 60_002
    );
    assert!(cost("result.filter(x, x > 0.5).all(y, y < 1.0)") > 2 * cost("result.all(x, x < 1.0)"));
    // A list built per sample is paid for where it is iterated.
    let nested = cost("result.map(x, result).all(l, l.all(y, y < 1.0))");
    assert!(nested > 100_000_000, "{nested}");
    // A name bound by a macro shadows `result`.
    assert!(cost("[1.0].all(result, result < 2.0)") < 100);
    // Text is paid for by its length.
    assert!(cost("'aaaaaaaaaaaaaaaaaaaa'.contains('b')") > cost("'a'.contains('b')") + 18);
}

#[test]
fn unknown_names_are_found_without_running() {
    for (condition, name) in [
        ("isNaN(result[0])", "isNaN"),
        ("result[0] > 0.5 || foo", "foo"),
        ("result[0] < 0.5 && bar(result[0])", "bar"),
        // Never reached for a vector of samples, and still refused.
        ("size(result) > 100000 && isInf(result[0])", "isInf"),
        ("result.exists(x, x.foo())", "foo"),
        ("result.all(x, y < 1.0)", "y"),
        // A bound name is unbound outside its macro.
        ("result.all(x, x < 1.0) && x > 0.0", "x"),
        ("max(result) > 1.0", "max"),
        ("result.sum() > 1.0", "sum"),
    ] {
        let error = check_condition(condition).expect_err(condition);
        assert!(
            error.starts_with(&format!("{name:?} is not defined")),
            "{condition}: {error}"
        );
    }
    let error = check_condition("len(result) > 1").expect_err("len");
    assert!(error.contains("`size(result)`"), "{error}");
    for accepted in [
        "size(result) > 1 && result.size() > 1",
        "string(result[0]).startsWith('0.') && string(result[0]).endsWith('5')",
        "'abc'.contains('b') && int(result[0]) == 0 && double(1) == 1.0",
        "type(result[0]) == type(1.0) && dyn(result[0]) < 1.0 && bool('true')",
        "result.exists_one(x, x > 0.5)",
        "result.filter(x, x > 0.5).size() == 0",
        "has({'a': 1}.a) && uint(1) == 1u && bytes('a') == b'a'",
    ] {
        assert_eq!(check_condition(accepted), Ok(()), "{accepted}");
    }
}

/// The names the static check knows are the ones this build of `cel` declares: each is
/// found (a wrong argument is an overload error, never an undeclared name), and the names
/// of the CEL specification left out are undeclared here (they need cel's chrono or regex
/// features, which weir leaves off). Enabling one fails this test until the lists follow.
#[test]
fn the_known_functions_are_what_cel_declares() {
    let undeclared = |source: &str| {
        let program = Program::compile(source).expect(source);
        matches!(
            evaluate(&program, &QueryValue::Scalar(0.0)),
            Err(cel::ExecutionError::UndeclaredReference(_))
        )
    };
    for name in cost::GLOBAL_FUNCTIONS {
        assert!(!undeclared(&format!("{name}(null, null)")), "{name}");
    }
    for name in cost::MEMBER_FUNCTIONS {
        assert!(!undeclared(&format!("null.{name}(null, null)")), "{name}");
    }
    for name in [
        "matches",
        "duration",
        "timestamp",
        "getFullYear",
        "getHours",
        "max",
        "min",
        "isNaN",
    ] {
        assert!(undeclared(&format!("{name}(null)")), "{name}");
        assert!(undeclared(&format!("null.{name}()")), "{name}");
    }
}

#[test]
fn a_result_above_the_sample_cap_is_an_error() {
    let metric = metric(json!({"successCondition": "result.all(x, x < 1.0)"}));
    assert_eq!(
        phase(&metric, &samples(MAX_SAMPLES)),
        AnalysisPhase::Successful
    );
    let verdict = judge(&metric, &samples(MAX_SAMPLES + 1));
    assert_eq!(verdict.phase, AnalysisPhase::Error);
    assert!(
        verdict
            .message
            .starts_with("result too large: 10001 samples, at most 10000 are judged"),
        "{}",
        verdict.message
    );
    let range = metric_range();
    assert_eq!(
        phase(&range, &samples(MAX_SAMPLES + 1)),
        AnalysisPhase::Error
    );
}

fn metric_range() -> Metric {
    metric(json!({"thresholdRange": {"max": 1.0}}))
}

#[test]
fn a_condition_validation_never_saw_is_checked_when_judged() {
    let metric = metric(json!({"successCondition": nested_all(3)}));
    let verdict = judge(&metric, &samples(MAX_SAMPLES));
    assert_eq!(verdict.phase, AnalysisPhase::Error);
    assert!(
        verdict
            .message
            .starts_with("successCondition: nests 3 comprehensions"),
        "{}",
        verdict.message
    );
}

#[test]
fn large_numbers_are_written_for_people() {
    assert_eq!(steps(80_003), "80,003");
    assert_eq!(steps(999), "999");
    assert_eq!(steps(1_000_000), "10^6");
    assert_eq!(steps(120_000_000), "about 1.2e8");
    assert_eq!(steps(u64::MAX), "about 1.8e19");
    assert_eq!(thousands(10_000), "10,000");
    assert_eq!(thousands(0), "0");
}

/// Conditions a tenant might write, hostile ones included: macros nested and chained, long
/// `&&` chains, literals, and text that is not CEL.
fn conditions() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("result[0] < 0.5".to_owned()),
        Just("size(result) > 0".to_owned()),
        Just("true".to_owned()),
        Just("result == result".to_owned()),
        Just("string(result[0]).contains('1')".to_owned()),
    ];
    let expression = leaf.prop_recursive(6, 64, 4, |inner| {
        let name = prop::sample::select(vec!["x", "y", "z", "result"]);
        let range = prop::sample::select(vec!["result", "[1.0, 2.0, 3.0]", "(result + result)"]);
        let macro_name = prop::sample::select(vec!["all", "exists", "exists_one", "filter", "map"]);
        prop_oneof![
            (range, macro_name, name, inner.clone()).prop_map(|(r, m, n, body)| match m {
                "filter" | "map" => format!("size({r}.{m}({n}, {body})) >= 0"),
                _ => format!("{r}.{m}({n}, {body})"),
            }),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    });
    prop_oneof![
        4 => expression,
        1 => "[a-z0-9_.()\\[\\], <>=!&|'+*-]{0,200}",
        1 => (1usize..40).prop_map(nested_all),
        1 => (1usize..200).prop_map(|n| vec!["result.all(x, x >= 0.0)"; n].join(" && ")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Checking is static and fast whatever the text; whatever it accepts is estimated within
    /// the limit, and judges the largest result weir judges to an end. Wall time is bounded
    /// loosely here (a debug build on a shared machine): the bench measures it.
    #[test]
    fn accepted_conditions_judge_the_largest_result_in_bounded_time(condition in conditions()) {
        // cel's generated parser takes far more stack per bracket in a debug build than in
        // release; a thread with room for it keeps this about time and cost.
        let checked = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || check_and_judge(&condition))
            .expect("a thread")
            .join()
            .map_err(|_| TestCaseError::fail("check or judge panicked"))?;
        checked.map_err(TestCaseError::fail)?;
    }
}

/// Checks a condition and, if it is accepted, judges the largest result with it: the check
/// within 500 ms, the estimate within the limit, the judging to an end within 2 s.
fn check_and_judge(condition: &str) -> Result<(), String> {
    let started = Instant::now();
    let checked = check_condition(condition);
    if started.elapsed() > Duration::from_millis(500) {
        return Err(format!("checking took {:?}", started.elapsed()));
    }
    if checked.is_err() {
        return Ok(());
    }
    let cost = estimated_cost(condition).unwrap_or(u64::MAX);
    if cost > MAX_COST {
        return Err(format!("accepted at an estimate of {cost}"));
    }
    let metric = metric(json!({ "successCondition": condition }));
    let started = Instant::now();
    let verdict = judge(&metric, &samples(MAX_SAMPLES));
    if started.elapsed() > Duration::from_secs(2) {
        return Err(format!("judging took {:?}: {verdict:?}", started.elapsed()));
    }
    Ok(())
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

/// Found by the hostile suite's review: a dozen nested calls overflowed a 2 MiB stack (a
/// tokio worker's) in cel's parser and aborted the process. Every nesting the text checks let
/// through is checked and judged on a thread with half that stack.
#[test]
fn the_deepest_accepted_nesting_never_overflows_a_small_stack() {
    for (open, close) in [
        ("dyn(", ")"),
        ("(", ")"),
        ("result.all(x, ", ")"),
        ("[", "]"),
        ("-(", ")"),
    ] {
        let text = format!("{}1{}", open.repeat(32), close.repeat(32));
        let deeper = format!("{}1{}", open.repeat(33), close.repeat(33));
        let judged = text.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let checked = super::check_condition(&text);
                let metric: crate::api::analysis::Metric = serde_json::from_value(
                    serde_json::json!({"name": "m", "successCondition": judged,
                        "provider": {"prometheus": {"query": "up"}}}),
                )
                .unwrap_or_else(|e| panic!("metric: {e}"));
                let verdict = super::judge(&metric, &QueryValue::Vector(vec![0.5; 4]));
                (
                    checked.is_ok(),
                    verdict.phase,
                    super::check_condition(&deeper),
                )
            })
            .unwrap_or_else(|e| panic!("a thread: {e}"))
            .join()
            .unwrap_or_else(|_| panic!("{open}: the check panicked"));
        assert!(
            outcome.2.as_ref().is_err_and(|e| e.contains("at most 32")),
            "{open}: {outcome:?}"
        );
    }
}
