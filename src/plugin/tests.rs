//! Snapshots of what the plugin prints, for fixed objects and a fixed clock; `cargo insta
//! review` (or INSTA_UPDATE=always) after an intended change.

use chrono::{DateTime, Utc};
use clap::CommandFactory;
use serde_json::json;

use super::show::{self, Observed};
use super::{Cli, history};
use crate::api::analysis::AnalysisRun;
use crate::api::gitsync::GitSyncStatus;
use crate::api::rollout::Rollout;
use crate::traffic::RouterView;

const STABLE_SHA: &str = "5407b173496e0f6b1e7e6f1b7c4a1c2d3e4f5a6b";
const CANARY_SHA: &str = "766c0e3c5397aa0b1c2d3e4f5a6b7c8d9e0f1a2b";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
}

fn rollout() -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 4,
            "creationTimestamp": "2027-01-15T06:00:00Z",
            "annotations": {"weir.dev/gitsync": "shop/app"}},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:3"}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
                "steps": [{"setWeight": 20},
                    {"analysis": {"templates": [{"templateName": "success-rate"}]}},
                    {"pause": {"duration": "30s"}},
                    {"setWeight": 60},
                    {"pause": {}}]}}},
        "status": {"phase": "Progressing", "observedGeneration": 4,
            "message": "waiting for analysis run web-766c0e3-1-1",
            "currentStepIndex": 1, "canaryWeight": 20,
            "stableRS": "55f487b784", "canaryRS": "5c8c654d5c",
            "stableRevision": STABLE_SHA, "canaryRevision": CANARY_SHA,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "StepCompleted",
                 "message": "step 0 (setWeight 20) done", "lastTransitionTime": "2027-01-15T07:59:00Z"},
                {"type": "Available", "status": "True", "reason": "StableAvailable",
                 "message": "5 of 5 stable pods available", "lastTransitionTime": "2027-01-15T06:01:00Z"}]}
    }))
    .expect("a Rollout")
}

fn replica_set(hash: &str, image: &str, replicas: i32, created: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{hash}"), "namespace": "shop", "creationTimestamp": created,
            "labels": {"app": "web", "rollouts-pod-template-hash": hash, "weir.dev/rollout": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": hash}},
                "spec": {"containers": [{"name": "web", "image": image}]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}})
}

fn observed() -> Observed {
    let replica_sets = [
        replica_set("55f487b784", "web:2", 5, "2027-01-15T06:00:00Z"),
        replica_set("5c8c654d5c", "web:3", 1, "2027-01-15T07:58:00Z"),
    ]
    .into_iter()
    .map(|rs| serde_json::from_value(rs).expect("a ReplicaSet"))
    .collect();
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-5c8c654d5c-1-1", "namespace": "shop",
            "creationTimestamp": "2027-01-15T07:59:30Z",
            "labels": {"weir.dev/rollout": "web", "weir.dev/step": "1",
                "weir.dev/canary-hash": "5c8c654d5c", "weir.dev/attempt": "1"},
            "annotations": {"weir.dev/git-revision": CANARY_SHA}},
        "spec": {"metrics": [{"name": "success-rate",
            "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"query": "rate(ok[1m])"}}},
            {"name": "latency", "provider": {"judge": {"baseline": "b", "canary": "c"}}}]},
        "status": {"phase": "Running", "metricResults": [{"name": "success-rate", "phase": "Running",
            "count": 1, "successful": 1,
            "measurements": [{"phase": "Successful", "value": "[0.99]",
                "startedAt": "2027-01-15T07:59:40Z", "finishedAt": "2027-01-15T07:59:40Z"}]},
            {"name": "latency", "phase": "Running", "count": 3,
            "measurements": [{"phase": "Running", "value": "1.042",
                "metadata": {"method": "sequential means", "effect": "1.042",
                    "pValue": "0.312471", "statistic": "1.163200",
                    "canarySamples": "3", "baselineSamples": "4"},
                "startedAt": "2027-01-15T07:59:45Z", "finishedAt": "2027-01-15T07:59:45Z"}]}]}
    }))
    .expect("an AnalysisRun");
    Observed {
        rollout: rollout(),
        replica_sets,
        runs: vec![run],
        experiments: Vec::new(),
        subjects: [
            (STABLE_SHA.to_owned(), "web 2: faster search".to_owned()),
            (CANARY_SHA.to_owned(), "web 3: new checkout".to_owned()),
        ]
        .into(),
        routers: vec![
            RouterView {
                label: "Istio VirtualService web".into(),
                weight: Ok(Some(30)),
                managed_routes: Ok(vec![
                    "header (header)".into(),
                    "mirror (mirror 35%)".into(),
                    crate::traffic::describe_experiment_share("web-3-1-4-baseline", 5),
                ]),
                experiment_shares: [("web-3-1-4-baseline".to_owned(), 5)].into(),
            },
            RouterView {
                label: "NGINX Ingress web-web-canary".into(),
                weight: Err("Ingress shop/web: forbidden".into()),
                managed_routes: Ok(Vec::new()),
                experiment_shares: Default::default(),
            },
        ],
        notes: Vec::new(),
    }
}

