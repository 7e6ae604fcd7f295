use super::*;

fn judge(method: JudgeMethod) -> JudgeMetric {
    JudgeMetric {
        baseline: "latency{hash=\"{{args.baseline-hash}}\"}".into(),
        canary: "latency{hash=\"{{args.canary-hash}}\"}".into(),
        method,
        samples: Some(10),
        ..JudgeMetric::default()
    }
}

fn counts_judge() -> JudgeMetric {
    JudgeMetric {
        baseline_total: Some("requests{hash=\"{{args.baseline-hash}}\"}".into()),
        canary_total: Some("requests{hash=\"{{args.canary-hash}}\"}".into()),
        samples: Some(1000),
        ..judge(JudgeMethod::Sequential)
    }
}

/// `n` values spread evenly around `mean` (from 0.9 to 1.1 times it), as the means of
/// many requests are.
fn spread(mean: f64, n: usize) -> QueryValue {
    QueryValue::Vector(
        (0..n)
            .map(|i| mean * (0.9 + 0.2 * ((i as f64 * 0.618_033_988_749_895).fract())))
            .collect(),
    )
}

fn phase_of(taken: &Taken) -> AnalysisPhase {
    match taken {
        Taken::Weighed { phase, .. } => *phase,
        other => panic!("the judge weighs, not {other:?}"),
    }
}

#[test]
fn a_canary_twenty_percent_slower_fails_and_an_equal_one_passes_by_either_method() {
    for method in [JudgeMethod::Sequential, JudgeMethod::MannWhitney] {
        let judge = judge(method);
        let slower = Answers {
            baseline: spread(0.1, 30),
            canary: spread(0.12, 30),
            totals: None,
        };
        let judged = decide(&judge, &slower).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(judged.verdict, Verdict::Failed, "{method:?}: {judged:?}");
        assert!((judged.effect - 1.2).abs() < 0.02, "{judged:?}");
        let equal = Answers {
            canary: spread(0.1, 30),
            ..slower
        };
        let judged = decide(&judge, &equal).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            judged.verdict,
            Verdict::Successful,
            "{method:?}: {judged:?}"
        );
    }
}

#[test]
fn too_few_samples_are_no_verdict_yet_and_recorded_as_running() {
    let judge = judge(JudgeMethod::Sequential);
    let early = Answers {
        baseline: spread(0.1, 4),
        canary: spread(0.1, 4),
        totals: None,
    };
    let judged = decide(&judge, &early).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(judged.verdict, Verdict::Inconclusive);
    let taken = measurement(&judge, &judged);
    assert_eq!(phase_of(&taken), AnalysisPhase::Running);
    let Taken::Weighed { message, .. } = taken else {
        unreachable!()
    };
    assert!(message.starts_with("no verdict yet"), "{message}");
}

