//! A simulated data plane, because the local cluster has none: requests at a steady rate on
//! every HTTPRoute and GRPCRoute (attached to a Gateway or, GAMMA, to a Service), Istio VirtualService HTTP route (a destination is its host's Service,
//! narrowed by its DestinationRule subset's labels when it names a subset), stable Ingress
//! (with its NGINX canary Ingress's `canary-weight`; a path to port `use-annotation` by its
//! ALB forward action) and SMI TrafficSplit, split by the
//! weights each carries now, answered by each backend as
//! its version's pod template says (`sim.weir.dev/error-rate`, `sim.weir.dev/latency-ms`),
//! and counted in Prometheus metrics as a mesh or gateway would export them:
//! `http_requests_total{namespace, route, service, version, code, mirrored}` and
//! `http_request_duration_seconds`.
//!
//! The arithmetic is exact rather than random: each tick hands out its share of requests by
//! weight, errors by rate, and latencies spread evenly around the mean, carrying fractions
//! over, so a run is repeatable and a 20% weight is 20% of the requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::contract::POD_TEMPLATE_HASH_LABEL;
use crate::traffic::gateway_api::WeightedRoute;
use crate::traffic::{alb, smi};

pub const ERROR_RATE_ANNOTATION: &str = "sim.weir.dev/error-rate";
pub const LATENCY_ANNOTATION: &str = "sim.weir.dev/latency-ms";
/// The version label of a backend's series; else the first container's image tag.
pub const VERSION_ANNOTATION: &str = "sim.weir.dev/version";
const DEFAULT_LATENCY_MS: f64 = 20.0;

/// One backend of a route rule, as the simulated traffic sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub service: String,
    pub weight: u32,
    /// None: the Service selects no running version, and requests to it fail (503).
    pub version: Option<Version>,
}

/// How a version answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub name: String,
    /// The pod template's hash (`rollouts-pod-template-hash`), empty when it has none: the
    /// series' `hash` label, so a baseline and a canary of one version are told apart.
    pub hash: String,
    pub error_rate: f64,
    pub latency_ms: f64,
}

/// What one backend answered in one tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answered {
    pub ok: u64,
    pub errors: u64,
    pub unavailable: u64,
    /// One latency per answered request, in seconds.
    pub latencies: Vec<f64>,
}

/// The fractions carried from tick to tick, per route and backend.
#[derive(Debug, Default)]
pub struct Splitter {
    carry: BTreeMap<(String, String), Carry>,
    /// With a seed, each request's error and latency are drawn (the error at the version's
    /// rate, the latency uniform from half to one and a half times its mean), so two
    /// versions with the same annotations differ only by noise, as real ones do. Without
    /// one, the arithmetic is exact.
    draws: Option<StdRng>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Carry {
    requests: f64,
    errors: f64,
    /// Requests answered so far: places each latency in the spread.
    served: u64,
}

impl Splitter {
    /// A splitter that draws each request's answer from a generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Splitter {
        Splitter {
            carry: BTreeMap::new(),
            draws: Some(StdRng::seed_from_u64(seed)),
        }
    }

