//! Carries out the planner's actions against the API server, each as one idempotent request
//! with field manager `weir-rollout`.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::error::Error;
use super::observe::{LastWrite, Version, Wrote};
use super::plan::Action;
use super::workload;
use crate::analysis::run;
use crate::analysis::templates::{self, Unusable};
use crate::api::Rollout;
use crate::api::analysis::{AnalysisRun, AnalysisTemplateSpec};
use crate::api::contract::{POD_TEMPLATE_HASH_LABEL, ROLLOUT_MANAGER, SCALE_DOWN_ANNOTATION};
use crate::api::experiment::Experiment;
use crate::api::rollout::PodMetadata;
use crate::experiment::from_step;
use crate::ssa_defaults;
use crate::traffic::{Router, Routers};

/// The field that names `service`, for messages.
fn service_field(rollout: &Rollout, service: &str) -> &'static str {
    let [stable, canary] = rollout.spec.strategy.services();
    if stable.name == Some(service) {
        stable.field
    } else {
        canary.field
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(ROLLOUT_MANAGER.into()),
        ..PatchParams::default()
    }
}

fn version_of(written: &impl ResourceExt) -> LastWrite {
    match written.resource_version() {
        Some(resource_version) => LastWrite::At(Version {
            name: written.name_any(),
            resource_version,
        }),
        None => LastWrite::Unknown,
    }
}

pub async fn act(
    client: &Client,
    rollout: &Rollout,
    router: Option<&Routers>,
    action: &Action,
) -> Result<Wrote, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    match action {
        Action::CreateReplicaSet {
            hash,
            replicas,
            away_from,
            metadata,
        } => {
            let rs_name = workload::replica_set_name(&name, hash);
            // As JSON, with the defaults an apply needs: the template is written as the user
            // wrote it, which an API server before 1.21 refuses to apply without them.
            let mut rs = serde_json::to_value(workload::replica_set(
                rollout,
                hash,
                *replicas,
                away_from.as_deref(),
                metadata,
            ))
            .map_err(|error| {
                Error::api("creating", "ReplicaSet", &rs_name)(kube::Error::SerdeError(error))
            })?;
            ssa_defaults::fill(&mut rs);
            let written = replica_sets
                .patch(
                    &rs_name,
                    &PatchParams::apply(ROLLOUT_MANAGER).force(),
                    &Patch::Apply(&rs),
                )
                .await
                .map_err(Error::api("creating", "ReplicaSet", &rs_name))?;
            Ok(Wrote::ReplicaSet(version_of(&written)))
        }
        Action::ScaleReplicaSet { hash, replicas } => {
            let rs_name = workload::replica_set_name(&name, hash);
            let patch = json!({"metadata": {"annotations": {SCALE_DOWN_ANNOTATION: null}}, "spec": {"replicas": replicas}});
            let written = replica_sets
                .patch(&rs_name, &params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("scaling", "ReplicaSet", &rs_name))?;
            Ok(Wrote::ReplicaSet(version_of(&written)))
        }
        Action::MarkScaleDown { hash, at } => {
            let rs_name = workload::replica_set_name(&name, hash);
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch = json!({"metadata": {"annotations": {SCALE_DOWN_ANNOTATION: at}}});
            let written = replica_sets
                .patch(&rs_name, &params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("marking", "ReplicaSet", &rs_name))?;
            Ok(Wrote::ReplicaSet(version_of(&written)))
        }
        Action::SetEphemeralMetadata {
            hash,
            metadata,
            applied,
        } => {
            let rs_name = workload::replica_set_name(&name, hash);
            // On the heap: its reads and writes in turn would otherwise grow every
            // reconcile's future (and a debug build's stack) by their size.
            Box::pin(set_ephemeral_metadata(
                client, &namespace, &rs_name, hash, metadata, applied,
            ))
            .await
        }
        Action::DeleteReplicaSet { hash } => {
            let rs_name = workload::replica_set_name(&name, hash);
            match replica_sets
                .delete(&rs_name, &DeleteParams::background())
                .await
            {
                // The deletion's own version is not returned (the object's, if any, is from
                // before it), so the next fresh list comes from etcd.
                Ok(_) => Ok(Wrote::ReplicaSet(LastWrite::Unknown)),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    Ok(Wrote::ReplicaSet(LastWrite::Unknown))
                }
                Err(source) => Err(Error::api("deleting", "ReplicaSet", &rs_name)(source)),
            }
        }
        Action::PointService { service, hash } => {
            let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"spec": {"selector": {POD_TEMPLATE_HASH_LABEL: hash}}});
            match services
                .patch(service, &params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(Wrote::Elsewhere),
                // Deleted since it was read: told as observe tells it, and looked for again
                // soon (nothing watches Services).
                Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::MissingService {
                    namespace: namespace.clone(),
                    name: service.clone(),
                    field: service_field(rollout, service),
                }),
                Err(source) => Err(Error::api("pointing", "Service", service)(source)),
            }
        }
        Action::SetWeight {
            canary_weight,
            experiments,
        } => {
            if let Some(router) = router {
                router.set_weights(*canary_weight, experiments).await?;
            }
            Ok(Wrote::Elsewhere)
        }
        Action::SetManagedRoute { name, route } => {
            if let Some(router) = router {
                router.set_managed_route(name, route).await?;
            }
            Ok(Wrote::Elsewhere)
        }
        Action::RemoveManagedRoute { name } => {
            if let Some(router) = router {
                router.remove_managed_route(name).await?;
            }
            Ok(Wrote::Elsewhere)
        }
        Action::StartAnalysis {
            hash,
            stable,
            attempt,
            kind,
        } => {
            let target = run::Canary {
                hash,
                stable,
                attempt: *attempt,
                kind: *kind,
            };
            start_analysis(client, rollout, &target).await
        }
        Action::StartExperiment {
            hash,
            stable,
            attempt,
            step,
        } => {
            let made = from_step::Made {
                hash,
                stable,
                attempt: *attempt,
                step: *step,
            };
            start_experiment(client, rollout, &made).await
        }
        Action::StopExperiment { name: experiment } => {
            let experiments: Api<Experiment> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"spec": {"terminate": true}});
            let written = experiments
                .patch(experiment, &params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("stopping", "Experiment", experiment))?;
            Ok(Wrote::Experiment(version_of(&written)))
        }
        Action::StopAnalysis { name: run_name } => {
            let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"spec": {"terminate": true}});
            let written = runs
                .patch(run_name, &params(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("stopping", "AnalysisRun", run_name))?;
            Ok(Wrote::AnalysisRun(version_of(&written)))
        }
    }
}

