//! Istio: the canary weight lives on the destinations of VirtualService routes (HTTP routes by
//! name, or the only one; TLS routes by port and SNI hosts; TCP routes by port), in Argo
//! Rollouts' two shapes:
//!
//! - host-level: a route's destinations are `host: <stableService>` and `host: <canaryService>`;
//! - subset-level: one host, destinations `subset: <stableSubsetName>` and
//!   `subset: <canarySubsetName>`, and weir sets the `rollouts-pod-template-hash` label of
//!   those two DestinationRule subsets to the stable and canary hashes (removed again by
//!   `remove_managed`).
//!
//! Every write is a JSON patch that first tests what it changes (a destination's host or
//! subset, a subset's name), so a concurrent edit that reorders routes fails instead of
//! setting the wrong destination; field manager `weir-rollout`. The weight is verified on
//! what the API server stored.

use std::sync::Mutex;

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, ReplaceOperation,
    TestOperation,
};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

use super::gateway_api::names_an_object;
use super::router::{ManagedRoute, Router, RouterError, ShownRoutes};
use crate::api::contract::{POD_TEMPLATE_HASH_LABEL, ROLLOUT_MANAGER};
use crate::api::rollout::{
    HeaderRoutingMatch, IstioDestinationRule, IstioRouting, IstioVirtualService, RouteMatch,
    StringMatch,
};

pub const GROUP: &str = "networking.istio.io";
/// The version Argo Rollouts documents and every Istio release since 1.5 serves.
pub const VERSION: &str = "v1beta1";
const VIRTUAL_SERVICE: &str = "VirtualService";
const DESTINATION_RULE: &str = "DestinationRule";

pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, VIRTUAL_SERVICE))
}

pub fn destination_rule_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, DESTINATION_RULE))
}

/// How a destination is told to be the stable or the canary one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Host-level: the destinations' hosts are the two Services (short names, or their
    /// `<name>.<namespace>[.svc[.cluster.local]]` forms).
    Host {
        stable: String,
        canary: String,
        namespace: String,
    },
    /// Subset-level: the destinations' subsets.
    Subset { stable: String, canary: String },
}

impl Pick {
    /// The field of a destination this pick reads, and the field of the Rollout it comes from.
    fn field(&self) -> &'static str {
        match self {
            Pick::Host { .. } => "host",
            Pick::Subset { .. } => "subset",
        }
    }

    fn is(&self, destination: &Value, stable: bool) -> bool {
        match self {
            Pick::Host {
                stable: s,
                canary: c,
                namespace,
            } => destination["host"]
                .as_str()
                .is_some_and(|host| host_is(host, if stable { s } else { c }, namespace)),
            Pick::Subset {
                stable: s,
                canary: c,
            } => destination["subset"].as_str() == Some(if stable { s } else { c }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pick::Host { stable, canary, .. } => format!(
                "destinations with host {stable} (stableService) and host {canary} (canaryService)"
            ),
            Pick::Subset { stable, canary } => format!(
                "destinations with subset {stable} (stableSubsetName) and subset {canary} (canarySubsetName)"
            ),
        }
    }
}

/// Whether an Istio host names `service` in `namespace`.
pub fn host_is(host: &str, service: &str, namespace: &str) -> bool {
    host == service
        || host
            .strip_prefix(service)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(namespace))
            .is_some_and(|rest| matches!(rest, "" | ".svc" | ".svc.cluster.local"))
}

/// The kind of route a split is on: its key under `spec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tls,
    Tcp,
}

