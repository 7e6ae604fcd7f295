use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::api::gitsync::RejectedRevision;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0)
        .single()
        .unwrap_or_default()
}

/// An upstream whose revisions became good at the given seconds, oldest first.
fn upstream(good: &[(&str, i64)], rejected: &[&str]) -> GitSyncStatus {
    GitSyncStatus {
        good_revisions: good
            .iter()
            .map(|(revision, since)| GoodRevision {
                revision: (*revision).to_owned(),
                since: to_k8s(at(*since)),
            })
            .collect(),
        rejected_revisions: rejected.iter().map(|r| rejection(r)).collect(),
        ..GitSyncStatus::default()
    }
}

fn rejection(revision: &str) -> RejectedRevision {
    RejectedRevision {
        revision: revision.to_owned(),
        reason: "AnalysisFailed".into(),
        rollout: None,
        object: None,
        message: None,
        metric: None,
        value: None,
        rejected_at: to_k8s(at(0)),
        revert: None,
    }
}

fn own(applied: Option<&str>, rejected: &[&str]) -> GitSyncStatus {
    GitSyncStatus {
        last_applied_revision: applied.map(str::to_owned),
        rejected_revisions: rejected.iter().map(|r| rejection(r)).collect(),
        ..GitSyncStatus::default()
    }
}

fn gate<'a>(
    upstream: &'a GitSyncStatus,
    soak: i64,
    manual: bool,
    approved: Option<&'a str>,
) -> Gate<'a> {
    Gate {
        upstream: "staging/shop",
        upstream_status: Some(upstream),
        unreadable: None,
        soak: Duration::seconds(soak),
        manual,
        approved,
        name: "prod/shop",
    }
}

fn revision(promoted: Promoted) -> Option<String> {
    match promoted {
        Promoted::Revision(r) => Some(r),
        Promoted::Hold { .. } => None,
    }
}

#[test]
fn the_newest_revision_good_upstream_is_taken_skipping_rejected_ones() {
    let up = upstream(&[("a", 0), ("b", 10), ("c", 20)], &[]);
    assert_eq!(
        revision(choose(&gate(&up, 0, false, None), &own(None, &[]), at(30))),
        Some("c".into())
    );
    assert_eq!(
        revision(choose(
            &gate(&up, 0, false, None),
            &own(Some("a"), &[]),
            at(30)
        )),
        Some("c".into())
    );
    // Rejected here: never applied again; the one before it stands.
    assert_eq!(
        revision(choose(
            &gate(&up, 0, false, None),
            &own(Some("b"), &["c"]),
            at(30)
        )),
        None
    );
    // Rejected upstream after it was good (a later failure): never promoted.
    let up = upstream(&[("a", 0), ("b", 10)], &["b"]);
    assert_eq!(
        revision(choose(
            &gate(&up, 0, false, None),
            &own(Some("a"), &[]),
            at(30)
        )),
        None
    );
}

#[test]
fn a_revision_soaks_upstream_before_it_is_promoted() {
    let up = upstream(&[("a", 0), ("b", 100)], &[]);
    let soak = 1800;
    let held = choose(
        &gate(&up, soak, false, None),
        &own(Some("a"), &[]),
        at(1000),
    );
    let Promoted::Hold {
        pending: Some(pending),
    } = held
    else {
        panic!("held: {held:?}");
    };
    assert_eq!(pending.revision, "b");
    assert_eq!(pending.until, Some(to_k8s(at(1900))));
    assert!(
        pending
            .waiting_for
            .starts_with("soaking: good upstream in staging/shop"),
        "{}",
        pending.waiting_for
    );
    assert_eq!(
        revision(choose(
            &gate(&up, soak, false, None),
            &own(Some("a"), &[]),
            at(1900)
        )),
        Some("b".into())
    );
    // Soaked: an older one goes while a newer one still soaks.
    let up = upstream(&[("a", 0), ("b", 100), ("c", 1500)], &[]);
    assert_eq!(
        revision(choose(
            &gate(&up, soak, false, None),
            &own(Some("a"), &[]),
            at(2000)
        )),
        Some("b".into())
    );
}

#[test]
fn manual_approval_lets_the_approved_revision_and_those_before_it_go() {
    let up = upstream(&[("a", 0), ("b", 10), ("c", 20)], &[]);
    let held = choose(&gate(&up, 0, true, None), &own(Some("a"), &[]), at(30));
    let Promoted::Hold {
        pending: Some(pending),
    } = held
    else {
        panic!("held: {held:?}");
    };
    assert_eq!(pending.revision, "b");
    assert!(
        pending
            .waiting_for
            .contains("kubectl weir promote gitsync/shop --revision b"),
        "{}",
        pending.waiting_for
    );
    assert_eq!(
        revision(choose(
            &gate(&up, 0, true, Some("b")),
            &own(Some("a"), &[]),
            at(30)
        )),
        Some("b".into())
    );
    assert_eq!(
        revision(choose(
            &gate(&up, 0, true, Some("c")),
            &own(Some("a"), &[]),
            at(30)
        )),
        Some("c".into())
    );
    // An approval of something that is not good upstream approves nothing.
    assert_eq!(
        revision(choose(
            &gate(&up, 0, true, Some("zzz")),
            &own(Some("a"), &[]),
            at(30)
        )),
        None
    );
}

