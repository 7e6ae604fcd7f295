use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::api::gitsync::{InventoryEntry, RevisionRecord};
use crate::api::rollout::AbortCause;
use crate::gitops::error::SyncError;
use crate::gitops::health::Health;
use crate::time::to_k8s;

fn at() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).single().expect("time")
}

/// A full commit SHA (pins take only those).
fn sha(n: u8) -> String {
    format!("{n:040x}")
}

fn settings(on_failure: bool, write_back: bool) -> Settings {
    Settings {
        generation: Some(1),
        interval: Duration::from_secs(60),
        judging: Judging {
            on_failure,
            health_timeout: chrono::Duration::minutes(5),
        },
        write_back,
    }
}

fn rejection(revision: &str, reverted: bool) -> RejectedRevision {
    RejectedRevision {
        revision: revision.to_owned(),
        reason: "AnalysisFailed".into(),
        rollout: Some("shop/web".into()),
        object: None,
        message: None,
        metric: None,
        value: None,
        rejected_at: to_k8s(at()),
        revert: reverted.then(|| "f".repeat(40)),
    }
}

fn applied_history(revision: &str) -> RevisionRecord {
    RevisionRecord {
        revision: revision.to_owned(),
        subject: String::new(),
        committed_at: None,
        time: to_k8s(at()),
        outcome: "Applied".into(),
    }
}

fn aborted_rollout(revision: &str) -> ManagedRollout {
    ManagedRollout {
        name: "shop/web".into(),
        applied_revision: Some(revision.to_owned()),
        canary_revision: Some(revision.to_owned()),
        healthy: false,
        aborted: Some(AbortCause {
            reason: "AnalysisFailed".into(),
            metric: None,
            value: None,
        }),
        aborted_at: Some(at() + chrono::Duration::seconds(30)),
    }
}

/// How the world answers the actions of one reconcile.
#[derive(Clone, Debug)]
struct World {
    /// 0: the ref points at `head`; 1: the fetch fails; 2: over the host's rate; 3: a
    /// managed Rollout aborts while the fetch runs.
    fetch: u8,
    head: u8,
    pin_in_clone: bool,
    apply_ok: bool,
    /// 0: pushed, 1: refused, 2: failed, 3: unneeded.
    write: u8,
    revert_on_head: bool,
    workloads_healthy: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        0u8..4,
        0u8..5,
        any::<bool>(),
        any::<bool>(),
        0u8..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(fetch, head, pin_in_clone, apply_ok, write, revert_on_head, workloads_healthy)| {
                World {
                    fetch,
                    head,
                    pin_in_clone,
                    apply_ok,
                    write,
                    revert_on_head,
                    workloads_healthy,
                }
            },
        )
}

/// What one reconcile sees before it acts.
#[derive(Clone, Debug)]
struct Scene {
    status: GitSyncStatus,
    settings: Settings,
    previous: Option<Previous>,
    sync_request: Option<String>,
    pin_request: Option<String>,
    dependencies: Vec<String>,
    rollouts: Vec<ManagedRollout>,
    /// The applied revision's workloads as read.
    workloads: Vec<Workload>,
}

/// One reconcile run against `world`: every action in order, and how it ended. Checks on
/// the way that planning is deterministic and that no action is asked for twice.
fn run(scene: &Scene, world: &World) -> Result<(Vec<Action>, Finish), TestCaseError> {
    run_at(scene, world, at() + chrono::Duration::seconds(60), false)
}