impl Protocol {
    fn key(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Where a route sends to both versions: the route and the two destinations' indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub protocol: Protocol,
    pub route: usize,
    pub stable: usize,
    pub canary: usize,
}

fn routes_of(object: &Value, protocol: Protocol) -> &[Value] {
    object["spec"][protocol.key()]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn split_of(route: &Value, protocol: Protocol, index: usize, pick: &Pick) -> Option<Split> {
    let destinations = route["route"].as_array()?;
    let position = |stable: bool| {
        destinations
            .iter()
            .position(|d| pick.is(&d["destination"], stable))
    };
    Some(Split {
        protocol,
        route: index,
        stable: position(true)?,
        canary: position(false)?,
    })
}

fn port_matches(entry: &Value, port: Option<i64>) -> bool {
    port.is_none_or(|port| entry["port"].as_i64() == Some(port))
}

/// The routes of one VirtualService (`object`, as stored) that `spec` names, each with its
/// stable and canary destinations. A named route that is missing, or one without both
/// destinations, is an error that says which and what to fix.
pub fn splits(
    object: &Value,
    spec: &IstioVirtualService,
    pick: &Pick,
) -> Result<Vec<Split>, RouterError> {
    splits_beside(object, spec, pick, &[])
}

/// [`splits`] on a VirtualService that may carry the managed routes `managed` too: they are
/// not counted when it has one HTTP route and `routes` names none.
pub fn splits_beside(
    object: &Value,
    spec: &IstioVirtualService,
    pick: &Pick,
    managed: &[String],
) -> Result<Vec<Split>, RouterError> {
    let name = &spec.name;
    let mut chosen: Vec<(Protocol, usize, String)> = Vec::new();
    let http = routes_of(object, Protocol::Http);
    if spec.routes.is_empty() {
        if spec.tls_routes.is_empty() && spec.tcp_routes.is_empty() {
            let own: Vec<usize> = (0..http.len())
                .filter(|&i| !is_managed(&http[i], managed))
                .collect();
            let [only] = own.as_slice() else {
                return Err(RouterError::Misconfigured(format!(
                    "VirtualService {name} has {} HTTP routes and spec.strategy.canary.trafficRouting.istio names none: name the routes to set in virtualService.routes (each route needs a name)",
                    own.len()
                )));
            };
            chosen.push((Protocol::Http, *only, "its only HTTP route".into()));
        }
    } else {
        for wanted in &spec.routes {
            let Some(index) = http
                .iter()
                .position(|r| r["name"].as_str() == Some(wanted.as_str()))
            else {
                return Err(RouterError::Misconfigured(format!(
                    "VirtualService {name} has no HTTP route named {wanted}: add it, or fix virtualService.routes"
                )));
            };
            chosen.push((Protocol::Http, index, format!("HTTP route {wanted}")));
        }
    }
    let tls = routes_of(object, Protocol::Tls);
    for wanted in &spec.tls_routes {
        let found: Vec<usize> = tls
            .iter()
            .enumerate()
            .filter(|(_, route)| {
                route["match"].as_array().into_iter().flatten().any(|m| {
                    port_matches(m, wanted.port)
                        && wanted.sni_hosts.iter().all(|host| {
                            m["sniHosts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|h| h.as_str() == Some(host.as_str()))
                        })
                })
            })
            .map(|(index, _)| index)
            .collect();
        let described = format!(
            "TLS route (port {}, sniHosts {:?})",
            wanted.port.map_or("any".into(), |p| p.to_string()),
            wanted.sni_hosts
        );
        if found.is_empty() {
            return Err(RouterError::Misconfigured(format!(
                "VirtualService {name} has no {described}: add a tls route whose match has them, or fix virtualService.tlsRoutes"
            )));
        }
        chosen.extend(
            found
                .into_iter()
                .map(|index| (Protocol::Tls, index, described.clone())),
        );
    }
    let tcp = routes_of(object, Protocol::Tcp);
    for wanted in &spec.tcp_routes {
        let found: Vec<usize> = tcp
            .iter()
            .enumerate()
            .filter(|(_, route)| {
                route["match"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| port_matches(m, wanted.port))
            })
            .map(|(index, _)| index)
            .collect();
        let described = format!(
            "TCP route (port {})",
            wanted.port.map_or("any".into(), |p| p.to_string())
        );
        if found.is_empty() {
            return Err(RouterError::Misconfigured(format!(
                "VirtualService {name} has no {described}: add a tcp route whose match has the port, or fix virtualService.tcpRoutes"
            )));
        }
        chosen.extend(
            found
                .into_iter()
                .map(|index| (Protocol::Tcp, index, described.clone())),
        );
    }
    let mut found = Vec::new();
    for (protocol, index, described) in chosen {
        let route = &routes_of(object, protocol)[index];
        let Some(split) = split_of(route, protocol, index, pick) else {
            return Err(RouterError::Misconfigured(format!(
                "VirtualService {name}: {described} needs {}; add both to its route",
                pick.describe()
            )));
        };
        if !found.contains(&split) {
            found.push(split);
        }
    }
    Ok(found)
}

/// The canary's share in percent: the highest over the splits (so a route left behind is
/// never hidden), or None while no split has a weight (weir has not set any yet). Istio's
/// weight is a percentage; an absent one is 0.
pub fn canary_weight(object: &Value, splits: &[Split]) -> Option<i32> {
    let mut highest: Option<i32> = None;
    for split in splits {
        let destinations = &routes_of(object, split.protocol).get(split.route)?["route"];
        let weight = |index: usize| destinations[index]["weight"].as_i64();
        let (stable, canary) = (weight(split.stable), weight(split.canary));
        if stable.is_none() && canary.is_none() {
            return None;
        }
        let (stable, canary) = (stable.unwrap_or(0), canary.unwrap_or(0));
        let share = if stable + canary <= 0 {
            0
        } else {
            (100 * canary + (stable + canary) / 2) / (stable + canary)
        };
        let share = i32::try_from(share.clamp(0, 100)).unwrap_or(0);
        highest = Some(highest.map_or(share, |h| h.max(share)));
    }
    highest
}

fn pointer(path: String) -> json_patch::jsonptr::PointerBuf {
    path.parse().unwrap_or_default()
}

/// The JSON patch that sets canary `weight` and stable `100 - weight` on every split, each
/// after a test of the destination's host or subset.
pub fn weight_patch(object: &Value, splits: &[Split], pick: &Pick, weight: i32) -> JsonPatch {
    let field = pick.field();
    let mut operations = Vec::new();
    for split in splits {
        let route = format!("/spec/{}/{}/route", split.protocol.key(), split.route);
        for (index, value) in [(split.stable, 100 - weight), (split.canary, weight)] {
            let at = format!("{route}/{index}");
            let current = object
                .pointer(&format!("{at}/destination/{field}"))
                .cloned()
                .unwrap_or(Value::Null);
            operations.push(PatchOperation::Test(TestOperation {
                path: pointer(format!("{at}/destination/{field}")),
                value: current,
            }));
            operations.push(PatchOperation::Add(AddOperation {
                path: pointer(format!("{at}/weight")),
                value: Value::from(value),
            }));
        }
    }
    JsonPatch(operations)
}

fn is_managed(route: &Value, managed: &[String]) -> bool {
    route["name"]
        .as_str()
        .is_some_and(|name| managed.iter().any(|m| m == name))
}

/// The destinations of the weighted HTTP route (the first HTTP split), stable then canary,
/// as written there (host, subset, port): the ones a managed route sends to.
pub fn managed_destinations(object: &Value, splits: &[Split]) -> Option<(Value, Value)> {
    let split = splits.iter().find(|s| s.protocol == Protocol::Http)?;
    let destinations = &routes_of(object, Protocol::Http).get(split.route)?["route"];
    Some((
        destinations[split.stable]["destination"].clone(),
        destinations[split.canary]["destination"].clone(),
    ))
}

fn string_match(value: &StringMatch) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The HTTP route weir writes for managed route `name`: a header route's matches (one Istio
/// match per header, any of them) sent to the canary alone; a mirror route's matches served
/// as the weighted route serves them (stable `100 - weight`, canary `weight`, as Argo
/// Rollouts does; set again with every weight), `percentage` of them mirrored to the canary.
pub fn managed_route_value(
    name: &str,
    route: &ManagedRoute,
    stable: &Value,
    canary: &Value,
    weight: i32,
) -> Value {
    match route {
        ManagedRoute::Header(matches) => {
            let matches: Vec<Value> = matches
                .iter()
                .map(|m| {
                    let mut headers = serde_json::Map::new();
                    headers.insert(m.header_name.clone(), string_match(&m.header_value));
                    serde_json::json!({ "headers": headers })
                })
                .collect();
            serde_json::json!({
                "name": name,
                "match": matches,
                "route": [{"destination": canary, "weight": 100}],
            })
        }
        ManagedRoute::Mirror {
            percentage,
            matches,
        } => {
            let matches: Vec<Value> = matches
                .iter()
                .map(|m| {
                    let mut entry = serde_json::Map::new();
                    if let Some(method) = &m.method {
                        entry.insert("method".into(), string_match(method));
                    }
                    if let Some(path) = &m.path {
                        entry.insert("uri".into(), string_match(path));
                    }
                    if !m.headers.is_empty() {
                        let headers: serde_json::Map<String, Value> = m
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), string_match(v)))
                            .collect();
                        entry.insert("headers".into(), Value::Object(headers));
                    }
                    Value::Object(entry)
                })
                .collect();
            serde_json::json!({
                "name": name,
                "match": matches,
                "route": [
                    {"destination": stable, "weight": 100 - weight},
                    {"destination": canary, "weight": weight}],
                "mirror": canary,
                "mirrorPercentage": {"value": percentage},
            })
        }
    }
}

