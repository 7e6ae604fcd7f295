//! The AWS ALB router on the local control plane: the forward action weir annotates on the
//! team's Ingress, followed by the simulated data plane (`weir-sim traffic` routes a
//! `use-annotation` path by it, as the AWS Load Balancer Controller does), analysis in
//! Prometheus judging the canary's real share, and every weight watched.

#[path = "support/routers.rs"]
mod routers;
mod support;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use routers::{ObjectWeights, controller, delete_holding, healthy, share, simulator, templates};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, delete_rollout, phase, status_patch, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::rollout::RolloutPhase;
use weir::traffic::alb;

const ACTION: &str = "alb.ingress.kubernetes.io/actions.web-stable";

fn services() -> Vec<Value> {
    ["web-stable", "web-canary"]
        .iter()
        .map(|service| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}})
        })
        .collect()
}

/// The team's Ingress as Argo's docs write it: its path names the stable Service with the
/// port `use-annotation`, and `extra_annotations` beside the class's own.
fn ingress(extra_annotations: Value) -> Value {
    let mut annotations = json!({"alb.ingress.kubernetes.io/scheme": "internal"});
    if let (Some(all), Some(extra)) = (annotations.as_object_mut(), extra_annotations.as_object()) {
        all.extend(extra.clone());
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "annotations": annotations},
        "spec": {"ingressClassName": "alb", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web-stable", "port": {"name": "use-annotation"}}}}]}}]}
    })
}

async fn apply_ingress(ns: &TestNamespace, manager: &str, object: &Value) {
    let ingress: Ingress = serde_json::from_value(object.clone()).expect("an Ingress");
    ns.api::<Ingress>()
        .patch(
            "web",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&ingress),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the Ingress: {e}"));
}

async fn routing(ns: &TestNamespace) {
    for service in services() {
        apply(ns, service).await;
    }
    apply_ingress(ns, "weir-test", &ingress(json!({}))).await;
}

/// The Rollout as Argo documents an ALB canary (only `apiVersion` differs), its canary
/// failing `error_rate` of requests.
fn rollout(image: &str, error_rate: &str, steps: Value) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"},
                "annotations": {"sim.weir.dev/error-rate": error_rate}},
            "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80}},
            "steps": steps}}}})
}

fn analysed_steps() -> Value {
    json!([
        {"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "share-20"}]}},
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "share-50"}]}}
    ])
}

/// The canary's share of the Ingress's action; None while it has none, -1 for one that
/// cannot be read (so the log shows it).
fn canary_weight(ingress: &Ingress) -> Option<i32> {
    let text = ingress.metadata.annotations.as_ref()?.get(ACTION)?;
    Some(match alb::parse_action(text) {
        Ok(Some(action)) => alb::canary_share(&action, "web-canary"),
        _ => -1,
    })
}

/// The stable's share, to check the two always make 100.
fn stable_weight(ingress: &Ingress) -> Option<i32> {
    let text = ingress.metadata.annotations.as_ref()?.get(ACTION)?;
    let action = alb::parse_action(text).ok()??;
    Some(alb::canary_share(&action, "web-stable"))
}

/// Every canary weight the Ingress's action carried, in order, as a watch sees it.
fn action_log(ns: &TestNamespace) -> ObjectWeights {
    ObjectWeights::start(
        ns.api::<Ingress>(),
        Some("web"),
        Vec::new(),
        canary_weight,
        None,
    )
}

async fn the_ingress(ns: &TestNamespace) -> Ingress {
    ns.api::<Ingress>().get("web").await.expect("the Ingress")
}

