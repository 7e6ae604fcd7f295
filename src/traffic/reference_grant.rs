//! Gateway API's ReferenceGrant: a Rollout may set the weights of a route (HTTPRoute or
//! GRPCRoute) in another namespace only when that namespace says so, with the semantics
//! Gateway API gives its own cross-namespace references. Everything in a Rollout may come
//! from a hostile tenant.

use crate::api::contract::GROUP as ROLLOUT_GROUP;
use gateway_api::apis::standard::referencegrants::ReferenceGrantSpec;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};

pub const ROLLOUT_KIND: &str = "Rollout";
pub const ROUTE_GROUP: &str = "gateway.networking.k8s.io";

/// Whether any of `grants` (the ReferenceGrants of the route's namespace) lets Rollouts of
/// `from_namespace` refer to the route `kind` `route`: one grant must name both sides, `from`
/// {weir.dev, Rollout, the namespace} and `to` {gateway.networking.k8s.io, the route's kind}
/// with no name (every route of the kind) or this route's. Entries of a list are OR-ed, as
/// Gateway API says.
pub fn grants(
    grants: &[ReferenceGrantSpec],
    from_namespace: &str,
    kind: &str,
    route: &str,
) -> bool {
    grants.iter().any(|grant| {
        let from = grant.from.iter().any(|f| {
            f.group == ROLLOUT_GROUP && f.kind == ROLLOUT_KIND && f.namespace == from_namespace
        });
        let to = grant.to.iter().any(|t| {
            t.group == ROUTE_GROUP
                && t.kind == kind
                && t.name.as_deref().is_none_or(|name| name == route)
        });
        from && to
    })
}

/// ReferenceGrant as v1beta1: every Gateway API release since v0.6 serves it (v1.5 added v1
/// beside it), so weir reads what any cluster has. The spec is the same in both versions.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: ROUTE_GROUP.into(),
        version: "v1beta1".into(),
        api_version: format!("{ROUTE_GROUP}/v1beta1"),
        kind: "ReferenceGrant".into(),
        plural: "referencegrants".into(),
    }
}

