//! The Rollout's ReplicaSets: how weir names, labels and builds them, and how it reads them
//! back into the planner's view. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::{Resource, ResourceExt};

use super::plan::ReplicaSetView;
use crate::api::Rollout;
use crate::api::contract::{
    EPHEMERAL_METADATA_ANNOTATION, POD_TEMPLATE_ANNOTATION, POD_TEMPLATE_HASH_LABEL, ROLLOUT_LABEL,
    SCALE_DOWN_ANNOTATION,
};
use crate::api::rollout::{AntiAffinity, PodMetadata};
use crate::time::from_k8s;

/// The largest template kept in that annotation.
const TEMPLATE_ANNOTATION_LIMIT: usize = 64 * 1024;

pub fn replica_set_name(rollout: &str, hash: &str) -> String {
    format!("{rollout}-{hash}")
}

/// The owner reference that makes the Rollout's deletion take its ReplicaSets along.
pub fn owner_reference(rollout: &Rollout) -> Option<OwnerReference> {
    rollout.controller_owner_ref(&())
}

/// The node a pod runs on, as a topology: anti-affinity spreads versions across nodes.
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// Adds to `spec` a pod anti-affinity term against the pods of version `away_from`, as a
/// preference or a requirement as `anti` says; the template's own affinity is kept.
pub fn avoid_nodes_of(spec: &mut PodSpec, anti: &AntiAffinity, away_from: &str) {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: POD_TEMPLATE_HASH_LABEL.into(),
                operator: "In".into(),
                values: Some(vec![away_from.into()]),
            }]),
            match_labels: None,
        }),
        topology_key: HOSTNAME_TOPOLOGY.into(),
        ..PodAffinityTerm::default()
    };
    let pod_anti_affinity = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    if let Some(preferred) = &anti.preferred_during_scheduling_ignored_during_execution {
        pod_anti_affinity
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                pod_affinity_term: term,
                weight: preferred.weight,
            });
    } else if anti
        .required_during_scheduling_ignored_during_execution
        .is_some()
    {
        pod_anti_affinity
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
    }
}

/// What weir records of the ephemeral metadata it put on a ReplicaSet's pods
/// (`EPHEMERAL_METADATA_ANNOTATION`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
struct EphemeralRecord {
    #[serde(flatten)]
    metadata: PodMetadata,
    /// Being changed: some pods may still carry keys of the record's, or lack some.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
    /// The generation weir's last relabelling of the template gave the ReplicaSet: it differs
    /// from the one before only in pod metadata, so that one's status counts still hold.
    #[serde(
        default,
        rename = "relabelledGeneration",
        skip_serializing_if = "Option::is_none"
    )]
    relabelled_generation: Option<i64>,
}

/// The record's annotation value; None (no annotation) when there is nothing to remember.
fn ephemeral_record(record: EphemeralRecord) -> Option<String> {
    if record == EphemeralRecord::default() {
        return None;
    }
    // Serializing maps of strings cannot fail.
    serde_json::to_string(&record).ok()
}

/// What weir recorded on a ReplicaSet. A record that does not parse (edited by hand) counts
/// as half applied: applied again.
fn read_ephemeral_record(replica_set: &ObjectMeta) -> EphemeralRecord {
    let annotations = replica_set.annotations.as_ref();
    match annotations.and_then(|a| a.get(EPHEMERAL_METADATA_ANNOTATION)) {
        None => EphemeralRecord::default(),
        Some(text) => serde_json::from_str(text).unwrap_or(EphemeralRecord {
            pending: true,
            ..EphemeralRecord::default()
        }),
    }
}

/// Whether `shown` carries `wanted` and none of the keys of `applied` that `wanted` lacks
/// (the hash label aside: weir never touches it).
fn carries(
    shown: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
    applied: &BTreeMap<String, String>,
) -> bool {
    let empty = BTreeMap::new();
    let shown = shown.unwrap_or(&empty);
    let ours = |key: &&String| *key != POD_TEMPLATE_HASH_LABEL;
    wanted
        .iter()
        .filter(|(k, _)| ours(k))
        .all(|(k, v)| shown.get(k) == Some(v))
        && applied
            .keys()
            .filter(ours)
            .all(|k| wanted.contains_key(k) || !shown.contains_key(k))
}

