//! The glue of the GitSync controller: fetch (bounded, off the async workers), render, apply,
//! record, and come back after `interval` (with a little jitter, so many GitSyncs do not fetch
//! in step), sooner with backoff after a failed fetch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::Events;
use chrono::Utc;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::controller::Action as Requeue;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, instrument, warn};

use super::credentials::{self, Credentials};
use super::dependencies;
use super::error::SyncError;
use super::fetch_rate::{self, FetchRate};
use super::health::{self, Workload};
use super::render::{self, Layout};
use super::revision;
use super::rollback::{
    self, Basis, Fetch, ManagedRollout, Policy as Judging, ROLLBACK_TO_ANNOTATION,
    Step as RollbackStep, Target,
};
use super::sops::Identities;
use super::source;
use super::status::{self, Attempt};
use super::tenancy::{self, Identity, Policy};
use super::webhook::SYNC_REQUEST_ANNOTATION;
use super::writeback::{self, PushError};
use super::{apply, kustomize};
use crate::api::gitsync::{
    GitSync, GitSyncStatus, InventoryEntry, PinnedRevision, RejectedRevision,
};
use crate::api::rollout::Rollout;
use crate::runtime::error::{Backoff, Controller};
use crate::runtime::impersonation::Impersonation;
use crate::runtime::leader::{Leadership, Term};
use crate::{duration, validate};
use k8s_openapi::api::core::v1::Secret;

