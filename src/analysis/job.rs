//! The `job` provider, as Argo Rollouts has it: each measurement is a Kubernetes Job made
//! from the metric's `spec` (`{{args.NAME}}` filled in its strings) in the run's namespace,
//! owned by the run (so it goes with the run); the Job completing is a Successful
//! measurement, failing a Failed one. Level-based: the Job is named after the run, the metric
//! and the measurement's number, so each reconcile finds the Job it made before (after a
//! restart too) and never makes a second; while it runs, nothing is recorded.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Resource, ResourceExt};

use super::args::substitute_json;
use super::provider::{Env, Provider, Ready, Taken, Unready};
use crate::api::analysis::{AnalysisPhase, AnalysisRun, JobMetric};

/// How long the API calls of one look at a Job may take; the Job itself runs as long as its
/// own `activeDeadlineSeconds` lets it.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest Job name: its Pods are named after it with a suffix, and carry it in a label.
const MAX_NAME: usize = 52;
/// The label that ties a Job to its run.
pub const RUN_LABEL: &str = "weir.dev/analysis-run";

/// The Job of a run's metric's `measurement`th measurement: `<run>-<metric>-<n>`, or, when
/// that is too long, its start and a hash of the whole, so two never share a name.
pub fn job_name(run: &str, metric: &str, measurement: i32) -> String {
    let full = format!("{run}-{metric}-{measurement}").to_ascii_lowercase();
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= MAX_NAME && clean == full {
        return clean;
    }
    let hash = fnv_hex(&full);
    let keep = MAX_NAME - hash.len() - 1;
    let start = clean[..clean.len().min(keep)].trim_end_matches('-');
    format!("{start}-{hash}")
}

/// The run as a label value (63 characters at most, as Kubernetes allows): its name, or the
/// name's start and a hash of the whole when the name is longer.
pub fn run_label_value(run: &str) -> String {
    const MAX_LABEL_VALUE: usize = 63;
    if run.len() <= MAX_LABEL_VALUE {
        return run.to_owned();
    }
    let hash = fnv_hex(run);
    let keep = MAX_LABEL_VALUE - hash.len() - 1;
    // Run names are DNS subdomains: ASCII, so any byte is a character boundary.
    let start = run[..keep].trim_end_matches(['-', '.']);
    format!("{start}-{hash}")
}

fn fnv_hex(text: &str) -> String {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(text.as_bytes());
    format!("{:08x}", hasher.finish() as u32)
}

/// What a Job's status says of the measurement: Judged once it completed or failed, UnderWay
/// before.
pub fn verdict_of(job: &Job) -> Taken {
    let name = job.name_any();
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Taken::Judged {
            phase: AnalysisPhase::Successful,
            message: format!("Job {name} succeeded"),
        };
    }
    if let Some(failed) = holds("Failed") {
        let why = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return Taken::Judged {
            phase: AnalysisPhase::Failed,
            message: if why.is_empty() {
                format!("Job {name} failed")
            } else {
                format!("Job {name} failed: {why}")
            },
        };
    }
    Taken::UnderWay
}

