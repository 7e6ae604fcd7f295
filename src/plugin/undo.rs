//! `kubectl weir undo`: which version to go back to. Pure.
//!
//! A Rollout a GitSync manages goes back through the GitSync (it pins a revision with
//! `weir.dev/rollback-to`), so Git stays the source of truth; a Rollout applied by hand gets
//! an earlier ReplicaSet's template back, as Argo Rollouts' undo does.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use super::show::short;
use crate::api::analysis::AnalysisRun;
use crate::api::contract::{CANARY_HASH_LABEL, POD_TEMPLATE_HASH_LABEL};
use crate::api::gitsync::GitSyncStatus;
use crate::api::rollout::Rollout;

/// The revision to pin: `to` (a full SHA, or a prefix of a revision the GitSync knows), or
/// else the newest revision in its history before the one applied now.
pub fn revision_to_pin(status: &GitSyncStatus, to: Option<&str>) -> Result<String, String> {
    let applied = status.last_applied_revision.as_deref();
    let rejected = |revision: &str| {
        status
            .rejected_revisions
            .iter()
            .find(|r| r.revision == revision)
    };
    let revision = match to {
        Some(wanted) => {
            let wanted = wanted.trim().to_ascii_lowercase();
            let mut known: Vec<&str> = status
                .history
                .iter()
                .map(|h| h.revision.as_str())
                .chain(status.last_good_revision.as_deref())
                .filter(|r| r.starts_with(&wanted))
                .collect();
            known.sort_unstable();
            known.dedup();
            match known.as_slice() {
                [one] => (*one).to_owned(),
                [] if crate::gitops::is_full_sha(&wanted) => {
                    wanted
                }
                [] => {
                    return Err(format!(
                        "revision {wanted} is not in the GitSync's history; give the full 40-digit SHA"
                    ));
                }
                many => {
                    return Err(format!(
                        "{wanted} matches {} revisions ({}); give more digits",
                        many.len(),
                        many.iter().map(|r| short(r)).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        None => status
            .history
            .iter()
            .rev()
            .filter(|h| matches!(h.outcome.as_str(), "Applied" | "RolledBack" | "Pinned"))
            .map(|h| h.revision.clone())
            .find(|r| Some(r.as_str()) != applied && rejected(r).is_none())
            .ok_or_else(|| {
                "the GitSync's history holds no earlier revision to go back to; name one with --to-revision".to_owned()
            })?,
    };
    if let Some(rejected) = rejected(&revision) {
        return Err(format!(
            "revision {} was rejected ({}); weir never applies it again",
            short(&revision),
            rejected.reason
        ));
    }
    if Some(revision.as_str()) == applied {
        return Err(format!(
            "revision {} is the one applied now",
            short(&revision)
        ));
    }
    Ok(revision)
}

/// What `undo` puts back without a GitSync.
#[derive(Clone, Debug, PartialEq)]
pub struct Restore {
    pub hash: String,
    pub template: PodTemplateSpec,
    /// The template exactly as the Rollout had it; false for a ReplicaSet made before weir
    /// kept templates, whose copy carries the API server's defaults and so hashes as a new
    /// version (it goes through the canary steps).
    pub exact: bool,
}

/// The template to put back: that of the ReplicaSet whose hash is `to`; else, during a
/// canary, the stable one's (the version live before); else the newest other ReplicaSet
/// whose analysis never failed (an aborted bad canary is no place to go back to).
pub fn template_to_restore(
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    runs: &[AnalysisRun],
    to: Option<&str>,
) -> Result<Restore, String> {
    let current = rollout
        .status
        .as_ref()
        .and_then(|s| s.canary_rs.clone())
        .unwrap_or_else(|| crate::template_hash::of(&rollout.spec.template));
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.clone());
    let failed = |hash: Option<&String>| {
        runs.iter().any(|run| {
            run.labels().get(CANARY_HASH_LABEL) == hash
                && run.status.as_ref().and_then(|s| s.phase).is_some_and(|p| {
                    matches!(
                        p,
                        crate::api::analysis::AnalysisPhase::Failed
                            | crate::api::analysis::AnalysisPhase::Error
                    )
                })
        })
    };
    let mut candidates: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL) != Some(&current))
        .collect();
    // The stable first, then newest first (creation times have one-second steps: the name
    // breaks ties, so the choice never depends on the order the API server lists them in).
    candidates.sort_by_key(|rs| {
        (
            rs.labels().get(POD_TEMPLATE_HASH_LABEL) != stable.as_ref(),
            std::cmp::Reverse(rs.metadata.creation_timestamp.clone()),
            rs.name_any(),
        )
    });
    let chosen = match to {
        Some(hash) => candidates
            .into_iter()
            .find(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str) == Some(hash))
            .ok_or_else(|| {
                format!(
                    "{} has no earlier ReplicaSet with hash {hash}; `kubectl weir history {}` lists them",
                    rollout.name_any(),
                    rollout.name_any()
                )
            })?,
        None => candidates
            .into_iter()
            .find(|rs| !failed(rs.labels().get(POD_TEMPLATE_HASH_LABEL)))
            .ok_or_else(|| {
            format!(
                "{} has no earlier ReplicaSet to go back to (but ones whose analysis failed); name one with --to-revision",
                rollout.name_any()
            )
        })?,
    };
    let hash = chosen
        .labels()
        .get(POD_TEMPLATE_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let (template, exact) = crate::rollout::workload::kept_template(chosen)
        .ok_or_else(|| format!("ReplicaSet {} has no template", chosen.name_any()))?;
    Ok(Restore {
        hash,
        template,
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gitsync::{RejectedRevision, RevisionRecord};
    use crate::time::to_k8s;

    fn record(revision: &str, outcome: &str) -> RevisionRecord {
        RevisionRecord {
            revision: revision.into(),
            subject: revision.into(),
            committed_at: None,
            time: to_k8s(chrono::DateTime::from_timestamp(0, 0).expect("time")),
            outcome: outcome.into(),
        }
    }

    fn sha(c: char) -> String {
        c.to_string().repeat(40)
    }

    #[test]
    fn undo_picks_the_revision_before_the_current_one_never_a_rejected_one() {
        let status = GitSyncStatus {
            last_applied_revision: Some(sha('c')),
            history: vec![
                record(&sha('a'), "Applied"),
                record(&sha('b'), "Applied"),
                record(&sha('b'), "Rejected"),
                record(&sha('c'), "Applied"),
            ],
            rejected_revisions: vec![RejectedRevision {
                revision: sha('b'),
                reason: "AnalysisFailed".into(),
                rollout: None,
                object: None,
                message: None,
                metric: None,
                value: None,
                rejected_at: to_k8s(chrono::DateTime::from_timestamp(0, 0).expect("time")),
                revert: None,
            }],
            ..GitSyncStatus::default()
        };
        assert_eq!(revision_to_pin(&status, None), Ok(sha('a')));
        assert_eq!(revision_to_pin(&status, Some("aaaa")), Ok(sha('a')));
        assert!(
            revision_to_pin(&status, Some("bbb"))
                .expect_err("rejected")
                .contains("was rejected (AnalysisFailed)")
        );
        assert!(
            revision_to_pin(&status, Some("ccc"))
                .expect_err("current")
                .contains("applied now")
        );
        assert!(
            revision_to_pin(&status, Some("123"))
                .expect_err("unknown")
                .contains("full 40-digit SHA")
        );
        assert_eq!(revision_to_pin(&status, Some(&sha('d'))), Ok(sha('d')));
    }
}
