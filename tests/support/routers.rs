//! What the router tests share: the simulated data plane scraped by Prometheus, a controller
//! that queries it, analysis templates that judge the canary's share of the requests, and
//! waits. Included by `#[path]` from each router's test, beside `support`.

use serde_json::{Value, json};
use weir::api::rollout::RolloutPhase;

use crate::support::app::{LIMIT, apply, phase, wait_for};
use crate::support::{ControllerProcess, TestNamespace, eventually, prometheus_url};

pub use crate::support::simulator;

pub fn controller(ns: &TestNamespace) -> ControllerProcess {
    ControllerProcess::measuring(&ns.name)
}

/// The canary's share of all requests over the last 5 seconds must be within `low..=high`,
/// and the canary must answer 95% of its requests.
pub async fn templates(ns: &TestNamespace) {
    let filter = format!("namespace=\"{}\"", ns.name);
    let share = format!(
        "sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s])) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    let success = format!(
        "sum(rate(http_requests_total{{{filter},service=\"web-canary\",code=\"200\"}}[5s])) / sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s]))"
    );
    for (name, low, high) in [("share-20", 0.17, 0.23), ("share-50", 0.46, 0.54)] {
        apply(
            ns,
            json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": name},
            "spec": {"metrics": [
                {"name": "canary-share", "initialDelay": "7s", "count": 1,
                 "successCondition": format!("result[0] >= {low} && result[0] <= {high}"),
                 "provider": {"prometheus": {"query": share}}},
                {"name": "success-rate", "initialDelay": "7s", "count": 1,
                 "successCondition": "result[0] >= 0.95",
                 "provider": {"prometheus": {"query": success}}}
            ]}}),
        )
        .await;
    }
}

/// Waits until the Rollout is Healthy with `manifest`'s pod template as its stable.
pub async fn healthy(ns: &TestNamespace, manifest: &Value) -> weir::api::Rollout {
    let template = serde_json::from_value(manifest["spec"]["template"].clone()).expect("template");
    let hash = weir::template_hash::of(&template);
    wait_for(ns, &format!("Healthy on {hash}"), |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_rs.as_deref()) == Some(hash.as_str())
    })
    .await
}

/// The canary's share of the simulated requests over the last 5 seconds, once Prometheus
/// has it and `check` accepts it.
pub async fn share(ns: &TestNamespace, check: impl Fn(f64) -> bool) -> f64 {
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("url");
    let filter = format!("namespace=\"{}\"", ns.name);
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

/// Deletes the Rollout `web` while a finalizer of the test's holds it, so garbage collection
/// (which takes what it owns only once it is gone) has taken nothing yet; waits until
/// `removed` says weir's own cleanup removed what it made, then lets the Rollout go.
pub async fn delete_holding<F, Fut>(ns: &TestNamespace, what: &str, removed: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use kube::api::{Patch, PatchParams};
    const HOLD: &str = "test.weir.dev/hold";
    let rollouts = ns.api::<weir::api::Rollout>();
    let add = json_patch::Patch(vec![json_patch::PatchOperation::Add(
        json_patch::AddOperation {
            path: "/metadata/finalizers/-".parse().expect("a pointer"),
            value: json!(HOLD),
        },
    )]);
    rollouts
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(add))
        .await
        .expect("holding the Rollout");
    rollouts
        .delete("web", &Default::default())
        .await
        .expect("deleting the Rollout");
    eventually(what, LIMIT, || async {
        let rollout = rollouts.get_opt("web").await.ok()??;
        let held = rollout.metadata.deletion_timestamp.is_some()
            && rollout
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == HOLD);
        (held && removed().await).then_some(())
    })
    .await;
    // Read and written again on a conflict: weir may be taking its own finalizer off at the
    // same moment.
    eventually("letting the Rollout go", LIMIT, || async {
        let Some(held) = rollouts.get_opt("web").await.ok()? else {
            return Some(());
        };
        let left: Vec<String> = held
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != HOLD)
            .collect();
        let patch = json!({"metadata": {"finalizers": left,
            "resourceVersion": held.metadata.resource_version}});
        match rollouts
            .patch("web", &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Some(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Some(()),
            Err(kube::Error::Api(status)) if status.code == 409 => None,
            Err(error) => panic!("letting the Rollout go: {error}"),
        }
    })
    .await;
    eventually("the Rollout to be gone", LIMIT, || async {
        rollouts.get_opt("web").await.ok().filter(|r| r.is_none())
    })
    .await;
}

/// Every canary weight one object carried, in order (see `watch::ObjectLog`). Each router's
/// test logs its own object (a canary Ingress, a TrafficSplit, an Ingress's ALB action, a
/// VirtualService); the Gateway API test uses `app::WeightLog`, hence the allow.
#[allow(dead_code)]
pub type ObjectWeights = crate::support::watch::ObjectLog<i32>;
