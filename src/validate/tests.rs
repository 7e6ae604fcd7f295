use super::names::{NameRule, check_name};
use super::violation::Report;
use super::*;
use crate::api::analysis::AnalysisTemplate;
use crate::api::{GitSync, Rollout};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;
use serde_json::json;

fn rollout_from(value: serde_json::Value) -> RolloutSpec {
    serde_json::from_value(value).expect("test spec deserializes")
}

/// The smallest valid Rollout spec, with `canary` merged in.
fn rollout_with_canary(canary: serde_json::Value) -> RolloutSpec {
    rollout_from(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        "strategy": {"canary": canary}
    }))
}

fn fields(violations: &[Violation]) -> Vec<(ViolationKind, &str)> {
    violations
        .iter()
        .map(|v| (v.kind, v.field.as_str()))
        .collect()
}

fn assert_only(violations: Vec<Violation>, expected: &[(ViolationKind, &str)]) {
    assert_eq!(fields(&violations), expected, "{violations:#?}");
    for violation in &violations {
        assert!(!violation.message.is_empty());
    }
}

use ViolationKind::{Invalid, Required, Unsupported as Unsup};

#[test]
fn the_examples_are_valid() {
    for (file, text) in [
        (
            "examples/rollout.yaml",
            include_str!("../../examples/rollout.yaml"),
        ),
        (
            "examples/argo-rollouts/canary.yaml",
            include_str!("../../examples/argo-rollouts/canary.yaml"),
        ),
        (
            "examples/blue-green.yaml",
            include_str!("../../examples/blue-green.yaml"),
        ),
        (
            "examples/nginx/rollout.yaml",
            include_str!("../../examples/nginx/rollout.yaml"),
        ),
        (
            "examples/smi/rollout.yaml",
            include_str!("../../examples/smi/rollout.yaml"),
        ),
        (
            "examples/gateway-api/rollout.yaml",
            include_str!("../../examples/gateway-api/rollout.yaml"),
        ),
        (
            "examples/alb/rollout.yaml",
            include_str!("../../examples/alb/rollout.yaml"),
        ),
    ] {
        // The first document: the router examples keep their Services beside the Rollout.
        let first = text.split("\n---\n").next().unwrap_or(text);
        let object: Rollout = serde_yaml_ng::from_str(first).expect(file);
        assert_eq!(rollout(&object.spec), vec![], "{file}");
    }
    // Multi-document examples: the Rollout among the objects it routes through.
    for (file, text) in [
        (
            "examples/istio/host-level.yaml",
            include_str!("../../examples/istio/host-level.yaml"),
        ),
        (
            "examples/istio/subset-level.yaml",
            include_str!("../../examples/istio/subset-level.yaml"),
        ),
        (
            "examples/istio/header-route.yaml",
            include_str!("../../examples/istio/header-route.yaml"),
        ),
        (
            "examples/gateway-api/header-route.yaml",
            include_str!("../../examples/gateway-api/header-route.yaml"),
        ),
        (
            "examples/argo-rollouts/experiment-weighted.yaml",
            include_str!("../../examples/argo-rollouts/experiment-weighted.yaml"),
        ),
    ] {
        let mut rollouts = 0;
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value =
                <serde_json::Value as serde::Deserialize>::deserialize(document).expect(file);
            if value["kind"] == "Rollout" {
                let object: Rollout = serde_json::from_value(value).expect(file);
                assert!(
                    object
                        .spec
                        .strategy
                        .canary
                        .as_ref()
                        .and_then(|c| c.traffic_routing.as_ref())
                        .is_some_and(|t| t.istio.is_some() || t.gateway().is_some()),
                    "{file}"
                );
                assert_eq!(rollout(&object.spec), vec![], "{file}");
                rollouts += 1;
            }
        }
        assert_eq!(rollouts, 1, "{file}");
    }
    for (file, text) in [
        (
            "examples/analysistemplate.yaml",
            include_str!("../../examples/analysistemplate.yaml"),
        ),
        (
            "examples/argo-rollouts/analysistemplate.yaml",
            include_str!("../../examples/argo-rollouts/analysistemplate.yaml"),
        ),
    ] {
        let template: AnalysisTemplate = serde_yaml_ng::from_str(text).expect(file);
        assert_eq!(analysis_template(&template.spec), vec![], "{file}");
    }
    for (file, text) in [
        (
            "examples/gitsync.yaml",
            include_str!("../../examples/gitsync.yaml"),
        ),
        (
            "examples/gitsync-sops.yaml",
            include_str!("../../examples/gitsync-sops.yaml"),
        ),
    ] {
        let sync: GitSync = serde_yaml_ng::from_str(text).expect(file);
        assert_eq!(git_sync(&sync.spec), vec![], "{file}");
    }
}

#[test]
fn defaults_match_argo_rollouts() {
    let spec = rollout_with_canary(json!({}));
    assert_eq!(spec.progress_deadline_seconds, 600);
    assert_eq!(spec.revision_history_limit, 10);
    let canary = spec.strategy.canary.expect("canary");
    assert_eq!(canary.scale_down_delay_seconds, 30);
    assert_eq!(canary.abort_scale_down_delay_seconds, 30);
}

#[test]
fn a_step_needs_exactly_one_action() {
    let spec =
        rollout_with_canary(json!({"steps": [{}, {"setWeight": 10, "pause": {}}, {"pause": {}}]}));
    assert_only(
        rollout(&spec),
        &[
            (Required, "spec.strategy.canary.steps[0]"),
            (Invalid, "spec.strategy.canary.steps[1]"),
        ],
    );
}

#[test]
fn steps_combine_fields_as_in_argo() {
    let header = json!({"name": "header", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]});
    let mirror = json!({"name": "mirror", "match": [{"method": {"exact": "GET"}}]});
    let spec = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "r"},
            "managedRoutes": [{"name": "header"}, {"name": "mirror"}]},
        "steps": [
        {"setCanaryScale": {"replicas": 2}, "pause": {"duration": "1m"}},
        {"setCanaryScale": {"replicas": 2}, "setWeight": 10},
        {"setWeight": 20, "setHeaderRoute": header, "setMirrorRoute": mirror},
        {"setCanaryScale": {"replicas": 2}, "analysis": {"templates": [{"templateName": "t"}]}},
        {"setHeaderRoute": {"name": "header"}, "pause": {}},
        {"setCanaryScale": {"replicas": 2}, "pause": {}, "setWeight": 10},
        {"analysis": {"templates": [{"templateName": "t"}]}, "pause": {}}
    ]}));
    assert_only(
        rollout(&spec),
        &[
            (Invalid, "spec.strategy.canary.steps[5]"),
            (Invalid, "spec.strategy.canary.steps[6]"),
        ],
    );
}

#[test]
fn weights_must_be_percentages_but_need_not_increase() {
    let spec = rollout_with_canary(
        json!({"steps": [{"setWeight": 50}, {"setWeight": 10}, {"setWeight": 101}, {"setWeight": -1}]}),
    );
    assert_only(
        rollout(&spec),
        &[
            (Invalid, "spec.strategy.canary.steps[2].setWeight"),
            (Invalid, "spec.strategy.canary.steps[3].setWeight"),
        ],
    );
}

#[test]
fn pause_durations_must_parse() {
    let spec = rollout_with_canary(json!({"steps": [
        {"pause": {"duration": "30s"}}, {"pause": {"duration": 45}}, {"pause": {"duration": "5 minutes"}}, {"pause": {"duration": -3}}
    ]}));
    let violations = rollout(&spec);
    assert_only(
        violations.clone(),
        &[
            (Invalid, "spec.strategy.canary.steps[2].pause.duration"),
            (Invalid, "spec.strategy.canary.steps[3].pause.duration"),
        ],
    );
    assert!(
        violations[0]
            .message
            .contains("\"5 minutes\" is not a duration"),
        "{}",
        violations[0]
    );
}

#[test]
fn canary_scale_takes_one_setting() {
    let spec = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c", "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        "steps": [
        {"setCanaryScale": {"replicas": 2, "weight": 10}},
        {"setCanaryScale": {}},
        {"setCanaryScale": {"weight": 120}},
        {"setCanaryScale": {"matchTrafficWeight": false}},
        {"setCanaryScale": {"matchTrafficWeight": true}}
    ]}));
    assert_only(
        rollout(&spec),
        &[
            (Invalid, "spec.strategy.canary.steps[0].setCanaryScale"),
            (Invalid, "spec.strategy.canary.steps[1].setCanaryScale"),
            (
                Invalid,
                "spec.strategy.canary.steps[2].setCanaryScale.weight",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[3].setCanaryScale.matchTrafficWeight",
            ),
        ],
    );
}

#[test]
fn referenced_names_must_be_valid() {
    let spec = rollout_with_canary(json!({
        "stableService": "Web_Stable",
        "canaryService": "1canary",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "route.v1", "namespace": "Gateways"}},
        "steps": [{"analysis": {"templates": [{"templateName": "success.rate"}, {"templateName": "Bad Name"}]}}]
    }));
    assert_only(
        rollout(&spec),
        &[
            (Invalid, "spec.strategy.canary.canaryService"),
            (Invalid, "spec.strategy.canary.stableService"),
            (
                Invalid,
                "spec.strategy.canary.steps[0].analysis.templates[1].templateName",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.gatewayAPI.namespace",
            ),
        ],
    );
}

#[test]
fn traffic_routing_needs_both_services_and_a_router() {
    let spec = rollout_with_canary(json!({"trafficRouting": {}}));
    assert_only(
        rollout(&spec),
        &[
            (Required, "spec.strategy.canary.canaryService"),
            (Required, "spec.strategy.canary.stableService"),
            (Required, "spec.strategy.canary.trafficRouting.gatewayAPI"),
        ],
    );
    let same = rollout_with_canary(json!({"stableService": "web", "canaryService": "web"}));
    assert_only(
        rollout(&same),
        &[(Invalid, "spec.strategy.canary.canaryService")],
    );
}

