//! SMI: the canary's share is a TrafficSplit (`split.smi-spec.io`) on the root Service, with
//! the stableService and canaryService as weighted backends. weir creates it (named
//! `trafficSplitName`, else the Rollout's name), owns it (owner reference to the Rollout,
//! field manager `weir-rollout`, server-side apply) and deletes it when the Rollout goes.
//! The versions Argo Rollouts supports (v1alpha1, v1alpha2, v1alpha3) are all spoken: weir
//! writes the one the cluster serves (its preferred one, when it serves several).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroup, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::router::{Router, RouterError};
use crate::api::Rollout;
use crate::api::contract::{ROLLOUT_LABEL, ROLLOUT_MANAGER};

const KIND: &str = "TrafficSplit";
pub const GROUP: &str = "split.smi-spec.io";
/// The versions weir writes, newest first.
pub const VERSIONS: [&str; 3] = ["v1alpha3", "v1alpha2", "v1alpha1"];

/// The TrafficSplit kind at `version`.
pub fn api_resource(version: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: version.into(),
        api_version: format!("{GROUP}/{version}"),
        kind: KIND.into(),
        plural: "trafficsplits".into(),
    }
}

/// Which version to speak: the group's preferred version when weir speaks it, else the
/// newest served one weir speaks; None when the cluster serves none of them.
pub fn choose_version(group: &APIGroup) -> Option<&'static str> {
    let served = |v: &str| group.versions.iter().any(|s| s.version == v);
    let preferred = group.preferred_version.as_ref().map(|p| p.version.as_str());
    VERSIONS
        .into_iter()
        .find(|v| Some(*v) == preferred && served(v))
        .or_else(|| VERSIONS.into_iter().find(|v| served(v)))
}

/// The TrafficSplit's spec: the root Service, stable `100 - weight`, canary `weight`. In
/// v1alpha1 a weight is a Quantity (written as its string form), in later versions an integer.
pub fn spec(version: &str, root: &str, stable: &str, canary: &str, weight: i32) -> Value {
    let value = |w: i32| {
        if version == "v1alpha1" {
            json!(w.to_string())
        } else {
            json!(w)
        }
    };
    json!({
        "service": root,
        "backends": [
            {"service": stable, "weight": value(100 - weight)},
            {"service": canary, "weight": value(weight)},
        ]
    })
}

/// A backend weight as any version writes it: an integer, or a Quantity (`"5"`, `"500m"`).
pub fn backend_weight(value: &Value) -> Option<f64> {
    if let Some(n) = value.as_f64() {
        return Some(n);
    }
    let text = value.as_str()?.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(milli) => (milli, 0.001),
        None => (text, 1.0),
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// The canary's share in percent of a TrafficSplit spec with both backends; None when either
/// is missing or unreadable.
pub fn canary_share(spec: &Value, stable: &str, canary: &str) -> Option<i32> {
    let backends = spec["backends"].as_array()?;
    let weight = |service: &str| {
        backends
            .iter()
            .find(|b| b["service"].as_str() == Some(service))
            .and_then(|b| backend_weight(&b["weight"]))
    };
    let (s, c) = (weight(stable)?, weight(canary)?);
    if !(s >= 0.0 && c >= 0.0) {
        return None;
    }
    if s + c == 0.0 {
        return Some(0);
    }
    Some((100.0 * c / (s + c)).round() as i32)
}

/// The SMI router a Rollout asks for with `trafficRouting.smi`, once it names both Services;
/// None otherwise. The root Service defaults to the stableService, the TrafficSplit's name to
/// the Rollout's.
pub fn for_rollout(client: &Client, rollout: &Rollout, namespace: &str) -> Option<SmiRouter> {
    let canary = rollout.spec.strategy.canary.as_ref()?;
    let smi = canary.traffic_routing.as_ref()?.smi.as_ref()?;
    let stable = canary.stable_service.as_deref()?;
    let rollout_name = rollout.name_any();
    Some(SmiRouter::new(
        client.clone(),
        namespace,
        smi.traffic_split_name.as_deref().unwrap_or(&rollout_name),
        smi.root_service.as_deref().unwrap_or(stable),
        stable,
        canary.canary_service.as_deref()?,
        &rollout_name,
        rollout.controller_owner_ref(&()),
    ))
}

pub struct SmiRouter {
    client: Client,
    namespace: String,
    name: String,
    root: String,
    stable: String,
    canary: String,
    rollout: String,
    owner: Option<OwnerReference>,
}

impl SmiRouter {
    /// The TrafficSplit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        root: &str,
        stable: &str,
        canary: &str,
        rollout: &str,
        owner: Option<OwnerReference>,
    ) -> Self {
        SmiRouter {
            client,
            namespace: namespace.into(),
            name: name.into(),
            root: root.into(),
            stable: stable.into(),
            canary: canary.into(),
            rollout: rollout.into(),
            owner,
        }
    }

    fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn api_error(&self) -> impl FnOnce(kube::Error) -> RouterError {
        let name = self.qualified();
        move |source| RouterError::Api {
            kind: KIND,
            name,
            source: Box::new(source),
        }
    }

    /// The TrafficSplit kind at the version the cluster serves (one discovery read, of the
    /// API groups).
    async fn api(&self) -> Result<(Api<DynamicObject>, &'static str), RouterError> {
        let groups = self
            .client
            .list_api_groups()
            .await
            .map_err(self.api_error())?;
        let group =
            groups
                .groups
                .iter()
                .find(|g| g.name == GROUP)
                .ok_or(RouterError::KindMissing {
                    kind: KIND,
                    group: GROUP,
                })?;
        let version = choose_version(group).ok_or(RouterError::KindMissing {
            kind: KIND,
            group: GROUP,
        })?;
        Ok((
            Api::namespaced_with(self.client.clone(), &self.namespace, &api_resource(version)),
            version,
        ))
    }

    /// The TrafficSplit, if there is one, refused when it is not weir's for this Rollout.
    async fn get(&self, api: &Api<DynamicObject>) -> Result<Option<DynamicObject>, RouterError> {
        let found = api.get_opt(&self.name).await.map_err(self.api_error())?;
        if let (Some(split), Some(owner)) = (&found, &self.owner) {
            let ours = split
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner.uid && o.controller == Some(true));
            if !ours {
                return Err(RouterError::Misconfigured(format!(
                    "TrafficSplit {} exists and is not the one weir made for Rollout {}: weir creates and owns it; delete it, or name another in spec.strategy.canary.trafficRouting.smi.trafficSplitName",
                    self.qualified(),
                    self.rollout
                )));
            }
        }
        Ok(found)
    }

    fn share(&self, split: &DynamicObject) -> Option<i32> {
        canary_share(&split.data["spec"], &self.stable, &self.canary)
    }
}

