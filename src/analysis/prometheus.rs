//! The Prometheus provider: one instant query, sent through the `prometheus-http-query` crate,
//! its answer read with a size bound, and in the shape conditions see (`result`). Queries to
//! one address wait their turn (`Gates`).

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::args::substitute;
use super::provider::{
    Env, Gates, Provider, Ready, Taken, Unready, causes, masked, read_bounded, read_secret, shown,
    truncate,
};
use crate::api::analysis::{
    OAuth2, PrometheusAuthentication, PrometheusMetric, RangeQuery, SecretKeyRef,
};
use crate::verdict::{self, QueryValue};

/// Most bytes read of one answer. 10,000 samples with a dozen labels each take about 3 MiB;
/// an endpoint that sends more (hostile, or a query without aggregation) is cut off here
/// rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Seconds a query is waited for when the metric says nothing, as in Argo.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A query ready to send: address, text with arguments filled, limits and credentials.
pub struct Query {
    pub address: String,
    pub query: String,
    /// For a range query: its span.
    pub range: Option<Span>,
    pub timeout: Duration,
    /// Extra headers, credentials included (`Authorization`), already resolved.
    pub headers: Vec<(String, String)>,
}

/// A range query's span: Unix seconds, and the step in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub step: f64,
}

/// The span of `range` at `now` (Unix seconds), its texts' arguments filled; the reason when
/// a bound or the step cannot be read, or the span is empty.
pub fn span(
    range: &RangeQuery,
    args: &std::collections::BTreeMap<String, super::args::ArgValue>,
    now: i64,
) -> Result<Span, String> {
    let fill = |field: &str, text: &str| {
        substitute(text, args)
            .map(|filled| filled.sent)
            .map_err(|why| format!("rangeQuery.{field}: {why}"))
    };
    let bound = |field: &str, text: &str| -> Result<i64, String> {
        let offset = crate::duration::parse_relative_time(&fill(field, text)?)
            .map_err(|why| format!("rangeQuery.{field}: {why}"))?;
        Ok(now.saturating_add(offset))
    };
    let (start, end) = (bound("start", &range.start)?, bound("end", &range.end)?);
    let step = crate::duration::parse(&fill("step", &range.step)?)
        .map_err(|why| format!("rangeQuery.step: {why}"))?
        .as_secs_f64();
    if step <= 0.0 {
        return Err("rangeQuery.step must be more than 0".into());
    }
    if start > end {
        return Err("rangeQuery.start is after rangeQuery.end".into());
    }
    Ok(Span { start, end, step })
}

/// Sends the query, within its timeout from the moment it waits for its turn at the address.
/// Every failure (unreachable, timed out, a PromQL error, a range-vector answer, an answer
/// too large) comes back as a message for an Error measurement, never as a value.
pub async fn query(
    http: &reqwest::Client,
    gates: &Gates,
    request: &Query,
) -> Result<QueryValue, String> {
    let waited = tokio::time::timeout(request.timeout, async {
        let _turn = gates.enter(&request.address).await;
        send(http, request).await
    })
    .await;
    let limit = shown(request.timeout);
    let address = &request.address;
    match waited {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "Prometheus at {address} did not answer within {limit} (queries to one address wait their turn, {} at a time: --max-queries-per-address)",
            gates.per_address()
        )),
    }
}

async fn send(http: &reqwest::Client, request: &Query) -> Result<QueryValue, String> {
    let client = prometheus_http_query::Client::from(http.clone(), &request.address)
        .map_err(|e| format!("Prometheus address {:?}: {e}", request.address))?;
    let mut headers = Vec::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not a valid HTTP header value"))?;
        value.set_sensitive(name == reqwest::header::AUTHORIZATION);
        headers.push((name, value));
    }
    // Prometheus stops evaluating when weir stops waiting.
    let timeout = i64::try_from(request.timeout.as_millis()).unwrap_or(i64::MAX);
    // POST keeps the query (and any Secret in it) out of the URL, which HTTP errors quote.
    // The crate sends; the answer is read here, where its size can be bounded.
    let sent = match &request.range {
        None => {
            let mut builder = client.query(&request.query).timeout(timeout);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder.post_raw().await
        }
        Some(span) => {
            let mut builder = client
                .query_range(&request.query, span.start, span.end, span.step)
                .timeout(timeout);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder.post_raw().await
        }
    };
    let response = sent.map_err(|e| describe(&request.address, &e))?;
    let at = |what: String| format!("querying Prometheus at {}: {what}", request.address);
    let status = response.status();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        // Prometheus answers its own errors (400, 422, 503) in JSON; anything else is the
        // status, or a server that is not Prometheus.
        return Err(at(if status.is_success() {
            "the answer is not Prometheus' JSON".to_owned()
        } else {
            format!("HTTP {status}")
        }));
    }
    let body = read_bounded(
        response,
        MAX_ANSWER_BYTES,
        "aggregate in the query (sum, max, topk) so that it returns fewer series",
    )
    .await
    .map_err(at)?;
    parse_answer(&body, request.range.is_some()).map_err(at)
}

