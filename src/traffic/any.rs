//! `AnyRouter`: every router weir has, and which of them a Rollout asks for.

use kube::Client;

use super::router::{ExtraWeights, ManagedRoute, Router, RouterError, ShownRoutes, names_to_read};
use super::{alb, gateway_api, istio, nginx, smi};
use crate::api::Rollout;
use crate::api::rollout::{CanaryStrategy, RolloutStatus};

/// The routers a Rollout asks for that it may use, each with a label for people, and the
/// one refused (a route in another namespace that no ReferenceGrant lets it touch).
#[derive(Default)]
pub struct Chosen {
    pub routers: Vec<(String, AnyRouter)>,
    pub refused: Option<RouterError>,
}

/// Every router weir has, chosen by the Rollout's `trafficRouting`.
pub enum AnyRouter {
    Alb(Box<alb::AlbRouter>),
    GatewayApi(Box<gateway_api::GatewayApiRouter>),
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

impl AnyRouter {
    /// Every router a Rollout in `namespace` asks for, in a fixed order (Istio, NGINX, SMI,
    /// ALB, Gateway API); none when it splits traffic by replica count. A route in another
    /// namespace is used only when a ReferenceGrant there allows it (else it is `refused`, and
    /// the others are still chosen): the only way to a router, so nothing writes to a route
    /// the Rollout may not touch. The
    /// grants are read only for such a route. `template_hash` is the Rollout's template's
    /// (the version subset-level Istio selects before any other).
    pub async fn all_for_rollout(
        client: &Client,
        rollout: &Rollout,
        namespace: &str,
        template_hash: &str,
    ) -> Result<Chosen, RouterError> {
        let Some(canary): Option<&CanaryStrategy> = rollout.spec.strategy.canary.as_ref() else {
            return Ok(Chosen::default());
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
            let managed = names_to_read(&rollout.spec, rollout.status.as_ref());
            routers.push((label, AnyRouter::Istio(Box::new(router.managing(managed)))));
        }
        if let Some(router) = nginx::for_rollout(client, rollout, namespace) {
            let label = format!("NGINX Ingress {}", router.canary_names().join(", "));
            routers.push((label, AnyRouter::Nginx(Box::new(router))));
        }
        if let Some(router) = smi::for_rollout(client, rollout, namespace) {
            let label = format!("SMI TrafficSplit {}", router.name());
            routers.push((label, AnyRouter::Smi(Box::new(router))));
        }
        if let Some(router) = alb::for_rollout(client, rollout, namespace) {
            let label = format!("AWS ALB Ingress {}", router.ingress_names().join(", "));
            routers.push((label, AnyRouter::Alb(Box::new(router))));
        }
        let mut refused = None;
        match gateway_api::for_rollout(client, rollout, namespace).await {
            Ok(Some(router)) => {
                let label = format!("Gateway API {}", router.label());
                routers.push((label, AnyRouter::GatewayApi(Box::new(router))));
            }
            Ok(None) => {}
            // Refused alone: the other routers are still the Rollout's to undo.
            Err(error @ RouterError::NotGranted { .. }) => refused = Some(error),
            Err(error) => return Err(error),
        }
        Ok(Chosen { routers, refused })
    }
}

impl AnyRouter {
    /// Follows the status a plan holds now, before its actions are carried out: subset-level
    /// Istio labels its subsets with the stable and canary hashes that status names.
    /// Gateway API reads and may remove the experiment Services that status records.
    pub fn follow(&self, status: &RolloutStatus, template_hash: &str) {
        match self {
            AnyRouter::Istio(router) => router.follow(versions(Some(status), template_hash)),
            AnyRouter::GatewayApi(router) => router.know_extras(&status.experiment_services),
            _ => {}
        }
    }
}

impl AnyRouter {
    /// Where the router itself selects the canary's pods (subset-level Istio: the canary
    /// subset, labelled before any weight reaches it), the hash it selects; None where a
    /// canary Service does.
    pub fn canary_selector_hash(&self) -> Option<String> {
        match self {
            AnyRouter::Alb(_)
            | AnyRouter::GatewayApi(_)
            | AnyRouter::Nginx(_)
            | AnyRouter::Smi(_) => None,
            AnyRouter::Istio(router) => router.canary_subset_hash(),
        }
    }
}

impl Router for AnyRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        match self {
            AnyRouter::Alb(router) => router.weight().await,
            AnyRouter::GatewayApi(router) => router.weight().await,
            AnyRouter::Istio(router) => router.weight().await,
            AnyRouter::Nginx(router) => router.weight().await,
            AnyRouter::Smi(router) => router.weight().await,
        }
    }

    async fn set_weight(&self, canary: i32) -> Result<i32, RouterError> {
        match self {
            AnyRouter::Alb(router) => router.set_weight(canary).await,
            AnyRouter::GatewayApi(router) => router.set_weight(canary).await,
            AnyRouter::Istio(router) => router.set_weight(canary).await,
            AnyRouter::Nginx(router) => router.set_weight(canary).await,
            AnyRouter::Smi(router) => router.set_weight(canary).await,
        }
    }

    async fn set_weights(&self, canary: i32, extras: &ExtraWeights) -> Result<i32, RouterError> {
        match self {
            AnyRouter::Alb(router) => router.set_weights(canary, extras).await,
            AnyRouter::GatewayApi(router) => router.set_weights(canary, extras).await,
            AnyRouter::Istio(router) => router.set_weights(canary, extras).await,
            AnyRouter::Nginx(router) => router.set_weights(canary, extras).await,
            AnyRouter::Smi(router) => router.set_weights(canary, extras).await,
        }
    }

    async fn extra_weights(&self) -> Result<ExtraWeights, RouterError> {
        match self {
            AnyRouter::Alb(router) => router.extra_weights().await,
            AnyRouter::GatewayApi(router) => router.extra_weights().await,
            AnyRouter::Istio(router) => router.extra_weights().await,
            AnyRouter::Nginx(router) => router.extra_weights().await,
            AnyRouter::Smi(router) => router.extra_weights().await,
        }
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        match self {
            AnyRouter::Alb(router) => router.remove_managed().await,
            AnyRouter::GatewayApi(router) => router.remove_managed().await,
            AnyRouter::Istio(router) => router.remove_managed().await,
            AnyRouter::Nginx(router) => router.remove_managed().await,
            AnyRouter::Smi(router) => router.remove_managed().await,
        }
    }

    async fn managed_routes(&self) -> Result<ShownRoutes, RouterError> {
        match self {
            AnyRouter::Alb(router) => router.managed_routes().await,
            AnyRouter::GatewayApi(router) => router.managed_routes().await,
            AnyRouter::Istio(router) => router.managed_routes().await,
            AnyRouter::Nginx(router) => router.managed_routes().await,
            AnyRouter::Smi(router) => router.managed_routes().await,
        }
    }

    async fn set_managed_route(&self, name: &str, route: &ManagedRoute) -> Result<(), RouterError> {
        match self {
            AnyRouter::Alb(router) => router.set_managed_route(name, route).await,
            AnyRouter::GatewayApi(router) => router.set_managed_route(name, route).await,
            AnyRouter::Istio(router) => router.set_managed_route(name, route).await,
            AnyRouter::Nginx(router) => router.set_managed_route(name, route).await,
            AnyRouter::Smi(router) => router.set_managed_route(name, route).await,
        }
    }

    async fn remove_managed_route(&self, name: &str) -> Result<(), RouterError> {
        match self {
            AnyRouter::Alb(router) => router.remove_managed_route(name).await,
            AnyRouter::GatewayApi(router) => router.remove_managed_route(name).await,
            AnyRouter::Istio(router) => router.remove_managed_route(name).await,
            AnyRouter::Nginx(router) => router.remove_managed_route(name).await,
            AnyRouter::Smi(router) => router.remove_managed_route(name).await,
        }
    }
}