/// Puts `wanted` on the pods of ReplicaSet `rs_name` (version `hash`) and takes off what of
/// `applied` it lacks, after a read, in three writes: the template with a pending record of every key weir
/// may have put there, each live pod it owns that differs, then the record of `wanted`. A
/// failure part way leaves the record pending, so the next plan does it again. No pod is
/// restarted: the ReplicaSet controller does not replace pods for a template change.
async fn set_ephemeral_metadata(
    client: &Client,
    namespace: &str,
    rs_name: &str,
    hash: &str,
    wanted: &PodMetadata,
    applied: &PodMetadata,
) -> Result<Wrote, Error> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    // Read first: the template patch is guarded by this resourceVersion, so the generation it
    // gives is known (a change in between is a conflict, planned again).
    let current = replica_sets.get_opt(rs_name).await.map_err(Error::api(
        "reading",
        "ReplicaSet",
        rs_name,
    ))?;
    // Deleted since it was read: it has no pods left to label.
    let Some(current) = current else {
        return Ok(Wrote::ReplicaSet(LastWrite::Unknown));
    };
    let (template, relabelled_generation) =
        workload::ephemeral_template_patch(&current, wanted, applied);
    let replica_set = match replica_sets
        .patch(rs_name, &params(), &Patch::Merge(&template))
        .await
    {
        Ok(replica_set) => replica_set,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Ok(Wrote::ReplicaSet(LastWrite::Unknown));
        }
        Err(source) => return Err(Error::api("labelling", "ReplicaSet", rs_name)(source)),
    };
    let uid = replica_set.uid();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // Listed after the template changed, from etcd: a pod created since carries `wanted`.
    // Metadata alone, read and written: all that is needed, and a whole Pod's decoding is
    // deep enough to overflow a worker's stack in a debug build.
    let selector = ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}"));
    let listed = pods.list_metadata(&selector).await.map_err(Error::api(
        "listing",
        "Pods of ReplicaSet",
        rs_name,
    ))?;
    // Another Rollout's pods may share the hash (the same template): only this one's.
    let owned = listed.items.into_iter().filter(|pod| {
        pod.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
    });
    for pod in owned {
        let Some(patch) = workload::ephemeral_pod_patch(&pod.metadata, wanted, applied) else {
            continue;
        };
        let pod_name = pod.name_any();
        match pods
            .patch_metadata(&pod_name, &params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(Error::api("labelling", "Pod", &pod_name)(source)),
        }
    }
    let written = replica_sets
        .patch(
            rs_name,
            &params(),
            &Patch::Merge(&workload::ephemeral_record_patch(
                wanted,
                relabelled_generation,
            )),
        )
        .await
        .map_err(Error::api("labelling", "ReplicaSet", rs_name))?;
    Ok(Wrote::ReplicaSet(version_of(&written)))
}

