//! Runs the AnalysisRun controller: watches runs, measures the ones still running, and comes
//! back to each exactly when its next measurement is due.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::runtime::{Controller, WatchStreamExt, controller};
use tracing::info;

use super::hosts::AllowedHosts;
use super::provider::{Gates, Shared};
use super::reconcile::{Context, error_policy, reconcile};
use crate::api::analysis::AnalysisRun;
use crate::runtime::leader::{Leadership, became_leader};
use crate::runtime::metrics::Metrics;
use crate::runtime::{cache, scoped_api};

/// Runs until SIGTERM or SIGINT. `prometheus_url` serves metrics that name no address;
/// `allowed` says which addresses may be queried at all; `queries_per_address` how many queries
/// may be in flight to one of them at once.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    prometheus_url: Option<String>,
    allowed: AllowedHosts,
    queries_per_address: usize,
    concurrency: u16,
) -> anyhow::Result<()> {
    let health = metrics.watches.clone();
    // No redirects: an allowed address that redirects would take the query, and its
    // credentials, to a host --allowed-metric-hosts never checked.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client for metrics: {e}"))?;
    // For `web` metrics marked `insecure` only: their own pool, so no other request ever
    // skips certificate checks.
    let insecure_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client for insecure web metrics: {e}"))?;
    let context = Arc::new(Context {
        events: crate::runtime::Events::new(&client),
        client: client.clone(),
        leadership: leadership.clone(),
        metrics,
        shared: Shared {
            client: client.clone(),
            http,
            insecure_http,
            gates: Arc::new(Gates::new(queries_per_address)),
            default_address: prometheus_url,
            allowed,
        },
    });
    info!(
        namespace = namespace.unwrap_or("(all)"),
        "analysis controller starting"
    );
    let (runs, run_events) = cache::trimmed(
        scoped_api::<AnalysisRun>(&client, namespace),
        crate::runtime::watch::cached_first(),
        cache::KeepAll,
        health.watch("analysis/AnalysisRun"),
    );
    // The Jobs of `job` metrics: one finishing is news for its run at once.
    let jobs = crate::runtime::watch::watched(
        scoped_api::<Job>(&client, namespace),
        crate::runtime::watch::cached_first().labels(super::job::RUN_LABEL),
        health.optional_watch("analysis/Job"),
    );
    Controller::for_stream(run_events.applied_objects(), runs.store)
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(crate::runtime::watch::EachWatchBacksOff)
        .owns_stream(jobs.touched_objects())
        .reconcile_all_on(became_leader(&leadership))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(crate::runtime::log_failure)
        .await;
    info!("analysis controller stopped");
    Ok(())
}
