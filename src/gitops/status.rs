//! What a sync attempt makes of a GitSync's status: revisions, history, inventory and the
//! Ready / Stalled conditions. Pure: the clock is an input, and an attempt that
//! changes nothing leaves the status equal, so nothing is written.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::error::SyncError;
use super::rollback::{Basis, applied_record, cause};
use crate::api::contract::ROLLBACK_TO_ANNOTATION;
use crate::api::gitsync::{GitSyncStatus, InventoryEntry, RejectedRevision, RevisionRecord};
use crate::conditions;
use crate::time::to_k8s;

pub const READY: &str = "Ready";
pub const STALLED: &str = "Stalled";
/// Ready's reason while a new revision waits for the GitSyncs of `spec.dependsOn`.
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
/// True while weir is still working towards Git: after a failure that a retry may mend
/// (an unreachable remote, a refused apply). Absent once applied, or once stalled.
pub const RECONCILING: &str = "Reconciling";
/// Whether Git and the cluster agree again after a rollback: the revert commit's push.
pub const REVERT_PUSHED: &str = "RevertPushed";
/// Revisions kept in `status.history`.
pub const HISTORY: usize = 10;
/// Rejected revisions kept in `status.rejectedRevisions`: the oldest are forgotten, and
/// would be applied again only if the ref ever pointed back at one.
pub const REJECTED: usize = 50;

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    InvalidSpec(String),
    FetchFailed(SyncError),
    RenderFailed {
        revision: String,
        subject: String,
        /// When it was committed, when the clone says.
        committed: Option<Time>,
        message: String,
    },
    ApplyFailed {
        revision: String,
        subject: String,
        /// When it was committed, when the clone says.
        committed: Option<Time>,
        inventory: Vec<InventoryEntry>,
        /// Forbidden (weir's confinement, or RBAC for the identity it acts as): reason
        /// `Forbidden`. Retried, since a RoleBinding may come, but not as soon as an outage.
        error: SyncError,
    },
    Applied {
        revision: String,
        subject: String,
        /// When it was committed, when the clone says.
        committed: Option<Time>,
        inventory: Vec<InventoryEntry>,
        objects: usize,
        /// Objects an apply was sent for: they differed from the revision (new, changed in
        /// Git, or drifted in the cluster).
        changed: usize,
        basis: Basis,
    },
    /// The ref points at a rejected revision and no revision was ever good: nothing to
    /// roll back to, so nothing is applied.
    Held(RejectedRevision),
    /// A new revision waits for the GitSyncs of `spec.dependsOn`: why each is not ready.
    Waiting {
        revision: String,
        waiting_for: Vec<String>,
    },
}

impl Attempt {
    /// The bounded reason, for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Attempt::InvalidSpec(_) => "InvalidSpec",
            Attempt::FetchFailed(_) => "FetchFailed",
            Attempt::RenderFailed { .. } => "RenderFailed",
            Attempt::ApplyFailed { error, .. } if error.is_forbidden() => "Forbidden",
            Attempt::ApplyFailed { .. } => "ApplyFailed",
            Attempt::Applied { basis, .. } => match basis {
                Basis::Head => "Applied",
                Basis::RolledBack(_) => "RolledBack",
                Basis::Pinned { .. } => "Pinned",
            },
            Attempt::Held(_) => "Rejected",
            Attempt::Waiting { .. } => DEPENDENCY_NOT_READY,
        }
    }

    /// A failure that waits for someone to fix something (forbidden, missing, invalid),
    /// not one that may pass by itself (an outage, a timeout).
    pub fn waits_for_a_fix(&self) -> bool {
        match self {
            Attempt::FetchFailed(error) | Attempt::ApplyFailed { error, .. } => {
                !error.is_transient()
            }
            _ => false,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Attempt::InvalidSpec(message) => message.clone(),
            Attempt::FetchFailed(error) => error.to_string(),
            Attempt::RenderFailed {
                revision, message, ..
            } => {
                format!(
                    "revision {}: {message}; nothing was applied",
                    short(revision)
                )
            }
            Attempt::ApplyFailed {
                revision, error, ..
            } => {
                format!("revision {}: {error}", short(revision))
            }
            Attempt::Applied {
                revision,
                objects,
                basis,
                ..
            } => match basis {
                Basis::Head => format!("applied revision {} ({objects} objects)", short(revision)),
                Basis::RolledBack(rejected) => format!(
                    "rolled back to revision {}, the last good one ({objects} objects): revision {} was rejected ({}); it is never applied again, and a newer commit resumes syncing",
                    short(revision),
                    short(&rejected.revision),
                    cause(rejected)
                ),
                Basis::Pinned { head } => format!(
                    "holding revision {} ({objects} objects), pinned by {ROLLBACK_TO_ANNOTATION} while the ref stays at {}; a newer commit resumes syncing",
                    short(revision),
                    short(head)
                ),
            },
            Attempt::Waiting {
                revision,
                waiting_for,
            } => format!(
                "revision {} waits for its dependencies (spec.dependsOn): {}",
                short(revision),
                waiting_for.join("; ")
            ),
            Attempt::Held(rejected) => format!(
                "revision {} was rejected ({}) and no earlier revision was ever good: nothing was rolled back, its Rollouts stay on their stable versions; a newer commit resumes syncing",
                short(&rejected.revision),
                cause(rejected)
            ),
        }
    }
}

