//! The glue of the AnalysisRun controller: read the run, resolve what it needs (arguments,
//! Secrets, addresses), take the measurements that are due, judge and record them, write the
//! status once, and come back exactly when the next measurement is due.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::api::contract::ANALYSIS_MANAGER;
use crate::runtime::Events;
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::args::ArgValue;
use super::assess::{self, Schedule};
use super::provider::{self, Env, Ready, Shared, Taken, Unready, read_secret};
use crate::api::analysis::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, Metric};
use crate::runtime::error::{Backoff, Controller};
use crate::runtime::leader::Leadership;
use crate::runtime::metrics::Metrics;
use crate::time::to_k8s;
use crate::validate;
use crate::verdict;

const RESYNC: Duration = Duration::from_secs(300);
/// How soon a measurement under way (a Job running) is looked at again at the latest.
const UNDER_WAY_CHECK: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// What a reconcile may take beyond its slowest query (each bounded by its own timeout).
const STALL_LIMIT: Duration = Duration::from_secs(20);
/// How long one verdict may take. Validation holds every condition to an estimate of 10 ms
/// over the largest result; this is the backstop should an estimate be wrong, so that a slow
/// judge costs a measurement, never the reconcile or the async workers.
const JUDGE_LIMIT: Duration = Duration::from_secs(2);

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    /// What the providers share: HTTP clients, per-server gates, the operator's flags.
    pub shared: Shared,
}

pub use crate::runtime::error::Error;

/// What the shared error core says of AnalysisRuns.
const RUNS: Controller = Controller {
    kind: "AnalysisRun",
    field_manager: ANALYSIS_MANAGER,
    conflict: "the AnalysisRun changed while it was measured; measuring again",
};

fn stalled(limit: Duration) -> Error {
    Error::Stalled {
        work: "measuring",
        waited_on: "the API server",
        limit,
    }
}

/// A metric ready to measure.
struct Prepared {
    metric: Metric,
    ready: Ready,
}

#[instrument(skip(run, ctx), fields(run = %run.name_any(), namespace = run.namespace().unwrap_or_default()))]
pub async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let slowest_query = run
        .spec
        .template
        .metrics
        .iter()
        .filter_map(|m| provider::of(&m.provider).map(|p| p.timeout()))
        .max()
        .unwrap_or_default();
    crate::runtime::within(
        STALL_LIMIT + slowest_query,
        reconcile_run(run, ctx),
        stalled,
    )
    .await
}

async fn reconcile_run(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let term = ctx.leadership.term_for(run.as_ref());
    if !term.holds() {
        return Ok(ctx.leadership.when_unled(run.as_ref()));
    }
    let namespace = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &namespace);
    // A fresh read: the watch cache can lag our own last write, and measuring from a stale
    // record would take a measurement twice.
    let Some(current) =
        api.get_opt(&name)
            .await
            .map_err(Error::api("reading", "AnalysisRun", &name))?
    else {
        return Ok(Requeue::await_change());
    };
    let original = current.status.clone().unwrap_or_default();
    if original.phase.is_some_and(AnalysisPhase::is_final) {
        return Ok(Requeue::await_change());
    }
    let mut status = original.clone();
    let now = Utc::now();
    if status.started_at.is_none() {
        status.started_at = Some(to_k8s(now));
        status.phase = Some(AnalysisPhase::Running);
    }

    let next = measure_due(&ctx, &current, &mut status, now).await;

    if !term.holds() {
        return Err(Error::NotLeader);
    }
    write_status(&api, &current, &original, &status).await?;
    let finished = status.completed_at.is_some() && original.completed_at.is_none();
    if finished {
        announce(&ctx.events, &current, &status).await;
        let measures_by_job = current
            .spec
            .template
            .metrics
            .iter()
            .any(|m| m.provider.job.is_some());
        if measures_by_job {
            // Best effort: what is left goes with the run anyway (it owns its Jobs).
            if let Err(why) = super::job::stop_unfinished(&ctx.client, &current).await {
                warn!(run = %name, namespace = %namespace, %why, "could not stop the run's Jobs still running");
            }
        }
    }
    Ok(match next {
        // Exactly when the next measurement is due, not on a resync (and never later than
        // one: an initialDelay of years is looked at again, not slept through).
        Some(at) => Requeue::requeue(
            (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(RESYNC),
        ),
        None if status.completed_at.is_some() => Requeue::await_change(),
        None => Requeue::requeue(RESYNC),
    })
}

