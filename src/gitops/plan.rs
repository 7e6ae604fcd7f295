//! The GitSync controller's decisions, pure: from what one reconcile has observed and what
//! its actions so far returned, the next action, or how the reconcile ends (what to record,
//! which Events to publish, when to look again). The glue observes once, then loops
//! plan -> act until the plan finishes, feeding each action's outcome back in (`Done`); the
//! plan is computed again from scratch every time, so it is level-based on the status: a
//! restart at any moment decides again from what the API server shows.
//!
//! The order it keeps: a rollback never waits for Git (a due fetch is deferred while the
//! applied revision is rejected); a rejection is recorded before anything is rolled back;
//! a rejected revision is never applied; Git is written back only after the cluster is
//! safe, and only with a fresh view of the ref.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::health::{self, Workload};
use super::promotion::{self, Promoted};
use super::rollback::{self, Basis, Desired, Fetch, Judging, ManagedRollout, Step};
use super::status::{self, Attempt, Revert};
use crate::api::gitsync::{GitSyncStatus, PinnedRevision, PromotionState, RejectedRevision};

/// How often the applied revision's workloads are looked at while they are not healthy
/// yet: nothing watches them, so a failure or a timeout is noticed within this.
pub const HEALTH_POLL: Duration = Duration::from_secs(5);
/// The first retry after a failure comes after at most this long...
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// ... and retries slow down to at most this, or to the interval when that is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the spec says about this reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub generation: Option<i64>,
    /// `spec.interval`.
    pub interval: Duration,
    /// `spec.rollback.onFailure` and `spec.healthTimeout`.
    pub judging: Judging,
    /// `spec.rollback.writeBack.enabled`.
    pub write_back: bool,
}

/// The controller's memory of this GitSync at its current generation (kept in memory only:
/// a restarted controller syncs at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Previous {
    /// How long until it is due again; None: due now.
    pub wait: Option<Duration>,
    /// Retryable failures in a row.
    pub failures: u32,
    /// A new revision waited for the GitSyncs it depends on.
    pub waiting: bool,
}

/// Everything one reconcile has seen.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub settings: Settings,
    /// The status as read at the start of the reconcile.
    pub status: &'a GitSyncStatus,
    pub previous: Option<Previous>,
    /// `weir.dev/sync-requested-at`.
    pub sync_request: Option<&'a str>,
    /// `weir.dev/rollback-to`.
    pub pin_request: Option<&'a str>,
    /// Why each GitSync of `spec.dependsOn` is not ready (empty: none is waited for).
    pub dependencies: &'a [String],
    /// With `spec.promotion`: what the upstream lets this GitSync apply. It takes the place
    /// of the ref's head (which is still fetched, so the clone holds the revision).
    pub promotion: Option<&'a Promoted>,
    /// The managed Rollouts as read now.
    pub rollouts: &'a [ManagedRollout],
    /// The applied revision's workloads, read while it awaits its verdict.
    pub workloads: &'a [Workload],
    pub now: DateTime<Utc>,
    /// A fraction in [0, 1), different for each GitSync and attempt: where in the first
    /// tenth of the interval the next sync falls, so many GitSyncs do not fetch in step.
    pub jitter: f64,
    /// What this reconcile's actions returned so far.
    pub done: &'a Done,
}

/// How the fetch of this reconcile went.
#[derive(Clone, Debug, PartialEq)]
pub enum FetchOutcome {
    /// The ref points at this commit.
    Head(String),
    /// Nothing fetched; the attempt to record.
    Failed(Box<Attempt>),
    /// Over its host's rate: its turn comes after this long. Nothing is recorded.
    RateLimited(Duration),
    /// A managed Rollout aborted while the fetch ran: given up, to roll back first.
    Deferred,
}