#[test]
fn analysis_needs_templates_and_well_formed_args() {
    let spec = rollout_with_canary(json!({
        "analysis": {"templates": [], "startingStep": 3, "args": [
            {"name": "a", "value": "1"},
            {"name": "a", "value": "2"},
            {"name": "b", "value": "x", "valueFrom": {"podTemplateHashValue": "Stable"}},
            {"name": "c", "valueFrom": {}},
            {"name": "d", "valueFrom": {"fieldRef": {"fieldPath": ""}}},
            {"name": "e", "valueFrom": {"secretKeyRef": {"name": "creds", "key": ""}}}
        ]},
        "steps": [{"setWeight": 10}]
    }));
    assert_only(
        rollout(&spec),
        &[
            (
                Required,
                "spec.strategy.canary.analysis.args[4].valueFrom.fieldRef.fieldPath",
            ),
            (
                Required,
                "spec.strategy.canary.analysis.args[5].valueFrom.secretKeyRef.key",
            ),
            (Required, "spec.strategy.canary.analysis.templates"),
            (Invalid, "spec.strategy.canary.analysis.args[1].name"),
            (Invalid, "spec.strategy.canary.analysis.args[2]"),
            (Invalid, "spec.strategy.canary.analysis.args[3].valueFrom"),
            (Invalid, "spec.strategy.canary.analysis.startingStep"),
        ],
    );
}

#[test]
fn the_selector_must_select_the_template() {
    let mut spec = rollout_with_canary(json!({}));
    spec.selector =
        serde_json::from_value(json!({"matchLabels": {"app": "other"}})).expect("selector");
    assert_only(
        rollout(&spec),
        &[(Invalid, "spec.template.metadata.labels")],
    );

    spec.selector = serde_json::from_value(json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]},
        {"key": "tier", "operator": "DoesNotExist"},
        {"key": "app", "operator": "Near"}
    ]}))
    .expect("selector");
    assert_only(
        rollout(&spec),
        &[(Invalid, "spec.selector.matchExpressions[2].operator")],
    );

    spec.selector = LabelSelector::default();
    assert_only(rollout(&spec), &[(Required, "spec.selector")]);
}

#[test]
fn the_progress_deadline_must_exceed_min_ready() {
    let mut spec = rollout_with_canary(json!({}));
    spec.min_ready_seconds = 600;
    assert_only(rollout(&spec), &[(Invalid, "spec.progressDeadlineSeconds")]);
}

#[test]
fn a_rollout_without_a_strategy_is_refused() {
    let spec = rollout_from(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}},
        "strategy": {}
    }));
    assert_only(rollout(&spec), &[(Required, "spec.strategy.canary")]);
}

/// The smallest valid Rollout spec, with `blueGreen` merged in.
fn rollout_with_blue_green(blue_green: serde_json::Value) -> RolloutSpec {
    rollout_from(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        "strategy": {"blueGreen": blue_green}
    }))
}

#[test]
fn blue_green_is_accepted_with_argo_defaults() {
    let spec = rollout_with_blue_green(json!({"activeService": "web"}));
    assert_only(rollout(&spec), &[]);
    let blue_green = spec.strategy.blue_green.expect("blueGreen");
    assert!(blue_green.auto_promotion_enabled);
    assert_eq!(blue_green.scale_down_delay_seconds, 30);
    assert_eq!(blue_green.abort_scale_down_delay_seconds, 30);
    assert_eq!(blue_green.preview_replica_count, None);
}

#[test]
fn blue_green_takes_every_argo_field() {
    let spec = rollout_with_blue_green(json!({
        "activeService": "web",
        "previewService": "web-preview",
        "autoPromotionEnabled": false,
        "autoPromotionSeconds": 20,
        "previewReplicaCount": 1,
        "prePromotionAnalysis": {"templates": [{"templateName": "smoke"}], "args": [{"name": "svc", "value": "web-preview"}]},
        "postPromotionAnalysis": {"templates": [{"templateName": "errors", "clusterScope": true}]},
        "scaleDownDelaySeconds": 60,
        "scaleDownDelayRevisionLimit": 1,
        "abortScaleDownDelaySeconds": 10,
        "activeMetadata": {"labels": {"role": "active"}},
        "previewMetadata": {"labels": {"role": "preview"}, "annotations": {"note": "preview"}},
        "antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 50}}
    }));
    assert_only(rollout(&spec), &[]);
}

#[test]
fn blue_green_needs_an_active_service_apart_from_the_preview() {
    let spec = rollout_with_blue_green(json!({"previewService": "web"}));
    assert_only(
        rollout(&spec),
        &[(Required, "spec.strategy.blueGreen.activeService")],
    );
    let spec = rollout_with_blue_green(json!({"activeService": "web", "previewService": "web"}));
    assert_only(
        rollout(&spec),
        &[(Invalid, "spec.strategy.blueGreen.previewService")],
    );
    let spec = rollout_with_blue_green(json!({"activeService": "Web_1"}));
    assert_only(
        rollout(&spec),
        &[(Invalid, "spec.strategy.blueGreen.activeService")],
    );
}

#[test]
fn a_rollout_has_exactly_one_strategy() {
    let spec = rollout_from(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}},
        "strategy": {"canary": {}, "blueGreen": {"activeService": "web"}}
    }));
    assert_only(rollout(&spec), &[(Invalid, "spec.strategy.blueGreen")]);
}

#[test]
fn blue_green_analysis_anti_affinity_and_counts_are_checked() {
    let spec = rollout_with_blue_green(json!({
        "activeService": "web",
        "prePromotionAnalysis": {"templates": []},
        "postPromotionAnalysis": {"templates": [{"templateName": ""}]},
        "antiAffinity": {},
        "previewReplicaCount": -1,
        "scaleDownDelaySeconds": -1,
        "maxUnavailable": 1
    }));
    assert_only(
        rollout(&spec),
        &[
            (
                Required,
                "spec.strategy.blueGreen.postPromotionAnalysis.templates[0].templateName",
            ),
            (
                Required,
                "spec.strategy.blueGreen.prePromotionAnalysis.templates",
            ),
            (Invalid, "spec.strategy.blueGreen.antiAffinity"),
            (Invalid, "spec.strategy.blueGreen.previewReplicaCount"),
            (Invalid, "spec.strategy.blueGreen.scaleDownDelaySeconds"),
            (Unsup, "spec.strategy.blueGreen.maxUnavailable"),
        ],
    );
}

#[test]
fn ephemeral_metadata_keys_values_and_counts_are_checked() {
    let many: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let spec = rollout_with_blue_green(json!({
        "activeService": "web",
        "activeMetadata": {
            "labels": {"role": "active", "example.com/tier": "", "bad key": "x",
                "-dash": "x", "Bad.Prefix/name": "x", "value": "not ok!",
                "long": "x".repeat(64), "rollouts-pod-template-hash": "abc", "app": "web"},
            "annotations": {"note": "any text at all: fine", "big": "x".repeat(33 * 1024)}
        },
        "previewMetadata": {"labels": many, "annotations": {"/empty-prefix": "x"}}
    }));
    let at = "spec.strategy.blueGreen";
    assert_only(
        rollout(&spec),
        &[
            (Invalid, &format!("{at}.activeMetadata.annotations")),
            (Invalid, &format!("{at}.activeMetadata.labels[-dash]")),
            (
                Invalid,
                &format!("{at}.activeMetadata.labels[Bad.Prefix/name]"),
            ),
            (Invalid, &format!("{at}.activeMetadata.labels[app]")),
            (Invalid, &format!("{at}.activeMetadata.labels[bad key]")),
            (Invalid, &format!("{at}.activeMetadata.labels[long]")),
            (
                Invalid,
                &format!("{at}.activeMetadata.labels[rollouts-pod-template-hash]"),
            ),
            (Invalid, &format!("{at}.activeMetadata.labels[value]")),
            (
                Invalid,
                &format!("{at}.previewMetadata.annotations[/empty-prefix]"),
            ),
            (Invalid, &format!("{at}.previewMetadata.labels")),
        ],
    );
    let canary = rollout_from(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}},
        "strategy": {"canary": {
            "stableMetadata": {"labels": {"track": "stable"}},
            "canaryMetadata": {"labels": {"app": "canary"}}
        }}
    }));
    assert_only(
        rollout(&canary),
        &[(Invalid, "spec.strategy.canary.canaryMetadata.labels[app]")],
    );
    let fine = rollout_with_blue_green(json!({
        "activeService": "web",
        "activeMetadata": {"labels": {"role": "active", "app.kubernetes.io/part": "a.b_c-d"}},
        "previewMetadata": {"annotations": {"example.com/note": "previewed"}}
    }));
    assert_only(rollout(&fine), &[]);
}

#[test]
fn argo_fields_weir_lacks_are_named_never_dropped() {
    let spec = rollout_with_canary(json!({
        "maxSurge": "25%",
        "trafficRouting": {"traefik": {"weightedTraefikServiceName": "web"}},
        "stableService": "web-stable",
        "canaryService": "web-canary",
        "steps": [{"setWeight": 10}]
    }));
    let violations = rollout(&spec);
    assert_only(
        violations.clone(),
        &[
            (Unsup, "spec.strategy.canary.maxSurge"),
            (Unsup, "spec.strategy.canary.trafficRouting.traefik"),
        ],
    );
    let traefik = &violations[1];
    assert!(
        traefik
            .message
            .contains("the traefik router is not built yet"),
        "{traefik}"
    );
    // Kept in the object, so a round trip through the API server loses nothing.
    let round_trip = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(
        round_trip["strategy"]["canary"]["trafficRouting"]["traefik"]["weightedTraefikServiceName"],
        json!("web")
    );
}

