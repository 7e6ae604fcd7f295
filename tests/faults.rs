//! Faults of the control plane, injected through `hack/local-cluster.sh restart|pause`:
//! after each one weir goes on as if nothing had happened.
//!
//! One test binary, its scenarios one after another: a restarted API server is an outage
//! for every test running at that moment (cargo runs test binaries one at a time, so no
//! other binary's tests see it).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::app::{app, healthy_on, set_image};
use support::{ControllerProcess, TestNamespace, client, eventually, repo_root};
use weir::api::Rollout;

/// Runs `hack/local-cluster.sh ARGS`; returns when it has (a restarted part is ready).
fn cluster(args: &[&str]) {
    let status = Command::new(repo_root().join("hack/local-cluster.sh"))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running hack/local-cluster.sh {args:?}: {e}"));
    assert!(status.success(), "hack/local-cluster.sh {args:?}: {status}");
}

fn hash_of(image: &str) -> String {
    weir::rollout::template_hash::of(
        &serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}}))
        .unwrap_or_else(|e| panic!("template: {e}")),
    )
}

/// How many times the restart scenario runs (`WEIR_FAULT_RUNS`, default 20).
fn runs() -> usize {
    std::env::var("WEIR_FAULT_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

#[tokio::test]
async fn after_an_api_server_restart_a_template_change_starts_its_canary() {
    let ns = TestNamespace::new(&client().await, "fault-restart").await;
    app(&ns).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    set_image(&ns, "web:0", &steps, &json!({})).await;
    let _controller = ControllerProcess::start(&ns.name);
    healthy_on(&ns, "web:0").await;
    for run in 1..=runs() {
        cluster(&["restart", "kube-apiserver"]);
        let ready = Instant::now();
        // A fresh client: the test's own pooled connections died with the API server.
        let client = client().await;
        let image = format!("web:{run}");
        let rollout = support::app::rollout(&image, steps.clone(), json!({}));
        Api::<Rollout>::namespaced(client.clone(), &ns.name)
            .patch(
                "web",
                &PatchParams::apply("weir-test").force(),
                &Patch::Apply(&rollout),
            )
            .await
            .unwrap_or_else(|e| panic!("run {run}: changing the template: {e}"));
        let name = format!("web-{}", hash_of(&image));
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client, &ns.name);
        eventually(
            &format!("run {run}: the canary ReplicaSet {name} after the API server's restart"),
            Duration::from_secs(10).saturating_sub(ready.elapsed()),
            || async { replica_sets.get_opt(&name).await.ok().flatten() },
        )
        .await;
        eprintln!(
            "run {run}: canary {name} {:?} after the API server was ready",
            ready.elapsed()
        );
    }
    // kube-controller-manager recovers from many restarts in a row only after its own
    // backoff (up to a minute); the tests after this one need it at once.
    cluster(&["restart", "kube-controller-manager"]);
}
