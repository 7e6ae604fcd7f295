//! The Prometheus provider: one instant query, sent through the `prometheus-http-query` crate,
//! its answer read with a size bound, and in the shape conditions see (`result`). Queries to
//! one address wait their turn (`Gates`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::verdict::{self, QueryValue};

/// Most bytes read of one answer. 10,000 samples with a dozen labels each take about 3 MiB;
/// an endpoint that sends more (hostile, or a query without aggregation) is cut off here
/// rather than buffered.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Longest part of Prometheus' own error text copied into a measurement's message.
const MAX_ERROR_TEXT: usize = 512;
/// `--max-queries-per-address` when not given.
pub const DEFAULT_QUERIES_PER_ADDRESS: u16 = 8;

/// A query ready to send: address, text with arguments filled, limits and credentials.
pub struct Query {
    pub address: String,
    pub query: String,
    pub timeout: Duration,
    /// Extra headers, credentials included (`Authorization`), already resolved.
    pub headers: Vec<(String, String)>,
}

/// How many queries may be in flight to one Prometheus at once (`--max-queries-per-address`):
/// many runs measured together queue here instead of piling onto one server, and one slow
/// server holds only its own queries.
pub struct Gates {
    per_address: usize,
    by_origin: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Gates {
    pub fn new(per_address: usize) -> Gates {
        Gates {
            per_address: per_address.max(1),
            by_origin: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a place among the queries to `address`'s origin (scheme, host and port:
    /// `http://p:9090` and `http://p:9090/prometheus` are one server). None only if the gate
    /// were closed, which no code does; the query then goes ahead.
    pub async fn enter(&self, address: &str) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self.lock();
            // Forget servers nobody is querying, so the map stays as small as the set of
            // addresses in use.
            gates.retain(|_, gate| Arc::strong_count(gate) > 1);
            gates
                .entry(origin(address))
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
                .clone()
        };
        gate.acquire_owned().await.ok()
    }

    /// Queries in flight to `address`'s origin now.
    pub fn in_flight(&self, address: &str) -> usize {
        self.lock().get(&origin(address)).map_or(0, |gate| {
            self.per_address.saturating_sub(gate.available_permits())
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        // A poisoned lock only means a panic elsewhere while it was held; the map is whole.
        self.by_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn origin(address: &str) -> String {
    reqwest::Url::parse(address)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_else(|_| address.to_owned())
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
    // Whole seconds as a spec writes them; anything finer as Rust prints it (tests).
    let limit = match request.timeout.subsec_nanos() {
        0 => format!("{}s", request.timeout.as_secs()),
        _ => format!("{:?}", request.timeout),
    };
    let address = &request.address;
    match waited {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "Prometheus at {address} did not answer within {limit} (queries to one address wait their turn, {} at a time: --max-queries-per-address)",
            gates.per_address
        )),
    }
}

async fn send(http: &reqwest::Client, request: &Query) -> Result<QueryValue, String> {
    let client = prometheus_http_query::Client::from(http.clone(), &request.address)
        .map_err(|e| format!("Prometheus address {:?}: {e}", request.address))?;
    let mut builder = client
        .query(&request.query)
        // Prometheus stops evaluating when weir stops waiting.
        .timeout(i64::try_from(request.timeout.as_millis()).unwrap_or(i64::MAX));
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not a valid HTTP header value"))?;
        value.set_sensitive(name == reqwest::header::AUTHORIZATION);
        builder = builder.header(name, value);
    }
    // POST keeps the query (and any Secret in it) out of the URL, which HTTP errors quote.
    // The crate sends; the answer is read here, where its size can be bounded.
    let response = builder
        .post_raw()
        .await
        .map_err(|e| describe(&request.address, &e))?;
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
    let body = read_bounded(response, MAX_ANSWER_BYTES).await.map_err(at)?;
    parse_answer(&body).map_err(at)
}

/// The body, or why not: more than `limit` bytes (announced or sent) are never buffered.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let too_large = |size: String| {
        format!(
            "the answer is too large: {size} bytes, at most {limit} are read; aggregate in the query (sum, max, topk) so that it returns fewer series"
        )
    };
    if let Some(announced) = response.content_length()
        && announced > limit as u64
    {
        return Err(too_large(announced.to_string()));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large(format!("more than {limit}")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(format!(
                    "the answer broke off{}",
                    causes(std::error::Error::source(&e))
                ));
            }
        }
    }
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
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
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
fn parse_answer(body: &[u8]) -> Result<QueryValue, String> {
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
            Data::Matrix(_) => Err(
                "the query returned a range vector; write an instant query (wrap the range in a function such as rate() or avg_over_time())"
                    .into(),
            ),
            Data::String(_) => Err(
                "the query returned a string; write a query that returns a number or a vector"
                    .into(),
            ),
        },
    }
}

/// At most [`MAX_ERROR_TEXT`] bytes of an outside text, cut on a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
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

/// `: cause: deeper cause`, from the transport layers below reqwest, which name no URL.
fn causes(mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = String::new();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
