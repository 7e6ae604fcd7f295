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

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::gitsync::GitSync;
use crate::runtime::scoped_api;

/// Set by the webhook (or by hand) to ask for a sync now; any new value does.
pub const SYNC_REQUEST_ANNOTATION: &str = "weir.dev/sync-requested-at";
/// The path the webhook is served on.
pub const PATH: &str = "/hooks/git";
/// The key of the webhook Secret that holds the shared secret.
pub const SECRET_KEY: &str = "token";
const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Field manager of the annotation patch.
const FIELD_MANAGER: &str = "weir-webhook";

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

struct Webhook {
    client: Client,
    namespace: Option<String>,
    secret: Option<SecretLocation>,
}

/// The webhook's route, to be merged into the controller's HTTP server. Without a secret
/// location every call is refused: an unauthenticated trigger is never offered.
pub fn routes(client: Client, namespace: Option<String>, secret: Option<SecretLocation>) -> Router {
    let state = Arc::new(Webhook {
        client,
        namespace,
        secret,
    });
    Router::new().route(PATH, post(receive)).with_state(state)
}

type Reply = (StatusCode, axum::Json<Value>);

fn reply(code: StatusCode, body: Value) -> Reply {
    (code, axum::Json(body))
}

async fn receive(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Reply {
    let Some(location) = &hook.secret else {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "no webhook secret is configured (weir controller --webhook-secret NAMESPACE/NAME)"}),
        );
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    // A call without a well-formed signature costs no read of the Secret.
    if let Err(refusal) = claimed(signature) {
        warn!(%refusal, "webhook refused");
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": refusal.to_string()}),
        );
    }
    let secret = match read_secret(&hook.client, location).await {
        Ok(secret) => secret,
        Err(message) => {
            warn!(%message, "webhook refused: its secret cannot be read");
            return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}));
        }
    };
    if let Err(refusal) = verify(&secret, &body, signature) {
        warn!(%refusal, "webhook refused");
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": refusal.to_string()}),
        );
    }
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitea-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event == "ping" {
        return reply(StatusCode::OK, json!({"message": "pong"}));
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "the body is not JSON"}),
        );
    };
    let pushed = pushed_repositories(&payload);
    if pushed.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "the payload names no repository (repository.clone_url, ssh_url, ...)"}),
        );
    }
    match request_syncs(&hook, &pushed).await {
        Ok(requested) => {
            info!(repositories = ?pushed, gitsyncs = ?requested, "webhook: sync requested");
            let code = if requested.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            reply(
                code,
                json!({"repositories": pushed, "syncRequested": requested}),
            )
        }
        Err(message) => {
            warn!(%message, "webhook: could not request a sync");
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}))
        }
    }
}

async fn read_secret(client: &Client, location: &SecretLocation) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &location.namespace);
    let described = format!("Secret {}/{}", location.namespace, location.name);
    let secret = api
        .get_opt(&location.name)
        .await
        .map_err(|e| format!("reading the webhook {described}: {e}"))?
        .ok_or_else(|| format!("the webhook {described} does not exist"))?;
    secret
        .data
        .and_then(|mut data| data.remove(SECRET_KEY))
        .map(|bytes| bytes.0)
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(|| format!("the webhook {described} has no key {SECRET_KEY:?}"))
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
                field_manager: Some(FIELD_MANAGER.into()),
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
}
