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

use chrono::Utc;
use futures::future::{BoxFuture, join_all};

use super::args::{ArgValue, substitute};
use super::prometheus::{Place, Span};
use super::provider::{Env, Provider, Ready, Taken, Unready};
use crate::api::analysis::{
    AnalysisPhase, JudgeDirection, JudgeMethod, JudgeMetric, PrometheusMetric,
};
use crate::judge::{Direction, Judgement, Verdict, mann_whitney, sequential};
use crate::verdict::{MAX_SAMPLES, QueryValue};

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
    if baseline.is_empty() && canary.is_empty() {
        // One side may lag (a canary's first seconds); both empty is a query that matches
        // nothing, which must count as an error, not wait for ever.
        return Err(
            "neither the baseline nor the canary query returned a sample: check their labels, and that Prometheus scrapes them"
                .to_owned(),
        );
    }
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
    // A baseline with none of what the canary has (no errors at all) makes the ratio
    // unbounded: shown as at least the cap, so no figure runs to hundreds of digits.
    let capped = judgement.effect > MAX_SHOWN_EFFECT;
    let effect = format!("{:.3}", judgement.effect.min(MAX_SHOWN_EFFECT));
    let times = if capped { "at least " } else { "" };
    let seen = format!(
        "{} canary and {} baseline {}",
        judgement.canary_samples,
        judgement.baseline_samples,
        if counts { "requests" } else { "samples" }
    );
    let evidence = match judge.method {
        JudgeMethod::MannWhitney if !counts => format!("p = {:.4}", judgement.p_value),
        _ => format!(
            "likelihood ratio {} (fails at {:.0} = 1/alpha)",
            readable(judgement.statistic.exp()),
            1.0 / alpha
        ),
    };
    let (phase, message) = match judgement.verdict {
        Verdict::Failed => (
            AnalysisPhase::Failed,
            format!(
                "the canary's {what} is {times}{effect} times the baseline's, {bad} by more than the tolerance ({}%) beyond doubt: {evidence}, {method}, {seen}",
                percent(tolerance)
            ),
        ),
        Verdict::Successful => (
            AnalysisPhase::Successful,
            format!(
                "no evidence that the canary is {bad} than the baseline by more than {}%: {what} {times}{effect} times the baseline's, {evidence}, {method}, {seen}",
                percent(tolerance)
            ),
        ),
        Verdict::Inconclusive => (
            AnalysisPhase::Running,
            format!(
                "no verdict yet: {what} {times}{effect} times the baseline's, {evidence}, {method}, {seen}"
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

/// A ratio as people read one: `3.21`, or `2.19e25` when it runs to many digits.
fn readable(ratio: f64) -> String {
    if ratio >= 1e4 {
        format!("{ratio:.2e}")
    } else {
        format!("{ratio:.2}")
    }
}

/// The largest effect a measurement shows; beyond it, the canary is that much worse or more.
const MAX_SHOWN_EFFECT: f64 = 1000.0;

/// `0.07` as `7`, `0.125` as `12.5`: rounded to what a person wrote.
fn percent(fraction: f64) -> String {
    let text = format!("{:.2}", fraction * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The span samples are read over, in Unix seconds: from the run's start plus its initial
/// delay (`from`) to now, on one grid of `step` seconds from `from`, so that each look
/// extends the same stream rather than sampling it afresh; at most [`MAX_SAMPLES`] points
/// (the newest). `last` narrows it to the newest `last` seconds (a Mann-Whitney test
/// compares each measurement's own samples).
pub fn sample_span(from: i64, now: i64, step: u64, last: Option<u64>) -> Span {
    let step = step.max(1) as i64;
    let end = if now <= from {
        from
    } else {
        from + (now - from) / step * step
    };
    let most = (MAX_SAMPLES as i64 - 1) * step;
    let mut start = from.max(end - most);
    if let Some(last) = last {
        start = start.max(end - last as i64);
    }
    // Back onto the grid.
    start = end - (end - start) / step * step;
    Span {
        start,
        end,
        step: step as f64,
    }
}

/// A duration field of the metric with its arguments filled, as the schedule reads it.
fn filled_duration(text: Option<&str>, args: &BTreeMap<String, ArgValue>) -> Option<Duration> {
    let filled = substitute(text?, args).ok()?;
    crate::duration::parse(&filled.sent).ok()
}

impl Provider for JudgeMetric {
    fn timeout(&self) -> Duration {
        // The queries go out together, each within its own timeout.
        super::prometheus::query_timeout(self.timeout)
    }

    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>> {
        Box::pin(async move {
            let counts = self.baseline_total.is_some() && self.canary_total.is_some();
            let range = (!counts).then(|| {
                let now = Utc::now();
                let started = env
                    .run
                    .status
                    .as_ref()
                    .and_then(|s| s.started_at.as_ref())
                    .map_or(now, crate::time::from_k8s);
                let delay = filled_duration(env.metric.initial_delay.as_deref(), env.args)
                    .unwrap_or_default();
                let step =
                    filled_duration(Some(self.step.as_deref().unwrap_or(DEFAULT_STEP)), env.args)
                        .map_or(10, |step| step.as_secs_f64().ceil() as u64);
                let last = match self.method {
                    JudgeMethod::MannWhitney => {
                        filled_duration(env.metric.interval.as_deref(), env.args)
                            .map(|interval| interval.as_secs())
                    }
                    JudgeMethod::Sequential => None,
                };
                let from = started.timestamp().saturating_add(delay.as_secs() as i64);
                sample_span(from, now.timestamp(), step, last)
            });
            let queries: Vec<(Place<'static>, PrometheusMetric)> = self
                .queries()
                .into_iter()
                .map(|(field, query)| {
                    let place = Place {
                        provider: "provider.judge",
                        query: field,
                    };
                    (place, self.prometheus(query))
                })
                .collect();
            // Prepared together: credentials are read for each, and one slow read must not
            // wait for another.
            let prepared = join_all(queries.iter().map(|(place, metric)| {
                let span = if place.query.ends_with("Total") {
                    None
                } else {
                    range
                };
                metric.prepare_at(env, place, span)
            }))
            .await;
            let mut fields = Vec::new();
            let mut takes = Vec::new();
            let mut recorded = Vec::new();
            let mut secrets = Vec::new();
            for ((place, _), ready) in queries.iter().zip(prepared) {
                let ready = ready?;
                recorded.push(format!("{}: {}", place.query, ready.recorded));
                secrets.extend(ready.secrets);
                fields.push(place.query);
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