/// Twelve characters of a revision (cut at a character: a status edited by hand may hold
/// any text).
pub fn short(revision: &str) -> &str {
    revision
        .char_indices()
        .nth(12)
        .map_or(revision, |(at, _)| &revision[..at])
}

/// Records an attempt. Transition times and history entries change only when the outcome
/// does, so re-applying the same revision every interval writes nothing.
pub fn record(
    status: &mut GitSyncStatus,
    attempt: &Attempt,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let time = to_k8s(now);
    let reason = attempt.reason();
    let message = attempt.message();
    let ok = matches!(attempt, Attempt::Applied { .. });
    // Only a change of the spec or a new revision can get past these.
    let stalled = matches!(
        attempt,
        Attempt::InvalidSpec(_) | Attempt::RenderFailed { .. } | Attempt::Held(_)
    );
    status.observed_generation = generation;
    conditions::set(
        &mut status.conditions,
        READY,
        ok,
        reason,
        &message,
        &time,
        generation,
    );
    if stalled {
        conditions::set(
            &mut status.conditions,
            STALLED,
            true,
            reason,
            &message,
            &time,
            generation,
        );
    } else {
        conditions::remove(&mut status.conditions, STALLED);
    }
    retrying(
        status,
        !(ok || stalled),
        reason,
        &message,
        &time,
        generation,
    );
    let (revision, subject, committed) = match attempt {
        Attempt::RenderFailed {
            revision,
            subject,
            committed,
            ..
        }
        | Attempt::ApplyFailed {
            revision,
            subject,
            committed,
            ..
        }
        | Attempt::Applied {
            revision,
            subject,
            committed,
            ..
        } => (revision, subject, committed),
        Attempt::InvalidSpec(_)
        | Attempt::FetchFailed(_)
        | Attempt::Held(_)
        | Attempt::Waiting { .. } => return,
    };
    status.last_attempted_revision = Some(revision.clone());
    match attempt {
        Attempt::Applied { inventory, .. } => {
            status.last_applied_revision = Some(revision.clone());
            status.inventory.clone_from(inventory);
        }
        Attempt::ApplyFailed { inventory, .. } => status.inventory.clone_from(inventory),
        _ => {}
    }
    push_history(
        status,
        RevisionRecord {
            revision: revision.clone(),
            subject: subject.clone(),
            committed_at: committed.clone(),
            time,
            outcome: reason.to_owned(),
        },
    );
}

/// Records a rejection: kept before anything is rolled back, so that a restart in between
/// still knows the revision is out.
pub fn reject(status: &mut GitSyncStatus, rejected: &RejectedRevision, subject: &str) {
    if status
        .rejected_revisions
        .iter()
        .any(|r| r.revision == rejected.revision)
    {
        return;
    }
    // What came from outside (a measurement's value) is cut, so the rejection always fits.
    let mut kept = rejected.clone();
    let bounded = |text: &Option<String>| {
        text.as_deref()
            .map(|v| crate::conditions::bounded_text(v, SUBJECT_CHARS))
    };
    kept.value = bounded(&kept.value);
    kept.message = bounded(&kept.message);
    status.rejected_revisions.push(kept);
    let excess = status.rejected_revisions.len().saturating_sub(REJECTED);
    status.rejected_revisions.drain(..excess);
    push_history(
        status,
        RevisionRecord {
            revision: rejected.revision.clone(),
            subject: subject.to_owned(),
            committed_at: None,
            time: rejected.rejected_at.clone(),
            outcome: "Rejected".into(),
        },
    );
}

