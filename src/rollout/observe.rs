//! Reads what the planner needs: the Rollout's own ReplicaSets and AnalysisRuns (by label,
//! from the controller's caches or, when those cannot be trusted, from etcd), its two
//! Services, and the canary weight on its router (from the API server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Error;
use super::plan::{AnalysisRunView, ExperimentView, Observed};
use super::workload::{self, ObservedReplicaSet};

use crate::analysis::templates::TemplateCaches;
use crate::analysis::{run, templates};
use crate::api::Rollout;
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::contract::{
    ATTEMPT_LABEL, AnalysisKind, CANARY_HASH_LABEL, EPHEMERAL_METADATA_ANNOTATION,
    LAST_APPLIED_ANNOTATION, POD_TEMPLATE_HASH_LABEL, ROLLOUT_LABEL, SCALE_DOWN_ANNOTATION,
    STEP_LABEL,
};
use crate::api::experiment::{Experiment, TemplateStatus};
use crate::api::rollout::NamedService;
use crate::runtime::cache::{Cache, Epoch, Trim};
use crate::traffic::{ExtraWeights, Reading, Router, Routers, ShownRoutes};
use crate::validate::Violation;

/// Where the Rollout's ReplicaSets and AnalysisRuns are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The controller's own caches ([`Caches`]), as they stand: behind the API server
    /// by the watch's delay (milliseconds; longer while a watch is broken). Good enough to
    /// see that there is nothing to do.
    Cached,
    /// What anything that writes is decided from: a view that holds every write this
    /// process made to the Rollout's ReplicaSets and AnalysisRuns, and every write anyone made
    /// before the current leadership term began. That is the cache once it has taken this
    /// process's last write of the kind ([`LastWrite::At`]) and a change past the term's floor.
    /// After a delete, whose version the API server does not return, or when the cache does
    /// not catch up within 3 s, it is a quorum list from etcd, which decodes every ReplicaSet
    /// in the namespace to filter them: at 5,000 Rollouts in one namespace, half a second
    /// each.
    Fresh,
}

/// The controller's caches [`observe`] reads, each trimmed to what it reads: of every
/// ReplicaSet, AnalysisRun and Experiment a Rollout owns (labelled `weir.dev/rollout`), and
/// of the Services (their selectors) and Gateway API routes (their specs) for a look that
/// writes nothing.
#[derive(Clone)]
pub struct Caches {
    pub replica_sets: Cache<ObservedReplicaSet>,
    pub runs: Cache<AnalysisRun>,
    pub experiments: Cache<Experiment>,
    pub services: Cache<Service>,
    pub http_routes: Cache<HttpRoute>,
    pub grpc_routes: Cache<GrpcRoute>,
}

/// What a replica keeps of a Rollout in a shard it does not hold: its metadata (the GitSync
/// that applied it, its labels for notifications, its finalizers) and of its status what
/// GitSyncs and notifications of any shard read (whether it aborted, its two revisions);
/// not its spec or the rest of its status, which only the replica that plans it reads.
pub fn stub_rollout(rollout: &mut Rollout) {
    rollout.spec = crate::api::rollout::RolloutSpec::shard_stub();
    rollout.status = rollout
        .status
        .take()
        .map(|status| crate::api::rollout::RolloutStatus {
            abort: status.abort,
            canary_revision: status.canary_revision,
            stable_revision: status.stable_revision,
            ..crate::api::rollout::RolloutStatus::default()
        });
}

/// What the controllers keep of a Rollout: all but its pod spec (for which a digest stands,
/// see [`crate::api::rollout::RolloutSpec::drop_pod_spec`]) and `kubectl apply`'s copy of the
/// manifest. A look that acts reads the Rollout again from the API server.
pub struct TrimRollout;

impl Trim<Rollout> for TrimRollout {
    fn trim(rollout: &mut Rollout) {
        rollout.spec.drop_pod_spec();
        if let Some(annotations) = rollout.metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED_ANNOTATION);
        }
    }
}

/// What a router reads of an HTTPRoute: its spec (not the Gateways' status of it).
pub struct TrimHttpRoute;

