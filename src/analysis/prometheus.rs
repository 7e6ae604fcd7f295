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
    let response = tokio::time::timeout(request.timeout, builder.get())
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

/// The error with its causes: reqwest's own message alone ("error sending request") hides
/// whether the connection was refused or the name did not resolve.
fn describe(address: &str, error: &prometheus_http_query::Error) -> String {
    let mut message = format!("querying Prometheus at {address}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