/// How pushing the revert of a rejected revision went.
#[derive(Clone, Debug, PartialEq)]
pub enum Revert {
    Pushed {
        rejected: String,
        commit: String,
        branch: String,
    },
    /// The remote said no (the branch moved, a hook refused): a newer commit may be on the
    /// way, and it wins.
    Refused {
        rejected: String,
        message: String,
    },
    Failed {
        rejected: String,
        message: String,
    },
    /// Nothing to push: the rejected revision left what weir reads as the good one had it.
    Unneeded {
        rejected: String,
        good: String,
    },
}

/// Records a write-back; the revert commit goes with its rejected revision, so it is pushed
/// once.
pub fn wrote_back(
    status: &mut GitSyncStatus,
    outcome: &Revert,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let time = to_k8s(now);
    let (ok, reason, message) = match outcome {
        Revert::Pushed {
            rejected,
            commit,
            branch,
        } => {
            undone_by(status, rejected, commit);
            (
                true,
                "Pushed",
                format!(
                    "pushed {} to branch {branch}, reverting rejected revision {}",
                    short(commit),
                    short(rejected)
                ),
            )
        }
        Revert::Unneeded { rejected, good } => {
            undone_by(status, rejected, good);
            (
                true,
                "NothingToRevert",
                format!(
                    "rejected revision {} left spec.path as the last good revision {} had it: Git already agrees with the cluster",
                    short(rejected),
                    short(good)
                ),
            )
        }
        Revert::Refused { rejected, message } => (
            false,
            "PushRefused",
            format!(
                "the remote refused the revert of rejected revision {}: {message}; the cluster stays rolled back, the push is retried with backoff, and a newer commit on the branch wins",
                short(rejected)
            ),
        ),
        Revert::Failed { rejected, message } => (
            false,
            "PushFailed",
            format!(
                "pushing the revert of rejected revision {} failed: {message}; the cluster stays rolled back, and the push is retried with backoff",
                short(rejected)
            ),
        ),
    };
    conditions::set(
        &mut status.conditions,
        REVERT_PUSHED,
        ok,
        reason,
        &message,
        &time,
        generation,
    );
    retrying(status, !ok, reason, &message, &time, generation);
}

/// Reconciling: set while a retry may mend `reason`, gone otherwise.
fn retrying(
    status: &mut GitSyncStatus,
    on: bool,
    reason: &str,
    message: &str,
    time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    generation: Option<i64>,
) {
    if on {
        conditions::set(
            &mut status.conditions,
            RECONCILING,
            true,
            "Retrying",
            &format!("{reason}: {message}"),
            time,
            generation,
        );
    } else {
        conditions::remove(&mut status.conditions, RECONCILING);
    }
}

/// Records the commit that undid a rejected revision in Git.
fn undone_by(status: &mut GitSyncStatus, rejected: &str, commit: &str) {
    if let Some(entry) = status
        .rejected_revisions
        .iter_mut()
        .find(|r| r.revision == rejected)
    {
        entry.revert = Some(commit.to_owned());
    }
}

/// Drops a failed write-back's condition once nothing is left to push.
pub fn forget_refused_write_back(status: &mut GitSyncStatus) {
    status
        .conditions
        .retain(|c| c.type_ != REVERT_PUSHED || c.status == "True");
}

/// The longest commit subject or measurement value kept in a status, in characters: a
/// commit subject is the committer's to choose (one of 1.6 MB made every status write fail,
/// the rejection before a rollback included).
pub const SUBJECT_CHARS: usize = 256;

fn push_history(status: &mut GitSyncStatus, mut record: RevisionRecord) {
    record.subject = crate::conditions::bounded_text(&record.subject, SUBJECT_CHARS);
    let last = status.history.last();
    if last.is_none_or(|l| l.revision != record.revision || l.outcome != record.outcome) {
        status.history.push(record);
        while status.history.len() > HISTORY {
            // The oldest goes, unless it is when the applied revision was applied: the wait
            // for its workloads' health is timed from that record.
            let oldest = match applied_record(status) {
                Some(0) => 1,
                _ => 0,
            };
            status.history.remove(oldest);
        }
    }
}

/// What the applied revision's workloads still wait for, shown after Ready's message; the
/// words are weir's and a workload's, bounded, on one line.
pub const WAITING: &str = "; waiting for ";

