//! The glue of the Experiment controller: read the Experiment, its ReplicaSets and its
//! AnalysisRuns, plan (`plan`, pure), carry the actions out, write the status once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use super::plan::{self, Action, Observed, ReplicaSetView, Spec, State};
use super::{analysis, workload};
use crate::analysis::templates::{self, Unusable};
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::contract::{
    EXPERIMENT_ANALYSIS_LABEL, EXPERIMENT_LABEL, EXPERIMENT_MANAGER, EXPERIMENT_TEMPLATE_LABEL,
};
use crate::api::experiment::{
    Experiment, ExperimentAnalysisRunStatus, ExperimentStatus, TemplateStatus,
};
use crate::runtime::Events;
use crate::runtime::error::{Backoff, Controller, Error};
use crate::runtime::leader::Leadership;
use crate::time::{from_k8s, to_k8s};
use crate::validate;

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub leadership: Leadership,
}

const EXPERIMENTS: Controller = Controller {
    kind: "Experiment",
    field_manager: EXPERIMENT_MANAGER,
    conflict: "the Experiment changed while it was reconciled; reconciling again",
};

/// What a reconcile may take: a few reads and writes, each answered in milliseconds.
const STALL_LIMIT: Duration = Duration::from_secs(30);

fn stalled(limit: Duration) -> Error {
    Error::Stalled {
        work: "the reconcile",
        waited_on: "the API server",
        limit,
    }
}

#[instrument(skip(experiment, ctx), fields(experiment = %experiment.name_any(), namespace = experiment.namespace().unwrap_or_default()))]
pub async fn reconcile(experiment: Arc<Experiment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    crate::runtime::within(STALL_LIMIT, reconcile_experiment(experiment, ctx), stalled).await
}

