//! Traffic routers: where the canary's share of traffic is set and read back. The planner
//! knows only weights; each router turns them into its own objects. More kinds (SMI, Istio,
//! NGINX) implement `Router` and join `AnyRouter` without touching the planner.

pub mod gateway_api;

use kube::Client;

use crate::api::Rollout;
use crate::api::rollout::CanaryStrategy;

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
    /// The route exists but cannot carry a canary split as configured.
    #[error("{0}")]
    Misconfigured(String),
    /// The weight read back is not the weight written.
    #[error("{kind} {name}: wrote canary weight {wanted} but read back {found:?}")]
    NotVerified {
        kind: &'static str,
        name: String,
        wanted: i32,
        found: Option<i32>,
    },
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
    /// Returns all traffic to the stable backend, as before weir (for a deleted Rollout).
    fn remove_managed(&self) -> impl Future<Output = Result<(), RouterError>> + Send {
        async { self.set_weight(0).await.map(|_| ()) }
    }
}

/// Every router weir has, chosen by the Rollout's `trafficRouting`.
pub enum AnyRouter {
    GatewayApi(gateway_api::HttpRouteRouter),
}

impl AnyRouter {
    /// The router a Rollout asks for; None when it splits traffic by replica count.
    pub fn for_rollout(client: &Client, rollout: &Rollout, namespace: &str) -> Option<AnyRouter> {
        let canary: &CanaryStrategy = rollout.spec.strategy.canary.as_ref()?;
        let routing = canary.traffic_routing.as_ref()?;
        let gateway = routing.gateway_api.as_ref()?;
        Some(AnyRouter::GatewayApi(gateway_api::HttpRouteRouter::new(
            client.clone(),
            gateway.namespace.as_deref().unwrap_or(namespace),
            &gateway.http_route,
            canary.stable_service.as_deref()?,
            canary.canary_service.as_deref()?,
        )))
    }
}

impl Router for AnyRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.weight().await,
        }
    }

    async fn set_weight(&self, canary: i32) -> Result<i32, RouterError> {
        match self {
            AnyRouter::GatewayApi(router) => router.set_weight(canary).await,
        }
    }
}
