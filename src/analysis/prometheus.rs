//! The Prometheus provider: one instant query, through the `prometheus-http-query` crate, and
//! its answer in the shape conditions see (`result`).

use std::time::Duration;

use prometheus_http_query::response::Data;
use reqwest::header::{HeaderName, HeaderValue};

use super::verdict::QueryValue;

/// A query ready to send: address, text with arguments filled, limits and credentials.
pub struct Query {
    pub address: String,
    pub query: String,
    pub timeout: Duration,
    /// Extra headers, credentials included (`Authorization`), already resolved.
    pub headers: Vec<(String, String)>,
}

/// Sends the query. Every failure (unreachable, timed out, a PromQL error, a range-vector
/// answer) comes back as a message for an Error measurement, never as a value.
pub async fn query(http: &reqwest::Client, request: &Query) -> Result<QueryValue, String> {
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
    let response = tokio::time::timeout(request.timeout, builder.post())
        .await
        .map_err(|_| {
            format!(
                "Prometheus at {} did not answer within {}s",
                request.address,
                request.timeout.as_secs()
            )
        })?
        .map_err(|e| describe(&request.address, &e))?;
    match response.data() {
        Data::Scalar(sample) => Ok(QueryValue::Scalar(sample.value())),
        Data::Vector(vector) => Ok(QueryValue::Vector(
            vector.iter().map(|s| s.sample().value()).collect(),
        )),
        Data::Matrix(_) => Err(
            "the query returned a range vector; write an instant query (wrap the range in a function such as rate() or avg_over_time())"
                .into(),
        ),
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