impl Router for SmiRouter {
    /// None until weir has created the TrafficSplit.
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        let (api, _) = self.api().await?;
        Ok(self.get(&api).await?.and_then(|split| self.share(&split)))
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        let (api, version) = self.api().await?;
        self.get(&api).await?;
        let body = json!({
            "apiVersion": format!("{GROUP}/{version}"),
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {ROLLOUT_LABEL: self.rollout},
                "ownerReferences": self.owner.iter().collect::<Vec<_>>(),
            },
            "spec": spec(version, &self.root, &self.stable, &self.canary, weight),
        });
        let applied = api
            .patch(
                &self.name,
                &PatchParams::apply(ROLLOUT_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(self.api_error())?;
        // Verified on what the API server stored, not assumed from what was sent.
        let found = self.share(&applied);
        if found != Some(weight) || applied.data["spec"]["service"].as_str() != Some(&self.root) {
            return Err(RouterError::NotVerified {
                kind: KIND,
                name: self.qualified(),
                wanted: weight,
                found,
            });
        }
        Ok(weight)
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        let (api, _) = self.api().await?;
        if self.get(&api).await?.is_none() {
            return Ok(());
        }
        match api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(self.api_error()(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(versions: &[&str], preferred: &str) -> APIGroup {
        serde_json::from_value(json!({
            "name": GROUP,
            "versions": versions.iter().map(|v| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v})).collect::<Vec<_>>(),
            "preferredVersion": {"groupVersion": format!("{GROUP}/{preferred}"), "version": preferred},
        }))
        .expect("an APIGroup")
    }

    #[test]
    fn the_served_version_is_chosen_preferring_the_clusters_choice() {
        assert_eq!(
            choose_version(&group(&["v1alpha2"], "v1alpha2")),
            Some("v1alpha2")
        );
        assert_eq!(
            choose_version(&group(&["v1alpha1", "v1alpha2"], "v1alpha1")),
            Some("v1alpha1"),
            "the cluster's preferred version"
        );
        assert_eq!(
            choose_version(&group(&["v1alpha4", "v1alpha3", "v1alpha1"], "v1alpha4")),
            Some("v1alpha3"),
            "the newest weir speaks when it does not speak the preferred one"
        );
        assert_eq!(choose_version(&group(&["v1alpha4"], "v1alpha4")), None);
    }

    #[test]
    fn the_spec_splits_the_root_service_between_stable_and_canary() {
        assert_eq!(
            spec("v1alpha3", "web", "web-stable", "web-canary", 20),
            json!({"service": "web", "backends": [
                {"service": "web-stable", "weight": 80},
                {"service": "web-canary", "weight": 20}
            ]})
        );
        assert_eq!(
            spec("v1alpha1", "web", "web-stable", "web-canary", 20),
            json!({"service": "web", "backends": [
                {"service": "web-stable", "weight": "80"},
                {"service": "web-canary", "weight": "20"}
            ]}),
            "v1alpha1 weights are Quantities"
        );
        for version in VERSIONS {
            for weight in [0, 1, 50, 99, 100] {
                let written = spec(version, "root", "s", "c", weight);
                assert_eq!(
                    canary_share(&written, "s", "c"),
                    Some(weight),
                    "{version} {weight}"
                );
            }
        }
    }

    #[test]
    fn shares_read_from_any_weight_form() {
        let split = |s: Value, c: Value| json!({"backends": [{"service": "s", "weight": s}, {"service": "c", "weight": c}]});
        assert_eq!(canary_share(&split(json!(3), json!(1)), "s", "c"), Some(25));
        assert_eq!(
            canary_share(&split(json!("750m"), json!("250m")), "s", "c"),
            Some(25)
        );
        assert_eq!(canary_share(&split(json!(0), json!(0)), "s", "c"), Some(0));
        assert_eq!(canary_share(&split(json!("x"), json!(1)), "s", "c"), None);
        assert_eq!(canary_share(&split(json!(-1), json!(1)), "s", "c"), None);
        assert_eq!(canary_share(&split(json!(1), json!(1)), "s", "other"), None);
    }
}
