//! What every router is: the `Router` trait and its errors, below the routers and
//! `AnyRouter`, which chooses among them.

use std::collections::BTreeMap;

use crate::api::rollout::{HeaderRoutingMatch, RouteMatch};

/// A route weir adds beside the weighted one (`trafficRouting.managedRoutes`), in the
/// router-neutral terms of the steps that ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagedRoute {
    /// Requests matching any of these go to the canary alone (`setHeaderRoute`).
    Header(Vec<HeaderRoutingMatch>),
    /// Requests matching any block are served as the weighted route serves them (by the
    /// current weights), and `percentage` of them copied to the canary (`setMirrorRoute`).
    Mirror {
        percentage: i32,
        matches: Vec<RouteMatch>,
    },
}

/// The managed routes a router shows, by name: `None` for one that is there but not as weir
/// would write it (edited, or not the same on every object the router sets).
pub type ShownRoutes = BTreeMap<String, Option<ManagedRoute>>;

/// Backends weir adds to a split beside the stable and the canary (the Services of an
/// experiment's weighted templates), by Service name, each with its share in percent.
/// A share of -1 reads a backend that is not the same on every split the router sets.
pub type ExtraWeights = BTreeMap<String, i32>;

/// Several readings of extra backends (routers, or the routes of one) as one: the share all
/// show alike, -1 for a backend shown apart or not shown by all (so it is set again).
pub fn merge_extras(each: &[ExtraWeights]) -> ExtraWeights {
    let mut merged = ExtraWeights::new();
    for shown in each {
        for (service, share) in shown {
            merged.entry(service.clone()).or_insert_with(|| {
                let alike = each.iter().all(|other| other.get(service) == Some(share));
                if alike { *share } else { -1 }
            });
        }
    }
    merged
}

/// The field that lists managed routes, for messages.
pub const MANAGED_ROUTES_FIELD: &str = "spec.strategy.canary.trafficRouting.managedRoutes";

/// The managed route names a Rollout's routers must read: those `managedRoutes` names, and
/// those its status records as written (a name dropped from the spec mid-canary among them).
pub fn names_to_read(
    spec: &crate::api::rollout::RolloutSpec,
    status: Option<&crate::api::rollout::RolloutStatus>,
) -> Vec<String> {
    let named = spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .map(|r| r.managed_routes.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| m.name.clone());
    let mut names: Vec<String> = Vec::new();
    for name in named.chain(
        status
            .into_iter()
            .flat_map(|s| s.managed_routes.iter().cloned()),
    ) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The route object does not exist.
    #[error(
        "{kind} {namespace}/{name} not found: create it, or fix spec.strategy.canary.trafficRouting"
    )]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The cluster has no such kind: its CRDs are not installed.
    #[error(
        "the cluster has no {kind} kind (the CRDs of {group} are not installed): install them, or remove spec.strategy.canary.trafficRouting"
    )]
    KindMissing {
        kind: &'static str,
        group: &'static str,
    },
    /// The route exists but cannot carry a canary split as configured.
    #[error("{0}")]
    Misconfigured(String),
    /// The route is in another namespace, and no ReferenceGrant there lets the Rollout's
    /// namespace refer to it: weir does not touch it.
    #[error(
        "{kind} {route_namespace}/{route} is in another namespace and no ReferenceGrant there allows Rollouts from namespace {rollout_namespace}: create a ReferenceGrant in {route_namespace} that allows Rollouts from {rollout_namespace} (from: group weir.dev, kind Rollout, namespace {rollout_namespace}; to: group gateway.networking.k8s.io, kind {kind}, name {route}), or use a route in {rollout_namespace}"
    )]
    NotGranted {
        /// The route's kind: HTTPRoute or GRPCRoute.
        kind: &'static str,
        /// The Rollout's field that names the route's namespace.
        field: String,
        route_namespace: String,
        route: String,
        rollout_namespace: String,
    },
    /// The weight read back is not the weight written.
    #[error("{kind} {name}: wrote canary weight {wanted} but read back {found:?}")]
    NotVerified {
        kind: &'static str,
        name: String,
        wanted: i32,
        found: Option<i32>,
    },
    /// The router cannot send a share of traffic to backends besides the stable and canary.
    #[error(
        "Service {service}: this router cannot send an experiment's share of traffic (Gateway API routes can): remove weight from the experiment step's templates"
    )]
    ExtrasUnsupported { service: String },
    /// The router cannot carry the routes `setHeaderRoute` and `setMirrorRoute` add.
    #[error(
        "managed route {route}: this router cannot carry header or mirror routes (istio and gatewayAPI HTTPRoutes can): remove spec.strategy.canary.trafficRouting.managedRoutes and the setHeaderRoute/setMirrorRoute steps"
    )]
    ManagedRoutesUnsupported { route: String },
    #[error("{kind} {name}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
}

/// A traffic router: sets the canary's weight (0..=100, the stable gets the rest), reads it
/// back, and undoes what weir changed.
pub trait Router: Sync {
    /// The canary weight the router carries now; None before weir set any.
    fn weight(&self) -> impl Future<Output = Result<Option<i32>, RouterError>> + Send;
    /// Sets the canary weight and returns it as read back from the API server.
    fn set_weight(&self, canary: i32) -> impl Future<Output = Result<i32, RouterError>> + Send;
    /// Sets the canary weight and each extra backend's (the stable gets the rest); extra
    /// backends weir added before and `extras` leaves out are removed. Returns the canary
    /// weight as read back. A router that carries no extra backends refuses any.
    fn set_weights(
        &self,
        canary: i32,
        extras: &ExtraWeights,
    ) -> impl Future<Output = Result<i32, RouterError>> + Send {
        let refused = extras.keys().next().cloned();
        async move {
            match refused {
                None => self.set_weight(canary).await,
                Some(service) => Err(RouterError::ExtrasUnsupported { service }),
            }
        }
    }
    /// The extra backends weir added that the router carries now, with their shares.
    fn extra_weights(&self) -> impl Future<Output = Result<ExtraWeights, RouterError>> + Send {
        async { Ok(ExtraWeights::new()) }
    }
    /// Returns all traffic to the stable backend, as before weir (for a deleted Rollout),
    /// managed routes and extra backends removed.
    fn remove_managed(&self) -> impl Future<Output = Result<(), RouterError>> + Send {
        async { self.set_weight(0).await.map(|_| ()) }
    }
    /// The managed routes the router carries now. A router without them carries none.
    fn managed_routes(&self) -> impl Future<Output = Result<ShownRoutes, RouterError>> + Send {
        async { Ok(ShownRoutes::new()) }
    }
    /// Adds managed route `name`, or replaces it with `route`, in its place of precedence.
    fn set_managed_route(
        &self,
        name: &str,
        route: &ManagedRoute,
    ) -> impl Future<Output = Result<(), RouterError>> + Send {
        let _ = route;
        let name = name.to_owned();
        async move { Err(RouterError::ManagedRoutesUnsupported { route: name }) }
    }
    /// Removes managed route `name`; one that is not there is removed already.
    fn remove_managed_route(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), RouterError>> + Send {
        let _ = name;
        async { Ok(()) }
    }
}
