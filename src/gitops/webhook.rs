//! The push webhook: a Git host calls `POST /hooks/git` after a push, signed the way GitHub,
//! Gitea and Forgejo sign (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`). A
//! request that verifies asks every GitSync watching the pushed repository to sync now, by
//! setting the annotation `weir.dev/sync-requested-at`; the GitSync controller syncs when
//! that value differs from `status.lastHandledSyncRequest`.
//!
//! Why an annotation and not an in-process wake-up: any replica may receive the call (a
//! Service spreads requests over leader and standbys), and a standby must not lose it. The
//! annotation is the requester's intent, stored in the API server like `kubectl weir`'s
//! controls; the leader acts on it, and a restart in between loses nothing.
//!
//! Anyone who can reach the port can call it, so a call costs little until it is known to
//! be signed: the signature's shape is checked before the body is read, the body is read
//! only up to `MAX_BODY_BYTES` by at most `CONCURRENT_CALLS` calls at once, and it is
//! verified against the token as last seen by a watch of the Secret (never a read of the
//! API server per call) before anything else is done with it. A verified delivery is acted
//! on once: its delivery id, and its signature (the id is not signed, so a replay could
//! carry a new one), are remembered for `DELIVERY_MEMORY` (`Deliveries`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::api::contract::{SYNC_REQUEST_ANNOTATION, WEBHOOK_MANAGER};
use crate::api::gitsync::GitSync;
use crate::runtime::metrics::Metrics;
use crate::runtime::{scoped_api, watch};

/// The path the webhook is served on.
pub const PATH: &str = "/hooks/git";
/// The key of the webhook Secret that holds the shared secret.
pub const SECRET_KEY: &str = "token";
const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Where GitHub, Gitea and Forgejo put the id of a delivery (a redelivery keeps it).
const DELIVERY_HEADERS: [&str; 3] = [
    "x-github-delivery",
    "x-gitea-delivery",
    "x-forgejo-delivery",
];
/// The largest body read. weir needs only the repository's address from a push; GitHub's
/// push payloads list at most 20 commits (a few KiB each, with their file lists), so a push
/// is tens of KiB and 1 MiB leaves room for pushes of very large commits. A larger body is
/// refused (413) unread, and the push arrives at the GitSync's next interval instead.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Calls read and verified at once; more are refused (503) rather than queued, so that
/// unsigned bodies can never hold more than this many times `MAX_BODY_BYTES` of memory.
pub const CONCURRENT_CALLS: usize = 16;
/// How long a body may take to arrive: a sender trickling bytes must not hold a call's
/// place for long.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a verified delivery is remembered: GitHub's guidance (dedupe on the delivery
/// id) with a window longer than any sender's retries.
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(600);
/// The most deliveries remembered (each a few dozen bytes). Past it the oldest are forgotten
/// first: a flood of signed deliveries (only the token's holder can sign) shortens the
/// window instead of growing memory, and a replay past the window costs only an early sync.
pub const DELIVERIES_KEPT: usize = 10_000;

/// Why a request was refused before anything was looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is not signed (no X-Hub-Signature-256 header)")]
    Unsigned,
    #[error("X-Hub-Signature-256 must read sha256=<64 hex digits>")]
    Malformed,
    #[error("the signature does not match the body and the webhook secret")]
    Mismatch,
}

/// The signature a sender puts in `X-Hub-Signature-256`: `sha256=` and the HMAC-SHA256 of
/// the body under the shared secret, in lower-case hex.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let hex: String = hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The header's signature, if it has the right shape (checked before any Secret is read).
fn claimed(header: Option<&str>) -> Result<String, Refusal> {
    let header = header.ok_or(Refusal::Unsigned)?;
    header
        .trim()
        .strip_prefix("sha256=")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|hex| format!("sha256={}", hex.to_ascii_lowercase()))
        .ok_or(Refusal::Malformed)
}

/// Checks a GitHub-style `X-Hub-Signature-256` header against the body, in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), Refusal> {
    let given = claimed(header)?;
    aws_lc_rs::constant_time::verify_slices_are_equal(
        signature(secret, body).as_bytes(),
        given.as_bytes(),
    )
    .map_err(|_| Refusal::Mismatch)
}

