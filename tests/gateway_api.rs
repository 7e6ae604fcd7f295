//! Gateway API in the shape of Argo Rollouts' argoproj-labs/gatewayAPI plugin, on the local
//! control plane: several routes per Rollout (an HTTPRoute on a Gateway, one attached to a
//! Service as GAMMA has it, a GRPCRoute), each followed by the simulated data plane and
//! watched at every step; and one HTTPRoute shared by two Rollouts, each changing only its
//! own backends' weights.

#[path = "support/routers.rs"]
mod routers;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use routers::{controller, delete_holding, healthy, share, simulator, templates};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, phase, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, prometheus_url};
use weir::api::Rollout;
use weir::api::rollout::RolloutPhase;
use weir::traffic::gateway_api::{WeightedRoute, canary_weight, splits};

/// Applies a GRPCRoute (the shared `apply` knows the kinds most tests use).
async fn apply_grpc_route(ns: &TestNamespace, route: Value) {
    let name = route["metadata"]["name"].as_str().unwrap_or_default();
    ns.api::<GrpcRoute>()
        .patch(
            name,
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&route),
        )
        .await
        .unwrap_or_else(|e| panic!("applying GRPCRoute {name}: {e}"));
}

/// The canary weight of `stable`/`canary` on a route once both carry a weight of their own
/// (before weir sets them, Gateway API's default of 1 each applies: not logged).
fn weighted<R: WeightedRoute>(route: &R, stable: &str, canary: &str) -> Option<i32> {
    let found = splits(route, stable, canary).ok()?;
    let rules = route.rules();
    let all_set = found
        .iter()
        .all(|&(r, s, c)| rules[r][s].weight.is_some() && rules[r][c].weight.is_some());
    all_set.then(|| canary_weight(route, &found)).flatten()
}

/// Every canary weight each route of one kind carried, in order, per route name; and
/// whatever `check` says of each state it saw (None: fine).
struct RouteLog {
    seen: Arc<Mutex<BTreeMap<String, Vec<i32>>>>,
    wrong: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RouteLog {
    fn start<R: WeightedRoute>(
        api: Api<R>,
        pair: (&'static str, &'static str),
        check: fn(&R) -> Option<String>,
    ) -> RouteLog {
        let seen = Arc::new(Mutex::new(BTreeMap::<String, Vec<i32>>::new()));
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let (sink, wrong_sink) = (seen.clone(), wrong.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let Ok(route) = event else { continue };
                if let Some(problem) = check(&route) {
                    let mut wrong = wrong_sink.lock().unwrap_or_else(|e| e.into_inner());
                    if !wrong.contains(&problem) {
                        wrong.push(problem);
                    }
                }
                let Some(weight) = weighted(&route, pair.0, pair.1) else {
                    continue;
                };
                let name = route.meta().name.clone().unwrap_or_default();
                let mut seen = sink.lock().unwrap_or_else(|e| e.into_inner());
                let weights = seen.entry(name).or_default();
                if weights.last() != Some(&weight) {
                    weights.push(weight);
                }
            }
        });
        RouteLog { seen, wrong, task }
    }

    fn weights(&self) -> BTreeMap<String, Vec<i32>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wrong(&self) -> Vec<String> {
        self.wrong.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RouteLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn nothing_wrong<R>(_: &R) -> Option<String> {
    None
}

/// The Rollout as Argo Rollouts documents a canary through the gatewayAPI plugin (only
/// `apiVersion` differs), its canary failing `error_rate` of requests.
fn plugin_rollout(image: &str, error_rate: &str) -> Value {
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
            "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {
                "httpRoutes": [{"name": "web-edge"}, {"name": "web-mesh", "useHeaderRoutes": true}],
                "grpcRoute": "web-grpc"}}},
            "steps": [
                {"setWeight": 20},
                {"analysis": {"templates": [{"templateName": "share-20"}]}},
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "share-50"}]}}
            ]}}}})
}

