//! The glue: observe -> plan -> act, repeated until a plan has nothing to do, then one status
//! write (none when nothing changed) and an Event per transition.

use std::sync::Arc;
use std::time::Duration;

use crate::api::contract::{GIT_REVISION_ANNOTATION, ROLLOUT_MANAGER, ROUTE_CLEANUP_FINALIZER};
use crate::runtime::Events;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::act::act;
use super::error::{self, CONFLICT, Error};
use super::observe::{Caches, FIRST_LIST_LIMIT, Read, WrittenVersions, observe, template_problems};
use super::plan::{Input, Transition, plan};
use crate::analysis::templates::TemplateCaches;
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use crate::conditions;
use crate::runtime::cache::{Cache, Epoch};
use crate::runtime::error::{Backoff, Classified, Controller, Error as Core};
use crate::runtime::leader::{Leadership, Term};
use crate::runtime::metrics::Metrics;
use crate::time::to_k8s;
use crate::traffic::{self, Router, RouterError, Routers};
use crate::validate::{Violation, ViolationKind};
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub events: Events,
    /// Only the leader writes; checked before every write.
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    /// What makes a fresh read cheap: see [`Read::Fresh`].
    pub written: Arc<WrittenVersions>,
    /// What a Rollout's ReplicaSets, AnalysisRuns, Experiments and Services are read from.
    pub caches: Caches,
    /// What a look at a Rollout reads its analysis templates from.
    pub templates: TemplateCaches,
}

/// Rounds of observe -> plan -> act in one reconcile: enough to walk several instant steps,
/// bounded so a world that keeps changing cannot hold a worker.
const MAX_ROUNDS: usize = 8;
/// Look again this long after the last event even when nothing is pending.
const RESYNC: Duration = Duration::from_secs(300);
/// Longer than any healthy reconcile takes, even with thousands of Rollouts queued at once.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How soon a Rollout refused for want of a ReferenceGrant looks for one again.
const GRANT_RECHECK: Duration = Duration::from_secs(10);
pub const CONDITION_RECONCILE_ERROR: &str = "ReconcileError";

#[instrument(skip(rollout, ctx), fields(rollout = %rollout.name_any(), namespace = rollout.namespace().unwrap_or_default()))]
pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // Taken before anything is read: a read slow enough to span another leader's term must
    // not be planned from as if it belonged to the next one.
    let term = ctx.leadership.term_for(rollout.as_ref());
    if !term.holds() {
        // Gaining leadership reconciles every Rollout again (see controller::run).
        return Ok(ctx.leadership.when_unled(rollout.as_ref()));
    }
    let started = std::time::Instant::now();
    let api: Api<Rollout> =
        Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    // Of a shard gained a moment ago, before the cache has listed it again: nothing of the
    // spec is there to plan or clean up from, so the Rollout is read whole.
    let rollout = if rollout.spec.is_shard_stub {
        let name = rollout.name_any();
        match api
            .get_opt(&name)
            .await
            .map_err(Error::api("reading", "Rollout", &name))?
        {
            Some(whole) => Arc::new(whole),
            None => return Ok(Requeue::await_change()),
        }
    } else {
        rollout
    };
    let work = finalizer(&api, ROUTE_CLEANUP_FINALIZER, rollout, |event| async {
        match event {
            FinalizerEvent::Apply(rollout) => {
                // The first look plans from the Rollout as the watch delivered it, which costs
                // no request: a resync or a restart of many unchanged Rollouts reads nothing per
                // Rollout. Only a look that finds something to do reads it again, fresh.
                match reconcile_rollout(&rollout, &ctx, &term, Source::Cache).await? {
                    Some(requeue) => Ok(requeue),
                    // A fresh look always answers; were it not to, look again at once.
                    None => Ok(reconcile_rollout(&rollout, &ctx, &term, Source::ApiServer)
                        .await?
                        .unwrap_or_else(|| Requeue::requeue(Duration::ZERO))),
                }
            }
            FinalizerEvent::Cleanup(rollout) => clean_up(&rollout, &ctx, &term).await,
        }
    });
    let result = crate::runtime::within(
        STALL_LIMIT,
        async {
            work.await.map_err(|error| match error {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error
                }
                other => Error::Finalizer(other.to_string()),
            })
        },
        error::stalled,
    )
    .await;
    let category = result.as_ref().err().map(Classified::category);
    ctx.metrics.observe_reconcile(started.elapsed(), category);
    result
}

