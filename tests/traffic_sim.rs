//! The simulated data plane (`weir-sim traffic`) on the local control plane: its requests
//! follow the route's live weights, each version answers as its pod template says, and the
//! local Prometheus sees it.

mod support;

use serde_json::{Value, json};
use support::app::{LIMIT, apply, phase, wait_for};
use support::{ControllerProcess, TestNamespace, client, eventually, prometheus_url};
use weir::api::rollout::RolloutPhase;

/// The Rollout at `image`, its pods failing `error_rate` of requests.
fn rollout(image: &str, error_rate: &str) -> Value {
    let mut rollout =
        support::app::rollout(image, json!([{"setWeight": 20}, {"pause": {}}]), json!({}));
    rollout["spec"]["template"]["metadata"]["annotations"] =
        json!({"sim.weir.dev/error-rate": error_rate, "sim.weir.dev/latency-ms": "40"});
    rollout
}

/// Waits until Prometheus answers `query` with a value `check` accepts; returns it.
async fn measured(query: &str, check: impl Fn(f64) -> bool) -> f64 {
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("url");
    eventually(&format!("Prometheus: {query}"), LIMIT, || async {
        let response = prometheus.query(query).get().await.ok()?;
        let value = response.data().as_vector()?.first()?.sample().value();
        check(value).then_some(value)
    })
    .await
}

#[tokio::test]
async fn simulated_requests_follow_the_weights_and_each_versions_behaviour() {
    let ns = TestNamespace::new(&client().await, "traffic").await;
    let (_simulator, _target) = support::simulator(&ns).await;
    let _controller = ControllerProcess::start(&ns.name);
    for object in support::app::routing() {
        apply(&ns, object).await;
    }
    apply(&ns, rollout("web:1", "0")).await;
    wait_for(&ns, "Healthy on web:1", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().is_some_and(|s| s.stable_rs.is_some())
    })
    .await;
    apply(&ns, rollout("web:2", "0.3")).await;
    wait_for(&ns, "the canary at 20%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(20)
    })
    .await;

    let ns_filter = format!("namespace=\"{}\"", ns.name);
    // Only once the canary's series exists does a 5s window hold nothing but the 20% split.
    measured(
        &format!(
            "sum(rate(http_requests_total{{{ns_filter},service=\"web-canary\",version=\"2\"}}[5s]))"
        ),
        |v| v > 0.0,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let share = measured(
        &format!(
            "sum(rate(http_requests_total{{{ns_filter},service=\"web-canary\"}}[5s])) / sum(rate(http_requests_total{{{ns_filter}}}[5s]))"
        ),
        |v| v.is_finite(),
    )
    .await;
    assert!(
        (share - 0.2).abs() < 0.03,
        "the canary's share of requests: {share}"
    );
    let errors = measured(
        &format!(
            "sum(rate(http_requests_total{{{ns_filter},version=\"2\",code=\"500\"}}[5s])) / sum(rate(http_requests_total{{{ns_filter},version=\"2\"}}[5s]))"
        ),
        |v| v.is_finite(),
    )
    .await;
    assert!((errors - 0.3).abs() < 0.03, "web:2's error ratio: {errors}");
    let stable_errors = measured(
        // No failed request of web:1 means no such series at all: `or vector(0)`.
        &format!(
            "sum(rate(http_requests_total{{{ns_filter},version=\"1\",code!=\"200\"}}[5s])) or vector(0)"
        ),
        |v| v.is_finite(),
    )
    .await;
    assert_eq!(stable_errors, 0.0, "web:1 fails nothing");
    let p99 = measured(
        &format!(
            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{ns_filter},version=\"2\"}}[5s])))"
        ),
        |v| v.is_finite(),
    )
    .await;
    assert!((0.04..=0.1).contains(&p99), "p99 of a 40 ms version: {p99}");
}
