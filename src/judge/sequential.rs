//! Always-valid sequential tests (mixture sequential probability ratio tests, as in Lindon
//! et al., "Rapid Regression Detection in Software Deployments through Sequential Testing",
//! KDD 2022): a likelihood ratio against "the canary is no worse than the baseline by more
//! than the tolerance", averaged over a prior on how much worse it is. By Ville's
//! inequality its running value crosses 1/alpha with probability at most alpha however often
//! it is looked at, so a canary is failed as soon as the evidence is there, and the false
//! alarm rate holds under continuous monitoring. Each look is O(1) from running totals.
//!
//! - [`counts`]: errors out of requests (or any events over exposure) per version. Given the
//!   total of both, the canary's share of the events is binomial; the null is the share the
//!   canary would have at a rate `1 + tolerance` times the baseline's, the prior on the share
//!   a Beta. The ratio has a closed form in log-Beta functions.
//! - [`means`]: latency, on the log scale (so the tolerance is relative): the difference of
//!   the mean log-latencies against `log(1 + tolerance)`, a normal prior on the excess, the
//!   variance estimated from the samples (the usual plug-in).

use super::{Direction, Judgement, Verdict};

/// What a sequential test needs besides the data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub direction: Direction,
    /// The smallest relative change that matters (0.1: 10%).
    pub tolerance: f64,
    /// The false-alarm probability, valid however often the test is looked at (0.05).
    pub alpha: f64,
    /// How many canary events (requests, samples) without evidence make the canary
    /// Successful: the run was long enough to see a regression of twice the tolerance.
    pub enough: u64,
}

/// Events and exposure of one version: errors out of requests, say.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub events: u64,
    pub exposure: u64,
}

/// The counts test: is the canary's event rate more than `1 + tolerance` times the
/// baseline's (Increase), or less than `1 - tolerance` times (Decrease)?
pub fn counts(baseline: Counts, canary: Counts, settings: &Settings) -> Judgement {
    let mut judgement = Judgement {
        verdict: Verdict::Inconclusive,
        statistic: 0.0,
        p_value: 1.0,
        effect: 1.0,
        baseline_samples: baseline.exposure,
        canary_samples: canary.exposure,
    };
    if baseline.exposure == 0 || canary.exposure == 0 {
        return judgement;
    }
    let (eb, ec) = (baseline.exposure as f64, canary.exposure as f64);
    let (xb, xc) = (baseline.events as f64, canary.events as f64);
    let rate = |x: f64, e: f64| x / e;
    judgement.effect = super::mann_whitney::ratio(rate(xc, ec), rate(xb, eb));
    let bound = match settings.direction {
        Direction::Increase => 1.0 + settings.tolerance,
        Direction::Decrease => (1.0 - settings.tolerance).max(f64::MIN_POSITIVE),
    };
    // The canary's share of all events if its rate were `bound` times the baseline's.
    let p0 = bound * ec / (bound * ec + eb);
    let total = xb + xc;
    let log_lr = if total == 0.0 {
        0.0
    } else {
        // Beta(1, 1) prior on the share: the mixture's marginal is B(1 + x, 1 + n - x) / B(1, 1).
        ln_beta(1.0 + xc, 1.0 + xb) - (xc * p0.ln() + xb * (1.0 - p0).ln())
    };
    let share = if total == 0.0 { p0 } else { xc / total };
    let worse = match settings.direction {
        Direction::Increase => share > p0,
        Direction::Decrease => share < p0,
    };
    settle(&mut judgement, log_lr, worse, canary.exposure, settings);
    judgement
}

/// Running mean and spread of one version's samples on the log scale, kept by Welford's
/// method: a sum of squares minus a squared sum cancels to rounding noise when the samples
/// are alike (a flat series), and the test would then read certainty into nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    mean: f64,
    /// The sum of squared deviations from the running mean.
    m2: f64,
}

