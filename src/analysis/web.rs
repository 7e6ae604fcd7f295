//! The `web` provider, as Argo Rollouts has it: one HTTP request (`url`, `method`, `headers`,
//! `body` or `jsonBody`, `{{args.NAME}}` filled in each), whose JSON answer, or the part
//! `jsonPath` selects, is `result`. The URL must be one the operator allows; the answer is
//! read with a size bound and the selected JSON held to what conditions can judge in bounded
//! time ([`verdict::json_beyond_bounds`]). No message quotes the request as sent: a URL or
//! header may carry a Secret-valued argument.

use std::time::Duration;

use futures::future::BoxFuture;
use jsonpath_rust::JsonPath;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::args::{substitute, substitute_json};
use super::provider::{Env, Provider, Ready, Taken, Unready, causes, masked, read_bounded, shown};
use crate::api::analysis::{WebMetric, json_path_query};
use crate::verdict::{self, QueryValue};

/// Seconds an answer is waited for when the metric says nothing, as in Argo.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read of one answer: a measurement endpoint answers a small document.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The methods a `web` metric may send.
pub const METHODS: [&str; 3] = ["GET", "POST", "PUT"];

/// A request ready to send.
struct Request {
    url: reqwest::Url,
    /// The URL as recorded (Secret-valued arguments masked), for messages.
    shown_url: String,
    method: reqwest::Method,
    headers: Vec<(String, String)>,
    body: Option<(String, bool)>,
    json_path: Option<String>,
    timeout: Duration,
}

/// What `result` is for an answer: the whole document, or what `json_path` selects (null when
/// it selects nothing, which is no data; a list when it selects several values); Err when it
/// is beyond what conditions judge.
pub fn select(answer: &Value, json_path: Option<&str>) -> Result<QueryValue, String> {
    let selected = match json_path {
        None => answer.clone(),
        Some(path) => {
            let found = answer
                .query(&json_path_query(path))
                .map_err(|e| format!("jsonPath {path:?} is not a JSONPath ({e})"))?;
            match found.as_slice() {
                [] => Value::Null,
                [one] => (*one).clone(),
                // Bounded before it is copied: a `$..*` over a large answer selects a lot.
                many if many.len() > verdict::MAX_JSON_VALUES => {
                    return Err(format!(
                        "jsonPath {path:?} selected {} values; at most {} are judged: select less",
                        many.len(),
                        verdict::MAX_JSON_VALUES
                    ));
                }
                many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
            }
        }
    };
    if let Some(why) = verdict::json_beyond_bounds(&selected) {
        return Err(why);
    }
    Ok(QueryValue::Json(selected))
}

impl Provider for WebMetric {
    fn timeout(&self) -> Duration {
        self.timeout_seconds
            .and_then(|t| u64::try_from(t).ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }

    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>> {
        Box::pin(async move {
            let at = format!("{}.provider.web", env.at);
            let never = |field: &str, why: String| Unready::Never(format!("{at}.{field}: {why}"));
            let secrets = env.secret_args();
            let filled = substitute(&self.url, env.args).map_err(|why| never("url", why))?;
            // Checked before anything is sent; the refusal quotes the URL as recorded.
            if let Err(why) = env.shared.allowed.check(&filled.sent) {
                return Err(never(
                    "url",
                    format!(
                        "{}; use a URL the operator allows, or ask them to add it to --allowed-metric-hosts. Nothing was sent",
                        masked(why, &secrets)
                    ),
                ));
            }
            let url = reqwest::Url::parse(&filled.sent)
                .map_err(|e| never("url", format!("{:?} is not a URL ({e})", filled.recorded)))?;
            let method = self.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(never(
                    "method",
                    format!("{method:?} is not one of {}", METHODS.join(", ")),
                ));
            }
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|e| never("method", e.to_string()))?;
            let mut headers = Vec::new();
            for (index, header) in self.headers.iter().enumerate() {
                let value = substitute(&header.value, env.args)
                    .map_err(|why| never(&format!("headers[{index}].value"), why))?;
                headers.push((header.key.clone(), value.sent));
            }
            let body = match (&self.body, &self.json_body) {
                (Some(body), _) => Some((
                    substitute(body, env.args)
                        .map_err(|why| never("body", why))?
                        .sent,
                    false,
                )),
                (None, Some(json)) => {
                    let filled =
                        substitute_json(json, env.args).map_err(|why| never("jsonBody", why))?;
                    Some((filled.to_string(), true))
                }
                (None, None) => None,
            };
            let request = Request {
                url,
                shown_url: filled.recorded.clone(),
                method,
                headers,
                body,
                json_path: self.json_path.clone(),
                timeout: self.timeout(),
            };
            let http = if self.insecure {
                env.shared.insecure_http.clone()
            } else {
                env.shared.http.clone()
            };
            let gates = env.shared.gates.clone();
            Ok(Ready {
                recorded: filled.recorded,
                secrets,
                take: Box::pin(async move {
                    let waited = tokio::time::timeout(request.timeout, async {
                        let _turn = gates.enter(request.url.as_str()).await;
                        send(&http, &request).await
                    })
                    .await;
                    let answer = waited.unwrap_or_else(|_| {
                        Err(format!(
                            "{} did not answer within {} (requests to one server wait their turn, {} at a time: --max-queries-per-address)",
                            request.shown_url,
                            shown(request.timeout),
                            gates.per_address()
                        ))
                    });
                    answer.map(Taken::Value)
                }),
            })
        })
    }
}

async fn send(http: &reqwest::Client, request: &Request) -> Result<QueryValue, String> {
    let at = |what: String| format!("{} {}: {what}", request.method, request.shown_url);
    let mut builder = http.request(request.method.clone(), request.url.clone());
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            at(format!(
                "header name {name:?} is not a valid HTTP header name"
            ))
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            at(format!(
                "the value of header {name} is not a valid HTTP header value"
            ))
        })?;
        value.set_sensitive(name == reqwest::header::AUTHORIZATION);
        builder = builder.header(name, value);
    }
    if let Some((body, json)) = &request.body {
        if *json {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        builder = builder.body(body.clone());
    }
    // reqwest's own message names the URL as sent; only the causes below it are quoted.
    let response = builder.send().await.map_err(|e| {
        at(if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            format!("could not connect{}", causes(std::error::Error::source(&e)))
        } else {
            format!(
                "the request failed{}",
                causes(std::error::Error::source(&e))
            )
        })
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(at(format!("HTTP {status}")));
    }
    let body = read_bounded(response, MAX_ANSWER_BYTES, "answer a smaller document")
        .await
        .map_err(at)?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| at(format!("the answer is not JSON ({e})")))?;
    select(&answer, request.json_path.as_deref()).map_err(at)
}

#[cfg(test)]
mod tests;
