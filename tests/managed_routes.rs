//! Managed routes on the local control plane (Istio, host-level): a header route sends only
//! the requests with the simulator's test header to the canary while its weight is 0, a
//! mirror route copies its share of requests there, and both are gone after an abort, after
//! a promotion, and across a controller killed mid-step. On a Gateway API HTTPRoute (the
//! argoproj-labs/gatewayAPI plugin's shape, `useHeaderRoutes`), the header route and the
//! mirror route (a rule with a `RequestMirror` filter, at the canary's weight) likewise.

mod support;

use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, healthy_on, phase, status_patch, step, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, prometheus_url, simulator};
use weir::api::rollout::RolloutPhase;
use weir::traffic::istio;

fn virtual_services(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &istio::virtual_service_resource(),
    )
}

/// Two Services and a VirtualService with one unnamed HTTP route between them.
async fn app(ns: &TestNamespace) {
    for service in ["web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    let vs = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary"}, "weight": 0}]}]}});
    virtual_services(ns)
        .patch(
            "web",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&vs),
        )
        .await
        .expect("the VirtualService");
}

/// Written as Argo Rollouts documents the feature; defaults left out.
fn rollout(image: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable",
            "canaryService": "web-canary",
            "trafficRouting": {
                "managedRoutes": [{"name": "canary-header"}, {"name": "canary-mirror"}],
                "istio": {"virtualService": {"name": "web"}}},
            "steps": [
                {"setCanaryScale": {"replicas": 1}},
                {"setHeaderRoute": {"name": "canary-header", "match": [
                    {"headerName": "x-weir-sim", "headerValue": {"exact": "canary"}}]}},
                {"setMirrorRoute": {"name": "canary-mirror", "percentage": 50,
                    "match": [{"method": {"exact": "GET"}}]}},
                {"pause": {}}
            ]}}}})
}

async fn routes_become(ns: &TestNamespace, wanted: &[&str]) {
    eventually(&format!("HTTP routes {wanted:?}"), LIMIT, || async {
        (support::app::virtual_service_route_names(ns).await == wanted).then_some(())
    })
    .await;
}

/// A rate over the last 5 seconds of the simulator's requests in the namespace, divided by
/// all requests served (mirrored copies are not served), once `check` accepts it.
async fn rate_share(ns: &TestNamespace, selector: &str, check: impl Fn(f64) -> bool) -> f64 {
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("url");
    let filter = format!("namespace=\"{}\"", ns.name);
    let query = format!(
        "(sum(rate(http_requests_total{{{filter},{selector}}}[5s])) or vector(0)) / sum(rate(http_requests_total{{{filter},mirrored=\"false\"}}[5s]))"
    );
    eventually(&format!("Prometheus: {query}"), LIMIT, || async {
        let response = prometheus.query(query.as_str()).get().await.ok()?;
        let value = response.data().as_vector()?.first()?.sample().value();
        check(value).then_some(value)
    })
    .await
}

const CANARY_SERVED: &str = "service=\"web-canary\",mirrored=\"false\"";
const CANARY_MIRRORED: &str = "service=\"web-canary\",mirrored=\"true\"";

#[tokio::test]
async fn header_and_mirror_routes_reach_the_canary_and_never_outlive_it() {
    let ns = TestNamespace::new(&client().await, "managed-routes").await;
    let controller = ControllerProcess::start(&ns.name);
    let (_simulator, _target) = simulator(&ns).await;
    app(&ns).await;
    apply(&ns, rollout("web:1")).await;
    healthy_on(&ns, "web:1").await;

    apply(&ns, rollout("web:2")).await;
    let paused = wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    assert_eq!(paused.status.and_then(|s| s.canary_weight), Some(0));
    routes_become(&ns, &["canary-header", "canary-mirror", "(unnamed)"]).await;
    // Weight 0: only the tenth of requests with the test header reach the canary, and half of
    // the GETs that are left are copied to it.
    rate_share(&ns, CANARY_SERVED, |s| (0.08..=0.12).contains(&s)).await;
    rate_share(&ns, CANARY_MIRRORED, |s| (0.40..=0.50).contains(&s)).await;

    // Killed mid-canary and restarted: the routes stay as they are, once each.
    controller.kill();
    let controller = ControllerProcess::start(&ns.name);
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    routes_become(&ns, &["(unnamed)"]).await;
    rate_share(&ns, CANARY_SERVED, |s| s < 0.01).await;
    rate_share(&ns, CANARY_MIRRORED, |s| s < 0.01).await;

    // Retried: the routes come back with the steps; killed at the pause, the controller that
    // follows promotes and removes them.
    status_patch(&ns, json!({"status": {"abort": false}})).await;
    wait_for(&ns, "Paused again", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    routes_become(&ns, &["canary-header", "canary-mirror", "(unnamed)"]).await;
    controller.kill();
    let _controller = ControllerProcess::start(&ns.name);
    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    routes_become(&ns, &["(unnamed)"]).await;
}

/// As the argoproj-labs/gatewayAPI plugin documents it: the route taking header routes is
/// marked `useHeaderRoutes`; defaults left out.
fn gateway_rollout(image: &str) -> Value {
    gateway_rollout_with(
        image,
        "canary-header",
        json!([
            {"setCanaryScale": {"replicas": 1}},
            {"setHeaderRoute": {"name": "canary-header", "match": [
                {"headerName": "x-weir-sim", "headerValue": {"exact": "canary"}}]}},
            {"pause": {}}
        ]),
    )
}

/// A Rollout on HTTPRoute `web` with one managed route and these steps.
fn gateway_rollout_with(image: &str, managed: &str, steps: Value) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable",
            "canaryService": "web-canary",
            "trafficRouting": {
                "managedRoutes": [{"name": managed}],
                "plugins": {"argoproj-labs/gatewayAPI": {
                    "httpRoutes": [{"name": "web", "useHeaderRoutes": true}]}}},
            "steps": steps}}}})
}

