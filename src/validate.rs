//! Semantic validation of weir's resources: the rules a CRD schema cannot express. Pure: the
//! controller (as status conditions) and `kubectl weir lint` (offline) report the same
//! violations, each naming the field and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::analysis::{AnalysisTemplateSpec, Argument, Metric};
use crate::api::gitsync::GitSyncSpec;
use crate::api::rollout::{
    AnalysisTemplateRef, CanaryStep, RolloutSpec, SetCanaryScale, TrafficRouting,
};
use crate::api::schema::Unsupported;
use crate::duration;

/// Longest a metric's Prometheus query may be waited for (`provider.prometheus.timeout`).
pub const MAX_QUERY_TIMEOUT_SECONDS: i64 = 300;

/// What is wrong with a field, in a small fixed set so it can label Events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// The field must be set.
    Required,
    /// The value is not acceptable.
    Invalid,
    /// weir does not support this field yet; it is reported rather than ignored.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The field's path from the object's root: `spec.strategy.canary.steps[2].setWeight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects violations under a path, so each rule states only its own field name.
#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
}

impl Report {
    fn add(&mut self, kind: ViolationKind, field: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation {
            kind,
            field: field.into(),
            message: message.into(),
        });
    }
    fn required(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(ViolationKind::Required, field, message);
    }
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(ViolationKind::Invalid, field, message);
    }
    fn unsupported(&mut self, at: &str, fields: &Unsupported) {
        for name in fields.keys() {
            let hint = unsupported_hint(at, name);
            self.add(
                ViolationKind::Unsupported,
                format!("{at}.{name}"),
                format!("weir does not support this field yet; {hint}"),
            );
        }
    }
    fn finish(mut self) -> Vec<Violation> {
        self.violations.sort();
        self.violations.dedup();
        self.violations
    }
}

/// What to do instead, for fields users bring from Argo Rollouts.
fn unsupported_hint(at: &str, name: &str) -> String {
    let router = at.ends_with("trafficRouting");
    match name {
        "plugins" if router => "for Gateway API write trafficRouting.gatewayAPI {httpRoute, namespace} instead of the argoproj-labs/gatewayAPI plugin".into(),
        _ if router => format!("the {name} router is not built yet; weir routes traffic with gatewayAPI, or by replica ratio when trafficRouting is omitted"),
        "blueGreen" => "weir implements the canary strategy only".into(),
        "serviceAccountName" if at == "spec.decryption" => "weir decrypts with the age identities of secretRef only (no KMS, so no workload identity); remove it".into(),
        "experiment" | "setHeaderRoute" | "setMirrorRoute" => format!("{name} steps are not built yet; remove the step"),
        _ => "remove it, or check its spelling against `kubectl explain`".into(),
    }
}

/// Hex digits in a commit SHA of the repositories weir reads: SHA-1 (gix is built with sha1
/// only).
pub const SHA_LEN: usize = 40;

/// Whether `text` is a whole commit SHA, as `git rev-parse` prints it (either case).
pub fn is_full_sha(text: &str) -> bool {
    text.len() == SHA_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The violations of one of weir's objects (`weir.dev/*`, by its `kind`), as the controllers
/// would find them; None for any other object. Err: its spec is not one weir reads.
pub fn object(object: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    if !object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("weir.dev/"))
    {
        return None;
    }
    object_as(object["kind"].as_str().unwrap_or_default(), &object["spec"])
}

/// The violations of a `spec` of weir's kind `kind`; None for a kind weir does not check.
pub fn object_as(kind: &str, spec: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    fn parse<T: serde::de::DeserializeOwned>(spec: &serde_json::Value) -> Result<T, String> {
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec does not parse: {e}"))
    }
    Some(match kind {
        "Rollout" => parse::<RolloutSpec>(spec).map(|s| rollout(&s)),
        "AnalysisTemplate" => parse::<AnalysisTemplateSpec>(spec).map(|s| analysis_template(&s)),
        "ClusterAnalysisTemplate" => {
            parse::<AnalysisTemplateSpec>(spec).map(|s| cluster_analysis_template(&s))
        }
        "GitSync" => parse::<GitSyncSpec>(spec).map(|s| git_sync(&s)),
        _ => return None,
    })
}

