//! The GitSync controller's one way of writing a status: a JSON patch of what changed,
//! guarded by resourceVersion, recorded again onto a fresh read after a conflict.

use kube::ResourceExt;
use kube::api::Api;

use crate::api::contract::SYNC_MANAGER;
use crate::api::gitsync::{GitSync, GitSyncStatus};
use crate::runtime::leader::Term;
use crate::status_patch::{self, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} GitSync {name}: {source}")]
    Api {
        action: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("the GitSync changed while it was synced; syncing again")]
    Conflict,
    #[error("this replica lost the leader lease; the leader carries on")]
    NotLeader,
}

/// Writes what `record` makes of the status. When the GitSync changed meanwhile (a webhook's
/// annotation, a spec edit), the attempt is recorded again onto what is there now, rather
/// than lost: the inventory of what was just applied must reach the status.
pub async fn write_recorded(
    term: &Term,
    api: &Api<GitSync>,
    mut current: GitSync,
    record: &impl Fn(&mut GitSyncStatus),
) -> Result<(), Error> {
    let name = current.name_any();
    for _ in 0..3 {
        if !term.holds() {
            return Err(Error::NotLeader);
        }
        let original = current.status.clone().unwrap_or_default();
        let mut status = original.clone();
        record(&mut status);
        match write(api, &current, &original, &status).await {
            Err(Error::Conflict) => {
                current = api
                    .get_opt(&name)
                    .await
                    .map_err(|source| Error::Api {
                        action: "reading",
                        name: name.clone(),
                        source,
                    })?
                    .ok_or(Error::Conflict)?;
            }
            result => return result,
        }
    }
    Err(Error::Conflict)
}

async fn write(
    api: &Api<GitSync>,
    current: &GitSync,
    original: &GitSyncStatus,
    status: &GitSyncStatus,
) -> Result<(), Error> {
    let has_status = current.status.is_some();
    status_patch::write(api, current, has_status, original, status, SYNC_MANAGER)
        .await
        .map(|_| ())
        .map_err(|error| match error {
            WriteError::Conflict => Error::Conflict,
            WriteError::Api(source) => Error::Api {
                action: "writing the status of",
                name: current.name_any(),
                source,
            },
        })
}