    /// Hands out `requests` over `backends` by weight for the route `route`.
    pub fn tick(&mut self, route: &str, backends: &[Backend], requests: f64) -> Vec<Answered> {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        backends
            .iter()
            .map(|backend| {
                let carry = self
                    .carry
                    .entry((route.to_owned(), backend.service.clone()))
                    .or_default();
                if total == 0 || backend.weight == 0 {
                    *carry = Carry::default();
                    return Answered::default();
                }
                let share = requests * f64::from(backend.weight) / total as f64 + carry.requests;
                let count = share.floor();
                carry.requests = share - count;
                let count = count as u64;
                let Some(version) = &backend.version else {
                    return Answered {
                        unavailable: count,
                        ..Answered::default()
                    };
                };
                let rate = version.error_rate.clamp(0.0, 1.0);
                let mean = version.latency_ms.max(0.0) / 1000.0;
                let (errors, latencies) = match &mut self.draws {
                    Some(rng) => {
                        let errors = (0..count).filter(|_| rng.gen_bool(rate)).count() as u64;
                        let latencies = (0..count)
                            .map(|_| mean * (0.5 + rng.r#gen::<f64>()))
                            .collect();
                        (errors, latencies)
                    }
                    None => {
                        let due = count as f64 * rate + carry.errors;
                        let errors = due.floor();
                        carry.errors = due - errors;
                        // Evenly spread from half to one and a half times the mean
                        // (golden-ratio steps), so the mean is the configured latency and
                        // p99 about 1.5 times it.
                        let latencies = (0..count)
                            .map(|i| {
                                let k = (carry.served + i) as f64;
                                mean * (0.5 + (k * 0.618_033_988_749_895).fract())
                            })
                            .collect();
                        (errors as u64, latencies)
                    }
                };
                carry.served += count;
                Answered {
                    ok: count - errors,
                    errors,
                    unavailable: 0,
                    latencies,
                }
            })
            .collect()
    }
}

/// How a pod template says its version behaves.
pub fn version_of(template: &PodTemplateSpec) -> Version {
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let number = |key: &str, default: f64| {
        annotations
            .get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .unwrap_or(default)
    };
    let image_tag = template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .map(|image| image.rsplit(':').next().unwrap_or(image).to_owned());
    let hash = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|labels| labels.get(POD_TEMPLATE_HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    Version {
        name: annotations
            .get(VERSION_ANNOTATION)
            .cloned()
            .or(image_tag)
            .unwrap_or_else(|| "unknown".into()),
        hash,
        error_rate: number(ERROR_RATE_ANNOTATION, 0.0),
        latency_ms: number(LATENCY_ANNOTATION, DEFAULT_LATENCY_MS),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    route: String,
    service: String,
    version: String,
    hash: String,
    code: String,
    /// "true" for a mirrored copy of a request (its answer goes nowhere).
    mirrored: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    namespace: String,
    route: String,
    service: String,
    version: String,
    hash: String,
}

/// The simulator's series.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Simulated requests by route, Service, version and status code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5])
        });
        registry.register(
            "http_request_duration_seconds",
            "Simulated request latency by route, Service and version",
            latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn count(
        &self,
        namespace: &str,
        route: &str,
        backend: &Backend,
        answered: &Answered,
        mirrored: bool,
    ) {
        let version = backend
            .version
            .as_ref()
            .map_or_else(|| "none".to_owned(), |v| v.name.clone());
        let hash = backend
            .version
            .as_ref()
            .map(|v| v.hash.clone())
            .unwrap_or_default();
        let labels = |code: &str| RequestLabels {
            namespace: namespace.to_owned(),
            route: route.to_owned(),
            service: backend.service.clone(),
            version: version.clone(),
            hash: hash.clone(),
            code: code.to_owned(),
            mirrored: mirrored.to_string(),
        };
        for (code, n) in [
            ("200", answered.ok),
            ("500", answered.errors),
            ("503", answered.unavailable),
        ] {
            if n > 0 {
                self.requests.get_or_create(&labels(code)).inc_by(n);
            }
        }
        if !answered.latencies.is_empty() {
            let histogram = self.latency.get_or_create(&LatencyLabels {
                namespace: namespace.to_owned(),
                route: route.to_owned(),
                service: backend.service.clone(),
                version,
                hash,
            });
            for seconds in &answered.latencies {
                histogram.observe(*seconds);
            }
        }
    }
}

/// A VirtualService's HTTP routes as (host, subset, weight) destinations, one list per route.
/// A lone destination without a weight takes all of its route (Istio's rule); otherwise an
/// absent weight is 0.
pub fn virtual_service_routes(
    object: &serde_json::Value,
) -> Vec<Vec<(String, Option<String>, u32)>> {
    let mut routes = Vec::new();
    for route in object["spec"]["http"].as_array().into_iter().flatten() {
        let destinations = route["route"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let lone = destinations.len() == 1;
        routes.push(
            destinations
                .iter()
                .filter_map(|d| {
                    let host = d["destination"]["host"].as_str()?;
                    // The short name is the Service (`web`, `web.shop.svc.cluster.local`).
                    let service = host.split('.').next().unwrap_or(host).to_owned();
                    let subset = d["destination"]["subset"].as_str().map(str::to_owned);
                    let weight = match d["weight"].as_u64() {
                        Some(weight) => u32::try_from(weight).unwrap_or(0),
                        None if lone => 100,
                        None => 0,
                    };
                    Some((service, subset, weight))
                })
                .collect(),
        );
    }
    routes
}

/// The header a share of the simulated requests carries, for header routes to match: one
/// request in ten (`TEST_HEADER_SHARE`) carries `x-weir-sim: canary`. Every request is a
/// `GET /`.
pub const TEST_HEADER: (&str, &str) = ("x-weir-sim", "canary");
pub const TEST_HEADER_SHARE: f64 = 0.1;

/// What one VirtualService HTTP route receives: its share of the requests, and where it
/// mirrors (Service, subset, percent of its share).
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub share: f64,
    pub mirror: Option<(String, Option<String>, f64)>,
}

/// Whether an Istio string match (`exact`, `prefix`, `regex`) accepts `value`.
fn string_matches(condition: &serde_json::Value, value: &str) -> bool {
    if let Some(exact) = condition["exact"].as_str() {
        return value == exact;
    }
    if let Some(prefix) = condition["prefix"].as_str() {
        return value.starts_with(prefix);
    }
    if let Some(pattern) = condition["regex"].as_str() {
        // Envoy matches the whole value (RE2); a bounded compile, as lint checks.
        return regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .is_ok_and(|re| re.is_match(value));
    }
    false
}

/// Whether one entry of an HTTP route's `match` accepts a `GET /` carrying `header` (or no
/// header). Conditions the simulation cannot judge (ports, authority, query parameters) do
/// not match.
fn request_matches(entry: &serde_json::Value, header: Option<(&str, &str)>) -> bool {
    let Some(conditions) = entry.as_object() else {
        return false;
    };
    conditions
        .iter()
        .all(|(key, condition)| match key.as_str() {
            "name" => true,
            "method" => string_matches(condition, "GET"),
            "uri" => string_matches(condition, "/"),
            "headers" => condition.as_object().is_some_and(|headers| {
                headers.iter().all(|(name, value)| {
                    header.is_some_and(|(h, v)| {
                        h.eq_ignore_ascii_case(name) && string_matches(value, v)
                    })
                })
            }),
            _ => false,
        })
}

/// The share of a VirtualService's requests each HTTP route receives, in order: a route with
/// a `match` takes the requests it matches (any entry) from the routes after it, as Istio's
/// first match wins; a route without one receives what is left and, as before there were
/// matches, takes nothing from the next. Two kinds of request: with [`TEST_HEADER`] and
/// without.
pub fn virtual_service_flows(object: &serde_json::Value) -> Vec<Flow> {
    let mut left = [
        (Some(TEST_HEADER), TEST_HEADER_SHARE),
        (None, 1.0 - TEST_HEADER_SHARE),
    ];
    let mut flows = Vec::new();
    for route in object["spec"]["http"].as_array().into_iter().flatten() {
        let share = match route["match"].as_array().filter(|m| !m.is_empty()) {
            Some(entries) => left
                .iter_mut()
                .filter(|(header, _)| entries.iter().any(|e| request_matches(e, *header)))
                .map(|(_, share)| std::mem::take(share))
                .sum(),
            None => left.iter().map(|(_, share)| share).sum(),
        };
        let mirror = route["mirror"]["host"].as_str().map(|host| {
            let service = host.split('.').next().unwrap_or(host).to_owned();
            let subset = route["mirror"]["subset"].as_str().map(str::to_owned);
            let percent = route["mirrorPercentage"]["value"].as_f64().unwrap_or(100.0);
            (service, subset, percent.clamp(0.0, 100.0))
        });
        flows.push(Flow { share, mirror });
    }
    flows
}

/// Whether one HTTPRoute match accepts a `GET` with [`TEST_HEADER`] (`with_header`) or
/// without any: its method (GET or none) and header conditions (Exact, or RegularExpression
/// on the whole value) all accept it; paths count apart (see [`http_route_shares`]), query
/// parameters never match.
fn gateway_match_accepts(entry: &serde_json::Value, with_header: bool) -> bool {
    let headers = entry["headers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let method = entry["method"].as_str().is_none_or(|m| m == "GET");
    let (name, value) = TEST_HEADER;
    method
        && entry.get("queryParams").is_none()
        && headers.iter().all(|h| {
            let condition = match h["type"].as_str().unwrap_or("Exact") {
                "Exact" => serde_json::json!({"exact": h["value"]}),
                _ => serde_json::json!({"regex": h["value"]}),
            };
            with_header
                && h["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
                && string_matches(&condition, value)
        })
}

/// The share of its path's requests each rule of an HTTPRoute receives, for routes with a
/// rule that takes only some of its paths' requests, each of its matches naming headers or
/// a method (None for one without: every rule gets the whole rate, as before). Among the
/// rules on the same paths, each kind of request (with [`TEST_HEADER`] and without) goes to
/// the rule whose accepting match ranks first as Gateway API ranks them: a method match,
/// then more header matches, then the earlier rule.
pub fn http_route_shares(rules: &[serde_json::Value]) -> Option<Vec<f64>> {
    let matches_of = |rule: &serde_json::Value| -> Vec<serde_json::Value> {
        match rule["matches"].as_array() {
            Some(matches) if !matches.is_empty() => matches.clone(),
            _ => vec![serde_json::json!({})],
        }
    };
    let paths = |rule: &serde_json::Value| -> Vec<serde_json::Value> {
        matches_of(rule)
            .iter()
            .map(|m| match m.get("path") {
                Some(path) => path.clone(),
                None => serde_json::json!({"type": "PathPrefix", "value": "/"}),
            })
            .collect()
    };
    let conditional = |rule: &serde_json::Value| {
        matches_of(rule).iter().all(|e| {
            e.get("method").is_some() || e["headers"].as_array().is_some_and(|h| !h.is_empty())
        })
    };
    if !rules.iter().any(conditional) {
        return None;
    }
    // How the rule's best match accepting a request ranks; None when none accepts it.
    let rank = |rule: &serde_json::Value, with_header: bool| {
        matches_of(rule)
            .iter()
            .filter(|m| gateway_match_accepts(m, with_header))
            .map(|m| {
                let headers = m["headers"].as_array().map_or(0, Vec::len);
                (m.get("method").is_some(), headers)
            })
            .max()
    };
    let kinds = [(true, TEST_HEADER_SHARE), (false, 1.0 - TEST_HEADER_SHARE)];
    Some(
        rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                kinds
                    .iter()
                    .filter(|(with_header, _)| {
                        let Some(mine) = rank(rule, *with_header) else {
                            return false;
                        };
                        // Beaten by a rule on the same paths that ranks higher, or as high
                        // and comes first.
                        !rules.iter().enumerate().any(|(other, r)| {
                            other != index
                                && paths(r) == paths(rule)
                                && rank(r, *with_header).is_some_and(|theirs| {
                                    theirs > mine || (theirs == mine && other < index)
                                })
                        })
                    })
                    .map(|(_, share)| share)
                    .sum()
            })
            .collect(),
    )
}

/// Where an HTTPRoute rule mirrors its requests: the Service of its `RequestMirror` filter
/// and the percent mirrored (`percent`, or `fraction`; all when neither is set).
pub fn http_route_mirror(rule: &serde_json::Value) -> Option<(String, f64)> {
    let filters = rule["filters"].as_array()?;
    let mirror = filters
        .iter()
        .find(|f| f["type"] == "RequestMirror")
        .map(|f| &f["requestMirror"])?;
    let service = mirror["backendRef"]["name"].as_str()?.to_owned();
    let percent = if let Some(percent) = mirror["percent"].as_f64() {
        percent
    } else if let Some(numerator) = mirror["fraction"]["numerator"].as_f64() {
        let denominator = mirror["fraction"]["denominator"].as_f64().unwrap_or(100.0);
        if denominator > 0.0 {
            100.0 * numerator / denominator
        } else {
            0.0
        }
    } else {
        100.0
    };
    Some((service, percent.clamp(0.0, 100.0)))
}

/// The labels a destination's pods carry: its Service's selector and, for a subset, the
/// subset's labels too (Istio narrows the Service's endpoints by them).
pub fn destination_selector(
    service_selector: &BTreeMap<String, String>,
    subset: Option<&str>,
    rule: Option<&serde_json::Value>,
) -> Option<BTreeMap<String, String>> {
    let mut selector = service_selector.clone();
    if let Some(subset) = subset {
        // A subset the DestinationRule does not define has no endpoints.
        let found = rule?["spec"]["subsets"]
            .as_array()?
            .iter()
            .find(|s| s["name"].as_str() == Some(subset))?;
        for (key, value) in found["labels"].as_object().into_iter().flatten() {
            selector.insert(key.clone(), value.as_str()?.to_owned());
        }
    }
    Some(selector)
}

/// The newest ready ReplicaSet whose pods `selector` selects: the version that answers.
fn answering(live: &[ReplicaSet], selector: &BTreeMap<String, String>) -> Option<Version> {
    live.iter()
        .filter(|rs| {
            let labels = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .max_by_key(|rs| rs.metadata.creation_timestamp.clone())
        .and_then(|rs| rs.spec.as_ref()?.template.as_ref())
        .map(version_of)
}

async fn ready_replica_sets(client: &Client, ns: &str) -> kube::Result<Vec<ReplicaSet>> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    Ok(replica_sets
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                > 0
        })
        .collect())
}

/// The VirtualServices' HTTP routes, added to the topology as `vs/<name>` routes. A cluster
/// without Istio's CRDs has none.
async fn read_virtual_services(
    client: &Client,
    namespace: Option<&str>,
    topology: &mut Topology,
) -> kube::Result<()> {
    use crate::traffic::istio::{destination_rule_resource, virtual_service_resource};
    use kube::api::DynamicObject;
    let resource = virtual_service_resource();
    let services: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let listed = match services.list(&ListParams::default()).await {
        Ok(listed) => listed,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => return Err(error),
    };
    for object in listed.items {
        let ns = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let value = serde_json::to_value(&object).unwrap_or_default();
        let live = ready_replica_sets(client, &ns).await?;
        let core: Api<Service> = Api::namespaced(client.clone(), &ns);
        let rules: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &destination_rule_resource());
        // The DestinationRules of the namespace, by host's short name.
        let destination_rules: Vec<serde_json::Value> = rules
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect();
        let resolve = |service: String, subset: Option<String>, weight: u32| {
            let core = core.clone();
            let rule = destination_rules
                .iter()
                .find(|r| {
                    r["spec"]["host"]
                        .as_str()
                        .is_some_and(|h| h.split('.').next() == Some(service.as_str()))
                })
                .cloned();
            let live = &live;
            async move {
                let selector = core
                    .get_opt(&service)
                    .await?
                    .and_then(|s| s.spec)
                    .and_then(|s| s.selector)
                    .unwrap_or_default();
                let version = destination_selector(&selector, subset.as_deref(), rule.as_ref())
                    .and_then(|selector| answering(live, &selector));
                Ok::<_, kube::Error>(Backend {
                    service: match &subset {
                        Some(subset) => format!("{service}/{subset}"),
                        None => service,
                    },
                    weight,
                    version,
                })
            }
        };
        for (index, flow) in virtual_service_flows(&value).into_iter().enumerate() {
            let mirror = match flow.mirror {
                Some((service, subset, percent)) => {
                    Some((resolve(service, subset, 1).await?, percent))
                }
                None => None,
            };
            let (to, percent) = mirror.map_or((None, 0.0), |(b, p)| (Some(b), p));
            topology.flows.insert(
                (ns.clone(), format!("vs/{name}"), index),
                (flow.share, to, percent),
            );
        }
        let mut routes = Vec::new();
        for route in virtual_service_routes(&value) {
            let mut backends = Vec::new();
            for (service, subset, weight) in route {
                let selector = core
                    .get_opt(&service)
                    .await?
                    .and_then(|s| s.spec)
                    .and_then(|s| s.selector)
                    .unwrap_or_default();
                let rule = destination_rules.iter().find(|r| {
                    r["spec"]["host"]
                        .as_str()
                        .is_some_and(|h| h.split('.').next() == Some(service.as_str()))
                });
                let version = destination_selector(&selector, subset.as_deref(), rule)
                    .and_then(|selector| answering(&live, &selector));
                backends.push(Backend {
                    service: match &subset {
                        Some(subset) => format!("{service}/{subset}"),
                        None => service,
                    },
                    weight,
                    version,
                });
            }
            routes.push(backends);
        }
        topology.routes.push((ns, format!("vs/{name}"), routes));
    }
    Ok(())
}

