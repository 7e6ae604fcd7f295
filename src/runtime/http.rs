//! The controller's HTTP server: `/healthz` (the process answers), `/readyz` (its caches have
//! synced, and no watch has been failing for longer than `watch::BEHIND_LIMIT`), `/metrics`
//! (Prometheus text format), and whatever routes the caller adds (the push webhook, unless
//! it has an address of its own: `serve_routes`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use super::metrics::Metrics;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// Binds `address` and serves until the process ends, with `more` routes (the push
/// webhook) beside the built-in ones. Returns the bound address (useful with port 0).
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    more: Router,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { metrics, ready })
        .merge(more);
    info!(%bound, "serving /healthz, /readyz, /metrics and what else is merged in");
    spawn(listener, app);
    Ok(bound)
}

/// Binds `address` and serves `routes` alone there until the process ends (the push
/// webhook on an address apart from `/metrics`). Returns the bound address.
pub async fn serve_routes(
    address: SocketAddr,
    routes: Router,
    what: &str,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    info!(%bound, "serving {what}");
    spawn(listener, routes);
    Ok(bound)
}

fn spawn(listener: TcpListener, app: Router) {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if !shared.ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced yet".to_owned(),
        );
    }
    let limit = super::watch::BEHIND_LIMIT;
    let stale = shared
        .metrics
        .watches
        .stale(std::time::Instant::now(), limit);
    if stale.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "watches failing for more than {}s: {} (see weir_watch_behind_seconds)",
                limit.as_secs(),
                stale.join(", ")
            ),
        )
    }
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            error.to_string(),
        ),
    }
}
