//! Whether applying an object would change what the API server holds, decided from the
//! server-side dry run of that apply (what the object would become) against the live object;
//! and that change as a readable diff, Secret values masked.
//!
//! An apply that would change nothing is not sent, so an unchanged repository costs reads
//! only. The dry run, not the manifest, is compared: it carries the API server's defaults,
//! admission and field ownership, which a manifest does not.

use crate::api::contract::{GIT_REVISION_ANNOTATION, LAST_APPLIED_ANNOTATION};
use serde_json::{Map, Value, json};
use similar::TextDiff;

/// The object without what others change between the dry run and the read of the live
/// object, which an apply would not change anyway: its status and the writes of
/// controllers (`Update` entries of managedFields, and any entry for a subresource), which
/// version it is at, its generation (which moves only with a change already seen
/// elsewhere) and when each field manager last applied. What remains is the object's own
/// fields and who applied them.
fn without_write_marks(object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(fields) = &mut object {
        fields.remove("status");
    }
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove("resourceVersion");
        metadata.remove("generation");
        if let Some(Value::Array(managers)) = metadata.get_mut("managedFields") {
            managers.retain(|m| {
                m["operation"] == "Apply" && m.get("subresource").is_none_or(Value::is_null)
            });
            for manager in managers.iter_mut().filter_map(Value::as_object_mut) {
                manager.remove("time");
            }
        }
    }
    known_dry_run_faults(&mut object);
    object
}

/// API servers before 1.27 answer the dry run of a HorizontalPodAutoscaler with its first
/// metric repeated and an empty one added (kubernetes/kubernetes#118293); read as drift, it
/// would be applied on every interval. Flux undoes the same fault.
fn known_dry_run_faults(object: &mut Value) {
    let is_hpa = object["kind"] == "HorizontalPodAutoscaler"
        && object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("autoscaling/"));
    if !is_hpa {
        return;
    }
    let Some(Value::Array(metrics)) = object.pointer_mut("/spec/metrics") else {
        return;
    };
    let mut kept: Vec<Value> = Vec::with_capacity(metrics.len());
    for metric in metrics.drain(..) {
        let typed = metric["type"].as_str().is_some_and(|t| !t.is_empty());
        if typed && !kept.contains(&metric) {
            kept.push(metric);
        }
    }
    *metrics = kept;
}

/// Whether the API server would change `live` by the apply whose dry run returned `after`:
/// in its fields, or in who owns them (an apply that takes a field back from another
/// manager must be sent).
pub fn drifted(live: &Value, after: &Value) -> bool {
    without_write_marks(live) != without_write_marks(after)
}

/// What a person reads in a diff: the object without the API server's bookkeeping, and
/// without weir's revision stamp, which moves with every revision whatever it changes.
fn readable(object: &Value) -> Value {
    let mut object = without_write_marks(object);
    if let Value::Object(fields) = &mut object {
        fields.remove("status");
        if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
            for key in ["managedFields", "uid", "creationTimestamp", "selfLink"] {
                metadata.remove(key);
            }
            if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
                annotations.remove(GIT_REVISION_ANNOTATION);
                annotations.remove(LAST_APPLIED_ANNOTATION);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
        }
    }
    object
}

/// The marks `kubectl diff` puts in place of a Secret's values.
const MASK: &str = "***";
const MASK_BEFORE: &str = "*** (before)";
const MASK_AFTER: &str = "*** (after)";

/// Which side of a diff an object is on.
#[derive(Clone, Copy)]
enum Side {
    Before,
    After,
}