#[test]
fn help() {
    let mut command = Cli::command();
    // Built, the subcommands know they are `kubectl weir <command>`.
    command.build();
    let mut text = command.render_long_help().to_string();
    for sub in command.get_subcommands_mut() {
        text.push_str(&format!("\n===== {} =====\n", sub.get_name()));
        text.push_str(&sub.render_long_help().to_string());
    }
    insta::assert_snapshot!(text);
}

#[test]
fn list() {
    let mut healthy = rollout();
    healthy.metadata.name = Some("api".into());
    healthy.metadata.namespace = Some("payments".into());
    healthy.status = serde_json::from_value(json!({"phase": "Healthy",
        "currentStepIndex": 5, "stableRS": "6d9f8b7c5a", "canaryRS": "6d9f8b7c5a"}))
    .ok();
    insta::assert_snapshot!(show::list(&[healthy, rollout()], true, now()));
}

#[test]
fn get() {
    insta::assert_snapshot!(show::get(&observed(), now()));
}

#[test]
fn get_shows_a_steps_experiment_with_its_templates_and_analyses() {
    let mut observed = observed();
    observed.experiments = vec![
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "web-5c8c654d5c-1-1", "namespace": "shop",
                "creationTimestamp": "2027-01-15T07:59:30Z",
                "labels": {"weir.dev/rollout": "web", "weir.dev/step": "1"}},
            "spec": {"templates": []},
            "status": {"phase": "Failed",
                "message": "analysis \"latency\" ended Failed",
                "templateStatuses": [
                    {"name": "baseline", "replicas": 1, "availableReplicas": 1, "podTemplateHash": "7d9c5b6f4"},
                    {"name": "canary", "replicas": 1, "availableReplicas": 0, "podTemplateHash": "6b8f9c7d5"}],
                "analysisRuns": [{"name": "latency", "analysisRun": "web-5c8c654d5c-1-1-latency", "phase": "Failed"}]}
        }))
        .expect("an Experiment"),
    ];
    let text = show::get(&observed, now());
    let shown: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Experiments:")
        .take(3)
        .collect();
    assert_eq!(
        shown,
        [
            "Experiments:",
            "  EXPERIMENT           STEP   PHASE    TEMPLATES                                      ANALYSES",
            "  web-5c8c654d5c-1-1   2      Failed   baseline 7d9c5b6f4 1/1, canary 6b8f9c7d5 0/1   latency Failed",
        ],
        "{text}"
    );
    assert!(
        text.contains("  web-5c8c654d5c-1-1: analysis \"latency\" ended Failed\n"),
        "{text}"
    );
}

#[test]
fn history_from_git() {
    let status: GitSyncStatus = serde_json::from_value(json!({
        "lastAppliedRevision": CANARY_SHA,
        "history": [
            {"revision": STABLE_SHA, "subject": "web 2: faster search", "time": "2027-01-14T10:00:00Z", "outcome": "Applied"},
            {"revision": "aaaaaaa000000000000000000000000000000000", "subject": "web 2.1: bigger cache",
             "time": "2027-01-15T05:00:00Z", "outcome": "Rejected"},
            {"revision": STABLE_SHA, "subject": "web 2: faster search", "time": "2027-01-15T05:00:01Z", "outcome": "RolledBack"},
            {"revision": "bbbbbbb000000000000000000000000000000000", "subject": "Revert \"web 2.1: bigger cache\"",
             "time": "2027-01-15T05:00:05Z", "outcome": "Applied"},
            {"revision": CANARY_SHA, "subject": "web 3: new checkout", "time": "2027-01-15T07:58:00Z", "outcome": "Applied"}],
        "rejectedRevisions": [{"revision": "aaaaaaa000000000000000000000000000000000",
            "reason": "AnalysisFailed", "rollout": "shop/web", "metric": "success-rate", "value": "[0.5]",
            "rejectedAt": "2027-01-15T05:00:00Z", "revert": "bbbbbbb000000000000000000000000000000000"}]
    }))
    .expect("a status");
    insta::assert_snapshot!(history::from_git(
        &rollout(),
        &status,
        &observed().runs,
        now()
    ));
}

