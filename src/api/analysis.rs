//! Analysis: `AnalysisTemplate` and `ClusterAnalysisTemplate` define metrics, an
//! `AnalysisRun` measures them for one rollout step (or in the background) and records every
//! measurement. Shapes follow Argo Rollouts so that its templates work unchanged.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::Unsupported;
use super::schema::keep_unknown_fields;
use super::schema::keeps_unknown_fields;

/// Reusable metric definitions, referenced by a Rollout's analysis steps.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    doc = "Metrics that gate a Rollout's steps, with what counts as good.",
    namespaced,
    shortname = "wat",
    category = "weir",
    derive = "PartialEq",
    derive = "Default",
    status = "TemplateStatus",
    printcolumn = r#"{"name":"Metrics","type":"string","jsonPath":".spec.metrics[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AnalysisTemplateSpec {
    /// Required (validation says so by name, rather than the parse failing on it).
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Arguments the queries use as `{{args.NAME}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Other templates whose metrics, args, dry-run and retention entries this one takes in,
    /// as Argo Rollouts composes templates (resolved when a run is made, never in a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Metrics (by name, `*` for all) that are measured and recorded but never fail the run,
    /// as in Argo Rollouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// How many recent measurements a run keeps per metric (default 10), as in Argo Rollouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A template named by a Rollout's analysis or composed into another template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AnalysisTemplateRef {
    pub template_name: String,
    /// Refers to a ClusterAnalysisTemplate instead of an AnalysisTemplate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The same definitions as an AnalysisTemplate, shared by every namespace. A step refers to
/// one with `clusterScope: true`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    doc = "An AnalysisTemplate shared by every namespace.",
    shortname = "wcat",
    category = "weir",
    derive = "PartialEq",
    derive = "Default",
    status = "TemplateStatus",
    printcolumn = r#"{"name":"Metrics","type":"string","jsonPath":".spec.metrics[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(transform = keep_unknown_fields)]
pub struct ClusterAnalysisTemplateSpec {
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// Whether the controller found a template usable, so users see a broken template before a
/// rollout trips over it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct DryRun {
    /// A metric name, or `*` for every metric.
    pub metric_name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct MeasurementRetention {
    /// A metric name, or `*` for every metric.
    pub metric_name: String,
    /// Measurements kept, newest last (at least 1).
    #[schemars(range(min = 1))]
    pub limit: i32,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Labels and annotations for an AnalysisRun (a Rollout analysis' `analysisRunMetadata`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AnalysisRunMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// One thing to measure, how often, and what counts as good.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Metric {
    pub name: String,
    /// Time between measurements (`30s`, `5m`). Required when `count` is more than 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How many measurements to take. Unset: one without an `interval`; with an `interval`,
    /// unbounded until the run is stopped or a limit is passed (as in Argo, so a step analysis
    /// with an interval and no count never ends by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    /// Wait this long before the first measurement (`1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// A CEL expression over `result`; true means Successful (`result[0] >= 0.95`). `result`
    /// is the list of sample values for a vector query and the number for a scalar one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// A CEL expression over `result`; true means Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Successful when the value lies within `[min, max]` (either bound optional), as in Flagger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Failed measurements tolerated before the metric fails (default 0; -1: no limit, as
    /// in Argo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    /// Inconclusive measurements tolerated before the metric is Inconclusive (default 0; -1:
    /// no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Consecutive errored measurements tolerated before the metric is Error (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// The metric is Successful, and stops measuring, once this many measurements in a row
    /// succeeded (unset or 0: off), as in Argo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<IntOrString>,
    /// What a measurement that found no data (an empty vector, NaN) counts as; by default
    /// Inconclusive, never Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_as: Option<NoDataAs>,
    /// Measure and record, but never let this metric fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub provider: MetricProvider,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NoDataAs {
    #[default]
    Inconclusive,
    Failed,
    Error,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = keep_unknown_fields)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Where measurements come from: exactly one provider. weir has Prometheus, web and job;
/// Argo's other providers (datadog, newRelic, ...) are reported as unsupported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct MetricProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobMetric>,
    /// weir's statistical judge of the canary against a baseline (no Argo counterpart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeMetric>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// weir's judge: the canary compared with a baseline, statistically, instead of with a fixed
