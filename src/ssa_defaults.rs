//! The defaults server-side apply needs from the client: manifests as people write them,
//! made appliable on every API server weir supports.
//!
//! Server-side apply merges lists by their keys before the API server defaults anything, so
//! a key field that has a default must already be there. Ports are keyed by port and
//! `protocol`; API servers before 1.21 refuse an apply whose port omits `protocol`
//! ("associative list with keys has an element that omits key field"), newer ones accept it.
//! Filling in `TCP`, the API server's own default, changes nothing on either. Flux's
//! kustomize-controller fills in the same defaults for the same reason.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The API server's default for a port's protocol.
const TCP: &str = "TCP";

/// Where a kind keeps its pod spec, if it has one.
fn pod_spec_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(&["spec", "template", "spec"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

fn at_path<'v>(value: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    path.iter()
        .try_fold(value, |value, key| value.as_object_mut()?.get_mut(*key))
}

/// Gives every port in `ports` (a list of objects) the default protocol it lacks.
fn fill_protocols(ports: Option<&mut Value>) {
    let Some(Value::Array(ports)) = ports else {
        return;
    };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        if port.get("protocol").is_none_or(Value::is_null) {
            port.insert("protocol".into(), json!(TCP));
        }
    }
}

fn fill_pod_spec(spec: &mut Value) {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut() {
            fill_protocols(container.get_mut("ports"));
        }
    }
}

/// `stringData` is write-only: the API server folds it into `data`, so an apply of it never
/// matches what it reads back, and a key removed from it is never removed from `data`.
/// Folded here, `data` is what weir owns. A value that is not a string is left for the API
/// server to refuse.
fn fold_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(strings)) = secret.get("stringData") else {
        return;
    };
    if strings.values().any(|v| !v.is_string()) {
        return;
    }
    let encoded: Vec<(String, Value)> = strings
        .iter()
        .map(|(key, value)| {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            (key.clone(), json!(encoded))
        })
        .collect();
    secret.remove("stringData");
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        data.extend(encoded);
    }
}