/// Prometheus' envelope, read for what conditions see: sample values only (labels are
/// skipped, never stored).
#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Answer {
    Success {
        data: Data,
    },
    Error {
        #[serde(rename = "errorType", default)]
        error_type: String,
        #[serde(default)]
        error: String,
    },
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar(Sample),
    Vector(Vec<Series>),
    Matrix(Vec<RangeSeries>),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct RangeSeries {
    values: Vec<Sample>,
}

#[derive(Deserialize)]
struct Series {
    value: Sample,
}

/// `[unix time, "value"]`; values are strings so that NaN and ±Inf survive JSON.
#[derive(Deserialize)]
struct Sample(serde::de::IgnoredAny, String);

impl Sample {
    fn value(&self) -> Result<f64, String> {
        self.1
            .parse()
            .map_err(|_| format!("the sample value {:?} is not a number", truncate(&self.1)))
    }
}

/// What an instant query's answer means for conditions: a scalar, a vector of at most
/// [`verdict::MAX_SAMPLES`] samples, or why not.
fn parse_answer(body: &[u8], range: bool) -> Result<QueryValue, String> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not Prometheus' JSON ({e})"))?;
    match answer {
        Answer::Error { error_type, error } => Err(format!(
            "Prometheus refused the query: {}: {}",
            truncate(&error_type),
            truncate(&error)
        )),
        Answer::Success { data } => match data {
            Data::Scalar(sample) => sample.value().map(QueryValue::Scalar),
            Data::Vector(series) if series.len() > verdict::MAX_SAMPLES => {
                Err(verdict::too_many_samples(series.len()))
            }
            Data::Vector(series) => series
                .iter()
                .map(|s| s.value.value())
                .collect::<Result<Vec<f64>, String>>()
                .map(QueryValue::Vector),
            // A range query's result is every value of every series, as Argo reads it.
            Data::Matrix(series) if range => {
                let count: usize = series.iter().map(|s| s.values.len()).sum();
                if count > verdict::MAX_SAMPLES {
                    return Err(verdict::too_many_samples(count));
                }
                series
                    .iter()
                    .flat_map(|s| s.values.iter().map(Sample::value))
                    .collect::<Result<Vec<f64>, String>>()
                    .map(QueryValue::Vector)
            }
            Data::Matrix(_) => Err(
                "the query returned a range vector; write an instant query (wrap the range in a function such as rate() or avg_over_time()), or use rangeQuery"
                    .into(),
            ),
            Data::String(_) => Err(
                "the query returned a string; write a query that returns a number or a vector"
                    .into(),
            ),
        },
    }
}

/// What went wrong, in words that never quote the request: reqwest's own message names the
/// URL, and a URL can carry a Secret-sourced argument.
fn describe(address: &str, error: &prometheus_http_query::Error) -> String {
    use prometheus_http_query::Error;
    let what = match error {
        Error::Client(client) => {
            match client.inner() {
                Some(e) if e.is_timeout() => "no answer in time".to_owned(),
                Some(e) if e.is_connect() => {
                    format!("could not connect{}", causes(std::error::Error::source(e)))
                }
                Some(e) => match e.status() {
                    Some(status) => format!("HTTP {status}"),
                    None if e.is_decode() => "the answer is not Prometheus' JSON".to_owned(),
                    None => format!("the request failed{}", causes(std::error::Error::source(e))),
                },
                // The crate's own fixed text, such as a body that is not JSON.
                None => client.to_string(),
            }
        }
        Error::Prometheus(prometheus) => format!("Prometheus refused the query: {prometheus}"),
        other => other.to_string(),
    };
    format!("querying Prometheus at {address}: {what}")
}