/// number. Two Prometheus queries, usually one query with `{{args.baseline-hash}}` and
/// `{{args.canary-hash}}` (weir fills both). Without totals, each query's values from the
/// run's start (after `initialDelay`) to now, one every `step` (the newest 10,000; for
/// Mann-Whitney the last `interval`'s), are the samples of its version (latency, say); with
/// `baselineTotal` and `canaryTotal`, the queries count events (errors) and the totals their
/// exposure (requests), each summed to one number. The measurement records the statistic,
/// p-value, effect and sample counts in its `metadata`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct JudgeMetric {
    /// Prometheus' base URL; defaults to the controller's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The baseline's query.
    pub baseline: String,
    /// The canary's query.
    pub canary: String,
    /// The baseline's exposure (requests): makes the queries counts of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_total: Option<String>,
    /// The canary's exposure (requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_total: Option<String>,
    /// `sequential` (default): an always-valid test, looked at every measurement, that fails
    /// the canary as soon as the evidence is there; `mannWhitney`: Kayenta's rank test over
    /// the samples of each measurement.
    #[serde(default)]
    pub method: JudgeMethod,
    /// Which way is bad: `increase` (default; latency, errors) or `decrease`.
    #[serde(default)]
    pub direction: JudgeDirection,
    /// The smallest relative change that matters (default 0.1: 10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// The false-alarm probability (default 0.05); a sequential test's holds however often
    /// it is looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// How much the canary must have shown with no evidence against it before a sequential
    /// test calls it Successful: samples (default 20), or with totals requests (default
    /// 1,000). A Mann-Whitney test needs this many samples a side (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2))]
    pub samples: Option<i64>,
    /// The spacing of samples in whole seconds (default `10s`), on one grid from the run's
    /// start: at least Prometheus' scrape interval, or one scrape is counted several times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Seconds to wait for each answer (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
    /// Extra HTTP headers sent with each query, as `provider.prometheus.headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Credentials from a Secret in the run's namespace, as
    /// `provider.prometheus.authentication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PrometheusAuthentication>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// How the judge compares.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JudgeMethod {
    #[default]
    Sequential,
    MannWhitney,
}

/// Which way the canary going is bad.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JudgeDirection {
    #[default]
    Increase,
    Decrease,
}

impl JudgeMetric {
    /// The Prometheus metric that sends `query` with this judge's address and credentials.
    pub fn prometheus(&self, query: &str) -> PrometheusMetric {
        PrometheusMetric {
            address: self.address.clone(),
            query: query.to_owned(),
            timeout: self.timeout,
            headers: self.headers.clone(),
            authentication: self.authentication.clone(),
            range_query: None,
            unsupported: Unsupported::default(),
        }
    }

