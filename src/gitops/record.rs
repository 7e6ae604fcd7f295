//! The GitSync controller's one way of writing a status: a JSON patch of what changed,
//! guarded by resourceVersion, recorded again onto a fresh read after a conflict.

use kube::ResourceExt;
use kube::api::Api;

use crate::api::contract::SYNC_MANAGER;
use crate::api::gitsync::{GitSync, GitSyncStatus};
use crate::runtime::error::Controller;
use crate::runtime::leader::Term;

pub use crate::runtime::error::Error;

/// What the shared error core says of GitSyncs.
const GITSYNCS: Controller = Controller {
    kind: "GitSync",
    field_manager: SYNC_MANAGER,
    conflict: "the GitSync changed while it was synced; syncing again",
};

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
        let written =
            GITSYNCS.write_status(api, &current, current.status.is_some(), &original, &status);
        match written.await.map(drop) {
            Err(Error::Conflict(_)) => {
                current = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::api("reading", "GitSync", &name))?
                    .ok_or_else(|| GITSYNCS.conflict())?;
            }
            result => return result,
        }
    }
    Err(GITSYNCS.conflict())
}
