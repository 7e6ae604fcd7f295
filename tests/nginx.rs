//! The NGINX Ingress router on the local control plane: weir's canary Ingress beside the
//! stable one, its `canary-weight` followed by the simulated data plane (`weir-sim traffic`),
//! analysis in Prometheus judging the canary's real share, and every weight watched.

mod support;

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use support::app::{LIMIT, apply, delete_rollout, phase, wait_for};
use support::{
    ControllerProcess, ScrapeTarget, TestNamespace, client, eventually, free_port, kubeconfig_path,
    listening, prometheus_url,
};
use weir::api::rollout::RolloutPhase;

const CANARY_INGRESS: &str = "web-web-canary";

struct Simulator(std::process::Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The simulated data plane for the namespace, scraped by the shared Prometheus.
async fn simulator(ns: &TestNamespace) -> (Simulator, ScrapeTarget) {
    let port = free_port();
    let simulator = Simulator(
        std::process::Command::new(env!("CARGO_BIN_EXE_weir-sim"))
            .args(["traffic", "--namespace", &ns.name, "--rps", "200"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig_path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weir-sim traffic"),
    );
    listening("the traffic simulator", port).await;
    let target = ScrapeTarget::add(&ns.name, &format!("127.0.0.1:{port}"), &[]);
    (simulator, target)
}

fn controller(ns: &TestNamespace) -> ControllerProcess {
    ControllerProcess::start_with(
        &ns.name,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--prometheus-url",
            &prometheus_url(),
        ],
    )
}

/// The Services and the stable Ingress, as a team writes them: the Ingress sends to the
/// stable Service only.
async fn routing(ns: &TestNamespace) {
    for service in ["web-stable", "web-canary"] {
        apply(
            ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    let ingress: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}
    }))
    .expect("an Ingress");
    ns.api::<Ingress>()
        .patch(
            "web",
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&ingress),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the stable Ingress: {e}"));
}

/// The canary's share of all requests over the last 5 seconds must be within `low..=high`,
/// and the canary must answer 95% of its requests.
async fn templates(ns: &TestNamespace) {
    let filter = format!("namespace=\"{}\"", ns.name);
    let share = format!(
        "sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s])) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    let success = format!(
        "sum(rate(http_requests_total{{{filter},service=\"web-canary\",code=\"200\"}}[5s])) / sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s]))"
    );
    for (name, low, high) in [("share-20", 0.17, 0.23), ("share-50", 0.46, 0.54)] {
        apply(
            ns,
            json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": name},
                "spec": {"metrics": [
                    {"name": "canary-share", "initialDelay": "7s", "count": 1,
                     "successCondition": format!("result[0] >= {low} && result[0] <= {high}"),
                     "provider": {"prometheus": {"query": share}}},
                    {"name": "success-rate", "initialDelay": "7s", "count": 1,
                     "successCondition": "result[0] >= 0.95",
                     "provider": {"prometheus": {"query": success}}}
                ]}}),
        )
        .await;
    }
}

/// The Rollout as Argo documents an NGINX canary (only `apiVersion` differs), its canary
/// failing `error_rate` of requests.
fn rollout(image: &str, error_rate: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"},
                    "annotations": {"sim.weir.dev/error-rate": error_rate}},
                "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"nginx": {
                    "stableIngress": "web",
                    "additionalIngressAnnotations": {"canary-by-header": "X-Canary"}}},
                "steps": [
                    {"setWeight": 20},
                    {"analysis": {"templates": [{"templateName": "share-20"}]}},
                    {"setWeight": 50},
                    {"analysis": {"templates": [{"templateName": "share-50"}]}}
                ]}}}})
}

/// Waits until the Rollout is Healthy with `manifest`'s pod template as its stable.
async fn healthy(ns: &TestNamespace, manifest: &Value) -> weir::api::Rollout {
    let template = serde_json::from_value(manifest["spec"]["template"].clone()).expect("template");
    let hash = weir::rollout::template_hash::of(&template);
    wait_for(ns, &format!("Healthy on {hash}"), |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_rs.as_deref()) == Some(hash.as_str())
    })
    .await
}