fn carries_all(meta: Option<&ObjectMeta>, wanted: &PodMetadata, applied: &PodMetadata) -> bool {
    carries(
        meta.and_then(|m| m.labels.as_ref()),
        &wanted.labels,
        &applied.labels,
    ) && carries(
        meta.and_then(|m| m.annotations.as_ref()),
        &wanted.annotations,
        &applied.annotations,
    )
}

/// `wanted` with the keys of `applied` it lacks: every key weir may have put there.
fn union(wanted: &PodMetadata, applied: &PodMetadata) -> PodMetadata {
    let mut all = applied.clone();
    all.labels.extend(wanted.labels.clone());
    all.annotations.extend(wanted.annotations.clone());
    all
}

/// A merge patch of one map: `wanted`'s keys set, `applied`'s others removed. The pod-template
/// hash label is never touched (validation refuses it as a key; this holds regardless).
fn map_patch(
    wanted: &BTreeMap<String, String>,
    applied: &BTreeMap<String, String>,
) -> serde_json::Map<String, serde_json::Value> {
    let removed = applied
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .map(|key| (key.clone(), serde_json::Value::Null));
    let set = wanted
        .iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())));
    removed
        .chain(set)
        .filter(|(key, _)| key != POD_TEMPLATE_HASH_LABEL)
        .collect()
}

fn metadata_patch(wanted: &PodMetadata, applied: &PodMetadata) -> serde_json::Value {
    serde_json::json!({
        "labels": map_patch(&wanted.labels, &applied.labels),
        "annotations": map_patch(&wanted.annotations, &applied.annotations),
    })
}

/// The first write of `SetEphemeralMetadata` to `current` (as just read): its pod template
/// takes `wanted` (pods created from now on carry it) and the record says pending, holding
/// every key weir may have put on the pods, so a crash before the pods are done leaves
/// nothing behind. A merge patch guarded by `current`'s resourceVersion, so the generation it
/// gives is known: when the template changes, the next one, recorded as relabelled (the
/// counts of the status before it still hold, and the planner does not see the version's
/// pods as unavailable meanwhile). The selector and the hash label are untouched. Also gives
/// the relabelled generation, for the last write.
pub fn ephemeral_template_patch(
    current: &ReplicaSet,
    wanted: &PodMetadata,
    applied: &PodMetadata,
) -> (serde_json::Value, Option<i64>) {
    let template = current
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref());
    let relabelled_generation = if carries_all(template, wanted, applied) {
        read_ephemeral_record(&current.metadata).relabelled_generation
    } else {
        current.metadata.generation.map(|g| g + 1)
    };
    let record = ephemeral_record(EphemeralRecord {
        metadata: union(wanted, applied),
        pending: true,
        relabelled_generation,
    });
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": {EPHEMERAL_METADATA_ANNOTATION: record},
        },
        "spec": {"template": {"metadata": metadata_patch(wanted, applied)}},
    });
    (patch, relabelled_generation)
}

/// The merge patch of one live pod; None when it already carries `wanted` and none of the
/// keys of `applied` that `wanted` lacks.
pub fn ephemeral_pod_patch(
    pod: &ObjectMeta,
    wanted: &PodMetadata,
    applied: &PodMetadata,
) -> Option<serde_json::Value> {
    (!carries_all(Some(pod), wanted, applied))
        .then(|| serde_json::json!({"metadata": metadata_patch(wanted, applied)}))
}

/// The last write of `SetEphemeralMetadata`, once every pod carries `wanted`: the record,
/// with the generation the first write's relabelling gave.
pub fn ephemeral_record_patch(
    wanted: &PodMetadata,
    relabelled_generation: Option<i64>,
) -> serde_json::Value {
    let record = ephemeral_record(EphemeralRecord {
        metadata: wanted.clone(),
        pending: false,
        relabelled_generation,
    });
    serde_json::json!({"metadata": {"annotations": {EPHEMERAL_METADATA_ANNOTATION: record}}})
}

/// The pod template that made the ReplicaSet: the exact copy it keeps (true), else
/// `template_of` (false). A ReplicaSet's own template has the API server's defaults filled
/// in, which would hash as a new version.
pub fn kept_template(replica_set: &ReplicaSet) -> Option<(PodTemplateSpec, bool)> {
    let kept = replica_set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_TEMPLATE_ANNOTATION))
        .and_then(|json| serde_json::from_str::<PodTemplateSpec>(json).ok());
    match kept {
        Some(template) => Some((template, true)),
        None => template_of(replica_set).map(|template| (template, false)),
    }
}

