//! Traffic routers: where the canary's share of traffic is set and read back. The planner
//! knows only weights; each router turns them into its own objects. More kinds implement
//! `Router` and join `AnyRouter` without touching the planner.

pub mod alb;
mod any;
pub mod gateway_api;
pub mod http_route_rules;
pub mod istio;
pub mod nginx;
pub mod reference_grant;
mod router;
mod several;
pub mod smi;

pub use any::AnyRouter;
pub use router::{
    ExtraWeights, MANAGED_ROUTES_FIELD, ManagedRoute, Router, RouterError, ShownRoutes,
    names_to_read,
};
pub use several::{Reading, RouterView, Routers, describe_experiment_share, nothing_to_undo};

use crate::api::Rollout;
use crate::api::rollout::GatewayRouteKind;

/// The kinds of object a router reads or writes, each watched so a change to one (an edit
/// by hand, a canary Ingress deleted) reaches the Rollouts that name it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    HttpRoute,
    GrpcRoute,
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
    let gateway_kind = match kind {
        RouteKind::HttpRoute => Some(GatewayRouteKind::Http),
        RouteKind::GrpcRoute => Some(GatewayRouteKind::Grpc),
        _ => None,
    };
    if let Some(gateway_kind) = gateway_kind {
        return routing
            .gateway()
            .is_some_and(|g| g.names(gateway_kind, namespace, name, rollout_namespace));
    }
    if namespace != rollout_namespace {
        return false;
    }
    match kind {
        RouteKind::HttpRoute | RouteKind::GrpcRoute => false,
        RouteKind::VirtualService => routing
            .istio
            .as_ref()
            .is_some_and(|i| i.all_virtual_services().any(|v| v.name == name)),
        RouteKind::DestinationRule => routing
            .istio
            .as_ref()
            .and_then(|i| i.destination_rule.as_ref())
            .is_some_and(|d| d.name == name),
        RouteKind::Ingress => {
            routing.nginx.as_ref().is_some_and(|nginx| {
                nginx::stable_ingresses(nginx).iter().any(|stable| {
                    stable == name || nginx::canary_name(rollout_name, stable) == name
                })
            }) || routing
                .alb
                .as_ref()
                .is_some_and(|alb| alb::ingresses(alb).iter().any(|ingress| ingress == name))
        }
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
            "alb": {"ingress": "web-alb", "servicePort": 80},
            "smi": {}
        }));
        let yes = [
            (HttpRoute, "gateways", "edge"),
            (VirtualService, "shop", "vs-a"),
            (VirtualService, "shop", "vs-b"),
            (DestinationRule, "shop", "dr"),
            (Ingress, "shop", "web-in"),
            (Ingress, "shop", "web-web-in-canary"),
            (Ingress, "shop", "web-alb"),
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
            (Ingress, "other", "web-alb"),
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