/// A deleted Rollout's pods go with it (garbage collection), so traffic must leave them first:
/// the router goes back to all-stable before the finalizer lets the Rollout go.
async fn clean_up(rollout: &Rollout, ctx: &Context, term: &Term) -> Result<Requeue, Error> {
    if !term.holds() {
        return Err(Core::NotLeader.into());
    }
    ctx.written.forget(rollout);
    let namespace = rollout.namespace().unwrap_or_default();
    ctx.metrics.forget_rollout(&namespace, &rollout.name_any());
    let hash = rollout.spec.template_hash();
    // A route the Rollout may not touch (refused) is not touched on the way out either; its
    // other routers are.
    let (router, _refused) = Routers::for_rollout(&ctx.client, rollout, &namespace, &hash).await?;
    if let Some(router) = router {
        match router.remove_managed().await {
            // Nothing to undo on a route that is gone or never split to these Services.
            Ok(()) => {}
            Err(error) if traffic::nothing_to_undo(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Requeue::await_change())
}

/// `status` with the managed route names and experiment Services `next` records added, when
/// the plan writes a route or a share whose name `status` does not record yet; None
/// otherwise. Recording a name early is harmless: the planner drops it again once the
/// router shows no such route or share.
fn recording_first(
    status: &RolloutStatus,
    next: &RolloutStatus,
    actions: &[crate::rollout::plan::Action],
) -> Option<RolloutStatus> {
    use crate::rollout::plan::Action;
    let unrecorded_route = |name: &String| !status.managed_routes.contains(name);
    let unrecorded_service = |name: &String| !status.experiment_services.contains(name);
    let writes_unrecorded = actions.iter().any(|action| match action {
        Action::SetManagedRoute { name, .. } => unrecorded_route(name),
        Action::SetWeight { experiments, .. } => experiments.keys().any(unrecorded_service),
        _ => false,
    });
    if !writes_unrecorded {
        return None;
    }
    let mut recording = status.clone();
    for name in next.managed_routes.iter().filter(|n| unrecorded_route(n)) {
        recording.managed_routes.push(name.clone());
    }
    recording.managed_routes.sort();
    for name in next
        .experiment_services
        .iter()
        .filter(|n| unrecorded_service(n))
    {
        recording.experiment_services.push(name.clone());
    }
    recording.experiment_services.sort();
    Some(recording)
}

/// When the world cannot be read (one router of several fails its read, say), nothing is
/// planned; but an abort already decided (`status.abort`: `kubectl weir abort`, or a failed
/// analysis an earlier plan saw) still sends weight 0 to every router that takes it. Weight 0
/// is always safe: the stable keeps its full scale throughout a canary.
async fn abort_where_possible(name: &str, status: &RolloutStatus, router: Option<&Routers>) {
    let Some(router) = router.filter(|_| status.abort) else {
        return;
    };
    // Header and mirror routes reach the canary whatever the weight: they go too.
    for route in &status.managed_routes {
        if let Err(error) = router.remove_managed_route(route).await {
            warn!(rollout = name, route, %error, "aborted, but a managed route was not removed");
        }
    }
    if let Err(error) = router.set_weight(0).await {
        warn!(rollout = name, %error, "aborted, but a router did not take weight 0");
    }
}

/// `cache`'s objects by namespace and name, copied out, once its first list is in.
fn synced_lookup<K>(cache: &Cache<K>) -> impl Fn(&str, &str) -> Option<K> + '_
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    |namespace, name| Some(cache.synced_get(namespace, name)?.as_ref().clone())
}

/// Where a reconcile takes the Rollout from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// As the watch delivered it: it may lag this process's own last status write, so a
    /// look from it only ever finds that there is nothing to do (or gives way to a fresh one).
    Cache,
    /// Read from the API server now: planning from a stale status could repeat a step.
    ApiServer,
}