/// The routes to send traffic to, as read from the API server.
#[derive(Clone, Debug, Default)]
struct Topology {
    /// (namespace, route) -> one backend list per rule.
    routes: Vec<(String, String, Vec<Vec<Backend>>)>,
    /// VirtualService HTTP routes' and header-matching HTTPRoutes' rules' shares and mirrors,
    /// by (namespace, route, rule index);
    /// a rule not here gets the whole rate and mirrors nothing.
    flows: BTreeMap<(String, String, usize), RuleFlow>,
}

/// A rule's share of the rate, and the backend it mirrors to with the percent mirrored.
type RuleFlow = (f64, Option<Backend>, f64);

/// An HTTPRoute rule's share of the rate, and the Service it mirrors to with the percent.
type HttpFlow = (f64, Option<(String, f64)>);

/// A route before its backends' versions are known: one (Service, weight) list per rule.
type Weighted = Vec<Vec<(String, u32)>>;

/// The annotation of `ingress` whose key ends in `/name` (under whatever prefix the NGINX or
/// AWS Load Balancer controller was started with).
fn nginx_annotation<'a>(ingress: &'a Ingress, name: &str) -> Option<&'a str> {
    ingress
        .metadata
        .annotations
        .as_ref()?
        .iter()
        .find(|(key, _)| key.rsplit_once('/').is_some_and(|(_, n)| n == name))
        .map(|(_, value)| value.as_str())
}

