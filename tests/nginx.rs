//! The NGINX Ingress router on the local control plane: weir's canary Ingress beside the
//! stable one, its `canary-weight` followed by the simulated data plane (`weir-sim traffic`),
//! analysis in Prometheus judging the canary's real share, and every weight watched.

#[path = "support/routers.rs"]
mod routers;
mod support;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use routers::{ObjectWeights, controller, delete_holding, healthy, share, simulator, templates};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, delete_rollout, phase, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::rollout::RolloutPhase;

const CANARY_INGRESS: &str = "web-web-canary";

/// The Services and the stable Ingress, as a team writes them: the Ingress sends to the
/// stable Service only.
async fn routing(ns: &TestNamespace) {
    for service in ["web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    let ingress: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}
    }))
    .expect("an Ingress");
    ns.api::<Ingress>()
        .patch(
            "web",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&ingress),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the stable Ingress: {e}"));
}

/// The Rollout as Argo documents an NGINX canary (only `apiVersion` differs), its canary
/// failing `error_rate` of requests.
fn rollout(image: &str, error_rate: &str) -> Value {
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
            "trafficRouting": {"nginx": {
                "stableIngress": "web",
                "additionalIngressAnnotations": {"canary-by-header": "X-Canary"}}},
            "steps": [
                {"setWeight": 20},
                {"analysis": {"templates": [{"templateName": "share-20"}]}},
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "share-50"}]}}
            ]}}}})
}

/// Every canary weight the Ingresses carried, in order, as a watch sees them: the canary
/// Ingress's `canary-weight`, 0 while there is none.
fn canary_log(ns: &TestNamespace) -> ObjectWeights {
    ObjectWeights::start(
        ns.api::<Ingress>(),
        Some(CANARY_INGRESS),
        vec![0],
        |ingress| Some(canary_weight(ingress)),
        Some(0),
    )
}

fn annotation<'a>(ingress: &'a Ingress, key: &str) -> Option<&'a str> {
    ingress
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// -1 for a canary Ingress without a readable weight, so the log shows it.
fn canary_weight(ingress: &Ingress) -> i32 {
    annotation(ingress, "nginx.ingress.kubernetes.io/canary-weight")
        .and_then(|w| w.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn an_nginx_canary_with_analysis_walks_its_weights_to_healthy() {
    let ns = TestNamespace::new(&client().await, "nginx").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0")).await;
    healthy(&ns, &rollout("web:1", "0")).await;
    let ingresses = ns.api::<Ingress>();
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "no canary Ingress while nothing is being rolled out"
    );
    let log = canary_log(&ns);

    apply(&ns, rollout("web:2", "0")).await;
    let at_20 = eventually("the canary Ingress at 20", LIMIT, || async {
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .ok()
            .flatten()
            .filter(|i| canary_weight(i) == 20)
    })
    .await;
    // The canary Ingress as weir makes it: the stable Ingress's rule sent to the canary
    // Service, NGINX's canary annotations, the Rollout's extra annotation under the prefix.
    assert_eq!(
        annotation(&at_20, "nginx.ingress.kubernetes.io/canary"),
        Some("true")
    );
    assert_eq!(
        annotation(&at_20, "nginx.ingress.kubernetes.io/canary-by-header"),
        Some("X-Canary")
    );
    let spec = at_20.spec.clone().expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rules = spec.rules.unwrap_or_default();
    let paths: Vec<(Option<String>, String, Option<String>)> = rules
        .iter()
        .flat_map(|r| {
            r.http.iter().flat_map(|h| &h.paths).map(|p| {
                (
                    r.host.clone(),
                    p.path.clone().unwrap_or_default(),
                    p.backend.service.as_ref().map(|s| s.name.clone()),
                )
            })
        })
        .collect();
    assert_eq!(
        paths,
        [(
            Some("shop.example".to_owned()),
            "/".to_owned(),
            Some("web-canary".to_owned())
        )]
    );
    let owner = at_20.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str(), o.controller))
            .collect::<Vec<_>>(),
        [("Rollout", "web", Some(true))]
    );
    let managers: Vec<String> = at_20
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["weir-rollout"]);
    let stable = ingresses.get("web").await.expect("the stable Ingress");
    assert!(
        stable.metadata.annotations.is_none(),
        "the stable Ingress is only read"
    );

    healthy(&ns, &rollout("web:2", "0")).await;
    assert_eq!(
        log.states(),
        vec![0, 20, 50, 100, 0],
        "every weight the canary Ingress carried, in order"
    );
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "the canary Ingress is gone once the rollout is done"
    );
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
    // All traffic on the new stable, none through the canary Ingress any more.
    share(&ns, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_failing_nginx_canary_aborts_to_stable_and_leaves_nothing_behind() {
    let ns = TestNamespace::new(&client().await, "nginx-abort").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0")).await;
    healthy(&ns, &rollout("web:1", "0")).await;
    let log = canary_log(&ns);

    apply(&ns, rollout("web:2", "0.5")).await;
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
    let ingresses = ns.api::<Ingress>();
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "an abort deletes the canary Ingress"
    );
    assert_eq!(log.states(), vec![0, 20, 0]);
    // All traffic back on the stable version.
    share(&ns, |v| v == 0.0).await;

    delete_rollout(&ns).await;
    let left: Vec<String> = ingresses
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|i| i.metadata.name)
        .collect();
    assert_eq!(left, ["web"], "only the team's own Ingress is left");
}