/// What a managed route on the VirtualService is, read back: Some only when it is exactly
/// what [`managed_route_value`] writes for it (so an edited route is written again).
pub fn shown_route(live: &Value, stable: &Value, canary: &Value) -> Option<ManagedRoute> {
    let name = live["name"].as_str()?;
    let entries = live["match"].as_array()?;
    let read = |v: &Value| serde_json::from_value::<StringMatch>(v.clone()).ok();
    let route = if live.get("mirror").is_some() {
        let mut matches = Vec::new();
        for entry in entries {
            let headers = entry["headers"].as_object().into_iter().flatten();
            matches.push(RouteMatch {
                method: entry.get("method").and_then(read),
                path: entry.get("uri").and_then(read),
                headers: headers
                    .map(|(k, v)| Some((k.clone(), read(v)?)))
                    .collect::<Option<_>>()?,
                unsupported: Default::default(),
            });
        }
        let percentage = live["mirrorPercentage"]["value"].as_f64()?;
        ManagedRoute::Mirror {
            percentage: percentage.round().clamp(0.0, 100.0) as i32,
            matches,
        }
    } else {
        let mut matches = Vec::new();
        for entry in entries {
            let headers = entry["headers"].as_object()?;
            let [(header, value)] = headers.iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            matches.push(HeaderRoutingMatch {
                header_name: header.clone(),
                header_value: read(value)?,
                unsupported: Default::default(),
            });
        }
        ManagedRoute::Header(matches)
    };
    // A mirror route carries the weight it was last set to; a header route none.
    let weight = live["route"][1]["weight"]
        .as_i64()
        .and_then(|w| i32::try_from(w).ok())
        .unwrap_or(0);
    (managed_route_value(name, &route, stable, canary, weight) == *live).then_some(route)
}

/// Whether an HTTP route of a VirtualService is spelt exactly as [`managed_route_value`]
/// writes a managed route (named; a header route to one destination, or a mirror route to
/// two), with the destinations it names. Says nothing of whose route it is: callers also
/// check the name.
pub fn is_written_managed_route(route: &Value) -> bool {
    let destinations = route["route"].as_array().map(Vec::as_slice);
    let (stable, canary) = match destinations {
        Some([only]) if route.get("mirror").is_none() => (&Value::Null, &only["destination"]),
        Some([stable, canary]) => (&stable["destination"], &canary["destination"]),
        _ => return false,
    };
    shown_route(route, stable, canary).is_some()
}

/// The mirror routes weir made among the managed routes `managed` (stable destination first,
/// canary second, as [`managed_route_value`] writes them): set with every weight, like the
/// weighted routes.
pub fn mirror_splits(object: &Value, managed: &[String]) -> Vec<Split> {
    routes_of(object, Protocol::Http)
        .iter()
        .enumerate()
        .filter(|(_, route)| is_managed(route, managed) && route.get("mirror").is_some())
        .filter(|(_, route)| route["route"].as_array().is_some_and(|r| r.len() == 2))
        .map(|(index, _)| Split {
            protocol: Protocol::Http,
            route: index,
            stable: 0,
            canary: 1,
        })
        .collect()
}

/// The patch that puts managed route `value` (named `name`) on the VirtualService: in place
/// of the route of that name, or else after the managed routes `order` puts before it, at
/// the top. Each step tests the route it changes or shifts, so a concurrent reorder fails.
pub fn put_route_patch(object: &Value, name: &str, value: Value, order: &[String]) -> JsonPatch {
    let http = routes_of(object, Protocol::Http);
    if let Some(index) = http.iter().position(|r| r["name"].as_str() == Some(name)) {
        return JsonPatch(vec![
            PatchOperation::Test(TestOperation {
                path: pointer(format!("/spec/http/{index}/name")),
                value: Value::from(name),
            }),
            PatchOperation::Replace(ReplaceOperation {
                path: pointer(format!("/spec/http/{index}")),
                value,
            }),
        ]);
    }
    let before = order
        .iter()
        .position(|o| o == name)
        .map_or(order, |at| &order[..at]);
    let index = http.iter().take_while(|r| is_managed(r, before)).count();
    let mut operations = Vec::new();
    if object["spec"]["http"].is_array() {
        if let Some(shifted) = http.get(index) {
            operations.push(PatchOperation::Test(TestOperation {
                path: pointer(format!("/spec/http/{index}")),
                value: shifted.clone(),
            }));
        }
        operations.push(PatchOperation::Add(AddOperation {
            path: pointer(format!("/spec/http/{index}")),
            value,
        }));
    } else {
        operations.push(PatchOperation::Add(AddOperation {
            path: pointer("/spec/http".into()),
            value: Value::Array(vec![value]),
        }));
    }
    JsonPatch(operations)
}