pub fn rollout(spec: &RolloutSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", &spec.unsupported);
    if spec.replicas.is_some_and(|r| r < 0) {
        report.invalid("spec.replicas", "must be 0 or more");
    }
    check_selector(
        &mut report,
        &spec.selector,
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()),
    );
    if spec.progress_deadline_seconds <= spec.min_ready_seconds {
        report.invalid(
            "spec.progressDeadlineSeconds",
            format!(
                "must be greater than spec.minReadySeconds ({}), or no pod could ever count as progress",
                spec.min_ready_seconds
            ),
        );
    }
    report.unsupported("spec.strategy", &spec.strategy.unsupported);
    let Some(canary) = &spec.strategy.canary else {
        report.required(
            "spec.strategy.canary",
            "a Rollout needs a canary strategy (it may have no steps)",
        );
        return report.finish();
    };
    let at = "spec.strategy.canary";
    report.unsupported(at, &canary.unsupported);
    for (field, service) in [
        ("stableService", &canary.stable_service),
        ("canaryService", &canary.canary_service),
    ] {
        if let Some(name) = service {
            check_name(
                &mut report,
                &format!("{at}.{field}"),
                name,
                NameRule::Dns1035Label,
            );
        }
    }
    if let (Some(stable), Some(canary_service)) = (&canary.stable_service, &canary.canary_service)
        && stable == canary_service
    {
        report.invalid(
            format!("{at}.canaryService"),
            "must differ from stableService: weir points each at a different version",
        );
    }
    if let Some(routing) = &canary.traffic_routing {
        check_traffic_routing(&mut report, routing);
        for (field, service) in [
            ("stableService", &canary.stable_service),
            ("canaryService", &canary.canary_service),
        ] {
            if service.is_none() {
                report.required(format!("{at}.{field}"), "trafficRouting sends each share of traffic to a Service: name both stableService and canaryService");
            }
        }
    }
    for (index, step) in canary.steps.iter().enumerate() {
        check_step(&mut report, &format!("{at}.steps[{index}]"), step);
        if step.set_canary_scale.is_some() && canary.traffic_routing.is_none() {
            report.invalid(
                format!("{at}.steps[{index}].setCanaryScale"),
                "needs trafficRouting: without a router the replica ratio is the traffic ratio, so the canary's scale follows its weight",
            );
        }
    }
    if let Some(background) = &canary.analysis {
        let at = format!("{at}.analysis");
        check_template_refs(&mut report, &at, &background.templates);
        check_args(&mut report, &format!("{at}.args"), &background.args);
        if let Some(start) = background.starting_step
            && (start < 0 || start as usize > canary.steps.len())
        {
            report.invalid(
                format!("{at}.startingStep"),
                format!(
                    "must be between 0 and the number of steps ({})",
                    canary.steps.len()
                ),
            );
        }
    }
    report.finish()
}

