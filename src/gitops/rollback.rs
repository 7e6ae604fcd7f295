//! Which revision a GitSync should hold the cluster at, given what its Rollouts and
//! workloads show: the decision behind automatic rollback. Pure: the caller observes the
//! Rollouts and workloads and applies what comes out.
//!
//! The unit of delivery is a revision. When a Rollout whose spec came from the revision in
//! the cluster aborts (failed analysis, a progress deadline, a human), or a workload the
//! revision applied fails or is still not healthy `spec.healthTimeout` after the revision
//! was applied, that revision is rejected and the whole cluster goes back to the last
//! revision at which every managed Rollout and workload was healthy. A rejected revision is
//! never applied again: while the tracked ref
//! still points at it, the last good revision is held; when the ref moves on, the new
//! revision is applied as usual. A revision pinned by hand (`weir.dev/rollback-to`) is held
//! the same way until the ref moves.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use kube::ResourceExt;

use crate::api::contract::{GIT_REVISION_ANNOTATION, ROLLBACK_TO_ANNOTATION};
use crate::api::gitsync::{GitSyncStatus, PinnedRevision, RejectedRevision};
use crate::api::rollout::{AbortCause, Rollout, RolloutPhase};
use crate::time::{from_k8s, to_k8s};

use super::health::{self, Health, Workload};

/// What the GitSync sees of one Rollout it manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedRollout {
    /// `namespace/name`.
    pub name: String,
    /// The revision its spec was last applied from (the `weir.dev/git-revision` annotation).
    pub applied_revision: Option<String>,
    /// The revision of its current (or aborted) canary, as it recorded it.
    pub canary_revision: Option<String>,
    /// Healthy at its current spec: phase Healthy for the generation it has now.
    pub healthy: bool,
    /// Set while its current canary is aborted.
    pub aborted: Option<AbortCause>,
    /// When it was aborted.
    pub aborted_at: Option<DateTime<Utc>>,
}

/// The history outcomes that put a revision in the cluster.
pub const APPLIED_OUTCOMES: [&str; 3] = ["Applied", "RolledBack", "Pinned"];

/// Where in `status.history` the applied revision was last put in the cluster: the durable
/// start of its wait for health (a restarted controller reads it back from the status).
pub fn applied_record(status: &GitSyncStatus) -> Option<usize> {
    let applied = status.last_applied_revision.as_deref()?;
    status
        .history
        .iter()
        .rposition(|h| h.revision == applied && APPLIED_OUTCOMES.contains(&h.outcome.as_str()))
}

/// How a GitSync judges what it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judging {
    /// `spec.rollback.onFailure`: reject a failed revision and go back to the good one.
    pub on_failure: bool,
    /// `spec.healthTimeout`.
    pub health_timeout: chrono::Duration,
}

/// What a GitSync needs to know of one of its Rollouts.
pub fn observe(rollout: &Rollout) -> ManagedRollout {
    let status = rollout.status.as_ref();
    let generation = rollout.metadata.generation;
    ManagedRollout {
        name: format!(
            "{}/{}",
            rollout.namespace().unwrap_or_default(),
            rollout.name_any()
        ),
        applied_revision: rollout.annotations().get(GIT_REVISION_ANNOTATION).cloned(),
        canary_revision: status.and_then(|s| s.canary_revision.clone()),
        aborted_at: status.and_then(|s| s.aborted_at.as_ref()).map(from_k8s),
        // Healthy for an older generation says nothing about the spec applied now.
        healthy: status.is_some_and(|s| {
            s.phase == Some(RolloutPhase::Healthy) && s.observed_generation == generation
        }),
        // An abort of an older generation describes a spec no longer there (one just
        // rolled back, say) until the Rollout controller has looked at the new one.
        aborted: status
            .filter(|s| s.abort && s.observed_generation == generation)
            .map(|s| {
                s.abort_cause.clone().unwrap_or_else(|| AbortCause {
                    // Aborted by hand, and the controller has not said why yet.
                    reason: "Aborted".into(),
                    ..AbortCause::default()
                })
            }),
    }
}

/// What to hold the cluster at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// The revision the ref points at.
    Fetched(String),
    /// A revision pinned by hand while the ref stays where it was.
    Pinned(String),
    /// The last good revision, because the fetched one is rejected.
    RollBack(String),
    /// Nothing: the fetched revision is rejected and no revision was ever good. The cluster
    /// stays as it is, its Rollouts aborted (traffic on their stable versions).
    Hold,
}

/// The decision, and what it changes in the GitSync's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: Desired,
    /// A revision rejected by this decision, to add to `status.rejectedRevisions`.
    pub rejected: Option<RejectedRevision>,
    /// The last good revision after this decision.
    pub last_good: Option<String>,
    /// What the applied revision's workloads still wait for before it can be good, in
    /// words; None when nothing of them is pending (or the revision is judged already).
    pub waiting: Option<String>,
    /// Look at the workloads again soon: something is pending and `healthTimeout` has not
    /// passed yet. Past it (with `rollback.onFailure` off, nothing rejects the revision)
    /// the normal schedule is enough.
    pub poll: bool,
}

/// Whether the applied revision still waits for a verdict: applied, neither rejected nor
/// good yet. Only then are its workloads worth reading.
pub fn judging(status: &GitSyncStatus) -> Option<&str> {
    status.last_applied_revision.as_deref().filter(|applied| {
        status.last_good_revision.as_deref() != Some(*applied)
            && !status
                .rejected_revisions
                .iter()
                .any(|r| r.revision == *applied)
    })
}