/// The Job for a measurement: the metric's spec, arguments filled, labelled with the run and
/// owned by it.
pub fn job_for(
    metric: &JobMetric,
    spec: JobSpec,
    run: &AnalysisRun,
    name: &str,
) -> Result<Job, String> {
    let owner = run
        .controller_owner_ref(&())
        .ok_or("the run has no uid yet; it is looked at again")?;
    let mut labels = metric
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(RUN_LABEL.into(), run_label_value(&run.name_any()));
    let annotations = metric
        .metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .filter(|a| !a.is_empty());
    Ok(Job {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: run.namespace(),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

impl Provider for JobMetric {
    fn timeout(&self) -> Duration {
        API_TIMEOUT
    }

    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>> {
        Box::pin(async move {
            let at = format!("{}.provider.job", env.at);
            let filled = substitute_json(&self.spec, env.args)
                .map_err(|why| Unready::Never(format!("{at}.spec: {why}")))?;
            let spec: JobSpec = serde_json::from_value(filled).map_err(|e| {
                Unready::Never(format!(
                    "{at}.spec: not a Job spec once arguments are filled ({e})"
                ))
            })?;
            let run_name = env.run.name_any();
            let name = job_name(&run_name, &env.metric.name, env.measurement);
            let job = job_for(self, spec, env.run, &name).map_err(Unready::NotNow)?;
            let run_uid = env.run.meta().uid.clone();
            let namespace = env.run.namespace().unwrap_or_default();
            let jobs: Api<Job> = Api::namespaced(env.shared.client.clone(), &namespace);
            let retention = env.measurement - retained(env);
            let metric_name = env.metric.name.clone();
            Ok(Ready {
                recorded: format!("Job {namespace}/{name}"),
                secrets: env.secret_args(),
                take: Box::pin(async move {
                    let taken = tokio::time::timeout(API_TIMEOUT, look(&jobs, &job, run_uid))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "the API server did not answer about Job {name} in time"
                            ))
                        })?;
                    // A measurement recorded: the Job that falls out of retention goes.
                    if !matches!(taken, Taken::UnderWay) && retention >= 1 {
                        let old = job_name(&run_name, &metric_name, retention);
                        let _ = jobs.delete(&old, &DeleteParams::background()).await;
                    }
                    Ok(taken)
                }),
            })
        })
    }
}

/// Deletes the run's Jobs still running, as Argo Rollouts terminates a run's measurements
/// when the run ends: a concluded run takes no more measurements, so they would only use the
/// cluster. Returns how many were deleted.
pub async fn stop_unfinished(client: &kube::Client, run: &AnalysisRun) -> Result<usize, String> {
    let namespace = run.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("{RUN_LABEL}={}", run_label_value(&run.name_any()));
    let listed = tokio::time::timeout(
        API_TIMEOUT,
        jobs.list(&ListParams::default().labels(&selector)),
    )
    .await
    .map_err(|_| "the API server did not answer in time".to_owned())?
    .map_err(|e| format!("listing the run's Jobs: {e}"))?;
    let uid = run.meta().uid.as_deref();
    let mut deleted = 0;
    for job in listed.items {
        let owned = job
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid);
        if !owned || !matches!(verdict_of(&job), Taken::UnderWay) {
            continue;
        }
        let name = job.name_any();
        match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting Job {name}: {e}")),
        }
    }
    Ok(deleted)
}

/// The measurements of a metric the run keeps (its `measurementRetention`, default 10).
fn retained(env: &Env<'_>) -> i32 {
    let template = &env.run.spec.template;
    template
        .measurement_retention
        .iter()
        .find(|r| r.metric_name == env.metric.name)
        .or_else(|| {
            template
                .measurement_retention
                .iter()
                .find(|r| r.metric_name == "*")
        })
        .map_or(super::assess::DEFAULT_RETENTION as i32, |r| r.limit.max(1))
}

/// Finds the measurement's Job, making it when it is not there; its verdict, or UnderWay.
async fn look(jobs: &Api<Job>, job: &Job, run_uid: Option<String>) -> Result<Taken, String> {
    let name = job.name_any();
    let found = jobs
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading Job {name}: {e}"))?;
    let Some(found) = found else {
        return match jobs.create(&PostParams::default(), job).await {
            Ok(_) => Ok(Taken::UnderWay),
            // Made by a reconcile racing this one: looked at next time.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Taken::UnderWay),
            Err(e) => Err(format!("creating Job {name}: {e}")),
        };
    };
    let ours = found
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == run_uid.as_ref());
    if !ours {
        return Err(format!(
            "Job {name} exists and is not this run's; weir never judges a Job it did not make: delete it or rename the metric"
        ));
    }
    Ok(verdict_of(&found))
}

#[cfg(test)]
mod tests;
