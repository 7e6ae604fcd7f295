//! Runs the GitSync controller: watches GitSyncs and syncs each every `interval`, and
//! watches the Rollouts they apply, to roll back as soon as one fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use tracing::info;

use super::inventory::OWNER_ANNOTATION;
use super::reconcile::{Context, error_policy, reconcile};
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;
use crate::runtime::impersonation::Impersonation;
use crate::runtime::leader::{Leadership, became_leader};
use crate::runtime::watch::{self, Health};
use crate::runtime::{cache, scoped_api};

/// How the controller fetches.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the persistent clones live.
    pub cache_dir: PathBuf,
    /// Fetches at once.
    pub max_fetches: usize,
    /// How long one fetch may take.
    pub fetch_timeout: Duration,
    /// The most bytes of pack one fetch may receive.
    pub max_fetch_bytes: u64,
    /// Fetches from one Git host (scheme, host, port) per minute, across all GitSyncs...
    pub fetches_per_host_per_minute: std::num::NonZeroU32,
    /// ... and how many of them may come at once.
    pub fetch_burst: std::num::NonZeroU32,
    /// Who GitSyncs act as and where they may reach.
    pub policy: super::tenancy::Policy,
    /// How much a revision may hold.
    pub limits: super::render::Limits,
}

/// Runs until SIGTERM or SIGINT. `config` made `client`; GitSyncs act through clients made
/// from it that impersonate their ServiceAccounts.
pub async fn run(
    client: Client,
    config: kube::Config,
    namespace: Option<&str>,
    leadership: Leadership,
    health: Health,
    options: Options,
) {
    let (gitsyncs, gitsync_events) = cache::trimmed(
        scoped_api::<GitSync>(&client, namespace),
        watch::config(),
        cache::keep_all,
        health.watch("gitops/GitSync"),
    );
    let rollouts = watch::watched(
        scoped_api::<Rollout>(&client, namespace),
        watch::config(),
        health.watch("gitops/Rollout"),
    );
    let context = Arc::new(Context {
        events: crate::runtime::Events::new(&client),
        impersonation: Impersonation::new(config, client.clone()),
        policy: options.policy,
        limits: options.limits,
        gitsyncs: gitsyncs.store.clone(),
        client: client.clone(),
        scope: namespace.map(str::to_owned),
        leadership: leadership.clone(),
        cache_dir: options.cache_dir,
        kustomize: super::kustomize::find(),
        fetches: Arc::new(Semaphore::new(options.max_fetches.max(1))),
        fetch_timeout: options.fetch_timeout,
        max_fetch_bytes: options.max_fetch_bytes,
        fetch_rate: Arc::new(super::fetch_rate::FetchRate::new(
            options.fetches_per_host_per_minute,
            options.fetch_burst,
        )),
        in_flight: Default::default(),
        schedule: Default::default(),
        aborts: Default::default(),
    });
    let aborts = context.aborts.clone();
    info!(
        namespace = namespace.unwrap_or("(all)"),
        kustomize = ?context.kustomize.as_ref().map(|k| k.program.display().to_string()),
        policy = ?context.policy,
        "gitsync controller starting"
    );
    Controller::for_stream(gitsync_events.applied_objects(), gitsyncs.store)
        .trigger_backoff(watch::EachWatchBacksOff)
        // A Rollout's abort (or its becoming Healthy) is news for the GitSync that applied it.
        .watches_stream(rollouts.touched_objects(), move |rollout: Rollout| {
            if rollout.status.as_ref().is_some_and(|s| s.abort) {
                aborts.notify_waiters();
            }
            rollout
                .annotations()
                .get(OWNER_ANNOTATION)
                .and_then(|owner| owner.split_once('/'))
                .map(|(namespace, name)| ObjectRef::<GitSync>::new(name).within(namespace))
        })
        .reconcile_all_on(became_leader(&leadership))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(crate::runtime::log_failure)
        .await;
    info!("gitsync controller stopped");
}