/// A repository address reduced to `host/path`, so that the HTTPS, SSH and scp-like
/// addresses a Git host sends for one repository all compare equal to the GitSync's `url`:
/// no scheme, user, port, `.git` suffix or trailing slash; the host in lower case.
pub fn normalize(url: &str) -> Option<String> {
    let url = url.trim();
    let (authority_and_path, scp_like) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        // git@host:org/repo.git
        None => (url, true),
    };
    let (authority, path) = if scp_like {
        authority_and_path.split_once(':')?
    } else {
        authority_and_path
            .split_once('/')
            .unwrap_or((authority_and_path, ""))
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        // [::1]:22
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    (!path.is_empty() || !host.is_empty()).then(|| format!("{}/{path}", host.to_ascii_lowercase()))
}

/// Every repository address a push payload names (GitHub, Gitea, Forgejo and GitLab
/// shapes), normalized.
pub fn pushed_repositories(payload: &Value) -> Vec<String> {
    let candidates = [
        &payload["repository"]["clone_url"],
        &payload["repository"]["ssh_url"],
        &payload["repository"]["git_url"],
        &payload["repository"]["html_url"],
        &payload["repository"]["url"],
        &payload["repository"]["git_http_url"],
        &payload["repository"]["git_ssh_url"],
        &payload["project"]["git_http_url"],
        &payload["project"]["git_ssh_url"],
        &payload["project"]["web_url"],
    ];
    let mut found: Vec<String> = candidates
        .iter()
        .filter_map(|v| v.as_str())
        .filter_map(normalize)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Where the webhook's shared secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLocation {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for SecretLocation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(SecretLocation {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!("{text:?} must be NAMESPACE/NAME of a Secret")),
        }
    }
}

/// What the webhook knows of its token: what the watch of its Secret last saw.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// The Secret's watch has not listed it yet.
    NotSeen,
    /// The Secret does not exist.
    Missing,
    /// The Secret has no non-empty key `token`.
    NoKey,
    Present(Vec<u8>),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value.
        f.write_str(match self {
            Token::NotSeen => "NotSeen",
            Token::Missing => "Missing",
            Token::NoKey => "NoKey",
            Token::Present(_) => "Present(<redacted>)",
        })
    }
}

/// The token a Secret holds.
pub fn token_of(secret: &Secret) -> Token {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(SECRET_KEY))
        .map(|bytes| bytes.0.clone())
        .filter(|bytes| !bytes.is_empty())
        .map_or(Token::NoKey, Token::Present)
}

/// Why a token cannot verify anything yet, for the answer (503: the sender may try again
/// once the Secret is there; its call was not found wrong).
fn unavailable(token: &Token, location: &SecretLocation) -> Option<String> {
    let described = format!("Secret {}/{}", location.namespace, location.name);
    match token {
        Token::Present(_) => None,
        Token::NotSeen => Some(format!(
            "the webhook {described} has not been read yet (see weir_watch_behind_seconds{{watch=\"webhook/Secret\"}})"
        )),
        Token::Missing => Some(format!("the webhook {described} does not exist")),
        Token::NoKey => Some(format!("the webhook {described} has no key {SECRET_KEY:?}")),
    }
}

/// The deliveries acted on in the last `memory`, at most `capacity` of them: each by its
/// keys (its delivery ids, its signature), in the order they came.
#[derive(Debug)]
pub struct Deliveries {
    memory: Duration,
    capacity: usize,
    /// Each key and when it was claimed.
    seen: HashMap<String, Instant>,
    /// Keys in the order claimed (entries of released or re-claimed keys linger until they
    /// reach the front; they count towards `capacity`, so memory stays bounded).
    order: VecDeque<(Instant, String)>,
}

