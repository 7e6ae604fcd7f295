//! `weir`'s command line: `controller` (its flags in `flags`, grouped by the module they
//! configure; started by `controller`), `crds` and `version`.

mod controller;
mod flags;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::flags::ControllerArgs;

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

/// glibc gives every thread that allocates its own arena, up to eight per core. The tokio
/// workers and the blocking pool (Git fetches, kustomize) each take one, and freed memory in
/// one arena is not reused by another, so RSS grew far past the live heap; two arenas keep
/// it near (BENCHMARKS.md, "Figures behind limits"). An operator who sets
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

/// Each runtime worker's stack.
const WORKER_STACK_BYTES: usize = 8 << 20;

/// `weir`'s `main`: parses the command line and runs it on a multi-threaded runtime.
pub fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A Rollout keeps unknown fields at every level (serde's flatten, which buffers each
        // level), and is read on top of a reconcile's futures: past tokio's 2 MiB in a debug
        // build. Reserved, not committed: only the pages used cost memory.
        .thread_stack_size(WORKER_STACK_BYTES)
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
        Command::Controller(args) => controller::run(*args).await,
        Command::Crds { dir, reference } => {
            crate::crd_files::emit(crate::api::crds(), dir.as_deref()).and_then(|()| {
                let Some(path) = reference else {
                    return Ok(());
                };
                let crds = crate::api::crds()?;
                std::fs::write(&path, crate::crd_files::reference(&crds))
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_well_formed() {
        super::Cli::command().debug_assert();
    }
}
