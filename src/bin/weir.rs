//! `weir`: the controller and its utilities.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Progressive delivery for Kubernetes that rolls Git back when a canary fails"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print weir's CustomResourceDefinitions as YAML (or write one file per CRD with --dir).
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the field reference (Markdown) generated from the types' docs here.
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Run the controller until SIGTERM.
    Controller(Box<ControllerArgs>),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WEIR_NAMESPACE")]
    namespace: Option<String>,
    /// Elect a leader among replicas with a Lease; only the leader writes.
    #[arg(long, env = "WEIR_LEADER_ELECT")]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "weir-controller")]
    lease_name: String,
    /// The Lease's namespace (default: POD_NAMESPACE, else --namespace, else default).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a lease lasts without renewal (30s, 15s, ...); a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// Serve /healthz, /readyz and /metrics here (port 0: any free port, logged).
    #[arg(long, default_value = "0.0.0.0:8080", env = "WEIR_METRICS_ADDR")]
    metrics_addr: std::net::SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long, value_enum, default_value = "text", env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,
    /// Prometheus for analysis metrics that set no `address` (http://prometheus:9090).
    #[arg(long, env = "WEIR_PROMETHEUS_URL", value_parser = parse_http_url)]
    prometheus_url: Option<String>,
    /// The Prometheus addresses analysis may query, comma-separated: URL prefixes
    /// (https://prometheus.monitoring:9090) or bare hosts (prometheus.monitoring, any port).
    /// Default: any address. A run naming another address fails before anything is sent.
    #[arg(long, env = "WEIR_ALLOWED_METRIC_HOSTS", value_parser = parse_allowed_hosts)]
    allowed_metric_hosts: Option<weir::analysis::hosts::AllowedHosts>,
    /// Analysis queries in flight to one Prometheus at once; the rest wait their turn, within
    /// their own timeout.
    #[arg(long, default_value_t = weir::analysis::prometheus::DEFAULT_QUERIES_PER_ADDRESS, env = "WEIR_MAX_QUERIES_PER_ADDRESS", value_parser = clap::value_parser!(u16).range(1..))]
    max_queries_per_address: u16,
    /// Where GitSyncs keep their clones (kept across restarts when on a volume).
    #[arg(long, env = "WEIR_GIT_CACHE_DIR", default_value_os_t = std::env::temp_dir().join("weir-git"))]
    git_cache_dir: PathBuf,
    /// Rollouts (and AnalysisRuns) reconciled at once; the rest wait their turn. Each
    /// reconcile holds a few connections to the API server, so this bounds those too.
    #[arg(long, default_value_t = 16, env = "WEIR_MAX_CONCURRENT_RECONCILES", value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// GitSyncs fetching at once; the rest wait their turn.
    #[arg(long, default_value_t = 4)]
    max_concurrent_fetches: usize,
    /// How long one fetch may take before it is abandoned and its slot given to another.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    fetch_timeout: std::time::Duration,
    /// The Secret (NAMESPACE/NAME, key `token`) whose value signs push webhooks
    /// (POST /hooks/git); without it every webhook call is refused. weir watches this one
    /// Secret (list and watch by name) and verifies calls against what it last saw.
    #[arg(long, env = "WEIR_WEBHOOK_SECRET")]
    webhook_secret: Option<weir::gitops::webhook::SecretLocation>,
    /// Serve the push webhook (POST /hooks/git) here, apart from /metrics, so that the port
    /// exposed to Git hosts serves nothing else. Unset: on --metrics-addr (as before).
    #[arg(long, env = "WEIR_WEBHOOK_ADDR")]
    webhook_addr: Option<std::net::SocketAddr>,
    /// Fetches from one Git host (scheme, host and port) per minute, across all GitSyncs; a
    /// GitSync over it waits for its turn (requeued, not holding a worker).
    #[arg(long, default_value_t = weir::gitops::fetch_rate::DEFAULT_PER_MINUTE, env = "WEIR_GIT_FETCHES_PER_HOST_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    git_fetches_per_host_per_minute: u32,
    /// How many fetches from one Git host may come at once before that rate applies.
    #[arg(long, default_value_t = weir::gitops::fetch_rate::DEFAULT_BURST, env = "WEIR_GIT_FETCH_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    git_fetch_burst: u32,
    /// The most bytes of pack one fetch may receive; a fetch past it fails, naming the
    /// repository and this limit, keeps nothing and applies nothing.
    #[arg(long, default_value_t = weir::gitops::source::DEFAULT_MAX_FETCH_BYTES, env = "WEIR_MAX_FETCH_BYTES")]
    max_fetch_bytes: u64,
    /// Lockdown: a GitSync without spec.serviceAccountName acts as this ServiceAccount of
    /// its own namespace (weir impersonates it), so RBAC decides what its repository may
    /// touch. Unset: such a GitSync acts as the controller itself (single-team clusters).
    #[arg(long, env = "WEIR_DEFAULT_SERVICE_ACCOUNT", value_parser = parse_service_account)]
    default_service_account: Option<String>,
    /// Let GitSyncs apply into other namespaces and apply cluster-scoped kinds (a platform
    /// team's cluster-wide GitSync). Impersonation still applies.
    #[arg(long, env = "WEIR_ALLOW_CROSS_NAMESPACE")]
    allow_cross_namespace: bool,
    /// Let GitSyncs follow file:// repositories, which read the controller's own disk
    /// (demos and tests).
    #[arg(long, env = "WEIR_ALLOW_FILE_URLS")]
    allow_file_urls: bool,
    /// Every spec.rollback.writeBack.branch must start with this: weir force-pushes that
    /// branch, so it must be one weir owns.
    #[arg(long, default_value = weir::gitops::tenancy::DEFAULT_WRITE_BACK_PREFIX, env = "WEIR_WRITE_BACK_BRANCH_PREFIX", value_parser = parse_branch_prefix)]
    write_back_branch_prefix: String,
    /// The largest file a revision may hold, in bytes (checked before it is read).
    #[arg(long, default_value_t = weir::gitops::render::Limits::default().file_bytes, env = "WEIR_MAX_FILE_BYTES")]
    max_file_bytes: u64,
    /// The most bytes of files read for one revision, and of a kustomize build's output.
    #[arg(long, default_value_t = weir::gitops::render::Limits::default().revision_bytes, env = "WEIR_MAX_REVISION_BYTES")]
    max_revision_bytes: u64,
    /// The most one YAML document may take in memory once built, aliases expanded (an
    /// estimate: its text plus about a hundred bytes per field).
    #[arg(long, default_value_t = weir::gitops::render::Limits::default().document_bytes, env = "WEIR_MAX_DOCUMENT_BYTES")]
    max_document_bytes: u64,
    /// The most objects one revision may hold.
    #[arg(long, default_value_t = weir::gitops::render::Limits::default().objects, env = "WEIR_MAX_OBJECTS")]
    max_objects: usize,
}