#[test]
fn counts_compare_error_rates_over_their_totals() {
    let judge = counts_judge();
    let answers = |canary_errors: f64| Answers {
        baseline: QueryValue::Vector(vec![40.0, 10.0]),
        canary: QueryValue::Scalar(canary_errors),
        totals: Some((QueryValue::Scalar(5000.0), QueryValue::Vector(vec![5000.0]))),
    };
    let worse = decide(&judge, &answers(150.0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(worse.verdict, Verdict::Failed, "{worse:?}");
    assert_eq!((worse.baseline_samples, worse.canary_samples), (5000, 5000));
    assert!((worse.effect - 3.0).abs() < 1e-9, "{worse:?}");
    let same = decide(&judge, &answers(50.0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(same.verdict, Verdict::Successful, "{same:?}");
}

#[test]
fn a_count_that_is_not_a_count_is_an_error_naming_the_query() {
    let judge = counts_judge();
    let negative = Answers {
        baseline: QueryValue::Scalar(-1.0),
        canary: QueryValue::Scalar(1.0),
        totals: Some((QueryValue::Scalar(10.0), QueryValue::Scalar(10.0))),
    };
    let why = decide(&judge, &negative).expect_err("a negative count");
    assert!(why.starts_with("baseline answered -1"), "{why}");
    let more_than_total = Answers {
        baseline: QueryValue::Scalar(1.0),
        canary: QueryValue::Scalar(11.0),
        totals: Some((QueryValue::Scalar(10.0), QueryValue::Scalar(10.0))),
    };
    let why = decide(&judge, &more_than_total).expect_err("more events than requests");
    assert!(why.starts_with("canary counted 11 events of 10"), "{why}");
    let nan = Answers {
        baseline: QueryValue::Scalar(1.0),
        canary: QueryValue::Scalar(1.0),
        totals: Some((QueryValue::Scalar(f64::NAN), QueryValue::Scalar(10.0))),
    };
    let why = decide(&judge, &nan).expect_err("NaN is no count");
    assert!(why.starts_with("baselineTotal answered NaN"), "{why}");
}

#[test]
fn the_measurement_records_the_figures_the_verdict_rests_on() {
    let judge = JudgeMetric {
        tolerance: Some(0.05),
        ..judge(JudgeMethod::Sequential)
    };
    let answers = Answers {
        baseline: spread(0.1, 30),
        canary: spread(0.12, 30),
        totals: None,
    };
    let judged = decide(&judge, &answers).unwrap_or_else(|e| panic!("{e}"));
    let Taken::Weighed {
        phase,
        message,
        value,
        metadata,
    } = measurement(&judge, &judged)
    else {
        panic!("the judge weighs")
    };
    assert_eq!(phase, AnalysisPhase::Failed);
    assert_eq!(value, format!("{:.3}", judged.effect));
    assert!(
        message.starts_with("the canary's value is 1.2"),
        "{message}"
    );
    assert!(message.contains("tolerance (5%)"), "{message}");
    assert!(
        message.contains("30 canary and 30 baseline samples"),
        "{message}"
    );
    let keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "baselineSamples",
            "canarySamples",
            "effect",
            "method",
            "pValue",
            "statistic"
        ]
    );
    assert_eq!(metadata["method"], "sequential means");
    assert_eq!(metadata["canarySamples"], "30");
    let p: f64 = metadata["pValue"].parse().unwrap_or(1.0);
    assert!(p < 0.05, "{metadata:?}");
}

#[test]
fn decrease_is_bad_when_the_judge_says_so() {
    let judge = JudgeMetric {
        direction: JudgeDirection::Decrease,
        ..judge(JudgeMethod::MannWhitney)
    };
    let slower = Answers {
        baseline: spread(0.1, 30),
        canary: spread(0.12, 30),
        totals: None,
    };
    // Higher is no harm when lower is what is bad.
    let judged = decide(&judge, &slower).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(judged.verdict, Verdict::Successful, "{judged:?}");
    let lower = Answers {
        baseline: spread(0.12, 30),
        canary: spread(0.1, 30),
        totals: None,
    };
    let judged = decide(&judge, &lower).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(judged.verdict, Verdict::Failed, "{judged:?}");
}

#[test]
fn samples_lie_on_one_grid_from_the_runs_start_after_its_initial_delay() {
    // Started at 1000 with a 30 s delay: samples from 1030, every 10 s. Two looks six
    // seconds apart extend one stream rather than sampling it afresh.
    let first = sample_span(1030, 1095, 10, None);
    assert_eq!((first.start, first.end, first.step), (1030, 1090, 10.0));
    let next = sample_span(1030, 1101, 10, None);
    assert_eq!((next.start, next.end), (1030, 1100));
    // Before the delay is over: the one point at its end.
    let early = sample_span(1030, 1020, 10, None);
    assert_eq!((early.start, early.end), (1030, 1030));
    // A Mann-Whitney look: the last interval's samples, on the same grid.
    let last = sample_span(1030, 1101, 10, Some(25));
    assert_eq!((last.start, last.end), (1080, 1100));
    // A long run: the newest MAX_SAMPLES points, never more.
    let long = sample_span(0, 1_000_005, 10, None);
    assert_eq!(long.end, 1_000_000);
    assert_eq!((long.end - long.start) / 10 + 1, MAX_SAMPLES as i64);
}

#[test]
fn queries_that_match_nothing_are_an_error_but_one_side_may_lag() {
    let judge = judge(JudgeMethod::Sequential);
    let nothing = Answers {
        baseline: QueryValue::Vector(vec![]),
        canary: QueryValue::Vector(vec![]),
        totals: None,
    };
    let why = decide(&judge, &nothing).expect_err("no samples at all");
    assert!(
        why.starts_with("neither the baseline nor the canary"),
        "{why}"
    );
    let lagging = Answers {
        baseline: spread(0.1, 3),
        canary: QueryValue::Vector(vec![]),
        totals: None,
    };
    let judged = decide(&judge, &lagging).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(judged.verdict, Verdict::Inconclusive);
}

#[test]
fn an_unbounded_effect_is_shown_capped_and_percentages_as_written() {
    // The baseline had no errors at all; the canary had 30 in 1,000.
    let judge = counts_judge();
    let answers = Answers {
        baseline: QueryValue::Scalar(0.0),
        canary: QueryValue::Scalar(30.0),
        totals: Some((QueryValue::Scalar(1000.0), QueryValue::Scalar(1000.0))),
    };
    let judged = decide(&judge, &answers).unwrap_or_else(|e| panic!("{e}"));
    let Taken::Weighed { value, message, .. } = measurement(&judge, &judged) else {
        panic!("the judge weighs")
    };
    assert_eq!(value, "1000.000");
    assert!(message.contains("at least 1000.000 times"), "{message}");
    assert_eq!(percent(0.07), "7");
    assert_eq!(percent(0.125), "12.5");
    assert_eq!(percent(0.1), "10");
}

/// The local cluster's judge test in miniature: each version answers 500 requests every
/// 5 s (50% of 200 a second), each latency uniform from half to one and a half times its
/// mean, as `weir-sim traffic --seed` draws them; a sample is one window's mean. The judge
/// as `tests/judge.rs` writes it (defaults but 6 samples) looks after every window, 12
/// times, each look seeing every window so far. The look at which it failed, if it did.
fn cluster_run(seed: u64, canary_mean: f64) -> Option<usize> {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let judge = JudgeMetric {
        samples: Some(6),
        ..judge(JudgeMethod::Sequential)
    };
    let mut window = |mean: f64| {
        (0..500)
            .map(|_| mean * (0.5 + rng.r#gen::<f64>()))
            .sum::<f64>()
            / 500.0
    };
    let (mut baseline, mut canary) = (Vec::new(), Vec::new());
    (1..=12).find(|_| {
        baseline.push(window(0.1));
        canary.push(window(canary_mean));
        let answers = Answers {
            baseline: QueryValue::Vector(baseline.clone()),
            canary: QueryValue::Vector(canary.clone()),
            totals: None,
        };
        decide(&judge, &answers).is_ok_and(|j| j.verdict == Verdict::Failed)
    })
}

#[test]
fn over_twenty_seeds_an_equal_canary_is_not_failed_and_a_slower_one_always_is() {
    let false_alarms = (0..20)
        .filter(|seed| cluster_run(*seed, 0.1).is_some())
        .count();
    assert!(
        false_alarms <= 1,
        "{false_alarms} of 20 equal canaries failed"
    );
    let caught: Vec<Option<usize>> = (0..20).map(|seed| cluster_run(seed, 0.12)).collect();
    // Never before five samples a side; always within the window.
    assert!(
        caught
            .iter()
            .all(|look| look.is_some_and(|l| (5..=12).contains(&l))),
        "{caught:?}"
    );
}