/// Every canary weight the Ingresses carried, in order, as a watch sees them: the canary
/// Ingress's `canary-weight`, 0 while there is none.
struct CanaryLog {
    seen: Arc<Mutex<Vec<i32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CanaryLog {
    fn start(ns: &TestNamespace) -> CanaryLog {
        let seen = Arc::new(Mutex::new(vec![0]));
        let api = ns.api::<Ingress>();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let weight = match event {
                    Ok(watcher::Event::Apply(i) | watcher::Event::InitApply(i))
                        if i.metadata.name.as_deref() == Some(CANARY_INGRESS) =>
                    {
                        canary_weight(&i)
                    }
                    Ok(watcher::Event::Delete(i))
                        if i.metadata.name.as_deref() == Some(CANARY_INGRESS) =>
                    {
                        0
                    }
                    _ => continue,
                };
                let mut seen = sink.lock().unwrap_or_else(|e| e.into_inner());
                if seen.last() != Some(&weight) {
                    seen.push(weight);
                }
            }
        });
        CanaryLog { seen, task }
    }

    fn weights(&self) -> Vec<i32> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for CanaryLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn annotation<'a>(ingress: &'a Ingress, key: &str) -> Option<&'a str> {
    ingress
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// -1 for a canary Ingress without a readable weight, so the log shows it.
fn canary_weight(ingress: &Ingress) -> i32 {
    annotation(ingress, "nginx.ingress.kubernetes.io/canary-weight")
        .and_then(|w| w.parse().ok())
        .unwrap_or(-1)
}

/// The canary's share of the simulated requests over the last 5 seconds, once Prometheus
/// has it and `check` accepts it.
async fn share(ns: &TestNamespace, check: impl Fn(f64) -> bool) -> f64 {
    let prometheus =
        prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("url");
    let filter = format!("namespace=\"{}\"", ns.name);
    let query = format!(
        "(sum(rate(http_requests_total{{{filter},service=\"web-canary\"}}[5s])) or vector(0)) / sum(rate(http_requests_total{{{filter}}}[5s]))"
    );
    eventually(&format!("Prometheus: {query}"), LIMIT, || async {
        let response = prometheus.query(query.as_str()).get().await.ok()?;
        let value = response.data().as_vector()?.first()?.sample().value();
        check(value).then_some(value)
    })
    .await
}

