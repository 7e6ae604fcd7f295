//! The Git read path, through gitoxide (`gix`): a persistent bare clone per GitSync, fetched
//! incrementally, and the files of one revision read straight from the object database (no
//! work tree). Blocking: callers run it on tokio's blocking pool.
//!
//! A fetch first lists the remote's refs; when the tracked ref has not moved, no pack is
//! negotiated or received, so an idle interval costs one round trip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::credentials::{self, Credentials};
use super::error::SyncError;
use super::render::{SourceFile, inside, normalize};
use crate::api::gitsync::GitRef;

/// The default of `--max-fetch-bytes`: far above what a repository of manifests sends (a
/// first clone of years of history is a few MiB), far below the chart's clone volume.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 512 * 1024 * 1024;

/// What stops a fetch that takes too long or receives too much.
#[derive(Debug)]
pub struct FetchLimits {
    /// Set from outside to stop a fetch between steps; also set by the fetch itself when
    /// the pack passes `max_fetch_bytes`.
    pub interrupt: Arc<AtomicBool>,
    /// How long a git daemon may stay silent before a read or write fails.
    pub socket_timeout: std::time::Duration,
    /// The most bytes of pack one fetch may receive (`--max-fetch-bytes`).
    pub max_fetch_bytes: u64,
}

impl FetchLimits {
    pub fn new(socket_timeout: std::time::Duration, max_fetch_bytes: u64) -> FetchLimits {
        FetchLimits {
            interrupt: Arc::new(AtomicBool::new(false)),
            socket_timeout,
            max_fetch_bytes,
        }
    }
}

/// gix's progress, used as a meter: counts the pack bytes a fetch reads (gix reports them
/// on the child progress `ReadPackBytes` as they arrive) and interrupts the fetch once they
/// pass the limit. gix checks the interrupt before every read of the pack, and removes the
/// partly written pack itself, so the clone keeps only what it had.
#[derive(Clone)]
struct PackBudget {
    /// Whether this progress is the one pack bytes are counted on.
    counts: bool,
    received: Arc<AtomicU64>,
    limit: u64,
    exceeded: Arc<AtomicBool>,
    interrupt: Arc<AtomicBool>,
}

impl PackBudget {
    fn new(limit: u64, interrupt: Arc<AtomicBool>) -> PackBudget {
        PackBudget {
            counts: false,
            received: Arc::default(),
            limit,
            exceeded: Arc::default(),
            interrupt,
        }
    }

    fn child(&self, id: gix::progress::Id) -> PackBudget {
        let pack_bytes: gix::progress::Id =
            gix::odb::pack::bundle::write::ProgressId::ReadPackBytes.into();
        PackBudget {
            counts: id == pack_bytes,
            ..self.clone()
        }
    }

    fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

impl gix::progress::Count for PackBudget {
    fn set(&self, _step: gix::progress::Step) {}

    fn step(&self) -> gix::progress::Step {
        0
    }

    fn inc_by(&self, step: gix::progress::Step) {
        if !self.counts {
            return;
        }
        let total = self.received.fetch_add(step as u64, Ordering::Relaxed) + step as u64;
        if total > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
            self.interrupt.store(true, Ordering::Relaxed);
        }
    }

    fn counter(&self) -> gix::progress::StepShared {
        Arc::default()
    }
}

impl gix::progress::Progress for PackBudget {
    fn init(&mut self, _max: Option<gix::progress::Step>, _unit: Option<gix::progress::Unit>) {}

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> gix::progress::Id {
        gix::progress::UNKNOWN
    }

    fn message(&self, _level: gix::progress::MessageLevel, _message: String) {}
}

impl gix::progress::NestedProgress for PackBudget {
    type SubProgress = PackBudget;

    fn add_child(&mut self, _name: impl Into<String>) -> PackBudget {
        self.child(gix::progress::UNKNOWN)
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: gix::progress::Id) -> PackBudget {
        self.child(id)
    }
}

/// `url` without any user name or password in it, to name the repository in a message.
pub fn without_credentials(url: &str) -> String {
    match gix::url::parse(gix::bstr::BStr::new(url.trim())) {
        Ok(mut parsed) => {
            parsed.set_user(None);
            parsed.set_password(None);
            parsed.to_bstring().to_string()
        }
        Err(_) => "spec.url".to_owned(),
    }
}

