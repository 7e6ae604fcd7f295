//! The glue of the GitSync controller: observe (the GitSync, its Rollouts, the applied
//! revision's workloads, its dependencies), then loop `plan` -> `act` until the plan
//! finishes, then one status write, its Events, and the next look. Every decision is in
//! `plan`; what each action does is in `act`.

use std::sync::Arc;

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

pub use super::context::{Context, Due};
pub use super::record::Error;

use super::act::{self, Reconcile};
use super::delivery;
use super::observe;
use super::plan::{self, Done, Finish, Input, Plan};
use super::record::write_recorded;
use super::rollback;
use crate::api::contract::{ROLLBACK_TO_ANNOTATION, SYNC_REQUEST_ANNOTATION};
use crate::api::gitsync::{GitSync, GitSyncStatus};
use crate::runtime::error::Backoff;
use crate::runtime::leader::Term;
use crate::runtime::metrics::Delivery;

#[instrument(skip(sync, ctx), fields(gitsync = %sync.name_any(), namespace = sync.namespace().unwrap_or_default()))]
pub async fn reconcile(sync: Arc<GitSync>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // Every write below checks this term: a reconcile that spans a change of leader must not
    // apply, record or push what it decided from the earlier term's view.
    let term = ctx.leadership.term_for(sync.as_ref());
    if !term.holds() {
        return Ok(ctx.leadership.when_unled(sync.as_ref()));
    }
    let (namespace, name) = (sync.namespace().unwrap_or_default(), sync.name_any());
    let key = format!("{namespace}/{name}");
    let api: Api<GitSync> = Api::namespaced(ctx.client.clone(), &namespace);
    let read = api
        .get_opt(&name)
        .await
        .map_err(Error::api("reading", "GitSync", &name))?;
    let Some(current) = read else {
        ctx.forget(&key);
        ctx.metrics.forget_gitsync(&namespace, &name);
        return Ok(Requeue::await_change());
    };
    if current.spec.suspend {
        return Ok(Requeue::await_change());
    }

    let status = current.status.clone().unwrap_or_default();
    let settings = observe::settings(&current);
    let dependencies = observe::waiting_for_dependencies(&ctx, &current);
    let promoted = observe::promotion(&ctx, &current).await;
    // The Rollouts are looked at every time (their changes wake this GitSync): an abort is
    // acted on at once, never after the interval. The applied revision's workloads are read
    // while it awaits its verdict, and polled meanwhile.
    let mut rollouts = observe::rollouts_of(&ctx, &current).await;
    let workloads = match rollback::judging(&status) {
        Some(_) => observe::applied_workloads(&ctx, &current, &key, &status.inventory).await,
        None => Vec::new(),
    };
    let annotation = |name: &str| current.annotations().get(name).map(String::as_str);
    let at = Reconcile {
        ctx: &ctx,
        term: &term,
        api: &api,
        current: &current,
        key: &key,
        settings: &settings,
        spread: spread(&key),
    };
    let previous = ctx.previous(&key, settings.generation);
    let mut done = Done::default();
    // Decisions after a fetch are taken at the time it ended.
    let mut now = Utc::now();
    let finish = loop {
        let input = Input {
            settings,
            status: &status,
            previous,
            sync_request: annotation(SYNC_REQUEST_ANNOTATION),
            pin_request: annotation(ROLLBACK_TO_ANNOTATION),
            dependencies: &dependencies,
            promotion: promoted.as_ref(),
            rollouts: &rollouts,
            workloads: &workloads,
            now,
            jitter: at.spread,
            done: &done,
        };
        match plan::plan(&input) {
            Plan::Finish(finish) => break finish,
            Plan::Act(action) => {
                let fetch = matches!(*action, plan::Action::Fetch);
                act::act(&at, *action, &mut rollouts, &workloads, &mut done).await?;
                if fetch {
                    now = Utc::now();
                }
            }
        }
    };
    finish_with(&ctx, &term, &api, &current, &key, *finish).await
}

/// The GitSync's delivery figures over the last week, as metrics.
fn observe_delivery(ctx: &Context, sync: &GitSync, status: &GitSyncStatus) {
    let week = std::time::Duration::from_secs(7 * 86_400);
    let window = delivery::ending_at(week, Utc::now().timestamp());
    let figures = delivery::figures(&delivery::outcomes(status), window);
    ctx.metrics.observe_delivery(
        &sync.namespace().unwrap_or_default(),
        &sync.name_any(),
        Delivery {
            deployments: figures.deployments,
            failures: figures.failures,
            lead_time: delivery::median(&figures.lead_times),
            time_to_restore: delivery::median(&figures.restore_times),
        },
    );
}

/// Records a reconcile's outcome in one status write, schedules the next, and tells.
async fn finish_with(
    ctx: &Context,
    term: &Term,
    api: &Api<GitSync>,
    current: &GitSync,
    key: &str,
    finish: Finish,
) -> Result<Requeue, Error> {
    let generation = current.metadata.generation;
    if let Some(record) = &finish.record {
        let now = Utc::now();
        let written = write_recorded(term, api, current.clone(), &|status| {
            record.apply(status, generation, now)
        })
        .await;
        if let Err(error) = written {
            // What was applied is not recorded yet: come back soon, not after the interval.
            ctx.forget(key);
            return Err(error);
        }
        let mut recorded = current.status.clone().unwrap_or_default();
        record.apply(&mut recorded, generation, now);
        observe_delivery(ctx, current, &recorded);
        if let Some(attempt) = &record.attempt {
            info!(outcome = attempt.reason(), message = %attempt.message(), next = ?finish.requeue, "synced");
        }
    } else {
        // Nothing to write: the figures still age (the window moves) and a restarted
        // controller has them from its first look.
        observe_delivery(ctx, current, &current.status.clone().unwrap_or_default());
    }
    if let Some(schedule) = &finish.schedule {
        ctx.schedule(key, generation, schedule);
    }
    for event in &finish.events {
        crate::runtime::publish(
            &ctx.events,
            &current.object_ref(&()),
            event.warning,
            event.reason.clone(),
            Some(&event.message),
            event.action,
        )
        .await;
    }
    if let Some(pin) = &finish.remove_pin {
        remove_annotation(api, current, ROLLBACK_TO_ANNOTATION, Some(pin)).await?;
    }
    Ok(Requeue::requeue(finish.requeue))
}

/// A fraction from 0 to 1, different for each GitSync and each reconcile: where a GitSync
/// waiting for its host's rate falls among the others waiting, and how far into the first
/// tenth of the interval its next sync falls.
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

/// Only the GitSync's own reads and status writes fail a reconcile (a failed fetch or apply
/// is recorded, and scheduled by the plan): a refusal of those waits for a fix of the
/// controller's own RBAC.
pub fn error_policy(sync: Arc<GitSync>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let backoff = Backoff {
        transient: plan::FIRST_RETRY,
        lasting: plan::MAX_BACKOFF,
    };
    let unled = ctx.leadership.when_unled(sync.as_ref());
    crate::runtime::error::error_policy("GitSync", &sync.name_any(), error, backoff, unled)
}
