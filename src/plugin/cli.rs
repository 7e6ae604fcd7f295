//! `kubectl weir`'s commands and flags (kubectl's habits: `--kubeconfig`, `--context`, `-n`,
//! `-A`), with their help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-weir",
    bin_name = "kubectl weir",
    version,
    about = "Watch and steer weir Rollouts from kubectl",
    after_help = "A Rollout a GitSync manages is rolled back through the GitSync, so Git stays the source of truth."
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the cluster, as kubectl takes it.
#[derive(clap::Args, Debug)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, then "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One line per Rollout: phase, step, canary weight, stable and canary revision, age.
    List {
        /// Rollouts in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// A Rollout at a glance: steps, traffic, revisions, ReplicaSets, analysis, conditions.
    Get {
        name: String,
        /// Keep watching: redraw on a terminal, one line per change otherwise.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Print the object itself.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// Go past the current pause (or, with --full, skip every remaining step); for
    /// `gitsync/NAME`, approve the revision its promotion waits for (or --revision).
    Promote {
        name: String,
        /// Skip all remaining steps and analysis.
        #[arg(long)]
        full: bool,
        /// With gitsync/NAME: the revision to approve (full SHA, or a prefix of the one
        /// waiting); default: the one waiting.
        #[arg(long)]
        revision: Option<String>,
    },
    /// Send all traffic back to the stable version now (a managing GitSync then rolls back).
    Abort { name: String },
    /// Start an aborted canary again from its first step.
    Retry { name: String },
    /// Hold the Rollout where it is (spec.paused).
    Pause { name: String },
    /// Let a paused Rollout go on.
    Resume { name: String },
    /// Go back to an earlier version: a Git revision through the GitSync, else a ReplicaSet.
    Undo {
        name: String,
        /// A Git revision (full SHA or a prefix the GitSync knows), or for a Rollout without
        /// a GitSync the pod-template hash of an earlier ReplicaSet.
        #[arg(long)]
        to_revision: Option<String>,
    },
    /// The revisions the Rollout went through, with outcomes and analysis.
    History { name: String },
    /// Where each recent Git revision stands in every GitSync (environment), upstream
    /// first: applied, good, soaking, waiting for approval, rejected and why.
    Fleet {
        /// GitSyncs in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// A web dashboard on this machine: Rollouts live, each with its steps, its weight and
    /// its analysis plotted, and buttons (promote, abort, retry, pause, resume) that ask
    /// first; GitSyncs with their revision timeline and delivery figures.
    ///
    /// It listens on 127.0.0.1 only and acts with your kubeconfig: it shows what you may
    /// read and does what you may do.
    Dashboard {
        /// The port to listen on (0: any free one; the address is printed).
        #[arg(long, default_value_t = 3100)]
        port: u16,
        /// Rollouts and GitSyncs in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Wait until Healthy (exit 0), Degraded or aborted (exit 1), or the timeout (exit 2).
    ///
    /// For a Rollout a GitSync manages, the release waited for is a Git revision (the
    /// newest the GitSync fetched, or --revision): it must be the one running, Healthy; a
    /// rejected revision or weir's revert of one exits 1 although the Rollout is Healthy on
    /// the last good version again.
    Status {
        name: String,
        /// How long to wait (5m, 90s).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// The Git revision (full SHA or 7+ characters) whose release to wait for, say the
        /// commit a pipeline just pushed.
        #[arg(long, value_parser = parse_revision)]
        revision: Option<String>,
    },
    /// What a GitSync's revision would create, change and prune (exit 1 if anything).
    ///
    /// A server-side dry run as the GitSync's identity, against the live objects; nothing
    /// is written. Exit 0 when nothing would change, 1 when something would (for CI), 2
    /// when it cannot tell.
    Diff {
        /// The GitSync.
        name: String,
        /// The revision to compare (full SHA, or 7+ characters of the ref's head or of a
        /// revision the GitSync tried); default: where the ref points now.
        #[arg(long, value_parser = parse_revision)]
        revision: Option<String>,
        /// The ServiceAccount a GitSync without spec.serviceAccountName acts as: the
        /// controller's --default-service-account (the chart's default).
        #[arg(long, default_value = "weir-gitsync")]
        default_service_account: String,
        /// As the controller's --allow-cross-namespace: objects may name other namespaces
        /// or be cluster-scoped.
        #[arg(long)]
        allow_cross_namespace: bool,
    },
    /// Check Rollout, AnalysisTemplate and GitSync manifests offline (also Argo's).
    Lint {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the plugin's version.
    Version,
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

/// A revision `status` can match: a prefix shorter than seven characters would match nothing
/// (or the wrong commit), and the wait would run to its timeout for a typo.
fn parse_revision(text: &str) -> Result<String, String> {
    let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (7..=crate::gitops::SHA_LEN).contains(&text.len()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a Git revision: give the commit's SHA, whole or its first 7 or \
             more hex characters (git rev-parse HEAD)"
        ))
    }
}