impl Trim<HttpRoute> for TrimHttpRoute {
    fn trim(route: &mut HttpRoute) {
        route.metadata.annotations = None;
        route.status = None;
    }
}

/// What a router reads of a GRPCRoute: its spec.
pub struct TrimGrpcRoute;

impl Trim<GrpcRoute> for TrimGrpcRoute {
    fn trim(route: &mut GrpcRoute) {
        route.metadata.annotations = None;
        route.status = None;
    }
}

/// What [`observe`] reads of a Service: which pods it selects.
pub struct TrimService;

impl Trim<Service> for TrimService {
    fn trim(service: &mut Service) {
        let selector = service.spec.take().and_then(|spec| spec.selector);
        service.spec = Some(ServiceSpec {
            selector,
            ..ServiceSpec::default()
        });
        service.status = None;
        service.metadata.annotations = None;
        service.metadata.labels = None;
    }
}

/// How long a fresh read waits for a cache to take this process's own write before it asks
/// the API server instead. Watch events take milliseconds; this is for a watch that broke.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(3);

/// How long a look right after a start waits for a cache's first list (at 10,000 Rollouts
/// their ReplicaSets' list takes seconds) before it reads its own objects from the API server
/// instead: so a restart costs a list per kind, not reads per Rollout.
pub(super) const FIRST_LIST_LIMIT: Duration = Duration::from_secs(30);

/// Drops from a cached ReplicaSet (already read into [`ObservedReplicaSet`]) what
/// [`workload::view`] never reads: every annotation but the scale-down mark and the ephemeral
/// metadata's record (the template's copy among them; `kubectl weir undo` reads that from
/// the API server), and every label but the Rollout's and the hash.
pub struct TrimReplicaSet;

impl Trim<ObservedReplicaSet> for TrimReplicaSet {
    fn trim(replica_set: &mut ObservedReplicaSet) {
        if let Some(annotations) = replica_set.metadata.annotations.as_mut() {
            annotations.retain(|key, _| {
                key == SCALE_DOWN_ANNOTATION || key == EPHEMERAL_METADATA_ANNOTATION
            });
        }
        if let Some(labels) = replica_set.metadata.labels.as_mut() {
            labels.retain(|key, _| key == ROLLOUT_LABEL || key == POD_TEMPLATE_HASH_LABEL);
        }
    }
}

/// Drops from a cached AnalysisRun what [`run_view`] never reads: the metrics' definitions
/// and every measurement but the last of each metric.
pub struct TrimRun;

impl Trim<AnalysisRun> for TrimRun {
    fn trim(run: &mut AnalysisRun) {
        run.spec.template = Default::default();
        if let Some(status) = run.status.as_mut() {
            for metric in &mut status.metric_results {
                let keep_from = metric.measurements.len().saturating_sub(1);
                metric.measurements.drain(..keep_from);
            }
        }
    }
}

/// Drops from a cached Experiment what [`experiment_view`] never reads: its templates and
/// analyses, and of its templates' statuses all but their Services.
pub struct TrimExperiment;

impl Trim<Experiment> for TrimExperiment {
    fn trim(experiment: &mut Experiment) {
        experiment.spec.templates = Vec::new();
        experiment.spec.analyses = Vec::new();
        if let Some(status) = experiment.status.as_mut() {
            status
                .template_statuses
                .retain(|t| t.service_name.is_some());
            for template in &mut status.template_statuses {
                *template = TemplateStatus {
                    name: std::mem::take(&mut template.name),
                    service_name: template.service_name.take(),
                    ..TemplateStatus::default()
                };
            }
            status.analysis_runs = Vec::new();
        }
    }
}

/// Which of the kinds `observe` reads an action wrote, and what a fresh read must hold after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrote {
    ReplicaSet(LastWrite),
    AnalysisRun(LastWrite),
    Experiment(LastWrite),
    /// A Service or the route: read by name, not listed.
    Elsewhere,
}

/// A write of this process to one of the listed kinds: the object, and the resourceVersion
/// the API server gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub resource_version: String,
}

