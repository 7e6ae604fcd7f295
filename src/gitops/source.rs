//! The Git read path, through gitoxide (`gix`): a persistent bare clone per GitSync, fetched
//! incrementally, and the files of one revision read straight from the object database (no
//! work tree). Blocking: callers run it on tokio's blocking pool.
//!
//! A fetch first lists the remote's refs; when the tracked ref has not moved, no pack is
//! negotiated or received, so an idle interval costs one round trip.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::render::{SourceFile, normalize};
use crate::api::gitsync::GitRef;

/// Where the tracked ref pointed after a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The commit SHA.
    pub revision: String,
    /// The commit's subject line.
    pub subject: String,
}

/// Why a fetch or a read failed, in words for a status condition (never a credential).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

fn fail(what: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError(format!("{what}: {error}"))
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

/// The clone's directory for one GitSync and URL: a new URL starts a new clone.
pub fn clone_dir(base: &Path, namespace: &str, name: &str, url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = fnv::FnvHasher::default();
    url.hash(&mut hasher);
    base.join(namespace)
        .join(format!("{name}-{:016x}", hasher.finish()))
}

/// Fetches `git_ref` from `url` into the bare clone at `dir` (made on first use) and
/// returns the commit it points to.
pub fn fetch(dir: &Path, url: &str, git_ref: &GitRef) -> Result<Fetched, SourceError> {
    let repo = if dir.join("HEAD").exists() {
        gix::open(dir).map_err(|e| fail("opening the local clone", e))?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the local clone", e))?;
        gix::init_bare(dir).map_err(|e| fail("creating the local clone", e))?
    };
    let (spec, tracking) = refspec(git_ref);
    let remote = repo
        .remote_at(url)
        .map_err(|e| fail("the repository URL", e))?
        .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
        .map_err(|e| fail("the ref to fetch", e))?;
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| fail("connecting to the repository", e))?;
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fail("listing the repository's refs", e))?;
    let found = prepared.ref_map().mappings.iter().any(|m| {
        m.local
            .as_ref()
            .is_some_and(|local| *local == tracking.as_str())
    });
    if !tracking.is_empty() && !found {
        return Err(SourceError(format!(
            "the repository has no {}",
            describe(git_ref)
        )));
    }
    prepared
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(|e| fail("fetching", e))?;
    let id = match &git_ref.commit {
        Some(commit) if tracking.is_empty() => gix::ObjectId::from_hex(commit.as_bytes())
            .map_err(|_| SourceError(format!("{commit:?} is not a full commit SHA")))?,
        _ => repo
            .find_reference(tracking.as_str())
            .map_err(|e| fail(&format!("reading {}", describe(git_ref)), e))?
            .peel_to_id()
            .map_err(|e| fail(&format!("reading {}", describe(git_ref)), e))?
            .detach(),
    };
    let commit = repo.find_commit(id).map_err(|_| {
        SourceError(format!(
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

fn describe(git_ref: &GitRef) -> String {
    match (&git_ref.branch, &git_ref.tag, &git_ref.commit) {
        (Some(branch), _, _) => format!("branch {branch:?}"),
        (None, Some(tag), _) => format!("tag {tag:?}"),
        (None, None, Some(commit)) => format!("commit {commit}"),
        (None, None, None) => "ref".into(),
    }
}

/// Every file under `path` at `revision`, read from the clone's object database.
pub fn files_at(dir: &Path, revision: &str, path: &str) -> Result<Vec<SourceFile>, SourceError> {
    let repo = gix::open(dir).map_err(|e| fail("opening the local clone", e))?;
    let id = gix::ObjectId::from_hex(revision.as_bytes())
        .map_err(|_| SourceError(format!("{revision:?} is not a commit SHA")))?;
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
    let mut files = Vec::new();
    for entry in recorder.records {
        let file_path = entry.filepath.to_string();
        let wanted = prefix.is_empty()
            || file_path
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        if !entry.mode.is_blob() || !wanted {
            continue;
        }
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| fail(&format!("reading {file_path}"), e))?;
        files.push(SourceFile {
            path: file_path,
            bytes: blob.data.clone(),
        });
    }
    Ok(files)
}