async fn reconcile_experiment(
    experiment: Arc<Experiment>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let term = ctx.leadership.term_for(experiment.as_ref());
    if !term.holds() {
        return Ok(ctx.leadership.when_unled(experiment.as_ref()));
    }
    let namespace = experiment.namespace().unwrap_or_default();
    let name = experiment.name_any();
    let api: Api<Experiment> = Api::namespaced(ctx.client.clone(), &namespace);
    // A fresh read: a plan from a cache behind our own last write would act twice.
    let Some(current) =
        api.get_opt(&name)
            .await
            .map_err(Error::api("reading", "Experiment", &name))?
    else {
        return Ok(Requeue::await_change());
    };
    // Being deleted: what it owns goes with it, and nothing is made again meanwhile.
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let original = current.status.clone().unwrap_or_default();
    let now = Utc::now();
    let started = current
        .metadata
        .creation_timestamp
        .as_ref()
        .map(from_k8s)
        .unwrap_or(now);
    let mut state = state_of(&original);
    let spec = match first_problem(&current) {
        None => Spec::of(&current.spec),
        Some(problem) => Err(problem),
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(problem) => {
            // Ended at once: nothing of an invalid experiment runs, and what ran is
            // scaled down as after any end.
            if !state.phase.is_some_and(AnalysisPhase::is_final) {
                state.phase = Some(AnalysisPhase::Error);
                state.message = Some(format!("InvalidSpec: {problem}"));
            }
            Spec {
                templates: Vec::new(),
                analyses: Vec::new(),
                duration: None,
                progress_deadline: Duration::ZERO,
                scale_down_delay: Duration::ZERO,
                terminate: true,
            }
        }
    };
    let (replica_sets, runs, services) = read_owned(&ctx.client, &current).await?;
    let observed = Observed {
        replica_sets: replica_sets
            .iter()
            .filter_map(|rs| {
                let template = rs.labels().get(EXPERIMENT_TEMPLATE_LABEL)?.clone();
                let view = ReplicaSetView {
                    replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    available: rs
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0),
                };
                Some((template, view))
            })
            .collect(),
        runs: runs
            .iter()
            .filter_map(|run| {
                let analysis = run.labels().get(EXPERIMENT_ANALYSIS_LABEL)?.clone();
                let phase = run
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .unwrap_or(AnalysisPhase::Pending);
                Some((analysis, phase))
            })
            .collect(),
        services: services
            .iter()
            .filter_map(|service| service.labels().get(EXPERIMENT_TEMPLATE_LABEL).cloned())
            .collect(),
    };
    let mut planned = plan::plan(&spec, &state, &observed, started, now);
    let first_phase = original.phase;
    // What the plan decided (available, ended) is written before anything is carried out,
    // so a failing action never holds the experiment where it was: its duration and its
    // deadline still run out.
    let status = status_of(
        &current,
        &original,
        &planned.state,
        &replica_sets,
        &runs,
        &services,
    );
    if !term.holds() {
        return Err(Error::NotLeader);
    }
    let mut current = current;
    let mut original = original;
    if let Some(written) = EXPERIMENTS
        .write_status(&api, &current, current.status.is_some(), &original, &status)
        .await?
    {
        current = written;
        original = status;
    }
    let mut refused = None;
    for action in &planned.actions {
        if !term.holds() {
            return Err(Error::NotLeader);
        }
        match act(&ctx.client, &current, action, &services).await {
            Ok(None) => {}
            Ok(Some(refusal)) => refused = Some(refusal),
            // A creation the API server refuses for good (invalid, forbidden) would be
            // tried for ever: the experiment ends instead, saying why.
            Err(Error::Api { source, .. })
                if creates(action) && !crate::runtime::error::transient(&source) =>
            {
                refused = Some(format!("{}: {source}", describe(action)));
            }
            Err(error) => return Err(error),
        }
        if refused.is_some() {
            break;
        }
    }
    if let Some(refusal) = refused {
        // The next reconcile stops what runs and scales down after the delay, as after
        // any end.
        planned.state.phase = Some(AnalysisPhase::Error);
        planned.state.message = Some(refusal);
        planned.state.ended_at = Some(Utc::now());
        planned.requeue_after = Some(Duration::ZERO);
        let status = status_of(
            &current,
            &original,
            &planned.state,
            &replica_sets,
            &runs,
            &services,
        );
        if !term.holds() {
            return Err(Error::NotLeader);
        }
        if let Some(written) = EXPERIMENTS
            .write_status(&api, &current, current.status.is_some(), &original, &status)
            .await?
        {
            current = written;
        }
    }
    let status = current.status.clone().unwrap_or_default();
    if status.phase != first_phase
        && let Some(phase) = status.phase
        && phase != AnalysisPhase::Pending
    {
        crate::runtime::publish(
            &ctx.events,
            &current.object_ref(&()),
            matches!(
                phase,
                AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
            ),
            format!("Experiment{phase:?}"),
            status.message.as_deref(),
            "Experiment",
        )
        .await;
    }
    // Services are not watched: their status is written from a read soon after they are
    // made or deleted.
    let touched_services = planned.actions.iter().any(|a| {
        matches!(
            a,
            Action::CreateService { .. } | Action::DeleteService { .. }
        )
    });
    if touched_services {
        let soon = Duration::from_secs(1);
        planned.requeue_after = Some(planned.requeue_after.map_or(soon, |after| after.min(soon)));
    }
    Ok(match planned.requeue_after {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

/// The rules the Experiment must keep. Its name is a label value on its pods and runs, so
/// it must fit one.
fn first_problem(experiment: &Experiment) -> Option<String> {
    let name = experiment.name_any();
    if name.len() > LABEL_VALUE_LIMIT {
        return Some(format!(
            "metadata.name: {} characters; the label {EXPERIMENT_LABEL} its pods carry takes at most {LABEL_VALUE_LIMIT} (for a Rollout's experiment step, shorten the Rollout's name)",
            name.len()
        ));
    }
    for (index, template) in experiment.spec.templates.iter().enumerate() {
        let named = template.service.as_ref().is_some_and(|s| s.name.is_some());
        let Some(service) = workload::service_name(&name, template).filter(|_| !named) else {
            continue;
        };
        // Validation checks a name written out; the one made from the ReplicaSet's is
        // checked here, where the experiment's name is known.
        if service.len() > LABEL_VALUE_LIMIT
            || !service.starts_with(|c: char| c.is_ascii_lowercase())
        {
            return Some(format!(
                "spec.templates[{index}].service.name: the Service would be named {service:?} after the ReplicaSet, and a Service name is a DNS-1035 label (a lower-case letter first, at most {LABEL_VALUE_LIMIT} characters): set service.name (for a Rollout's experiment step, shorten the Rollout's or the template's name)"
            ));
        }
    }
    validate::experiment(&experiment.spec)
        .first()
        .map(ToString::to_string)
}

/// Kubernetes' limit on a label value.
const LABEL_VALUE_LIMIT: usize = 63;

fn state_of(status: &ExperimentStatus) -> State {
    State {
        phase: status.phase,
        message: status.message.clone(),
        available_at: status.available_at.as_ref().map(from_k8s),
        ended_at: status.ended_at.as_ref().map(from_k8s),
    }
}

/// Whether an action makes something (a refusal of it is the experiment's end).
fn creates(action: &Action) -> bool {
    matches!(
        action,
        Action::CreateReplicaSet { .. }
            | Action::CreateService { .. }
            | Action::StartAnalysis { .. }
    )
}

fn describe(action: &Action) -> String {
    match action {
        Action::CreateReplicaSet { template, .. } | Action::ScaleReplicaSet { template, .. } => {
            format!("the ReplicaSet of template {template:?} was refused")
        }
        Action::StartAnalysis { analysis } | Action::StopAnalysis { analysis } => {
            format!("the AnalysisRun of analysis {analysis:?} was refused")
        }
        Action::CreateService { template } | Action::DeleteService { template } => {
            format!("the Service of template {template:?} was refused")
        }
    }
}

/// The ReplicaSets, AnalysisRuns and Services this Experiment controls, read from etcd (an
/// experiment is rare and short, and a plan must never miss what it made): labelled with its
/// name, and owned by this very object, not by an earlier one of the same name or by
/// whoever copied the label.
async fn read_owned(
    client: &Client,
    experiment: &Experiment,
) -> Result<(Vec<ReplicaSet>, Vec<AnalysisRun>, Vec<Service>), Error> {
    let (namespace, name) = (
        experiment.namespace().unwrap_or_default(),
        experiment.name_any(),
    );
    let (namespace, name) = (namespace.as_str(), name.as_str());
    let uid = experiment.metadata.uid.clone();
    let ours = |owners: &[OwnerReference]| {
        owners
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
    };
    let selector = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}"));
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let (replica_sets, runs, services) = tokio::join!(
        replica_sets.list(&selector),
        runs.list(&selector),
        services.list(&selector)
    );
    let replica_sets =
        replica_sets.map_err(Error::api("listing", "ReplicaSets of Experiment", name))?;
    let runs = runs.map_err(Error::api("listing", "AnalysisRuns of Experiment", name))?;
    let services = services.map_err(Error::api("listing", "Services of Experiment", name))?;
    Ok((
        replica_sets
            .items
            .into_iter()
            .filter(|rs| ours(rs.owner_references()))
            .collect(),
        runs.items
            .into_iter()
            .filter(|run| ours(run.owner_references()))
            .collect(),
        services
            .items
            .into_iter()
            .filter(|service| ours(service.owner_references()))
            .collect(),
    ))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(EXPERIMENT_MANAGER).force()
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(EXPERIMENT_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Carries out one action; Some(refusal) when the experiment cannot go on (an analysis whose
/// templates are missing or invalid).
async fn act(
    client: &Client,
    experiment: &Experiment,
    action: &Action,
    services: &[Service],
) -> Result<Option<String>, Error> {
    let namespace = experiment.namespace().unwrap_or_default();
    let name = experiment.name_any();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    match action {
        Action::CreateReplicaSet { template, replicas } => {
            let Some(spec) = experiment
                .spec
                .templates
                .iter()
                .find(|t| &t.name == template)
            else {
                return Ok(None);
            };
            let (mut replica_set, _) = workload::replica_set(experiment, spec);
            if let Some(spec) = replica_set.spec.as_mut() {
                spec.replicas = Some(*replicas);
            }
            let rs_name = replica_set.name_any();
            replica_sets
                .patch(&rs_name, &apply_params(), &Patch::Apply(&replica_set))
                .await
                .map_err(Error::api("creating", "ReplicaSet", &rs_name))?;
        }
        Action::ScaleReplicaSet { template, replicas } => {
            let rs_name = workload::replica_set_name(&name, template);
            let patch = json!({"spec": {"replicas": replicas}});
            replica_sets
                .patch(&rs_name, &merge_params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("scaling", "ReplicaSet", &rs_name))?;
        }
        Action::StartAnalysis { analysis } => {
            return start_analysis(client, experiment, analysis).await;
        }
        Action::CreateService { template } => {
            return create_service(client, experiment, template).await;
        }
        Action::DeleteService { template } => {
            // The very Service listed as this experiment's: not one made since in its name.
            let Some(service) = services
                .iter()
                .find(|s| s.labels().get(EXPERIMENT_TEMPLATE_LABEL) == Some(template))
            else {
                return Ok(None);
            };
            let service_name = service.name_any();
            let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: service.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&service_name, &params).await {
                Ok(_) => {}
                // Gone, or another object of the name now: nothing of ours to delete.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(source) => {
                    return Err(Error::api("deleting", "Service", &service_name)(source));
                }
            }
        }
        Action::StopAnalysis { analysis } => {
            let run_name = analysis::run_name(&name, analysis);
            let patch = json!({"spec": {"terminate": true}});
            runs.patch(&run_name, &merge_params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("stopping", "AnalysisRun", &run_name))?;
        }
    }
    Ok(None)
}

/// Creates the template's Service. A Service of that name that is not this experiment's is
/// never taken over: the experiment ends, naming it.
async fn create_service(
    client: &Client,
    experiment: &Experiment,
    template_name: &str,
) -> Result<Option<String>, Error> {
    let Some((index, template)) = experiment
        .spec
        .templates
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == template_name)
    else {
        return Ok(None);
    };
    let Some(service) = workload::service(experiment, template) else {
        return Ok(Some(format!(
            "spec.templates[{index}].service (template {template_name:?}): the template's containers declare no ports, so its Service would have none"
        )));
    };
    let service_name = service.name_any();
    let services: Api<Service> =
        Api::namespaced(client.clone(), &experiment.namespace().unwrap_or_default());
    match services.create(&Default::default(), &service).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(format!(
            "spec.templates[{index}].service (template {template_name:?}): Service {service_name} already exists and is not this experiment's; name another in service.name, or delete it"
        ))),
        Err(source) => Err(Error::api("creating", "Service", &service_name)(source)),
    }
}

