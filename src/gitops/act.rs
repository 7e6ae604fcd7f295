//! Carries out the GitSync plan's actions, each returning its outcome for the next plan:
//! fetch (bounded, off the async workers, given up when a managed Rollout aborts), check a
//! pin against the clone, record a rejection, render and apply a revision as the GitSync's
//! identity, read what was applied, write a revert back to Git.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::apply;
use super::context::{
    Context, InFlight, acting_in_target, clone_dir, neighbours, read_secret, timed_out,
};
use super::credentials::{self, Credentials};
use super::dependencies;
use super::error::SyncError;
use super::fetch_rate;
use super::health::Workload;
use super::observe;
use super::plan::{self, Action, Done, FetchOutcome, Settings};
use super::record::{Error, write_recorded};
use super::render::{self, Layout};
use super::revision;
use super::rollback::{Basis, ManagedRollout};
use super::sops::Identities;
use super::source;
use super::status::{self, Attempt};
use super::tenancy;
use super::writeback::{self, PushError};
use crate::api::contract::ROLLBACK_TO_ANNOTATION;
use crate::api::gitsync::{GitSync, GitSyncStatus, PinnedRevision, RejectedRevision};
use crate::runtime::leader::Term;
use crate::validate;

/// What one action needs of the reconcile it belongs to.
pub(super) struct Reconcile<'a> {
    pub ctx: &'a Context,
    pub term: &'a Term,
    pub api: &'a Api<GitSync>,
    pub current: &'a GitSync,
    /// `namespace/name`.
    pub key: &'a str,
    pub settings: &'a Settings,
    /// A fraction in [0, 1) for this GitSync and attempt: where it waits among others.
    pub spread: f64,
}

/// Carries out `action` and notes its outcome in `done`. The Rollouts are read again when
/// one aborts during a fetch.
pub(super) async fn act(
    at: &Reconcile<'_>,
    action: Action,
    rollouts: &mut Vec<ManagedRollout>,
    workloads: &[Workload],
    done: &mut Done,
) -> Result<(), Error> {
    let (ctx, sync) = (at.ctx, at.current);
    match action {
        Action::Fetch => done.fetch = Some(fetch_unless_aborted(at, rollouts, workloads).await),
        Action::VerifyPin(pinned) => done.pin = Some(verify_pin(ctx, sync, pinned).await),
        Action::RecordRejection {
            rejected,
            last_good,
        } => {
            record_rejection(at, &rejected, last_good).await?;
            done.rejection_recorded = true;
        }
        Action::Apply { revision, basis } => {
            done.applied = Some(apply_revision(ctx, at.term, sync, at.key, &revision, basis).await)
        }
        Action::ReadWorkloads { inventory } => {
            done.applied_workloads =
                Some(observe::applied_workloads(ctx, sync, at.key, &inventory).await)
        }
        Action::WriteBack {
            head,
            good,
            rejected,
        } => {
            done.written = Some(Some(
                write_back(ctx, at.term, sync, at.key, &head, &good, &rejected).await,
            ))
        }
        Action::RecognizeRevert { head, pending } => {
            done.written = Some(recognize_revert(ctx, sync, &head, &pending).await)
        }
    }
    Ok(())
}

/// Fetches when the host's rate allows; an abort of a managed Rollout that rejects the
/// applied revision gives the fetch up, so the rollback goes first.
async fn fetch_unless_aborted(
    at: &Reconcile<'_>,
    rollouts: &mut Vec<ManagedRollout>,
    workloads: &[Workload],
) -> FetchOutcome {
    let (ctx, sync, key) = (at.ctx, at.current, at.key);
    // Over its host's rate the fetch waits: requeued for its turn, nothing recorded (the
    // status says what the last fetch found, not that this one waits).
    if let Some(origin) = fetch_rate::origin(&sync.spec.url)
        && let Err(wait) = ctx.fetch_rate.take(&origin, key, at.spread)
    {
        info!(%origin, wait = ?wait, "fetch waits for its host's rate (--git-fetches-per-host-per-minute)");
        return FetchOutcome::RateLimited(wait);
    }
    let status = sync.status.clone().unwrap_or_default();
    let fetch = fetch(ctx, sync, key);
    tokio::pin!(fetch);
    loop {
        let news = ctx.aborts.notified();
        tokio::select! {
            result = &mut fetch => return match result {
                Ok(head) => FetchOutcome::Head(head),
                Err(failure) => FetchOutcome::Failed(Box::new(failure)),
            },
            () = news => {
                *rollouts = observe::rollouts_of(ctx, sync).await;
                if plan::must_roll_back(&status, rollouts, workloads, &at.settings.judging, Utc::now()) {
                    info!("a managed Rollout aborted during the fetch: rolling back first");
                    return FetchOutcome::Deferred;
                }
            }
        }
    }
}

