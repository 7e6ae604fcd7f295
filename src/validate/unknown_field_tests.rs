//! No silent drops: an unknown key placed in any object of a manifest that uses every field
//! weir reads is reported at its full path.

use serde_json::{Value, json};

use super::violation::did_you_mean;
use super::{ViolationKind, object_as};

/// Every object of `value` under `path` that has fixed fields (maps of user keys and
/// Kubernetes' own types are left out: an extra key there is not a typo weir can see).
fn objects(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(path.to_owned());
            for (key, child) in map {
                match key.as_str() {
                    // Kubernetes' own types, and maps of names the user chooses.
                    "selector" | "template" | "labels" | "annotations" => {}
                    // A mirror match's header name to its match: each value has fixed fields.
                    "headers" if child.is_object() => {
                        for (name, header) in child.as_object().into_iter().flatten() {
                            objects(header, &format!("{path}.headers.{name}"), out);
                        }
                    }
                    _ => objects(child, &format!("{path}.{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                objects(item, &format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

fn pointer(path: &str) -> String {
    // `spec.a[0].b` -> `/a/0/b` (relative to spec); header names here hold no dots.
    path.trim_start_matches("spec")
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| format!("/{p}"))
        .collect()
}

/// For each object of `spec`: add `zzUnknown` there, and the violations of kind `kind` name it
/// at its full path as unsupported.
fn every_level_reports_an_unknown_field(kind: &str, spec: Value) {
    let baseline = object_as(kind, &spec)
        .expect("a kind weir checks")
        .expect("the fixture parses");
    assert!(
        baseline
            .iter()
            .all(|v| v.kind != ViolationKind::Unsupported),
        "the fixture uses only fields weir reads: {baseline:#?}"
    );
    let mut paths = Vec::new();
    objects(&spec, "spec", &mut paths);
    assert!(
        paths.len() > 15,
        "the fixture reaches every level: {paths:?}"
    );
    for path in paths {
        let mut changed = spec.clone();
        let Some(Value::Object(map)) = changed.pointer_mut(&pointer(&path)) else {
            panic!("{path} is an object of the fixture");
        };
        map.insert("zzUnknown".into(), json!(1));
        let violations = object_as(kind, &changed)
            .expect("a kind weir checks")
            .unwrap_or_else(|e| panic!("{path}: an unknown field must not stop parsing: {e}"));
        let field = format!("{path}.zzUnknown");
        assert!(
            violations
                .iter()
                .any(|v| v.kind == ViolationKind::Unsupported && v.field == field),
            "{kind}: {field} is not reported: {violations:#?}"
        );
    }
}

fn analysis() -> Value {
    json!({
        "templates": [{"templateName": "rate"}, {"templateName": "shared", "clusterScope": true}],
        "args": [
            {"name": "service", "value": "web"},
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "prom", "key": "token"}}},
            {"name": "name", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}}
        ],
        "dryRun": [{"metricName": "latency"}],
        "measurementRetention": [{"metricName": "rate", "limit": 20}],
        "analysisRunMetadata": {"labels": {"team": "web"}, "annotations": {"note": "x"}}
    })
}

fn pod_template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}})
}

#[test]
fn an_unknown_field_anywhere_in_a_canary_rollout_is_named() {
    let mut background = analysis();
    background["startingStep"] = json!(1);
    every_level_reports_an_unknown_field(
        "Rollout",
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template(),
            "strategy": {"canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "trafficRouting": {
                    "gatewayAPI": {"httpRoutes": [{"name": "web", "useHeaderRoutes": true}]},
                    "managedRoutes": [{"name": "beta"}, {"name": "shadow"}]
                },
                "analysis": background,
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "1m"}},
                    {"analysis": analysis()},
                    {"setCanaryScale": {"replicas": 2}},
                    {"setHeaderRoute": {"name": "beta", "match": [
                        {"headerName": "x-beta", "headerValue": {"exact": "yes"}}
                    ]}},
                    {"setMirrorRoute": {"name": "shadow", "percentage": 50, "match": [
                        {"method": {"exact": "GET"}, "path": {"prefix": "/api"},
                         "headers": {"x-user": {"exact": "test"}}}
                    ]}}
                ]
            }}
        }),
    );
}