/// A mirror route as Argo Rollouts documents `setMirrorRoute`, after a weight of 20.
fn gateway_mirror_rollout(image: &str) -> Value {
    gateway_rollout_with(
        image,
        "canary-mirror",
        json!([
            {"setWeight": 20},
            {"setMirrorRoute": {"name": "canary-mirror", "percentage": 50,
                "match": [{"method": {"exact": "GET"}}]}},
            {"pause": {}}
        ]),
    )
}

/// The names of the HTTPRoute's rules, in order.
async fn rule_names(ns: &TestNamespace) -> Vec<String> {
    let live = ns.api::<HttpRoute>().get("web").await.expect("get");
    live.spec
        .rules
        .iter()
        .flatten()
        .map(|r| r.name.clone().unwrap_or_else(|| "(unnamed)".into()))
        .collect()
}

async fn rules_become(ns: &TestNamespace, wanted: &[&str]) {
    eventually(&format!("HTTPRoute rules {wanted:?}"), LIMIT, || async {
        (rule_names(ns).await == wanted).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_header_route_on_an_http_route_reaches_the_canary_and_never_outlives_it() {
    // Weight 0: only the tenth of requests with the test header reach the canary.
    http_route_managed_route_lifecycle(
        "gateway-header-route",
        gateway_rollout,
        "canary-header",
        0,
        |s| (0.08..=0.12).contains(&s),
        None,
    )
    .await;
}

#[tokio::test]
async fn a_mirror_route_on_an_http_route_copies_its_share_at_the_weight_and_never_outlives_it() {
    // The mirror rule takes every GET (a method match outranks the split rule) and serves it
    // at the canary's weight; half of them are copied to the canary besides.
    http_route_managed_route_lifecycle(
        "gateway-mirror-route",
        gateway_mirror_rollout,
        "canary-mirror",
        20,
        |s| (0.17..=0.23).contains(&s),
        Some(|s| (0.45..=0.55).contains(&s)),
    )
    .await;
}

/// A release whose last step is a pause with managed route `route` on HTTPRoute `web`, at
/// canary weight `weight`: the rule is there and the canary serves (and, for a mirror, is
/// copied) what `served` (and `mirrored`) accept; killed mid-canary and aborted, the rule and
/// the canary's share are gone; retried, the rule is back; killed at the pause and promoted,
/// it is gone.
async fn http_route_managed_route_lifecycle(
    test: &str,
    rollout: fn(&str) -> Value,
    route: &str,
    weight: i32,
    served: fn(f64) -> bool,
    mirrored: Option<fn(f64) -> bool>,
) {
    let ns = TestNamespace::new(&client().await, test).await;
    let controller = ControllerProcess::start(&ns.name);
    let (_simulator, _target) = simulator(&ns).await;
    support::app::app(&ns).await;
    apply(&ns, rollout("web:1")).await;
    healthy_on(&ns, "web:1").await;

    apply(&ns, rollout("web:2")).await;
    let paused = wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(2)
    })
    .await;
    assert_eq!(paused.status.and_then(|s| s.canary_weight), Some(weight));
    rules_become(&ns, &[route, "(unnamed)"]).await;
    rate_share(&ns, CANARY_SERVED, served).await;
    if let Some(mirrored) = mirrored {
        rate_share(&ns, CANARY_MIRRORED, mirrored).await;
    }

    // Killed mid-canary and restarted, then aborted: the rule goes, and the canary's share.
    controller.kill();
    let controller = ControllerProcess::start(&ns.name);
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    rules_become(&ns, &["(unnamed)"]).await;
    rate_share(&ns, CANARY_SERVED, |s| s < 0.01).await;
    rate_share(&ns, CANARY_MIRRORED, |s| s < 0.01).await;

    // Retried: the rule comes back; killed at the pause and promoted, it is gone.
    status_patch(&ns, json!({"status": {"abort": false}})).await;
    wait_for(&ns, "Paused again", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(2)
    })
    .await;
    rules_become(&ns, &[route, "(unnamed)"]).await;
    controller.kill();
    let _controller = ControllerProcess::start(&ns.name);
    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    rules_become(&ns, &["(unnamed)"]).await;
}