/// An experiment step's weights as Argo Rollouts documents them: Gateway API routes carry
/// them; they come out of the stable's share, so with the canary's they fit in 100; each
/// weighted template gets a Service, so the pods need a port.
#[test]
fn experiment_weights_need_gateway_routes_ports_and_room() {
    let with = |routing: serde_json::Value, weights: [i32; 2], ports: bool| {
        let containers = if ports {
            json!([{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}])
        } else {
            json!([{"name": "web", "image": "web:1"}])
        };
        rollout_from(json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}},
            "strategy": {"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": routing,
                "steps": [
                    {"setWeight": 20},
                    {"experiment": {"duration": "5m", "templates": [
                        {"name": "baseline", "specRef": "stable", "weight": weights[0]},
                        {"name": "canary", "specRef": "canary", "weight": weights[1]}]}}
                ]}}
        }))
    };
    let gateway_for_names = || json!({"gatewayAPI": {"httpRoute": "web"}});
    let gateway = gateway_for_names();
    let at = "spec.strategy.canary.steps[1].experiment.templates";
    assert_only(rollout(&with(gateway.clone(), [5, 5], true)), &[]);
    assert_only(rollout(&with(gateway.clone(), [40, 40], true)), &[]);
    assert_only(
        rollout(&with(gateway.clone(), [40, 41], true)),
        &[(Invalid, at)],
    );
    let message = rollout(&with(gateway.clone(), [40, 41], true))[0]
        .message
        .clone();
    assert!(
        message.contains("(81)") && message.contains("(20)"),
        "{message}"
    );
    assert_only(
        rollout(&with(gateway, [5, 5], false)),
        &[
            (Invalid, &format!("{at}[0].weight")),
            (Invalid, &format!("{at}[1].weight")),
        ],
    );
    let istio = json!({"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}});
    let refused = rollout(&with(istio, [5, 5], true));
    assert_eq!(
        fields(&refused)[0],
        (Invalid, format!("{at}[0].weight").as_str())
    );
    assert!(
        refused[0].message.contains("Gateway API routes only"),
        "{}",
        refused[0]
    );
    // A template's Service never takes the name of the Rollout's own.
    let mut stolen = with(gateway_for_names(), [5, 5], true);
    if let Some(step) = stolen
        .strategy
        .canary
        .as_mut()
        .and_then(|c| c.steps[1].experiment.as_mut())
    {
        step.templates[0].service = Some(crate::api::experiment::TemplateService {
            name: Some("web-stable".into()),
        });
    }
    assert_only(
        rollout(&stolen),
        &[(Invalid, &format!("{at}[0].service.name"))],
    );
    let plugin = json!({"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "web"}}});
    assert_only(rollout(&with(plugin, [5, 5], true)), &[]);
}

#[test]
fn the_argo_gateway_plugin_form_is_accepted_as_argo_documents_it() {
    for routing in [
        json!({"httpRoute": "web"}),
        json!({"httpRoute": "web", "namespace": "edge"}),
        json!({"httpRoutes": [{"name": "a"}, {"name": "b", "useHeaderRoutes": true}]}),
        json!({"grpcRoute": "rpc"}),
        json!({"grpcRoutes": [{"name": "rpc", "useHeaderRoutes": true}], "httpRoute": "web"}),
    ] {
        let spec = rollout_with_canary(json!({
            "stableService": "s", "canaryService": "c",
            "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": routing.clone()}}
        }));
        assert_only(rollout(&spec), &[]);
        // weir's own gatewayAPI field takes the same shape.
        let native = rollout_with_canary(json!({
            "stableService": "s", "canaryService": "c",
            "trafficRouting": {"gatewayAPI": routing}
        }));
        assert_only(rollout(&native), &[]);
    }
}

#[test]
fn other_plugins_and_fields_of_the_gateway_plugin_are_named_unsupported() {
    let at = "spec.strategy.canary.trafficRouting.plugins";
    let spec = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"plugins": {
            "argoproj-labs/gatewayAPI": {
                "httpRoutes": [{"name": "web", "extra": 1}],
                "tcpRoute": "tcp", "httpRouteSelector": {"matchLabels": {"a": "b"}},
                "inProgressLabelKey": "k"
            },
            "argoproj-labs/contour": {"httpProxies": ["web"]}
        }}
    }));
    let violations = rollout(&spec);
    let gateway = format!("{at}.argoproj-labs/gatewayAPI");
    assert_only(
        violations.clone(),
        &[
            (Unsup, &format!("{at}.argoproj-labs/contour")),
            (Unsup, &format!("{gateway}.httpRouteSelector")),
            (Unsup, &format!("{gateway}.httpRoutes[0].extra")),
            (Unsup, &format!("{gateway}.inProgressLabelKey")),
            (Unsup, &format!("{gateway}.tcpRoute")),
        ],
    );
    let messages: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(
        messages[0].contains("argoproj-labs/gatewayAPI plugin only"),
        "{messages:?}"
    );
    assert!(messages[1].contains("httpRoutes"), "{messages:?}");
    assert!(
        messages[4].contains("HTTPRoutes and GRPCRoutes"),
        "{messages:?}"
    );
    // Kept in the object, so a round trip through the API server loses nothing.
    let round_trip = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(
        round_trip["strategy"]["canary"]["trafficRouting"]["plugins"]["argoproj-labs/contour"],
        json!({"httpProxies": ["web"]})
    );
    assert_eq!(
        round_trip["strategy"]["canary"]["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"]["tcpRoute"],
        json!("tcp")
    );
}

#[test]
fn gateway_routes_must_be_named_once_and_validly() {
    let at = "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI";
    let spec = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {
            "httpRoute": "web",
            "httpRoutes": [{"name": "web"}, {"name": "Bad_Name"}],
            "grpcRoutes": [{"name": "web"}]
        }}}
    }));
    assert_only(
        rollout(&spec),
        &[
            (Invalid, &format!("{at}.httpRoutes[0].name")),
            (Invalid, &format!("{at}.httpRoutes[1].name")),
        ],
    );
    let none = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"gatewayAPI": {"namespace": "edge"}}
    }));
    assert_only(
        rollout(&none),
        &[(
            Required,
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute",
        )],
    );
    let both = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "a"},
            "plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "b"}}}
    }));
    assert_only(
        rollout(&both),
        &[(Invalid, "spec.strategy.canary.trafficRouting")],
    );
}

fn template_from(value: serde_json::Value) -> AnalysisTemplateSpec {
    serde_json::from_value(value).expect("template deserializes")
}

fn prometheus(query: &str) -> serde_json::Value {
    json!({"prometheus": {"query": query}})
}

#[test]
fn a_metric_needs_a_way_to_fail() {
    let spec = template_from(json!({"metrics": [{"name": "m", "provider": prometheus("up")}]}));
    assert_only(
        analysis_template(&spec),
        &[(Required, "spec.metrics[0].successCondition")],
    );
}

#[test]
fn threshold_range_and_conditions_are_alternatives() {
    let spec = template_from(json!({"metrics": [
        {"name": "a", "thresholdRange": {"min": 1.0}, "successCondition": "result[0] > 1", "provider": prometheus("up")},
        {"name": "b", "thresholdRange": {}, "provider": prometheus("up")},
        {"name": "c", "thresholdRange": {"min": 2.0, "max": 1.0}, "provider": prometheus("up")},
        {"name": "d", "successCondition": "  ", "provider": prometheus("up")}
    ]}));
    assert_only(
        analysis_template(&spec),
        &[
            (Required, "spec.metrics[1].thresholdRange"),
            (Invalid, "spec.metrics[0].thresholdRange"),
            (Invalid, "spec.metrics[2].thresholdRange"),
            (Invalid, "spec.metrics[3].successCondition"),
        ],
    );
}

#[test]
fn counts_limits_and_durations_are_checked_unless_they_are_placeholders() {
    let spec = template_from(json!({
        "args": [{"name": "n"}],
        "metrics": [
            {"name": "a", "count": 3, "successCondition": "true", "provider": prometheus("up")},
            {"name": "b", "count": "{{args.n}}", "interval": "{{args.n}}", "successCondition": "true", "provider": prometheus("up")},
            {"name": "c", "count": "three", "failureLimit": -2, "inconclusiveLimit": "-1", "consecutiveErrorLimit": "x",
             "interval": "1 minute", "initialDelay": "5m", "successCondition": "true", "provider": prometheus("up")}
        ]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Required, "spec.metrics[0].interval"),
            (Invalid, "spec.metrics[2].consecutiveErrorLimit"),
            (Invalid, "spec.metrics[2].count"),
            (Invalid, "spec.metrics[2].failureLimit"),
            (Invalid, "spec.metrics[2].interval"),
        ],
    );
}

#[test]
fn queries_may_only_use_declared_args() {
    let spec = template_from(json!({
        "args": [{"name": "service"}],
        "metrics": [{"name": "m", "successCondition": "true",
            "provider": prometheus("rate(x{svc=\"{{ args.service }}\", hash=\"{{args.canary-hash}}\"}[1m])")}]
    }));
    let violations = analysis_template(&spec);
    assert_only(
        violations.clone(),
        &[(Invalid, "spec.metrics[0].provider.prometheus.query")],
    );
    assert!(
        violations[0].message.contains("\"canary-hash\""),
        "{}",
        violations[0]
    );
}

#[test]
fn metrics_need_unique_names_a_provider_and_a_query() {
    let spec = template_from(json!({
        "dryRun": [{"metricName": "*"}, {"metricName": "missing"}],
        "metrics": [
            {"name": "m", "successCondition": "true", "provider": {}},
            {"name": "m", "successCondition": "true", "provider": {"prometheus": {"query": " ", "address": "prometheus:9090", "timeout": 0}}},
            {"name": "d", "successCondition": "true", "provider": {"datadog": {"query": "x"}}}
        ]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Required, "spec.metrics[0].provider"),
            (Required, "spec.metrics[1].provider.prometheus.query"),
            (Invalid, "spec.dryRun[1].metricName"),
            (Invalid, "spec.metrics[1].name"),
            (Invalid, "spec.metrics[1].provider.prometheus.address"),
            (Invalid, "spec.metrics[1].provider.prometheus.timeout"),
            (Unsup, "spec.metrics[2].provider.datadog"),
        ],
    );
    assert_only(
        analysis_template(&template_from(json!({"metrics": []}))),
        &[(Required, "spec.metrics")],
    );
}

#[test]
fn a_template_may_compose_others_as_argo_writes_it_and_a_run_may_not() {
    // Argo's shape: arguments, and templates in place of metrics.
    let composing = template_from(json!({
        "args": [{"name": "service"}],
        "templates": [{"templateName": "error-rate"}, {"templateName": "latency", "clusterScope": true}],
        "dryRun": [{"metricName": "latency-p99"}]
    }));
    assert_only(analysis_template(&composing), &[]);
    assert_only(cluster_analysis_template(&composing), &[]);
    assert_only(
        analysis_template(&template_from(json!({
            "templates": [{"templateName": "Error Rate"}, {"templateName": "x", "clusterScoped": true}]
        }))),
        &[
            (Invalid, "spec.templates[0].templateName"),
            (Unsup, "spec.templates[1].clusterScoped"),
        ],
    );
    let run: crate::api::analysis::AnalysisRunSpec = serde_json::from_value(json!({
        "metrics": [{"name": "m", "successCondition": "true", "provider": prometheus("up")}],
        "templates": [{"templateName": "error-rate"}]
    }))
    .expect("run");
    assert_only(analysis_run(&run), &[(Invalid, "spec.templates")]);
}