/// The canary's share of one route's simulated requests over the last 5 seconds, once
/// Prometheus has it and `check` accepts it.
async fn route_share(ns: &TestNamespace, route: &str, check: impl Fn(f64) -> bool) -> f64 {
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("url");
    let filter = format!("namespace=\"{}\",route=\"{route}\"", ns.name);
    let query = format!(
        "(sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s])) or vector(0)) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    eventually(&format!("Prometheus: {query}"), LIMIT, || async {
        let response = prometheus.query(query.as_str()).get().await.ok()?;
        let value = response.data().as_vector()?.first()?.sample().value();
        check(value).then_some(value)
    })
    .await
}

/// The route names as the simulated data plane labels them.
const ROUTES: [&str; 3] = ["web-edge", "web-mesh", "grpcroute/web-grpc"];

#[tokio::test]
async fn a_plugin_shaped_canary_over_gateway_mesh_and_grpc_routes_walks_every_route() {
    let ns = TestNamespace::new(&client().await, "gwapi").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    for service in ["web", "web-stable", "web-canary"] {
        apply(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    templates(&ns).await;
    let backends = json!([{"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]);
    // North-south through a Gateway, and east-west: attached to the Service `web` (GAMMA).
    for (name, parent) in [
        ("web-edge", json!({"name": "gateway"})),
        (
            "web-mesh",
            json!({"group": "", "kind": "Service", "name": "web"}),
        ),
    ] {
        apply(
            &ns,
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name},
                "spec": {"parentRefs": [parent], "rules": [{"backendRefs": backends}]}}),
        )
        .await;
    }
    apply_grpc_route(
        &ns,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "web-grpc"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": backends}]}}),
    )
    .await;
    apply(&ns, plugin_rollout("web:1", "0")).await;
    healthy(&ns, &plugin_rollout("web:1", "0")).await;
    let pair = ("web-stable", "web-canary");
    let http = RouteLog::start(ns.api::<HttpRoute>(), pair, nothing_wrong);
    let grpc = RouteLog::start(ns.api::<GrpcRoute>(), pair, nothing_wrong);
    let logged = || {
        let mut all = http.weights();
        all.extend(grpc.weights());
        all
    };
    eventually("every route at 0 before the canary", LIMIT, || async {
        let all = logged();
        (all.len() == 3 && all.values().all(|w| w.last() == Some(&0))).then_some(())
    })
    .await;

    apply(&ns, plugin_rollout("web:2", "0")).await;
    // Every route, whatever it is attached to, carries the step's share in the data plane.
    for route in ROUTES {
        route_share(&ns, route, |v| (0.17..=0.23).contains(&v)).await;
    }
    healthy(&ns, &plugin_rollout("web:2", "0")).await;
    let every_step: BTreeMap<String, Vec<i32>> = ["web-edge", "web-grpc", "web-mesh"]
        .iter()
        .map(|name| ((*name).to_owned(), vec![0, 20, 50, 100, 0]))
        .collect();
    assert_eq!(logged(), every_step, "every route carried every step");
    let runs = ns
        .api::<weir::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await
        .expect("runs")
        .items;
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter().all(|r| r.status.as_ref().and_then(|s| s.phase)
            == Some(weir::api::analysis::AnalysisPhase::Successful)),
        "both steps' analyses saw the canary's share"
    );

    // A canary failing half its requests: analysis aborts it, and every route returns to
    // the stable.
    apply(&ns, plugin_rollout("web:3", "0.5")).await;
    wait_for(&ns, "the analysis to abort the rollout", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().is_some_and(|s| s.abort)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    let aborted: BTreeMap<String, Vec<i32>> = every_step
        .keys()
        .map(|name| (name.clone(), vec![0, 20, 50, 100, 0, 20, 0]))
        .collect();
    eventually("every route back at 0", LIMIT, || async {
        (logged() == aborted).then_some(())
    })
    .await;
    for route in ROUTES {
        route_share(&ns, route, |v| v == 0.0).await;
    }

    // Deleted mid-canary, the Rollout returns every route to the stable before it goes.
    apply(&ns, plugin_rollout("web:4", "0")).await;
    share(&ns, |v| (0.17..=0.23).contains(&v)).await;
    let (edge_routes, grpc_routes) = (ns.api::<HttpRoute>(), ns.api::<GrpcRoute>());
    delete_holding(
        &ns,
        "every route back at 0 before the Rollout goes",
        || async {
            let mut weights = Vec::new();
            for name in ["web-edge", "web-mesh"] {
                let Ok(route) = edge_routes.get(name).await else {
                    return false;
                };
                weights.push(weighted(&route, pair.0, pair.1));
            }
            let Ok(route) = grpc_routes.get("web-grpc").await else {
                return false;
            };
            weights.push(weighted(&route, pair.0, pair.1));
            weights == [Some(0); 3]
        },
    )
    .await;
}

/// The route `shared`: web's rule (with an extra backend of someone else's, filtered), api's
/// rule, and a rule no Rollout names.
fn shared_route() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "shared"},
    "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/web"}}],
         "backendRefs": [
            {"name": "web-stable", "port": 80},
            {"name": "legacy", "port": 80, "weight": 10, "filters": [
                {"type": "RequestHeaderModifier",
                 "requestHeaderModifier": {"set": [{"name": "x-legacy", "value": "yes"}]}}]},
            {"name": "web-canary", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "filters": [{"type": "RequestHeaderModifier",
                      "requestHeaderModifier": {"add": [{"name": "x-api", "value": "1"}]}}],
         "backendRefs": [{"name": "api-canary", "port": 80}, {"name": "api-stable", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
         "backendRefs": [{"name": "static", "port": 80}]}
    ]}})
}

