//! The chart's RBAC, on a real API server that enforces it: the controller, authenticated as
//! the chart's ServiceAccount (with its own token) with exactly the rules in
//! `charts/weir/files/*-rules.yaml`, runs weir's whole GitOps flow; and with any one rule
//! removed, it fails visibly (the API server's "forbidden" in what it reports).
//!
//! Both tenancy modes of the chart: lockdown (its default), where GitSyncs act as the
//! tenant's `weir-gitsync` ServiceAccount and the controller needs only its own rules and
//! `impersonate`; and lockdown off, where it applies Git as itself with `gitops-rules.yaml`.

mod support;

use std::path::PathBuf;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::app::{LIMIT, phase, status_patch, wait_for};
use support::git::GitRepo;
use support::{ControllerProcess, TestNamespace, client, eventually, repo_root};
use weir::api::gitsync::GitSync;
use weir::api::rollout::RolloutPhase;

fn rules(file: &str) -> Vec<PolicyRule> {
    let path = repo_root().join("charts/weir/files").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How GitSyncs act (`values.tenancy.defaultServiceAccount`).
#[derive(Clone, Copy, PartialEq)]
enum Tenancy {
    /// The chart's default: GitSyncs act as the tenant's `weir-gitsync`.
    Lockdown,
    /// Empty: GitSyncs act as the controller.
    Off,
}

/// Every rule of the chart's (Cluster)Role in `tenancy`, in order: `gitops-rules.yaml` only
/// with lockdown off.
fn chart_rules(tenancy: Tenancy) -> Vec<PolicyRule> {
    let mut all = rules("controller-rules.yaml");
    all.extend(rules("impersonate-rules.yaml"));
    if tenancy == Tenancy::Off {
        all.extend(rules("gitops-rules.yaml"));
    }
    all
}

fn describe(rule: &PolicyRule) -> String {
    format!(
        "{:?} {:?} {:?}",
        rule.api_groups.clone().unwrap_or_default(),
        rule.resources.clone().unwrap_or_default(),
        rule.verbs
    )
}

/// How the chart binds the rules (`values.scope`).
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// A ClusterRole and ClusterRoleBinding.
    Cluster,
    /// A Role in the namespace, and a ClusterRole for ClusterAnalysisTemplates only.
    Namespace,
}

