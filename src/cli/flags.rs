//! `weir controller`'s flags, grouped by the module they configure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::analysis::hosts::AllowedHosts;
use crate::gitops::webhook::SecretLocation;

#[derive(clap::Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, value_enum, default_value = "text", env = "WEIR_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub http: Http,
    #[command(flatten)]
    pub leader_election: LeaderElection,
    #[command(flatten)]
    pub rollouts: Rollouts,
    #[command(flatten)]
    pub analysis: Analysis,
    #[command(flatten)]
    pub fetching: Fetching,
    #[command(flatten)]
    pub rendering: Rendering,
    #[command(flatten)]
    pub tenancy: Tenancy,
    #[command(flatten)]
    pub webhook: Webhook,
    #[command(flatten)]
    pub notifications: Notifications,
}

// `notify`.
#[derive(clap::Args)]
#[command(next_help_heading = "Notifications")]
pub struct Notifications {
    /// The receivers Notifiers may send to, comma-separated: URL prefixes
    /// (https://hooks.slack.com/) or bare hosts (any port). Default: any address. A message
    /// for another address is not sent, and the Notifier's Ready says why.
    #[arg(long, env = "WEIR_ALLOWED_NOTIFICATION_HOSTS", value_parser = parse_allowed_hosts)]
    pub allowed_notification_hosts: Option<AllowedHosts>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// `runtime::http`.
#[derive(clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct Http {
    /// Serve /healthz, /readyz and /metrics here (port 0: any free port, logged).
    #[arg(long, default_value = "0.0.0.0:8080", env = "WEIR_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
}

// `runtime::leader`.
#[derive(clap::Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaderElection {
    /// Elect a leader among replicas with a Lease; only the leader writes.
    #[arg(long, env = "WEIR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "weir-controller")]
    pub lease_name: String,
    /// The Lease's namespace (default: POD_NAMESPACE, else --namespace, else default).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a lease lasts without renewal (30s, 15s, ...); a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Cut the objects into this many shards, each led by one replica with its own Lease
    /// (`<lease-name>-<i>-of-<N>`): replicas share the work instead of one doing it all. An
    /// object's shard comes from its `weir.dev/shard` label, else its namespace. Every
    /// replica must run with the same number; needs --leader-elect when above 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024), env = "WEIR_SHARDS")]
    pub shards: u32,
}

// `rollout::controller` and `analysis::controller`.
#[derive(clap::Args)]
#[command(next_help_heading = "Rollouts")]
pub struct Rollouts {
    /// Rollouts (and AnalysisRuns) reconciled at once; the rest wait their turn. Each
    /// reconcile holds a few connections to the API server, so this bounds those too.
    #[arg(long, default_value_t = 16, env = "WEIR_MAX_CONCURRENT_RECONCILES", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
}

// `analysis::hosts` and `analysis::prometheus`.
#[derive(clap::Args)]
#[command(next_help_heading = "Analysis")]
pub struct Analysis {
    /// Prometheus for analysis metrics that set no `address` (http://prometheus:9090).
    #[arg(long, env = "WEIR_PROMETHEUS_URL", value_parser = parse_http_url)]
    pub prometheus_url: Option<String>,
    /// The Prometheus addresses analysis may query, comma-separated: URL prefixes
    /// (https://prometheus.monitoring:9090) or bare hosts (prometheus.monitoring, any port).
    /// Default: any address. A run naming another address fails before anything is sent.
    #[arg(long, env = "WEIR_ALLOWED_METRIC_HOSTS", value_parser = parse_allowed_hosts)]
    pub allowed_metric_hosts: Option<AllowedHosts>,
    /// Analysis queries in flight to one Prometheus at once; the rest wait their turn, within
    /// their own timeout.
    #[arg(long, default_value_t = crate::analysis::provider::DEFAULT_QUERIES_PER_ADDRESS, env = "WEIR_MAX_QUERIES_PER_ADDRESS", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_queries_per_address: u16,
}

