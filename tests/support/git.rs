//! Real Git repositories on loopback for GitSync tests: a work repository the test commits
//! to, served as `file://` or by `git daemon` (`git://`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{eventually, free_port};

/// A repository the test writes and commits to, removed on drop.
pub struct GitRepo {
    pub dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=weir test",
            "-c",
            "user.email=test@weir.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?}: {e}"));
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl GitRepo {
    pub fn new(name: &str) -> GitRepo {
        let dir = std::env::temp_dir()
            .join("weir-test-git")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        git(&dir, &["init", "-q", "-b", "main"]);
        // git daemon serves only repositories that opt in.
        std::fs::write(dir.join(".git/git-daemon-export-ok"), "")
            .unwrap_or_else(|e| panic!("export-ok: {e}"));
        GitRepo { dir }
    }

    /// Writes files (path, content; empty content deletes) and commits them; returns the SHA.
    pub fn commit(&self, subject: &str, files: &[(&str, &str)]) -> String {
        for (path, content) in files {
            let target = self.dir.join(path);
            if content.is_empty() {
                let _ = std::fs::remove_file(&target);
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
            }
            std::fs::write(&target, content).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", subject]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn tag(&self, name: &str) {
        git(&self.dir, &["tag", "-f", name]);
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

impl Drop for GitRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `git daemon` serving one repository's parent directory on a loopback port.
pub struct GitDaemon {
    pub port: u16,
    child: std::process::Child,
}

impl GitDaemon {
    pub async fn serve(repo: &GitRepo) -> GitDaemon {
        let port = free_port();
        let base = repo.dir.parent().unwrap_or(&repo.dir).to_owned();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ])
            .arg(&base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting git daemon: {e}"));
        eventually("git daemon to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        GitDaemon { port, child }
    }

    pub fn url(&self, repo: &GitRepo) -> String {
        let name = repo
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
