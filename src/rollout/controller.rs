//! Runs the Rollout controller: watches Rollouts and only what they own (ReplicaSets and
//! AnalysisRuns carrying `weir.dev/rollout`), plus the routers' objects (HTTPRoutes,
//! GRPCRoutes, VirtualServices, DestinationRules, Ingresses, TrafficSplits) and analysis templates
//! Rollouts name, and reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::observe::{
    Caches, TrimExperiment, TrimGrpcRoute, TrimHttpRoute, TrimReplicaSet, TrimRollout, TrimRun,
    TrimService, WrittenVersions, stub_rollout,
};
use super::reconcile::{Context, error_policy, reconcile};
use super::workload::ObservedReplicaSet;
use crate::analysis::templates::TemplateCaches;
use crate::api::Rollout;
use crate::api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::api::contract::ROLLOUT_LABEL;
use crate::api::experiment::Experiment;
use crate::runtime::leader::{Leadership, became_leader};
use crate::runtime::metrics::Metrics;
use crate::runtime::{cache, scoped_api, watch};
use crate::traffic::{self, RouteKind, istio, smi};

/// The one watch of Rollouts the controller process keeps: the Rollout controller polls it
/// (which fills the cache), and others read the cache. Of a Rollout in a shard this replica
/// does not hold it keeps only what readers of every shard need ([`stub_rollout`]).
pub fn watch_rollouts(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
    leadership: &Leadership,
) -> (
    cache::Cache<Rollout>,
    impl futures::Stream<
        Item = Result<kube::runtime::watcher::Event<Rollout>, kube::runtime::watcher::Error>,
    > + Send
    + 'static,
) {
    cache::trimmed_by_shard(
        scoped_api::<Rollout>(client, namespace),
        watch::cached_first(),
        TrimRollout,
        metrics.watches.watch("rollout/Rollout"),
        leadership.is_elected().then(|| cache::Sharded {
            leadership: leadership.clone(),
            shard_of: {
                let leadership = leadership.clone();
                Box::new(move |rollout: &Rollout| Some(leadership.shard_of(&rollout.metadata)))
            },
            unheld: cache::Unheld::Stub(stub_rollout),
            moves: None,
            // What the Rollouts own is in their shard: its caches follow these moves.
            owner_moves: Some(tokio::sync::watch::channel(0).0),
        }),
    )
}

