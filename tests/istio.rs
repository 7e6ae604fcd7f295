//! The Istio router on the local control plane: the Istio CRDs (hack/crds), the real API
//! server and ReplicaSet controller, the kubelet stand-in, and a `weir controller` per test.
//! The VirtualService and DestinationRule are written as a team on Istio writes them.

#[path = "support/routers.rs"]
#[allow(dead_code, unused_imports)]
mod routers;
mod support;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use routers::ObjectWeights;
use serde_json::{Value, json};
use support::app::{LIMIT, apply, delete_rollout, healthy_on, phase, status_patch, step, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::contract::POD_TEMPLATE_HASH_LABEL;
use weir::api::rollout::{IstioVirtualService, RolloutPhase};
use weir::traffic::istio::{self, Pick};

fn virtual_services(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &istio::virtual_service_resource(),
    )
}

fn destination_rules(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &istio::destination_rule_resource(),
    )
}

async fn apply_istio(ns: &TestNamespace, api: Api<DynamicObject>, object: Value) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply("weir-test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name} in {}: {e}", object["kind"], ns.name));
}

/// Two Services and a VirtualService whose one HTTP route sends to both (host-level).
async fn host_level_app(ns: &TestNamespace) {
    for service in ["web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    apply_istio(
        ns,
        virtual_services(ns),
        json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary"}, "weight": 0}]}]}}),
    )
    .await;
}

/// One Service, a DestinationRule with two subsets, and a VirtualService between them.
async fn subset_level_app(ns: &TestNamespace) {
    apply(
        ns,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    apply_istio(ns, destination_rules(ns), json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "canary", "labels": {"app": "web"}}, {"name": "stable", "labels": {"app": "web"}}]}})).await;
    apply_istio(
        ns,
        virtual_services(ns),
        json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]}]}}),
    )
    .await;
}

fn rollout(image: &str, steps: &Value, host_level: bool) -> Value {
    let mut canary = json!({
        "scaleDownDelaySeconds": 2, "abortScaleDownDelaySeconds": 2,
        "steps": steps,
    });
    if host_level {
        canary["stableService"] = json!("web-stable");
        canary["canaryService"] = json!("web-canary");
        canary["trafficRouting"] =
            json!({"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}});
    } else {
        canary["trafficRouting"] = json!({"istio": {
            "virtualService": {"name": "web"},
            "destinationRule": {"name": "web", "canarySubsetName": "canary", "stableSubsetName": "stable"}}});
    }
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": canary}}})
}

fn pick(host_level: bool, namespace: &str) -> Pick {
    if host_level {
        Pick::Host {
            stable: "web-stable".into(),
            canary: "web-canary".into(),
            namespace: namespace.into(),
        }
    } else {
        Pick::Subset {
            stable: "stable".into(),
            canary: "canary".into(),
        }
    }
}

/// Every canary weight the VirtualService `web` carries, in order, as a watch sees it.
fn virtual_service_weights(ns: &TestNamespace, host_level: bool) -> ObjectWeights {
    let pick = pick(host_level, &ns.name);
    let spec = IstioVirtualService {
        name: "web".into(),
        ..IstioVirtualService::default()
    };
    ObjectWeights::start(
        virtual_services(ns),
        Some("web"),
        Vec::new(),
        move |object: &DynamicObject| {
            let value = serde_json::to_value(object).ok()?;
            // weir's header route (only in the tests that set one) is not the weighted route.
            let managed = ["canary-header".to_owned()];
            let splits = istio::splits_beside(&value, &spec, &pick, &managed).ok()?;
            istio::canary_weight(&value, &splits)
        },
        None,
    )
}

/// Each subset's hash label, stable first.
async fn subset_hashes(ns: &TestNamespace) -> (Option<String>, Option<String>) {
    let Ok(rule) = destination_rules(ns).get("web").await else {
        return (None, None);
    };
    let value = serde_json::to_value(&rule).unwrap_or_default();
    let label = |subset: &str| {
        value["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == subset)
            .and_then(|s| s["labels"][POD_TEMPLATE_HASH_LABEL].as_str())
            .map(str::to_owned)
    };
    (label("stable"), label("canary"))
}

fn steps() -> Value {
    json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 60}, {"pause": {}}])
}