/// Records a rejection before anything is rolled back (after a restart in between, the
/// revision is still known to be out), then tells.
async fn record_rejection(
    at: &Reconcile<'_>,
    rejected: &RejectedRevision,
    last_good: Option<String>,
) -> Result<(), Error> {
    let subject = commit(at.ctx, at.current, &rejected.revision).await.subject;
    write_recorded(
        at.term,
        at.api,
        at.current.clone(),
        &|status: &mut GitSyncStatus| {
            status::reject(status, rejected, &subject);
            status.last_good_revision.clone_from(&last_good);
        },
    )
    .await?;
    crate::runtime::publish(
        &at.ctx.events,
        &at.current.object_ref(&()),
        true,
        "Rejected".into(),
        Some(&format!(
            "revision {} rejected: {}",
            status::short(&rejected.revision),
            super::rollback::cause(rejected)
        )),
        "Rollback",
    )
    .await;
    Ok(())
}

/// Fetches the tracked ref (bounded, off the async workers) and returns the commit it points
/// to; a failure comes back as the attempt to record. Never a credential in what it says.
async fn fetch(ctx: &Context, sync: &GitSync, key: &str) -> Result<String, Attempt> {
    if let Some(first) = validate::git_sync(&sync.spec).first() {
        return Err(Attempt::InvalidSpec(format!("InvalidSpec: {first}")));
    }
    if let Some(refusal) = refuse_spec(ctx, sync) {
        return Err(Attempt::InvalidSpec(format!("InvalidSpec: {refusal}")));
    }
    let dir = clone_dir(ctx, sync);
    let (url, git_ref) = (sync.spec.url.clone(), sync.spec.git_ref.clone());
    let credentials = read_credentials(ctx, sync)
        .await
        .map_err(Attempt::FetchFailed)?;
    let Ok(_permit) = ctx.fetches.acquire().await else {
        return Err(Attempt::FetchFailed(SyncError::transient(
            "the controller is shutting down",
        )));
    };
    // One fetch per GitSync at a time: a fetch abandoned at the timeout may still be stuck
    // in a read, and a second one must not share its clone.
    // kube-runtime never reconciles one object twice at once, so a claim is only refused
    // while a fetch abandoned at the timeout is still stuck.
    let Some(in_flight) = InFlight::claim(&ctx.in_flight, key) else {
        return Err(Attempt::FetchFailed(SyncError::transient(format!(
            "{}, and that fetch has not ended yet",
            timed_out(ctx.fetch_timeout)
        ))));
    };
    let limits = Arc::new(source::FetchLimits::new(
        ctx.fetch_timeout,
        ctx.max_fetch_bytes,
    ));
    let limited = limits.clone();
    // A fetch given up on (an abort came first) stops at gix's next check.
    let _interrupt_if_dropped = InterruptOnDrop(limits.clone());
    let read = tokio::task::spawn_blocking(move || {
        let _in_flight = in_flight;
        source::fetch(&dir, &url, &git_ref, &credentials, &limited)
    });
    match tokio::time::timeout(ctx.fetch_timeout, read).await {
        Ok(Ok(Ok(fetched))) => Ok(fetched.revision),
        Ok(Ok(Err(error))) => Err(Attempt::FetchFailed(error)),
        Ok(Err(_)) => Err(Attempt::FetchFailed(SyncError::transient(
            "the fetch was interrupted",
        ))),
        Err(_) => {
            // gix checks this between steps; a git daemon's socket times out on its own,
            // and ssh's keepalives end a dead connection. Until the thread ends, InFlight
            // keeps it the only fetch of this GitSync.
            limits.interrupt.store(true, Ordering::Relaxed);
            Err(Attempt::FetchFailed(SyncError::transient(timed_out(
                ctx.fetch_timeout,
            ))))
        }
    }
}

/// Interrupts a fetch whose caller stopped waiting for it; after the fetch ended it changes
/// nothing.
struct InterruptOnDrop(Arc<source::FetchLimits>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt.store(true, Ordering::Relaxed);
    }
}