pub struct Context {
    /// The controller's own identity: reads, status writes, Events. Never what Git says.
    pub client: Client,
    /// Clients acting as each GitSync's ServiceAccount.
    pub impersonation: Impersonation,
    /// The tenancy flags.
    pub policy: Policy,
    /// Every GitSync the controller watches, for the branches they follow.
    pub gitsyncs: kube::runtime::reflector::Store<GitSync>,
    /// The namespace the controller watches (None: all of them).
    pub scope: Option<String>,
    pub events: Events,
    /// Counts what applies sent and skipped.
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    pub leadership: Leadership,
    /// Where the persistent clones live.
    pub cache_dir: PathBuf,
    /// How much a revision may hold.
    pub limits: render::Limits,
    /// What builds kustomizations here, found once at start.
    pub kustomize: Option<kustomize::Builder>,
    /// Fetches at once; the others wait their turn without blocking a worker.
    pub fetches: Arc<Semaphore>,
    /// How long a fetch may take before it is abandoned and its slot freed.
    pub fetch_timeout: Duration,
    /// The most bytes of pack one fetch may receive.
    pub max_fetch_bytes: u64,
    /// Fetches per Git host: a GitSync over its host's rate waits, requeued, not fetching.
    pub fetch_rate: Arc<FetchRate>,
    /// The GitSyncs (`namespace/name`) with a fetch still running.
    pub in_flight: Arc<Mutex<HashSet<String>>>,
    /// When each GitSync is due again: a watch event that is only our own status write must
    /// not start another fetch and apply, and failures back off.
    pub schedule: Mutex<HashMap<String, Schedule>>,
    /// Told of every aborted Rollout the controller sees, so that a reconcile waiting for a
    /// fetch can roll back first.
    pub aborts: Arc<Notify>,
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

pub use crate::runtime::error::Error;

/// What the shared error core says of GitSyncs.
const GITSYNCS: Controller = Controller {
    kind: "GitSync",
    field_manager: apply::FIELD_MANAGER,
    conflict: "the GitSync changed while it was synced; syncing again",
};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// `spec.healthTimeout` when it does not parse (validation reports it).
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the applied revision's workloads are looked at while they are not healthy
/// yet: nothing watches them, so a failure or a timeout is noticed within this.
const HEALTH_POLL: Duration = Duration::from_secs(5);
/// The first retry after a failure comes after at most this long...
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// ... and retries slow down to at most this, or to the interval when that is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When a GitSync is next due, for the generation it was synced at.
#[derive(Clone, Debug)]
pub struct Schedule {
    due: std::time::Instant,
    generation: Option<i64>,
    /// Retryable failures in a row.
    failures: u32,
    /// A new revision waits for the GitSyncs it depends on: due as soon as they are ready.
    waiting: bool,
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

/// How long to wait after failures in a row that wait for a fix (forbidden, not found,
/// invalid: `Attempt::waits_for_a_fix`): never sooner than the interval, doubling to the cap.
/// Nothing wakes the GitSync when a Secret or RoleBinding comes, so it still looks again.
pub fn delay_until_fixed(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(MAX_BACKOFF);
    interval
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap)
}

/// A fraction from 0 to 1, different for each GitSync and each call: where a GitSync waiting
/// for its host's rate falls among the others waiting.
fn spread(key: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = fnv::FnvHasher::default();
    key.hash(&mut hasher);
    Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .hash(&mut hasher);
    (hasher.finish() % 10_000) as f64 / 10_000.0
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
    // Every write below checks this term: a reconcile that spans a change of leader must not
    // apply, record or push what it decided from the earlier term's view.
    let term = ctx.leadership.current_term();
    if !term.holds() {
        return Ok(Requeue::await_change());
    }
    let namespace = sync.namespace().unwrap_or_default();
    let name = sync.name_any();
    let key = format!("{namespace}/{name}");
    let api: Api<GitSync> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(current) = api
        .get_opt(&name)
        .await
        .map_err(Error::api("reading", "GitSync", &name))?
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
        .cloned()
        .filter(|s| s.generation == generation);
    // A new value of the request annotation (the push webhook's) skips the wait, and so
    // does a request to pin a revision.
    let requested = current.annotations().get(SYNC_REQUEST_ANNOTATION).cloned();
    let asked = requested.is_some() && requested != original.last_handled_sync_request;
    let pin_request = current.annotations().get(ROLLBACK_TO_ANNOTATION).cloned();
    // A revision that waited for its dependencies goes as soon as they are ready (their
    // changes wake this GitSync), not at the next interval.
    let dependencies_came = previous.as_ref().is_some_and(|s| s.waiting)
        && waiting_for_dependencies(&ctx, &current).is_empty();
    let wait = previous
        .as_ref()
        .and_then(|s| s.due.checked_duration_since(std::time::Instant::now()))
        .filter(|_| !asked && pin_request.is_none() && !dependencies_came);
    let due = wait.is_none();

    // The Rollouts are looked at every time (their changes wake this GitSync): an abort is
    // acted on at once, never after the interval. The applied revision's workloads are read
    // while it awaits its verdict, and polled meanwhile.
    let mut rollouts = managed_rollouts(&ctx.client, &original.inventory).await;
    let workloads = match rollback::judging(&original) {
        Some(_) => applied_workloads(&ctx, &current, &key, &original.inventory).await,
        None => Vec::new(),
    };
    let judging = Judging {
        on_failure: current.spec.rollback.on_failure,
        health_timeout: chrono::Duration::from_std(
            duration::parse(&current.spec.health_timeout).unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        )
        .unwrap_or(chrono::Duration::MAX),
    };
    // Rolling back never waits for Git: when the applied revision is rejected (a Rollout of
    // it aborted, a workload of it failed), a due fetch (which may queue for a slot and then
    // take up to --fetch-timeout) waits until the cluster is back on the last good
    // revision, and runs right after. An abort during a fetch abandons the fetch the same
    // way.
    let mut fetch_deferred = due && must_roll_back(&original, &rollouts, &workloads, &judging);
    // Over its host's rate the fetch waits: requeued for its turn, nothing recorded (the
    // status says what the last fetch found, not that this one waits).
    let rate_limited = if due && !fetch_deferred {
        fetch_rate::origin(&current.spec.url).and_then(|origin| {
            ctx.fetch_rate
                .take(&origin, &key, spread(&key))
                .err()
                .inspect(|wait| {
                    info!(%origin, wait = ?wait, "fetch waits for its host's rate (--git-fetches-per-host-per-minute)")
                })
        })
    } else {
        None
    };
    let wait = wait.or(rate_limited);
    let fetched = if due && !fetch_deferred && rate_limited.is_none() {
        let fetch = fetch(&ctx, &current, &key);
        tokio::pin!(fetch);
        loop {
            let news = ctx.aborts.notified();
            tokio::select! {
                result = &mut fetch => break Some(result),
                () = news => {
                    rollouts = managed_rollouts(&ctx.client, &original.inventory).await;
                    if must_roll_back(&original, &rollouts, &workloads, &judging) {
                        info!("a managed Rollout aborted during the fetch: rolling back first");
                        fetch_deferred = true;
                        break None;
                    }
                }
            }
        }
    } else {
        None
    };
    // Where the ref points, as far as is known: fetched now, or at the last fetch.
    let head = match &fetched {
        Some(Ok(head)) => Some(head.clone()),
        _ => original.last_fetched_revision.clone(),
    }
    .or_else(|| original.last_applied_revision.clone());
    let now = Utc::now();
    let Some(head) = head else {
        // Nothing fetched, ever: only the failure to record.
        let attempt = match fetched {
            Some(Err(failure)) => failure,
            _ => return Ok(Requeue::requeue(wait.unwrap_or(interval))),
        };
        return finish(
            &ctx,
            &term,
            &api,
            &current,
            Step::new(attempt, &previous, interval, &key),
        )
        .await;
    };

    // A pin asked for by hand, checked against what is known; its annotation goes either way.
    let mut view = original.clone();
    let mut pin_refused = None;
    if let Some(request) = &pin_request {
        match pin(&ctx, &current, request, &head, &original, now).await {
            Ok(pinned) => view.pinned = Some(pinned),
            Err(message) => pin_refused = Some(message),
        }
    }
    let decision = rollback::decide(&head, &view, &rollouts, &workloads, &judging, now);

    // A rejection is recorded before anything is rolled back: after a restart in between,
    // the revision is still known to be out.
    if let Some(rejected) = &decision.rejected {
        let subject = subject(&ctx, &current, &rejected.revision).await;
        let last_good = decision.last_good.clone();
        write_recorded(
            &term,
            &api,
            current.clone(),
            &|status: &mut GitSyncStatus| {
                status::reject(status, rejected, &subject);
                status.last_good_revision.clone_from(&last_good);
            },
        )
        .await?;
        crate::runtime::publish(
            &ctx.events,
            &current.object_ref(&()),
            true,
            "Rejected".into(),
            Some(&format!(
                "revision {} rejected: {}",
                status::short(&rejected.revision),
                rollback::cause(rejected)
            )),
            "Rollback",
        )
        .await;
        view.rejected_revisions.push(rejected.clone());
    }

    let fetch_state = match &fetched {
        None => Fetch::NotDue,
        Some(Ok(_)) => Fetch::Fetched,
        Some(Err(_)) => Fetch::Failed,
    };
    let attempt = match rollback::step(
        &decision,
        &head,
        &original,
        &view.rejected_revisions,
        fetch_state,
    ) {
        RollbackStep::Apply { revision, basis } => {
            let waiting_for = match waits_for_dependencies(&basis, &revision, &original) {
                true => waiting_for_dependencies(&ctx, &current),
                false => Vec::new(),
            };
            if waiting_for.is_empty() {
                Some(apply_revision(&ctx, &term, &current, &key, &revision, basis).await)
            } else {
                Some(Attempt::Waiting {
                    revision,
                    waiting_for,
                })
            }
        }
        RollbackStep::RecordFetchFailure => fetched.and_then(Result::err),
        RollbackStep::Hold(rejected) => Some(Attempt::Held(rejected)),
        RollbackStep::Nothing => None,
    };

    // Git is written after the cluster is safe, and only with a fresh view of the ref: a
    // newer commit there wins over a pending revert.
    let write_back_enabled = current.spec.rollback.write_back.enabled;
    let written = match (&decision.target, &attempt) {
        (
            Target::RollBack(good),
            Some(Attempt::Applied {
                basis: Basis::RolledBack(rejected),
                ..
            }),
        ) if write_back_enabled && rejected.revert.is_none() && fetch_state == Fetch::Fetched => {
            Some(write_back(&ctx, &term, &current, &key, &head, good, rejected).await)
        }
        // A revert pushed by a controller that died before recording it: the branch's new
        // tip says so, and it is recorded now rather than pushed again.
        _ if write_back_enabled && fetch_state == Fetch::Fetched => {
            recognize_revert(&ctx, &current, &head, &view.rejected_revisions).await
        }
        _ => None,
    };

    // What the applied revision waits for after this reconcile: a revision applied just now
    // is read again (its objects have changed); otherwise the decision's words stand.
    let (waiting, poll) = match &attempt {
        Some(Attempt::Applied {
            revision,
            inventory,
            ..
        }) if decision.last_good.as_deref() != Some(revision.as_str()) => {
            let workloads = applied_workloads(&ctx, &current, &key, inventory).await;
            // Polled even with nothing to wait for: the next look makes it good. A revision
            // applied again past its timeout (drift repair with rollback.onFailure off) is
            // not: its wait has run out.
            let again = original.last_applied_revision.as_deref() == Some(revision.as_str());
            let expired = again && rollback::timed_out(&original, judging.health_timeout, now);
            (health::waiting(revision, &workloads), !expired)
        }
        Some(Attempt::Applied { .. }) => (None, false),
        // Past healthTimeout nothing more comes of a look (with rollback.onFailure off,
        // nothing rejects): the normal schedule.
        _ => (decision.waiting.clone(), decision.poll),
    };
    let mut step = match attempt {
        Some(attempt) => Step::new(attempt, &previous, interval, &key),
        None => Step::quiet(&previous, wait.unwrap_or(interval)),
    };
    step.waiting = waiting;
    step.poll = poll;
    let revert_pending = matches!(
        &step.attempt,
        Some(Attempt::Applied { basis: Basis::RolledBack(rejected), .. }) if rejected.revert.is_none()
    ) && write_back_enabled;
    if (revert_pending && written.is_none()) || fetch_deferred {
        // Rolled back without a fresh fetch: fetch now (and write the revert).
        step.next = Duration::ZERO;
    }
    match &written {
        // The revert is on the branch: fetch it soon, so the GitSync follows Git again.
        Some(status::WriteBack::Pushed { .. } | status::WriteBack::Unneeded { .. }) => {
            step.next = step.next.min(FIRST_RETRY)
        }
        Some(_) => {
            step.failures = previous.as_ref().map_or(0, |s| s.failures) + 1;
            step.next = delay_after(interval, step.failures);
        }
        None => {}
    }
    step.fetched = (fetch_state == Fetch::Fetched).then_some(head);
    step.decided = Some((
        decision.last_good,
        match &decision.target {
            Target::Pinned(_) => view.pinned.clone(),
            _ => None,
        },
    ));
    step.written = written;
    if let Some(turn) = rate_limited {
        // Whatever else this reconcile did, the fetch comes at its turn.
        step.next = step.next.min(turn);
    }
    // A sync request waits with the deferred or rate-limited fetch: it is handled by the
    // fetch that comes after.
    if asked && !fetch_deferred && rate_limited.is_none() {
        step.handled_request = Some(requested);
    }
    let removed_pin = pin_request.is_some();
    let result = finish(&ctx, &term, &api, &current, step).await;
    if result.is_ok() && removed_pin {
        if let Some(message) = &pin_refused {
            crate::runtime::publish(
                &ctx.events,
                &current.object_ref(&()),
                true,
                "InvalidRollbackRequest".into(),
                Some(message),
                "Pin",
            )
            .await;
        }
        remove_annotation(
            &api,
            &current,
            ROLLBACK_TO_ANNOTATION,
            pin_request.as_deref(),
        )
        .await?;
    }
    result
}

/// Whether applying `revision` waits for the GitSyncs this one depends on: only a revision
/// new from the ref does. A rollback, a pin and drift repair of what is applied never wait,
/// nor does a retry of a revision already tried (its apply may have stopped half way, and
/// waiting would leave the cluster half at it).
fn waits_for_dependencies(basis: &Basis, revision: &str, status: &GitSyncStatus) -> bool {
    *basis == Basis::Head
        && status.last_applied_revision.as_deref() != Some(revision)
        && status.last_attempted_revision.as_deref() != Some(revision)
}

/// Whether what is known already rejects the applied revision (a Rollout of it aborted, a
/// workload of it failed or timed out): then the cluster goes back to the last good
/// revision before anything waits for Git.
fn must_roll_back(
    status: &GitSyncStatus,
    rollouts: &[ManagedRollout],
    workloads: &[Workload],
    judging: &Judging,
) -> bool {
    status
        .last_fetched_revision
        .as_ref()
        .or(status.last_applied_revision.as_ref())
        .is_some_and(|known| {
            rollback::decide(known, status, rollouts, workloads, judging, Utc::now())
                .rejected
                .is_some()
        })
}

/// What one reconcile did, to record and to schedule from.
struct Step {
    attempt: Option<Attempt>,
    failures: u32,
    next: Duration,
    /// The ref's revision, when this reconcile fetched it.
    fetched: Option<String>,
    /// The last good revision and the pin, as decided.
    decided: Option<(Option<String>, Option<PinnedRevision>)>,
    written: Option<status::WriteBack>,
    handled_request: Option<Option<String>>,
    /// What the applied revision's workloads still wait for.
    waiting: Option<String>,
    /// Look again within `HEALTH_POLL`, whatever the schedule: the applied revision awaits
    /// its verdict on workloads nothing watches.
    poll: bool,
}

impl Step {
    fn new(attempt: Attempt, previous: &Option<Schedule>, interval: Duration, key: &str) -> Step {
        let failures = match attempt {
            // Waiting backs off like a failure, from a few seconds to the interval; the
            // dependencies' own changes cut it short.
            Attempt::FetchFailed(_) | Attempt::ApplyFailed { .. } | Attempt::Waiting { .. } => {
                previous.as_ref().map_or(0, |s| s.failures) + 1
            }
            _ => 0,
        };
        let next = match failures {
            0 => interval + jitter(interval, key),
            n if attempt.waits_for_a_fix() => delay_until_fixed(interval, n),
            n => delay_after(interval, n),
        };
        Step {
            attempt: Some(attempt),
            failures,
            next,
            fetched: None,
            decided: None,
            written: None,
            handled_request: None,
            waiting: None,
            poll: false,
        }
    }

