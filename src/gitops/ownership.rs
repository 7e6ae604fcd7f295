//! Where Git and the rollout engine meet inside one object. Pure.
//!
//! An HTTPRoute (or GRPCRoute, the same shape) that a Rollout splits traffic on usually comes from Git, but its stable and
//! canary `weight`s belong to the rollout engine (field manager `weir-rollout`). Gateway
//! API's `rules` and `backendRefs` are atomic lists, so server-side apply cannot share them
//! field by field: whoever applies the list sets every weight in it. weir-sync therefore
//! applies Git's route with those two weights replaced by the live ones, guarded by the live
//! resourceVersion, so that it never moves traffic and never races a weight change.
//!
//! Istio is the same: a VirtualService's `http`, `tls` and `tcp` routes and their `route`
//! destinations, and a DestinationRule's `subsets`, are lists without keys, so Git's copy
//! is applied with the live weights of the destinations a Rollout sets (named `host:<Service>`
//! host-level, `subset:<name>` subset-level) and the live `rollouts-pod-template-hash` label
//! of the subsets it labels.
//!
//! An ALB Ingress's action annotation (`<prefix>/actions.<rootService>`) is a key of a map,
//! which server-side apply shares key by key: Git takes it only when its copy of the Ingress
//! writes the key too (a team may commit it all to the stable), so that key is applied with
//! its live value.
//!
//! Service selectors need nothing of the kind: a selector is a map, weir-rollout owns only
//! its `rollouts-pod-template-hash` key, and Git never names that key.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::api::contract::alb_action_annotation;
use crate::api::rollout::GatewayApiRouting;
use crate::traffic::istio::is_written_managed_route;

/// A route object by kind, namespace and name.
pub type RouteKey = (String, String, String);

/// For each route object some Rollout sets weights (or subset labels) on, what in it the
/// Rollout owns: Services for an HTTPRoute, `host:`/`subset:` destinations for a
/// VirtualService, `subset:` names for a DestinationRule, `annotation:` keys for an Ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutRoutes(BTreeMap<RouteKey, BTreeSet<String>>);

/// The kinds whose fields a Rollout may own.
pub const ROUTE_KINDS: [&str; 5] = [
    "HTTPRoute",
    "GRPCRoute",
    "VirtualService",
    "DestinationRule",
    "Ingress",
];

/// How an experiment's Service weir added to a route is noted among a route's Services.
const EXPERIMENT_PREFIX: &str = "experiment:";

/// The key of Gateway API's configuration under `trafficRouting.plugins`.
const GATEWAY_PLUGIN: &str = "argoproj-labs/gatewayAPI";

impl RolloutRoutes {
    /// Notes the route and Services of a Rollout (a live one or one from Git, as JSON), whose
    /// namespace is `namespace`. Rollouts without a Gateway API route add nothing.
    pub fn add(&mut self, rollout: &Value, namespace: &str) {
        let canary = &rollout["spec"]["strategy"]["canary"];
        self.add_istio(canary, namespace);
        self.add_alb(canary, namespace);
        let routing = &canary["trafficRouting"];
        let mut services: Vec<String> = ["stableService", "canaryService"]
            .iter()
            .filter_map(|field| canary[field].as_str().map(str::to_owned))
            .collect();
        // The Services of a running experiment weir added beside them (a live Rollout's
        // record): kept on the route, as Git does not have them.
        let experiments = rollout["status"]["experimentServices"].as_array();
        services.extend(
            experiments
                .into_iter()
                .flatten()
                .filter_map(|name| Some(format!("{EXPERIMENT_PREFIX}{}", name.as_str()?))),
        );
        // weir's own field, or the argoproj-labs plugin's configuration: the same shape.
        for written in [&routing["gatewayAPI"], &routing["plugins"][GATEWAY_PLUGIN]] {
            let Ok(gateway) = GatewayApiRouting::deserialize(written) else {
                continue;
            };
            let route_namespace = gateway.namespace.as_deref().unwrap_or(namespace);
            for route in gateway.routes() {
                self.0
                    .entry((
                        route.kind.kind().to_owned(),
                        route_namespace.to_owned(),
                        route.name.to_owned(),
                    ))
                    .or_default()
                    .extend(services.iter().cloned());
            }
        }
    }

    /// The action annotation on each ALB Ingress, in the Rollout's namespace.
    fn add_alb(&mut self, canary: &Value, namespace: &str) {
        let alb = &canary["trafficRouting"]["alb"];
        let Some(service) = alb["rootService"]
            .as_str()
            .or_else(|| canary["stableService"].as_str())
        else {
            return;
        };
        let key = alb_action_annotation(alb["annotationPrefix"].as_str(), service);
        let ingresses = std::iter::once(&alb["ingress"])
            .chain(alb["ingresses"].as_array().into_iter().flatten())
            .filter_map(Value::as_str);
        for name in ingresses {
            self.0
                .entry(("Ingress".into(), namespace.into(), name.into()))
                .or_default()
                .insert(format!("annotation:{key}"));
        }
    }