/// The outcomes of the actions one reconcile has carried out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Done {
    pub fetch: Option<FetchOutcome>,
    /// The pin request, checked against the clone.
    pub pin: Option<Result<PinnedRevision, String>>,
    /// The rejection recorded (status first, then the Event).
    pub rejection_recorded: bool,
    pub applied: Option<Attempt>,
    /// The workloads of the revision applied just now, read again.
    pub applied_workloads: Option<Vec<Workload>>,
    /// A write-back pushed, or a revert recognized on the fetched head (None: none).
    pub written: Option<Option<Revert>>,
}

/// One thing for the glue to do, whose outcome it feeds back in `Done`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Take a fetch from the host's rate and fetch the ref (`Done::fetch`).
    Fetch,
    /// Check that the clone holds the pinned commit (`Done::pin`).
    VerifyPin(PinnedRevision),
    /// Record the rejection in the status, then publish the Event (`Done::rejection_recorded`).
    RecordRejection {
        rejected: RejectedRevision,
        last_good: Option<String>,
    },
    /// Render the revision from the clone and apply it (`Done::applied`).
    Apply { revision: String, basis: Basis },
    /// Read the workloads of what was just applied (`Done::applied_workloads`).
    ReadWorkloads {
        inventory: Vec<crate::api::gitsync::InventoryEntry>,
    },
    /// Build the revert of `rejected` on `head` and push it (`Done::written`).
    WriteBack {
        head: String,
        good: String,
        rejected: RejectedRevision,
    },
    /// Whether the fetched head is weir's revert of one of `pending` (`Done::written`).
    RecognizeRevert { head: String, pending: Vec<String> },
}

/// What the next look-in should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Due again after this long.
    pub next: Duration,
    pub failures: u32,
    /// A new revision waits for its dependencies: due as soon as they are ready.
    pub waiting: bool,
}

/// An Event to publish once the status is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub action: &'static str,
}

/// What a reconcile makes of the status; applied again onto a fresh read after a conflict,
/// so nothing it says is lost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub attempt: Option<Attempt>,
    /// The last good revision and the pin, as decided.
    pub decided: Option<(Option<String>, Option<PinnedRevision>)>,
    /// The ref's revision, when this reconcile fetched it.
    pub fetched: Option<String>,
    pub written: Option<Revert>,
    /// The sync request acted on.
    pub handled_request: Option<Option<String>>,
    /// What the applied revision's workloads still wait for.
    pub waiting: Option<String>,
    /// With `spec.promotion`: the revision that waits upstream, and for what.
    pub promotion: Option<Option<PromotionState>>,
}