#[test]
fn web_metrics_take_argos_fields_and_are_checked_field_by_field() {
    // As Argo documents the web provider: defaults left out.
    let spec = template_from(json!({
        "args": [{"name": "service"}, {"name": "token"}],
        "metrics": [{"name": "ok", "successCondition": "result.ok && result.successPercent >= 0.90",
            "provider": {"web": {
                "url": "http://measure.example/api/v1/measurement?service={{ args.service }}",
                "timeoutSeconds": 20,
                "headers": [{"key": "Authorization", "value": "Bearer {{ args.token }}"}],
                "jsonPath": "{$.data}"}}}]
    }));
    assert_only(analysis_template(&spec), &[]);
    let spec = template_from(json!({
        "metrics": [
            {"name": "a", "successCondition": "result == true",
             "provider": {"web": {"url": "ftp://x", "method": "DELETE", "body": "{{args.nope}}",
                "jsonBody": {"a": 1}, "timeoutSeconds": 0, "jsonPath": "{$.data[}",
                "headers": [{"key": "bad key", "value": "v"}], "authentication": {"oauth2": {}}}}},
            {"name": "b", "successCondition": "true",
             "provider": {"web": {"url": "http://x"}, "prometheus": {"query": "up"}}}
        ]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Invalid, "spec.metrics[0].provider.web.body"),
            (Invalid, "spec.metrics[0].provider.web.body"),
            (Invalid, "spec.metrics[0].provider.web.headers[0].key"),
            (Invalid, "spec.metrics[0].provider.web.jsonPath"),
            (Invalid, "spec.metrics[0].provider.web.method"),
            (Invalid, "spec.metrics[0].provider.web.timeoutSeconds"),
            (Invalid, "spec.metrics[0].provider.web.url"),
            (Invalid, "spec.metrics[1].provider"),
            (Unsup, "spec.metrics[0].provider.web.authentication"),
        ],
    );
}

#[test]
fn job_metrics_take_argos_fields_and_are_checked_field_by_field() {
    // As Argo documents the job provider: defaults left out.
    let spec = template_from(json!({
        "args": [{"name": "service"}],
        "metrics": [{"name": "smoke", "failureLimit": 1,
            "provider": {"job": {"spec": {"backoffLimit": 1, "template": {"spec": {
                "containers": [{"name": "smoke", "image": "curlimages/curl",
                    "command": ["curl", "-f", "http://{{args.service}}/health"]}],
                "restartPolicy": "Never"}}}}}}]
    }));
    assert_only(analysis_template(&spec), &[]);
    let spec = template_from(json!({
        "metrics": [
            {"name": "a", "successCondition": "result == true",
             "provider": {"job": {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "i", "args": ["{{args.nope}}"]}]}}}}}},
            {"name": "b", "provider": {"job": {"spec": {"backoffLimit": "many"}}}},
            {"name": "c", "provider": {"job": {"spec": {"template": {"spec": {"containers": [],
                "restartPolicy": "Never"}}}}, "web": {"url": "http://x"}}}
        ]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (
                Required,
                "spec.metrics[2].provider.job.spec.template.spec.containers",
            ),
            (Invalid, "spec.metrics[0].provider.job.spec"),
            (
                Invalid,
                "spec.metrics[0].provider.job.spec.template.spec.restartPolicy",
            ),
            (Invalid, "spec.metrics[0].successCondition"),
            (Invalid, "spec.metrics[1].provider.job.spec"),
            (Invalid, "spec.metrics[2].provider"),
        ],
    );
}

#[test]
fn judge_metrics_are_checked_field_by_field_as_prometheus_queries_and_settings() {
    // As the README writes one: defaults left out, weir's own hash arguments declared.
    let spec = template_from(json!({
        "args": [{"name": "baseline-hash"}, {"name": "canary-hash"}],
        "metrics": [{"name": "latency", "interval": "10s", "count": 30,
            "provider": {"judge": {
                "baseline": "mean_latency{hash=\"{{args.baseline-hash}}\"}",
                "canary": "mean_latency{hash=\"{{args.canary-hash}}\"}"}}}]
    }));
    assert_only(analysis_template(&spec), &[]);
    let spec = template_from(json!({
        "metrics": [
            {"name": "a", "successCondition": "result[0] < 1",
             "provider": {"judge": {"baseline": "x{h=\"{{args.nope}}\"}", "canary": " ",
                "address": "prometheus:9090", "timeout": 900,
                "baselineTotal": "requests", "tolerance": 0, "alpha": 0.9,
                "samples": 1, "step": "100ms"}}},
            {"name": "b", "provider": {"judge": {"baseline": "x", "canary": "y",
                "direction": "decrease", "tolerance": 1.0, "samples": 20000},
                "prometheus": {"query": "up"}}},
            // Counts count requests, so 50,000 is fine; Mann-Whitney takes no counts.
            {"name": "c", "failureCondition": "result[0] > 1",
             "provider": {"judge": {"baseline": "x", "canary": "y",
                "baselineTotal": "t", "canaryTotal": "u", "method": "mannWhitney",
                "samples": 50000, "step": "{{args.spacing}}"}}}
        ]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Required, "spec.metrics[0].provider.judge.canary"),
            (Required, "spec.metrics[0].provider.judge.canaryTotal"),
            (Invalid, "spec.metrics[0].provider.judge.address"),
            (Invalid, "spec.metrics[0].provider.judge.alpha"),
            (Invalid, "spec.metrics[0].provider.judge.baseline"),
            (Invalid, "spec.metrics[0].provider.judge.samples"),
            (Invalid, "spec.metrics[0].provider.judge.step"),
            (Invalid, "spec.metrics[0].provider.judge.timeout"),
            (Invalid, "spec.metrics[0].provider.judge.tolerance"),
            (Invalid, "spec.metrics[0].successCondition"),
            (Invalid, "spec.metrics[1].provider"),
            (Invalid, "spec.metrics[1].provider.judge.samples"),
            (Invalid, "spec.metrics[1].provider.judge.tolerance"),
            (Invalid, "spec.metrics[2].failureCondition"),
            (Invalid, "spec.metrics[2].provider.judge.method"),
            (Invalid, "spec.metrics[2].provider.judge.step"),
        ],
    );
}

#[test]
fn arguments_fill_conditions_and_addresses_as_argo_fills_them() {
    let spec = template_from(json!({
        "args": [{"name": "min"}, {"name": "prometheus"}],
        "metrics": [{"name": "a", "successCondition": "result[0] >= {{ args.min }}",
            "failureCondition": "result[0] < {{args.min}} / 2",
            "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": "up"}}}]
    }));
    assert_only(analysis_template(&spec), &[]);
    let spec = template_from(json!({
        "metrics": [{"name": "a", "successCondition": "result[0] >= {{args.min}}",
            "provider": {"prometheus": {"address": "http://{{args.host}}:9090", "query": "up"}}}]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Invalid, "spec.metrics[0].provider.prometheus.address"),
            (Invalid, "spec.metrics[0].successCondition"),
        ],
    );
}

#[test]
fn range_queries_take_argos_time_forms() {
    let spec = template_from(json!({
        "args": [{"name": "lookback", "value": "5m"}],
        "metrics": [{"name": "latency", "successCondition": "result.all(x, x < 1000)",
            "provider": {"prometheus": {"query": "http_latency_ms",
                "rangeQuery": {"start": "now() - duration(\"{{args.lookback}}\")",
                    "end": "now()", "step": "1m"}}}}]
    }));
    assert_only(analysis_template(&spec), &[]);
    let spec = template_from(json!({
        "metrics": [{"name": "latency", "successCondition": "true",
            "provider": {"prometheus": {"query": "q",
                "rangeQuery": {"start": "yesterday", "end": "now() - duration(\"{{args.x}}\")",
                    "step": "often"}}}}]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.rangeQuery.end",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.rangeQuery.start",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.rangeQuery.step",
            ),
        ],
    );
}

#[test]
fn oauth2_takes_argos_fields_and_keeps_its_secret_out_of_cluster_templates() {
    let oauth2 = |secret: &str| {
        json!({"args": [{"name": "oauthSecret"}],
            "metrics": [{"name": "m", "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"address": "http://prometheus.example.com:9090", "query": "up",
                    "authentication": {"oauth2": {"tokenUrl": "https://my-oauth2-provider/token",
                        "clientId": "my-client-id", "clientSecret": secret,
                        "scopes": ["my-oauth2-scope"]}}}}}]})
    };
    // As Argo documents it.
    let spec = template_from(oauth2("{{ args.oauthSecret }}"));
    assert_only(analysis_template(&spec), &[]);
    assert_only(crate::validate::cluster_analysis_template(&spec), &[]);
    let literal = template_from(oauth2("hunter2"));
    assert_only(analysis_template(&literal), &[]);
    assert_only(
        crate::validate::cluster_analysis_template(&literal),
        &[(
            Invalid,
            "spec.metrics[0].provider.prometheus.authentication.oauth2.clientSecret",
        )],
    );
    let mut both = oauth2("{{args.nope}}");
    both["metrics"][0]["provider"]["prometheus"]["authentication"]["bearerToken"] =
        json!({"name": "t", "key": "k"});
    both["metrics"][0]["provider"]["prometheus"]["authentication"]["oauth2"]["tokenUrl"] =
        json!("ftp://idp");
    assert_only(
        analysis_template(&template_from(both)),
        &[
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.authentication",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.authentication.oauth2.clientSecret",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.authentication.oauth2.tokenUrl",
            ),
        ],
    );
}

#[test]
fn placeholders_are_found_with_or_without_spaces() {
    assert_eq!(
        placeholders("a{{args.x}}b{{ args.y }}{{input.z}}{{args.w"),
        vec!["x", "y"]
    );
    assert_eq!(placeholders("no braces"), Vec::<&str>::new());
}

fn git_sync_from(value: serde_json::Value) -> GitSyncSpec {
    serde_json::from_value(value).expect("gitsync deserializes")
}

