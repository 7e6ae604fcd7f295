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
    },
    /// Run the controller until SIGTERM.
    Controller {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WEIR_NAMESPACE")]
        namespace: Option<String>,
        /// Log as JSON lines instead of text.
        #[arg(long, value_enum, default_value = "text", env = "WEIR_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Print the version.
    Version,
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

async fn controller(namespace: Option<String>) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|error| {
        anyhow::anyhow!("connecting to the cluster (in-cluster config or KUBECONFIG): {error}")
    })?;
    weir::rollout::controller::run(client, namespace.as_deref()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller {
            namespace,
            log_format,
        } => {
            init_logging(log_format);
            controller(namespace).await
        }
        Command::Crds { dir } => weir::crd_files::emit(weir::api::crds(), dir.as_deref()),
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
