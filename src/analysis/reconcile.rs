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
use tracing::{info, instrument};

use super::args::{ArgValue, substitute};
use super::assess::{self, Schedule};
use super::hosts::AllowedHosts;
use super::prometheus::{self, Query};
use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, Metric, SecretKeyRef,
};
use crate::runtime::error::{Backoff, Controller};
use crate::runtime::leader::Leadership;
use crate::runtime::metrics::Metrics;
use crate::time::to_k8s;
use crate::validate;
use crate::verdict;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const RESYNC: Duration = Duration::from_secs(300);
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
    /// One connection pool for every query.
    pub http: reqwest::Client,
    /// `--prometheus-url`: for metrics that name no address.
    pub default_address: Option<String>,
    /// `--allowed-metric-hosts`: the addresses that may be queried.
    pub allowed: AllowedHosts,
    /// `--max-queries-per-address`: queries in flight to one Prometheus at once.
    pub gates: prometheus::Gates,
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

/// A metric ready to measure: its query (filled for sending and for the record), where, and
/// the Secret values to keep out of every message.
struct Prepared {
    metric: Metric,
    query: Query,
    recorded_query: String,
    secrets: Vec<String>,
}

/// Why a due metric is not measured this time.
#[derive(Clone)]
enum Unready {
    /// It never can be (no address, an argument with no value): the run ends as Error.
    Never(String),
    /// Not now (a Secret missing or unreadable): an Error measurement, counted against
    /// `consecutiveErrorLimit`, so a Secret restored in time costs nothing.
    NotNow(String),
}

#[instrument(skip(run, ctx), fields(run = %run.name_any(), namespace = run.namespace().unwrap_or_default()))]
pub async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let slowest_query = run
        .spec
        .template
        .metrics
        .iter()
        .map(|m| query_timeout(m.provider.prometheus.as_ref()))
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
    let term = ctx.leadership.current_term();
    if !term.holds() {
        return Ok(Requeue::await_change());
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
    if original
        .phase
        .is_some_and(|p| !matches!(p, AnalysisPhase::Pending | AnalysisPhase::Running))
    {
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
    if let Some(why) = ctx
        .allowed
        .refused(&name, &spec.metrics, ctx.default_address.as_deref())
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
        let measurements =
            futures::future::join_all(prepared.iter().map(|(_, p)| measure(ctx, p))).await;
        for ((index, _), measurement) in prepared.iter().zip(measurements) {
            assess::record(status, &schedules[*index], measurement);
        }
    }
    let now = Utc::now();
    assess::conclude(status, &schedules, false, now);
    assess::due(&schedules, status, now).1
}

