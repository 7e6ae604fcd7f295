//! Gateway API: the canary weight lives on the `backendRefs` of HTTPRoutes and GRPCRoutes that
//! send to both the stable and the canary Service. weir changes only those two `weight`
//! fields of each route, with a JSON patch that first tests each backend's name (so a
//! concurrent edit that reorders the rules fails instead of setting the wrong backend), as
//! field manager `weir-rollout`: other backends, their filters and other rules stay as they
//! are, so several Rollouts may share a route. Which Gateway or Service (GAMMA) a route is
//! attached to does not matter here.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::api::Rollout;
use crate::api::contract::ROLLOUT_MANAGER;
use crate::api::rollout::{GatewayApiRouting, GatewayRouteKind, TrafficRouting};
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, TestOperation,
};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use super::http_route_rules::Split;
use super::http_route_rules::{
    beyond_gateway_limits, managed_rules, mirror_percent_pruned, primary_splits, put_managed_rules,
    rule_names_pruned, rules_patch, shown_managed_routes,
};
use super::reference_grant;
use super::router::{ExtraWeights, ManagedRoute, Router, RouterError, ShownRoutes, merge_extras};

const GROUP: &str = "gateway.networking.k8s.io";

/// Whether a 404 is about an object (the API server names it) rather than about its kind:
/// for a kind the cluster does not have, the answer names nothing.
pub(super) fn names_an_object(status: &kube::core::Status) -> bool {
    status.details.as_ref().is_some_and(|d| !d.name.is_empty())
}

/// One backendRef as the weights see it.
pub struct Backend<'a> {
    pub name: &'a str,
    pub kind: Option<&'a str>,
    pub group: Option<&'a str>,
    pub weight: Option<i32>,
    pub port: Option<i32>,
}

/// A route kind whose rules carry weighted backendRefs: HTTPRoute and GRPCRoute alike.
pub trait WeightedRoute:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// Each rule's backendRefs, in order.
    fn rules(&self) -> Vec<Vec<Backend<'_>>>;
}

impl WeightedRoute for HttpRoute {
    const KIND: &'static str = "HTTPRoute";
    fn rules(&self) -> Vec<Vec<Backend<'_>>> {
        let rules = self.spec.rules.as_deref().unwrap_or_default();
        rules
            .iter()
            .map(|rule| {
                let backends = rule.backend_refs.as_deref().unwrap_or_default();
                backends
                    .iter()
                    .map(|b| Backend {
                        name: &b.name,
                        kind: b.kind.as_deref(),
                        group: b.group.as_deref(),
                        weight: b.weight,
                        port: b.port,
                    })
                    .collect()
            })
            .collect()
    }
}

impl WeightedRoute for GrpcRoute {
    const KIND: &'static str = "GRPCRoute";
    fn rules(&self) -> Vec<Vec<Backend<'_>>> {
        let rules = self.spec.rules.as_deref().unwrap_or_default();
        rules
            .iter()
            .map(|rule| {
                let backends = rule.backend_refs.as_deref().unwrap_or_default();
                backends
                    .iter()
                    .map(|b| Backend {
                        name: &b.name,
                        kind: b.kind.as_deref(),
                        group: b.group.as_deref(),
                        weight: b.weight,
                        port: b.port,
                    })
                    .collect()
            })
            .collect()
    }
}

/// The rules that split between the two Services. A route with none cannot carry a canary.
pub fn splits<R: WeightedRoute>(
    route: &R,
    stable: &str,
    canary: &str,
) -> Result<Vec<Split>, RouterError> {
    let is_service =
        |b: &Backend| b.kind.unwrap_or("Service") == "Service" && b.group.unwrap_or("").is_empty();
    let mut found = Vec::new();
    for (r, backends) in route.rules().iter().enumerate() {
        let position = |service: &str| {
            backends
                .iter()
                .position(|b| b.name == service && is_service(b))
        };
        if let (Some(s), Some(c)) = (position(stable), position(canary)) {
            found.push((r, s, c));
        }
    }
    if found.is_empty() {
        let name = route.meta().name.clone().unwrap_or_default();
        return Err(RouterError::Misconfigured(format!(
            "{} {name} has no rule with backendRefs to both Service {stable} (stableService) and Service {canary} (canaryService); add both to the rule that should split traffic",
            R::KIND
        )));
    }
    Ok(found)
}

/// The canary's share in percent on the route: the highest over its splitting rules (so a
/// rule left behind is never hidden), or None when the splits do not fit the route.
pub fn canary_weight<R: WeightedRoute>(route: &R, splits: &[Split]) -> Option<i32> {
    canary_share(route, splits, &[])
}

fn is_service(backend: &Backend) -> bool {
    backend.kind.unwrap_or("Service") == "Service" && backend.group.unwrap_or("").is_empty()
}

/// The extra backends among `known` (Service names) on a split rule: index, name, weight.
fn extras_of<'b>(backends: &'b [Backend<'b>], known: &[String]) -> Vec<(usize, &'b str, i32)> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, b)| is_service(b) && known.iter().any(|k| k == b.name))
        .map(|(i, b)| (i, b.name, b.weight.unwrap_or(1)))
        .collect()
}

/// The canary's share like `canary_weight`, over the stable, the canary and the extra
/// backends among `known` on each rule.
pub fn canary_share<R: WeightedRoute>(
    route: &R,
    splits: &[Split],
    known: &[String],
) -> Option<i32> {
    let rules = route.rules();
    let mut highest: Option<i32> = None;
    for &(r, s, c) in splits {
        let backends = rules.get(r)?;
        // Gateway API's default weight is 1.
        let (stable, canary) = (
            backends.get(s)?.weight.unwrap_or(1),
            backends.get(c)?.weight.unwrap_or(1),
        );
        let extras: i64 = extras_of(backends, known)
            .iter()
            .map(|(_, _, w)| i64::from((*w).max(0)))
            .sum();
        let share = share(i64::from(canary), i64::from(stable) + extras);
        highest = Some(highest.map_or(share, |h| h.max(share)));
    }
    highest
}

/// The extra backends among `known` on the route and their shares (-1: not alike on every
/// split rule).
pub fn extra_shares<R: WeightedRoute>(
    route: &R,
    splits: &[Split],
    known: &[String],
) -> ExtraWeights {
    let rules = route.rules();
    let each: Vec<ExtraWeights> = splits
        .iter()
        .filter_map(|&(r, s, c)| {
            let backends = rules.get(r)?;
            let (stable, canary) = (
                backends.get(s)?.weight.unwrap_or(1),
                backends.get(c)?.weight.unwrap_or(1),
            );
            let extras = extras_of(backends, known);
            let total = i64::from(stable.max(0))
                + i64::from(canary.max(0))
                + extras
                    .iter()
                    .map(|(_, _, w)| i64::from((*w).max(0)))
                    .sum::<i64>();
            Some(
                extras
                    .iter()
                    .map(|(_, name, w)| {
                        let others = total - i64::from((*w).max(0));
                        ((*name).to_owned(), share(i64::from(*w), others))
                    })
                    .collect(),
            )
        })
        .collect();
    merge_extras(&each)
}

