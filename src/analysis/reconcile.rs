//! The glue of the AnalysisRun controller: read the run, resolve what it needs (arguments,
//! Secrets, addresses), take the measurements that are due, judge and record them, write the
//! status once, and come back exactly when the next measurement is due.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::args::{ArgValue, substitute};
use super::assess::{self, Schedule};
use super::prometheus::{self, Query};
use super::verdict;
use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, Metric, SecretKeyRef,
};
use crate::runtime::leader::Leadership;
use crate::runtime::metrics::Metrics;
use crate::status_patch::{self, WriteError};
use crate::time::to_k8s;
use crate::validate;

pub const FIELD_MANAGER: &str = "weir-analysis";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const RESYNC: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    /// One connection pool for every query.
    pub http: reqwest::Client,
    /// `--prometheus-url`: for metrics that name no address.
    pub default_address: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("the AnalysisRun changed while it was measured; measuring again")]
    Conflict,
    #[error("this replica lost the leader lease; the leader carries on")]
    NotLeader,
}

impl Error {
    fn api(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::Api {
            action,
            kind,
            name,
            source,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            Error::Api { .. } => "ApiError",
            Error::Conflict => "Conflict",
            Error::NotLeader => "NotLeader",
        }
    }
}

/// Why a run cannot measure at all; it ends as Error with this message.
struct Unmeasurable(String);

/// A metric ready to measure: its query (filled for sending and for the record) and where.
struct Prepared {
    schedule: Schedule,
    metric: Metric,
    query: Query,
    recorded_query: String,
}