/// Why a revision's files were not read.
#[derive(Debug)]
pub enum FilesError {
    /// The clone could not be read.
    Read(SyncError),
    /// A file, or all of them, over a limit: the revision can never be applied as it is.
    TooLarge(String),
}

impl From<SyncError> for FilesError {
    fn from(error: SyncError) -> Self {
        FilesError::Read(error)
    }
}

/// Where the tracked ref pointed after a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The commit SHA.
    pub revision: String,
    /// The commit's subject line.
    pub subject: String,
}

/// `what` failed, with every cause gix gives (the top error alone is often only
/// "Transport handshake failed"); transient, as a network's or a disk's failure may be.
pub fn fail(what: &str, error: impl std::error::Error) -> SyncError {
    let mut message = format!("{what}: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    SyncError::transient(message)
}

/// The refspec that fetches what `git_ref` names into a local tracking ref, and that ref.
fn refspec(git_ref: &GitRef) -> (String, String) {
    match (&git_ref.branch, &git_ref.tag) {
        (Some(branch), _) => (
            format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
            format!("refs/remotes/origin/{branch}"),
        ),
        (None, Some(tag)) => (
            format!("+refs/tags/{tag}:refs/tags/{tag}"),
            format!("refs/tags/{tag}"),
        ),
        // A commit: fetch every branch, then look the commit up among what arrived.
        (None, None) => (
            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
            String::new(),
        ),
    }
}

/// The clone's directory for one GitSync (by UID) and URL: a new URL starts a new clone, and
/// no two GitSyncs share one.
pub fn clone_dir(base: &Path, uid: &str, url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = fnv::FnvHasher::default();
    url.hash(&mut hasher);
    // A UID is the API server's (a UUID); anything else is kept out of the path.
    let uid: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    base.join(format!("{uid}-{:016x}", hasher.finish()))
}

/// The clones under the cache directory (`entries`: its directory names) that no GitSync
/// will read again: those of GitSyncs `gone` (seen by this controller, deleted since), and
/// those of `live` GitSyncs (UID, URL) at a URL they no longer follow. Only UIDs this
/// controller knows are judged: controllers of other namespaces may share the directory.
pub fn stale_clones(entries: &[String], live: &[(String, String)], gone: &[String]) -> Vec<String> {
    let name = |uid: &str, url: &str| {
        clone_dir(Path::new(""), uid, url)
            .to_string_lossy()
            .into_owned()
    };
    let of = |entry: &str, uid: &str| {
        let uid = name(uid, "");
        // `{uid}-{16 hex digits}`: the UID's part of a name is everything but the hash.
        let prefix = uid.len().saturating_sub(16);
        entry.len() == uid.len() && entry.as_bytes()[..prefix] == uid.as_bytes()[..prefix]
    };
    entries
        .iter()
        .filter(|entry| {
            gone.iter().any(|uid| of(entry, uid))
                || live
                    .iter()
                    .any(|(uid, url)| of(entry, uid) && **entry != name(uid, url))
        })
        .cloned()
        .collect()
}

/// Fetches `git_ref` from `url` into the bare clone at `dir` (made on first use) and
/// returns the commit it points to, within `limits`.
pub fn fetch(
    dir: &Path,
    url: &str,
    git_ref: &GitRef,
    credentials: &Credentials,
    limits: &FetchLimits,
) -> Result<Fetched, SyncError> {
    let mut repo = if dir.join("HEAD").exists() {
        remove_stale_locks(dir);
        gix::open(dir).map_err(|e| fail("opening the local clone", e))?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the local clone", e))?;
        gix::init_bare(dir).map_err(|e| fail("creating the local clone", e))?
    };
    match credentials {
        Credentials::Ssh {
            identity,
            known_hosts,
        } => {
            // Kept until the fetch ends; the key files go with it.
            let ssh = use_ssh(&mut repo, identity, known_hosts)?;
            fetch_into(&repo, url, git_ref, credentials, limits).map_err(|error| {
                let said = std::fs::read_to_string(ssh.path().join(SSH_STDERR)).unwrap_or_default();
                match ssh_diagnosis(&said) {
                    // A key or host key the server refuses waits for a new Secret.
                    Some(reason) if ssh_refused(&reason) => {
                        SyncError::invalid(format!("{error} (ssh: {reason})"))
                    }
                    Some(reason) => error.map(|message| format!("{message} (ssh: {reason})")),
                    None => error,
                }
            })
        }
        _ if credentials::required(url) => Err(SyncError::invalid(
            "ssh:// needs spec.secretRef naming a Secret with identity and known_hosts: weir never accepts a host key it was not given",
        )),
        _ => fetch_into(&repo, url, git_ref, credentials, limits),
    }
}

/// Removes the `*.lock` files a process killed mid-fetch leaves in the clone (refs, packed
/// refs, config), which would fail every later fetch. Only one fetch per clone runs at a
/// time (the caller's InFlight), so any lock present before a fetch starts is stale.
fn remove_stale_locks(dir: &Path) {
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && (folder != dir || path.file_name().is_some_and(|n| n == "refs")) {
                pending.push(path);
            } else if !is_dir && path.extension().is_some_and(|e| e == "lock") {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Where ssh's own words go, beside the key files.
pub const SSH_STDERR: &str = "stderr";

/// Whether ssh's reason is a refusal of the Secret's key or host keys, not an outage.
pub fn ssh_refused(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    reason.contains("permission denied") || reason.contains("host key verification failed")
}

/// The line of ssh's output that says why it failed: OpenSSH ends with it ("Host key
/// verification failed.", "Permission denied (publickey).", "connect to host ...").
pub fn ssh_diagnosis(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with('@'))
        .map(|line| line.trim_start_matches("ssh: ").to_owned())
}

fn fetch_into(
    repo: &gix::Repository,
    url: &str,
    git_ref: &GitRef,
    credentials: &Credentials,
    limits: &FetchLimits,
) -> Result<Fetched, SyncError> {
    let basic = match credentials {
        Credentials::Basic { username, password } => Some(gix::sec::identity::Account {
            username: username.clone(),
            password: password.clone(),
            oauth_refresh_token: None,
        }),
        _ => None,
    };
    let (spec, tracking) = refspec(git_ref);
    let remote = repo
        .remote_at(url)
        .map_err(|e| fail("the repository URL", e).into_invalid())?
        .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
        .map_err(|e| fail("the ref to fetch", e).into_invalid())?;
    // Only the Secret's credentials: never a credential helper or a password prompt of the
    // machine weir runs on; and only to spec.url's own host, however the server redirects.
    let configured = url.to_owned();
    let credentials = move |action| match action {
        gix::credentials::helper::Action::Get(context) => {
            let asked = context
                .url
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_default();
            if !credentials::same_origin(&configured, &asked) {
                return Ok(None);
            }
            Ok(basic
                .clone()
                .map(|identity| gix::credentials::protocol::Outcome {
                    identity,
                    next: context.into(),
                }))
        }
        _ => Ok(None),
    };
    if url.starts_with("git://") {
        let transport = git_daemon(url, limits.socket_timeout)?;
        let connection = remote
            .to_connection_with_transport(transport)
            .with_credentials(credentials);
        return receive(repo, connection, git_ref, &tracking, url, limits);
    }
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| fail("connecting to the repository", e))?
        .with_credentials(credentials);
    receive(repo, connection, git_ref, &tracking, url, limits)
}

/// A git daemon's socket never times out a read on its own, so a server that accepts and
/// goes silent would hold the fetch's thread for good: weir opens the connection itself,
/// with read and write timeouts.
fn git_daemon(
    url: &str,
    timeout: std::time::Duration,
) -> Result<
    gix::protocol::transport::client::git::blocking_io::Connection<TcpStream, TcpStream>,
    SyncError,
> {
    use std::net::ToSocketAddrs;
    let parsed = gix::url::parse(gix::bstr::BStr::new(url))
        .map_err(|e| fail("the repository URL", e).into_invalid())?;
    let host = parsed
        .host()
        .ok_or_else(|| SyncError::invalid(format!("{url} names no host")))?
        .to_owned();
    let port = parsed.port;
    let address = (host.as_str(), port.unwrap_or(9418))
        .to_socket_addrs()
        .map_err(|e| fail("resolving the git server", e))?
        .next()
        .ok_or_else(|| SyncError::transient(format!("{host} has no address")))?;
    let stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| fail("connecting to the repository", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail("connecting to the repository", e))?;
    let write = stream
        .try_clone()
        .map_err(|e| fail("connecting to the repository", e))?;
    Ok(
        gix::protocol::transport::client::git::blocking_io::Connection::new(
            stream,
            write,
            gix::protocol::transport::Protocol::V2,
            parsed.path.clone(),
            Some((host, port)),
            gix::protocol::transport::client::git::ConnectMode::Daemon,
            false,
        ),
    )
}

fn receive<T>(
    repo: &gix::Repository,
    connection: gix::remote::Connection<'_, '_, '_, T>,
    git_ref: &GitRef,
    tracking: &str,
    url: &str,
    limits: &FetchLimits,
) -> Result<Fetched, SyncError>
where
    T: gix::protocol::transport::client::blocking_io::Transport,
{
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fail("listing the repository's refs", e))?;
    let found = prepared
        .ref_map()
        .mappings
        .iter()
        .any(|m| m.local.as_ref().is_some_and(|local| *local == tracking));
    if !tracking.is_empty() && !found {
        return Err(SyncError::invalid(format!(
            "the repository has no {}",
            describe(git_ref)
        )));
    }
    let budget = PackBudget::new(limits.max_fetch_bytes, limits.interrupt.clone());
    let received = prepared.receive(budget.clone(), &limits.interrupt);
    if budget.exceeded() {
        // Nothing of the pack is kept (gix removes it) and no ref moved: nothing to apply.
        return Err(SyncError::invalid(format!(
            "fetching {}: the pack passed {} bytes, the limit of --max-fetch-bytes; nothing was fetched or applied (make the repository smaller, or raise the limit)",
            without_credentials(url),
            limits.max_fetch_bytes
        )));
    }
    received.map_err(|e| fail("fetching", e))?;
    let id = match &git_ref.commit {
        Some(commit) if tracking.is_empty() => gix::ObjectId::from_hex(commit.as_bytes())
            .map_err(|_| SyncError::invalid(format!("{commit:?} is not a full commit SHA")))?,
        _ => repo
            .find_reference(tracking)
            .map_err(|e| fail(&format!("reading {}", describe(git_ref)), e))?
            .peel_to_id()
            .map_err(|e| fail(&format!("reading {}", describe(git_ref)), e))?
            .detach(),
    };
    let commit = repo.find_commit(id).map_err(|_| {
        SyncError::invalid(format!(
            "the repository has no {} on any branch",
            describe(git_ref)
        ))
    })?;
    let subject = commit
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    Ok(Fetched {
        revision: id.to_string(),
        subject,
    })
}