/// The chart's ServiceAccount in `ns`, bound to `rules` as `scope` says and to the leader
/// Lease's Role; returns a kubeconfig that authenticates as it.
async fn service_account(ns: &TestNamespace, rules: Vec<PolicyRule>, scope: Scope) -> PathBuf {
    let params = PostParams::default();
    let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    };
    let subject = vec![Subject {
        kind: "ServiceAccount".into(),
        name: "weir".into(),
        namespace: Some(ns.name.clone()),
        api_group: None,
    }];
    ns.api::<ServiceAccount>()
        .create(
            &params,
            &ServiceAccount {
                metadata: meta("weir", None),
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("ServiceAccount");
    let cluster_role = format!("weir-{}", ns.name);
    let cluster_rules = match scope {
        Scope::Cluster => rules,
        Scope::Namespace => {
            ns.api::<Role>()
                .create(
                    &params,
                    &Role {
                        metadata: meta("weir", None),
                        rules: Some(rules),
                    },
                )
                .await
                .expect("Role");
            ns.api::<RoleBinding>()
                .create(
                    &params,
                    &RoleBinding {
                        metadata: meta("weir", None),
                        role_ref: RoleRef {
                            api_group: Some("rbac.authorization.k8s.io".into()),
                            kind: "Role".into(),
                            name: "weir".into(),
                        },
                        subjects: Some(subject.clone()),
                    },
                )
                .await
                .expect("RoleBinding");
            vec![PolicyRule {
                api_groups: Some(vec!["weir.dev".into()]),
                resources: Some(vec!["clusteranalysistemplates".into()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..PolicyRule::default()
            }]
        }
    };
    Api::<ClusterRole>::all(ns.client.clone())
        .create(
            &params,
            &ClusterRole {
                metadata: meta(&cluster_role, None),
                rules: Some(cluster_rules),
                ..ClusterRole::default()
            },
        )
        .await
        .expect("ClusterRole");
    Api::<ClusterRoleBinding>::all(ns.client.clone())
        .create(
            &params,
            &ClusterRoleBinding {
                metadata: meta(&cluster_role, None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: cluster_role.clone(),
                },
                subjects: Some(subject.clone()),
            },
        )
        .await
        .expect("ClusterRoleBinding");
    ns.api::<Role>()
        .create(
            &params,
            &Role {
                metadata: meta("weir-leader", None),
                rules: Some(self::rules("leader-rules.yaml")),
            },
        )
        .await
        .expect("Role");
    ns.api::<RoleBinding>()
        .create(
            &params,
            &RoleBinding {
                metadata: meta("weir-leader", None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "weir-leader".into(),
                },
                subjects: Some(subject),
            },
        )
        .await
        .expect("RoleBinding");
    support::kubeconfig_for_service_account(&ns.client, &ns.name, "weir").await
}

async fn drop_cluster_role(ns: &TestNamespace) {
    let name = format!("weir-{}", ns.name);
    let _ = Api::<ClusterRoleBinding>::all(ns.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(ns.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// The application in Git at `version`: Services, HTTPRoute, a ConfigMap, a Secret, an
/// analysis template reading a Secret argument, and the Rollout; version 2 adds a
/// ServiceAccount. Together they need every rule of the chart.
fn app(version: u32) -> String {
    let mut documents = support::app::routing();
    documents.extend([
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"version": version.to_string()}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-credentials"},
            "stringData": {"token": format!("v{version}")}}),
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "always"},
            "spec": {"args": [{"name": "one", "valueFrom": {"secretKeyRef": {"name": "analysis", "key": "one"}}}],
                "metrics": [{"name": "constant", "count": 1, "successCondition": "result[0] == 1",
                    "provider": {"prometheus": {"query": "vector({{args.one}})"}}}]}}),
        support::app::rollout(
            &format!("web:{version}"),
            json!([{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "always"}]}},
                {"pause": {}}]),
            json!({}),
        ),
    ]);
    if version == 2 {
        documents.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "v2-only"}}));
    }
    support::app::yaml_stream(&documents)
}

/// A namespace with the Secret the analysis reads, a repository at version 1, the chart's
/// ServiceAccount bound to `rules`, and a controller acting as it in `tenancy`.
async fn setup(
    test: &str,
    rules: Vec<PolicyRule>,
    scope: Scope,
    tenancy: Tenancy,
) -> (TestNamespace, GitRepo, ControllerProcess) {
    let ns = TestNamespace::new(&client().await, test).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "analysis"},
        "stringData": {"one": "1"}});
    support::app::apply(&ns, secret).await;
    let repo = GitRepo::new(&ns.name);
    repo.commit("web 1", &[("deploy/app.yaml", &app(1))]);
    let kubeconfig = service_account(&ns, rules, scope).await;
    let prometheus = support::prometheus_url();
    let args = [
        "--metrics-addr",
        "127.0.0.1:0",
        "--prometheus-url",
        &prometheus,
        "--leader-elect",
        "--lease-namespace",
        &ns.name,
    ];
    let env = [("KUBECONFIG", kubeconfig.as_path())];
    let controller = match tenancy {
        Tenancy::Lockdown => ControllerProcess::start_with_env(&ns.name, &args, &env),
        Tenancy::Off => ControllerProcess::start_unlocked(&ns.name, &args, &env),
    };
    support::app::git_sync(&ns, &repo.file_url(), json!({})).await;
    notifications(&ns).await;
    (ns, repo, controller)
}