// `gitops::source` and `gitops::fetch_rate`.
#[derive(clap::Args)]
#[command(next_help_heading = "GitOps: fetching")]
pub struct Fetching {
    /// Where GitSyncs keep their clones (kept across restarts when on a volume).
    #[arg(long, env = "WEIR_GIT_CACHE_DIR", default_value_os_t = std::env::temp_dir().join("weir-git"))]
    pub git_cache_dir: PathBuf,
    /// GitSyncs fetching at once; the rest wait their turn.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_fetches: usize,
    /// How long one fetch may take before it is abandoned and its slot given to another.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub fetch_timeout: Duration,
    /// Fetches from one Git host (scheme, host and port) per minute, across all GitSyncs; a
    /// GitSync over it waits for its turn (requeued, not holding a worker).
    #[arg(long, default_value_t = crate::gitops::fetch_rate::DEFAULT_PER_MINUTE, env = "WEIR_GIT_FETCHES_PER_HOST_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    pub git_fetches_per_host_per_minute: u32,
    /// How many fetches from one Git host may come at once before that rate applies.
    #[arg(long, default_value_t = crate::gitops::fetch_rate::DEFAULT_BURST, env = "WEIR_GIT_FETCH_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub git_fetch_burst: u32,
    /// The most bytes of pack one fetch may receive; a fetch past it fails, naming the
    /// repository and this limit, keeps nothing and applies nothing.
    #[arg(long, default_value_t = crate::gitops::source::DEFAULT_MAX_FETCH_BYTES, env = "WEIR_MAX_FETCH_BYTES")]
    pub max_fetch_bytes: u64,
}

// `gitops::render::Limits`.
#[derive(clap::Args)]
#[command(next_help_heading = "GitOps: rendering limits")]
pub struct Rendering {
    /// The largest file a revision may hold, in bytes (checked before it is read).
    #[arg(long, default_value_t = crate::gitops::render::Limits::default().file_bytes, env = "WEIR_MAX_FILE_BYTES")]
    pub max_file_bytes: u64,
    /// The most bytes of files read for one revision, and of a kustomize build's output.
    #[arg(long, default_value_t = crate::gitops::render::Limits::default().revision_bytes, env = "WEIR_MAX_REVISION_BYTES")]
    pub max_revision_bytes: u64,
    /// The most one YAML document may take in memory once built, aliases expanded (an
    /// estimate: its text plus about a hundred bytes per field).
    #[arg(long, default_value_t = crate::gitops::render::Limits::default().document_bytes, env = "WEIR_MAX_DOCUMENT_BYTES")]
    pub max_document_bytes: u64,
    /// The most objects one revision may hold.
    #[arg(long, default_value_t = crate::gitops::render::Limits::default().objects, env = "WEIR_MAX_OBJECTS")]
    pub max_objects: usize,
}

// `gitops::tenancy`.
#[derive(clap::Args)]
#[command(next_help_heading = "GitOps: tenancy")]
pub struct Tenancy {
    /// Lockdown: a GitSync without spec.serviceAccountName acts as this ServiceAccount of
    /// its own namespace (weir impersonates it), so RBAC decides what its repository may
    /// touch. Unset: such a GitSync acts as the controller itself (single-team clusters).
    #[arg(long, env = "WEIR_DEFAULT_SERVICE_ACCOUNT", value_parser = parse_service_account)]
    pub default_service_account: Option<String>,
    /// Let GitSyncs apply into other namespaces and apply cluster-scoped kinds (a platform
    /// team's cluster-wide GitSync). Impersonation still applies.
    #[arg(long, env = "WEIR_ALLOW_CROSS_NAMESPACE")]
    pub allow_cross_namespace: bool,
    /// Let GitSyncs follow file:// repositories, which read the controller's own disk
    /// (demos and tests).
    #[arg(long, env = "WEIR_ALLOW_FILE_URLS")]
    pub allow_file_urls: bool,
    /// Every spec.rollback.writeBack.branch must start with this: weir force-pushes that
    /// branch, so it must be one weir owns.
    #[arg(long, default_value = crate::gitops::tenancy::DEFAULT_WRITE_BACK_PREFIX, env = "WEIR_WRITE_BACK_BRANCH_PREFIX", value_parser = parse_branch_prefix)]
    pub write_back_branch_prefix: String,
}

// `gitops::webhook`.
#[derive(clap::Args)]
#[command(next_help_heading = "Webhook")]
pub struct Webhook {
    /// The Secret (NAMESPACE/NAME, key `token`) whose value signs push webhooks
    /// (POST /hooks/git); without it every webhook call is refused. weir watches this one
    /// Secret (list and watch by name) and verifies calls against what it last saw.
    #[arg(long, env = "WEIR_WEBHOOK_SECRET")]
    pub webhook_secret: Option<SecretLocation>,
    /// Serve the push webhook (POST /hooks/git) here, apart from /metrics, so that the port
    /// exposed to Git hosts serves nothing else. Unset: on --metrics-addr (as before).
    #[arg(long, env = "WEIR_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
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

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

fn parse_allowed_hosts(text: &str) -> Result<AllowedHosts, String> {
    AllowedHosts::parse(text)
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} must start with http:// or https://"))
    }
}
