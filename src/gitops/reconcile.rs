//! The glue of the GitSync controller: fetch (bounded, off the async workers), render, apply,
//! record, and come back after `interval` (with a little jitter, so many GitSyncs do not fetch
//! in step), sooner with backoff after a failed fetch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{info, instrument, warn};

use super::credentials::{self, Credentials};
use super::render::{self, Layout};
use super::source;
use super::status::{self, Attempt};
use super::webhook::SYNC_REQUEST_ANNOTATION;
use super::{apply, kustomize};
use crate::api::gitsync::{GitSync, GitSyncSpec, GitSyncStatus};
use crate::runtime::leader::Leadership;
use crate::status_patch::{self, WriteError};
use crate::{duration, validate};
use k8s_openapi::api::core::v1::Secret;

pub struct Context {
    pub client: Client,
    /// The namespace the controller watches (None: all of them).
    pub scope: Option<String>,
    pub recorder: Recorder,
    pub leadership: Leadership,
    /// Where the persistent clones live.
    pub cache_dir: PathBuf,
    /// What builds kustomizations here, found once at start.
    pub kustomize: Option<kustomize::Builder>,
    /// Fetches at once; the others wait their turn without blocking a worker.
    pub fetches: Arc<Semaphore>,
    /// How long a fetch may take before it is abandoned and its slot freed.
    pub fetch_timeout: Duration,
    /// The GitSyncs (`namespace/name`) with a fetch still running.
    pub in_flight: Arc<Mutex<HashSet<String>>>,
    /// When each GitSync is due again: a watch event that is only our own status write must
    /// not start another fetch and apply, and failures back off.
    pub schedule: Mutex<HashMap<String, Schedule>>,
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "the repository did not answer within {}s (--fetch-timeout)",
        timeout.as_secs_f64()
    )
}

/// A GitSync's claim on fetching, released when the fetch's thread ends, however late.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    fn claim(set: &Arc<Mutex<HashSet<String>>>, key: &str) -> Option<InFlight> {
        let mut running = set.lock().unwrap_or_else(|e| e.into_inner());
        running.insert(key.to_owned()).then(|| InFlight {
            set: set.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

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

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The first retry after a failure comes after at most this long...
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// ... and retries slow down to at most this, or to the interval when that is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When a GitSync is next due, for the generation it was synced at.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    due: std::time::Instant,
    generation: Option<i64>,
    /// Retryable failures in a row.
    failures: u32,
}

/// How long to wait after an attempt: the interval after a success (or a failure only a
/// new commit or spec can mend), doubling from `FIRST_RETRY` after failures in a row.
pub fn delay_after(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let base = interval.min(FIRST_RETRY);
    let cap = interval.max(MAX_BACKOFF);
    base.saturating_mul(1u32 << (failures - 1).min(20)).min(cap)
}

/// Up to a tenth of the interval, different for each GitSync and each attempt.
fn jitter(interval: Duration, key: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = fnv::FnvHasher::default();
    key.hash(&mut hasher);
    Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .hash(&mut hasher);
    let tenth = interval.as_millis() as u64 / 10;
    Duration::from_millis(hasher.finish() % tenth.max(1))
}

#[instrument(skip(sync, ctx), fields(gitsync = %sync.name_any(), namespace = sync.namespace().unwrap_or_default()))]
pub async fn reconcile(sync: Arc<GitSync>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if !ctx.leadership.is_leading() {
        return Ok(Requeue::await_change());
    }
    let namespace = sync.namespace().unwrap_or_default();
    let name = sync.name_any();
    let key = format!("{namespace}/{name}");
    let api: Api<GitSync> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(current) = api.get_opt(&name).await.map_err(|source| Error::Api {
        action: "reading",
        name: name.clone(),
        source,
    })?
    else {
        // Deleted: forget its schedule.
        ctx.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Ok(Requeue::await_change());
    };
    if current.spec.suspend {
        return Ok(Requeue::await_change());
    }
    let original = current.status.clone().unwrap_or_default();
    let generation = current.metadata.generation;
    let interval = duration::parse(&current.spec.interval).unwrap_or(DEFAULT_INTERVAL);
    let previous = ctx
        .schedule
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied()
        .filter(|s| s.generation == generation);
    // A new value of the request annotation (the push webhook's) skips the wait.
    let requested = current.annotations().get(SYNC_REQUEST_ANNOTATION).cloned();
    let asked = requested.is_some() && requested != original.last_handled_sync_request;
    if !asked
        && let Some(wait) =
            previous.and_then(|s| s.due.checked_duration_since(std::time::Instant::now()))
    {
        return Ok(Requeue::requeue(wait));
    }

    let attempt = attempt(&ctx, &current, &key).await;
    let failures = match attempt {
        Attempt::FetchFailed(_) | Attempt::ApplyFailed { .. } => {
            previous.map_or(0, |s| s.failures) + 1
        }
        _ => 0,
    };
    let next = match failures {
        0 => interval + jitter(interval, &key),
        n => delay_after(interval, n),
    };
    let now = Utc::now();
    let record = |status: &mut GitSyncStatus| {
        status::record(status, &attempt, generation, now);
        if asked {
            // The request acted on; one that arrived meanwhile stays unhandled.
            status.last_handled_sync_request.clone_from(&requested);
        }
    };
    if let Err(error) = write_recorded(&ctx, &api, current.clone(), &record).await {
        // What was applied is not recorded yet: come back soon, not after the interval.
        ctx.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Err(error);
    }
    ctx.schedule
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key.clone(),
            Schedule {
                due: std::time::Instant::now() + next,
                generation,
                failures,
            },
        );
    let mut status = original.clone();
    record(&mut status);
    let ready = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if ready(&original) != ready(&status)
        || original.last_applied_revision != status.last_applied_revision
    {
        announce(&ctx.recorder, &current, &attempt).await;
    }
    info!(outcome = attempt.reason(), message = %attempt.message(), next = ?next, "synced");
    Ok(Requeue::requeue(next))
}