/// A Secret's values replaced by marks, as `kubectl diff` does: a changed value differs
/// between the sides, an unchanged one does not, so a diff shows which keys change and
/// never what they hold. `other` is the Secret on the other side.
fn masked(object: &Value, other: Option<&Value>, side: Side) -> Value {
    let mut object = object.clone();
    let is_secret = object["kind"] == "Secret" && object["apiVersion"] == "v1";
    if !is_secret {
        return object;
    }
    for field in ["data", "stringData"] {
        let Some(Value::Object(values)) = object.get_mut(field) else {
            continue;
        };
        let theirs = other.and_then(|o| o.get(field)).and_then(Value::as_object);
        let marks: Map<String, Value> = values
            .iter()
            .map(|(key, value)| {
                let mark = match (theirs.and_then(|t| t.get(key)), side) {
                    (Some(theirs), Side::Before) if theirs != value => MASK_BEFORE,
                    (Some(theirs), Side::After) if theirs != value => MASK_AFTER,
                    _ => MASK,
                };
                (key.clone(), json!(mark))
            })
            .collect();
        *values = marks;
    }
    object
}

fn yaml(object: &Value) -> String {
    // A Value always serializes; an empty text only shortens the diff.
    serde_yaml_ng::to_string(object).unwrap_or_default()
}

/// What applying would do to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// It does not exist yet.
    Create,
    /// It exists and would change: the unified diff, Secret values masked.
    Update(String),
    /// It exists and would change in nothing a person reads (weir's revision stamp or field
    /// ownership only).
    Restamp,
    Unchanged,
}

/// The change the apply whose dry run returned `after` would make to `live` (None: the
/// object does not exist), `title` naming the object in the diff's header.
pub fn change(title: &str, live: Option<&Value>, after: &Value) -> Change {
    let Some(live) = live else {
        return Change::Create;
    };
    if !drifted(live, after) {
        return Change::Unchanged;
    }
    let (before, after) = (readable(live), readable(after));
    if before == after {
        return Change::Restamp;
    }
    let (before_text, after_text) = (
        yaml(&masked(&before, Some(&after), Side::Before)),
        yaml(&masked(&after, Some(&before), Side::After)),
    );
    let diff = TextDiff::from_lines(&before_text, &after_text)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {title}"), &format!("git {title}"))
        .to_string();
    Change::Update(diff)
}