/// `run` at `now`; with `clone_empty`, the clone holds no revision until this reconcile
/// fetches (a new replica's, say), so an apply or a pin before that fails.
fn run_at(
    scene: &Scene,
    world: &World,
    now: DateTime<Utc>,
    clone_empty: bool,
) -> Result<(Vec<Action>, Finish), TestCaseError> {
    let mut done = Done::default();
    let mut rollouts = scene.rollouts.clone();
    let mut actions: Vec<Action> = Vec::new();
    for _ in 0..10 {
        let input = Input {
            settings: scene.settings,
            status: &scene.status,
            previous: scene.previous,
            sync_request: scene.sync_request.as_deref(),
            pin_request: scene.pin_request.as_deref(),
            dependencies: &scene.dependencies,
            promotion: None,
            rollouts: &rollouts,
            workloads: &scene.workloads,
            now,
            jitter: 0.5,
            done: &done,
        };
        let planned = plan(&input);
        prop_assert_eq!(&plan(&input), &planned, "planning is deterministic");
        let action = match planned {
            Plan::Finish(finish) => return Ok((actions, *finish)),
            Plan::Act(action) => *action,
        };
        prop_assert!(
            !actions
                .iter()
                .any(|a| std::mem::discriminant(a) == std::mem::discriminant(&action)),
            "{:?} asked for twice: {:?}",
            action,
            actions
        );
        actions.push(action.clone());
        match action {
            Action::Fetch => {
                done.fetch = Some(match world.fetch {
                    0 => FetchOutcome::Head(sha(world.head)),
                    1 => FetchOutcome::Failed(Box::new(Attempt::FetchFailed(
                        SyncError::transient("no answer"),
                    ))),
                    2 => FetchOutcome::RateLimited(Duration::from_secs(7)),
                    _ => {
                        // The glue gives the fetch up only when the abort it heard of
                        // rejects the applied revision.
                        if let Some(applied) = &scene.status.last_applied_revision {
                            rollouts.push(aborted_rollout(applied));
                        }
                        if must_roll_back(
                            &scene.status,
                            &rollouts,
                            &scene.workloads,
                            &scene.settings.judging,
                            now,
                        ) {
                            FetchOutcome::Deferred
                        } else {
                            FetchOutcome::Head(sha(world.head))
                        }
                    }
                })
            }
            Action::VerifyPin(pinned) => {
                let fetched = matches!(done.fetch, Some(FetchOutcome::Head(_)));
                done.pin = Some(match world.pin_in_clone && (fetched || !clone_empty) {
                    true => Ok(pinned),
                    false => Err("not in the clone".into()),
                })
            }
            Action::RecordRejection { .. } => done.rejection_recorded = true,
            Action::Apply { revision, basis } => {
                let inventory = vec![InventoryEntry {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("shop".into()),
                    name: "web".into(),
                }];
                let fetched = matches!(done.fetch, Some(FetchOutcome::Head(_)));
                done.applied = Some(match world.apply_ok {
                    _ if clone_empty && !fetched => Attempt::FetchFailed(SyncError::transient(
                        format!("revision {revision} is not in the clone"),
                    )),
                    true => Attempt::Applied {
                        revision,
                        subject: "a change".into(),
                        committed: None,
                        inventory,
                        objects: 1,
                        changed: 0,
                        basis,
                    },
                    false => Attempt::ApplyFailed {
                        revision,
                        subject: "a change".into(),
                        committed: None,
                        inventory,
                        error: SyncError::forbidden("refused"),
                    },
                })
            }
            Action::ReadWorkloads { .. } => {
                done.applied_workloads = Some(vec![Workload {
                    name: "Deployment shop/web".into(),
                    revision: None,
                    health: match world.workloads_healthy {
                        true => Health::Healthy,
                        false => Health::Progressing("1 of 2 replicas available".into()),
                    },
                }])
            }
            Action::WriteBack { rejected, good, .. } => {
                let rejected = rejected.revision;
                done.written = Some(Some(match world.write {
                    0 => Revert::Pushed {
                        rejected,
                        commit: "e".repeat(40),
                        branch: "main".into(),
                    },
                    1 => Revert::Refused {
                        rejected,
                        message: "the branch moved".into(),
                    },
                    2 => Revert::Failed {
                        rejected,
                        message: "no answer".into(),
                    },
                    _ => Revert::Unneeded { rejected, good },
                }))
            }
            Action::RecognizeRevert { head, pending } => {
                done.written = Some(world.revert_on_head.then(|| Revert::Pushed {
                    rejected: pending[0].clone(),
                    commit: head,
                    branch: "main".into(),
                }))
            }
        }
    }
    Err(TestCaseError::fail(format!(
        "the plan did not finish: {actions:?}"
    )))
}