/// A Notifier whose receiver is not there, and a rule sending it every Rollout event: the
/// notification rules are used (watched, and the Notifier's status written to say the
/// receiver cannot be reached) however the flow goes.
async fn notifications(ns: &TestNamespace) {
    let apply = PatchParams::apply("weir-test").force();
    let notifier = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Notifier",
        "metadata": {"name": "hook"},
        "spec": {"type": "generic", "address": format!("http://127.0.0.1:{}/", support::free_port())}});
    ns.api::<weir::api::notification::Notifier>()
        .patch("hook", &apply, &Patch::Apply(&notifier))
        .await
        .unwrap_or_else(|e| panic!("a Notifier: {e}"));
    let rule = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "NotificationRule",
        "metadata": {"name": "all"},
        "spec": {"notifierRef": {"name": "hook"}, "eventSources": [{"kind": "Rollout"}]}});
    ns.api::<weir::api::notification::NotificationRule>()
        .patch("all", &apply, &Patch::Apply(&rule))
        .await
        .unwrap_or_else(|e| panic!("a NotificationRule: {e}"));
}

async fn setting(ns: &TestNamespace) -> Option<String> {
    let found = ns.api::<ConfigMap>().get_opt("settings").await.ok()??;
    found.data?.get("version").cloned()
}

/// Where weir tells of a refusal: its log, or the status of what it manages (an analysis
/// measurement's error, a GitSync's condition, a Rollout's).
async fn forbidden_said(ns: &TestNamespace) -> Option<String> {
    let log = ControllerProcess::log(&ns.name);
    if let Some(line) = log.lines().find(|l| l.contains("forbidden")) {
        return Some(line.to_owned());
    }
    let list = kube::api::ListParams::default();
    let statuses = [
        serde_json::to_string(
            &ns.api::<weir::api::AnalysisRun>()
                .list(&list)
                .await
                .ok()?
                .items,
        ),
        serde_json::to_string(&ns.api::<weir::api::Rollout>().list(&list).await.ok()?.items),
        serde_json::to_string(&ns.api::<GitSync>().list(&list).await.ok()?.items),
    ];
    statuses
        .into_iter()
        .flatten()
        .find(|text| text.contains("forbidden"))
}

#[tokio::test]
async fn the_controller_runs_the_whole_flow_with_exactly_the_charts_rules() {
    whole_flow("rbac", Scope::Cluster, Tenancy::Lockdown).await;
}

#[tokio::test]
async fn in_namespace_scope_the_same_rules_in_a_role_are_enough() {
    whole_flow("rbac-ns", Scope::Namespace, Tenancy::Lockdown).await;
}

#[tokio::test]
async fn with_lockdown_off_the_gitops_rules_let_the_controller_apply_git_itself() {
    whole_flow("rbac-open", Scope::Cluster, Tenancy::Off).await;
}

async fn whole_flow(test: &str, scope: Scope, tenancy: Tenancy) {
    let (ns, repo, _controller) = setup(test, chart_rules(tenancy), scope, tenancy).await;
    wait_for(&ns, "v1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    repo.commit("web 2", &[("deploy/app.yaml", &app(2))]);
    // A canary through its analysis (a Secret argument, a run and its status) to the pause.
    wait_for(&ns, "v2's canary paused after its analysis", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(2)
    })
    .await;
    assert_eq!(setting(&ns).await.as_deref(), Some("2"));
    // An abort: the GitSync rejects v2 and re-applies v1, pruning what v2 added.
    status_patch(&ns, json!({"status": {"abort": true}})).await;
    eventually("v1 back and v2's ServiceAccount pruned", LIMIT, || async {
        let pruned = ns
            .api::<ServiceAccount>()
            .get_opt("v2-only")
            .await
            .ok()?
            .is_none();
        (setting(&ns).await.as_deref() == Some("1") && pruned).then_some(())
    })
    .await;
    wait_for(&ns, "Healthy on v1 again", |r| {
        phase(r) == Some(RolloutPhase::Healthy) && r.status.as_ref().is_some_and(|s| !s.abort)
    })
    .await;
    assert_eq!(
        forbidden_said(&ns).await,
        None,
        "the chart's rules are enough"
    );
    drop_cluster_role(&ns).await;
}

/// Whether `rule` is the one only a route in another namespace needs (reading that
/// namespace's ReferenceGrants): the whole flow keeps its route at home, so removing the rule
/// there would show nothing. `a_route_elsewhere_needs_exactly_the_reference_grant_rule`
/// exercises it instead.
fn only_for_routes_elsewhere(rule: &PolicyRule) -> bool {
    rule.resources
        .as_deref()
        .is_some_and(|resources| resources == ["referencegrants"])
}