#[test]
fn git_sync_defaults() {
    let spec = git_sync_from(json!({"url": "file:///repo", "ref": {"branch": "main"}}));
    assert_eq!(
        (
            spec.path.as_str(),
            spec.interval.as_str(),
            spec.prune,
            spec.suspend
        ),
        (".", "1m", true, false)
    );
    assert_eq!(spec.health_timeout, "5m");
    assert!(spec.rollback.on_failure);
    assert!(!spec.rollback.write_back.enabled);
    assert_eq!(git_sync(&spec), vec![]);
}

#[test]
fn a_promotion_names_its_upstream_and_soaks_and_approves_as_weir_knows() {
    let ok = git_sync_from(json!({"url": "file:///repo", "ref": {"branch": "main"},
        "promotion": {"from": {"gitSync": "shop", "namespace": "staging"}, "soak": "30m", "approval": "Manual"}}));
    assert_only(git_sync(&ok), &[]);
    let bad = git_sync_from(json!({"url": "file:///repo", "ref": {"branch": "main"},
        "rollback": {"writeBack": {"enabled": true, "authorName": "weir", "authorEmail": "weir@example.com"}},
        "promotion": {"from": {"gitSync": "Shop", "namspace": "staging"}, "soak": "half an hour", "approval": "manual"}}));
    assert_only(
        git_sync(&bad),
        &[
            (Invalid, "spec.promotion.approval"),
            (Invalid, "spec.promotion.from.gitSync"),
            (Invalid, "spec.promotion.soak"),
            (Invalid, "spec.rollback.writeBack.enabled"),
            (Unsup, "spec.promotion.from.namspace"),
        ],
    );
}

#[test]
fn a_git_sync_interval_is_at_least_a_second() {
    for (interval, ok) in [
        ("1ns", false),
        ("500ms", false),
        ("999ms", false),
        ("1s", true),
        ("1m", true),
    ] {
        let spec = git_sync_from(
            json!({"url": "https://git.example/a.git", "ref": {"branch": "main"}, "interval": interval}),
        );
        let violations = git_sync(&spec);
        assert_eq!(violations.is_empty(), ok, "{interval}: {violations:?}");
        if !ok {
            assert!(
                violations[0].message.contains("minimum of 1s"),
                "{interval}: {violations:?}"
            );
        }
    }
}

#[test]
fn a_git_sync_health_timeout_is_a_duration_of_at_least_ten_seconds() {
    for (timeout, says) in [
        ("10s", None),
        ("5m", None),
        ("1h30m", None),
        ("600", None),
        ("9s", Some("shorter than the minimum of 10s")),
        ("0", Some("shorter than the minimum of 10s")),
        ("five minutes", Some("is not a duration")),
        ("-1m", Some("is not a duration")),
    ] {
        let spec = git_sync_from(json!({"url": "https://git.example/a.git",
            "ref": {"branch": "main"}, "healthTimeout": timeout}));
        let violations = git_sync(&spec);
        match says {
            None => assert_eq!(violations, vec![], "{timeout}"),
            Some(says) => {
                assert_only(violations.clone(), &[(Invalid, "spec.healthTimeout")]);
                assert!(
                    violations[0].message.contains(says),
                    "{timeout}: {violations:?}"
                );
            }
        }
    }
}

#[test]
fn git_sync_rules() {
    let spec = git_sync_from(json!({
        "url": "git@github.com:team/repo.git",
        "ref": {"branch": "main", "tag": "v1"},
        "path": "../outside",
        "interval": "0s",
        "secretRef": {"name": "Creds"},
        "serviceAccountName": "Deployer",
        "rollback": {"onFailure": false, "writeBack": {"enabled": true, "branch": "a b"}}
    }));
    let violations = git_sync(&spec);
    assert_only(
        violations.clone(),
        &[
            (Required, "spec.rollback.writeBack.authorEmail"),
            (Required, "spec.rollback.writeBack.authorName"),
            (Invalid, "spec.interval"),
            (Invalid, "spec.path"),
            (Invalid, "spec.ref"),
            (Invalid, "spec.rollback.writeBack.branch"),
            (Invalid, "spec.rollback.writeBack.enabled"),
            (Invalid, "spec.secretRef.name"),
            (Invalid, "spec.serviceAccountName"),
            (Invalid, "spec.url"),
        ],
    );
    let url = violations
        .iter()
        .find(|v| v.field == "spec.url")
        .expect("url violation");
    assert!(url.message.contains("ssh://user@host/path"), "{url}");

    let with_token = git_sync_from(
        json!({"url": "https://ci:ghp_abc@github.com/team/repo.git", "ref": {"branch": "main"}}),
    );
    let violations = git_sync(&with_token);
    assert_only(violations.clone(), &[(Invalid, "spec.url")]);
    assert!(
        violations[0].message.contains("spec.secretRef")
            && !violations[0].message.contains("ghp_abc"),
        "{}",
        violations[0]
    );
    let token_only = git_sync_from(
        json!({"url": "https://ghp_abc@github.com/team/repo.git", "ref": {"branch": "main"}}),
    );
    assert_only(git_sync(&token_only), &[(Invalid, "spec.url")]);
    for fine in [
        "ssh://git@github.com/team/repo.git",
        "https://github.com/team/repo.git",
    ] {
        assert_eq!(
            git_sync(&git_sync_from(
                json!({"url": fine, "ref": {"branch": "main"}})
            )),
            vec![],
            "{fine}"
        );
    }

    let onto_tracked = git_sync_from(json!({"url": "https://h/r.git", "ref": {"branch": "main"},
        "rollback": {"writeBack": {"enabled": true, "authorName": "w", "authorEmail": "w@x",
            "branch": "main"}}}));
    assert_only(
        git_sync(&onto_tracked),
        &[(Invalid, "spec.rollback.writeBack.branch")],
    );

    let pinned = git_sync_from(
        json!({"url": "https://h/r.git", "ref": {"commit": "abc123"},
        "rollback": {"writeBack": {"enabled": true, "authorName": "w", "authorEmail": "w@x"}}}),
    );
    assert_only(
        git_sync(&pinned),
        &[
            (Required, "spec.rollback.writeBack.branch"),
            (Invalid, "spec.ref.commit"),
        ],
    );
}

#[test]
fn decryption_takes_sops_and_a_secret_as_flux_writes_it() {
    let with = |decryption: serde_json::Value| {
        git_sync(&git_sync_from(
            json!({"url": "https://h/r.git", "ref": {"branch": "main"},
            "decryption": decryption}),
        ))
    };
    assert_eq!(
        with(json!({"provider": "sops", "secretRef": {"name": "sops-age"}})),
        vec![]
    );
    let violations = with(json!({"provider": "vault", "secretRef": {"name": "Sops_Age"}}));
    assert_only(
        violations.clone(),
        &[
            (Invalid, "spec.decryption.provider"),
            (Invalid, "spec.decryption.secretRef.name"),
        ],
    );
    assert!(
        violations[0].message.contains("only one is sops"),
        "{violations:?}"
    );
    assert_only(
        with(json!({"provider": "sops"})),
        &[(Required, "spec.decryption.secretRef")],
    );
    // Flux's workload identity for KMS is named, not dropped.
    let violations = with(json!({"provider": "sops", "secretRef": {"name": "k"},
        "serviceAccountName": "kms"}));
    assert_only(
        violations.clone(),
        &[(
            ViolationKind::Unsupported,
            "spec.decryption.serviceAccountName",
        )],
    );
    assert!(
        violations[0].message.contains("age identities"),
        "{violations:?}"
    );
}

#[test]
fn name_rules() {
    let mut report = Report::default();
    for (name, rule) in [
        ("web", NameRule::Dns1035Label),
        ("a-1", NameRule::Dns1035Label),
        ("1a", NameRule::Dns1123Label),
        ("a.b-c.d", NameRule::Dns1123Subdomain),
    ] {
        check_name(&mut report, name, name, rule);
    }
    assert_eq!(report.violations, vec![]);
    let long = "a".repeat(64);
    for (name, rule) in [
        ("1a", NameRule::Dns1035Label),
        ("-a", NameRule::Dns1123Label),
        ("a-", NameRule::Dns1123Label),
        ("A", NameRule::Dns1123Label),
        (long.as_str(), NameRule::Dns1123Label),
        ("a..b", NameRule::Dns1123Subdomain),
        ("a_b", NameRule::Dns1123Subdomain),
    ] {
        let mut report = Report::default();
        check_name(&mut report, "f", name, rule);
        assert_eq!(fields(&report.violations), vec![(Invalid, "f")], "{name}");
    }
}

fn step_strategy() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0..=100i32).prop_map(|w| json!({"setWeight": w})),
        Just(json!({"pause": {}})),
        (0..100_000i32).prop_map(|s| json!({"pause": {"duration": s}})),
        (0..600u32, prop_oneof![Just("s"), Just("m"), Just("h")])
            .prop_map(|(n, u)| json!({"pause": {"duration": format!("{n}{u}")}})),
        Just(json!({"analysis": {"templates": [{"templateName": "success-rate"}]}})),
        (0..50i32).prop_map(|r| json!({"setCanaryScale": {"replicas": r}})),
        (0..=100i32).prop_map(|w| json!({"setCanaryScale": {"weight": w}})),
        Just(json!({"setCanaryScale": {"matchTrafficWeight": true}})),
    ]
}

proptest! {
    #[test]
    fn well_formed_steps_in_any_order_are_valid(steps in prop::collection::vec(step_strategy(), 0..20)) {
        let spec = rollout_with_canary(json!({
            "stableService": "s", "canaryService": "c", "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
            "steps": steps
        }));
        prop_assert_eq!(rollout(&spec), vec![]);
    }

    #[test]
    fn every_out_of_range_weight_is_named(weights in prop::collection::vec(-300..400i32, 1..20)) {
        let steps: Vec<_> = weights.iter().map(|w| json!({"setWeight": w})).collect();
        let spec = rollout_with_canary(json!({"steps": steps}));
        let named: Vec<String> = rollout(&spec).into_iter().map(|v| v.field).collect();
        let mut expected: Vec<String> = weights.iter().enumerate()
            .filter(|(_, w)| !(0..=100).contains(*w))
            .map(|(i, _)| format!("spec.strategy.canary.steps[{i}].setWeight"))
            .collect();
        expected.sort();
        prop_assert_eq!(named, expected);
    }

    #[test]
    fn validation_is_deterministic_and_never_panics(steps in prop::collection::vec(
        prop_oneof![step_strategy(), Just(json!({})), Just(json!({"setWeight": 500, "pause": {"duration": "x"}}))], 0..10)
    ) {
        let spec = rollout_with_canary(json!({"steps": steps}));
        prop_assert_eq!(rollout(&spec), rollout(&spec));
    }
}

