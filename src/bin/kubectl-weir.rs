//! `kubectl-weir`: the kubectl plugin (`kubectl weir ...`); see `weir::plugin`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    weir::plugin::run(weir::plugin::Cli::parse()).await
}