/// The ReplicaSet's own pod template as the Rollout had it, as near as it can be told: without
/// the hash label and the ephemeral metadata weir recorded putting there (for `kubectl weir
/// undo` when the template's exact copy was too big to keep).
pub fn template_of(replica_set: &ReplicaSet) -> Option<PodTemplateSpec> {
    let mut template = replica_set.spec.as_ref()?.template.clone()?;
    let ours = read_ephemeral_record(&replica_set.metadata).metadata;
    if let Some(metadata) = template.metadata.as_mut() {
        if let Some(labels) = metadata.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            labels.retain(|key, _| !ours.labels.contains_key(key));
        }
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.retain(|key, _| !ours.annotations.contains_key(key));
            if annotations.is_empty() {
                metadata.annotations = None;
            }
        }
    }
    Some(template)
}

/// The ReplicaSet for the Rollout's current template, labelled with its hash so the pods, the
/// ReplicaSet and the Services can tell versions apart. `away_from`: the version whose nodes
/// its pods avoid (blue-green's `antiAffinity`); `ephemeral`: the labels and annotations its
/// pods start with (blue-green's `previewMetadata`), recorded; the hash stays the template's
/// own either way.
pub fn replica_set(
    rollout: &Rollout,
    hash: &str,
    replicas: i32,
    away_from: Option<&str>,
    ephemeral: &PodMetadata,
) -> ReplicaSet {
    let name = rollout.name_any();
    let mut template = rollout.spec.template.clone();
    let anti_affinity = rollout
        .spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|b| b.anti_affinity.as_ref());
    if let (Some(anti), Some(away_from), Some(spec)) =
        (anti_affinity, away_from, template.spec.as_mut())
    {
        avoid_nodes_of(spec, anti, away_from);
    }
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    if !ephemeral.annotations.is_empty() {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(ephemeral.annotations.clone());
    }
    let pod_labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    pod_labels.extend(ephemeral.labels.clone());
    pod_labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = rollout.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut labels = rollout
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    labels.insert(ROLLOUT_LABEL.into(), name.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(replica_set_name(&name, hash)),
            namespace: rollout.namespace(),
            labels: Some(labels),
            // Serializing a k8s-openapi type into memory cannot fail. A template too big to
            // keep beside the others (annotations share 256 KiB) is not kept: undo then
            // falls back to the ReplicaSet's own copy.
            annotations: {
                let kept = serde_json::to_string(&rollout.spec.template)
                    .ok()
                    .filter(|json| json.len() <= TEMPLATE_ANNOTATION_LIMIT)
                    .map(|json| (POD_TEMPLATE_ANNOTATION.to_owned(), json));
                let record = ephemeral_record(EphemeralRecord {
                    metadata: ephemeral.clone(),
                    ..EphemeralRecord::default()
                })
                .map(|json| (EPHEMERAL_METADATA_ANNOTATION.to_owned(), json));
                let annotations: BTreeMap<String, String> =
                    kept.into_iter().chain(record).collect();
                (!annotations.is_empty()).then_some(annotations)
            },
            owner_references: owner_reference(rollout).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: Some(rollout.spec.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// A ReplicaSet as a look reads it, decoded straight from the API server's JSON (a list, a
/// watch event): the fields [`view`] takes and nothing else. Without the pod template and
/// selector a k8s-openapi `ReplicaSet` is still 2.3 KiB of empty fields; this is the
/// metadata and a few numbers, for every ReplicaSet of every Rollout the cache holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct ObservedReplicaSet {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<ObservedScale>,
    #[serde(default)]
    pub status: Option<ObservedCounts>,
}

/// Of a ReplicaSet's spec, its scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ObservedScale {
    #[serde(default)]
    pub replicas: Option<i32>,
}

/// Of a ReplicaSet's status, its available pods and the generation they count for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCounts {
    #[serde(default)]
    pub available_replicas: Option<i32>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

