//! The metric providers, each one file behind [`Provider`]: it turns one metric of a run,
//! its arguments filled, into a measurement ready to take. The glue (`reconcile`) resolves
//! the arguments, asks the metric's provider to prepare, and awaits what it prepared. Below
//! every provider: what they share (the per-server gates, bounded reading of an answer,
//! Secret reading, error text that never quotes a request).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::args::ArgValue;
use super::hosts::AllowedHosts;
use crate::api::analysis::{AnalysisPhase, AnalysisRun, Metric, MetricProvider, SecretKeyRef};
use crate::verdict::QueryValue;

/// Longest part of a server's own error text copied into a measurement's message.
const MAX_ERROR_TEXT: usize = 512;
/// `--max-queries-per-address` when not given.
pub const DEFAULT_QUERIES_PER_ADDRESS: u16 = 8;

/// What every measurement shares: the HTTP clients, the per-server gates and the operator's
/// flags.
pub struct Shared {
    /// The API server, for providers that make objects (`job`).
    pub client: kube::Client,
    /// One connection pool for every request; no redirects (an allowed address that
    /// redirects would take the request, and its credentials, to a host never checked).
    pub http: reqwest::Client,
    /// The same, without verifying certificates: for a `web` metric marked `insecure`.
    pub insecure_http: reqwest::Client,
    pub gates: Arc<Gates>,
    /// `--prometheus-url`: for Prometheus metrics that name no address.
    pub default_address: Option<String>,
    /// `--allowed-metric-hosts`: the addresses that may be measured.
    pub allowed: AllowedHosts,
}

/// One metric of one run, as a provider prepares it.
pub struct Env<'a> {
    pub run: &'a AnalysisRun,
    pub metric: &'a Metric,
    /// Which of the metric's measurements this is, from 1.
    pub measurement: i32,
    /// `spec.metrics[i] (metric "name")`, for messages.
    pub at: &'a str,
    /// Every argument's value, Secret-valued ones marked.
    pub args: &'a BTreeMap<String, ArgValue>,
    /// The run's namespace's Secrets, for credentials.
    pub secrets: &'a Api<Secret>,
    pub shared: &'a Shared,
}

impl Env<'_> {
    /// The Secret values among the arguments: kept out of every message.
    pub fn secret_args(&self) -> Vec<String> {
        secret_values(self.args)
    }
}

/// The Secret values among `args`.
pub fn secret_values(args: &BTreeMap<String, ArgValue>) -> Vec<String> {
    args.values()
        .filter(|v| v.secret && !v.value.is_empty())
        .map(|v| v.value.clone())
        .collect()
}

/// `text` with every one of `secrets` written `<secret>`: what a message may show of a text
/// that may quote them (a request echoed in an error, a checker quoting its input).
pub fn masked<'s>(text: String, secrets: impl IntoIterator<Item = &'s String>) -> String {
    secrets.into_iter().fold(text, |text, secret| {
        text.replace(secret.as_str(), "<secret>")
    })
}

/// A measurement ready to take.
pub struct Ready {
    /// What the measurement records of its request (the query, the URL), arguments filled
    /// and Secret-valued ones masked.
    pub recorded: String,
    /// Secret values (arguments, credentials) to keep out of every message.
    pub secrets: Vec<String>,
    /// Takes the measurement, within the provider's timeout.
    pub take: BoxFuture<'static, Result<Taken, String>>,
}

/// What taking a measurement gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Taken {
    /// A value, for the metric's conditions to judge.
    Value(QueryValue),
    /// A verdict the provider reached itself (a Job succeeded or failed).
    Judged {
        phase: AnalysisPhase,
        message: String,
    },
    /// A verdict with the figures it rests on (the judge: the canary against its
    /// baseline), recorded as the measurement's value and metadata.
    Weighed {
        phase: AnalysisPhase,
        message: String,
        value: String,
        metadata: BTreeMap<String, String>,
    },
    /// Under way (a Job still running): nothing to record yet; look again soon.
    UnderWay,
}