/// Says in Ready (when it is True: applied) what the applied revision's workloads still
/// wait for, and sets Reconciling (reason `Progressing`) while they do, so tools that read
/// conditions the kstatus way see the GitSync in progress. Nothing changes while the words
/// do not, so waiting costs a write only when what it waits for moves.
pub fn waiting_for(
    status: &mut GitSyncStatus,
    waiting: Option<&str>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let Some(ready) = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.status == "True")
        .cloned()
    else {
        return;
    };
    let base = ready
        .message
        .split_once(WAITING)
        .map_or(ready.message.as_str(), |(base, _)| base);
    let message = match waiting {
        Some(waiting) => format!("{base}{WAITING}{waiting}"),
        None => base.to_owned(),
    };
    let time = to_k8s(now);
    conditions::set(
        &mut status.conditions,
        READY,
        true,
        &ready.reason,
        &message,
        &time,
        generation,
    );
    let progressing = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == RECONCILING && c.reason == PROGRESSING)
    };
    match waiting {
        Some(waiting) => {
            conditions::set(
                &mut status.conditions,
                RECONCILING,
                true,
                PROGRESSING,
                &format!("waiting for {waiting}"),
                &time,
                generation,
            );
        }
        None if progressing(status) => conditions::remove(&mut status.conditions, RECONCILING),
        None => {}
    }
}

