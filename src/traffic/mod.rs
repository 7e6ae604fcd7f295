//! Traffic routers: where the canary's share of traffic is set and read back. The planner
//! knows only weights; each router turns them into its own objects. More kinds implement
//! `Router` and join `AnyRouter` without touching the planner.

pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod reference_grant;
mod router;
mod several;
pub mod smi;

pub use router::{Router, RouterError};
pub use several::{Reading, Routers};

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

/// The field that names a route's namespace, for messages.
pub const ROUTE_NAMESPACE_FIELD: &str = "spec.strategy.canary.trafficRouting.gatewayAPI.namespace";

impl AnyRouter {
    /// Every router a Rollout in `namespace` asks for, in a fixed order (Istio, NGINX, SMI,
    /// Gateway API); none when it splits traffic by replica count. A route in another
    /// namespace is used only when a ReferenceGrant there allows it (`NotGranted` otherwise):
    /// the only way to a router, so nothing writes to a route the Rollout may not touch. The
    /// grants are read only for such a route. `template_hash` is the Rollout's template's
    /// (the version subset-level Istio selects before any other).
    pub async fn all_for_rollout(
        client: &Client,
        rollout: &Rollout,
        namespace: &str,
        template_hash: &str,
    ) -> Result<Vec<(String, AnyRouter)>, RouterError> {
        let Some(canary): Option<&CanaryStrategy> = rollout.spec.strategy.canary.as_ref() else {
            return Ok(Vec::new());
        };
        let mut routers = Vec::new();
        if let Some(routing) = canary
            .traffic_routing
            .as_ref()
            .and_then(|routing| routing.istio.as_ref())
            && let Some(router) = istio::IstioRouter::new(
                client.clone(),
                namespace,
                routing,
                (
                    canary.stable_service.as_deref(),
                    canary.canary_service.as_deref(),
                ),
                versions(rollout.status.as_ref(), template_hash),
            )
        {
            let names: Vec<&str> = routing
                .all_virtual_services()
                .map(|v| v.name.as_str())
                .collect();
            let label = format!("Istio VirtualService {}", names.join(", "));
            routers.push((label, AnyRouter::Istio(Box::new(router))));
        }
        if let Some(router) = nginx::for_rollout(client, rollout, namespace) {
            let label = format!("NGINX Ingress {}", router.canary_names().join(", "));
            routers.push((label, AnyRouter::Nginx(Box::new(router))));
        }
        if let Some(router) = smi::for_rollout(client, rollout, namespace) {
            let label = format!("SMI TrafficSplit {}", router.name());
            routers.push((label, AnyRouter::Smi(Box::new(router))));
        }
        if let Some((label, router)) = gateway_api_router(client, canary, namespace).await? {
            routers.push((label, AnyRouter::GatewayApi(Box::new(router))));
        }
        Ok(routers)
    }
}

/// The HTTPRoute router `trafficRouting.gatewayAPI` asks for, once both Services are named,
/// with its label.
async fn gateway_api_router(
    client: &Client,
    canary: &CanaryStrategy,
    namespace: &str,
) -> Result<Option<(String, gateway_api::HttpRouteRouter)>, RouterError> {
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
    Ok(Some((
        format!(
            "Gateway API HTTPRoute {route_namespace}/{}",
            gateway.http_route
        ),
        gateway_api::HttpRouteRouter::new(
            client.clone(),
            route_namespace,
            &gateway.http_route,
            stable,
            canary_service,
        ),
    )))
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

    async fn remove_managed(&self) -> Result<(), RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.remove_managed().await,
            AnyRouter::Istio(router) => router.remove_managed().await,
            AnyRouter::Nginx(router) => router.remove_managed().await,
            AnyRouter::Smi(router) => router.remove_managed().await,
        }
    }
}

/// The kinds of object a router reads or writes, each watched so a change to one (an edit
/// by hand, a canary Ingress deleted) reaches the Rollouts that name it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    HttpRoute,
    VirtualService,
    DestinationRule,
    Ingress,
    TrafficSplit,
}

