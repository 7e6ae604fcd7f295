//! One revision of a GitSync's path, read from its clone and rendered into objects: what the
//! controller applies and what `kubectl weir diff` compares are made the same way.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::SyncError;
use super::kustomize;
use super::render::{self, Layout, Manifest};
use super::sops::{Identities, Redactor, Session};
use super::source;

/// A revision rendered: its commit, its objects, and the values decrypted for them, to scrub
/// from the messages of applying them.
#[derive(Debug)]
pub struct Rendered {
    pub commit: source::Commit,
    pub manifests: Vec<Manifest>,
    pub redactor: Redactor,
}

/// Why a revision could not be rendered. A render failure's message is already scrubbed of
/// what was decrypted.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The clone could not be read (the revision is not in it, or it is damaged).
    Read(String),
    /// The revision itself is bad: too large, malformed, refused. Nothing of it applies.
    Render {
        commit: source::Commit,
        message: String,
    },
}

/// How a GitSync renders: its `spec.path`, the controller's limits and kustomize.
pub struct Rendering {
    pub clone: PathBuf,
    pub path: String,
    pub limits: render::Limits,
    pub kustomize: Option<kustomize::Builder>,
    pub allow_remote: bool,
    /// The age identities of `spec.decryption`, when it is set: SOPS files are decrypted in
    /// memory before they become objects (or before kustomize reads them).
    pub identities: Option<Arc<Identities>>,
}

/// Reads `revision` of `path` from the clone and renders it, the reading, decrypting and
/// parsing off the async workers (up to `--max-revision-bytes` of YAML is CPU work every
/// reconcile shares).
pub async fn render(rendering: Rendering, revision: &str) -> Result<Rendered, Failure> {
    let Rendering {
        clone,
        path,
        limits,
        kustomize,
        allow_remote,
        identities,
    } = rendering;
    let (dir, target, wanted) = (clone, revision.to_owned(), path.clone());
    let read = tokio::task::spawn_blocking(move || {
        let commit = source::commit(&dir, &target)?;
        let files = (|| {
            let files = source::files_at(&dir, &target, &wanted, &limits)?;
            let layout = render::layout(&files, &wanted);
            match layout {
                // Bases and components may be anywhere in the repository.
                Layout::Kustomization(_) => {
                    Ok((source::files_at(&dir, &target, "", &limits)?, layout))
                }
                Layout::Manifests => Ok((files, layout)),
            }
        })();
        Ok::<_, SyncError>((commit, files))
    })
    .await;
    let (commit, files, layout) = match read {
        Ok(Ok((commit, Ok((files, layout))))) => (commit, files, layout),
        Ok(Ok((commit, Err(source::FilesError::TooLarge(message))))) => {
            return Err(Failure::Render { commit, message });
        }
        Ok(Ok((_, Err(source::FilesError::Read(error))))) | Ok(Err(error)) => {
            return Err(Failure::Read(error.to_string()));
        }
        Err(_) => return Err(Failure::Read("reading the clone was interrupted".into())),
    };
    let mut session = Session::default();
    let rendered = match layout {
        Layout::Kustomization(file) => {
            kustomize::build(
                kustomize,
                files,
                &path,
                &file,
                &limits,
                allow_remote,
                identities,
                &mut session,
            )
            .await
        }
        Layout::Manifests => {
            let mut taken = std::mem::take(&mut session);
            let done = tokio::task::spawn_blocking(move || {
                let rendered = render::render_decrypted(
                    &files,
                    &path,
                    &limits,
                    identities.as_deref(),
                    &mut taken,
                )
                .map_err(|error| error.to_string());
                (rendered, taken)
            })
            .await;
            match done {
                Ok((rendered, taken)) => {
                    session = taken;
                    rendered
                }
                Err(_) => Err("rendering the revision was interrupted".into()),
            }
        }
    };
    match rendered {
        Ok(manifests) => Ok(Rendered {
            commit,
            manifests,
            redactor: session.redactor,
        }),
        Err(message) => Err(Failure::Render { commit, message }),
    }
}
