//! The statistical judge of a canary against its baseline (issue 27): pure math, no I/O, no
//! clock. `mann_whitney` is Kayenta's per-measurement test over two samples; `sequential`
//! holds the always-valid tests (Lindon et al., KDD 2022) that may be looked at after every
//! new sample and still keep the false-alarm probability within `alpha`. Both answer with a
//! [`Judgement`]: the verdict and the figures a measurement records.

pub mod mann_whitney;
pub mod sequential;

/// Which way the canary going is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (latency, errors).
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
}

/// What the judge settles on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The canary is worse than the baseline by more than the tolerance, beyond doubt.
    Failed,
    /// Enough was seen, with no evidence that it is worse.
    Successful,
    /// Not yet either.
    Inconclusive,
}

/// A verdict and what it rests on, for the measurement's record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// The test's statistic: U for Mann-Whitney, the log likelihood ratio for a sequential
    /// test.
    pub statistic: f64,
    /// The (always-valid, for a sequential test) p-value in the bad direction, in [0, 1].
    pub p_value: f64,
    /// The canary against the baseline as a ratio (1.0: the same; 1.2: 20% higher).
    pub effect: f64,
    pub baseline_samples: u64,
    pub canary_samples: u64,
}

/// The standard normal's upper tail, P(Z > z).
pub(crate) fn normal_upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}
