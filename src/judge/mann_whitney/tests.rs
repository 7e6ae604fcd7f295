use proptest::prelude::*;

use super::*;

fn settings(direction: Direction) -> Settings {
    Settings {
        direction,
        tolerance: 0.1,
        alpha: 0.05,
        min_samples: 5,
    }
}

#[test]
fn a_canary_ranking_above_every_baseline_sample_has_the_largest_u_and_a_small_p() {
    let baseline = [1.0, 2.0, 3.0, 4.0, 5.0];
    let canary = [6.0, 7.0, 8.0, 9.0, 10.0];
    let up = judge(&baseline, &canary, &settings(Direction::Increase));
    assert_eq!(up.statistic, 25.0, "U = n * m");
    // z = (25 - 12.5 - 0.5) / sqrt(5 * 5 * 11 / 12) = 2.5071, P(Z > z) = 0.00609.
    assert!((up.p_value - 0.00609).abs() < 1e-4, "{}", up.p_value);
    assert!((up.effect - 8.0 / 3.0).abs() < 1e-12, "medians 8 and 3");
    assert_eq!(up.verdict, Verdict::Failed);
    let down = judge(&baseline, &canary, &settings(Direction::Decrease));
    assert!(
        down.p_value > 0.99,
        "higher is not worse here: {}",
        down.p_value
    );
    assert_eq!(down.verdict, Verdict::Successful);
}

#[test]
fn ties_take_their_average_rank_and_shrink_the_variance() {
    // Ranks of [1 1 1 2 2 2]: the 1s share 2, the 2s share 5; the canary holds one 1 and
    // two 2s: 2 + 5 + 5 = 12, U = 12 - 6 = 6.
    let j = judge(
        &[1.0, 1.0, 2.0],
        &[1.0, 2.0, 2.0],
        &settings(Direction::Increase),
    );
    assert_eq!(j.statistic, 6.0);
    assert_eq!(j.verdict, Verdict::Inconclusive, "fewer than min_samples");
    let same = judge(&[3.0; 10], &[3.0; 10], &settings(Direction::Increase));
    assert_eq!(
        (same.statistic, same.p_value, same.effect),
        (50.0, 1.0, 1.0)
    );
    assert_eq!(same.verdict, Verdict::Successful);
}

#[test]
fn a_significant_change_within_the_tolerance_is_no_failure_and_nan_is_no_data() {
    let baseline: Vec<f64> = (0..200).map(|i| 100.0 + f64::from(i % 10)).collect();
    let canary: Vec<f64> = baseline.iter().map(|x| x * 1.05).collect();
    let j = judge(&baseline, &canary, &settings(Direction::Increase));
    assert!(j.p_value < 0.05, "significant: {}", j.p_value);
    assert_eq!(j.verdict, Verdict::Successful, "but 5% is within 10%");
    let with_nan = [f64::NAN, 1.0, f64::INFINITY];
    let j = judge(&with_nan, &[], &settings(Direction::Increase));
    assert_eq!((j.baseline_samples, j.canary_samples), (1, 0));
    assert_eq!(j.verdict, Verdict::Inconclusive);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// For any samples: U is within [0, n m], swapping the two gives n m - U, the p-value is
    /// a probability, and raising every canary sample never lowers U.
    #[test]
    fn u_is_bounded_antisymmetric_and_monotone(
        baseline in prop::collection::vec(-1e6f64..1e6, 1..60),
        canary in prop::collection::vec(-1e6f64..1e6, 1..60),
        lift in 0.0f64..1e3,
    ) {
        let s = settings(Direction::Increase);
        let (n, m) = (baseline.len() as f64, canary.len() as f64);
        let j = judge(&baseline, &canary, &s);
        prop_assert!((0.0..=n * m).contains(&j.statistic));
        prop_assert!((0.0..=1.0).contains(&j.p_value));
        let swapped = judge(&canary, &baseline, &s);
        prop_assert!((swapped.statistic - (n * m - j.statistic)).abs() < 1e-6);
        let lifted: Vec<f64> = canary.iter().map(|x| x + lift).collect();
        prop_assert!(judge(&baseline, &lifted, &s).statistic >= j.statistic - 1e-9);
    }
}
