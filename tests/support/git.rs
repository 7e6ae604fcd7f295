//! Real Git repositories on loopback for GitSync tests: a work repository the test commits
//! to, served as `file://` or by `git daemon` (`git://`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{free_port, listening};

/// A repository the test writes and commits to, removed on drop.
pub struct GitRepo {
    pub dir: PathBuf,
}

/// Runs a tool the test needs and returns its trimmed output; any failure ends the test,
/// with the tool's own words.
fn run(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    run(
        &format!("git {args:?}"),
        Command::new("git")
            .args([
                "-c",
                "user.name=weir test",
                "-c",
                "user.email=test@weir.dev",
            ])
            .args(args)
            .current_dir(dir),
    )
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

    /// Lets weir push here (its write-back): the checked-out branch follows a push, so the
    /// test's next commit builds on what weir pushed.
    pub fn accept_pushes(&self) {
        git(
            &self.dir,
            &["config", "receive.denyCurrentBranch", "updateInstead"],
        );
        git(&self.dir, &["config", "http.receivepack", "true"]);
    }

    /// Installs a server-side hook (`pre-receive`, say); an empty script removes it.
    pub fn hook(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(".git/hooks").join(name);
        if script.is_empty() {
            let _ = std::fs::remove_file(&path);
            return;
        }
        std::fs::create_dir_all(self.dir.join(".git/hooks"))
            .unwrap_or_else(|e| panic!("hooks dir: {e}"));
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("writing {name}: {e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {name}: {e}"));
    }

    /// Runs git in the repository and returns its trimmed output.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
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
        GitDaemon::serve_on(repo, free_port()).await
    }

    /// Serves on `port`: a Git host coming back where it was.
    pub async fn serve_on(repo: &GitRepo, port: u16) -> GitDaemon {
        let base = repo.dir.parent().unwrap_or(&repo.dir).to_owned();
        // git-daemon itself, not `git daemon`: the `git` wrapper runs it as a child and does
        // not pass on SIGKILL, so killing the wrapper left a daemon behind after every test.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .unwrap_or_else(|e| panic!("git --exec-path: {e}"));
        let exec_path = String::from_utf8_lossy(&exec_path.stdout).trim().to_owned();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                // Pushes too (weir's write-back), into repositories that accept them.
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ])
            .arg(&base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting git daemon: {e}"));
        listening("git daemon", port).await;
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

fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "weir-test", "-f"])
            .arg(path),
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// OpenSSH's sshd on a loopback port, with a host key and one authorized client key of its
/// own; it serves the repositories of the user the tests run as.
pub struct SshServer {
    pub port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl SshServer {
    pub async fn serve(name: &str) -> SshServer {
        let port = free_port();
        let dir = std::env::temp_dir()
            .join("weir-test-sshd")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        keygen(&dir.join("stranger_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .unwrap_or_else(|e| panic!("authorized_keys: {e}"));
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap_or_else(|e| panic!("config: {e}"));
        // sshd started by root needs its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sshd: {e}"));
        listening("sshd", port).await;
        SshServer { port, dir, child }
    }

    /// The private key sshd accepts.
    pub fn client_key(&self) -> String {
        read(&self.dir.join("client_key"))
    }

    /// The known_hosts line for this server's real host key.
    pub fn known_hosts(&self) -> String {
        self.known_hosts_with("host_key.pub")
    }

    /// A known_hosts line for this server's address with a key it does not have: what a
    /// client sees when someone else answers at that address.
    pub fn impostor_known_hosts(&self) -> String {
        self.known_hosts_with("stranger_key.pub")
    }

    fn known_hosts_with(&self, public: &str) -> String {
        let key = read(&self.dir.join(public));
        let mut fields = key.split_whitespace();
        let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)
    }

    pub fn url(&self, repo: &GitRepo) -> String {
        // sshd serves the user the tests run as.
        let user = run("id -un", Command::new("id").arg("-un"));
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, repo.dir.display())
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Git's smart HTTP protocol (`git http-backend`) behind Basic authentication on a loopback
/// port, over TLS with a self-signed certificate when asked: see git-http-server.py.
pub struct GitHttpServer {
    pub port: u16,
    tls: Option<PathBuf>,
    child: std::process::Child,
}

impl GitHttpServer {
    pub async fn serve(repo: &GitRepo, username: &str, password: &str, tls: bool) -> GitHttpServer {
        let port = free_port();
        let root = repo.dir.parent().unwrap_or(&repo.dir).to_owned();
        let script = super::repo_root().join("tests/support/git-http-server.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg(port.to_string())
            .arg(&root)
            .args([username, password]);
        let tls = tls.then(|| {
            let dir = std::env::temp_dir()
                .join("weir-test-tls")
                .join(format!("{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            run(
                "openssl",
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    ])
                    .args(["-subj", "/CN=127.0.0.1"])
                    .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                    .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                    .args(["-addext", "extendedKeyUsage=serverAuth"])
                    .arg("-keyout")
                    .arg(dir.join("key.pem"))
                    .arg("-out")
                    .arg(dir.join("cert.pem")),
            );
            command.arg(dir.join("cert.pem")).arg(dir.join("key.pem"));
            dir
        });
        let child = command
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting git-http-server.py: {e}"));
        listening("the Git HTTP server", port).await;
        GitHttpServer { port, tls, child }
    }

    /// The self-signed certificate, to trust through SSL_CERT_FILE.
    pub fn certificate(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|dir| dir.join("cert.pem"))
    }

    pub fn url(&self, repo: &GitRepo) -> String {
        let name = repo
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