/// Reads the analysis' templates, checks them as a Rollout's are checked, and creates its
/// run. A template that is missing or invalid is a refusal naming the field and the
/// template. Analyses start once the pods are available, which leaves a template applied
/// beside the Experiment the time to arrive.
async fn start_analysis(
    client: &Client,
    experiment: &Experiment,
    analysis_name: &str,
) -> Result<Option<String>, Error> {
    let namespace = experiment.namespace().unwrap_or_default();
    let name = experiment.name_any();
    let Some(index) = experiment
        .spec
        .analyses
        .iter()
        .position(|a| a.name == analysis_name)
    else {
        return Ok(None);
    };
    let Some(requested) = analysis::requested(&experiment.spec, index) else {
        return Ok(None);
    };
    let refused = |reason: String| {
        Some(format!(
            "{} (analysis {analysis_name:?}): {reason}",
            requested.field
        ))
    };
    let reached = match templates::read_checked(client, &namespace, &requested).await? {
        Ok(reached) => reached,
        Err(Unusable::Missing { label, .. }) => {
            return Ok(refused(format!(
                "{label} not found in namespace {namespace}"
            )));
        }
        Err(Unusable::Invalid(first)) => return Ok(refused(first.to_string())),
    };
    let hashes: BTreeMap<String, String> = experiment
        .spec
        .templates
        .iter()
        .map(|t| (t.name.clone(), workload::replica_set(experiment, t).1))
        .collect();
    let built = match analysis::build(experiment, index, &reached, &hashes) {
        Ok(built) => built,
        Err(why) => return Ok(refused(why)),
    };
    let run_name = built.name_any();
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    runs.patch(&run_name, &apply_params(), &Patch::Apply(&built))
        .await
        .map_err(Error::api("creating", "AnalysisRun", &run_name))?;
    tracing::debug!(experiment = %name, run = %run_name, "analysis started");
    Ok(None)
}

