//! The judge provider (`provider.judge`, weir's own): the canary against a baseline. Its
//! queries go out as Prometheus queries with the judge's address and credentials (the
//! `prometheus` provider prepares each, so they pass the same gates and host checks); the
//! answers become samples or counts, and `crate::judge` decides. The verdict and the
//! figures it rests on are the measurement.
//!
//! Samples are read from the run's start (after `initialDelay`) to now, so each look of a
//! sequential test sees the stream so far, which is what keeps its false-alarm bound under
//! continuous looking. A look without a verdict yet is recorded as Running: only a test that
//! has seen enough says Successful, and a metric that ends without that is Inconclusive.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};

use super::provider::{Env, Provider, Ready, Taken, Unready};
use crate::api::analysis::{
    AnalysisPhase, JudgeDirection, JudgeMethod, JudgeMetric, PrometheusMetric, RangeQuery,
};
use crate::judge::{Direction, Judgement, Verdict, mann_whitney, sequential};
use crate::verdict::QueryValue;

pub const DEFAULT_TOLERANCE: f64 = 0.1;
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Samples a side, when the judge says nothing.
pub const DEFAULT_SAMPLES: u64 = 20;
/// Requests of the canary, for counts, when the judge says nothing.
pub const DEFAULT_REQUESTS: u64 = 1000;
pub const DEFAULT_STEP: &str = "10s";

/// What the judge's queries answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answers {
    pub baseline: QueryValue,
    pub canary: QueryValue,
    /// The totals, for counts: baseline's, then canary's.
    pub totals: Option<(QueryValue, QueryValue)>,
}

/// The judgement of `answers` under `judge`'s settings, or why the answers cannot be
/// judged (a count that is not a count). Pure.
pub fn decide(judge: &JudgeMetric, answers: &Answers) -> Result<Judgement, String> {
    let direction = match judge.direction {
        JudgeDirection::Increase => Direction::Increase,
        JudgeDirection::Decrease => Direction::Decrease,
    };
    let tolerance = judge.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let alpha = judge.alpha.unwrap_or(DEFAULT_ALPHA);
    let samples = judge.samples.and_then(|s| u64::try_from(s).ok());
    if let Some((baseline_total, canary_total)) = &answers.totals {
        let count = |field: &str, value: &QueryValue| -> Result<u64, String> {
            let sum: f64 = value.samples().iter().sum();
            if !sum.is_finite() || sum < 0.0 {
                return Err(format!(
                    "{field} answered {sum}; a count must be a finite number, 0 or more"
                ));
            }
            // increase() answers fractions of a counter; the test counts whole events.
            Ok(sum.round() as u64)
        };
        let baseline = sequential::Counts {
            events: count("baseline", &answers.baseline)?,
            exposure: count("baselineTotal", baseline_total)?,
        };
        let canary = sequential::Counts {
            events: count("canary", &answers.canary)?,
            exposure: count("canaryTotal", canary_total)?,
        };
        for (field, counts) in [("baseline", baseline), ("canary", canary)] {
            if counts.events > counts.exposure {
                return Err(format!(
                    "{field} counted {} events of {} in its total; the query counts the bad ones among the total's",
                    counts.events, counts.exposure
                ));
            }
        }
        let settings = sequential::Settings {
            direction,
            tolerance,
            alpha,
            enough: samples.unwrap_or(DEFAULT_REQUESTS),
        };
        return Ok(sequential::counts(baseline, canary, &settings));
    }
    let (baseline, canary) = (answers.baseline.samples(), answers.canary.samples());
    Ok(match judge.method {
        JudgeMethod::Sequential => {
            let moments = |values: &[f64]| {
                let mut moments = sequential::Moments::default();
                values.iter().for_each(|v| moments.add(*v));
                moments
            };
            let settings = sequential::Settings {
                direction,
                tolerance,
                alpha,
                enough: samples.unwrap_or(DEFAULT_SAMPLES),
            };
            sequential::means(&moments(&baseline), &moments(&canary), &settings)
        }
        JudgeMethod::MannWhitney => {
            let settings = mann_whitney::Settings {
                direction,
                tolerance,
                alpha,
                min_samples: usize::try_from(samples.unwrap_or(DEFAULT_SAMPLES))
                    .unwrap_or(usize::MAX),
            };
            mann_whitney::judge(&baseline, &canary, &settings)
        }
    })
}