/// Fills in what server-side apply needs of `object` (a manifest as written) and drops
/// what a manifest must not send: a null `creationTimestamp` (what `kubectl create
/// --dry-run -o yaml` prints) and the `status` of a native kind, which apply ignores and
/// which would otherwise read as drift. Custom resources keep theirs: without a status
/// subresource it is part of the object.
pub fn fill(object: &mut Value) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if let Some(path) = pod_spec_path(&api_version, &kind)
        && let Some(spec) = at_path(object, path)
    {
        fill_pod_spec(spec);
    }
    let native = !api_version.contains('.') || api_version.contains(".k8s.io/");
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => {
            if let Some(spec) = fields.get_mut("spec") {
                fill_protocols(spec.get_mut("ports"));
            }
        }
        ("v1", "Secret") => fold_string_data(fields),
        _ => {}
    }
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata")
        && metadata
            .get("creationTimestamp")
            .is_some_and(Value::is_null)
    {
        metadata.remove("creationTimestamp");
    }
    if native && kind != "CustomResourceDefinition" {
        fields.remove("status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(mut object: Value) -> Value {
        fill(&mut object);
        object
    }

    fn pod_spec() -> Value {
        json!({
            "containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [{"name": "init", "image": "init:1", "ports": [{"containerPort": 9000}]}],
        })
    }

    fn filled_pod_spec() -> Value {
        json!({
            "containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [{"name": "init", "image": "init:1", "ports": [{"containerPort": 9000, "protocol": "TCP"}]}],
        })
    }

    #[test]
    fn every_workload_kind_gets_its_ports_protocol_and_keeps_a_given_one() {
        let cases: [(&str, &str, &[&str]); 9] = [
            ("v1", "Pod", &["spec"]),
            ("v1", "PodTemplate", &["template", "spec"]),
            ("v1", "ReplicationController", &["spec", "template", "spec"]),
            ("apps/v1", "Deployment", &["spec", "template", "spec"]),
            ("apps/v1", "StatefulSet", &["spec", "template", "spec"]),
            ("apps/v1", "DaemonSet", &["spec", "template", "spec"]),
            ("apps/v1", "ReplicaSet", &["spec", "template", "spec"]),
            ("batch/v1", "Job", &["spec", "template", "spec"]),
            (
                "batch/v1beta1",
                "CronJob",
                &["spec", "jobTemplate", "spec", "template", "spec"],
            ),
        ];
        for (api_version, kind, path) in cases {
            let nest = |spec: Value| {
                path.iter()
                    .rev()
                    .fold(spec, |inner, key| json!({*key: inner}))
            };
            let mut object = nest(pod_spec());
            object["apiVersion"] = json!(api_version);
            object["kind"] = json!(kind);
            object["metadata"] = json!({"name": "x"});
            let mut expected = nest(filled_pod_spec());
            expected["apiVersion"] = json!(api_version);
            expected["kind"] = json!(kind);
            expected["metadata"] = json!({"name": "x"});
            assert_eq!(filled(object), expected, "{api_version} {kind}");
        }
    }

    #[test]
    fn service_ports_get_tcp_and_other_kinds_with_ports_are_left_alone() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(
            filled(service)["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
        );
        // A Rollout's template is hashed into its ReplicaSets' names: weir never rewrites it.
        let rollout = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"template": {"spec": pod_spec()}}});
        assert_eq!(filled(rollout.clone()), rollout);
        // A custom Service kind is not core's.
        let other = json!({"apiVersion": "example.com/v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}});
        assert_eq!(filled(other.clone()), other);
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"kept": "a2VwdA=="}, "stringData": {"user": "admin", "kept": "new"}});
        assert_eq!(
            filled(secret),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"kept": "bmV3", "user": "YWRtaW4="}})
        );
        let only_strings = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": null, "stringData": {"a": ""}});
        assert_eq!(filled(only_strings)["data"], json!({"a": ""}));
        // Not a string: the API server says why, not weir.
        let odd = json!({"apiVersion": "v1", "kind": "Secret", "stringData": {"n": 1}});
        assert_eq!(filled(odd.clone()), odd);
    }

    #[test]
    fn a_null_creation_timestamp_and_a_native_status_are_dropped() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null}, "spec": {}, "status": {}});
        assert_eq!(
            filled(deployment),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}})
        );
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}, "status": {}});
        assert_eq!(filled(role)["status"], Value::Null);
        for kept in [
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "status": {"x": 1}}),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"x": 1}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}}),
        ] {
            assert_eq!(filled(kept.clone()), kept);
        }
    }

    #[test]
    fn odd_shapes_are_left_for_the_api_server_to_refuse() {
        for odd in [
            json!(null),
            json!([]),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": "text"}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": {"a": 1}}}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [1, {"ports": "80"}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [80]}}),
        ] {
            assert_eq!(filled(odd.clone()), odd);
        }
    }

    fn json_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("spec".to_owned()),
                        Just("template".to_owned()),
                        Just("containers".to_owned()),
                        Just("ports".to_owned()),
                        Just("protocol".to_owned()),
                        Just("stringData".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Filling is idempotent, never panics, and never removes or changes a field a
        /// manifest gave, other than those it exists to fold or drop.
        #[test]
        fn filling_twice_is_filling_once(
            kind in prop_oneof![Just("Pod"), Just("Service"), Just("Secret"), Just("Deployment"), Just("Widget")],
            api_version in prop_oneof![Just("v1"), Just("apps/v1"), Just("example.com/v1")],
            spec in json_tree(),
        ) {
            let object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": spec});
            let once = filled(object.clone());
            prop_assert_eq!(filled(once.clone()), once.clone());
            prop_assert_eq!(&once["metadata"], &object["metadata"]);
            if pod_spec_path(api_version, kind).is_none() && kind != "Service" {
                prop_assert_eq!(&once["spec"], &object["spec"]);
            }
        }
    }
}