/// Whether `rule` is the one only a Rollout on another router needs (NGINX's and ALB's
/// Ingresses, SMI's TrafficSplits, Istio's VirtualServices and DestinationRules, Gateway
/// API's GRPCRoutes): the whole flow routes with one HTTPRoute, so removing it there would
/// show nothing.
/// `each_router_needs_exactly_its_rule` exercises each of them instead.
fn only_for_other_routers(rule: &PolicyRule) -> bool {
    rule.resources.as_deref().is_some_and(|resources| {
        resources == ["ingresses"]
            || resources == ["trafficsplits"]
            || resources == ["virtualservices", "destinationrules"]
            || resources == ["grpcroutes"]
    })
}

/// Whether `rule` is the one only ephemeral metadata needs (relabelling pods in place): the
/// whole flow's canary has none, so removing it there would show nothing.
/// `ephemeral_metadata_needs_exactly_the_pod_rule` exercises it instead.
fn only_for_ephemeral_metadata(rule: &PolicyRule) -> bool {
    rule.resources
        .as_deref()
        .is_some_and(|resources| resources == ["pods"])
}

/// Under lockdown every rule of the controller's own and `impersonate` are needed; with
/// lockdown off, each of `gitops-rules.yaml` too (the others were shown needed already).
#[tokio::test]
async fn without_any_one_rule_the_controller_fails_visibly() {
    let locked = chart_rules(Tenancy::Lockdown);
    let open = chart_rules(Tenancy::Off);
    assert_eq!(
        locked
            .iter()
            .filter(|r| only_for_routes_elsewhere(r))
            .count(),
        1,
        "the ReferenceGrant rule is left out below, and tested on its own"
    );
    assert_eq!(
        locked.iter().filter(|r| only_for_other_routers(r)).count(),
        4,
        "the NGINX, SMI, Istio and GRPCRoute rules are left out below (each is tested on its own)"
    );
    assert_eq!(
        locked
            .iter()
            .filter(|r| only_for_ephemeral_metadata(r))
            .count(),
        1,
        "the pod rule is left out below, and tested on its own"
    );
    assert_eq!(
        locked.iter().filter(|r| only_for_job_metrics(r)).count(),
        1,
        "the Job rule is left out below, and tested on its own"
    );
    let cases = (0..locked.len())
        .filter(|&index| {
            !only_for_routes_elsewhere(&locked[index])
                && !only_for_other_routers(&locked[index])
                && !only_for_ephemeral_metadata(&locked[index])
                && !only_for_job_metrics(&locked[index])
        })
        .map(|left_out| (Tenancy::Lockdown, left_out))
        .chain((locked.len()..open.len()).map(|left_out| (Tenancy::Off, left_out)));
    let runs = cases.map(|(tenancy, left_out)| {
        let mut rules = chart_rules(tenancy);
        let missing = rules.remove(left_out);
        async move {
            let (ns, repo, _controller) =
                setup(&format!("rbac-{left_out}"), rules, Scope::Cluster, tenancy).await;
            // Drive the flow as far as it goes: the step that needs the rule says so.
            let what = format!("a visible failure without {}", describe(&missing));
            let said = eventually(&what, LIMIT, || async { forbidden_said(&ns).await });
            let driver = async {
                // Push the flow on: a second version and an abort reach the rules the first
                // version does not.
                if let Ok(rollout) =
                    tokio::time::timeout(std::time::Duration::from_secs(20), async {
                        loop {
                            if let Ok(Some(r)) = ns.api::<weir::api::Rollout>().get_opt("web").await
                                && phase(&r) == Some(RolloutPhase::Healthy)
                            {
                                return r;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    })
                    .await
                {
                    drop(rollout);
                    repo.commit("web 2", &[("deploy/app.yaml", &app(2))]);
                    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
                    let _ = ns
                        .api::<weir::api::Rollout>()
                        .patch_status(
                            "web",
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"abort": true}})),
                        )
                        .await;
                }
            };
            let (line, ()) = futures::join!(said, driver);
            drop_cluster_role(&ns).await;
            (describe(&missing), line)
        }
    });
    for (rule, line) in join_all(runs).await {
        assert!(line.contains("forbidden"), "without {rule}: {line}");
    }
}