#[test]
fn a_condition_too_expensive_to_judge_is_refused_statically() {
    // 11 levels of `result.all(...)`: took 4 s on the release build, each level four times
    // the one before; refused here without running.
    let mut condition = "v10 < 1.0".to_owned();
    for level in (0..11).rev() {
        condition = format!("result.all(v{level}, {condition})");
    }
    let spec = template_from(json!({"metrics": [
        {"name": "deep", "successCondition": condition, "provider": prometheus("up")},
        {"name": "square", "failureCondition": "result.exists(a, result.exists(b, a > b))", "provider": prometheus("up")}
    ]}));
    let started = std::time::Instant::now();
    let violations = analysis_template(&spec);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_only(
        violations.clone(),
        &[
            (Invalid, "spec.metrics[0].successCondition"),
            (Invalid, "spec.metrics[1].failureCondition"),
        ],
    );
    assert_eq!(
        violations[0].to_string(),
        "spec.metrics[0].successCondition: nests 11 comprehensions (all, exists, exists_one, map, filter) inside each other; at most 2 are accepted: compare each sample once, e.g. result.all(x, x < 0.05), and join tests on one sample with && inside one comprehension"
    );
    assert!(
        violations[1].message.starts_with(
            "nests 2 comprehensions over result: estimated about 9.0e8 steps for 10,000 samples, above the limit of 150,000"
        ),
        "{}",
        violations[1]
    );
}

#[test]
fn a_query_timeout_has_a_maximum() {
    let spec = |timeout: i64| {
        template_from(json!({"metrics": [{"name": "m", "successCondition": "true",
            "provider": {"prometheus": {"query": "up", "timeout": timeout}}}]}))
    };
    assert_only(analysis_template(&spec(1)), &[]);
    assert_only(analysis_template(&spec(300)), &[]);
    let violations = analysis_template(&spec(301));
    assert_only(
        violations.clone(),
        &[(Invalid, "spec.metrics[0].provider.prometheus.timeout")],
    );
    assert!(
        violations[0]
            .message
            .starts_with("is 301 seconds; at most 300 are accepted"),
        "{}",
        violations[0]
    );
    assert_only(
        analysis_template(&spec(i64::MAX)),
        &[(Invalid, "spec.metrics[0].provider.prometheus.timeout")],
    );
}

#[test]
fn conditions_must_be_cel_that_can_evaluate() {
    let spec = template_from(json!({"metrics": [
        {"name": "a", "successCondition": "result[0] >= 0.95", "failureCondition": "result[0] < 0.5", "provider": prometheus("up")},
        {"name": "b", "successCondition": "all(result, # < 1000)", "provider": prometheus("up")},
        {"name": "c", "failureCondition": "isNaN(result[0])", "provider": prometheus("up")}
    ]}));
    assert_only(
        analysis_template(&spec),
        &[
            (Invalid, "spec.metrics[1].successCondition"),
            (Invalid, "spec.metrics[2].failureCondition"),
        ],
    );
}

#[test]
fn credentials_headers_and_retention_are_checked() {
    let spec = template_from(json!({
        "metrics": [{"name": "m", "successCondition": "true", "provider": {"prometheus": {
            "query": "up",
            "headers": [{"key": "X-Scope-OrgID", "value": "t1"}, {"key": "bad header", "value": "x"}],
            "authentication": {"bearerToken": {"name": "prom", "key": "token"}, "basicAuth": {"secretName": "prom"}}
        }}}],
        "measurementRetention": [{"metricName": "m", "limit": 0}, {"metricName": "other", "limit": 5}]
    }));
    assert_only(
        analysis_template(&spec),
        &[
            (Invalid, "spec.measurementRetention[0].limit"),
            (Invalid, "spec.measurementRetention[1].metricName"),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.authentication",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.headers[1].key",
            ),
        ],
    );
    let sigv4 = template_from(
        json!({"metrics": [{"name": "m", "successCondition": "true", "provider": {"prometheus": {
        "query": "up", "authentication": {"sigv4": {"region": "eu-west-1"}}}}}]}),
    );
    assert_only(
        analysis_template(&sigv4),
        &[(
            ViolationKind::Unsupported,
            "spec.metrics[0].provider.prometheus.authentication.sigv4",
        )],
    );
}

#[test]
fn an_interval_under_a_second_is_refused() {
    let spec = template_from(json!({"metrics": [
        {"name": "a", "interval": "0s", "successCondition": "true", "provider": prometheus("up")},
        {"name": "b", "interval": "500ms", "successCondition": "true", "provider": prometheus("up")},
        {"name": "c", "interval": "1s", "successCondition": "true", "provider": prometheus("up")}
    ]}));
    assert_only(
        analysis_template(&spec),
        &[
            (Invalid, "spec.metrics[0].interval"),
            (Invalid, "spec.metrics[1].interval"),
        ],
    );
}

fn cluster_template(headers: serde_json::Value, args: serde_json::Value) -> AnalysisTemplateSpec {
    template_from(
        json!({"args": args, "metrics": [{"name": "errors", "successCondition": "true",
        "provider": {"prometheus": {"query": "up", "headers": headers}}}]}),
    )
}

#[test]
fn a_cluster_template_carries_no_literal_credentials() {
    use ViolationKind::Invalid;
    let literal = cluster_template(
        json!([{"key": "Authorization", "value": "Bearer xyz"},
               {"key": "X-Token", "value": "{{args.token}}"},
               {"key": "X-Scope-OrgID", "value": "{{ args.namespace }}"},
               {"key": "X-Mixed", "value": "Bearer {{args.token}}"},
               {"key": "X-Not-An-Arg", "value": "{{secret}}"}]),
        json!([{"name": "token", "value": "xyz"}, {"name": "namespace"}]),
    );
    let violations = cluster_analysis_template(&literal);
    assert_only(
        violations.clone(),
        &[
            (Invalid, "spec.args[0].value"),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.headers[0].value",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.headers[3].value",
            ),
            (
                Invalid,
                "spec.metrics[0].provider.prometheus.headers[4].value",
            ),
        ],
    );
    assert!(
        violations[1].message.contains("authentication.bearerToken"),
        "{}",
        violations[1].message
    );
    assert!(
        violations[0].message.contains("secretKeyRef"),
        "{}",
        violations[0].message
    );
    // The same template in a namespace is its tenant's own business.
    assert_eq!(analysis_template(&literal), vec![]);

    // Arguments the Rollout gives, or a Secret in the run's namespace, are not literals here.
    let from_elsewhere = cluster_template(
        json!([{"key": "X-Token", "value": "{{args.token}}"},
               {"key": "X-Scope-OrgID", "value": "{{args.namespace}}"}]),
        json!([{"name": "token", "valueFrom": {"secretKeyRef": {"name": "prometheus", "key": "token"}}},
               {"name": "namespace"}]),
    );
    assert_eq!(cluster_analysis_template(&from_elsewhere), vec![]);
}

#[test]
fn a_cluster_templates_address_carries_no_user_and_password() {
    let with = |address: &str| {
        template_from(json!({"metrics": [{"name": "m", "successCondition": "true",
            "provider": {"prometheus": {"query": "up", "address": address}}}]}))
    };
    for address in [
        "https://weir:hunter2@prometheus.monitoring",
        "https://weir@prometheus.monitoring",
    ] {
        assert_only(
            cluster_analysis_template(&with(address)),
            &[(
                ViolationKind::Invalid,
                "spec.metrics[0].provider.prometheus.address",
            )],
        );
    }
    assert_eq!(
        cluster_analysis_template(&with("https://prometheus.monitoring/a@b")),
        vec![],
        "an @ in the path is not a credential"
    );
}

#[test]
fn nginx_routing_takes_argos_fields_and_reports_what_it_does_not_know() {
    let spec = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"nginx": {
            "stableIngress": "web",
            "annotationPrefix": "custom.nginx.example",
            "additionalIngressAnnotations": {"canary-by-header": "X-Canary"},
            "canaryIngressAnnotations": {"example.com/team": "shop"}
        }}
    }));
    assert_only(rollout(&spec), &[]);
    let several = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"nginx": {"stableIngresses": ["web", "web-internal"]}}
    }));
    assert_only(rollout(&several), &[]);
    let wrong = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"nginx": {
            "stableIngress": "Web",
            "stableIngresses": ["a", "a"],
            "additionalIngressAnnotations": {"nginx.ingress.kubernetes.io/canary-by-header": "X", "canary-weight": "5"},
            "stickySession": true
        }}
    }));
    assert_only(
        rollout(&wrong),
        &[
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.nginx.additionalIngressAnnotations",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.nginx.additionalIngressAnnotations",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.nginx.stableIngress",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.nginx.stableIngresses",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.nginx.stableIngresses[1]",
            ),
            (
                Unsup,
                "spec.strategy.canary.trafficRouting.nginx.stickySession",
            ),
        ],
    );
    let none = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"nginx": {}}
    }));
    assert_only(
        rollout(&none),
        &[(
            Required,
            "spec.strategy.canary.trafficRouting.nginx.stableIngress",
        )],
    );
}

#[test]
fn smi_routing_takes_argos_fields_and_its_defaults() {
    let bare = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"smi": {}}
    }));
    assert_only(rollout(&bare), &[]);
    let named = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"smi": {"rootService": "web", "trafficSplitName": "web-split"}}
    }));
    assert_only(rollout(&named), &[]);
    let wrong = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"smi": {"rootService": "web-canary", "trafficSplitName": "Web Split", "backends": []}}
    }));
    assert_only(
        rollout(&wrong),
        &[
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.smi.rootService",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.smi.trafficSplitName",
            ),
            (Unsup, "spec.strategy.canary.trafficRouting.smi.backends"),
        ],
    );
}