fn parse_service_account(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !text.starts_with(['-', '.'])
        && !text.ends_with(['-', '.']);
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a ServiceAccount name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

fn parse_branch_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains("..") || text.contains(char::is_whitespace) {
        Err(format!(
            "{text:?} must be a non-empty branch name prefix such as weir/"
        ))
    } else {
        Ok(text.to_owned())
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    weir::duration::parse(text).map_err(|e| e.to_string())
}

fn parse_allowed_hosts(text: &str) -> Result<weir::analysis::hosts::AllowedHosts, String> {
    weir::analysis::hosts::AllowedHosts::parse(text)
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} must start with http:// or https://"))
    }
}

struct AnalysisOptions {
    prometheus_url: Option<String>,
    allowed: weir::analysis::hosts::AllowedHosts,
    queries_per_address: usize,
}

struct GitOptions {
    fetching: weir::gitops::controller::Options,
    webhook_secret: Option<weir::gitops::webhook::SecretLocation>,
    webhook_addr: Option<std::net::SocketAddr>,
}

struct Election {
    enabled: bool,
    name: String,
    namespace: String,
    duration: std::time::Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    metrics_addr: std::net::SocketAddr,
    analysis: AnalysisOptions,
    concurrency: u16,
    git: GitOptions,
) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(weir::runtime::metrics::Metrics::default());
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
    let client = kube::Client::try_from(config.clone()).map_err(|error| {
        anyhow::anyhow!("connecting to the cluster (in-cluster config or KUBECONFIG): {error}")
    })?;
    let webhook = weir::gitops::webhook::routes(
        client.clone(),
        namespace.clone(),
        git.webhook_secret,
        metrics.clone(),
    );
    let beside_metrics = match git.webhook_addr {
        Some(address) => {
            weir::runtime::http::serve_routes(address, webhook, "the push webhook")
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
    weir::runtime::http::serve(metrics_addr, metrics.clone(), ready.clone(), beside_metrics)
        .await
        .map_err(|error| {
            anyhow::anyhow!("serving metrics on {metrics_addr} (--metrics-addr): {error}")
        })?;
    let leadership = if election.enabled {
        // Unique per process: a restarted pod must not inherit its predecessor's lease.
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "weir".into());
        let identity = format!("{host}-{}", std::process::id());
        let elector = weir::runtime::leader::Elector::new(
            client.clone(),
            &election.namespace,
            &election.name,
            &identity,
            election.duration,
        );
        elector.start()
    } else {
        weir::runtime::leader::Leadership::always()
    };
    let (client_for_git, leadership_for_git) = (client.clone(), leadership.clone());
    let (_, analysis_result, _) = tokio::join!(
        weir::rollout::controller::run(
            client.clone(),
            namespace.as_deref(),
            leadership.clone(),
            metrics.clone(),
            ready,
            concurrency,
        ),
        weir::analysis::controller::run(
            client,
            namespace.as_deref(),
            leadership,
            metrics.clone(),
            analysis.prometheus_url,
            analysis.allowed,
            analysis.queries_per_address,
            concurrency,
        ),
        weir::gitops::controller::run(
            client_for_git,
            config,
            namespace.as_deref(),
            leadership_for_git,
            metrics,
            git.fetching,
        ),
    );
    analysis_result
}