/// An object about to be created, as a person reads it (Secret values masked).
pub fn created(after: &Value) -> String {
    yaml(&masked(&readable(after), None, Side::After))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "41", "generation": 3,
                "creationTimestamp": "2026-12-01T00:00:00Z",
                "annotations": {GIT_REVISION_ANNOTATION: "aaaa", "weir.dev/gitsync": "shop/app"},
                "managedFields": [{"manager": "weir-sync", "operation": "Apply", "time": "2026-12-01T00:00:00Z", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
            "status": {"availableReplicas": 2}
        })
    }

    #[test]
    fn a_dry_run_that_only_restamps_write_times_is_no_drift() {
        let mut after = live();
        after["metadata"]["managedFields"][0]["time"] = json!("2026-12-04T10:00:00Z");
        after["metadata"]["resourceVersion"] = json!("42");
        assert!(!drifted(&live(), &after));
        assert_eq!(
            change("Deployment shop/web", Some(&live()), &after),
            Change::Unchanged
        );
    }

    #[test]
    fn what_controllers_write_meanwhile_is_no_drift() {
        let mut after = live();
        after["status"] = json!({"availableReplicas": 1, "conditions": []});
        after["metadata"]["managedFields"] = json!([
            live()["metadata"]["managedFields"][0].clone(),
            {"manager": "kube-controller-manager", "operation": "Update", "time": "2026-12-04T10:00:00Z",
                "fieldsV1": {"f:status": {"f:availableReplicas": {}}}},
            {"manager": "some-operator", "operation": "Apply", "subresource": "status",
                "fieldsV1": {"f:status": {}}}
        ]);
        assert!(!drifted(&live(), &after));
        // Someone else applying a field of the object is a change of owner.
        after["metadata"]["managedFields"] = json!([
            live()["metadata"]["managedFields"][0].clone(),
            {"manager": "someone", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]);
        assert!(drifted(&live(), &after));
    }

    #[test]
    fn a_changed_field_a_new_owner_or_a_new_stamp_is_drift() {
        let mut image = live();
        image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        let mut owner = live();
        owner["metadata"]["managedFields"][0]["fieldsV1"] = json!({"f:spec": {"f:replicas": {}}});
        let mut stamp = live();
        stamp["metadata"]["annotations"][GIT_REVISION_ANNOTATION] = json!("bbbb");
        for after in [&image, &owner, &stamp] {
            assert!(drifted(&live(), after));
        }
        assert_eq!(change("x", Some(&live()), &owner), Change::Restamp);
        assert_eq!(change("x", Some(&live()), &stamp), Change::Restamp);
        let Change::Update(diff) = change("Deployment shop/web", Some(&live()), &image) else {
            panic!("an image change is an update");
        };
        assert!(diff.contains("\n-      - image: web:1\n"), "{diff}");
        assert!(diff.contains("\n+      - image: web:2\n"), "{diff}");
        assert!(diff.contains("git Deployment shop/web"), "{diff}");
        assert!(
            !diff.contains("resourceVersion") && !diff.contains("managedFields"),
            "{diff}"
        );
        assert_eq!(change("x", None, &image), Change::Create);
    }

    #[test]
    fn secret_values_never_reach_a_diff() {
        let secret = |data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "data": data});
        let live = secret(json!({"user": "YWRtaW4=", "password": "aHVudGVyMg==", "gone": "eA=="}));
        let after =
            secret(json!({"user": "YWRtaW4=", "password": "czNjcjN0", "token": "dG9rZW4="}));
        let Change::Update(diff) = change("Secret shop/db", Some(&live), &after) else {
            panic!("a changed password is an update");
        };
        for value in ["YWRtaW4=", "aHVudGVyMg==", "czNjcjN0", "dG9rZW4=", "eA=="] {
            assert!(!diff.contains(value), "{value} in {diff}");
        }
        assert!(diff.contains("\n-  password: '*** (before)'\n"), "{diff}");
        assert!(diff.contains("\n+  password: '*** (after)'\n"), "{diff}");
        assert!(diff.contains("\n+  token: '***'\n"), "{diff}");
        assert!(diff.contains("\n-  gone: '***'\n"), "{diff}");
        assert!(
            diff.contains("\n   user: '***'\n"),
            "unchanged: context only: {diff}"
        );
        let shown = created(&after);
        assert!(
            !shown.contains("czNjcjN0") && shown.contains("password"),
            "{shown}"
        );
        // Another kind's `data` is not secret.
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        assert!(created(&config).contains("a: b"));
    }

    #[test]
    fn an_hpa_dry_run_with_its_first_metric_repeated_is_no_drift() {
        let metric = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}});
        let hpa = |metrics: Value| json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"}, "spec": {"metrics": metrics}});
        let live = hpa(json!([metric.clone()]));
        let answered = hpa(json!([metric.clone(), metric.clone(), {"type": ""}]));
        assert!(!drifted(&live, &answered));
        let changed = hpa(json!([metric, {"type": "Pods", "pods": {}}]));
        assert!(drifted(&live, &changed));
    }

    fn json_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z0-9=]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// An object never drifts from itself, and a Secret's diff never shows any of its
        /// values, whatever they are.
        #[test]
        fn no_drift_from_itself_and_no_secret_value_shown(spec in json_tree(), values in prop::collection::btree_map("[a-z]{1,4}", "[A-Za-z0-9+/]{8,12}", 1..4), other in prop::collection::btree_map("[a-z]{1,4}", "[A-Za-z0-9+/]{8,12}", 0..4)) {
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "spec": spec});
            prop_assert!(!drifted(&object, &object));
            prop_assert_eq!(change("x", Some(&object), &object), Change::Unchanged);
            let secret = |data: &std::collections::BTreeMap<String, String>| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data});
            let text = match change("s", Some(&secret(&other)), &secret(&values)) {
                Change::Update(diff) => diff,
                _ => created(&secret(&values)),
            };
            for value in values.values().chain(other.values()) {
                prop_assert!(!text.contains(value.as_str()), "{} in {}", value, text);
            }
        }
    }
}