#[tokio::test]
async fn a_host_level_canary_walks_its_steps_on_the_virtual_service_and_promotes() {
    let ns = TestNamespace::new(&client().await, "istio-host").await;
    let _controller = ControllerProcess::start(&ns.name);
    host_level_app(&ns).await;
    apply(&ns, rollout("web:1", &steps(), true)).await;
    healthy_on(&ns, "web:1").await;
    let weights = virtual_service_weights(&ns, true);

    apply(&ns, rollout("web:2", &steps(), true)).await;
    let paused = wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    assert_eq!(
        paused.status.as_ref().and_then(|s| s.canary_weight),
        Some(60)
    );
    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    eventually("the watch to see the last weight", LIMIT, || async {
        (weights.states().last() == Some(&0) && weights.states().len() > 1).then_some(())
    })
    .await;
    assert_eq!(
        weights.states(),
        vec![0, 20, 60, 100, 0],
        "every weight the VirtualService carried, in order"
    );
    // What weir does not manage is left as the team wrote it.
    let live =
        serde_json::to_value(virtual_services(&ns).get("web").await.expect("get")).expect("json");
    assert_eq!(live["spec"]["hosts"], json!(["web"]));
    assert_eq!(live["spec"]["http"][0]["name"], "primary");
}

#[tokio::test]
async fn an_abort_returns_all_istio_traffic_to_stable() {
    let ns = TestNamespace::new(&client().await, "istio-abort").await;
    let _controller = ControllerProcess::start(&ns.name);
    host_level_app(&ns).await;
    let steps = json!([{"setWeight": 40}, {"pause": {}}]);
    apply(&ns, rollout("web:1", &steps, true)).await;
    healthy_on(&ns, "web:1").await;
    let weights = virtual_service_weights(&ns, true);
    apply(&ns, rollout("web:2", &steps, true)).await;
    wait_for(&ns, "Paused at 40", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    eventually("the VirtualService to carry 40", LIMIT, || async {
        (weights.states().last() == Some(&40)).then_some(())
    })
    .await;

    status_patch(&ns, json!({"status": {"abort": true}})).await;
    let aborted = wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    assert_eq!(
        aborted.status.as_ref().and_then(|s| s.canary_weight),
        Some(0)
    );
    let live =
        serde_json::to_value(virtual_services(&ns).get("web").await.expect("get")).expect("json");
    let route = &live["spec"]["http"][0]["route"];
    assert_eq!(route[0]["destination"]["host"], "web-stable");
    assert_eq!(
        (route[0]["weight"].as_i64(), route[1]["weight"].as_i64()),
        (Some(100), Some(0))
    );
    assert_eq!(weights.states(), vec![0, 40, 0]);
}

#[tokio::test]
async fn subset_level_labels_the_destination_rule_and_removes_the_labels_when_done() {
    let ns = TestNamespace::new(&client().await, "istio-subset").await;
    let _controller = ControllerProcess::start(&ns.name);
    subset_level_app(&ns).await;
    let steps = json!([{"setWeight": 30}, {"pause": {}}]);
    apply(&ns, rollout("web:1", &steps, false)).await;
    let first = healthy_on(&ns, "web:1").await;
    let v1 = first.status.and_then(|s| s.stable_rs).expect("stable hash");
    eventually("both subsets to select web:1", LIMIT, || async {
        (subset_hashes(&ns).await == (Some(v1.clone()), Some(v1.clone()))).then_some(())
    })
    .await;
    let weights = virtual_service_weights(&ns, false);

    apply(&ns, rollout("web:2", &steps, false)).await;
    let paused = wait_for(&ns, "Paused at 30", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let v2 = paused
        .status
        .as_ref()
        .and_then(|s| s.canary_rs.clone())
        .expect("canary hash");
    assert_ne!(v1, v2);
    assert_eq!(
        subset_hashes(&ns).await,
        (Some(v1.clone()), Some(v2.clone()))
    );
    assert_eq!(
        paused.status.as_ref().and_then(|s| s.canary_weight),
        Some(30)
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    eventually("the stable subset to select web:2", LIMIT, || async {
        (subset_hashes(&ns).await == (Some(v2.clone()), Some(v2.clone()))).then_some(())
    })
    .await;
    eventually("the watch to see the weight back at 0", LIMIT, || async {
        (weights.states() == vec![0, 30, 100, 0]).then_some(())
    })
    .await;
    // The team's own labels stay.
    let rule =
        serde_json::to_value(destination_rules(&ns).get("web").await.expect("get")).expect("json");
    assert_eq!(rule["spec"]["subsets"][0]["labels"]["app"], "web");

    delete_rollout(&ns).await;
    eventually("the hash labels to be removed", LIMIT, || async {
        (subset_hashes(&ns).await == (None, None)).then_some(())
    })
    .await;
    let rule =
        serde_json::to_value(destination_rules(&ns).get("web").await.expect("get")).expect("json");
    assert_eq!(rule["spec"]["subsets"][1]["labels"], json!({"app": "web"}));
}

/// The subset-level application as a team keeps it in Git: the weights as Argo's docs
/// write them (all to stable) and subsets without hash labels (those are weir's); the
/// canary's pause has a header route (weir's, not in Git).
fn subset_app_in_git(image: &str, hosts: &str) -> String {
    let steps = json!([
        {"setWeight": 30},
        {"setHeaderRoute": {"name": "canary-header", "match": [
            {"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}},
        {"pause": {}}]);
    let mut rollout = rollout(image, &steps, false);
    rollout["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] =
        json!([{"name": "canary-header"}]);
    let documents = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": "web"},
            "spec": {"host": "web", "subsets": [{"name": "canary", "labels": {"app": "web"}}, {"name": "stable", "labels": {"app": "web"}}]}}),
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"hosts": [hosts], "http": [{"name": "primary", "route": [
                {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
                {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]}]}}),
        rollout,
    ];
    support::app::yaml_stream(&documents)
}

async fn virtual_service_hosts(ns: &TestNamespace) -> Value {
    let live = virtual_services(ns).get("web").await.ok();
    serde_json::to_value(live).unwrap_or_default()["spec"]["hosts"].clone()
}

#[tokio::test]
async fn a_git_sync_never_resets_the_virtual_service_weights_or_subset_labels_mid_canary() {
    use support::git::GitRepo;
    let ns = TestNamespace::new(&client().await, "istio-gitsync").await;
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "web 1",
        &[("deploy/app.yaml", &subset_app_in_git("web:1", "web"))],
    );
    // Lockdown off: the GitSync acts as the controller, which may write Istio's kinds (a
    // tenant's role would need them granted).
    let _controller =
        ControllerProcess::start_unlocked(&ns.name, &["--metrics-addr", "127.0.0.1:0"], &[]);
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    let first = healthy_on(&ns, "web:1").await;
    let v1 = first.status.and_then(|s| s.stable_rs).expect("stable hash");
    let weights = virtual_service_weights(&ns, false);

    repo.commit(
        "web 2",
        &[("deploy/app.yaml", &subset_app_in_git("web:2", "web"))],
    );
    let paused = wait_for(&ns, "the canary paused at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(30)
    })
    .await;
    let v2 = paused
        .status
        .and_then(|s| s.canary_rs)
        .expect("canary hash");

    eventually("the header route above the weighted one", LIMIT, || async {
        (support::app::virtual_service_route_names(&ns).await == ["canary-header", "primary"])
            .then_some(())
    })
    .await;

    // The sync goes on applying the VirtualService each second (a hand edit is repaired)...
    apply_istio(
        &ns,
        virtual_services(&ns),
        json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web"}, "spec": {"hosts": ["edited.example"]}}),
    )
    .await;
    // (applied as "weir-test", which now owns hosts; the sync takes it back)
    eventually("the hand edit to be repaired", LIMIT, || async {
        (virtual_service_hosts(&ns).await == json!(["web"])).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // ...and neither the weights, the header route nor the subset labels the rollout set
    // move (Git's route list, applied whole, would drop the header route; matched by index,
    // Git's weights would land on it).
    assert_eq!(weights.states(), vec![0, 30], "Git never moved the weights");
    assert_eq!(
        support::app::virtual_service_route_names(&ns).await,
        ["canary-header", "primary"],
        "the header route survives the sync"
    );
    assert_eq!(
        subset_hashes(&ns).await,
        (Some(v1.clone()), Some(v2.clone()))
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    eventually("the weights to return to stable", LIMIT, || async {
        (weights.states() == vec![0, 30, 100, 0]).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(weights.states(), vec![0, 30, 100, 0]);
    assert_eq!(
        support::app::virtual_service_route_names(&ns).await,
        ["primary"],
        "removed once promoted"
    );
    assert_eq!(subset_hashes(&ns).await, (Some(v2.clone()), Some(v2)));
}

#[tokio::test]
async fn analysis_sees_the_canary_share_the_virtual_service_carries_and_the_canary_promotes() {
    let ns = TestNamespace::new(&client().await, "istio-analysis").await;
    let (_simulator, _target) = support::simulator(&ns).await;
    let _controller = ControllerProcess::measuring(&ns.name);
    host_level_app(&ns).await;
    // The canary's share of the VirtualService's requests, as the data plane sent them: only
    // right when the simulated requests follow the weights weir set.
    let filter = format!("namespace=\"{}\",route=\"vs/web\"", ns.name);
    let share = format!(
        "sum(rate(http_requests_total{{{filter},service=\"web-canary\",version=\"2\"}}[5s])) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    apply(
        &ns,
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "canary-share"},
        "spec": {"metrics": [{"name": "share", "initialDelay": "8s", "interval": "1s", "count": 2,
            "successCondition": "result[0] >= 0.17 && result[0] <= 0.23",
            "provider": {"prometheus": {"query": share}}}]}}),
    )
    .await;
    let steps = json!([
        {"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "canary-share"}]}},
        {"setWeight": 60},
        {"pause": {"duration": "2s"}}
    ]);
    apply(&ns, rollout("web:1", &steps, true)).await;
    healthy_on(&ns, "web:1").await;
    let weights = virtual_service_weights(&ns, true);
    apply(&ns, rollout("web:2", &steps, true)).await;
    healthy_on(&ns, "web:2").await;
    eventually("the watch to see the weight back at 0", LIMIT, || async {
        (weights.states() == vec![0, 20, 60, 100, 0]).then_some(())
    })
    .await;
    let runs: Api<weir::api::analysis::AnalysisRun> = ns.api();
    let list = runs.list(&Default::default()).await.expect("runs");
    let phases: Vec<_> = list
        .items
        .iter()
        .map(|r| serde_json::to_value(&r.status).unwrap_or_default()["phase"].clone())
        .collect();
    assert_eq!(phases, [json!("Successful")], "the one analysis step's run");
}

#[tokio::test]
async fn deleting_a_rollout_with_a_header_route_removes_it_before_the_rollout_goes() {
    let ns = TestNamespace::new(&client().await, "istio-delete-route").await;
    let _controller = ControllerProcess::start(&ns.name);
    host_level_app(&ns).await;
    let steps = json!([
        {"setWeight": 20},
        {"setHeaderRoute": {"name": "canary-header", "match": [
            {"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}},
        {"pause": {}}]);
    let manifest = |image: &str| {
        let mut manifest = rollout(image, &steps, true);
        manifest["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] =
            json!([{"name": "canary-header"}]);
        manifest
    };
    apply(&ns, manifest("web:1")).await;
    healthy_on(&ns, "web:1").await;
    apply(&ns, manifest("web:2")).await;
    eventually("the header route above the weighted one", LIMIT, || async {
        (support::app::virtual_service_route_names(&ns).await == ["canary-header", "primary"])
            .then_some(())
    })
    .await;
    routers::delete_holding(
        &ns,
        "weir to remove its header route and return the weights while the Rollout is held",
        || async {
            let live = serde_json::to_value(virtual_services(&ns).get("web").await.ok())
                .unwrap_or_default();
            let route = &live["spec"]["http"][0];
            route["name"] == "primary"
                && live["spec"]["http"].as_array().map(Vec::len) == Some(1)
                && route["route"][1]["weight"].as_i64() == Some(0)
        },
    )
    .await;
}