/// The status from the plan's state and what was read: each template's ReplicaSet and hash,
/// each analysis' run and phase.
fn status_of(
    experiment: &Experiment,
    original: &ExperimentStatus,
    state: &State,
    replica_sets: &[ReplicaSet],
    runs: &[AnalysisRun],
    services: &[Service],
) -> ExperimentStatus {
    // A time already recorded is kept as written, so a no-op reconcile writes nothing.
    let time = |recorded: &Option<_>, at: Option<chrono::DateTime<Utc>>| match recorded {
        Some(t) if at.is_some() => Some(Clone::clone(t)),
        _ => at.map(to_k8s),
    };
    let template_statuses = experiment
        .spec
        .templates
        .iter()
        .map(|template| {
            let rs = replica_sets
                .iter()
                .find(|rs| rs.labels().get(EXPERIMENT_TEMPLATE_LABEL) == Some(&template.name));
            let status = rs.and_then(|rs| rs.status.as_ref());
            TemplateStatus {
                name: template.name.clone(),
                replicas: rs
                    .and_then(|rs| rs.spec.as_ref())
                    .and_then(|s| s.replicas)
                    .unwrap_or(0),
                available_replicas: status.and_then(|s| s.available_replicas).unwrap_or(0),
                pod_template_hash: Some(workload::replica_set(experiment, template).1),
                service_name: services
                    .iter()
                    .find(|s| s.labels().get(EXPERIMENT_TEMPLATE_LABEL) == Some(&template.name))
                    .map(ResourceExt::name_any),
            }
        })
        .collect();
    let analysis_runs = experiment
        .spec
        .analyses
        .iter()
        .filter_map(|analysis| {
            let run = runs
                .iter()
                .find(|run| run.labels().get(EXPERIMENT_ANALYSIS_LABEL) == Some(&analysis.name))?;
            let status = run.status.as_ref();
            Some(ExperimentAnalysisRunStatus {
                name: analysis.name.clone(),
                analysis_run: run.name_any(),
                phase: Some(
                    status
                        .and_then(|s| s.phase)
                        .unwrap_or(AnalysisPhase::Pending),
                ),
                message: status.and_then(|s| s.message.clone()),
            })
        })
        .collect();
    ExperimentStatus {
        phase: state.phase,
        message: state.message.clone(),
        available_at: time(&original.available_at, state.available_at),
        ended_at: time(&original.ended_at, state.ended_at),
        template_statuses,
        analysis_runs,
        observed_generation: experiment.metadata.generation,
    }
}

