//! Runs the Rollout controller: watches Rollouts and only what they own (ReplicaSets and
//! AnalysisRuns carrying `weir.dev/rollout`), plus the HTTPRoutes Rollouts name, and reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::reconcile::{Context, error_policy, reconcile};
use super::workload::ROLLOUT_LABEL;
use crate::api::Rollout;
use crate::api::analysis::AnalysisRun;
use crate::runtime::leader::Leadership;
use crate::runtime::metrics::Metrics;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs until SIGTERM or SIGINT, then finishes the reconciles in flight and returns. Every
/// replica watches; only the one `leadership` says leads writes.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) {
    let owned = watcher::Config::default().labels(ROLLOUT_LABEL);
    let controller = Controller::new(
        api::<Rollout>(&client, namespace),
        watcher::Config::default(),
    );
    let rollouts = controller.store();
    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "weir".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
    });
    let mut changes = leadership.changes();
    metrics.set_leader(leadership.is_leading());
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let leading = *changes.borrow_and_update();
            metrics.set_leader(leading);
        }
    });
    let store = controller.store();
    tokio::spawn(async move {
        // Polled again every second: the store's readiness signal keeps a single waker, and the
        // controller waits on it too, so a lone long wait here could miss the wake-up.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    info!("the Rollout cache is synced: ready");
                    ready.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(Err(error)) => return warn!(%error, "the Rollout cache will never sync"),
                Err(_) => continue,
            }
        }
    });
    // Becoming leader: look at every Rollout again, since events were ignored until now.
    let became_leader = futures::stream::unfold(leadership.changes(), |mut changes| async move {
        loop {
            changes.changed().await.ok()?;
            if *changes.borrow_and_update() {
                return Some(((), changes));
            }
        }
    });
    info!(
        namespace = namespace.unwrap_or("(all)"),
        "rollout controller starting"
    );
    controller
        .owns(api::<ReplicaSet>(&client, namespace), owned.clone())
        .owns(api::<AnalysisRun>(&client, namespace), owned)
        // Someone else changing a route's weights is drift to repair; map it to its Rollouts.
        .watches(
            api::<HttpRoute>(&client, namespace),
            watcher::Config::default(),
            move |route| {
                let (route_ns, route_name) =
                    (route.namespace().unwrap_or_default(), route.name_any());
                rollouts
                    .state()
                    .into_iter()
                    .filter(|rollout| {
                        let gateway = rollout
                            .spec
                            .strategy
                            .canary
                            .as_ref()
                            .and_then(|c| c.traffic_routing.as_ref())
                            .and_then(|t| t.gateway_api.as_ref());
                        let rollout_ns = rollout.namespace().unwrap_or_default();
                        gateway.is_some_and(|g| {
                            g.http_route == route_name
                                && g.namespace.as_deref().unwrap_or(&rollout_ns) == route_ns
                        })
                    })
                    .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(became_leader)
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile error");
            }
        })
        .await;
    info!("rollout controller stopped");
}
