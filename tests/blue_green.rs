//! Blue-green on the local control plane: real API server, real ReplicaSet controller, the
//! kubelet stand-in, and a `weir controller` process per test.

#[path = "support/routers.rs"]
#[allow(dead_code, unused_imports)]
mod routers;
mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};
use support::app::{apply, healthy_on, phase, pods_carrying, service_hash, status_patch, wait_for};
use support::watch::ObjectLog;
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::rollout::{PauseReason, RolloutPhase};

/// The active and preview Services, selecting the app until weir pins them to a version.
async fn services(ns: &TestNamespace) {
    // Created as `kubectl create` would: an API server before 1.21 refuses to server-side
    // apply a port without its protocol, and people leave the default out.
    for service in ["web-active", "web-preview"] {
        let service: Service = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .expect("a Service");
        ns.api::<Service>()
            .create(&Default::default(), &service)
            .await
            .expect("the Service");
    }
}

fn rollout(image: &str, blue_green: Value) -> Value {
    let mut strategy = json!({"activeService": "web-active", "previewService": "web-preview",
        "scaleDownDelaySeconds": 2, "abortScaleDownDelaySeconds": 2});
    if let (Some(strategy), Some(extra)) = (strategy.as_object_mut(), blue_green.as_object()) {
        strategy.extend(extra.clone());
    }
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"blueGreen": strategy}
    }})
}

async fn replicas_of(ns: &TestNamespace, hash: &str) -> Option<i32> {
    let name = format!("web-{hash}");
    let rs = ns.api::<ReplicaSet>().get_opt(&name).await.ok()??;
    rs.spec.and_then(|s| s.replicas)
}

/// The pod anti-affinity of a version's ReplicaSet's pod template, as JSON.
async fn pod_anti_affinity(ns: &TestNamespace, hash: &str) -> Option<Value> {
    let name = format!("web-{hash}");
    let rs = ns.api::<ReplicaSet>().get_opt(&name).await.ok()??;
    let anti = rs.spec?.template?.spec?.affinity?.pod_anti_affinity?;
    serde_json::to_value(anti).ok()
}