/// Whether ingress-nginx takes `ingress` as a canary Ingress.
pub fn is_canary_ingress(ingress: &Ingress) -> bool {
    nginx_annotation(ingress, "canary") == Some("true")
}

/// How ingress-nginx splits the paths of a (non-canary) Ingress: each path (and the default
/// backend) to its Service, except that a canary Ingress with the same host and path takes
/// its `canary-weight` percent of the requests to its own Service.
pub fn ingress_splits(stable: &Ingress, canaries: &[Ingress]) -> Weighted {
    let weight_of = |canary: &Ingress| {
        nginx_annotation(canary, "canary-weight")
            .and_then(|w| w.trim().parse::<u32>().ok())
            .unwrap_or(0)
            .min(100)
    };
    let service = |backend: &IngressBackend| backend.service.as_ref().map(|s| s.name.clone());
    let split = |own: String, canary: Option<(String, u32)>| match canary {
        Some((other, weight)) if weight > 0 => vec![(own, 100 - weight), (other, weight)],
        _ => vec![(own, 1)],
    };
    let mut splits = Vec::new();
    let spec = stable.spec.clone().unwrap_or_default();
    if let Some(split) = spec
        .default_backend
        .as_ref()
        .and_then(|b| alb_split(stable, b))
    {
        splits.extend(split);
    } else if let Some(own) = spec.default_backend.as_ref().and_then(service) {
        let canary = canaries.iter().find_map(|c| {
            let backend = c.spec.as_ref()?.default_backend.as_ref()?;
            Some((service(backend)?, weight_of(c)))
        });
        splits.push(split(own, canary));
    }
    for rule in spec.rules.iter().flatten() {
        for path in rule.http.iter().flat_map(|h| &h.paths) {
            if let Some(split) = alb_split(stable, &path.backend) {
                splits.extend(split);
                continue;
            }
            let Some(own) = service(&path.backend) else {
                continue;
            };
            let canary = canaries.iter().find_map(|c| {
                let found = c.spec.as_ref()?.rules.iter().flatten().find_map(|r| {
                    if r.host != rule.host {
                        return None;
                    }
                    r.http
                        .iter()
                        .flat_map(|h| &h.paths)
                        .find(|p| p.path == path.path)
                        .and_then(|p| service(&p.backend))
                })?;
                Some((found, weight_of(c)))
            });
            splits.push(split(own, canary));
        }
    }
    splits
}

/// How the AWS Load Balancer Controller splits a backend whose port is `use-annotation`: by
/// the target groups of the forward action annotated for its Service (under any prefix);
/// nothing is sent without a readable one. None for any other backend.
pub fn alb_split(
    ingress: &Ingress,
    backend: &IngressBackend,
) -> Option<Option<Vec<(String, u32)>>> {
    let target = backend.service.as_ref()?;
    if target.port.as_ref()?.name.as_deref() != Some(alb::USE_ANNOTATION) {
        return None;
    }
    let action = nginx_annotation(ingress, &format!("actions.{}", target.name))
        .and_then(|text| alb::parse_action(text).ok().flatten());
    Some(action.map(|action| {
        action
            .target_groups
            .into_iter()
            .filter_map(|g| Some((g.service_name?, g.weight.unwrap_or(0).clamp(0, 999) as u32)))
            .collect()
    }))
}