/// A query's `timeout` in seconds as waited for: 30 s when unset, as in Argo.
pub fn query_timeout(seconds: Option<i64>) -> Duration {
    seconds
        .and_then(|t| u64::try_from(t).ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

impl Provider for PrometheusMetric {
    fn timeout(&self) -> Duration {
        query_timeout(self.timeout)
    }

    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>> {
        Box::pin(async move {
            let span = match &self.range_query {
                Some(range) => Some(
                    span(range, env.args, chrono::Utc::now().timestamp()).map_err(|why| {
                        Unready::Never(format!("{}.provider.prometheus.{why}", env.at))
                    })?,
                ),
                None => None,
            };
            self.prepare_at(env, &Place::PROMETHEUS, span).await
        })
    }
}

/// Where a query's settings are written, for messages: `provider.prometheus` with its
/// `query`, or a judge's (`provider.judge`, `baseline`), whose queries go out as these do.
pub struct Place<'a> {
    pub provider: &'a str,
    pub query: &'a str,
}

impl Place<'static> {
    pub const PROMETHEUS: Place<'static> = Place {
        provider: "provider.prometheus",
        query: "query",
    };
}

impl PrometheusMetric {
    /// The query ready to send over `span` (an instant query without one): arguments
    /// filled, the address checked, credentials read. Refusals name `place`'s fields.
    pub async fn prepare_at(
        &self,
        env: &Env<'_>,
        place: &Place<'_>,
        range: Option<Span>,
    ) -> Result<Ready, Unready> {
        let at = env.at;
        let provider = place.provider;
        let Some(address) = self
            .address
            .clone()
            .or_else(|| env.shared.default_address.clone())
        else {
            return Err(Unready::Never(format!(
                "{at}: no Prometheus address: set {provider}.address, or start weir with --prometheus-url"
            )));
        };
        // An address built from arguments is checked once they are filled (a literal one
        // was checked before anything was read).
        let address = if address.contains("{{") {
            let filled = substitute(&address, env.args)
                .map_err(|why| Unready::Never(format!("{at}.{provider}.address: {why}")))?;
            if let Err(why) = env.shared.allowed.check(&filled.sent) {
                let why = masked(why, &env.secret_args());
                return Err(Unready::Never(format!(
                    "{at}.{provider}.address: {why}; use an address the operator allows, or ask them to add it to --allowed-metric-hosts. Nothing was sent"
                )));
            }
            filled.sent
        } else {
            address
        };
        let filled = substitute(&self.query, env.args)
            .map_err(|why| Unready::Never(format!("{at}.{provider}.{}: {why}", place.query)))?;
        let mut headers = Vec::new();
        for header in &self.headers {
            let value = substitute(&header.value, env.args)
                .map_err(|why| Unready::Never(format!("{at}: header {}: {why}", header.key)))?;
            headers.push((header.key.clone(), value.sent));
        }
        let mut secrets = env.secret_args();
        if let Some(auth) = &self.authentication {
            let credentials = authorization(env, auth)
                .await
                .map_err(|why| Unready::NotNow(format!("{at}.{provider}.authentication: {why}")))?;
            if let Some((header, secret_parts)) = credentials {
                secrets.extend(secret_parts);
                headers.push(("Authorization".into(), header));
            }
        }
        let query = Query {
            address,
            query: filled.sent,
            range,
            timeout: self.timeout(),
            headers,
        };
        let (http, gates) = (env.shared.http.clone(), env.shared.gates.clone());
        Ok(Ready {
            recorded: filled.recorded,
            secrets,
            take: Box::pin(
                async move { self::query(&http, &gates, &query).await.map(Taken::Value) },
            ),
        })
    }
}