/// What the controller's tenancy flags refuse in a spec that validation accepts: a
/// `file://` URL, a write-back branch weir does not own; and a dependency in another
/// namespace or on a cycle.
fn refuse_spec(ctx: &Context, sync: &GitSync) -> Option<String> {
    if let Some(refusal) = tenancy::refuse_url(&ctx.policy, &sync.spec.url) {
        return Some(refusal);
    }
    let namespace = sync.namespace().unwrap_or_default();
    if let Some(refusal) = dependencies::refuse_other_namespaces(&sync.spec, &namespace) {
        return Some(refusal);
    }
    if !sync.spec.depends_on.is_empty() {
        let all = neighbours(ctx, sync);
        // This GitSync as it is now, whatever the cache holds of it.
        let nodes: Vec<dependencies::Node> = all
            .iter()
            .filter(|s| s.metadata.name != sync.metadata.name)
            .map(|s| dependencies::Node::of(s))
            .chain([dependencies::Node::of(sync)])
            .collect();
        if let Some(cycle) = dependencies::cycle(&sync.name_any(), &nodes) {
            return Some(format!(
                "spec.dependsOn: {cycle} is a cycle, so none of them could ever apply; remove one of these dependencies"
            ));
        }
    }
    let write_back = &sync.spec.rollback.write_back;
    let branch = write_back
        .branch
        .as_deref()
        .filter(|_| write_back.enabled)?;
    // Only GitSyncs of the same repository: a branch of that name elsewhere is another
    // repository's, and one tenant's GitSync must not be able to stop another's.
    let all = ctx.gitsyncs.state();
    let tracked = all
        .iter()
        .filter(|s| s.spec.url.trim() == sync.spec.url.trim())
        .map(|s| s.spec.git_ref.branch.as_deref())
        .chain([sync.spec.git_ref.branch.as_deref()])
        .flatten();
    tenancy::refuse_write_back_branch(&ctx.policy, branch, tracked)
}

