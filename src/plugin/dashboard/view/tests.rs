//! Pages for fixed objects and a fixed clock: what each shows, and that nothing a tenant
//! wrote reaches the page as markup.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap_or_default()
}

fn at(seconds_ago: i64) -> String {
    DateTime::from_timestamp(NOW - seconds_ago, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rollout(name: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:3"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}},
                {"setWeight": 60}, {"pause": {"duration": "1m"}}]}}},
        "status": {"phase": "Paused", "currentStepIndex": 1, "canaryWeight": 20,
            "stableRS": "55f487b784", "canaryRS": "5c8c654d5c",
            "message": "paused at step 2/4 until promoted"}
    }))
    .unwrap_or_else(|e| panic!("a Rollout: {e}"))
}

fn event(reason: &str, message: &str, seconds_ago: i64) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("web.{reason}"), "namespace": "shop"},
        "involvedObject": {"kind": "Rollout", "name": "web", "namespace": "shop"},
        "reason": reason, "message": message, "type": "Normal",
        "firstTimestamp": at(seconds_ago), "lastTimestamp": at(seconds_ago)
    }))
    .unwrap_or_else(|e| panic!("an Event: {e}"))
}

fn run() -> AnalysisRun {
    serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-5c8c654d5c-2", "namespace": "shop",
            "labels": {"weir.dev/rollout": "web"}},
        "spec": {"metrics": [{"name": "success-rate", "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"query": "q"}}}]},
        "status": {"phase": "Failed", "metricResults": [{"name": "success-rate", "phase": "Failed",
            "count": 2, "successful": 1, "failed": 1, "measurements": [
                {"phase": "Successful", "value": "[0.99]", "startedAt": at(60), "finishedAt": at(59)},
                {"phase": "Failed", "value": "[0.41]", "startedAt": at(30), "finishedAt": at(29)}]}]}
    }))
    .unwrap_or_else(|e| panic!("an AnalysisRun: {e}"))
}

fn rollout_page(rollout: &Rollout, runs: &[&AnalysisRun], events: &[Event]) -> String {
    super::rollout(&RolloutPage {
        rollout,
        replica_sets: &[],
        runs,
        events,
        seen: &[(NOW - 5, 20.0)],
        token: "t0k3n",
        notes: &["GitSyncs not shown: no permission".to_owned()],
        now: now(),
    })
}

#[test]
fn the_list_has_a_row_per_rollout_linking_to_its_page() {
    let html = rollouts(&[rollout("web"), rollout("api")], &[]);
    assert!(html.contains("<a href=\"/rollouts/shop/web\">web</a>"));
    assert!(html.contains("<a href=\"/rollouts/shop/api\">api</a>"));
    assert!(
        html.contains("<td>Paused</td><td>2/4</td><td>20%</td>"),
        "{html}"
    );
}

#[test]
fn a_rollouts_page_marks_its_step_and_plots_its_weight_and_analysis() {
    let events = [
        event("RolloutStarted", "canary 5c8c654d5c started", 120),
        event(
            "StepCompleted",
            "step 1/4 done (setWeight 20%) for 5c8c654d5c",
            100,
        ),
        event("Paused", "paused at step 2/4", 99),
    ];
    let run = run();
    let html = rollout_page(&rollout("web"), &[&run], &events);
    assert!(html.contains("<li aria-current=\"step\"><strong>pause (until promoted)</strong>"));
    // Weight: 0 at the start, 20 after step 1, and the weight seen 5s ago.
    let weight = &html[html.find("id=\"weight-chart\"").unwrap_or(0)..];
    let weight = &weight[..weight.find("</figure>").unwrap_or(weight.len())];
    assert_eq!(weight.matches("class=\"point\"").count(), 3, "{weight}");
    assert!(weight.contains(">step 1</text>") && weight.contains(">paused</text>"));
    // Analysis: both measurements, the failed one marked, against the threshold.
    let analysis = &html[html.find("class=\"analysis-chart\"").unwrap_or(0)..];
    assert_eq!(analysis.matches("class=\"point\"").count(), 1);
    assert_eq!(analysis.matches("class=\"point failed\"").count(), 1);
    assert!(analysis.contains("class=\"threshold\""));
    assert!(analysis.contains("&gt;= 0.95"));
    // The Events table, newest first, and the note of what could not be read.
    let paused = html.find("<td>Paused</td>").unwrap_or(usize::MAX);
    let started = html.find("<td>RolloutStarted</td>").unwrap_or(0);
    assert!(paused < started);
    assert!(html.contains("<p class=\"note\">GitSyncs not shown: no permission</p>"));
}

#[test]
fn every_button_posts_the_token_to_its_action() {
    let html = rollout_page(&rollout("web"), &[], &[]);
    for action in Action::ALL {
        assert!(
            html.contains(&format!(
                "action=\"/rollouts/shop/web/{}\"><input type=\"hidden\" name=\"token\" value=\"t0k3n\">",
                action.slug()
            )),
            "{action:?}"
        );
    }
    assert_eq!(html.matches("<form").count(), Action::ALL.len());
}

#[test]
fn the_confirmation_says_what_happens_and_posts_confirmed() {
    let html = confirm("shop", "web", Action::Abort, "t0k3n");
    assert!(html.contains("<h1>Abort shop/web?</h1>"));
    assert!(html.contains("sends all traffic back to the stable version"));
    assert!(html.contains("action=\"/rollouts/shop/web/abort\""));
    assert!(html.contains("name=\"confirmed\" value=\"yes\""));
    assert!(html.contains("<a href=\"/rollouts/shop/web\">No, back to web</a>"));
}

