//! weir's CRDs on a real API server: installed as generated, objects accepted with the
//! server's defaults equal to weir's, bad values refused naming the field, and fields weir does
//! not support kept for validation to report.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use support::{TestNamespace, client};
use weir::api::{AnalysisTemplate, ClusterAnalysisTemplate, GitSync, Rollout};
use weir::validate::{self, ViolationKind};

fn example<K: DeserializeOwned>(path: &str) -> K {
    let full = support::repo_root().join(path);
    let text = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("reading {}: {e}", full.display()));
    // The first document: the router examples keep their Services and Ingress beside it.
    let first = serde_yaml_ng::Deserializer::from_str(&text)
        .next()
        .unwrap_or_else(|| panic!("{path} holds no document"));
    K::deserialize(first).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Applies `object` as the test's field manager and returns what the server stored.
async fn apply<K>(api: &Api<K>, object: &K) -> K
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().expect("example has a name");
    api.patch(
        &name,
        &PatchParams::apply("weir-test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

#[tokio::test]
async fn the_installed_crds_are_the_generated_ones_and_structural() {
    let crds: Api<CustomResourceDefinition> = Api::all(client().await);
    for generated in weir::api::crds().expect("CRDs build") {
        let name = generated.name_any();
        let installed = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} is not installed: {e}"));
        let conditions = installed
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        let status = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind)
                .map(|c| c.status.clone())
        };
        assert_eq!(
            status("Established").as_deref(),
            Some("True"),
            "{name} is not Established"
        );
        assert_eq!(
            status("NonStructuralSchema"),
            None,
            "{name} has a non-structural schema"
        );
        // The server fills in listKind (`<Kind>List`) when a CRD leaves it out.
        let mut names = generated.spec.names.clone();
        names
            .list_kind
            .get_or_insert_with(|| format!("{}List", names.kind));
        assert_eq!(
            installed.spec.names, names,
            "{name}: names differ; reinstall with hack/local-cluster.sh up"
        );
        assert_eq!(installed.spec.scope, generated.spec.scope, "{name}: scope");
        for (served, ours) in installed.spec.versions.iter().zip(&generated.spec.versions) {
            assert_eq!(
                served.subresources, ours.subresources,
                "{name}: subresources"
            );
            assert_eq!(
                served.additional_printer_columns, ours.additional_printer_columns,
                "{name}: printer columns"
            );
            assert_eq!(
                served.schema, ours.schema,
                "{name}: the served schema is not the generated one"
            );
            assert!(
                ours.subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some()),
                "{name} has no status subresource"
            );
        }
    }
}

#[tokio::test]
async fn valid_objects_are_accepted_and_read_back_with_the_same_defaults() {
    let ns = TestNamespace::new(&client().await, "valid-objects").await;
    for path in [
        "examples/rollout.yaml",
        "examples/argo-rollouts/canary.yaml",
        "examples/blue-green.yaml",
        "examples/nginx/rollout.yaml",
        "examples/smi/rollout.yaml",
        "examples/alb/rollout.yaml",
    ] {
        let sent: Rollout = example(path);
        let stored = apply(&ns.api::<Rollout>(), &sent).await;
        // Our serde defaults filled the example; the server's schema defaults filled the stored one.
        assert_eq!(
            stored.spec, sent.spec,
            "{path}: the server stored something else"
        );
        assert_eq!(validate::rollout(&stored.spec), vec![], "{path}");
    }
    for path in [
        "examples/analysistemplate.yaml",
        "examples/argo-rollouts/analysistemplate.yaml",
    ] {
        let sent: AnalysisTemplate = example(path);
        let stored = apply(&ns.api::<AnalysisTemplate>(), &sent).await;
        assert_eq!(stored.spec, sent.spec, "{path}");
    }
    let sent: GitSync = example("examples/gitsync.yaml");
    let stored = apply(&ns.api::<GitSync>(), &sent).await;
    assert_eq!(stored.spec, sent.spec);
    assert_eq!(stored.spec.interval, "1m");
    assert!(stored.spec.rollback.on_failure);
}

#[tokio::test]
async fn defaults_are_applied_by_the_server_itself() {
    let ns = TestNamespace::new(&client().await, "server-defaults").await;
    let minimal = serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "minimal"},
        "spec": {
            "selector": {"matchLabels": {"app": "m"}},
            "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "m", "image": "m:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}}
        }
    });
    let api = ns.api::<Rollout>();
    let stored = api
        .patch(
            "minimal",
            &PatchParams::apply("weir-test"),
            &Patch::Apply(&minimal),
        )
        .await
        .expect("a minimal Rollout is accepted");
    let raw = serde_json::to_value(&stored).expect("serializes");
    assert_eq!(raw["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(raw["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        raw["spec"]["strategy"]["canary"]["scaleDownDelaySeconds"],
        30
    );
    assert_eq!(
        raw["spec"]["strategy"]["canary"]["abortScaleDownDelaySeconds"],
        30
    );
}