/// The share in percent of `part` against `rest`, rounded half up.
fn share(part: i64, rest: i64) -> i32 {
    let (part, rest) = (part.max(0), rest.max(0));
    if part + rest == 0 {
        0
    } else {
        // Bounded by 100: each weight is at most i32::MAX, and at most a few are summed.
        ((100 * part + (part + rest) / 2) / (part + rest)) as i32
    }
}

/// Whether every split already carries exactly `weight` to the canary and the rest to the
/// stable: then there is nothing to write.
pub fn already_set<R: WeightedRoute>(route: &R, splits: &[Split], weight: i32) -> bool {
    weights_set(route, splits, weight, &ExtraWeights::new(), &[])
}

/// The stable's weight when the canary has `canary` and the extra backends `extras`.
fn stable_weight(canary: i32, extras: &ExtraWeights) -> i32 {
    (100 - canary - extras.values().map(|w| (*w).max(0)).sum::<i32>()).max(0)
}

/// Whether every split carries exactly `weight` to the canary, exactly `extras` among the
/// backends `known`, and the rest to the stable.
pub fn weights_set<R: WeightedRoute>(
    route: &R,
    splits: &[Split],
    weight: i32,
    extras: &ExtraWeights,
    known: &[String],
) -> bool {
    let rules = route.rules();
    let stable = stable_weight(weight, extras);
    splits.iter().all(|&(r, s, c)| {
        let Some(backends) = rules.get(r) else {
            return false;
        };
        let weight_of = |i: usize| backends.get(i).and_then(|b| b.weight);
        let shown: ExtraWeights = extras_of(backends, known)
            .iter()
            .map(|(i, name, _)| ((*name).to_owned(), weight_of(*i).unwrap_or(-1)))
            .collect();
        let once = extras_of(backends, known).len() == shown.len();
        weight_of(s) == Some(stable) && weight_of(c) == Some(weight) && once && &shown == extras
    })
}

/// The highest share over several routes' reads: a route without a share (None) makes the
/// whole read None, so the planner sets every route again rather than trusting the others.
pub fn highest_share(shares: impl IntoIterator<Item = Option<i32>>) -> Option<i32> {
    let mut highest: Option<i32> = None;
    for share in shares {
        let share = share?;
        highest = Some(highest.map_or(share, |h| h.max(share)));
    }
    highest
}

/// The JSON patch that sets canary `weight` and stable `100 - weight` on every split.
pub fn weight_patch(splits: &[Split], stable: &str, canary: &str, weight: i32) -> JsonPatch {
    let none = ExtraWeights::new();
    let unknown = vec![Vec::new(); splits.iter().map(|s| s.0 + 1).max().unwrap_or(0)];
    weights_patch(
        splits,
        &unknown,
        (stable, canary),
        weight,
        (&none, &[]),
        &BTreeMap::new(),
    )
}

/// The JSON patch that sets canary `weight`, the extra backends' `extras` and the stable's
/// rest on every split, its names tested first: weights set at their indices as read, then
/// extra backends among `known` no longer wanted (or there twice) removed, highest index
/// first, then new ones appended as `appended` spells each (name, port, namespace).
/// `rules` are the route's rules as read.
pub fn weights_patch(
    splits: &[Split],
    rules: &[Vec<(usize, String)>],
    (stable, canary): (&str, &str),
    weight: i32,
    (extras, known): (&ExtraWeights, &[String]),
    appended: &BTreeMap<String, Value>,
) -> JsonPatch {
    let mut operations = Vec::new();
    let path = |text: String| text.parse().unwrap_or_default();
    let test = |at: &str, name: &str| {
        PatchOperation::Test(TestOperation {
            path: path(format!("{at}/name")),
            value: Value::from(name),
        })
    };
    for &(r, s, c) in splits {
        let present: Vec<(usize, &str)> = rules
            .get(r)
            .map(|backends| {
                backends
                    .iter()
                    .filter(|(_, name)| known.contains(name))
                    .map(|(i, name)| (*i, name.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut sets = vec![
            (s, stable, stable_weight(weight, extras)),
            (c, canary, weight),
        ];
        let mut unwanted: Vec<(usize, &str)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for &(index, name) in &present {
            match extras.get(name) {
                Some(value) if seen.insert(name) => sets.push((index, name, *value)),
                _ => unwanted.push((index, name)),
            }
        }
        for (index, service, value) in sets {
            let at = format!("/spec/rules/{r}/backendRefs/{index}");
            operations.push(test(&at, service));
            operations.push(PatchOperation::Add(AddOperation {
                path: path(format!("{at}/weight")),
                value: Value::from(value),
            }));
        }
        unwanted.sort_by_key(|b| std::cmp::Reverse(b.0));
        for (index, service) in unwanted {
            let at = format!("/spec/rules/{r}/backendRefs/{index}");
            operations.push(test(&at, service));
            operations.push(PatchOperation::Remove(RemoveOperation { path: path(at) }));
        }
        for (service, value) in extras {
            if seen.contains(service.as_str()) {
                continue;
            }
            let mut backend = appended
                .get(service)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"name": service}));
            backend["weight"] = Value::from(*value);
            operations.push(PatchOperation::Add(AddOperation {
                path: path(format!("/spec/rules/{r}/backendRefs/-")),
                value: backend,
            }));
        }
    }
    JsonPatch(operations)
}

/// The port of an experiment's Service a route should send to: the one serving what the
/// stable Service's port `stable_port` (the stable backendRef's) targets (by number, or by
/// container port name), else its first.
pub fn experiment_port(
    stable: &k8s_openapi::api::core::v1::ServiceSpec,
    stable_port: Option<i32>,
    experiment: &k8s_openapi::api::core::v1::ServiceSpec,
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let ports = experiment.ports.as_deref().unwrap_or_default();
    let target = stable_port.and_then(|wanted| {
        let port = stable.ports.iter().flatten().find(|p| p.port == wanted)?;
        Some(
            port.target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port)),
        )
    });
    let matching = target.and_then(|target| {
        ports.iter().find(|p| match &target {
            // The experiment's Service ports are its containers' ports, named alike.
            IntOrString::Int(n) => p.port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
        })
    });
    matching.or_else(|| ports.first()).map(|p| p.port)
}

/// The splits of `route` apart: those weir's managed routes (named in `managed`) were not
/// made from, which carry experiment shares, and weir's own mirror rules, which split
/// between the stable and the canary alone (so they still read as weir wrote them).
pub fn split_parts<R: WeightedRoute>(
    route: &R,
    found: &[Split],
    managed: &[String],
    (stable, canary): (&str, &str),
) -> (Vec<Split>, Vec<Split>) {
    let rules = serde_json::to_value(route)
        .ok()
        .and_then(|v| v["spec"]["rules"].as_array().cloned())
        .unwrap_or_default();
    let primary = primary_splits(&rules, found, managed, stable, canary);
    let own = found
        .iter()
        .filter(|s| !primary.contains(s))
        .copied()
        .collect();
    (primary, own)
}

/// Each rule's Service backends as (index, name), for `weights_patch`.
pub fn service_backends<R: WeightedRoute>(route: &R) -> Vec<Vec<(usize, String)>> {
    route
        .rules()
        .iter()
        .map(|backends| {
            backends
                .iter()
                .enumerate()
                .filter(|(_, b)| is_service(b))
                .map(|(i, b)| (i, b.name.to_owned()))
                .collect()
        })
        .collect()
}