    /// Nothing attempted: the schedule stands.
    fn quiet(previous: &Option<Schedule>, wait: Duration) -> Step {
        Step {
            attempt: None,
            failures: previous.as_ref().map_or(0, |s| s.failures),
            next: wait,
            fetched: None,
            decided: None,
            written: None,
            handled_request: None,
            waiting: None,
            poll: false,
        }
    }
}

/// Records a reconcile's outcome in one status write, schedules the next, and tells.
async fn finish(
    ctx: &Context,
    term: &Term,
    api: &Api<GitSync>,
    current: &GitSync,
    step: Step,
) -> Result<Requeue, Error> {
    let key = format!(
        "{}/{}",
        current.namespace().unwrap_or_default(),
        current.name_any()
    );
    let generation = current.metadata.generation;
    let original = current.status.clone().unwrap_or_default();
    let now = Utc::now();
    let record = |status: &mut GitSyncStatus| {
        let before = status.conditions.clone();
        if let Some(attempt) = &step.attempt {
            status::record(status, attempt, generation, now);
            if let Attempt::Applied {
                basis: Basis::Head, ..
            } = attempt
            {
                // The ref moved past the rejected revision: a revert still pending lost to
                // the newer commit, and there is nothing left to push.
                status::forget_refused_write_back(status);
            }
        }
        if let Some((last_good, pinned)) = &step.decided {
            status.last_good_revision.clone_from(last_good);
            status.pinned.clone_from(pinned);
        }
        if let Some(fetched) = &step.fetched {
            status.last_fetched_revision = Some(fetched.clone());
        }
        if let Some(written) = &step.written {
            status::wrote_back(status, written, generation, now);
        }
        if let Some(requested) = &step.handled_request {
            // The request acted on; one that arrived meanwhile stays unhandled.
            status.last_handled_sync_request.clone_from(requested);
        }
        status::waiting_for(status, step.waiting.as_deref(), generation, now);
        // A condition removed and set again within this one record did not change.
        crate::conditions::keep_transition_times(&before, &mut status.conditions);
    };
    if let Err(error) = write_recorded(term, api, current.clone(), &record).await {
        // What was applied is not recorded yet: come back soon, not after the interval.
        ctx.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Err(error);
    }
    if step.attempt.is_some() || step.written.is_some() {
        ctx.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.clone(),
                Schedule {
                    due: std::time::Instant::now() + step.next,
                    generation,
                    failures: step.failures,
                    waiting: matches!(step.attempt, Some(Attempt::Waiting { .. })),
                },
            );
    }
    let mut status = original.clone();
    record(&mut status);
    let ready = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if let Some(attempt) = &step.attempt {
        if ready(&original) != ready(&status)
            || original.last_applied_revision != status.last_applied_revision
        {
            announce(&ctx.events, current, attempt).await;
        }
        info!(outcome = attempt.reason(), message = %attempt.message(), next = ?step.next, "synced");
    }
    // A write-back is told when its outcome changes, not at every retry.
    let revert = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::REVERT_PUSHED)
            .cloned()
    };
    if let Some(condition) = revert(&status).filter(|now| {
        revert(&original).is_none_or(|before| {
            (&before.status, &before.reason, &before.message)
                != (&now.status, &now.reason, &now.message)
        })
    }) {
        crate::runtime::publish(
            &ctx.events,
            &current.object_ref(&()),
            condition.status != "True",
            condition.reason.clone(),
            Some(&condition.message),
            "WriteBack",
        )
        .await;
    }
    Ok(Requeue::requeue(match step.poll {
        true => step.next.min(HEALTH_POLL),
        false => step.next,
    }))
}

