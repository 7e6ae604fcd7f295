//! `kubectl-weir`: the kubectl plugin (`kubectl weir ...`).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubectl-weir",
    bin_name = "kubectl weir",
    version,
    about = "Watch and steer weir Rollouts from kubectl"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the plugin's version.
    Version,
}

fn main() {
    match Cli::parse().command {
        Command::Version => println!("kubectl-weir {}", env!("CARGO_PKG_VERSION")),
    }
}