/// The app as a team keeps it in Git, with header and mirror route steps: the HTTPRoute's
/// rules there never hold weir's rules.
fn app_in_git(image: &str) -> String {
    let steps = json!([
        {"setCanaryScale": {"replicas": 1}},
        {"setHeaderRoute": {"name": "canary-header", "match": [
            {"headerName": "x-weir-sim", "headerValue": {"exact": "canary"}}]}},
        {"setMirrorRoute": {"name": "canary-mirror", "percentage": 50,
            "match": [{"method": {"exact": "GET"}}]}},
        {"pause": {}}
    ]);
    let mut rollout = support::app::rollout(image, steps, json!({}));
    rollout["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] =
        json!([{"name": "canary-header"}, {"name": "canary-mirror"}]);
    let mut documents = support::app::routing();
    documents.push(rollout);
    support::app::yaml_stream(&documents)
}

#[tokio::test]
async fn a_gitsync_of_the_http_route_keeps_the_header_and_mirror_rules_and_sends_nothing() {
    let ns = TestNamespace::new(&client().await, "gitsync-header-route").await;
    let repo = support::git::GitRepo::new(&ns.name);
    repo.commit("web 1", &[("deploy/app.yaml", &app_in_git("web:1"))]);
    let port = support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let _controller = ControllerProcess::start_with(&ns.name, &["--metrics-addr", &metrics]);
    let sync = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
        "metadata": {"name": "app"},
        "spec": {"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"}});
    ns.api::<weir::api::gitsync::GitSync>()
        .patch(
            "app",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&sync),
        )
        .await
        .expect("the GitSync");
    healthy_on(&ns, "web:1").await;

    repo.commit("web 2", &[("deploy/app.yaml", &app_in_git("web:2"))]);
    wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    rules_become(&ns, &["canary-header", "canary-mirror", "(unnamed)"]).await;
    // Syncing every second, Git's route plus weir's rules is the live route: nothing is
    // applied, and the rules are never wiped (to be added again by the next reconcile).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let applied = support::gitops::gitsync_objects(port, "applied").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        support::gitops::gitsync_objects(port, "applied").await,
        applied,
        "an unchanged revision mid-canary sends no apply"
    );
    assert_eq!(
        rule_names(&ns).await,
        ["canary-header", "canary-mirror", "(unnamed)"]
    );

    status_patch(&ns, json!({"status": {"pauseConditions": null}})).await;
    healthy_on(&ns, "web:2").await;
    rules_become(&ns, &["(unnamed)"]).await;
}

#[tokio::test]
async fn a_header_route_past_the_http_routes_16_rules_is_refused_naming_the_route() {
    let ns = TestNamespace::new(&client().await, "gateway-header-route-full").await;
    let _controller = ControllerProcess::start(&ns.name);
    support::app::app(&ns).await;
    // The team's route already at Gateway API's 16 rules: 15 of its own, then the split.
    let mut rules: Vec<Value> = (0..15)
        .map(|i| {
            json!({"matches": [{"path": {"type": "Exact", "value": format!("/team-{i}")}}],
            "backendRefs": [{"name": "web-stable", "port": 80}]})
        })
        .collect();
    rules.push(json!({"backendRefs": [
        {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}));
    apply(
        &ns,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": rules}}),
    )
    .await;
    apply(&ns, gateway_rollout("web:1")).await;
    healthy_on(&ns, "web:1").await;

    apply(&ns, gateway_rollout("web:2")).await;
    let refused = wait_for(&ns, "the header route refused, naming the HTTPRoute", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("HTTPRoute") && m.contains("at most 16"))
    })
    .await;
    let message = refused.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains(&format!("{}/web", ns.name)) && message.contains("canary-header"),
        "{message}"
    );
    assert_eq!(
        rule_names(&ns).await.len(),
        16,
        "nothing written past the bound"
    );
}

#[tokio::test]
async fn a_route_whose_name_leaves_the_spec_mid_canary_is_removed_and_an_abort_still_works() {
    let ns = TestNamespace::new(&client().await, "managed-routes-dropped").await;
    let _controller = ControllerProcess::start(&ns.name);
    app(&ns).await;
    apply(&ns, rollout("web:1")).await;
    healthy_on(&ns, "web:1").await;
    apply(&ns, rollout("web:2")).await;
    wait_for(&ns, "Paused at the final pause", |r| {
        phase(r) == Some(RolloutPhase::Paused) && step(r) == Some(3)
    })
    .await;
    routes_become(&ns, &["canary-header", "canary-mirror", "(unnamed)"]).await;

    // The next commit drops the mirror route: its step and its name. The template is the
    // same, so the canary stays where it is; the mirror route weir wrote must go.
    let mut edited = rollout("web:2");
    let canary = &mut edited["spec"]["strategy"]["canary"];
    canary["trafficRouting"]["managedRoutes"] = json!([{"name": "canary-header"}]);
    canary["steps"][2] = json!({"pause": {"duration": "1h"}});
    apply(&ns, edited).await;
    routes_become(&ns, &["canary-header", "(unnamed)"]).await;

    status_patch(&ns, json!({"status": {"abort": true}})).await;
    wait_for(&ns, "Degraded", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    routes_become(&ns, &["(unnamed)"]).await;
}
