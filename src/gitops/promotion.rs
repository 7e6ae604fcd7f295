//! `spec.promotion`: which revision a GitSync downstream of another (production after
//! staging) may apply. Only a revision the upstream recorded as good, never one rejected
//! upstream or here, after it stayed good upstream for `soak` and, with manual approval,
//! once a person approved it or a later one. Revisions are taken in the order they became
//! good upstream (the order the upstream applied them), never going back. Pure: the glue
//! reads the upstream GitSync and hands its status in.

use chrono::{DateTime, Duration, Utc};

use crate::api::gitsync::{GitSync, GitSyncStatus, GoodRevision, PromotionState};
use crate::time::{from_k8s, to_k8s};

/// How many revisions that became good a status keeps: a downstream GitSync more than this
/// many behind catches up to the newest of them.
pub const MAX_GOOD_REVISIONS: usize = 20;

/// What the gate knows of the upstream and of this GitSync's settings.
#[derive(Clone, Copy, Debug)]
pub struct Gate<'a> {
    /// `namespace/name`, for messages.
    pub upstream: &'a str,
    /// None: the upstream cannot be read (missing, or forbidden to this GitSync's identity):
    /// `unreadable` says why.
    pub upstream_status: Option<&'a GitSyncStatus>,
    pub unreadable: Option<&'a str>,
    pub soak: Duration,
    pub manual: bool,
    /// `weir.dev/promote-revision` on this GitSync.
    pub approved: Option<&'a str>,
    /// This GitSync's `namespace/name`, for the command a message suggests.
    pub name: &'a str,
}

/// The gate's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Promoted {
    /// The revision to apply (the newest that may be).
    Revision(String),
    /// Nothing new may be applied: hold what is applied. `pending` is the next revision
    /// and what it waits for, when there is one.
    Hold { pending: Option<PromotionState> },
}

/// Notes that `revision` became good at `now` (once: a revision already the newest noted
/// keeps its time), keeping the newest [`MAX_GOOD_REVISIONS`].
pub fn note_good(status: &mut GitSyncStatus, revision: &str, now: DateTime<Utc>) {
    if status
        .good_revisions
        .last()
        .is_some_and(|g| g.revision == revision)
    {
        return;
    }
    // Good again after something newer (a rollback to it): it moves to the end, counted
    // from now, so the newest entry is always the last good revision.
    status.good_revisions.retain(|g| g.revision != revision);
    status.good_revisions.push(GoodRevision {
        revision: revision.to_owned(),
        since: to_k8s(now),
    });
    let excess = status
        .good_revisions
        .len()
        .saturating_sub(MAX_GOOD_REVISIONS);
    status.good_revisions.drain(..excess);
}

/// The revision `own` may apply now, by `gate`.
pub fn choose(gate: &Gate<'_>, own: &GitSyncStatus, now: DateTime<Utc>) -> Promoted {
    let Some(upstream) = gate.upstream_status else {
        let why = gate.unreadable.unwrap_or("it does not exist");
        return Promoted::Hold {
            pending: Some(PromotionState {
                revision: String::new(),
                waiting_for: format!("upstream GitSync {} cannot be read: {why}", gate.upstream),
                until: None,
            }),
        };
    };
    let rejected = |revision: &str| {
        upstream
            .rejected_revisions
            .iter()
            .chain(&own.rejected_revisions)
            .any(|r| r.revision == revision)
    };
    // Never back: only revisions that became good upstream after the one applied here (found
    // even when it was rejected since, so a rejection here rolls back on this GitSync's own
    // terms rather than to an older revision it never ran).
    let applied = own.last_applied_revision.as_deref();
    let after = applied
        .and_then(|a| upstream.good_revisions.iter().position(|g| g.revision == a))
        .map_or(0, |at| at + 1);
    let candidates: Vec<(usize, &GoodRevision)> = upstream
        .good_revisions
        .iter()
        .enumerate()
        .skip(after)
        .filter(|(_, g)| !rejected(&g.revision))
        .collect();
    let approved_up_to = gate.approved.and_then(|a| {
        upstream
            .good_revisions
            .iter()
            .position(|g| g.revision == a && !rejected(a))
    });
    let soaked_at = |g: &GoodRevision| from_k8s(&g.since) + gate.soak;
    let ready = candidates.iter().rev().find(|(index, g)| {
        let approved = !gate.manual || approved_up_to.is_some_and(|up_to| *index <= up_to);
        approved && soaked_at(g) <= now
    });
    if let Some((_, g)) = ready {
        return Promoted::Revision(g.revision.clone());
    }
    // Nothing may go yet: the oldest waiting revision says what it waits for.
    let pending = candidates.first().map(|(_, g)| {
        let until = soaked_at(g);
        if until > now {
            PromotionState {
                revision: g.revision.clone(),
                waiting_for: format!(
                    "soaking: good upstream in {} since {}, applied here from {}",
                    gate.upstream,
                    from_k8s(&g.since).to_rfc3339(),
                    until.to_rfc3339()
                ),
                until: Some(to_k8s(until)),
            }
        } else {
            PromotionState {
                revision: g.revision.clone(),
                waiting_for: format!(
                    "approval: kubectl weir promote gitsync/{} --revision {} (or annotate it {}={})",
                    gate.name.rsplit('/').next().unwrap_or(gate.name),
                    g.revision,
                    crate::api::contract::PROMOTE_REVISION_ANNOTATION,
                    g.revision
                ),
                until: None,
            }
        }
    });
    Promoted::Hold { pending }
}

/// The GitSyncs that promote from `changed`: a revision of it becoming good (or rejected) is
/// news for them.
pub fn promoting_from<'a>(
    all: &'a [std::sync::Arc<GitSync>],
    changed: &'a GitSync,
) -> impl Iterator<Item = &'a GitSync> + 'a {
    all.iter().map(AsRef::as_ref).filter(move |sync| {
        sync.spec.promotion.as_ref().is_some_and(|p| {
            let namespace = p
                .from
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(sync.metadata.namespace.as_deref());
            changed.metadata.name.as_deref() == Some(p.from.git_sync.as_str())
                && changed.metadata.namespace.as_deref() == namespace
        })
    })
}

/// The paths of the GitSyncs downstream of `sync` (promoting from it, or from one that
/// does, and so on) that follow the same repository: a revert of a revision rejected here
/// restores them too. Each GitSync once; the walk ends with the GitSyncs.
pub fn downstream_paths(all: &[std::sync::Arc<GitSync>], sync: &GitSync) -> Vec<String> {
    let mut paths = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    seen.insert((sync.metadata.namespace.clone(), sync.metadata.name.clone()));
    let mut next = vec![sync];
    while let Some(at) = next.pop() {
        for down in promoting_from(all, at) {
            let key = (down.metadata.namespace.clone(), down.metadata.name.clone());
            if down.spec.url != sync.spec.url || !seen.insert(key) {
                continue;
            }
            if !paths.contains(&down.spec.path) && down.spec.path != sync.spec.path {
                paths.push(down.spec.path.clone());
            }
            next.push(down);
        }
    }
    paths
}

#[cfg(test)]
mod tests;
