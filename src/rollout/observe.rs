//! Reads what the planner needs from the API server: the Rollout's own ReplicaSets and
//! AnalysisRuns (by label), its two Services, and the canary weight on its router.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, ObjectList, VersionMatch};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

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
    /// What anything that writes is decided from: a list that holds every write this
    /// process made to the Rollout's ReplicaSets and AnalysisRuns. With the version of the
    /// latest of those writes ([`Written`]) the watch cache answers it, once it has caught up
    /// to that version. Without one (a new process, a new leader, a delete whose version is
    /// not returned) it is a quorum read from etcd, which decodes every ReplicaSet in the
    /// namespace to filter them: at 5,000 Rollouts in one namespace, half a second each.
    Fresh,
}

/// The resourceVersions of this process's latest write to one Rollout's ReplicaSets and to
/// its AnalysisRuns. Versions of the listed kind only: the watch cache of ReplicaSets moves on
/// with ReplicaSet events, and would wait in vain for the version of a write to another kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub replica_sets: Option<String>,
    pub runs: Option<String>,
}

impl Written {
    /// After `wrote`: a write of unknown version leaves its kind to etcd again.
    pub fn note(&mut self, wrote: super::act::Wrote) {
        use super::act::Wrote;
        match wrote {
            Wrote::ReplicaSet(version) => self.replica_sets = version,
            Wrote::AnalysisRun(version) => self.runs = version,
            Wrote::Elsewhere => {}
        }
    }
}

/// [`Written`] for every Rollout this process wrote for since it last became leader.
#[derive(Debug, Default)]
pub struct WrittenVersions(Mutex<HashMap<(String, String), Written>>);

impl WrittenVersions {
    fn key(rollout: &Rollout) -> (String, String) {
        (rollout.namespace().unwrap_or_default(), rollout.name_any())
    }

    pub fn of(&self, rollout: &Rollout) -> Written {
        let versions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        versions
            .get(&Self::key(rollout))
            .cloned()
            .unwrap_or_default()
    }

    pub fn record(&self, rollout: &Rollout, written: Written) {
        let mut versions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if written == Written::default() {
            versions.remove(&Self::key(rollout));
        } else {
            versions.insert(Self::key(rollout), written);
        }
    }

    pub fn forget(&self, rollout: &Rollout) {
        self.record(rollout, Written::default());
    }

    /// Another leader may have written since: everything is read from etcd again once.
    pub fn forget_all(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Lists what `selector` selects as `read` says; a bounded list the watch cache cannot
/// serve in time (it gives up after 3 s behind) is asked of etcd instead.
async fn list_owned<K>(
    api: &Api<K>,
    selector: &ListParams,
    read: Read,
    written: Option<&str>,
) -> kube::Result<ObjectList<K>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match (read, written) {
        (Read::Cached, _) => api.list(&selector.clone().match_any()).await,
        (Read::Fresh, None) => api.list(selector).await,
        (Read::Fresh, Some(version)) => {
            let bounded = selector
                .clone()
                .at(version)
                .matching(VersionMatch::NotOlderThan);
            match api.list(&bounded).await {
                Ok(list) => Ok(list),
                Err(error) => {
                    tracing::debug!(%error, version, "bounded list refused; reading from etcd");
                    api.list(selector).await
                }
            }
        }
    }
}

pub async fn observe(
    client: &Client,
    rollout: &Rollout,
    router: Option<&AnyRouter>,
    read: Read,
    written: &Written,
) -> Result<Observed, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let owned = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={name}"));
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
            list_owned(&replica_sets, &owned, read, written.replica_sets.as_deref())
                .await
                .map_err(Error::api("listing", "ReplicaSets of Rollout", &name))
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
            list_owned(&runs, &owned, read, written.runs.as_deref())
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

#[cfg(test)]
mod tests {
    use super::super::act::Wrote;
    use super::*;

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
        written.note(Wrote::ReplicaSet(Some("10".into())));
        written.note(Wrote::AnalysisRun(Some("12".into())));
        written.note(Wrote::Elsewhere);
        written.note(Wrote::ReplicaSet(Some("15".into())));
        assert_eq!(
            written,
            Written {
                replica_sets: Some("15".into()),
                runs: Some("12".into())
            }
        );
        // A delete returns no version of its own: the next ReplicaSet list goes to etcd.
        written.note(Wrote::ReplicaSet(None));
        assert_eq!(written.replica_sets, None);
        assert_eq!(written.runs, Some("12".into()));
    }

    #[test]
    fn versions_are_kept_per_rollout_and_forgotten_with_it_or_a_new_term() {
        let versions = WrittenVersions::default();
        let web = rollout("shop", "web");
        let other_namespace = rollout("blog", "web");
        let api = rollout("shop", "api");
        let web_written = Written {
            replica_sets: Some("7".into()),
            runs: None,
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
        versions.forget_all();
        assert_eq!(versions.of(&api), Written::default());
        // Nothing is kept for a Rollout with nothing to remember.
        assert!(versions.0.lock().map(|m| m.is_empty()).unwrap_or(false));
    }
}