/// Measures what is due and records it; returns when the next measurement is due. A run told
/// to stop is concluded with what it has. Secrets are read only when something is due.
async fn measure_due(
    ctx: &Context,
    run: &AnalysisRun,
    status: &mut AnalysisRunStatus,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let spec = &run.spec.template;
    // The rules the templates were checked against, again: a run can be written by hand.
    if let Some(first) = validate::analysis_template(spec).first() {
        assess::fail_run(status, format!("invalid analysis: {first}"), now);
        return None;
    }
    // Before anything is read or sent: a run that names an address the operator does not
    // allow never queries it, and no Secret is read for it.
    let name = format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any());
    if let Some(why) =
        ctx.shared
            .allowed
            .refused(&name, &spec.metrics, ctx.shared.default_address.as_deref())
    {
        assess::fail_run(status, why, now);
        return None;
    }
    let literal: BTreeMap<String, ArgValue> = spec
        .args
        .iter()
        .filter_map(|a| {
            let value = a.value.clone()?;
            Some((
                a.name.clone(),
                ArgValue {
                    value,
                    secret: false,
                },
            ))
        })
        .collect();
    let schedules = match assess::schedules(&run.spec, &literal) {
        Ok(schedules) => schedules,
        Err(why) => {
            assess::fail_run(status, why, now);
            return None;
        }
    };
    if run.spec.terminate {
        assess::conclude(status, &schedules, true, now);
        return None;
    }
    let (due, _) = assess::due(&schedules, status, now);
    let mut under_way = false;
    if !due.is_empty() {
        let secrets: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
        let values = resolve_args(&secrets, run, literal).await;
        let mut prepared = Vec::new();
        for index in &due {
            let schedule = &schedules[*index];
            let ready = match &values {
                Err(why) => Err(why.clone()),
                Ok(values) => prepare(ctx, &secrets, run, schedule, values).await,
            };
            match ready {
                Ok(ready) => prepared.push((*index, ready)),
                Err(Unready::Never(why)) => {
                    assess::fail_run(status, why, now);
                    return None;
                }
                Err(Unready::NotNow(why)) => {
                    assess::record(status, schedule, unmeasured(why, now));
                }
            }
        }
        let (indices, prepared): (Vec<usize>, Vec<Prepared>) = prepared.into_iter().unzip();
        let measurements =
            futures::future::join_all(prepared.into_iter().map(|p| measure(ctx, p))).await;
        for (index, measurement) in indices.into_iter().zip(measurements) {
            match measurement {
                Some(measurement) => assess::record(status, &schedules[index], measurement),
                None => under_way = true,
            }
        }
    }
    let now = Utc::now();
    assess::conclude(status, &schedules, false, now);
    let later = assess::due(&schedules, status, now).1;
    if under_way {
        // Its Job's events wake the run too; this is the floor should one be missed.
        let soon = now + UNDER_WAY_CHECK;
        return Some(later.map_or(soon, |l| l.min(soon)));
    }
    later
}

/// An Error measurement for a metric that could not be queried.
fn unmeasured(why: String, now: chrono::DateTime<Utc>) -> Measurement {
    Measurement {
        phase: AnalysisPhase::Error,
        value: None,
        query: None,
        message: Some(why),
        metadata: BTreeMap::new(),
        started_at: to_k8s(now),
        finished_at: Some(to_k8s(now)),
    }
}

/// Every argument's value: literals, and Secrets read now (never stored).
async fn resolve_args(
    secrets: &Api<Secret>,
    run: &AnalysisRun,
    mut values: BTreeMap<String, ArgValue>,
) -> Result<BTreeMap<String, ArgValue>, Unready> {
    for arg in &run.spec.template.args {
        if arg.value.is_some() {
            continue;
        }
        let Some(reference) = arg
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
        else {
            return Err(Unready::Never(format!(
                "argument {:?} has no value: give it one in the Rollout's analysis args or a default in the template",
                arg.name
            )));
        };
        let value = read_secret(secrets, reference)
            .await
            .map_err(|why| Unready::NotNow(format!("argument {:?}: {why}", arg.name)))?;
        values.insert(
            arg.name.clone(),
            ArgValue {
                value,
                secret: true,
            },
        );
    }
    Ok(values)
}

/// Prepares one metric through its provider.
async fn prepare(
    ctx: &Context,
    secrets: &Api<Secret>,
    run: &AnalysisRun,
    schedule: &Schedule,
    values: &BTreeMap<String, ArgValue>,
) -> Result<Prepared, Unready> {
    let Some((index, metric)) = run
        .spec
        .template
        .metrics
        .iter()
        .enumerate()
        .find(|(_, m)| m.name == schedule.name)
    else {
        return Err(Unready::Never(format!(
            "metric {:?} is gone from the run",
            schedule.name
        )));
    };
    let at = format!("spec.metrics[{index}] (metric {:?})", metric.name);
    // Validation has required a provider weir has.
    let Some(provider) = provider::of(&metric.provider) else {
        return Err(Unready::Never(format!("{at}: no provider weir has")));
    };
    // The measurement about to be taken, counting those recorded.
    let measurement = run
        .status
        .as_ref()
        .and_then(|s| s.metric_results.iter().find(|r| r.name == metric.name))
        .map_or(0, |r| r.count)
        + 1;
    let env = Env {
        run,
        metric,
        measurement,
        at: &at,
        args: values,
        secrets,
        shared: &ctx.shared,
    };
    let ready = provider.prepare(&env).await?;
    Ok(Prepared {
        metric: with_conditions_filled(metric, &at, values)?,
        ready,
    })
}

