//! AWS ALB: the AWS Load Balancer Controller sends an Ingress path whose backend port is named
//! `use-annotation` by the action annotated for its Service, `<prefix>/actions.<service>`. weir
//! sets that one annotation on each Ingress the Rollout names: a `forward` action whose target
//! groups are the canaryService and stableService at `servicePort`, weighted to 100 between
//! them (Argo Rollouts' shape). It changes nothing else of the Ingress: a merge patch of that
//! one key, as field manager `weir-rollout`, guarded by the resourceVersion it checked, and
//! read back. On removal the action stays, all to the stable (deleting it would leave the
//! path with no action at all).
//!
//! The action is read as the AWS Load Balancer Controller reads it (Go's JSON: keys match
//! whatever their case), so an action written by Argo Rollouts (`"TargetGroups"`) or by hand
//! reads the same; weir writes the controller's documented spelling (`"targetGroups"`).

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use super::router::{Router, RouterError};
use crate::api::Rollout;
use crate::api::contract::{ROLLOUT_MANAGER, alb_action_annotation};
use crate::api::rollout::AlbRouting;

const KIND: &str = "Ingress";
/// The port name that tells the AWS Load Balancer Controller to route a path by its action.
pub const USE_ANNOTATION: &str = "use-annotation";
/// The ALB API's highest target group weight.
const MAX_WEIGHT: i64 = 999;

/// One target group of a forward action: a Service and port, or (written by others) an ARN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetGroup {
    pub service_name: Option<String>,
    pub service_port: Option<String>,
    pub weight: Option<i64>,
}

/// `TargetGroupStickinessConfig` of a forward action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stickiness {
    pub enabled: bool,
    pub duration_seconds: i64,
}

/// A forward action, as the AWS Load Balancer Controller reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardAction {
    pub target_groups: Vec<TargetGroup>,
    pub stickiness: Option<Stickiness>,
}

/// What a Rollout asks of its Ingresses.
#[derive(Clone, Debug, PartialEq)]
pub struct AlbConfig {
    pub ingresses: Vec<String>,
    pub stable_service: String,
    pub canary_service: String,
    /// `servicePort`, as the action writes it.
    pub service_port: String,
    /// The rootService, else the stableService: the Service the Ingress's path names.
    pub action_service: String,
    /// The annotation weir owns: `<prefix>/actions.<action_service>`.
    pub annotation: String,
    pub stickiness: Option<Stickiness>,
}

impl AlbConfig {
    pub fn new(stable: &str, canary: &str, alb: &AlbRouting) -> Self {
        let action_service = alb.root_service.as_deref().unwrap_or(stable).to_owned();
        AlbConfig {
            ingresses: ingresses(alb),
            stable_service: stable.into(),
            canary_service: canary.into(),
            service_port: alb.service_port.to_string(),
            annotation: alb_action_annotation(alb.annotation_prefix.as_deref(), &action_service),
            action_service,
            stickiness: alb
                .stickiness_config
                .as_ref()
                .filter(|s| s.enabled)
                .map(|s| Stickiness {
                    enabled: true,
                    duration_seconds: s.duration_seconds,
                }),
        }
    }
}

/// The Ingresses a Rollout names: `ingress`, then `ingresses`, each once.
pub fn ingresses(alb: &AlbRouting) -> Vec<String> {
    let mut names: Vec<String> = alb.ingress.iter().cloned().collect();
    for name in &alb.ingresses {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The action that gives the canary `weight` percent and the stable the rest (canary first,
/// as Argo Rollouts writes it).
pub fn action(config: &AlbConfig, weight: i32) -> ForwardAction {
    let weight = i64::from(weight.clamp(0, 100));
    let group = |service: &str, weight: i64| TargetGroup {
        service_name: Some(service.to_owned()),
        service_port: Some(config.service_port.clone()),
        weight: Some(weight),
    };
    ForwardAction {
        target_groups: vec![
            group(&config.canary_service, weight),
            group(&config.stable_service, 100 - weight),
        ],
        stickiness: config.stickiness,
    }
}

/// The annotation's value for `action`, in the AWS Load Balancer Controller's spelling.
pub fn action_json(action: &ForwardAction) -> String {
    let groups: Vec<Value> = action
        .target_groups
        .iter()
        .map(|group| {
            let mut fields = Map::new();
            if let Some(name) = &group.service_name {
                fields.insert("serviceName".into(), json!(name));
            }
            if let Some(port) = &group.service_port {
                fields.insert("servicePort".into(), json!(port));
            }
            if let Some(weight) = group.weight {
                fields.insert("weight".into(), json!(weight));
            }
            Value::Object(fields)
        })
        .collect();
    let mut forward = json!({"targetGroups": groups});
    if let Some(sticky) = action.stickiness {
        forward["targetGroupStickinessConfig"] =
            json!({"enabled": sticky.enabled, "durationSeconds": sticky.duration_seconds});
    }
    json!({"type": "forward", "forwardConfig": forward}).to_string()
}

/// A field of a JSON object as Go's encoding/json finds it: the exact key, else one equal to
/// it ignoring case.
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn object_at<'v>(value: &'v Value, what: &str) -> Result<&'v Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} is not a JSON object"))
}

fn optional_string(
    object: &Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<String>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{at}.{name} is not a string")),
    }
}