/// Writes what `record` makes of the status. When the GitSync changed meanwhile (a webhook's
/// annotation, a spec edit), the attempt is recorded again onto what is there now, rather
/// than lost: the inventory of what was just applied must reach the status.
async fn write_recorded(
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
    let limits = Arc::new(source::Limits::new(ctx.fetch_timeout, ctx.max_fetch_bytes));
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
struct InterruptOnDrop(Arc<source::Limits>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt.store(true, Ordering::Relaxed);
    }
}

/// The GitSyncs of `sync`'s namespace, as the controller's cache has them.
fn neighbours(ctx: &Context, sync: &GitSync) -> Vec<Arc<GitSync>> {
    let namespace = sync.namespace();
    ctx.gitsyncs
        .state()
        .into_iter()
        .filter(|s| s.namespace() == namespace)
        .collect()
}

/// Why each GitSync of `spec.dependsOn` is not ready yet (empty: none is waited for).
fn waiting_for_dependencies(ctx: &Context, sync: &GitSync) -> Vec<String> {
    if sync.spec.depends_on.is_empty() {
        return Vec::new();
    }
    let all = neighbours(ctx, sync);
    let nodes: Vec<dependencies::Node> = all.iter().map(|s| dependencies::Node::of(s)).collect();
    dependencies::waiting_for(&dependencies::Node::of(sync), &nodes)
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

/// Who the GitSync acts as, and a client that does.
fn acting_as(ctx: &Context, sync: &GitSync) -> Result<(Identity, Client), SyncError> {
    let identity = tenancy::identity(
        &ctx.policy,
        &sync.namespace().unwrap_or_default(),
        sync.spec.service_account_name.as_deref(),
    );
    let client = ctx
        .impersonation
        .client(identity.user().as_deref())
        .map_err(|error| {
            SyncError::invalid(format!(
                "making a client that acts as {}: {error}",
                identity.describe()
            ))
        })?;
    Ok((identity, client))
}

/// The GitSync's own clone: keyed by its UID, so no other GitSync (one deleted and made
/// again under the same name included) ever reads it.
fn clone_dir(ctx: &Context, sync: &GitSync) -> PathBuf {
    source::clone_dir(
        &ctx.cache_dir,
        sync.metadata.uid.as_deref().unwrap_or_default(),
        &sync.spec.url,
    )
}

/// A revision's subject line, from the clone; empty when it cannot be read (it only labels
/// history entries).
async fn subject(ctx: &Context, sync: &GitSync, revision: &str) -> String {
    let (dir, revision) = (clone_dir(ctx, sync), revision.to_owned());
    tokio::task::spawn_blocking(move || source::subject(&dir, &revision))
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
            return Attempt::ApplyFailed {
                revision: revision.to_owned(),
                subject: subject(ctx, sync, revision).await,
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
    let (subject, manifests, redactor) = match rendered {
        Ok(rendered) => (rendered.subject, rendered.manifests, rendered.redactor),
        Err(revision::Failure::Read(message)) => {
            return Attempt::FetchFailed(SyncError::transient(message));
        }
        Err(revision::Failure::Render { subject, message }) => {
            return Attempt::RenderFailed {
                revision,
                subject,
                message,
            };
        }
    };
    let objects = manifests.len();
    let (identity, client) = match acting_as(ctx, sync) {
        Ok(acting) => acting,
        Err(error) => {
            return Attempt::ApplyFailed {
                revision,
                subject,
                inventory: old,
                error,
            };
        }
    };
    let target = apply::Target {
        client: &client,
        identity: &identity,
        reader: &ctx.client,
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
            subject,
            inventory: outcome.inventory,
            error: error.map(|message| redactor.scrub(&message)),
        },
        None => Attempt::Applied {
            revision,
            subject,
            inventory: outcome.inventory,
            objects,
            basis,
        },
    }
}

/// What the GitSync's Rollouts show, read fresh: the ones in its inventory.
async fn managed_rollouts(client: &Client, inventory: &[InventoryEntry]) -> Vec<ManagedRollout> {
    let mut seen = Vec::new();
    for entry in inventory {
        let (group, _) = entry.api_version.split_once('/').unwrap_or_default();
        if entry.kind != "Rollout" || group != Rollout::group(&()) {
            continue;
        }
        let Some(namespace) = &entry.namespace else {
            continue;
        };
        let name = format!("{namespace}/{}", entry.name);
        let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(&entry.name).await {
            Ok(Some(rollout)) => seen.push(rollback::observe(&rollout)),
            Ok(None) => {}
            // Unreadable: neither good nor failed, so no revision becomes good or is
            // rejected on its account; syncing goes on.
            Err(error) => {
                warn!(rollout = %name, %error, "reading a managed Rollout failed");
                seen.push(ManagedRollout {
                    name,
                    applied_revision: None,
                    canary_revision: None,
                    healthy: false,
                    aborted: None,
                    aborted_at: None,
                });
            }
        }
    }
    seen
}

/// The workloads of the GitSync `key` among `inventory`, as they are now: only objects whose
/// kind has a health rule, read one GET each as the GitSync's identity, like everything else
/// it does to what it applied (so it learns nothing its ServiceAccount may not read, and the
/// controller needs no right to read tenants' workloads). One gone is skipped,
/// like a Rollout; one that cannot be read is reported as such, which keeps its revision
/// from being good and rejects nothing.
async fn applied_workloads(
    ctx: &Context,
    sync: &GitSync,
    key: &str,
    inventory: &[InventoryEntry],
) -> Vec<Workload> {
    let entries: Vec<&InventoryEntry> = inventory
        .iter()
        .filter(|e| health::rule(&e.api_version, &e.kind).is_some())
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let describe = |e: &InventoryEntry| health::describe(&e.kind, e.namespace.as_deref(), &e.name);
    let (identity, client) = match acting_as(ctx, sync) {
        Ok(acting) => acting,
        Err(error) => {
            return entries
                .into_iter()
                .map(|e| health::unreadable(describe(e), &error.message))
                .collect();
        }
    };
    let mut resources: HashMap<(String, String), Option<ApiResource>> = HashMap::new();
    let mut seen = Vec::new();
    for entry in entries {
        let kind = (entry.api_version.clone(), entry.kind.clone());
        let resource = match resources.get(&kind) {
            Some(resource) => resource.clone(),
            None => match resource_of(&client, entry).await {
                Ok(resource) => {
                    resources.insert(kind, resource.clone());
                    resource
                }
                Err(error) => {
                    seen.push(health::unreadable(describe(entry), &error.to_string()));
                    continue;
                }
            },
        };
        // The kind is gone (its CRD deleted): so are its objects.
        let Some(resource) = resource else { continue };
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.get_opt(&entry.name).await {
            Ok(Some(live)) => {
                let value = serde_json::to_value(&live).unwrap_or_default();
                seen.extend(health::observe(&value, key));
            }
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => seen.push(health::unreadable(
                describe(entry),
                &format!(
                    "{} (weir acted as {}, which needs get on {} to judge its health)",
                    status.message,
                    identity.describe(),
                    match resource.group.as_str() {
                        "" => resource.plural.clone(),
                        group => format!("{}.{group}", resource.plural),
                    }
                ),
            )),
            Err(error) => {
                warn!(object = %describe(entry), %error, "reading a workload's health failed");
                seen.push(health::unreadable(describe(entry), &error.to_string()));
            }
        }
    }
    seen
}

/// Where a kind with a health rule is served: the built-in workloads without a discovery
/// round trip; a custom kind through discovery (None: no longer served).
async fn resource_of(
    client: &Client,
    entry: &InventoryEntry,
) -> Result<Option<ApiResource>, kube::Error> {
    let (group, version) = entry
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &entry.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &entry.kind);
    let plural = match health::rule(&entry.api_version, &entry.kind) {
        Some(health::Rule::Deployment) => Some("deployments"),
        Some(health::Rule::StatefulSet) => Some("statefulsets"),
        Some(health::Rule::DaemonSet) => Some("daemonsets"),
        Some(health::Rule::Job) => Some("jobs"),
        Some(health::Rule::PersistentVolumeClaim) => Some("persistentvolumeclaims"),
        Some(health::Rule::Conditions | health::Rule::GitSync) | None => None,
    };
    if let Some(plural) = plural {
        return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, plural)));
    }
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => Ok(Some(resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Checks a `weir.dev/rollback-to` request; the revision must be a commit the clone has.
async fn pin(
    ctx: &Context,
    sync: &GitSync,
    request: &str,
    head: &str,
    status: &GitSyncStatus,
    now: chrono::DateTime<Utc>,
) -> Result<PinnedRevision, String> {
    let pinned = rollback::pin(request, head, status, now)?;
    let (dir, revision) = (clone_dir(ctx, sync), pinned.revision.clone());
    let known = tokio::task::spawn_blocking(move || source::subject(&dir, &revision))
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
) -> status::WriteBack {
    let policy = &sync.spec.rollback.write_back;
    let failed = |message: String| status::WriteBack::Failed {
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
        writeback::revert_commit(
            &built_in,
            &head_owned,
            &good_owned,
            if whole_tree { "" } else { &path },
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
            return status::WriteBack::Unneeded {
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
        Ok(()) => status::WriteBack::Pushed {
            rejected: rejected.revision.clone(),
            commit,
            branch,
        },
        Err(PushError::Refused(message)) => status::WriteBack::Refused {
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
    rejected: &[RejectedRevision],
) -> Option<status::WriteBack> {
    let pending: Vec<String> = rejected
        .iter()
        .filter(|r| r.revert.is_none())
        .map(|r| r.revision.clone())
        .collect();
    if pending.is_empty() {
        return None;
    }
    let (dir, revision) = (clone_dir(ctx, sync), head.to_owned());
    let reverts = tokio::task::spawn_blocking(move || {
        source::trailer(&dir, &revision, writeback::REJECTED_TRAILER)
    })
    .await
    .ok()??;
    pending
        .into_iter()
        .find(|r| *r == reverts)
        .map(|rejected| status::WriteBack::Pushed {
            rejected,
            commit: head.to_owned(),
            branch: sync.spec.git_ref.branch.clone().unwrap_or_default(),
        })
}

/// Removes a request annotation once handled, unless it changed meanwhile (a new request).
async fn remove_annotation(
    api: &Api<GitSync>,
    sync: &GitSync,
    annotation: &str,
    value: Option<&str>,
) -> Result<(), Error> {
    let path = format!("/metadata/annotations/{}", annotation.replace('/', "~1"));
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ]))
    .unwrap_or_default();
    match api
        .patch(
            &sync.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Changed or gone meanwhile: the next reconcile handles what is there.
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 404 => Ok(()),
        Err(source) => Err(Error::api(
            "removing the handled annotation of",
            "GitSync",
            &sync.name_any(),
        )(source)),
    }
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
    let (identity, client) = acting_as(ctx, sync)?;
    let described = format!("{namespace}/{}", reference.name);
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let secret = api
        .get_opt(&reference.name)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => SyncError::forbidden(format!(
                "reading Secret {described} (spec.secretRef): {} (weir acted as {})",
                status.message,
                identity.describe()
            )),
            e => SyncError::api(
                format!("reading Secret {described} (spec.secretRef): {e}"),
                &e,
            ),
        })?
        .ok_or_else(|| {
            SyncError::invalid(format!(
                "Secret {described} (spec.secretRef) does not exist"
            ))
        })?;
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
    let (identity, client) = acting_as(ctx, sync)?;
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let secret = match api.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(SyncError::invalid(format!(
                "{described} does not exist: create it with the age identity under a key ending in .agekey"
            )));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(SyncError::forbidden(format!(
                "reading {described}: {} (weir acted as {})",
                status.message,
                identity.describe()
            )));
        }
        Err(error) => {
            return Err(SyncError::api(
                format!("reading {described}: {error}"),
                &error,
            ));
        }
    };
    let data = secret.data.unwrap_or_default();
    Identities::from_secret(
        &described,
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
    .map(|identities| Some(Arc::new(identities)))
    .map_err(SyncError::invalid)
}

