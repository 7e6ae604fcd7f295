//! Every example is something the API server accepts and `kubectl weir lint` passes:
//! applied with a server-side dry run on the local control plane (kustomizations built
//! first, as a GitSync would).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{TestNamespace, client, kubeconfig_path, repo_root};

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

/// Applies `manifests` with a server-side dry run into the namespace, failing with kubectl's words.
fn dry_run(ns: &TestNamespace, what: &str, manifests: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"])
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests)
        .expect("write");
    let output = child.wait_with_output().expect("kubectl apply");
    assert!(
        output.status.success(),
        "{what} is refused by the API server: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn lint(what: &str, file: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .arg("lint")
        .arg(file)
        .output()
        .expect("lint");
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server_and_by_lint() {
    let ns = TestNamespace::new(&client().await, "examples").await;
    let root = repo_root().join("examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    let mut applied = 0;
    for file in &files {
        let shown = file
            .strip_prefix(repo_root())
            .unwrap_or(file)
            .display()
            .to_string();
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Kustomizations are built and applied as a whole below; their parts are not
        // meant to be applied alone.
        if name == "kustomization.yaml" || file.components().any(|c| c.as_os_str() == "apps") {
            continue;
        }
        dry_run(&ns, &shown, &std::fs::read(file).expect("read"));
        lint(&shown, file);
        applied += 1;
    }
    for overlay in ["staging", "production"] {
        let dir = root.join("layout/apps/shop/overlays").join(overlay);
        let built = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("kubectl kustomize");
        assert!(
            built.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        dry_run(&ns, overlay, &built.stdout);
        let rendered = std::env::temp_dir().join(format!("{}-{overlay}.yaml", ns.name));
        std::fs::write(&rendered, &built.stdout).expect("write");
        lint(overlay, &rendered);
        applied += 1;
    }
    assert!(applied >= 12, "only {applied} examples were checked");
}