/// What a fresh read of one kind must hold, after this process's writes to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LastWrite {
    /// Nothing written: the term's floor covers what others wrote before it.
    #[default]
    Nothing,
    /// The latest write: the cache must hold this object at this version or later (or
    /// have taken a later change). It covers every earlier write of the kind as well.
    At(Version),
    /// A write whose version the API server did not return (a delete): only a quorum
    /// list is sure to show it, until a later write of the kind has a version.
    Unknown,
}

/// This process's latest write to one Rollout's ReplicaSets and to its AnalysisRuns. Versions
/// of the read kind only: the cache of ReplicaSets moves on with ReplicaSet events, and would
/// wait in vain for the version of a write to another kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub replica_sets: LastWrite,
    pub runs: LastWrite,
    pub experiments: LastWrite,
}

impl Written {
    pub fn note(&mut self, wrote: Wrote) {
        match wrote {
            Wrote::ReplicaSet(last) => self.replica_sets = last,
            Wrote::AnalysisRun(last) => self.runs = last,
            Wrote::Experiment(last) => self.experiments = last,
            Wrote::Elsewhere => {}
        }
    }
}

/// [`Written`] for every Rollout this process wrote for. Kept across leadership terms: a
/// write of an earlier term, even one that landed after the current term began, is still a
/// version the caches must have taken, and a fresh read asks for the current term's floor as
/// well, which covers what another leader wrote in between.
#[derive(Debug, Default)]
pub struct WrittenVersions(Mutex<HashMap<(String, String), Written>>);