    /// Istio's VirtualServices and DestinationRule, in the Rollout's namespace.
    fn add_istio(&mut self, canary: &Value, namespace: &str) {
        let istio = &canary["trafficRouting"]["istio"];
        if !istio.is_object() {
            return;
        }
        let rule = &istio["destinationRule"];
        let destinations: Vec<String> = if rule.is_object() {
            ["stableSubsetName", "canarySubsetName"]
                .iter()
                .filter_map(|field| rule[field].as_str())
                .map(|subset| format!("subset:{subset}"))
                .collect()
        } else {
            ["stableService", "canaryService"]
                .iter()
                .filter_map(|field| canary[field].as_str())
                .map(|service| format!("host:{service}"))
                .collect()
        };
        let services = std::iter::once(&istio["virtualService"])
            .chain(istio["virtualServices"].as_array().into_iter().flatten());
        for service in services {
            if let Some(name) = service["name"].as_str() {
                self.0
                    .entry(("VirtualService".into(), namespace.into(), name.into()))
                    .or_default()
                    .extend(destinations.iter().cloned());
            }
        }
        if let Some(name) = rule["name"].as_str() {
            self.0
                .entry(("DestinationRule".into(), namespace.into(), name.into()))
                .or_default()
                .extend(destinations.iter().cloned());
        }
    }

    /// The Services whose weights a Rollout sets on this HTTPRoute, if any Rollout does.
    pub fn services(&self, namespace: &str, route: &str) -> Option<&BTreeSet<String>> {
        self.owned("HTTPRoute", namespace, route)
    }