#[test]
fn several_routers_are_allowed_and_each_but_subset_level_istio_needs_both_services() {
    // Argo's "multiple providers": NGINX for the traffic that comes in, SMI inside the mesh.
    let spec = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"smi": {}, "nginx": {"stableIngress": "web"}}
    }));
    assert_only(rollout(&spec), &[]);
    // Subset-level Istio needs no Services; beside NGINX, NGINX still does.
    let spec = rollout_with_canary(json!({
        "trafficRouting": {
            "istio": {"virtualService": {"name": "web"},
                "destinationRule": {"name": "web", "canarySubsetName": "canary", "stableSubsetName": "stable"}},
            "nginx": {"stableIngress": "web"}}
    }));
    assert_only(
        rollout(&spec),
        &[
            (Required, "spec.strategy.canary.canaryService"),
            (Required, "spec.strategy.canary.stableService"),
        ],
    );
}

#[test]
fn istio_host_level_needs_both_services_and_subset_level_does_not() {
    let host_level = rollout_with_canary(json!({
        "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
    }));
    assert_only(
        rollout(&host_level),
        &[
            (Required, "spec.strategy.canary.canaryService"),
            (Required, "spec.strategy.canary.stableService"),
        ],
    );
    let subset_level = rollout_with_canary(json!({
        "trafficRouting": {"istio": {
            "virtualService": {"name": "web"},
            "destinationRule": {"name": "web", "canarySubsetName": "canary", "stableSubsetName": "stable"}
        }}
    }));
    assert_only(rollout(&subset_level), &[]);
}

#[test]
fn istio_routing_is_checked_field_by_field() {
    let spec = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"istio": {
            "virtualService": {"name": "Web", "tlsRoutes": [{}], "tcpRoutes": [{"port": 70000}], "retries": 3},
            "virtualServices": [{"name": "api", "routes": ["a", "a"]}],
            "destinationRule": {"name": "web", "canarySubsetName": "v", "stableSubsetName": "v"}
        }}
    }));
    assert_only(
        rollout(&spec),
        &[
            (
                Required,
                "spec.strategy.canary.trafficRouting.istio.virtualService.tlsRoutes[0]",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.istio.destinationRule.canarySubsetName",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.istio.virtualService.name",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.istio.virtualService.tcpRoutes[0].port",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.istio.virtualServices",
            ),
            (
                Invalid,
                "spec.strategy.canary.trafficRouting.istio.virtualServices[0].routes[1]",
            ),
            (
                Unsup,
                "spec.strategy.canary.trafficRouting.istio.virtualService.retries",
            ),
        ],
    );
    let none = rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"istio": {}}
    }));
    assert_only(
        rollout(&none),
        &[(
            Required,
            "spec.strategy.canary.trafficRouting.istio.virtualService",
        )],
    );
}

#[test]
fn alb_routing_takes_argos_fields_and_reports_what_it_does_not_know() {
    let at = "spec.strategy.canary.trafficRouting.alb";
    let bare = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80}}
    }));
    assert_only(rollout(&bare), &[]);
    let full = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {
            "ingresses": ["web", "web-internal"], "servicePort": 443, "rootService": "web-root",
            "annotationPrefix": "custom.alb.ingress.kubernetes.io",
            "stickinessConfig": {"enabled": true, "durationSeconds": 3600}
        }}
    }));
    assert_only(rollout(&full), &[]);
    let wrong = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {
            "ingress": "Web", "ingresses": ["a", "a"], "servicePort": 0,
            "rootService": "Root", "annotationPrefix": "not a prefix",
            "stickinessConfig": {"enabled": true, "durationSeconds": 604801, "cookie": "x"},
            "targetGroupARN": "arn"
        }}
    }));
    let fields =
        |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("{at}.{n}")).collect() };
    let expected = fields(&[
        "annotationPrefix",
        "ingress",
        "ingresses",
        "ingresses[1]",
        "rootService",
        "servicePort",
        "stickinessConfig.durationSeconds",
        "stickinessConfig.cookie",
        "targetGroupARN",
    ]);
    let kinds = [
        Invalid, Invalid, Invalid, Invalid, Invalid, Invalid, Invalid, Unsup, Unsup,
    ];
    let expected: Vec<(ViolationKind, &str)> = kinds
        .iter()
        .copied()
        .zip(expected.iter().map(String::as_str))
        .collect();
    assert_only(rollout(&wrong), &expected);
    // Stickiness that is off needs no duration in range.
    let off = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80,
            "stickinessConfig": {"enabled": false, "durationSeconds": 0}}}
    }));
    assert_only(rollout(&off), &[]);
    let none = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {"servicePort": 80}}
    }));
    assert_only(
        rollout(&none),
        &[(Required, "spec.strategy.canary.trafficRouting.alb.ingress")],
    );
}

#[test]
fn the_alb_action_name_fits_an_annotation() {
    let long = "s".repeat(56);
    let by_stable = rollout_with_canary(json!({
        "stableService": long, "canaryService": "web-canary",
        "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80}}
    }));
    assert_only(
        rollout(&by_stable),
        &[(Invalid, "spec.strategy.canary.stableService")],
    );
    let by_root = rollout_with_canary(json!({
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80, "rootService": long}}
    }));
    assert_only(
        rollout(&by_root),
        &[(
            Invalid,
            "spec.strategy.canary.trafficRouting.alb.rootService",
        )],
    );
    let fits = rollout_with_canary(json!({
        "stableService": "s".repeat(55), "canaryService": "web-canary",
        "trafficRouting": {"alb": {"ingress": "web", "servicePort": 80}}
    }));
    assert_only(rollout(&fits), &[]);
}

fn routed(extra_routing: serde_json::Value, steps: serde_json::Value) -> RolloutSpec {
    let mut routing = json!({"istio": {"virtualService": {"name": "web", "routes": ["primary"]}},
        "managedRoutes": [{"name": "header"}, {"name": "mirror"}]});
    for (key, value) in extra_routing.as_object().into_iter().flatten() {
        routing[key] = value.clone();
    }
    rollout_with_canary(json!({"stableService": "s", "canaryService": "c",
        "trafficRouting": routing, "steps": steps}))
}