/// The patch that removes managed route `name`, or None when the VirtualService has none.
pub fn remove_route_patch(object: &Value, name: &str) -> Option<JsonPatch> {
    let index = routes_of(object, Protocol::Http)
        .iter()
        .position(|r| r["name"].as_str() == Some(name))?;
    Some(JsonPatch(vec![
        PatchOperation::Test(TestOperation {
            path: pointer(format!("/spec/http/{index}/name")),
            value: Value::from(name),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(format!("/spec/http/{index}")),
        }),
    ]))
}

/// The stable and canary pod-template hashes the subsets select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    pub stable: String,
    pub canary: String,
}

fn subset_index(rule: &Value, subset: &str, field: &str) -> Result<usize, RouterError> {
    rule["spec"]["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .position(|s| s["name"].as_str() == Some(subset))
        .ok_or_else(|| {
            let name = rule["metadata"]["name"].as_str().unwrap_or_default();
            RouterError::Misconfigured(format!(
                "DestinationRule {name} has no subset named {subset} (destinationRule.{field}): add it, or fix the name"
            ))
        })
}

/// The patch that sets the hash label of the stable and canary subsets of a DestinationRule
/// (`rule`, as stored), or None when both already carry it.
pub fn label_patch(
    rule: &Value,
    spec: &IstioDestinationRule,
    versions: &Versions,
) -> Result<Option<JsonPatch>, RouterError> {
    let mut operations = Vec::new();
    for (subset, field, hash) in [
        (
            &spec.stable_subset_name,
            "stableSubsetName",
            &versions.stable,
        ),
        (
            &spec.canary_subset_name,
            "canarySubsetName",
            &versions.canary,
        ),
    ] {
        let index = subset_index(rule, subset, field)?;
        let at = format!("/spec/subsets/{index}");
        let labels = &rule["spec"]["subsets"][index]["labels"];
        if labels[POD_TEMPLATE_HASH_LABEL].as_str() == Some(hash.as_str()) {
            continue;
        }
        operations.push(PatchOperation::Test(TestOperation {
            path: pointer(format!("{at}/name")),
            value: Value::from(subset.as_str()),
        }));
        if labels.is_object() {
            operations.push(PatchOperation::Add(AddOperation {
                path: pointer(format!("{at}/labels/{POD_TEMPLATE_HASH_LABEL}")),
                value: Value::from(hash.as_str()),
            }));
        } else {
            operations.push(PatchOperation::Add(AddOperation {
                path: pointer(format!("{at}/labels")),
                value: serde_json::json!({ POD_TEMPLATE_HASH_LABEL: hash }),
            }));
        }
    }
    Ok((!operations.is_empty()).then_some(JsonPatch(operations)))
}

/// The patch that removes the hash label from the two subsets, or None when neither has it.
/// A subset that is gone has nothing to remove.
pub fn unlabel_patch(rule: &Value, spec: &IstioDestinationRule) -> Option<JsonPatch> {
    let mut operations = Vec::new();
    for (subset, field) in [
        (&spec.stable_subset_name, "stableSubsetName"),
        (&spec.canary_subset_name, "canarySubsetName"),
    ] {
        let Ok(index) = subset_index(rule, subset, field) else {
            continue;
        };
        let at = format!("/spec/subsets/{index}");
        if rule["spec"]["subsets"][index]["labels"]
            .get(POD_TEMPLATE_HASH_LABEL)
            .is_none()
        {
            continue;
        }
        operations.push(PatchOperation::Test(TestOperation {
            path: pointer(format!("{at}/name")),
            value: Value::from(subset.as_str()),
        }));
        operations.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(format!("{at}/labels/{POD_TEMPLATE_HASH_LABEL}")),
        }));
    }
    (!operations.is_empty()).then_some(JsonPatch(operations))
}

/// Whether both subsets select the versions given.
pub fn labels_current(rule: &Value, spec: &IstioDestinationRule, versions: &Versions) -> bool {
    matches!(label_patch(rule, spec, versions), Ok(None))
}

pub struct IstioRouter {
    virtual_services: Api<DynamicObject>,
    destination_rules: Api<DynamicObject>,
    namespace: String,
    routing: IstioRouting,
    pick: Pick,
    versions: Mutex<Versions>,
    /// `trafficRouting.managedRoutes`, highest precedence first.
    managed: Vec<String>,
}

impl IstioRouter {
    /// The router of `routing` in `namespace`; `services` are the stable and canary
    /// Services (host-level), `versions` the hashes the subsets should select (subset-level).
    /// None when host-level routing lacks a Service (validation reports it).
    pub fn new(
        client: Client,
        namespace: &str,
        routing: &IstioRouting,
        services: (Option<&str>, Option<&str>),
        versions: Versions,
    ) -> Option<Self> {
        let pick = match (&routing.destination_rule, services) {
            (Some(rule), _) => Pick::Subset {
                stable: rule.stable_subset_name.clone(),
                canary: rule.canary_subset_name.clone(),
            },
            (None, (Some(stable), Some(canary))) => Pick::Host {
                stable: stable.into(),
                canary: canary.into(),
                namespace: namespace.into(),
            },
            (None, _) => return None,
        };
        Some(IstioRouter {
            virtual_services: Api::namespaced_with(
                client.clone(),
                namespace,
                &virtual_service_resource(),
            ),
            destination_rules: Api::namespaced_with(
                client,
                namespace,
                &destination_rule_resource(),
            ),
            namespace: namespace.into(),
            routing: routing.clone(),
            pick,
            versions: Mutex::new(versions),
            managed: Vec::new(),
        })
    }

    /// The router with the managed routes `managed` (their names, highest precedence first).
    pub fn managing(mut self, managed: Vec<String>) -> Self {
        self.managed = managed;
        self
    }

    /// Every VirtualService with an HTTP route weir sets weights on, as stored, with the
    /// destinations a managed route sends to (stable, canary). Managed routes are HTTP
    /// routes: TLS and TCP routes carry none.
    /// Each VirtualService with a weighted HTTP route: its name, the object, the stable and
    /// canary destinations a managed route sends to, and the canary weight it carries now.
    async fn http_services(&self) -> Result<Vec<(String, Value, Value, Value, i32)>, RouterError> {
        let mut found = Vec::new();
        for service in self.routing.all_virtual_services() {
            let live = self
                .get(&self.virtual_services, VIRTUAL_SERVICE, &service.name)
                .await?;
            let splits = splits_beside(&live, service, &self.pick, &self.managed)?;
            if let Some((stable, canary)) = managed_destinations(&live, &splits) {
                let weight = canary_weight(&live, &splits).unwrap_or(0);
                found.push((service.name.clone(), live, stable, canary, weight));
            }
        }
        Ok(found)
    }