/// Whether `spec.healthTimeout` has passed since the applied revision was put in the
/// cluster (per its history record; never when there is none).
pub fn timed_out(status: &GitSyncStatus, timeout: chrono::Duration, now: DateTime<Utc>) -> bool {
    applied_record(status)
        .and_then(|at| status.history.get(at))
        .and_then(|record| from_k8s(&record.time).checked_add_signed(timeout))
        .is_some_and(|deadline| now >= deadline)
}

/// Decides for a GitSync whose ref points at `fetched`, with `status` as recorded and its
/// Rollouts and the applied revision's workloads as seen now.
pub fn decide(
    fetched: &str,
    status: &GitSyncStatus,
    rollouts: &[ManagedRollout],
    workloads: &[Workload],
    policy: &Judging,
    now: DateTime<Utc>,
) -> Decision {
    let on_failure = policy.on_failure;
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

    // A Rollout from the revision in the cluster aborted: that revision failed. The abort
    // is this revision's when it came after the revision was applied, or when the aborted
    // canary is this revision's own (also the one last tried, when its apply did not
    // finish). An abort left over from an older canary, with a later revision changing
    // only configuration, is not the later one's. A revision already rejected, or the good
    // one itself, is not rejected (again).
    let attempted = status.last_attempted_revision.as_deref();
    let applied_at = applied_record(status).map(|at| from_k8s(&status.history[at].time));
    let mut rejected = None;
    if on_failure
        && let Some((revision, rollout, abort)) = rollouts.iter().find_map(|r| {
            let abort = r.aborted.as_ref()?;
            let from = r.applied_revision.as_deref()?;
            let own_canary = r.canary_revision.as_deref() == Some(from)
                && (Some(from) == applied || Some(from) == attempted);
            let after_apply = Some(from) == applied
                && matches!((r.aborted_at, applied_at), (Some(at), Some(since)) if at >= since);
            ((own_canary || after_apply)
                && !rejected_set.contains(from)
                && last_good.as_deref() != Some(from))
            .then_some((from, r, abort))
        })
    {
        rejected = Some(RejectedRevision {
            revision: revision.to_owned(),
            reason: abort.reason.clone(),
            rollout: Some(rollout.name.clone()),
            object: None,
            message: None,
            metric: abort.metric.clone(),
            value: abort.value.clone(),
            rejected_at: to_k8s(now),
            revert: None,
        });
        rejected_set.insert(revision);
    }

    // A workload the applied revision brought failed, or is still not healthy past the
    // timeout: that revision failed too. Only objects stamped with the revision speak for
    // it (one left from an earlier revision is not its), and the good one is never
    // rejected. The wait is timed from the history record of the apply, so a restarted
    // controller times it the same way. A failure that set in before the apply is not the
    // revision's: it only waits (`Health::since_applied`).
    let workloads: Vec<Workload> = workloads
        .iter()
        .map(|w| Workload {
            health: w.health.clone().since_applied(applied_at),
            ..w.clone()
        })
        .collect();
    let workloads = workloads.as_slice();
    let judged = applied.filter(|a| !rejected_set.contains(a) && last_good.as_deref() != Some(*a));
    if let (true, None, Some(applied)) = (on_failure, &rejected, judged)
        && let Some((reason, workload, message)) =
            unhealthy(applied, workloads, applied_at, policy.health_timeout, now)
    {
        rejected = Some(RejectedRevision {
            revision: applied.to_owned(),
            reason: reason.into(),
            rollout: None,
            object: Some(workload.name.clone()),
            message: Some(message),
            metric: None,
            value: None,
            rejected_at: to_k8s(now),
            revert: None,
        });
        rejected_set.insert(applied);
    }
    let waiting = judged
        .filter(|a| !rejected_set.contains(a))
        .and_then(|applied| health::waiting(applied, workloads));
    let poll = waiting.is_some() && !timed_out(status, policy.health_timeout, now);

    // Good: every managed Rollout Healthy at the revision in the cluster, and every
    // workload stamped with it healthy, none unread (with neither, an applied revision is
    // good as it stands).
    if let Some(applied) = applied
        && !rejected_set.contains(applied)
        && rollouts.iter().all(|r| {
            r.healthy && r.aborted.is_none() && r.applied_revision.as_deref() == Some(applied)
        })
        && workloads.iter().all(|w| match w.revision.as_deref() {
            None => false,
            Some(revision) => revision != applied || w.health == Health::Healthy,
        })
    {
        last_good = Some(applied.to_owned());
    }

    let pin = status
        .pinned
        .as_ref()
        .filter(|pin| pin.ref_revision == fetched && !rejected_set.contains(pin.revision.as_str()));
    let desired = if let Some(pin) = pin {
        Desired::Pinned(pin.revision.clone())
    } else if !rejected_set.contains(fetched) {
        Desired::Fetched(fetched.to_owned())
    } else {
        match &last_good {
            Some(good) => Desired::RollBack(good.clone()),
            None => Desired::Hold,
        }
    };
    Decision {
        desired,
        rejected,
        last_good,
        waiting,
        poll,
    }
}

/// Why the applied revision's workloads reject it, if they do: the first one at that
/// revision whose condition failed (`HealthCheckFailed`), else, once `timeout` has passed
/// since it was applied, the first one at it not healthy (`HealthTimeout`). An unreadable
/// one never rejects.
fn unhealthy<'w>(
    applied: &str,
    workloads: &'w [Workload],
    applied_at: Option<DateTime<Utc>>,
    timeout: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<(&'static str, &'w Workload, String)> {
    let mut at_revision = workloads
        .iter()
        .filter(|w| w.revision.as_deref() == Some(applied));
    if let Some((workload, message)) = at_revision.clone().find_map(|w| match &w.health {
        Health::Failed { message, .. } => Some((w, message.clone())),
        _ => None,
    }) {
        return Some(("HealthCheckFailed", workload, message));
    }
    let since = applied_at?;
    if now < since.checked_add_signed(timeout)? {
        return None;
    }
    let workload = at_revision.find(|w| w.health != Health::Healthy)?;
    let what = match &workload.health {
        Health::Progressing(words) => words.as_str(),
        _ => "",
    };
    Some((
        "HealthTimeout",
        workload,
        format!(
            "not healthy {} after the revision was applied (spec.healthTimeout): {what}",
            words(timeout)
        ),
    ))
}