/// Why a due metric is not measured this time.
#[derive(Clone, Debug)]
pub enum Unready {
    /// It never can be (no address, an argument with no value, a host not allowed): the run
    /// ends as Error.
    Never(String),
    /// Not now (a Secret missing or unreadable): an Error measurement, counted against
    /// `consecutiveErrorLimit`, so a Secret restored in time costs nothing.
    NotNow(String),
}

/// A metric provider: one file each (`prometheus`, `web`, `job`, `judge`).
pub trait Provider: Sync {
    /// The longest one measurement may take, waiting for its turn included.
    fn timeout(&self) -> Duration;
    /// The measurement of `env.metric`, ready to take: arguments filled, credentials read,
    /// the address checked against `--allowed-metric-hosts`.
    fn prepare<'a>(&'a self, env: &'a Env<'a>) -> BoxFuture<'a, Result<Ready, Unready>>;
}

/// The provider a metric names; None for one weir does not have (validation reports it).
pub fn of(provider: &MetricProvider) -> Option<&dyn Provider> {
    if let Some(prometheus) = &provider.prometheus {
        return Some(prometheus);
    }
    if let Some(web) = &provider.web {
        return Some(web);
    }
    if let Some(judge) = &provider.judge {
        return Some(judge);
    }
    provider.job.as_ref().map(|job| job as &dyn Provider)
}

/// A Secret key's value, or why it cannot be had (missing, unreadable, not text).
pub async fn read_secret(
    secrets: &Api<Secret>,
    reference: &SecretKeyRef,
) -> Result<String, String> {
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(format!("Secret {:?} not found", reference.name)),
        Err(error) => return Err(format!("reading Secret {:?}: {error}", reference.name)),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {:?} has no key {:?}", reference.name, reference.key))?;
    String::from_utf8(bytes)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|_| {
            format!(
                "Secret {:?} key {:?} is not UTF-8 text",
                reference.name, reference.key
            )
        })
}

/// A timeout as people read it: whole seconds as a spec writes them; anything finer as Rust
/// prints it (tests).
pub fn shown(limit: Duration) -> String {
    match limit.subsec_nanos() {
        0 => format!("{}s", limit.as_secs()),
        _ => format!("{limit:?}"),
    }
}

/// How many measurements may be in flight to one server at once (`--max-queries-per-address`):
/// many runs measured together queue here instead of piling onto one Prometheus or web
/// endpoint, and one slow server holds only its own measurements.
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

    /// How many may be in flight to one server.
    pub fn per_address(&self) -> usize {
        self.per_address
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

/// The body, or why not: more than `limit` bytes (announced or sent) are never buffered.
/// `hint` says how to ask for less.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
    hint: &str,
) -> Result<Vec<u8>, String> {
    let too_large = |size: String| {
        format!("the answer is too large: {size} bytes, at most {limit} are read; {hint}")
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

/// At most [`MAX_ERROR_TEXT`] bytes of an outside text, cut on a character boundary.
pub fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// `: cause: deeper cause`, from the transport layers below reqwest, which name no URL.
pub fn causes(mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = String::new();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_to_one_address_wait_their_turn() {
        let gates = Gates::new(2);
        let first = gates.enter("http://prometheus:9090").await;
        // Another path on the same server is the same server.
        let second = gates.enter("http://prometheus:9090/prometheus").await;
        assert_eq!(gates.in_flight("http://prometheus:9090/"), 2);
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            gates.enter("http://prometheus:9090"),
        )
        .await;
        assert!(third.is_err(), "a third query waits");
        // Another server is not held up.
        let other = tokio::time::timeout(
            Duration::from_millis(100),
            gates.enter("http://thanos:9090"),
        )
        .await;
        assert!(other.is_ok_and(|p| p.is_some()));
        drop(first);
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            gates.enter("http://prometheus:9090"),
        )
        .await;
        assert!(third.is_ok_and(|p| p.is_some()), "a place freed is taken");
        drop(second);
        // Servers nobody queries are forgotten.
        let _ = gates.enter("http://third:9090").await;
        assert_eq!(
            gates.lock().len(),
            1,
            "only the server still queried is kept"
        );
    }
}