#[tokio::test]
async fn an_alb_canary_with_analysis_walks_its_weights_to_healthy() {
    let ns = TestNamespace::new(&client().await, "alb").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0", analysed_steps())).await;
    healthy(&ns, &rollout("web:1", "0", analysed_steps())).await;
    // Between releases the action sends everything to the stable.
    let at_rest = eventually("the action all to the stable", LIMIT, || async {
        let ingress = ns.api::<Ingress>().get("web").await.ok()?;
        (canary_weight(&ingress) == Some(0)).then_some(ingress)
    })
    .await;
    assert_eq!(stable_weight(&at_rest), Some(100));
    let log = action_log(&ns);

    apply(&ns, rollout("web:2", "0", analysed_steps())).await;
    let at_20 = eventually("the action at 20", LIMIT, || async {
        let ingress = ns.api::<Ingress>().get("web").await.ok()?;
        (canary_weight(&ingress) == Some(20)).then_some(ingress)
    })
    .await;
    // The action as the AWS Load Balancer Controller reads it.
    let annotations = at_20.metadata.annotations.clone().unwrap_or_default();
    let action: Value = serde_json::from_str(&annotations[ACTION]).expect("JSON");
    assert_eq!(
        action,
        json!({"type": "forward", "forwardConfig": {"targetGroups": [
            {"serviceName": "web-canary", "servicePort": "80", "weight": 20},
            {"serviceName": "web-stable", "servicePort": "80", "weight": 80}]}})
    );
    // Nothing else of the Ingress is weir's: the team's annotation and spec are as applied,
    // and weir-rollout manages the one annotation.
    assert_eq!(
        annotations
            .get("alb.ingress.kubernetes.io/scheme")
            .map(String::as_str),
        Some("internal")
    );
    let team: Ingress = serde_json::from_value(ingress(json!({}))).expect("an Ingress");
    assert_eq!(
        at_20.spec.as_ref().map(|s| &s.rules),
        team.spec.as_ref().map(|s| &s.rules)
    );
    let weir_fields: Vec<Value> = at_20
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("weir-rollout"))
        .map(|m| serde_json::to_value(&m.fields_v1).unwrap_or_default())
        .collect();
    assert_eq!(
        weir_fields,
        [json!({"f:metadata": {"f:annotations": {format!("f:{ACTION}"): {}}}})]
    );

    healthy(&ns, &rollout("web:2", "0", analysed_steps())).await;
    eventually("the watch to see the action back at 0", LIMIT, || async {
        (log.states().last() == Some(&0) && log.states().len() > 1).then_some(())
    })
    .await;
    assert_eq!(
        log.states(),
        vec![0, 20, 50, 100, 0],
        "every weight the action carried, in order"
    );
    assert_eq!(stable_weight(&the_ingress(&ns).await), Some(100));
    let runs = ns
        .api::<weir::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await
        .expect("runs")
        .items;
    let phases: Vec<_> = runs
        .iter()
        .map(|r| r.status.as_ref().and_then(|s| s.phase))
        .collect();
    assert_eq!(
        phases,
        [
            Some(weir::api::analysis::AnalysisPhase::Successful),
            Some(weir::api::analysis::AnalysisPhase::Successful)
        ],
        "both steps' analyses saw the canary's share in Prometheus"
    );
    // All traffic on the new stable, none through the canary Service any more.
    share(&ns, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_failing_alb_canary_aborts_and_the_action_returns_all_traffic_to_stable() {
    let ns = TestNamespace::new(&client().await, "alb-abort").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0", analysed_steps())).await;
    healthy(&ns, &rollout("web:1", "0", analysed_steps())).await;
    eventually("the action all to the stable", LIMIT, || async {
        let ingress = ns.api::<Ingress>().get("web").await.ok()?;
        (canary_weight(&ingress) == Some(0)).then_some(())
    })
    .await;
    let log = action_log(&ns);

    apply(&ns, rollout("web:2", "0.5", analysed_steps())).await;
    // The canary's share reaches the data plane before analysis judges it.
    share(&ns, |v| (0.17..=0.23).contains(&v)).await;
    let aborted = wait_for(&ns, "the analysis to abort the rollout", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().is_some_and(|s| s.abort)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    let cause = aborted.status.and_then(|s| s.abort_cause).expect("a cause");
    assert_eq!(
        (cause.reason.as_str(), cause.metric.as_deref()),
        ("AnalysisFailed", Some("success-rate"))
    );
    let back = the_ingress(&ns).await;
    assert_eq!(
        (canary_weight(&back), stable_weight(&back)),
        (Some(0), Some(100)),
        "the abort sends everything to the stable"
    );
    assert_eq!(log.states(), vec![0, 20, 0]);
    // All traffic back on the stable version.
    share(&ns, |v| v == 0.0).await;

    delete_rollout(&ns).await;
    let left = the_ingress(&ns).await;
    assert_eq!(
        (canary_weight(&left), stable_weight(&left)),
        (Some(0), Some(100)),
        "the action stays, all to the stable, once the Rollout is gone"
    );
}

#[tokio::test]
async fn a_garbled_action_is_written_over_and_deleting_mid_canary_returns_it_to_stable_first() {
    let ns = TestNamespace::new(&client().await, "alb-delete").await;
    let _controller = ControllerProcess::start(&ns.name);
    routing(&ns).await;
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    apply(&ns, rollout("web:1", "0", steps.clone())).await;
    healthy(&ns, &rollout("web:1", "0", steps.clone())).await;
    apply(&ns, rollout("web:2", "0", steps)).await;
    let ingresses = ns.api::<Ingress>();
    eventually("the action at 30", LIMIT, || async {
        let ingress = ingresses.get("web").await.ok()?;
        (canary_weight(&ingress) == Some(30)).then_some(())
    })
    .await;
    // Someone writes garbage into weir's action: it reads as no action of weir's, so weir
    // (woken by its watch on Ingresses) writes the step's action over it rather than stop.
    ingresses
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "alb.ingress.kubernetes.io/actions.web-stable": "{not json"}}})),
        )
        .await
        .expect("garbling the action");
    eventually("the action repaired at 30", LIMIT, || async {
        let ingress = ingresses.get("web").await.ok()?;
        (canary_weight(&ingress) == Some(30)).then_some(())
    })
    .await;
    delete_holding(
        &ns,
        "weir to send all traffic to the stable while the Rollout is still there",
        || async {
            ingresses
                .get("web")
                .await
                .is_ok_and(|i| canary_weight(&i) == Some(0) && stable_weight(&i) == Some(100))
        },
    )
    .await;
}

