//! Several routers in one Rollout, as Argo Rollouts' "multiple providers" runs them: NGINX for
//! the traffic that comes in and SMI inside the mesh. Each carries every step's weight; one
//! changed by hand (a canary Ingress deleted, a TrafficSplit edited) is seen by weir's
//! watches and set again at once, though the step is a pause that waits for nothing else.

#[path = "support/routers.rs"]
#[allow(dead_code, unused_imports)]
mod routers;
mod support;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, phase, status_patch, traffic_splits, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::rollout::RolloutPhase;
use weir::traffic::smi;

const CANARY_INGRESS: &str = "web-web-canary";

fn rollout(image: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {
                "nginx": {"stableIngress": "web"},
                "smi": {"rootService": "web"}},
            "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}}}})
}

async fn routing(ns: &TestNamespace) {
    // Created as `kubectl create` would (an API server before 1.21 refuses to server-side
    // apply a port without its protocol; creating defaults it).
    for service in ["web", "web-stable", "web-canary"] {
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .expect("a Service");
        ns.api::<k8s_openapi::api::core::v1::Service>()
            .create(&Default::default(), &service)
            .await
            .expect("the Service");
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
        .create(&Default::default(), &ingress)
        .await
        .expect("the stable Ingress");
}

/// The weights both routers carry now: the canary Ingress's (0 while there is none) and
/// the TrafficSplit's (None while there is none).
async fn weights(ns: &TestNamespace, splits: &Api<DynamicObject>) -> (i32, Option<i32>) {
    let ingress = ns
        .api::<Ingress>()
        .get_opt(CANARY_INGRESS)
        .await
        .expect("get the canary Ingress")
        .and_then(|i| {
            i.metadata
                .annotations?
                .get("nginx.ingress.kubernetes.io/canary-weight")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let split = splits
        .get_opt("web")
        .await
        .expect("get the TrafficSplit")
        .and_then(|s| smi::canary_share(&s.data["spec"], "web-stable", "web-canary"));
    (ingress, split)
}

async fn both_at(ns: &TestNamespace, splits: &Api<DynamicObject>, weight: i32) {
    eventually(&format!("both routers at {weight}"), LIMIT, || async {
        (weights(ns, splits).await == (weight, Some(weight))).then_some(())
    })
    .await;
}

/// NGINX and SMI set up, web:1 Healthy, then web:2 at its first step: 20% on both routers.
async fn canary_at_20(ns: &TestNamespace) -> Api<DynamicObject> {
    routing(ns).await;
    apply(ns, rollout("web:1")).await;
    wait_for(ns, "Healthy on web:1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let splits = traffic_splits(ns).await;
    apply(ns, rollout("web:2")).await;
    both_at(ns, &splits, 20).await;
    splits
}

#[tokio::test]
async fn nginx_and_smi_carry_every_step_and_a_hand_change_to_either_is_set_again() {
    let ns = TestNamespace::new(&client().await, "several-routers").await;
    let _controller = ControllerProcess::start(&ns.name);
    let splits = canary_at_20(&ns).await;
    wait_for(&ns, "paused at 20%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;

    // Someone deletes the canary Ingress: the pause waits for nothing, so only the watch on
    // Ingresses brings weir back, which finds the routers apart and sets both again.
    ns.api::<Ingress>()
        .delete(CANARY_INGRESS, &Default::default())
        .await
        .expect("deleting the canary Ingress");
    both_at(&ns, &splits, 20).await;
    // Someone sends the mesh's share back to stable by hand: the same, for the TrafficSplit.
    let split = splits.get("web").await.expect("the TrafficSplit");
    let mut spec = split.data["spec"].clone();
    for backend in spec["backends"].as_array_mut().expect("backends") {
        let stable = backend["service"] == "web-stable";
        backend["weight"] = json!(if stable { 100 } else { 0 });
    }
    splits
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .expect("editing the TrafficSplit");
    both_at(&ns, &splits, 20).await;

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    both_at(&ns, &splits, 50).await;
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "the abort to return all traffic to stable", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    assert_eq!(
        weights(&ns, &splits).await,
        (0, Some(0)),
        "no canary Ingress and the split all on stable"
    );
}

#[tokio::test]
async fn an_abort_reaches_every_router_that_takes_it_when_one_cannot_be_read() {
    let ns = TestNamespace::new(&client().await, "several-routers-abort").await;
    let _controller = ControllerProcess::start(&ns.name);
    let splits = canary_at_20(&ns).await;

    // The TrafficSplit no longer reads as weir's (its owner taken away by hand): weir cannot
    // read or set it, so it plans nothing. An abort asked for now must still take the
    // canary's share off the NGINX canary Ingress.
    splits
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .expect("taking the TrafficSplit's owner away");
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    eventually("the canary Ingress back to 0", LIMIT, || async {
        (weights(&ns, &splits).await.0 == 0).then_some(())
    })
    .await;
    assert_eq!(
        weights(&ns, &splits).await.1,
        Some(20),
        "the TrafficSplit weir cannot call its own is left as it was"
    );
}

/// NGINX in the Rollout's namespace and a Gateway API route in `edge`'s (the platform team's,
/// granted by a ReferenceGrant, returned), a canary paused at 20% on both.
async fn canary_beside_an_edge_route(
    ns: &TestNamespace,
    edge: &TestNamespace,
) -> Api<DynamicObject> {
    routing(ns).await;
    apply(
        edge,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "namespace": ns.name, "port": 80},
            {"name": "web-canary", "namespace": ns.name, "port": 80}]}]}}),
    )
    .await;
    let grants = support::app::grant_routes(&ns.client, &edge.name, &ns.name, Some("web")).await;
    let with_gateway = |image: &str| {
        let mut rollout = rollout(image);
        rollout["spec"]["strategy"]["canary"]["trafficRouting"] = json!({
            "nginx": {"stableIngress": "web"},
            "gatewayAPI": {"httpRoute": "web", "namespace": edge.name}});
        rollout
    };
    apply(ns, with_gateway("web:1")).await;
    wait_for(ns, "Healthy on web:1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    apply(ns, with_gateway("web:2")).await;
    wait_for(ns, "paused at 20%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(
        nginx_weight(ns).await,
        20,
        "the canary Ingress carries the step"
    );
    grants
}

