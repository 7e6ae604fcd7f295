use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn settings(tolerance: f64) -> Settings {
    Settings {
        direction: Direction::Increase,
        tolerance,
        alpha: 0.05,
        enough: 20_000,
    }
}

/// One canary watched to the end: requests arrive in batches of 100 at each version, each
/// an error with its version's probability; the test is looked at after every batch. The
/// number of canary requests when it first failed, if it did.
fn first_failure(
    rng: &mut StdRng,
    baseline_rate: f64,
    canary_rate: f64,
    s: &Settings,
) -> Option<u64> {
    let (mut baseline, mut canary) = (Counts::default(), Counts::default());
    while canary.exposure < s.enough {
        for _ in 0..100 {
            baseline.exposure += 1;
            canary.exposure += 1;
            baseline.events += u64::from(rng.gen_bool(baseline_rate));
            canary.events += u64::from(rng.gen_bool(canary_rate));
        }
        if counts(baseline, canary, s).verdict == Verdict::Failed {
            return Some(canary.exposure);
        }
    }
    None
}

#[test]
fn with_no_difference_the_false_alarm_rate_under_continuous_looking_stays_within_alpha() {
    // 300 canaries, each looked at 200 times. alpha = 0.05; the binomial standard error of
    // the rate over 300 runs is 0.0126, so 0.05 + 3 of them bounds a valid test's rate
    // except once in a thousand. A fixed-sample test looked at this often fails far more.
    let s = settings(0.0);
    let mut rng = StdRng::seed_from_u64(27);
    let alarms = (0..300)
        .filter(|_| first_failure(&mut rng, 0.02, 0.02, &s).is_some())
        .count();
    assert!(
        alarms as f64 / 300.0 <= 0.05 + 3.0 * 0.0126,
        "{alarms} of 300 false alarms"
    );
}