/// Points the clone's SSH at the Secret's key and host keys, and at nothing else (see
/// `ssh_command`). Returns the directory holding the key files.
fn use_ssh(
    repo: &mut gix::Repository,
    identity: &[u8],
    known_hosts: &[u8],
) -> Result<tempfile::TempDir, SyncError> {
    let (keys, command) = ssh_command(identity, known_hosts)?;
    let mut config = repo.config_snapshot_mut();
    config
        .set_value(&gix::config::tree::Core::SSH_COMMAND, command.as_str())
        .and_then(|_| config.set_value(&gix::config::tree::Ssh::VARIANT, "ssh"))
        .map_err(|e| fail("configuring SSH", e))?;
    config.commit().map_err(|e| fail("configuring SSH", e))?;
    Ok(keys)
}

/// An ssh command line that uses the Secret's key and host keys and nothing else: no
/// agent, no user or system configuration, no prompt, and host keys checked strictly. Its
/// stderr goes to a file beside the keys, for the error message. The key files live in
/// the returned directory (private to this process's user) until it is dropped.
pub fn ssh_command(
    identity: &[u8],
    known_hosts: &[u8],
) -> Result<(tempfile::TempDir, String), SyncError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let keys = tempfile::Builder::new()
        .prefix("weir-ssh-")
        .tempdir()
        .map_err(|e| fail("preparing the SSH key", e))?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, SyncError> {
        let path = keys.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail("preparing the SSH key", e))?;
        file.write_all(bytes)
            .and_then(|()| {
                // OpenSSH refuses a private key without its final newline.
                if bytes.ends_with(b"\n") {
                    Ok(())
                } else {
                    file.write_all(b"\n")
                }
            })
            .map_err(|e| fail("preparing the SSH key", e))?;
        Ok(path)
    };
    let identity = write("identity", identity)?;
    let known_hosts = write("known_hosts", known_hosts)?;
    let quote = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', r"'\''"));
    // Run through `sh -c` with arguments added after it; the redirection keeps ssh's
    // reasons for the error message instead of the controller's log.
    let command = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o PasswordAuthentication=no -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=3 2>>{}",
        quote(&identity),
        quote(&known_hosts),
        quote(&keys.path().join(SSH_STDERR))
    );
    Ok((keys, command))
}