/// A Rollout whose route is in another namespace, allowed by a ReferenceGrant there, run by
/// the chart's ServiceAccount: it moves the route with the chart's rules, and without the rule
/// for ReferenceGrants it says "forbidden".
#[tokio::test]
async fn a_route_elsewhere_needs_exactly_the_reference_grant_rule() {
    let all = chart_rules(Tenancy::Lockdown);
    let without: Vec<PolicyRule> = all
        .iter()
        .filter(|r| !only_for_routes_elsewhere(r))
        .cloned()
        .collect();
    let (with_rule, without_rule) = futures::join!(
        route_elsewhere("rbac-grant", all),
        route_elsewhere("rbac-nogrant", without)
    );
    assert_eq!(with_rule, None, "the chart's rules are enough");
    let said = without_rule.unwrap_or_default();
    assert!(said.contains("forbidden"), "{said}");
}

/// Runs the Rollout of `test` with its route in a second namespace as the chart's
/// ServiceAccount bound to `rules`: None once the canary's weight is on the route, or what
/// weir said of a refusal.
async fn route_elsewhere(test: &str, rules: Vec<PolicyRule>) -> Option<String> {
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let edge = TestNamespace::new(&client, &format!("{test}-edge")).await;
    let kubeconfig = service_account(&ns, rules, Scope::Cluster).await;
    let _controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    );
    let [stable, canary, route] = <[serde_json::Value; 3]>::try_from(support::app::routing())
        .unwrap_or_else(|_| panic!("routing() is two Services and a route"));
    support::app::apply(&ns, stable).await;
    support::app::apply(&ns, canary).await;
    support::app::apply(&edge, route).await;
    support::app::grant_routes(&client, &edge.name, &ns.name, None).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let elsewhere = json!({"strategy": {"canary": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "web", "namespace": edge.name}},
        "steps": steps}}});
    support::app::set_image(&ns, "web:1", &steps, &elsewhere).await;
    let routes: Api<gateway_api::apis::standard::httproutes::HttpRoute> =
        Api::namespaced(client.clone(), &edge.name);
    let outcome = eventually("the route moved, or a refusal said", LIMIT, || async {
        if let Some(said) = forbidden_said(&ns).await {
            return Some(Some(said));
        }
        if let Ok(Some(r)) = ns.api::<weir::api::Rollout>().get_opt("web").await
            && phase(&r) == Some(RolloutPhase::Healthy)
        {
            support::app::set_image(&ns, "web:2", &steps, &elsewhere).await;
        }
        let route = routes.get("web").await.ok()?;
        (support::app::weighted_canary(&route) == Some(20)).then_some(None)
    })
    .await;
    drop_cluster_role(&ns).await;
    outcome
}

/// A blue-green Rollout with `activeMetadata` run by the chart's ServiceAccount: at the
/// switch its new version's pods are relabelled in place with the chart's rules, and weir
/// says "forbidden" without the pod rule.
#[tokio::test]
async fn ephemeral_metadata_needs_exactly_the_pod_rule() {
    needs_exactly(
        only_for_ephemeral_metadata,
        ["rbac-pods", "rbac-nopods"],
        relabelled,
    )
    .await;
}

/// Runs `scenario` twice at once, as the chart's ServiceAccount: with the chart's rules, which
/// must be enough (None), and without the one rule `only_for` picks, when weir must say
/// "forbidden".
async fn needs_exactly<F, Fut>(
    only_for: fn(&PolicyRule) -> bool,
    tests: [&'static str; 2],
    scenario: F,
) where
    F: Fn(&'static str, Vec<PolicyRule>) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let all = chart_rules(Tenancy::Lockdown);
    let without: Vec<PolicyRule> = all.iter().filter(|r| !only_for(r)).cloned().collect();
    assert_eq!(without.len() + 1, all.len(), "exactly one rule is left out");
    let [with_test, without_test] = tests;
    let (with_rule, without_rule) =
        futures::join!(scenario(with_test, all), scenario(without_test, without));
    assert_eq!(with_rule, None, "the chart's rules are enough");
    let said = without_rule.unwrap_or_default();
    assert!(said.contains("forbidden"), "{said}");
}

/// A test namespace and weir's controller in it, run as the chart's ServiceAccount bound to
/// `rules` cluster-wide.
async fn controller_as(test: &str, rules: Vec<PolicyRule>) -> (TestNamespace, ControllerProcess) {
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let kubeconfig = service_account(&ns, rules, Scope::Cluster).await;
    let controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    );
    (ns, controller)
}