#[test]
fn header_and_mirror_steps_in_argos_shape_are_valid() {
    assert_only(
        rollout(&routed(
            json!({}),
            json!([
                {"setCanaryScale": {"replicas": 1}},
                {"setHeaderRoute": {"name": "header", "match": [
                    {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                    {"headerName": "User-Agent", "headerValue": {"regex": "Mozilla(.*)"}}]}},
                {"setMirrorRoute": {"name": "mirror", "percentage": 35,
                    "match": [{"method": {"exact": "GET"}, "path": {"prefix": "/"}}]}},
                {"pause": {}},
                {"setHeaderRoute": {"name": "header"}},
                {"setMirrorRoute": {"name": "mirror"}}
            ]),
        )),
        &[],
    );
}

#[test]
fn a_route_step_must_name_a_managed_route() {
    assert_only(
        rollout(&routed(
            json!({}),
            json!([{"setHeaderRoute": {"name": "other", "match": [
                {"headerName": "x", "headerValue": {"exact": "y"}}]}}]),
        )),
        &[(Invalid, "spec.strategy.canary.steps[0].setHeaderRoute.name")],
    );
    let without_router = rollout_with_canary(json!({"steps": [{"setMirrorRoute": {"name": "m"}}]}));
    assert_only(
        rollout(&without_router),
        &[(Invalid, "spec.strategy.canary.steps[0].setMirrorRoute.name")],
    );
}

#[test]
fn routers_without_managed_routes_refuse_them_by_field() {
    let spec = rollout_with_canary(json!({"stableService": "s", "canaryService": "c",
        "trafficRouting": {"nginx": {"stableIngress": "web"}, "managedRoutes": [{"name": "header"}]}}));
    let violations = rollout(&spec);
    assert_only(
        violations.clone(),
        &[(Invalid, "spec.strategy.canary.trafficRouting.managedRoutes")],
    );
    assert!(
        violations[0]
            .message
            .contains("the nginx router cannot carry")
    );
}

#[test]
fn what_a_hostile_spec_makes_weir_write_is_bounded() {
    let many: Vec<serde_json::Value> = (0..9).map(|i| json!({"name": format!("r{i}")})).collect();
    let violations = rollout(&routed(json!({"managedRoutes": many}), json!([])));
    assert_only(
        violations.clone(),
        &[(Invalid, "spec.strategy.canary.trafficRouting.managedRoutes")],
    );
    assert!(
        violations[0].message.contains("at most 8"),
        "{violations:?}"
    );

    let matches: Vec<serde_json::Value> = (0..17)
        .map(|_| json!({"headerName": "x", "headerValue": {"exact": "y"}}))
        .collect();
    let long_regex = "a".repeat(257);
    let violations = rollout(&routed(
        json!({}),
        json!([
            {"setHeaderRoute": {"name": "header", "match": matches}},
            {"setHeaderRoute": {"name": "header", "match": [
                {"headerName": "x", "headerValue": {"regex": long_regex}},
                {"headerName": "bad name", "headerValue": {"exact": "y", "prefix": "y"}},
                {"headerName": "x", "headerValue": {"regex": "(unclosed"}}]}},
            {"setMirrorRoute": {"name": "mirror", "percentage": 101, "match": [{}]}}
        ]),
    ));
    assert_only(
        violations.clone(),
        &[
            (
                Required,
                "spec.strategy.canary.steps[2].setMirrorRoute.match[0]",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[0].setHeaderRoute.match",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[1].setHeaderRoute.match[0].headerValue.regex",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[1].setHeaderRoute.match[1].headerName",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[1].setHeaderRoute.match[1].headerValue",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[1].setHeaderRoute.match[2].headerValue.regex",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[2].setMirrorRoute.percentage",
            ),
        ],
    );
    let text = format!("{violations:?}");
    assert!(
        text.contains("at most 16") && text.contains("at most 256"),
        "{text}"
    );
}

#[test]
fn a_managed_route_may_not_be_the_weighted_route() {
    assert_only(
        rollout(&routed(
            json!({"managedRoutes": [{"name": "primary"}]}),
            json!([]),
        )),
        &[(
            Invalid,
            "spec.strategy.canary.trafficRouting.managedRoutes[0].name",
        )],
    );
}

#[test]
fn gateway_api_http_routes_take_header_and_mirror_routes_they_can_write() {
    let gateway = |routing: serde_json::Value, steps: serde_json::Value| {
        rollout(&rollout_with_canary(
            json!({"stableService": "s", "canaryService": "c",
            "trafficRouting": routing, "steps": steps}),
        ))
    };
    let header = json!([{"setHeaderRoute": {"name": "header", "match": [
        {"headerName": "X-Canary", "headerValue": {"prefix": "yes"}}]}}]);
    // Argo's shapes: weir's gatewayAPI, and the plugin's with useHeaderRoutes.
    assert_only(
        gateway(
            json!({"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "header"}]}),
            header.clone(),
        ),
        &[],
    );
    assert_only(
        gateway(
            json!({"plugins": {"argoproj-labs/gatewayAPI": {"httpRoutes": [
                {"name": "a"}, {"name": "b", "useHeaderRoutes": true}]}},
                "managedRoutes": [{"name": "header"}]}),
            header,
        ),
        &[],
    );
    // No HTTPRoute takes them.
    assert_only(
        gateway(
            json!({"gatewayAPI": {"httpRoutes": [{"name": "a"}], "grpcRoute": "g"},
                "managedRoutes": [{"name": "header"}]}),
            json!([]),
        ),
        &[(Invalid, "spec.strategy.canary.trafficRouting.gatewayAPI")],
    );
    // Argo's documented mirror route runs as it is.
    assert_only(
        gateway(
            json!({"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "mirror"}]}),
            json!([{"setMirrorRoute": {"name": "mirror", "percentage": 35, "match": [
                {"method": {"exact": "GET"}, "path": {"prefix": "/"}},
                {"method": {"exact": "GET"}, "path": {"prefix": "/api"}},
                {"headers": {"X-Canary": {"prefix": "yes"}}}]}}]),
        ),
        &[],
    );
    // What an HTTPRoute match cannot carry, and a regex that reads back as a prefix, are
    // refused by field.
    assert_only(
        gateway(
            json!({"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "header"}]}),
            json!([
                {"setMirrorRoute": {"name": "header", "match": [
                    {"method": {"prefix": "G"}},
                    {"method": {"exact": "get"}},
                    {"path": {"prefix": "api"}},
                    {"path": {"exact": "api"}},
                    {"headers": {"X-A": {"regex": "^a.*"}, "X-B": {"regex": "^a..*"}}}]}},
                {"setHeaderRoute": {"name": "header", "match": [
                    {"headerName": "X-Canary", "headerValue": {"regex": "^ye\\.s.*"}},
                    {"headerName": "X-Other", "headerValue": {"regex": "^ye.s.*"}}]}}
            ]),
        ),
        &[
            (
                Invalid,
                "spec.strategy.canary.steps[0].setMirrorRoute.match[0].method",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[0].setMirrorRoute.match[1].method",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[0].setMirrorRoute.match[2].path.prefix",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[0].setMirrorRoute.match[3].path.exact",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[0].setMirrorRoute.match[4].headers.X-A.regex",
            ),
            (
                Invalid,
                "spec.strategy.canary.steps[1].setHeaderRoute.match[0].headerValue.regex",
            ),
        ],
    );
    // The same blocks are Istio's to judge: only Gateway API's limits are refused here.
    assert_only(
        rollout(&rollout_with_canary(
            json!({"stableService": "s", "canaryService": "c",
            "trafficRouting": {"istio": {"virtualService": {"name": "web"}},
                "managedRoutes": [{"name": "mirror"}]},
            "steps": [{"setMirrorRoute": {"name": "mirror", "match": [
                {"method": {"prefix": "G"}}, {"path": {"prefix": "/"}}]}}]}),
        )),
        &[],
    );
}

#[test]
fn beside_istio_every_other_router_must_carry_managed_routes_too() {
    let spec = rollout_with_canary(json!({"stableService": "s", "canaryService": "c",
        "trafficRouting": {"istio": {"virtualService": {"name": "web"}},
            "nginx": {"stableIngress": "web"}, "managedRoutes": [{"name": "header"}]}}));
    let violations = rollout(&spec);
    assert_only(
        violations.clone(),
        &[(Invalid, "spec.strategy.canary.trafficRouting.managedRoutes")],
    );
    assert!(
        violations[0]
            .message
            .contains("the nginx router cannot carry"),
        "{violations:?}"
    );
}

/// Each list of routes or objects a router names, as (field under trafficRouting, the
/// routing with `names` in that list).
fn route_lists(names: &[String]) -> Vec<(&'static str, serde_json::Value)> {
    let named: Vec<serde_json::Value> = names.iter().map(|n| json!({"name": n})).collect();
    let services: Vec<serde_json::Value> = names
        .iter()
        .map(|n| json!({"name": n, "routes": ["primary"]}))
        .collect();
    vec![
        (
            "gatewayAPI.httpRoutes",
            json!({"gatewayAPI": {"httpRoutes": named}}),
        ),
        (
            "gatewayAPI.grpcRoutes",
            json!({"gatewayAPI": {"grpcRoutes": named}}),
        ),
        (
            "nginx.stableIngresses",
            json!({"nginx": {"stableIngresses": names}}),
        ),
        (
            "alb.ingresses",
            json!({"alb": {"ingresses": names, "servicePort": 80}}),
        ),
        (
            "istio.virtualServices",
            json!({"istio": {"virtualServices": services}}),
        ),
    ]
}

fn routing_violations(routing: serde_json::Value) -> Vec<Violation> {
    rollout(&rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c", "trafficRouting": routing
    })))
}

#[test]
fn each_list_of_routes_is_bounded_and_the_refusal_names_field_and_limit() {
    let at = "spec.strategy.canary.trafficRouting";
    for count in [0, 1, routes::MAX_ROUTES, routes::MAX_ROUTES + 1, 1000] {
        let names: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
        for (list, routing) in route_lists(&names) {
            let field = format!("{at}.{list}");
            let violations = routing_violations(routing);
            let refused: Vec<&Violation> = violations.iter().filter(|v| v.field == field).collect();
            if count > routes::MAX_ROUTES {
                assert_eq!(refused.len(), 1, "{list} x{count}: {violations:#?}");
                assert!(
                    refused[0]
                        .message
                        .contains(&format!("at most {}", routes::MAX_ROUTES))
                        && refused[0].message.contains(&count.to_string()),
                    "{refused:?}"
                );
            } else {
                assert_eq!(refused, Vec::<&Violation>::new(), "{list} x{count}");
            }
        }
    }
    let many: Vec<String> = (0..=routes::MAX_ROUTES).map(|i| format!("r{i}")).collect();
    let violations = routing_violations(json!({"istio": {"virtualService": {
        "name": "vs", "routes": many,
        "tcpRoutes": many.iter().map(|_| json!({"port": 80})).collect::<Vec<_>>(),
    }}}));
    assert_only(
        violations,
        &[
            (Invalid, &format!("{at}.istio.virtualService.routes")),
            (Invalid, &format!("{at}.istio.virtualService.tcpRoutes")),
        ],
    );
}

proptest! {
    /// Whatever the names, each list refuses exactly the entries an earlier one repeats.
    #[test]
    fn exactly_the_repeated_entries_of_a_list_are_refused(
        picks in prop::collection::vec(0..4usize, 0..=16),
    ) {
        let names: Vec<String> = picks.iter().map(|p| format!("r{p}")).collect();
        for (list, routing) in route_lists(&names) {
            let violations = routing_violations(routing);
            let twice = violations.iter().filter(|v| v.message.contains("twice")).count();
            let repeats = names.len() - names.iter().collect::<std::collections::BTreeSet<_>>().len();
            prop_assert_eq!(twice, repeats, "{} {:?}: {:#?}", list, names, violations);
        }
    }
}

#[test]
fn a_header_route_beyond_gateway_apis_header_limit_is_refused_naming_it() {
    let matches: Vec<serde_json::Value> = (0..=routes::MAX_GATEWAY_HEADERS)
        .map(|i| json!({"headerName": format!("x-{i}"), "headerValue": {"exact": "y"}}))
        .collect();
    let violations = rollout(&rollout_with_canary(json!({
        "stableService": "s", "canaryService": "c",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "h"}]},
        "steps": [{"setHeaderRoute": {"name": "h", "match": matches}}]
    })));
    assert_only(
        violations.clone(),
        &[(
            Invalid,
            "spec.strategy.canary.steps[0].setHeaderRoute.match",
        )],
    );
    assert!(
        violations[0].message.contains("Gateway API")
            && violations[0].message.contains("at most 16"),
        "{violations:?}"
    );
}

#[test]
fn basic_auth_takes_a_secret_name_or_argos_username_and_password() {
    let with = |basic: serde_json::Value| {
        template_from(json!({
            "args": [{"name": "user", "value": "weir"}, {"name": "password",
                "valueFrom": {"secretKeyRef": {"name": "prom", "key": "password"}}}],
            "metrics": [{"name": "m", "successCondition": "true", "provider": {"prometheus": {
                "query": "up", "authentication": {"basicAuth": basic}}}}]
        }))
    };
    let at = "spec.metrics[0].provider.prometheus.authentication.basicAuth";
    for fine in [
        json!({"secretName": "prom"}),
        json!({"username": "{{args.user}}", "password": "{{args.password}}"}),
        json!({"username": "weir", "password": "literal"}),
    ] {
        assert_only(analysis_template(&with(fine)), &[]);
    }
    assert_only(
        analysis_template(&with(
            json!({"secretName": "prom", "username": "weir", "password": "x"}),
        )),
        &[(Invalid, at)],
    );
    assert_only(analysis_template(&with(json!({}))), &[(Required, at)]);
    assert_only(
        analysis_template(&with(json!({"username": "weir"}))),
        &[(Required, &format!("{at}.password"))],
    );
    assert_only(
        analysis_template(&with(
            json!({"username": "{{args.who}}", "password": "{{args.password}}"}),
        )),
        &[(Invalid, &format!("{at}.username"))],
    );
    // In a ClusterAnalysisTemplate the password is never literal, nor a literal default.
    let literal = with(json!({"username": "weir", "password": "literal"}));
    assert_only(
        cluster_analysis_template(&literal),
        &[(Invalid, &format!("{at}.password"))],
    );
    let mut defaulted = with(json!({"username": "weir", "password": "{{args.password}}"}));
    defaulted.args[1].value_from = None;
    defaulted.args[1].value = Some("literal".into());
    assert_only(
        cluster_analysis_template(&defaulted),
        &[(Invalid, "spec.args[1].value")],
    );
    let from_secret = with(json!({"username": "{{args.user}}", "password": "{{args.password}}"}));
    assert_only(cluster_analysis_template(&from_secret), &[]);
}