pub fn describe(git_ref: &GitRef) -> String {
    match (&git_ref.branch, &git_ref.tag, &git_ref.commit) {
        (Some(branch), _, _) => format!("branch {branch:?}"),
        (None, Some(tag), _) => format!("tag {tag:?}"),
        (None, None, Some(commit)) => format!("commit {commit}"),
        (None, None, None) => "ref".into(),
    }
}

/// A commit the clone has: its subject line and when it was committed.
pub fn commit(dir: &Path, revision: &str) -> Result<Commit, SyncError> {
    let repo = gix::open(dir).map_err(|e| fail("opening the local clone", e))?;
    let id = gix::ObjectId::from_hex(revision.as_bytes())
        .map_err(|_| SyncError::invalid(format!("{revision:?} is not a commit SHA")))?;
    let commit = repo
        .find_commit(id)
        .map_err(|e| fail(&format!("reading commit {revision}"), e))?;
    let subject = commit
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    // The committer's clock, as Git records it: only a label for lead times, so a time that
    // cannot be read (or is out of range) is left out rather than failing the revision.
    let committed = commit
        .time()
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(crate::time::to_k8s);
    Ok(Commit { subject, committed })
}

/// A commit as a GitSync's history tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    /// Its subject line.
    pub subject: String,
    /// When it was committed, for lead times.
    pub committed: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The value of a commit message's trailer (`Key: value` in its last paragraph).
