//! Which revision a GitSync should hold the cluster at, given what its Rollouts show: the
//! decision behind automatic rollback. Pure: the caller observes the Rollouts and applies
//! what comes out. Not wired into the controller yet.
//!
//! The unit of delivery is a revision. When a Rollout whose spec came from the revision in
//! the cluster aborts (failed analysis, a progress deadline, a human), that revision is
//! rejected and the whole cluster goes back to the last revision at which every managed
//! Rollout was Healthy. A rejected revision is never applied again: while the tracked ref
//! still points at it, the last good revision is held; when the ref moves on, the new
//! revision is applied as usual.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::api::gitsync::{GitSyncStatus, RejectedRevision};
use crate::time::to_k8s;

/// What the GitSync sees of one Rollout it manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedRollout {
    /// `namespace/name`.
    pub name: String,
    /// The revision its spec was last applied from (the `weir.dev/git-revision` annotation).
    pub applied_revision: Option<String>,
    /// Healthy at its current spec: phase Healthy for the generation it has now.
    pub healthy: bool,
    /// Set while its current canary is aborted.
    pub aborted: Option<Abort>,
}

/// Why a Rollout aborted, as its status tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    /// `AnalysisFailed`, `AnalysisError`, `ProgressDeadlineExceeded` or `Aborted` (a human).
    pub reason: String,
    /// The metric that decided, when analysis did.
    pub metric: Option<String>,
    /// The deciding measurement's value.
    pub value: Option<String>,
}

/// What to hold the cluster at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The revision the ref points at.
    Fetched(String),
    /// The last good revision, because the fetched one is rejected.
    RollBack(String),
    /// Nothing: the fetched revision is rejected and no revision was ever good. The cluster
    /// stays as it is, its Rollouts aborted (traffic on their stable versions).
    Hold,
}

/// The decision, and what it changes in the GitSync's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub target: Target,
    /// A revision rejected by this decision, to add to `status.rejectedRevisions`.
    pub rejected: Option<RejectedRevision>,
    /// The last good revision after this decision.
    pub last_good: Option<String>,
}