/// The Authorization header and the secret parts it carries; None without credentials.
/// basicAuth's `{username, password}` have their `{{args.NAME}}` filled from `values`.
async fn authorization(
    env: &Env<'_>,
    auth: &PrometheusAuthentication,
) -> Result<Option<(String, Vec<String>)>, String> {
    use base64::Engine;
    let (secrets, values) = (env.secrets, env.args);
    if let Some(oauth2) = &auth.oauth2 {
        return client_credentials(env, oauth2).await.map(Some);
    }
    if let Some(token) = &auth.bearer_token {
        let token = read_secret(secrets, token).await?;
        return Ok(Some((format!("Bearer {token}"), vec![token])));
    }
    let Some(basic) = &auth.basic_auth else {
        return Ok(None);
    };
    let (user, password) = match &basic.secret_name {
        Some(name) => {
            let key = |key: &str| SecretKeyRef {
                name: name.clone(),
                key: key.into(),
                unsupported: Default::default(),
            };
            (
                read_secret(secrets, &key("username")).await?,
                read_secret(secrets, &key("password")).await?,
            )
        }
        None => {
            let fill = |field: &str, text: &Option<String>| {
                substitute(text.as_deref().unwrap_or_default(), values)
                    .map(|filled| filled.sent)
                    .map_err(|why| format!("basicAuth.{field}: {why}"))
            };
            (
                fill("username", &basic.username)?,
                fill("password", &basic.password)?,
            )
        }
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    // An empty part is no secret, and masking "" would garble every message.
    let header = format!("Basic {encoded}");
    let parts = [password, encoded].into_iter().filter(|p| !p.is_empty());
    Ok(Some((header, parts.collect())))
}

/// Most bytes read of a token endpoint's answer.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// What the token endpoint is sent for `oauth2`, arguments filled: its URL, the form, and
/// the secret values among them.
pub type TokenRequest = (String, Vec<(&'static str, String)>, Vec<String>);

/// The client-credentials request (RFC 6749 4.4) for `oauth2`, its arguments filled.
pub fn token_request(
    oauth2: &OAuth2,
    values: &std::collections::BTreeMap<String, super::args::ArgValue>,
) -> Result<TokenRequest, String> {
    let fill = |field: &str, text: &str| {
        substitute(text, values)
            .map(|filled| filled.sent)
            .map_err(|why| format!("oauth2.{field}: {why}"))
    };
    let url = fill("tokenUrl", &oauth2.token_url)?;
    let secret = fill("clientSecret", &oauth2.client_secret)?;
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", fill("clientId", &oauth2.client_id)?),
        ("client_secret", secret.clone()),
    ];
    let scopes: Vec<String> = oauth2
        .scopes
        .iter()
        .map(|s| fill("scopes", s))
        .collect::<Result<_, _>>()?;
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let secrets = [secret].into_iter().filter(|s| !s.is_empty()).collect();
    Ok((url, form, secrets))
}

/// A bearer token from the OAuth2 client-credentials flow, asked for at each measurement;
/// the token endpoint is checked against `--allowed-metric-hosts` before the client secret
/// goes to it. The header and the secret values it carries.
async fn client_credentials(
    env: &Env<'_>,
    oauth2: &OAuth2,
) -> Result<(String, Vec<String>), String> {
    let (url, form, mut secrets) = token_request(oauth2, env.args)?;
    if let Err(why) = env.shared.allowed.check(&url) {
        let why = format!("oauth2.tokenUrl: {why}; nothing was sent");
        return Err(masked(why, env.secret_args().iter().chain(&secrets)));
    }
    let at = |what: String| format!("oauth2: the token endpoint: {what}");
    let sent = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        env.shared.http.post(&url).form(&form).send(),
    )
    .await;
    // reqwest's own message quotes the URL; only the causes below it are kept.
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            return Err(at(format!(
                "the request failed{}",
                causes(std::error::Error::source(&e))
            )));
        }
        Err(_) => return Err(at(format!("no answer within {}", shown(DEFAULT_TIMEOUT)))),
    };
    let status = response.status();
    if !status.is_success() {
        return Err(at(format!("HTTP {status}")));
    }
    let body = read_bounded(response, MAX_TOKEN_ANSWER, "answer the token alone")
        .await
        .map_err(at)?;
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let token: Token = serde_json::from_slice(&body)
        .map_err(|_| at("the answer is not JSON with an access_token".to_owned()))?;
    secrets.push(token.access_token.clone());
    Ok((format!("Bearer {}", token.access_token), secrets))
}

#[cfg(test)]
mod tests;