/// Releases web:1 then web:2 of a blue-green Rollout with `activeMetadata` as the chart's
/// ServiceAccount bound to `rules`: None once web:2's pods carry it (relabelled at the
/// switch; pods created beforehand lacked it), or what weir said of a refusal.
async fn relabelled(test: &'static str, rules: Vec<PolicyRule>) -> Option<String> {
    use k8s_openapi::api::core::v1::{Pod, Service};
    let (ns, _controller) = controller_as(test, rules).await;
    for service in ["web-active", "web-preview"] {
        let service: Service = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .expect("a Service");
        ns.api::<Service>()
            .create(&PostParams::default(), &service)
            .await
            .expect("the Service");
    }
    let rollout = |image: &str| {
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"blueGreen": {"activeService": "web-active",
                "previewService": "web-preview", "activeMetadata": {"labels": {"role": "active"}}}}
        }})
    };
    support::app::apply(&ns, rollout("web:1")).await;
    let outcome = eventually(
        "web:2's pods relabelled, or a refusal said",
        LIMIT,
        || async {
            if let Some(said) = forbidden_said(&ns).await {
                return Some(Some(said));
            }
            let r = ns.api::<weir::api::Rollout>().get_opt("web").await.ok()??;
            let image = r
                .spec
                .template
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone();
            if phase(&r) == Some(RolloutPhase::Healthy) && image.as_deref() == Some("web:1") {
                support::app::apply(&ns, rollout("web:2")).await;
                return None;
            }
            // web:2's own pods, once it is the stable version (until then the stable is
            // web:1, whose pods were created with the metadata).
            let web2 = weir::template_hash::of(&r.spec.template);
            let hash = r
                .status?
                .stable_rs
                .filter(|h| *h == web2 && image.as_deref() == Some("web:2"))?;
            let selector = format!("rollouts-pod-template-hash={hash}");
            let pods = ns
                .api::<Pod>()
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .ok()?;
            let active = |pod: &Pod| {
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("role"))
                    .map(String::as_str)
                    == Some("active")
            };
            (pods.items.len() == 2 && pods.items.iter().all(active)).then_some(None)
        },
    )
    .await;
    drop_cluster_role(&ns).await;
    outcome
}

/// An NGINX, an SMI, an Istio and an ALB Rollout run by the chart's ServiceAccount: each
/// moves its router to the first step's weight with the chart's rules, and says "forbidden"
/// without its router's rule.
#[tokio::test]
async fn each_router_needs_exactly_its_rule() {
    let all = chart_rules(Tenancy::Lockdown);
    let without = |resource: &str| -> Vec<PolicyRule> {
        all.iter()
            .filter(|r| r.resources.as_deref() != Some(&[resource.to_owned()][..]))
            .cloned()
            .collect()
    };
    let without_istio: Vec<PolicyRule> = all
        .iter()
        .filter(|r| {
            r.resources.as_deref()
                != Some(&["virtualservices".to_owned(), "destinationrules".to_owned()][..])
        })
        .cloned()
        .collect();
    assert_eq!(without("ingresses").len() + 1, all.len());
    assert_eq!(without("trafficsplits").len() + 1, all.len());
    assert_eq!(without_istio.len() + 1, all.len());
    assert_eq!(without("grpcroutes").len() + 1, all.len());
    let (nginx, smi, istio, grpc, alb) = futures::join!(
        other_router("rbac-nginx", all.clone(), Router::Nginx),
        other_router("rbac-smi", all.clone(), Router::Smi),
        other_router("rbac-istio", all.clone(), Router::Istio),
        other_router("rbac-grpc", all.clone(), Router::Grpc),
        other_router("rbac-alb", all.clone(), Router::Alb),
    );
    assert_eq!(nginx, None, "the chart's rules are enough for NGINX");
    assert_eq!(smi, None, "the chart's rules are enough for SMI");
    assert_eq!(istio, None, "the chart's rules are enough for Istio");
    assert_eq!(grpc, None, "the chart's rules are enough for a GRPCRoute");
    assert_eq!(alb, None, "the chart's rules are enough for ALB");
    let refused = futures::join!(
        other_router("rbac-noingress", without("ingresses"), Router::Nginx),
        other_router("rbac-nosplit", without("trafficsplits"), Router::Smi),
        other_router("rbac-noistio", without_istio, Router::Istio),
        other_router("rbac-nogrpc", without("grpcroutes"), Router::Grpc),
        other_router("rbac-noalb", without("ingresses"), Router::Alb),
    );
    for said in [refused.0, refused.1, refused.2, refused.3, refused.4] {
        let said = said.unwrap_or_default();
        assert!(said.contains("forbidden"), "{said}");
    }
}