/// glibc gives every thread that allocates its own arena, up to eight per core. The tokio
/// workers and the blocking pool (Git fetches, kustomize) each take one, and freed memory in
/// one arena is not reused by another: with 1,000 Rollouts that was 69 MiB of RSS for 22 MiB
/// of live heap. Two arenas keep it near the live heap (BENCHMARKS.md). An operator who sets
/// `MALLOC_ARENA_MAX` themselves keeps their own value.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; it is called before any thread
        // other than main exists, and a refusal (return 0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Controller(args) => {
            let ControllerArgs {
                namespace,
                leader_elect,
                lease_name,
                lease_namespace,
                lease_duration,
                metrics_addr,
                log_format,
                prometheus_url,
                allowed_metric_hosts,
                max_queries_per_address,
                git_cache_dir,
                max_concurrent_reconciles,
                max_concurrent_fetches,
                fetch_timeout,
                webhook_secret,
                webhook_addr,
                git_fetches_per_host_per_minute,
                git_fetch_burst,
                max_fetch_bytes,
                default_service_account,
                allow_cross_namespace,
                allow_file_urls,
                write_back_branch_prefix,
                max_file_bytes,
                max_revision_bytes,
                max_document_bytes,
                max_objects,
            } = *args;
            init_logging(log_format);
            let allowed = allowed_metric_hosts.unwrap_or_default();
            // A default every metric without an address would be refused: say so at start.
            if let Some(url) = &prometheus_url
                && let Err(why) = allowed.check(url)
            {
                eprintln!("weir: --prometheus-url {url}: {why}; add it to --allowed-metric-hosts");
                return ExitCode::FAILURE;
            }
            let election = Election {
                enabled: leader_elect,
                name: lease_name,
                namespace: lease_namespace
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                duration: lease_duration,
            };
            let git = GitOptions {
                fetching: weir::gitops::controller::Options {
                    cache_dir: git_cache_dir,
                    max_fetches: max_concurrent_fetches,
                    fetch_timeout,
                    max_fetch_bytes,
                    fetches_per_host_per_minute: std::num::NonZeroU32::new(
                        git_fetches_per_host_per_minute,
                    )
                    .unwrap_or(std::num::NonZeroU32::MIN),
                    fetch_burst: std::num::NonZeroU32::new(git_fetch_burst)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                    policy: weir::gitops::tenancy::Policy {
                        default_service_account,
                        allow_cross_namespace,
                        allow_file_urls,
                        write_back_prefix: write_back_branch_prefix,
                        metric_hosts: allowed.clone(),
                    },
                    limits: weir::gitops::render::Limits {
                        file_bytes: max_file_bytes,
                        revision_bytes: max_revision_bytes,
                        document_bytes: max_document_bytes,
                        objects: max_objects,
                    },
                },
                webhook_secret,
                webhook_addr,
            };
            controller(
                namespace,
                election,
                metrics_addr,
                AnalysisOptions {
                    prometheus_url,
                    allowed,
                    queries_per_address: usize::from(max_queries_per_address),
                },
                max_concurrent_reconciles,
                git,
            )
            .await
        }
        Command::Crds { dir, reference } => {
            weir::crd_files::emit(weir::api::crds(), dir.as_deref()).and_then(|()| {
                let Some(path) = reference else {
                    return Ok(());
                };
                let crds = weir::api::crds()?;
                std::fs::write(&path, weir::crd_files::reference(&crds))
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
            })
        }
        Command::Version => {
            println!("weir {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {error:#}");
            ExitCode::FAILURE
        }
    }
}
