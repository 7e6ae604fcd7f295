//! The Istio CRDs weir uses (VirtualService, DestinationRule of `networking.istio.io`), from
//! typed definitions, for clusters without Istio (the local control plane). A real cluster
//! installs Istio's own CRDs instead.
//!
//! The types model what weir reads and writes (routes, destinations, weights, subsets and
//! their labels), so the API server validates weir's writes: a weight is an integer from 0
//! to 100, a port a number. Every object also keeps the fields it does not model
//! (`x-kubernetes-preserve-unknown-fields`), so a real Istio manifest (retries, timeouts,
//! fault injection, traffic policies) is stored as written. Served as Istio serves them:
//! v1alpha3, v1beta1 (the version Argo Rollouts documents and weir reads) and v1, all with
//! the same schema.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::schema::{keep_unknown_fields, make_installable};

/// What a type does not model, kept.
pub type Other = BTreeMap<String, Value>;

/// Where traffic goes: a host (a Service, short or fully qualified), a subset of a
/// DestinationRule, a port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295_u32))]
    pub number: Option<u32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// One destination of a route and its share of the route's traffic, in percent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// An HTTP route: its name, its matches (kept as written) and its destinations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// The `match` of a TLS route: port and SNI hosts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct TlsMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_hosts: Option<Vec<String>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<TlsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// The `match` of a TCP route: its port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct TcpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<TcpMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// A subset of a DestinationRule: its name and the pod labels it selects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: Other,
}

/// One module per served version, each the same schema.
macro_rules! served {
    ($module:ident, $version:literal) => {
        pub mod $module {
            use super::*;
            use kube::CustomResource;

            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
            #[kube(
                group = "networking.istio.io",
                version = $version,
                kind = "VirtualService",
                namespaced,
                shortname = "vs",
                category = "istio-io",
                category = "networking-istio-io"
            )]
            #[serde(rename_all = "camelCase")]
            #[schemars(transform = keep_unknown_fields)]
            pub struct VirtualServiceSpec {
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub hosts: Option<Vec<String>>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub gateways: Option<Vec<String>>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub http: Option<Vec<HttpRoute>>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub tls: Option<Vec<TlsRoute>>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub tcp: Option<Vec<TcpRoute>>,
                #[serde(flatten)]
                #[schemars(skip)]
                pub other: Other,
            }

            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
            #[kube(
                group = "networking.istio.io",
                version = $version,
                kind = "DestinationRule",
                namespaced,
                shortname = "dr",
                category = "istio-io",
                category = "networking-istio-io"
            )]
            #[serde(rename_all = "camelCase")]
            #[schemars(transform = keep_unknown_fields)]
            pub struct DestinationRuleSpec {
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub host: Option<String>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub subsets: Option<Vec<Subset>>,
                #[serde(flatten)]
                #[schemars(skip)]
                pub other: Other,
            }
        }
    };
}

served!(v1alpha3, "v1alpha3");
served!(v1beta1, "v1beta1");
served!(v1, "v1");

/// The version stored; all serve the same schema, so no conversion is needed.
const STORED: &str = "v1beta1";

pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    let merge = |crds: Vec<CustomResourceDefinition>| {
        kube::core::crd::merge_crds(crds, STORED)
            .map_err(|e| serde::ser::Error::custom(format!("merging Istio CRD versions: {e}")))
    };
    let virtual_service = merge(vec![
        v1alpha3::VirtualService::crd(),
        v1beta1::VirtualService::crd(),
        v1::VirtualService::crd(),
    ])?;
    let destination_rule = merge(vec![
        v1alpha3::DestinationRule::crd(),
        v1beta1::DestinationRule::crd(),
        v1::DestinationRule::crd(),
    ])?;
    [virtual_service, destination_rule]
        .into_iter()
        .map(|crd| {
            let mut value = serde_json::to_value(crd)?;
            make_installable(&mut value);
            serde_json::from_value(value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::istio;

    #[test]
    fn both_kinds_are_served_at_the_version_weir_reads() {
        let crds = crds().unwrap_or_else(|e| panic!("CRDs: {e}"));
        let kinds: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
        assert_eq!(kinds, ["VirtualService", "DestinationRule"]);
        for crd in &crds {
            assert_eq!(crd.spec.group, istio::GROUP);
            let mut served: Vec<_> = crd
                .spec
                .versions
                .iter()
                .filter(|v| v.served)
                .map(|v| v.name.as_str())
                .collect();
            served.sort_unstable();
            assert_eq!(served, ["v1", "v1alpha3", "v1beta1"]);
            let stored: Vec<_> = crd
                .spec
                .versions
                .iter()
                .filter(|v| v.storage)
                .map(|v| v.name.as_str())
                .collect();
            assert_eq!(stored, [istio::VERSION]);
        }
        assert_eq!(
            istio::virtual_service_resource().plural,
            crds[0].spec.names.plural
        );
        assert_eq!(
            istio::destination_rule_resource().plural,
            crds[1].spec.names.plural
        );
    }

    #[test]
    fn weights_are_integers_and_unknown_fields_are_kept() {
        let crds = crds().unwrap_or_else(|e| panic!("CRDs: {e}"));
        let schema = serde_json::to_value(&crds[0].spec.versions[0].schema)
            .unwrap_or_else(|e| panic!("{e}"));
        let http = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["http"]["items"];
        assert_eq!(http["x-kubernetes-preserve-unknown-fields"], true);
        let weight = &http["properties"]["route"]["items"]["properties"]["weight"];
        assert_eq!(weight["type"], "integer");
        assert_eq!(weight["maximum"], 100.0);
        // A manifest with fields weir does not model reads back whole.
        let manifest = serde_json::json!({"hosts": ["web"], "http": [{"name": "primary",
            "retries": {"attempts": 3},
            "route": [{"destination": {"host": "web", "subset": "stable"}, "weight": 100,
                "headers": {"request": {"set": {"x": "y"}}}}]}]});
        let spec: v1beta1::VirtualServiceSpec =
            serde_json::from_value(manifest.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_value(&spec).unwrap_or_default(), manifest);
    }
}