#[instrument(skip(run, ctx), fields(run = %run.name_any(), namespace = run.namespace().unwrap_or_default()))]
pub async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !ctx.leadership.is_leading() {
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

    let mut next = None;
    match prepare(&ctx, &current).await? {
        Err(Unmeasurable(message)) => assess::fail_run(&mut status, message, now),
        Ok(prepared) if current.spec.terminate => {
            let schedules: Vec<Schedule> = prepared.into_iter().map(|p| p.schedule).collect();
            assess::conclude(&mut status, &schedules, true, now);
        }
        Ok(prepared) => {
            let schedules: Vec<Schedule> = prepared.iter().map(|p| p.schedule.clone()).collect();
            let (due, _) = assess::due(&schedules, &status, now);
            let measurements =
                futures::future::join_all(due.iter().map(|index| measure(&ctx, &prepared[*index])))
                    .await;
            for (index, measurement) in due.iter().zip(measurements) {
                assess::record(&mut status, &schedules[*index], measurement);
            }
            let now = Utc::now();
            assess::conclude(&mut status, &schedules, false, now);
            next = assess::due(&schedules, &status, now).1;
        }
    }

    if !ctx.leadership.is_leading() {
        return Err(Error::NotLeader);
    }
    write_status(&api, &current, &original, &status).await?;
    let finished = status.completed_at.is_some() && original.completed_at.is_none();
    if finished {
        announce(&ctx.recorder, &current, &status).await;
    }
    Ok(match next {
        // Exactly when the next measurement is due, not on a resync.
        Some(at) => Requeue::requeue((at - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
        None if status.completed_at.is_some() => Requeue::await_change(),
        None => Requeue::requeue(RESYNC),
    })
}

/// Resolves arguments (Secrets read now, never stored), checks the metrics, and fills each
/// query. A run that cannot be measured is an `Unmeasurable` naming the reason; a failing
/// API call is an error to retry.
async fn prepare(
    ctx: &Context,
    run: &AnalysisRun,
) -> Result<Result<Vec<Prepared>, Unmeasurable>, Error> {
    let spec = &run.spec.template;
    let namespace = run.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut values = BTreeMap::new();
    for arg in &spec.args {
        let value = match (
            &arg.value,
            arg.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref()),
        ) {
            (Some(value), _) => ArgValue {
                value: value.clone(),
                secret: false,
            },
            (None, Some(reference)) => match read_secret(&secrets, reference).await? {
                Ok(value) => ArgValue {
                    value,
                    secret: true,
                },
                Err(why) => {
                    return Ok(Err(Unmeasurable(format!("argument {:?}: {why}", arg.name))));
                }
            },
            (None, None) => {
                return Ok(Err(Unmeasurable(format!(
                    "argument {:?} has no value: give it one in the Rollout's analysis args or a default in the template",
                    arg.name
                ))));
            }
        };
        values.insert(arg.name.clone(), value);
    }
    // The rules the templates were checked against, again: a run can be written by hand.
    if let Some(first) = validate::analysis_template(spec).first() {
        return Ok(Err(Unmeasurable(format!("invalid analysis: {first}"))));
    }
    let schedules = match assess::schedules(&run.spec, &values) {
        Ok(schedules) => schedules,
        Err(why) => return Ok(Err(Unmeasurable(why))),
    };
    let mut prepared = Vec::new();
    for (index, schedule) in schedules.into_iter().enumerate() {
        let Some(metric) = assess::metric(&run.spec, &schedule).cloned() else {
            continue;
        };
        let at = format!("spec.metrics[{index}] (metric {:?})", metric.name);
        // Validation has required a provider; only Prometheus exists.
        let Some(prometheus) = &metric.provider.prometheus else {
            return Ok(Err(Unmeasurable(format!("{at}: no prometheus provider"))));
        };
        let Some(address) = prometheus
            .address
            .clone()
            .or_else(|| ctx.default_address.clone())
        else {
            return Ok(Err(Unmeasurable(format!(
                "{at}: no Prometheus address: set provider.prometheus.address, or start weir with --prometheus-url"
            ))));
        };
        let filled = match substitute(&prometheus.query, &values) {
            Ok(filled) => filled,
            Err(why) => {
                return Ok(Err(Unmeasurable(format!(
                    "{at}.provider.prometheus.query: {why}"
                ))));
            }
        };
        let mut headers = Vec::new();
        for header in &prometheus.headers {
            match substitute(&header.value, &values) {
                Ok(value) => headers.push((header.key.clone(), value.sent)),
                Err(why) => {
                    return Ok(Err(Unmeasurable(format!(
                        "{at}: header {}: {why}",
                        header.key
                    ))));
                }
            }
        }
        if let Some(auth) = &prometheus.authentication {
            match authorization(&secrets, auth).await? {
                Ok(Some(value)) => headers.push(("Authorization".into(), value)),
                Ok(None) => {}
                Err(why) => {
                    return Ok(Err(Unmeasurable(format!(
                        "{at}.provider.prometheus.authentication: {why}"
                    ))));
                }
            }
        }
        let timeout = prometheus
            .timeout
            .and_then(|t| u64::try_from(t).ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        prepared.push(Prepared {
            schedule,
            recorded_query: filled.recorded,
            query: Query {
                address,
                query: filled.sent,
                timeout,
                headers,
            },
            metric,
        });
    }
    Ok(Ok(prepared))
}

/// A Secret key's value; a missing Secret or key is a reason, an API failure an error.
async fn read_secret(
    secrets: &Api<Secret>,
    reference: &SecretKeyRef,
) -> Result<Result<String, String>, Error> {
    let Some(secret) = secrets.get_opt(&reference.name).await.map_err(Error::api(
        "reading",
        "Secret",
        &reference.name,
    ))?
    else {
        return Ok(Err(format!("Secret {:?} not found", reference.name)));
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
        });
    match bytes {
        None => Ok(Err(format!(
            "Secret {:?} has no key {:?}",
            reference.name, reference.key
        ))),
        Some(bytes) => Ok(String::from_utf8(bytes)
            .map(|s| s.trim_end_matches('\n').to_owned())
            .map_err(|_| {
                format!(
                    "Secret {:?} key {:?} is not UTF-8 text",
                    reference.name, reference.key
                )
            })),
    }
}

async fn authorization(
    secrets: &Api<Secret>,
    auth: &crate::api::analysis::PrometheusAuthentication,
) -> Result<Result<Option<String>, String>, Error> {
    use base64::Engine;
    if let Some(token) = &auth.bearer_token {
        return Ok(read_secret(secrets, token)
            .await?
            .map(|t| Some(format!("Bearer {t}"))));
    }
    let Some(basic) = &auth.basic_auth else {
        return Ok(Ok(None));
    };
    let key = |key: &str| SecretKeyRef {
        name: basic.secret_name.clone(),
        key: key.into(),
    };
    let user = match read_secret(secrets, &key("username")).await? {
        Ok(user) => user,
        Err(why) => return Ok(Err(why)),
    };
    let password = match read_secret(secrets, &key("password")).await? {
        Ok(password) => password,
        Err(why) => return Ok(Err(why)),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(Ok(Some(format!("Basic {encoded}"))))
}

/// One measurement: query, judge, and the record of both.
async fn measure(ctx: &Context, prepared: &Prepared) -> Measurement {
    let started = Utc::now();
    let answer = prometheus::query(&ctx.http, &prepared.query).await;
    let finished = Utc::now();
    let (phase, value, message) = match answer {
        Ok(value) => {
            let verdict = verdict::judge(&prepared.metric, &value);
            (verdict.phase, Some(value.to_string()), verdict.message)
        }
        Err(why) => (AnalysisPhase::Error, None, why),
    };
    ctx.metrics
        .observe_measurement(phase, (finished - started).to_std().unwrap_or_default());
    info!(metric = %prepared.schedule.name, ?phase, value = value.as_deref().unwrap_or("-"), %message, "measured");
    Measurement {
        phase,
        value,
        query: Some(prepared.recorded_query.clone()),
        message: Some(message),
        started_at: to_k8s(started),
        finished_at: Some(to_k8s(finished)),
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
    let has_status = current.status.is_some();
    status_patch::write(api, current, has_status, original, status, FIELD_MANAGER)
        .await
        .map_err(|error| match error {
            WriteError::Conflict => Error::Conflict,
            WriteError::Api(source) => Error::Api {
                action: "writing the status of",
                kind: "AnalysisRun",
                name: current.name_any(),
                source,
            },
        })
}

/// An Event on the run when its verdict is in.
async fn announce(recorder: &Recorder, run: &AnalysisRun, status: &AnalysisRunStatus) {
    let phase = status.phase.unwrap_or(AnalysisPhase::Error);
    let event = Event {
        type_: if phase == AnalysisPhase::Successful {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: format!("AnalysisRun{phase:?}"),
        note: status.message.clone(),
        action: "Measure".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &run.object_ref(&())).await {
        warn!(%error, "could not publish an Event");
    }
}

pub fn error_policy(run: Arc<AnalysisRun>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    match error {
        Error::Conflict => Requeue::requeue(Duration::from_millis(100)),
        Error::NotLeader => Requeue::await_change(),
        Error::Api { .. } => {
            warn!(run = %run.name_any(), category = error.category(), %error, "reconcile failed");
            Requeue::requeue(Duration::from_secs(5))
        }
    }
}