fn hashes(rollout: &weir::api::Rollout) -> (String, String) {
    let status = rollout.status.clone().unwrap_or_default();
    (
        status.stable_rs.unwrap_or_default(),
        status.canary_rs.unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_release_is_previewed_paused_promoted_and_switched_in_one_move() {
    let ns = TestNamespace::new(&client().await, "blue-green").await;
    let _controller = ControllerProcess::start(&ns.name);
    services(&ns).await;
    let manual = json!({"autoPromotionEnabled": false, "previewReplicaCount": 1,
        "antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 60}}});
    apply(&ns, rollout("web:1", manual.clone())).await;
    let first = healthy_on(&ns, "web:1").await;
    let (v1, _) = hashes(&first);
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v1.as_str())
    );

    apply(&ns, rollout("web:2", manual)).await;
    let paused = wait_for(&ns, "Paused before the switch", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().is_some_and(|s| {
                s.pause_conditions
                    .iter()
                    .any(|c| c.reason == PauseReason::BlueGreenPause)
            })
    })
    .await;
    let (stable, v2) = hashes(&paused);
    assert_eq!(stable, v1);
    assert_ne!(v2, v1);
    assert_eq!(replicas_of(&ns, &v2).await, Some(1), "previewReplicaCount");
    assert_eq!(replicas_of(&ns, &v1).await, Some(3));
    assert_eq!(
        pod_anti_affinity(&ns, &v2).await,
        Some(
            json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 60,
            "podAffinityTerm": {"labelSelector": {"matchExpressions": [
                {"key": "rollouts-pod-template-hash", "operator": "In", "values": [v1]}]},
            "topologyKey": "kubernetes.io/hostname"}}]})
        ),
        "antiAffinity keeps the new pods off the nodes of the version they replace"
    );
    assert_eq!(
        pod_anti_affinity(&ns, &v1).await,
        None,
        "the first version had none to avoid"
    );
    assert_eq!(
        service_hash(&ns, "web-preview").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v1.as_str()),
        "users stay on the active version until promoted"
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(replicas_of(&ns, &v2).await, Some(3));
    eventually(
        "the previous version scaled down after its delay",
        support::app::LIMIT,
        || async { (replicas_of(&ns, &v1).await == Some(0)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn ephemeral_metadata_moves_with_the_switch_on_the_same_pods() {
    let ns = TestNamespace::new(&client().await, "blue-green-metadata").await;
    let _controller = ControllerProcess::start(&ns.name);
    services(&ns).await;
    let settings = json!({"autoPromotionEnabled": false, "scaleDownDelaySeconds": 600,
        "activeMetadata": {"labels": {"role": "active"}, "annotations": {"example.com/live": "yes"}},
        "previewMetadata": {"labels": {"role": "preview", "stage": "new"}}});
    apply(&ns, rollout("web:1", settings.clone())).await;
    let (v1, _) = hashes(&healthy_on(&ns, "web:1").await);
    let active = [("role", Some("active")), ("stage", None)];
    let live = [("example.com/live", Some("yes"))];
    pods_carrying(&ns, &v1, 3, &active, &live).await;

    apply(&ns, rollout("web:2", settings)).await;
    let paused = wait_for(&ns, "Paused before the switch", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let (_, v2) = hashes(&paused);
    let previewed = pods_carrying(
        &ns,
        &v2,
        3,
        &[("role", Some("preview")), ("stage", Some("new"))],
        &[("example.com/live", None)],
    )
    .await;
    pods_carrying(&ns, &v1, 3, &active, &live).await;
    let rs_uid = |rs: Option<ReplicaSet>| rs.and_then(|rs| rs.metadata.uid);
    let v2_uid = rs_uid(
        ns.api::<ReplicaSet>()
            .get_opt(&format!("web-{v2}"))
            .await
            .expect("read"),
    );
    assert!(v2_uid.is_some());
    let phases = ObjectLog::start(
        ns.api::<weir::api::Rollout>(),
        Some("web"),
        Vec::new(),
        |r: &weir::api::Rollout| {
            let status = r.status.as_ref()?;
            Some((status.phase, status.stable_rs.clone()))
        },
        None,
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    let promoted = pods_carrying(&ns, &v2, 3, &active, &live).await;
    pods_carrying(
        &ns,
        &v1,
        3,
        &[("role", None), ("stage", None), ("app", Some("web"))],
        &[("example.com/live", None)],
    )
    .await;
    assert_eq!(
        promoted.keys().collect::<Vec<_>>(),
        previewed.keys().collect::<Vec<_>>(),
        "the same pods, relabelled in place"
    );
    let rs = ns
        .api::<ReplicaSet>()
        .get(&format!("web-{v2}"))
        .await
        .expect("the new version's ReplicaSet");
    assert_eq!(rs.metadata.uid, v2_uid, "not recreated");
    let spec = rs.spec.expect("spec");
    assert_eq!(
        json!(spec.selector.match_labels),
        json!({"app": "web", "rollouts-pod-template-hash": v2}),
        "the selector is untouched"
    );
    assert_eq!(
        json!(
            spec.template
                .and_then(|t| t.metadata)
                .and_then(|m| m.labels)
        ),
        json!({"app": "web", "role": "active", "rollouts-pod-template-hash": v2}),
        "pods created from now on carry the active metadata"
    );
    // Relabelling changed no pod: neither version was read as unavailable meanwhile, so the
    // release went Healthy once and stayed so.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let states = phases.states();
    let healthy = (Some(RolloutPhase::Healthy), Some(v2.clone()));
    let first = states.iter().position(|s| *s == healthy);
    assert_eq!(
        first.map(|at| &states[at..]),
        Some(&[healthy][..]),
        "{states:?}"
    );
}

#[tokio::test]
async fn an_abort_before_the_switch_never_moves_the_active_service() {
    let ns = TestNamespace::new(&client().await, "blue-green-abort").await;
    let _controller = ControllerProcess::start(&ns.name);
    services(&ns).await;
    let manual = json!({"autoPromotionEnabled": false});
    apply(&ns, rollout("web:1", manual.clone())).await;
    let (v1, _) = hashes(&healthy_on(&ns, "web:1").await);
    apply(&ns, rollout("web:2", manual)).await;
    let paused = wait_for(&ns, "Paused before the switch", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let (_, v2) = hashes(&paused);
    assert_eq!(
        replicas_of(&ns, &v2).await,
        Some(3),
        "full preview by default"
    );

    status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v1.as_str())
    );
    eventually(
        "the preview scaled down after the abort delay",
        support::app::LIMIT,
        || async { (replicas_of(&ns, &v2).await == Some(0)).then_some(()) },
    )
    .await;
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(replicas_of(&ns, &v1).await, Some(3));
}

/// An AnalysisTemplate whose one Prometheus measurement is the constant `value`, judged
/// against 0.95.
async fn constant_template(ns: &TestNamespace, name: &str, value: f64) {
    apply(
        ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": name}, "spec": {"metrics": [{
                "name": "success-rate", "count": 1,
                "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"query": format!("vector({value})")}}}]}}),
    )
    .await;
}

#[tokio::test]
async fn a_failed_post_promotion_analysis_switches_the_active_service_back() {
    let ns = TestNamespace::new(&client().await, "blue-green-post").await;
    let _controller = ControllerProcess::start(&ns.name);
    services(&ns).await;
    constant_template(&ns, "good", 1.0).await;
    constant_template(&ns, "bad", 0.42).await;
    let gated = json!({
        "prePromotionAnalysis": {"templates": [{"templateName": "good"}]},
        "postPromotionAnalysis": {"templates": [{"templateName": "bad"}]}
    });
    apply(&ns, rollout("web:1", gated.clone())).await;
    let (v1, _) = hashes(&healthy_on(&ns, "web:1").await);

    apply(&ns, rollout("web:2", gated)).await;
    let aborted = wait_for(&ns, "Degraded by the post-promotion analysis", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let status = aborted.status.clone().unwrap_or_default();
    assert_eq!(
        status.abort_cause.map(|c| c.reason).as_deref(),
        Some("AnalysisFailed"),
        "{:?}",
        status.message
    );
    assert_eq!(status.stable_rs.as_deref(), Some(v1.as_str()));
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(v1.as_str()),
        "switched back to the previous version"
    );
    assert_eq!(replicas_of(&ns, &v1).await, Some(3), "still scaled up");
    let runs = ns
        .api::<weir::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await
        .expect("runs");
    let kinds: Vec<String> = runs
        .items
        .iter()
        .filter_map(|r| r.metadata.labels.as_ref()?.get("weir.dev/step").cloned())
        .collect();
    assert!(
        kinds.contains(&"pre-promotion".to_owned()) && kinds.contains(&"post-promotion".to_owned()),
        "{kinds:?}"
    );
}

/// What a kill test watches: the phase, the stage, and where each Service points.
async fn standing(
    ns: &TestNamespace,
) -> Option<(String, Option<i32>, Option<String>, Option<String>)> {
    let rollout = ns.api::<weir::api::Rollout>().get("web").await.ok()?;
    let status = rollout.status.unwrap_or_default();
    Some((
        format!("{:?}/{:?}", status.phase, status.canary_rs),
        status.current_step_index,
        service_hash(ns, "web-active").await,
        service_hash(ns, "web-preview").await,
    ))
}

#[tokio::test]
async fn a_controller_killed_at_every_phase_finishes_the_release_the_same_way() {
    let ns = TestNamespace::new(&client().await, "blue-green-crash").await;
    services(&ns).await;
    constant_template(&ns, "good", 1.0).await;
    let gated = json!({
        "autoPromotionSeconds": 1,
        "prePromotionAnalysis": {"templates": [{"templateName": "good"}]},
        "postPromotionAnalysis": {"templates": [{"templateName": "good"}]}
    });
    let mut controller = ControllerProcess::start(&ns.name);
    apply(&ns, rollout("web:1", gated.clone())).await;
    let (v1, _) = hashes(&healthy_on(&ns, "web:1").await);
    apply(&ns, rollout("web:2", gated)).await;
    let v2 = weir::template_hash::of(
        &serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:2"}]}}))
        .expect("template"),
    );
    let mut actives = vec![v1.clone()];
    let mut kills = 0;
    loop {
        let before = standing(&ns).await;
        let done = eventually(
            "the next change, or Healthy on web:2",
            support::app::LIMIT,
            || async {
                let now = standing(&ns).await?;
                if now.2.as_ref().is_some_and(|a| actives.last() != Some(a)) {
                    return Some(false);
                }
                let rollout = ns.api::<weir::api::Rollout>().get("web").await.ok()?;
                let healthy =
                    phase(&rollout) == Some(RolloutPhase::Healthy) && hashes(&rollout).0 == v2;
                if healthy {
                    return Some(true);
                }
                (Some(&now) != before.as_ref()).then_some(false)
            },
        )
        .await;
        if let Some(active) = service_hash(&ns, "web-active").await
            && actives.last() != Some(&active)
        {
            actives.push(active);
        }
        if done {
            break;
        }
        // SIGKILL right after a change: no shutdown, possibly no status write.
        controller.kill();
        kills += 1;
        controller = ControllerProcess::start(&ns.name);
    }
    drop(controller);
    assert!(
        kills >= 3,
        "the controller was killed at each phase ({kills} kills)"
    );
    assert_eq!(
        actives,
        vec![v1, v2],
        "the active Service switched once, forward"
    );
}

/// The app as its team keeps it in Git: both Services, a failing analysis template, and the
/// blue-green Rollout of `image` (with `blue_green` merged into its strategy).
fn app_in_git(image: &str, blue_green: Value) -> String {
    let mut documents: Vec<Value> = ["web-active", "web-preview"]
        .iter()
        .map(|service| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}})
        })
        .collect();
    documents.push(
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "bad"}, "spec": {"metrics": [{
            "name": "success-rate", "count": 1, "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"query": "vector(0.42)"}}}]}}),
    );
    documents.push(rollout(image, blue_green));
    support::app::yaml_stream(&documents)
}

#[tokio::test]
async fn under_a_gitsync_a_failed_post_promotion_analysis_rejects_the_revision() {
    use support::git::GitRepo;
    use support::gitops::{git_sync_every, ready_reason, sync_where};
    let ns = TestNamespace::new(&client().await, "blue-green-gitsync").await;
    let repo = GitRepo::new(&ns.name);
    let v1 = repo.commit(
        "web 1",
        &[("deploy/app.yaml", &app_in_git("web:1", json!({})))],
    );
    let _controller = ControllerProcess::start(&ns.name);
    git_sync_every(&ns, &repo.file_url(), false, "1s").await;
    let (active_v1, _) = hashes(&healthy_on(&ns, "web:1").await);
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;

    let post = json!({"postPromotionAnalysis": {"templates": [{"templateName": "bad"}]}});
    let v2 = repo.commit("web 2", &[("deploy/app.yaml", &app_in_git("web:2", post))]);
    let status = sync_where(&ns, "v2 rejected, v1 re-applied", |s| {
        ready_reason(s) == "RolledBack"
    })
    .await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(v1.as_str()));
    let rejected = &status.rejected_revisions[0];
    assert_eq!(
        (rejected.revision.as_str(), rejected.reason.as_str()),
        (v2.as_str(), "AnalysisFailed")
    );
    healthy_on(&ns, "web:1").await;
    assert_eq!(
        service_hash(&ns, "web-active").await.as_deref(),
        Some(active_v1.as_str())
    );
}

/// The users' Ingress to the active Service and the testers' to the preview Service: the
/// simulated data plane sends requests through both, so each analysis measures what its
/// Service serves.
async fn ingresses(ns: &TestNamespace) {
    for (name, host, service) in [
        ("web", "shop.example", "web-active"),
        ("web-preview", "preview.shop.example", "web-preview"),
    ] {
        let ingress: Ingress = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}
        }))
        .expect("an Ingress");
        ns.api::<Ingress>()
            .create(&Default::default(), &ingress)
            .await
            .expect("the Ingress");
    }
}