#[test]
fn what_an_action_did_or_why_not_is_said() {
    let done = acted("shop", "web", &Ok("web goes on to step 3/4".into()));
    assert!(done.contains("<p id=\"result\">web goes on to step 3/4</p>"));
    let refused = acted("shop", "web", &Err("web is not paused <b>".into()));
    assert!(refused.contains("class=\"failure\">web is not paused &lt;b&gt;</p>"));
}

#[test]
fn hostile_text_stays_text_on_every_page() {
    let mut hostile = rollout("web");
    if let Some(status) = hostile.status.as_mut() {
        status.message = Some("<script>alert(1)</script>".into());
    }
    let events = [event("Paused", "<img src=x onerror=alert(1)>", 10)];
    let html = rollout_page(&hostile, &[], &events);
    assert!(!html.contains("<script>") && !html.contains("<img"));
    let sync = git_sync_with(json!({"rejectedRevisions": [{
        "revision": "b".repeat(40), "reason": "AnalysisFailed", "metric": "<svg onload=x>",
        "value": "\"><script>", "rejectedAt": at(10)}]}));
    let html = super::gitsync(&GitSyncPage {
        sync: &sync,
        events: &[],
        window: Window { from: 0, to: NOW },
        notes: &[],
        now: now(),
    });
    assert!(!html.contains("<svg onload") && !html.contains("\"><script>"));
}

#[test]
fn first_number_reads_each_recorded_shape() {
    assert_eq!(first_number("[0.97]"), Some(0.97));
    assert_eq!(first_number("0.5"), Some(0.5));
    assert_eq!(first_number("[0.9,0.8]"), Some(0.9));
    assert_eq!(first_number("[]"), None);
    assert_eq!(first_number("NaN"), None);
    assert_eq!(first_number("ok"), None);
}

fn git_sync_with(status: serde_json::Value) -> GitSync {
    serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"url": "https://user:secret@git.example/app.git", "ref": {"branch": "main"}, "path": "deploy"},
        "status": status
    }))
    .unwrap_or_else(|e| panic!("a GitSync: {e}"))
}

const GOOD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BAD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const REVERT: &str = "cccccccccccccccccccccccccccccccccccccccc";

/// The demo's story: a good revision, a bad one rejected by analysis and reverted in Git,
/// the revert applied and good.
fn demo_sync() -> GitSync {
    git_sync_with(json!({
        "lastAppliedRevision": REVERT, "lastGoodRevision": REVERT,
        "history": [
            {"revision": GOOD, "subject": "web 1", "committedAt": at(1100), "time": at(1000), "outcome": "Applied"},
            {"revision": BAD, "subject": "web 2", "time": at(600), "outcome": "Applied"},
            {"revision": BAD, "subject": "web 2", "time": at(400), "outcome": "Rejected"},
            {"revision": GOOD, "subject": "web 1", "time": at(390), "outcome": "RolledBack"},
            {"revision": REVERT, "subject": "Revert \"web 2\"", "time": at(300), "outcome": "Applied"}],
        "goodRevisions": [{"revision": GOOD, "since": at(900)}, {"revision": REVERT, "since": at(200)}],
        "rejectedRevisions": [{"revision": BAD, "reason": "AnalysisFailed", "rollout": "web",
            "metric": "success-rate", "value": "[0.41]", "rejectedAt": at(400), "revert": REVERT}],
        "inventory": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "namespace": "shop", "name": "web"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "RolledBack", "message": "m",
            "lastTransitionTime": at(300)}]
    }))
}

#[test]
fn the_timeline_tells_each_revisions_fate_newest_first() {
    let entries = timeline(&demo_sync());
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "stable",
            "applied",
            "rolledback",
            "reverted",
            "rejected",
            "applied",
            "stable",
            "applied"
        ]
    );
    let rejected = &entries[4].text;
    assert_eq!(
        rejected,
        "bbbbbbb \"web 2\" rejected: AnalysisFailed by Rollout web; metric success-rate measured [0.41]"
    );
    assert_eq!(
        entries[3].text,
        "bbbbbbb reverted in Git by ccccccc; rolled back to ccccccc"
    );
}

#[test]
fn delivery_figures_follow_the_history() {
    let window = Window {
        from: NOW - 86_400,
        to: NOW + 1,
    };
    let status = demo_sync().status.unwrap_or_default();
    let figures = delivery::figures(&delivery::outcomes(&status), window);
    assert_eq!(figures.deployments, 3);
    assert_eq!(figures.failures, 1);
    // Rejected 400s ago, the last good revision applied again 390s ago.
    assert_eq!(figures.restore_times, vec![10]);
    assert_eq!(figures.unrestored, 0);
    // Committed 1100s ago, good 900s ago; the revert's commit time is not known.
    assert_eq!(figures.lead_times, vec![200]);
    let html = gitsyncs(&[demo_sync()], window, &[]);
    assert!(html.contains("<td>3.00/day (3)</td>"), "{html}");
    assert!(html.contains("<td>33% (1/3)</td>"), "{html}");
    assert!(html.contains("<td>10s</td>"), "{html}");
    assert!(html.contains("<td>3m20s</td>"), "{html}");
}

#[test]
fn the_gitsync_page_hides_credentials_and_lists_the_inventory() {
    let html = super::gitsync(&GitSyncPage {
        sync: &demo_sync(),
        events: &[],
        window: Window { from: 0, to: NOW },
        notes: &[],
        now: now(),
    });
    assert!(!html.contains("secret"), "{html}");
    assert!(html.contains("<li class=\"rejected\">"));
    assert!(html.contains("<td>Rollout</td><td>shop</td><td>web</td>"));
    assert!(html.contains("<td>Ready</td><td>True</td><td>RolledBack</td>"));
}
