//! Building a kustomization: the revision's tree written to a temporary directory (bases
//! may sit anywhere in the repository), then `kustomize build` or, where only kubectl is
//! installed, `kubectl kustomize`, whose output is rendered like any YAML stream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::render::{self, Manifest, SourceFile, normalize};

/// A build that takes longer than this is stopped (a remote base that never answers).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The program that builds kustomizations here, and the arguments before the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    pub program: PathBuf,
    pub args: Vec<&'static str>,
}

/// `kustomize` on PATH, else `kubectl`; None when neither is installed.
pub fn find() -> Option<Builder> {
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    };
    if let Some(program) = on_path("kustomize") {
        return Some(Builder {
            program,
            args: vec!["build"],
        });
    }
    on_path("kubectl").map(|program| Builder {
        program,
        args: vec!["kustomize"],
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes `files` (the whole tree of a revision) under `root`, refusing any path that would
/// land outside it.
fn materialize(root: &Path, files: &[SourceFile]) -> Result<(), String> {
    for file in files {
        let relative = normalize(&file.path);
        if relative.is_empty() || relative.split('/').any(|part| part == "..") {
            return Err(format!(
                "{:?} is not a path inside the repository",
                file.path
            ));
        }
        let target = root.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("writing the work tree ({relative}): {e}"))?;
        }
        std::fs::write(&target, &file.bytes)
            .map_err(|e| format!("writing the work tree ({relative}): {e}"))?;
    }
    Ok(())
}

/// Builds the kustomization in directory `path` of a revision whose whole tree is `files`.
/// Errors are for a status condition: they name the kustomization and say what to do.
pub async fn build(
    builder: Option<Builder>,
    files: Vec<SourceFile>,
    path: &str,
    kustomization: &str,
    limits: &render::Limits,
) -> Result<Vec<Manifest>, String> {
    let Some(builder) = builder else {
        return Err(format!(
            "{kustomization}: building a kustomization needs kustomize or kubectl where weir runs, and neither is on PATH"
        ));
    };
    let work = tempfile::Builder::new()
        .prefix("weir-kustomize-")
        .tempdir()
        .map_err(|e| format!("creating a work tree for {kustomization}: {e}"))?;
    let root = work.path().to_owned();
    tokio::task::spawn_blocking(move || materialize(&root, &files))
        .await
        .map_err(|_| format!("writing the work tree for {kustomization} was interrupted"))??;
    let directory = work.path().join(normalize(path));
    let run = tokio::process::Command::new(&builder.program)
        .args(&builder.args)
        .arg(&directory)
        .current_dir(work.path())
        .kill_on_drop(true)
        .output();
    let program = builder
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = match tokio::time::timeout(TIMEOUT, run).await {
        Err(_) => {
            return Err(format!(
                "{kustomization}: {program} took longer than {}s and was stopped",
                TIMEOUT.as_secs()
            ));
        }
        Ok(Err(error)) => return Err(format!("{kustomization}: running {program}: {error}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let why = tidy(
            &String::from_utf8_lossy(&output.stderr),
            &work.path().display().to_string(),
        );
        return Err(format!("{kustomization}: {program} failed: {why}"));
    }
    render::stream(&format!("{kustomization} (built)"), output.stdout, limits)
        .map_err(|e| e.to_string())
}

/// The build's own words for a status condition: repository paths instead of the work
/// tree's, without deprecation warnings or kubectl's log prefix, on one bounded line.
fn tidy(stderr: &str, work_tree: &str) -> String {
    let text = stderr
        .replace(&format!("{work_tree}/"), "")
        .replace(work_tree, ".");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("# Warning"))
        .map(|line| {
            // klog: `E1122 21:26:53.311357   16371 run.go:72] "command failed" err="..."`
            let is_klog = line.chars().next().is_some_and(|c| "IWEF".contains(c))
                && line
                    .get(1..5)
                    .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
            match line.split_once("] ") {
                Some((_, rest)) if is_klog => rest,
                _ => line,
            }
        })
        .collect();
    let joined = lines.join("; ");
    match joined.char_indices().nth(2000) {
        Some((end, _)) => format!("{}...", &joined[..end]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_read_as_repository_paths_on_one_line() {
        let stderr = "# Warning: 'commonLabels' is deprecated.\n\
            E1122 21:26:53.311357   16371 run.go:72] \"command failed\" err=\"lstat /tmp/weir-kustomize-x/base/missing.yaml: no such file\"\n";
        assert_eq!(
            tidy(stderr, "/tmp/weir-kustomize-x"),
            "\"command failed\" err=\"lstat base/missing.yaml: no such file\""
        );
        assert_eq!(
            tidy("Error: accumulating resources\n  in /w\n", "/w"),
            "Error: accumulating resources; in ."
        );
        let long = "é".repeat(3000);
        assert_eq!(tidy(&long, "/w").chars().count(), 2003);
    }

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_tree_is_written_under_the_root_and_nowhere_else() {
        let work = tempfile::tempdir().expect("temp dir");
        materialize(
            work.path(),
            &[
                file("base/a.yaml", "a"),
                file("./overlays/prod/k.yaml", "k"),
            ],
        )
        .expect("written");
        assert_eq!(
            std::fs::read_to_string(work.path().join("overlays/prod/k.yaml")).ok(),
            Some("k".into())
        );
        for bad in ["../escape.yaml", "base/../../escape.yaml", ""] {
            assert!(
                materialize(work.path(), &[file(bad, "x")]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn without_a_builder_the_error_says_what_to_install() {
        let error = build(
            None,
            vec![],
            "deploy",
            "deploy/kustomization.yaml",
            &render::Limits::default(),
        )
        .await
        .expect_err("no builder");
        assert!(
            error.starts_with("deploy/kustomization.yaml: ")
                && error.contains("kustomize or kubectl"),
            "{error}"
        );
    }
}