/// Reconciling's reason while the applied revision's workloads are not healthy yet.
pub const PROGRESSING: &str = "Progressing";

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn only_failures_that_wait_for_a_fix_say_so() {
        let failed = |error: SyncError| Attempt::ApplyFailed {
            revision: "1".repeat(40),
            subject: String::new(),
            committed: None,
            inventory: Vec::new(),
            error,
        };
        assert!(failed(SyncError::forbidden("refused")).waits_for_a_fix());
        assert!(failed(SyncError::invalid("not found")).waits_for_a_fix());
        assert!(!failed(SyncError::transient("unreachable")).waits_for_a_fix());
        assert!(Attempt::FetchFailed(SyncError::invalid("no branch")).waits_for_a_fix());
        assert!(!Attempt::FetchFailed(SyncError::transient("reset")).waits_for_a_fix());
        assert!(!Attempt::InvalidSpec("spec.url".into()).waits_for_a_fix());
        assert_eq!(
            failed(SyncError::forbidden("refused")).reason(),
            "Forbidden"
        );
        assert_eq!(failed(SyncError::invalid("bad")).reason(), "ApplyFailed");
        assert_eq!(
            Attempt::FetchFailed(SyncError::invalid("no branch")).reason(),
            "FetchFailed"
        );
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("time")
    }

    fn applied(revision: &str) -> Attempt {
        Attempt::Applied {
            revision: revision.into(),
            subject: format!("commit {revision}"),
            committed: None,
            inventory: vec![InventoryEntry {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some("ns".into()),
                name: "a".into(),
            }],
            objects: 1,
            changed: 0,
            basis: Basis::Head,
        }
    }

    fn condition<'s>(status: &'s GitSyncStatus, kind: &str) -> Option<(&'s str, &'s str)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    #[test]
    fn a_huge_commit_subject_or_value_never_makes_the_status_too_big() {
        let huge = "x".repeat(1_600_000);
        let mut status = GitSyncStatus::default();
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 6, 0, 0)
            .single()
            .unwrap_or_default();
        record(
            &mut status,
            &Attempt::RenderFailed {
                revision: "a".repeat(40),
                subject: huge.clone(),
                committed: None,
                message: huge.clone(),
            },
            Some(1),
            now,
        );
        let rejected = RejectedRevision {
            revision: "b".repeat(40),
            reason: "AnalysisFailed".into(),
            rollout: Some("web".into()),
            object: None,
            message: None,
            metric: Some("m".into()),
            value: Some(huge.clone()),
            rejected_at: to_k8s(now),
            revert: None,
        };
        reject(&mut status, &rejected, &huge);
        let written = serde_json::to_string(&status).unwrap_or_default();
        assert!(written.len() < 16_000, "{} bytes", written.len());
        assert!(
            status
                .history
                .iter()
                .all(|h| h.subject.chars().count() <= SUBJECT_CHARS)
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.message.chars().count() <= crate::conditions::MESSAGE_CHARS)
        );
    }

    #[test]
    fn the_same_outcome_again_changes_nothing() {
        let mut status = GitSyncStatus::default();
        record(&mut status, &applied("aaa"), Some(1), at(0));
        let once = status.clone();
        record(&mut status, &applied("aaa"), Some(1), at(60));
        assert_eq!(status, once, "re-applying every interval writes nothing");
        assert_eq!(status.history.len(), 1);
        assert_eq!(condition(&status, READY), Some(("True", "Applied")));
        assert_eq!(status.last_applied_revision.as_deref(), Some("aaa"));
    }

    #[test]
    fn failures_keep_the_last_applied_revision_and_say_why() {
        let mut status = GitSyncStatus::default();
        record(&mut status, &applied("aaa"), Some(1), at(0));
        let broken = Attempt::RenderFailed {
            revision: "bbb".into(),
            subject: "broken".into(),
            committed: None,
            message: "apps/a.yaml (document 0): kind is missing".into(),
        };
        record(&mut status, &broken, Some(1), at(10));
        assert_eq!(status.last_applied_revision.as_deref(), Some("aaa"));
        assert_eq!(status.last_attempted_revision.as_deref(), Some("bbb"));
        assert_eq!(condition(&status, READY), Some(("False", "RenderFailed")));
        assert_eq!(condition(&status, STALLED), Some(("True", "RenderFailed")));
        assert_eq!(
            status.inventory.len(),
            1,
            "nothing was applied: the inventory stands"
        );
        assert_eq!(
            condition(&status, RECONCILING),
            None,
            "stalled: a retry cannot mend it"
        );
        let unreachable = Attempt::FetchFailed(SyncError::transient(
            "connecting to the repository: refused",
        ));
        record(&mut status, &unreachable, Some(1), at(20));
        assert_eq!(condition(&status, READY), Some(("False", "FetchFailed")));
        assert_eq!(
            condition(&status, STALLED),
            None,
            "a fetch may work next time"
        );
        assert_eq!(condition(&status, RECONCILING), Some(("True", "Retrying")));
        assert_eq!(status.last_attempted_revision.as_deref(), Some("bbb"));
        record(&mut status, &applied("ccc"), Some(1), at(30));
        assert_eq!(condition(&status, RECONCILING), None);
        assert_eq!(condition(&status, STALLED), None);
        let outcomes: Vec<_> = status
            .history
            .iter()
            .map(|h| (h.revision.as_str(), h.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("aaa", "Applied"),
                ("bbb", "RenderFailed"),
                ("ccc", "Applied")
            ]
        );
    }

    fn rejection(revision: &str) -> RejectedRevision {
        RejectedRevision {
            revision: revision.into(),
            reason: "AnalysisFailed".into(),
            rollout: Some("shop/web".into()),
            object: None,
            message: None,
            metric: Some("error-rate".into()),
            value: Some("0.31".into()),
            rejected_at: to_k8s(at(5)),
            revert: None,
        }
    }

    #[test]
    fn a_rejection_is_recorded_once_and_its_revert_goes_with_it() {
        let mut status = GitSyncStatus::default();
        record(&mut status, &applied("v3"), Some(1), at(0));
        reject(&mut status, &rejection("v3"), "web 3");
        reject(&mut status, &rejection("v3"), "web 3");
        assert_eq!(status.rejected_revisions.len(), 1);
        assert_eq!(
            status.history.last().map(|h| h.outcome.as_str()),
            Some("Rejected")
        );
        let rolled_back = Attempt::Applied {
            revision: "v2".into(),
            subject: "web 2".into(),
            committed: None,
            inventory: vec![],
            objects: 6,
            changed: 0,
            basis: Basis::RolledBack(rejection("v3")),
        };
        record(&mut status, &rolled_back, Some(1), at(10));
        let (ready, reason) = condition(&status, READY).expect("Ready");
        assert_eq!((ready, reason), ("True", "RolledBack"));

        let refused = Revert::Refused {
            rejected: "v3".into(),
            message: "branch main refused".into(),
        };
        wrote_back(&mut status, &refused, Some(1), at(11));
        assert_eq!(
            condition(&status, REVERT_PUSHED),
            Some(("False", "PushRefused"))
        );
        assert_eq!(condition(&status, RECONCILING), Some(("True", "Retrying")));
        let pushed = Revert::Pushed {
            rejected: "v3".into(),
            commit: "r3".into(),
            branch: "main".into(),
        };
        wrote_back(&mut status, &pushed, Some(1), at(12));
        assert_eq!(status.rejected_revisions[0].revert.as_deref(), Some("r3"));
        assert_eq!(condition(&status, REVERT_PUSHED), Some(("True", "Pushed")));
        assert_eq!(condition(&status, RECONCILING), None);
        forget_refused_write_back(&mut status);
        assert!(
            condition(&status, REVERT_PUSHED).is_some(),
            "a pushed revert is kept"
        );
        let message = rolled_back.message();
        assert!(
            message.contains("Rollout shop/web: AnalysisFailed, metric error-rate = 0.31"),
            "{message}"
        );
    }

    #[test]
    fn history_keeps_when_the_applied_revision_was_applied() {
        let mut status = GitSyncStatus::default();
        record(&mut status, &applied("good"), Some(1), at(0));
        // Newer heads that never apply: the applied revision's record is the oldest.
        for n in 0..(HISTORY + 5) {
            let broken = Attempt::RenderFailed {
                revision: format!("r{n}"),
                subject: String::new(),
                committed: None,
                message: "bad".into(),
            };
            record(&mut status, &broken, Some(1), at(1 + n as i64));
        }
        assert_eq!(status.history.len(), HISTORY);
        assert_eq!(
            (
                status.history[0].revision.as_str(),
                status.history[0].time.clone()
            ),
            ("good", to_k8s(at(0))),
            "the health of the applied revision is timed from this record"
        );
        assert_eq!(status.history[1].revision, "r6", "the oldest others went");
        assert_eq!(
            status.history[HISTORY - 1].revision,
            format!("r{}", HISTORY + 4)
        );
    }

    #[test]
    fn ready_says_what_the_applied_revision_waits_for_and_only_changes_with_it() {
        let mut status = GitSyncStatus::default();
        record(&mut status, &applied("aaa"), Some(1), at(0));
        let applied_at = status.conditions[0].last_transition_time.clone();
        waiting_for(
            &mut status,
            Some("Deployment ns/web: 1 of 3 replicas available"),
            Some(1),
            at(5),
        );
        let (ready, reason, message) = status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
            .expect("Ready");
        assert_eq!(
            (ready, reason, message),
            (
                "True",
                "Applied",
                "applied revision aaa (1 objects); waiting for Deployment ns/web: 1 of 3 replicas available"
            )
        );
        assert_eq!(condition(&status, RECONCILING), Some(("True", PROGRESSING)));
        let once = status.clone();
        waiting_for(
            &mut status,
            Some("Deployment ns/web: 1 of 3 replicas available"),
            Some(1),
            at(10),
        );
        assert_eq!(status, once, "the same wait writes nothing");
        waiting_for(
            &mut status,
            Some("Deployment ns/web: 2 of 3 replicas available"),
            Some(1),
            at(15),
        );
        let message = |s: &GitSyncStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == READY)
                .map(|c| c.message.clone())
                .unwrap_or_default()
        };
        assert!(
            message(&status).ends_with("waiting for Deployment ns/web: 2 of 3 replicas available")
        );
        // Re-applied while waiting: the attempt's words, then the wait once.
        record(&mut status, &applied("aaa"), Some(1), at(20));
        waiting_for(
            &mut status,
            Some("Deployment ns/web: 2 of 3 replicas available"),
            Some(1),
            at(20),
        );
        assert_eq!(message(&status).matches(WAITING).count(), 1);
        waiting_for(&mut status, None, Some(1), at(25));
        assert_eq!(message(&status), "applied revision aaa (1 objects)");
        assert_eq!(condition(&status, RECONCILING), None);
        assert_eq!(
            status.conditions[0].last_transition_time, applied_at,
            "Ready stayed True throughout"
        );
        // A failure is shown as it is, and its Reconciling kept.
        let failed = Attempt::FetchFailed(SyncError::transient("unreachable"));
        record(&mut status, &failed, Some(1), at(30));
        let before = status.clone();
        waiting_for(
            &mut status,
            Some("Job ns/migrate: not complete"),
            Some(1),
            at(31),
        );
        assert_eq!(status, before);
        waiting_for(&mut status, None, Some(1), at(32));
        assert_eq!(condition(&status, RECONCILING), Some(("True", "Retrying")));
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut status = GitSyncStatus::default();
        for n in 0..(HISTORY + 5) {
            record(
                &mut status,
                &applied(&format!("r{n}")),
                Some(1),
                at(n as i64),
            );
        }
        assert_eq!(status.history.len(), HISTORY);
        assert_eq!(status.history[0].revision, "r5");
    }
}
