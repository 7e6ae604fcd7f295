//! What a GitSync owns: stamping rendered objects with their GitSync and revision, the order
//! they are applied in, and which objects to prune. Pure.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::render::Manifest;
use crate::api::contract::{GIT_REVISION_ANNOTATION, GITSYNC_ANNOTATION};
use crate::api::gitsync::InventoryEntry;

/// Namespaces first (everything else may live in one), then CRDs (custom objects need
/// them), then the rest; within a rank, Git's order.
fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

pub fn apply_order(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| rank(m.kind()));
}

/// The object as weir applies it: owner and revision annotations added, and the GitSync's
/// namespace filled in for a namespaced object that names none.
pub fn stamp(
    manifest: &Manifest,
    owner: &str,
    revision: &str,
    default_namespace: Option<&str>,
) -> Value {
    let mut object = manifest.object.clone();
    let metadata = &mut object["metadata"];
    // An empty namespace means "not given" to the API server too.
    let unset = metadata["namespace"].as_str().is_none_or(str::is_empty);
    if let (Some(namespace), true) = (default_namespace, unset) {
        metadata["namespace"] = json!(namespace);
    }
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][GITSYNC_ANNOTATION] = json!(owner);
    metadata["annotations"][GIT_REVISION_ANNOTATION] = json!(revision);
    object
}

pub fn entry(object: &Value) -> InventoryEntry {
    InventoryEntry {
        api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
        kind: object["kind"].as_str().unwrap_or_default().to_owned(),
        namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The API group of an apiVersion: `apps` of `apps/v1`, the empty core group of `v1`.
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// An object's identity across apiVersion changes of its group (`apps/v1beta1` -> `apps/v1`).
fn identity(entry: &InventoryEntry) -> (&str, &str, Option<&str>, &str) {
    (
        group_of(&entry.api_version),
        &entry.kind,
        entry.namespace.as_deref(),
        &entry.name,
    )
}

/// What left Git: in the old inventory, not in the new. Deleted in the reverse of apply
/// order, so a Namespace goes after what was in it.
pub fn to_prune(old: &[InventoryEntry], new: &[InventoryEntry]) -> Vec<InventoryEntry> {
    let kept: BTreeSet<_> = new.iter().map(identity).collect();
    let mut gone: Vec<InventoryEntry> = old
        .iter()
        .filter(|e| !kept.contains(&identity(e)))
        .cloned()
        .collect();
    gone.sort_by_key(|e| std::cmp::Reverse(rank(&e.kind)));
    gone
}

/// The inventory after an attempt: what was applied, plus whatever of the old inventory was
/// not deleted. A partial failure therefore never forgets an object still in the cluster.
pub fn after_attempt(
    old: &[InventoryEntry],
    applied: &[InventoryEntry],
    pruned: &[InventoryEntry],
) -> Vec<InventoryEntry> {
    let applied_ids: BTreeSet<_> = applied.iter().map(identity).collect();
    let pruned_ids: BTreeSet<_> = pruned.iter().map(identity).collect();
    let mut inventory: Vec<InventoryEntry> = old
        .iter()
        .filter(|e| !applied_ids.contains(&identity(e)) && !pruned_ids.contains(&identity(e)))
        .cloned()
        .chain(applied.iter().cloned())
        .collect();
    inventory.sort();
    inventory.dedup();
    inventory
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn manifest(kind: &str, name: &str) -> Manifest {
        Manifest {
            file: "f.yaml".into(),
            index: 0,
            object: json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}),
        }
    }

    fn e(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn namespaces_then_crds_then_the_rest_in_git_order() {
        let mut manifests = vec![
            manifest("Service", "a"),
            manifest("CustomResourceDefinition", "b"),
            manifest("Deployment", "c"),
            manifest("Namespace", "d"),
        ];
        apply_order(&mut manifests);
        let order: Vec<_> = manifests.iter().map(|m| m.name()).collect();
        assert_eq!(order, vec!["d", "b", "a", "c"]);
    }

    #[test]
    fn stamping_adds_owner_revision_and_default_namespace() {
        let mut m = manifest("ConfigMap", "x");
        m.object["metadata"]["annotations"] = json!({"team": "shop"});
        let stamped = stamp(&m, "apps/web", "abc123", Some("apps"));
        assert_eq!(stamped["metadata"]["namespace"], "apps");
        assert_eq!(stamped["metadata"]["annotations"]["team"], "shop");
        assert_eq!(
            stamped["metadata"]["annotations"][GITSYNC_ANNOTATION],
            "apps/web"
        );
        assert_eq!(
            stamped["metadata"]["annotations"][GIT_REVISION_ANNOTATION],
            "abc123"
        );
        let mut elsewhere = manifest("ConfigMap", "y");
        elsewhere.object["metadata"]["namespace"] = json!("other");
        assert_eq!(
            stamp(&elsewhere, "apps/web", "r", Some("apps"))["metadata"]["namespace"],
            "other"
        );
        assert!(
            stamp(&manifest("Namespace", "n"), "apps/web", "r", None)["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn pruning_takes_what_left_git_namespaces_last() {
        let old = vec![
            e("v1", "Namespace", None, "shop"),
            e("v1", "ConfigMap", Some("shop"), "gone"),
            e("apps/v1beta1", "Deployment", Some("shop"), "web"),
            e("v1", "Service", Some("shop"), "web"),
        ];
        let new = vec![
            e("apps/v1", "Deployment", Some("shop"), "web"),
            e("v1", "Service", Some("shop"), "web"),
        ];
        assert_eq!(
            to_prune(&old, &new),
            vec![
                e("v1", "ConfigMap", Some("shop"), "gone"),
                e("v1", "Namespace", None, "shop")
            ],
            "a new apiVersion of the same object is not a prune"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever part of an attempt succeeded, every object that may still exist in the
        /// cluster stays in the inventory, and nothing deleted does.
        #[test]
        fn the_inventory_never_forgets_a_live_object(
            old in prop::collection::btree_set(0u8..12, 0..8),
            applied in prop::collection::btree_set(0u8..12, 0..8),
            pruned_mask in prop::collection::vec(any::<bool>(), 12),
        ) {
            let entry = |n: &u8| e("v1", "ConfigMap", Some("ns"), &format!("c{n}"));
            let old: Vec<_> = old.iter().map(entry).collect();
            let applied: Vec<_> = applied.iter().map(entry).collect();
            let candidates = to_prune(&old, &applied);
            let pruned: Vec<_> = candidates.iter().enumerate().filter(|(i, _)| pruned_mask[*i]).map(|(_, e)| e.clone()).collect();
            let next = after_attempt(&old, &applied, &pruned);
            for live in old.iter().chain(&applied).filter(|e| !pruned.contains(e)) {
                prop_assert!(next.contains(live), "{:?} forgotten", live);
            }
            for gone in &pruned {
                prop_assert!(!next.contains(gone));
            }
        }
    }
}
