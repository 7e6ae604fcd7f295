//! A GitOps application for the integration tests: the whole app (routing, an analysis
//! template, a ConfigMap, the Rollout) as its team keeps it in one Git file, its GitSync,
//! and what the tests read back.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use weir::api::Rollout;
use weir::api::gitsync::{GitSync, GitSyncStatus};

use super::app::LIMIT;
use super::git::GitRepo;
use super::{MetricsServer, ScrapeTarget, TestNamespace, eventually, prometheus_url};

/// The application as its team keeps it in Git: Services, HTTPRoute, the analysis template,
/// the Rollout (whose analysis names the version it ships), a ConfigMap, and `extra` objects.
pub fn manifests(
    ns: &TestNamespace,
    image: &str,
    setting: &str,
    steps: Value,
    extra: &[Value],
) -> String {
    let query = format!(
        "weir_test_success_rate{{test=\"{}\",version=\"{{{{args.version}}}}\"}}",
        ns.name
    );
    let mut documents = super::app::routing();
    documents.extend([
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "success-rate"},
            "spec": {"args": [{"name": "version"}], "metrics": [{"name": "success-rate",
                "interval": "1s", "count": 1,
                "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"query": query}}}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"value": setting}}),
        super::app::rollout(image, steps, json!({})),
    ]);
    documents.extend(extra.iter().cloned());
    super::app::yaml_stream(&documents)
}

pub fn commit_with(
    repo: &GitRepo,
    ns: &TestNamespace,
    version: u32,
    steps: Value,
    extra: &[Value],
) -> String {
    let image = format!("web:{version}");
    let manifest = manifests(ns, &image, &format!("setting {version}"), steps, extra);
    repo.commit(&format!("web {version}"), &[("deploy/app.yaml", &manifest)])
}

pub fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "extra"},
        "stringData": {"token": "v3 only"}})
}

pub async fn git_sync_every(ns: &TestNamespace, url: &str, write_back: bool, interval: &str) {
    super::app::apply_git_sync(
        ns,
        "app",
        json!({"url": url, "ref": {"branch": "main"}, "path": "deploy", "interval": interval,
            "rollback": {"writeBack": {"enabled": write_back, "authorName": "weir",
                "authorEmail": "weir@example.com"}}}),
    )
    .await;
}

pub async fn sync_status(ns: &TestNamespace) -> GitSyncStatus {
    ns.api::<GitSync>()
        .get("app")
        .await
        .ok()
        .and_then(|s| s.status)
        .unwrap_or_default()
}

pub async fn sync_where(
    ns: &TestNamespace,
    what: &str,
    check: impl Fn(&GitSyncStatus) -> bool,
) -> GitSyncStatus {
    eventually(what, LIMIT, || async {
        Some(sync_status(ns).await).filter(|s| check(s))
    })
    .await
}

pub fn condition<'s>(status: &'s GitSyncStatus, kind: &str) -> Option<(&'s str, &'s str, &'s str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

pub fn ready_reason(status: &GitSyncStatus) -> &str {
    condition(status, "Ready").map_or("", |(_, reason, _)| reason)
}

pub async fn setting(ns: &TestNamespace) -> Option<String> {
    let found = ns.api::<ConfigMap>().get_opt("settings").await.ok()??;
    found.data?.get("value").cloned()
}

pub fn revisions(rollout: &Rollout) -> (Option<String>, Option<String>) {
    let status = rollout.status.clone().unwrap_or_default();
    (status.stable_revision, status.canary_revision)
}

/// The revert commit weir pushed: its message and whether `deploy/` there equals `good`'s.
pub fn revert_on_branch(repo: &GitRepo, rejected: &str, good: &str) -> String {
    let head = repo.git(&["rev-parse", "main"]);
    let message = repo.git(&["log", "-1", "--format=%B", "main"]);
    assert!(
        message.contains(&format!("Weir-Rejected-Revision: {rejected}")),
        "the branch's tip is weir's revert: {message}"
    );
    assert_eq!(
        repo.git(&["rev-parse", "main^"]),
        rejected,
        "the revert sits on the rejected commit"
    );
    assert_eq!(
        repo.git(&["rev-parse", "main:deploy"]),
        repo.git(&["rev-parse", &format!("{good}:deploy")]),
        "the branch's tree at path is the last good revision's"
    );
    head
}

/// `weir_gitsync_objects_total{outcome}` as the controller's /metrics on `port` says (0
/// before the first count).
pub async fn gitsync_objects(port: u16, outcome: &str) -> u64 {
    super::outcome_count(port, "weir_gitsync_objects_total", outcome)
        .await
        .unwrap_or(0)
}

/// What each version's pods would report: web:3 is the bad one.
pub fn success_rates(ns: &TestNamespace) -> String {
    ["web:1", "web:2", "web:3", "web:4", "web:5"]
        .iter()
        .map(|version| {
            let rate = if *version == "web:3" { 0.5 } else { 0.99 };
            format!(
                "weir_test_success_rate{{test=\"{}\",version=\"{version}\"}} {rate}\n",
                ns.name
            )
        })
        .collect()
}

/// Prometheus scraping the per-version rates, seen there for the bad version.
pub async fn version_rates(ns: &TestNamespace) -> (MetricsServer, ScrapeTarget) {
    let server = MetricsServer::start(&success_rates(ns)).await;
    let target = ScrapeTarget::add(&ns.name, &server.address, &[]);
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("prometheus url");
    let query = format!(
        "weir_test_success_rate{{test=\"{}\",version=\"web:3\"}}",
        ns.name
    );
    eventually("Prometheus to scrape the rates", LIMIT, || async {
        let response = prometheus.query(query.as_str()).get().await.ok()?;
        response.data().as_vector()?.first().map(|_| ())
    })
    .await;
    (server, target)
}
