//! Runs the Experiment controller: watches Experiments and what they own (their ReplicaSets
//! and AnalysisRuns, by label), and reconciles each while this replica leads.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::Client;
use kube::runtime::{Controller, WatchStreamExt, controller};
use tracing::info;

use super::reconcile::{Context, error_policy, reconcile};
use crate::api::analysis::AnalysisRun;
use crate::api::contract::EXPERIMENT_LABEL;
use crate::api::experiment::Experiment;
use crate::runtime::leader::{Leadership, became_leader};
use crate::runtime::metrics::Metrics;
use crate::runtime::{cache, scoped_api, watch};

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    concurrency: u16,
) {
    let health = &metrics.watches;
    // Optional: a cluster upgraded without the Experiment CRD runs everything else.
    let (experiments, experiment_events) = cache::trimmed(
        scoped_api::<Experiment>(&client, namespace),
        watch::cached_first(),
        cache::KeepAll,
        health.optional_watch("experiment/Experiment"),
    );
    let owned = watch::cached_first().labels(EXPERIMENT_LABEL);
    let replica_sets = watch::watched(
        scoped_api::<ReplicaSet>(&client, namespace),
        owned.clone(),
        health.optional_watch("experiment/ReplicaSet"),
    );
    let runs = watch::watched(
        scoped_api::<AnalysisRun>(&client, namespace),
        owned,
        health.optional_watch("experiment/AnalysisRun"),
    );
    let context = Arc::new(Context {
        events: crate::runtime::Events::new(&client),
        client: client.clone(),
        leadership: leadership.clone(),
    });
    info!(
        namespace = namespace.unwrap_or("(all)"),
        "experiment controller starting"
    );
    Controller::for_stream(experiment_events.applied_objects(), experiments.store)
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(watch::EachWatchBacksOff)
        .owns_stream(replica_sets.touched_objects())
        .owns_stream(runs.touched_objects())
        .reconcile_all_on(became_leader(&leadership))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(crate::runtime::log_failure)
        .await;
    info!("experiment controller stopped");
}
