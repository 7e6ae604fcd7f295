//! The rules of AnalysisTemplates and ClusterAnalysisTemplates, and their arguments.

use std::collections::BTreeSet;

use super::names::{NameRule, check_name};
use super::violation::{Report, Violation};
use crate::api::analysis::{
    AnalysisRunMetadata, AnalysisRunSpec, AnalysisTemplateRef, AnalysisTemplateSpec, Argument,
    BasicAuth, DryRun, JudgeDirection, JudgeMethod, JudgeMetric, MeasurementRetention, Metric,
    PrometheusMetric,
};
use crate::duration;

/// Longest a metric's Prometheus query may be waited for (`provider.prometheus.timeout`).
pub const MAX_QUERY_TIMEOUT_SECONDS: i64 = 300;

pub(super) fn check_args(report: &mut Report, at: &str, args: &[Argument]) {
    let mut seen = BTreeSet::new();
    for (index, arg) in args.iter().enumerate() {
        let field = format!("{at}[{index}]");
        report.unsupported(&field, arg);
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
        report.unsupported(&format!("{field}.valueFrom"), from);
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
            report.unsupported(&format!("{field}.valueFrom.secretKeyRef"), secret);
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
        if let Some(field_ref) = &from.field_ref {
            report.unsupported(&format!("{field}.valueFrom.fieldRef"), field_ref);
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

/// The shape of a run's settings, wherever they are written (a template, or a Rollout's
/// analysis): unknown fields of each `dryRun`, `measurementRetention` and
/// `analysisRunMetadata` entry, and retention limits of at least 1. Whether a named metric
/// exists is checked where the metrics are known.
pub(super) fn check_run_settings(
    report: &mut Report,
    at: &str,
    dry_run: &[DryRun],
    retention: &[MeasurementRetention],
    metadata: Option<&AnalysisRunMetadata>,
) {
    for (index, entry) in dry_run.iter().enumerate() {
        let field = format!("{at}.dryRun[{index}]");
        report.unsupported(&field, entry);
        if entry.metric_name.is_empty() {
            report.required(
                format!("{field}.metricName"),
                "name a metric, or \"*\" for all",
            );
        }
    }
    for (index, entry) in retention.iter().enumerate() {
        let field = format!("{at}.measurementRetention[{index}]");
        report.unsupported(&field, entry);
        if entry.metric_name.is_empty() {
            report.required(
                format!("{field}.metricName"),
                "name a metric, or \"*\" for all",
            );
        }
        if entry.limit < 1 {
            report.invalid(format!("{field}.limit"), "must be at least 1");
        }
    }
    if let Some(metadata) = metadata {
        report.unsupported(&format!("{at}.analysisRunMetadata"), metadata);
        // weir finds its runs by its own labels: a run labelled as another Rollout's would
        // be counted as that Rollout's analysis.
        for key in metadata
            .labels
            .keys()
            .filter(|k| crate::api::contract::is_weirs_own(k))
        {
            report.invalid(
                format!("{at}.analysisRunMetadata.labels"),
                format!("{key:?}: keys under weir.dev/ are weir's own record of whose run it is; use a key of your own"),
            );
        }
    }
}

pub fn analysis_template(spec: &AnalysisTemplateSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    check_args(&mut report, "spec.args", &spec.args);
    let declared: BTreeSet<&str> = spec.args.iter().map(|a| a.name.as_str()).collect();
    check_template_names(&mut report, "spec.templates", &spec.templates);
    if spec.metrics.is_empty() && spec.templates.is_empty() {
        report.required(
            "spec.metrics",
            "a template needs at least one metric, or templates to compose",
        );
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
    check_run_settings(
        &mut report,
        "spec",
        &spec.dry_run,
        &spec.measurement_retention,
        None,
    );
    // A template that composes others may name their metrics: checked once they are read
    // (`analysis::run::check`).
    let composes = !spec.templates.is_empty();
    for (index, retention) in spec.measurement_retention.iter().enumerate() {
        if !composes
            && retention.metric_name != "*"
            && !names.contains(retention.metric_name.as_str())
        {
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
        if !composes && dry_run.metric_name != "*" && !names.contains(dry_run.metric_name.as_str())
        {
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

/// A run's own spec: a template's rules, and nothing left to compose (weir resolves the
/// templates when it makes a run).
pub fn analysis_run(run: &AnalysisRunSpec) -> Vec<Violation> {
    let mut report = Report {
        violations: analysis_template(&run.template),
    };
    if !run.template.templates.is_empty() {
        report.invalid(
            "spec.templates",
            "a run does not compose templates: list their metrics and args in the run, or name the templates in a Rollout's analysis",
        );
    }
    report.finish()
}

/// References to templates: each a name a template can have, with no unknown fields.
pub(super) fn check_template_names(
    report: &mut Report,
    at: &str,
    templates: &[AnalysisTemplateRef],
) {
    for (index, template) in templates.iter().enumerate() {
        report.unsupported(&format!("{at}[{index}]"), template);
        check_name(
            report,
            &format!("{at}[{index}].templateName"),
            &template.template_name,
            NameRule::Dns1123Subdomain,
        );
    }
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
        let (at, address, headers) = match (&metric.provider.prometheus, &metric.provider.web) {
            (Some(prometheus), _) => (
                format!("spec.metrics[{index}].provider.prometheus"),
                prometheus.address.as_ref().map(|a| ("address", a)),
                &prometheus.headers,
            ),
            (None, Some(web)) => (
                format!("spec.metrics[{index}].provider.web"),
                Some(("url", &web.url)),
                &web.headers,
            ),
            (None, None) => continue,
        };
        // Parsed as the request's sender parses it (reqwest's URL parser).
        if let Some((field, address)) = address
            && reqwest::Url::parse(address)
                .is_ok_and(|url| !url.username().is_empty() || url.password().is_some())
        {
            report.invalid(
                format!("{at}.{field}"),
                format!("carries user:password@, which every AnalysisRun made from this ClusterAnalysisTemplate would show: {USE_AUTHENTICATION}"),
            );
        }
        let basic = metric
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.authentication.as_ref())
            .and_then(|a| a.basic_auth.as_ref());
        let oauth2 = metric
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.authentication.as_ref())
            .and_then(|a| a.oauth2.as_ref());
        if let Some(secret) = oauth2.map(|o| &o.client_secret)
            && !placeholders_removed(secret).trim().is_empty()
        {
            report.invalid(
                format!("{at}.authentication.oauth2.clientSecret"),
                "is literal, and every AnalysisRun made from this ClusterAnalysisTemplate would show it in the clear: build it from {{args.NAME}} only (a Secret-valued argument)",
            );
        }
        if let Some(password) = basic.and_then(|b| b.password.as_ref())
            && !placeholders_removed(password).trim().is_empty()
        {
            report.invalid(
                format!("{at}.authentication.basicAuth.password"),
                "is literal, and every AnalysisRun made from this ClusterAnalysisTemplate would show it in the clear: build it from {{args.NAME}} only (a Secret-valued argument), or use basicAuth.secretName",
            );
        }
        for (h, header) in headers.iter().enumerate() {
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
            let (headers, basic) = match (&metric.provider.prometheus, &metric.provider.web) {
                (Some(prometheus), _) => (
                    &prometheus.headers,
                    prometheus
                        .authentication
                        .as_ref()
                        .and_then(|a| a.basic_auth.as_ref()),
                ),
                (None, Some(web)) => (&web.headers, None),
                (None, None) => return None,
            };
            let password = basic
                .and_then(|b| b.password.as_deref())
                .filter(|p| placeholders(p).contains(&arg.name.as_str()))
                .map(|_| (metric.name.as_str(), "Authorization"));
            headers
                .iter()
                .find(|h| placeholders(&h.value).contains(&arg.name.as_str()))
                .map(|h| (metric.name.as_str(), h.key.as_str()))
                .or(password)
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

/// basicAuth in one of its two shapes: weir's `{secretName}` or Argo's `{username,
/// password}` (placeholders naming declared arguments).
fn check_basic_auth(
    report: &mut Report,
    at: &str,
    basic: &BasicAuth,
    declared_args: &BTreeSet<&str>,
) {
    let pair = basic.username.is_some() || basic.password.is_some();
    match &basic.secret_name {
        Some(_) if pair => report.invalid(
            at,
            "takes secretName (a Secret with the keys username and password), or username and password, not both",
        ),
        Some(name) => check_name(
            report,
            &format!("{at}.secretName"),
            name,
            NameRule::Dns1123Subdomain,
        ),
        None if !pair => report.required(
            at,
            "set secretName (a Secret with the keys username and password), or username and password",
        ),
        None => {
            for (field, value) in [("username", &basic.username), ("password", &basic.password)] {
                let Some(value) = value else {
                    report.required(
                        format!("{at}.{field}"),
                        "username and password go together; take the password from a Secret-valued argument, {{args.NAME}}",
                    );
                    continue;
                };
                for name in placeholders(value) {
                    if !declared_args.contains(name) {
                        report.invalid(
                            format!("{at}.{field}"),
                            format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                        );
                    }
                }
            }
        }
    }
}

/// `text` with each `{{args.NAME}}` placeholder written as `stand_in` (other `{{...}}` and
/// an unterminated `{{` stay text).
fn placeholders_as(text: &str, stand_in: &str) -> String {
    let mut kept = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        kept.push_str(&rest[..start]);
        if after[..end].trim().strip_prefix("args.").is_none() {
            kept.push_str(&rest[start..start + 2 + end + 2]);
        } else {
            kept.push_str(stand_in);
        }
        rest = &after[end + 2..];
    }
    kept.push_str(rest);
    kept
}

/// `text` without its `{{args.NAME}}` placeholders.
fn placeholders_removed(text: &str) -> String {
    placeholders_as(text, "")
}

fn check_metric(report: &mut Report, at: &str, metric: &Metric, declared_args: &BTreeSet<&str>) {
    report.unsupported(at, metric);
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
    // -1 turns a failure or inconclusive limit off, as in Argo.
    for (field, value, min) in [
        ("failureLimit", &metric.failure_limit, -1),
        ("inconclusiveLimit", &metric.inconclusive_limit, -1),
        ("consecutiveErrorLimit", &metric.consecutive_error_limit, 0),
        (
            "consecutiveSuccessLimit",
            &metric.consecutive_success_limit,
            0,
        ),
    ] {
        check_count_from(report, &format!("{at}.{field}"), value.as_ref(), min);
    }
    let conditions = metric.success_condition.is_some() || metric.failure_condition.is_some();
    if let Some(range) = &metric.threshold_range {
        report.unsupported(&format!("{at}.thresholdRange"), range);
    }
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
        None if !conditions
            && metric.provider.job.is_none()
            && metric.provider.judge.is_none() =>
        {
            report.required(
            format!("{at}.successCondition"),
            "a metric needs successCondition, failureCondition or thresholdRange, or it could never fail",
        )
        }
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
                // `{{args.NAME}}` is filled before the condition is judged (and checked again
                // then); here each stands for a number, so the rest is checked now.
                for name in placeholders(c) {
                    if !declared_args.contains(name) {
                        report.invalid(
                            format!("{at}.{field}"),
                            format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                        );
                    }
                }
                if let Err(error) = crate::verdict::check_condition(&placeholders_as(c, "0")) {
                    report.invalid(format!("{at}.{field}"), error);
                }
            }
            None => {}
        }
    }
    report.unsupported(&format!("{at}.provider"), &metric.provider);
    match &metric.provider.prometheus {
        Some(prometheus) => check_prometheus(
            report,
            &format!("{at}.provider.prometheus"),
            "query",
            prometheus,
            declared_args,
        ),
        None if metric.provider.web.is_some()
            || metric.provider.job.is_some()
            || metric.provider.judge.is_some() => {}
        None if metric.provider.unsupported.is_empty() => {
            report.required(
                format!("{at}.provider"),
                "a metric needs a provider; weir has prometheus, web, job and judge",
            );
        }
        None => {}
    }
    let providers = [
        metric.provider.prometheus.is_some(),
        metric.provider.web.is_some(),
        metric.provider.job.is_some(),
        metric.provider.judge.is_some(),
    ];
    if providers.iter().filter(|p| **p).count() > 1 {
        report.invalid(
            format!("{at}.provider"),
            "takes exactly one provider: prometheus, web, job or judge",
        );
    }
    if let Some(judge) = &metric.provider.judge {
        let set = [
            ("successCondition", metric.success_condition.is_some()),
            ("failureCondition", metric.failure_condition.is_some()),
            ("thresholdRange", metric.threshold_range.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            report.invalid(
                format!("{at}.{field}"),
                "a judge metric reaches its own verdict (the canary against the baseline, within tolerance and alpha); remove successCondition, failureCondition and thresholdRange",
            );
        }
        check_judge(
            report,
            &format!("{at}.provider.judge"),
            judge,
            declared_args,
        );
    }
    if let Some(web) = &metric.provider.web {
        check_web(report, &format!("{at}.provider.web"), web, declared_args);
    }
    if let Some(job) = &metric.provider.job {
        if metric.success_condition.is_some()
            || metric.failure_condition.is_some()
            || metric.threshold_range.is_some()
        {
            report.invalid(
                format!("{at}.successCondition"),
                "a job metric is judged by its Job (completed: Successful, failed: Failed); remove successCondition, failureCondition and thresholdRange",
            );
        }
        check_job(report, &format!("{at}.provider.job"), job, declared_args);
    }
}

/// A Prometheus query's settings: its text (in `query_field`), range, address, timeout,
/// headers and credentials. Shared by `provider.prometheus` and each query of
/// `provider.judge`.
fn check_prometheus(
    report: &mut Report,
    at: &str,
    query_field: &str,
    prometheus: &PrometheusMetric,
    declared_args: &BTreeSet<&str>,
) {
    report.unsupported(at, prometheus);
    if prometheus.query.trim().is_empty() {
        report.required(
            format!("{at}.{query_field}"),
            "write the PromQL query to run",
        );
    }
    for name in placeholders(&prometheus.query) {
        if !declared_args.contains(name) {
            report.invalid(
                format!("{at}.{query_field}"),
                format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
            );
        }
    }
    if let Some(range) = &prometheus.range_query {
        let range_at = format!("{at}.rangeQuery");
        report.unsupported(&range_at, range);
        for (field, text) in [
            ("start", &range.start),
            ("end", &range.end),
            ("step", &range.step),
        ] {
            for name in placeholders(text) {
                if !declared_args.contains(name) {
                    report.invalid(
                        format!("{range_at}.{field}"),
                        format!(
                            "uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"
                        ),
                    );
                }
            }
            // An argument stands for a duration here; the filled text is read again
            // when the query is sent.
            let text = placeholders_as(text, "1m");
            let read = if field == "step" {
                duration::parse(&text).map(drop).map_err(|e| e.to_string())
            } else {
                duration::parse_relative_time(&text).map(drop)
            };
            if let Err(why) = read {
                report.invalid(format!("{range_at}.{field}"), why);
            }
        }
    }
    if let Some(address) = &prometheus.address {
        for name in placeholders(address) {
            if !declared_args.contains(name) {
                report.invalid(
                    format!("{at}.address"),
                    format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                );
            }
        }
    }
    if let Some(address) = &prometheus.address
        && !["{{", "http://", "https://"]
            .iter()
            .any(|start| address.starts_with(start))
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
        report.unsupported(&format!("{at}.headers[{index}]"), header);
        if !is_header_name(&header.key) {
            report.invalid(
                format!("{at}.headers[{index}].key"),
                format!("{:?} is not an HTTP header name", header.key),
            );
        }
    }
    if let Some(auth) = &prometheus.authentication {
        let auth_at = format!("{at}.authentication");
        report.unsupported(&auth_at, auth);
        let ways = [
            auth.bearer_token.is_some(),
            auth.basic_auth.is_some(),
            auth.oauth2.is_some(),
        ];
        match ways.iter().filter(|w| **w).count() {
            0 if auth.unsupported.is_empty() => report.required(
                &auth_at,
                "set bearerToken, basicAuth or oauth2, or remove authentication",
            ),
            0 | 1 => {}
            _ => report.invalid(
                &auth_at,
                "takes one of bearerToken, basicAuth or oauth2, not several",
            ),
        }
        if let Some(oauth2) = &auth.oauth2 {
            let at = format!("{auth_at}.oauth2");
            report.unsupported(&at, oauth2);
            let url = &oauth2.token_url;
            if !["{{", "http://", "https://"]
                .iter()
                .any(|start| url.starts_with(start))
            {
                report.invalid(
                    format!("{at}.tokenUrl"),
                    format!("{url:?} must start with http:// or https://"),
                );
            }
            let scopes = oauth2.scopes.iter().map(|s| ("scopes", s.as_str()));
            let fields = [
                ("tokenUrl", url.as_str()),
                ("clientId", oauth2.client_id.as_str()),
                ("clientSecret", oauth2.client_secret.as_str()),
            ];
            for (field, text) in fields.into_iter().chain(scopes) {
                if text.trim().is_empty() && field != "scopes" {
                    report.required(format!("{at}.{field}"), "an OAuth2 client needs it");
                }
                for name in placeholders(text) {
                    if !declared_args.contains(name) {
                        report.invalid(
                            format!("{at}.{field}"),
                            format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                        );
                    }
                }
            }
        }
        if let Some(token) = &auth.bearer_token {
            report.unsupported(&format!("{auth_at}.bearerToken"), token);
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
            let at = format!("{auth_at}.basicAuth");
            report.unsupported(&at, basic);
            check_basic_auth(report, &at, basic, declared_args);
        }
    }
}

/// weir's judge: its queries as Prometheus queries with the judge's address and
/// credentials, totals both or neither, and figures a test can use.
fn check_judge(report: &mut Report, at: &str, judge: &JudgeMetric, declared_args: &BTreeSet<&str>) {
    report.unsupported(at, judge);
    for (field, query) in judge.queries() {
        check_prometheus(report, at, field, &judge.prometheus(query), declared_args);
    }
    // The connection's settings are checked with each query; `finish` keeps one report each.
    if judge.baseline_total.is_some() != judge.canary_total.is_some() {
        let missing = if judge.baseline_total.is_none() {
            "baselineTotal"
        } else {
            "canaryTotal"
        };
        report.required(
            format!("{at}.{missing}"),
            "counts need both totals (the requests of each version), or neither for samples",
        );
    }
    if let Some(tolerance) = judge.tolerance {
        let most = match judge.direction {
            JudgeDirection::Increase => 10.0,
            JudgeDirection::Decrease => 0.99,
        };
        if !(tolerance > 0.0 && tolerance <= most) {
            report.invalid(
                format!("{at}.tolerance"),
                format!(
                    "is {tolerance}; a relative change between 0 and {most} (0.1 is 10%) is what the judge can tell"
                ),
            );
        }
    }
    if let Some(alpha) = judge.alpha
        && !(alpha > 0.0 && alpha <= 0.5)
    {
        report.invalid(
            format!("{at}.alpha"),
            format!("is {alpha}; a false-alarm probability between 0 and 0.5 (0.05 is usual)"),
        );
    }
    let counts = judge.baseline_total.is_some() || judge.canary_total.is_some();
    if counts && judge.method == JudgeMethod::MannWhitney {
        report.invalid(
            format!("{at}.method"),
            "counts (baselineTotal, canaryTotal) are judged by the sequential test; remove method, or the totals to compare samples",
        );
    }
    match judge.samples {
        Some(samples) if samples < 2 => report.invalid(
            format!("{at}.samples"),
            format!("is {samples}; at least 2 are needed to tell noise from a difference"),
        ),
        // With totals, `samples` counts requests, which have no such bound.
        Some(samples) if !counts && samples > crate::verdict::MAX_SAMPLES as i64 => report.invalid(
            format!("{at}.samples"),
            format!(
                "is {samples}; at most {} samples a side are read",
                crate::verdict::MAX_SAMPLES
            ),
        ),
        _ => {}
    }
    for name in placeholders(judge.step.as_deref().unwrap_or_default()) {
        if !declared_args.contains(name) {
            report.invalid(
                format!("{at}.step"),
                format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
            );
        }
    }
    if let Some(step) = judge.step.as_deref().filter(|t| !is_placeholder(t)) {
        match duration::parse(step) {
            Err(error) => report.invalid(format!("{at}.step"), error.to_string()),
            Ok(step) if step < std::time::Duration::from_secs(1) => report.invalid(
                format!("{at}.step"),
                "must be at least 1s: Prometheus holds nothing finer than its scrape interval",
            ),
            Ok(_) => {}
        }
    }
}

/// Argo's `job` provider: a `batch/v1` JobSpec whose Pods run to completion
/// (`restartPolicy` Never or OnFailure, as the API server requires of a Job), every
/// `{{args.NAME}}` in it declared.
fn check_job(
    report: &mut Report,
    at: &str,
    job: &crate::api::analysis::JobMetric,
    declared_args: &BTreeSet<&str>,
) {
    report.unsupported(at, job);
    for text in json_strings(&job.spec) {
        for name in placeholders(&text) {
            if !declared_args.contains(name) {
                report.invalid(
                    format!("{at}.spec"),
                    format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                );
            }
        }
    }
    let spec: k8s_openapi::api::batch::v1::JobSpec = match serde_json::from_value(job.spec.clone())
    {
        Ok(spec) => spec,
        Err(error) => {
            return report.invalid(format!("{at}.spec"), format!("is not a Job spec: {error}"));
        }
    };
    let pod = spec.template.spec.unwrap_or_default();
    if pod.containers.is_empty() {
        report.required(
            format!("{at}.spec.template.spec.containers"),
            "a Job needs a container to run",
        );
    }
    if !matches!(pod.restart_policy.as_deref(), Some("Never" | "OnFailure")) {
        report.invalid(
            format!("{at}.spec.template.spec.restartPolicy"),
            "a Job's Pods must have restartPolicy Never or OnFailure (the API server refuses any other)",
        );
    }
}

/// Longest `jsonPath` accepted: a path, not a program.
pub const MAX_JSON_PATH: usize = 512;
/// The methods a `web` metric may send.
const WEB_METHODS: [&str; 3] = ["GET", "POST", "PUT"];

/// Argo's `web` provider: a URL to an http(s) endpoint (its host is checked against the
/// operator's list when measured), GET, POST or PUT, a body or a JSON body, a timeout within
/// the bound Prometheus queries have, a JSONPath that parses, and every `{{args.NAME}}`
/// declared.
fn check_web(
    report: &mut Report,
    at: &str,
    web: &crate::api::analysis::WebMetric,
    declared_args: &BTreeSet<&str>,
) {
    report.unsupported(at, web);
    let mut texts: Vec<(String, &str)> = vec![(format!("{at}.url"), web.url.as_str())];
    if web.url.trim().is_empty() {
        report.required(format!("{at}.url"), "write the URL to measure");
    } else if !["{{", "http://", "https://"]
        .iter()
        .any(|start| web.url.starts_with(start))
    {
        report.invalid(
            format!("{at}.url"),
            format!("{:?} must start with http:// or https://", web.url),
        );
    }
    if let Some(method) = &web.method
        && !WEB_METHODS.contains(&method.to_ascii_uppercase().as_str())
    {
        report.invalid(
            format!("{at}.method"),
            format!("{method:?} is not one of {}", WEB_METHODS.join(", ")),
        );
    }
    for (index, header) in web.headers.iter().enumerate() {
        if !is_header_name(&header.key) {
            report.invalid(
                format!("{at}.headers[{index}].key"),
                format!("{:?} is not an HTTP header name", header.key),
            );
        }
        texts.push((
            format!("{at}.headers[{index}].value"),
            header.value.as_str(),
        ));
    }
    if web.body.is_some() && web.json_body.is_some() {
        report.invalid(format!("{at}.body"), "takes body or jsonBody, not both");
    }
    if let Some(body) = &web.body {
        texts.push((format!("{at}.body"), body.as_str()));
    }
    let json_strings: Vec<String> = web.json_body.iter().flat_map(json_strings).collect();
    for text in &json_strings {
        texts.push((format!("{at}.jsonBody"), text.as_str()));
    }
    for (field, text) in texts {
        for name in placeholders(text) {
            if !declared_args.contains(name) {
                report.invalid(
                    &field,
                    format!("uses {{{{args.{name}}}}} but spec.args declares no argument {name:?}"),
                );
            }
        }
    }
    match web.timeout_seconds {
        Some(t) if t < 1 => report.invalid(format!("{at}.timeoutSeconds"), "must be at least 1 second"),
        Some(t) if t > MAX_QUERY_TIMEOUT_SECONDS => report.invalid(
            format!("{at}.timeoutSeconds"),
            format!("is {t} seconds; at most {MAX_QUERY_TIMEOUT_SECONDS} are accepted: a measurement that slow holds a reconcile"),
        ),
        _ => {}
    }
    if let Some(path) = &web.json_path {
        use jsonpath_rust::JsonPath;
        if path.len() > MAX_JSON_PATH {
            report.invalid(
                format!("{at}.jsonPath"),
                format!(
                    "is {} characters long; at most {MAX_JSON_PATH} are accepted",
                    path.len()
                ),
            );
        } else if let Err(error) =
            serde_json::Value::Null.query(&crate::api::analysis::json_path_query(path))
        {
            report.invalid(
                format!("{at}.jsonPath"),
                format!("{path:?} is not a JSONPath ({error}); write it as Argo does, e.g. {{$.data.ok}}"),
            );
        }
    }
}

/// Every string in a JSON value (where `{{args.NAME}}` may be written).
fn json_strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(text) => vec![text.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(json_strings).collect(),
        serde_json::Value::Object(fields) => fields.values().flat_map(json_strings).collect(),
        _ => Vec::new(),
    }
}

/// An HTTP header name is a token (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a count-like field (integer, or an `{{args.X}}` placeholder) and returns its value.
fn check_count(
    report: &mut Report,
    field: &str,
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
) -> Option<i64> {
    check_count_from(report, field, value, 0)
}

/// A whole number of at least `min` (0, or -1 where -1 means "no limit"), or a placeholder.
fn check_count_from(
    report: &mut Report,
    field: &str,
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    min: i64,
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
    if parsed < min {
        let least = if min < 0 { "-1 (no limit)" } else { "0" };
        report.invalid(field, format!("must be {least} or more"));
    }
    Some(parsed)
}

fn is_placeholder(text: &str) -> bool {
    text.contains("{{")
}

/// The argument names a text refers to as `{{args.NAME}}` (spaces inside braces allowed).
pub fn placeholders(text: &str) -> Vec<&str> {
    placeholder_bodies(text)
        .into_iter()
        .filter_map(|body| body.strip_prefix("args.").map(str::trim))
        .collect()
}

/// What each closed `{{ ... }}` of a text holds, trimmed.
pub(super) fn placeholder_bodies(text: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        bodies.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    bodies
}