#[test]
fn status_refuses_a_revision_that_could_not_name_a_commit() {
    use clap::Parser;
    let parsed = |revision: &str| {
        Cli::try_parse_from(["kubectl-weir", "status", "web", "--revision", revision])
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(parsed("5407b17"), Ok(()));
    assert_eq!(parsed(STABLE_SHA), Ok(()));
    assert_eq!(parsed(&STABLE_SHA.to_uppercase()), Ok(()));
    // Longer than a SHA-1 could never match: weir reads SHA-1 repositories only.
    for bad in ["5407b1", "main", "5407b17x", "", &"a".repeat(41)] {
        let error = parsed(bad).expect_err(bad);
        assert!(
            error.contains("is not a Git revision") && error.contains("first 7"),
            "{bad:?}: {error}"
        );
    }
}

/// The same release, blue-green: no steps and no weight to tell.
fn blue_green_rollout() -> Rollout {
    let mut rollout = rollout();
    rollout.spec.strategy = serde_json::from_value(json!({"blueGreen": {
        "activeService": "web-active", "previewService": "web-preview"}}))
    .expect("a strategy");
    rollout
}

#[test]
fn history_of_a_blue_green_release() {
    let status: GitSyncStatus = serde_json::from_value(json!({
        "lastAppliedRevision": CANARY_SHA,
        "history": [
            {"revision": STABLE_SHA, "subject": "web 2: faster search", "time": "2027-01-14T10:00:00Z", "outcome": "Applied"},
            {"revision": CANARY_SHA, "subject": "web 3: new checkout", "time": "2027-01-15T07:58:00Z", "outcome": "Applied"}]
    }))
    .expect("a status");
    let observed = observed();
    let text = format!(
        "{}\n{}",
        history::from_git(&blue_green_rollout(), &status, &observed.runs, now()),
        history::from_replica_sets(
            &blue_green_rollout(),
            &observed.replica_sets,
            &observed.runs,
            now()
        )
    );
    assert!(!text.contains("canary"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn a_step_is_said_field_by_field_what_it_sets_then_what_it_waits_for() {
    let step = |value: serde_json::Value| -> crate::api::rollout::CanaryStep {
        serde_json::from_value(value).expect("a step")
    };
    let header =
        json!({"name": "header", "match": [{"headerName": "x", "headerValue": {"exact": "y"}}]});
    let cases = [
        (json!({"setWeight": 20}), "setWeight 20%"),
        (json!({"pause": {}}), "pause (until promoted)"),
        (
            json!({"setHeaderRoute": header.clone()}),
            "setHeaderRoute header",
        ),
        (
            json!({"setWeight": 20, "setHeaderRoute": header, "setMirrorRoute": {"name": "mirror"}}),
            "setWeight 20%, setHeaderRoute header, setMirrorRoute mirror",
        ),
        (
            json!({"setCanaryScale": {"replicas": 2}, "analysis": {"templates": [{"templateName": "t"}]}}),
            "setCanaryScale 2 replicas, then analysis t",
        ),
        (json!({}), "(unsupported step)"),
    ];
    for (value, text) in cases {
        assert_eq!(show::step_text(&step(value)), text);
    }
}

#[test]
fn a_promotion_is_approved_for_the_revision_waiting_or_one_named() {
    let sync = |approval: Option<&str>, waiting: Option<&str>| -> crate::api::GitSync {
        let mut spec = json!({"url": "file:///r", "ref": {"branch": "main"}});
        if let Some(approval) = approval {
            spec["promotion"] = json!({"from": {"gitSync": "staging"}, "approval": approval});
        }
        let status = waiting.map_or(
            json!({}),
            |w| json!({"promotion": {"revision": w, "waitingFor": "approval"}}),
        );
        serde_json::from_value(json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
            "metadata": {"name": "prod", "namespace": "shop"}, "spec": spec, "status": status}))
        .expect("a GitSync")
    };
    let full = "a".repeat(40);
    let waiting = format!("b{}", "0".repeat(39));
    let approve =
        |s: &crate::api::GitSync, r: Option<&str>| super::control::approve_promotion(s, r);
    let manual = sync(Some("Manual"), Some(&waiting));
    assert_eq!(approve(&manual, None).map(|(r, _)| r), Ok(waiting.clone()));
    assert_eq!(
        approve(&manual, Some("b000")).map(|(r, _)| r),
        Ok(waiting.clone())
    );
    assert_eq!(
        approve(&manual, Some(&full)).map(|(r, _)| r),
        Ok(full.clone())
    );
    let (_, patch) = approve(&manual, None).expect("approved");
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"weir.dev/promote-revision": waiting}}})
    );
    for (refused, why) in [
        (approve(&manual, Some("c1")), "neither a full SHA"),
        (
            approve(&sync(Some("Manual"), None), None),
            "waits for no approval",
        ),
        (
            approve(&sync(Some("Auto"), Some(&waiting)), None),
            "without approval",
        ),
        (approve(&sync(None, None), None), "has no spec.promotion"),
    ] {
        assert!(
            refused.as_ref().is_err_and(|e| e.contains(why)),
            "{refused:?}"
        );
    }
}
