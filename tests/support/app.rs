//! A small application for Rollout tests: two Services, an HTTPRoute between them, a Rollout
//! over them, and waits on the Rollout's status.

use std::time::Duration;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use weir::api::Rollout;
use weir::api::analysis::{AnalysisTemplate, ClusterAnalysisTemplate};
use weir::api::rollout::RolloutPhase;

use super::watch::ObjectLog;
use super::{TestNamespace, eventually};

pub const LIMIT: Duration = Duration::from_secs(60);

/// Server-side applies a manifest (as the test's own field manager) into the test namespace,
/// or cluster-wide for cluster-scoped kinds.
pub async fn apply(ns: &TestNamespace, object: Value) {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let params = PatchParams::apply("weir-test").force();
    let patch = Patch::Apply(&object);
    let result = match kind.as_str() {
        "Service" => ns
            .api::<Service>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "Secret" => ns
            .api::<Secret>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "HTTPRoute" => ns
            .api::<HttpRoute>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "Rollout" => ns
            .api::<Rollout>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "AnalysisTemplate" => ns
            .api::<AnalysisTemplate>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "Experiment" => ns
            .api::<weir::api::experiment::Experiment>()
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        "ClusterAnalysisTemplate" => Api::<ClusterAnalysisTemplate>::all(ns.client.clone())
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        other => panic!("no apply for {other}"),
    };
    result.unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// Services and an HTTPRoute splitting between them, as a user would have from Git.
pub async fn app(ns: &TestNamespace) {
    for service in ["web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    apply(ns, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}]}})).await;
}

/// Applies the GitSync `app` following `main` of `url` at `deploy/` every second, with
/// `extra` spec fields.
pub async fn git_sync(ns: &TestNamespace, url: &str, extra: Value) {
    let mut spec =
        json!({"url": url, "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let object = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
        "metadata": {"name": "app"}, "spec": spec});
    ns.api::<weir::api::GitSync>()
        .patch(
            "app",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the GitSync: {e}"));
}

/// A ReferenceGrant `rollouts` in `route_namespace` that lets Rollouts of `from` set the
/// weights of its HTTPRoute `route` (any HTTPRoute when None); returns the grants' Api.
pub async fn grant_routes(
    client: &kube::Client,
    route_namespace: &str,
    from: &str,
    route: Option<&str>,
) -> Api<kube::api::DynamicObject> {
    let grants: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        route_namespace,
        &weir::traffic::reference_grant::api_resource(),
    );
    let mut to = json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"});
    if let Some(route) = route {
        to["name"] = json!(route);
    }
    let grant = json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "rollouts"},
        "spec": {"from": [{"group": "weir.dev", "kind": "Rollout", "namespace": from}], "to": [to]}});
    grants
        .patch(
            "rollouts",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&grant),
        )
        .await
        .unwrap_or_else(|e| panic!("the ReferenceGrant in {route_namespace}: {e}"));
    grants
}

/// Deletes the Rollout `web` and waits until it is gone (its finalizer run).
pub async fn delete_rollout(ns: &TestNamespace) {
    let api = ns.api::<Rollout>();
    api.delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting the Rollout: {e}"));
    eventually("the Rollout to be gone", LIMIT, || async {
        api.get_opt("web").await.ok().filter(|r| r.is_none())
    })
    .await;
}

/// The route's canary weight between `web-stable` and `web-canary`, or None while its
/// splitting backends have no weights of their own (Gateway API's default of 1: an even
/// split) or it splits no such pair.
pub fn weighted_canary(route: &HttpRoute) -> Option<i32> {
    let splits = weir::traffic::gateway_api::splits(route, "web-stable", "web-canary").ok()?;
    let weight = weir::traffic::gateway_api::canary_weight(route, &splits)?;
    let weighted = route
        .spec
        .rules
        .iter()
        .flatten()
        .all(|r| r.backend_refs.iter().flatten().all(|b| b.weight.is_some()));
    weighted.then_some(weight)
}

/// Applies the GitSync `name` with exactly `spec`.
pub async fn apply_git_sync(ns: &TestNamespace, name: &str, spec: Value) {
    let object = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "GitSync",
        "metadata": {"name": name}, "spec": spec});
    ns.api::<weir::api::GitSync>()
        .patch(
            name,
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying GitSync {name}: {e}"));
}