#[derive(Clone, Copy)]
enum Router {
    Nginx,
    Smi,
    /// Host-level: a VirtualService between the two Services.
    Istio,
    /// Gateway API: a GRPCRoute between the two Services.
    Grpc,
    /// AWS ALB: the action annotation on an Ingress.
    Alb,
}

/// Runs a canary of the Rollout `web` on `router` as the chart's ServiceAccount bound to
/// `rules`: None once the router carries the first step's weight, or what weir said of a
/// refusal.
async fn other_router(test: &str, rules: Vec<PolicyRule>, router: Router) -> Option<String> {
    use gateway_api::apis::standard::grpcroutes::GrpcRoute;
    use k8s_openapi::api::networking::v1::Ingress;
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let kubeconfig = service_account(&ns, rules, Scope::Cluster).await;
    let _controller = ControllerProcess::start_with_env(
        &ns.name,
        &["--metrics-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    );
    for service in ["web-stable", "web-canary"] {
        support::app::apply(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    let virtual_services: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &weir::traffic::istio::virtual_service_resource(),
    );
    let routing = match router {
        Router::Nginx => {
            let ingress: Ingress = serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}
            }))
            .expect("an Ingress");
            ns.api::<Ingress>()
                .create(&PostParams::default(), &ingress)
                .await
                .expect("the stable Ingress");
            json!({"nginx": {"stableIngress": "web"}})
        }
        Router::Smi => json!({"smi": {}}),
        Router::Istio => {
            let service = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": "web"},
                "spec": {"hosts": ["web"], "http": [{"route": [
                    {"destination": {"host": "web-stable"}, "weight": 100},
                    {"destination": {"host": "web-canary"}, "weight": 0}]}]}});
            virtual_services
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(service).expect("a VirtualService"),
                )
                .await
                .expect("the VirtualService");
            json!({"istio": {"virtualService": {"name": "web"}}})
        }
        Router::Grpc => {
            let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                "metadata": {"name": "web"},
                "spec": {"rules": [{"backendRefs": [
                    {"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}]}});
            ns.api::<GrpcRoute>()
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(route).expect("a GRPCRoute"),
                )
                .await
                .expect("the GRPCRoute");
            json!({"gatewayAPI": {"grpcRoute": "web"}})
        }
        Router::Alb => {
            let ingress: Ingress = serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web-stable", "port": {"name": "use-annotation"}}}}]}}]}
            }))
            .expect("an Ingress");
            ns.api::<Ingress>()
                .create(&PostParams::default(), &ingress)
                .await
                .expect("the ALB Ingress");
            json!({"alb": {"ingress": "web", "servicePort": 80}})
        }
    };
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    let extra = json!({"strategy": {"canary": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": routing, "steps": steps}}});
    support::app::set_image(&ns, "web:1", &steps, &extra).await;
    let splits: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &weir::traffic::smi::api_resource("v1alpha3"),
    );
    let outcome = eventually("the canary's weight, or a refusal said", LIMIT, || async {
        if let Some(said) = forbidden_said(&ns).await {
            return Some(Some(said));
        }
        if let Ok(Some(r)) = ns.api::<weir::api::Rollout>().get_opt("web").await
            && phase(&r) == Some(RolloutPhase::Healthy)
        {
            support::app::set_image(&ns, "web:2", &steps, &extra).await;
        }
        let weight = match router {
            Router::Nginx => {
                let canary = ns.api::<Ingress>().get_opt("web-web-canary").await.ok()??;
                canary
                    .metadata
                    .annotations?
                    .get("nginx.ingress.kubernetes.io/canary-weight")?
                    .parse::<i32>()
                    .ok()?
            }
            Router::Smi => {
                let split = splits.get_opt("web").await.ok()??;
                weir::traffic::smi::canary_share(&split.data["spec"], "web-stable", "web-canary")?
            }
            Router::Grpc => {
                let route = ns.api::<GrpcRoute>().get("web").await.ok()?;
                let backends = route.spec.rules?.first()?.backend_refs.clone()?;
                backends.iter().find(|b| b.name == "web-canary")?.weight?
            }
            Router::Istio => {
                let service = virtual_services.get("web").await.ok()?;
                i32::try_from(service.data["spec"]["http"][0]["route"][1]["weight"].as_i64()?)
                    .ok()?
            }
            Router::Alb => {
                let ingress = ns.api::<Ingress>().get_opt("web").await.ok()??;
                let annotations = ingress.metadata.annotations?;
                let text = annotations.get("alb.ingress.kubernetes.io/actions.web-stable")?;
                let action = weir::traffic::alb::parse_action(text).ok()??;
                weir::traffic::alb::canary_share(&action, "web-canary")
            }
        };
        (weight == 20).then_some(None)
    })
    .await;
    drop_cluster_role(&ns).await;
    outcome
}

/// Whether `rule` is the one only `job` metrics need (their Jobs): the whole flow measures
/// with Prometheus, and without the rule only the Job watch's refusal would show.
/// `a_job_metric_needs_exactly_the_job_rule` exercises it instead.
fn only_for_job_metrics(rule: &PolicyRule) -> bool {
    rule.resources
        .as_deref()
        .is_some_and(|resources| resources == ["jobs"])
}

/// An AnalysisRun with a `job` metric measured by the chart's ServiceAccount: its Job is
/// made, judged and the run ends Successful with the chart's rules; without the Job rule,
/// weir says "forbidden".
#[tokio::test]
async fn a_job_metric_needs_exactly_the_job_rule() {
    needs_exactly(
        only_for_job_metrics,
        ["rbac-jobs", "rbac-nojobs"],
        job_measured,
    )
    .await;
}

/// Measures one `job` metric as the chart's ServiceAccount bound to `rules`: None once the
/// run is Successful, or what weir said of a refusal.
async fn job_measured(test: &'static str, rules: Vec<PolicyRule>) -> Option<String> {
    use weir::api::analysis::{AnalysisPhase, AnalysisRun};
    let (ns, _controller) = controller_as(test, rules).await;
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisRun", "metadata": {"name": "smoke"},
        "spec": {"metrics": [{"name": "smoke", "provider": {"job": {"spec": {
            "backoffLimit": 0, "template": {"spec": {
                "containers": [{"name": "smoke", "image": "busybox", "command": ["true"]}],
                "restartPolicy": "Never"}}}}}}]}}))
    .expect("a run");
    ns.api::<AnalysisRun>()
        .create(&PostParams::default(), &run)
        .await
        .expect("the run");
    let outcome = eventually("the run Successful, or a refusal said", LIMIT, || async {
        if let Some(said) = forbidden_said(&ns).await {
            return Some(Some(said));
        }
        let run = ns.api::<AnalysisRun>().get_opt("smoke").await.ok()??;
        let phase = run.status.and_then(|s| s.phase);
        (phase == Some(AnalysisPhase::Successful)).then_some(None)
    })
    .await;
    drop_cluster_role(&ns).await;
    outcome
}
