//! What a sync attempt makes of a GitSync's status: revisions, history, inventory and the
//! Ready / Stalled conditions. Pure: the clock is an input, and an attempt that
//! changes nothing leaves the status equal, so nothing is written.

use chrono::{DateTime, Utc};

use crate::api::gitsync::{GitSyncStatus, InventoryEntry, RevisionRecord};
use crate::conditions;
use crate::time::to_k8s;

pub const READY: &str = "Ready";
pub const STALLED: &str = "Stalled";
/// True while weir is still working towards Git: after a failure that a retry may mend
/// (an unreachable remote, a refused apply). Absent once applied, or once stalled.
pub const RECONCILING: &str = "Reconciling";
/// Revisions kept in `status.history`.
pub const HISTORY: usize = 10;

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    InvalidSpec(String),
    FetchFailed(String),
    RenderFailed {
        revision: String,
        subject: String,
        message: String,
    },
    ApplyFailed {
        revision: String,
        subject: String,
        inventory: Vec<InventoryEntry>,
        message: String,
    },
    Applied {
        revision: String,
        subject: String,
        inventory: Vec<InventoryEntry>,
        objects: usize,
    },
}

impl Attempt {
    /// The bounded reason, for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Attempt::InvalidSpec(_) => "InvalidSpec",
            Attempt::FetchFailed(_) => "FetchFailed",
            Attempt::RenderFailed { .. } => "RenderFailed",
            Attempt::ApplyFailed { .. } => "ApplyFailed",
            Attempt::Applied { .. } => "Applied",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Attempt::InvalidSpec(message) | Attempt::FetchFailed(message) => message.clone(),
            Attempt::RenderFailed {
                revision, message, ..
            } => {
                format!(
                    "revision {}: {message}; nothing was applied",
                    short(revision)
                )
            }
            Attempt::ApplyFailed {
                revision, message, ..
            } => {
                format!("revision {}: {message}", short(revision))
            }
            Attempt::Applied {
                revision, objects, ..
            } => {
                format!("applied revision {} ({objects} objects)", short(revision))
            }
        }
    }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
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
        Attempt::InvalidSpec(_) | Attempt::RenderFailed { .. }
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
    if ok || stalled {
        conditions::remove(&mut status.conditions, RECONCILING);
    } else {
        conditions::set(
            &mut status.conditions,
            RECONCILING,
            true,
            "Retrying",
            &format!("{reason}: {message}"),
            &time,
            generation,
        );
    }
    let (revision, subject) = match attempt {
        Attempt::RenderFailed {
            revision, subject, ..
        }
        | Attempt::ApplyFailed {
            revision, subject, ..
        }
        | Attempt::Applied {
            revision, subject, ..
        } => (revision, subject),
        Attempt::InvalidSpec(_) | Attempt::FetchFailed(_) => return,
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
    let last = status.history.last();
    if last.is_none_or(|l| l.revision != *revision || l.outcome != reason) {
        status.history.push(RevisionRecord {
            revision: revision.clone(),
            subject: subject.clone(),
            time,
            outcome: reason.to_owned(),
        });
        let excess = status.history.len().saturating_sub(HISTORY);
        status.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("time")
    }

    fn applied(revision: &str) -> Attempt {
        Attempt::Applied {
            revision: revision.into(),
            subject: format!("commit {revision}"),
            inventory: vec![InventoryEntry {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some("ns".into()),
                name: "a".into(),
            }],
            objects: 1,
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
        let unreachable = Attempt::FetchFailed("connecting to the repository: refused".into());
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
