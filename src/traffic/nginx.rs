//! NGINX Ingress: the canary's share is a second Ingress beside the stable one, a copy of its
//! rules sent to the canaryService, that ingress-nginx weights by its `canary-weight`
//! annotation. weir creates that canary Ingress (named `<rollout>-<stableIngress>-canary`, as
//! Argo Rollouts names it), owns it (owner reference to the Rollout, field manager
//! `weir-rollout`, server-side apply) and deletes it when the weight returns to 0: after
//! promotion, on abort, and when the Rollout goes. The stable Ingress is only read.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use super::router::{Router, RouterError};
use crate::api::Rollout;
use crate::api::contract::{ROLLOUT_LABEL, ROLLOUT_MANAGER};
use crate::api::rollout::NginxRouting;

const KIND: &str = "Ingress";
/// ingress-nginx's default annotation prefix (its `--annotations-prefix`).
pub const DEFAULT_PREFIX: &str = "nginx.ingress.kubernetes.io";
/// The ingress class annotation of Ingresses older than `ingressClassName`: copied, so the
/// canary Ingress is served by the same controller as the stable one.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// What the canary Ingresses are made of, from the Rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryConfig {
    pub rollout: String,
    pub stable_service: String,
    pub canary_service: String,
    pub prefix: String,
    /// Keys under the prefix (Argo's `additionalIngressAnnotations`).
    pub additional: BTreeMap<String, String>,
    /// Full keys (Argo's `canaryIngressAnnotations`).
    pub annotations: BTreeMap<String, String>,
}

impl CanaryConfig {
    pub fn new(rollout: &str, stable: &str, canary: &str, nginx: &NginxRouting) -> Self {
        CanaryConfig {
            rollout: rollout.into(),
            stable_service: stable.into(),
            canary_service: canary.into(),
            prefix: nginx
                .annotation_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            additional: nginx.additional_ingress_annotations.clone(),
            annotations: nginx.canary_ingress_annotations.clone(),
        }
    }

    pub fn canary_key(&self) -> String {
        format!("{}/canary", self.prefix)
    }

    pub fn weight_key(&self) -> String {
        format!("{}/canary-weight", self.prefix)
    }
}