impl Moments {
    /// Adds a sample (a latency, say; positive). Anything else (0, negative, NaN) is no data:
    /// the test compares log-scale means.
    pub fn add(&mut self, sample: f64) {
        if sample.is_finite() && sample > 0.0 {
            let x = sample.ln();
            self.count += 1;
            let delta = x - self.mean;
            self.mean += delta / self.count as f64;
            self.m2 += delta * (x - self.mean);
        }
    }

    fn mean(&self) -> f64 {
        self.mean
    }

    fn variance(&self) -> f64 {
        (self.m2 / (self.count as f64 - 1.0)).max(0.0)
    }
}

/// The least spread a version's log-scale samples are taken to have: 1%. Samples that are
/// all alike (a gauge, a quantile stuck on a bucket's edge) would otherwise make any
/// difference certain, or with a variance of exactly 0, none at all.
const MIN_SD: f64 = 0.01;

/// The prior's spread on the log-ratio of the means: regressions of a few percent to a few
/// times are what canaries catch.
const PRIOR_SD: f64 = 0.25;

/// Fewest samples a side before the means test may fail a canary. The variance is
/// estimated from the samples (the plug-in), and from two or three it can be far too small
/// by chance: simulated from the first look, equal versions at the tolerance's edge were
/// failed 7% of the time from 2 samples, 2.5% from 5 (alpha 5%).
pub const MIN_SAMPLES_TO_FAIL: u64 = 5;

/// The means test: is the canary's typical value (geometric mean) more than `1 + tolerance`
/// times the baseline's (Increase), or less than `1 - tolerance` times (Decrease)?
pub fn means(baseline: &Moments, canary: &Moments, settings: &Settings) -> Judgement {
    let mut judgement = Judgement {
        verdict: Verdict::Inconclusive,
        statistic: 0.0,
        p_value: 1.0,
        effect: 1.0,
        baseline_samples: baseline.count,
        canary_samples: canary.count,
    };
    if baseline.count < 2 || canary.count < 2 {
        return judgement;
    }
    let difference = canary.mean() - baseline.mean();
    judgement.effect = difference.exp();
    let (nb, nc) = (baseline.count as f64, canary.count as f64);
    let pooled = (((nb - 1.0) * baseline.variance() + (nc - 1.0) * canary.variance())
        / (nb + nc - 2.0))
        .max(MIN_SD * MIN_SD);
    let v = pooled * (1.0 / nb + 1.0 / nc);
    let shift = match settings.direction {
        Direction::Increase => (1.0 + settings.tolerance).ln(),
        Direction::Decrease => (1.0 - settings.tolerance).max(f64::MIN_POSITIVE).ln(),
    };
    let excess = difference - shift;
    let tau2 = PRIOR_SD * PRIOR_SD;
    let log_lr = if v <= 0.0 {
        0.0
    } else {
        0.5 * (v / (v + tau2)).ln() + tau2 * excess * excess / (2.0 * v * (v + tau2))
    };
    let worse = match settings.direction {
        Direction::Increase => excess > 0.0,
        Direction::Decrease => excess < 0.0,
    };
    settle(&mut judgement, log_lr, worse, canary.count, settings);
    if judgement.verdict == Verdict::Failed
        && baseline.count.min(canary.count) < MIN_SAMPLES_TO_FAIL
    {
        judgement.verdict = Verdict::Inconclusive;
    }
    judgement
}

/// The verdict from the log likelihood ratio: Failed once it crosses log(1/alpha) with the
/// canary on the bad side; Successful once enough was seen without that.
fn settle(judgement: &mut Judgement, log_lr: f64, worse: bool, seen: u64, settings: &Settings) {
    let log_lr = if log_lr.is_finite() { log_lr } else { 0.0 };
    judgement.statistic = log_lr;
    // The always-valid p-value: 1 / LR, capped at 1 (only on the bad side).
    judgement.p_value = if worse { (-log_lr).exp().min(1.0) } else { 1.0 };
    judgement.verdict = if worse && log_lr >= (1.0 / settings.alpha).ln() {
        Verdict::Failed
    } else if seen >= settings.enough {
        Verdict::Successful
    } else {
        Verdict::Inconclusive
    };
}

/// ln B(a, b), from ln Γ.
fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

#[cfg(test)]
mod tests;