/// Everything in here belongs to leadership `term`: its fresh reads need the term's floor,
/// and it stops acting once another term has begun. From [`Source::Cache`] it returns None
/// as soon as it finds anything to do or to write, before writing anything.
async fn reconcile_rollout(
    rollout: &Rollout,
    ctx: &Context,
    term: &Term,
    source: Source,
) -> Result<Option<Requeue>, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = match source {
        Source::Cache => rollout.clone(),
        Source::ApiServer => match api
            .get_opt(&name)
            .await
            .map_err(Error::api("reading", "Rollout", &name))?
        {
            Some(current) => current,
            None => {
                ctx.written.forget(rollout);
                return Ok(Some(Requeue::await_change()));
            }
        },
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Some(Requeue::await_change()));
    }
    // Relabelled (weir.dev/shard) since the term was taken: its new shard's replica acts.
    if ctx.leadership.shard_of(&current.metadata) != term.shard() {
        return Ok(Some(Requeue::await_change()));
    }
    let hash = current.spec.template_hash();
    let original = current.status.clone().unwrap_or_default();
    let mut status = original.clone();
    // The Rollout as last written by this reconcile (its status, its resourceVersion).
    let mut written = current.clone();
    let mut transitions: Vec<Transition> = Vec::new();
    // When to look again, as an instant: the plan's delay counts from the moment it was
    // planned, and the status write and Events after it must not push a pause's end later.
    let mut wake: Option<tokio::time::Instant> = None;
    let mut versions = ctx.written.of(&current);
    let mut refused_route = false;
    let mut needs_fresh = false;

    let outcome: Result<(), Error> = async {
        // The templates from the caches, even for a look that may write: what they decide
        // here is only whether the spec is usable, one a moment old is put right by the
        // template's own event (one the cache lacks is asked of the API server), and
        // whatever creates a run reads and checks them again from the API server. (Read
        // from the API server, they were a request each, one after another, before
        // anything else of an abort.)
        let mut problems = template_problems(&ctx.client, &ctx.templates, &current).await?;
        let (router, refused) =
            Routers::for_rollout(&ctx.client, &current, &namespace, &hash).await?;
        if source == Source::Cache
            && let Some(router) = &router
        {
            // Right after a start, once the routes' first lists are in (as for the
            // ReplicaSets'): a restart reads no route per Rollout.
            let caches = &ctx.caches;
            tokio::join!(
                caches.http_routes.synced_within(FIRST_LIST_LIMIT),
                caches.grpc_routes.synced_within(FIRST_LIST_LIMIT)
            );
            router.recall_routes(
                &synced_lookup(&caches.http_routes),
                &synced_lookup(&caches.grpc_routes),
            );
        }
        // A refused route is the spec's problem: nothing is planned while it lasts (the
        // routers keep their weights), but what was already decided still reaches the others.
        if let Some(refused @ RouterError::NotGranted { field, .. }) = &refused {
            problems.push(Violation {
                kind: ViolationKind::Invalid,
                field: field.clone(),
                message: refused.to_string(),
            });
            refused_route = true;
            // Nothing is planned while it lasts, but an abort asked for reaches the others,
            // decided from a fresh read.
            if source == Source::Cache && status.abort {
                needs_fresh = true;
                return Ok(());
            }
            abort_where_possible(&name, &status, router.as_ref()).await;
        }
        // The first look comes from the controller's caches, which is cheap, and is
        // kept only if it finds nothing to do (the common case: a resync, a restart, an
        // event that changes nothing). Anything that writes is planned from fresh reads.
        // A look at the Rollout read fresh follows a first look that found something to
        // do: it reads fresh at once (a second cached round read the routes once more,
        // one request more between a pause's end and the next step).
        let mut read = match source {
            Source::Cache => Read::Cached,
            Source::ApiServer => Read::Fresh,
        };
        let mut rounds = 0;
        while rounds < MAX_ROUNDS {
            let health = &ctx.metrics.watches;
            // Counted before the read: an outage that ends during it makes the next read
            // take a new floor.
            let epoch = Epoch {
                term: ctx.leadership.gains(),
                outages: health.outages_ended(),
            };
            let observed = observe(
                &ctx.client,
                &ctx.caches,
                &current,
                router.as_ref(),
                read,
                &versions,
                epoch,
            )
            .await;
            let mut observed = match observed {
                Ok(observed) => observed,
                Err(error) => {
                    // From the cache, the fresh look that follows decides.
                    if source == Source::ApiServer {
                        abort_where_possible(&name, &status, router.as_ref()).await;
                    }
                    return Err(error);
                }
            };
            observed.reference_problems.clone_from(&problems);
            let now = chrono::Utc::now();
            observed.outages = health.outages(std::time::Instant::now(), now);
            let next = plan(&Input {
                spec: &current.spec,
                generation: current.metadata.generation,
                status: &status,
                template_hash: &hash,
                revision: current
                    .annotations()
                    .get(GIT_REVISION_ANNOTATION)
                    .map(String::as_str),
                observed: &observed,
                now,
            });
            let planned_at = tokio::time::Instant::now();
            let changes =
                !next.actions.is_empty() || !next.transitions.is_empty() || next.status != status;
            // Only the first look (from the cache) reads cached: it gives way to a fresh one.
            if read == Read::Cached && changes {
                needs_fresh = true;
                return Ok(());
            }
            read = Read::Fresh;
            rounds += 1;
            // A crash must cost no more than the round being acted on: the steps that earlier
            // rounds took are written before this round acts, so a new controller plans this
            // round again from there (the same actions, now no-ops) and never goes back a
            // step. The first round needs no write: the API server holds what it planned from.
            if !next.actions.is_empty()
                && rounds > 1
                && let Some(rollout) = write_status(&api, &written, &status).await?
            {
                written = rollout;
            }
            // A managed route's name is recorded before the route is written: if the status
            // write after it were lost (a conflict with a GitSync that drops the name from
            // the spec), nothing would ever read or remove the route again.
            if let Some(recording) = recording_first(&status, &next.status, &next.actions)
                && let Some(rollout) = write_status(&api, &written, &recording).await?
            {
                written = rollout;
            }
            status = next.status;
            if let Some(router) = &router {
                router.follow(&status, &hash);
            }
            transitions.extend(next.transitions);
            wake = next.requeue_after.map(|after| planned_at + after);
            if next.actions.is_empty() {
                return Ok(());
            }
            for action in &next.actions {
                if !term.holds() {
                    return Err(Core::NotLeader.into());
                }
                info!(?action, "acting");
                versions.note(act(&ctx.client, &current, router.as_ref(), action).await?);
                // Kept at once: a reconcile cut off by the stall limit or a shutdown must
                // not leave the next fresh read trusting a cache without this write.
                ctx.written.record(&current, versions.clone());
            }
        }
        // Still busy: come straight back rather than wait for an event.
        wake = Some(tokio::time::Instant::now());
        Ok(())
    }
    .await;

    if !term.holds() {
        // Lost the lease mid-reconcile: the new leader plans from what the API server shows.
        return Err(Core::NotLeader.into());
    }
    if source == Source::Cache && (needs_fresh || outcome.is_err()) {
        return Ok(None);
    }
    if refused_route {
        // No ReferenceGrant is watched: look again soon, so a grant created now takes
        // effect without waiting for a resync.
        let soon = tokio::time::Instant::now() + GRANT_RECHECK;
        wake = Some(wake.map_or(soon, |at| at.min(soon)));
    }
    let now = to_k8s(chrono::Utc::now());
    let mut new_error = false;
    match &outcome {
        Ok(()) => {
            let recovered = original
                .conditions
                .iter()
                .any(|c| c.type_ == CONDITION_RECONCILE_ERROR);
            conditions::remove(&mut status.conditions, CONDITION_RECONCILE_ERROR);
            // The error text lingers where the planner had nothing new to say (a held pause).
            if recovered && status.message == original.message {
                status.message = None;
            }
        }
        Err(Error::Core(Core::Conflict(_) | Core::NotLeader)) => {}
        Err(error) => {
            let message = error.to_string();
            new_error = conditions::set(
                &mut status.conditions,
                CONDITION_RECONCILE_ERROR,
                true,
                error.category(),
                &message,
                &now,
                current.metadata.generation,
            );
            status.message = Some(format!("{}: {message}", error.category()));
        }
    }
    if source == Source::Cache && status != original {
        return Ok(None);
    }
    write_status(&api, &written, &status).await?;
    // Not after the shard went elsewhere: its series are that replica's to report.
    if term.holds() {
        ctx.metrics.observe_rollout(&namespace, &name, &status);
    }

    let reference = current.object_ref(&());
    for transition in &transitions {
        crate::runtime::publish(
            &ctx.events,
            &reference,
            transition.warning,
            transition.reason.as_str().into(),
            Some(&transition.message),
            "Reconcile",
        )
        .await;
    }
    if let (true, Err(error)) = (new_error, &outcome) {
        crate::runtime::publish(
            &ctx.events,
            &reference,
            true,
            error.category().into(),
            Some(&error.to_string()),
            "Reconcile",
        )
        .await;
    }
    outcome?;
    Ok(Some(Requeue::requeue(wake.map_or(RESYNC, |at| {
        at.saturating_duration_since(tokio::time::Instant::now())
    }))))
}