async fn announce(events: &Events, sync: &GitSync, attempt: &Attempt) {
    crate::runtime::publish(
        events,
        &sync.object_ref(&()),
        !matches!(attempt, Attempt::Applied { .. }),
        attempt.reason().into(),
        Some(&attempt.message()),
        "Sync",
    )
    .await;
}

/// Only the GitSync's own reads and status writes fail a reconcile (a failed fetch or apply
/// is recorded, and scheduled by `Step`): a refusal of those waits for a fix of the
/// controller's own RBAC.
pub fn error_policy(sync: Arc<GitSync>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    let backoff = Backoff {
        transient: FIRST_RETRY,
        lasting: MAX_BACKOFF,
    };
    crate::runtime::error::error_policy("GitSync", &sync.name_any(), error, backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_revision_new_from_the_ref_and_never_tried_waits_for_dependencies() {
        let status = |applied: Option<&str>, attempted: Option<&str>| GitSyncStatus {
            last_applied_revision: applied.map(str::to_owned),
            last_attempted_revision: attempted.map(str::to_owned),
            ..GitSyncStatus::default()
        };
        assert!(waits_for_dependencies(
            &Basis::Head,
            "v2",
            &status(Some("v1"), Some("v1"))
        ));
        assert!(
            !waits_for_dependencies(&Basis::Head, "v2", &status(Some("v1"), Some("v2"))),
            "a retry of an apply that stopped half way finishes it"
        );
        assert!(
            !waits_for_dependencies(&Basis::Head, "v2", &status(Some("v2"), Some("v2"))),
            "drift repair"
        );
        let pinned = Basis::Pinned { head: "v3".into() };
        assert!(!waits_for_dependencies(
            &pinned,
            "v2",
            &status(Some("v1"), Some("v1"))
        ));
    }

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

    #[test]
    fn a_failure_that_waits_for_a_fix_is_not_retried_like_an_outage() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (1..7)
            .map(|n| delay_until_fixed(minute, n).as_secs())
            .collect();
        assert_eq!(waits, vec![60, 120, 240, 300, 300, 300]);
        for n in 1..40 {
            assert!(
                delay_until_fixed(minute, n) >= delay_after(minute, n),
                "{n}"
            );
        }
        let hour = Duration::from_secs(3600);
        assert_eq!(delay_until_fixed(hour, 1), hour, "straight to the cap");
        assert_eq!(delay_until_fixed(hour, 40), hour);
        let second = Duration::from_secs(1);
        assert_eq!(delay_until_fixed(second, 3), Duration::from_secs(4));
    }
}