fn revision() -> impl Strategy<Value = Option<String>> {
    prop::option::of((0u8..5).prop_map(sha))
}

fn managed() -> impl Strategy<Value = ManagedRollout> {
    (revision(), revision(), any::<bool>(), any::<bool>()).prop_map(
        |(applied, canary, healthy, aborted)| ManagedRollout {
            name: "shop/web".into(),
            applied_revision: applied,
            canary_revision: canary,
            healthy,
            aborted: aborted.then(|| AbortCause {
                reason: "AnalysisFailed".into(),
                metric: None,
                value: None,
            }),
            aborted_at: aborted.then(|| at() + chrono::Duration::seconds(30)),
        },
    )
}

fn workloads() -> impl Strategy<Value = Vec<Workload>> {
    let health = prop_oneof![
        Just(Health::Healthy),
        Just(Health::Progressing("1 of 2 replicas available".into())),
        prop::option::of(-60i64..60).prop_map(|offset| Health::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            message: "Progressing is False".into(),
            since: offset.map(|s| at() + chrono::Duration::seconds(s)),
        }),
    ];
    prop::collection::vec(
        (revision(), health).prop_map(|(revision, health)| Workload {
            name: "Deployment shop/api".into(),
            revision,
            health,
        }),
        0..3,
    )
}

fn previous() -> impl Strategy<Value = Option<Previous>> {
    prop::option::of(
        (prop::option::of(1u64..120), 0u32..4, any::<bool>()).prop_map(
            |(wait, failures, waiting)| Previous {
                wait: wait.map(Duration::from_secs),
                failures,
                waiting,
            },
        ),
    )
}