fn check_selector(
    report: &mut Report,
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector
        .match_expressions
        .as_ref()
        .filter(|e| !e.is_empty());
    if match_labels.is_none() && expressions.is_none() {
        report.required(
            "spec.selector",
            "an empty selector would select every pod in the namespace; set matchLabels",
        );
        return;
    }
    for (key, value) in match_labels.into_iter().flatten() {
        if labels.get(key) != Some(value) {
            report.invalid(
                "spec.template.metadata.labels",
                format!("must include {key}: {value}, which spec.selector.matchLabels requires"),
            );
        }
    }
    for (index, expression) in expressions.into_iter().flatten().enumerate() {
        let field = format!("spec.selector.matchExpressions[{index}]");
        let values = expression.values.as_deref().unwrap_or_default();
        let present = labels.get(&expression.key);
        let matches = match expression.operator.as_str() {
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => {
                report.invalid(
                    format!("{field}.operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                );
                continue;
            }
        };
        if !matches {
            report.invalid(
                "spec.template.metadata.labels",
                format!("do not satisfy {field} (key {:?})", expression.key),
            );
        }
    }
}

fn check_traffic_routing(report: &mut Report, routing: &TrafficRouting) {
    let at = "spec.strategy.canary.trafficRouting";
    report.unsupported(at, &routing.unsupported);
    match &routing.gateway_api {
        Some(gateway) => {
            check_name(
                report,
                &format!("{at}.gatewayAPI.httpRoute"),
                &gateway.http_route,
                NameRule::Dns1123Subdomain,
            );
            if let Some(namespace) = &gateway.namespace {
                check_name(
                    report,
                    &format!("{at}.gatewayAPI.namespace"),
                    namespace,
                    NameRule::Dns1123Label,
                );
            }
        }
        None if routing.unsupported.is_empty() => {
            report.required(
                format!("{at}.gatewayAPI"),
                "name a router, or omit trafficRouting to split traffic by replica count",
            );
        }
        None => {}
    }
}

fn check_step(report: &mut Report, at: &str, step: &CanaryStep) {
    report.unsupported(at, &step.unsupported);
    let actions = [
        step.set_weight.is_some(),
        step.pause.is_some(),
        step.analysis.is_some(),
        step.set_canary_scale.is_some(),
    ];
    match actions.iter().filter(|set| **set).count() {
        0 if step.unsupported.is_empty() => {
            report.required(at, "a step needs exactly one of setWeight, pause, analysis or setCanaryScale");
        }
        0 | 1 => {}
        _ => report.invalid(at, "a step takes exactly one of setWeight, pause, analysis or setCanaryScale; split it into several steps"),
    }
    if let Some(weight) = step.set_weight
        && !(0..=100).contains(&weight)
    {
        report.invalid(
            format!("{at}.setWeight"),
            format!("{weight} is not a percentage from 0 to 100"),
        );
    }
    if let Some(duration) = step.pause.as_ref().and_then(|p| p.duration.as_ref())
        && let Err(error) = duration::parse_int_or_string(duration)
    {
        report.invalid(format!("{at}.pause.duration"), error.to_string());
    }
    if let Some(analysis) = &step.analysis {
        check_template_refs(report, &format!("{at}.analysis"), &analysis.templates);
        check_args(report, &format!("{at}.analysis.args"), &analysis.args);
    }
    if let Some(scale) = &step.set_canary_scale {
        check_canary_scale(report, &format!("{at}.setCanaryScale"), scale);
    }
}

fn check_canary_scale(report: &mut Report, at: &str, scale: &SetCanaryScale) {
    let set = [
        scale.replicas.is_some(),
        scale.weight.is_some(),
        scale.match_traffic_weight.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        report.invalid(
            at,
            "takes exactly one of replicas, weight or matchTrafficWeight",
        );
    }
    if scale.replicas.is_some_and(|r| r < 0) {
        report.invalid(format!("{at}.replicas"), "must be 0 or more");
    }
    if let Some(weight) = scale.weight.filter(|w| !(0..=100).contains(w)) {
        report.invalid(
            format!("{at}.weight"),
            format!("{weight} is not a percentage from 0 to 100"),
        );
    }
    if scale.match_traffic_weight == Some(false) {
        report.invalid(
            format!("{at}.matchTrafficWeight"),
            "can only be true; to scale by a fixed amount use replicas or weight",
        );
    }
}

fn check_template_refs(report: &mut Report, at: &str, templates: &[AnalysisTemplateRef]) {
    if templates.is_empty() {
        report.required(
            format!("{at}.templates"),
            "name at least one AnalysisTemplate",
        );
    }
    for (index, template) in templates.iter().enumerate() {
        check_name(
            report,
            &format!("{at}.templates[{index}].templateName"),
            &template.template_name,
            NameRule::Dns1123Subdomain,
        );
    }
}

fn check_args(report: &mut Report, at: &str, args: &[Argument]) {
    let mut seen = BTreeSet::new();
    for (index, arg) in args.iter().enumerate() {
        let field = format!("{at}[{index}]");
        if arg.name.is_empty() {
            report.required(format!("{field}.name"), "an argument needs a name");
        } else if !seen.insert(arg.name.as_str()) {
            report.invalid(
                format!("{field}.name"),
                format!("argument {:?} is given twice", arg.name),
            );
        }
        let Some(from) = &arg.value_from else {
            continue;
        };
        if arg.value.is_some() {
            report.invalid(&field, "takes value or valueFrom, not both");
        }
        let sources = [
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.pod_template_hash_value.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            report.invalid(
                format!("{field}.valueFrom"),
                "takes exactly one of secretKeyRef, fieldRef or podTemplateHashValue",
            );
        }
        if let Some(secret) = &from.secret_key_ref {
            check_name(
                report,
                &format!("{field}.valueFrom.secretKeyRef.name"),
                &secret.name,
                NameRule::Dns1123Subdomain,
            );
            if secret.key.is_empty() {
                report.required(
                    format!("{field}.valueFrom.secretKeyRef.key"),
                    "name the key of the Secret to read",
                );
            }
        }
        if from
            .field_ref
            .as_ref()
            .is_some_and(|f| f.field_path.is_empty())
        {
            report.required(
                format!("{field}.valueFrom.fieldRef.fieldPath"),
                "name a field, such as metadata.name",
            );
        }
    }
}

pub fn analysis_template(spec: &AnalysisTemplateSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", &spec.unsupported);
    check_args(&mut report, "spec.args", &spec.args);
    let declared: BTreeSet<&str> = spec.args.iter().map(|a| a.name.as_str()).collect();
    if spec.metrics.is_empty() {
        report.required("spec.metrics", "a template needs at least one metric");
    }
    let mut names = BTreeSet::new();
    for (index, metric) in spec.metrics.iter().enumerate() {
        let at = format!("spec.metrics[{index}]");
        if !names.insert(metric.name.as_str()) {
            report.invalid(
                format!("{at}.name"),
                format!("metric {:?} is defined twice", metric.name),
            );
        }
        check_metric(&mut report, &at, metric, &declared);
    }
    for (index, retention) in spec.measurement_retention.iter().enumerate() {
        if retention.limit < 1 {
            report.invalid(
                format!("spec.measurementRetention[{index}].limit"),
                "must be at least 1",
            );
        }
        if retention.metric_name != "*" && !names.contains(retention.metric_name.as_str()) {
            report.invalid(
                format!("spec.measurementRetention[{index}].metricName"),
                format!(
                    "{:?} is not a metric of this template (use \"*\" for all)",
                    retention.metric_name
                ),
            );
        }
    }
    for (index, dry_run) in spec.dry_run.iter().enumerate() {
        if dry_run.metric_name != "*" && !names.contains(dry_run.metric_name.as_str()) {
            report.invalid(
                format!("spec.dryRun[{index}].metricName"),
                format!(
                    "{:?} is not a metric of this template (use \"*\" for all)",
                    dry_run.metric_name
                ),
            );
        }
    }
    report.finish()
}

/// A ClusterAnalysisTemplate is written by the cluster's operators and copied into
/// AnalysisRuns in every tenant's namespace, where whoever may read runs there reads it. So
/// on top of a template's rules, nothing a header could carry as a credential may be written
/// in it literally: a header value is built from `{{args.NAME}}` only, those arguments have
/// no literal default here, and an address carries no `user:password@`. Credentials come
/// from `authentication` (a Secret in the run's namespace, read only when measuring).
pub fn cluster_analysis_template(spec: &AnalysisTemplateSpec) -> Vec<Violation> {
    let mut report = Report {
        violations: analysis_template(spec),
    };
    const USE_AUTHENTICATION: &str = "send credentials with authentication.bearerToken or authentication.basicAuth (from a Secret in the run's namespace)";
    for (index, metric) in spec.metrics.iter().enumerate() {
        let Some(prometheus) = &metric.provider.prometheus else {
            continue;
        };
        let at = format!("spec.metrics[{index}].provider.prometheus");
        // Parsed as the query's sender parses it (reqwest's URL parser).
        if let Some(address) = &prometheus.address
            && reqwest::Url::parse(address)
                .is_ok_and(|url| !url.username().is_empty() || url.password().is_some())
        {
            report.invalid(
                format!("{at}.address"),
                format!("carries user:password@, which every AnalysisRun made from this ClusterAnalysisTemplate would show: {USE_AUTHENTICATION}"),
            );
        }
        for (h, header) in prometheus.headers.iter().enumerate() {
            let literal = placeholders_removed(&header.value);
            if !literal.trim().is_empty() {
                report.invalid(
                    format!("{at}.headers[{h}].value"),
                    format!("header {:?} has a literal value, which every AnalysisRun made from this ClusterAnalysisTemplate would show in the clear: {USE_AUTHENTICATION}, or build the value from {{{{args.NAME}}}} only", header.key),
                );
            }
        }
    }
    // An argument's default is copied into every run too: none for one a header sends.
    for (a, arg) in spec.args.iter().enumerate() {
        if arg.value.is_none() {
            continue;
        }
        let sent_in = spec.metrics.iter().find_map(|metric| {
            let prometheus = metric.provider.prometheus.as_ref()?;
            prometheus
                .headers
                .iter()
                .find(|h| placeholders(&h.value).contains(&arg.name.as_str()))
                .map(|h| (metric.name.as_str(), h.key.as_str()))
        });
        if let Some((metric, header)) = sent_in {
            report.invalid(
                format!("spec.args[{a}].value"),
                format!("argument {:?} is sent in header {header:?} of metric {metric:?}, and its default would be copied into every AnalysisRun in the clear: take it from a Secret (valueFrom.secretKeyRef, read in the run's namespace) or leave it for the Rollout to give", arg.name),
            );
        }
    }
    report.finish()
}

/// `text` without its `{{args.NAME}}` placeholders (an unterminated `{{` stays text).
fn placeholders_removed(text: &str) -> String {
    let mut kept = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        kept.push_str(&rest[..start]);
        if after[..end].trim().strip_prefix("args.").is_none() {
            kept.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    kept.push_str(rest);
    kept
}

fn check_metric(report: &mut Report, at: &str, metric: &Metric, declared_args: &BTreeSet<&str>) {
    report.unsupported(at, &metric.unsupported);
    if metric.name.is_empty() {
        report.required(format!("{at}.name"), "a metric needs a name");
    }
    for (field, value) in [
        ("interval", &metric.interval),
        ("initialDelay", &metric.initial_delay),
    ] {
        if let Some(text) = value.as_deref().filter(|t| !is_placeholder(t))
            && let Err(error) = duration::parse(text)
        {
            report.invalid(format!("{at}.{field}"), error.to_string());
        }
    }
    if let Some(Ok(interval)) = metric
        .interval
        .as_deref()
        .filter(|t| !is_placeholder(t))
        .map(duration::parse)
        && interval < std::time::Duration::from_secs(1)
    {
        report.invalid(
            format!("{at}.interval"),
            "must be at least 1s: Prometheus cannot answer anything new faster",
        );
    }
    let count = check_count(report, &format!("{at}.count"), metric.count.as_ref());
    if count.is_some_and(|c| c > 1) && metric.interval.is_none() {
        report.required(
            format!("{at}.interval"),
            "a metric measured more than once needs an interval between measurements",
        );
    }
    check_count(
        report,
        &format!("{at}.failureLimit"),
        metric.failure_limit.as_ref(),
    );
    check_count(
        report,
        &format!("{at}.inconclusiveLimit"),
        metric.inconclusive_limit.as_ref(),
    );
    check_count(
        report,
        &format!("{at}.consecutiveErrorLimit"),
        metric.consecutive_error_limit.as_ref(),
    );
    let conditions = metric.success_condition.is_some() || metric.failure_condition.is_some();
    match &metric.threshold_range {
        Some(_) if conditions => report.invalid(
            format!("{at}.thresholdRange"),
            "use thresholdRange or successCondition/failureCondition, not both",
        ),
        Some(range) => match (range.min, range.max) {
            (None, None) => report.required(format!("{at}.thresholdRange"), "set min, max, or both"),
            (Some(min), Some(max)) if min > max => {
                report.invalid(format!("{at}.thresholdRange"), format!("min ({min}) is greater than max ({max})"))
            }
            _ => {}
        },
        None if !conditions => report.required(
            format!("{at}.successCondition"),
            "a metric needs successCondition, failureCondition or thresholdRange, or it could never fail",
        ),
        None => {}
    }
    for (field, condition) in [
        ("successCondition", &metric.success_condition),
        ("failureCondition", &metric.failure_condition),
    ] {
        match condition.as_deref() {
            Some(c) if c.trim().is_empty() => report.invalid(
                format!("{at}.{field}"),
                "is empty; write an expression such as result[0] >= 0.95",
            ),
            Some(c) => {
                if let Err(error) = crate::verdict::check_condition(c) {
                    report.invalid(format!("{at}.{field}"), error);
                }
            }
            None => {}
        }
    }
    report.unsupported(&format!("{at}.provider"), &metric.provider.unsupported);
    match &metric.provider.prometheus {
        Some(prometheus) => {
            let at = format!("{at}.provider.prometheus");
            report.unsupported(&at, &prometheus.unsupported);
            if prometheus.query.trim().is_empty() {
                report.required(format!("{at}.query"), "write the PromQL query to run");
            }
            for name in placeholders(&prometheus.query) {
                if !declared_args.contains(name) {
                    report.invalid(
                        format!("{at}.query"),
                        format!(
                            "uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"
                        ),
                    );
                }
            }
            if let Some(address) = &prometheus.address
                && !(address.starts_with("http://") || address.starts_with("https://"))
            {
                report.invalid(
                    format!("{at}.address"),
                    format!("{address:?} must start with http:// or https://"),
                );
            }
            match prometheus.timeout {
                Some(t) if t < 1 => {
                    report.invalid(format!("{at}.timeout"), "must be at least 1 second")
                }
                Some(t) if t > MAX_QUERY_TIMEOUT_SECONDS => report.invalid(
                    format!("{at}.timeout"),
                    format!(
                        "is {t} seconds; at most {MAX_QUERY_TIMEOUT_SECONDS} are accepted: a query that slow holds a reconcile and a place among the queries to its Prometheus (make the query cheaper, e.g. a recording rule)"
                    ),
                ),
                _ => {}
            }
            for (index, header) in prometheus.headers.iter().enumerate() {
                let valid = !header.key.is_empty()
                    && header
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !valid {
                    report.invalid(
                        format!("{at}.headers[{index}].key"),
                        format!("{:?} is not an HTTP header name", header.key),
                    );
                }
            }
            if let Some(auth) = &prometheus.authentication {
                let auth_at = format!("{at}.authentication");
                report.unsupported(&auth_at, &auth.unsupported);
                match (&auth.bearer_token, &auth.basic_auth) {
                    (Some(_), Some(_)) => {
                        report.invalid(&auth_at, "takes bearerToken or basicAuth, not both")
                    }
                    (None, None) if auth.unsupported.is_empty() => report.required(
                        &auth_at,
                        "set bearerToken or basicAuth, or remove authentication",
                    ),
                    _ => {}
                }
                if let Some(token) = &auth.bearer_token {
                    check_name(
                        report,
                        &format!("{auth_at}.bearerToken.name"),
                        &token.name,
                        NameRule::Dns1123Subdomain,
                    );
                    if token.key.is_empty() {
                        report.required(
                            format!("{auth_at}.bearerToken.key"),
                            "name the key that holds the token",
                        );
                    }
                }
                if let Some(basic) = &auth.basic_auth {
                    check_name(
                        report,
                        &format!("{auth_at}.basicAuth.secretName"),
                        &basic.secret_name,
                        NameRule::Dns1123Subdomain,
                    );
                }
            }
        }
        None if metric.provider.unsupported.is_empty() => {
            report.required(
                format!("{at}.provider.prometheus"),
                "a metric needs a provider; weir has prometheus",
            );
        }
        None => {}
    }
}

/// Checks a count-like field (integer, or an `{{args.X}}` placeholder) and returns its value.
fn check_count(
    report: &mut Report,
    field: &str,
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
) -> Option<i64> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let parsed = match value? {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(text) if is_placeholder(text) => return None,
        IntOrString::String(text) => match text.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                report.invalid(
                    field,
                    format!("{text:?} is not a whole number or an {{{{args.NAME}}}} placeholder"),
                );
                return None;
            }
        },
    };
    if parsed < 0 {
        report.invalid(field, "must be 0 or more");
    }
    Some(parsed)
}

