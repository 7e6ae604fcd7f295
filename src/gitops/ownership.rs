//! Where Git and the rollout engine meet inside one object. Pure.
//!
//! An HTTPRoute that a Rollout splits traffic on usually comes from Git, but its stable and
//! canary `weight`s belong to the rollout engine (field manager `weir-rollout`). Gateway
//! API's `rules` and `backendRefs` are atomic lists, so server-side apply cannot share them
//! field by field: whoever applies the list sets every weight in it. weir-sync therefore
//! applies Git's route with those two weights replaced by the live ones, guarded by the live
//! resourceVersion, so that it never moves traffic and never races a weight change.
//!
//! Service selectors need nothing of the kind: a selector is a map, weir-rollout owns only
//! its `rollouts-pod-template-hash` key, and Git never names that key.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// An HTTPRoute by namespace and name.
pub type RouteKey = (String, String);

/// For each route some Rollout sets weights on, the Services whose weights it sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutRoutes(BTreeMap<RouteKey, BTreeSet<String>>);

impl RolloutRoutes {
    /// Notes the route and Services of a Rollout (a live one or one from Git, as JSON), whose
    /// namespace is `namespace`. Rollouts without a Gateway API route add nothing.
    pub fn add(&mut self, rollout: &Value, namespace: &str) {
        let canary = &rollout["spec"]["strategy"]["canary"];
        let routing = &canary["trafficRouting"]["gatewayAPI"];
        let Some(route) = routing["httpRoute"].as_str() else {
            return;
        };
        let route_namespace = routing["namespace"].as_str().unwrap_or(namespace);
        let services = self
            .0
            .entry((route_namespace.to_owned(), route.to_owned()))
            .or_default();
        for field in ["stableService", "canaryService"] {
            if let Some(service) = canary[field].as_str() {
                services.insert(service.to_owned());
            }
        }
    }

    /// The Services whose weights a Rollout sets on this route, if any Rollout does.
    pub fn services(&self, namespace: &str, route: &str) -> Option<&BTreeSet<String>> {
        self.0
            .get(&(namespace.to_owned(), route.to_owned()))
            .filter(|services| !services.is_empty())
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
    let Some(rules) = git["spec"]["rules"].as_array_mut() else {
        return;
    };
    for (r, rule) in rules.iter_mut().enumerate() {
        let live_backends = live["spec"]["rules"][r]["backendRefs"].as_array();
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