/// A revision's subject line and commit time, from the clone; empty when they cannot be
/// read (they only label history entries).
async fn commit(ctx: &Context, sync: &GitSync, revision: &str) -> source::Commit {
    let (dir, revision) = (clone_dir(ctx, sync), revision.to_owned());
    tokio::task::spawn_blocking(move || source::commit(&dir, &revision))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Renders one revision from the clone and applies it; the revision was fetched before (the
/// head now, a good or pinned one earlier), so rolling back needs no remote.
async fn apply_revision(
    ctx: &Context,
    term: &Term,
    sync: &GitSync,
    key: &str,
    revision: &str,
    basis: Basis,
) -> Attempt {
    let namespace = sync.namespace().unwrap_or_default();
    let old = sync
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    // Read at every render, so a rotated key is used at once; a Secret that cannot be read
    // is retried with backoff (it may come), with nothing applied.
    let identities = match read_decryption(ctx, sync).await {
        Ok(identities) => identities,
        Err(error) => {
            let commit = commit(ctx, sync, revision).await;
            return Attempt::ApplyFailed {
                revision: revision.to_owned(),
                subject: commit.subject,
                committed: commit.committed,
                inventory: old,
                error: error.map(|message| format!("{message}; nothing was applied")),
            };
        }
    };
    let rendering = revision::Rendering {
        clone: clone_dir(ctx, sync),
        path: sync.spec.path.clone(),
        limits: ctx.limits,
        kustomize: ctx.kustomize.clone(),
        allow_remote: sync.spec.kustomize.allow_remote,
        identities,
    };
    let rendered = revision::render(rendering, revision).await;
    let revision = revision.to_owned();
    let (commit, manifests, redactor) = match rendered {
        Ok(rendered) => (rendered.commit, rendered.manifests, rendered.redactor),
        Err(revision::Failure::Read(message)) => {
            return Attempt::FetchFailed(SyncError::transient(message));
        }
        Err(revision::Failure::Render { commit, message }) => {
            return Attempt::RenderFailed {
                revision,
                subject: commit.subject,
                committed: commit.committed,
                message,
            };
        }
    };
    let objects = manifests.len();
    let (identity, client, reader) = match acting_in_target(ctx, sync).await {
        Ok(acting) => acting,
        Err(error) => {
            return Attempt::ApplyFailed {
                revision,
                subject: commit.subject,
                committed: commit.committed,
                inventory: old,
                error,
            };
        }
    };
    let target = apply::Applier {
        client: &client,
        identity: &identity,
        reader: &reader,
        policy: &ctx.policy,
        term,
        scope: ctx.scope.as_deref(),
        owner: key,
        namespace: &namespace,
        revision: &revision,
        prune: sync.spec.prune,
    };
    let outcome = apply::sync(&target, manifests, &old).await;
    ctx.metrics
        .observe_gitsync_objects(outcome.applied, outcome.unchanged, outcome.pruned);
    match outcome.failure {
        // The API server's words may quote a decrypted value (a pattern, an enum, a
        // webhook): scrubbed before the message is stored, announced or logged.
        Some(error) => Attempt::ApplyFailed {
            revision,
            subject: commit.subject,
            committed: commit.committed,
            inventory: outcome.inventory,
            error: error.map(|message| redactor.scrub(&message)),
        },
        None => Attempt::Applied {
            revision,
            subject: commit.subject,
            committed: commit.committed,
            inventory: outcome.inventory,
            objects,
            changed: outcome.applied,
            basis,
        },
    }
}

/// Checks that the clone holds a pinned commit (`weir.dev/rollback-to`; the plan checked it
/// against what the GitSync knows).
async fn verify_pin(
    ctx: &Context,
    sync: &GitSync,
    pinned: PinnedRevision,
) -> Result<PinnedRevision, String> {
    let (dir, revision) = (clone_dir(ctx, sync), pinned.revision.clone());
    let known = tokio::task::spawn_blocking(move || source::commit(&dir, &revision))
        .await
        .map_err(|_| "reading the clone was interrupted".to_owned())?;
    match known {
        Ok(_) => Ok(pinned),
        Err(_) => Err(format!(
            "{ROLLBACK_TO_ANNOTATION}: revision {} is not in the repository's history as fetched",
            pinned.revision
        )),
    }
}

/// Builds the revert of the rejected head and pushes it (to the tracked branch, or to
/// `writeBack.branch`, which weir owns and replaces).
async fn write_back(
    ctx: &Context,
    term: &Term,
    sync: &GitSync,
    key: &str,
    head: &str,
    good: &str,
    rejected: &RejectedRevision,
) -> status::Revert {
    let policy = &sync.spec.rollback.write_back;
    let failed = |message: String| status::Revert::Failed {
        rejected: rejected.revision.clone(),
        message,
    };
    let (Some(branch), force) = (match &policy.branch {
        Some(branch) => (Some(branch.clone()), true),
        None => (sync.spec.git_ref.branch.clone(), false),
    }) else {
        return failed(
            "spec.ref names no branch to push the revert to: set spec.rollback.writeBack.branch"
                .into(),
        );
    };
    let author = writeback::Author {
        name: policy.author_name.clone().unwrap_or_default(),
        email: policy.author_email.clone().unwrap_or_default(),
    };
    let credentials = match read_credentials(ctx, sync).await {
        Ok(credentials) => credentials,
        Err(error) => return failed(error.message),
    };
    // The clone is this GitSync's alone while the revert is built and pushed.
    let Some(_in_flight) = InFlight::claim(&ctx.in_flight, key) else {
        return failed(format!(
            "{}, and that fetch has not ended yet",
            timed_out(ctx.fetch_timeout)
        ));
    };
    let dir = clone_dir(ctx, sync);
    let (built_in, path, limits) = (dir.clone(), sync.spec.path.clone(), ctx.limits);
    // The GitSyncs promoting from this one (and from those, on down) apply revisions of
    // this repository too: the revert restores their paths as well, or the revert, good
    // here, would carry the rejected revision's changes to them.
    let mut paths = vec![path.clone()];
    paths.extend(super::promotion::downstream_paths(
        &ctx.gitsyncs.state(),
        sync,
    ));
    let (head_owned, good_owned, rejected_owned) =
        (head.to_owned(), good.to_owned(), rejected.clone());
    let built = tokio::task::spawn_blocking(move || {
        // A kustomization may read the whole repository: its revert restores all of it.
        let files =
            source::files_at(&built_in, &good_owned, &path, &limits).map_err(|e| match e {
                source::FilesError::Read(error) => error,
                source::FilesError::TooLarge(message) => SyncError::invalid(message),
            })?;
        let whole_tree = matches!(render::layout(&files, &path), Layout::Kustomization(_));
        let paths: Vec<&str> = if whole_tree {
            vec![""]
        } else {
            paths.iter().map(String::as_str).collect()
        };
        writeback::revert_commit(
            &built_in,
            &head_owned,
            &good_owned,
            &paths,
            &rejected_owned,
            &author,
        )
    })
    .await;
    let commit = match built {
        Ok(Ok(Some(commit))) => commit,
        // The rejected revision left what weir reads as the good one had it: Git already
        // agrees with the cluster.
        Ok(Ok(None)) => {
            return status::Revert::Unneeded {
                rejected: rejected.revision.clone(),
                good: good.to_owned(),
            };
        }
        Ok(Err(error)) => return failed(error.to_string()),
        Err(_) => return failed("building the revert was interrupted".into()),
    };
    // Git is written by the leader only, as the cluster is: this failure is never recorded,
    // since the status write after it checks the term too.
    if !term.holds() {
        return failed(Error::NotLeader.to_string());
    }
    match writeback::push(
        &dir,
        &sync.spec.url,
        &credentials,
        &commit,
        &branch,
        force,
        ctx.fetch_timeout,
    )
    .await
    {
        Ok(()) => status::Revert::Pushed {
            rejected: rejected.revision.clone(),
            commit,
            branch,
        },
        Err(PushError::Refused(message)) => status::Revert::Refused {
            rejected: rejected.revision.clone(),
            message,
        },
        Err(PushError::Failed(message)) => failed(message),
    }
}

/// The fetched head, when it is weir's revert of a rejected revision not yet recorded as
/// reverted (its pusher died before writing the status).
async fn recognize_revert(
    ctx: &Context,
    sync: &GitSync,
    head: &str,
    pending: &[String],
) -> Option<status::Revert> {
    let (dir, revision) = (clone_dir(ctx, sync), head.to_owned());
    let reverts = tokio::task::spawn_blocking(move || {
        source::trailer(&dir, &revision, writeback::REJECTED_TRAILER)
    })
    .await
    .ok()??;
    pending
        .iter()
        .find(|r| **r == reverts)
        .map(|rejected| status::Revert::Pushed {
            rejected: rejected.clone(),
            commit: head.to_owned(),
            branch: sync.spec.git_ref.branch.clone().unwrap_or_default(),
        })
}

/// The credentials the GitSync's Secret holds for its URL; read for every fetch, so a
/// rotated Secret is used from the next interval on. Read as the GitSync's identity: naming
/// a Secret its ServiceAccount may not read gets nothing (a GitSync pointed at a server that
/// asks for a password must not collect one its author could not read).
async fn read_credentials(ctx: &Context, sync: &GitSync) -> Result<Credentials, SyncError> {
    let spec = &sync.spec;
    let Some(reference) = &spec.secret_ref else {
        return Ok(Credentials::Anonymous);
    };
    let namespace = sync.namespace().unwrap_or_default();
    let described = format!("{namespace}/{}", reference.name);
    let field = format!("Secret {described} (spec.secretRef)");
    let secret = read_secret(ctx, sync, &reference.name, &field)
        .await?
        .ok_or_else(|| SyncError::invalid(format!("{field} does not exist")))?;
    credentials::from_secret(&spec.url, &described, &secret.data.unwrap_or_default())
        .map_err(SyncError::invalid)
}

/// The age identities of `spec.decryption`'s Secret, read as the GitSync's identity (as its
/// Git credentials are: a GitSync must not decrypt with a key its author could not read);
/// None without `spec.decryption`. An error says which Secret and field, and whether RBAC
/// refused the read; it never holds the Secret's data.
async fn read_decryption(
    ctx: &Context,
    sync: &GitSync,
) -> Result<Option<Arc<Identities>>, SyncError> {
    let Some(decryption) = &sync.spec.decryption else {
        return Ok(None);
    };
    // Validation refuses a spec without one before any fetch; this is for a spec changed
    // since.
    let Some(reference) = &decryption.secret_ref else {
        return Err(SyncError::invalid(
            "spec.decryption.secretRef: name the Secret whose .agekey entries hold the age identities",
        ));
    };
    let namespace = sync.namespace().unwrap_or_default();
    let described = format!(
        "Secret {namespace}/{} (spec.decryption.secretRef)",
        reference.name
    );
    let Some(secret) = read_secret(ctx, sync, &reference.name, &described).await? else {
        return Err(SyncError::invalid(format!(
            "{described} does not exist: create it with the age identity under a key ending in .agekey"
        )));
    };
    let data = secret.data.unwrap_or_default();
    Identities::from_secret(
        &described,
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
    .map(|identities| Some(Arc::new(identities)))
    .map_err(SyncError::invalid)
}