    /// The splits weir sets on one VirtualService: the weighted routes and its mirror routes.
    fn weighted(
        &self,
        live: &Value,
        service: &IstioVirtualService,
    ) -> Result<Vec<Split>, RouterError> {
        let mut found = splits_beside(live, service, &self.pick, &self.managed)?;
        found.extend(mirror_splits(live, &self.managed));
        Ok(found)
    }

    /// Follows the versions the plan now holds (a promotion moves the stable hash), so the
    /// subsets are labelled for the status being written, not the one read.
    pub fn follow(&self, versions: Versions) {
        if let Ok(mut current) = self.versions.lock() {
            *current = versions;
        }
    }

    /// Subset-level: the canary hash the canary subset selects whenever weir sets a weight
    /// (it labels the subsets first), standing in for a canary Service's selector.
    pub fn canary_subset_hash(&self) -> Option<String> {
        self.routing.destination_rule.as_ref()?;
        self.versions().map(|v| v.canary)
    }

    fn versions(&self) -> Option<Versions> {
        self.versions.lock().ok().map(|v| v.clone())
    }

    fn api_error(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> RouterError {
        let name = name.to_owned();
        move |source| RouterError::Api {
            kind,
            name,
            source: Box::new(source),
        }
    }

    async fn get(
        &self,
        api: &Api<DynamicObject>,
        kind: &'static str,
        name: &str,
    ) -> Result<Value, RouterError> {
        match api.get(name).await {
            Ok(object) => serde_json::to_value(&object)
                .map_err(|e| Self::api_error(kind, name)(kube::Error::SerdeError(e))),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(if names_an_object(&status) {
                    RouterError::NotFound {
                        kind,
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                    }
                } else {
                    RouterError::KindMissing { kind, group: GROUP }
                })
            }
            Err(source) => Err(Self::api_error(kind, name)(source)),
        }
    }

    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        kind: &'static str,
        name: &str,
        patch: JsonPatch,
    ) -> Result<Value, RouterError> {
        let params = PatchParams {
            field_manager: Some(ROLLOUT_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = api
            .patch(name, &params, &Patch::<()>::Json(patch))
            .await
            .map_err(Self::api_error(kind, name))?;
        serde_json::to_value(&patched)
            .map_err(|e| Self::api_error(kind, name)(kube::Error::SerdeError(e)))
    }

    async fn label_subsets(&self) -> Result<(), RouterError> {
        let (Some(rule), Some(versions)) = (&self.routing.destination_rule, self.versions()) else {
            return Ok(());
        };
        let live = self
            .get(&self.destination_rules, DESTINATION_RULE, &rule.name)
            .await?;
        if let Some(patch) = label_patch(&live, rule, &versions)? {
            let patched = self
                .patch(&self.destination_rules, DESTINATION_RULE, &rule.name, patch)
                .await?;
            if !labels_current(&patched, rule, &versions) {
                return Err(RouterError::Misconfigured(format!(
                    "DestinationRule {}: the subsets {} and {} do not carry label {POD_TEMPLATE_HASH_LABEL} {} and {} after weir set it",
                    rule.name,
                    rule.stable_subset_name,
                    rule.canary_subset_name,
                    versions.stable,
                    versions.canary
                )));
            }
        }
        Ok(())
    }
}

impl Router for IstioRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        // Subsets that select other versions than the plan's carry none of its weight: None
        // makes the planner set the weight again, which relabels them first.
        if let (Some(rule), Some(versions)) = (&self.routing.destination_rule, self.versions()) {
            let live = self
                .get(&self.destination_rules, DESTINATION_RULE, &rule.name)
                .await?;
            if !labels_current(&live, rule, &versions) {
                return Ok(None);
            }
        }
        let mut highest: Option<i32> = None;
        for service in self.routing.all_virtual_services() {
            let live = self
                .get(&self.virtual_services, VIRTUAL_SERVICE, &service.name)
                .await?;
            let found = self.weighted(&live, service)?;
            let Some(weight) = canary_weight(&live, &found) else {
                return Ok(None);
            };
            highest = Some(highest.map_or(weight, |h| h.max(weight)));
        }
        Ok(highest)
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        self.label_subsets().await?;
        for service in self.routing.all_virtual_services() {
            let live = self
                .get(&self.virtual_services, VIRTUAL_SERVICE, &service.name)
                .await?;
            let found = self.weighted(&live, service)?;
            if canary_weight(&live, &found) == Some(weight)
                && found.iter().all(|s| {
                    routes_of(&live, s.protocol)[s.route]["route"][s.stable]["weight"].as_i64()
                        == Some(i64::from(100 - weight))
                })
            {
                continue;
            }
            let patch = weight_patch(&live, &found, &self.pick, weight);
            let patched = self
                .patch(
                    &self.virtual_services,
                    VIRTUAL_SERVICE,
                    &service.name,
                    patch,
                )
                .await?;
            // Verified on what the API server stored, not assumed from what was sent.
            let found = canary_weight(&patched, &self.weighted(&patched, service)?);
            if found != Some(weight) {
                return Err(RouterError::NotVerified {
                    kind: VIRTUAL_SERVICE,
                    name: service.name.clone(),
                    wanted: weight,
                    found,
                });
            }
        }
        Ok(weight)
    }

    async fn managed_routes(&self) -> Result<ShownRoutes, RouterError> {
        let mut shown = ShownRoutes::new();
        if self.managed.is_empty() {
            return Ok(shown);
        }
        let services = self.http_services().await?;
        for name in &self.managed {
            let each: Vec<Option<Option<ManagedRoute>>> = services
                .iter()
                .map(|(_, live, stable, canary, _)| {
                    routes_of(live, Protocol::Http)
                        .iter()
                        .find(|r| r["name"].as_str() == Some(name.as_str()))
                        .map(|route| shown_route(route, stable, canary))
                })
                .collect();
            if each.iter().all(Option::is_none) {
                continue;
            }
            // The same route on every VirtualService, or it is not yet as weir writes it.
            let same = each.windows(2).all(|pair| pair[0] == pair[1]);
            let route = match each.into_iter().next() {
                Some(Some(route)) if same => route,
                _ => None,
            };
            shown.insert(name.clone(), route);
        }
        Ok(shown)
    }

    async fn set_managed_route(&self, name: &str, route: &ManagedRoute) -> Result<(), RouterError> {
        let services = self.http_services().await?;
        if services.is_empty() {
            return Err(RouterError::Misconfigured(format!(
                "managed route {name}: no VirtualService of spec.strategy.canary.trafficRouting.istio has an HTTP route weir sets weights on; header and mirror routes are HTTP routes"
            )));
        }
        for (service, live, stable, canary, weight) in services {
            let value = managed_route_value(name, route, &stable, &canary, weight);
            let present = routes_of(&live, Protocol::Http).contains(&value);
            if present {
                continue;
            }
            let patch = put_route_patch(&live, name, value, &self.managed);
            let patched = self
                .patch(&self.virtual_services, VIRTUAL_SERVICE, &service, patch)
                .await?;
            // Verified on what the API server stored.
            let stored = routes_of(&patched, Protocol::Http)
                .iter()
                .find(|r| r["name"].as_str() == Some(name))
                .and_then(|r| shown_route(r, &stable, &canary));
            if stored.as_ref() != Some(route) {
                return Err(RouterError::Misconfigured(format!(
                    "VirtualService {service}: managed route {name} does not read back as weir wrote it (stored {stored:?}); check for a webhook or controller that rewrites the VirtualService"
                )));
            }
        }
        Ok(())
    }

    async fn remove_managed_route(&self, name: &str) -> Result<(), RouterError> {
        for service in self.routing.all_virtual_services() {
            let live = self
                .get(&self.virtual_services, VIRTUAL_SERVICE, &service.name)
                .await?;
            if let Some(patch) = remove_route_patch(&live, name) {
                self.patch(
                    &self.virtual_services,
                    VIRTUAL_SERVICE,
                    &service.name,
                    patch,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        // The managed routes first: they send to the canary whatever the weight. The weight
        // goes to 0 even when one of them cannot be removed; that failure is returned after.
        let mut first = None;
        for name in &self.managed {
            if let Err(error) = self.remove_managed_route(name).await {
                first.get_or_insert(error);
            }
        }
        self.set_weight(0).await?;
        if let Some(error) = first {
            return Err(error);
        }
        let Some(rule) = &self.routing.destination_rule else {
            return Ok(());
        };
        let live = self
            .get(&self.destination_rules, DESTINATION_RULE, &rule.name)
            .await?;
        if let Some(patch) = unlabel_patch(&live, rule) {
            self.patch(&self.destination_rules, DESTINATION_RULE, &rule.name, patch)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host_pick() -> Pick {
        Pick::Host {
            stable: "web-stable".into(),
            canary: "web-canary".into(),
            namespace: "shop".into(),
        }
    }

    fn subset_pick() -> Pick {
        Pick::Subset {
            stable: "stable".into(),
            canary: "canary".into(),
        }
    }

    fn service(value: Value) -> IstioVirtualService {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("a virtualService: {e}"))
    }

    fn rule() -> IstioDestinationRule {
        serde_json::from_value(
            json!({"name": "web", "canarySubsetName": "canary", "stableSubsetName": "stable"}),
        )
        .unwrap_or_else(|e| panic!("a destinationRule: {e}"))
    }

    fn vs(spec: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn hosts_are_short_names_or_the_services_full_names() {
        for host in [
            "web-stable",
            "web-stable.shop",
            "web-stable.shop.svc",
            "web-stable.shop.svc.cluster.local",
        ] {
            assert!(host_is(host, "web-stable", "shop"), "{host}");
        }
        for host in [
            "web-stable-2",
            "web-stable.other",
            "web-stable.shop.svc.cluster",
            "web",
        ] {
            assert!(!host_is(host, "web-stable", "shop"), "{host}");
        }
    }

    #[test]
    fn the_only_http_route_is_used_when_none_is_named() {
        let object = vs(json!({"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": 0}
        ]}]}));
        let found = splits(&object, &service(json!({"name": "web"})), &host_pick())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found,
            vec![Split {
                protocol: Protocol::Http,
                route: 0,
                stable: 0,
                canary: 1
            }]
        );
        assert_eq!(canary_weight(&object, &found), Some(0));
    }

    #[test]
    fn several_unnamed_http_routes_or_a_missing_name_are_refused_by_name() {
        let object = vs(json!({"http": [
            {"name": "primary", "route": [{"destination": {"host": "web-stable"}}, {"destination": {"host": "web-canary"}}]},
            {"name": "other", "route": [{"destination": {"host": "other"}}]}
        ]}));
        let message = splits(&object, &service(json!({"name": "web"})), &host_pick())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("has 2 HTTP routes"), "{message}");
        let message = splits(
            &object,
            &service(json!({"name": "web", "routes": ["secondary"]})),
            &host_pick(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            message.contains("no HTTP route named secondary"),
            "{message}"
        );
        let message = splits(
            &object,
            &service(json!({"name": "web", "routes": ["other"]})),
            &host_pick(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            message.contains(
                "HTTP route other needs destinations with host web-stable (stableService)"
            ),
            "{message}"
        );
        let found = splits(
            &object,
            &service(json!({"name": "web", "routes": ["primary"]})),
            &host_pick(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.len(), 1);
        assert_eq!(
            canary_weight(&object, &found),
            None,
            "no weight set yet reads as none"
        );
    }

    #[test]
    fn tls_and_tcp_routes_are_picked_by_port_and_sni_hosts() {
        let object = vs(json!({
            "tls": [
                {"match": [{"port": 443, "sniHosts": ["a.example.com"]}], "route": [
                    {"destination": {"host": "web-stable"}, "weight": 90}, {"destination": {"host": "web-canary"}, "weight": 10}]},
                {"match": [{"port": 443, "sniHosts": ["b.example.com"]}], "route": [
                    {"destination": {"host": "web-canary"}, "weight": 70}, {"destination": {"host": "web-stable"}, "weight": 30}]}
            ],
            "tcp": [
                {"match": [{"port": 5432}], "route": [
                    {"destination": {"host": "web-stable"}, "weight": 100}, {"destination": {"host": "web-canary"}}]}
            ]
        }));
        let spec = service(json!({"name": "web",
            "tlsRoutes": [{"port": 443, "sniHosts": ["b.example.com"]}],
            "tcpRoutes": [{"port": 5432}]}));
        let found = splits(&object, &spec, &host_pick()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found,
            vec![
                Split {
                    protocol: Protocol::Tls,
                    route: 1,
                    stable: 1,
                    canary: 0
                },
                Split {
                    protocol: Protocol::Tcp,
                    route: 0,
                    stable: 0,
                    canary: 1
                },
            ]
        );
        assert_eq!(
            canary_weight(&object, &found),
            Some(70),
            "the highest share"
        );
        let wrong_port = service(json!({"name": "web", "tcpRoutes": [{"port": 3306}]}));
        let message = splits(&object, &wrong_port, &host_pick())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("no TCP route (port 3306)"), "{message}");
    }

    #[test]
    fn the_patch_tests_each_destination_then_sets_both_weights() {
        let object = vs(json!({"http": [
            {"name": "other", "route": [{"destination": {"host": "x"}}]},
            {"name": "primary", "route": [
                {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
                {"destination": {"host": "web", "subset": "canary"}}]}
        ]}));
        let spec = service(json!({"name": "web", "routes": ["primary"]}));
        let found = splits(&object, &spec, &subset_pick()).unwrap_or_else(|e| panic!("{e}"));
        let patch = weight_patch(&object, &found, &subset_pick(), 20);
        assert_eq!(
            serde_json::to_value(&patch).unwrap_or_default(),
            json!([
                {"op": "test", "path": "/spec/http/1/route/0/destination/subset", "value": "stable"},
                {"op": "add", "path": "/spec/http/1/route/0/weight", "value": 80},
                {"op": "test", "path": "/spec/http/1/route/1/destination/subset", "value": "canary"},
                {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 20}
            ])
        );
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(canary_weight(&patched, &found), Some(20));
        // A concurrent edit that swapped the destinations makes the patch fail, not misroute.
        let mut swapped = object.clone();
        if let Some(list) = swapped
            .pointer_mut("/spec/http/1/route")
            .and_then(Value::as_array_mut)
        {
            list.swap(0, 1);
        }
        assert!(json_patch::patch(&mut swapped, &patch).is_err());
    }

    #[test]
    fn subsets_get_the_hash_label_added_and_removed() {
        let live = json!({"metadata": {"name": "web"}, "spec": {"host": "web", "subsets": [
            {"name": "canary", "labels": {"app": "web"}},
            {"name": "stable"}
        ]}});
        let versions = Versions {
            stable: "aaa".into(),
            canary: "bbb".into(),
        };
        assert!(!labels_current(&live, &rule(), &versions));
        let patch = label_patch(&live, &rule(), &versions)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a patch"));
        assert_eq!(
            serde_json::to_value(&patch).unwrap_or_default(),
            json!([
                {"op": "test", "path": "/spec/subsets/1/name", "value": "stable"},
                {"op": "add", "path": "/spec/subsets/1/labels", "value": {"rollouts-pod-template-hash": "aaa"}},
                {"op": "test", "path": "/spec/subsets/0/name", "value": "canary"},
                {"op": "add", "path": "/spec/subsets/0/labels/rollouts-pod-template-hash", "value": "bbb"}
            ])
        );
        let mut labelled = live.clone();
        json_patch::patch(&mut labelled, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert!(labels_current(&labelled, &rule(), &versions));
        assert_eq!(
            labelled["spec"]["subsets"][0]["labels"]["app"], "web",
            "kept"
        );
        assert!(matches!(
            label_patch(&labelled, &rule(), &versions),
            Ok(None)
        ));
        // A promotion moves the stable subset only.
        let promoted = Versions {
            stable: "bbb".into(),
            canary: "bbb".into(),
        };
        let patch = label_patch(&labelled, &rule(), &promoted)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a patch"));
        assert_eq!(patch.0.len(), 2, "{patch:?}");
        let unlabel = unlabel_patch(&labelled, &rule()).unwrap_or_else(|| panic!("a patch"));
        let mut removed = labelled.clone();
        json_patch::patch(&mut removed, &unlabel).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            removed["spec"]["subsets"][0]["labels"],
            json!({"app": "web"})
        );
        assert_eq!(removed["spec"]["subsets"][1]["labels"], json!({}));
        assert!(unlabel_patch(&removed, &rule()).is_none());
    }

    #[test]
    fn a_missing_subset_is_named() {
        let live = json!({"metadata": {"name": "web"}, "spec": {"subsets": [{"name": "v1"}]}});
        let versions = Versions {
            stable: "a".into(),
            canary: "b".into(),
        };
        let message = label_patch(&live, &rule(), &versions)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains(
                "DestinationRule web has no subset named stable (destinationRule.stableSubsetName)"
            ),
            "{message}"
        );
    }

    fn header_route() -> ManagedRoute {
        ManagedRoute::Header(vec![HeaderRoutingMatch {
            header_name: "x-canary".into(),
            header_value: StringMatch {
                exact: Some("yes".into()),
                ..StringMatch::default()
            },
            unsupported: Default::default(),
        }])
    }

    fn mirror_route() -> ManagedRoute {
        ManagedRoute::Mirror {
            percentage: 35,
            matches: vec![
                serde_json::from_value(json!({"method": {"exact": "GET"}, "path": {"prefix": "/"},
                    "headers": {"x-b": {"regex": "b.*"}}}))
                .unwrap_or_else(|e| panic!("{e}")),
            ],
        }
    }

    #[test]
    fn a_mirror_route_follows_every_weight_and_still_reads_as_weirs() {
        let mut live = vs(
            json!({"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 90},
            {"destination": {"host": "web-canary"}, "weight": 10}]}]}),
        );
        let spec = service(json!({"name": "web"}));
        let managed = vec!["mirror".to_owned()];
        let main =
            splits_beside(&live, &spec, &host_pick(), &managed).unwrap_or_else(|e| panic!("{e}"));
        let (stable, canary) =
            managed_destinations(&live, &main).unwrap_or_else(|| panic!("destinations"));
        let mirror = managed_route_value("mirror", &mirror_route(), &stable, &canary, 10);
        let patch = put_route_patch(&live, "mirror", mirror, &managed);
        json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
        for weight in [40, 0, 100] {
            let mut all = splits_beside(&live, &spec, &host_pick(), &managed)
                .unwrap_or_else(|e| panic!("{e}"));
            all.extend(mirror_splits(&live, &managed));
            assert_eq!(all.len(), 2, "the weighted route and the mirror route");
            let patch = weight_patch(&live, &all, &host_pick(), weight);
            json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
            let http = routes_of(&live, Protocol::Http);
            assert_eq!(http[0]["name"], "mirror");
            assert_eq!(http[0]["route"], http[1]["route"], "at {weight}");
            assert_eq!(
                shown_route(&http[0], &stable, &canary),
                Some(mirror_route()),
                "at {weight}"
            );
            assert_eq!(canary_weight(&live, &all), Some(weight));
        }
        // A mirror route that sends elsewhere is not weir's.
        let mut edited = routes_of(&live, Protocol::Http)[0].clone();
        edited["route"][0]["destination"]["host"] = json!("other");
        assert_eq!(shown_route(&edited, &stable, &canary), None);
    }

    #[test]
    fn managed_routes_go_above_the_weighted_route_in_precedence_order_and_read_back() {
        let object = vs(
            json!({"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 90},
            {"destination": {"host": "web-canary"}, "weight": 10}]}]}),
        );
        let spec = service(json!({"name": "web"}));
        let managed = vec!["header".to_owned(), "mirror".to_owned()];
        let found =
            splits_beside(&object, &spec, &host_pick(), &managed).unwrap_or_else(|e| panic!("{e}"));
        let (stable, canary) =
            managed_destinations(&object, &found).unwrap_or_else(|| panic!("destinations"));
        assert_eq!(canary, json!({"host": "web-canary"}));
        // The mirror first: it still goes below the header route, which precedes it.
        let mut live = object.clone();
        // Served as the weighted route serves them (at its 10%), as Argo Rollouts does.
        let mirror = managed_route_value("mirror", &mirror_route(), &stable, &canary, 10);
        assert_eq!(
            mirror,
            json!({"name": "mirror",
                "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/"}, "headers": {"x-b": {"regex": "b.*"}}}],
                "route": [{"destination": {"host": "web-stable"}, "weight": 90},
                    {"destination": {"host": "web-canary"}, "weight": 10}],
                "mirror": {"host": "web-canary"}, "mirrorPercentage": {"value": 35}})
        );
        let patch = put_route_patch(&live, "mirror", mirror, &managed);
        json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
        let header = managed_route_value("header", &header_route(), &stable, &canary, 0);
        let patch = put_route_patch(&live, "header", header, &managed);
        json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = routes_of(&live, Protocol::Http)
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["header", "mirror", "primary"]);
        let http = routes_of(&live, Protocol::Http);
        assert_eq!(
            http[0]["route"],
            json!([{"destination": {"host": "web-canary"}, "weight": 100}])
        );
        assert_eq!(
            shown_route(&http[0], &stable, &canary),
            Some(header_route())
        );
        assert_eq!(
            shown_route(&http[1], &stable, &canary),
            Some(mirror_route())
        );
        // The weighted route is still found without a name: managed routes are not counted.
        let again =
            splits_beside(&live, &spec, &host_pick(), &managed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again[0].route, 2);
        assert_eq!(canary_weight(&live, &again), Some(10));
        // Replaced in place; an edited route reads as not weir's.
        let mut edited = live.clone();
        edited["spec"]["http"][0]["timeout"] = json!("1s");
        assert_eq!(
            shown_route(&routes_of(&edited, Protocol::Http)[0], &stable, &canary),
            None
        );
        let header = managed_route_value("header", &header_route(), &stable, &canary, 0);
        let patch = put_route_patch(&edited, "header", header, &managed);
        json_patch::patch(&mut edited, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(edited, live);
        // Removed by name, and only once.
        let patch = remove_route_patch(&live, "header").unwrap_or_else(|| panic!("a patch"));
        json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
        let patch = remove_route_patch(&live, "mirror").unwrap_or_else(|| panic!("a patch"));
        json_patch::patch(&mut live, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live, object);
        assert!(remove_route_patch(&live, "mirror").is_none());
    }

    #[test]
    fn subset_level_managed_routes_send_to_the_canary_subset() {
        let object = vs(json!({"http": [{"route": [
            {"destination": {"host": "web", "subset": "stable", "port": {"number": 80}}, "weight": 100},
            {"destination": {"host": "web", "subset": "canary", "port": {"number": 80}}}]}]}));
        let found = splits_beside(
            &object,
            &service(json!({"name": "web"})),
            &subset_pick(),
            &["header".to_owned()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (stable, canary) =
            managed_destinations(&object, &found).unwrap_or_else(|| panic!("destinations"));
        let value = managed_route_value("header", &header_route(), &stable, &canary, 0);
        assert_eq!(
            value["route"][0]["destination"],
            json!({"host": "web", "subset": "canary", "port": {"number": 80}})
        );
        // A concurrent change to the route the insert shifts fails the patch.
        let patch = put_route_patch(&object, "header", value, &["header".to_owned()]);
        let mut changed = object.clone();
        changed["spec"]["http"][0]["route"][0]["weight"] = json!(50);
        assert!(json_patch::patch(&mut changed, &patch).is_err());
    }
}
