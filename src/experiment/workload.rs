//! An Experiment's ReplicaSets, built from its templates. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::contract::{EXPERIMENT_LABEL, EXPERIMENT_TEMPLATE_LABEL, POD_TEMPLATE_HASH_LABEL};
use crate::api::experiment::{Experiment, ExperimentTemplate};
use crate::template_hash;

/// `<experiment>-<template>`.
pub fn replica_set_name(experiment: &str, template: &str) -> String {
    format!("{experiment}-{template}")
}

/// The template's ReplicaSet and the hash its pods carry. The experiment's own labels are in
/// the pod template before it is hashed: a copy of the stable version gets a hash apart
/// from the stable ReplicaSet's, so queries by hash tell the two apart.
pub fn replica_set(experiment: &Experiment, template: &ExperimentTemplate) -> (ReplicaSet, String) {
    let name = experiment.name_any();
    let own = BTreeMap::from([
        (EXPERIMENT_LABEL.to_owned(), name.clone()),
        (EXPERIMENT_TEMPLATE_LABEL.to_owned(), template.name.clone()),
    ]);
    let mut pods = template.template.clone();
    pods.metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(own.clone());
    let hash = template_hash::of(&pods);
    let mut labels = own;
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.clone());
    if let Some(pod_labels) = pods.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        pod_labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.clone());
    }
    let mut selector = template.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.clone());
    let replica_set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(replica_set_name(&name, &template.name)),
            namespace: experiment.namespace(),
            labels: Some(labels),
            owner_references: experiment.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(template.replicas.unwrap_or(1).max(0)),
            min_ready_seconds: template.min_ready_seconds,
            selector,
            template: Some(pods),
        }),
        status: None,
    };
    (replica_set, hash)
}

/// The name of a template's Service: its own, or the ReplicaSet's.
pub fn service_name(experiment: &str, template: &ExperimentTemplate) -> Option<String> {
    let service = template.service.as_ref()?;
    Some(
        service
            .name
            .clone()
            .unwrap_or_else(|| replica_set_name(experiment, &template.name)),
    )
}