#[tokio::test]
async fn deleting_an_nginx_rollout_mid_canary_removes_its_canary_ingress_first() {
    let ns = TestNamespace::new(&client().await, "nginx-delete").await;
    let _controller = ControllerProcess::start(&ns.name);
    routing(&ns).await;
    let mut manifest = rollout("web:1", "0");
    manifest["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    apply(&ns, manifest.clone()).await;
    healthy(&ns, &manifest).await;
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    apply(&ns, manifest).await;
    let ingresses = ns.api::<Ingress>();
    eventually("the canary Ingress at 30", LIMIT, || async {
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .ok()
            .flatten()
            .filter(|i| canary_weight(i) == 30)
    })
    .await;
    delete_holding(
        &ns,
        "weir to remove its canary Ingress while the Rollout is still there",
        || async { matches!(ingresses.get_opt(CANARY_INGRESS).await, Ok(None)) },
    )
    .await;
}

#[tokio::test]
async fn several_stable_ingresses_get_a_canary_ingress_each() {
    let ns = TestNamespace::new(&client().await, "nginx-several").await;
    let _controller = ControllerProcess::start(&ns.name);
    routing(&ns).await;
    let internal: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web-internal"},
        "spec": {"rules": [{"host": "web.internal", "http": {"paths": [
            {"path": "/api", "pathType": "Prefix",
             "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}
    }))
    .expect("an Ingress");
    ns.api::<Ingress>()
        .create(&Default::default(), &internal)
        .await
        .expect("the second stable Ingress");
    let mut manifest = rollout("web:1", "0");
    manifest["spec"]["strategy"]["canary"]["trafficRouting"] =
        json!({"nginx": {"stableIngresses": ["web", "web-internal"]}});
    manifest["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    apply(&ns, manifest.clone()).await;
    healthy(&ns, &manifest).await;
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    apply(&ns, manifest).await;
    let ingresses = ns.api::<Ingress>();
    let canaries = ["web-web-canary", "web-web-internal-canary"];
    eventually(
        "a canary Ingress at 30 beside each stable one",
        LIMIT,
        || async {
            for name in canaries {
                let canary = ingresses.get_opt(name).await.ok()??;
                (canary_weight(&canary) == 30).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    let internal_canary = ingresses
        .get("web-web-internal-canary")
        .await
        .expect("the second canary Ingress");
    let hosts: Vec<Option<String>> = internal_canary
        .spec
        .and_then(|s| s.rules)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.host)
        .collect();
    assert_eq!(hosts, [Some("web.internal".to_owned())]);

    support::app::status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "the abort to return traffic to stable", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    for name in canaries {
        assert!(
            ingresses.get_opt(name).await.expect("get").is_none(),
            "{name} is deleted by the abort"
        );
    }
}

/// The NGINX application as a team keeps it in Git: both Services, the stable Ingress (with
/// `paths`) and the Rollout, whose canary Ingress is weir's and never in Git.
fn nginx_app_in_git(image: &str, paths: &[&str]) -> String {
    let paths: Vec<Value> = paths
        .iter()
        .map(|path| {
            json!({"path": path, "pathType": "Prefix",
            "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}})
        })
        .collect();
    let mut documents: Vec<Value> = ["web-stable", "web-canary"]
        .iter()
        .map(|service| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        })
        .collect();
    documents.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "shop.example", "http": {"paths": paths}}]}}),
    );
    documents.push(paused_rollout(image));
    support::app::yaml_stream(&documents)
}

/// The Rollout with one step of 30% that waits to be promoted.
fn paused_rollout(image: &str) -> Value {
    let mut manifest = rollout(image, "0");
    manifest["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    manifest
}

fn stable_paths(ingress: &Ingress) -> Vec<String> {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .flat_map(|r| r.http.iter().flat_map(|h| &h.paths))
        .filter_map(|p| p.path.clone())
        .collect()
}

#[tokio::test]
async fn a_git_sync_never_resets_or_prunes_the_canary_ingress_mid_canary() {
    use support::git::GitRepo;
    let ns = TestNamespace::new(&client().await, "nginx-gitsync").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "web 1",
        &[("deploy/app.yaml", &nginx_app_in_git("web:1", &["/"]))],
    );
    // Lockdown off: the GitSync acts as the controller, which may write Ingresses.
    let _controller =
        ControllerProcess::start_unlocked(&ns.name, &["--metrics-addr", "127.0.0.1:0"], &[]);
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    healthy(&ns, &paused_rollout("web:1")).await;
    let log = canary_log(&ns);

    repo.commit(
        "web 2",
        &[("deploy/app.yaml", &nginx_app_in_git("web:2", &["/"]))],
    );
    wait_for(&ns, "the canary paused at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(30)
    })
    .await;
    // The team changes the stable Ingress in Git mid-canary: the sync applies it (and goes on
    // applying every second)...
    repo.commit(
        "an /api path",
        &[(
            "deploy/app.yaml",
            &nginx_app_in_git("web:2", &["/", "/api"]),
        )],
    );
    let ingresses = ns.api::<Ingress>();
    eventually("the sync to apply the new path", LIMIT, || async {
        let stable = ingresses.get("web").await.ok()?;
        (stable_paths(&stable) == ["/", "/api"]).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // ...and weir's canary Ingress, which is in no commit, is neither pruned nor reset.
    let canary = ingresses
        .get_opt(CANARY_INGRESS)
        .await
        .expect("get")
        .expect("the canary Ingress survives the syncs");
    assert_eq!(canary_weight(&canary), 30);
    assert_eq!(log.states(), vec![0, 30], "Git never moved the weight");

    support::app::status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy(&ns, &paused_rollout("web:2")).await;
    eventually(
        "the canary Ingress to go after promotion",
        LIMIT,
        || async { matches!(ingresses.get_opt(CANARY_INGRESS).await, Ok(None)).then_some(()) },
    )
    .await;
    assert_eq!(log.states(), vec![0, 30, 100, 0]);
    let stable = ingresses.get("web").await.expect("the stable Ingress");
    assert_eq!(stable_paths(&stable), ["/", "/api"], "Git's paths stay");
}