    /// Each query with the field that holds it.
    pub fn queries(&self) -> Vec<(&'static str, &str)> {
        let mut queries = vec![
            ("baseline", self.baseline.as_str()),
            ("canary", self.canary.as_str()),
        ];
        if let Some(total) = &self.baseline_total {
            queries.push(("baselineTotal", total));
        }
        if let Some(total) = &self.canary_total {
            queries.push(("canaryTotal", total));
        }
        queries
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PrometheusMetric {
    /// Prometheus' base URL; defaults to the controller's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A PromQL instant query; `{{args.NAME}}` placeholders are substituted first.
    pub query: String,
    /// Seconds to wait for an answer (default 30), as in Argo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
    /// Extra HTTP headers sent with the query. In a ClusterAnalysisTemplate a value is built
    /// from `{{args.NAME}}` only (its literal text would be copied into every AnalysisRun);
    /// credentials go in `authentication`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Credentials from a Secret in the run's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PrometheusAuthentication>,
    /// Argo's range query: `result` is every value of every series the query returns over
    /// `[start, end]` at `step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_query: Option<RangeQuery>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Argo's `web` provider: an HTTP request whose JSON answer, or the part `jsonPath`
/// selects, is `result`. `{{args.NAME}}` is substituted in the URL, the header values and
/// the body.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct WebMetric {
    /// An http:// or https:// URL; its host must be one the operator allows
    /// (`--allowed-metric-hosts`).
    pub url: String,
    /// GET (the default), POST or PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// The request body, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The request body as JSON (sent with `Content-Type: application/json`); not with `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::any_json")]
    pub json_body: Option<serde_json::Value>,
    /// Seconds to wait for the answer (default 10, as in Argo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
    /// The part of the answer that is `result`, in Kubernetes' JSONPath template form as Argo
    /// writes it (`{$.data.ok}`); the whole answer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Skip verifying the server's TLS certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Argo's `job` provider: a Kubernetes Job made from `spec` (`{{args.NAME}}` filled in its
/// strings) in the run's namespace, owned by the run; the Job succeeding is a Successful
/// measurement, failing a Failed one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct JobMetric {
    /// Labels and annotations for the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JobMetadata>,
    /// A `batch/v1` JobSpec, as in a Job.
    #[schemars(schema_with = "crate::api::schema::any_json")]
    pub spec: serde_json::Value,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Labels and annotations for the Job a `job` metric makes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetadata {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Argo's `jsonPath` (Kubernetes' template form, `{$.data.ok}` or `{.data.ok}`) as the
/// JSONPath query it holds (`$.data.ok`).
pub fn json_path_query(written: &str) -> String {
    let inner = written.trim();
    let inner = inner
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(inner)
        .trim();
    if inner.starts_with('$') {
        inner.to_owned()
    } else if inner.starts_with('.') || inner.starts_with('[') {
        format!("${inner}")
    } else {
        format!("$.{inner}")
    }
}

/// The span of a range query, as Argo writes it: `start` and `end` in expr's time forms
/// (`now()`, `now() - duration("5m")`), `step` a duration (`1m`). `{{args.NAME}}` is filled
/// in each.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RangeQuery {
    pub start: String,
    pub end: String,
    pub step: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// At most one way to authenticate to Prometheus. Argo's `sigv4` and `oauth2` are reported as
/// unsupported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PrometheusAuthentication {
    /// `Authorization: Bearer <the key's value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeyRef>,
    /// HTTP basic auth: `{secretName}` (a Secret with the keys `username` and `password`,
    /// the layout of Kubernetes' `kubernetes.io/basic-auth` Secrets) or, as in Argo,
    /// `{username, password}`, each literal or built from `{{args.NAME}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Argo's OAuth2 client-credentials flow: a token from `tokenUrl`, sent as
    /// `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// An OAuth2 client (RFC 6749, client credentials). `{{args.NAME}}` is filled in each
/// field; the secret belongs in a Secret-valued argument.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct OAuth2 {
    /// The token endpoint; its host must be one `--allowed-metric-hosts` allows.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct BasicAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Masked wherever a measurement is recorded; take it from a Secret-valued argument
    /// (`{{args.NAME}}`) so it is not stored in the template and its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = keep_unknown_fields)]
pub struct Header {
    pub key: String,
    pub value: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A named value for `{{args.NAME}}`: a literal `value`, or one taken from elsewhere. weir
/// itself fills the arguments `canary-hash`, `stable-hash`, `baseline-hash` (the version a
/// judge compares the canary with: the stable one), `rollout-name` and `namespace` when a
/// template declares them and the Rollout gives them no value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Argument {
    pub name: String,
    /// A literal value. A number written unquoted (`value: 5`) is taken as its text, as Argo
    /// does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_number"
    )]
    #[schemars(schema_with = "super::schema::int_or_string")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Exactly one source for an argument's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ArgumentValueFrom {
    /// A key of a Secret in the template's namespace (in a template's `args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A field of the Rollout, such as `metadata.name` (in a Rollout's `args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
    /// The pod-template hash of the stable or the latest (canary) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<PodTemplateHashValue>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = keep_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct FieldRef {
    pub field_path: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodTemplateHashValue {
    Stable,
    Latest,
}

/// A string, or a number or boolean taken as the text it is written as.
fn text_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "an argument value is a string or a number, not {other}"
        ))),
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One evaluation of a set of metrics, owned by the Rollout that asked for it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    doc = "One evaluation of a set of metrics, with every measurement.",
    namespaced,
    status = "AnalysisRunStatus",
    shortname = "war",
    category = "weir",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AnalysisRunSpec {
    /// The metrics, arguments (values resolved; Secret values stay references) and dry-run
    /// list, as merged from the templates the run was made from.
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
    /// Stop measuring; the run ends with what it has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    /// Why the run has its phase, naming the deciding metric and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run reached its final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Metrics by outcome; dry-run metrics are counted apart and never decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_summary: Option<RunSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_summary: Option<RunSummary>,
    /// One entry per metric, with its measurements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The outcome of a run, a metric, or a single measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AnalysisPhase {
    Pending,
    Running,
    Successful,
    Failed,
    Inconclusive,
    Error,
}