#[test]
fn a_regression_of_twice_the_tolerance_is_caught_early() {
    // Baseline 10% errors, canary 12%: 20% worse, twice the tolerance of 10%. Given an
    // error, it is the canary's with probability 0.12 / 0.22 = 0.545 against 0.524 at the
    // tolerance: a Kullback-Leibler divergence of 9.4e-4 nats per error, 2.1e-4 per canary
    // request. The mixture test crosses log(1/alpha) = 3.0 plus its price for not knowing
    // the effect (about 4 nats at this n): about 7 / 2.1e-4 = 34,000 canary requests
    // expected. Every one of 20 canaries is caught, and half by 1.5 times that.
    let s = Settings {
        enough: 400_000,
        ..settings(0.1)
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut caught: Vec<u64> = (0..20)
        .map(|_| first_failure(&mut rng, 0.10, 0.12, &s).unwrap_or(u64::MAX))
        .collect();
    caught.sort_unstable();
    assert!(
        caught.iter().all(|n| *n < 400_000),
        "every one caught: {caught:?}"
    );
    assert!(caught[10] <= 51_000, "half by 51,000 requests: {caught:?}");
}

#[test]
fn within_the_tolerance_it_is_not_failed_and_enough_requests_make_it_successful() {
    let s = settings(0.5);
    let baseline = Counts {
        events: 100,
        exposure: 10_000,
    };
    let slightly_worse = Counts {
        events: 120,
        exposure: 20_000,
    };
    let j = counts(baseline, slightly_worse, &s);
    assert_eq!(j.verdict, Verdict::Successful, "{j:?}");
    assert!((j.effect - 0.6).abs() < 1e-12);
    let much_worse = Counts {
        events: 800,
        exposure: 20_000,
    };
    let j = counts(baseline, much_worse, &s);
    assert_eq!(j.verdict, Verdict::Failed, "{j:?}");
    assert!(j.p_value < 0.05 && j.statistic > (20.0f64).ln());
    let early = counts(
        baseline,
        Counts {
            events: 1,
            exposure: 100,
        },
        &s,
    );
    assert_eq!(early.verdict, Verdict::Inconclusive);
    let nothing = counts(Counts::default(), Counts::default(), &s);
    assert_eq!(nothing.verdict, Verdict::Inconclusive);
}

#[test]
fn latency_twenty_percent_worse_fails_and_the_same_latency_does_not() {
    let s = Settings {
        enough: 5_000,
        ..settings(0.05)
    };
    let mut rng = StdRng::seed_from_u64(3);
    let mut draw = |mean: f64| mean * (1.0 + 0.3 * (rng.r#gen::<f64>() - 0.5));
    let (mut baseline, mut same, mut slow) =
        (Moments::default(), Moments::default(), Moments::default());
    let mut failed_at = None;
    for n in 0..5_000u64 {
        baseline.add(draw(100.0));
        same.add(draw(100.0));
        slow.add(draw(120.0));
        if n >= 20 {
            assert_ne!(
                means(&baseline, &same, &s).verdict,
                Verdict::Failed,
                "no false alarm at {n}"
            );
            if failed_at.is_none() && means(&baseline, &slow, &s).verdict == Verdict::Failed {
                failed_at = Some(n);
            }
        }
    }
    assert!(
        failed_at.is_some_and(|n| n < 200),
        "caught early: {failed_at:?}"
    );
    assert_eq!(means(&baseline, &same, &s).verdict, Verdict::Successful);
    let slow_judged = means(&baseline, &slow, &s);
    assert!((slow_judged.effect - 1.2).abs() < 0.02, "{slow_judged:?}");
}

/// One pair of versions with the same latency distribution (uniform from half to one and a
/// half times 100 ms: a spread far wider than means of many requests have), looked at after
/// every sample from the first: whether the means test ever failed the canary.
fn means_false_alarm(rng: &mut StdRng, s: &Settings, looks: u64) -> bool {
    let (mut baseline, mut canary) = (Moments::default(), Moments::default());
    (0..looks).any(|_| {
        baseline.add(100.0 * (0.5 + rng.r#gen::<f64>()));
        canary.add(100.0 * (0.5 + rng.r#gen::<f64>()));
        means(&baseline, &canary, s).verdict == Verdict::Failed
    })
}

#[test]
fn equal_latencies_looked_at_from_the_first_sample_are_failed_within_alpha() {
    // The hardest case: tolerance 0, so equal versions sit on the null's edge. 400 pairs,
    // each looked at 300 times from its first sample, at most alpha of them failed. The
    // seed is fixed, so this is one exact count (10), not a chance: a test failing from
    // its second sample, with the variance guessed from two, counted 28.
    let s = Settings {
        enough: 1_000_000,
        ..settings(0.0)
    };
    let mut rng = StdRng::seed_from_u64(11);
    let alarms = (0..400)
        .filter(|_| means_false_alarm(&mut rng, &s, 300))
        .count();
    assert!(alarms <= 20, "{alarms} of 400 false alarms");
    // With the tolerance the judge uses by default, hardly ever.
    let s = Settings {
        enough: 1_000_000,
        ..settings(0.1)
    };
    let alarms = (0..400)
        .filter(|_| means_false_alarm(&mut rng, &s, 300))
        .count();
    assert!(
        alarms <= 4,
        "{alarms} of 400 false alarms at a 10% tolerance"
    );
}

#[test]
fn flat_series_are_judged_by_their_difference_not_by_rounding() {
    // A gauge, or a quantile stuck on a bucket's edge: every sample alike. Twice as slow is
    // failed; the same is not, whatever value rounding would leave of a zero spread.
    let s = settings(0.1);
    for value in [0.1, 0.25, 0.3, 1.7, 250.0] {
        let (mut baseline, mut same, mut slower) =
            (Moments::default(), Moments::default(), Moments::default());
        for _ in 0..6 {
            baseline.add(value);
            same.add(value);
            slower.add(value * 2.0);
        }
        let judged = means(&baseline, &slower, &s);
        assert_eq!(judged.verdict, Verdict::Failed, "{value}: {judged:?}");
        assert!((judged.effect - 2.0).abs() < 1e-9, "{judged:?}");
        let judged = means(&baseline, &same, &s);
        assert_ne!(judged.verdict, Verdict::Failed, "{value}: {judged:?}");
        assert!((judged.effect - 1.0).abs() < 1e-12, "{judged:?}");
    }
}

#[test]
fn a_means_test_waits_for_five_samples_a_side_before_it_fails() {
    let s = settings(0.1);
    let (mut baseline, mut canary) = (Moments::default(), Moments::default());
    for n in 1..=MIN_SAMPLES_TO_FAIL {
        baseline.add(100.0 + n as f64);
        canary.add(300.0 + n as f64);
        let judged = means(&baseline, &canary, &s);
        let expected = if n < MIN_SAMPLES_TO_FAIL {
            Verdict::Inconclusive
        } else {
            Verdict::Failed
        };
        assert_eq!(judged.verdict, expected, "after {n}: {judged:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any counts: the p-value is a probability, the statistic finite, and a canary with
    /// fewer events than the baseline's rate allows is never failed.
    #[test]
    fn counts_are_judged_soundly(
        baseline_events in 0u64..10_000, baseline_exposure in 1u64..100_000,
        canary_events in 0u64..10_000, canary_exposure in 1u64..100_000,
        tolerance in 0.0f64..1.0,
    ) {
        let s = settings(tolerance);
        let j = counts(
            Counts { events: baseline_events, exposure: baseline_exposure },
            Counts { events: canary_events, exposure: canary_exposure },
            &s,
        );
        prop_assert!((0.0..=1.0).contains(&j.p_value));
        prop_assert!(j.statistic.is_finite());
        let canary_rate = canary_events as f64 / canary_exposure as f64;
        let baseline_rate = baseline_events as f64 / baseline_exposure as f64;
        if canary_rate <= baseline_rate {
            prop_assert_ne!(j.verdict, Verdict::Failed);
        }
    }
}
