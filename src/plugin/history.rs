//! `kubectl weir history`: the revisions a Rollout went through. Pure.
//!
//! With a GitSync, the unit is the Git revision: its history (applied, rolled back, pinned,
//! rejected and why), with what the Rollout made of each revision and the analysis that
//! judged it. Without one, the ReplicaSets the Rollout has kept, newest first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;

use super::show::{age, short, table};
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::contract::{CANARY_HASH_LABEL, GIT_REVISION_ANNOTATION, POD_TEMPLATE_HASH_LABEL};
use crate::api::gitsync::GitSyncStatus;
use crate::api::rollout::Rollout;
use crate::gitops::rollback::cause;
use crate::time::from_k8s;

/// Analysis of one revision in a few words: runs by outcome, and what failed.
fn analysis_summary(runs: &[&AnalysisRun]) -> String {
    if runs.is_empty() {
        return "-".into();
    }
    let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = None;
    for run in runs {
        let status = run.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or(AnalysisPhase::Pending);
        *by_phase.entry(format!("{phase:?}")).or_default() += 1;
        if matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error) && failed.is_none() {
            failed = status.message.clone();
        }
    }
    let counts: Vec<String> = by_phase
        .iter()
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect();
    match failed {
        Some(message) => format!("{} ({message})", counts.join(", ")),
        None => counts.join(", "),
    }
}

/// What the GitSync's history says, per revision, for this Rollout.
pub fn from_git(
    rollout: &Rollout,
    sync: &GitSyncStatus,
    runs: &[AnalysisRun],
    now: DateTime<Utc>,
) -> String {
    if sync.history.is_empty() {
        return "No revisions recorded yet.\n".into();
    }
    let status = rollout.status.clone().unwrap_or_default();
    let rows: Vec<Vec<String>> = sync
        .history
        .iter()
        .map(|record| {
            let revision = &record.revision;
            let mine: Vec<&AnalysisRun> = runs
                .iter()
                .filter(|r| r.annotations().get(GIT_REVISION_ANNOTATION) == Some(revision))
                .collect();
            let outcome = match record.outcome.as_str() {
                "Rejected" => {
                    let why = sync
                        .rejected_revisions
                        .iter()
                        .find(|r| &r.revision == revision)
                        .map(cause)
                        .unwrap_or_default();
                    format!("rejected: {why}")
                }
                "RolledBack" => "rolled back to".into(),
                "Pinned" => "pinned by hand".into(),
                "Applied" if status.stable_revision.as_ref() == Some(revision) => {
                    "applied, stable".into()
                }
                "Applied"
                    if status.canary_revision.as_ref() == Some(revision)
                        && status.canary_rs != status.stable_rs =>
                {
                    if rollout.spec.strategy.blue_green.is_some() {
                        "applied, new version (blue-green)".into()
                    } else {
                        "applied, canary".into()
                    }
                }
                "Applied" => "applied".into(),
                other => other.to_owned(),
            };
            let revert = sync
                .rejected_revisions
                .iter()
                .any(|r| r.revert.as_ref() == Some(revision));
            let outcome = if revert {
                format!("{outcome} (weir's revert)")
            } else {
                outcome
            };
            vec![
                short(revision).to_owned(),
                record.subject.clone(),
                outcome,
                age(from_k8s(&record.time), now),
                analysis_summary(&mine),
            ]
        })
        .collect();
    table(
        &["REVISION", "SUBJECT", "OUTCOME", "AGE", "ANALYSIS"],
        &rows,
    )
}

/// Without a GitSync: the ReplicaSets the Rollout kept, newest first.
pub fn from_replica_sets(
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    runs: &[AnalysisRun],
    now: DateTime<Utc>,
) -> String {
    if replica_sets.is_empty() {
        return "No ReplicaSets yet.\n".into();
    }
    let status = rollout.status.clone().unwrap_or_default();
    let mut sorted = replica_sets.to_vec();
    sorted.sort_by_key(|rs| std::cmp::Reverse(rs.metadata.creation_timestamp.clone()));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|rs| {
            let hash = rs
                .labels()
                .get(POD_TEMPLATE_HASH_LABEL)
                .cloned()
                .unwrap_or_default();
            let role = if Some(&hash) == status.stable_rs.as_ref() {
                "stable"
            } else if Some(&hash) == status.canary_rs.as_ref() {
                if rollout.spec.strategy.blue_green.is_some() {
                    "new (blue-green)"
                } else {
                    "canary"
                }
            } else {
                "previous"
            };
            let images: Vec<String> = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| {
                    s.containers
                        .iter()
                        .filter_map(|c| c.image.clone())
                        .collect()
                })
                .unwrap_or_default();
            let mine: Vec<&AnalysisRun> = runs
                .iter()
                .filter(|r| r.labels().get(CANARY_HASH_LABEL) == Some(&hash))
                .collect();
            vec![
                hash,
                role.into(),
                images.join(","),
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or("-".into(), |t| age(from_k8s(t), now)),
                analysis_summary(&mine),
            ]
        })
        .collect();
    table(&["HASH", "ROLE", "IMAGES", "AGE", "ANALYSIS"], &rows)
}
