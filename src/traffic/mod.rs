//! Traffic routers: where the canary's share of traffic is set and read back. The planner
//! knows only weights; each router turns them into its own objects. More kinds implement
//! `Router` and join `AnyRouter` without touching the planner.

pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod reference_grant;
mod router;
pub mod smi;

pub use router::{MANAGED_ROUTES_FIELD, ManagedRoute, Router, RouterError, ShownRoutes};

use kube::Client;

use crate::api::Rollout;
use crate::api::rollout::{CanaryStrategy, RolloutStatus};

/// Every router weir has, chosen by the Rollout's `trafficRouting`.
pub enum AnyRouter {
    GatewayApi(Box<gateway_api::HttpRouteRouter>),
    Istio(Box<istio::IstioRouter>),
    Nginx(Box<nginx::NginxRouter>),
    Smi(Box<smi::SmiRouter>),
}

/// The versions an Istio DestinationRule's subsets select for a status: the stable hash
/// (the template's own before there is any) and the canary's.
fn versions(status: Option<&RolloutStatus>, template_hash: &str) -> istio::Versions {
    let stable = status
        .and_then(|s| s.stable_rs.clone())
        .unwrap_or_else(|| template_hash.to_owned());
    let canary = status
        .and_then(|s| s.canary_rs.clone())
        .unwrap_or_else(|| template_hash.to_owned());
    istio::Versions { stable, canary }
}

fn routing_of(canary: &CanaryStrategy) -> Option<&crate::api::rollout::TrafficRouting> {
    canary.traffic_routing.as_ref()
}

/// The names of `trafficRouting.managedRoutes`, highest precedence first.
fn managed_names(routing: Option<&crate::api::rollout::TrafficRouting>) -> Vec<String> {
    routing
        .map(|r| r.managed_routes.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default()
}

/// The field that names a route's namespace, for messages.
pub const ROUTE_NAMESPACE_FIELD: &str = "spec.strategy.canary.trafficRouting.gatewayAPI.namespace";

impl AnyRouter {
    /// The router a Rollout in `namespace` asks for; None when it splits traffic by replica
    /// count. A route in another namespace is used only when a ReferenceGrant there allows
    /// it (`NotGranted` otherwise): the only way to a router, so nothing writes to a route
    /// the Rollout may not touch. The grants are read only for such a route. `template_hash`
    /// is the Rollout's template's (the version subset-level Istio selects before any other).
    pub async fn for_rollout(
        client: &Client,
        rollout: &Rollout,
        namespace: &str,
        template_hash: &str,
    ) -> Result<Option<AnyRouter>, RouterError> {
        let Some(canary): Option<&CanaryStrategy> = rollout.spec.strategy.canary.as_ref() else {
            return Ok(None);
        };
        if let Some(routing) = canary
            .traffic_routing
            .as_ref()
            .and_then(|routing| routing.istio.as_ref())
        {
            return Ok(istio::IstioRouter::new(
                client.clone(),
                namespace,
                routing,
                (
                    canary.stable_service.as_deref(),
                    canary.canary_service.as_deref(),
                ),
                versions(rollout.status.as_ref(), template_hash),
            )
            .map(|router| {
                AnyRouter::Istio(Box::new(router.managing(managed_names(routing_of(canary)))))
            }));
        }
        if let Some(router) = nginx::for_rollout(client, rollout, namespace) {
            return Ok(Some(AnyRouter::Nginx(Box::new(router))));
        }
        if let Some(router) = smi::for_rollout(client, rollout, namespace) {
            return Ok(Some(AnyRouter::Smi(Box::new(router))));
        }
        let Some(gateway) = canary
            .traffic_routing
            .as_ref()
            .and_then(|routing| routing.gateway_api.as_ref())
        else {
            return Ok(None);
        };
        let (Some(stable), Some(canary_service)) = (
            canary.stable_service.as_deref(),
            canary.canary_service.as_deref(),
        ) else {
            return Ok(None);
        };
        let route_namespace = gateway.namespace.as_deref().unwrap_or(namespace);
        if route_namespace != namespace {
            let found = reference_grant::list(client, route_namespace)
                .await
                .map_err(|source| RouterError::Api {
                    kind: "ReferenceGrants of HTTPRoute",
                    name: format!("{route_namespace}/{}", gateway.http_route),
                    source: Box::new(source),
                })?;
            if !reference_grant::grants(&found, namespace, &gateway.http_route) {
                return Err(RouterError::NotGranted {
                    route_namespace: route_namespace.to_owned(),
                    route: gateway.http_route.clone(),
                    rollout_namespace: namespace.to_owned(),
                });
            }
        }
        Ok(Some(AnyRouter::GatewayApi(Box::new(
            gateway_api::HttpRouteRouter::new(
                client.clone(),
                route_namespace,
                &gateway.http_route,
                stable,
                canary_service,
            ),
        ))))
    }
}

impl AnyRouter {
    /// Follows the status a plan holds now, before its actions are carried out: subset-level
    /// Istio labels its subsets with the stable and canary hashes that status names.
    pub fn follow(&self, status: &RolloutStatus, template_hash: &str) {
        if let AnyRouter::Istio(router) = self {
            router.follow(versions(Some(status), template_hash));
        }
    }
}

impl AnyRouter {
    /// Where the router itself selects the canary's pods (subset-level Istio: the canary
    /// subset, labelled before any weight reaches it), the hash it selects; None where a
    /// canary Service does.
    pub fn canary_selector_hash(&self) -> Option<String> {
        match self {
            AnyRouter::GatewayApi(_) | AnyRouter::Nginx(_) | AnyRouter::Smi(_) => None,
            AnyRouter::Istio(router) => router.canary_subset_hash(),
        }
    }
}

impl Router for AnyRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.weight().await,
            AnyRouter::Istio(router) => router.weight().await,
            AnyRouter::Nginx(router) => router.weight().await,
            AnyRouter::Smi(router) => router.weight().await,
        }
    }

    async fn set_weight(&self, canary: i32) -> Result<i32, RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.set_weight(canary).await,
            AnyRouter::Istio(router) => router.set_weight(canary).await,
            AnyRouter::Nginx(router) => router.set_weight(canary).await,
            AnyRouter::Smi(router) => router.set_weight(canary).await,
        }
    }

    async fn managed_routes(&self) -> Result<ShownRoutes, RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.managed_routes().await,
            AnyRouter::Istio(router) => router.managed_routes().await,
            AnyRouter::Nginx(router) => router.managed_routes().await,
            AnyRouter::Smi(router) => router.managed_routes().await,
        }
    }

    async fn set_managed_route(&self, name: &str, route: &ManagedRoute) -> Result<(), RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.set_managed_route(name, route).await,
            AnyRouter::Istio(router) => router.set_managed_route(name, route).await,
            AnyRouter::Nginx(router) => router.set_managed_route(name, route).await,
            AnyRouter::Smi(router) => router.set_managed_route(name, route).await,
        }
    }

    async fn remove_managed_route(&self, name: &str) -> Result<(), RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.remove_managed_route(name).await,
            AnyRouter::Istio(router) => router.remove_managed_route(name).await,
            AnyRouter::Nginx(router) => router.remove_managed_route(name).await,
            AnyRouter::Smi(router) => router.remove_managed_route(name).await,
        }
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.remove_managed().await,
            AnyRouter::Istio(router) => router.remove_managed().await,
            AnyRouter::Nginx(router) => router.remove_managed().await,
            AnyRouter::Smi(router) => router.remove_managed().await,
        }
    }
}
