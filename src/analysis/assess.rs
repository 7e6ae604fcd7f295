//! The bookkeeping of a run: when each metric is due, how a measurement is recorded, and what
//! the counts make of a metric and of the run. Pure: the clock and the measurements are
//! inputs.
//!
//! Counting follows Argo Rollouts: more than `failureLimit` failures make a metric Failed,
//! more than `inconclusiveLimit` inconclusives make it Inconclusive, more than
//! `consecutiveErrorLimit` errors in a row make it Error. Unlike Argo, a metric that ends
//! without a single Successful measurement is never Successful: it takes the worst outcome it
//! saw, so a run whose every measurement errored is Error, not a pass.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::args::{ArgValue, substitute};
use crate::api::analysis::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, Measurement, Metric, MetricResult,
    RunSummary,
};
use crate::duration;
use crate::time::{from_k8s, to_k8s};

pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
pub const DEFAULT_RETENTION: usize = 10;

/// A metric's schedule and limits, with `{{args.X}}` placeholders resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub name: String,
    /// None: unbounded (an interval and no count), until the run stops.
    pub count: Option<i32>,
    pub interval: Option<Duration>,
    pub initial_delay: Duration,
    /// -1: no limit (as in Argo).
    pub failure_limit: i32,
    /// -1: no limit.
    pub inconclusive_limit: i32,
    pub consecutive_error_limit: i32,
    /// 0: off; otherwise that many successes in a row make the metric Successful.
    pub consecutive_success_limit: i32,
    pub dry_run: bool,
    pub retention: usize,
}

/// Reads every metric's schedule; an unusable value is an error naming metric and field.
pub fn schedules(
    spec: &AnalysisRunSpec,
    args: &BTreeMap<String, ArgValue>,
) -> Result<Vec<Schedule>, String> {
    let template = &spec.template;
    template
        .metrics
        .iter()
        .enumerate()
        .map(|(index, metric)| {
            let at =
                |field: &str| format!("spec.metrics[{index}].{field} (metric {:?})", metric.name);
            let number_from = |field: &str,
                               value: Option<&IntOrString>,
                               default: i32,
                               min: i32|
             -> Result<i32, String> {
                // Messages show the recorded text, in which Secret values are masked.
                let (text, shown) = match value {
                    None => return Ok(default),
                    Some(IntOrString::Int(n)) => (n.to_string(), n.to_string()),
                    Some(IntOrString::String(text)) => {
                        let filled =
                            substitute(text, args).map_err(|e| format!("{}: {e}", at(field)))?;
                        (filled.sent, filled.recorded)
                    }
                };
                match text.trim().parse::<i32>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(format!(
                        "{}: {shown:?} is not a whole number of {min} or more",
                        at(field)
                    )),
                }
            };
            let number = |field: &str, value: Option<&IntOrString>, default: i32| {
                number_from(field, value, default, 0)
            };
            let span = |field: &str, value: Option<&String>| -> Result<Option<Duration>, String> {
                let Some(text) = value else { return Ok(None) };
                let filled = substitute(text, args).map_err(|e| format!("{}: {e}", at(field)))?;
                duration::parse(&filled.sent).map(Some).map_err(|e| {
                    format!(
                        "{}: {:?} is not a duration: {}",
                        at(field),
                        filled.recorded,
                        e.reason
                    )
                })
            };
            let count = match &metric.count {
                None => None,
                some => Some(number("count", some.as_ref(), 1)?),
            };
            let interval = span("interval", metric.interval.as_ref())?;
            let dry_run = metric.dry_run
                || template
                    .dry_run
                    .iter()
                    .any(|d| d.metric_name == "*" || d.metric_name == metric.name);
            let retention = template
                .measurement_retention
                .iter()
                .find(|r| r.metric_name == metric.name)
                .or_else(|| {
                    template
                        .measurement_retention
                        .iter()
                        .find(|r| r.metric_name == "*")
                })
                .map_or(DEFAULT_RETENTION, |r| r.limit.max(1) as usize);
            Ok(Schedule {
                name: metric.name.clone(),
                // No count: once, or without end when there is an interval (Argo's rule).
                count: count.or(if interval.is_some() { None } else { Some(1) }),
                interval,
                initial_delay: span("initialDelay", metric.initial_delay.as_ref())?
                    .unwrap_or_default(),
                failure_limit: number_from("failureLimit", metric.failure_limit.as_ref(), 0, -1)?,
                inconclusive_limit: number_from(
                    "inconclusiveLimit",
                    metric.inconclusive_limit.as_ref(),
                    0,
                    -1,
                )?,
                consecutive_success_limit: number(
                    "consecutiveSuccessLimit",
                    metric.consecutive_success_limit.as_ref(),
                    0,
                )?,
                consecutive_error_limit: number(
                    "consecutiveErrorLimit",
                    metric.consecutive_error_limit.as_ref(),
                    DEFAULT_CONSECUTIVE_ERROR_LIMIT,
                )?,
                dry_run,
                retention,
            })
        })
        .collect()
}