impl WrittenVersions {
    fn key(rollout: &Rollout) -> (String, String) {
        (rollout.namespace().unwrap_or_default(), rollout.name_any())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Written>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn of(&self, rollout: &Rollout) -> Written {
        self.lock()
            .get(&Self::key(rollout))
            .cloned()
            .unwrap_or_default()
    }

    pub fn record(&self, rollout: &Rollout, written: Written) {
        let mut versions = self.lock();
        if written == Written::default() {
            versions.remove(&Self::key(rollout));
        } else {
            versions.insert(Self::key(rollout), written);
        }
    }

    /// The Rollout is gone: nothing of it is kept.
    pub fn forget(&self, rollout: &Rollout) {
        self.lock().remove(&Self::key(rollout));
    }
}

/// The version the API server is at, taken once per leadership term: a list of one object from
/// etcd, which costs no decoding of the rest.
async fn floor<K>(api: &Api<K>, cache: &Cache<K>, epoch: Epoch) -> kube::Result<u64>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + 'static,
{
    if let Some(floor) = cache.floor(epoch) {
        return Ok(floor);
    }
    let list = api.list(&ListParams::default().limit(1)).await?;
    // A version that is not a number is never seen by the cache: reads stay quorum lists.
    let floor = list
        .metadata
        .resource_version
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    cache.set_floor(epoch, floor);
    Ok(floor)
}

/// The objects of the Rollout `name` as `read` says: from `cache` when it can answer, else
/// from the API server (the watch cache for a cached read, etcd for a fresh one).
async fn read_owned<K>(
    api: &Api<K>,
    cache: &Cache<K>,
    name: &str,
    read: Read,
    written: &LastWrite,
    epoch: Epoch,
) -> kube::Result<Vec<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + 'static,
{
    let namespace = api.namespace().unwrap_or_default();
    let from_cache = || cache.labelled(namespace, ROLLOUT_LABEL, name);
    let selector = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={name}"));
    let listed = match (read, written) {
        (Read::Cached, _) => {
            if cache.synced_within(FIRST_LIST_LIMIT).await {
                return Ok(from_cache());
            }
            api.list(&selector.match_any()).await?
        }
        (Read::Fresh, LastWrite::Nothing | LastWrite::At(_)) => {
            // The cache serves once it has taken this process's own last write of the kind
            // (on its way, so worth a wait) and every change up to the moment the current
            // leadership term began (not waited for: in a quiet namespace no event may come
            // past it), which covers whatever an earlier leader or process wrote.
            let floor = floor(api, cache, epoch).await?;
            let fresh = match written {
                LastWrite::At(version) => {
                    cache
                        .caught_up(&version.resource_version, CATCH_UP_LIMIT)
                        .await
                        && cache.has_seen(floor)
                }
                _ => cache.has_seen(floor),
            };
            if fresh {
                return Ok(from_cache());
            }
            tracing::debug!(
                ?written,
                floor,
                "the cache may lack a write; reading from etcd"
            );
            api.list(&selector).await?
        }
        (Read::Fresh, LastWrite::Unknown) => api.list(&selector).await?,
    };
    Ok(listed.items.into_iter().map(Arc::new).collect())
}

pub async fn observe(
    client: &Client,
    caches: &Caches,
    rollout: &Rollout,
    router: Option<&Routers>,
    read: Read,
    written: &Written,
    epoch: Epoch,
) -> Result<Observed, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let replica_sets: Api<ObservedReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &namespace);
    let canary = rollout.spec.strategy.canary.as_ref();
    // Blue-green's active and preview Services play the stable and canary Services' parts.
    let [stable_service, canary_service] = rollout.spec.strategy.services();

    // The reads are independent: all at once, so a reconcile (a pause's end, an abort)
    // waits for the slowest of them rather than for their sum. Their errors are taken in a
    // fixed order, not as they arrive: with both Services missing, the condition names the
    // stable one every time instead of flipping (and being written again) on each retry.
    let (replica_sets, stable_service_hash, canary_service_hash, route_weight, runs, experiments) = tokio::join!(
        async {
            read_owned(
                &replica_sets,
                &caches.replica_sets,
                &name,
                read,
                &written.replica_sets,
                epoch,
            )
            .await
            .map_err(Error::api("listing", "ReplicaSets of Rollout", &name))
        },
        service_hash(
            &services,
            &caches.services,
            read,
            &namespace,
            stable_service
        ),
        service_hash(
            &services,
            &caches.services,
            read,
            &namespace,
            canary_service
        ),
        async {
            match router {
                Some(router) => {
                    let (reading, routes, extras) = tokio::join!(
                        router.reading(),
                        router.managed_routes(),
                        router.extra_weights()
                    );
                    Ok::<_, Error>((reading?, routes?, extras?))
                }
                None => Ok((Reading::default(), ShownRoutes::new(), ExtraWeights::new())),
            }
        },
        async {
            read_owned(&runs, &caches.runs, &name, read, &written.runs, epoch)
                .await
                .map_err(Error::api("listing", "AnalysisRuns of Rollout", &name))
        },
        async {
            // A Rollout without experiment steps asks only a cache that has synced (one
            // whose steps were removed mid-experiment still ends what it started); so a
            // cluster without the Experiment CRD, whose watch never syncs, runs it the same.
            // It asks the cache as it stands even for a fresh look: it only ever ends
            // Experiments, and one the cache has not taken yet wakes the Rollout when it
            // arrives. (A fresh look that must prove the cache whole lists from etcd while
            // no Experiment has changed since its leadership began: once per look of every
            // busy Rollout, most of the API server's load in `make bench`'s busy part.)
            let read = if has_experiment_steps(rollout) {
                read
            } else if caches.experiments.is_synced() {
                Read::Cached
            } else {
                return Ok(Vec::new());
            };
            read_owned(
                &experiments,
                &caches.experiments,
                &name,
                read,
                &written.experiments,
                epoch,
            )
            .await
            .map_err(Error::api("listing", "Experiments of Rollout", &name))
        },
    );
    let (replica_sets, stable_service_hash, canary_service_hash, route_weight, runs, experiments) = (
        replica_sets?,
        stable_service_hash?,
        canary_service_hash?,
        route_weight?,
        runs?,
        experiments?,
    );
    let (route_weight, managed_routes, experiment_weights) = route_weight;
    // Without a canary Service (subset-level Istio), the router's canary subset is what
    // selects the canary's pods.
    let canary_service_hash = match (canary_service.name, canary) {
        (None, Some(_)) => router.and_then(Routers::canary_selector_hash),
        _ => canary_service_hash,
    };
    let replica_sets = replica_sets
        .iter()
        .filter_map(|rs| workload::view(rollout, rs))
        .collect();
    let analysis_runs = runs
        .iter()
        .map(AsRef::as_ref)
        .filter_map(run_view)
        .collect();

    Ok(Observed {
        replica_sets,
        stable_service_hash,
        canary_service_hash,
        route_weight: route_weight.highest,
        routers_differ: route_weight.differ,
        managed_routes,
        experiment_weights,
        analysis_runs,
        experiments: experiments
            .iter()
            .map(AsRef::as_ref)
            .filter_map(|experiment| experiment_view(rollout, experiment))
            .collect(),
        reference_problems: Vec::new(),
        outages: Vec::new(),
    })
}

