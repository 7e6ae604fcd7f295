//! `weir controller`: logging, the HTTP server, leader election and the four controllers
//! (Rollouts, analysis, GitOps, notifications), started from the flags.

use std::net::SocketAddr;
use std::time::Duration;

use super::flags::{ControllerArgs, LogFormat};
use crate::analysis::hosts::AllowedHosts;
use crate::gitops::webhook::SecretLocation;

struct AnalysisOptions {
    prometheus_url: Option<String>,
    allowed: AllowedHosts,
    queries_per_address: usize,
}

struct GitOptions {
    fetching: crate::gitops::controller::Options,
    notifications: crate::notify::controller::Options,
    webhook_secret: Option<SecretLocation>,
    webhook_addr: Option<SocketAddr>,
}

struct Election {
    enabled: bool,
    name: String,
    namespace: String,
    duration: Duration,
    shards: u32,
}

/// Runs the controller until SIGTERM.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let ControllerArgs {
        namespace,
        log_format,
        http,
        leader_election,
        rollouts,
        analysis,
        fetching,
        rendering,
        tenancy,
        webhook,
        notifications,
    } = args;
    init_logging(log_format);
    let allowed = analysis.allowed_metric_hosts.unwrap_or_default();
    // A default every metric without an address would be refused: say so at start.
    if let Some(url) = &analysis.prometheus_url
        && let Err(why) = allowed.check(url)
    {
        anyhow::bail!("--prometheus-url {url}: {why}; add it to --allowed-metric-hosts");
    }
    let election = Election {
        enabled: leader_election.leader_elect,
        name: leader_election.lease_name,
        namespace: leader_election
            .lease_namespace
            .or_else(|| namespace.clone())
            .unwrap_or_else(|| "default".into()),
        duration: leader_election.lease_duration,
        shards: leader_election.shards,
    };
    if election.shards > 1 && !election.enabled {
        anyhow::bail!(
            "--shards {}: shards are led by elected replicas; add --leader-elect",
            election.shards
        );
    }
    // Member Leases are labelled with the Lease name.
    if election.enabled
        && (election.name.is_empty() || !crate::validate::label_value_ok(&election.name))
    {
        anyhow::bail!(
            "--lease-name {}: must be a valid label value (63 characters at most, alphanumeric at both ends)",
            election.name
        );
    }
    let policy = crate::gitops::tenancy::Policy {
        default_service_account: tenancy.default_service_account,
        allow_cross_namespace: tenancy.allow_cross_namespace,
        allow_file_urls: tenancy.allow_file_urls,
        write_back_prefix: tenancy.write_back_branch_prefix,
        metric_hosts: allowed.clone(),
    };
    let git = GitOptions {
        fetching: crate::gitops::controller::Options {
            cache_dir: fetching.git_cache_dir,
            max_fetches: fetching.max_concurrent_fetches,
            fetch_timeout: fetching.fetch_timeout,
            max_fetch_bytes: fetching.max_fetch_bytes,
            fetches_per_host_per_minute: std::num::NonZeroU32::new(
                fetching.git_fetches_per_host_per_minute,
            )
            .unwrap_or(std::num::NonZeroU32::MIN),
            fetch_burst: std::num::NonZeroU32::new(fetching.git_fetch_burst)
                .unwrap_or(std::num::NonZeroU32::MIN),
            policy: policy.clone(),
            limits: crate::gitops::render::Limits {
                file_bytes: rendering.max_file_bytes,
                revision_bytes: rendering.max_revision_bytes,
                document_bytes: rendering.max_document_bytes,
                objects: rendering.max_objects,
            },
        },
        webhook_secret: webhook.webhook_secret,
        webhook_addr: webhook.webhook_addr,
        notifications: crate::notify::controller::Options {
            policy,
            allowed: notifications.allowed_notification_hosts.unwrap_or_default(),
        },
    };
    controller(
        namespace,
        election,
        http.metrics_addr,
        AnalysisOptions {
            prometheus_url: analysis.prometheus_url,
            allowed,
            queries_per_address: usize::from(analysis.max_queries_per_address),
        },
        rollouts.max_concurrent_reconciles,
        git,
    )
    .await
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn controller(
    namespace: Option<String>,
    election: Election,
    metrics_addr: SocketAddr,
    analysis: AnalysisOptions,
    concurrency: u16,
    git: GitOptions,
) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(crate::runtime::metrics::Metrics::default());
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut config = kube::Config::infer().await.map_err(|error| {
        anyhow::anyhow!("reading the cluster's address and credentials (in-cluster config or KUBECONFIG): {error}")
    })?;
    // kube retries 429/503/504 itself and honours Retry-After: a restarting API server
    // answers "server is starting" with Retry-After 10, so every watch and request of the
    // controller sat out 10 s after the server was back. weir's watches back off on their
    // own (runtime::watch, at most a few seconds), and a failed reconcile is requeued by its
    // controller's error policy.
    config.default_retry = false;
    // Unique per process: a restarted pod must not inherit its predecessor's lease.
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "weir".into());
    let identity = format!("{host}-{}", std::process::id());
    // Each replica's requests carry its identity, so an API server's audit log says which
    // replica wrote what (one that does not make a header value is left out, not refused).
    if let Ok(agent) = axum::http::HeaderValue::from_str(&format!(
        "weir/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    )) {
        config.headers.push((axum::http::header::USER_AGENT, agent));
    }
    let client = kube::Client::try_from(config.clone()).map_err(|error| {
        anyhow::anyhow!("connecting to the cluster (in-cluster config or KUBECONFIG): {error}")
    })?;
    let webhook = crate::gitops::webhook::routes(
        client.clone(),
        namespace.clone(),
        git.webhook_secret,
        metrics.clone(),
    );
    let beside_metrics = match git.webhook_addr {
        Some(address) => {
            crate::runtime::http::serve_routes(address, webhook, "the push webhook")
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "serving the push webhook on {address} (--webhook-addr): {error}"
                    )
                })?;
            axum::Router::new()
        }
        None => webhook,
    };
    crate::runtime::http::serve(metrics_addr, metrics.clone(), ready.clone(), beside_metrics)
        .await
        .map_err(|error| {
            anyhow::anyhow!("serving metrics on {metrics_addr} (--metrics-addr): {error}")
        })?;
    let leadership = if election.enabled {
        let elector = crate::runtime::leader::Elector::new(
            client.clone(),
            &election.namespace,
            &election.name,
            &identity,
            election.duration,
            election.shards,
        );
        elector.start()
    } else {
        crate::runtime::leader::Leadership::always()
    };
    let (client_for_git, leadership_for_git) = (client.clone(), leadership.clone());
    let (client_for_notes, leadership_for_notes) = (client.clone(), leadership.clone());
    let config_for_notes = config.clone();
    let health_for_notes = metrics.watches.clone();
    let (rollout_cache, rollout_events) = crate::rollout::controller::watch_rollouts(
        &client,
        namespace.as_deref(),
        &metrics,
        &leadership,
    );
    // The GitSync controller hears of Rollouts from the same watch: one list of them per
    // process. A few hundred in flight keep it busy without holding a copy of each.
    let (to_gitops, rollouts_for_git) = tokio::sync::mpsc::channel(256);
    let rollouts = (
        rollout_cache,
        crate::runtime::watch::tee_touched(rollout_events, to_gitops),
    );
    // The notifications read labels and revisions from the Rollout controller's cache.
    let rollouts_for_notes = rollouts.0.store.clone();
    let (_, _, analysis_result, _, _) = tokio::join!(
        crate::rollout::controller::run(
            client.clone(),
            namespace.as_deref(),
            leadership.clone(),
            metrics.clone(),
            ready,
            concurrency,
            rollouts,
        ),
        crate::experiment::controller::run(
            client.clone(),
            namespace.as_deref(),
            leadership.clone(),
            metrics.clone(),
            concurrency,
        ),
        crate::analysis::controller::run(
            client,
            namespace.as_deref(),
            leadership,
            metrics.clone(),
            analysis.prometheus_url,
            analysis.allowed,
            analysis.queries_per_address,
            concurrency,
        ),
        crate::gitops::controller::run(
            client_for_git,
            config,
            namespace.as_deref(),
            leadership_for_git,
            metrics,
            crate::runtime::watch::received(rollouts_for_git),
            git.fetching,
        ),
        crate::notify::controller::run(
            client_for_notes,
            config_for_notes,
            namespace.as_deref(),
            leadership_for_notes,
            health_for_notes,
            rollouts_for_notes,
            git.notifications,
        ),
    );
    analysis_result
}