async fn nginx_weight(ns: &TestNamespace) -> i32 {
    let splits = traffic_splits(ns).await;
    weights(ns, &splits).await.0
}

#[tokio::test]
async fn a_route_no_longer_granted_leaves_the_other_routers_to_be_undone_on_deletion() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "several-routers-grant").await;
    let edge = TestNamespace::new(&client, "several-routers-edge").await;
    let _controller = ControllerProcess::start(&ns.name);
    let grants = canary_beside_an_edge_route(&ns, &edge).await;
    // The grant withdrawn: the edge route is not weir's to touch any more, but the canary
    // Ingress still is, and must be gone before the Rollout (and its pods) go.
    grants
        .delete("rollouts", &Default::default())
        .await
        .expect("deleting the grant");
    routers::delete_holding(
        &ns,
        "the canary Ingress removed while the Rollout is held",
        || async {
            ns.api::<Ingress>()
                .get_opt(CANARY_INGRESS)
                .await
                .is_ok_and(|found| found.is_none())
        },
    )
    .await;
}

#[tokio::test]
async fn an_abort_reaches_the_other_routers_while_a_route_is_not_granted() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "several-routers-refused").await;
    let edge = TestNamespace::new(&client, "several-routers-refused-edge").await;
    let _controller = ControllerProcess::start(&ns.name);
    let grants = canary_beside_an_edge_route(&ns, &edge).await;
    grants
        .delete("rollouts", &Default::default())
        .await
        .expect("deleting the grant");
    // An abort asked for now still takes the canary's share off the router weir may touch.
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    eventually("the canary Ingress back to 0", LIMIT, || async {
        (nginx_weight(&ns).await == 0).then_some(())
    })
    .await;
    // The abort's reconcile found the route refused: nothing was planned, the spec is
    // reported invalid, and the abort reached NGINX all the same.
    wait_for(&ns, "the InvalidSpec condition", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "True")
        })
    })
    .await;
}

#[tokio::test]
async fn an_abort_reaches_the_other_router_when_the_first_one_fails() {
    let ns = TestNamespace::new(&client().await, "several-routers-first-fails").await;
    let _controller = ControllerProcess::start(&ns.name);
    let splits = canary_at_20(&ns).await;

    // The canary Ingress no longer reads as weir's (its owner taken away by hand): the NGINX
    // router, the first the Rollout names, refuses to touch it, even to remove it. An abort
    // must still take the TrafficSplit's canary share to 0.
    ns.api::<Ingress>()
        .patch(
            CANARY_INGRESS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .expect("taking the canary Ingress's owner away");
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    eventually("the TrafficSplit back to 0", LIMIT, || async {
        (weights(&ns, &splits).await.1 == Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        weights(&ns, &splits).await.0,
        20,
        "the canary Ingress weir cannot call its own is left as it was"
    );
}
