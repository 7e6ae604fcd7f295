//! `spec.dependsOn`: a GitSync applies a new revision only once every GitSync it depends on
//! (in its own namespace) is Ready at a revision that has proven good, so infrastructure
//! (CRDs, namespaces, a gateway) lands before the apps that need it. Pure: decided from the
//! controller's cache of GitSyncs.

use std::collections::{BTreeMap, BTreeSet};

use super::status::{DEPENDENCY_NOT_READY, READY};
use crate::api::gitsync::{GitSync, GitSyncSpec, GitSyncStatus};

/// What the dependency check needs of one GitSync.
#[derive(Clone, Debug, PartialEq)]
pub struct Node<'a> {
    pub name: &'a str,
    pub spec: &'a GitSyncSpec,
    pub status: Option<&'a GitSyncStatus>,
    pub generation: Option<i64>,
}

impl<'a> Node<'a> {
    pub fn of(sync: &'a GitSync) -> Node<'a> {
        Node {
            name: sync.metadata.name.as_deref().unwrap_or_default(),
            spec: &sync.spec,
            status: sync.status.as_ref(),
            generation: sync.metadata.generation,
        }
    }
}

/// A dependency in another namespace: refused, since a tenant must not wait on, or learn
/// the state of, another tenant's GitSyncs.
pub fn refuse_other_namespaces(spec: &GitSyncSpec, namespace: &str) -> Option<String> {
    spec.depends_on.iter().enumerate().find_map(|(i, d)| {
        d.namespace
            .as_deref()
            .filter(|n| !n.is_empty() && *n != namespace)
            .map(|other| {
                format!(
                    "spec.dependsOn[{i}].namespace: {other:?} is another namespace; a GitSync may depend only on GitSyncs in its own ({namespace:?})"
                )
            })
    })
}

/// The dependency cycle `name` is on, as `a -> b -> a`, when there is one. `nodes` are the
/// GitSyncs of one namespace.
pub fn cycle(name: &str, nodes: &[Node<'_>]) -> Option<String> {
    let edges: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|n| {
            let targets = n.spec.depends_on.iter().map(|d| d.name.as_str()).collect();
            (n.name, targets)
        })
        .collect();
    // Depth-first from `name` with an explicit stack (a chain of thousands of GitSyncs must
    // not overflow the thread's stack), keeping the path: a path that comes back to `name`
    // is the cycle. Every GitSync is entered at most once, so this is linear in the edges.
    let mut seen = BTreeSet::new();
    // Each frame: a GitSync on the path, and how many of its edges were followed.
    let mut stack: Vec<(&str, usize)> = vec![(name, 0)];
    while let Some((at, next)) = stack.last().copied() {
        let targets = edges.get(at).map(Vec::as_slice).unwrap_or_default();
        let Some(&target) = targets.get(next) else {
            stack.pop();
            continue;
        };
        if let Some(frame) = stack.last_mut() {
            frame.1 += 1;
        }
        if target == name {
            let mut path: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
            path.push(name);
            return Some(path.join(" -> "));
        }
        if seen.insert(target) {
            stack.push((target, 0));
        }
    }
    None
}

/// Why each dependency of `sync` is not ready yet; empty when every one is. Ready means:
/// it exists, has seen its current spec, is Ready, and its applied revision is its last
/// good one (its Rollouts and workloads proved it), so what depends on it finds it working.
pub fn waiting_for(sync: &Node<'_>, nodes: &[Node<'_>]) -> Vec<String> {
    sync.spec
        .depends_on
        .iter()
        .filter_map(|dependency| {
            let name = dependency.name.as_str();
            let Some(node) = nodes.iter().find(|n| n.name == name) else {
                return Some(format!("GitSync {name} does not exist"));
            };
            not_ready(node).map(|why| format!("GitSync {name} {why}"))
        })
        .collect()
}

/// The GitSyncs waiting for `changed` (same namespace, named in their `dependsOn`, Ready
/// False for that reason): a change of `changed` may be what they wait for.
pub fn waiting_on<'a>(
    all: &'a [std::sync::Arc<GitSync>],
    changed: &'a GitSync,
) -> impl Iterator<Item = &'a GitSync> + 'a {
    all.iter().map(AsRef::as_ref).filter(move |sync| {
        sync.metadata.namespace == changed.metadata.namespace
            && changed
                .metadata
                .name
                .as_ref()
                .is_some_and(|name| sync.spec.depends_on.iter().any(|d| &d.name == name))
            && sync.status.as_ref().is_some_and(|status| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == READY && c.reason == DEPENDENCY_NOT_READY)
            })
    })
}