/// An Error measurement for a metric that could not be queried.
fn unmeasured(why: String, now: chrono::DateTime<Utc>) -> Measurement {
    Measurement {
        phase: AnalysisPhase::Error,
        value: None,
        query: None,
        message: Some(why),
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

/// Fills one metric's query and credentials.
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
    // Validation has required a provider; Prometheus is the only one.
    let Some(prometheus) = &metric.provider.prometheus else {
        return Err(Unready::Never(format!("{at}: no prometheus provider")));
    };
    let Some(address) = prometheus
        .address
        .clone()
        .or_else(|| ctx.default_address.clone())
    else {
        return Err(Unready::Never(format!(
            "{at}: no Prometheus address: set provider.prometheus.address, or start weir with --prometheus-url"
        )));
    };
    let filled = substitute(&prometheus.query, values)
        .map_err(|why| Unready::Never(format!("{at}.provider.prometheus.query: {why}")))?;
    let mut headers = Vec::new();
    for header in &prometheus.headers {
        let value = substitute(&header.value, values)
            .map_err(|why| Unready::Never(format!("{at}: header {}: {why}", header.key)))?;
        headers.push((header.key.clone(), value.sent));
    }
    let mut secret_values: Vec<String> = values
        .values()
        .filter(|v| v.secret && !v.value.is_empty())
        .map(|v| v.value.clone())
        .collect();
    if let Some(auth) = &prometheus.authentication {
        let credentials = authorization(secrets, auth, values).await.map_err(|why| {
            Unready::NotNow(format!("{at}.provider.prometheus.authentication: {why}"))
        })?;
        if let Some((header, secret_parts)) = credentials {
            secret_values.extend(secret_parts);
            headers.push(("Authorization".into(), header));
        }
    }
    let timeout = query_timeout(Some(prometheus));
    Ok(Prepared {
        metric: metric.clone(),
        recorded_query: filled.recorded,
        query: Query {
            address,
            query: filled.sent,
            timeout,
            headers,
        },
        secrets: secret_values,
    })
}

/// How long weir waits for one query's answer.
fn query_timeout(prometheus: Option<&crate::api::analysis::PrometheusMetric>) -> Duration {
    prometheus
        .and_then(|p| p.timeout)
        .and_then(|t| u64::try_from(t).ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// A Secret key's value, or why it cannot be had (missing, unreadable, not text).
async fn read_secret(secrets: &Api<Secret>, reference: &SecretKeyRef) -> Result<String, String> {
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(format!("Secret {:?} not found", reference.name)),
        Err(error) => return Err(format!("reading Secret {:?}: {error}", reference.name)),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {:?} has no key {:?}", reference.name, reference.key))?;
    String::from_utf8(bytes)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|_| {
            format!(
                "Secret {:?} key {:?} is not UTF-8 text",
                reference.name, reference.key
            )
        })
}

/// The Authorization header and the secret parts it carries; None without credentials.
/// basicAuth's `{username, password}` have their `{{args.NAME}}` filled from `values`.
async fn authorization(
    secrets: &Api<Secret>,
    auth: &crate::api::analysis::PrometheusAuthentication,
    values: &BTreeMap<String, ArgValue>,
) -> Result<Option<(String, Vec<String>)>, String> {
    use base64::Engine;
    if let Some(token) = &auth.bearer_token {
        let token = read_secret(secrets, token).await?;
        return Ok(Some((format!("Bearer {token}"), vec![token])));
    }
    let Some(basic) = &auth.basic_auth else {
        return Ok(None);
    };
    let (user, password) = match &basic.secret_name {
        Some(name) => {
            let key = |key: &str| SecretKeyRef {
                name: name.clone(),
                key: key.into(),
                unsupported: Default::default(),
            };
            (
                read_secret(secrets, &key("username")).await?,
                read_secret(secrets, &key("password")).await?,
            )
        }
        None => {
            let fill = |field: &str, text: &Option<String>| {
                substitute(text.as_deref().unwrap_or_default(), values)
                    .map(|filled| filled.sent)
                    .map_err(|why| format!("basicAuth.{field}: {why}"))
            };
            (
                fill("username", &basic.username)?,
                fill("password", &basic.password)?,
            )
        }
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    // An empty part is no secret, and masking "" would garble every message.
    let header = format!("Basic {encoded}");
    let parts = [password, encoded].into_iter().filter(|p| !p.is_empty());
    Ok(Some((header, parts.collect())))
}

/// One measurement: query, judge, and the record of both.
async fn measure(ctx: &Context, prepared: &Prepared) -> Measurement {
    let started = Utc::now();
    let answer = prometheus::query(&ctx.http, &ctx.gates, &prepared.query).await;
    let (phase, value, message) = match answer {
        Ok(value) => {
            let shown = value.to_string();
            let verdict = judge_off_the_workers(&prepared.metric, value, JUDGE_LIMIT).await;
            (verdict.phase, Some(shown), verdict.message)
        }
        Err(why) => (AnalysisPhase::Error, None, why),
    };
    let finished = Utc::now();
    // Whatever the answer echoed (an error quoting the request), no Secret value leaves.
    let message = prepared.secrets.iter().fold(message, |text, secret| {
        text.replace(secret.as_str(), "<secret>")
    });
    ctx.metrics
        .observe_measurement(phase, (finished - started).to_std().unwrap_or_default());
    info!(metric = %prepared.metric.name, ?phase, value = value.as_deref().unwrap_or("-"), %message, "measured");
    Measurement {
        phase,
        value,
        query: Some(prepared.recorded_query.clone()),
        message: Some(message),
        started_at: to_k8s(started),
        finished_at: Some(to_k8s(finished)),
    }
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

pub fn error_policy(run: Arc<AnalysisRun>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    crate::runtime::error::error_policy("AnalysisRun", &run.name_any(), error, BACKOFF)
}

#[cfg(test)]
mod tests;