/// The stable Ingresses a Rollout names: `stableIngresses`, or `stableIngress` alone.
pub fn stable_ingresses(nginx: &NginxRouting) -> Vec<String> {
    let mut names: Vec<String> = nginx.stable_ingress.iter().cloned().collect();
    for name in &nginx.stable_ingresses {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The canary Ingress's name: `<rollout>-<stable>-canary`, cut to the 253 characters a name
/// may have (and to end in a letter or digit).
pub fn canary_name(rollout: &str, stable: &str) -> String {
    let mut name = format!("{rollout}-{stable}-canary");
    if name.len() > 253 {
        name.truncate(253);
        while name.ends_with(['-', '.']) {
            name.pop();
        }
    }
    name
}

fn sends_to(backend: &IngressBackend, service: &str) -> bool {
    backend.service.as_ref().is_some_and(|s| s.name == service)
}

fn send_to(backend: &mut IngressBackend, service: &str) {
    if let Some(target) = backend.service.as_mut() {
        target.name = service.to_owned();
    }
}

/// The canary Ingress for `stable` at `weight`: its class, TLS and rules, with only the paths
/// that send to the stableService, sent to the canaryService instead; its annotations are
/// weir's two, `additionalIngressAnnotations` under the prefix, and `canaryIngressAnnotations`
/// as written (NGINX reads no other annotation on a canary Ingress). Refused when no path of
/// the stable Ingress sends to the stableService.
pub fn canary_ingress(
    stable: &Ingress,
    config: &CanaryConfig,
    owner: Option<OwnerReference>,
    weight: i32,
) -> Result<Ingress, RouterError> {
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    let mut spec: IngressSpec = stable.spec.clone().unwrap_or_default();
    let mut found = false;
    // A default backend to the stableService is the canary's too; to another Service it is
    // not the canary's to take.
    match spec.default_backend.as_mut() {
        Some(backend) if sends_to(backend, &config.stable_service) => {
            send_to(backend, &config.canary_service);
            found = true;
        }
        _ => spec.default_backend = None,
    }
    let mut rules = spec.rules.take().unwrap_or_default();
    for rule in &mut rules {
        if let Some(http) = rule.http.as_mut() {
            http.paths
                .retain(|path| sends_to(&path.backend, &config.stable_service));
            for path in &mut http.paths {
                send_to(&mut path.backend, &config.canary_service);
                found = true;
            }
        }
    }
    rules.retain(|rule| rule.http.as_ref().is_some_and(|h| !h.paths.is_empty()));
    if !found {
        return Err(RouterError::Misconfigured(format!(
            "Ingress {stable_name} (spec.strategy.canary.trafficRouting.nginx) has no path whose backend is Service {} (stableService); send a path of it to {}",
            config.stable_service, config.stable_service
        )));
    }
    spec.rules = (!rules.is_empty()).then_some(rules);
    let mut annotations = BTreeMap::new();
    if let Some(class) = stable
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
    {
        annotations.insert(CLASS_ANNOTATION.to_owned(), class.clone());
    }
    for (key, value) in &config.additional {
        annotations.insert(format!("{}/{key}", config.prefix), value.clone());
    }
    annotations.extend(config.annotations.clone());
    annotations.insert(config.canary_key(), "true".into());
    annotations.insert(config.weight_key(), weight.to_string());
    Ok(Ingress {
        metadata: ObjectMeta {
            name: Some(canary_name(&config.rollout, &stable_name)),
            namespace: stable.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                ROLLOUT_LABEL.to_owned(),
                config.rollout.clone(),
            )])),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The weight a canary Ingress carries: its `canary-weight`, when it is a canary at all.
pub fn weight_of(canary: &Ingress, config: &CanaryConfig) -> Option<i32> {
    let annotations = canary.metadata.annotations.as_ref()?;
    if annotations.get(&config.canary_key()).map(String::as_str) != Some("true") {
        return Some(0);
    }
    annotations
        .get(&config.weight_key())?
        .trim()
        .parse::<i32>()
        .ok()
        .map(|w| w.clamp(0, 100))
}

/// Whether weir made this Ingress for the Rollout whose UID is `uid`.
pub fn owned_by(ingress: &Ingress, uid: &str) -> bool {
    ingress
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// The NGINX router a Rollout asks for with `trafficRouting.nginx`, once it names both
/// Services; None otherwise.
pub fn for_rollout(client: &Client, rollout: &Rollout, namespace: &str) -> Option<NginxRouter> {
    let canary = rollout.spec.strategy.canary.as_ref()?;
    let nginx = canary.traffic_routing.as_ref()?.nginx.as_ref()?;
    let config = CanaryConfig::new(
        &rollout.name_any(),
        canary.stable_service.as_deref()?,
        canary.canary_service.as_deref()?,
        nginx,
    );
    Some(NginxRouter::new(
        client.clone(),
        namespace,
        nginx,
        config,
        rollout.controller_owner_ref(&()),
    ))
}

pub struct NginxRouter {
    api: Api<Ingress>,
    namespace: String,
    stable_ingresses: Vec<String>,
    config: CanaryConfig,
    owner: Option<OwnerReference>,
}

impl NginxRouter {
    pub fn new(
        client: Client,
        namespace: &str,
        nginx: &NginxRouting,
        config: CanaryConfig,
        owner: Option<OwnerReference>,
    ) -> Self {
        NginxRouter {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            stable_ingresses: stable_ingresses(nginx),
            config,
            owner,
        }
    }

    /// The canary Ingresses weir makes, one per stable Ingress.
    pub fn canary_names(&self) -> Vec<String> {
        self.stable_ingresses
            .iter()
            .map(|stable| canary_name(&self.config.rollout, stable))
            .collect()
    }

    fn api_error(&self, name: &str) -> impl FnOnce(kube::Error) -> RouterError {
        let name = format!("{}/{name}", self.namespace);
        move |source| RouterError::Api {
            kind: KIND,
            name,
            source: Box::new(source),
        }
    }

    async fn stable(&self, name: &str) -> Result<Ingress, RouterError> {
        self.api
            .get_opt(name)
            .await
            .map_err(self.api_error(name))?
            .ok_or_else(|| RouterError::NotFound {
                kind: KIND,
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })
    }

    /// The canary Ingress beside `stable`, if there is one, refused when it is not weir's.
    async fn canary(&self, stable: &str) -> Result<Option<Ingress>, RouterError> {
        let name = canary_name(&self.config.rollout, stable);
        let found = self
            .api
            .get_opt(&name)
            .await
            .map_err(self.api_error(&name))?;
        match (found, &self.owner) {
            (Some(ingress), Some(owner)) if !owned_by(&ingress, &owner.uid) => {
                Err(RouterError::Misconfigured(format!(
                    "Ingress {}/{name} exists and is not the canary Ingress weir made for Rollout {}: weir creates and owns it; rename or delete that Ingress",
                    self.namespace, self.config.rollout
                )))
            }
            (found, _) => Ok(found),
        }
    }

    /// Deletes every canary Ingress weir made, and verifies they are gone.
    async fn delete_canaries(&self) -> Result<(), RouterError> {
        for stable in &self.stable_ingresses {
            let Some(canary) = self.canary(stable).await? else {
                continue;
            };
            let name = canary.metadata.name.clone().unwrap_or_default();
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(self.api_error(&name)(source)),
            }
            let left = self
                .api
                .get_opt(&name)
                .await
                .map_err(self.api_error(&name))?;
            if left.is_some_and(|i| i.metadata.deletion_timestamp.is_none()) {
                return Err(RouterError::NotVerified {
                    kind: KIND,
                    name: format!("{}/{name}", self.namespace),
                    wanted: 0,
                    found: None,
                });
            }
        }
        Ok(())
    }
}

impl Router for NginxRouter {
    /// The highest weight over the canary Ingresses (so one left behind is never hidden);
    /// 0 when there are none, once every stable Ingress is there.
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        let mut highest = Some(0);
        for stable in &self.stable_ingresses {
            self.stable(stable).await?;
            let weight = match self.canary(stable).await? {
                Some(canary) if canary.metadata.deletion_timestamp.is_none() => {
                    weight_of(&canary, &self.config)
                }
                _ => Some(0),
            };
            highest = match (highest, weight) {
                (Some(h), Some(w)) => Some(h.max(w)),
                _ => None,
            };
        }
        Ok(highest)
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        if weight == 0 {
            self.delete_canaries().await?;
            return Ok(0);
        }
        let params = PatchParams::apply(ROLLOUT_MANAGER).force();
        for name in &self.stable_ingresses {
            let stable = self.stable(name).await?;
            self.canary(name).await?;
            let canary = canary_ingress(&stable, &self.config, self.owner.clone(), weight)?;
            let canary_name = canary.metadata.name.clone().unwrap_or_default();
            let applied = self
                .api
                .patch(&canary_name, &params, &Patch::Apply(&canary))
                .await
                .map_err(self.api_error(&canary_name))?;
            // Verified on what the API server stored, not assumed from what was sent.
            let found = weight_of(&applied, &self.config);
            if found != Some(weight) {
                return Err(RouterError::NotVerified {
                    kind: KIND,
                    name: format!("{}/{canary_name}", self.namespace),
                    wanted: weight,
                    found,
                });
            }
        }
        Ok(weight)
    }

    async fn remove_managed(&self) -> Result<(), RouterError> {
        self.delete_canaries().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stable() -> Ingress {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                "annotations": {"kubernetes.io/ingress.class": "nginx",
                    "nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                        {"path": "/admin", "pathType": "Prefix", "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
                    ]}},
                    {"host": "other.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                    ]}}
                ]
            }
        }))
        .expect("an Ingress")
    }

    fn config(prefix: Option<&str>) -> CanaryConfig {
        let nginx = NginxRouting {
            stable_ingress: Some("web".into()),
            annotation_prefix: prefix.map(Into::into),
            additional_ingress_annotations: BTreeMap::from([(
                "canary-by-header".into(),
                "X-Canary".into(),
            )]),
            canary_ingress_annotations: BTreeMap::from([(
                "example.com/team".into(),
                "shop".into(),
            )]),
            ..NginxRouting::default()
        };
        CanaryConfig::new("web-rollout", "web-stable", "web-canary", &nginx)
    }

    #[test]
    fn the_canary_ingress_copies_the_stable_paths_to_the_canary_service() {
        let owner = OwnerReference {
            api_version: "weir.dev/v1alpha1".into(),
            kind: "Rollout".into(),
            name: "web-rollout".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let canary =
            canary_ingress(&stable(), &config(None), Some(owner), 20).expect("a canary Ingress");
        let value = serde_json::to_value(&canary).expect("json");
        assert_eq!(
            value,
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {
                    "name": "web-rollout-web-canary", "namespace": "shop",
                    "labels": {"weir.dev/rollout": "web-rollout"},
                    "annotations": {
                        "kubernetes.io/ingress.class": "nginx",
                        "nginx.ingress.kubernetes.io/canary": "true",
                        "nginx.ingress.kubernetes.io/canary-weight": "20",
                        "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
                        "example.com/team": "shop"
                    },
                    "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
                        "name": "web-rollout", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}],
                    "rules": [{"host": "web.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}
                    ]}}]
                }
            })
        );
        assert_eq!(weight_of(&canary, &config(None)), Some(20));
    }

    #[test]
    fn the_annotation_prefix_is_honoured_for_weirs_keys_and_the_additional_ones() {
        let config = config(Some("custom.nginx.example"));
        let canary = canary_ingress(&stable(), &config, None, 5).expect("a canary Ingress");
        let annotations = canary.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("custom.nginx.example/canary")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            annotations
                .get("custom.nginx.example/canary-weight")
                .map(String::as_str),
            Some("5")
        );
        assert_eq!(
            annotations
                .get("custom.nginx.example/canary-by-header")
                .map(String::as_str),
            Some("X-Canary")
        );
        assert!(
            !annotations.keys().any(|k| k.starts_with(DEFAULT_PREFIX)),
            "{annotations:?}"
        );
        assert_eq!(weight_of(&canary, &config), Some(5));
    }

    #[test]
    fn weirs_annotations_win_over_user_annotations_of_the_same_key() {
        let mut config = config(None);
        config.annotations.insert(
            "nginx.ingress.kubernetes.io/canary-weight".into(),
            "90".into(),
        );
        let canary = canary_ingress(&stable(), &config, None, 10).expect("a canary Ingress");
        assert_eq!(weight_of(&canary, &config), Some(10));
    }

    #[test]
    fn a_default_backend_to_the_stable_service_moves_too_and_others_are_dropped() {
        let mut ingress = stable();
        let spec = ingress.spec.as_mut().expect("spec");
        spec.rules = None;
        spec.default_backend = Some(
            serde_json::from_value(
                json!({"service": {"name": "web-stable", "port": {"number": 80}}}),
            )
            .expect("backend"),
        );
        let canary = canary_ingress(&ingress, &config(None), None, 50).expect("a canary");
        let spec = canary.spec.expect("spec");
        assert_eq!(spec.rules, None);
        assert_eq!(
            spec.default_backend.and_then(|b| b.service).map(|s| s.name),
            Some("web-canary".into())
        );

        let mut other = stable();
        other.spec.as_mut().expect("spec").default_backend = Some(
            serde_json::from_value(json!({"service": {"name": "other", "port": {"number": 80}}}))
                .expect("backend"),
        );
        let canary = canary_ingress(&other, &config(None), None, 50).expect("a canary");
        assert_eq!(canary.spec.expect("spec").default_backend, None);
    }

    #[test]
    fn an_ingress_without_the_stable_service_is_refused_naming_both() {
        let mut ingress = stable();
        ingress.spec.as_mut().expect("spec").rules = None;
        let message = canary_ingress(&ingress, &config(None), None, 10)
            .expect_err("nothing to copy")
            .to_string();
        assert!(
            message.contains("Ingress web") && message.contains("web-stable (stableService)"),
            "{message}"
        );
    }

    #[test]
    fn weights_read_back_from_the_annotations() {
        let config = config(None);
        let with = |annotations: serde_json::Value| -> Ingress {
            serde_json::from_value(json!({"metadata": {"name": "c", "annotations": annotations}}))
                .expect("an Ingress")
        };
        let canary = "nginx.ingress.kubernetes.io/canary";
        let weight = "nginx.ingress.kubernetes.io/canary-weight";
        assert_eq!(
            weight_of(&with(json!({canary: "true", weight: "35"})), &config),
            Some(35)
        );
        assert_eq!(
            weight_of(&with(json!({canary: "true", weight: " 7 "})), &config),
            Some(7)
        );
        assert_eq!(weight_of(&with(json!({canary: "true"})), &config), None);
        assert_eq!(
            weight_of(&with(json!({canary: "true", weight: "x"})), &config),
            None
        );
        assert_eq!(
            weight_of(&with(json!({canary: "false", weight: "35"})), &config),
            Some(0),
            "not a canary: carries nothing"
        );
    }

    #[test]
    fn canary_names_follow_argo_and_stay_valid() {
        assert_eq!(canary_name("web", "edge"), "web-edge-canary");
        let long = canary_name(&"r".repeat(200), &"s".repeat(100));
        assert_eq!(long.len(), 253);
        assert!(!long.ends_with('-'));
        let both = NginxRouting {
            stable_ingress: Some("a".into()),
            stable_ingresses: vec!["b".into(), "a".into()],
            ..NginxRouting::default()
        };
        assert_eq!(stable_ingresses(&both), ["a", "b"]);
    }

    #[test]
    fn only_the_rollouts_own_canary_is_taken() {
        let mut canary = canary_ingress(&stable(), &config(None), None, 5).expect("canary");
        assert!(!owned_by(&canary, "u-1"));
        canary.metadata.owner_references = Some(vec![OwnerReference {
            uid: "u-1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        assert!(owned_by(&canary, "u-1"));
        assert!(!owned_by(&canary, "u-2"));
    }
}