impl Deliveries {
    pub fn new(memory: Duration, capacity: usize) -> Deliveries {
        Deliveries {
            memory,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Claims a delivery at `now` (never earlier than the previous call's `now`): true when
    /// none of its keys was claimed within the memory, and then all of them are; false for
    /// a delivery already acted on.
    pub fn claim(&mut self, keys: &[String], now: Instant) -> bool {
        self.forget_before(now.checked_sub(self.memory));
        if keys.iter().any(|key| self.seen.contains_key(key)) {
            return false;
        }
        for key in keys {
            while self.order.len() >= self.capacity {
                self.pop_oldest();
            }
            self.seen.insert(key.clone(), now);
            self.order.push_back((now, key.clone()));
        }
        true
    }

    /// Forgets a claim whose delivery could not be acted on, so the sender's retry is.
    pub fn release(&mut self, keys: &[String]) {
        for key in keys {
            self.seen.remove(key);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while self.order.front().is_some_and(|(at, _)| *at <= cutoff) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            // Only this claim's own entry: a key released and claimed again is newer.
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
    }
}

/// The keys a verified delivery is remembered by: each delivery id header it carries, and
/// its signature (the same body signed with the same token is the same delivery, whatever
/// id a replay puts beside it).
fn delivery_keys(headers: &HeaderMap, signature: &str) -> Vec<String> {
    let mut keys: Vec<String> = DELIVERY_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        // An id is the sender's; long ones are cut so that memory per key stays small.
        .map(|id| format!("id:{}", id.chars().take(100).collect::<String>()))
        .collect();
    keys.push(signature.to_owned());
    keys.sort();
    keys.dedup();
    keys
}

/// How a call ended, a label of `weir_webhook_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    NotConfigured,
    Busy,
    TooLarge,
    BadSignature,
    NoToken,
    Replay,
    Ping,
    BadPayload,
    SyncRequested,
    NoGitSync,
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::NotConfigured => "not_configured",
            Outcome::Busy => "busy",
            Outcome::TooLarge => "too_large",
            Outcome::BadSignature => "bad_signature",
            Outcome::NoToken => "no_token",
            Outcome::Replay => "replay",
            Outcome::Ping => "ping",
            Outcome::BadPayload => "bad_payload",
            Outcome::SyncRequested => "sync_requested",
            Outcome::NoGitSync => "no_gitsync",
            Outcome::Failed => "failed",
        }
    }
}

struct Webhook {
    client: Client,
    namespace: Option<String>,
    secret: Option<SecretLocation>,
    token: Arc<RwLock<Token>>,
    deliveries: Mutex<Deliveries>,
    calls: Semaphore,
    metrics: Arc<Metrics>,
}

/// The webhook's route, to be served on its own address or beside `/metrics`, and the
/// watch of its Secret (started here, so call it inside the runtime). Without a secret
/// location every call is refused: an unauthenticated trigger is never offered.
pub fn routes(
    client: Client,
    namespace: Option<String>,
    secret: Option<SecretLocation>,
    metrics: Arc<Metrics>,
) -> Router {
    let token = Arc::new(RwLock::new(Token::NotSeen));
    if let Some(location) = &secret {
        tokio::spawn(watch_token(
            client.clone(),
            location.clone(),
            token.clone(),
            metrics.watches.optional_watch("webhook/Secret"),
        ));
    }
    let state = Arc::new(Webhook {
        client,
        namespace,
        secret,
        token,
        deliveries: Mutex::new(Deliveries::new(DELIVERY_MEMORY, DELIVERIES_KEPT)),
        calls: Semaphore::new(CONCURRENT_CALLS),
        metrics,
    });
    Router::new().route(PATH, post(receive)).with_state(state)
}

/// Keeps `token` equal to what the Secret holds: one watch of that Secret alone (a field
/// selector on its name, which RBAC can grant by `resourceNames`), backing off like every
/// watch of the controller.
async fn watch_token(
    client: Client,
    location: SecretLocation,
    token: Arc<RwLock<Token>>,
    health: watch::Watch,
) {
    let api: Api<Secret> = Api::namespaced(client, &location.namespace);
    let config = watch::config().fields(&format!("metadata.name={}", location.name));
    let mut events = std::pin::pin!(watch::watched(api, config, health));
    // During a (re)list: whether the Secret was among what it listed.
    let mut listed = false;
    while let Some(event) = events.next().await {
        let seen = match event {
            Ok(Event::Init) => {
                listed = false;
                continue;
            }
            Ok(Event::InitApply(secret)) => {
                listed = true;
                token_of(&secret)
            }
            Ok(Event::InitDone) if !listed => Token::Missing,
            Ok(Event::InitDone) => continue,
            Ok(Event::Apply(secret)) => token_of(&secret),
            Ok(Event::Delete(_)) => Token::Missing,
            // Logged and retried by the watch; the last token seen stays in use.
            Err(_) => continue,
        };
        let mut current = token.write().unwrap_or_else(|e| e.into_inner());
        if *current != seen {
            info!(secret = %format!("{}/{}", location.namespace, location.name), token = ?seen, "webhook Secret seen");
            *current = seen;
        }
    }
}

type Reply = (StatusCode, axum::Json<Value>);

fn reply(hook: &Webhook, outcome: Outcome, code: StatusCode, body: Value) -> Reply {
    hook.metrics.observe_webhook(outcome.label());
    (code, axum::Json(body))
}

async fn receive(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Reply {
    let hook = hook.as_ref();
    let Some(location) = &hook.secret else {
        return reply(
            hook,
            Outcome::NotConfigured,
            StatusCode::UNAUTHORIZED,
            json!({"error": "no webhook secret is configured (weir controller --webhook-secret NAMESPACE/NAME)"}),
        );
    };
    // First what costs nothing: a call without a well-formed signature is not read.
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(refusal) = claimed(header) {
        return reply(
            hook,
            Outcome::BadSignature,
            StatusCode::UNAUTHORIZED,
            json!({"error": refusal.to_string()}),
        );
    }
    let Ok(_call) = hook.calls.try_acquire() else {
        return reply(
            hook,
            Outcome::Busy,
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("more than {CONCURRENT_CALLS} webhook calls at once; try again")}),
        );
    };
    let too_large = || {
        reply(
            hook,
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("the body must be at most {MAX_BODY_BYTES} bytes, sent within {}s; the push arrives at the GitSync's next interval", BODY_TIMEOUT.as_secs())}),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(body)) => body,
        // Over the limit, cut off or too slow: not read further either way.
        _ => return too_large(),
    };
    let token = hook.token.read().unwrap_or_else(|e| e.into_inner()).clone();
    let secret = match &token {
        Token::Present(secret) => secret,
        other => {
            let message = unavailable(other, location).unwrap_or_default();
            warn!(%message, "webhook refused: no token to verify with");
            return reply(
                hook,
                Outcome::NoToken,
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": message}),
            );
        }
    };
    if let Err(refusal) = verify(secret, &body, header) {
        return reply(
            hook,
            Outcome::BadSignature,
            StatusCode::UNAUTHORIZED,
            json!({"error": refusal.to_string()}),
        );
    }
    // Verified: from here on the call is the token holder's.
    let keys = delivery_keys(&headers, &signature(secret, &body));
    let first = hook
        .deliveries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .claim(&keys, Instant::now());
    if !first {
        // 200, not 202: nothing more will happen, and the sender must not count the
        // delivery as failed (GitHub would show it so, and a person redeliver it).
        return reply(
            hook,
            Outcome::Replay,
            StatusCode::OK,
            json!({"message": "already handled: this delivery was acted on within the last 10 minutes"}),
        );
    }
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitea-event"))
        .or_else(|| headers.get("x-forgejo-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event == "ping" {
        return reply(
            hook,
            Outcome::Ping,
            StatusCode::OK,
            json!({"message": "pong"}),
        );
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            hook,
            Outcome::BadPayload,
            StatusCode::BAD_REQUEST,
            json!({"error": "the body is not JSON"}),
        );
    };
    let pushed = pushed_repositories(&payload);
    if pushed.is_empty() {
        return reply(
            hook,
            Outcome::BadPayload,
            StatusCode::BAD_REQUEST,
            json!({"error": "the payload names no repository (repository.clone_url, ssh_url, ...)"}),
        );
    }
    match request_syncs(hook, &pushed).await {
        Ok(requested) => {
            info!(repositories = ?pushed, gitsyncs = ?requested, "webhook: sync requested");
            let (outcome, code) = if requested.is_empty() {
                (Outcome::NoGitSync, StatusCode::OK)
            } else {
                (Outcome::SyncRequested, StatusCode::ACCEPTED)
            };
            reply(
                hook,
                outcome,
                code,
                json!({"repositories": pushed, "syncRequested": requested}),
            )
        }
        Err(message) => {
            // Not acted on: the sender's retry must be.
            hook.deliveries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(&keys);
            warn!(%message, "webhook: could not request a sync");
            reply(
                hook,
                Outcome::Failed,
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": message}),
            )
        }
    }
}

