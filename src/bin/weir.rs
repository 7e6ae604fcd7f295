//! `weir`: the controller and its utilities; see `weir::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    weir::cli::main()
}