#[tokio::test]
async fn an_nginx_canary_with_analysis_walks_its_weights_to_healthy() {
    let ns = TestNamespace::new(&client().await, "nginx").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0")).await;
    healthy(&ns, &rollout("web:1", "0")).await;
    let ingresses = ns.api::<Ingress>();
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "no canary Ingress while nothing is being rolled out"
    );
    let log = CanaryLog::start(&ns);

    apply(&ns, rollout("web:2", "0")).await;
    let at_20 = eventually("the canary Ingress at 20", LIMIT, || async {
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .ok()
            .flatten()
            .filter(|i| canary_weight(i) == 20)
    })
    .await;
    // The canary Ingress as weir makes it: the stable Ingress's rule sent to the canary
    // Service, NGINX's canary annotations, the Rollout's extra annotation under the prefix.
    assert_eq!(
        annotation(&at_20, "nginx.ingress.kubernetes.io/canary"),
        Some("true")
    );
    assert_eq!(
        annotation(&at_20, "nginx.ingress.kubernetes.io/canary-by-header"),
        Some("X-Canary")
    );
    let spec = at_20.spec.clone().expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rules = spec.rules.unwrap_or_default();
    let paths: Vec<(Option<String>, String, Option<String>)> = rules
        .iter()
        .flat_map(|r| {
            r.http.iter().flat_map(|h| &h.paths).map(|p| {
                (
                    r.host.clone(),
                    p.path.clone().unwrap_or_default(),
                    p.backend.service.as_ref().map(|s| s.name.clone()),
                )
            })
        })
        .collect();
    assert_eq!(
        paths,
        [(
            Some("shop.example".to_owned()),
            "/".to_owned(),
            Some("web-canary".to_owned())
        )]
    );
    let owner = at_20
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(
        owner
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str(), o.controller))
            .collect::<Vec<_>>(),
        [("Rollout", "web", Some(true))]
    );
    let managers: Vec<String> = at_20
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["weir-rollout"]);
    let stable = ingresses.get("web").await.expect("the stable Ingress");
    assert!(
        stable.metadata.annotations.is_none(),
        "the stable Ingress is only read"
    );

    healthy(&ns, &rollout("web:2", "0")).await;
    assert_eq!(
        log.weights(),
        vec![0, 20, 50, 100, 0],
        "every weight the canary Ingress carried, in order"
    );
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "the canary Ingress is gone once the rollout is done"
    );
    let runs = ns
        .api::<weir::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await
        .expect("runs")
        .items;
    let phases: Vec<_> = runs
        .iter()
        .map(|r| r.status.as_ref().and_then(|s| s.phase))
        .collect();
    assert_eq!(
        phases,
        [
            Some(weir::api::analysis::AnalysisPhase::Successful),
            Some(weir::api::analysis::AnalysisPhase::Successful)
        ],
        "both steps' analyses saw the canary's share in Prometheus"
    );
    // All traffic on the new stable, none through the canary Ingress any more.
    share(&ns, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_failing_nginx_canary_aborts_to_stable_and_leaves_nothing_behind() {
    let ns = TestNamespace::new(&client().await, "nginx-abort").await;
    let (_simulator, _target) = simulator(&ns).await;
    let _controller = controller(&ns);
    routing(&ns).await;
    templates(&ns).await;
    apply(&ns, rollout("web:1", "0")).await;
    healthy(&ns, &rollout("web:1", "0")).await;
    let log = CanaryLog::start(&ns);

    apply(&ns, rollout("web:2", "0.5")).await;
    // The canary's share reaches the data plane before analysis judges it.
    share(&ns, |v| (0.17..=0.23).contains(&v)).await;
    let aborted = wait_for(&ns, "the analysis to abort the rollout", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
            && r.status.as_ref().is_some_and(|s| s.abort)
            && r.status.as_ref().and_then(|s| s.canary_weight) == Some(0)
    })
    .await;
    let cause = aborted.status.and_then(|s| s.abort_cause).expect("a cause");
    assert_eq!(
        (cause.reason.as_str(), cause.metric.as_deref()),
        ("AnalysisFailed", Some("success-rate"))
    );
    let ingresses = ns.api::<Ingress>();
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "an abort deletes the canary Ingress"
    );
    assert_eq!(log.weights(), vec![0, 20, 0]);
    // All traffic back on the stable version.
    share(&ns, |v| v == 0.0).await;

    delete_rollout(&ns).await;
    let left: Vec<String> = ingresses
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|i| i.metadata.name)
        .collect();
    assert_eq!(left, ["web"], "only the team's own Ingress is left");
}

#[tokio::test]
async fn deleting_an_nginx_rollout_mid_canary_removes_its_canary_ingress_first() {
    let ns = TestNamespace::new(&client().await, "nginx-delete").await;
    let _controller = ControllerProcess::start(&ns.name);
    routing(&ns).await;
    let mut manifest = rollout("web:1", "0");
    manifest["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    apply(&ns, manifest.clone()).await;
    healthy(&ns, &manifest).await;
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    apply(&ns, manifest).await;
    let ingresses = ns.api::<Ingress>();
    eventually("the canary Ingress at 30", LIMIT, || async {
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .ok()
            .flatten()
            .filter(|i| canary_weight(i) == 30)
    })
    .await;
    // Orphaning: garbage collection takes nothing the Rollout owns, so only weir's own
    // cleanup can remove the canary Ingress.
    let rollouts = ns.api::<weir::api::Rollout>();
    rollouts
        .delete("web", &kube::api::DeleteParams::orphan())
        .await
        .expect("deleting the Rollout");
    eventually("the Rollout to be gone", LIMIT, || async {
        rollouts.get_opt("web").await.ok().filter(|r| r.is_none())
    })
    .await;
    assert!(
        ingresses
            .get_opt(CANARY_INGRESS)
            .await
            .expect("get")
            .is_none(),
        "the finalizer removed the canary Ingress before the Rollout went"
    );
}