fn not_ready(node: &Node<'_>) -> Option<String> {
    let Some(status) = node.status else {
        return Some("has not synced yet".into());
    };
    if node.generation.is_some() && status.observed_generation != node.generation {
        return Some("has not synced its current spec yet".into());
    }
    let ready = status.conditions.iter().find(|c| c.type_ == READY);
    match ready {
        Some(condition) if condition.status == "True" => {}
        Some(condition) => {
            return Some(format!(
                "is not Ready ({}: {})",
                condition.reason, condition.message
            ));
        }
        None => return Some("is not Ready yet".into()),
    }
    match (&status.last_applied_revision, &status.last_good_revision) {
        (Some(applied), Some(good)) if applied == good => None,
        (Some(applied), _) => Some(format!(
            "has not proven revision {} good yet",
            super::status::short(applied)
        )),
        (None, _) => Some("has applied nothing yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use proptest::prelude::*;

    fn spec(depends_on: &[&str]) -> GitSyncSpec {
        let depends_on: Vec<serde_json::Value> = depends_on
            .iter()
            .map(|name| serde_json::json!({"name": name}))
            .collect();
        serde_json::from_value(serde_json::json!({"url": "https://git.example/repo",
            "ref": {"branch": "main"}, "dependsOn": depends_on}))
        .unwrap_or_else(|e| panic!("a GitSync spec: {e}"))
    }

    fn status(ready: &str, applied: Option<&str>, good: Option<&str>) -> GitSyncStatus {
        GitSyncStatus {
            last_applied_revision: applied.map(str::to_owned),
            last_good_revision: good.map(str::to_owned),
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: READY.into(),
                status: ready.into(),
                reason: "Applied".into(),
                message: "applied revision aaa".into(),
                last_transition_time: crate::time::to_k8s(
                    Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
                ),
                observed_generation: Some(1),
            }],
            ..GitSyncStatus::default()
        }
    }

    #[test]
    fn an_app_waits_for_each_dependency_until_it_is_ready_at_a_good_revision() {
        let (app, infra, crds) = (spec(&["infra", "crds"]), spec(&[]), spec(&[]));
        let node = |name, spec, status, generation| Node {
            name,
            spec,
            status,
            generation,
        };
        let ready = status("True", Some("aaa"), Some("aaa"));
        let unproven = status("True", Some("bbb"), Some("aaa"));
        let failing = status("False", Some("aaa"), Some("aaa"));
        let me = node("app", &app, None, Some(1));
        let cases: Vec<(Vec<Node>, Vec<&str>)> = vec![
            (
                vec![],
                vec![
                    "GitSync infra does not exist",
                    "GitSync crds does not exist",
                ],
            ),
            (
                vec![
                    node("infra", &infra, None, Some(1)),
                    node("crds", &crds, Some(&ready), Some(1)),
                ],
                vec!["GitSync infra has not synced yet"],
            ),
            (
                vec![
                    node("infra", &infra, Some(&ready), Some(2)),
                    node("crds", &crds, Some(&ready), Some(1)),
                ],
                vec!["GitSync infra has not synced its current spec yet"],
            ),
            (
                vec![
                    node("infra", &infra, Some(&failing), Some(1)),
                    node("crds", &crds, Some(&unproven), Some(1)),
                ],
                vec![
                    "GitSync infra is not Ready (Applied: applied revision aaa)",
                    "GitSync crds has not proven revision bbb good yet",
                ],
            ),
            (
                vec![
                    node("infra", &infra, Some(&ready), Some(1)),
                    node("crds", &crds, Some(&ready), None),
                ],
                vec![],
            ),
        ];
        for (nodes, expected) in cases {
            assert_eq!(waiting_for(&me, &nodes), expected);
        }
        let nothing = spec(&[]);
        assert!(waiting_for(&node("x", &nothing, None, None), &[]).is_empty());
    }

    #[test]
    fn cycles_are_named_and_a_diamond_is_not_one() {
        let specs = [
            ("a", spec(&["b"])),
            ("b", spec(&["c"])),
            ("c", spec(&["a"])),
            ("d", spec(&["d"])),
            ("e", spec(&["f", "g"])),
            ("f", spec(&["h"])),
            ("g", spec(&["h"])),
            ("h", spec(&["a"])),
        ];
        let nodes: Vec<Node> = specs
            .iter()
            .map(|(name, spec)| Node {
                name,
                spec,
                status: None,
                generation: None,
            })
            .collect();
        assert_eq!(cycle("a", &nodes).as_deref(), Some("a -> b -> c -> a"));
        assert_eq!(cycle("c", &nodes).as_deref(), Some("c -> a -> b -> c"));
        assert_eq!(cycle("d", &nodes).as_deref(), Some("d -> d"));
        // e reaches the cycle a-b-c but is not on it.
        assert_eq!(cycle("e", &nodes), None);
        assert_eq!(cycle("h", &nodes), None);
        assert_eq!(cycle("missing", &nodes), None);
    }

    #[test]
    fn a_long_chain_is_walked_without_recursion() {
        let names: Vec<String> = (0..100_000).map(|i| format!("g{i}")).collect();
        let specs: Vec<GitSyncSpec> = (0..names.len())
            .map(|i| match names.get(i + 1) {
                Some(next) => spec(&[next.as_str()]),
                None => spec(&[]),
            })
            .collect();
        let mut nodes: Vec<Node> = names
            .iter()
            .zip(&specs)
            .map(|(name, spec)| Node {
                name,
                spec,
                status: None,
                generation: None,
            })
            .collect();
        assert_eq!(cycle("g0", &nodes), None);
        // Closing the chain makes it one long cycle.
        let closing = spec(&["g0"]);
        if let Some(last) = nodes.last_mut() {
            last.spec = &closing;
        }
        let found = cycle("g0", &nodes).unwrap_or_default();
        assert!(found.starts_with("g0 -> g1 -> ") && found.ends_with("g99999 -> g0"));
    }

    #[test]
    fn a_dependency_in_another_namespace_is_refused() {
        let mut with_namespace = spec(&["infra", "db"]);
        with_namespace.depends_on[0].namespace = Some("team-a".into());
        assert_eq!(refuse_other_namespaces(&with_namespace, "team-a"), None);
        with_namespace.depends_on[1].namespace = Some("team-b".into());
        let refusal = refuse_other_namespaces(&with_namespace, "team-a").unwrap_or_default();
        assert!(
            refusal.starts_with("spec.dependsOn[1].namespace: \"team-b\""),
            "{refusal}"
        );
    }

    proptest! {
        /// `cycle` finds a cycle exactly when the GitSync can reach itself, and the cycle it
        /// names is a real path of dependencies from it back to it.
        #[test]
        fn a_cycle_is_found_exactly_when_a_gitsync_reaches_itself(
            edges in prop::collection::vec(prop::collection::vec(0usize..6, 0..3), 6),
        ) {
            let names = ["n0", "n1", "n2", "n3", "n4", "n5"];
            let specs: Vec<GitSyncSpec> = edges
                .iter()
                .map(|to| spec(&to.iter().map(|i| names[*i]).collect::<Vec<_>>()))
                .collect();
            let nodes: Vec<Node> = names
                .iter()
                .zip(&specs)
                .map(|(name, spec)| Node { name, spec, status: None, generation: None })
                .collect();
            for start in 0..names.len() {
                // Reachability by brute force: six rounds of following every edge.
                let mut reached: BTreeSet<usize> = edges[start].iter().copied().collect();
                for _ in 0..names.len() {
                    let more: Vec<usize> = reached.iter().flat_map(|r| edges[*r].clone()).collect();
                    reached.extend(more);
                }
                let found = cycle(names[start], &nodes);
                prop_assert_eq!(found.is_some(), reached.contains(&start));
                if let Some(found) = found {
                    let hops: Vec<&str> = found.split(" -> ").collect();
                    prop_assert_eq!(hops.first(), Some(&names[start]));
                    prop_assert_eq!(hops.last(), Some(&names[start]));
                    for pair in hops.windows(2) {
                        let from = names.iter().position(|n| *n == pair[0]).unwrap_or(0);
                        prop_assert!(edges[from].iter().any(|to| names[*to] == pair[1]));
                    }
                }
            }
        }
    }
}