// The API's own kind: the same URL, group and version as `ReplicaSet`, read into less.
impl k8s_openapi::Resource for ObservedReplicaSet {
    const API_VERSION: &'static str = <ReplicaSet as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <ReplicaSet as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <ReplicaSet as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <ReplicaSet as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <ReplicaSet as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <ReplicaSet as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for ObservedReplicaSet {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The planner's view of a ReplicaSet the Rollout owns; None for one that is not its own
/// (no hash label, or owned by another object).
pub fn view(rollout: &Rollout, replica_set: &ObservedReplicaSet) -> Option<ReplicaSetView> {
    let uid = rollout.uid()?;
    let owned = replica_set
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true));
    if !owned {
        return None;
    }
    let hash = replica_set.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
    let status = replica_set.status.as_ref();
    // Counts from a status older than the spec describe the previous scale: not yet available.
    let record = read_ephemeral_record(&replica_set.metadata);
    let generation = replica_set.metadata.generation;
    let observed = status.and_then(|s| s.observed_generation);
    // A generation weir made by relabelling the template alone changes no pod: the counts of
    // the one before still hold (else every switch would read its versions as unavailable
    // until the ReplicaSet controller catches up).
    let relabelled_from = generation
        .filter(|g| record.relabelled_generation == Some(*g))
        .map(|g| g - 1);
    let current = observed == generation || (observed.is_some() && observed == relabelled_from);
    let scale_down_at = replica_set
        .annotations()
        .get(SCALE_DOWN_ANNOTATION)
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&chrono::Utc));
    Some(ReplicaSetView {
        hash,
        replicas: replica_set
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1),
        available: if current {
            status.and_then(|s| s.available_replicas).unwrap_or(0)
        } else {
            0
        },
        scale_down_at,
        created: replica_set
            .metadata
            .creation_timestamp
            .as_ref()
            .map(from_k8s)
            .unwrap_or_default(),
        ephemeral: record.metadata,
        ephemeral_pending: record.pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template_hash;
    use serde_json::json;

    /// `replica_set` as a look reads it: through its JSON, as from the API server.
    fn observed(replica_set: &ReplicaSet) -> ObservedReplicaSet {
        serde_json::to_value(replica_set)
            .and_then(serde_json::from_value)
            .expect("a ReplicaSet reads as one observed")
    }

    fn rollout() -> Rollout {
        let mut rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "minReadySeconds": 5,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "strategy": {"canary": {}}
            }
        }))
        .expect("rollout");
        rollout.metadata.uid = Some("uid-1".into());
        rollout
    }

    #[test]
    fn the_replica_set_is_named_labelled_owned_and_selects_only_its_version() {
        let rs = replica_set(&rollout(), "abc", 3, None, &PodMetadata::default());
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc"));
        assert_eq!(rs.metadata.namespace.as_deref(), Some("shop"));
        let labels = rs.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(ROLLOUT_LABEL).map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        let owner = rs.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(
            (owner.len(), owner[0].uid.as_str(), owner[0].controller),
            (1, "uid-1", Some(true))
        );
        let spec = rs.spec.expect("spec");
        assert_eq!((spec.replicas, spec.min_ready_seconds), (Some(3), Some(5)));
        let selected = spec.selector.match_labels.unwrap_or_default();
        assert_eq!(
            selected.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        let pod_labels = spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(
            pod_labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        assert_eq!(pod_labels.get("app").map(String::as_str), Some("web"));
        let kept: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_str(
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POD_TEMPLATE_ANNOTATION))
                .expect("the template kept"),
        )
        .expect("a template");
        assert_eq!(
            template_hash::of(&kept),
            template_hash::of(&rollout().spec.template),
            "undo can put back exactly what hashed to this ReplicaSet"
        );
    }

    fn anti(value: serde_json::Value) -> AntiAffinity {
        serde_json::from_value(value).expect("antiAffinity")
    }

    fn pod_spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("pod spec")
    }

    /// The term weir adds against version `hash`, as JSON.
    fn term(hash: &str) -> serde_json::Value {
        json!({
            "labelSelector": {"matchExpressions": [
                {"key": "rollouts-pod-template-hash", "operator": "In", "values": [hash]}
            ]},
            "topologyKey": "kubernetes.io/hostname"
        })
    }

    #[test]
    fn anti_affinity_is_a_preference_with_its_weight_or_a_requirement() {
        let mut spec = pod_spec(json!({"containers": []}));
        let preferred = json!({"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 40}});
        avoid_nodes_of(&mut spec, &anti(preferred), "old");
        assert_eq!(
            serde_json::to_value(&spec.affinity).expect("json"),
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 40, "podAffinityTerm": term("old")}
            ]}})
        );

        let mut spec = pod_spec(json!({"containers": []}));
        let required = json!({"requiredDuringSchedulingIgnoredDuringExecution": {}});
        avoid_nodes_of(&mut spec, &anti(required), "old");
        assert_eq!(
            serde_json::to_value(&spec.affinity).expect("json"),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("old")]}})
        );
    }

    #[test]
    fn anti_affinity_is_added_to_the_templates_own_affinity() {
        let own = json!({
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
            ]},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}
            ]}
        });
        let mut spec = pod_spec(json!({"containers": [], "affinity": own}));
        let required = json!({"requiredDuringSchedulingIgnoredDuringExecution": {}});
        avoid_nodes_of(&mut spec, &anti(required), "old");
        let mut expected = own.clone();
        expected["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array_mut()
            .expect("terms")
            .push(term("old"));
        assert_eq!(
            serde_json::to_value(&spec.affinity).expect("json"),
            expected
        );
    }

    #[test]
    fn a_blue_green_replica_set_avoids_the_old_version_and_keeps_its_templates_hash() {
        let mut rollout = rollout();
        rollout.spec.strategy = serde_json::from_value(json!({"blueGreen": {
            "activeService": "web",
            "antiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
        }}))
        .expect("strategy");
        let affinity_of = |rs: &ReplicaSet| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.affinity.clone())
        };
        let rs = replica_set(&rollout, "new", 3, Some("old"), &PodMetadata::default());
        assert_eq!(
            serde_json::to_value(affinity_of(&rs)).expect("json"),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("old")]}})
        );
        let kept: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_str(
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POD_TEMPLATE_ANNOTATION))
                .expect("the template kept"),
        )
        .expect("a template");
        assert_eq!(kept, rollout.spec.template, "the user's template, not ours");
        assert_eq!(
            affinity_of(&replica_set(
                &rollout,
                "new",
                3,
                None,
                &PodMetadata::default()
            )),
            None
        );
    }

    fn pod_metadata(value: serde_json::Value) -> PodMetadata {
        serde_json::from_value(value).expect("metadata")
    }

    #[test]
    fn a_replica_set_created_with_ephemeral_metadata_carries_and_records_it() {
        let preview = pod_metadata(json!({"labels": {"role": "preview"},
            "annotations": {"example.com/note": "previewed"}}));
        let rollout = rollout();
        let mut rs = replica_set(&rollout, "abc", 3, None, &preview);
        let template = rs.spec.as_ref().and_then(|s| s.template.clone());
        let meta = template
            .and_then(|t| t.metadata)
            .expect("template metadata");
        assert_eq!(
            serde_json::to_value(&meta.labels).expect("json"),
            json!({"app": "web", "role": "preview", "rollouts-pod-template-hash": "abc"})
        );
        assert_eq!(
            serde_json::to_value(&meta.annotations).expect("json"),
            json!({"example.com/note": "previewed"})
        );
        let kept: k8s_openapi::api::core::v1::PodTemplateSpec =
            serde_json::from_str(&rs.annotations()[POD_TEMPLATE_ANNOTATION]).expect("a template");
        assert_eq!(kept, rollout.spec.template, "the user's template, not ours");
        rs.status = None;
        let seen = view(&rollout, &observed(&rs)).expect("owned");
        assert_eq!((seen.ephemeral, seen.ephemeral_pending), (preview, false));

        let plain = replica_set(&rollout, "abc", 3, None, &PodMetadata::default());
        assert!(
            !plain
                .annotations()
                .contains_key(EPHEMERAL_METADATA_ANNOTATION)
        );
        let seen = view(&rollout, &observed(&plain)).expect("owned");
        assert_eq!(
            (seen.ephemeral, seen.ephemeral_pending),
            (PodMetadata::default(), false)
        );
    }

    #[test]
    fn the_template_read_back_is_the_rollouts_without_what_weir_added() {
        let mut rollout = rollout();
        rollout.spec.template.metadata = Some(
            serde_json::from_value(json!({"labels": {"app": "web"},
                "annotations": {"team": "shop"}}))
            .expect("metadata"),
        );
        let active = pod_metadata(json!({"labels": {"role": "active"},
            "annotations": {"example.com/live": "yes"}}));
        let rs = replica_set(&rollout, "abc", 3, None, &active);
        assert_eq!(template_of(&rs), Some(rollout.spec.template.clone()));
        let plain = replica_set(&rollout, "abc", 3, None, &PodMetadata::default());
        assert_eq!(template_of(&plain), Some(rollout.spec.template));
    }

    #[test]
    fn a_record_that_does_not_parse_is_applied_again() {
        let rollout = rollout();
        let mut rs = replica_set(&rollout, "abc", 3, None, &PodMetadata::default());
        rs.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(EPHEMERAL_METADATA_ANNOTATION.into(), "{not json".into());
        let seen = view(&rollout, &observed(&rs)).expect("owned");
        assert_eq!(
            (seen.ephemeral, seen.ephemeral_pending),
            (PodMetadata::default(), true)
        );
    }

    #[test]
    fn ephemeral_patches_add_what_is_wanted_and_take_off_only_what_weir_put_there() {
        let applied = pod_metadata(json!({"labels": {"role": "preview", "stage": "new"},
            "annotations": {"note": "previewed"}}));
        let wanted = pod_metadata(json!({"labels": {"role": "active"}}));
        let mut current = replica_set(&rollout(), "abc", 3, None, &applied);
        current.metadata.generation = Some(4);
        current.metadata.resource_version = Some("77".into());
        let (template, relabelled) = ephemeral_template_patch(&current, &wanted, &applied);
        assert_eq!(
            relabelled,
            Some(5),
            "the template changes: the next generation"
        );
        assert_eq!(
            template["metadata"]["resourceVersion"],
            json!("77"),
            "guarded, so the generation it gives is known"
        );
        assert_eq!(
            template["spec"]["template"]["metadata"],
            json!({"labels": {"role": "active", "stage": null}, "annotations": {"note": null}})
        );
        assert_eq!(
            template["spec"].as_object().map(|s| s.len()),
            Some(1),
            "no selector"
        );
        // Pending, with every key weir may have put on the pods: a crash part way loses none.
        let record: serde_json::Value = serde_json::from_str(
            template["metadata"]["annotations"][EPHEMERAL_METADATA_ANNOTATION]
                .as_str()
                .expect("a record"),
        )
        .expect("json");
        assert_eq!(
            record,
            json!({"labels": {"role": "active", "stage": "new"},
                "annotations": {"note": "previewed"}, "pending": true,
                "relabelledGeneration": 5})
        );
        let mut rs = replica_set(&rollout(), "abc", 3, None, &PodMetadata::default());
        rs.metadata.annotations = Some(BTreeMap::from([(
            EPHEMERAL_METADATA_ANNOTATION.to_owned(),
            record.to_string(),
        )]));
        let seen = view(&rollout(), &observed(&rs)).expect("owned");
        assert!(seen.ephemeral_pending);
        assert_eq!(seen.ephemeral.labels.len(), 2);

        // A pod with a label of its own keeps it; one already done is not written.
        let pod: ObjectMeta = serde_json::from_value(json!({
            "labels": {"app": "web", "rollouts-pod-template-hash": "abc", "role": "preview",
                "stage": "new", "mine": "x"},
            "annotations": {"note": "previewed", "theirs": "y"}
        }))
        .expect("pod metadata");
        let patch = ephemeral_pod_patch(&pod, &wanted, &applied).expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"role": "active", "stage": null},
                "annotations": {"note": null}}})
        );
        let done: ObjectMeta = serde_json::from_value(json!({
            "labels": {"app": "web", "role": "active", "mine": "x"},
            "annotations": {"theirs": "y"}
        }))
        .expect("pod metadata");
        assert_eq!(ephemeral_pod_patch(&done, &wanted, &applied), None);

        // The hash label is never touched, whatever the metadata says.
        let hostile = pod_metadata(json!({"labels": {"rollouts-pod-template-hash": "other"}}));
        let plain = replica_set(&rollout(), "abc", 3, None, &PodMetadata::default());
        let (patch, relabelled) =
            ephemeral_template_patch(&plain, &PodMetadata::default(), &hostile);
        assert_eq!(patch["spec"]["template"]["metadata"]["labels"], json!({}));
        assert_eq!(relabelled, None, "nothing changes: no new generation");
        let (patch, relabelled) =
            ephemeral_template_patch(&plain, &hostile, &PodMetadata::default());
        assert_eq!(patch["spec"]["template"]["metadata"]["labels"], json!({}));
        assert_eq!(relabelled, None);
        // The last write: the record of what is now on every pod, or none at all.
        assert_eq!(
            ephemeral_record_patch(&PodMetadata::default(), None),
            json!({"metadata": {"annotations": {EPHEMERAL_METADATA_ANNOTATION: null}}})
        );
        assert_eq!(
            ephemeral_record_patch(&wanted, Some(5))["metadata"]["annotations"]
                [EPHEMERAL_METADATA_ANNOTATION],
            json!(r#"{"labels":{"role":"active"},"relabelledGeneration":5}"#)
        );
    }

    #[test]
    fn a_status_from_just_before_weirs_relabelling_still_counts() {
        let rollout = rollout();
        let active = pod_metadata(json!({"labels": {"role": "active"}}));
        let mut rs = replica_set(&rollout, "abc", 3, None, &active);
        rs.metadata.generation = Some(6);
        rs.status = Some(
            serde_json::from_value(
                json!({"replicas": 3, "availableReplicas": 3, "observedGeneration": 5}),
            )
            .expect("status"),
        );
        let available = |rs: &ReplicaSet| view(&rollout, &observed(rs)).map(|v| v.available);
        assert_eq!(
            available(&rs),
            Some(0),
            "generation 6 is not weir's relabelling"
        );
        // Relabelled to active (template already so: the record keeps the generation).
        let (_, relabelled) = ephemeral_template_patch(&rs, &active, &PodMetadata::default());
        assert_eq!(relabelled, None);
        rs.metadata.generation = Some(5);
        let (_, relabelled) = ephemeral_template_patch(&rs, &PodMetadata::default(), &active);
        assert_eq!(relabelled, Some(6));
        rs.metadata.generation = Some(6);
        let record = ephemeral_record_patch(&PodMetadata::default(), relabelled);
        rs.metadata.annotations = Some(BTreeMap::from([(
            EPHEMERAL_METADATA_ANNOTATION.to_owned(),
            record["metadata"]["annotations"][EPHEMERAL_METADATA_ANNOTATION]
                .as_str()
                .expect("a record kept for the generation")
                .to_owned(),
        )]));
        assert_eq!(available(&rs), Some(3), "only pod metadata changed since 5");
        rs.metadata.generation = Some(7);
        assert_eq!(
            available(&rs),
            Some(0),
            "a later change (a scale) is not counted"
        );
        rs.metadata.generation = Some(6);
        if let Some(status) = rs.status.as_mut() {
            status.observed_generation = Some(4);
        }
        assert_eq!(available(&rs), Some(0), "two generations behind");
    }

    #[test]
    fn views_come_only_from_owned_replica_sets_and_ignore_stale_counts() {
        let rollout = rollout();
        let mut rs = replica_set(&rollout, "abc", 3, None, &PodMetadata::default());
        rs.metadata.generation = Some(2);
        rs.metadata.annotations = Some(
            [(
                SCALE_DOWN_ANNOTATION.to_string(),
                "2026-01-01T00:00:30Z".to_string(),
            )]
            .into(),
        );
        rs.status = Some(
            serde_json::from_value(
                json!({"replicas": 3, "availableReplicas": 3, "observedGeneration": 2}),
            )
            .expect("status"),
        );
        let seen = view(&rollout, &observed(&rs)).expect("owned");
        assert_eq!(
            (seen.hash.as_str(), seen.replicas, seen.available),
            ("abc", 3, 3)
        );
        assert_eq!(
            seen.scale_down_at.map(|t| t.timestamp()),
            Some(1_767_225_630)
        );

        rs.metadata.generation = Some(3);
        assert_eq!(
            view(&rollout, &observed(&rs)).map(|v| v.available),
            Some(0),
            "status from before the last scale"
        );

        rs.metadata.owner_references = None;
        assert_eq!(view(&rollout, &observed(&rs)), None);
    }
}