/// A Rollout of `app` on the shared route, as the plugin's configuration names it.
fn sharing_rollout(app: &str, image: &str, weight: i32) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": app},
    "spec": {
        "selector": {"matchLabels": {"app": app}},
        "template": {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": app, "image": image}]}},
        "strategy": {"canary": {
            "stableService": format!("{app}-stable"), "canaryService": format!("{app}-canary"),
            "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "shared"}}},
            "steps": [{"setWeight": weight}, {"pause": {}}]}}}})
}

/// What no Rollout may change on the shared route: everything but the two pairs' weights.
fn others_part(route: &HttpRoute) -> Value {
    let mut spec = serde_json::to_value(&route.spec).unwrap_or_default();
    for (rule, backend) in [(0, 0), (0, 2), (1, 0), (1, 1)] {
        if let Some(b) = spec["rules"][rule]["backendRefs"][backend].as_object_mut() {
            b.remove("weight");
        }
    }
    spec
}

fn others_changed(route: &HttpRoute) -> Option<String> {
    let written: HttpRoute =
        serde_json::from_value(shared_route()).unwrap_or_else(|e| panic!("the route: {e}"));
    let (now, before) = (others_part(route), others_part(&written));
    (now != before).then(|| format!("the route changed beyond the pairs' weights: {now}"))
}

async fn promote(ns: &TestNamespace, app: &str) {
    ns.api::<Rollout>()
        .patch_status(
            app,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"pauseConditions": null}})),
        )
        .await
        .unwrap_or_else(|e| panic!("promoting {app}: {e}"));
}

async fn healthy_at(ns: &TestNamespace, app: &str, image: &str) {
    let manifest = sharing_rollout(app, image, 0);
    let template = serde_json::from_value(manifest["spec"]["template"].clone()).expect("template");
    let hash = weir::template_hash::of(&template);
    let rollouts = ns.api::<Rollout>();
    eventually(&format!("{app} Healthy on {image}"), LIMIT, || async {
        let r = rollouts.get_opt(app).await.ok()??;
        (phase(&r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_rs.as_deref()) == Some(hash.as_str()))
        .then_some(())
    })
    .await;
}