fn optional_integer(
    object: &Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<i64>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{at}.{name} is not an integer")),
    }
}

/// Reads an action annotation: Ok(None) for a well-formed action of another type (a fixed
/// response, a redirect), an error saying what is wrong for anything the AWS Load Balancer
/// Controller could not read as a forward action either.
pub fn parse_action(text: &str) -> Result<Option<ForwardAction>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
    let top = object_at(&value, "the action")?;
    match optional_string(top, "type", "the action")? {
        Some(kind) if kind == "forward" => {}
        Some(_) => return Ok(None),
        None => return Err("the action has no type".into()),
    }
    let Some(forward) = field(top, "forwardConfig").filter(|v| !v.is_null()) else {
        // The older single target group form (`targetGroupARN`): nothing of the Rollout's.
        return Ok(Some(ForwardAction::default()));
    };
    let forward = object_at(forward, "forwardConfig")?;
    let groups = match field(forward, "targetGroups") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(groups)) => &groups[..],
        Some(_) => return Err("forwardConfig.targetGroups is not a list".into()),
    };
    let mut target_groups = Vec::with_capacity(groups.len());
    for (index, group) in groups.iter().enumerate() {
        let at = format!("forwardConfig.targetGroups[{index}]");
        let fields = object_at(group, &at)?;
        let service_port = match field(fields, "servicePort") {
            None | Some(Value::Null) => None,
            Some(Value::String(port)) => Some(port.clone()),
            Some(Value::Number(port)) => Some(port.to_string()),
            Some(_) => return Err(format!("{at}.servicePort is not a port")),
        };
        let weight = optional_integer(fields, "weight", &at)?;
        if weight.is_some_and(|w| !(0..=MAX_WEIGHT).contains(&w)) {
            return Err(format!("{at}.weight is not between 0 and {MAX_WEIGHT}"));
        }
        target_groups.push(TargetGroup {
            service_name: optional_string(fields, "serviceName", &at)?,
            service_port,
            weight,
        });
    }
    let stickiness = match field(forward, "targetGroupStickinessConfig") {
        None | Some(Value::Null) => None,
        Some(sticky) => {
            let at = "forwardConfig.targetGroupStickinessConfig";
            let fields = object_at(sticky, at)?;
            let enabled = match field(fields, "enabled") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(enabled)) => *enabled,
                Some(_) => return Err(format!("{at}.enabled is not true or false")),
            };
            Some(Stickiness {
                enabled,
                duration_seconds: optional_integer(fields, "durationSeconds", at)?.unwrap_or(0),
            })
        }
    };
    Ok(Some(ForwardAction {
        target_groups,
        stickiness,
    }))
}

/// The canary's share in percent of what the action forwards: its target groups' weight over
/// all of them (0 when nothing has weight), rounded.
pub fn canary_share(action: &ForwardAction, canary: &str) -> i32 {
    let weight = |g: &TargetGroup| g.weight.unwrap_or(0).clamp(0, MAX_WEIGHT);
    let total: i64 = action.target_groups.iter().map(weight).sum();
    let to_canary: i64 = action
        .target_groups
        .iter()
        .filter(|g| g.service_name.as_deref() == Some(canary))
        .map(weight)
        .sum();
    if total == 0 {
        return 0;
    }
    ((100 * to_canary + total / 2) / total).clamp(0, 100) as i32
}