/// A timeout in words: `5m`, `90s`.
fn words(timeout: chrono::Duration) -> String {
    let seconds = timeout.num_seconds();
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why the applied revision is the one applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Basis {
    /// The ref points at it.
    Head,
    /// The ref points at a rejected revision, and this is the last good one.
    RolledBack(RejectedRevision),
    /// Pinned by hand while the ref stays at `head`.
    Pinned { head: String },
}

/// How this reconcile stands with the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Not time to sync: the head is the one of the last fetch.
    NotDue,
    Fetched,
    Failed,
}

/// What one reconcile does to the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Apply {
        revision: String,
        basis: Basis,
    },
    /// Only record the failed fetch: the target is in place, or unknown.
    RecordFetchFailure,
    /// Record that the head is rejected with nothing to go back to.
    Hold(RejectedRevision),
    Nothing,
}

/// Turns a decision into this reconcile's step. Between syncs only a rollback is applied:
/// anything else waits for its time, and for its backoff after a failure.
pub fn step(
    decision: &Decision,
    head: &str,
    status: &GitSyncStatus,
    rejected: &[RejectedRevision],
    fetch: Fetch,
) -> Step {
    let applied = status.last_applied_revision.as_deref();
    let attempted = status.last_attempted_revision.as_deref();
    let rejection_of_head = || rejected.iter().find(|r| r.revision == head).cloned();
    let (target, basis) = match &decision.desired {
        Desired::Fetched(revision) => (revision, Basis::Head),
        Desired::Pinned(revision) => (
            revision,
            Basis::Pinned {
                head: head.to_owned(),
            },
        ),
        Desired::RollBack(good) => match rejection_of_head() {
            Some(rejection) => (good, Basis::RolledBack(rejection)),
            None => (good, Basis::Head),
        },
        Desired::Hold => {
            return match (fetch, rejection_of_head()) {
                (Fetch::Failed, _) => Step::RecordFetchFailure,
                (Fetch::NotDue, Some(_)) if decision.rejected.is_none() => Step::Nothing,
                (_, Some(rejection)) => Step::Hold(rejection),
                (_, None) => Step::Nothing,
            };
        }
    };
    // In place: applied, and no later attempt left parts of another revision behind.
    let target_str = Some(target.as_str());
    let in_place = applied == target_str && attempted.is_none_or(|a| Some(a) == target_str);
    // A rollback that was tried and failed waits for its backoff like any other apply.
    let urgent = matches!(decision.desired, Desired::RollBack(_)) && attempted != target_str;
    match fetch {
        Fetch::NotDue if in_place || !urgent => Step::Nothing,
        Fetch::Failed if in_place => Step::RecordFetchFailure,
        _ => Step::Apply {
            revision: target.clone(),
            basis,
        },
    }
}

/// Checks a `weir.dev/rollback-to` request against what the GitSync knows; the caller
/// checks that the commit exists.
pub fn pin(
    requested: &str,
    head: &str,
    status: &GitSyncStatus,
    now: DateTime<Utc>,
) -> Result<PinnedRevision, String> {
    let revision = requested.trim().to_ascii_lowercase();
    if !super::is_full_sha(&revision) {
        return Err(format!(
            "{ROLLBACK_TO_ANNOTATION}: {requested:?} is not a full commit SHA (40 hex digits); `git rev-parse` gives one"
        ));
    }
    if let Some(rejected) = status
        .rejected_revisions
        .iter()
        .find(|r| r.revision == revision)
    {
        return Err(format!(
            "{ROLLBACK_TO_ANNOTATION}: revision {revision} was rejected ({}); pick a revision that was not",
            rejected.reason
        ));
    }
    Ok(PinnedRevision {
        revision,
        ref_revision: head.to_owned(),
        since: to_k8s(now),
    })
}