/// `service` must answer 95% of what it is sent, over the 5 s after a 7 s settling delay.
async fn success_template(ns: &TestNamespace, name: &str, service: &str) {
    let filter = format!("namespace=\"{}\",service=\"{service}\"", ns.name);
    let query = format!(
        "sum(rate(http_requests_total{{{filter},code=\"200\"}}[5s])) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    apply(
        ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": [{"name": "success-rate", "initialDelay": "7s", "count": 1,
            "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"query": query}}}]}}),
    )
    .await;
}

/// A release of `version`, failing half its requests when `failing`, gated as `gates` says.
fn measured(version: &str, failing: bool, gates: Value) -> Value {
    let mut manifest = rollout(&format!("web:{version}"), gates);
    if failing {
        manifest["spec"]["template"]["metadata"]["annotations"] =
            json!({"sim.weir.dev/error-rate": "0.5"});
    }
    manifest
}

#[tokio::test]
async fn pre_promotion_analysis_measures_the_preview_and_post_promotion_the_live_traffic() {
    let ns = TestNamespace::new(&client().await, "blue-green-traffic").await;
    let (_simulator, _target) = routers::simulator(&ns).await;
    let _controller = routers::controller(&ns);
    services(&ns).await;
    ingresses(&ns).await;
    success_template(&ns, "preview-ok", "web-preview").await;
    success_template(&ns, "live-ok", "web-active").await;
    let both = json!({
        "prePromotionAnalysis": {"templates": [{"templateName": "preview-ok"}]},
        "postPromotionAnalysis": {"templates": [{"templateName": "live-ok"}]}});
    let first = measured("1", false, both.clone());
    apply(&ns, first.clone()).await;
    let (v1, _) = hashes(&routers::healthy(&ns, &first).await);
    let active = ObjectLog::start(
        ns.api::<Service>(),
        Some("web-active"),
        Vec::new(),
        |service: &Service| {
            service
                .spec
                .as_ref()?
                .selector
                .as_ref()?
                .get(weir::api::contract::POD_TEMPLATE_HASH_LABEL)
                .cloned()
        },
        None,
    );

    // A version that fails half its requests: the testers' traffic through the preview shows
    // it, so users never see it.
    apply(&ns, measured("2", true, both.clone())).await;
    wait_for(&ns, "Degraded by the pre-promotion analysis", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    assert_eq!(
        active.states(),
        vec![v1.clone()],
        "the active Service never moved"
    );

    // A good version passes both: the preview's traffic, then the users'.
    let good = measured("3", false, both);
    apply(&ns, good.clone()).await;
    let (v3, _) = hashes(&routers::healthy(&ns, &good).await);
    assert_eq!(active.states(), vec![v1.clone(), v3.clone()], "one switch");

    // Without a check of the preview, a failing version reaches users; the analysis of the
    // live traffic catches it and the active Service switches back.
    let unchecked = json!({"postPromotionAnalysis": {"templates": [{"templateName": "live-ok"}]}});
    apply(&ns, measured("4", true, unchecked)).await;
    let aborted = wait_for(&ns, "Degraded by the post-promotion analysis", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let (_, v4) = hashes(&aborted);
    eventually(
        "the active Service back on the good version",
        support::app::LIMIT,
        || async {
            (active.states() == vec![v1.clone(), v3.clone(), v4.clone(), v3.clone()]).then_some(())
        },
    )
    .await;
}