/// The metric with `{{args.NAME}}` filled in its conditions, as Argo fills them, and each
/// checked again as validation checks one (a value can make a condition invalid or costly).
/// Secret-valued arguments are masked in any refusal.
fn with_conditions_filled(
    metric: &Metric,
    at: &str,
    values: &BTreeMap<String, ArgValue>,
) -> Result<Metric, Unready> {
    let mut filled = metric.clone();
    for (field, condition) in [
        ("successCondition", &mut filled.success_condition),
        ("failureCondition", &mut filled.failure_condition),
    ] {
        let Some(text) = condition.as_mut().filter(|t| t.contains("{{")) else {
            continue;
        };
        let substituted = super::args::substitute(text, values)
            .map_err(|why| Unready::Never(format!("{at}.{field}: {why}")))?;
        if let Err(why) = verdict::check_condition(&substituted.sent) {
            // The checker's words may quote the text: no Secret value leaves in them.
            let why = provider::masked(why, &provider::secret_values(values));
            return Err(Unready::Never(format!(
                "{at}.{field}, its arguments filled (`{}`): {why}",
                substituted.recorded
            )));
        }
        *text = substituted.sent;
    }
    Ok(filled)
}

/// One measurement: take it, judge it, and the record of both; None while it is under way
/// (a Job still running), when there is nothing to record yet.
async fn measure(ctx: &Context, prepared: Prepared) -> Option<Measurement> {
    let started = Utc::now();
    let answer = prepared.ready.take.await;
    let mut metadata = BTreeMap::new();
    let (phase, value, message) = match answer {
        Ok(Taken::Value(value)) => {
            let shown = value.to_string();
            let verdict = judge_off_the_workers(&prepared.metric, value, JUDGE_LIMIT).await;
            (verdict.phase, Some(shown), verdict.message)
        }
        Ok(Taken::Judged { phase, message }) => (phase, None, message),
        Ok(Taken::Weighed {
            phase,
            message,
            value,
            metadata: figures,
        }) => {
            metadata = figures;
            (phase, Some(value), message)
        }
        Ok(Taken::UnderWay) => return None,
        Err(why) => (AnalysisPhase::Error, None, why),
    };
    let finished = Utc::now();
    // Whatever the answer echoed (an error quoting the request), no Secret value leaves.
    let message = provider::masked(message, &prepared.ready.secrets);
    ctx.metrics
        .observe_measurement(phase, (finished - started).to_std().unwrap_or_default());
    info!(metric = %prepared.metric.name, ?phase, value = value.as_deref().unwrap_or("-"), %message, "measured");
    Some(Measurement {
        phase,
        value,
        query: Some(prepared.ready.recorded),
        message: Some(message),
        metadata,
        started_at: to_k8s(started),
        finished_at: Some(to_k8s(finished)),
    })
}

/// Judges on tokio's blocking pool, within `limit`: CEL runs as long as its input makes it,
/// and the async workers must stay free for every other reconcile. A judge past its limit
/// finishes on its own thread (validation bounds how long) and its verdict is dropped.
async fn judge_off_the_workers(
    metric: &Metric,
    value: verdict::QueryValue,
    limit: Duration,
) -> verdict::Verdict {
    let metric = metric.clone();
    let judging = tokio::task::spawn_blocking(move || verdict::judge(&metric, &value));
    match tokio::time::timeout(limit, judging).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(failed)) => verdict::Verdict {
            phase: AnalysisPhase::Error,
            message: format!("judging the result failed: {failed}"),
        },
        Err(_) => verdict::Verdict {
            phase: AnalysisPhase::Error,
            message: format!(
                "judging the result took longer than {}s; simplify successCondition and failureCondition (one pass over result)",
                limit.as_secs()
            ),
        },
    }
}

/// Writes what changed, guarded by the resourceVersion it was measured from: a run told to
/// stop meanwhile is measured again rather than overwritten.
async fn write_status(
    api: &Api<AnalysisRun>,
    current: &AnalysisRun,
    original: &AnalysisRunStatus,
    status: &AnalysisRunStatus,
) -> Result<(), Error> {
    RUNS.write_status(api, current, current.status.is_some(), original, status)
        .await
        .map(drop)
}

/// An Event on the run when its verdict is in.
async fn announce(events: &Events, run: &AnalysisRun, status: &AnalysisRunStatus) {
    let phase = status.phase.unwrap_or(AnalysisPhase::Error);
    crate::runtime::publish(
        events,
        &run.object_ref(&()),
        phase != AnalysisPhase::Successful,
        format!("AnalysisRun{phase:?}"),
        status.message.as_deref(),
        "Measure",
    )
    .await;
}

/// A refusal that waits for a fix (RBAC, an invalid run) is looked at again after a minute.
const BACKOFF: Backoff = Backoff {
    transient: Duration::from_secs(5),
    lasting: Duration::from_secs(60),
};

pub fn error_policy(run: Arc<AnalysisRun>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let unled = ctx.leadership.when_unled(run.as_ref());
    crate::runtime::error::error_policy("AnalysisRun", &run.name_any(), error, BACKOFF, unled)
}

#[cfg(test)]
mod tests;