/// Runs until SIGTERM or SIGINT, then finishes the reconciles in flight and returns. Every
/// replica watches; only the one `leadership` says leads writes. `rollouts` is
/// [`watch_rollouts`].
pub async fn run<S>(
    client: Client,
    namespace: Option<&str>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    concurrency: u16,
    (rollout_cache, rollout_events): (cache::Cache<Rollout>, S),
) where
    S: futures::Stream<
            Item = Result<kube::runtime::watcher::Event<Rollout>, kube::runtime::watcher::Error>,
        > + Send
        + 'static,
{
    // Lists from the watch cache: what the caches hold is read for a write only once they
    // have seen a consistent floor (`observe::read_owned`), and a Rollout is read again
    // before it is acted on; the other watches only wake reconciles.
    let owned = watch::cached_first().labels(ROLLOUT_LABEL);
    let health = &metrics.watches;
    // Indexed by Rollout: a look reads one Rollout's objects, not every object of the kind.
    let (replica_sets, replica_set_events) = cache::trimmed_by_shard(
        scoped_api::<ObservedReplicaSet>(&client, namespace),
        owned.clone(),
        TrimReplicaSet,
        health.watch("rollout/ReplicaSet"),
        in_owners_shards(&leadership, &rollout_cache),
    );
    let replica_sets = replica_sets.indexed_by(ROLLOUT_LABEL);
    let (runs, run_events) = cache::trimmed_by_shard(
        scoped_api::<AnalysisRun>(&client, namespace),
        owned.clone(),
        TrimRun,
        health.watch("rollout/AnalysisRun"),
        in_owners_shards(&leadership, &rollout_cache),
    );
    let runs = runs.indexed_by(ROLLOUT_LABEL);
    // Every Service in scope, trimmed to its selector: a Rollout's first look reads its
    // Services here, and a selector changed by someone else is drift to repair.
    let (services, service_events) = cache::trimmed(
        scoped_api::<Service>(&client, namespace),
        watch::cached_first(),
        TrimService,
        health.watch("rollout/Service"),
    );
    // Optional: a cluster upgraded without the Experiment CRD runs every Rollout but those
    // with experiment steps, which report the missing kind.
    let (experiments, experiment_events) = cache::trimmed_by_shard(
        scoped_api::<Experiment>(&client, namespace),
        owned,
        TrimExperiment,
        health.optional_watch("rollout/Experiment"),
        in_owners_shards(&leadership, &rollout_cache),
    );
    let experiments = experiments.indexed_by(ROLLOUT_LABEL);
    // Kept (their specs): a first look reads its routes here, so a resync reads no route.
    let (http_routes, routes) = cache::trimmed(
        scoped_api::<HttpRoute>(&client, namespace),
        watch::cached_first(),
        TrimHttpRoute,
        // Optional: a cluster without Gateway API runs Rollouts without a router.
        health.optional_watch("rollout/HTTPRoute"),
    );
    let (grpc_routes_cache, grpc_routes) = cache::trimmed(
        scoped_api::<GrpcRoute>(&client, namespace),
        watch::cached_first(),
        TrimGrpcRoute,
        health.optional_watch("rollout/GRPCRoute"),
    );
    // The other routers' objects, each optional: a cluster without Istio, SMI or an Ingress
    // controller runs Rollouts on the routers it has.
    let ingresses = watch::watched(
        scoped_api::<Ingress>(&client, namespace),
        watch::cached_first(),
        health.optional_watch("rollout/Ingress"),
    );
    let virtual_services = watch::watched(
        dynamic_api(&client, namespace, &istio::virtual_service_resource()),
        watch::cached_first(),
        health.optional_watch("rollout/VirtualService"),
    );
    let destination_rules = watch::watched(
        dynamic_api(&client, namespace, &istio::destination_rule_resource()),
        watch::cached_first(),
        health.optional_watch("rollout/DestinationRule"),
    );
    // TrafficSplits at the version the cluster serves now (the newest weir writes without).
    let split_version = match client.list_api_groups().await {
        Ok(groups) => groups
            .groups
            .iter()
            .find(|g| g.name == smi::GROUP)
            .and_then(smi::choose_version),
        Err(error) => {
            warn!(%error, "could not list the API groups: TrafficSplits are watched at the newest version");
            None
        }
    }
    .unwrap_or(smi::VERSIONS[0]);
    let traffic_splits = watch::watched(
        dynamic_api(&client, namespace, &smi::api_resource(split_version)),
        watch::cached_first(),
        health.optional_watch("rollout/TrafficSplit"),
    );
    // Kept whole: a Rollout's first look reads its templates here (see TemplateCaches).
    let (template_cache, templates) = cache::trimmed(
        scoped_api::<AnalysisTemplate>(&client, namespace),
        watch::cached_first(),
        cache::KeepAll,
        health.watch("rollout/AnalysisTemplate"),
    );
    let (cluster_template_cache, cluster_templates) = cache::trimmed(
        Api::<ClusterAnalysisTemplate>::all(client.clone()),
        watch::cached_first(),
        cache::KeepAll,
        health.watch("rollout/ClusterAnalysisTemplate"),
    );
    let written = Arc::new(WrittenVersions::default());
    // A deleted Rollout's series and versions go with it whoever deleted it and whichever
    // replica led it: the controller reconciles no deletion, and the finalizer's clean-up
    // runs on one replica only.
    let rollout_events = rollout_events.inspect({
        let (metrics, written) = (metrics.clone(), written.clone());
        move |event| {
            if let Ok(kube::runtime::watcher::Event::Delete(rollout)) = event {
                metrics.forget_rollout(
                    &rollout.namespace().unwrap_or_default(),
                    &rollout.name_any(),
                );
                written.forget(rollout);
            }
        }
    });
    let controller = Controller::for_stream(rollout_events.applied_objects(), rollout_cache.store)
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(watch::EachWatchBacksOff);
    let rollouts = controller.store();
    let by_template = controller.store();
    let by_cluster_template = controller.store();
    let context = Arc::new(Context {
        events: crate::runtime::Events::new(&client),
        client: client.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        written,
        caches: Caches {
            replica_sets,
            runs,
            experiments,
            services,
            http_routes,
            grpc_routes: grpc_routes_cache,
        },
        templates: TemplateCaches {
            namespaced: template_cache,
            cluster: cluster_template_cache,
        },
    });
    let mut changes = leadership.changes();
    metrics.set_leader(changes.borrow().shards);
    tokio::spawn({
        let (leadership, rollouts) = (leadership.clone(), controller.store());
        async move {
            let mut gains = changes.borrow_and_update().gains;
            while changes.changed().await.is_ok() {
                let led = *changes.borrow_and_update();
                if led.gains > gains {
                    metrics.watches.forget_ended_outages();
                }
                gains = led.gains;
                metrics.set_leader(led.shards);
                // A shard another replica leads now is reported by that one alone.
                for rollout in rollouts.state() {
                    if !leadership.is_leading(leadership.shard_of(&rollout.metadata)) {
                        metrics.forget_rollout(
                            &rollout.namespace().unwrap_or_default(),
                            &rollout.name_any(),
                        );
                    }
                }
            }
        }
    });
    let store = controller.store();
    tokio::spawn(async move {
        // Polled again every second: the store's readiness signal keeps a single waker, and the
        // controller waits on it too, so a lone long wait here could miss the wake-up.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    info!("the Rollout cache is synced: ready");
                    ready.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(Err(error)) => return warn!(%error, "the Rollout cache will never sync"),
                Err(_) => continue,
            }
        }
    });
    // Becoming leader: look at every Rollout again, since events were ignored until now.
    let became_leader = became_leader(&leadership);
    info!(
        namespace = namespace.unwrap_or("(all)"),
        "rollout controller starting"
    );
    controller
        // A deleted ReplicaSet or run is news for its Rollout too: touched, not only applied.
        .owns_stream(replica_set_events.touched_objects())
        .owns_stream(run_events.touched_objects())
        .owns_stream(experiment_events.touched_objects())
        .watches_stream(service_events.touched_objects(), {
            let rollouts = rollouts.clone();
            move |service: Service| naming_service(&rollouts, &service)
        })
        // Someone else changing a route's weights (or deleting weir's canary Ingress or
        // TrafficSplit) is drift to repair; map it to the Rollouts that route through it.
        .watches_stream(routes.touched_objects(), {
            let rollouts = rollouts.clone();
            move |route: HttpRoute| routing_through(&rollouts, RouteKind::HttpRoute, &route)
        })
        .watches_stream(grpc_routes.touched_objects(), {
            let rollouts = rollouts.clone();
            move |route: GrpcRoute| routing_through(&rollouts, RouteKind::GrpcRoute, &route)
        })
        .watches_stream(ingresses.touched_objects(), {
            let rollouts = rollouts.clone();
            move |ingress: Ingress| routing_through(&rollouts, RouteKind::Ingress, &ingress)
        })
        .watches_stream_with(
            virtual_services.touched_objects(),
            {
                let rollouts = rollouts.clone();
                move |object: DynamicObject| {
                    routing_through(&rollouts, RouteKind::VirtualService, &object)
                }
            },
            istio::virtual_service_resource(),
        )
        .watches_stream_with(
            destination_rules.touched_objects(),
            {
                let rollouts = rollouts.clone();
                move |object: DynamicObject| {
                    routing_through(&rollouts, RouteKind::DestinationRule, &object)
                }
            },
            istio::destination_rule_resource(),
        )
        .watches_stream_with(
            traffic_splits.touched_objects(),
            move |object: DynamicObject| {
                routing_through(&rollouts, RouteKind::TrafficSplit, &object)
            },
            smi::api_resource(split_version),
        )
        // A template fixed (or broken) changes what its Rollouts may do: reconcile them.
        .watches_stream(
            templates.touched_objects(),
            move |template: AnalysisTemplate| {
                let namespace = template.namespace().unwrap_or_default();
                referring(&by_template, &template.name_any(), false)
                    .filter(|r| r.namespace.as_deref() == Some(namespace.as_str()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(
            cluster_templates.touched_objects(),
            move |template: ClusterAnalysisTemplate| {
                referring(&by_cluster_template, &template.name_any(), true).collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(became_leader)
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(crate::runtime::log_failure)
        .await;
    info!("rollout controller stopped");
}

/// The Rollouts that route through `object`, a `kind` some router reads or writes.
fn routing_through<K: ResourceExt>(
    rollouts: &Store<Rollout>,
    kind: RouteKind,
    object: &K,
) -> Vec<ObjectRef<Rollout>> {
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    rollouts
        .state()
        .into_iter()
        .filter(|rollout| traffic::refers_to(rollout, kind, &namespace, &name))
        .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
        .collect()
}

/// The Rollouts that name `service` as one of their strategy's two Services.
fn naming_service(rollouts: &Store<Rollout>, service: &Service) -> Vec<ObjectRef<Rollout>> {
    let (namespace, name) = (service.namespace(), service.name_any());
    rollouts
        .state()
        .into_iter()
        .filter(|rollout| rollout.namespace() == namespace)
        .filter(|rollout| {
            rollout
                .spec
                .strategy
                .services()
                .iter()
                .any(|named| named.name == Some(name.as_str()))
        })
        .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
        .collect()
}

/// How a cache of what Rollouts own (labelled `weir.dev/rollout`) keeps only what the
/// Rollouts of the shards this replica holds own: an object is in its owner's shard, read
/// from `rollouts` (whose stubs keep the labels that decide it), since a ReplicaSet carries
/// neither its Rollout's `weir.dev/shard` label nor its move to another shard. One whose
/// owner is not cached yet is kept. None without leader election: everything is held.
fn in_owners_shards<K: Resource>(
    leadership: &Leadership,
    rollouts: &cache::Cache<Rollout>,
) -> Option<cache::Sharded<K>> {
    let moves = rollouts.owner_moves()?;
    let (leadership, store) = (leadership.clone(), rollouts.store.clone());
    Some(cache::Sharded {
        leadership: leadership.clone(),
        shard_of: Box::new(move |object: &K| {
            let owner = object.meta().labels.as_ref()?.get(ROLLOUT_LABEL)?;
            let namespace = object.meta().namespace.as_deref()?;
            let rollout = store.get(&ObjectRef::new(owner).within(namespace))?;
            Some(leadership.shard_of(&rollout.metadata))
        }),
        unheld: cache::Unheld::Dropped,
        moves: Some(moves),
        owner_moves: None,
    })
}

fn dynamic_api(
    client: &Client,
    namespace: Option<&str>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// The Rollouts whose analyses name this template.
fn referring(
    rollouts: &Store<Rollout>,
    template: &str,
    cluster_scope: bool,
) -> impl Iterator<Item = ObjectRef<Rollout>> {
    let template = template.to_owned();
    rollouts.state().into_iter().filter_map(move |rollout| {
        let refers = crate::analysis::run::requested(&rollout.spec)
            .iter()
            .any(|r| {
                r.templates
                    .iter()
                    .any(|t| t.template_name == template && t.cluster_scope == cluster_scope)
            });
        refers.then(|| ObjectRef::from_obj(rollout.as_ref()))
    })
}