/// What the shared error core says of Rollouts.
const ROLLOUTS: Controller = Controller {
    kind: "Rollout",
    field_manager: ROLLOUT_MANAGER,
    conflict: CONFLICT,
};

/// Writes `status` over the status `current` holds (the Rollout as read, or as this
/// reconcile last wrote it).
async fn write_status(
    api: &Api<Rollout>,
    current: &Rollout,
    status: &RolloutStatus,
) -> Result<Option<Rollout>, Error> {
    let original = current.status.clone().unwrap_or_default();
    Ok(ROLLOUTS
        .write_status(api, current, current.status.is_some(), &original, status)
        .await?)
}

/// A refusal that waits for a fix (RBAC, an invalid object) is looked at again after a
/// minute; a Rollout's own changes wake it sooner.
const BACKOFF: Backoff = Backoff {
    transient: Duration::from_secs(5),
    lasting: Duration::from_secs(60),
};

pub fn error_policy(rollout: Arc<Rollout>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let unled = ctx.leadership.when_unled(rollout.as_ref());
    crate::runtime::error::error_policy("Rollout", &rollout.name_any(), error, BACKOFF, unled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::plan::Action;
    use crate::traffic::ManagedRoute;

    fn recorded(names: &[&str]) -> RolloutStatus {
        RolloutStatus {
            managed_routes: names.iter().map(|n| (*n).to_owned()).collect(),
            ..RolloutStatus::default()
        }
    }

    fn set(name: &str) -> Action {
        Action::SetManagedRoute {
            name: name.into(),
            route: ManagedRoute::Header(Vec::new()),
        }
    }

    #[test]
    fn a_route_not_yet_recorded_is_recorded_before_it_is_written() {
        let before = RolloutStatus {
            current_step_index: Some(1),
            ..recorded(&["a"])
        };
        let next = RolloutStatus {
            current_step_index: Some(2),
            ..recorded(&["a", "b"])
        };
        let recording = recording_first(&before, &next, &[set("b")]);
        assert_eq!(
            recording,
            Some(RolloutStatus {
                current_step_index: Some(1),
                ..recorded(&["a", "b"])
            }),
            "only the names move ahead of the plan"
        );
        // Written again, or removed, or nothing about routes: no early write.
        assert_eq!(recording_first(&before, &next, &[set("a")]), None);
        let remove = Action::RemoveManagedRoute { name: "b".into() };
        assert_eq!(recording_first(&before, &next, &[remove]), None);
        assert_eq!(recording_first(&before, &next, &[]), None);
    }

    #[test]
    fn an_experiments_service_not_yet_recorded_is_recorded_before_its_share_is_set() {
        let before = RolloutStatus {
            experiment_services: vec!["web-a".into()],
            ..RolloutStatus::default()
        };
        let next = RolloutStatus {
            experiment_services: vec!["web-a".into(), "web-b".into()],
            current_step_index: Some(3),
            ..RolloutStatus::default()
        };
        let share = |names: &[&str]| Action::SetWeight {
            canary_weight: 10,
            experiments: names.iter().map(|n| ((*n).to_owned(), 5)).collect(),
        };
        assert_eq!(
            recording_first(&before, &next, &[share(&["web-a", "web-b"])]),
            Some(RolloutStatus {
                experiment_services: vec!["web-a".into(), "web-b".into()],
                ..RolloutStatus::default()
            })
        );
        assert_eq!(recording_first(&before, &next, &[share(&["web-a"])]), None);
        assert_eq!(recording_first(&before, &next, &[share(&[])]), None);
    }
}