/// Writes what `record` makes of the status. When the GitSync changed meanwhile (a webhook's
/// annotation, a spec edit), the attempt is recorded again onto what is there now, rather
/// than lost: the inventory of what was just applied must reach the status.
async fn write_recorded(
    ctx: &Context,
    api: &Api<GitSync>,
    mut current: GitSync,
    record: &impl Fn(&mut GitSyncStatus),
) -> Result<(), Error> {
    let name = current.name_any();
    for _ in 0..3 {
        if !ctx.leadership.is_leading() {
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

/// One fetch, render and apply; never a credential in what it says.
async fn attempt(ctx: &Context, sync: &GitSync, key: &str) -> Attempt {
    if let Some(first) = validate::git_sync(&sync.spec).first() {
        return Attempt::InvalidSpec(format!("InvalidSpec: {first}"));
    }
    let namespace = sync.namespace().unwrap_or_default();
    let dir = source::clone_dir(&ctx.cache_dir, &namespace, &sync.name_any(), &sync.spec.url);
    let (url, git_ref, path) = (
        sync.spec.url.clone(),
        sync.spec.git_ref.clone(),
        sync.spec.path.clone(),
    );
    let credentials = match read_credentials(&ctx.client, &namespace, &sync.spec).await {
        Ok(credentials) => credentials,
        Err(message) => return Attempt::FetchFailed(message),
    };
    let Ok(_permit) = ctx.fetches.acquire().await else {
        return Attempt::FetchFailed("the controller is shutting down".into());
    };
    // One fetch per GitSync at a time: a fetch abandoned at the timeout may still be stuck
    // in a read, and a second one must not share its clone.
    // kube-runtime never reconciles one object twice at once, so a claim is only refused
    // while a fetch abandoned at the timeout is still stuck.
    let Some(in_flight) = InFlight::claim(&ctx.in_flight, key) else {
        return Attempt::FetchFailed(format!(
            "{}, and that fetch has not ended yet",
            timed_out(ctx.fetch_timeout)
        ));
    };
    let limits = Arc::new(source::Limits::new(ctx.fetch_timeout));
    let limited = limits.clone();
    let read = tokio::task::spawn_blocking(move || {
        let _in_flight = in_flight;
        let fetched = source::fetch(&dir, &url, &git_ref, &credentials, &limited)?;
        let mut files = source::files_at(&dir, &fetched.revision, &path)?;
        let layout = render::layout(&files, &path);
        if let Layout::Kustomization(_) = layout {
            // Bases and components may be anywhere in the repository.
            files = source::files_at(&dir, &fetched.revision, "")?;
        }
        Ok::<_, source::SourceError>((fetched, files, layout))
    });
    let read = tokio::time::timeout(ctx.fetch_timeout, read).await;
    drop(_permit);
    let (fetched, files, layout) = match read {
        Ok(Ok(Ok(read))) => read,
        Ok(Ok(Err(error))) => return Attempt::FetchFailed(error.to_string()),
        Ok(Err(_)) => return Attempt::FetchFailed("the fetch was interrupted".into()),
        Err(_) => {
            // gix checks this between steps; a git daemon's socket times out on its own,
            // and ssh's keepalives end a dead connection. Until the thread ends, InFlight
            // keeps it the only fetch of this GitSync.
            limits.interrupt.store(true, Ordering::Relaxed);
            return Attempt::FetchFailed(timed_out(ctx.fetch_timeout));
        }
    };
    let (revision, subject) = (fetched.revision, fetched.subject);
    let rendered = match layout {
        Layout::Kustomization(file) => {
            kustomize::build(ctx.kustomize.clone(), files, &sync.spec.path, &file).await
        }
        Layout::Manifests => {
            render::render(&files, &sync.spec.path).map_err(|error| error.to_string())
        }
    };
    let manifests = match rendered {
        Ok(manifests) => manifests,
        Err(message) => {
            return Attempt::RenderFailed {
                revision,
                subject,
                message,
            };
        }
    };
    let objects = manifests.len();
    let old = sync
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let target = apply::Target {
        client: &ctx.client,
        leadership: &ctx.leadership,
        scope: ctx.scope.as_deref(),
        owner: key,
        namespace: &namespace,
        revision: &revision,
        prune: sync.spec.prune,
    };
    let outcome = apply::sync(&target, manifests, &old).await;
    match outcome.failure {
        Some(message) => Attempt::ApplyFailed {
            revision,
            subject,
            inventory: outcome.inventory,
            message,
        },
        None => Attempt::Applied {
            revision,
            subject,
            inventory: outcome.inventory,
            objects,
        },
    }
}

/// The credentials the GitSync's Secret holds for its URL; read for every fetch, so a
/// rotated Secret is used from the next interval on.
async fn read_credentials(
    client: &Client,
    namespace: &str,
    spec: &GitSyncSpec,
) -> Result<Credentials, String> {
    let Some(reference) = &spec.secret_ref else {
        return Ok(Credentials::Anonymous);
    };
    let described = format!("{namespace}/{}", reference.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("reading Secret {described} (spec.secretRef): {e}"))?
        .ok_or_else(|| format!("Secret {described} (spec.secretRef) does not exist"))?;
    credentials::from_secret(&spec.url, &described, &secret.data.unwrap_or_default())
}

async fn write(
    api: &Api<GitSync>,
    current: &GitSync,
    original: &GitSyncStatus,
    status: &GitSyncStatus,
) -> Result<(), Error> {
    let has_status = current.status.is_some();
    status_patch::write(
        api,
        current,
        has_status,
        original,
        status,
        apply::FIELD_MANAGER,
    )
    .await
    .map_err(|error| match error {
        WriteError::Conflict => Error::Conflict,
        WriteError::Api(source) => Error::Api {
            action: "writing the status of",
            name: current.name_any(),
            source,
        },
    })
}

async fn announce(recorder: &Recorder, sync: &GitSync, attempt: &Attempt) {
    crate::runtime::publish(
        recorder,
        &sync.object_ref(&()),
        !matches!(attempt, Attempt::Applied { .. }),
        attempt.reason().into(),
        Some(&attempt.message()),
        "Sync",
    )
    .await;
}

pub fn error_policy(sync: Arc<GitSync>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    match error {
        Error::Conflict => Requeue::requeue(Duration::from_millis(100)),
        Error::NotLeader => Requeue::await_change(),
        Error::Api { .. } => {
            warn!(gitsync = %sync.name_any(), %error, "reconcile failed");
            Requeue::requeue(Duration::from_secs(5))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_from_a_few_seconds_to_minutes() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (0..10).map(|n| delay_after(minute, n).as_secs()).collect();
        assert_eq!(waits, vec![60, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let second = Duration::from_secs(1);
        let waits: Vec<u64> = (0..4).map(|n| delay_after(second, n).as_secs()).collect();
        assert_eq!(waits, vec![1, 1, 2, 4], "never sooner than the interval");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            delay_after(hour, 30),
            hour,
            "a long interval is the cap, and many failures do not overflow"
        );
    }
}