fn has_experiment_steps(rollout: &Rollout) -> bool {
    let canary = rollout.spec.strategy.canary.as_ref();
    canary.is_some_and(|c| c.steps.iter().any(|s| s.experiment.is_some()))
}

/// An Experiment of the Rollout's, as the planner sees it; None for one it does not control
/// (an earlier Rollout of the same name, or a copied label).
fn experiment_view(rollout: &Rollout, experiment: &Experiment) -> Option<ExperimentView> {
    let controlled = experiment
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == rollout.metadata.uid.as_ref());
    if !controlled {
        return None;
    }
    let labels = experiment.labels();
    let status = experiment.status.as_ref();
    Some(ExperimentView {
        name: experiment.name_any(),
        hash: labels.get(CANARY_HASH_LABEL)?.clone(),
        attempt: labels.get(ATTEMPT_LABEL)?.parse().ok()?,
        step: labels.get(STEP_LABEL)?.parse().ok()?,
        phase: status
            .and_then(|s| s.phase)
            .unwrap_or(AnalysisPhase::Pending),
        message: status.and_then(|s| s.message.clone()),
        terminated: experiment.spec.terminate,
        services: status
            .into_iter()
            .flat_map(|s| &s.template_statuses)
            .filter_map(|t| Some((t.name.clone(), t.service_name.clone()?)))
            .collect(),
    })
}

/// The pod-template hash a Service named in `field` selects (None without the field or the
/// label); a Service that does not exist is an error naming the field. Read from `cache` for
/// a first look (one a moment behind at worst makes the fresh look that follows read it
/// again; right after a start, once its first list is in), from the API server for a fresh
/// one or when the cache cannot sync.
async fn service_hash(
    services: &Api<Service>,
    cache: &Cache<Service>,
    read: Read,
    namespace: &str,
    service: NamedService<'_>,
) -> Result<Option<String>, Error> {
    let NamedService {
        field,
        name: Some(service),
    } = service
    else {
        return Ok(None);
    };
    let found = match read {
        Read::Cached if cache.synced_within(FIRST_LIST_LIMIT).await => cache
            .store
            .get(&ObjectRef::new(service).within(namespace))
            .map(|found| found.as_ref().clone()),
        Read::Cached | Read::Fresh => services
            .get_opt(service)
            .await
            .map_err(Error::api("reading", "Service", service))?,
    };
    let Some(found) = found else {
        return Err(Error::MissingService {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
            field,
        });
    };
    Ok(found
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL).cloned()))
}

fn run_view(run: &AnalysisRun) -> Option<AnalysisRunView> {
    let labels = run.labels();
    let kind = AnalysisKind::from_label(labels.get(STEP_LABEL)?)?;
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
        hash: labels.get(CANARY_HASH_LABEL)?.clone(),
        attempt: labels.get(ATTEMPT_LABEL)?.parse().ok()?,
        kind,
        phase,
        message: status.and_then(|s| s.message.clone()),
        decided_by,
        terminated: run.spec.terminate,
    })
}