fn result_for<'s>(status: &'s AnalysisRunStatus, name: &str) -> Option<&'s MetricResult> {
    status.metric_results.iter().find(|r| r.name == name)
}

/// When a metric wants its next measurement; None when it is done.
pub fn next_due(
    schedule: &Schedule,
    result: Option<&MetricResult>,
    started_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(result) = result else {
        return Some(started_at + schedule.initial_delay);
    };
    if result.phase.is_final() || schedule.count.is_some_and(|c| result.count >= c) {
        return None;
    }
    match result.measurements.last() {
        None => Some(started_at + schedule.initial_delay),
        Some(last) => {
            let finished = last.finished_at.as_ref().unwrap_or(&last.started_at);
            Some(from_k8s(finished) + schedule.interval.unwrap_or_default())
        }
    }
}

/// The metrics (by index) to measure now, and the earliest time one is due later.
pub fn due(
    schedules: &[Schedule],
    status: &AnalysisRunStatus,
    now: DateTime<Utc>,
) -> (Vec<usize>, Option<DateTime<Utc>>) {
    let started_at = status.started_at.as_ref().map_or(now, from_k8s);
    let mut now_due = Vec::new();
    let mut later: Option<DateTime<Utc>> = None;
    for (index, schedule) in schedules.iter().enumerate() {
        match next_due(schedule, result_for(status, &schedule.name), started_at) {
            Some(at) if at <= now => now_due.push(index),
            Some(at) => later = Some(later.map_or(at, |l| l.min(at))),
            None => {}
        }
    }
    (now_due, later)
}

/// Adds a measurement to its metric's record: counts, the run of errors, the newest
/// `retention` measurements, and the metric's phase.
pub fn record(status: &mut AnalysisRunStatus, schedule: &Schedule, measurement: Measurement) {
    let index = match status
        .metric_results
        .iter()
        .position(|r| r.name == schedule.name)
    {
        Some(index) => index,
        None => {
            status.metric_results.push(empty_result(schedule));
            status.metric_results.len() - 1
        }
    };
    let result = &mut status.metric_results[index];
    result.count += 1;
    match measurement.phase {
        AnalysisPhase::Successful => result.successful += 1,
        AnalysisPhase::Failed => result.failed += 1,
        AnalysisPhase::Inconclusive => result.inconclusive += 1,
        AnalysisPhase::Error => result.error += 1,
        AnalysisPhase::Pending | AnalysisPhase::Running => {}
    }
    if measurement.phase == AnalysisPhase::Error {
        result.consecutive_error += 1;
    } else {
        result.consecutive_error = 0;
    }
    if measurement.phase == AnalysisPhase::Successful {
        result.consecutive_success += 1;
    } else {
        result.consecutive_success = 0;
    }
    result.message = measurement.message.clone();
    result.measurements.push(measurement);
    let excess = result.measurements.len().saturating_sub(schedule.retention);
    result.measurements.drain(..excess);
    let (phase, message) = metric_phase(schedule, result, false);
    result.phase = phase;
    if let Some(message) = message {
        result.message = Some(message);
    }
}