/// How a TrafficSplit spec (any version) splits its root Service: its backends by weight
/// (a v1alpha1 Quantity like `500m` counted in thousandths).
pub fn traffic_split_backends(spec: &serde_json::Value) -> Weighted {
    let backends = spec["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let service = b["service"].as_str()?.to_owned();
            let weight = smi::backend_weight(&b["weight"])?;
            Some((service, (weight.max(0.0) * 1000.0).round() as u32))
        })
        .collect::<Vec<_>>();
    if backends.is_empty() {
        Vec::new()
    } else {
        vec![backends]
    }
}

/// How a Gateway API route (HTTPRoute or GRPCRoute) splits: each rule's backendRefs by
/// weight (1 when unset). Whatever the route is attached to, a Gateway or a Service (GAMMA),
/// its requests split the same way.
pub fn gateway_route_splits<R: WeightedRoute>(route: &R) -> Weighted {
    route
        .rules()
        .iter()
        .map(|rule| {
            rule.iter()
                .map(|b| (b.name.to_owned(), b.weight.unwrap_or(1).max(0) as u32))
                .collect()
        })
        .collect()
}

/// Every route in `namespace` (or all): HTTPRoutes and GRPCRoutes, stable Ingresses with their canary
/// Ingresses, TrafficSplits (when the cluster has the kind).
async fn weighted_routes(
    client: &Client,
    namespace: Option<&str>,
    http_flows: &mut BTreeMap<(String, String, usize), HttpFlow>,
) -> kube::Result<Vec<(String, String, Weighted)>> {
    let params = ListParams::default();
    let mut found = Vec::new();
    let routes: Api<HttpRoute> = scoped(client, namespace);
    for route in routes.list(&params).await?.items {
        let rules: Vec<serde_json::Value> = route
            .spec
            .rules
            .iter()
            .flatten()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        let shares = http_route_shares(&rules);
        for (index, rule) in rules.iter().enumerate() {
            let share = shares.as_ref().and_then(|s| s.get(index).copied());
            let mirror = http_route_mirror(rule);
            if share.is_some() || mirror.is_some() {
                let key = (
                    route.namespace().unwrap_or_default(),
                    route.name_any(),
                    index,
                );
                http_flows.insert(key, (share.unwrap_or(1.0), mirror));
            }
        }
        found.push((
            route.namespace().unwrap_or_default(),
            route.name_any(),
            gateway_route_splits(&route),
        ));
    }
    // GRPCRoutes split the same way (when the cluster has the kind), named apart from an
    // HTTPRoute of the same name.
    let grpc_routes: Api<GrpcRoute> = scoped(client, namespace);
    match grpc_routes.list(&params).await {
        Ok(listed) => {
            for route in listed.items {
                found.push((
                    route.namespace().unwrap_or_default(),
                    format!("grpcroute/{}", route.name_any()),
                    gateway_route_splits(&route),
                ));
            }
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error),
    }
    let ingresses: Api<Ingress> = scoped(client, namespace);
    let (canaries, stables): (Vec<Ingress>, Vec<Ingress>) = ingresses
        .list(&params)
        .await?
        .items
        .into_iter()
        .partition(is_canary_ingress);
    for stable in &stables {
        let ns = stable.namespace();
        let beside: Vec<Ingress> = canaries
            .iter()
            .filter(|c| c.namespace() == ns)
            .cloned()
            .collect();
        found.push((
            ns.unwrap_or_default(),
            stable.name_any(),
            ingress_splits(stable, &beside),
        ));
    }
    let groups = client.list_api_groups().await?;
    if let Some(version) = groups
        .groups
        .iter()
        .find(|g| g.name == smi::GROUP)
        .and_then(smi::choose_version)
    {
        let resource = smi::api_resource(version);
        let splits: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        for split in splits.list(&params).await?.items {
            found.push((
                split.namespace().unwrap_or_default(),
                split.name_any(),
                traffic_split_backends(&split.data["spec"]),
            ));
        }
    }
    Ok(found)
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn read_topology(client: &Client, namespace: Option<&str>) -> kube::Result<Topology> {
    let mut topology = Topology::default();
    let mut http_flows = BTreeMap::new();
    let weighted = weighted_routes(client, namespace, &mut http_flows).await?;
    for (ns, route, rules) in weighted {
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let live: Vec<ReplicaSet> = replica_sets
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    > 0
            })
            .collect();
        let mut resolved = Vec::new();
        for (index, rule) in rules.into_iter().enumerate() {
            let mut backends = Vec::new();
            for (service, weight) in rule {
                let version = service_version(&services, &live, &service).await?;
                backends.push(Backend {
                    service,
                    weight,
                    version,
                });
            }
            resolved.push(backends);
            let key = (ns.clone(), route.clone(), index);
            if let Some((share, mirror)) = http_flows.remove(&key) {
                let (to, percent) = match mirror {
                    Some((service, percent)) => {
                        let version = service_version(&services, &live, &service).await?;
                        let to = Backend {
                            service,
                            weight: 1,
                            version,
                        };
                        (Some(to), percent)
                    }
                    None => (None, 0.0),
                };
                topology.flows.insert(key, (share, to, percent));
            }
        }
        topology.routes.push((ns, route, resolved));
    }
    read_virtual_services(client, namespace, &mut topology).await?;
    Ok(topology)
}