prop_compose! {
    fn scene()(
        applied in revision(),
        attempted in revision(),
        fetched in revision(),
        good in revision(),
        rejected in prop::collection::btree_set((0u8..5).prop_map(sha), 0..3),
        reverted in any::<bool>(),
        recorded in any::<bool>(),
        on_failure in any::<bool>(),
        write_back in any::<bool>(),
        previous in previous(),
        sync_request in prop::option::of(Just("2026-12-04T00:00:00Z".to_owned())),
        handled in any::<bool>(),
        pin_request in prop::option::of(prop_oneof![(0u8..5).prop_map(sha), Just("main".to_owned())]),
        waits_for_dependencies in any::<bool>(),
        rollouts in prop::collection::vec(managed(), 0..3),
        workloads in workloads(),
    ) -> Scene {
        let mut status = GitSyncStatus {
            last_applied_revision: applied.clone(),
            last_attempted_revision: attempted,
            last_fetched_revision: fetched,
            last_good_revision: good,
            rejected_revisions: rejected.iter().map(|r| rejection(r, reverted)).collect(),
            last_handled_sync_request: sync_request.clone().filter(|_| handled),
            ..GitSyncStatus::default()
        };
        if let (true, Some(applied)) = (recorded, &applied) {
            status.history.push(applied_history(applied));
        }
        Scene {
            status,
            settings: settings(on_failure, write_back),
            previous,
            sync_request,
            pin_request,
            dependencies: match waits_for_dependencies {
                true => vec!["GitSync shop/db is not Ready".into()],
                false => Vec::new(),
            },
            rollouts,
            workloads,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever the status, the Rollouts, the requests and the world's answers: no revision
    /// rejected before or during the reconcile is applied; a rejection is recorded before
    /// anything is applied; Git is written back only after the rollback it reverts was
    /// applied, from a fresh fetch; a new revision from the ref waits for its dependencies;
    /// and the reconcile ends.
    #[test]
    fn a_rejected_revision_is_never_applied(scene in scene(), world in world()) {
        let (actions, finish) = run(&scene, &world)?;
        let mut rejected: Vec<String> = scene
            .status
            .rejected_revisions
            .iter()
            .map(|r| r.revision.clone())
            .collect();
        rejected.extend(actions.iter().filter_map(|a| match a {
            Action::RecordRejection { rejected, .. } => Some(rejected.revision.clone()),
            _ => None,
        }));
        let position = |wanted: fn(&Action) -> bool| actions.iter().position(wanted);
        for action in &actions {
            if let Action::Apply { revision, basis } = action {
                prop_assert!(!rejected.contains(revision), "applied rejected {revision}: {actions:?}");
                if *basis == Basis::Head
                    && scene.status.last_applied_revision.as_ref() != Some(revision)
                    && scene.status.last_attempted_revision.as_ref() != Some(revision)
                {
                    prop_assert!(scene.dependencies.is_empty(), "a new revision did not wait for its dependencies");
                }
            }
        }
        if let (Some(rejection), Some(apply)) = (
            position(|a| matches!(a, Action::RecordRejection { .. })),
            position(|a| matches!(a, Action::Apply { .. })),
        ) {
            prop_assert!(rejection < apply, "applied before the rejection was recorded");
        }
        if let Some(write_back) = position(|a| matches!(a, Action::WriteBack { .. })) {
            prop_assert!(scene.settings.write_back);
            prop_assert!(world.fetch != 1 && world.fetch != 2);
            prop_assert!(matches!(position(|a| matches!(a, Action::Fetch)), Some(f) if f < write_back));
            prop_assert!(world.apply_ok);
            let rolled_back = matches!(
                actions.iter().find(|a| matches!(a, Action::Apply { .. })),
                Some(Action::Apply { basis: Basis::RolledBack(_), .. })
            );
            prop_assert!(rolled_back, "a write-back without a rollback: {:?}", actions);
        }
        // What the reconcile records never calls a rejected revision good.
        if let Some(Record { decided: Some((Some(good), _)), .. }) = &finish.record {
            prop_assert!(!rejected.contains(good));
        }
    }

    /// The applied revision's own canary aborted, and an earlier revision was good: this
    /// reconcile rejects it (unless that is recorded already) and goes back to the good one
    /// before any fetch, whatever the schedule, the requests and the dependencies say. The
    /// one exception: a rejection recorded earlier whose rollback then failed fetches first
    /// (the good revision may be missing from the clone), and still rolls back unless the
    /// ref moved on to a newer revision.
    #[test]
    fn a_rollback_is_never_skipped(
        scene in scene(),
        world in world(),
        already_rejected in any::<bool>(),
        fetched_is_applied in any::<bool>(),
        attempted_is_applied in any::<bool>(),
    ) {
        let (applied, good) = (sha(1), sha(0));
        let mut scene = scene;
        scene.settings.judging.on_failure = true;
        scene.pin_request = None;
        scene.status.pinned = None;
        scene.status.last_applied_revision = Some(applied.clone());
        scene.status.last_good_revision = Some(good.clone());
        scene.status.last_fetched_revision = fetched_is_applied.then(|| applied.clone());
        scene.status.last_attempted_revision = attempted_is_applied.then(|| applied.clone());
        scene.status.rejected_revisions.retain(|r| r.revision != good && r.revision != applied);
        if already_rejected {
            scene.status.rejected_revisions.push(rejection(&applied, false));
        }
        scene.rollouts.retain(|r| r.aborted.is_none());
        scene.rollouts.push(aborted_rollout(&applied));
        scene.workloads.clear();

        let (actions, finish) = run(&scene, &world)?;
        let apply = actions.iter().position(|a| matches!(
            a,
            Action::Apply { revision, basis: Basis::RolledBack(rejected) }
                if *revision == good && rejected.revision == applied
        ));
        let retried = already_rejected && scene.previous.is_some_and(|p| p.failures > 0);
        if retried && actions.first() == Some(&Action::Fetch) {
            let moved_on = matches!(world.fetch, 0 | 3) && sha(world.head) != applied;
            match moved_on {
                true => prop_assert!(apply.is_none()),
                false => prop_assert!(apply.is_some(), "no rollback: {actions:?}"),
            }
            return Ok(());
        }
        prop_assert!(apply.is_some(), "no rollback: {actions:?}");
        prop_assert!(!actions.iter().any(|a| matches!(a, Action::Fetch)), "fetched first: {actions:?}");
        let recorded = actions.iter().position(|a| matches!(
            a,
            Action::RecordRejection { rejected, .. } if rejected.revision == applied
        ));
        match already_rejected {
            true => prop_assert!(recorded.is_none(), "rejected twice"),
            false => prop_assert!(matches!(recorded, Some(r) if Some(r) < apply)),
        }
        if world.apply_ok && scene.settings.write_back {
            prop_assert_eq!(finish.requeue, Duration::ZERO, "the revert waits for a fetch that comes at once");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Reconciles in a row, each seeing what the last recorded (or not: a crash between act
    /// and status write, which also loses the in-memory schedule), time moving on, on a
    /// replica whose clone may start empty: no revision rejected so far is ever applied,
    /// and the controller never spins (coming back at once more than twice in a row
    /// without fetching).
    #[test]
    fn reconciles_in_a_row_never_apply_a_rejected_revision_nor_spin(
        scene in scene(),
        worlds in prop::collection::vec((world(), any::<bool>()), 6),
        clone_empty in any::<bool>(),
    ) {
        let mut status = scene.status.clone();
        let mut previous = scene.previous;
        let mut rejected: Vec<String> =
            status.rejected_revisions.iter().map(|r| r.revision.clone()).collect();
        let mut fetched_ever = false;
        let mut spins = 0;
        let mut now = at();
        for (world, crash) in &worlds {
            let this = Scene { status: status.clone(), previous, ..scene.clone() };
            let (actions, finish) = run_at(&this, world, now, clone_empty && !fetched_ever)?;
            for action in &actions {
                match action {
                    Action::RecordRejection { rejected: rejection, last_good } => {
                        // Written at once, before anything is rolled back.
                        status::reject(&mut status, rejection, "");
                        status.last_good_revision.clone_from(last_good);
                        rejected.push(rejection.revision.clone());
                    }
                    Action::Apply { revision, .. } => prop_assert!(
                        !rejected.contains(revision),
                        "applied rejected {revision}: {actions:?}"
                    ),
                    _ => {}
                }
            }
            let fetched = actions.iter().any(|a| matches!(a, Action::Fetch))
                && world.fetch == 0;
            fetched_ever |= fetched;
            if *crash {
                previous = None;
            } else {
                if let Some(record) = &finish.record {
                    record.apply(&mut status, Some(1), now);
                }
                previous = match finish.schedule {
                    Some(next) => Some(Previous { wait: None, failures: next.failures, waiting: next.waiting }),
                    None => previous.map(|p| Previous { wait: None, ..p }),
                };
            }
            // A crash starts a new process: its first look is at once whatever came before.
            spins = match (finish.requeue.is_zero(), fetched, crash) {
                (true, false, false) => spins + 1,
                _ => 0,
            };
            prop_assert!(spins <= 2, "comes back at once without fetching: {actions:?}");
            now += chrono::Duration::from_std(finish.requeue.max(Duration::from_secs(1)))
                .unwrap_or(chrono::Duration::MAX);
        }
    }
}

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

/// A quiet look between syncs writes nothing new and keeps the schedule.
#[test]
fn between_syncs_nothing_is_attempted() {
    let applied = sha(1);
    let status = GitSyncStatus {
        last_applied_revision: Some(applied.clone()),
        last_attempted_revision: Some(applied.clone()),
        last_fetched_revision: Some(applied.clone()),
        last_good_revision: Some(applied.clone()),
        good_revisions: vec![crate::api::gitsync::GoodRevision {
            revision: applied.clone(),
            since: crate::time::to_k8s(at()),
        }],
        ..GitSyncStatus::default()
    };
    let done = Done::default();
    let input = Input {
        settings: settings(true, false),
        status: &status,
        previous: Some(Previous {
            wait: Some(Duration::from_secs(40)),
            failures: 0,
            waiting: false,
        }),
        sync_request: None,
        pin_request: None,
        dependencies: &[],
        promotion: None,
        rollouts: &[],
        workloads: &[],
        now: at(),
        jitter: 0.0,
        done: &done,
    };
    let Plan::Finish(finish) = plan(&input) else {
        panic!("acted between syncs");
    };
    assert_eq!(finish.schedule, None);
    assert_eq!(finish.requeue, Duration::from_secs(40));
    assert!(finish.events.is_empty());
    let mut recorded = status.clone();
    if let Some(record) = &finish.record {
        record.apply(&mut recorded, Some(1), at());
    }
    assert_eq!(recorded, status);
}

/// Applying the applied revision again with objects to send is drift repaired, said in an
/// Event; with nothing to send, nothing is said.
#[test]
fn drift_repaired_is_told() {
    let applied = sha(1);
    let status = GitSyncStatus {
        last_applied_revision: Some(applied.clone()),
        last_attempted_revision: Some(applied.clone()),
        last_fetched_revision: Some(applied.clone()),
        last_good_revision: Some(applied.clone()),
        ..GitSyncStatus::default()
    };
    let told = |changed: usize| {
        let done = Done {
            fetch: Some(FetchOutcome::Head(applied.clone())),
            applied: Some(Attempt::Applied {
                revision: applied.clone(),
                subject: String::new(),
                committed: None,
                inventory: Vec::new(),
                objects: 3,
                changed,
                basis: Basis::Head,
            }),
            applied_workloads: Some(Vec::new()),
            ..Done::default()
        };
        let input = Input {
            settings: settings(true, false),
            status: &status,
            previous: None,
            sync_request: None,
            pin_request: None,
            dependencies: &[],
            promotion: None,
            rollouts: &[],
            workloads: &[],
            now: at(),
            jitter: 0.0,
            done: &done,
        };
        match plan(&input) {
            Plan::Finish(finish) => finish
                .events
                .iter()
                .filter(|e| e.reason != "Applied")
                .map(|e| (e.reason.clone(), e.message.clone()))
                .collect::<Vec<_>>(),
            Plan::Act(action) => panic!("acted again: {action:?}"),
        }
    };
    assert_eq!(
        told(2),
        vec![(
            "DriftRepaired".to_owned(),
            format!(
                "2 object(s) of revision {} had drifted in the cluster and were applied again",
                status::short(&applied)
            )
        )]
    );
    assert!(told(0).is_empty());
}

/// A sync request skips the wait, and is handled by the fetch it brings.
#[test]
fn a_sync_request_fetches_now() {
    let status = GitSyncStatus::default();
    let mut done = Done::default();
    let input = |done: &Done| -> Plan {
        plan(&Input {
            settings: settings(true, false),
            status: &status,
            previous: Some(Previous {
                wait: Some(Duration::from_secs(40)),
                failures: 0,
                waiting: false,
            }),
            sync_request: Some("now"),
            pin_request: None,
            dependencies: &[],
            promotion: None,
            rollouts: &[],
            workloads: &[],
            now: at(),
            jitter: 0.0,
            done,
        })
    };
    assert_eq!(input(&done), Plan::Act(Box::new(Action::Fetch)));
    done.fetch = Some(FetchOutcome::Head(sha(2)));
    assert_eq!(
        input(&done),
        Plan::Act(Box::new(Action::Apply {
            revision: sha(2),
            basis: Basis::Head
        }))
    );
    done.applied = Some(Attempt::Applied {
        revision: sha(2),
        subject: String::new(),
        committed: None,
        inventory: Vec::new(),
        objects: 0,
        changed: 0,
        basis: Basis::Head,
    });
    done.applied_workloads = Some(Vec::new());
    let Plan::Finish(finish) = input(&done) else {
        panic!("did not finish");
    };
    let record = finish.record.expect("a record");
    assert_eq!(record.handled_request, Some(Some("now".into())));
    assert_eq!(record.fetched, Some(sha(2)));
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
    let failed = |error: SyncError| Attempt::FetchFailed(error);
    let previous = Some(Previous {
        wait: None,
        failures: 1,
        waiting: false,
    });
    assert_eq!(
        after(
            &failed(SyncError::transient("timeout")),
            previous,
            minute,
            0.0
        ),
        (2, Duration::from_secs(10))
    );
    assert_eq!(
        after(&failed(SyncError::forbidden("RBAC")), previous, minute, 0.0),
        (2, Duration::from_secs(120))
    );
}

/// One reconcile with `promotion`, everything else quiet: the plan's first answer after the
/// outcomes in `done`.
fn promoted_plan(status: &GitSyncStatus, promotion: &Promoted, done: &Done) -> Plan {
    plan(&Input {
        settings: settings(true, false),
        status,
        previous: Some(Previous {
            wait: Some(Duration::from_secs(40)),
            failures: 0,
            waiting: false,
        }),
        sync_request: None,
        pin_request: None,
        dependencies: &[],
        promotion: Some(promotion),
        rollouts: &[],
        workloads: &[],
        now: at(),
        jitter: 0.0,
        done,
    })
}

#[test]
fn a_revision_promoted_from_upstream_is_fetched_then_applied_in_place_of_the_head() {
    let status = GitSyncStatus {
        last_applied_revision: Some(sha(1)),
        last_attempted_revision: Some(sha(1)),
        last_fetched_revision: Some(sha(9)),
        last_good_revision: Some(sha(1)),
        ..GitSyncStatus::default()
    };
    let promoted = Promoted::Revision(sha(2));
    let mut done = Done::default();
    assert_eq!(
        promoted_plan(&status, &promoted, &done),
        Plan::Act(Box::new(Action::Fetch)),
        "fetched first, though not due: the clone may lack it"
    );
    done.fetch = Some(FetchOutcome::Head(sha(9)));
    assert_eq!(
        promoted_plan(&status, &promoted, &done),
        Plan::Act(Box::new(Action::Apply {
            revision: sha(2),
            basis: Basis::Head
        })),
        "the upstream's revision, not the ref's head"
    );
    done.applied = Some(Attempt::Applied {
        revision: sha(2),
        subject: String::new(),
        committed: None,
        inventory: Vec::new(),
        objects: 0,
        changed: 0,
        basis: Basis::Head,
    });
    done.applied_workloads = Some(Vec::new());
    let Plan::Finish(finish) = promoted_plan(&status, &promoted, &done) else {
        panic!("did not finish");
    };
    let record = finish.record.expect("a record");
    assert_eq!(
        record.fetched,
        Some(sha(9)),
        "the ref's head is what was fetched"
    );
    let mut recorded = status.clone();
    record.apply(&mut recorded, Some(1), at());
    assert_eq!(recorded.last_applied_revision, Some(sha(2)));
    assert_eq!(recorded.promotion, None, "nothing waits");
}

#[test]
fn while_a_promotion_soaks_what_is_applied_stays_and_the_wait_ends_with_the_soak() {
    let pending = PromotionState {
        revision: sha(2),
        waiting_for: "soaking".into(),
        until: Some(to_k8s(at() + chrono::Duration::seconds(25))),
    };
    let hold = Promoted::Hold {
        pending: Some(pending.clone()),
    };
    // Nothing applied yet: nothing to apply, the wait recorded, looked at again at its end.
    let fresh = GitSyncStatus::default();
    let Plan::Finish(finish) = promoted_plan(&fresh, &hold, &Done::default()) else {
        panic!("acted while holding");
    };
    assert_eq!(finish.requeue, Duration::from_secs(25));
    let record = finish.record.expect("a record");
    assert_eq!(record.promotion, Some(Some(pending.clone())));
    // Something applied: it stays.
    let status = GitSyncStatus {
        last_applied_revision: Some(sha(1)),
        last_attempted_revision: Some(sha(1)),
        last_fetched_revision: Some(sha(9)),
        last_good_revision: Some(sha(1)),
        ..GitSyncStatus::default()
    };
    let Plan::Finish(finish) = promoted_plan(&status, &hold, &Done::default()) else {
        panic!("acted while holding");
    };
    assert_eq!(finish.requeue, Duration::from_secs(25));
    let mut recorded = status.clone();
    if let Some(record) = &finish.record {
        record.apply(&mut recorded, Some(1), at());
    }
    assert_eq!(recorded.last_applied_revision, Some(sha(1)));
    assert_eq!(recorded.promotion, Some(pending));
}
