//! `kubectl weir fleet`: where each recent revision stands in every GitSync (environment),
//! upstream environments first. Pure: the GitSyncs come in, the table goes out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::show::table;
use crate::api::gitsync::{GitSync, GitSyncStatus};
use crate::gitops::status::short;
use crate::time::from_k8s;

/// The newest revisions shown.
const ROWS: usize = 10;

/// The GitSyncs in promotion order (each after the one it promotes from, when that is among
/// them), then by namespace and name.
fn in_order(syncs: &[GitSync]) -> Vec<&GitSync> {
    let key = |s: &GitSync| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
    let upstream = |s: &GitSync| {
        s.spec.promotion.as_ref().map(|p| {
            let namespace = p
                .from
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| s.namespace().unwrap_or_default());
            format!("{namespace}/{}", p.from.git_sync)
        })
    };
    // Depth in the chain, bounded by the number of GitSyncs (a cycle ends there).
    let by_key: BTreeMap<String, &GitSync> = syncs.iter().map(|s| (key(s), s)).collect();
    let depth = |s: &GitSync| {
        let mut at = s;
        let mut depth = 0;
        while let Some(up) = upstream(at).and_then(|u| by_key.get(&u)) {
            depth += 1;
            if depth > syncs.len() {
                break;
            }
            at = up;
        }
        depth
    };
    let mut ordered: Vec<&GitSync> = syncs.iter().collect();
    ordered.sort_by_key(|s| (depth(s), key(s)));
    ordered
}

/// What became of `revision` in one GitSync, in a few words.
fn cell(status: &GitSyncStatus, revision: &str, now: DateTime<Utc>) -> String {
    if let Some(rejected) = status
        .rejected_revisions
        .iter()
        .find(|r| r.revision == revision)
    {
        return match &rejected.metric {
            Some(metric) => format!("rejected ({}, {metric})", rejected.reason),
            None => format!("rejected ({})", rejected.reason),
        };
    }
    if let Some(pending) = status.promotion.as_ref().filter(|p| p.revision == revision) {
        return match &pending.until {
            Some(until) => {
                let left = (from_k8s(until) - now).num_seconds().max(0);
                format!("soaking ({left}s left)")
            }
            None => "waiting for approval".into(),
        };
    }
    let good = status.last_good_revision.as_deref() == Some(revision);
    if status.last_applied_revision.as_deref() == Some(revision) {
        return if good { "applied, good" } else { "applied" }.into();
    }
    if good || status.good_revisions.iter().any(|g| g.revision == revision) {
        return "was good".into();
    }
    match status.history.iter().rev().find(|h| h.revision == revision) {
        Some(record) => format!("was {}", record.outcome),
        None => "-".into(),
    }
}

/// When a GitSync first had anything to do with `revision`, for ordering rows.
fn first_seen(status: &GitSyncStatus, revision: &str) -> Option<DateTime<Utc>> {
    let history = status
        .history
        .iter()
        .filter(|h| h.revision == revision)
        .map(|h| from_k8s(&h.time));
    let good = status
        .good_revisions
        .iter()
        .filter(|g| g.revision == revision)
        .map(|g| from_k8s(&g.since));
    let rejected = status
        .rejected_revisions
        .iter()
        .filter(|r| r.revision == revision)
        .map(|r| from_k8s(&r.rejected_at));
    history.chain(good).chain(rejected).min()
}

/// The table: one row per recent revision (newest first), one column per GitSync.
pub fn fleet(syncs: &[GitSync], now: DateTime<Utc>) -> String {
    let ordered = in_order(syncs);
    let statuses: Vec<GitSyncStatus> = ordered
        .iter()
        .map(|s| s.status.clone().unwrap_or_default())
        .collect();
    let mut seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for status in &statuses {
        let revisions = status
            .history
            .iter()
            .map(|h| &h.revision)
            .chain(status.good_revisions.iter().map(|g| &g.revision))
            .chain(status.rejected_revisions.iter().map(|r| &r.revision))
            .chain(status.promotion.iter().map(|p| &p.revision))
            .filter(|r| !r.is_empty());
        for revision in revisions {
            let when = first_seen(status, revision).unwrap_or(now);
            seen.entry(revision.clone())
                .and_modify(|t| *t = (*t).min(when))
                .or_insert(when);
        }
    }
    let mut revisions: Vec<(DateTime<Utc>, String)> =
        seen.into_iter().map(|(r, t)| (t, r)).collect();
    revisions.sort_by(|a, b| b.cmp(a));
    revisions.truncate(ROWS);
    let names: Vec<String> = ordered
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
        .collect();
    let mut header = vec!["REVISION"];
    header.extend(names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|(_, revision)| {
            let mut row = vec![short(revision).to_owned()];
            row.extend(statuses.iter().map(|s| cell(s, revision, now)));
            row
        })
        .collect();
    if rows.is_empty() {
        return "no GitSync has tried a revision yet\n".into();
    }
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> String {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0)
            .unwrap_or_default()
            .to_rfc3339()
    }

    fn sha(c: char) -> String {
        c.to_string().repeat(40)
    }

    #[test]
    fn each_revision_is_shown_in_each_environment_upstream_first() {
        let staging: GitSync = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
            "metadata": {"name": "shop", "namespace": "staging"},
            "spec": {"url": "file:///r", "ref": {"branch": "main"}},
            "status": {
                "lastAppliedRevision": sha('c'), "lastGoodRevision": sha('c'),
                "goodRevisions": [{"revision": sha('a'), "since": at(10)}, {"revision": sha('c'), "since": at(300)}],
                "rejectedRevisions": [{"revision": sha('b'), "reason": "AnalysisFailed", "metric": "success-rate", "rejectedAt": at(150)}],
                "history": [
                    {"revision": sha('a'), "subject": "1", "time": at(0), "outcome": "Applied"},
                    {"revision": sha('b'), "subject": "2", "time": at(100), "outcome": "Applied"},
                    {"revision": sha('a'), "subject": "1", "time": at(160), "outcome": "RolledBack"},
                    {"revision": sha('c'), "subject": "3", "time": at(200), "outcome": "Applied"}
                ]
            }
        }))
        .expect("staging");
        let prod: GitSync = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
            "metadata": {"name": "shop", "namespace": "prod"},
            "spec": {"url": "file:///r", "ref": {"branch": "main"},
                "promotion": {"from": {"gitSync": "shop", "namespace": "staging"}, "soak": "30m"}},
            "status": {
                "lastAppliedRevision": sha('a'), "lastGoodRevision": sha('a'),
                "promotion": {"revision": sha('c'), "waitingFor": "soaking", "until": at(2100)},
                "history": [{"revision": sha('a'), "subject": "1", "time": at(400), "outcome": "Applied"}]
            }
        }))
        .expect("prod");
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000 + 1200, 0).unwrap_or_default();
        // Given downstream first: shown upstream first all the same.
        let text = fleet(&[prod, staging], now);
        let expected = [
            "REVISION       staging/shop                              prod/shop",
            "cccccccccccc   applied, good                             soaking (900s left)",
            "bbbbbbbbbbbb   rejected (AnalysisFailed, success-rate)   -",
            "aaaaaaaaaaaa   was good                                  applied, good",
        ];
        assert_eq!(text, format!("{}\n", expected.join("\n")));
    }
}
