//! The SMI TrafficSplit CRD, for clusters without a service mesh that installs it (the local
//! control plane), so the API server checks what weir's SMI router writes. Typed here from
//! the SMI spec's `split.smi-spec.io/v1alpha3` (the newest version Argo Rollouts speaks); a
//! real cluster gets TrafficSplit from its mesh (Linkerd's SMI extension, Open Service Mesh).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::schema::make_installable;

/// Splits the traffic sent to a root Service between backend Services by weight.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficSplit",
    namespaced,
    shortname = "ts",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The root Service clients call.
    pub service: String,
    /// The Services the root Service's traffic goes to, by weight.
    pub backends: Vec<TrafficSplitBackend>,
    /// Route groups the split applies to (HTTPRouteGroup); all traffic when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSplitMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    pub service: String,
    #[schemars(range(min = 0))]
    pub weight: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    let mut value = serde_json::to_value(TrafficSplit::crd())?;
    make_installable(&mut value);
    let mut crd: CustomResourceDefinition = serde_json::from_value(value)?;
    crd.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("app.kubernetes.io/managed-by".into(), "weir-sim".into());
    Ok(vec![crd])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::smi;

    #[test]
    fn the_crd_serves_a_version_weirs_router_speaks_and_takes_what_it_writes() {
        let crds = crds().expect("CRDs");
        assert_eq!(crds.len(), 1);
        let crd = &crds[0];
        assert_eq!(crd.spec.group, smi::GROUP);
        assert_eq!(crd.spec.names.plural, smi::api_resource("v1alpha3").plural);
        let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(versions, ["v1alpha3"]);
        assert!(smi::VERSIONS.contains(&versions[0]));
        let written = smi::spec(versions[0], "web", "web-stable", "web-canary", 30);
        let spec: TrafficSplitSpec = serde_json::from_value(written).expect("the typed spec");
        assert_eq!(
            spec.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
            [70, 30]
        );
    }
}