async fn paused(ns: &TestNamespace, app: &str) {
    let rollouts = ns.api::<Rollout>();
    eventually(&format!("{app} paused"), LIMIT, || async {
        let r = rollouts.get_opt(app).await.ok()??;
        (phase(&r) == Some(RolloutPhase::Paused)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_rollouts_sharing_a_route_change_only_their_own_backends() {
    let ns = TestNamespace::new(&client().await, "gwapi-shared").await;
    let _controller = ControllerProcess::start(&ns.name);
    for (service, app) in [
        ("web-stable", "web"),
        ("web-canary", "web"),
        ("api-stable", "api"),
        ("api-canary", "api"),
        ("legacy", "legacy"),
        ("static", "static"),
    ] {
        apply(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": app}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    apply(&ns, shared_route()).await;
    let web = RouteLog::start(
        ns.api::<HttpRoute>(),
        ("web-stable", "web-canary"),
        others_changed,
    );
    let api = RouteLog::start(
        ns.api::<HttpRoute>(),
        ("api-stable", "api-canary"),
        nothing_wrong,
    );
    for app in ["web", "api"] {
        apply(&ns, sharing_rollout(app, &format!("{app}:1"), 0)).await;
    }
    healthy_at(&ns, "web", "web:1").await;
    healthy_at(&ns, "api", "api:1").await;
    apply(&ns, sharing_rollout("web", "web:2", 30)).await;
    paused(&ns, "web").await;
    apply(&ns, sharing_rollout("api", "api:2", 60)).await;
    paused(&ns, "api").await;
    let route = ns
        .api::<HttpRoute>()
        .get("shared")
        .await
        .expect("the route");
    assert_eq!(weighted(&route, "web-stable", "web-canary"), Some(30));
    assert_eq!(weighted(&route, "api-stable", "api-canary"), Some(60));
    for app in ["web", "api"] {
        promote(&ns, app).await;
    }
    healthy_at(&ns, "web", "web:2").await;
    healthy_at(&ns, "api", "api:2").await;
    let expect = |weight: i32| -> BTreeMap<String, Vec<i32>> {
        [("shared".to_owned(), vec![0, weight, 100, 0])].into()
    };
    eventually("both pairs back at 0", LIMIT, || async {
        (web.weights() == expect(30) && api.weights() == expect(60)).then_some(())
    })
    .await;
    assert_eq!(web.wrong(), Vec::<String>::new());
    let route = ns
        .api::<HttpRoute>()
        .get("shared")
        .await
        .expect("the route");
    assert_eq!(others_changed(&route), None);
    // Each pair is set as a whole: 100 to the stable, 0 to the canary.
    let backends = |rule: usize| -> Vec<(String, Option<i32>)> {
        route.spec.rules.as_deref().unwrap_or_default()[rule]
            .backend_refs
            .iter()
            .flatten()
            .map(|b| (b.name.clone(), b.weight))
            .collect()
    };
    assert_eq!(
        backends(0),
        [
            ("web-stable".to_owned(), Some(100)),
            ("legacy".to_owned(), Some(10)),
            ("web-canary".to_owned(), Some(0))
        ]
    );
    assert_eq!(
        backends(1),
        [
            ("api-canary".to_owned(), Some(0)),
            ("api-stable".to_owned(), Some(100))
        ]
    );
}

/// A router writes a step's weights from the route as its look read it; when someone changed
/// the route since (here: its backends swapped places), the patch's tests fail and the
/// weights are written again from a fresh read, on the right backends.
#[tokio::test]
async fn weights_written_from_a_route_changed_since_the_look_land_on_the_right_backends() {
    use weir::traffic::Router;
    use weir::traffic::gateway_api::GatewayApiRouter;

    let ns = TestNamespace::new(&client().await, "gateway-stale").await;
    let backends = |first: &str, second: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"rules": [{"backendRefs": [
                {"name": first, "port": 80}, {"name": second, "port": 80}]}]}})
    };
    apply(&ns, backends("web-stable", "web-canary")).await;
    let routes = ns.api::<HttpRoute>();
    let looked_at = routes
        .get("web")
        .await
        .expect("the route as the look read it");
    apply(&ns, backends("web-canary", "web-stable")).await;

    let routing = serde_json::from_value(json!({"httpRoute": "web"})).expect("routing");
    let router = GatewayApiRouter::new(
        ns.client.clone(),
        &ns.name,
        &routing,
        "web-stable",
        "web-canary",
    );
    router.recall_from(&|_, _| Some(looked_at.clone()), &|_, _| None);
    assert_eq!(router.set_weight(30).await.expect("weight 30 set"), 30);

    let stored = routes.get("web").await.expect("the route");
    let weights: BTreeMap<String, Option<i32>> = stored.spec.rules.unwrap_or_default()[0]
        .backend_refs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.name, b.weight))
        .collect();
    assert_eq!(
        weights,
        BTreeMap::from([
            ("web-canary".to_owned(), Some(30)),
            ("web-stable".to_owned(), Some(70))
        ])
    );
    // What the write stored is what the router reads next.
    assert_eq!(router.weight().await.expect("the weight"), Some(30));
}