/// An analysis' templates read and checked now, its refusals in the Rollout's words.
async fn read_checked(
    client: &Client,
    namespace: &str,
    requested: &run::Requested<'_>,
) -> Result<Vec<(String, AnalysisTemplateSpec)>, Error> {
    match templates::read_checked(client, namespace, requested).await? {
        Ok(templates) => Ok(templates),
        Err(Unusable::Missing {
            kind, name, field, ..
        }) => Err(Error::MissingTemplate { kind, name, field }),
        Err(Unusable::Invalid(first)) => Err(Error::InvalidAnalysis {
            field: first.field,
            reason: first.message,
        }),
    }
}

async fn start_analysis(
    client: &Client,
    rollout: &Rollout,
    target: &run::Canary<'_>,
) -> Result<Wrote, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    // The planner starts analysis only for steps that have it; a spec that changed since is
    // caught on the next plan.
    let Some(requested) = run::requested(&rollout.spec)
        .into_iter()
        .find(|r| r.kind == Some(target.kind))
    else {
        return Ok(Wrote::Elsewhere);
    };
    let templates = read_checked(client, &namespace, &requested).await?;
    let run = run::build(rollout, &templates, &requested, target).map_err(|reason| {
        Error::InvalidAnalysis {
            field: requested.field.clone(),
            reason,
        }
    })?;
    let run_name = run.name_any();
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    let written = runs
        .patch(
            &run_name,
            &PatchParams::apply(ROLLOUT_MANAGER).force(),
            &Patch::Apply(&run),
        )
        .await
        .map_err(Error::api("creating", "AnalysisRun", &run_name))?;
    Ok(Wrote::AnalysisRun(version_of(&written)))
}

/// Starts a step's Experiment: its `specRef: stable` templates copy the stable ReplicaSet's
/// template as the Rollout had it, read now.
async fn start_experiment(
    client: &Client,
    rollout: &Rollout,
    made: &from_step::Made<'_>,
) -> Result<Wrote, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let field = format!("spec.strategy.canary.steps[{}].experiment", made.step);
    // The planner starts an experiment only for a step that has one; a spec that changed
    // since is caught on the next plan.
    let Some(step) = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.steps.get(made.step))
        .and_then(|s| s.experiment.as_ref())
    else {
        return Ok(Wrote::Elsewhere);
    };
    // Its analyses' templates are there and valid before any pod starts, as a step's
    // analysis is checked before its run: the Experiment would only end in Error after.
    let prefix = format!("{field}.");
    for requested in run::requested(&rollout.spec)
        .into_iter()
        .filter(|r| r.kind.is_none() && r.field.starts_with(&prefix))
    {
        read_checked(client, &namespace, &requested).await?;
    }
    let stable_name = workload::replica_set_name(&rollout.name_any(), made.stable);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let stable_replica_set = replica_sets
        .get_opt(&stable_name)
        .await
        .map_err(Error::api("reading", "ReplicaSet", &stable_name))?;
    let stable_template = stable_replica_set
        .as_ref()
        .and_then(workload::kept_template)
        .map(|(template, _)| template)
        .ok_or_else(|| Error::InvalidExperiment {
            field: field.clone(),
            reason: format!(
                "the stable ReplicaSet {stable_name}, which specRef: stable copies, is gone; promote in full (kubectl weir promote --full), or abort"
            ),
        })?;
    let experiment = from_step::build(rollout, step, &stable_template, made).map_err(|reason| {
        Error::InvalidExperiment {
            field: field.clone(),
            reason,
        }
    })?;
    let experiment_name = experiment.name_any();
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &namespace);
    let written = experiments
        .patch(
            &experiment_name,
            &PatchParams::apply(ROLLOUT_MANAGER).force(),
            &Patch::Apply(&experiment),
        )
        .await
        .map_err(Error::api("creating", "Experiment", &experiment_name))?;
    Ok(Wrote::Experiment(version_of(&written)))
}
