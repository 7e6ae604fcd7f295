//! Gateway API: the canary weight lives on the `backendRefs` of an HTTPRoute that sends to
//! both the stable and the canary Service. weir changes only those two `weight` fields, with
//! a JSON patch that first tests each backend's name (so a concurrent edit that reorders the
//! rules fails instead of setting the wrong backend), as field manager `weir-rollout`.

use crate::api::contract::ROLLOUT_MANAGER;
use gateway_api::apis::standard::httproutes::HttpRoute;
use json_patch::{AddOperation, Patch as JsonPatch, PatchOperation, TestOperation};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use super::router::{Router, RouterError};

const KIND: &str = "HTTPRoute";
const GROUP: &str = "gateway.networking.k8s.io";

/// Whether a 404 is about an object (the API server names it) rather than about its kind:
/// for a kind the cluster does not have, the answer names nothing.
pub(super) fn names_an_object(status: &kube::core::Status) -> bool {
    status.details.as_ref().is_some_and(|d| !d.name.is_empty())
}

pub struct HttpRouteRouter {
    api: Api<HttpRoute>,
    namespace: String,
    name: String,
    stable: String,
    canary: String,
}

/// Where a rule sends to both Services: (rule index, stable backend index, canary backend index).
pub type Split = (usize, usize, usize);

/// The rules that split between the two Services. A route with none cannot carry a canary.
pub fn splits(route: &HttpRoute, stable: &str, canary: &str) -> Result<Vec<Split>, RouterError> {
    let is_service = |kind: &Option<String>, group: &Option<String>| {
        kind.as_deref().unwrap_or("Service") == "Service"
            && group.as_deref().unwrap_or("").is_empty()
    };
    let mut found = Vec::new();
    for (r, rule) in route.spec.rules.iter().flatten().enumerate() {
        let backends = rule.backend_refs.as_deref().unwrap_or_default();
        let position = |service: &str| {
            backends
                .iter()
                .position(|b| b.name == service && is_service(&b.kind, &b.group))
        };
        if let (Some(s), Some(c)) = (position(stable), position(canary)) {
            found.push((r, s, c));
        }
    }
    if found.is_empty() {
        let name = route.metadata.name.clone().unwrap_or_default();
        return Err(RouterError::Misconfigured(format!(
            "HTTPRoute {name} has no rule with backendRefs to both Service {stable} (stableService) and Service {canary} (canaryService); add both to the rule that should split traffic"
        )));
    }
    Ok(found)
}

/// The canary's share in percent on the route: the highest over its splitting rules (so a
/// rule left behind is never hidden), or None when weir has not set the weights yet.
pub fn canary_weight(route: &HttpRoute, splits: &[Split]) -> Option<i32> {
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    let mut highest: Option<i32> = None;
    for &(r, s, c) in splits {
        let backends = rules.get(r)?.backend_refs.as_deref()?;
        // Gateway API's default weight is 1.
        let (stable, canary) = (
            backends.get(s)?.weight.unwrap_or(1),
            backends.get(c)?.weight.unwrap_or(1),
        );
        let share = if stable + canary == 0 {
            0
        } else {
            (100 * canary + (stable + canary) / 2) / (stable + canary)
        };
        highest = Some(highest.map_or(share, |h| h.max(share)));
    }
    highest
}

/// The JSON patch that sets canary `weight` and stable `100 - weight` on every split.
pub fn weight_patch(splits: &[Split], stable: &str, canary: &str, weight: i32) -> JsonPatch {
    let mut operations = Vec::new();
    for &(r, s, c) in splits {
        for (index, service, value) in [(s, stable, 100 - weight), (c, canary, weight)] {
            let at = format!("/spec/rules/{r}/backendRefs/{index}");
            operations.push(PatchOperation::Test(TestOperation {
                path: format!("{at}/name").parse().unwrap_or_default(),
                value: Value::from(service),
            }));
            operations.push(PatchOperation::Add(AddOperation {
                path: format!("{at}/weight").parse().unwrap_or_default(),
                value: Value::from(value),
            }));
        }
    }
    JsonPatch(operations)
}

impl HttpRouteRouter {
    pub fn new(client: Client, namespace: &str, name: &str, stable: &str, canary: &str) -> Self {
        HttpRouteRouter {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            stable: stable.into(),
            canary: canary.into(),
        }
    }

    async fn get(&self) -> Result<HttpRoute, RouterError> {
        match self.api.get(&self.name).await {
            Ok(route) => Ok(route),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(if names_an_object(&status) {
                    RouterError::NotFound {
                        kind: KIND,
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                    }
                } else {
                    RouterError::KindMissing {
                        kind: KIND,
                        group: GROUP,
                    }
                })
            }
            Err(source) => Err(RouterError::Api {
                kind: KIND,
                name: self.name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

impl Router for HttpRouteRouter {
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        let route = self.get().await?;
        let found = splits(&route, &self.stable, &self.canary)?;
        Ok(canary_weight(&route, &found))
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        let route = self.get().await?;
        let found = splits(&route, &self.stable, &self.canary)?;
        let patch = weight_patch(&found, &self.stable, &self.canary, weight);
        let params = PatchParams {
            field_manager: Some(ROLLOUT_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = self
            .api
            .patch(&self.name, &params, &Patch::<()>::Json(patch))
            .await
            .map_err(|source| RouterError::Api {
                kind: KIND,
                name: self.name.clone(),
                source: Box::new(source),
            })?;
        // Verified on what the API server stored, not assumed from what was sent.
        let found = canary_weight(&patched, &splits(&patched, &self.stable, &self.canary)?);
        if found != Some(weight) {
            return Err(RouterError::NotVerified {
                kind: KIND,
                name: self.name.clone(),
                wanted: weight,
                found,
            });
        }
        Ok(weight)
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
            kind: KIND,
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
}