/// An HTTPRoute's rules as JSON, as stored.
fn rules_of(route: &HttpRoute) -> Vec<Value> {
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect()
}

/// Where a Rollout's Gateway API routing is written, for messages: weir's `gatewayAPI` or
/// the plugin's configuration.
pub fn config_field(routing: &TrafficRouting) -> &'static str {
    if routing.gateway_api.is_some() {
        "spec.strategy.canary.trafficRouting.gatewayAPI"
    } else {
        "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI"
    }
}

/// The routes a Rollout in `namespace` sets, when it routes by Gateway API with both
/// Services named; every route in another namespace must be granted by a ReferenceGrant
/// there (`NotGranted` names the first that is not). The grants are read only then.
pub async fn for_rollout(
    client: &Client,
    rollout: &Rollout,
    namespace: &str,
) -> Result<Option<GatewayApiRouter>, RouterError> {
    let Some(canary) = rollout.spec.strategy.canary.as_ref() else {
        return Ok(None);
    };
    let Some(routing) = canary.traffic_routing.as_ref() else {
        return Ok(None);
    };
    let Some(gateway) = routing.gateway() else {
        return Ok(None);
    };
    let (Some(stable), Some(canary_service)) = (
        canary.stable_service.as_deref(),
        canary.canary_service.as_deref(),
    ) else {
        return Ok(None);
    };
    let managed = super::router::names_to_read(&rollout.spec, rollout.status.as_ref());
    let extras = rollout
        .status
        .as_ref()
        .map(|s| s.experiment_services.clone())
        .unwrap_or_default();
    let router = GatewayApiRouter::new(client.clone(), namespace, gateway, stable, canary_service)
        .managing(managed)
        .with_extras(extras);
    let route_namespace = router.namespace.as_str();
    if route_namespace != namespace {
        let found = reference_grant::list(client, route_namespace)
            .await
            .map_err(|source| RouterError::Api {
                kind: "ReferenceGrants",
                name: route_namespace.to_owned(),
                source: Box::new(source),
            })?;
        if let Some((kind, route)) = router
            .routes
            .iter()
            .find(|(kind, route)| !reference_grant::grants(&found, namespace, kind.kind(), route))
        {
            return Err(RouterError::NotGranted {
                kind: kind.kind(),
                route_namespace: route_namespace.to_owned(),
                route: route.clone(),
                rollout_namespace: namespace.to_owned(),
                field: format!("{}.namespace", config_field(routing)),
            });
        }
    }
    Ok(Some(router))
}

/// Every HTTPRoute and GRPCRoute of one Rollout, in one namespace, each set and verified.
pub struct GatewayApiRouter {
    http: Api<HttpRoute>,
    grpc: Api<GrpcRoute>,
    namespace: String,
    routes: Vec<(GatewayRouteKind, String)>,
    stable: String,
    canary: String,
    /// The HTTPRoutes that take header routes (`useHeaderRoutes`, or the single `httpRoute`).
    header_routes: Vec<String>,
    /// `trafficRouting.managedRoutes`, highest precedence first.
    managed: Vec<String>,
    /// The extra backends weir added and has not yet seen gone (`status.experimentServices`),
    /// and those recorded or written since, within one reconcile.
    extras: std::sync::Mutex<Vec<String>>,
    /// Where an extra backend's port is read: the Rollout's namespace.
    services: Api<Service>,
    rollout_namespace: String,
    /// Each route as this router last read or wrote it, by kind and name. A router lives for
    /// one look at a Rollout and the actions that follow it, so a write starts from the read
    /// that planned it and the look after a write reads what the API server stored; a write
    /// from a remembered route that fails is tried once more from a fresh read.
    remembered: std::sync::Mutex<Remembered>,
}

/// A cache's route by namespace and name, if it holds one.
pub type CachedRoutes<'a, R> = dyn Fn(&str, &str) -> Option<R> + 'a;

