//! `kubectl-weir`: the kubectl plugin (`kubectl weir ...`); see `weir::plugin`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match weir::plugin::Cli::try_parse() {
        Ok(cli) => weir::plugin::run(cli).await,
        Err(error) => {
            let _ = error.print();
            // Help and version are answers; a wrong command line is neither 1 nor 2, which
            // `status` uses for Degraded and for a timeout.
            if error.use_stderr() {
                ExitCode::from(weir::plugin::COULD_NOT_TELL)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