fn annotation<'i>(ingress: &'i Ingress, key: &str) -> Option<&'i str> {
    ingress
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn ingress_name(ingress: &Ingress) -> String {
    format!(
        "{}/{}",
        ingress.metadata.namespace.as_deref().unwrap_or_default(),
        ingress.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The action weir's annotation holds on `ingress`: None when there is none, or it is not a
/// forward action (weir writes its own); an error naming the Ingress and the annotation when
/// it cannot be read.
pub fn action_of(
    ingress: &Ingress,
    config: &AlbConfig,
) -> Result<Option<ForwardAction>, RouterError> {
    let Some(text) = annotation(ingress, &config.annotation) else {
        return Ok(None);
    };
    parse_action(text).map_err(|why| {
        RouterError::Misconfigured(format!(
            "Ingress {}: annotation {} is not an ALB action weir can read: {why}; fix it or remove it (weir writes it from the Rollout's steps)",
            ingress_name(ingress),
            config.annotation
        ))
    })
}

/// The canary weight `ingress` carries: None before weir set an action there.
pub fn weight_of(ingress: &Ingress, config: &AlbConfig) -> Result<Option<i32>, RouterError> {
    Ok(action_of(ingress, config)?.map(|action| canary_share(&action, &config.canary_service)))
}

fn uses_annotation(backend: &IngressBackend, service: &str) -> bool {
    backend.service.as_ref().is_some_and(|s| {
        s.name == service && s.port.as_ref().and_then(|p| p.name.as_deref()) == Some(USE_ANNOTATION)
    })
}

/// Refused unless a path (or the default backend) of `ingress` sends to the action's Service
/// with port `use-annotation`: otherwise the action would carry nothing, and weights set
/// there would not be the traffic's.
pub fn check_backend(ingress: &Ingress, config: &AlbConfig) -> Result<(), RouterError> {
    let spec = ingress.spec.as_ref();
    let default = spec
        .and_then(|s| s.default_backend.as_ref())
        .is_some_and(|b| uses_annotation(b, &config.action_service));
    let path = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|rule| rule.http.iter().flat_map(|http| &http.paths))
        .any(|path| uses_annotation(&path.backend, &config.action_service));
    if default || path {
        return Ok(());
    }
    Err(RouterError::Misconfigured(format!(
        "Ingress {} (spec.strategy.canary.trafficRouting.alb) has no path whose backend is Service {} with port name {USE_ANNOTATION}; send the path to split to {} with port {{name: {USE_ANNOTATION}}} (or set alb.rootService to the Service it names)",
        ingress_name(ingress),
        config.action_service,
        config.action_service
    )))
}

/// The ALB router a Rollout asks for with `trafficRouting.alb`, once it names both Services;
/// None otherwise.
pub fn for_rollout(client: &Client, rollout: &Rollout, namespace: &str) -> Option<AlbRouter> {
    let canary = rollout.spec.strategy.canary.as_ref()?;
    let alb = canary.traffic_routing.as_ref()?.alb.as_ref()?;
    let config = AlbConfig::new(
        canary.stable_service.as_deref()?,
        canary.canary_service.as_deref()?,
        alb,
    );
    Some(AlbRouter::new(client.clone(), namespace, config))
}

pub struct AlbRouter {
    api: Api<Ingress>,
    namespace: String,
    config: AlbConfig,
}

impl AlbRouter {
    pub fn new(client: Client, namespace: &str, config: AlbConfig) -> Self {
        AlbRouter {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            config,
        }
    }

    /// The Ingresses whose action annotation weir sets.
    pub fn ingress_names(&self) -> &[String] {
        &self.config.ingresses
    }

    fn api_error(&self, name: &str) -> impl FnOnce(kube::Error) -> RouterError {
        let name = format!("{}/{name}", self.namespace);
        move |source| RouterError::Api {
            kind: KIND,
            name,
            source: Box::new(source),
        }
    }

    /// The Rollout's Ingresses; refused when it names none.
    fn names(&self) -> Result<&[String], RouterError> {
        if self.config.ingresses.is_empty() {
            return Err(RouterError::Misconfigured(
                "spec.strategy.canary.trafficRouting.alb names no Ingress: set ingress (or ingresses)".into(),
            ));
        }
        Ok(&self.config.ingresses)
    }

    /// The Ingress, checked to route the action's Service by annotation.
    async fn ingress(&self, name: &str) -> Result<Ingress, RouterError> {
        let ingress = self
            .api
            .get_opt(name)
            .await
            .map_err(self.api_error(name))?
            .ok_or_else(|| RouterError::NotFound {
                kind: KIND,
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })?;
        check_backend(&ingress, &self.config)?;
        Ok(ingress)
    }

    /// Sets `action` on the Ingress `name` unless it holds it already, and verifies it on
    /// what the API server stored.
    async fn set_action(
        &self,
        name: &str,
        wanted: &ForwardAction,
        weight: i32,
    ) -> Result<(), RouterError> {
        let ingress = self.ingress(name).await?;
        if matches!(action_of(&ingress, &self.config), Ok(Some(ref live)) if live == wanted) {
            return Ok(());
        }
        // The resourceVersion makes the patch fail (409) if the Ingress changed since it was
        // checked, instead of landing on a path that no longer uses the annotation.
        let patch = json!({"metadata": {
            "resourceVersion": ingress.resource_version(),
            "annotations": {(self.config.annotation.clone()): action_json(wanted)},
        }});
        let params = PatchParams {
            field_manager: Some(ROLLOUT_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = self
            .api
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map_err(self.api_error(name))?;
        let found = action_of(&patched, &self.config)?;
        if found.as_ref() != Some(wanted) {
            return Err(RouterError::NotVerified {
                kind: KIND,
                name: format!("{}/{name}", self.namespace),
                wanted: weight,
                found: found.map(|a| canary_share(&a, &self.config.canary_service)),
            });
        }
        Ok(())
    }
}

impl Router for AlbRouter {
    /// The highest weight over the Ingresses (so one left behind is never hidden); None while
    /// any has no action of weir's yet. An action that does not read (edited by hand into
    /// something else) counts as none: the annotation is weir's, so the planner sets it
    /// again and `set_action` writes over it, and an abort is never held up by it.
    async fn weight(&self) -> Result<Option<i32>, RouterError> {
        let mut highest = Some(0);
        for name in self.names()? {
            let ingress = self.ingress(name).await?;
            let weight = weight_of(&ingress, &self.config).unwrap_or(None);
            highest = match (highest, weight) {
                (Some(h), Some(w)) => Some(h.max(w)),
                _ => None,
            };
        }
        Ok(highest)
    }

    async fn set_weight(&self, weight: i32) -> Result<i32, RouterError> {
        let wanted = action(&self.config, weight);
        for name in self.names()? {
            self.set_action(name, &wanted, weight).await?;
        }
        Ok(weight)
    }

    /// All to the stable on every Ingress that still routes by the action; one that is gone
    /// or no longer does is left alone.
    async fn remove_managed(&self) -> Result<(), RouterError> {
        let wanted = action(&self.config, 0);
        for name in self.names()? {
            match self.set_action(name, &wanted, 0).await {
                Ok(()) | Err(RouterError::NotFound { .. } | RouterError::Misconfigured(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::AlbStickinessConfig;
    use proptest::prelude::*;

    fn routing() -> AlbRouting {
        AlbRouting {
            ingress: Some("web".into()),
            service_port: 80,
            ..AlbRouting::default()
        }
    }

    fn config() -> AlbConfig {
        AlbConfig::new("web-stable", "web-canary", &routing())
    }

    fn ingress(annotations: Value, backend_service: &str, port: Value) -> Ingress {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {"rules": [{"http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": backend_service, "port": port}}}]}}]}
        }))
        .expect("an Ingress")
    }

    #[test]
    fn the_action_splits_between_canary_and_stable_in_the_controllers_spelling() {
        let config = config();
        assert_eq!(
            config.annotation,
            "alb.ingress.kubernetes.io/actions.web-stable"
        );
        let text = action_json(&action(&config, 20));
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            value,
            json!({"type": "forward", "forwardConfig": {"targetGroups": [
                {"serviceName": "web-canary", "servicePort": "80", "weight": 20},
                {"serviceName": "web-stable", "servicePort": "80", "weight": 80}]}})
        );
        let read = parse_action(&text)
            .expect("readable")
            .expect("a forward action");
        assert_eq!(read, action(&config, 20));
        assert_eq!(canary_share(&read, "web-canary"), 20);
    }

    #[test]
    fn root_service_prefix_and_stickiness_are_honoured() {
        let alb = AlbRouting {
            root_service: Some("web-root".into()),
            annotation_prefix: Some("custom.alb.example".into()),
            stickiness_config: Some(AlbStickinessConfig {
                enabled: true,
                duration_seconds: 3600,
                ..AlbStickinessConfig::default()
            }),
            service_port: 8443,
            ..routing()
        };
        let config = AlbConfig::new("web-stable", "web-canary", &alb);
        assert_eq!(config.annotation, "custom.alb.example/actions.web-root");
        assert_eq!(config.action_service, "web-root");
        let value: Value = serde_json::from_str(&action_json(&action(&config, 0))).expect("JSON");
        assert_eq!(
            value["forwardConfig"]["targetGroupStickinessConfig"],
            json!({"enabled": true, "durationSeconds": 3600})
        );
        assert_eq!(
            value["forwardConfig"]["targetGroups"][1],
            json!({"serviceName": "web-stable", "servicePort": "8443", "weight": 100})
        );
        let disabled = AlbRouting {
            stickiness_config: Some(AlbStickinessConfig::default()),
            ..routing()
        };
        let value: Value = serde_json::from_str(&action_json(&action(
            &AlbConfig::new("web-stable", "web-canary", &disabled),
            5,
        )))
        .expect("JSON");
        assert!(
            value["forwardConfig"]
                .get("targetGroupStickinessConfig")
                .is_none()
        );
    }

    #[test]
    fn actions_written_by_argo_rollouts_or_by_hand_read_the_same() {
        // Argo Rollouts' spelling, a numeric port and unequal weights.
        let argo = r#"{"Type":"forward","ForwardConfig":{"TargetGroups":[
            {"Weight":10,"ServiceName":"web-canary","ServicePort":"80"},
            {"Weight":90,"ServiceName":"web-stable","ServicePort":80}]}}"#;
        let read = parse_action(argo).expect("readable").expect("forward");
        assert_eq!(canary_share(&read, "web-canary"), 10);
        assert_eq!(read.target_groups[1].service_port.as_deref(), Some("80"));
        // Weights need not sum to 100: the ALB weighs them against each other.
        let relative = r#"{"type":"forward","forwardConfig":{"targetGroups":[
            {"serviceName":"web-canary","weight":1},{"serviceName":"web-stable","weight":3}]}}"#;
        let read = parse_action(relative).expect("readable").expect("forward");
        assert_eq!(canary_share(&read, "web-canary"), 25);
        // All to the stable, as a team commits it before any rollout.
        let stable = r#"{"type":"forward","forwardConfig":{"targetGroups":[
            {"serviceName":"web-stable","servicePort":"80"}]}}"#;
        let read = parse_action(stable).expect("readable").expect("forward");
        assert_eq!(canary_share(&read, "web-canary"), 0);
        // Other action types are not weir's: it writes its own.
        let fixed = r#"{"type":"fixed-response","fixedResponseConfig":{"statusCode":"503"}}"#;
        assert_eq!(parse_action(fixed), Ok(None));
        assert_eq!(
            parse_action(r#"{"type":"forward","targetGroupARN":"arn:aws:x"}"#),
            Ok(Some(ForwardAction::default()))
        );
    }

    #[test]
    fn garbage_in_the_annotation_is_an_error_naming_the_ingress_and_annotation() {
        let config = config();
        for garbage in [
            "",
            "{",
            "not json",
            "[]",
            "42",
            r#"{"forwardConfig":{}}"#,
            r#"{"type":7}"#,
            r#"{"type":"forward","forwardConfig":[]}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":{}}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[7]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"weight":"20"}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"weight":-1}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"weight":1000}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"weight":1e400}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":["a"]}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[{"servicePort":true}]}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroupStickinessConfig":{"enabled":"yes"}}}"#,
            &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        ] {
            let hostile = ingress(
                json!({"alb.ingress.kubernetes.io/actions.web-stable": garbage}),
                "web-stable",
                json!({"name": "use-annotation"}),
            );
            let message = weight_of(&hostile, &config).expect_err(garbage).to_string();
            assert!(
                message.contains("Ingress shop/web")
                    && message.contains("alb.ingress.kubernetes.io/actions.web-stable"),
                "{message}"
            );
        }
    }

    #[test]
    fn weights_are_read_only_from_weirs_own_annotation() {
        let config = config();
        let use_annotation = json!({"name": "use-annotation"});
        let none = ingress(json!({}), "web-stable", use_annotation.clone());
        assert_eq!(weight_of(&none, &config).expect("readable"), None);
        let other_key = ingress(
            json!({"alb.ingress.kubernetes.io/actions.other": "garbage"}),
            "web-stable",
            use_annotation.clone(),
        );
        assert_eq!(weight_of(&other_key, &config).expect("readable"), None);
        let set = ingress(
            json!({"alb.ingress.kubernetes.io/actions.web-stable": action_json(&action(&config, 35))}),
            "web-stable",
            use_annotation,
        );
        assert_eq!(weight_of(&set, &config).expect("readable"), Some(35));
    }

    #[test]
    fn the_ingress_must_route_the_action_service_by_annotation() {
        let config = config();
        let good = ingress(json!({}), "web-stable", json!({"name": "use-annotation"}));
        assert!(check_backend(&good, &config).is_ok());
        for (service, port) in [
            ("web-stable", json!({"number": 80})),
            ("web-stable", json!({"name": "http"})),
            ("web-root", json!({"name": "use-annotation"})),
        ] {
            let message = check_backend(&ingress(json!({}), service, port), &config)
                .expect_err("not routed by the action")
                .to_string();
            assert!(
                message.contains("Ingress shop/web")
                    && message.contains("Service web-stable with port name use-annotation"),
                "{message}"
            );
        }
        let default_backend: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"defaultBackend": {"service": {"name": "web-stable", "port": {"name": "use-annotation"}}}}
        }))
        .expect("an Ingress");
        assert!(check_backend(&default_backend, &config).is_ok());
    }

    #[test]
    fn ingresses_are_listed_once_ingress_first() {
        let both = AlbRouting {
            ingress: Some("a".into()),
            ingresses: vec!["b".into(), "a".into()],
            ..routing()
        };
        assert_eq!(ingresses(&both), ["a", "b"]);
        assert!(ingresses(&AlbRouting::default()).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever weight weir writes, it reads back the same, and the stable gets the rest.
        #[test]
        fn every_weight_reads_back_as_written(weight in 0i32..=100, port in 1i32..=65535) {
            let alb = AlbRouting { service_port: port, ..routing() };
            let config = AlbConfig::new("web-stable", "web-canary", &alb);
            let written = action(&config, weight);
            let read = parse_action(&action_json(&written)).expect("readable").expect("forward");
            prop_assert_eq!(&read, &written);
            prop_assert_eq!(canary_share(&read, "web-canary"), weight);
            prop_assert_eq!(canary_share(&read, "web-stable"), 100 - weight);
        }

        /// Any text at all is read without a panic, and any forward action gives a share
        /// between 0 and 100.
        #[test]
        fn any_text_reads_without_panic(text in ".{0,200}") {
            if let Ok(Some(action)) = parse_action(&text) {
                prop_assert!((0..=100).contains(&canary_share(&action, "web-canary")));
            }
        }

        #[test]
        fn any_forward_action_gives_a_share_within_bounds(
            groups in prop::collection::vec((prop::sample::select(vec!["web-canary", "web-stable", "other"]), prop::option::of(0i64..=999)), 0..8),
        ) {
            let groups: Vec<Value> = groups.iter().map(|(service, weight)| {
                let mut g = json!({"serviceName": service});
                if let Some(w) = weight { g["weight"] = json!(w); }
                g
            }).collect();
            let text = json!({"type": "forward", "forwardConfig": {"targetGroups": groups}}).to_string();
            let action = parse_action(&text).expect("readable").expect("forward");
            let share = canary_share(&action, "web-canary");
            prop_assert!((0..=100).contains(&share));
        }
    }
}