#[test]
fn an_unknown_field_anywhere_in_a_blue_green_rollout_is_named() {
    for anti_affinity in [
        json!({"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 50}}),
        json!({"requiredDuringSchedulingIgnoredDuringExecution": {}}),
    ] {
        every_level_reports_an_unknown_field(
            "Rollout",
            json!({
                "selector": {"matchLabels": {"app": "web"}},
                "template": pod_template(),
                "strategy": {"blueGreen": {
                    "activeService": "web",
                    "previewService": "web-preview",
                    "prePromotionAnalysis": analysis(),
                    "postPromotionAnalysis": analysis(),
                    "activeMetadata": {"labels": {"role": "active"}},
                    "previewMetadata": {"labels": {"role": "preview"}},
                    "antiAffinity": anti_affinity
                }}
            }),
        );
    }
}

#[test]
fn an_unknown_field_anywhere_in_an_analysis_template_is_named() {
    for kind in ["AnalysisTemplate", "ClusterAnalysisTemplate"] {
        every_level_reports_an_unknown_field(
            kind,
            json!({
                "args": [
                    {"name": "service"},
                    {"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "prom", "key": "tenant"}}}
                ],
                "metrics": [
                    {"name": "rate", "interval": "1m", "count": 3,
                     "successCondition": "result[0] >= 0.95",
                     "provider": {"prometheus": {
                        "address": "http://prometheus:9090",
                        "query": "rate{service=\"{{args.service}}\"}",
                        "headers": [{"key": "X-Scope-OrgID", "value": "{{args.tenant}}"}],
                        "authentication": {"bearerToken": {"name": "prom", "key": "token"}}
                     }}},
                    {"name": "latency", "thresholdRange": {"max": 0.5},
                     "provider": {"prometheus": {
                        "query": "latency",
                        "authentication": {"basicAuth": {"secretName": "prom"}}
                     }}}
                ],
                "dryRun": [{"metricName": "latency"}],
                "measurementRetention": [{"metricName": "*", "limit": 5}]
            }),
        );
    }
}

#[test]
fn a_misspelt_pause_duration_is_named_with_its_path_and_the_field_meant() {
    let spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": pod_template(),
        "strategy": {"canary": {"steps": [{"pause": {"duraton": "10s"}}]}}
    });
    let violations = object_as("Rollout", &spec)
        .expect("checked")
        .expect("parses");
    let [violation] = &violations[..] else {
        panic!("one finding: {violations:#?}");
    };
    assert_eq!(violation.kind, ViolationKind::Unsupported);
    assert_eq!(
        violation.field,
        "spec.strategy.canary.steps[0].pause.duraton"
    );
    assert!(
        violation.message.contains("did you mean duration?"),
        "{violation}"
    );
}

#[test]
fn did_you_mean_finds_near_misses_only() {
    let known: Vec<String> = ["duration", "templates", "args", "dryRun", "limit"]
        .map(String::from)
        .to_vec();
    for (typo, meant) in [
        ("duraton", Some("duration")),
        ("durration", Some("duration")),
        ("udration", Some("duration")),
        ("template", Some("templates")),
        ("dryrun", Some("dryRun")),
        ("DRYRUN", Some("dryRun")),
        ("arg", Some("args")),
        ("limits", Some("limit")),
        ("experiment", None),
        ("x", None),
        ("ags", Some("args")),
        ("abcd", None),
    ] {
        assert_eq!(did_you_mean(typo, &known), meant, "{typo}");
    }
}

#[test]
fn values_that_do_not_parse_are_each_named_and_the_rest_still_checked() {
    let spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": pod_template(),
        "strategy": {"canary": {"steps": [
            {"setWeight": "ten"},
            {"setWeight": 120},
            {"pause": {"duration": [1]}},
            {"analysis": {"templates": [{"clusterScope": "yes"}]}},
            {"pause": {"duraton": "1m"}}
        ]}}
    });
    let violations = object_as("Rollout", &spec)
        .expect("checked")
        .expect("read without the values that do not parse");
    let fields: Vec<(ViolationKind, &str)> = violations
        .iter()
        .map(|v| (v.kind, v.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                ViolationKind::Invalid,
                "spec.strategy.canary.steps[0].setWeight"
            ),
            (
                ViolationKind::Invalid,
                "spec.strategy.canary.steps[1].setWeight"
            ),
            (
                ViolationKind::Invalid,
                "spec.strategy.canary.steps[2].pause.duration"
            ),
            (
                ViolationKind::Invalid,
                "spec.strategy.canary.steps[3].analysis.templates[0]"
            ),
            (
                ViolationKind::Invalid,
                "spec.strategy.canary.steps[3].analysis.templates[0].clusterScope",
            ),
            (
                ViolationKind::Unsupported,
                "spec.strategy.canary.steps[4].pause.duraton"
            ),
        ],
        "{violations:#?}"
    );
}

#[test]
fn a_list_entry_left_out_keeps_the_indices_of_the_entries_after_it() {
    let spec = json!({
        "metrics": [
            {"name": "a", "provider": {"prometheus": {"query": "up"}}, "count": [1]},
            {"provider": {"prometheus": {"query": "up"}}},
            {"name": "c", "successCondition": "true", "provider": {"prometheus": {"query": "up"}}, "interval": 5}
        ]
    });
    let violations = object_as("AnalysisTemplate", &spec)
        .expect("checked")
        .expect("read");
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"spec.metrics[0].count"), "{fields:?}");
    assert!(
        fields.contains(&"spec.metrics[1]"),
        "missing name: {fields:?}"
    );
    assert!(fields.contains(&"spec.metrics[2].interval"), "{fields:?}");
}