type Remembered = std::collections::HashMap<
    (&'static str, String),
    std::sync::Arc<dyn std::any::Any + Send + Sync>,
>;

impl GatewayApiRouter {
    /// The router with the managed routes `managed` (their names).
    pub fn managing(mut self, managed: Vec<String>) -> Self {
        self.managed = managed;
        self
    }

    /// The router with the extra backends `extras` (Service names) weir added before.
    pub fn with_extras(self, extras: Vec<String>) -> Self {
        self.know_extras(&extras);
        self
    }

    /// Adds `names` to the extra backends the router reads and may remove: those a plan
    /// records (followed each round, so a share written in one round of a reconcile is
    /// read, and taken away, in the next).
    pub fn know_extras(&self, names: &[String]) {
        let mut known = self
            .extras
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            if !known.contains(name) {
                known.push(name.clone());
            }
        }
    }

    fn known_extras(&self) -> Vec<String> {
        self.extras
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn new(
        client: Client,
        rollout_namespace: &str,
        routing: &GatewayApiRouting,
        stable: &str,
        canary: &str,
    ) -> Self {
        let namespace = routing.namespace.as_deref().unwrap_or(rollout_namespace);
        let mut routes: Vec<(GatewayRouteKind, String)> = Vec::new();
        let mut header_routes: Vec<String> = Vec::new();
        for route in routing.routes() {
            if route.kind == GatewayRouteKind::Http
                && route.use_header_routes
                && !header_routes.iter().any(|n| n == route.name)
            {
                header_routes.push(route.name.to_owned());
            }
            // A route named twice is set once.
            if !routes
                .iter()
                .any(|(k, n)| *k == route.kind && n == route.name)
            {
                routes.push((route.kind, route.name.to_owned()));
            }
        }
        GatewayApiRouter {
            http: Api::namespaced(client.clone(), namespace),
            grpc: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client, rollout_namespace),
            rollout_namespace: rollout_namespace.to_owned(),
            namespace: namespace.into(),
            routes,
            stable: stable.into(),
            canary: canary.into(),
            header_routes,
            managed: Vec::new(),
            extras: std::sync::Mutex::new(Vec::new()),
            remembered: std::sync::Mutex::default(),
        }
    }

    /// Takes each of its routes that `http` and `grpc` (caches) hold as read: a first look
    /// then reads no route from the API server. One a moment old at worst makes that look
    /// find something to do, and the fresh look after it reads again.
    pub fn recall_from(&self, http: &CachedRoutes<HttpRoute>, grpc: &CachedRoutes<GrpcRoute>) {
        for (kind, name) in &self.routes {
            match kind {
                GatewayRouteKind::Http => {
                    if let Some(route) = http(&self.namespace, name) {
                        self.remember(name, route);
                    }
                }
                GatewayRouteKind::Grpc => {
                    if let Some(route) = grpc(&self.namespace, name) {
                        self.remember(name, route);
                    }
                }
            }
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember<R: WeightedRoute>(&self, name: &str, route: R) {
        self.memory()
            .insert((R::KIND, name.to_owned()), std::sync::Arc::new(route));
    }

    fn forget<R: WeightedRoute>(&self, name: &str) {
        self.memory().remove(&(R::KIND, name.to_owned()));
    }

    fn recalled<R: WeightedRoute>(&self, name: &str) -> Option<R> {
        let memory = self.memory();
        let route = memory.get(&(R::KIND, name.to_owned()))?;
        route.downcast_ref::<R>().cloned()
    }

    /// The split rules (weir's own rules aside) of `rules`, stored as HTTPRoute `route`.
    fn primary(&self, route: &HttpRoute, rules: &[Value]) -> Result<Vec<Split>, RouterError> {
        let found = splits(route, &self.stable, &self.canary)?;
        let primary = primary_splits(rules, &found, &self.managed, &self.stable, &self.canary);
        if primary.is_empty() {
            return Err(RouterError::Misconfigured(format!(
                "HTTPRoute {}/{}: no rule splits between Service {} and Service {} besides weir's managed routes; add both to the rule that should split traffic",
                self.namespace,
                kube::ResourceExt::name_any(route),
                self.stable,
                self.canary
            )));
        }
        Ok(primary)
    }

    /// An HTTPRoute that takes managed routes: its rules as stored, and its split rules.
    async fn header_route(&self, name: &str) -> Result<(Vec<Value>, Vec<Split>), RouterError> {
        let route = self.get(&self.http, name).await?;
        self.header_rules(&route)
    }

    fn header_rules(&self, route: &HttpRoute) -> Result<(Vec<Value>, Vec<Split>), RouterError> {
        let rules = rules_of(route);
        let primary = self.primary(route, &rules)?;
        Ok((rules, primary))
    }

    /// Puts managed route `name` (None: nothing) as its rules on HTTPRoute `route`.
    async fn put_rules(
        &self,
        route: &str,
        name: &str,
        wanted: Option<&ManagedRoute>,
    ) -> Result<(), RouterError> {
        // Read fresh: the rules are rewritten whole from what is read here.
        self.forget::<HttpRoute>(route);
        let (rules, found) = self.header_rules(&self.fetch(&self.http, route).await?)?;
        let written = match wanted {
            Some(wanted) => Some(managed_rules(name, wanted, &rules, &found).map_err(|why| {
                RouterError::Misconfigured(format!(
                    "HTTPRoute {}/{route}: managed route {name}: {why}",
                    self.namespace
                ))
            })?),
            None => None,
        };
        let first_split = found.first().map_or(0, |s| s.0);
        let services = (self.stable.as_str(), self.canary.as_str());
        let Some(new) = put_managed_rules(&rules, name, services, written.clone(), first_split)
        else {
            return Ok(());
        };
        if let Some(why) = written
            .as_deref()
            .and_then(|written| beyond_gateway_limits(name, written, &new))
        {
            return Err(RouterError::Misconfigured(format!(
                "HTTPRoute {}/{route}: {why}",
                self.namespace
            )));
        }
        let params = PatchParams {
            field_manager: Some(ROLLOUT_MANAGER.into()),
            ..PatchParams::default()
        };
        let api_error = |source| RouterError::Api {
            kind: HttpRoute::KIND,
            name: route.to_owned(),
            source: Box::new(source),
        };
        let patched = self
            .http
            .patch(
                route,
                &params,
                &Patch::<()>::Json(rules_patch(&rules, new.clone())),
            )
            .await
            .map_err(api_error)?;
        let stored = rules_of(&patched);
        self.remember(route, patched.clone());
        let pruned = if rule_names_pruned(&new, &stored) {
            Some(
                "the rule names weir writes (spec.rules[].name), so weir cannot find its rules again",
            )
        } else if mirror_percent_pruned(&new, &stored) {
            Some(
                "the percent of the RequestMirror filter weir writes (spec.rules[].filters[].requestMirror.percent), so the route would mirror every request",
            )
        } else {
            None
        };
        if let Some(what) = pruned {
            // Unnamed, the rules just written would never be found again, and each
            // reconcile would add more; mirroring all, they would copy more than asked:
            // put the rules back as they were, then say why.
            self.forget::<HttpRoute>(route);
            let undone = self
                .http
                .patch(
                    route,
                    &params,
                    &Patch::<()>::Json(rules_patch(&stored, rules)),
                )
                .await
                .map_or_else(
                    |e| format!(" (weir could not take its rules off again: {e}; remove the rules named {name} that send to Service {})", self.canary),
                    |_| String::new(),
                );
            return Err(RouterError::Misconfigured(format!(
                "HTTPRoute {}/{route}: the API server dropped {what} for managed route {name}{undone}; install Gateway API CRDs that have the field (named route rules, GEP-995, and percentage mirroring, GEP-3171: the experimental channel from v1.2, the standard channel in later releases), or remove the setHeaderRoute and setMirrorRoute steps",
                self.namespace
            )));
        }
        // Verified on what the API server stored, not assumed from what was sent.
        let primary = self.primary(&patched, &stored)?;
        let shown = shown_managed_routes(
            &[name.to_owned()],
            &stored,
            &primary,
            &self.stable,
            &self.canary,
        );
        if shown.get(name).cloned().flatten().as_ref() != wanted {
            return Err(RouterError::Misconfigured(format!(
                "HTTPRoute {}/{route}: managed route {name} does not read back as weir wrote it (stored {:?}); check for a webhook or controller that rewrites the HTTPRoute",
                self.namespace,
                shown.get(name)
            )));
        }
        Ok(())
    }

    /// The routes, as people name them: `HTTPRoute ns/a, GRPCRoute ns/b`.
    pub fn label(&self) -> String {
        self.routes
            .iter()
            .map(|(kind, name)| format!("{} {}/{name}", kind.kind(), self.namespace))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The route as last read or written here, else read from the API server.
    async fn get<R: WeightedRoute>(&self, api: &Api<R>, name: &str) -> Result<R, RouterError> {
        if let Some(route) = self.recalled(name) {
            return Ok(route);
        }
        let route = self.fetch(api, name).await?;
        self.remember(name, route.clone());
        Ok(route)
    }

    async fn fetch<R: WeightedRoute>(&self, api: &Api<R>, name: &str) -> Result<R, RouterError> {
        match api.get(name).await {
            Ok(route) => Ok(route),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(if names_an_object(&status) {
                    RouterError::NotFound {
                        kind: R::KIND,
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                    }
                } else {
                    RouterError::KindMissing {
                        kind: R::KIND,
                        group: GROUP,
                    }
                })
            }
            Err(source) => Err(RouterError::Api {
                kind: R::KIND,
                name: name.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    async fn weight_of<R: WeightedRoute>(
        &self,
        api: &Api<R>,
        name: &str,
    ) -> Result<(Option<i32>, ExtraWeights), RouterError> {
        let route = self.get(api, name).await?;
        let found = splits(&route, &self.stable, &self.canary)?;
        let known = self.known_extras();
        // Which splits are weir's own matters only when there are shares to read.
        let shares = if known.is_empty() {
            ExtraWeights::new()
        } else {
            let (primary, _) = self.parts(&route, &found);
            extra_shares(&route, &primary, &known)
        };
        Ok((canary_share(&route, &found, &known), shares))
    }

    fn parts<R: WeightedRoute>(&self, route: &R, found: &[Split]) -> (Vec<Split>, Vec<Split>) {
        split_parts(route, found, &self.managed, (&self.stable, &self.canary))
    }

    /// Whether `route` carries `weight` and `extras` as weir writes them: the shares on its
    /// splits `primary`, none on weir's own rules `own`.
    fn weights_in_place<R: WeightedRoute>(
        route: &R,
        (primary, own): (&[Split], &[Split]),
        weight: i32,
        (extras, known): (&ExtraWeights, &[String]),
    ) -> bool {
        weights_set(route, primary, weight, extras, known)
            && weights_set(route, own, weight, &ExtraWeights::new(), known)
    }

    /// A Service of the Rollout's namespace, read for a backendRef weir adds.
    async fn service(&self, name: &str) -> Result<Service, RouterError> {
        match self.services.get(name).await {
            Ok(service) => Ok(service),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(RouterError::NotFound {
                kind: "Service",
                namespace: self.rollout_namespace.clone(),
                name: name.to_owned(),
            }),
            Err(source) => Err(RouterError::Api {
                kind: "Service",
                name: name.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// The backendRef to append for each experiment Service in `names`: its name, the port
    /// that serves what the stable backendRef (port `stable_port`) reaches, and its
    /// namespace when the route is in another.
    async fn appended(
        &self,
        names: &[&String],
        stable_port: Option<i32>,
    ) -> Result<BTreeMap<String, Value>, RouterError> {
        let mut appended = BTreeMap::new();
        if names.is_empty() {
            return Ok(appended);
        }
        let stable = self.service(&self.stable).await?.spec.unwrap_or_default();
        for name in names {
            let spec = self.service(name).await?.spec.unwrap_or_default();
            let port = experiment_port(&stable, stable_port, &spec).ok_or_else(|| {
                RouterError::Misconfigured(format!(
                    "Service {}/{name} has no port for a route to send to",
                    self.rollout_namespace
                ))
            })?;
            let mut backend = serde_json::json!({"name": name, "port": port});
            if self.namespace != self.rollout_namespace {
                backend["namespace"] = Value::from(self.rollout_namespace.clone());
            }
            appended.insert((*name).clone(), backend);
        }
        Ok(appended)
    }

    async fn set_weights_of<R: WeightedRoute>(
        &self,
        api: &Api<R>,
        name: &str,
        weight: i32,
        extras: &ExtraWeights,
    ) -> Result<(), RouterError> {
        if let Some(route) = self.recalled::<R>(name) {
            match self.put_weights(api, name, route, weight, extras).await {
                Ok(()) => return Ok(()),
                // The route changed since (a test of the patch failed, say): once more,
                // from what the API server holds now.
                Err(_) => self.forget::<R>(name),
            }
        }
        let route = self.get(api, name).await?;
        self.put_weights(api, name, route, weight, extras).await
    }

    /// Sets the weights on `route` (as read) unless it carries them already.
    async fn put_weights<R: WeightedRoute>(
        &self,
        api: &Api<R>,
        name: &str,
        route: R,
        weight: i32,
        extras: &ExtraWeights,
    ) -> Result<(), RouterError> {
        let found = splits(&route, &self.stable, &self.canary)?;
        let names: Vec<String> = extras.keys().cloned().collect();
        self.know_extras(&names);
        let known = self.known_extras();
        let (primary, own) = self.parts(&route, &found);
        // A route already there is not written: a no-op writes nothing.
        if Self::weights_in_place(&route, (&primary, &own), weight, (extras, &known)) {
            return Ok(());
        }
        let rules = service_backends(&route);
        let missing: Vec<&String> = extras
            .keys()
            .filter(|service| {
                primary.iter().any(|&(r, _, _)| {
                    !rules
                        .get(r)
                        .is_some_and(|b| b.iter().any(|(_, n)| n == *service))
                })
            })
            .collect();
        let stable_port = primary.first().and_then(|&(r, s, _)| {
            route
                .rules()
                .get(r)
                .and_then(|b| b.get(s))
                .and_then(|b| b.port)
        });
        let appended = self.appended(&missing, stable_port).await?;
        let services = (self.stable.as_str(), self.canary.as_str());
        let mut patch = weights_patch(
            &primary,
            &rules,
            services,
            weight,
            (extras, &known),
            &appended,
        );
        let none = ExtraWeights::new();
        let own_patch = weights_patch(&own, &rules, services, weight, (&none, &known), &appended);
        patch.0.extend(own_patch.0);
        let params = PatchParams {
            field_manager: Some(ROLLOUT_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = api
            .patch(name, &params, &Patch::<()>::Json(patch))
            .await
            .map_err(|source| RouterError::Api {
                kind: R::KIND,
                name: name.to_owned(),
                source: Box::new(source),
            })?;
        self.remember(name, patched.clone());
        // Verified on what the API server stored, not assumed from what was sent.
        let stored = splits(&patched, &self.stable, &self.canary)?;
        let (primary, own) = self.parts(&patched, &stored);
        let found = canary_share(&patched, &stored, &known);
        if found != Some(weight)
            || !Self::weights_in_place(&patched, (&primary, &own), weight, (extras, &known))
        {
            return Err(RouterError::NotVerified {
                kind: R::KIND,
                name: name.to_owned(),
                wanted: weight,
                found,
            });
        }
        Ok(())
    }
}

impl GatewayApiRouter {
    /// Every route's canary share (the highest) and extra backends (merged).
    async fn read_all(&self) -> Result<(Option<i32>, ExtraWeights), RouterError> {
        let mut shares = Vec::with_capacity(self.routes.len());
        let mut extras = Vec::with_capacity(self.routes.len());
        for (kind, name) in &self.routes {
            let (share, shown) = match kind {
                GatewayRouteKind::Http => self.weight_of(&self.http, name).await?,
                GatewayRouteKind::Grpc => self.weight_of(&self.grpc, name).await?,
            };
            shares.push(share);
            extras.push(shown);
        }
        Ok((highest_share(shares), merge_extras(&extras)))
    }
}

impl Router for GatewayApiRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        Ok(self.read_all().await?.0)
    }

    async fn extra_weights(&self) -> Result<ExtraWeights, RouterError> {
        // No experiment Service known: the routes show no share of one (`weight_of` reads
        // none), so there is nothing to read. A look reads its routes once, not twice.
        if self.known_extras().is_empty() {
            return Ok(ExtraWeights::new());
        }
        Ok(self.read_all().await?.1)
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        self.set_weights(weight, &ExtraWeights::new()).await
    }

    /// Every route is set even when one fails (an abort must reach all it can); the first
    /// failure is returned, so the planner tries again.
    async fn set_weights(&self, weight: i32, extras: &ExtraWeights) -> Result<i32, RouterError> {
        let mut first_error = None;
        for (kind, name) in &self.routes {
            let result = match kind {
                GatewayRouteKind::Http => {
                    self.set_weights_of(&self.http, name, weight, extras).await
                }
                GatewayRouteKind::Grpc => {
                    self.set_weights_of(&self.grpc, name, weight, extras).await
                }
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(weight),
        }
    }

    async fn managed_routes(&self) -> Result<ShownRoutes, RouterError> {
        let mut each_route = Vec::new();
        if !self.managed.is_empty() {
            for route in &self.header_routes {
                let (rules, found) = self.header_route(route).await?;
                each_route.push(shown_managed_routes(
                    &self.managed,
                    &rules,
                    &found,
                    &self.stable,
                    &self.canary,
                ));
            }
        }
        let mut shown = ShownRoutes::new();
        for name in &self.managed {
            let each: Vec<Option<&Option<ManagedRoute>>> =
                each_route.iter().map(|s| s.get(name)).collect();
            if each.iter().all(Option::is_none) {
                continue;
            }
            // The same route on every HTTPRoute, or it is not yet as weir writes it.
            let same = each.windows(2).all(|pair| pair[0] == pair[1]);
            let route = match each.first() {
                Some(Some(route)) if same => (*route).clone(),
                _ => None,
            };
            shown.insert(name.clone(), route);
        }
        Ok(shown)
    }

    async fn set_managed_route(
        &self,
        name: &str,
        wanted: &ManagedRoute,
    ) -> Result<(), RouterError> {
        if self.header_routes.is_empty() {
            return Err(RouterError::Misconfigured(format!(
                "managed route {name}: no HTTPRoute of spec.strategy.canary.trafficRouting takes header routes: set useHeaderRoutes: true on one of httpRoutes, or name it in httpRoute"
            )));
        }
        for route in &self.header_routes {
            self.put_rules(route, name, Some(wanted)).await?;
        }
        Ok(())
    }

    async fn remove_managed_route(&self, name: &str) -> Result<(), RouterError> {
        for route in &self.header_routes {
            self.put_rules(route, name, None).await?;
        }
        Ok(())
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        // The managed routes first: they send to the canary whatever the weight. The weight
        // goes to 0 even when one of them cannot be removed; the first failure is returned.
        let mut first = None;
        for name in &self.managed {
            if let Err(error) = self.remove_managed_route(name).await {
                first.get_or_insert(error);
            }
        }
        let zero = self.set_weight(0).await.map(|_| ());
        match first {
            Some(error) => Err(error),
            None => zero,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_route_is_told_apart_from_a_missing_kind() {
        use kube::core::Status;
        // The API server's answers: an object it lacks is named, a kind it lacks is not.
        let status = |body: serde_json::Value| -> Status {
            serde_json::from_value(body).unwrap_or_else(|e| panic!("a Status: {e}"))
        };
        let missing_route = status(serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "httproutes.gateway.networking.k8s.io \"web\" not found",
            "details": {"name": "web", "group": GROUP, "kind": "httproutes"}}));
        let missing_kind = status(serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "the server could not find the requested resource",
            "details": {}}));
        assert!(names_an_object(&missing_route));
        assert!(!names_an_object(&missing_kind));
        assert!(!names_an_object(&Status::default()));
        let message = RouterError::KindMissing {
            kind: "HTTPRoute",
            group: GROUP,
        }
        .to_string();
        assert!(
            message.contains("no HTTPRoute kind") && message.contains("trafficRouting"),
            "{message}"
        );
    }

    use super::*;
    use serde_json::json;

    fn route(rules: Value) -> HttpRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"rules": rules}
        }))
        .expect("route")
    }

    #[test]
    fn finds_every_rule_that_splits_between_the_two_services() {
        let route = route(json!([
            {"backendRefs": [{"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "other", "port": 80}]},
            {"backendRefs": [{"name": "web-canary", "port": 80, "weight": 5}, {"name": "web-stable", "port": 80, "weight": 95}]},
            {"backendRefs": [{"name": "web-stable", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}, {"name": "web-canary"}]}
        ]));
        let found = splits(&route, "web-stable", "web-canary").expect("splits");
        assert_eq!(found, vec![(0, 0, 1), (2, 1, 0)]);
        assert_eq!(
            canary_weight(&route, &found),
            Some(50),
            "unset weights are 1:1, and the highest share counts"
        );
    }

    #[test]
    fn a_route_without_both_services_is_refused_naming_them() {
        let route = route(json!([{"backendRefs": [{"name": "web-stable"}]}]));
        let error = splits(&route, "web-stable", "web-canary").expect_err("no split");
        let message = error.to_string();
        assert!(
            message.contains("web-canary (canaryService)") && message.contains("HTTPRoute web"),
            "{message}"
        );
    }

    #[test]
    fn weights_read_as_percentages() {
        for (stable, canary, share) in [
            (100, 0, 0),
            (80, 20, 20),
            (0, 100, 100),
            (0, 0, 0),
            (2, 1, 33),
        ] {
            let route = route(
                json!([{"backendRefs": [{"name": "s", "weight": stable}, {"name": "c", "weight": canary}]}]),
            );
            assert_eq!(
                canary_weight(&route, &[(0, 0, 1)]),
                Some(share),
                "{stable}/{canary}"
            );
        }
    }

    #[test]
    fn the_patch_tests_names_then_sets_both_weights() {
        let patch = weight_patch(&[(1, 0, 1)], "s", "c", 20);
        let ops = serde_json::to_value(&patch).expect("serializes");
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "s"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 80},
                {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "c"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 20}
            ])
        );
        let mut document = serde_json::to_value(route(json!([
            {"backendRefs": [{"name": "x"}]},
            {"backendRefs": [{"name": "s", "weight": 100}, {"name": "c"}]}
        ])))
        .expect("route json");
        json_patch::patch(&mut document, &patch).expect("applies");
        let patched: HttpRoute = serde_json::from_value(document).expect("still a route");
        assert_eq!(canary_weight(&patched, &[(1, 0, 1)]), Some(20));
    }

    fn grpc_route(rules: Value) -> GrpcRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "rpc"},
            "spec": {"parentRefs": [{"name": "mesh", "kind": "Service", "group": ""}], "rules": rules}
        }))
        .expect("GRPC route")
    }

    #[test]
    fn a_grpc_route_splits_as_an_http_route_does() {
        let rules = json!([
            {"matches": [{"method": {"service": "shop.Cart"}}],
             "backendRefs": [{"name": "other", "port": 9000}]},
            {"backendRefs": [
                {"name": "web-canary", "port": 9000, "weight": 30},
                {"name": "web-stable", "port": 9000, "weight": 70,
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]}}]}
            ]}
        ]);
        let mut http_rules = rules.clone();
        http_rules[0]["matches"] = json!([{"path": {"type": "PathPrefix", "value": "/cart"}}]);
        let grpc = grpc_route(rules);
        let http = route(http_rules);
        let found = splits(&grpc, "web-stable", "web-canary").expect("splits");
        assert_eq!(found, vec![(1, 1, 0)]);
        assert_eq!(
            found,
            splits(&http, "web-stable", "web-canary").expect("splits")
        );
        assert_eq!(canary_weight(&grpc, &found), Some(30));
        let missing = splits(&grpc, "web-stable", "nope").expect_err("no split");
        assert!(
            missing.to_string().starts_with("GRPCRoute rpc "),
            "{missing}"
        );
        // The same patch sets it, and leaves the filter and the other rule as they were.
        let mut document = serde_json::to_value(&grpc).expect("route json");
        let before = document.clone();
        json_patch::patch(
            &mut document,
            &weight_patch(&found, "web-stable", "web-canary", 5),
        )
        .expect("applies");
        let patched: GrpcRoute = serde_json::from_value(document.clone()).expect("still a route");
        assert_eq!(canary_weight(&patched, &found), Some(5));
        assert!(already_set(&patched, &found, 5));
        assert!(!already_set(&patched, &found, 6));
        assert_eq!(document["spec"]["rules"][0], before["spec"]["rules"][0]);
        assert_eq!(
            document["spec"]["rules"][1]["backendRefs"][1]["filters"],
            before["spec"]["rules"][1]["backendRefs"][1]["filters"]
        );
    }

    #[test]
    fn unset_weights_are_not_already_set() {
        let route = route(json!([{"backendRefs": [{"name": "s"}, {"name": "c"}]}]));
        assert!(!already_set(&route, &[(0, 0, 1)], 50));
        assert!(!already_set(&route, &[(0, 0, 1)], 0));
    }

    #[test]
    fn several_routes_read_as_their_highest_share() {
        assert_eq!(highest_share([]), None);
        assert_eq!(highest_share([Some(0), Some(20), Some(5)]), Some(20));
        assert_eq!(highest_share([Some(0), None, Some(5)]), None);
    }

    proptest::proptest! {
        /// Whatever weights a route carries, its share is a percentage, and the highest over
        /// several routes is at least each one's: a route left behind is never hidden.
        #[test]
        fn shares_are_percentages_and_none_is_hidden(
            weights in proptest::collection::vec((0..=1_000_000i32, 0..=1_000_000i32), 1..6)
        ) {
            let shares: Vec<Option<i32>> = weights
                .iter()
                .map(|&(stable, canary)| {
                    let route = route(json!([{"backendRefs": [
                        {"name": "s", "weight": stable}, {"name": "c", "weight": canary}]}]));
                    canary_weight(&route, &[(0, 0, 1)])
                })
                .collect();
            let highest = highest_share(shares.clone());
            proptest::prop_assert!(highest.is_some());
            for share in shares.into_iter().flatten() {
                proptest::prop_assert!((0..=100).contains(&share));
                proptest::prop_assert!(highest >= Some(share));
            }
            proptest::prop_assert!(shares_hold_100_and_0());
        }

        /// From any route weir has written before (some extras there, some not), one patch
        /// leaves exactly the canary weight and the wanted extras, the stable the rest, on
        /// every split rule, the other backends untouched; a second patch writes nothing.
        #[test]
        fn one_patch_sets_exactly_the_wanted_weights(
            before in proptest::collection::btree_map("[e-h]", 0..=20i32, 0..4),
            wanted in proptest::collection::btree_map("[e-h]", 0..=20i32, 0..4),
            canary in 0..=20i32,
            rules in 1..3usize,
        ) {
            let mut all = Vec::new();
            for _ in 0..rules {
                let mut backends = vec![json!({"name": "keep", "weight": 7}), json!({"name": "s", "weight": 60}), json!({"name": "c", "weight": 3})];
                backends.extend(before.iter().map(|(n, w)| json!({"name": n, "weight": w, "port": 1})));
                all.push(json!({"backendRefs": backends}));
            }
            let start = route(Value::Array(all));
            let known: Vec<String> = before.keys().chain(wanted.keys()).cloned().collect();
            let after = set_weights(&start, canary, &wanted, &known)
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            let found = splits(&after, "s", "c").map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(found.len(), rules);
            proptest::prop_assert!(weights_set(&after, &found, canary, &wanted, &known));
            proptest::prop_assert_eq!(extra_shares(&after, &found, &known), wanted.clone());
            for rule in after.spec.rules.iter().flatten() {
                let keep = rule.backend_refs.iter().flatten().filter(|b| b.name == "keep" && b.weight == Some(7)).count();
                proptest::prop_assert_eq!(keep, 1);
            }
            let again = set_weights(&after, canary, &wanted, &known)
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(again.spec.rules, after.spec.rules);
        }
    }

    fn shares_hold_100_and_0() -> bool {
        let max = i64::from(i32::MAX);
        share(5, 0) == 100 && share(0, 5) == 0 && share(max, max) == 50 && share(-3, -3) == 0
    }

    /// Applies `patch` to `route` as the API server would (all or nothing).
    fn patched(route: &HttpRoute, patch: &JsonPatch) -> Result<HttpRoute, String> {
        let mut value = serde_json::to_value(route).map_err(|e| e.to_string())?;
        json_patch::patch(&mut value, patch).map_err(|e| e.to_string())?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn set_weights(
        route: &HttpRoute,
        weight: i32,
        extras: &ExtraWeights,
        known: &[String],
    ) -> Result<HttpRoute, String> {
        let found = splits(route, "s", "c").map_err(|e| e.to_string())?;
        let appended: BTreeMap<String, Value> = extras
            .keys()
            .map(|k| (k.clone(), json!({"name": k, "port": 8080})))
            .collect();
        let patch = weights_patch(
            &found,
            &service_backends(route),
            ("s", "c"),
            weight,
            (extras, known),
            &appended,
        );
        patched(route, &patch)
    }

    #[test]
    fn experiment_services_take_their_share_from_the_stable_and_leave_again() {
        let start = route(json!([
            {"backendRefs": [{"name": "other", "port": 80}]},
            {"backendRefs": [{"name": "s", "port": 80, "weight": 90},
                {"name": "mirror-me", "port": 80, "weight": 0},
                {"name": "c", "port": 80, "weight": 10}]}
        ]));
        let extras: ExtraWeights = [("exp-a".to_owned(), 5), ("exp-b".to_owned(), 5)].into();
        let known: Vec<String> = extras.keys().cloned().collect();
        let with = set_weights(&start, 10, &extras, &known).unwrap_or_else(|e| panic!("{e}"));
        let found = splits(&with, "s", "c").unwrap_or_else(|e| panic!("{e}"));
        assert!(weights_set(&with, &found, 10, &extras, &known));
        assert_eq!(canary_share(&with, &found, &known), Some(10));
        assert_eq!(extra_shares(&with, &found, &known), extras);
        let backends = &with.spec.rules.as_deref().unwrap_or_default()[1];
        let names: Vec<(&str, Option<i32>, Option<i32>)> = backends
            .backend_refs
            .iter()
            .flatten()
            .map(|b| (b.name.as_str(), b.weight, b.port))
            .collect();
        assert_eq!(
            names,
            [
                ("s", Some(80), Some(80)),
                ("mirror-me", Some(0), Some(80)),
                ("c", Some(10), Some(80)),
                ("exp-a", Some(5), Some(8080)),
                ("exp-b", Some(5), Some(8080)),
            ],
            "a backend weir did not add is left as it is"
        );
        // The experiment ends: its Services leave, the stable takes its share back.
        let without =
            set_weights(&with, 10, &ExtraWeights::new(), &known).unwrap_or_else(|e| panic!("{e}"));
        let found = splits(&without, "s", "c").unwrap_or_else(|e| panic!("{e}"));
        assert!(weights_set(
            &without,
            &found,
            10,
            &ExtraWeights::new(),
            &known
        ));
        assert_eq!(extra_shares(&without, &found, &known), ExtraWeights::new());
        let rules = without.spec.rules.as_deref().unwrap_or_default();
        assert_eq!(rules[1].backend_refs.as_ref().map(Vec::len), Some(3));
        assert_eq!(
            without.spec.rules,
            start.spec.rules.map(|mut rules| {
                if let Some(b) = rules[1].backend_refs.as_mut() {
                    b[0].weight = Some(90);
                }
                rules
            })
        );
    }

    #[test]
    fn a_mirror_rule_of_weirs_keeps_to_the_stable_and_canary_beside_experiment_shares() {
        use crate::api::rollout::RouteMatch;
        use crate::traffic::http_route_rules::{managed_rules, put_managed_rules};
        let split = route(json!([
            {"backendRefs": [{"name": "s", "port": 80, "weight": 90}, {"name": "c", "port": 80, "weight": 10}]}
        ]));
        let mirror = ManagedRoute::Mirror {
            percentage: 20,
            matches: vec![
                serde_json::from_value::<RouteMatch>(json!({"method": {"exact": "GET"}}))
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
        };
        // The mirror route as weir writes it, before the experiment.
        let managed = vec!["mirror".to_owned()];
        let rules = rules_of(&split);
        let written = managed_rules("mirror", &mirror, &rules, &[(0, 0, 1)])
            .unwrap_or_else(|e| panic!("{e}"));
        let with_mirror = put_managed_rules(&rules, "mirror", ("s", "c"), Some(written), 0)
            .unwrap_or_else(|| panic!("rules written"));
        let start = route(Value::Array(with_mirror));
        let found = splits(&start, "s", "c").unwrap_or_else(|e| panic!("{e}"));
        let (primary, own) = split_parts(&start, &found, &managed, ("s", "c"));
        assert_eq!((primary.len(), own.len()), (1, 1));
        // The experiment's share: on the split rule alone.
        let extras: ExtraWeights = [("e".to_owned(), 5)].into();
        let known = vec!["e".to_owned()];
        let backends = service_backends(&start);
        let appended = [("e".to_owned(), json!({"name": "e", "port": 8080}))].into();
        let mut patch = weights_patch(
            &primary,
            &backends,
            ("s", "c"),
            10,
            (&extras, &known),
            &appended,
        );
        let none = ExtraWeights::new();
        patch
            .0
            .extend(weights_patch(&own, &backends, ("s", "c"), 10, (&none, &known), &appended).0);
        let after = patched(&start, &patch).unwrap_or_else(|e| panic!("{e}"));
        let values = rules_of(&after);
        assert!(weights_set(&after, &own, 10, &none, &known));
        assert!(weights_set(&after, &primary, 10, &extras, &known));
        assert_eq!(extra_shares(&after, &primary, &known), extras);
        assert_eq!(canary_share(&after, &found, &known), Some(10));
        // The mirror route still reads back exactly as weir writes it (rebuilt from the
        // split rule, which now gives the stable 85): nothing to write again.
        let shown = shown_managed_routes(&managed, &values, &primary, "s", "c");
        assert_eq!(shown.get("mirror"), Some(&Some(mirror)));
    }

    #[test]
    fn a_service_named_twice_in_a_rule_keeps_its_first_place() {
        let start = route(json!([
            {"backendRefs": [{"name": "s", "weight": 80}, {"name": "c", "weight": 10},
                {"name": "e", "weight": 5}, {"name": "e", "weight": 5}]}
        ]));
        let extras: ExtraWeights = [("e".to_owned(), 10)].into();
        let known = vec!["e".to_owned()];
        let after = set_weights(&start, 10, &extras, &known).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(String, Option<i32>)> = after
            .spec
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.backend_refs.iter().flatten())
            .map(|b| (b.name.clone(), b.weight))
            .collect();
        assert_eq!(
            names,
            [
                ("s".to_owned(), Some(80)),
                ("c".to_owned(), Some(10)),
                ("e".to_owned(), Some(10))
            ]
        );
        let found = splits(&after, "s", "c").unwrap_or_else(|e| panic!("{e}"));
        assert!(weights_set(&after, &found, 10, &extras, &known));
    }

    #[test]
    fn an_experiments_port_is_the_one_serving_what_the_stable_backend_reaches() {
        let spec = |ports: Value| -> k8s_openapi::api::core::v1::ServiceSpec {
            serde_json::from_value(json!({"ports": ports})).unwrap_or_else(|e| panic!("{e}"))
        };
        let experiment =
            spec(json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]));
        let by_name = spec(json!([{"port": 80, "targetPort": "http"}]));
        let by_number = spec(json!([{"port": 80, "targetPort": 8080}]));
        let same_number = spec(json!([{"port": 8080}]));
        assert_eq!(experiment_port(&by_name, Some(80), &experiment), Some(8080));
        assert_eq!(
            experiment_port(&by_number, Some(80), &experiment),
            Some(8080)
        );
        assert_eq!(
            experiment_port(&same_number, Some(8080), &experiment),
            Some(8080)
        );
        // Nothing to go by: the first.
        assert_eq!(experiment_port(&by_name, None, &experiment), Some(9090));
        assert_eq!(experiment_port(&by_name, Some(81), &experiment), Some(9090));
        assert_eq!(experiment_port(&by_name, Some(80), &spec(json!([]))), None);
    }

    #[test]
    fn an_extra_backend_on_one_rule_only_reads_apart() {
        let route = route(json!([
            {"backendRefs": [{"name": "s", "weight": 90}, {"name": "c", "weight": 5}, {"name": "x", "weight": 5}]},
            {"backendRefs": [{"name": "s", "weight": 95}, {"name": "c", "weight": 5}]}
        ]));
        let found = splits(&route, "s", "c").unwrap_or_else(|e| panic!("{e}"));
        let known = vec!["x".to_owned()];
        assert_eq!(
            extra_shares(&route, &found, &known),
            [("x".to_owned(), -1)].into()
        );
        // Not known: someone else's backend, not read and not counted.
        assert_eq!(extra_shares(&route, &found, &[]), ExtraWeights::new());
        assert_eq!(canary_share(&route, &found, &[]), Some(5));
    }

    #[test]
    fn every_route_named_is_set_once() {
        use crate::api::rollout::GatewayApiRouting;
        let routing: GatewayApiRouting = serde_json::from_value(json!({
            "httpRoute": "web", "httpRoutes": [{"name": "web"}, {"name": "api"}],
            "grpcRoutes": [{"name": "web", "useHeaderRoutes": true}]
        }))
        .expect("routing");
        let named: Vec<_> = routing
            .routes()
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.name.to_owned(),
                    r.use_header_routes,
                    r.field.clone(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                (
                    GatewayRouteKind::Http,
                    "web".into(),
                    true,
                    "httpRoute".into()
                ),
                (
                    GatewayRouteKind::Http,
                    "web".into(),
                    false,
                    "httpRoutes[0]".into()
                ),
                (
                    GatewayRouteKind::Http,
                    "api".into(),
                    false,
                    "httpRoutes[1]".into()
                ),
                (
                    GatewayRouteKind::Grpc,
                    "web".into(),
                    true,
                    "grpcRoutes[0]".into()
                ),
            ]
        );
        assert!(routing.names(GatewayRouteKind::Grpc, "shop", "web", "shop"));
        assert!(!routing.names(GatewayRouteKind::Grpc, "shop", "api", "shop"));
        assert!(!routing.names(GatewayRouteKind::Http, "edge", "api", "shop"));
    }
}
