//! The pod-template hash that names a Rollout's ReplicaSets (`<rollout>-<hash>`), pins its
//! Services and tells an Experiment's ReplicaSets apart (label `rollouts-pod-template-hash`,
//! Argo Rollouts' name, so dashboards and queries written for Argo keep working). Below both
//! `rollout` and `experiment`, which use it alike.

use std::hash::Hasher;

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// Characters without vowels (no accidental words) that are valid in names and label values,
/// as Kubernetes uses for its own hashes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a over the template's canonical JSON (k8s-openapi serializes maps in key order), each
/// decimal digit of the 32-bit result mapped into `ALPHABET`: at most 10 characters.
pub fn of(template: &PodTemplateSpec) -> String {
    // Serializing a k8s-openapi type into memory cannot fail: no maps with non-string keys.
    let canonical = serde_json::to_vec(template).unwrap_or_default();
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(&canonical);
    let digest = hasher.finish() as u32;
    digest
        .to_string()
        .bytes()
        .map(|digit| ALPHABET[digit as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }))
        .expect("template")
    }

    #[test]
    fn equal_templates_hash_equal_and_different_ones_differ() {
        assert_eq!(of(&template("web:1")), of(&template("web:1")));
        assert_ne!(of(&template("web:1")), of(&template("web:2")));
    }

    #[test]
    fn the_hash_is_a_valid_label_value_and_stable_across_releases() {
        let hash = of(&template("web:1"));
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| ALPHABET.contains(&b)), "{hash}");
        // Pinned: changing the hash would make every running Rollout start a new canary.
        assert_eq!(hash, of(&template("web:1")));
        assert_eq!(hash, PINNED);
    }

    /// The hash of `template("web:1")` in this release.
    const PINNED: &str = "667dfcbb97";
}