/// The version that answers for `service`: the newest ready ReplicaSet (of `live`) whose pods
/// its selector selects.
async fn service_version(
    services: &Api<Service>,
    live: &[ReplicaSet],
    service: &str,
) -> kube::Result<Option<Version>> {
    let selector = services
        .get_opt(service)
        .await?
        .and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .unwrap_or_default();
    Ok(live
        .iter()
        .filter(|rs| {
            let labels = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .max_by_key(|rs| rs.metadata.creation_timestamp.clone())
        .and_then(|rs| rs.spec.as_ref()?.template.as_ref())
        .map(version_of))
}

/// Sends `rps` requests a second to every route (in `namespace`, or all), re-reading the
/// routes, Services and ReplicaSets every half second; serves the metrics on `listen`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    rps: f64,
    listen: std::net::SocketAddr,
    seed: Option<u64>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let topology = Arc::new(Mutex::new(Topology::default()));
    let served = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = served.clone();
            async move { metrics.encode() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, rps, "traffic simulator: serving /metrics");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "traffic simulator: metrics server stopped");
        }
    });
    let reader = topology.clone();
    tokio::spawn(async move {
        loop {
            match read_topology(&client, namespace.as_deref()).await {
                Ok(read) => *reader.lock().unwrap_or_else(|e| e.into_inner()) = read,
                Err(error) => tracing::warn!(%error, "traffic simulator: reading routes failed"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let tick = Duration::from_millis(100);
    let mut splitter = seed.map_or_else(Splitter::default, Splitter::seeded);
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let now = topology.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (namespace, route, rules) in &now.routes {
            // Each rule gets the route's rate: the simulation has no paths to tell them apart.
            for (index, backends) in rules.iter().enumerate() {
                let key = format!("{namespace}/{route}/{index}");
                let flow = now.flows.get(&(namespace.clone(), route.clone(), index));
                let requests = rps * tick.as_secs_f64() * flow.map_or(1.0, |f| f.0);
                let answered = splitter.tick(&key, backends, requests);
                for (backend, answered) in backends.iter().zip(&answered) {
                    metrics.count(namespace, route, backend, answered, false);
                }
                // Mirrored copies: answered by the mirror, counted apart, never returned.
                if let Some((share, Some(mirror), percent)) = flow {
                    let copies = rps * tick.as_secs_f64() * share * percent / 100.0;
                    let mirror = std::slice::from_ref(mirror);
                    let answered = splitter.tick(&format!("{key}/mirror"), mirror, copies);
                    for (backend, answered) in mirror.iter().zip(&answered) {
                        metrics.count(namespace, route, backend, answered, true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod istio_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn virtual_service_routes_read_hosts_subsets_and_weights() {
        let object = json!({"spec": {"http": [
            {"route": [{"destination": {"host": "web-stable.shop.svc.cluster.local"}, "weight": 80},
                       {"destination": {"host": "web-canary"}, "weight": 20}]},
            {"route": [{"destination": {"host": "web", "subset": "canary"}}]},
            {"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}, "weight": 100}]}
        ]}});
        assert_eq!(
            virtual_service_routes(&object),
            vec![
                vec![
                    ("web-stable".into(), None, 80),
                    ("web-canary".into(), None, 20)
                ],
                vec![("web".into(), Some("canary".into()), 100)],
                vec![("a".into(), None, 0), ("b".into(), None, 100)],
            ]
        );
    }

    #[test]
    fn a_subset_narrows_the_services_selector_by_its_labels() {
        let service: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let rule = json!({"spec": {"host": "web", "subsets": [
            {"name": "canary", "labels": {"rollouts-pod-template-hash": "bbb"}}, {"name": "plain"}]}});
        let canary = destination_selector(&service, Some("canary"), Some(&rule));
        assert_eq!(
            canary,
            Some(
                [
                    ("app".to_owned(), "web".to_owned()),
                    ("rollouts-pod-template-hash".to_owned(), "bbb".to_owned())
                ]
                .into()
            )
        );
        assert_eq!(
            destination_selector(&service, Some("plain"), Some(&rule)),
            Some(service.clone())
        );
        assert_eq!(
            destination_selector(&service, None, None),
            Some(service.clone())
        );
        assert_eq!(
            destination_selector(&service, Some("missing"), Some(&rule)),
            None,
            "no endpoints"
        );
        assert_eq!(
            destination_selector(&service, Some("canary"), None),
            None,
            "no rule: no subset"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backend(service: &str, weight: u32, error_rate: f64) -> Backend {
        Backend {
            service: service.into(),
            weight,
            version: Some(Version {
                name: service.into(),
                hash: format!("{service}-hash"),
                error_rate,
                latency_ms: 100.0,
            }),
        }
    }

    #[test]
    fn weights_split_requests_exactly_and_errors_follow_the_rate() {
        let mut splitter = Splitter::default();
        let backends = [backend("stable", 80, 0.0), backend("canary", 20, 0.25)];
        let (mut stable, mut canary) = (Answered::default(), Answered::default());
        for _ in 0..100 {
            let answered = splitter.tick("r", &backends, 5.0);
            stable.ok += answered[0].ok;
            canary.ok += answered[1].ok;
            canary.errors += answered[1].errors;
            canary.latencies.extend(answered[1].latencies.iter());
        }
        assert_eq!((stable.ok, canary.ok + canary.errors), (400, 100));
        assert_eq!(canary.errors, 25);
        let mean = canary.latencies.iter().sum::<f64>() / canary.latencies.len() as f64;
        assert!((mean - 0.1).abs() < 0.005, "mean latency {mean}");
    }

    #[test]
    fn a_backend_with_no_running_version_answers_503() {
        let mut splitter = Splitter::default();
        let empty = Backend {
            service: "canary".into(),
            weight: 1,
            version: None,
        };
        let answered = splitter.tick("r", &[backend("stable", 1, 0.0), empty], 10.0);
        assert_eq!(answered[1].unavailable, 5);
        assert_eq!(answered[1].ok + answered[1].errors, 0);
    }

    #[test]
    fn versions_come_from_the_pod_template() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {ERROR_RATE_ANNOTATION: "0.2", LATENCY_ANNOTATION: "120"},
                         "labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "5c8c654d5c"}},
            "spec": {"containers": [{"name": "web", "image": "registry/web:3.1"}]}
        }))
        .expect("template");
        assert_eq!(
            version_of(&template),
            Version {
                name: "3.1".into(),
                hash: "5c8c654d5c".into(),
                error_rate: 0.2,
                latency_ms: 120.0
            }
        );
    }

    #[test]
    fn seeded_draws_are_noisy_around_the_annotated_means_and_repeat_with_the_seed() {
        let draw = |seed: u64| {
            let mut splitter = Splitter::seeded(seed);
            (0..200)
                .map(|_| splitter.tick("r", &[backend("canary", 1, 0.1)], 50.0))
                .map(|answered| answered[0].clone())
                .collect::<Vec<Answered>>()
        };
        let ticks = draw(7);
        assert_eq!(ticks, draw(7), "one seed, one run");
        assert_ne!(ticks, draw(8), "another seed, another run");
        let requests: u64 = ticks.iter().map(|a| a.ok + a.errors).sum();
        let errors: u64 = ticks.iter().map(|a| a.errors).sum();
        // 10,000 requests at 10%: the binomial's standard deviation is 30 errors.
        assert_eq!(requests, 10_000, "the weights still split exactly");
        assert!((errors as f64 - 1000.0).abs() < 150.0, "{errors} errors");
        let latencies: Vec<f64> = ticks.iter().flat_map(|a| a.latencies.clone()).collect();
        let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        assert!((mean - 0.1).abs() < 0.003, "mean latency {mean}");
        // Noise, not a fixed pattern: ticks of equal size differ.
        assert!(ticks.windows(2).any(|w| w[0].errors != w[1].errors));
        assert!(latencies.iter().all(|l| (0.05..0.15).contains(l)));
    }

    fn ingress(value: serde_json::Value) -> Ingress {
        serde_json::from_value(value).expect("an Ingress")
    }

    fn path(path: &str, service: &str) -> serde_json::Value {
        serde_json::json!({"path": path, "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}})
    }

    #[test]
    fn gamma_http_routes_and_grpc_routes_split_by_their_backend_weights() {
        let rules = serde_json::json!([
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 70},
                             {"name": "web-canary", "port": 80, "weight": 30}]},
            {"backendRefs": [{"name": "other", "port": 80}]}
        ]);
        // Attached to a Service (GAMMA), not a Gateway.
        let mesh = serde_json::json!([{"group": "", "kind": "Service", "name": "web"}]);
        let http: HttpRoute = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"parentRefs": mesh, "rules": rules}}))
        .expect("an HTTPRoute");
        let grpc: GrpcRoute = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rpc"},
            "spec": {"parentRefs": mesh, "rules": rules}}))
        .expect("a GRPCRoute");
        let expected = vec![
            vec![("web-stable".to_owned(), 70), ("web-canary".to_owned(), 30)],
            vec![("other".to_owned(), 1)],
        ];
        assert_eq!(gateway_route_splits(&http), expected);
        assert_eq!(gateway_route_splits(&grpc), expected);
    }

    #[test]
    fn a_canary_ingress_takes_its_weight_of_the_same_host_and_path() {
        use serde_json::json;
        let stable = ingress(json!({"metadata": {"name": "web"}, "spec": {"rules": [
            {"host": "shop.example", "http": {"paths": [path("/", "web-stable"), path("/admin", "admin")]}}
        ]}}));
        let canary = |weight: &str, host: &str| {
            ingress(
                json!({"metadata": {"name": "web-web-canary", "annotations": {
                    "custom.example/canary": "true", "custom.example/canary-weight": weight}},
                "spec": {"rules": [{"host": host, "http": {"paths": [path("/", "web-canary")]}}]}}),
            )
        };
        assert!(is_canary_ingress(&canary("5", "shop.example")));
        assert!(!is_canary_ingress(&stable));
        let owned = |pairs: &[(&str, u32)]| -> Vec<(String, u32)> {
            pairs.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect()
        };
        assert_eq!(
            ingress_splits(&stable, &[canary("30", "shop.example")]),
            vec![
                owned(&[("web-stable", 70), ("web-canary", 30)]),
                owned(&[("admin", 1)])
            ]
        );
        assert_eq!(
            ingress_splits(&stable, &[canary("30", "other.example")]),
            vec![owned(&[("web-stable", 1)]), owned(&[("admin", 1)])],
            "another host's canary takes nothing"
        );
        assert_eq!(
            ingress_splits(&stable, &[canary("0", "shop.example")]),
            vec![owned(&[("web-stable", 1)]), owned(&[("admin", 1)])]
        );
        assert_eq!(
            ingress_splits(&stable, &[]),
            vec![owned(&[("web-stable", 1)]), owned(&[("admin", 1)])]
        );
    }

    #[test]
    fn a_use_annotation_path_follows_its_alb_action() {
        use serde_json::json;
        let with = |annotations: serde_json::Value| {
            ingress(
                json!({"metadata": {"name": "web", "annotations": annotations}, "spec": {"rules": [
                {"http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-stable", "port": {"name": "use-annotation"}}}},
                    path("/admin", "admin")]}}]}}),
            )
        };
        let owned = |pairs: &[(&str, u32)]| -> Vec<(String, u32)> {
            pairs.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect()
        };
        let action = r#"{"type":"forward","forwardConfig":{"targetGroups":[
            {"serviceName":"web-canary","servicePort":"80","weight":30},
            {"serviceName":"web-stable","servicePort":"80","weight":70}]}}"#;
        assert_eq!(
            ingress_splits(
                &with(json!({"alb.ingress.kubernetes.io/actions.web-stable": action})),
                &[]
            ),
            vec![
                owned(&[("web-canary", 30), ("web-stable", 70)]),
                owned(&[("admin", 1)])
            ]
        );
        assert_eq!(
            ingress_splits(
                &with(json!({"custom.example/actions.web-stable": action})),
                &[]
            ),
            vec![
                owned(&[("web-canary", 30), ("web-stable", 70)]),
                owned(&[("admin", 1)])
            ],
            "under any prefix"
        );
        for nothing in [
            json!({}),
            json!({"alb.ingress.kubernetes.io/actions.web-stable": "{"}),
        ] {
            assert_eq!(
                ingress_splits(&with(nothing), &[]),
                vec![owned(&[("admin", 1)])],
                "without a readable action the ALB sends that path nowhere"
            );
        }
    }

    #[test]
    fn traffic_split_backends_are_read_in_every_version() {
        use serde_json::json;
        assert_eq!(
            traffic_split_backends(&json!({"service": "web", "backends": [
                {"service": "web-stable", "weight": 80}, {"service": "web-canary", "weight": 20}]})),
            vec![vec![
                ("web-stable".to_owned(), 80_000),
                ("web-canary".to_owned(), 20_000)
            ]]
        );
        assert_eq!(
            traffic_split_backends(&json!({"service": "web", "backends": [
                {"service": "web-stable", "weight": "750m"}, {"service": "web-canary", "weight": "250m"}]})),
            vec![vec![
                ("web-stable".to_owned(), 750),
                ("web-canary".to_owned(), 250)
            ]]
        );
        assert!(traffic_split_backends(&json!({"service": "web"})).is_empty());
    }

    proptest! {
        /// Over any run, each backend gets its weight's share of all requests, to within one.
        #[test]
        fn shares_follow_the_weights(
            weights in prop::collection::vec(0u32..100, 1..4),
            ticks in 1usize..200,
            per_tick in 0.0f64..50.0,
        ) {
            let backends: Vec<Backend> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| backend(&format!("b{i}"), *w, 0.0))
                .collect();
            let mut splitter = Splitter::default();
            let mut got = vec![0u64; backends.len()];
            for _ in 0..ticks {
                for (n, a) in got.iter_mut().zip(splitter.tick("r", &backends, per_tick)) {
                    *n += a.ok;
                }
            }
            let total: u32 = weights.iter().sum();
            for (w, n) in weights.iter().zip(&got) {
                let expected = if total == 0 {
                    0.0
                } else {
                    per_tick * ticks as f64 * f64::from(*w) / f64::from(total)
                };
                prop_assert!((*n as f64 - expected).abs() <= 1.0 + 1e-6, "{n} vs {expected}");
            }
        }
    }
}