#[test]
fn an_upstream_that_cannot_be_read_holds_what_is_applied() {
    let nothing = GitSyncStatus::default();
    let mut g = gate(&nothing, 0, false, None);
    g.upstream_status = None;
    g.unreadable = Some("forbidden");
    let held = choose(&g, &own(Some("a"), &[]), at(0));
    assert!(
        matches!(&held, Promoted::Hold { pending: Some(p) } if p.waiting_for.contains("forbidden")),
        "{held:?}"
    );
}

#[test]
fn good_revisions_are_noted_once_newest_last_and_bounded() {
    let mut status = GitSyncStatus::default();
    note_good(&mut status, "a", at(0));
    note_good(&mut status, "a", at(5));
    assert_eq!(status.good_revisions.len(), 1);
    assert_eq!(
        status.good_revisions[0].since,
        to_k8s(at(0)),
        "the first time stands"
    );
    note_good(&mut status, "b", at(10));
    note_good(&mut status, "a", at(20));
    let order: Vec<&str> = status
        .good_revisions
        .iter()
        .map(|g| g.revision.as_str())
        .collect();
    assert_eq!(order, ["b", "a"], "good again: newest");
    for n in 0..30 {
        note_good(&mut status, &format!("r{n}"), at(100 + n));
    }
    assert_eq!(status.good_revisions.len(), MAX_GOOD_REVISIONS);
    assert_eq!(
        status.good_revisions.last().map(|g| g.revision.as_str()),
        Some("r29")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// For any upstream history, approvals and time: what is chosen is good upstream, rejected
    /// nowhere, soaked, approved when approval is manual, and never older than what is applied.
    #[test]
    fn what_is_promoted_is_good_soaked_approved_and_never_older(
        sinces in prop::collection::vec(0i64..5000, 0..12),
        rejected_up in prop::collection::vec(0usize..12, 0..3),
        rejected_here in prop::collection::vec(0usize..12, 0..3),
        applied in proptest::option::of(0usize..12),
        approved in proptest::option::of(0usize..12),
        manual in any::<bool>(),
        soak in 0i64..3000,
        now in 0i64..9000,
    ) {
        let names: Vec<String> = (0..sinces.len()).map(|i| format!("r{i}")).collect();
        // Became good in order: each `since` after the one before.
        let mut time = 0;
        let good: Vec<(&str, i64)> = names.iter().zip(&sinces).map(|(n, s)| { time += s; (n.as_str(), time) }).collect();
        let name = |i: &usize| names.get(*i).cloned().unwrap_or_else(|| format!("x{i}"));
        let rejected_up: Vec<String> = rejected_up.iter().map(name).collect();
        let rejected_here: Vec<String> = rejected_here.iter().map(name).collect();
        let up = upstream(&good, &rejected_up.iter().map(String::as_str).collect::<Vec<_>>());
        let applied = applied.map(|i| name(&i));
        let approved = approved.map(|i| name(&i));
        let mine = own(applied.as_deref(), &rejected_here.iter().map(String::as_str).collect::<Vec<_>>());
        let g = gate(&up, soak, manual, approved.as_deref());
        if let Promoted::Revision(chosen) = choose(&g, &mine, at(now)) {
            let index = names.iter().position(|n| *n == chosen);
            prop_assert!(index.is_some(), "good upstream");
            let index = index.unwrap_or_default();
            prop_assert!(!rejected_up.contains(&chosen) && !rejected_here.contains(&chosen));
            prop_assert!(good[index].1 + soak <= now, "soaked");
            if manual {
                let up_to = approved.as_ref().and_then(|a| names.iter().position(|n| n == a));
                prop_assert!(up_to.is_some_and(|u| index <= u), "approved");
            }
            if let Some(at) = applied.as_ref().and_then(|a| names.iter().position(|n| n == a)) {
                prop_assert!(index > at, "never older than what is applied");
            }
        }
    }
}

#[test]
fn a_revert_covers_the_paths_of_every_gitsync_downstream_of_the_same_repository() {
    let sync = |namespace: &str, name: &str, url: &str, path: &str, from: Option<(&str, &str)>| {
        let mut spec = serde_json::json!({"url": url, "ref": {"branch": "main"}, "path": path});
        if let Some((ns, up)) = from {
            spec["promotion"] = serde_json::json!({"from": {"gitSync": up, "namespace": ns}});
        }
        std::sync::Arc::new(
            serde_json::from_value::<GitSync>(serde_json::json!({
                "apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}))
            .expect("a GitSync"),
        )
    };
    let all = vec![
        sync(
            "staging",
            "shop",
            "git://r",
            "staging",
            Some(("prod", "shop")),
        ),
        sync("qa", "shop", "git://r", "qa", Some(("staging", "shop"))),
        sync(
            "prod",
            "shop",
            "git://r",
            "production",
            Some(("qa", "shop")),
        ),
        sync(
            "elsewhere",
            "shop",
            "git://other",
            "x",
            Some(("staging", "shop")),
        ),
    ];
    assert_eq!(
        downstream_paths(&all, &all[0]),
        ["qa", "production"],
        "down the chain, once each though it loops back, same repository only"
    );
    assert!(downstream_paths(&all, &all[3]).is_empty());
}