    /// What a Rollout owns inside the object of `kind`, if any Rollout does.
    pub fn owned(&self, kind: &str, namespace: &str, name: &str) -> Option<&BTreeSet<String>> {
        self.0
            .get(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
            .filter(|owned| !owned.is_empty())
    }
}

fn is_service(backend: &Value) -> bool {
    backend["kind"].as_str().unwrap_or("Service") == "Service"
        && backend["group"].as_str().unwrap_or("").is_empty()
}

/// Git's route with the weight of each backend in `services` taken from the live route: the
/// same rule, the backend of the same name. A backend the live route does not have yet keeps
/// Git's weight (the route is being created, or Git added a rule). Everything else is Git's.
pub fn keep_live_weights(git: &mut Value, live: &Value, services: &BTreeSet<String>) {
    match git["kind"].as_str() {
        Some("VirtualService") => return keep_live_destination_weights(git, live, services),
        Some("DestinationRule") => return keep_live_subset_labels(git, live, services),
        Some("Ingress") => return keep_live_annotations(git, live, services),
        _ => {}
    }
    let Some(rules) = git["spec"]["rules"].as_array_mut() else {
        return;
    };
    // weir's managed-route rules are not in Git: set aside, so Git's rules meet their live
    // selves by index, then kept where they are (`rules` is atomic: applying Git's list
    // would remove them, and the canary's header or mirror route with them).
    let git_names: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let live_rules = live["spec"]["rules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    type Indexed<'a> = Vec<(usize, &'a Value)>;
    let (managed, unmanaged): (Indexed, Indexed) = live_rules
        .iter()
        .enumerate()
        .partition(|(_, rule)| is_managed_route_rule(rule, &git_names, services));
    for (r, rule) in rules.iter_mut().enumerate() {
        let live_backends = unmanaged
            .get(r)
            .and_then(|(_, l)| l["backendRefs"].as_array());
        let Some(backends) = rule["backendRefs"].as_array_mut() else {
            continue;
        };
        for backend in backends.iter_mut() {
            let Some(name) = backend["name"].as_str() else {
                continue;
            };
            if !is_service(backend) || !services.contains(name) {
                continue;
            }
            let Some(live_backend) = live_backends
                .into_iter()
                .flatten()
                .find(|b| b["name"].as_str() == Some(name) && is_service(b))
            else {
                continue;
            };
            let Some(fields) = backend.as_object_mut() else {
                continue;
            };
            match live_backend.get("weight") {
                Some(weight) if !weight.is_null() => {
                    fields.insert("weight".into(), weight.clone());
                }
                _ => {
                    fields.remove("weight");
                }
            }
        }
        // An experiment's Services weir added to the live rule stay, with their shares.
        let kept: Vec<Value> = live_backends
            .into_iter()
            .flatten()
            .filter(|live| {
                let name = live["name"].as_str().unwrap_or_default();
                is_service(live)
                    && services.contains(&format!("{EXPERIMENT_PREFIX}{name}"))
                    && !backends.iter().any(|b| b["name"].as_str() == Some(name))
            })
            .cloned()
            .collect();
        backends.extend(kept);
    }
    for (at, rule) in managed {
        rules.insert(at.min(rules.len()), rule.clone());
    }
}

/// Whether a live HTTPRoute rule is one weir added for a managed route: named, a name Git's
/// rules do not have, and spelt as weir writes it: a header route's (`setHeaderRoute`) sends
/// to one Service a Rollout owns alone (`group: ""`, `kind: Service`, `weight: 1`); a
/// mirror route's (`setMirrorRoute`) sends to two it owns and ends with a `RequestMirror`
/// filter to one of them (`group: ""`, `kind: Service`).
fn is_managed_route_rule(
    rule: &Value,
    git_names: &BTreeSet<String>,
    services: &BTreeSet<String>,
) -> bool {
    let named = rule["name"]
        .as_str()
        .is_some_and(|n| !git_names.contains(n));
    let owned = |backend: &Value| {
        backend["name"]
            .as_str()
            .is_some_and(|n| services.contains(n))
    };
    let backends = rule["backendRefs"].as_array().map(Vec::as_slice);
    let mirror = rule["filters"]
        .as_array()
        .and_then(|filters| filters.last())
        .filter(|f| f["type"] == "RequestMirror")
        .map(|f| &f["requestMirror"]["backendRef"]);
    named
        && match backends {
            Some([only]) => {
                only["group"] == ""
                    && only["kind"] == "Service"
                    && only["weight"] == 1
                    && owned(only)
            }
            Some([first, second]) => {
                owned(first)
                    && owned(second)
                    && mirror
                        .is_some_and(|to| to["group"] == "" && to["kind"] == "Service" && owned(to))
            }
            _ => false,
        }
}

fn owned_destination(destination: &Value, owned: &BTreeSet<String>) -> bool {
    let host = destination["host"].as_str().map(|h| format!("host:{h}"));
    let short = destination["host"]
        .as_str()
        .and_then(|h| h.split('.').next())
        .map(|h| format!("host:{h}"));
    let subset = destination["subset"]
        .as_str()
        .map(|s| format!("subset:{s}"));
    [host, short, subset]
        .into_iter()
        .flatten()
        .any(|key| owned.contains(&key))
}

fn set_or_remove(fields: &mut serde_json::Map<String, Value>, key: &str, live: Option<&Value>) {
    match live {
        Some(value) if !value.is_null() => {
            fields.insert(key.into(), value.clone());
        }
        _ => {
            fields.remove(key);
        }
    }
}

/// A VirtualService from Git with the live weight of every destination a Rollout owns: the
/// same route (by protocol and index), the destination with the same host and subset.
/// weir's managed HTTP routes (`setHeaderRoute`, `setMirrorRoute`) are not in Git: set
/// aside, so Git's routes meet their live selves by index, then kept where they are (`http`
/// is atomic: applying Git's list would remove them mid-canary).
fn keep_live_destination_weights(git: &mut Value, live: &Value, owned: &BTreeSet<String>) {
    for protocol in ["http", "tls", "tcp"] {
        // `pointer_mut`, not indexing: indexing would add `protocol: null` to Git's object.
        let Some(routes) = git
            .pointer_mut(&format!("/spec/{protocol}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let git_names: BTreeSet<String> = routes
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        let live_routes = live["spec"][protocol]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        type Indexed<'a> = Vec<(usize, &'a Value)>;
        let (managed, unmanaged): (Indexed, Indexed) =
            live_routes.iter().enumerate().partition(|(_, route)| {
                protocol == "http" && is_managed_route(route, &git_names, owned)
            });
        for (r, route) in routes.iter_mut().enumerate() {
            let live_destinations = unmanaged.get(r).and_then(|(_, l)| l["route"].as_array());
            let Some(destinations) = route["route"].as_array_mut() else {
                continue;
            };
            for destination in destinations.iter_mut() {
                if !owned_destination(&destination["destination"], owned) {
                    continue;
                }
                let Some(live_destination) = live_destinations.into_iter().flatten().find(|d| {
                    d["destination"]["host"] == destination["destination"]["host"]
                        && d["destination"]["subset"] == destination["destination"]["subset"]
                }) else {
                    continue;
                };
                if let Some(fields) = destination.as_object_mut() {
                    set_or_remove(fields, "weight", live_destination.get("weight"));
                }
            }
        }
        for (at, route) in managed {
            routes.insert(at.min(routes.len()), route.clone());
        }
    }
}

/// Whether a live VirtualService HTTP route is one weir added for a managed route: named, a
/// name Git's routes do not have, spelt as weir writes it, and sending only to destinations
/// a Rollout owns.
fn is_managed_route(route: &Value, git_names: &BTreeSet<String>, owned: &BTreeSet<String>) -> bool {
    let named = route["name"]
        .as_str()
        .is_some_and(|n| !git_names.contains(n));
    let destinations = route["route"].as_array().into_iter().flatten();
    named
        && is_written_managed_route(route)
        && destinations
            .into_iter()
            .all(|d| owned_destination(&d["destination"], owned))
}

/// An Ingress from Git with the live value of each annotation a Rollout owns, where Git
/// writes that annotation and the live Ingress has it. An annotation Git does not write is
/// not Git's, and stays out of its apply.
fn keep_live_annotations(git: &mut Value, live: &Value, owned: &BTreeSet<String>) {
    let Some(annotations) = git["metadata"]["annotations"].as_object_mut() else {
        return;
    };
    for key in owned.iter().filter_map(|o| o.strip_prefix("annotation:")) {
        if let (Some(value), Some(live_value)) = (
            annotations.get_mut(key),
            live["metadata"]["annotations"].get(key),
        ) && !live_value.is_null()
        {
            *value = live_value.clone();
        }
    }
}

/// A DestinationRule from Git with the live hash label of every subset a Rollout labels.
fn keep_live_subset_labels(git: &mut Value, live: &Value, owned: &BTreeSet<String>) {
    let label = crate::api::contract::POD_TEMPLATE_HASH_LABEL;
    let Some(subsets) = git["spec"]["subsets"].as_array_mut() else {
        return;
    };
    for subset in subsets.iter_mut() {
        let Some(name) = subset["name"].as_str().map(str::to_owned) else {
            continue;
        };
        if !owned.contains(&format!("subset:{name}")) {
            continue;
        }
        let live_label = live["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(name.as_str()))
            .map(|s| s["labels"][label].clone())
            .filter(|value| !value.is_null());
        let Some(fields) = subset.as_object_mut() else {
            continue;
        };
        match live_label {
            Some(value) => {
                let labels = fields
                    .entry("labels")
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert(label.into(), value);
                }
            }
            None => {
                if let Some(labels) = fields.get_mut("labels").and_then(Value::as_object_mut) {
                    labels.remove(label);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn rollout(route: Option<&str>, route_namespace: Option<&str>) -> Value {
        let mut routing = json!({});
        if let Some(route) = route {
            routing = json!({"gatewayAPI": {"httpRoute": route}});
            if let Some(namespace) = route_namespace {
                routing["gatewayAPI"]["namespace"] = json!(namespace);
            }
        }
        json!({"spec": {"strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": routing}}}})
    }

    fn services(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_rollout_claims_the_weights_of_its_two_services_on_its_route() {
        let mut routes = RolloutRoutes::default();
        routes.add(&rollout(Some("web"), None), "shop");
        routes.add(&rollout(Some("edge"), Some("gateways")), "shop");
        routes.add(&rollout(None, None), "shop");
        routes.add(&json!({"spec": {}}), "shop");
        assert_eq!(
            routes.services("shop", "web"),
            Some(&services(&["web-canary", "web-stable"]))
        );
        assert_eq!(
            routes.services("gateways", "edge"),
            Some(&services(&["web-canary", "web-stable"]))
        );
        assert_eq!(routes.services("shop", "edge"), None);
        assert_eq!(routes.services("other", "web"), None);
    }

    #[test]
    fn an_experiments_services_on_a_live_route_stay_when_git_is_applied() {
        let mut routes = RolloutRoutes::default();
        let live_rollout = json!({"spec": {"strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}}}}},
            "status": {"experimentServices": ["web-1-baseline"]}});
        routes.add(&live_rollout, "shop");
        let owned = routes
            .owned("HTTPRoute", "shop", "web")
            .cloned()
            .unwrap_or_default();
        let mut git = json!({"kind": "HTTPRoute", "spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80},
            {"name": "from-git", "port": 80}]}]}});
        let live = json!({"kind": "HTTPRoute", "spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 85},
            {"name": "web-canary", "port": 80, "weight": 10},
            {"name": "someone-elses", "port": 80, "weight": 1},
            {"name": "web-1-baseline", "port": 8080, "weight": 5}]}]}});
        keep_live_weights(&mut git, &live, &owned);
        assert_eq!(
            git["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "web-stable", "port": 80, "weight": 85},
                {"name": "web-canary", "port": 80, "weight": 10},
                {"name": "from-git", "port": 80},
                {"name": "web-1-baseline", "port": 8080, "weight": 5}
            ]),
            "weir's experiment Service kept with its share; a backend Git dropped stays dropped"
        );
    }

    #[test]
    fn the_gateway_plugin_form_claims_every_route_it_names() {
        let mut routes = RolloutRoutes::default();
        let plugin = json!({"spec": {"strategy": {"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {
                "httpRoutes": [{"name": "web"}, {"name": "mesh", "useHeaderRoutes": true}],
                "grpcRoute": "rpc", "namespace": "edge"}}}}}}});
        routes.add(&plugin, "shop");
        let both = Some(services(&["web-canary", "web-stable"]));
        for (kind, name) in [
            ("HTTPRoute", "web"),
            ("HTTPRoute", "mesh"),
            ("GRPCRoute", "rpc"),
        ] {
            assert_eq!(
                routes.owned(kind, "edge", name),
                both.as_ref(),
                "{kind} {name}"
            );
        }
        assert_eq!(routes.owned("HTTPRoute", "edge", "rpc"), None);
        assert_eq!(routes.owned("GRPCRoute", "shop", "rpc"), None);
        // A GRPCRoute from Git keeps its live weights as an HTTPRoute does.
        let mut git = json!({"kind": "GRPCRoute", "spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "weight": 100}, {"name": "web-canary", "weight": 0}]}]}});
        let live = json!({"kind": "GRPCRoute", "spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "weight": 60}, {"name": "web-canary", "weight": 40}]}]}});
        keep_live_weights(&mut git, &live, &services(&["web-canary", "web-stable"]));
        assert_eq!(git, live);
    }

    #[test]
    fn live_weights_replace_gits_for_the_rollouts_backends_only() {
        let mut git = json!({"spec": {"hostnames": ["shop.example"], "rules": [
            {"matches": [{"path": {"value": "/v2"}}], "backendRefs": [
                {"name": "web-stable", "port": 80},
                {"name": "web-canary", "port": 80, "weight": 50},
                {"name": "other", "port": 80, "weight": 7}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 1}]}]}});
        let live = json!({"spec": {"hostnames": ["old.example"], "rules": [
            {"backendRefs": [
                {"name": "web-canary", "port": 80, "weight": 20},
                {"name": "web-stable", "port": 80, "weight": 80},
                {"name": "other", "port": 80, "weight": 3}]},
            {"backendRefs": [{"name": "web-stable", "port": 80}]}]}});
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(
            git,
            json!({"spec": {"hostnames": ["shop.example"], "rules": [
                {"matches": [{"path": {"value": "/v2"}}], "backendRefs": [
                    {"name": "web-stable", "port": 80, "weight": 80},
                    {"name": "web-canary", "port": 80, "weight": 20},
                    {"name": "other", "port": 80, "weight": 7}]},
                {"backendRefs": [{"name": "web-stable", "port": 80}]}]}}),
            "matched by rule and name; other backends and fields are Git's"
        );
    }

    #[test]
    fn weirs_header_route_rules_survive_gits_rules_and_do_not_shift_the_weights() {
        let header = json!({"name": "canary-header",
            "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                         "headers": [{"name": "x-canary", "type": "Exact", "value": "yes"}]}],
            "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 1}]});
        let team = json!({"name": "team", "backendRefs": [{"name": "web-canary", "port": 80}]});
        let mut git = json!({"spec": {"rules": [
            team,
            {"backendRefs": [{"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}]}});
        let live = json!({"spec": {"rules": [
            team,
            header,
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                             {"name": "web-canary", "port": 80, "weight": 0}]}]}});
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(
            git, live,
            "the header rule kept in place, the weights the live ones"
        );
        // A rule Git names is Git's, even spelt as weir writes its own.
        let live = json!({"spec": {"rules": [header, live["spec"]["rules"][2]]}});
        let mut git = live.clone();
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(git, live, "not added a second time");
    }

    #[test]
    fn weirs_mirror_route_rules_survive_gits_rules_with_their_live_weights() {
        let split = |stable: i32, canary: i32| {
            json!([{"name": "web-stable", "port": 80, "weight": stable},
                   {"name": "web-canary", "port": 80, "weight": canary}])
        };
        let mirror = json!({"name": "canary-mirror",
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"}],
            "filters": [{"type": "RequestMirror", "requestMirror": {"percent": 35,
                "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 80}}}],
            "backendRefs": split(80, 20)});
        let mut git = json!({"spec": {"rules": [{"backendRefs": split(100, 0)}]}});
        let live = json!({"spec": {"rules": [mirror, {"backendRefs": split(80, 20)}]}});
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(
            git, live,
            "the mirror rule kept in place, the weights the live ones"
        );
        // A team's mirror to a Service no Rollout owns is Git's to remove.
        let mut theirs = mirror.clone();
        theirs["filters"][0]["requestMirror"]["backendRef"]["name"] = json!("shadow");
        let live = json!({"spec": {"rules": [theirs, {"backendRefs": split(80, 20)}]}});
        let mut git = json!({"spec": {"rules": [{"backendRefs": split(100, 0)}]}});
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(git["spec"]["rules"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_backend_the_live_route_lacks_keeps_gits_weight() {
        let mut git = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "web-stable", "weight": 100}, {"name": "web-canary", "weight": 0}]},
            {"backendRefs": [{"name": "web-canary", "weight": 0}]}]}});
        let before = git.clone();
        keep_live_weights(
            &mut git,
            &json!({}),
            &services(&["web-stable", "web-canary"]),
        );
        assert_eq!(git, before, "a route being created is Git's");
        let live = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "weight": 0},
            {"name": "web-canary", "kind": "ServiceImport", "weight": 100}]}]}});
        keep_live_weights(&mut git, &live, &services(&["web-stable", "web-canary"]));
        assert_eq!(git["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
        assert_eq!(
            git["spec"]["rules"][0]["backendRefs"][1]["weight"], 0,
            "a backend of another kind is not the canary Service"
        );
        assert_eq!(git["spec"]["rules"][1], before["spec"]["rules"][1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever Git and the live route say, the applied route carries the live weight of
        /// every rollout backend that exists live, and Git's everything else.
        #[test]
        fn the_rollouts_weights_are_never_moved_by_git(
            git_weights in prop::collection::vec(prop::collection::vec(prop::option::of(0i64..1000), 0..4), 0..4),
            live_weights in prop::collection::vec(prop::collection::vec(prop::option::of(0i64..1000), 0..4), 0..4),
        ) {
            let names = ["web-stable", "web-canary", "other", "web-stable"];
            let route = |weights: &Vec<Vec<Option<i64>>>| json!({"spec": {"rules": weights.iter().map(|rule| {
                json!({"backendRefs": rule.iter().enumerate().map(|(i, w)| {
                    let mut b = json!({"name": names[i], "port": 80});
                    if let Some(w) = w { b["weight"] = json!(w); }
                    b
                }).collect::<Vec<_>>()})
            }).collect::<Vec<_>>()}});
            let live = route(&live_weights);
            let original = route(&git_weights);
            let mut applied = original.clone();
            keep_live_weights(&mut applied, &live, &services(&["web-stable", "web-canary"]));
            for (r, rule) in git_weights.iter().enumerate() {
                for i in 0..rule.len() {
                    let got = &applied["spec"]["rules"][r]["backendRefs"][i];
                    let name = names[i];
                    // The first live backend of that name in the same rule.
                    let live_backend = live_weights.get(r).and_then(|l| (0..l.len()).find(|j| names[*j] == name));
                    let expected = match (name, live_backend) {
                        ("other", _) | (_, None) => original["spec"]["rules"][r]["backendRefs"][i].get("weight").cloned(),
                        (_, Some(j)) => live_weights[r][j].map(|w| json!(w)),
                    };
                    prop_assert_eq!(got.get("weight").cloned(), expected);
                    prop_assert_eq!(&got["name"], &original["spec"]["rules"][r]["backendRefs"][i]["name"]);
                }
            }
        }
    }
}

#[cfg(test)]
mod istio_tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn owned(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn istio_rollouts_own_destinations_and_subset_labels() {
        let mut routes = RolloutRoutes::default();
        routes.add(
            &json!({"spec": {"strategy": {"canary": {"stableService": "s", "canaryService": "c",
                "trafficRouting": {"istio": {"virtualServices": [{"name": "a"}, {"name": "b"}]}}}}}}),
            "shop",
        );
        routes.add(
            &json!({"spec": {"strategy": {"canary": {"trafficRouting": {"istio": {
                "virtualService": {"name": "cart"},
                "destinationRule": {"name": "cart", "stableSubsetName": "v1", "canarySubsetName": "v2"}}}}}}}),
            "shop",
        );
        assert_eq!(
            routes.owned("VirtualService", "shop", "b"),
            Some(&owned(&["host:c", "host:s"]))
        );
        assert_eq!(
            routes.owned("DestinationRule", "shop", "cart"),
            Some(&owned(&["subset:v1", "subset:v2"]))
        );
        assert_eq!(routes.owned("VirtualService", "other", "a"), None);
        assert_eq!(routes.services("shop", "a"), None, "not an HTTPRoute");
    }

    #[test]
    fn git_virtual_services_keep_the_live_weights_of_owned_destinations() {
        let mut git = json!({"kind": "VirtualService", "spec": {"http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": 0},
            {"destination": {"host": "other"}, "weight": 5}]}]}});
        let live = json!({"kind": "VirtualService", "spec": {"http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 60},
            {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": 40},
            {"destination": {"host": "other"}, "weight": 9}]}]}});
        keep_live_weights(
            &mut git,
            &live,
            &owned(&["host:web-stable", "host:web-canary"]),
        );
        let weights: Vec<_> = (0..3)
            .map(|d| git["spec"]["http"][0]["route"][d]["weight"].clone())
            .collect();
        assert_eq!(
            weights,
            [json!(60), json!(40), json!(5)],
            "Git keeps what no Rollout owns"
        );
    }

    fn istio_header_route(name: &str) -> Value {
        json!({"name": name, "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
            "route": [{"destination": {"host": "web-canary"}, "weight": 100}]})
    }

    fn istio_mirror_route(name: &str, weight: i64) -> Value {
        json!({"name": name, "match": [{"method": {"exact": "POST"}}],
            "route": [{"destination": {"host": "web-stable"}, "weight": 100 - weight},
                      {"destination": {"host": "web-canary"}, "weight": weight}],
            "mirror": {"host": "web-canary"}, "mirrorPercentage": {"value": 20}})
    }

    fn istio_weighted_route(name: &str, canary: i64) -> Value {
        json!({"name": name, "route": [
            {"destination": {"host": "web-stable"}, "weight": 100 - canary},
            {"destination": {"host": "web-canary"}, "weight": canary}]})
    }

    #[test]
    fn weirs_managed_virtual_service_routes_survive_git_and_do_not_shift_the_weights() {
        let owned = owned(&["host:web-stable", "host:web-canary"]);
        let team = json!({"name": "team", "route": [{"destination": {"host": "web-canary"}}]});
        let mut git = json!({"kind": "VirtualService", "spec": {"http": [
            team, istio_weighted_route("primary", 0)]}});
        let live = json!({"kind": "VirtualService", "spec": {"http": [
            istio_header_route("canary-header"), team, istio_mirror_route("canary-mirror", 30),
            istio_weighted_route("primary", 30)]}});
        keep_live_weights(&mut git, &live, &owned);
        assert_eq!(
            git, live,
            "weir's routes kept in their places, the weights the live ones"
        );
        // A route Git names is Git's, even spelt as weir writes its own.
        let mut git = json!({"kind": "VirtualService", "spec": {"http": [
            istio_header_route("canary-header"), istio_weighted_route("primary", 0)]}});
        let live = json!({"kind": "VirtualService", "spec": {"http": [
            istio_header_route("canary-header"), istio_weighted_route("primary", 30)]}});
        keep_live_weights(&mut git, &live, &owned);
        assert_eq!(git, live, "not added a second time");
        // A route not spelt as weir writes it, or to a destination no Rollout owns, is not
        // weir's (the team's to keep in Git): Git's list leaves it out.
        let mut edited = istio_header_route("canary-header");
        edited["timeout"] = json!("5s");
        let mut elsewhere = istio_header_route("other-header");
        elsewhere["route"][0]["destination"]["host"] = json!("other");
        for foreign in [edited, elsewhere] {
            let mut git = json!({"kind": "VirtualService", "spec": {"http": [
                istio_weighted_route("primary", 0)]}});
            let live = json!({"kind": "VirtualService", "spec": {"http": [
                foreign, istio_weighted_route("primary", 30)]}});
            keep_live_weights(&mut git, &live, &owned);
            let names: Vec<_> = git["spec"]["http"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["name"].clone())
                .collect();
            assert_eq!(
                names,
                [json!("primary")],
                "not weir's: Git's list leaves it out"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Wherever weir's managed routes sit among the live routes, Git's routes take the
        /// live weights of their own live selves, and weir's routes stay where they are.
        #[test]
        fn managed_routes_never_move_gits_weights(
            canaries in proptest::collection::vec(0i64..=100, 1..4),
            inserted in proptest::collection::vec((0usize..6, any::<bool>()), 0..3),
        ) {
            let owned = owned(&["host:web-stable", "host:web-canary"]);
            let mut live_routes: Vec<Value> = canaries
                .iter()
                .enumerate()
                .map(|(i, c)| istio_weighted_route(&format!("r{i}"), *c))
                .collect();
            for (n, (at, mirror)) in inserted.iter().enumerate() {
                let route = if *mirror {
                    istio_mirror_route(&format!("m{n}"), 7)
                } else {
                    istio_header_route(&format!("h{n}"))
                };
                live_routes.insert((*at).min(live_routes.len()), route);
            }
            let live = json!({"kind": "VirtualService", "spec": {"http": live_routes}});
            let mut git = json!({"kind": "VirtualService", "spec": {"http": canaries
                .iter()
                .enumerate()
                .map(|(i, _)| istio_weighted_route(&format!("r{i}"), 0))
                .collect::<Vec<_>>()}});
            keep_live_weights(&mut git, &live, &owned);
            prop_assert_eq!(git, live);
        }
    }

    #[test]
    fn git_destination_rules_keep_the_live_hash_labels() {
        let mut git = json!({"kind": "DestinationRule", "spec": {"host": "web", "subsets": [
            {"name": "stable", "labels": {"app": "web"}}, {"name": "canary"}, {"name": "debug", "labels": {"app": "web"}}]}});
        let live = json!({"kind": "DestinationRule", "spec": {"host": "web", "subsets": [
            {"name": "canary", "labels": {"rollouts-pod-template-hash": "bbb"}},
            {"name": "stable", "labels": {"app": "old", "rollouts-pod-template-hash": "aaa"}},
            {"name": "debug", "labels": {"rollouts-pod-template-hash": "zzz"}}]}});
        keep_live_weights(&mut git, &live, &owned(&["subset:stable", "subset:canary"]));
        assert_eq!(
            git["spec"]["subsets"][0]["labels"],
            json!({"app": "web", "rollouts-pod-template-hash": "aaa"})
        );
        assert_eq!(
            git["spec"]["subsets"][1]["labels"],
            json!({"rollouts-pod-template-hash": "bbb"})
        );
        assert_eq!(
            git["spec"]["subsets"][2]["labels"],
            json!({"app": "web"}),
            "not owned: Git's"
        );
    }
}

#[cfg(test)]
mod alb_tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const KEY: &str = "alb.ingress.kubernetes.io/actions.web-stable";

    fn alb_rollout(alb: Value) -> Value {
        json!({"spec": {"strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"alb": alb}}}}})
    }

    #[test]
    fn alb_rollouts_own_the_action_annotation_of_each_ingress() {
        let mut routes = RolloutRoutes::default();
        routes.add(
            &alb_rollout(json!({"ingress": "web", "servicePort": 80})),
            "shop",
        );
        routes.add(
            &alb_rollout(json!({"ingresses": ["a", "b"], "servicePort": 80,
                "rootService": "root", "annotationPrefix": "custom.alb.example"})),
            "shop",
        );
        let owned = |keys: &[&str]| -> BTreeSet<String> {
            keys.iter().map(|k| format!("annotation:{k}")).collect()
        };
        assert_eq!(routes.owned("Ingress", "shop", "web"), Some(&owned(&[KEY])));
        assert_eq!(
            routes.owned("Ingress", "shop", "b"),
            Some(&owned(&["custom.alb.example/actions.root"]))
        );
        assert_eq!(routes.owned("Ingress", "other", "web"), None);
        let mut none = RolloutRoutes::default();
        none.add(&json!({"spec": {"strategy": {"canary": {"trafficRouting": {"alb": {"ingress": "web"}}}}}}), "shop");
        assert_eq!(none, RolloutRoutes::default(), "no Service, no action");
    }

    #[test]
    fn git_keeps_the_live_action_only_where_it_writes_the_annotation() {
        let owned: BTreeSet<String> = [format!("annotation:{KEY}")].into();
        let live = json!({"kind": "Ingress", "metadata": {"annotations": {
            KEY: "live action", "team": "old"}}});
        let mut git = json!({"kind": "Ingress", "metadata": {"annotations": {
            KEY: "all to stable", "team": "new"}}, "spec": {"rules": []}});
        keep_live_weights(&mut git, &live, &owned);
        assert_eq!(
            git,
            json!({"kind": "Ingress", "metadata": {"annotations": {
                KEY: "live action", "team": "new"}}, "spec": {"rules": []}})
        );
        let mut silent = json!({"kind": "Ingress", "metadata": {"annotations": {"team": "new"}}});
        let before = silent.clone();
        keep_live_weights(&mut silent, &live, &owned);
        assert_eq!(
            silent, before,
            "an annotation Git does not write stays out of its apply"
        );
        let mut created =
            json!({"kind": "Ingress", "metadata": {"annotations": {KEY: "all to stable"}}});
        let before = created.clone();
        keep_live_weights(&mut created, &json!({}), &owned);
        assert_eq!(created, before, "an Ingress being created is Git's");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever Git and the live Ingress hold, the applied Ingress has the live action
        /// wherever both have it, Git's everywhere else, and no key Git did not write.
        #[test]
        fn git_never_moves_the_action(
            git in prop::collection::btree_map(prop::sample::select(vec![KEY, "other/actions.x", "team"]), "[a-z]{0,4}", 0..3),
            live in prop::collection::btree_map(prop::sample::select(vec![KEY, "other/actions.x", "team"]), "[a-z]{0,4}", 0..3),
        ) {
            let owned: BTreeSet<String> = [format!("annotation:{KEY}")].into();
            let mut applied = json!({"kind": "Ingress", "metadata": {"annotations": git}});
            keep_live_weights(&mut applied, &json!({"metadata": {"annotations": live}}), &owned);
            let applied = applied["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
            prop_assert_eq!(applied.len(), git.len());
            for (key, value) in &git {
                let expected = match live.get(key) {
                    Some(live_value) if *key == KEY => live_value,
                    _ => value,
                };
                prop_assert_eq!(applied.get(*key), Some(&json!(expected)));
            }
        }
    }
}
