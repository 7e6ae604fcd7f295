//! `kubectl weir status`: where a rollout stands, for a CI pipeline waiting on it. Pure.

use kube::ResourceExt;

use crate::api::contract::GIT_REVISION_ANNOTATION;
use crate::api::gitsync::GitSync;
use crate::api::rollout::{Rollout, RolloutPhase};
use crate::gitops::rollback::cause;
use crate::gitops::status::short;

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Healthy at the spec it has now: the wait is over (exit 0).
    Healthy(String),
    /// Aborted or past its progress deadline: the wait is over (exit 1).
    Degraded(String),
    /// Still going, in words.
    Going(String),
}

pub fn standing(rollout: &Rollout) -> Standing {
    let Some(status) = rollout.status.as_ref() else {
        return Standing::Going("waiting for the controller to pick it up".into());
    };
    let message = status.message.clone().unwrap_or_default();
    if status.observed_generation != rollout.metadata.generation {
        return Standing::Going("waiting for the controller to see the latest spec".into());
    }
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    // Counted from 1, as the controller's messages do.
    let step = (status.current_step_index.unwrap_or(0).max(0) + 1).min(steps as i32);
    let weight = status.canary_weight.unwrap_or(0);
    match status.phase {
        Some(RolloutPhase::Healthy) if !status.abort => Standing::Healthy(format!(
            "Healthy on {}",
            status.stable_rs.as_deref().unwrap_or("-")
        )),
        Some(RolloutPhase::Degraded) => Standing::Degraded(format!("Degraded: {message}")),
        // Asked for, not yet carried out: the controller's Degraded comes next.
        _ if status.abort && status.aborted_at.is_none() => {
            Standing::Going("abort requested; waiting for the controller to carry it out".into())
        }
        _ if status.abort => Standing::Degraded(format!("aborted: {message}")),
        phase => Standing::Going(format!(
            "{}: {}{}",
            phase.map_or("Pending".into(), |p| format!("{p:?}")),
            // Blue-green has no steps or weight: one switch, told by the controller's message.
            if rollout.spec.strategy.blue_green.is_some() {
                format!(
                    "blue-green release of {} against {}",
                    status.canary_rs.as_deref().unwrap_or("-"),
                    status.stable_rs.as_deref().unwrap_or("-")
                )
            } else {
                format!("step {step}/{steps}, canary weight {weight}%")
            },
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        )),
    }
}

/// Whether `full` is the revision `asked` names: the whole SHA, or a prefix of 7 or more.
fn names(full: &str, asked: &str) -> bool {
    full == asked || (asked.len() >= 7 && full.starts_with(asked))
}

