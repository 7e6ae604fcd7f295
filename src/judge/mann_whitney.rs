//! Kayenta's per-measurement comparison: the Mann-Whitney U test over the baseline's and
//! the canary's samples (ranks, so no distribution is assumed), with the normal
//! approximation corrected for ties and continuity, one-sided in the bad direction. The
//! effect is the ratio of the medians. O((n + m) log(n + m)): 10,000 samples a side are
//! judged in milliseconds.

use super::{Direction, Judgement, Verdict, normal_upper_tail};

/// What a comparison needs besides the samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub direction: Direction,
    /// The smallest relative change that matters (0.1: 10%): a significant difference
    /// smaller than this is not a failure.
    pub tolerance: f64,
    /// The false-alarm probability (0.05).
    pub alpha: f64,
    /// Fewer samples than this on either side: Inconclusive.
    pub min_samples: usize,
}

/// Compares `canary` with `baseline`. NaN and infinite samples are dropped (no data).
pub fn judge(baseline: &[f64], canary: &[f64], settings: &Settings) -> Judgement {
    let clean = |xs: &[f64]| -> Vec<f64> { xs.iter().copied().filter(|x| x.is_finite()).collect() };
    let (mut b, mut c) = (clean(baseline), clean(canary));
    let (n, m) = (b.len(), c.len());
    let mut judgement = Judgement {
        verdict: Verdict::Inconclusive,
        statistic: 0.0,
        p_value: 1.0,
        effect: 1.0,
        baseline_samples: n as u64,
        canary_samples: m as u64,
    };
    if n == 0 || m == 0 {
        return judgement;
    }
    b.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    judgement.effect = ratio(median(&c), median(&b));
    // Ranks over both samples together, ties given their average rank; merged from the two
    // sorted lists.
    let (mut i, mut j) = (0, 0);
    let mut rank_sum_canary = 0.0;
    let mut tie_term = 0.0;
    let mut next_rank = 1.0;
    while i < n || j < m {
        let value = match (b.get(i), c.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        let (from_b, from_c) = (
            b[i..].iter().take_while(|x| **x == value).count(),
            c[j..].iter().take_while(|y| **y == value).count(),
        );
        let tied = (from_b + from_c) as f64;
        let average = next_rank + (tied - 1.0) / 2.0;
        rank_sum_canary += average * from_c as f64;
        tie_term += tied * tied * tied - tied;
        next_rank += tied;
        i += from_b;
        j += from_c;
    }
    let (nf, mf) = (n as f64, m as f64);
    let u = rank_sum_canary - mf * (mf + 1.0) / 2.0;
    judgement.statistic = u;
    let mean = nf * mf / 2.0;
    let total = nf + mf;
    let variance = nf * mf / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)).max(1.0));
    // U large: the canary ranks high (larger values).
    let p = if variance <= 0.0 {
        1.0
    } else {
        let sd = variance.sqrt();
        match settings.direction {
            Direction::Increase => normal_upper_tail((u - mean - 0.5) / sd),
            Direction::Decrease => normal_upper_tail((mean - u - 0.5) / sd),
        }
    };
    judgement.p_value = p.clamp(0.0, 1.0);
    if n < settings.min_samples || m < settings.min_samples {
        return judgement;
    }
    let beyond_tolerance = match settings.direction {
        Direction::Increase => judgement.effect > 1.0 + settings.tolerance,
        Direction::Decrease => judgement.effect < 1.0 - settings.tolerance,
    };
    judgement.verdict = if judgement.p_value < settings.alpha && beyond_tolerance {
        Verdict::Failed
    } else {
        Verdict::Successful
    };
    judgement
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `a / b`, 1.0 for 0/0, and bounded so a baseline of zero gives a large finite ratio.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if a == b {
        return 1.0;
    }
    if b == 0.0 {
        return if a > 0.0 { f64::MAX } else { f64::MIN_POSITIVE };
    }
    a / b
}

#[cfg(test)]
mod tests;