#[cfg(test)]
mod managed_route_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_routes_take_the_requests_with_the_test_header_and_mirrors_copy_a_share() {
        let object = json!({"spec": {"http": [
            {"name": "header", "match": [{"headers": {"X-Weir-Sim": {"exact": "canary"}}}],
             "route": [{"destination": {"host": "web-canary"}, "weight": 100}]},
            {"name": "mirror", "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/"}}],
             "route": [{"destination": {"host": "web-stable"}, "weight": 100}],
             "mirror": {"host": "web-canary.shop.svc.cluster.local"}, "mirrorPercentage": {"value": 35}},
            {"name": "primary", "route": [{"destination": {"host": "web-stable"}, "weight": 100}]}
        ]}});
        let flows = virtual_service_flows(&object);
        assert_eq!(flows.len(), 3);
        assert!((flows[0].share - TEST_HEADER_SHARE).abs() < 1e-9);
        assert!((flows[1].share - (1.0 - TEST_HEADER_SHARE)).abs() < 1e-9);
        assert_eq!(flows[1].mirror, Some(("web-canary".into(), None, 35.0)));
        assert!(
            flows[2].share.abs() < 1e-9,
            "nothing is left for the weighted route"
        );
        // Without managed routes every route gets the whole rate, as before.
        let plain = json!({"spec": {"http": [{"route": []}, {"route": []}]}});
        assert!(
            virtual_service_flows(&plain)
                .iter()
                .all(|f| (f.share - 1.0).abs() < 1e-9)
        );
        // A regex matches the whole value; a condition the simulation cannot judge never does.
        assert!(request_matches(
            &json!({"headers": {"x-weir-sim": {"regex": "can.*"}}}),
            Some(TEST_HEADER)
        ));
        assert!(!request_matches(
            &json!({"headers": {"x-weir-sim": {"regex": "an"}}}),
            Some(TEST_HEADER)
        ));
        assert!(!request_matches(&json!({"port": 80}), None));
    }

    #[test]
    fn http_route_header_rules_take_the_test_header_requests_from_their_paths_rules() {
        let rules = json!([
            {"name": "header", "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"name": "X-Weir-Sim", "type": "Exact", "value": "canary"}]}],
             "backendRefs": [{"name": "web-canary"}]},
            {"name": "other", "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"name": "x-weir-sim", "type": "RegularExpression", "value": "^nope.*"}]}],
             "backendRefs": [{"name": "other-canary"}]},
            {"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "backendRefs": [{"name": "api"}]}
        ]);
        let rules = rules.as_array().cloned().unwrap_or_default();
        let shares = http_route_shares(&rules).expect("header rules");
        let want = [TEST_HEADER_SHARE, 0.0, 1.0 - TEST_HEADER_SHARE, 1.0];
        assert!(
            shares.iter().zip(want).all(|(s, w)| (s - w).abs() < 1e-9),
            "{shares:?}"
        );
        // Without header rules, every rule gets the whole rate, as before.
        assert_eq!(http_route_shares(&rules[2..]), None);
    }

    #[test]
    fn http_route_rules_rank_a_method_above_headers_and_mirror_their_share() {
        let mirror = json!({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "web-canary"}, "percent": 35}});
        let header = json!({"name": "header", "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"name": "x-weir-sim", "type": "Exact", "value": "canary"}]}],
             "backendRefs": [{"name": "web-canary"}]});
        let get = json!({"name": "mirror", "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                "method": "GET"}],
             "filters": [mirror],
             "backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]});
        let post = json!({"name": "posts", "matches": [{"method": "POST"}],
             "backendRefs": [{"name": "web-canary"}]});
        let split = json!({"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]});
        let shares = |rules: serde_json::Value| {
            http_route_shares(rules.as_array().map(Vec::as_slice).unwrap_or_default())
                .expect("conditional rules")
        };
        // Gateway API ranks a method match above header matches: the GET rule takes all.
        let all = shares(json!([header, get, post, split]));
        assert_eq!(all, vec![0.0, 1.0, 0.0, 0.0]);
        // Headers and the method on one match: the test-header requests; the split the rest.
        let mut both = get.clone();
        both["matches"][0]["headers"] = header["matches"][0]["headers"].clone();
        let some = shares(json!([both, split]));
        assert!(
            (some[0] - TEST_HEADER_SHARE).abs() < 1e-9
                && (some[1] - (1.0 - TEST_HEADER_SHARE)).abs() < 1e-9,
            "{some:?}"
        );
        // Ranked alike, the earlier rule wins.
        let first = shares(json!([get, get, split]));
        assert_eq!(first, vec![1.0, 0.0, 0.0]);
        assert_eq!(
            http_route_mirror(&get),
            Some(("web-canary".to_owned(), 35.0))
        );
        assert_eq!(http_route_mirror(&split), None);
        let mut fraction = get.clone();
        fraction["filters"][0]["requestMirror"] =
            json!({"backendRef": {"name": "c"}, "fraction": {"numerator": 1, "denominator": 4}});
        assert_eq!(http_route_mirror(&fraction), Some(("c".to_owned(), 25.0)));
        fraction["filters"][0]["requestMirror"] = json!({"backendRef": {"name": "c"}});
        assert_eq!(http_route_mirror(&fraction), Some(("c".to_owned(), 100.0)));
    }
}
