//! The Rollout's ReplicaSets: how weir names, labels and builds them, and how it reads them
//! back into the planner's view. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodSpec, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::{Resource, ResourceExt};

use super::plan::ReplicaSetView;
use crate::api::Rollout;
use crate::api::contract::{
    POD_TEMPLATE_ANNOTATION, POD_TEMPLATE_HASH_LABEL, ROLLOUT_LABEL, SCALE_DOWN_ANNOTATION,
};
use crate::api::rollout::AntiAffinity;
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

/// The ReplicaSet for the Rollout's current template, labelled with its hash so the pods, the
/// ReplicaSet and the Services can tell versions apart. `away_from`: the version whose nodes
/// its pods avoid (blue-green's `antiAffinity`); the hash stays the template's own.
pub fn replica_set(
    rollout: &Rollout,
    hash: &str,
    replicas: i32,
    away_from: Option<&str>,
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
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
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
            annotations: serde_json::to_string(&rollout.spec.template)
                .ok()
                .filter(|json| json.len() <= TEMPLATE_ANNOTATION_LIMIT)
                .map(|json| BTreeMap::from([(POD_TEMPLATE_ANNOTATION.to_owned(), json)])),
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

/// The planner's view of a ReplicaSet the Rollout owns; None for one that is not its own
/// (no hash label, or owned by another object).
pub fn view(rollout: &Rollout, replica_set: &ReplicaSet) -> Option<ReplicaSetView> {
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
    let current = status.and_then(|s| s.observed_generation) == replica_set.metadata.generation;
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::template_hash;
    use serde_json::json;

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
        let rs = replica_set(&rollout(), "abc", 3, None);
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
        let rs = replica_set(&rollout, "new", 3, Some("old"));
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
        assert_eq!(affinity_of(&replica_set(&rollout, "new", 3, None)), None);
    }

    #[test]
    fn views_come_only_from_owned_replica_sets_and_ignore_stale_counts() {
        let rollout = rollout();
        let mut rs = replica_set(&rollout, "abc", 3, None);
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
        let seen = view(&rollout, &rs).expect("owned");
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
            view(&rollout, &rs).map(|v| v.available),
            Some(0),
            "status from before the last scale"
        );

        rs.metadata.owner_references = None;
        assert_eq!(view(&rollout, &rs), None);
    }
}