/// Where a rollout a GitSync manages stands as a release: the revision waited for (`wanted`,
/// else the newest the GitSync fetched from its ref) must be the one the Rollout runs, and
/// Healthy there. A rejected revision, or weir's revert of one, is a failed release even
/// though the Rollout is Healthy again on the last good version: a pipeline that pushed it
/// must not read the rollback as success.
pub fn standing_in_git(rollout: &Rollout, sync: &GitSync, wanted: Option<&str>) -> Standing {
    let status = sync.status.clone().unwrap_or_default();
    let sync_name = format!(
        "GitSync {}/{}",
        sync.namespace().unwrap_or_default(),
        sync.name_any()
    );
    let Some(target) = wanted.or(status.last_fetched_revision.as_deref()) else {
        return Standing::Going(format!("waiting for {sync_name} to fetch its ref"));
    };
    let back_on = status
        .last_applied_revision
        .as_deref()
        .map_or_else(|| "-".to_owned(), |r| short(r).to_owned());
    if let Some(rejected) = status.rejected_revisions.iter().find(|r| {
        names(&r.revision, target) || r.revert.as_deref().is_some_and(|v| names(v, target))
    }) {
        let what = if names(&rejected.revision, target) {
            format!("revision {} was rejected", short(&rejected.revision))
        } else {
            format!(
                "revision {} is weir's revert of rejected {}",
                short(target),
                short(&rejected.revision)
            )
        };
        return Standing::Degraded(format!(
            "RolledBack: {what} ({}); {sync_name} rolled back to {back_on}",
            cause(rejected)
        ));
    }
    let applied = rollout.annotations().get(GIT_REVISION_ANNOTATION);
    if !applied.is_some_and(|a| names(a, target)) {
        if let Some(pinned) = status
            .pinned
            .as_ref()
            .filter(|p| wanted.is_none() || names(&p.ref_revision, target))
        {
            return Standing::Degraded(format!(
                "Pinned: {sync_name} holds revision {} by hand (kubectl weir undo) until its \
                 ref moves; {} is not running",
                short(&pinned.revision),
                short(target)
            ));
        }
        return Standing::Going(format!(
            "waiting for {sync_name} to apply revision {}",
            short(target)
        ));
    }
    standing(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(generation: i64, status: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
            "status": status
        }))
        .expect("a Rollout")
    }

    fn managed(revision: &str, status: serde_json::Value) -> Rollout {
        let mut rollout = rollout(2, status);
        rollout.metadata.annotations = Some(
            [(GIT_REVISION_ANNOTATION.to_owned(), revision.to_owned())]
                .into_iter()
                .collect(),
        );
        rollout
    }

    fn sync(status: serde_json::Value) -> GitSync {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"url": "https://git.example/shop.git", "ref": {"branch": "main"}},
            "status": status
        }))
        .expect("a GitSync")
    }

    const V2: &str = "2222222222222222222222222222222222222222";
    const V3: &str = "3333333333333333333333333333333333333333";
    const REVERT: &str = "4444444444444444444444444444444444444444";

    #[test]
    fn a_release_counts_only_once_its_revision_runs_and_a_rejected_one_fails() {
        let healthy = json!({"phase": "Healthy", "observedGeneration": 2, "stableRS": "aaa"});
        let running_v2 = managed(V2, healthy.clone());
        // Applied and Healthy: done.
        let applied = sync(json!({"lastFetchedRevision": V2, "lastAppliedRevision": V2}));
        assert_eq!(
            standing_in_git(&running_v2, &applied, None),
            Standing::Healthy("Healthy on aaa".into())
        );
        // The ref moved to v3, not applied yet: a Healthy v2 is not v3's success.
        let fetched = sync(json!({"lastFetchedRevision": V3, "lastAppliedRevision": V2}));
        assert_eq!(
            standing_in_git(&running_v2, &fetched, None),
            Standing::Going("waiting for GitSync team/shop to apply revision 333333333333".into())
        );
        // v3 rejected, the cluster back on v2 (Healthy): a failure, in words.
        let rejected = json!({"revision": V3, "reason": "AnalysisFailed", "rollout": "team/web",
            "metric": "success-rate", "value": "[0.5]", "rejectedAt": "2026-01-01T00:00:00Z"});
        let rolled_back = sync(json!({"lastFetchedRevision": V3, "lastAppliedRevision": V2,
            "rejectedRevisions": [rejected]}));
        let expected = Standing::Degraded(
            "RolledBack: revision 333333333333 was rejected (Rollout team/web: AnalysisFailed, \
             metric success-rate = [0.5]); GitSync team/shop rolled back to 222222222222"
                .into(),
        );
        assert_eq!(standing_in_git(&running_v2, &rolled_back, None), expected);
        // Asked about v3 by prefix: the same.
        assert_eq!(
            standing_in_git(&running_v2, &rolled_back, Some("3333333")),
            expected
        );
        // Written back: the ref's tip is weir's revert, applied; still a failed release.
        let mut reverted = rejected.clone();
        reverted["revert"] = json!(REVERT);
        let written = sync(
            json!({"lastFetchedRevision": REVERT, "lastAppliedRevision": REVERT,
            "rejectedRevisions": [reverted]}),
        );
        let Standing::Degraded(line) =
            standing_in_git(&managed(REVERT, healthy.clone()), &written, None)
        else {
            panic!("a revert is a failed release");
        };
        assert!(
            line.contains("444444444444 is weir's revert of rejected 333333333333"),
            "{line}"
        );
        // Asked about v2, which runs: done, whatever came after.
        assert_eq!(
            standing_in_git(&running_v2, &rolled_back, Some(V2)),
            Standing::Healthy("Healthy on aaa".into())
        );
        // Pinned by hand while the ref says v3.
        let pinned = sync(json!({"lastFetchedRevision": V3, "lastAppliedRevision": V2,
            "pinned": {"revision": V2, "refRevision": V3, "since": "2026-01-01T00:00:00Z"}}));
        assert!(matches!(
            standing_in_git(&running_v2, &pinned, None),
            Standing::Degraded(line) if line.starts_with("Pinned: GitSync team/shop holds revision 222222222222")
        ));
        // A short prefix names nothing.
        assert!(matches!(
            standing_in_git(&running_v2, &applied, Some("22")),
            Standing::Going(_)
        ));
    }

    #[test]
    fn healthy_counts_only_for_the_spec_the_controller_has_seen() {
        let seen = json!({"phase": "Healthy", "observedGeneration": 2, "stableRS": "aaa"});
        assert_eq!(
            standing(&rollout(2, seen.clone())),
            Standing::Healthy("Healthy on aaa".into())
        );
        assert!(matches!(standing(&rollout(3, seen)), Standing::Going(_)));
        assert!(matches!(
            standing(&rollout(2, json!({"phase": "Degraded", "observedGeneration": 2, "abort": true,
                "message": "AnalysisFailed: metric"}))),
            Standing::Degraded(m) if m == "Degraded: AnalysisFailed: metric"
        ));
        assert_eq!(
            standing(&rollout(
                2,
                json!({"phase": "Paused", "observedGeneration": 2,
                "currentStepIndex": 1, "canaryWeight": 20})
            )),
            Standing::Going("Paused: step 2/2, canary weight 20%".into())
        );
    }

    #[test]
    fn a_blue_green_release_is_told_without_steps_or_weight() {
        let mut rollout = rollout(
            2,
            json!({"phase": "Paused", "observedGeneration": 2, "stableRS": "v1", "canaryRS": "v2",
                "currentStepIndex": 1, "message": "v2 is ready in preview"}),
        );
        rollout.spec.strategy =
            serde_json::from_value(json!({"blueGreen": {"activeService": "web"}}))
                .expect("strategy");
        assert_eq!(
            standing(&rollout),
            Standing::Going(
                "Paused: blue-green release of v2 against v1 (v2 is ready in preview)".into()
            )
        );
    }
}