/// Binds ServiceAccount `account_namespace/account` to `role` (a `kind`: Role or
/// ClusterRole) in `ns`, as RoleBinding `name`; returns the binding's name.
pub async fn bind(
    ns: &TestNamespace,
    name: &str,
    kind: &str,
    role: &str,
    account_namespace: &str,
    account: &str,
) -> String {
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(account_namespace.into()),
            api_group: None,
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&Default::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("creating RoleBinding {name}: {e}"));
    name.to_owned()
}

/// The two Services and the HTTPRoute splitting between them, as a team keeps them in Git
/// (no weights: those are the rollout engine's).
pub fn routing() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-stable"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-canary"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["shop.example"],
                "rules": [{"backendRefs": [
                    {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}]}}),
    ]
}

/// Documents as one multi-document YAML file (JSON is YAML: one document each).
pub fn yaml_stream(documents: &[Value]) -> String {
    documents
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

pub fn rollout(image: &str, steps: Value, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": 5,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
        "strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "scaleDownDelaySeconds": 2, "abortScaleDownDelaySeconds": 2,
            "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
            "steps": steps
        }}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}, "spec": spec})
}

pub async fn wait_for(ns: &TestNamespace, what: &str, check: impl Fn(&Rollout) -> bool) -> Rollout {
    let api = ns.api::<Rollout>();
    eventually(what, LIMIT, || async {
        api.get("web").await.ok().filter(|r| check(r))
    })
    .await
}

pub fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

pub fn step(rollout: &Rollout) -> Option<i32> {
    rollout.status.as_ref().and_then(|s| s.current_step_index)
}

pub async fn healthy_on(ns: &TestNamespace, image: &str) -> Rollout {
    let hash = weir::template_hash::of(&serde_json::from_value(
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}),
    ).expect("template"));
    wait_for(ns, &format!("Healthy on {image}"), |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_rs.as_deref()) == Some(hash.as_str())
    })
    .await
}

pub async fn status_patch(ns: &TestNamespace, patch: Value) {
    ns.api::<Rollout>()
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("status patch {patch}: {e}"));
}

pub async fn set_image(ns: &TestNamespace, image: &str, steps: &Value, extra: &Value) {
    apply(ns, rollout(image, steps.clone(), extra.clone())).await;
}

/// Every canary weight the HTTPRoutes carry, in order, as a watch sees it: each state is the
/// canary weight, or None while a splitting backend has no weight of its own (Gateway API's
/// default of 1 applies: an even split). Routes that do not split are not logged.
pub struct WeightLog(ObjectLog<Option<i32>>);

impl WeightLog {
    pub fn start(ns: &TestNamespace) -> WeightLog {
        WeightLog(ObjectLog::start(
            ns.api::<HttpRoute>(),
            None,
            Vec::new(),
            |route: &HttpRoute| {
                let splits =
                    weir::traffic::gateway_api::splits(route, "web-stable", "web-canary").ok()?;
                weir::traffic::gateway_api::canary_weight(route, &splits)?;
                Some(weighted_canary(route))
            },
            None,
        ))
    }

    /// The weights the route carried, in order (states without weights left out).
    pub fn weights(&self) -> Vec<i32> {
        let mut weights: Vec<i32> = self.states().into_iter().flatten().collect();
        weights.dedup();
        weights
    }

    /// Every state the route went through, None where its backends had no weights.
    pub fn states(&self) -> Vec<Option<i32>> {
        self.0.states()
    }

    /// Waits until the log has seen the splitting route as it is now: a watch cut off by a
    /// fault (an API server restart) resumes after a backoff, and a history read before then
    /// would lack its end.
    pub async fn caught_up(&self, ns: &TestNamespace) {
        eventually(
            "the weight log to reach the route's weight now",
            LIMIT,
            || async {
                let routes = ns.api::<HttpRoute>().list(&Default::default()).await.ok()?;
                let now = routes.items.iter().find_map(|route| {
                    let splits =
                        weir::traffic::gateway_api::splits(route, "web-stable", "web-canary")
                            .ok()?;
                    weir::traffic::gateway_api::canary_weight(route, &splits)?;
                    Some(weighted_canary(route))
                })?;
                (self.states().last() == Some(&now)).then_some(())
            },
        )
        .await
    }
}