/// Checks every analysis the Rollout asks for against its templates (and those they
/// compose), read once each: from `cached` where it holds them.
pub async fn template_problems(
    client: &Client,
    cached: &TemplateCaches,
    rollout: &Rollout,
) -> Result<Vec<Violation>, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let mut fetched = run::Fetched::new();
    let mut problems = Vec::new();
    for requested in run::requested(&rollout.spec) {
        templates::read(
            client,
            Some(cached),
            &namespace,
            &requested.templates,
            &mut fetched,
        )
        .await?;
        problems.extend(run::check(
            &requested,
            &run::reach(&requested.templates, &fetched),
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, resource_version: &str) -> LastWrite {
        LastWrite::At(Version {
            name: name.into(),
            resource_version: resource_version.into(),
        })
    }

    fn rollout(namespace: &str, name: &str) -> Rollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                "strategy": {"canary": {"steps": []}}}
        }))
        .expect("a Rollout")
    }

    #[test]
    fn each_kind_keeps_the_version_of_its_own_latest_write() {
        let mut written = Written::default();
        written.note(Wrote::ReplicaSet(at("web-1", "10")));
        written.note(Wrote::AnalysisRun(at("web-1-run", "12")));
        written.note(Wrote::Elsewhere);
        written.note(Wrote::ReplicaSet(at("web-2", "15")));
        written.note(Wrote::Experiment(at("web-1-exp", "16")));
        assert_eq!(
            written,
            Written {
                replica_sets: at("web-2", "15"),
                runs: at("web-1-run", "12"),
                experiments: at("web-1-exp", "16"),
            }
        );
        // A delete returns no version of its own: the next ReplicaSet list goes to etcd.
        written.note(Wrote::ReplicaSet(LastWrite::Unknown));
        assert_eq!(written.replica_sets, LastWrite::Unknown);
        assert_eq!(written.runs, at("web-1-run", "12"));
        // A later write with a version covers the delete: it came after it.
        written.note(Wrote::ReplicaSet(at("web-2", "18")));
        assert_eq!(written.replica_sets, at("web-2", "18"));
    }

    #[test]
    fn versions_are_kept_per_rollout_and_forgotten_with_it() {
        let versions = WrittenVersions::default();
        let web = rollout("shop", "web");
        let other_namespace = rollout("blog", "web");
        let api = rollout("shop", "api");
        let web_written = Written {
            replica_sets: at("web-1", "7"),
            ..Written::default()
        };
        versions.record(&web, web_written.clone());
        versions.record(&api, Written::default());
        assert_eq!(versions.of(&web), web_written);
        assert_eq!(versions.of(&other_namespace), Written::default());
        assert_eq!(versions.of(&api), Written::default());
        versions.record(&api, web_written.clone());
        versions.forget(&web);
        assert_eq!(versions.of(&web), Written::default());
        assert_eq!(versions.of(&api), web_written);
        versions.record(&api, Written::default());
        // Nothing is kept for a Rollout with nothing to remember.
        assert!(versions.lock().is_empty());
    }

    #[test]
    fn trimming_a_cached_experiment_changes_nothing_the_planner_sees() {
        let mut web = rollout("shop", "web");
        web.metadata.uid = Some("u-web".into());
        let experiment: Experiment = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "web-abc-1-1", "namespace": "shop",
                "labels": {CANARY_HASH_LABEL: "abc", ATTEMPT_LABEL: "1", STEP_LABEL: "1"},
                "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
                    "name": "web", "uid": "u-web", "controller": true}]},
            "spec": {"templates": [{"name": "baseline", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}}}]},
            "status": {"phase": "Running", "templateStatuses": [
                {"name": "baseline", "replicas": 1, "availableReplicas": 1,
                 "podTemplateHash": "h1", "serviceName": "web-abc-1-1-baseline"},
                {"name": "canary", "replicas": 1, "availableReplicas": 1, "podTemplateHash": "h2"}]}
        }))
        .expect("an Experiment");
        let full = experiment_view(&web, &experiment);
        assert_eq!(
            full.as_ref().map(|v| v.services.clone()),
            Some([("baseline".to_owned(), "web-abc-1-1-baseline".to_owned())].into())
        );
        let mut trimmed = experiment.clone();
        TrimExperiment::trim(&mut trimmed);
        assert_eq!(experiment_view(&web, &trimmed), full);
        assert!(trimmed.spec.templates.is_empty());
    }

    /// Every Rollout among the examples, as their authors wrote them.
    fn example_rollouts() -> Vec<(std::path::PathBuf, Rollout)> {
        use serde::Deserialize as _;
        let mut found = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("the examples directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a readable example");
                for document in serde_yaml_ng::Deserializer::from_str(&text) {
                    let value = serde_json::Value::deserialize(document).expect("YAML");
                    if value["kind"] == "Rollout" {
                        let rollout = serde_json::from_value(value).expect("a Rollout");
                        found.push((path.clone(), rollout));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn trimming_a_cached_rollout_changes_nothing_a_look_sees() {
        let examples = example_rollouts();
        assert!(examples.len() >= 10, "found {}", examples.len());
        for (path, full) in examples {
            let mut applied = full.clone();
            applied
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(LAST_APPLIED_ANNOTATION.into(), "{}".into());
            let mut trimmed = applied.clone();
            TrimRollout::trim(&mut trimmed);
            let at = path.display();
            assert!(trimmed.spec.template.spec.is_none(), "{at}");
            assert_eq!(trimmed.spec.template.metadata, full.spec.template.metadata);
            assert!(!trimmed.annotations().contains_key(LAST_APPLIED_ANNOTATION));
            assert_eq!(
                trimmed.spec.template_hash(),
                crate::template_hash::of(&full.spec.template),
                "{at}"
            );
            assert_eq!(
                trimmed.spec.declares_ports(),
                crate::api::rollout::declares_ports(&full.spec.template),
                "{at}"
            );
            assert_eq!(
                crate::validate::rollout(&trimmed.spec),
                crate::validate::rollout(&full.spec),
                "{at}"
            );
            // Trimming is idempotent: a trimmed copy trimmed again keeps the digest of the
            // whole template, not of what was left of it.
            let mut again = trimmed.clone();
            TrimRollout::trim(&mut again);
            assert_eq!(again, trimmed, "{at}");
        }
    }

    #[test]
    fn a_stub_keeps_what_readers_of_every_shard_read_and_says_it_is_one() {
        let status: crate::api::rollout::RolloutStatus = serde_json::from_value(serde_json::json!({
            "abort": true,
            "phase": "Degraded",
            "canaryRevision": "b2",
            "stableRevision": "a1",
            "currentStepIndex": 2,
            "message": "analysis failed",
            "conditions": [{"type": "Progressing", "status": "False", "reason": "RolloutAborted",
                "message": "analysis failed", "lastTransitionTime": "2026-12-06T10:00:00Z"}],
        }))
        .expect("a status");
        for (path, mut full) in example_rollouts() {
            let at = path.display();
            full.status = Some(status.clone());
            TrimRollout::trim(&mut full);
            assert!(
                !full.spec.is_shard_stub,
                "{at}: a trimmed Rollout is whole enough to look at"
            );
            let mut stub = full.clone();
            stub_rollout(&mut stub);
            assert!(stub.spec.is_shard_stub, "{at}");
            assert_eq!(
                stub.metadata, full.metadata,
                "{at}: labels, annotations, finalizers"
            );
            let kept = stub.status.clone().unwrap_or_default();
            assert!(kept.abort, "{at}: GitSyncs wake on it");
            assert_eq!(kept.canary_revision.as_deref(), Some("b2"), "{at}");
            assert_eq!(kept.stable_revision.as_deref(), Some("a1"), "{at}");
            assert!(kept.conditions.is_empty() && kept.message.is_none(), "{at}");
            assert!(
                stub.spec
                    .strategy
                    .services()
                    .iter()
                    .all(|s| s.name.is_none()),
                "{at}"
            );
        }
        let mut without_status = rollout("shop", "web");
        stub_rollout(&mut without_status);
        assert_eq!(without_status.status, None);
    }

    proptest::proptest! {
        /// Whatever the containers, the digest answers as the whole template would.
        #[test]
        fn a_dropped_pod_spec_leaves_its_hash_and_ports(
            containers in proptest::collection::vec(
                ("[a-z]{1,8}", "[a-z]{1,8}:[0-9]{1,3}", proptest::option::of(0usize..3)),
                0..4,
            )
        ) {
            let containers: Vec<serde_json::Value> = containers
                .iter()
                .map(|(name, image, ports)| {
                    let mut container = serde_json::json!({"name": name, "image": image});
                    if let Some(ports) = ports {
                        container["ports"] = (0..*ports)
                            .map(|i| serde_json::json!({"containerPort": 8080 + i}))
                            .collect();
                    }
                    container
                })
                .collect();
            let mut rollout = rollout("shop", "web");
            rollout.spec.template.spec =
                Some(serde_json::from_value(serde_json::json!({"containers": containers}))
                    .expect("a pod spec"));
            let full = rollout.spec.clone();
            rollout.spec.drop_pod_spec();
            proptest::prop_assert_eq!(
                rollout.spec.template_hash(),
                crate::template_hash::of(&full.template)
            );
            proptest::prop_assert_eq!(rollout.spec.declares_ports(), full.declares_ports());
            proptest::prop_assert!(rollout.spec.template.spec.is_none());
        }
    }

    #[test]
    fn trimming_a_cached_replica_set_changes_nothing_the_planner_sees() {
        let mut web = rollout("shop", "web");
        web.metadata.uid = Some("uid-1".into());
        let replica_set = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "namespace": "shop", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {ROLLOUT_LABEL: "web", POD_TEMPLATE_HASH_LABEL: "abc", "app": "web"},
                "annotations": {SCALE_DOWN_ANNOTATION: "2026-01-01T00:00:30Z",
                    EPHEMERAL_METADATA_ANNOTATION: "{\"labels\": {\"role\": \"active\"}}",
                    "weir.dev/template": "{\"spec\": {}}"},
                "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
                    "name": "web", "uid": "uid-1", "controller": true}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}}},
            "status": {"replicas": 3, "availableReplicas": 2, "observedGeneration": 3}
        });
        // Read as the API server sends it: the whole ReplicaSet's JSON.
        let observed: ObservedReplicaSet =
            serde_json::from_value(replica_set).expect("a ReplicaSet reads as one observed");
        let mut trimmed = observed.clone();
        TrimReplicaSet::trim(&mut trimmed);
        let seen = workload::view(&web, &observed);
        assert_eq!(
            seen.as_ref()
                .map(|v| (v.hash.as_str(), v.replicas, v.available)),
            Some(("abc", 3, 2))
        );
        assert_eq!(workload::view(&web, &trimmed), seen);
        assert_eq!(
            trimmed.annotations().keys().collect::<Vec<_>>(),
            [EPHEMERAL_METADATA_ANNOTATION, SCALE_DOWN_ANNOTATION]
        );
        assert_eq!(
            trimmed.labels().keys().collect::<Vec<_>>(),
            [POD_TEMPLATE_HASH_LABEL, ROLLOUT_LABEL]
        );
        let seen = seen.expect("owned");
        assert_eq!(
            seen.ephemeral.labels.get("role").map(String::as_str),
            Some("active")
        );
    }

    #[test]
    fn trimming_a_cached_run_keeps_each_metrics_last_value() {
        let run: AnalysisRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "web-abc-1-2", "namespace": "shop",
                "labels": {ROLLOUT_LABEL: "web", CANARY_HASH_LABEL: "abc", ATTEMPT_LABEL: "1",
                    STEP_LABEL: "2"}},
            "spec": {"metrics": [{"name": "errors", "provider": {"prometheus":
                {"query": "sum(rate(errors[1m]))"}}, "successCondition": "result < 1"}],
                "terminate": true},
            "status": {"phase": "Failed", "message": "errors: 4",
                "metricResults": [
                    {"name": "errors", "phase": "Failed", "count": 3, "measurements": [
                        {"phase": "Successful", "value": "0.1", "startedAt": "2026-01-01T00:00:00Z"},
                        {"phase": "Successful", "value": "0.2", "startedAt": "2026-01-01T00:00:10Z"},
                        {"phase": "Failed", "value": "4", "startedAt": "2026-01-01T00:00:20Z"}]},
                    {"name": "latency", "phase": "Successful", "count": 0}]}
        }))
        .expect("an AnalysisRun");
        let mut trimmed = run.clone();
        TrimRun::trim(&mut trimmed);
        let seen = run_view(&run);
        assert_eq!(
            seen.as_ref().and_then(|v| v.decided_by.clone()),
            Some(("errors".to_owned(), Some("4".to_owned())))
        );
        assert_eq!(run_view(&trimmed), seen);
        assert!(trimmed.spec.template.metrics.is_empty());
        let results = &trimmed.status.as_ref().expect("status").metric_results;
        assert_eq!(results[0].measurements.len(), 1);
        assert!(results[1].measurements.is_empty());
    }
}
