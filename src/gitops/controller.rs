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

use super::reconcile::{Context, error_policy, reconcile};
use crate::api::contract::GITSYNC_ANNOTATION;
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;
use crate::runtime::impersonation::Impersonation;
use crate::runtime::leader::{Leadership, became_leader};
use crate::runtime::metrics::Metrics;
use crate::runtime::watch;
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
/// from it that impersonate their ServiceAccounts. `rollouts` are the Rollouts the Rollout
/// controller's watch touches ([`crate::runtime::watch::tee_touched`]).
pub async fn run(
    client: Client,
    config: kube::Config,
    namespace: Option<&str>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    rollouts: impl futures::Stream<Item = Rollout> + Send + 'static,
    options: Options,
) {
    let health = metrics.watches.clone();
    let (gitsyncs, gitsync_events) = cache::trimmed(
        scoped_api::<GitSync>(&client, namespace),
        // Consistent: dependencies, promotions and write-back checks decide from the store.
        watch::config(),
        cache::KeepAll,
        health.watch("gitops/GitSync"),
    );
    let context = Arc::new(Context {
        events: crate::runtime::Events::new(&client),
        metrics,
        impersonation: Arc::new(Impersonation::new(config, client.clone())),
        remotes: Default::default(),
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
    let known = context.gitsyncs.clone();
    tokio::spawn(sweep_clones(
        context.gitsyncs.clone(),
        context.cache_dir.clone(),
    ));
    info!(
        namespace = namespace.unwrap_or("(all)"),
        kustomize = ?context.kustomize.as_ref().map(|k| k.program.display().to_string()),
        policy = ?context.policy,
        "gitsync controller starting"
    );
    // A GitSync's change may be what those that depend on it wait for. The reflector has
    // stored the change before it passes here, so they see it.
    let (dependents, waiting) = futures::channel::mpsc::unbounded();
    let store = gitsyncs.store.clone();
    let changes = gitsync_events.applied_objects().inspect(move |changed| {
        if let Ok(changed) = changed {
            let all = store.state();
            let dependents_of = super::dependencies::waiting_on(&all, changed);
            let downstream = super::promotion::promoting_from(&all, changed);
            for dependent in dependents_of.chain(downstream) {
                // Closed only when the controller stops.
                let _ = dependents.unbounded_send(ObjectRef::from_obj(dependent));
            }
        }
    });
    Controller::for_stream(changes, gitsyncs.store)
        .trigger_backoff(watch::EachWatchBacksOff)
        // A Rollout's abort (or its becoming Healthy) is news for the GitSync that applied it.
        .watches_stream(
            rollouts.map(Ok::<_, kube::runtime::watcher::Error>),
            move |rollout: Rollout| {
                if rollout.status.as_ref().is_some_and(|s| s.abort) {
                    aborts.notify_waiters();
                }
                // Only a GitSync this controller has: a Rollout in a cluster a GitSync elsewhere
                // applies to (spec.kubeConfig) names one that is not here.
                rollout
                    .annotations()
                    .get(GITSYNC_ANNOTATION)
                    .and_then(|owner| owner.split_once('/'))
                    .map(|(namespace, name)| ObjectRef::<GitSync>::new(name).within(namespace))
                    .filter(|owner| known.get(owner).is_some())
            },
        )
        .reconcile_on(waiting)
        .reconcile_all_on(became_leader(&leadership))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(crate::runtime::log_failure)
        .await;
    info!("gitsync controller stopped");
}

/// How often clones no GitSync will read again are removed.
const SWEEP: Duration = Duration::from_secs(120);

/// Removes, every `SWEEP`, the clones of GitSyncs deleted since the last look and those of
/// URLs a GitSync no longer follows (`source::stale_clones`): without it, every GitSync ever
/// made and every URL it ever had would keep its clone on the volume. The directories are
/// listed before the GitSyncs are, so a clone being made belongs to a GitSync already seen.
/// At start and then with each sweep, the work trees of kustomize builds a crashed
/// controller left in the temporary directory are removed too: they may hold cleartext.
async fn sweep_clones(gitsyncs: kube::runtime::reflector::Store<GitSync>, base: PathBuf) {
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let removed = tokio::task::spawn_blocking(|| {
            super::kustomize::sweep_build_dirs(&std::env::temp_dir())
        })
        .await
        .unwrap_or_default();
        for (dir, outcome) in removed {
            match outcome {
                Ok(()) => {
                    info!(dir = %dir.display(), "removed a kustomize build's leftover work tree")
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "removing a kustomize build's leftover work tree")
                }
            }
        }
        tokio::time::sleep(SWEEP).await;
        let entries: Vec<String> = match std::fs::read_dir(&base) {
            Ok(dir) => dir
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => continue,
        };
        let live: Vec<(String, String)> = gitsyncs
            .state()
            .iter()
            .filter_map(|s| Some((s.metadata.uid.clone()?, s.spec.url.clone())))
            .collect();
        let now: std::collections::BTreeSet<String> =
            live.iter().map(|(uid, _)| uid.clone()).collect();
        let gone: Vec<String> = seen.difference(&now).cloned().collect();
        for stale in super::source::stale_clones(&entries, &live, &gone) {
            let dir = base.join(&stale);
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
                Ok(Ok(())) => info!(clone = %stale, "removed a clone no GitSync reads any more"),
                Ok(Err(error)) => tracing::warn!(clone = %stale, %error, "removing a stale clone"),
                Err(_) => {}
            }
        }
        seen = now;
    }
}