/// The measurement a judgement makes: its phase, message, value (the effect) and metadata.
pub fn measurement(judge: &JudgeMetric, judgement: &Judgement) -> Taken {
    let tolerance = judge.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let alpha = judge.alpha.unwrap_or(DEFAULT_ALPHA);
    let counts = judge.baseline_total.is_some();
    let method = match (counts, judge.method) {
        (true, _) => "sequential counts",
        (false, JudgeMethod::Sequential) => "sequential means",
        (false, JudgeMethod::MannWhitney) => "Mann-Whitney",
    };
    let what = if counts { "rate" } else { "value" };
    let bad = match judge.direction {
        JudgeDirection::Increase => "higher",
        JudgeDirection::Decrease => "lower",
    };
    let effect = format!("{:.3}", judgement.effect);
    let seen = format!(
        "{} canary and {} baseline {}",
        judgement.canary_samples,
        judgement.baseline_samples,
        if counts { "requests" } else { "samples" }
    );
    let evidence = match judge.method {
        JudgeMethod::MannWhitney if !counts => format!("p = {:.4}", judgement.p_value),
        _ => format!(
            "likelihood ratio {:.3} (fails at {:.0} = 1/alpha)",
            judgement.statistic.exp(),
            1.0 / alpha
        ),
    };
    let (phase, message) = match judgement.verdict {
        Verdict::Failed => (
            AnalysisPhase::Failed,
            format!(
                "the canary's {what} is {effect} times the baseline's, {bad} by more than the tolerance ({}%) beyond doubt: {evidence}, {method}, {seen}",
                percent(tolerance)
            ),
        ),
        Verdict::Successful => (
            AnalysisPhase::Successful,
            format!(
                "no evidence that the canary is {bad} than the baseline by more than {}%: {what} {effect} times the baseline's, {evidence}, {method}, {seen}",
                percent(tolerance)
            ),
        ),
        Verdict::Inconclusive => (
            AnalysisPhase::Running,
            format!(
                "no verdict yet: {what} {effect} times the baseline's, {evidence}, {method}, {seen}"
            ),
        ),
    };
    let mut metadata = BTreeMap::new();
    metadata.insert("method".to_owned(), method.to_owned());
    metadata.insert(
        "statistic".to_owned(),
        format!("{:.6}", judgement.statistic),
    );
    metadata.insert("pValue".to_owned(), format!("{:.6}", judgement.p_value));
    metadata.insert("effect".to_owned(), effect.clone());
    metadata.insert(
        "baselineSamples".to_owned(),
        judgement.baseline_samples.to_string(),
    );
    metadata.insert(
        "canarySamples".to_owned(),
        judgement.canary_samples.to_string(),
    );
    Taken::Weighed {
        phase,
        message,
        value: effect,
        metadata,
    }
}

fn percent(fraction: f64) -> String {
    let percent = fraction * 100.0;
    if percent.fract() == 0.0 {
        format!("{percent:.0}")
    } else {
        format!("{percent}")
    }
}

/// The span samples are read over: from the run's start plus `initial_delay` to now, as a
/// range query relative to the moment it is sent; None while that start is still ahead.
pub fn sample_span(
    started: DateTime<Utc>,
    initial_delay: Duration,
    now: DateTime<Utc>,
    step: &str,
) -> Option<RangeQuery> {
    let from = started + chrono::Duration::from_std(initial_delay).ok()?;
    let age = (now - from).num_seconds();
    if age < 0 {
        return None;
    }
    Some(RangeQuery {
        start: format!("now() - duration(\"{age}s\")"),
        end: "now()".to_owned(),
        step: step.to_owned(),
        unsupported: Default::default(),
    })
}

impl Provider for JudgeMetric {
    fn timeout(&self) -> Duration {
        // The queries go out together, each within its own timeout.
        self.prometheus("").timeout()
    }

    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>> {
        Box::pin(async move {
            let now = Utc::now();
            let counts = self.baseline_total.is_some() && self.canary_total.is_some();
            let range = if counts {
                None
            } else {
                let started = env
                    .run
                    .status
                    .as_ref()
                    .and_then(|s| s.started_at.as_ref())
                    .map_or(now, crate::time::from_k8s);
                let delay = env
                    .metric
                    .initial_delay
                    .as_deref()
                    .and_then(|d| crate::duration::parse(d).ok())
                    .unwrap_or_default();
                let step = self.step.as_deref().unwrap_or(DEFAULT_STEP);
                Some(
                    sample_span(started, delay, now, step).unwrap_or(RangeQuery {
                        start: "now()".into(),
                        end: "now()".into(),
                        step: step.to_owned(),
                        unsupported: Default::default(),
                    }),
                )
            };
            let mut fields = Vec::new();
            let mut takes = Vec::new();
            let mut recorded = Vec::new();
            let mut secrets = Vec::new();
            for (field, query) in self.queries() {
                let metric = PrometheusMetric {
                    range_query: if field.ends_with("Total") {
                        None
                    } else {
                        range.clone()
                    },
                    ..self.prometheus(query)
                };
                let at = format!("{}.provider.judge.{field}", env.at);
                let field_env = Env { at: &at, ..*env };
                let ready = metric.prepare(&field_env).await?;
                recorded.push(format!("{field}: {}", ready.recorded));
                secrets.extend(ready.secrets);
                fields.push(field);
                takes.push(ready.take);
            }
            let judge = self.clone();
            Ok(Ready {
                recorded: recorded.join("; "),
                secrets,
                take: Box::pin(async move {
                    let mut values = BTreeMap::new();
                    for (field, taken) in fields.into_iter().zip(join_all(takes).await) {
                        match taken {
                            Ok(Taken::Value(value)) => values.insert(field, value),
                            Ok(_) => return Err(format!("{field}: the answer is not a value")),
                            Err(why) => return Err(format!("{field}: {why}")),
                        };
                    }
                    let (Some(baseline), Some(canary)) =
                        (values.remove("baseline"), values.remove("canary"))
                    else {
                        return Err("the baseline and canary queries gave no answer".into());
                    };
                    let totals = if counts {
                        values
                            .remove("baselineTotal")
                            .zip(values.remove("canaryTotal"))
                    } else {
                        None
                    };
                    let answers = Answers {
                        baseline,
                        canary,
                        totals,
                    };
                    decide(&judge, &answers).map(|judgement| measurement(&judge, &judgement))
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests;