/// The template's Service: one port per container port, selecting the template's pods by
/// the labels weir gave them (its experiment, its template, its hash); None without
/// `service` or without a port (validation refuses that first).
pub fn service(experiment: &Experiment, template: &ExperimentTemplate) -> Option<Service> {
    let name = experiment.name_any();
    let service_name = service_name(&name, template)?;
    let (_, hash) = replica_set(experiment, template);
    let containers = template.template.spec.iter().flat_map(|s| &s.containers);
    let mut ports: Vec<ServicePort> = Vec::new();
    for port in containers.flat_map(|c| c.ports.iter().flatten()) {
        // A port twice (two containers, or TCP written out and left out) is one port.
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
        let seen = ports.iter().any(|p| {
            p.port == port.container_port && p.protocol.as_deref() == Some(protocol.as_str())
        });
        if !seen {
            ports.push(ServicePort {
                name: port.name.clone(),
                port: port.container_port,
                protocol: Some(protocol),
                target_port: Some(IntOrString::Int(port.container_port)),
                ..ServicePort::default()
            });
        }
    }
    // Several ports each need a name of their own: one without, or with a name taken
    // already, is named after its number.
    if ports.len() > 1 {
        let mut names = std::collections::BTreeSet::new();
        for port in &mut ports {
            let free = port.name.as_ref().is_some_and(|n| names.insert(n.clone()));
            if !free {
                let name = format!(
                    "port-{}-{}",
                    port.port,
                    port.protocol.as_deref().unwrap_or("TCP").to_lowercase()
                );
                names.insert(name.clone());
                port.name = Some(name);
            }
        }
    }
    if ports.is_empty() {
        return None;
    }
    let own = BTreeMap::from([
        (EXPERIMENT_LABEL.to_owned(), name),
        (EXPERIMENT_TEMPLATE_LABEL.to_owned(), template.name.clone()),
    ]);
    let mut selector = own.clone();
    selector.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash);
    Some(Service {
        metadata: ObjectMeta {
            name: Some(service_name),
            namespace: experiment.namespace(),
            labels: Some(own),
            owner_references: experiment.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment() -> Experiment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "web-5c8c654d5c-2-1", "namespace": "shop", "uid": "u-1"},
            "spec": {"templates": [
                {"name": "baseline", "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}}}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_template_becomes_its_own_replica_set_with_a_hash_apart_from_the_stables() {
        let experiment = experiment();
        let template = &experiment.spec.templates[0];
        let (replica_set, hash) = replica_set(&experiment, template);
        assert_eq!(
            replica_set.metadata.name.as_deref(),
            Some("web-5c8c654d5c-2-1-baseline")
        );
        // The stable version's own ReplicaSet hashes the template as written.
        assert_ne!(hash, template_hash::of(&template.template));
        let spec = replica_set.spec.unwrap_or_default();
        assert_eq!(spec.replicas, Some(1), "Argo's default");
        let selector = spec.selector.match_labels.unwrap_or_default();
        assert_eq!(selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(selector.get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
        let pods = spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for key in [
            POD_TEMPLATE_HASH_LABEL,
            EXPERIMENT_LABEL,
            EXPERIMENT_TEMPLATE_LABEL,
            "app",
        ] {
            assert!(pods.contains_key(key), "pods carry {key}: {pods:?}");
        }
        let owner = replica_set.metadata.owner_references.unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!(owner[0].kind, "Experiment");
        assert_eq!(owner[0].controller, Some(true));
        // The same template in another experiment: another hash.
        let mut other = experiment.clone();
        other.metadata.name = Some("web-5c8c654d5c-4-1".into());
        assert_ne!(replica_set_hash(&other), hash);
    }

    #[test]
    fn a_templates_service_selects_its_pods_alone_on_its_containers_ports() {
        let experiment = experiment();
        let mut template = experiment.spec.templates[0].clone();
        assert_eq!(service(&experiment, &template), None, "no service asked");
        template.service = Some(Default::default());
        assert_eq!(service(&experiment, &template), None, "no port to serve");
        if let Some(spec) = template.template.spec.as_mut() {
            spec.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]);
        }
        let built = service(&experiment, &template).unwrap_or_else(|| panic!("a Service"));
        assert_eq!(
            built.metadata.name.as_deref(),
            Some("web-5c8c654d5c-2-1-baseline"),
            "named as its ReplicaSet by default"
        );
        let spec = built.spec.unwrap_or_default();
        let ports = spec.ports.unwrap_or_default();
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (ports[0].port, ports[0].name.as_deref()),
            (8080, Some("http"))
        );
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(8080)));
        let (replica_set, hash) = replica_set(&experiment, &template);
        let selector = spec.selector.unwrap_or_default();
        assert_eq!(selector.get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
        let pods = replica_set
            .spec
            .and_then(|s| s.template)
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (key, value) in &selector {
            assert_eq!(pods.get(key), Some(value), "the pods carry {key}");
        }
        // Ports of several containers: each once, each named.
        let mut sidecar = template.clone();
        if let Some(spec) = sidecar.template.spec.as_mut() {
            let mut second = spec.containers[0].clone();
            second.name = "sidecar".into();
            second.ports = Some(vec![
                k8s_openapi::api::core::v1::ContainerPort {
                    container_port: 8080,
                    ..Default::default()
                },
                k8s_openapi::api::core::v1::ContainerPort {
                    container_port: 9090,
                    ..Default::default()
                },
            ]);
            spec.containers.push(second);
        }
        let ports: Vec<(Option<String>, i32)> = service(&experiment, &sidecar)
            .and_then(|s| s.spec)
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("http".into()), 8080),
                (Some("port-9090-tcp".into()), 9090)
            ]
        );
        let mut named = template.clone();
        named.service = Some(crate::api::experiment::TemplateService {
            name: Some("baseline-svc".into()),
        });
        assert_eq!(service_name("e", &named).as_deref(), Some("baseline-svc"));
    }

    fn replica_set_hash(experiment: &Experiment) -> String {
        replica_set(experiment, &experiment.spec.templates[0]).1
    }
}