/// Decides for a GitSync whose ref points at `fetched`, with `status` as recorded and its
/// Rollouts as seen now. `on_failure` is `spec.rollback.onFailure`.
pub fn decide(
    fetched: &str,
    status: &GitSyncStatus,
    rollouts: &[ManagedRollout],
    on_failure: bool,
    now: DateTime<Utc>,
) -> Decision {
    let mut rejected_set: BTreeSet<&str> = status
        .rejected_revisions
        .iter()
        .map(|r| r.revision.as_str())
        .collect();
    let applied = status.last_applied_revision.as_deref();
    // A status that calls a rejected revision good (edited by hand) is not trusted on that.
    let mut last_good = status
        .last_good_revision
        .clone()
        .filter(|good| !rejected_set.contains(good.as_str()));

    // A Rollout whose spec came from the revision in the cluster aborted: that revision
    // failed. One already rejected, or the good one itself, is not rejected (again).
    let mut rejected = None;
    if on_failure
        && let Some(applied) = applied
        && !rejected_set.contains(applied)
        && last_good.as_deref() != Some(applied)
        && let Some((rollout, abort)) = rollouts.iter().find_map(|r| {
            r.aborted
                .as_ref()
                .filter(|_| r.applied_revision.as_deref() == Some(applied))
                .map(|abort| (r, abort))
        })
    {
        rejected = Some(RejectedRevision {
            revision: applied.to_owned(),
            reason: abort.reason.clone(),
            rollout: Some(rollout.name.clone()),
            metric: abort.metric.clone(),
            value: abort.value.clone(),
            rejected_at: to_k8s(now),
        });
        rejected_set.insert(applied);
    }

    // Good: every managed Rollout Healthy at the revision in the cluster (with none, an
    // applied revision is good as it stands).
    if let Some(applied) = applied
        && !rejected_set.contains(applied)
        && rollouts.iter().all(|r| {
            r.healthy && r.aborted.is_none() && r.applied_revision.as_deref() == Some(applied)
        })
    {
        last_good = Some(applied.to_owned());
    }

    let target = if !rejected_set.contains(fetched) {
        Target::Fetched(fetched.to_owned())
    } else {
        match &last_good {
            Some(good) => Target::RollBack(good.clone()),
            None => Target::Hold,
        }
    };
    Decision {
        target,
        rejected,
        last_good,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).single().expect("time")
    }

    fn status(applied: Option<&str>, good: Option<&str>, rejected: &[&str]) -> GitSyncStatus {
        GitSyncStatus {
            last_applied_revision: applied.map(str::to_owned),
            last_good_revision: good.map(str::to_owned),
            rejected_revisions: rejected
                .iter()
                .map(|r| RejectedRevision {
                    revision: (*r).to_owned(),
                    reason: "AnalysisFailed".into(),
                    rollout: None,
                    metric: None,
                    value: None,
                    rejected_at: to_k8s(at()),
                })
                .collect(),
            ..GitSyncStatus::default()
        }
    }

    fn rollout(revision: &str, healthy: bool, aborted: bool) -> ManagedRollout {
        ManagedRollout {
            name: "shop/web".into(),
            applied_revision: Some(revision.into()),
            healthy,
            aborted: aborted.then(|| Abort {
                reason: "AnalysisFailed".into(),
                metric: Some("success-rate".into()),
                value: Some("[0.42]".into()),
            }),
        }
    }

    #[test]
    fn a_healthy_revision_becomes_the_last_good_one() {
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v1"), &[]),
            &[rollout("v2", true, false)],
            true,
            at(),
        );
        assert_eq!(decision.target, Target::Fetched("v2".into()));
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
        assert_eq!(decision.rejected, None);
    }

    #[test]
    fn a_canary_in_progress_keeps_the_last_good_revision() {
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v1"), &[]),
            &[rollout("v2", false, false)],
            true,
            at(),
        );
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.target, Target::Fetched("v2".into()));
    }

    #[test]
    fn an_abort_rejects_the_revision_and_rolls_back_to_the_last_good_one() {
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v3", false, true), rollout("v3", true, false)],
            true,
            at(),
        );
        assert_eq!(decision.target, Target::RollBack("v2".into()));
        let rejected = decision.rejected.expect("v3 rejected");
        assert_eq!(
            (
                rejected.revision.as_str(),
                rejected.reason.as_str(),
                rejected.metric.as_deref(),
                rejected.value.as_deref()
            ),
            ("v3", "AnalysisFailed", Some("success-rate"), Some("[0.42]"))
        );
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
    }

    #[test]
    fn while_the_ref_stays_on_a_rejected_revision_the_good_one_is_held() {
        // Rolled back: v2 is in the cluster again, its Rollout Healthy; Git still says v3.
        let decision = decide(
            "v3",
            &status(Some("v2"), Some("v2"), &["v3"]),
            &[rollout("v2", true, false)],
            true,
            at(),
        );
        assert_eq!(decision.target, Target::RollBack("v2".into()));
        assert_eq!(decision.rejected, None, "rejected once");
        // A newer commit: applied as usual, its canary starting from v2.
        let decision = decide(
            "v4",
            &status(Some("v2"), Some("v2"), &["v3"]),
            &[rollout("v2", true, false)],
            true,
            at(),
        );
        assert_eq!(decision.target, Target::Fetched("v4".into()));
    }

    #[test]
    fn an_abort_of_the_good_revision_itself_or_with_rollback_off_rejects_nothing() {
        // A human abort while the good revision is in place: nothing to go back to.
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v2"), &[]),
            &[rollout("v2", false, true)],
            true,
            at(),
        );
        assert_eq!(decision.rejected, None);
        assert_eq!(decision.target, Target::Fetched("v2".into()));
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v3", false, true)],
            false,
            at(),
        );
        assert_eq!(decision.rejected, None, "rollback.onFailure: false");
        assert_eq!(decision.target, Target::Fetched("v3".into()));
    }

    #[test]
    fn an_abort_of_a_rollout_already_rolled_back_is_not_the_new_revisions_fault() {
        // The Rollout's spec still comes from v2 (v3 not applied to it yet): v3 is innocent.
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v2", false, true)],
            true,
            at(),
        );
        assert_eq!(decision.rejected, None);
    }

    #[test]
    fn with_no_good_revision_a_rejected_one_is_held_where_it_is() {
        let decision = decide(
            "v1",
            &status(Some("v1"), None, &[]),
            &[rollout("v1", false, true)],
            true,
            at(),
        );
        assert!(decision.rejected.is_some());
        assert_eq!(decision.target, Target::Hold);
        assert_eq!(decision.last_good, None);
    }

    #[test]
    fn without_rollouts_every_applied_revision_is_good() {
        let decision = decide("v2", &status(Some("v2"), Some("v1"), &[]), &[], true, at());
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
    }

    fn revision() -> impl Strategy<Value = String> {
        (0u8..5).prop_map(|n| format!("v{n}"))
    }

    fn managed() -> impl Strategy<Value = ManagedRollout> {
        (prop::option::of(revision()), any::<bool>(), any::<bool>()).prop_map(
            |(applied, healthy, aborted)| ManagedRollout {
                name: "ns/r".into(),
                applied_revision: applied,
                healthy,
                aborted: aborted.then(|| Abort {
                    reason: "Aborted".into(),
                    metric: None,
                    value: None,
                }),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the status and the Rollouts say: a rejected revision is never the
        /// target, never becomes good, and stays rejected; the fetched revision is the
        /// target unless it is rejected; deciding twice decides the same.
        #[test]
        fn a_rejected_revision_is_never_applied_again(
            fetched in revision(),
            applied in prop::option::of(revision()),
            good in prop::option::of(revision()),
            rejected in prop::collection::btree_set(revision(), 0..3),
            rollouts in prop::collection::vec(managed(), 0..4),
            on_failure in any::<bool>(),
        ) {
            let rejected: Vec<&str> = rejected.iter().map(String::as_str).collect();
            let before = status(applied.as_deref(), good.as_deref(), &rejected);
            let decision = decide(&fetched, &before, &rollouts, on_failure, at());
            let mut all_rejected: BTreeSet<String> = rejected.iter().map(|r| (*r).to_owned()).collect();
            if let Some(new) = &decision.rejected {
                prop_assert!(on_failure);
                prop_assert!(all_rejected.insert(new.revision.clone()), "rejected twice");
                prop_assert_eq!(Some(&new.revision), applied.as_ref());
            }
            match &decision.target {
                Target::Fetched(r) => {
                    prop_assert_eq!(r, &fetched);
                    prop_assert!(!all_rejected.contains(r));
                }
                Target::RollBack(r) => {
                    prop_assert!(all_rejected.contains(&fetched));
                    prop_assert!(!all_rejected.contains(r));
                    prop_assert_eq!(Some(r), decision.last_good.as_ref());
                }
                Target::Hold => {
                    prop_assert!(all_rejected.contains(&fetched) && decision.last_good.is_none());
                }
            }
            if let Some(last_good) = &decision.last_good {
                prop_assert!(!all_rejected.contains(last_good), "a rejected revision is good");
            }
            prop_assert_eq!(decide(&fetched, &before, &rollouts, on_failure, at()), decision);
        }
    }
}
