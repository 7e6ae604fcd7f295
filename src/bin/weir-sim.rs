//! `weir-sim`: stand-ins for what the local control plane lacks (see `weir::sim`).
//! Never part of a production deployment.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir-sim",
    version,
    about = "Stand-ins for the parts a local test cluster lacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stand in for the kubelet: mark Pods Running and Ready (unless annotated sim.weir.dev/ready: "false").
    KubeletStandIn,
    /// Simulate a data plane: requests on every HTTPRoute split by its live weights, each
    /// version answering as its pod template's sim.weir.dev/* annotations say; per-version
    /// metrics on /metrics for Prometheus.
    Traffic {
        /// Only the routes of this namespace (default: all).
        #[arg(long)]
        namespace: Option<String>,
        /// Requests a second on each route.
        #[arg(long, default_value_t = 50.0)]
        rps: f64,
        /// Where to serve /metrics.
        #[arg(long, default_value = "127.0.0.1:9102")]
        listen: std::net::SocketAddr,
        /// Draw each request's error and latency at random from this seed (noise, as real
        /// versions have), instead of exact arithmetic.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print the Gateway API CRDs weir uses (HTTPRoute, GRPCRoute, ReferenceGrant) for a cluster without
    /// Gateway API (or write them with --dir, one file each).
    #[command(alias = "httproute-crd")]
    GatewayApiCrds {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Print the SMI TrafficSplit CRD for a cluster without a mesh that installs it (or write
    /// it with --dir).
    SmiCrds {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Print the Istio VirtualService and DestinationRule CRDs, for a cluster without Istio
    /// (or write them with --dir, one file each).
    IstioCrds {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::KubeletStandIn => match kube::Client::try_default().await {
            Ok(client) => weir::sim::kubelet::run(client).await,
            Err(error) => Err(anyhow::anyhow!(
                "connecting to the cluster (KUBECONFIG): {error}"
            )),
        },
        Command::Traffic {
            namespace,
            rps,
            listen,
            seed,
        } => match kube::Client::try_default().await {
            Ok(client) => weir::sim::traffic::run(client, namespace, rps, listen, seed).await,
            Err(error) => Err(anyhow::anyhow!(
                "connecting to the cluster (KUBECONFIG): {error}"
            )),
        },
        Command::GatewayApiCrds { dir } => {
            weir::crd_files::emit(weir::sim::gateway_api_crds::crds(), dir.as_deref())
        }
        Command::SmiCrds { dir } => {
            weir::crd_files::emit(weir::sim::smi_crds::crds(), dir.as_deref())
        }
        Command::IstioCrds { dir } => {
            weir::crd_files::emit(weir::sim::istio_crds::crds(), dir.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}