pub async fn service_hash(ns: &TestNamespace, service: &str) -> Option<String> {
    let found = ns.api::<Service>().get(service).await.ok()?;
    found
        .spec?
        .selector?
        .get(weir::api::contract::POD_TEMPLATE_HASH_LABEL)
        .cloned()
}

/// The TrafficSplits of the test namespace, at the SMI version the local cluster serves.
pub async fn traffic_splits(ns: &TestNamespace) -> Api<kube::api::DynamicObject> {
    use weir::traffic::smi;
    let groups = ns.client.list_api_groups().await.expect("API groups");
    let version = groups
        .groups
        .iter()
        .find(|g| g.name == smi::GROUP)
        .and_then(smi::choose_version)
        .expect("the local cluster serves TrafficSplit (hack/crds)");
    Api::namespaced_with(ns.client.clone(), &ns.name, &smi::api_resource(version))
}

/// The names of the VirtualService `web`'s HTTP routes, in order ("(unnamed)" for one without).
pub async fn virtual_service_route_names(ns: &TestNamespace) -> Vec<String> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &weir::traffic::istio::virtual_service_resource(),
    );
    let live = serde_json::to_value(api.get("web").await.expect("get")).expect("json");
    live["spec"]["http"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or("(unnamed)").to_owned())
        .collect()
}

/// The pods of a version (by uid), each with its labels and annotations.
pub type PodsSeen = std::collections::BTreeMap<String, (Value, Value)>;

pub async fn pods_of(ns: &TestNamespace, hash: &str) -> PodsSeen {
    let selector = format!("rollouts-pod-template-hash={hash}");
    let listed = ns
        .api::<Pod>()
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .expect("pods");
    listed
        .items
        .into_iter()
        .map(|pod| {
            let meta = pod.metadata;
            let seen = (json!(meta.labels), json!(meta.annotations));
            (meta.uid.unwrap_or_default(), seen)
        })
        .collect()
}

/// Waits until `count` pods of `hash` all carry (`Some`) or all lack (`None`) each label and
/// annotation listed; gives back what they carry.
pub async fn pods_carrying(
    ns: &TestNamespace,
    hash: &str,
    count: usize,
    labels: &[(&str, Option<&str>)],
    annotations: &[(&str, Option<&str>)],
) -> PodsSeen {
    let what = format!("{count} pods of {hash} with {labels:?} and {annotations:?}");
    eventually(&what, LIMIT, || async {
        let pods = pods_of(ns, hash).await;
        let carry = |map: &Value, expected: &[(&str, Option<&str>)]| {
            expected
                .iter()
                .all(|(key, value)| map.get(key).and_then(Value::as_str) == *value)
        };
        let all = pods
            .values()
            .all(|(l, a)| carry(l, labels) && carry(a, annotations));
        (pods.len() == count && all).then_some(pods)
    })
    .await
}

/// The mean latency of one version's requests over the last 5 seconds, by the hash in the
/// argument `hash_arg`, as `weir-sim traffic` labels its series.
pub fn mean_latency(ns: &TestNamespace, hash_arg: &str) -> String {
    let filter = format!("namespace=\"{}\",hash=\"{{{{args.{hash_arg}}}}}\"", ns.name);
    format!(
        "sum(rate(http_request_duration_seconds_sum{{{filter}}}[5s])) / sum(rate(http_request_duration_seconds_count{{{filter}}}[5s]))"
    )
}

/// The AnalysisTemplate `latency`: the judge comparing `canary-hash` with `baseline-hash`,
/// written with its defaults left out (sequential, increase is bad, a 10% tolerance,
/// alpha 0.05) but for the sample spacing and how many samples are enough; `window`
/// measurements 5 s apart.
pub fn latency_judge(ns: &TestNamespace, window: i32) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "latency"},
        "spec": {"args": [{"name": "baseline-hash"}, {"name": "canary-hash"}],
            "metrics": [{"name": "latency", "interval": "5s", "count": window,
                "provider": {"judge": {
                    "baseline": mean_latency(ns, "baseline-hash"),
                    "canary": mean_latency(ns, "canary-hash"),
                    "step": "5s", "samples": 6}}}]}})
}