fn is_placeholder(text: &str) -> bool {
    text.contains("{{")
}

/// The argument names a text refers to as `{{args.NAME}}` (spaces inside braces allowed).
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if let Some(name) = after[..end].trim().strip_prefix("args.") {
            names.push(name.trim());
        }
        rest = &after[end + 2..];
    }
    names
}

pub fn git_sync(spec: &GitSyncSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", &spec.unsupported);
    let url = spec.url.trim();
    let scheme_ok = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    if url.is_empty() {
        report.required("spec.url", "name the repository to follow");
    } else if !scheme_ok {
        let hint = if url.contains('@') && url.contains(':') {
            " (for scp-like addresses write ssh://user@host/path)"
        } else {
            ""
        };
        report.invalid(
            "spec.url",
            format!("{url:?} must start with https://, http://, ssh://, git:// or file://{hint}"),
        );
    }
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(rest));
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    // ssh://git@host names the SSH user; anything before @ in an http(s) URL is a credential.
    if authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':') || matches!(scheme, "http" | "https"))
    {
        // Anything in the URL shows in conditions, Events and logs.
        report.invalid(
            "spec.url",
            "must not carry a password or token: put it in the Secret named by spec.secretRef (key password)",
        );
    }
    let git_ref = &spec.git_ref;
    let refs = [
        git_ref.branch.is_some(),
        git_ref.tag.is_some(),
        git_ref.commit.is_some(),
    ];
    if refs.iter().filter(|r| **r).count() != 1 {
        report.invalid("spec.ref", "takes exactly one of branch, tag or commit");
    }
    if let Some(commit) = &git_ref.commit
        && !is_full_sha(commit)
    {
        report.invalid(
            "spec.ref.commit",
            format!("{commit:?} is not a full commit SHA (40 hex digits)"),
        );
    }
    for (field, name) in [("branch", &git_ref.branch), ("tag", &git_ref.tag)] {
        if name.as_deref().is_some_and(|n| {
            n.is_empty()
                || n.starts_with('-')
                || n.contains("..")
                || n.contains(char::is_whitespace)
        }) {
            report.invalid(format!("spec.ref.{field}"), "is not a valid Git ref name");
        }
    }
    if spec.path.starts_with('/') || spec.path.split('/').any(|part| part == "..") {
        report.invalid(
            "spec.path",
            format!(
                "{:?} must be a path inside the repository (relative, without ..)",
                spec.path
            ),
        );
    }
    match duration::parse(&spec.interval) {
        // Below a second a GitSync would fetch and apply in a loop for everyone's workers.
        Ok(interval) if interval < std::time::Duration::from_secs(1) => report.invalid(
            "spec.interval",
            format!(
                "{:?} is shorter than the minimum of 1s; use a push webhook for changes to arrive at once",
                spec.interval
            ),
        ),
        Ok(_) => {}
        Err(error) => report.invalid("spec.interval", error.to_string()),
    }
    match duration::parse(&spec.health_timeout) {
        // Workloads are looked at every few seconds: a shorter wait would reject a revision
        // before its objects were seen at all.
        Ok(timeout) if timeout < std::time::Duration::from_secs(10) => report.invalid(
            "spec.healthTimeout",
            format!(
                "{:?} is shorter than the minimum of 10s; give workloads the time they need to become ready (default 5m)",
                spec.health_timeout
            ),
        ),
        Ok(_) => {}
        Err(error) => report.invalid("spec.healthTimeout", error.to_string()),
    }
    if let Some(secret) = &spec.secret_ref {
        check_name(
            &mut report,
            "spec.secretRef.name",
            &secret.name,
            NameRule::Dns1123Subdomain,
        );
    }
    if let Some(account) = &spec.service_account_name {
        check_name(
            &mut report,
            "spec.serviceAccountName",
            account,
            NameRule::Dns1123Subdomain,
        );
    }
    // A bound keeps the dependency walk and the status message small; real stacks have a
    // handful of layers.
    const MOST_DEPENDENCIES: usize = 32;
    if spec.depends_on.len() > MOST_DEPENDENCIES {
        report.invalid(
            "spec.dependsOn",
            format!(
                "names {} GitSyncs; at most {MOST_DEPENDENCIES} are allowed",
                spec.depends_on.len()
            ),
        );
    }
    let mut named = std::collections::BTreeSet::new();
    for (i, dependency) in spec.depends_on.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}].name");
        check_name(
            &mut report,
            &field,
            &dependency.name,
            NameRule::Dns1123Subdomain,
        );
        if !named.insert(dependency.name.as_str()) {
            report.invalid(field, format!("{:?} is named twice", dependency.name));
        }
    }
    if let Some(decryption) = &spec.decryption {
        report.unsupported("spec.decryption", &decryption.unsupported);
        if decryption.provider != "sops" {
            report.invalid(
                "spec.decryption.provider",
                format!(
                    "{:?} is not a decryption provider weir has: the only one is sops",
                    decryption.provider
                ),
            );
        }
        match &decryption.secret_ref {
            Some(secret) => check_name(
                &mut report,
                "spec.decryption.secretRef.name",
                &secret.name,
                NameRule::Dns1123Subdomain,
            ),
            None => report.required(
                "spec.decryption.secretRef",
                "name the Secret, in this namespace, whose .agekey entries hold the age identities",
            ),
        }
    }
    let write_back = &spec.rollback.write_back;
    if write_back.enabled {
        for (field, value) in [
            ("authorName", &write_back.author_name),
            ("authorEmail", &write_back.author_email),
        ] {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                report.required(
                    format!("spec.rollback.writeBack.{field}"),
                    "revert commits need an author when write-back is enabled",
                );
            }
        }
        if !spec.rollback.on_failure {
            report.invalid(
                "spec.rollback.writeBack.enabled",
                "write-back reverts a rolled-back revision, so it needs rollback.onFailure: true",
            );
        }
        if git_ref.branch.is_none() && write_back.branch.is_none() {
            report.required(
                "spec.rollback.writeBack.branch",
                "with a tag or commit ref there is no tracked branch to push to; name one",
            );
        }
        if write_back.branch.is_some() && write_back.branch == git_ref.branch {
            report.invalid(
                "spec.rollback.writeBack.branch",
                "weir replaces this branch with each revert (it is for a pull request), so it must not be the tracked branch; leave it out to push to the tracked branch, which only ever gets a fast-forward",
            );
        }
    }
    if let Some(branch) = &write_back.branch
        && (branch.is_empty() || branch.contains("..") || branch.contains(char::is_whitespace))
    {
        report.invalid(
            "spec.rollback.writeBack.branch",
            "is not a valid Git branch name",
        );
    }
    report.finish()
}

#[derive(Clone, Copy)]
enum NameRule {
    /// Services: lower-case letters, digits and '-', starting with a letter, at most 63.
    Dns1035Label,
    /// Namespaces: lower-case letters, digits and '-', at most 63.
    Dns1123Label,
    /// Most object names: DNS-1123 labels joined by '.', at most 253.
    Dns1123Subdomain,
}

fn check_name(report: &mut Report, field: &str, name: &str, rule: NameRule) {
    let label_ok = |label: &str, letter_first: bool| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && (!letter_first || bytes[0].is_ascii_lowercase())
    };
    let (ok, what) = match rule {
        NameRule::Dns1035Label => (
            label_ok(name, true),
            "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters)",
        ),
        NameRule::Dns1123Label => (
            label_ok(name, false),
            "a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)",
        ),
        NameRule::Dns1123Subdomain => (
            name.len() <= 253 && name.split('.').all(|label| label_ok(label, false)),
            "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)",
        ),
    };
    if name.is_empty() {
        report.required(field, "must not be empty");
    } else if !ok {
        report.invalid(field, format!("{name:?} is not {what}"));
    }
}

#[cfg(test)]
mod tests;