/// Whether `rollout` routes through the object `kind` `namespace/name`: a route it names,
/// a stable Ingress or the canary Ingress weir makes beside it, its TrafficSplit.
pub fn refers_to(rollout: &Rollout, kind: RouteKind, namespace: &str, name: &str) -> bool {
    let Some(canary) = rollout.spec.strategy.canary.as_ref() else {
        return false;
    };
    let Some(routing) = canary.traffic_routing.as_ref() else {
        return false;
    };
    let rollout_namespace = rollout.metadata.namespace.as_deref().unwrap_or_default();
    let rollout_name = rollout.metadata.name.as_deref().unwrap_or_default();
    if kind == RouteKind::HttpRoute {
        return routing.gateway_api.as_ref().is_some_and(|g| {
            g.http_route == name && g.namespace.as_deref().unwrap_or(rollout_namespace) == namespace
        });
    }
    if namespace != rollout_namespace {
        return false;
    }
    match kind {
        RouteKind::HttpRoute => false,
        RouteKind::VirtualService => routing
            .istio
            .as_ref()
            .is_some_and(|i| i.all_virtual_services().any(|v| v.name == name)),
        RouteKind::DestinationRule => routing
            .istio
            .as_ref()
            .and_then(|i| i.destination_rule.as_ref())
            .is_some_and(|d| d.name == name),
        RouteKind::Ingress => routing.nginx.as_ref().is_some_and(|nginx| {
            nginx::stable_ingresses(nginx)
                .iter()
                .any(|stable| stable == name || nginx::canary_name(rollout_name, stable) == name)
        }),
        RouteKind::TrafficSplit => routing
            .smi
            .as_ref()
            .is_some_and(|smi| smi.traffic_split_name.as_deref().unwrap_or(rollout_name) == name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(routing: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                "strategy": {"canary": {"stableService": "s", "canaryService": "c", "trafficRouting": routing}}}
        }))
        .expect("a Rollout")
    }

    #[test]
    fn each_router_object_maps_back_to_its_rollout_and_nothing_else_does() {
        use RouteKind::*;
        let all = rollout(json!({
            "gatewayAPI": {"httpRoute": "edge", "namespace": "gateways"},
            "istio": {"virtualServices": [{"name": "vs-a"}, {"name": "vs-b"}],
                "destinationRule": {"name": "dr", "canarySubsetName": "c", "stableSubsetName": "s"}},
            "nginx": {"stableIngress": "web-in"},
            "smi": {}
        }));
        let yes = [
            (HttpRoute, "gateways", "edge"),
            (VirtualService, "shop", "vs-a"),
            (VirtualService, "shop", "vs-b"),
            (DestinationRule, "shop", "dr"),
            (Ingress, "shop", "web-in"),
            (Ingress, "shop", "web-web-in-canary"),
            (TrafficSplit, "shop", "web"),
        ];
        for (kind, namespace, name) in yes {
            assert!(
                refers_to(&all, kind, namespace, name),
                "{kind:?} {namespace}/{name}"
            );
        }
        let no = [
            (HttpRoute, "shop", "edge"),
            (VirtualService, "other", "vs-a"),
            (VirtualService, "shop", "dr"),
            (DestinationRule, "shop", "vs-a"),
            (Ingress, "shop", "web"),
            (Ingress, "other", "web-in"),
            (TrafficSplit, "shop", "web-split"),
        ];
        for (kind, namespace, name) in no {
            assert!(
                !refers_to(&all, kind, namespace, name),
                "{kind:?} {namespace}/{name}"
            );
        }
        let named = rollout(json!({"smi": {"trafficSplitName": "web-split"}}));
        assert!(refers_to(&named, TrafficSplit, "shop", "web-split"));
        assert!(!refers_to(&named, TrafficSplit, "shop", "web"));
        let none = rollout(json!(null));
        assert!(!refers_to(&none, Ingress, "shop", "web-in"));
    }
}
