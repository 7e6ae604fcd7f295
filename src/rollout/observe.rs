//! Reads what the planner needs from the API server: the Rollout's own ReplicaSets and
//! AnalysisRuns (by label), its two Services, and the canary weight on its router.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::error::Error;
use super::plan::{AnalysisRunView, Observed};
use super::template_hash;
use super::workload::{self, ROLLOUT_LABEL};
use std::collections::BTreeMap;

use super::act::fetch_template;
use crate::analysis::run::{self, ATTEMPT_LABEL, HASH_LABEL, STEP_LABEL};
use crate::api::Rollout;
use crate::api::analysis::AnalysisTemplateSpec;
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::traffic::{AnyRouter, Router};
use crate::validate::Violation;

/// Where the two label-selected lists are served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The API server's watch cache (`resourceVersion=0`): a filter in memory, but possibly
    /// a few milliseconds behind. Good enough to see that there is nothing to do.
    Cached,
    /// A quorum read from etcd, which decodes every ReplicaSet in the namespace to filter
    /// them: what anything that writes is decided from.
    Fresh,
}

pub async fn observe(
    client: &Client,
    rollout: &Rollout,
    router: Option<&AnyRouter>,
    read: Read,
) -> Result<Observed, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let owned = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={name}"));
    let owned = match read {
        Read::Cached => owned.match_any(),
        Read::Fresh => owned,
    };
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    let canary = rollout.spec.strategy.canary.as_ref();

    // The reads are independent: all at once, so a reconcile (a pause's end, an abort)
    // waits for the slowest of them rather than for their sum. Their errors are taken in a
    // fixed order, not as they arrive: with both Services missing, the condition names the
    // stable one every time instead of flipping (and being written again) on each retry.
    let (replica_sets, stable_service_hash, canary_service_hash, route_weight, runs) = tokio::join!(
        async {
            replica_sets.list(&owned).await.map_err(Error::api(
                "listing",
                "ReplicaSets of Rollout",
                &name,
            ))
        },
        service_hash(
            &services,
            &namespace,
            "stableService",
            canary.and_then(|c| c.stable_service.as_ref()),
        ),
        service_hash(
            &services,
            &namespace,
            "canaryService",
            canary.and_then(|c| c.canary_service.as_ref()),
        ),
        async {
            match router {
                Some(router) => router.weight().await.map_err(Error::from),
                None => Ok(None),
            }
        },
        async {
            runs.list(&owned)
                .await
                .map_err(Error::api("listing", "AnalysisRuns of Rollout", &name))
        },
    );
    let (replica_sets, stable_service_hash, canary_service_hash, route_weight, runs) = (
        replica_sets?,
        stable_service_hash?,
        canary_service_hash?,
        route_weight?,
        runs?,
    );
    let replica_sets = replica_sets
        .items
        .iter()
        .filter_map(|rs| workload::view(rollout, rs))
        .collect();
    let analysis_runs = runs.items.iter().filter_map(run_view).collect();

    Ok(Observed {
        replica_sets,
        stable_service_hash,
        canary_service_hash,
        route_weight,
        analysis_runs,
        template_problems: Vec::new(),
    })
}

/// The pod-template hash a Service named in `field` selects (None without the field or the
/// label); a Service that does not exist is an error naming the field.
async fn service_hash(
    services: &Api<Service>,
    namespace: &str,
    field: &'static str,
    service: Option<&String>,
) -> Result<Option<String>, Error> {
    let Some(service) = service else {
        return Ok(None);
    };
    let found = services
        .get_opt(service)
        .await
        .map_err(Error::api("reading", "Service", service))?;
    let Some(found) = found else {
        return Err(Error::MissingService {
            namespace: namespace.to_owned(),
            name: service.clone(),
            field,
        });
    };
    Ok(found
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(template_hash::LABEL).cloned()))
}

fn run_view(run: &AnalysisRun) -> Option<AnalysisRunView> {
    let labels = run.labels();
    let step = match labels.get(STEP_LABEL)?.as_str() {
        "background" => None,
        index => Some(index.parse().ok()?),
    };
    let status = run.status.as_ref();
    let phase = status
        .and_then(|s| s.phase)
        .unwrap_or(AnalysisPhase::Pending);
    // The run's phase is its worst deciding metric's: that metric, and its last value.
    let decided_by = status.and_then(|s| {
        s.metric_results
            .iter()
            .find(|m| !m.dry_run && m.phase == phase)
            .map(|m| {
                let value = m.measurements.last().and_then(|x| x.value.clone());
                (m.name.clone(), value)
            })
    });
    Some(AnalysisRunView {
        name: run.name_any(),
        hash: labels.get(HASH_LABEL)?.clone(),
        attempt: labels.get(ATTEMPT_LABEL)?.parse().ok()?,
        step,
        phase,
        message: status.and_then(|s| s.message.clone()),
        decided_by,
        terminated: run.spec.terminate,
    })
}

/// Checks every analysis the Rollout asks for against its templates, read once each.
pub async fn template_problems(
    client: &Client,
    rollout: &Rollout,
) -> Result<Vec<Violation>, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let mut fetched: BTreeMap<(bool, String), Option<AnalysisTemplateSpec>> = BTreeMap::new();
    let mut problems = Vec::new();
    for requested in run::requested(&rollout.spec) {
        for reference in requested.templates {
            let key = (reference.cluster_scope, reference.template_name.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) = fetched.entry(key) {
                slot.insert(fetch_template(client, &namespace, reference).await?);
            }
        }
        let templates: Vec<Option<&AnalysisTemplateSpec>> = requested
            .templates
            .iter()
            .map(|r| {
                fetched
                    .get(&(r.cluster_scope, r.template_name.clone()))
                    .and_then(Option::as_ref)
            })
            .collect();
        problems.extend(run::check(&requested, &templates));
    }
    Ok(problems)
}