impl Record {
    pub fn apply(&self, status: &mut GitSyncStatus, generation: Option<i64>, now: DateTime<Utc>) {
        let before = status.conditions.clone();
        if let Some(attempt) = &self.attempt {
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
        if let Some((last_good, pinned)) = &self.decided {
            if let Some(good) = last_good {
                promotion::note_good(status, good, now);
            }
            status.last_good_revision.clone_from(last_good);
            status.pinned.clone_from(pinned);
        }
        if let Some(pending) = &self.promotion {
            status.promotion.clone_from(pending);
        }
        if let Some(fetched) = &self.fetched {
            status.last_fetched_revision = Some(fetched.clone());
        }
        if let Some(written) = &self.written {
            status::wrote_back(status, written, generation, now);
        }
        if let Some(requested) = &self.handled_request {
            // The request acted on; one that arrived meanwhile stays unhandled.
            status.last_handled_sync_request.clone_from(requested);
        }
        status::waiting_for(status, self.waiting.as_deref(), generation, now);
        // A condition removed and set again within this one record did not change.
        crate::conditions::keep_transition_times(&before, &mut status.conditions);
    }
}

/// How a reconcile ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// What to record in one status write (None: nothing to record).
    pub record: Option<Record>,
    /// The new schedule (None: the one there stands).
    pub schedule: Option<Schedule>,
    /// When to reconcile again.
    pub requeue: Duration,
    /// Published once the status is written.
    pub events: Vec<Event>,
    /// The pin request to remove once the status is written (its value, so a newer one
    /// stays).
    pub remove_pin: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Act(Box<Action>),
    Finish(Box<Finish>),
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

/// Whether what is known now rejects the applied revision (a Rollout of it aborted, a
/// workload of it failed or timed out): then the cluster goes back to the last good revision
/// before anything waits for Git, and a fetch under way is given up.
pub fn must_roll_back(
    status: &GitSyncStatus,
    rollouts: &[ManagedRollout],
    workloads: &[Workload],
    judging: &Judging,
    now: DateTime<Utc>,
) -> bool {
    known_head(status).is_some_and(|known| {
        rollback::decide(known, status, rollouts, workloads, judging, now)
            .rejected
            .is_some()
    })
}

/// Whether a rejection is recorded but the cluster never went back (a controller that
/// stopped between the two): the rollback goes first then too, but only once before a
/// fetch, since a rollback that fails (its revision not in a new replica's empty clone)
/// may need that fetch.
fn rollback_unfinished(
    status: &GitSyncStatus,
    rollouts: &[ManagedRollout],
    workloads: &[Workload],
    judging: &Judging,
    now: DateTime<Utc>,
) -> bool {
    let Some(known) = known_head(status) else {
        return false;
    };
    let unfinished = |good: &String| {
        status.last_applied_revision.as_ref() != Some(good)
            && status.last_attempted_revision.as_ref() != Some(good)
    };
    matches!(
        rollback::decide(known, status, rollouts, workloads, judging, now).desired,
        Desired::RollBack(good) if unfinished(&good)
    )
}

/// Where the ref pointed at the last fetch (or the applied revision, before any).
fn known_head(status: &GitSyncStatus) -> Option<&String> {
    status
        .last_fetched_revision
        .as_ref()
        .or(status.last_applied_revision.as_ref())
}

/// Whether applying `revision` waits for the GitSyncs this one depends on: only a revision
/// new from the ref does. A rollback, a pin and drift repair of what is applied never wait,
/// nor does a retry of a revision already tried (its apply may have stopped half way, and
/// waiting would leave the cluster half at it).
pub fn waits_for_dependencies(basis: &Basis, revision: &str, status: &GitSyncStatus) -> bool {
    *basis == Basis::Head
        && status.last_applied_revision.as_deref() != Some(revision)
        && status.last_attempted_revision.as_deref() != Some(revision)
}

/// The next action of the reconcile `input` describes, or how it ends.
pub fn plan(input: &Input) -> Plan {
    match decide(input) {
        Ok(finish) => Plan::Finish(Box::new(finish)),
        Err(action) => Plan::Act(action),
    }
}

/// The reconcile's course; `Err` is the action whose outcome it needs next.
fn decide(input: &Input) -> Result<Finish, Box<Action>> {
    let Input {
        settings,
        status,
        previous,
        done,
        now,
        ..
    } = *input;
    let interval = settings.interval;
    // A new value of the request annotation (the push webhook's) skips the wait, and so
    // does a request to pin a revision.
    let asked = input
        .sync_request
        .is_some_and(|r| status.last_handled_sync_request.as_deref() != Some(r));
    // A revision that waited for its dependencies goes as soon as they are ready (their
    // changes wake this GitSync), not at the next interval.
    let dependencies_came = previous.is_some_and(|p| p.waiting) && input.dependencies.is_empty();
    let wait = previous
        .and_then(|p| p.wait)
        .filter(|_| !asked && input.pin_request.is_none() && !dependencies_came);
    let due = wait.is_none();

    // Rolling back never waits for Git: when the applied revision is rejected, a due fetch
    // (which may queue for a slot and then take up to --fetch-timeout) waits until the
    // cluster is back on the last good revision, and runs right after.
    let deferred = match &done.fetch {
        Some(FetchOutcome::Deferred) => true,
        Some(_) => false,
        None => {
            let (rollouts, workloads) = (input.rollouts, input.workloads);
            let first_try = previous.is_none_or(|p| p.failures == 0);
            due && (must_roll_back(status, rollouts, workloads, &settings.judging, now)
                || first_try
                    && rollback_unfinished(status, rollouts, workloads, &settings.judging, now))
        }
    };
    // A revision promoted from upstream that was never tried here is fetched first: the
    // clone may not hold it yet.
    let promoted_new = matches!(input.promotion, Some(Promoted::Revision(r))
        if status.last_applied_revision.as_ref() != Some(r)
            && status.last_attempted_revision.as_ref() != Some(r));
    if (due || promoted_new) && !deferred && done.fetch.is_none() {
        return Err(Box::new(Action::Fetch));
    }
    let rate_limited = match &done.fetch {
        Some(FetchOutcome::RateLimited(turn)) => Some(*turn),
        _ => None,
    };
    let wait = wait.or(rate_limited);
    let (fetched_head, fetch_failure) = match &done.fetch {
        Some(FetchOutcome::Head(head)) => (Some(head.clone()), None),
        Some(FetchOutcome::Failed(attempt)) => (None, Some((**attempt).clone())),
        _ => (None, None),
    };
    let fetch_state = match &done.fetch {
        Some(FetchOutcome::Head(_)) => Fetch::Fetched,
        Some(FetchOutcome::Failed(_)) => Fetch::Failed,
        _ => Fetch::NotDue,
    };
    // Where the ref points, as far as is known: fetched now, or at the last fetch.
    let ref_head = fetched_head
        .clone()
        .or_else(|| status.last_fetched_revision.clone())
        .or_else(|| status.last_applied_revision.clone());
    // Promoted: the upstream's choice stands in for the ref's head; holding, what is applied.
    let (head, pending) = match input.promotion {
        None => (ref_head.clone(), None),
        Some(Promoted::Revision(revision)) => (Some(revision.clone()), Some(None)),
        Some(Promoted::Hold { pending }) => {
            (status.last_applied_revision.clone(), Some(pending.clone()))
        }
    };
    let soaked = |requeue: Duration| match &pending {
        Some(Some(PromotionState {
            until: Some(until), ..
        })) => requeue.min(
            (crate::time::from_k8s(until) - now)
                .to_std()
                .unwrap_or(Duration::ZERO),
        ),
        _ => requeue,
    };
    let Some(head) = head else {
        // Nothing fetched, ever (or nothing promoted yet): only the failure to record.
        let Some(failure) = fetch_failure else {
            let record = Record {
                fetched: fetched_head.clone(),
                promotion: pending.clone(),
                ..Record::default()
            };
            let changed = record.fetched.is_some() || record.promotion.is_some();
            return Ok(Finish {
                record: changed.then_some(record),
                schedule: None,
                requeue: soaked(wait.unwrap_or(interval)),
                events: Vec::new(),
                remove_pin: None,
            });
        };
        let (failures, next) = after(&failure, previous, interval, input.jitter);
        let record = Record {
            attempt: Some(failure),
            promotion: pending,
            ..Record::default()
        };
        return Ok(finish(input, record, next, failures, false, None));
    };

    // A pin asked for by hand, checked against what is known and then against the clone;
    // its annotation goes either way.
    let mut view = status.clone();
    let mut pin_refused = None;
    if let Some(request) = input.pin_request {
        match (rollback::pin(request, &head, status, now), &done.pin) {
            (Err(message), _) => pin_refused = Some(message),
            (Ok(pinned), None) => return Err(Box::new(Action::VerifyPin(pinned))),
            (Ok(_), Some(Err(message))) => pin_refused = Some(message.clone()),
            (Ok(_), Some(Ok(pinned))) => view.pinned = Some(pinned.clone()),
        }
    }
    let decision = rollback::decide(
        &head,
        &view,
        input.rollouts,
        input.workloads,
        &settings.judging,
        now,
    );

    // A rejection is recorded before anything is rolled back: after a restart in between,
    // the revision is still known to be out.
    if let Some(rejected) = &decision.rejected {
        if !done.rejection_recorded {
            return Err(Box::new(Action::RecordRejection {
                rejected: rejected.clone(),
                last_good: decision.last_good.clone(),
            }));
        }
        view.rejected_revisions.push(rejected.clone());
    }

    let attempt = match rollback::step(
        &decision,
        &head,
        status,
        &view.rejected_revisions,
        fetch_state,
    ) {
        Step::Apply { revision, basis } => {
            if waits_for_dependencies(&basis, &revision, status) && !input.dependencies.is_empty() {
                Some(Attempt::Waiting {
                    revision,
                    waiting_for: input.dependencies.to_vec(),
                })
            } else {
                match &done.applied {
                    None => return Err(Box::new(Action::Apply { revision, basis })),
                    Some(applied) => Some(applied.clone()),
                }
            }
        }
        Step::RecordFetchFailure => fetch_failure,
        Step::Hold(rejected) => Some(Attempt::Held(rejected)),
        Step::Nothing => None,
    };

    // Git is written after the cluster is safe, and only with a fresh view of the ref: a
    // newer commit there wins over a pending revert.
    let write_back = settings.write_back && fetch_state == Fetch::Fetched;
    let written = match (&decision.desired, &attempt) {
        (
            Desired::RollBack(good),
            Some(Attempt::Applied {
                basis: Basis::RolledBack(rejected),
                ..
            }),
        ) if write_back && rejected.revert.is_none() => match &done.written {
            None => {
                return Err(Box::new(Action::WriteBack {
                    head,
                    good: good.clone(),
                    rejected: rejected.clone(),
                }));
            }
            Some(written) => written.clone(),
        },
        // A revert pushed by a controller that died before recording it: the branch's new
        // tip says so, and it is recorded now rather than pushed again.
        _ if write_back => {
            let pending: Vec<String> = view
                .rejected_revisions
                .iter()
                .filter(|r| r.revert.is_none())
                .map(|r| r.revision.clone())
                .collect();
            match &done.written {
                _ if pending.is_empty() => None,
                None => return Err(Box::new(Action::RecognizeRevert { head, pending })),
                Some(written) => written.clone(),
            }
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
            let Some(workloads) = &done.applied_workloads else {
                return Err(Box::new(Action::ReadWorkloads {
                    inventory: inventory.clone(),
                }));
            };
            // Polled even with nothing to wait for: the next look makes it good. A revision
            // applied again past its timeout (drift repair with rollback.onFailure off) is
            // not: its wait has run out.
            let again = status.last_applied_revision.as_deref() == Some(revision.as_str());
            let expired =
                again && rollback::timed_out(status, settings.judging.health_timeout, now);
            (health::waiting(revision, workloads), !expired)
        }
        Some(Attempt::Applied { .. }) => (None, false),
        // Past healthTimeout nothing more comes of a look (with rollback.onFailure off,
        // nothing rejects): the normal schedule.
        _ => (decision.waiting.clone(), decision.poll),
    };

    let (mut failures, mut next) = match &attempt {
        Some(attempt) => after(attempt, previous, interval, input.jitter),
        // Nothing attempted: the schedule stands.
        None => (previous.map_or(0, |p| p.failures), wait.unwrap_or(interval)),
    };
    let revert_pending = settings.write_back
        && matches!(
            &attempt,
            Some(Attempt::Applied { basis: Basis::RolledBack(rejected), .. }) if rejected.revert.is_none()
        );
    if (revert_pending && written.is_none()) || deferred {
        // Rolled back without a fresh fetch: fetch now (and write the revert).
        next = Duration::ZERO;
    }
    match &written {
        // The revert is on the branch: fetch it soon, so the GitSync follows Git again.
        Some(Revert::Pushed { .. } | Revert::Unneeded { .. }) => next = next.min(FIRST_RETRY),
        Some(_) => {
            failures = previous.map_or(0, |p| p.failures) + 1;
            next = delay_after(interval, failures);
        }
        None => {}
    }
    if let Some(turn) = rate_limited {
        // Whatever else this reconcile did, the fetch comes at its turn.
        next = next.min(turn);
    }
    let scheduled = attempt.is_some() || written.is_some();
    let waits_for_dependencies = matches!(attempt, Some(Attempt::Waiting { .. }));
    let record = Record {
        attempt,
        decided: Some((
            decision.last_good,
            match &decision.desired {
                Desired::Pinned(_) => view.pinned.clone(),
                _ => None,
            },
        )),
        fetched: (fetch_state == Fetch::Fetched).then(|| ref_head.unwrap_or(head)),
        written,
        // A sync request waits with the deferred or rate-limited fetch: it is handled by
        // the fetch that comes after.
        handled_request: (asked && !deferred && rate_limited.is_none())
            .then(|| input.sync_request.map(str::to_owned)),
        waiting,
        promotion: pending.clone(),
    };
    let mut finish = finish(
        input,
        record,
        next,
        failures,
        waits_for_dependencies,
        input.pin_request,
    );
    if !scheduled {
        finish.schedule = None;
    }
    if poll {
        finish.requeue = finish.requeue.min(HEALTH_POLL);
    }
    finish.requeue = soaked(finish.requeue);
    if let Some(message) = pin_refused {
        finish.events.push(Event {
            warning: true,
            reason: "InvalidRollbackRequest".into(),
            message,
            action: "Pin",
        });
    }
    Ok(finish)
}

/// Failures in a row and the wait after an attempt.
fn after(
    attempt: &Attempt,
    previous: Option<Previous>,
    interval: Duration,
    jitter: f64,
) -> (u32, Duration) {
    let failures = match attempt {
        // Waiting backs off like a failure, from a few seconds to the interval; the
        // dependencies' own changes cut it short.
        Attempt::FetchFailed(_) | Attempt::ApplyFailed { .. } | Attempt::Waiting { .. } => {
            previous.map_or(0, |p| p.failures) + 1
        }
        _ => 0,
    };
    let next = match failures {
        0 => interval + interval.mul_f64(jitter.clamp(0.0, 1.0) / 10.0),
        n if attempt.waits_for_a_fix() => delay_until_fixed(interval, n),
        n => delay_after(interval, n),
    };
    (failures, next)
}

/// The end of a reconcile that records `record`: its schedule, and the Events its record
/// makes (told when Ready or the applied revision changes, a write-back when its outcome
/// does).
fn finish(
    input: &Input,
    record: Record,
    next: Duration,
    failures: u32,
    waiting: bool,
    remove_pin: Option<&str>,
) -> Finish {
    let original = input.status;
    let mut recorded = original.clone();
    record.apply(&mut recorded, input.settings.generation, input.now);
    let mut events = Vec::new();
    let ready = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if let Some(attempt) = &record.attempt
        && (ready(original) != ready(&recorded)
            || original.last_applied_revision != recorded.last_applied_revision)
    {
        events.push(Event {
            warning: !matches!(attempt, Attempt::Applied { .. }),
            reason: attempt.reason().into(),
            message: attempt.message(),
            action: "Sync",
        });
    }
    // The revision applied already, applied again, and some of its objects needed it: they
    // had drifted in the cluster.
    if let Some(Attempt::Applied {
        revision,
        changed,
        basis: Basis::Head,
        ..
    }) = &record.attempt
        && *changed > 0
        && original.last_applied_revision.as_deref() == Some(revision.as_str())
    {
        events.push(Event {
            warning: false,
            reason: "DriftRepaired".into(),
            message: format!(
                "{changed} object(s) of revision {} had drifted in the cluster and were applied again",
                status::short(revision)
            ),
            action: "Sync",
        });
    }
    let revert = |s: &GitSyncStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::REVERT_PUSHED)
            .cloned()
    };
    if let Some(condition) = revert(&recorded).filter(|now| {
        revert(original).is_none_or(|before| {
            (&before.status, &before.reason, &before.message)
                != (&now.status, &now.reason, &now.message)
        })
    }) {
        events.push(Event {
            warning: condition.status != "True",
            reason: condition.reason,
            message: condition.message,
            action: "WriteBack",
        });
    }
    Finish {
        record: Some(record),
        schedule: Some(Schedule {
            next,
            failures,
            waiting,
        }),
        requeue: next,
        events,
        remove_pin: remove_pin.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