/// The application as a team keeps it in Git: the Ingress with its action all to the stable,
/// written the way Argo Rollouts writes it (so the ALB routes before the first release).
fn app_in_git(image: &str, scheme: &str) -> String {
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    let all_to_stable = r#"{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-stable","ServicePort":"80","Weight":100}]}}"#;
    let mut documents = services();
    documents.push(ingress(json!({
        "alb.ingress.kubernetes.io/scheme": scheme,
        ACTION: all_to_stable,
    })));
    documents.push(rollout(image, "0", steps));
    support::app::yaml_stream(&documents)
}

async fn scheme(ns: &TestNamespace) -> Option<String> {
    let ingress = ns.api::<Ingress>().get("web").await.ok()?;
    ingress
        .metadata
        .annotations?
        .get("alb.ingress.kubernetes.io/scheme")
        .cloned()
}

#[tokio::test]
async fn a_git_sync_never_resets_the_alb_action_mid_canary() {
    use support::git::GitRepo;
    let ns = TestNamespace::new(&client().await, "alb-gitsync").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "web 1",
        &[("deploy/app.yaml", &app_in_git("web:1", "internal"))],
    );
    // Lockdown off: the GitSync acts as the controller, which may write Ingresses.
    let _controller =
        ControllerProcess::start_unlocked(&ns.name, &["--metrics-addr", "127.0.0.1:0"], &[]);
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    healthy(&ns, &rollout("web:1", "0", json!([]))).await;
    let log = action_log(&ns);

    repo.commit(
        "web 2",
        &[("deploy/app.yaml", &app_in_git("web:2", "internal"))],
    );
    wait_for(&ns, "the canary paused at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(30)
    })
    .await;

    // The sync goes on applying the Ingress each second (a hand edit is repaired)...
    apply_ingress(
        &ns,
        "weir-test",
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"}}}),
    )
    .await;
    eventually("the hand edit to be repaired", LIMIT, || async {
        (scheme(&ns).await.as_deref() == Some("internal")).then_some(())
    })
    .await;
    // ...and a new commit's Ingress is applied too...
    repo.commit(
        "web 2, public",
        &[("deploy/app.yaml", &app_in_git("web:2", "internet-facing"))],
    );
    eventually("the new commit's Ingress", LIMIT, || async {
        (scheme(&ns).await.as_deref() == Some("internet-facing")).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // ...and the action the rollout set never moves.
    assert_eq!(log.states(), vec![0, 30], "Git never moved the action");

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy(&ns, &rollout("web:2", "0", json!([]))).await;
    eventually("the action to return to the stable", LIMIT, || async {
        (log.states() == vec![0, 30, 100, 0]).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(log.states(), vec![0, 30, 100, 0]);
}