/// Sets the request annotation on every GitSync whose URL is one of `pushed`; returns them
/// as `namespace/name`.
async fn request_syncs(hook: &Webhook, pushed: &[String]) -> Result<Vec<String>, String> {
    let all: Api<GitSync> = scoped_api(&hook.client, hook.namespace.as_deref());
    let syncs = all
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing GitSyncs: {e}"))?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut requested = Vec::new();
    for sync in syncs {
        if !normalize(&sync.spec.url).is_some_and(|url| pushed.contains(&url)) {
            continue;
        }
        let namespace = sync.namespace().unwrap_or_default();
        let api: Api<GitSync> = Api::namespaced(hook.client.clone(), &namespace);
        let patch = json!({"metadata": {"annotations": {SYNC_REQUEST_ANNOTATION: now}}});
        api.patch(
            &sync.name_any(),
            &PatchParams {
                field_manager: Some(WEBHOOK_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            format!(
                "asking GitSync {namespace}/{} to sync: {e}",
                sync.name_any()
            )
        })?;
        requested.push(format!("{namespace}/{}", sync.name_any()));
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_example_verifies() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(header)
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(&header.to_ascii_uppercase().replace("SHA256=", "sha256="))
            ),
            Ok(()),
            "hex digits in either case"
        );
    }

    #[test]
    fn anything_but_the_right_signature_is_refused() {
        let body = br#"{"repository":{"clone_url":"https://example.com/a.git"}}"#;
        let good = signature(b"s3cret", body);
        assert_eq!(verify(b"s3cret", body, Some(&good)), Ok(()));
        assert_eq!(verify(b"s3cret", body, None), Err(Refusal::Unsigned));
        assert_eq!(verify(b"other", body, Some(&good)), Err(Refusal::Mismatch));
        assert_eq!(
            verify(b"s3cret", b"{}", Some(&good)),
            Err(Refusal::Mismatch),
            "a changed body"
        );
        for malformed in [
            "",
            "sha256=",
            "sha1=0123",
            &good[7..],
            &good[..good.len() - 1],
            &format!("{}zz", &good[..good.len() - 2]),
        ] {
            assert_eq!(
                verify(b"s3cret", body, Some(malformed)),
                Err(Refusal::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn one_repository_in_all_its_spellings_is_one_address() {
        let expected = Some("github.com/weir-dev/shop".to_owned());
        for url in [
            "https://github.com/weir-dev/shop.git",
            "https://github.com/weir-dev/shop",
            "https://token@github.com/weir-dev/shop/",
            "http://GitHub.com:443/weir-dev/shop.git",
            "ssh://git@github.com/weir-dev/shop.git",
            "ssh://git@github.com:2222/weir-dev/shop",
            "git://github.com/weir-dev/shop.git",
            "git@github.com:weir-dev/shop.git",
        ] {
            assert_eq!(normalize(url), expected, "{url}");
        }
        assert_eq!(
            normalize("ssh://git@[::1]:2222/srv/shop.git").as_deref(),
            Some("::1/srv/shop")
        );
        assert_eq!(
            normalize("file:///srv/git/shop.git").as_deref(),
            Some("/srv/git/shop")
        );
        assert_ne!(
            normalize("https://github.com/weir-dev/shop-api"),
            normalize("https://github.com/weir-dev/shop"),
        );
        assert_eq!(normalize("no-scheme-and-no-colon"), None);
    }

    #[test]
    fn push_payloads_of_github_and_gitlab_name_their_repository() {
        let github = json!({"ref": "refs/heads/main", "repository": {
            "clone_url": "https://github.com/o/r.git", "ssh_url": "git@github.com:o/r.git",
            "html_url": "https://github.com/o/r"}});
        assert_eq!(pushed_repositories(&github), vec!["github.com/o/r"]);
        let gitlab = json!({"object_kind": "push", "project": {
            "git_http_url": "https://gitlab.example/g/r.git",
            "git_ssh_url": "git@gitlab.example:g/r.git"}});
        assert_eq!(pushed_repositories(&gitlab), vec!["gitlab.example/g/r"]);
        assert!(pushed_repositories(&json!({"zen": "ping"})).is_empty());
    }

    #[test]
    fn the_secret_location_is_namespace_slash_name() {
        assert_eq!(
            "weir-system/webhook".parse(),
            Ok(SecretLocation {
                namespace: "weir-system".into(),
                name: "webhook".into()
            })
        );
        for bad in ["webhook", "/webhook", "ns/", ""] {
            assert!(bad.parse::<SecretLocation>().is_err(), "{bad:?}");
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_delivery_is_acted_on_once_within_the_memory() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut deliveries = Deliveries::new(DELIVERY_MEMORY, 100);
        assert!(deliveries.claim(&keys(&["id:a", "sig:1"]), start));
        assert!(
            !deliveries.claim(&keys(&["id:a", "sig:1"]), start + minute),
            "a replay"
        );
        assert!(
            !deliveries.claim(&keys(&["id:new", "sig:1"]), start + minute),
            "the same signed body under another id"
        );
        assert!(
            !deliveries.claim(&keys(&["id:a", "sig:2"]), start + minute),
            "the same id with another body"
        );
        assert!(deliveries.claim(&keys(&["id:b", "sig:2"]), start + minute));
        assert!(
            !deliveries.claim(
                &keys(&["id:a", "sig:1"]),
                start + DELIVERY_MEMORY - Duration::from_millis(1)
            ),
            "still within ten minutes"
        );
        assert!(
            deliveries.claim(&keys(&["id:a", "sig:1"]), start + DELIVERY_MEMORY),
            "forgotten after ten minutes"
        );
        assert!(!deliveries.claim(&keys(&["id:b"]), start + DELIVERY_MEMORY));
    }

    #[test]
    fn a_released_claim_lets_the_retry_through_and_an_old_entry_never_forgets_a_new_claim() {
        let start = Instant::now();
        let mut deliveries = Deliveries::new(Duration::from_secs(600), 100);
        assert!(deliveries.claim(&keys(&["id:a"]), start));
        deliveries.release(&keys(&["id:a"]));
        let later = start + Duration::from_secs(300);
        assert!(
            deliveries.claim(&keys(&["id:a"]), later),
            "the retry of a failed delivery"
        );
        // The first claim's entry expires at start + 600: the second claim stays.
        assert!(!deliveries.claim(&keys(&["id:a"]), start + Duration::from_secs(700)));
        assert!(deliveries.claim(&keys(&["id:a"]), later + Duration::from_secs(600)));
    }

    #[test]
    fn a_flood_of_distinct_deliveries_forgets_the_oldest_and_stays_bounded() {
        let start = Instant::now();
        let mut deliveries = Deliveries::new(DELIVERY_MEMORY, 1_000);
        for n in 0..100_000 {
            assert!(deliveries.claim(&keys(&[&format!("id:{n}"), &format!("sig:{n}")]), start));
            assert!(deliveries.len() <= 1_000 && deliveries.order.len() <= 1_000);
        }
        assert_eq!(deliveries.len(), 1_000);
        assert!(
            !deliveries.claim(&keys(&["id:99999"]), start),
            "the newest are kept"
        );
        assert!(
            deliveries.claim(&keys(&["id:0"]), start),
            "the oldest were forgotten"
        );
    }

    #[test]
    fn a_delivery_is_known_by_its_id_headers_and_its_signature() {
        let mut headers = HeaderMap::new();
        assert_eq!(delivery_keys(&headers, "sha256:ab"), keys(&["sha256:ab"]));
        headers.insert("x-github-delivery", "72d3162e".parse().expect("header"));
        headers.insert("x-gitea-delivery", " 9f1 ".parse().expect("header"));
        headers.insert("x-forgejo-delivery", "9f1".parse().expect("header"));
        assert_eq!(
            delivery_keys(&headers, "sha256:ab"),
            keys(&["id:72d3162e", "id:9f1", "sha256:ab"])
        );
        headers.insert(
            "x-github-delivery",
            "x".repeat(5_000).parse().expect("header"),
        );
        assert!(
            delivery_keys(&headers, "s").iter().all(|k| k.len() <= 103),
            "a long id is cut"
        );
    }

    #[test]
    fn the_token_is_the_secrets_key_and_never_printed() {
        let secret = |data: Option<(&str, &[u8])>| Secret {
            data: data.map(|(k, v)| {
                [(k.to_owned(), k8s_openapi::ByteString(v.to_vec()))]
                    .into_iter()
                    .collect()
            }),
            ..Secret::default()
        };
        assert_eq!(
            token_of(&secret(Some(("token", b"s3cret")))),
            Token::Present(b"s3cret".to_vec())
        );
        assert_eq!(token_of(&secret(Some(("token", b"")))), Token::NoKey);
        assert_eq!(token_of(&secret(Some(("other", b"x")))), Token::NoKey);
        assert_eq!(token_of(&secret(None)), Token::NoKey);
        assert!(!format!("{:?}", Token::Present(b"s3cret".to_vec())).contains("s3cret"));
        let location = SecretLocation {
            namespace: "weir".into(),
            name: "hook".into(),
        };
        assert_eq!(unavailable(&Token::Present(vec![1]), &location), None);
        for (token, says) in [
            (Token::NotSeen, "has not been read yet"),
            (Token::Missing, "does not exist"),
            (Token::NoKey, "has no key \"token\""),
        ] {
            let message = unavailable(&token, &location).expect("unavailable");
            assert!(
                message.contains("Secret weir/hook") && message.contains(says),
                "{message}"
            );
        }
    }

    /// An API server stand-in that answers every request with an empty GitSync list and
    /// counts the requests.
    async fn api_server() -> (Client, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = r#"{"apiVersion":"weir.dev/v1alpha1","kind":"GitSyncList","metadata":{"resourceVersion":"1"},"items":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse().expect("url"));
        (Client::try_from(config).expect("client"), requests)
    }

    fn hook(client: Client, token: Token) -> Arc<Webhook> {
        Arc::new(Webhook {
            client,
            namespace: Some("ns".into()),
            secret: Some(SecretLocation {
                namespace: "ns".into(),
                name: "hook".into(),
            }),
            token: Arc::new(RwLock::new(token)),
            deliveries: Mutex::new(Deliveries::new(DELIVERY_MEMORY, DELIVERIES_KEPT)),
            calls: Semaphore::new(CONCURRENT_CALLS),
            metrics: Arc::new(Metrics::default()),
        })
    }

    async fn call(hook: &Arc<Webhook>, headers: &[(&'static str, String)], body: &str) -> u16 {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("header"));
        }
        let (code, _) = receive(State(hook.clone()), map, Body::from(body.to_owned())).await;
        code.as_u16()
    }

    fn outcome_count(hook: &Webhook, outcome: Outcome) -> u64 {
        let text = hook.metrics.encode().expect("metrics");
        let prefix = format!(
            "weir_webhook_requests_total{{outcome=\"{}\"}} ",
            outcome.label()
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.parse().expect("a count"))
    }

    #[tokio::test]
    async fn bad_signatures_are_refused_without_a_request_to_the_api_server() {
        let (client, requests) = api_server().await;
        let hook = hook(client, Token::Present(b"s3cret".to_vec()));
        let body = r#"{"repository":{"clone_url":"https://example.com/a.git"}}"#;
        for n in 0..1_000 {
            let header = match n % 3 {
                0 => signature(b"guess", body.as_bytes()),
                1 => "sha256=zz".to_owned(),
                _ => signature(b"s3cret", b"{}"),
            };
            let headers = [
                (SIGNATURE_HEADER, header),
                ("x-github-delivery", format!("d{n}")),
            ];
            assert_eq!(call(&hook, &headers, body).await, 401);
        }
        assert_eq!(call(&hook, &[], body).await, 401, "unsigned");
        assert_eq!(outcome_count(&hook, Outcome::BadSignature), 1_001);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(
            hook.deliveries.lock().expect("lock").is_empty(),
            "nothing unverified is remembered"
        );
    }

    #[tokio::test]
    async fn a_replayed_delivery_is_answered_200_and_not_acted_on_again() {
        let (client, requests) = api_server().await;
        let hook = hook(client, Token::Present(b"s3cret".to_vec()));
        let body = r#"{"repository":{"clone_url":"https://example.com/a.git"}}"#;
        let signed = |id: &str| {
            vec![
                (SIGNATURE_HEADER, signature(b"s3cret", body.as_bytes())),
                ("x-github-delivery", id.to_owned()),
            ]
        };
        assert_eq!(
            call(&hook, &signed("d1"), body).await,
            200,
            "no GitSync matches"
        );
        assert_eq!(outcome_count(&hook, Outcome::NoGitSync), 1);
        let acted = requests.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(acted, 1, "one list of GitSyncs");
        assert_eq!(call(&hook, &signed("d1"), body).await, 200);
        assert_eq!(
            call(&hook, &signed("d2"), body).await,
            200,
            "a new id, the same body"
        );
        assert_eq!(outcome_count(&hook, Outcome::Replay), 2);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), acted);
        let other = r#"{"repository":{"clone_url":"https://example.com/b.git"}}"#;
        let headers = [(SIGNATURE_HEADER, signature(b"s3cret", other.as_bytes()))];
        assert_eq!(call(&hook, &headers, other).await, 200);
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            acted + 1
        );
    }

    #[tokio::test]
    async fn without_a_token_a_signed_call_is_503_and_not_remembered() {
        let (client, requests) = api_server().await;
        let body = "{}";
        let headers = [(SIGNATURE_HEADER, signature(b"s3cret", body.as_bytes()))];
        for token in [Token::NotSeen, Token::Missing, Token::NoKey] {
            let hook = hook(client.clone(), token);
            assert_eq!(call(&hook, &headers, body).await, 503);
            assert_eq!(outcome_count(&hook, Outcome::NoToken), 1);
            assert!(hook.deliveries.lock().expect("lock").is_empty());
        }
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
        let mut unconfigured = hook(client, Token::NotSeen);
        if let Some(hook) = Arc::get_mut(&mut unconfigured) {
            hook.secret = None;
        }
        assert_eq!(call(&unconfigured, &headers, body).await, 401);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_unread() {
        let (client, requests) = api_server().await;
        let hook = hook(client, Token::Present(b"s3cret".to_vec()));
        let body = format!(
            "{{\"repository\":{{\"clone_url\":\"https://example.com/a.git\"}},\"pad\":\"{}\"}}",
            "x".repeat(MAX_BODY_BYTES)
        );
        let headers = [(SIGNATURE_HEADER, signature(b"s3cret", body.as_bytes()))];
        assert_eq!(
            call(&hook, &headers, &body).await,
            413,
            "no Content-Length given"
        );
        let declared = [
            (SIGNATURE_HEADER, signature(b"s3cret", body.as_bytes())),
            ("content-length", body.len().to_string()),
        ];
        assert_eq!(
            call(&hook, &declared, &body).await,
            413,
            "Content-Length too large"
        );
        assert_eq!(outcome_count(&hook, Outcome::TooLarge), 2);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