/// The ReferenceGrants of `namespace`. A grant whose spec does not parse grants nothing; a
/// cluster without the ReferenceGrant CRD has none.
pub async fn list(
    client: &Client,
    namespace: &str,
) -> Result<Vec<ReferenceGrantSpec>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource());
    let listed = match api.list(&ListParams::default()).await {
        Ok(listed) => listed,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    Ok(listed
        .items
        .into_iter()
        .filter_map(|grant| serde_json::from_value(grant.data.get("spec")?.clone()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(from: serde_json::Value, to: serde_json::Value) -> ReferenceGrantSpec {
        serde_json::from_value(json!({"from": from, "to": to})).expect("a grant")
    }

    fn rollouts_from(namespace: &str) -> serde_json::Value {
        json!({"group": "weir.dev", "kind": "Rollout", "namespace": namespace})
    }

    fn routes(name: Option<&str>) -> serde_json::Value {
        match name {
            Some(name) => {
                json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name})
            }
            None => json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}),
        }
    }

    #[test]
    fn no_grant_grants_nothing() {
        assert!(!grants(&[], "shop", "HTTPRoute", "web"));
    }

    #[test]
    fn a_grant_for_every_route_or_for_this_one_allows_it() {
        let every = grant(json!([rollouts_from("shop")]), json!([routes(None)]));
        let this = grant(json!([rollouts_from("shop")]), json!([routes(Some("web"))]));
        assert!(grants(&[every], "shop", "HTTPRoute", "web"));
        assert!(grants(&[this], "shop", "HTTPRoute", "web"));
    }

    #[test]
    fn a_grant_for_another_route_does_not() {
        let other = grant(json!([rollouts_from("shop")]), json!([routes(Some("api"))]));
        assert!(!grants(&[other], "shop", "HTTPRoute", "web"));
    }

    #[test]
    fn a_grant_for_another_namespace_does_not() {
        let other = grant(json!([rollouts_from("blog")]), json!([routes(None)]));
        assert!(!grants(&[other], "shop", "HTTPRoute", "web"));
    }

    #[test]
    fn each_side_must_name_the_right_group_and_kind() {
        let wrong_from = [
            json!({"group": "argoproj.io", "kind": "Rollout", "namespace": "shop"}),
            json!({"group": "weir.dev", "kind": "AnalysisRun", "namespace": "shop"}),
            json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}),
            json!({"group": "", "kind": "Rollout", "namespace": "shop"}),
            json!({"group": "Weir.dev", "kind": "rollout", "namespace": "shop"}),
        ];
        for from in wrong_from {
            let spec = grant(json!([from.clone()]), json!([routes(None)]));
            assert!(!grants(&[spec], "shop", "HTTPRoute", "web"), "from {from}");
        }
        let wrong_to = [
            json!({"group": "", "kind": "Service"}),
            json!({"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}),
            json!({"group": "weir.dev", "kind": "HTTPRoute"}),
            json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": ""}),
        ];
        for to in wrong_to {
            let spec = grant(json!([rollouts_from("shop")]), json!([to.clone()]));
            assert!(!grants(&[spec], "shop", "HTTPRoute", "web"), "to {to}");
        }
    }

    #[test]
    fn every_combination_of_one_from_and_one_to() {
        let froms = [
            (rollouts_from("shop"), true),
            (rollouts_from("blog"), false),
            (
                json!({"group": "weir.dev", "kind": "GitSync", "namespace": "shop"}),
                false,
            ),
            (
                json!({"group": "argoproj.io", "kind": "Rollout", "namespace": "shop"}),
                false,
            ),
        ];
        let tos = [
            (routes(None), true),
            (routes(Some("web")), true),
            (routes(Some("web-2")), false),
            (
                json!({"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}),
                false,
            ),
            (
                json!({"group": "", "kind": "HTTPRoute", "name": "web"}),
                false,
            ),
        ];
        for (from, from_ok) in &froms {
            for (to, to_ok) in &tos {
                let spec = grant(json!([from]), json!([to]));
                assert_eq!(
                    grants(&[spec], "shop", "HTTPRoute", "web"),
                    *from_ok && *to_ok,
                    "from {from} to {to}"
                );
            }
        }
    }

    #[test]
    fn the_grant_must_name_the_routes_own_kind() {
        let http = grant(json!([rollouts_from("shop")]), json!([routes(None)]));
        let grpc = grant(
            json!([rollouts_from("shop")]),
            json!([{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "web"}]),
        );
        assert!(!grants(
            std::slice::from_ref(&http),
            "shop",
            "GRPCRoute",
            "web"
        ));
        assert!(grants(
            std::slice::from_ref(&grpc),
            "shop",
            "GRPCRoute",
            "web"
        ));
        assert!(!grants(
            std::slice::from_ref(&grpc),
            "shop",
            "HTTPRoute",
            "web"
        ));
        assert!(!grants(&[grpc], "shop", "GRPCRoute", "api"));
        assert!(grants(&[http], "shop", "HTTPRoute", "api"));
    }

    #[test]
    fn both_sides_must_be_in_one_grant() {
        // A grant for shop's Rollouts to Services and one for blog's Rollouts to routes do
        // not add up to shop's Rollouts reaching routes.
        let services = grant(
            json!([rollouts_from("shop")]),
            json!([{"group": "", "kind": "Service"}]),
        );
        let blog = grant(json!([rollouts_from("blog")]), json!([routes(None)]));
        assert!(!grants(
            &[services.clone(), blog.clone()],
            "shop",
            "HTTPRoute",
            "web"
        ));
        // Within one grant, entries are alternatives.
        let either = grant(
            json!([rollouts_from("blog"), rollouts_from("shop")]),
            json!([{"group": "", "kind": "Service"}, routes(Some("web"))]),
        );
        assert!(grants(
            &[services, blog, either],
            "shop",
            "HTTPRoute",
            "web"
        ));
    }

    #[test]
    fn the_crates_type_reads_a_v1beta1_grant_as_users_write_it() {
        let written = json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "rollouts-from-shop", "namespace": "edge"},
            "spec": {"from": [rollouts_from("shop")], "to": [routes(None)]}});
        let object: DynamicObject = serde_json::from_value(written).expect("an object");
        let spec: ReferenceGrantSpec =
            serde_json::from_value(object.data["spec"].clone()).expect("a spec");
        assert!(grants(&[spec], "shop", "HTTPRoute", "web"));
    }
}