#[tokio::test]
async fn a_weight_of_150_is_refused_by_the_api_server_naming_the_field() {
    let ns = TestNamespace::new(&client().await, "weight-150").await;
    let mut rollout: Rollout = example("examples/rollout.yaml");
    let canary = rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("example has a canary");
    canary.steps[0].set_weight = Some(150);
    let error = ns
        .api::<Rollout>()
        .create(&PostParams::default(), &rollout)
        .await
        .expect_err("setWeight 150 must be refused");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    // Servers since 1.21 write the index (`steps[0].setWeight`); 1.20 writes `steps.setWeight`.
    assert!(
        [
            "spec.strategy.canary.steps[0].setWeight: Invalid value: 150",
            "spec.strategy.canary.steps.setWeight: Invalid value: 150"
        ]
        .iter()
        .any(|field| status.message.contains(field)),
        "the message does not name the field: {}",
        status.message
    );
    assert!(
        status.message.contains("100"),
        "the message does not name the limit: {}",
        status.message
    );
    assert!(
        ns.api::<Rollout>()
            .get_opt("podinfo")
            .await
            .expect("get")
            .is_none(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn fields_weir_does_not_support_survive_the_server_and_are_reported() {
    let ns = TestNamespace::new(&client().await, "unsupported").await;
    let mut rollout: Rollout = example("examples/rollout.yaml");
    let canary = rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("example has a canary");
    // Deep in a step's experiment: a misspelt weight, which the API server must keep (the
    // schema preserves unknown fields there) so validation can name it.
    canary.steps.push(
        serde_json::from_value(serde_json::json!({"experiment": {"templates": [
            {"name": "x", "specRef": "stable", "wieght": 5}]}}))
        .expect("step"),
    );
    canary.unsupported.insert("maxSurge".into(), "25%".into());
    let stored = apply(&ns.api::<Rollout>(), &rollout).await;
    let violations = validate::rollout(&stored.spec);
    let unsupported: Vec<_> = violations
        .iter()
        .filter(|v| v.kind == ViolationKind::Unsupported)
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        unsupported,
        vec![
            "spec.strategy.canary.maxSurge",
            "spec.strategy.canary.steps[6].experiment.templates[0].wieght"
        ],
        "the server pruned a field instead of keeping it for validation: {violations:#?}"
    );
}

#[tokio::test]
async fn status_and_scale_subresources_work() {
    let ns = TestNamespace::new(&client().await, "subresources").await;
    let api = ns.api::<Rollout>();
    let rollout: Rollout = example("examples/rollout.yaml");
    apply(&api, &rollout).await;
    let status = serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
        "status": {"phase": "Paused", "currentStepIndex": 3, "canaryWeight": 30, "replicas": 4, "selector": "app=podinfo",
                   "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}]}
    });
    api.patch_status(
        "podinfo",
        &PatchParams::apply("weir-test"),
        &Patch::Apply(&status),
    )
    .await
    .expect("status patch");
    let stored = api.get("podinfo").await.expect("get");
    let stored_status = stored.status.clone().expect("status stored");
    assert_eq!(
        stored_status.phase,
        Some(weir::api::rollout::RolloutPhase::Paused)
    );
    assert_eq!(
        (
            stored_status.current_step_index,
            stored_status.canary_weight
        ),
        (Some(3), Some(30))
    );
    assert_eq!(stored_status.pause_conditions.len(), 1);
    assert_eq!(
        stored.spec, rollout.spec,
        "a status patch must not touch the spec"
    );
    let scale = api.get_scale("podinfo").await.expect("scale subresource");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=podinfo".to_string()))
    );
}

#[tokio::test]
async fn cluster_analysis_templates_are_cluster_scoped() {
    let client = client().await;
    let api: Api<ClusterAnalysisTemplate> = Api::all(client);
    let name = format!("t-cluster-{}", std::process::id());
    let template: AnalysisTemplate = example("examples/analysistemplate.yaml");
    let spec = weir::api::analysis::ClusterAnalysisTemplateSpec {
        template: template.spec.clone(),
    };
    let stored = apply(&api, &ClusterAnalysisTemplate::new(&name, spec)).await;
    assert_eq!(stored.metadata.namespace, None);
    assert_eq!(stored.spec.template, template.spec);
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
}