fn plural(n: i32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A metric's phase from its counts; `stopping` when the run ends before the metric does.
/// The message, when the phase is final, says why.
pub fn metric_phase(
    schedule: &Schedule,
    result: &MetricResult,
    stopping: bool,
) -> (AnalysisPhase, Option<String>) {
    let last = result
        .measurements
        .last()
        .and_then(|m| m.message.as_deref())
        .unwrap_or("");
    let last_of = |phase: AnalysisPhase| {
        result
            .measurements
            .iter()
            .rev()
            .find(|m| m.phase == phase)
            .and_then(|m| m.message.clone())
            .unwrap_or_default()
    };
    if schedule.failure_limit >= 0 && result.failed > schedule.failure_limit {
        return (
            AnalysisPhase::Failed,
            Some(format!(
                "{} (failureLimit {}): {}",
                plural(result.failed, "failed measurement"),
                schedule.failure_limit,
                last_of(AnalysisPhase::Failed)
            )),
        );
    }
    if schedule.inconclusive_limit >= 0 && result.inconclusive > schedule.inconclusive_limit {
        return (
            AnalysisPhase::Inconclusive,
            Some(format!(
                "{} (inconclusiveLimit {}): {}",
                plural(result.inconclusive, "inconclusive measurement"),
                schedule.inconclusive_limit,
                last_of(AnalysisPhase::Inconclusive)
            )),
        );
    }
    if result.consecutive_error > schedule.consecutive_error_limit {
        return (
            AnalysisPhase::Error,
            Some(format!(
                "{} in a row (consecutiveErrorLimit {}): {last}",
                plural(result.consecutive_error, "errored measurement"),
                schedule.consecutive_error_limit
            )),
        );
    }
    if schedule.consecutive_success_limit > 0
        && result.consecutive_success >= schedule.consecutive_success_limit
    {
        return (
            AnalysisPhase::Successful,
            Some(format!(
                "{} in a row (consecutiveSuccessLimit {}): {}",
                plural(result.consecutive_success, "successful measurement"),
                schedule.consecutive_success_limit,
                last_of(AnalysisPhase::Successful)
            )),
        );
    }
    let done = stopping || schedule.count.is_some_and(|c| result.count >= c);
    if !done {
        return (AnalysisPhase::Running, None);
    }
    if result.successful > 0 {
        return (
            AnalysisPhase::Successful,
            Some(format!(
                "{} of {}: {}",
                plural(result.successful, "successful measurement"),
                result.count,
                last_of(AnalysisPhase::Successful)
            )),
        );
    }
    // Nothing succeeded: the worst thing that happened decides, never a pass.
    let tally = format!(
        "no measurement succeeded ({} failed, {} inconclusive, {} errored)",
        result.failed, result.inconclusive, result.error
    );
    if result.failed > 0 {
        (
            AnalysisPhase::Failed,
            Some(format!("{tally}: {}", last_of(AnalysisPhase::Failed))),
        )
    } else if result.error > 0 && result.inconclusive == 0 {
        (
            AnalysisPhase::Error,
            Some(format!("{tally}: {}", last_of(AnalysisPhase::Error))),
        )
    } else if result.count == 0 {
        (
            AnalysisPhase::Inconclusive,
            Some("stopped before any measurement".into()),
        )
    } else {
        // Looks with no verdict yet (a judge's, recorded Running) say why in the last one.
        let why = match last_of(AnalysisPhase::Inconclusive) {
            message if message.is_empty() => last.to_owned(),
            message => message,
        };
        (AnalysisPhase::Inconclusive, Some(format!("{tally}: {why}")))
    }
}

/// Sets the run's phase, message, summaries and completion time from its metrics. A metric
/// that ends badly ends the run at once; the run is Successful when every deciding metric is.
/// `stopping` (spec.terminate) ends every metric still measuring.
pub fn conclude(
    status: &mut AnalysisRunStatus,
    schedules: &[Schedule],
    stopping: bool,
    now: DateTime<Utc>,
) {
    if status.phase.is_some_and(AnalysisPhase::is_final) {
        return;
    }
    for schedule in schedules {
        if result_for(status, &schedule.name).is_none() && stopping {
            status.metric_results.push(empty_result(schedule));
        }
        if let Some(result) = status
            .metric_results
            .iter_mut()
            .find(|r| r.name == schedule.name)
            && !result.phase.is_final()
        {
            let (phase, message) = metric_phase(schedule, result, stopping);
            result.phase = phase;
            if message.is_some() {
                result.message = message;
            }
        }
    }
    let mut summary = RunSummary::default();
    let mut dry_summary = RunSummary::default();
    let mut worst: Option<&MetricResult> = None;
    let mut all_successful = true;
    for schedule in schedules {
        let result = result_for(status, &schedule.name);
        let phase = result.map_or(AnalysisPhase::Pending, |r| r.phase);
        let tally = if schedule.dry_run {
            &mut dry_summary
        } else {
            &mut summary
        };
        tally.count += 1;
        match phase {
            AnalysisPhase::Successful => tally.successful += 1,
            AnalysisPhase::Failed => tally.failed += 1,
            AnalysisPhase::Inconclusive => tally.inconclusive += 1,
            AnalysisPhase::Error => tally.error += 1,
            AnalysisPhase::Pending | AnalysisPhase::Running => tally.running += 1,
        }
        if schedule.dry_run {
            continue;
        }
        all_successful &= phase == AnalysisPhase::Successful;
        if let Some(result) = result
            && phase.severity() > worst.map_or(0, |w| w.phase.severity())
        {
            worst = Some(result);
        }
    }
    let dry_done = dry_summary.running == 0;
    let (phase, message) = match worst {
        Some(worst) => (
            worst.phase,
            format!(
                "metric {:?} {:?}: {}",
                worst.name,
                worst.phase,
                worst.message.as_deref().unwrap_or_default()
            ),
        ),
        None if all_successful && summary.count > 0 => (
            AnalysisPhase::Successful,
            format!("{} successful", plural(summary.count, "metric")),
        ),
        // Only dry-run metrics: nothing decides, so the run passes once they are measured.
        None if summary.count == 0 && dry_done => (
            AnalysisPhase::Successful,
            format!("{} measured (dry run)", plural(dry_summary.count, "metric")),
        ),
        None => (AnalysisPhase::Running, running_message(&summary)),
    };
    status.run_summary = Some(summary);
    status.dry_run_summary = (dry_summary.count > 0).then_some(dry_summary);
    status.message = Some(message);
    status.phase = Some(phase);
    if phase.is_final() {
        status.completed_at = Some(to_k8s(now));
    }
}

fn running_message(summary: &RunSummary) -> String {
    format!("{} of {} measuring", summary.running, summary.count)
}

fn empty_result(schedule: &Schedule) -> MetricResult {
    MetricResult {
        name: schedule.name.clone(),
        phase: AnalysisPhase::Running,
        message: None,
        measurements: Vec::new(),
        count: 0,
        successful: 0,
        failed: 0,
        inconclusive: 0,
        error: 0,
        consecutive_error: 0,
        consecutive_success: 0,
        dry_run: schedule.dry_run,
    }
}

/// Ends a run that cannot measure at all (an invalid condition, a missing argument): Error,
/// with the reason, and nothing measured.
pub fn fail_run(status: &mut AnalysisRunStatus, message: String, now: DateTime<Utc>) {
    status.phase = Some(AnalysisPhase::Error);
    status.message = Some(message);
    status.completed_at = Some(to_k8s(now));
}

/// The metric a schedule belongs to.
pub fn metric<'s>(spec: &'s AnalysisRunSpec, schedule: &Schedule) -> Option<&'s Metric> {
    spec.template
        .metrics
        .iter()
        .find(|m| m.name == schedule.name)
}

#[cfg(test)]
mod tests;