/// A refusal that waits for a fix (a missing template, RBAC) is looked at again after a
/// minute; anything else soon.
const BACKOFF: Backoff = Backoff {
    transient: Duration::from_secs(5),
    lasting: Duration::from_secs(60),
};

pub fn error_policy(experiment: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let unled = ctx.leadership.when_unled(experiment.as_ref());
    crate::runtime::error::error_policy("Experiment", &experiment.name_any(), error, BACKOFF, unled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment() -> Experiment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "e", "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": {"templates": [{"name": "baseline",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_services_name_made_from_a_long_replica_set_name_is_refused_naming_the_field() {
        let mut long = experiment();
        long.metadata.name = Some(format!("web-{}", "a".repeat(55)));
        long.spec.templates[0].service = Some(Default::default());
        if let Some(spec) = long.spec.templates[0].template.spec.as_mut() {
            spec.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                container_port: 8080,
                ..Default::default()
            }]);
        }
        let problem = first_problem(&long).unwrap_or_default();
        assert!(
            problem.starts_with("spec.templates[0].service.name:") && problem.contains("63"),
            "{problem}"
        );
        // Named by the user: validation's to check, and fine here.
        long.spec.templates[0].service = Some(crate::api::experiment::TemplateService {
            name: Some("baseline".into()),
        });
        assert_eq!(first_problem(&long), None);
        let mut digit = experiment();
        digit.metadata.name = Some("1web".into());
        digit.spec.templates = long.spec.templates.clone();
        digit.spec.templates[0].service = Some(Default::default());
        assert!(first_problem(&digit).is_some_and(|p| p.contains("lower-case letter first")));
    }

    #[test]
    fn a_status_planned_again_from_itself_is_the_same_so_nothing_is_written() {
        let experiment = experiment();
        let (mut replica_set, hash) =
            workload::replica_set(&experiment, &experiment.spec.templates[0]);
        replica_set.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas: 1,
            available_replicas: Some(1),
            ..Default::default()
        });
        let first = State {
            phase: Some(AnalysisPhase::Running),
            message: None,
            available_at: Some(Utc::now()),
            ended_at: None,
        };
        let written = status_of(
            &experiment,
            &ExperimentStatus::default(),
            &first,
            std::slice::from_ref(&replica_set),
            &[],
            &[],
        );
        assert_eq!(
            written.template_statuses[0].pod_template_hash.as_deref(),
            Some(hash.as_str())
        );
        // Read back at a later time (sub-second precision lost on the way): the same.
        let read_back = state_of(&written);
        let again = status_of(
            &experiment,
            &written,
            &read_back,
            std::slice::from_ref(&replica_set),
            &[],
            &[],
        );
        assert_eq!(again, written);
    }
}