impl AnalysisPhase {
    /// The phase is an outcome: nothing more will be measured.
    pub fn is_final(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }

    /// Worst highest: the outcome that decides when several end badly (Failed, then Error,
    /// then Inconclusive, as in Argo); 0 for the rest.
    pub fn severity(self) -> u8 {
        match self {
            AnalysisPhase::Failed => 3,
            AnalysisPhase::Error => 2,
            AnalysisPhase::Inconclusive => 1,
            _ => 0,
        }
    }
}

/// How many metrics ended in each phase, and how many are still measuring.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub count: i32,
    pub successful: i32,
    pub failed: i32,
    pub inconclusive: i32,
    pub error: i32,
    pub running: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    pub phase: AnalysisPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Recent measurements, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    #[serde(default)]
    pub count: i32,
    #[serde(default)]
    pub successful: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default)]
    pub inconclusive: i32,
    #[serde(default)]
    pub error: i32,
    #[serde(default)]
    pub consecutive_error: i32,
    /// Successful measurements in a row, for `consecutiveSuccessLimit`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_success: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub phase: AnalysisPhase,
    /// The measured value as Prometheus returned it (`[0.97]` for a vector, `0.97` for a scalar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The query as sent, arguments substituted (Secret-sourced values shown as `<secret>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a provider records besides the value, as in Argo (a judge: `statistic`,
    /// `pValue`, `effect`, `baselineSamples`, `canarySamples`, `method`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

keeps_unknown_fields!(
    AnalysisTemplateSpec,
    AnalysisTemplateRef,
    DryRun,
    MeasurementRetention,
    Metric,
    ThresholdRange,
    MetricProvider,
    PrometheusMetric,
    RangeQuery,
    WebMetric,
    JobMetric,
    JudgeMetric,
    PrometheusAuthentication,
    OAuth2,
    BasicAuth,
    Header,
    Argument,
    ArgumentValueFrom,
    SecretKeyRef,
    FieldRef,
    AnalysisRunMetadata,
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_spec_is_a_template_spec_plus_terminate_and_keeps_unknown_fields() {
        let raw = json!({
            "metrics": [{"name": "m", "successCondition": "true", "provider": {"prometheus": {"query": "up"}}}],
            "args": [{"name": "a", "value": "1"}],
            "terminate": true,
            "ttlStrategy": {"secondsAfterCompletion": 60}
        });
        let spec: AnalysisRunSpec = serde_json::from_value(raw.clone()).expect("deserializes");
        assert!(spec.terminate);
        assert_eq!(spec.template.metrics.len(), 1);
        assert_eq!(spec.template.args[0].value.as_deref(), Some("1"));
        assert_eq!(
            spec.template.unsupported.keys().collect::<Vec<_>>(),
            vec!["ttlStrategy"],
            "terminate belongs to the run, the unknown field to `unsupported`"
        );
        assert_eq!(serde_json::to_value(&spec).expect("serializes"), raw);
    }

    #[test]
    fn an_argument_value_may_be_written_as_a_number() {
        for (written, text) in [
            (json!(5), "5"),
            (json!(0.25), "0.25"),
            (json!("5m"), "5m"),
            (json!(true), "true"),
        ] {
            let arg: Argument =
                serde_json::from_value(json!({"name": "n", "value": written})).expect("parses");
            assert_eq!(arg.value.as_deref(), Some(text));
        }
        let yaml: Argument = serde_yaml_ng::from_str("name: n\nvalue: 10\n").expect("yaml");
        assert_eq!(yaml.value.as_deref(), Some("10"));
        let absent: Argument = serde_json::from_value(json!({"name": "n"})).expect("parses");
        assert_eq!(absent.value, None);
        assert!(serde_json::from_value::<Argument>(json!({"name": "n", "value": [1]})).is_err());
    }
}