/// In words: why a revision was rejected.
pub fn cause(rejected: &RejectedRevision) -> String {
    let mut words = rejected.reason.clone();
    if let Some(rollout) = &rejected.rollout {
        words = format!("Rollout {rollout}: {words}");
    } else if let Some(object) = &rejected.object {
        words = format!("{object}: {words}");
    }
    words = match (&rejected.metric, &rejected.value) {
        (Some(metric), Some(value)) => format!("{words}, metric {metric} = {value}"),
        (Some(metric), None) => format!("{words}, metric {metric}"),
        _ => words,
    };
    match &rejected.message {
        Some(message) => format!("{words}, {message}"),
        None => words,
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
                    object: None,
                    message: None,
                    metric: None,
                    value: None,
                    rejected_at: to_k8s(at()),
                    revert: None,
                })
                .collect(),
            ..GitSyncStatus::default()
        }
    }

    fn policy(on_failure: bool) -> Judging {
        Judging {
            on_failure,
            health_timeout: chrono::Duration::minutes(5),
        }
    }

    fn workload(revision: &str, health: Health) -> Workload {
        Workload {
            name: "Deployment shop/api".into(),
            revision: Some(revision.into()),
            health,
        }
    }

    fn waits(words: &str) -> Health {
        Health::Progressing(words.into())
    }

    fn failed() -> Health {
        Health::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            message: "Progressing is False (ProgressDeadlineExceeded): ReplicaSet \"api-7c\" has timed out progressing.".into(),
            since: None,
        }
    }

    /// `failed()`, its condition turned `seconds` after v2 was applied (before, if negative).
    fn failed_at(seconds: i64) -> Health {
        match failed() {
            Health::Failed {
                reason, message, ..
            } => Health::Failed {
                reason,
                message,
                since: Some(at() + chrono::Duration::seconds(seconds)),
            },
            other => other,
        }
    }

    /// v2 applied at `at()`, v1 good.
    fn v2_applied() -> GitSyncStatus {
        let mut before = status(Some("v2"), Some("v1"), &[]);
        before.last_attempted_revision = Some("v2".into());
        before.history.push(crate::api::gitsync::RevisionRecord {
            revision: "v2".into(),
            subject: "api 2".into(),
            committed_at: None,
            time: to_k8s(at()),
            outcome: "Applied".into(),
        });
        before
    }

    fn rollout(revision: &str, healthy: bool, aborted: bool) -> ManagedRollout {
        ManagedRollout {
            name: "shop/web".into(),
            applied_revision: Some(revision.into()),
            canary_revision: Some(revision.into()),
            aborted_at: aborted.then(at),
            healthy,
            aborted: aborted.then(|| AbortCause {
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
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.desired, Desired::Fetched("v2".into()));
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
        assert_eq!(decision.rejected, None);
    }

    #[test]
    fn a_canary_in_progress_keeps_the_last_good_revision() {
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v1"), &[]),
            &[rollout("v2", false, false)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.desired, Desired::Fetched("v2".into()));
    }

    #[test]
    fn an_abort_rejects_the_revision_and_rolls_back_to_the_last_good_one() {
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v3", false, true), rollout("v3", true, false)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.desired, Desired::RollBack("v2".into()));
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
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.desired, Desired::RollBack("v2".into()));
        assert_eq!(decision.rejected, None, "rejected once");
        // A newer commit: applied as usual, its canary starting from v2.
        let decision = decide(
            "v4",
            &status(Some("v2"), Some("v2"), &["v3"]),
            &[rollout("v2", true, false)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.desired, Desired::Fetched("v4".into()));
    }

    #[test]
    fn an_abort_of_the_good_revision_itself_or_with_rollback_off_rejects_nothing() {
        // A human abort while the good revision is in place: nothing to go back to.
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v2"), &[]),
            &[rollout("v2", false, true)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.rejected, None);
        assert_eq!(decision.desired, Desired::Fetched("v2".into()));
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v3", false, true)],
            &[],
            &policy(false),
            at(),
        );
        assert_eq!(decision.rejected, None, "rollback.onFailure: false");
        assert_eq!(decision.desired, Desired::Fetched("v3".into()));
    }

    #[test]
    fn an_abort_of_a_rollout_already_rolled_back_is_not_the_new_revisions_fault() {
        // The Rollout's spec still comes from v2 (v3 not applied to it yet): v3 is innocent.
        let decision = decide(
            "v3",
            &status(Some("v3"), Some("v2"), &[]),
            &[rollout("v2", false, true)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.rejected, None);
    }

    /// v3 applied (changing only configuration) at `at() + applied` to a Rollout whose v2
    /// canary is aborted.
    fn config_only(applied: i64, aborted: i64, attempted: &str) -> (GitSyncStatus, ManagedRollout) {
        let mut status = status(Some("v3"), Some("v1"), &[]);
        status.last_attempted_revision = Some(attempted.into());
        status.history.push(crate::api::gitsync::RevisionRecord {
            revision: "v3".into(),
            subject: "v3".into(),
            committed_at: None,
            time: to_k8s(at() + chrono::Duration::seconds(applied)),
            outcome: "Applied".into(),
        });
        let mut rollout = rollout("v3", false, true);
        rollout.canary_revision = Some("v2".into());
        rollout.aborted_at = Some(at() + chrono::Duration::seconds(aborted));
        (status, rollout)
    }

    #[test]
    fn an_abort_left_from_an_older_canary_does_not_reject_a_later_revision() {
        let (before, rollout) = config_only(10, 0, "v3");
        let decision = decide("v3", &before, &[rollout], &[], &policy(true), at());
        assert_eq!(decision.rejected, None, "the abort came before v3");
        // The same, aborted after v3 was applied: v3 carries the failing canary on.
        let (before, rollout) = config_only(10, 20, "v3");
        let decision = decide("v3", &before, &[rollout], &[], &policy(true), at());
        assert_eq!(decision.rejected.map(|r| r.revision).as_deref(), Some("v3"));
    }

    #[test]
    fn a_revision_whose_apply_did_not_finish_is_rejected_when_its_canary_fails() {
        // v3's apply failed half way: the Rollout has v3, the status still says v2.
        let mut before = status(Some("v2"), Some("v2"), &[]);
        before.last_attempted_revision = Some("v3".into());
        let decision = decide(
            "v3",
            &before,
            &[rollout("v3", false, true)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.rejected.map(|r| r.revision).as_deref(), Some("v3"));
        assert_eq!(decision.desired, Desired::RollBack("v2".into()));
        let rejected = status(None, None, &["v3"]).rejected_revisions;
        before.rejected_revisions.clone_from(&rejected);
        let decision = decide("v3", &before, &[], &[], &policy(true), at());
        assert!(
            matches!(
                step(&decision, "v3", &before, &rejected, Fetch::NotDue),
                Step::Apply { ref revision, .. } if revision == "v2"
            ),
            "v2 is re-applied over what v3 left, at once"
        );
    }

    #[test]
    fn with_no_good_revision_a_rejected_one_is_held_where_it_is() {
        let decision = decide(
            "v1",
            &status(Some("v1"), None, &[]),
            &[rollout("v1", false, true)],
            &[],
            &policy(true),
            at(),
        );
        assert!(decision.rejected.is_some());
        assert_eq!(decision.desired, Desired::Hold);
        assert_eq!(decision.last_good, None);
    }

    #[test]
    fn without_rollouts_every_applied_revision_is_good() {
        let decision = decide(
            "v2",
            &status(Some("v2"), Some("v1"), &[]),
            &[],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
    }

    #[test]
    fn a_pin_holds_its_revision_until_the_ref_moves() {
        let mut pinned = status(Some("v3"), Some("v3"), &[]);
        pinned.pinned = Some(PinnedRevision {
            revision: "v1".into(),
            ref_revision: "v3".into(),
            since: to_k8s(at()),
        });
        let decision = decide(
            "v3",
            &pinned,
            &[rollout("v3", true, false)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.desired, Desired::Pinned("v1".into()));
        let decision = decide(
            "v4",
            &pinned,
            &[rollout("v3", true, false)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(
            decision.desired,
            Desired::Fetched("v4".into()),
            "the ref moved: the pin is over"
        );
        // The pinned revision itself failing: rejected, and the pin no longer holds.
        pinned.last_applied_revision = Some("v1".into());
        let decision = decide(
            "v3",
            &pinned,
            &[rollout("v1", false, true)],
            &[],
            &policy(true),
            at(),
        );
        assert_eq!(decision.rejected.map(|r| r.revision).as_deref(), Some("v1"));
        assert_eq!(decision.desired, Desired::Fetched("v3".into()));
    }

    #[test]
    fn a_pin_request_needs_a_full_sha_that_was_not_rejected() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let bad = "89abcdef0123456789abcdef0123456789abcdef";
        let known = status(Some("v3"), Some("v3"), &[bad]);
        let pin = pin(&sha.to_uppercase(), "v3", &known, at()).expect("a full SHA");
        assert_eq!(
            (pin.revision.as_str(), pin.ref_revision.as_str()),
            (sha, "v3")
        );
        for (request, says) in [
            ("0123456", "not a full commit SHA"),
            ("main", "not a full commit SHA"),
            (bad, "was rejected (AnalysisFailed)"),
        ] {
            let error = super::pin(request, "v3", &known, at()).expect_err(request);
            assert!(error.contains(says), "{request}: {error}");
            assert!(error.starts_with(ROLLBACK_TO_ANNOTATION), "{error}");
        }
    }

    #[test]
    fn the_cause_names_rollout_reason_metric_and_value() {
        let mut rejected = RejectedRevision {
            revision: "v3".into(),
            reason: "AnalysisFailed".into(),
            rollout: Some("shop/web".into()),
            object: None,
            message: None,
            metric: Some("error-rate".into()),
            value: Some("0.31".into()),
            rejected_at: to_k8s(at()),
            revert: None,
        };
        assert_eq!(
            cause(&rejected),
            "Rollout shop/web: AnalysisFailed, metric error-rate = 0.31"
        );
        rejected.metric = None;
        rejected.reason = "Aborted".into();
        assert_eq!(cause(&rejected), "Rollout shop/web: Aborted");
    }

    #[test]
    fn a_rollout_is_healthy_only_for_the_generation_it_has() {
        let mut rollout: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "generation": 3,
                         "annotations": {GIT_REVISION_ANNOTATION: "v3"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "web:3"}]}},
                     "strategy": {"canary": {"steps": []}}},
            "status": {"phase": "Healthy", "observedGeneration": 2}
        }))
        .expect("a Rollout");
        let seen = observe(&rollout);
        assert_eq!(
            (
                seen.name.as_str(),
                seen.applied_revision.as_deref(),
                seen.healthy
            ),
            ("shop/web", Some("v3"), false),
            "Healthy describes generation 2"
        );
        let status = rollout.status.as_mut().expect("status");
        status.observed_generation = Some(3);
        assert!(observe(&rollout).healthy);
        let status = rollout.status.as_mut().expect("status");
        status.abort = true;
        assert_eq!(
            observe(&rollout).aborted.map(|a| a.reason).as_deref(),
            Some("Aborted"),
            "an abort set by hand, before the controller said why"
        );
    }

    fn decided(desired: Desired, rejected: Option<&str>) -> Decision {
        Decision {
            desired,
            rejected: rejected.map(|r| status(None, None, &[r]).rejected_revisions.remove(0)),
            last_good: None,
            waiting: None,
            poll: false,
        }
    }

    #[test]
    fn a_revision_is_good_only_once_every_workload_at_it_is_healthy() {
        let before = v2_applied();
        let progressing = [
            workload("v2", Health::Healthy),
            Workload {
                name: "Deployment shop/web".into(),
                ..workload("v2", waits("1 of 3 replicas available"))
            },
        ];
        let decision = decide("v2", &before, &[], &progressing, &policy(true), at());
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.rejected, None);
        assert_eq!(
            decision.waiting.as_deref(),
            Some("Deployment shop/web: 1 of 3 replicas available")
        );
        let healthy = [
            workload("v2", Health::Healthy),
            // Left by v1 with pruning off: not v2's to judge.
            workload("v1", waits("0 of 1 replicas available")),
        ];
        let decision = decide("v2", &before, &[], &healthy, &policy(true), at());
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
        assert_eq!(decision.waiting, None);
        // Workloads healthy, a Rollout still in its canary: not good yet, and nothing said
        // of the workloads.
        let decision = decide(
            "v2",
            &before,
            &[rollout("v2", false, false)],
            &healthy,
            &policy(true),
            at(),
        );
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.waiting, None);
    }

    #[test]
    fn an_unreadable_workload_keeps_a_revision_from_being_good_and_rejects_nothing() {
        let unread = [health::unreadable(
            "Job shop/migrate".into(),
            "connection reset",
        )];
        let late = at() + chrono::Duration::hours(1);
        let decision = decide("v2", &v2_applied(), &[], &unread, &policy(true), late);
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.rejected, None, "what was not seen does not reject");
        assert_eq!(
            decision.waiting.as_deref(),
            Some("Job shop/migrate: could not be read: connection reset")
        );
    }

    #[test]
    fn a_failed_workload_rejects_its_revision_and_rolls_back() {
        let decision = decide(
            "v2",
            &v2_applied(),
            &[rollout("v2", true, false)],
            &[workload("v2", failed())],
            &policy(true),
            at(),
        );
        let rejected = decision.rejected.expect("v2 rejected");
        assert_eq!(
            (
                rejected.revision.as_str(),
                rejected.reason.as_str(),
                rejected.object.as_deref(),
                rejected.rollout.as_deref()
            ),
            ("v2", "HealthCheckFailed", Some("Deployment shop/api"), None)
        );
        assert_eq!(
            cause(&rejected),
            "Deployment shop/api: HealthCheckFailed, Progressing is False (ProgressDeadlineExceeded): ReplicaSet \"api-7c\" has timed out progressing."
        );
        assert_eq!(decision.desired, Desired::RollBack("v1".into()));
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(decision.waiting, None);
        // The same failure of an object still at v1 is not v2's.
        let decision = decide(
            "v2",
            &v2_applied(),
            &[],
            &[workload("v1", failed())],
            &policy(true),
            at(),
        );
        assert_eq!(decision.rejected, None);
        // With rollback.onFailure off: never rejected, never good.
        let decision = decide(
            "v2",
            &v2_applied(),
            &[],
            &[workload("v2", failed())],
            &policy(false),
            at(),
        );
        assert_eq!(decision.rejected, None);
        assert_eq!(decision.desired, Desired::Fetched("v2".into()));
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
    }

    #[test]
    fn a_failure_from_before_the_apply_waits_for_the_timeout_or_a_recovery() {
        // A deadline passed a minute before v2 was applied, for a reason not in Git.
        let old = [workload("v2", failed_at(-60))];
        let soon = at() + chrono::Duration::seconds(30);
        let decision = decide("v2", &v2_applied(), &[], &old, &policy(true), soon);
        assert_eq!(decision.rejected, None, "not v2's failure");
        assert_eq!(decision.last_good.as_deref(), Some("v1"));
        assert_eq!(
            decision.waiting.as_deref(),
            Some(
                "Deployment shop/api: failed before this revision was applied: Progressing is False (ProgressDeadlineExceeded): ReplicaSet \"api-7c\" has timed out progressing."
            )
        );
        // Still failing at the timeout: rejected for that.
        let late = at() + chrono::Duration::minutes(5);
        let decision = decide("v2", &v2_applied(), &[], &old, &policy(true), late);
        assert_eq!(
            decision.rejected.map(|r| r.reason).as_deref(),
            Some("HealthTimeout")
        );
        // Recovered (v2 may be the fix): good.
        let recovered = [workload("v2", Health::Healthy)];
        let decision = decide("v2", &v2_applied(), &[], &recovered, &policy(true), soon);
        assert_eq!(decision.last_good.as_deref(), Some("v2"));
        // A failure at or after the apply is v2's at once.
        for seconds in [0, 1] {
            let new = [workload("v2", failed_at(seconds))];
            let decision = decide("v2", &v2_applied(), &[], &new, &policy(true), soon);
            assert_eq!(
                decision.rejected.map(|r| r.reason).as_deref(),
                Some("HealthCheckFailed"),
                "{seconds}"
            );
        }
    }

    #[test]
    fn with_rollback_off_the_workloads_are_polled_only_until_the_timeout() {
        let pending = [workload("v2", waits("1 of 3 replicas available"))];
        let decide_at = |seconds: i64| {
            decide(
                "v2",
                &v2_applied(),
                &[],
                &pending,
                &policy(false),
                at() + chrono::Duration::seconds(seconds),
            )
        };
        let early = decide_at(299);
        assert!(early.poll && early.waiting.is_some());
        let late = decide_at(300);
        assert_eq!(late.rejected, None);
        assert!(late.waiting.is_some(), "still said in the status");
        assert!(!late.poll, "the normal schedule from now on");
        assert!(!timed_out(
            &v2_applied(),
            policy(false).health_timeout,
            at() + chrono::Duration::seconds(299)
        ));
        assert!(timed_out(
            &v2_applied(),
            policy(false).health_timeout,
            at() + chrono::Duration::seconds(300)
        ));
        // Nothing pending: nothing to poll for.
        let healthy = [workload("v2", Health::Healthy)];
        let decision = decide("v2", &v2_applied(), &[], &healthy, &policy(false), at());
        assert!(!decision.poll);
    }

    #[test]
    fn a_workload_not_healthy_within_the_timeout_rejects_its_revision() {
        let pending = [workload("v2", waits("1 of 3 replicas available"))];
        let just_before = at() + chrono::Duration::seconds(299);
        let decision = decide(
            "v2",
            &v2_applied(),
            &[],
            &pending,
            &policy(true),
            just_before,
        );
        assert_eq!(decision.rejected, None);
        let on_time = at() + chrono::Duration::minutes(5);
        let decision = decide("v2", &v2_applied(), &[], &pending, &policy(true), on_time);
        let rejected = decision.rejected.expect("timed out");
        assert_eq!(rejected.reason, "HealthTimeout");
        assert_eq!(
            cause(&rejected),
            "Deployment shop/api: HealthTimeout, not healthy 5m after the revision was applied (spec.healthTimeout): 1 of 3 replicas available"
        );
        assert_eq!(decision.desired, Desired::RollBack("v1".into()));
        // Timed from the latest record of v2 being put in the cluster.
        let mut reapplied = v2_applied();
        reapplied.history.push(crate::api::gitsync::RevisionRecord {
            revision: "v2".into(),
            subject: "api 2".into(),
            committed_at: None,
            time: to_k8s(at() + chrono::Duration::minutes(3)),
            outcome: "RolledBack".into(),
        });
        let decision = decide("v2", &reapplied, &[], &pending, &policy(true), on_time);
        assert_eq!(decision.rejected, None);
        // Without a record of when it was applied, no timeout: only a failure rejects.
        let mut unknown = v2_applied();
        unknown.history.clear();
        let decision = decide(
            "v2",
            &unknown,
            &[],
            &pending,
            &policy(true),
            at() + chrono::Duration::days(1),
        );
        assert_eq!(decision.rejected, None);
        assert!(decision.waiting.is_some());
    }

    #[test]
    fn the_good_revision_and_a_rejected_one_are_not_judged_again() {
        let mut good = v2_applied();
        good.last_good_revision = Some("v2".into());
        let late = at() + chrono::Duration::hours(1);
        let decision = decide(
            "v2",
            &good,
            &[],
            &[workload("v2", failed())],
            &policy(true),
            late,
        );
        assert_eq!(decision.rejected, None, "a good revision stays good");
        assert_eq!(decision.waiting, None);
        assert_eq!(judging(&good), None);
        let mut rejected = v2_applied();
        rejected.rejected_revisions = status(None, None, &["v2"]).rejected_revisions;
        assert_eq!(judging(&rejected), None);
        assert_eq!(judging(&v2_applied()), Some("v2"));
        let decision = decide(
            "v2",
            &rejected,
            &[],
            &[workload("v2", failed())],
            &policy(true),
            late,
        );
        assert_eq!(decision.rejected, None, "rejected once");
        assert_eq!(decision.desired, Desired::RollBack("v1".into()));
    }

    #[test]
    fn a_rollout_abort_and_a_failed_workload_reject_once_the_rollouts_way() {
        let decision = decide(
            "v2",
            &v2_applied(),
            &[rollout("v2", false, true)],
            &[workload("v2", failed())],
            &policy(true),
            at(),
        );
        let rejected = decision.rejected.expect("rejected");
        assert_eq!(
            (rejected.reason.as_str(), rejected.rollout.as_deref()),
            ("AnalysisFailed", Some("shop/web"))
        );
    }

    #[test]
    fn timeouts_in_words() {
        let words = |s| words(chrono::Duration::seconds(s));
        assert_eq!(
            [words(300), words(90), words(3600), words(5400)],
            ["5m", "90s", "1h", "90m"]
        );
    }

    fn at_rev(revision: &str) -> GitSyncStatus {
        let mut at = status(Some(revision), None, &[]);
        at.last_attempted_revision = Some(revision.into());
        at
    }

    #[test]
    fn between_syncs_only_a_rollback_is_applied() {
        let rejected = status(None, None, &["v3"]).rejected_revisions;
        let rollback = decided(Desired::RollBack("v2".into()), Some("v3"));
        match step(&rollback, "v3", &at_rev("v3"), &rejected, Fetch::NotDue) {
            Step::Apply {
                revision,
                basis: Basis::RolledBack(rejection),
            } => assert_eq!(
                (revision.as_str(), rejection.revision.as_str()),
                ("v2", "v3")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            step(&rollback, "v3", &at_rev("v2"), &rejected, Fetch::NotDue),
            Step::Nothing,
            "rolled back already"
        );
        assert!(
            matches!(
                step(&rollback, "v3", &at_rev("v2"), &rejected, Fetch::Fetched),
                Step::Apply { .. }
            ),
            "a sync re-applies it, repairing drift"
        );
        // A new head, or one whose apply failed, waits for its time and backoff.
        let fetched = decided(Desired::Fetched("v4".into()), None);
        assert_eq!(
            step(&fetched, "v4", &at_rev("v2"), &rejected, Fetch::NotDue),
            Step::Nothing
        );
        assert_eq!(
            step(&fetched, "v4", &at_rev("v2"), &rejected, Fetch::Failed),
            Step::Apply {
                revision: "v4".into(),
                basis: Basis::Head
            },
            "a head from an earlier fetch is retried when a fetch fails"
        );
        assert_eq!(
            step(&fetched, "v4", &at_rev("v4"), &rejected, Fetch::Failed),
            Step::RecordFetchFailure
        );
        // The rollback itself failed to apply: it waits for its backoff too.
        let mut failed = at_rev("v3");
        failed.last_attempted_revision = Some("v2".into());
        assert_eq!(
            step(&rollback, "v3", &failed, &rejected, Fetch::NotDue),
            Step::Nothing
        );
    }

    #[test]
    fn with_nothing_to_go_back_to_the_rejection_is_recorded_once_per_sync() {
        let rejected = status(None, None, &["v1"]).rejected_revisions;
        let just_now = decided(Desired::Hold, Some("v1"));
        assert!(matches!(
            step(&just_now, "v1", &at_rev("v1"), &rejected, Fetch::NotDue),
            Step::Hold(_)
        ));
        let since = decided(Desired::Hold, None);
        assert_eq!(
            step(&since, "v1", &at_rev("v1"), &rejected, Fetch::NotDue),
            Step::Nothing,
            "a Rollout's change does not push the next sync back"
        );
        assert!(matches!(
            step(&since, "v1", &at_rev("v1"), &rejected, Fetch::Fetched),
            Step::Hold(_)
        ));
        assert_eq!(
            step(&since, "v1", &at_rev("v1"), &rejected, Fetch::Failed),
            Step::RecordFetchFailure
        );
    }

    fn revision() -> impl Strategy<Value = String> {
        (0u8..5).prop_map(|n| format!("v{n}"))
    }

    fn managed() -> impl Strategy<Value = ManagedRollout> {
        (
            prop::option::of(revision()),
            prop::option::of(revision()),
            any::<bool>(),
            any::<bool>(),
            -5i64..5,
        )
            .prop_map(
                |(applied, canary, healthy, aborted, offset)| ManagedRollout {
                    name: "ns/r".into(),
                    applied_revision: applied,
                    canary_revision: canary,
                    aborted_at: aborted.then(|| at() + chrono::Duration::seconds(offset)),
                    healthy,
                    aborted: aborted.then(|| AbortCause {
                        reason: "Aborted".into(),
                        metric: None,
                        value: None,
                    }),
                },
            )
    }

    fn workloads() -> impl Strategy<Value = Vec<Workload>> {
        let health = prop_oneof![
            Just(Health::Healthy),
            Just(Health::Progressing("waiting".into())),
            prop::option::of(-60i64..60).prop_map(|offset| Health::Failed {
                reason: "JobFailed".into(),
                message: "Failed is True".into(),
                since: offset.map(|s| at() + chrono::Duration::seconds(s)),
            }),
        ];
        prop::collection::vec(
            (prop::option::of(revision()), health).prop_map(|(revision, health)| Workload {
                name: "Job ns/j".into(),
                revision,
                health,
            }),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the status and the Rollouts say: a rejected revision is never the
        /// target, never becomes good, and stays rejected; the fetched revision is the
        /// target unless it is rejected or pinned over; deciding twice decides the same.
        #[test]
        fn a_rejected_revision_is_never_applied_again(
            fetched in revision(),
            applied in prop::option::of(revision()),
            good in prop::option::of(revision()),
            rejected in prop::collection::btree_set(revision(), 0..3),
            rollouts in prop::collection::vec(managed(), 0..4),
            on_failure in any::<bool>(),
            pinned in prop::option::of((revision(), revision())),
            attempted in prop::option::of(revision()),
            applied_recorded in any::<bool>(),
            workloads in workloads(),
            elapsed in 0i64..600,
        ) {
            let now = at() + chrono::Duration::seconds(elapsed);
            let rejected: Vec<&str> = rejected.iter().map(String::as_str).collect();
            let mut before = status(applied.as_deref(), good.as_deref(), &rejected);
            before.last_attempted_revision.clone_from(&attempted);
            if let (true, Some(applied)) = (applied_recorded, &applied) {
                before.history.push(crate::api::gitsync::RevisionRecord {
                    revision: applied.clone(),
                    subject: String::new(),
                    committed_at: None,
                    time: to_k8s(at()),
                    outcome: "Applied".into(),
                });
            }
            before.pinned = pinned.map(|(revision, ref_revision)| PinnedRevision {
                revision,
                ref_revision,
                since: to_k8s(at()),
            });
            let decision = decide(&fetched, &before, &rollouts, &workloads, &policy(on_failure), now);
            let mut all_rejected: BTreeSet<String> = rejected.iter().map(|r| (*r).to_owned()).collect();
            if let Some(new) = &decision.rejected {
                prop_assert!(on_failure);
                prop_assert!(all_rejected.insert(new.revision.clone()), "rejected twice");
                prop_assert!(
                    Some(&new.revision) == applied.as_ref() || Some(&new.revision) == attempted.as_ref(),
                    "only a revision weir put in the cluster is rejected"
                );
                // A workload rejects only the revision it carries, by a failure at once, by
                // a wait only past the timeout, counted from a recorded apply.
                let at_revision = |w: &&Workload| w.revision.as_ref() == Some(&new.revision);
                match new.reason.as_str() {
                    "HealthCheckFailed" => {
                        // A failure only from before the revision was applied never
                        // rejects it.
                        let failed = workloads.iter().filter(at_revision).any(|w| matches!(
                            w.health,
                            Health::Failed { since, .. }
                                if since.is_none_or(|since| !applied_recorded || since >= at())
                        ));
                        prop_assert!(failed);
                    }
                    "HealthTimeout" => {
                        prop_assert!(applied_recorded && elapsed >= 300);
                        prop_assert!(workloads.iter().filter(at_revision).any(|w| w.health != Health::Healthy));
                    }
                    _ => prop_assert!(new.rollout.is_some()),
                }
            }
            match &decision.desired {
                Desired::Fetched(r) => {
                    prop_assert_eq!(r, &fetched);
                    prop_assert!(!all_rejected.contains(r));
                }
                Desired::Pinned(r) => {
                    let pin = before.pinned.as_ref().expect("a pin");
                    prop_assert_eq!(&pin.ref_revision, &fetched, "a pin holds only until the ref moves");
                    prop_assert!(!all_rejected.contains(r));
                }
                Desired::RollBack(r) => {
                    prop_assert!(all_rejected.contains(&fetched));
                    prop_assert!(!all_rejected.contains(r));
                    prop_assert_eq!(Some(r), decision.last_good.as_ref());
                }
                Desired::Hold => {
                    prop_assert!(all_rejected.contains(&fetched) && decision.last_good.is_none());
                }
            }
            if let Some(last_good) = &decision.last_good {
                prop_assert!(!all_rejected.contains(last_good), "a rejected revision is good");
                // Newly good: every workload at it healthy, and none unread.
                if decision.last_good != before.last_good_revision {
                    prop_assert!(workloads.iter().all(|w| w.revision.is_some()
                        && (w.revision.as_ref() != Some(last_good) || w.health == Health::Healthy)));
                }
            }
            prop_assert_eq!(decide(&fetched, &before, &rollouts, &workloads, &policy(on_failure), now), decision);
        }
    }
}