pub fn trailer(dir: &Path, revision: &str, key: &str) -> Option<String> {
    let repo = gix::open(dir).ok()?;
    let id = gix::ObjectId::from_hex(revision.as_bytes()).ok()?;
    let commit = repo.find_commit(id).ok()?;
    let message = commit.message_raw_sloppy().to_string();
    let last = message.trim_end().rsplit("\n\n").next()?;
    last.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(key)
            .then(|| value.trim().to_owned())
    })
}

/// Every file under `path` at `revision`, read from the clone's object database.
///
/// Every file's size is looked up before anything is read: a file over `limits.file_bytes`,
/// or files over `limits.revision_bytes` together, are `FilesError::TooLarge`, naming the file
/// and the limit, with nothing read.
pub fn files_at(
    dir: &Path,
    revision: &str,
    path: &str,
    limits: &super::render::Limits,
) -> Result<Vec<SourceFile>, FilesError> {
    let repo = gix::open(dir).map_err(|e| fail("opening the local clone", e))?;
    let id = gix::ObjectId::from_hex(revision.as_bytes())
        .map_err(|_| SyncError::invalid(format!("{revision:?} is not a commit SHA")))?;
    let tree = repo
        .find_commit(id)
        .map_err(|e| fail(&format!("reading commit {revision}"), e))?
        .tree()
        .map_err(|e| fail(&format!("reading the tree of {revision}"), e))?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| fail(&format!("listing the files of {revision}"), e))?;
    let prefix = normalize(path);
    let mut wanted = Vec::new();
    let mut total = 0u64;
    for entry in recorder.records {
        let file_path = entry.filepath.to_string();
        if !entry.mode.is_blob() || !inside(&prefix, &file_path) {
            continue;
        }
        let size = repo
            .find_header(entry.oid)
            .map_err(|e| fail(&format!("reading {file_path}"), e))?
            .size();
        if size > limits.file_bytes {
            return Err(FilesError::TooLarge(format!(
                "{file_path}: is {size} bytes, over the limit of {} (--max-file-bytes); nothing was applied",
                limits.file_bytes
            )));
        }
        total += size;
        if total > limits.revision_bytes {
            return Err(FilesError::TooLarge(format!(
                "{file_path}: the files read for this revision pass {} bytes (--max-revision-bytes); nothing was applied",
                limits.revision_bytes
            )));
        }
        wanted.push((file_path, entry.oid));
    }
    let mut files = Vec::new();
    for (file_path, oid) in wanted {
        let blob = repo
            .find_object(oid)
            .map_err(|e| fail(&format!("reading {file_path}"), e))?;
        files.push(SourceFile {
            path: file_path,
            bytes: blob.data.clone(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {

    #[test]
    fn stale_clones_are_those_of_gone_gitsyncs_and_of_urls_left_behind() {
        let uid = |n: u8| format!("0000000{n}-aaaa-bbbb-cccc-dddddddddddd");
        let name = |uid: &str, url: &str| {
            super::clone_dir(std::path::Path::new(""), uid, url)
                .to_string_lossy()
                .into_owned()
        };
        let entries = vec![
            name(&uid(1), "https://a.example/one.git"),
            name(&uid(1), "https://a.example/old.git"),
            name(&uid(2), "https://a.example/two.git"),
            name(&uid(3), "https://a.example/three.git"),
            "another-controllers-dir".to_owned(),
            "ünïcode".to_owned(),
        ];
        let live = vec![
            (uid(1), "https://a.example/one.git".to_owned()),
            (uid(3), "https://a.example/three.git".to_owned()),
        ];
        let mut stale = super::stale_clones(&entries, &live, &[uid(2)]);
        stale.sort();
        let mut wanted = vec![
            name(&uid(1), "https://a.example/old.git"),
            name(&uid(2), "https://a.example/two.git"),
        ];
        wanted.sort();
        assert_eq!(stale, wanted);
        // A UID this controller never saw: not its to judge.
        assert!(super::stale_clones(&entries, &[], &[]).is_empty());
    }
    use super::*;

    #[test]
    fn locks_left_by_a_killed_fetch_are_removed_and_nothing_else() {
        let clone = tempfile::tempdir().expect("temp dir");
        let root = clone.path();
        for (path, content) in [
            ("HEAD", "ref: refs/heads/main"),
            ("packed-refs.lock", ""),
            ("config.lock", ""),
            ("refs/remotes/origin/main.lock", ""),
            ("refs/remotes/origin/main", "abc"),
            ("objects/pack/keep.lock", ""),
        ] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, content).expect("write");
        }
        remove_stale_locks(root);
        for gone in [
            "packed-refs.lock",
            "config.lock",
            "refs/remotes/origin/main.lock",
        ] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        for kept in ["HEAD", "refs/remotes/origin/main", "objects/pack/keep.lock"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn ssh_says_why_in_its_last_line() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
            Host key verification failed.\n";
        assert_eq!(
            ssh_diagnosis(changed).as_deref(),
            Some("Host key verification failed.")
        );
        assert_eq!(
            ssh_diagnosis("ssh: connect to host 127.0.0.1 port 9: Connection refused\r\n")
                .as_deref(),
            Some("connect to host 127.0.0.1 port 9: Connection refused")
        );
        assert_eq!(ssh_diagnosis("\n  \n"), None);
    }

    #[test]
    fn a_refused_key_or_host_key_waits_for_a_new_secret_and_a_dead_host_does_not() {
        assert!(ssh_refused("Host key verification failed."));
        assert!(ssh_refused("git@example: Permission denied (publickey)."));
        assert!(!ssh_refused(
            "connect to host 127.0.0.1 port 9: Connection refused"
        ));
        assert!(!ssh_refused("Connection timed out during banner exchange"));
    }
}
