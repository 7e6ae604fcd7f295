//! The local control plane itself: the kubelet stand-in, the real ReplicaSet controller
//! counting what it reports, and Prometheus picking up scrape targets from files.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use prometheus_http_query::Client as Prometheus;
use support::{MetricsServer, ScrapeTarget, TestNamespace, client, eventually};

const LIMIT: Duration = Duration::from_secs(30);

fn pod(name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .expect("pod")
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn the_kubelet_stand_in_makes_pods_ready_unless_told_otherwise() {
    let ns = TestNamespace::new(&client().await, "kubelet").await;
    let pods = ns.api::<Pod>();
    pods.create(
        &PostParams::default(),
        &pod("healthy", serde_json::json!({})),
    )
    .await
    .expect("create");
    pods.create(
        &PostParams::default(),
        &pod(
            "crashing",
            serde_json::json!({"sim.weir.dev/ready": "false"}),
        ),
    )
    .await
    .expect("create");
    let healthy = eventually("pod healthy to be Ready", LIMIT, || async {
        pods.get("healthy")
            .await
            .ok()
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    assert_eq!(
        healthy.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    // The stand-in reports the crashing pod too: Running, but Ready=False.
    let crashing = eventually("pod crashing to be reported", LIMIT, || async {
        pods.get("crashing")
            .await
            .ok()
            .filter(|p| condition(p, "Ready").is_some())
    })
    .await;
    assert_eq!(condition(&crashing, "Ready").as_deref(), Some("False"));
    assert_eq!(
        crashing.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
}

#[tokio::test]
async fn the_real_replicaset_controller_counts_what_the_stand_in_reports() {
    let ns = TestNamespace::new(&client().await, "replicaset").await;
    let replica_set = |name: &str, ready: &str| -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": {"sim.weir.dev/ready": ready}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]}
                }
            }
        }))
        .expect("replicaset")
    };
    let sets = ns.api::<ReplicaSet>();
    sets.create(&PostParams::default(), &replica_set("good", "true"))
        .await
        .expect("create");
    sets.create(&PostParams::default(), &replica_set("bad", "false"))
        .await
        .expect("create");
    eventually("3 ready replicas of good", LIMIT, || async {
        sets.get("good")
            .await
            .ok()
            .filter(|rs| rs.status.as_ref().and_then(|s| s.ready_replicas) == Some(3))
    })
    .await;
    // bad has its 3 pods, all reported, none ready.
    let pods = ns.api::<Pod>();
    eventually("3 reported pods of bad", LIMIT, || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=bad"))
            .await
            .ok()?;
        let reported = list
            .items
            .iter()
            .filter(|p| condition(p, "Ready").as_deref() == Some("False"))
            .count();
        (reported == 3).then_some(())
    })
    .await;
    let bad = sets.get("bad").await.expect("get");
    assert_eq!(bad.status.and_then(|s| s.ready_replicas).unwrap_or(0), 0);
}

#[tokio::test]
async fn prometheus_scrapes_targets_added_as_files() {
    let server = MetricsServer::start("weir_test_probe 42\n").await;
    let address = server.address.clone();
    let name = format!("probe-{}", std::process::id());
    let _target = ScrapeTarget::add(&name, &address, &[("test", &name)]);
    let prometheus =
        Prometheus::try_from(support::prometheus_url().as_str()).expect("prometheus url");
    let query = format!("weir_test_probe{{test=\"{name}\"}}");
    let value = eventually("Prometheus to scrape the new target", LIMIT, || async {
        let response = prometheus.query(query.as_str()).get().await.ok()?;
        let vector = response.data().as_vector()?;
        vector.first().map(|sample| sample.sample().value())
    })
    .await;
    assert_eq!(value, 42.0);
}
