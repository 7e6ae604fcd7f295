//! The notification controller's glue. It watches weir's own Events (field selector
//! `reportingComponent=weir`), the Notifiers and NotificationRules, and the Rollouts and
//! GitSyncs the Events are about (for labels and Argo's subscription annotations). Each
//! second, while this replica leads, it queues for every Notifier the events due to it
//! (`ledger::due`); one sender task per Notifier delivers its queue in order, retrying with
//! backoff, and marks each delivery in the Notifier's status, so a restart or a new leader
//! sends none twice. Delivery never touches a reconcile: a dead receiver slows no rollout.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use super::commit_status;
use super::ledger;
use super::message;
use super::select::{self, Subject, Told};
use crate::analysis::hosts::AllowedHosts;
use crate::api::gitsync::GitSync;
use crate::api::notification::{NotificationRule, Notifier, NotifierType};
use crate::api::rollout::Rollout;
use crate::gitops::tenancy::{self, Policy};
use crate::runtime::cache::Trim;
use crate::runtime::impersonation::Impersonation;
use crate::runtime::leader::Leadership;
use crate::runtime::watch::{self, Health, Watch};

/// How long one delivery may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The Notifier's condition: the last message delivered, or why not.
const READY: &str = "Ready";

pub struct Options {
    /// Who reads a Notifier's Secret when it names no ServiceAccount.
    pub policy: Policy,
    /// The receivers messages may go to (`--allowed-notification-hosts`).
    pub allowed: AllowedHosts,
}

struct Shared {
    client: Client,
    impersonation: Impersonation,
    options: Options,
    leadership: Leadership,
    http: reqwest::Client,
    notifiers: Store<Notifier>,
}

/// An event waiting for a Notifier, with the revision it is about as it was when queued.
#[derive(Clone)]
struct Queued {
    event: Told,
    revision: Option<String>,
}

/// One Notifier's queue and what it has queued or delivered since this process started.
struct Outbox {
    queue: Mutex<VecDeque<Queued>>,
    known: Mutex<BTreeSet<String>>,
    wake: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Outbox {
    /// Ends its delivery task.
    fn stop(&self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

pub async fn run(
    client: Client,
    config: kube::Config,
    namespace: Option<&str>,
    leadership: Leadership,
    health: Health,
    rollouts: Store<Rollout>,
    options: Options,
) {
    // In the metric and the log, not in readiness or the outage record: a notification
    // watch that lags must never hold up, or hurry, a rollout's timers.
    let watching = |name: &str| health.optional_watch(name);
    // Events may come from the watch cache: one it lacks yet comes by the watch. What
    // decides deliveries (Notifiers' marks, rules) is read consistently. They are watched
    // only while some NotificationRule is in scope: with none, no Event is addressed to
    // anyone, and a few Events of every Rollout would be the largest thing kept for nothing.
    let watch_events = {
        let client = client.clone();
        let namespace = namespace.map(str::to_owned);
        let health = health.clone();
        move || {
            Followed::start(
                &client,
                namespace.as_deref(),
                watch::cached_first().fields("reportingComponent=weir"),
                TrimEvent,
                health.optional_watch("notify/Event"),
            )
        }
    };
    let mut events: Option<Followed<Event>> = None;
    let notifiers = Followed::<Notifier>::start(
        &client,
        namespace,
        watch::config(),
        crate::runtime::cache::KeepAll,
        watching("notify/Notifier"),
    )
    .kept();
    let rules = Followed::<NotificationRule>::start(
        &client,
        namespace,
        watch::config(),
        crate::runtime::cache::KeepAll,
        watching("notify/NotificationRule"),
    )
    .kept();
    let syncs = Followed::<GitSync>::start(
        &client,
        namespace,
        watch::config(),
        crate::runtime::cache::KeepAll,
        watching("notify/GitSync"),
    )
    .kept();
    let http = match reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "notifications are off: no HTTP client");
            return;
        }
    };
    let shared = Arc::new(Shared {
        impersonation: Impersonation::new(config, client.clone()),
        client,
        options,
        leadership,
        http,
        notifiers: notifiers.clone(),
    });
    let mut outboxes: HashMap<(String, String), Arc<Outbox>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let shutdown = crate::runtime::shutdown_requested();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A delivery cut short is made again by the next process: the marks in the
            // Notifier's status say what was sent.
            () = &mut shutdown => break,
        }
        // The Notifiers of the shards this replica leads. An outbox lives only while its
        // shard is led here: one made again on a gain starts from the marks the Notifier's
        // status holds, which the replica that led it until then kept, so nothing is sent twice.
        let led: Vec<Arc<Notifier>> = notifiers
            .state()
            .into_iter()
            .filter(|n| shared.leadership.term_for(n.as_ref()).holds())
            .collect();
        let present: BTreeSet<(String, String)> = led
            .iter()
            .map(|n| (n.namespace().unwrap_or_default(), n.name_any()))
            .collect();
        outboxes.retain(|key, outbox| {
            let keep = present.contains(key);
            if !keep {
                outbox.stop();
            }
            keep
        });
        let rules = rules.state();
        // Started on the first rule, stopped (its cache freed) with the last: an Event
        // listed again on a restart of the watch is sent at most once (`known`, the marks).
        if rules.is_empty() {
            events = None;
            continue;
        }
        let events = events.get_or_insert_with(&watch_events);
        if !shared.leadership.leads_any() {
            continue;
        }
        let now = chrono::Utc::now().timestamp();
        let told: Vec<Told> = events
            .store
            .state()
            .iter()
            .filter_map(|e| told(e))
            .collect();
        for rule in &rules {
            // Each rule's status is written by the replica leading its shard.
            if shared.leadership.term_for(rule.as_ref()).holds() {
                rule_status(&shared, rule).await;
            }
        }
        // Each recent event matched once against its namespace's rules: the Notifiers (by
        // namespace and name) it is addressed to.
        let mut addressed: HashMap<(String, String), Vec<&Told>> = HashMap::new();
        for event in told
            .iter()
            .filter(|e| e.at >= now - ledger::HORIZON_SECONDS)
        {
            let held = Held::of(&rollouts, &syncs, event);
            let subject = Subject {
                labels: held.as_ref().and_then(|h| h.meta().labels.as_ref()),
                annotations: held.as_ref().and_then(|h| h.meta().annotations.as_ref()),
            };
            let in_namespace = rules
                .iter()
                .filter(|r| r.namespace().as_deref() == Some(event.namespace.as_str()))
                .map(|r| &r.spec);
            for name in select::notifiers(event, subject, in_namespace) {
                addressed
                    .entry((event.namespace.clone(), name))
                    .or_default()
                    .push(event);
            }
        }
        for notifier in led {
            let key = (
                notifier.namespace().unwrap_or_default(),
                notifier.name_any(),
            );
            let outbox = outboxes
                .entry(key.clone())
                .or_insert_with(|| start(&shared, &notifier, key.clone()))
                .clone();
            let since = notifier
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            let selected = addressed.get(&key).map_or(&[][..], Vec::as_slice);
            let Ok(mut known) = outbox.known.lock() else {
                continue;
            };
            let due: Vec<Told> = ledger::due(selected.iter().copied(), &known, since, now)
                .into_iter()
                .cloned()
                .collect();
            if due.is_empty() {
                continue;
            }
            if let Ok(mut queue) = outbox.queue.lock() {
                for event in due {
                    known.insert(event.uid.clone());
                    let revisions = revisions_of(&rollouts, &syncs, &event);
                    let revision = commit_status::revision(&event, &revisions);
                    if let Some(dropped) = ledger::enqueue(&mut queue, Queued { event, revision }) {
                        tracing::warn!(notifier = %format!("{}/{}", key.0, key.1), event = %dropped.event.uid,
                            "the notifier's queue is full: its oldest message was dropped");
                    }
                }
            }
            outbox.wake.notify_one();
        }
    }
    for outbox in outboxes.values() {
        outbox.stop();
    }
    tracing::info!("notification controller stopped");
}

/// A rule's Ready: invalid (what to fix), its Notifier missing, or ready. Written only when
/// it changes.
async fn rule_status(shared: &Shared, rule: &NotificationRule) {
    let namespace = rule.namespace().unwrap_or_default();
    let notifier = &rule.spec.notifier_ref.name;
    let violations = crate::validate::notification_rule(&rule.spec);
    let (ready, reason, message) = if let Some(first) = violations.first() {
        (false, "InvalidSpec", first.to_string())
    } else if shared
        .notifiers
        .get(&ObjectRef::new(notifier).within(&namespace))
        .is_none()
    {
        (
            false,
            "NotifierNotFound",
            format!(
                "no Notifier {namespace}/{notifier} (spec.notifierRef): create it, or name another"
            ),
        )
    } else {
        (
            true,
            "Ready",
            format!("events go to Notifier {namespace}/{notifier}"),
        )
    };
    let before = rule.status.clone().unwrap_or_default();
    let mut status = before.clone();
    crate::conditions::set(
        &mut status.conditions,
        READY,
        ready,
        reason,
        &message,
        &crate::time::to_k8s(chrono::Utc::now()),
        rule.metadata.generation,
    );
    if status == before {
        return;
    }
    patch_status(
        shared,
        rule,
        &status,
        "could not write a NotificationRule's status",
    )
    .await;
}

/// One merge patch of `object`'s status; a failure is logged (the next pass tries again).
async fn patch_status<K>(shared: &Shared, object: &K, status: &impl serde::Serialize, failed: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(
        shared.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({"status": status});
    if let Err(error) = api
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(%error, object = %object.name_any(), "{failed}");
    }
}

/// A cache [`Followed::start`] keeps filled while this value lives: dropping it ends its watch, and
/// the cache goes with the last reader's copy of the store.
struct Followed<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    task: StopOnDrop,
}

/// Aborts the task when dropped.
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<K> Followed<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// A cache of `K` in the controller's namespaces (managedFields dropped, as every cache
    /// of the controller does), filled until this value is dropped (or [`Followed::kept`]); a
    /// failing watch is logged and shown in `weir_watch_behind_seconds`.
    fn start(
        client: &Client,
        namespace: Option<&str>,
        config: watcher::Config,
        trim: impl Trim<K>,
        health: Watch,
    ) -> Self {
        let (cache, events) = crate::runtime::cache::trimmed(
            crate::runtime::scoped_api::<K>(client, namespace),
            config,
            trim,
            health,
        );
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            // Failures are logged and counted by the watch itself.
            while events.next().await.is_some() {}
        });
        Followed {
            store: cache.store,
            task: StopOnDrop(task.abort_handle()),
        }
    }

    /// The cache, filled for as long as the process runs.
    fn kept(self) -> Store<K> {
        std::mem::forget(self.task);
        self.store
    }
}

/// Drops from a cached Event what [`told`] never reads (where it was reported from, the
/// regarded object's uid and version, the series): a few of them for every Rollout and
/// GitSync, kept for as long as the API server keeps them.
struct TrimEvent;

impl Trim<Event> for TrimEvent {
    fn trim(event: &mut Event) {
        let meta = &mut event.metadata;
        meta.annotations = None;
        meta.labels = None;
        meta.owner_references = None;
        meta.generate_name = None;
        let regarding = &mut event.involved_object;
        regarding.api_version = None;
        regarding.uid = None;
        regarding.resource_version = None;
        regarding.field_path = None;
        event.source = None;
        event.reporting_component = None;
        event.reporting_instance = None;
        event.related = None;
        event.series = None;
        event.action = None;
    }
}

/// One of weir's Events as the notifications read it.
fn told(event: &Event) -> Option<Told> {
    let regarding = &event.involved_object;
    let kind = regarding.kind.clone()?;
    if !matches!(kind.as_str(), "Rollout" | "GitSync") {
        return None;
    }
    let at = crate::runtime::event_time(event)?;
    Some(Told {
        uid: event.metadata.uid.clone()?,
        kind,
        namespace: regarding.namespace.clone()?,
        name: regarding.name.clone()?,
        reason: event.reason.clone().unwrap_or_default(),
        note: event.message.clone().unwrap_or_default(),
        warning: event.type_.as_deref() == Some("Warning"),
        at,
    })
}

/// What the event is about, as the caches hold it (shared, not copied: every recent event
/// is matched at every pass).
enum Held {
    Rollout(Arc<Rollout>),
    GitSync(Arc<GitSync>),
}

impl Held {
    fn of(rollouts: &Store<Rollout>, syncs: &Store<GitSync>, event: &Told) -> Option<Held> {
        match event.kind.as_str() {
            "Rollout" => rollouts
                .get(&ObjectRef::new(&event.name).within(&event.namespace))
                .map(Held::Rollout),
            "GitSync" => syncs
                .get(&ObjectRef::new(&event.name).within(&event.namespace))
                .map(Held::GitSync),
            _ => None,
        }
    }

    fn meta(&self) -> &kube::api::ObjectMeta {
        match self {
            Held::Rollout(rollout) => &rollout.metadata,
            Held::GitSync(sync) => &sync.metadata,
        }
    }
}

/// The full revisions the event's object names, most likely first: a Rollout's canary
/// and stable revisions; a GitSync's attempted, applied, rejected, tried and good ones.
fn revisions_of(rollouts: &Store<Rollout>, syncs: &Store<GitSync>, event: &Told) -> Vec<String> {
    match event.kind.as_str() {
        "Rollout" => rollouts
            .get(&ObjectRef::new(&event.name).within(&event.namespace))
            .and_then(|r| r.status.clone())
            .map(|s| {
                s.canary_revision
                    .into_iter()
                    .chain(s.stable_revision)
                    .collect()
            })
            .unwrap_or_default(),
        "GitSync" => syncs
            .get(&ObjectRef::new(&event.name).within(&event.namespace))
            .and_then(|s| s.status.clone())
            .map(|s| {
                s.last_attempted_revision
                    .into_iter()
                    .chain(s.last_applied_revision)
                    .chain(s.rejected_revisions.into_iter().rev().map(|r| r.revision))
                    .chain(s.history.into_iter().rev().map(|h| h.revision))
                    .chain(s.last_good_revision)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The outbox of a Notifier and its sender task, seeded with what its status says was
/// delivered.
fn start(shared: &Arc<Shared>, notifier: &Notifier, key: (String, String)) -> Arc<Outbox> {
    let marks: Vec<(String, i64)> = notifier
        .status
        .as_ref()
        .map(|s| {
            s.delivered
                .iter()
                .map(|d| (d.event.clone(), d.at.0.as_second()))
                .collect()
        })
        .unwrap_or_default();
    let delivered: BTreeSet<String> = marks.iter().map(|(uid, _)| uid.clone()).collect();
    let outbox = Arc::new(Outbox {
        queue: Mutex::new(VecDeque::new()),
        known: Mutex::new(delivered),
        wake: Notify::new(),
        task: Mutex::new(None),
    });
    let (shared, sender) = (shared.clone(), outbox.clone());
    // The task holds its outbox; it is aborted (and lets go) when the Notifier goes.
    let task = tokio::spawn(async move { send_all(&shared, &sender, key, marks).await });
    if let Ok(mut slot) = outbox.task.lock() {
        *slot = Some(task);
    }
    outbox
}

/// Delivers a Notifier's queue in order, for as long as the Notifier exists.
async fn send_all(
    shared: &Shared,
    outbox: &Outbox,
    (namespace, name): (String, String),
    mut marks: Vec<(String, i64)>,
) {
    let mut failures = 0u32;
    loop {
        let next = outbox.queue.lock().ok().and_then(|q| q.front().cloned());
        let Some(Queued { event, revision }) = next else {
            outbox.wake.notified().await;
            continue;
        };
        let Some(notifier) = shared
            .notifiers
            .get(&ObjectRef::new(&name).within(&namespace))
        else {
            return;
        };
        let term = shared.leadership.term_for(notifier.as_ref());
        if notifier.spec.suspend || !term.holds() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let sent = send(shared, &notifier, &event, revision.as_deref()).await;
        if !term.holds() {
            continue;
        }
        let now = chrono::Utc::now();
        match sent {
            Ok(()) => {
                failures = 0;
                if let Ok(mut queue) = outbox.queue.lock() {
                    queue.pop_front();
                }
                ledger::remember(&mut marks, &event.uid, now.timestamp());
                let said = format!(
                    "delivered {} {} of {} {}/{}",
                    event.reason, event.uid, event.kind, event.namespace, event.name
                );
                write_status(shared, &notifier, &marks, true, "Delivered", &said, now).await;
            }
            Err(why) => {
                let wait = ledger::backoff(failures);
                failures = failures.saturating_add(1);
                let said = format!(
                    "{why}; {} message(s) wait, the next try in {}s",
                    outbox.queue.lock().map(|q| q.len()).unwrap_or(0),
                    wait.as_secs()
                );
                tracing::warn!(notifier = %format!("{namespace}/{name}"), "{said}");
                write_status(
                    shared,
                    &notifier,
                    &marks,
                    false,
                    "DeliveryFailed",
                    &said,
                    now,
                )
                .await;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Sends one message; the error says why in words that hold no secret (the receiver's host,
/// never its path, which for Slack and Teams is the credential).
async fn send(
    shared: &Shared,
    notifier: &Notifier,
    event: &Told,
    revision: Option<&str>,
) -> Result<(), String> {
    let namespace = notifier.namespace().unwrap_or_default();
    let spec = &notifier.spec;
    if let Some(first) = crate::validate::notifier(spec).first() {
        return Err(format!(
            "Notifier {namespace}/{} is invalid: {first}",
            notifier.name_any()
        ));
    }
    let (secret_address, key) = match &spec.secret_ref {
        None => (None, None),
        Some(reference) => {
            let identity = tenancy::identity(
                &shared.options.policy,
                &namespace,
                spec.service_account_name.as_deref(),
            );
            let client = shared
                .impersonation
                .client(identity.user().as_deref())
                .map_err(|e| format!("acting as {}: {e}", identity.describe()))?;
            let secret = Api::<Secret>::namespaced(client, &namespace)
                .get(&reference.name)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(status) => format!(
                        "reading Secret {namespace}/{} (spec.secretRef) as {}: {}",
                        reference.name,
                        identity.describe(),
                        status.message
                    ),
                    other => format!("reading Secret {namespace}/{}: {other}", reference.name),
                })?;
            let data = secret.data.unwrap_or_default();
            let text = |k: &str| {
                data.get(k)
                    .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
            };
            (text("address"), data.get("token").map(|v| v.0.clone()))
        }
    };
    let address = secret_address
        .or_else(|| spec.address.clone())
        .ok_or_else(|| "no address: set spec.address or the Secret's address key".to_owned())?;
    let host = reqwest::Url::parse(&address)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| u.host_str().map(|h| format!("{}://{h}", u.scheme())))
        .ok_or_else(|| "the address is not an http(s) URL".to_owned())?;
    shared
        .options
        .allowed
        .check(&address)
        .map_err(|why| format!("{host}: {why} (--allowed-notification-hosts)"))?;
    let dashboard = spec.dashboard_url.as_deref();
    let (url, body) = match spec.kind {
        NotifierType::Github | NotifierType::Gitlab => {
            let gitlab = spec.kind == NotifierType::Gitlab;
            // Nothing a commit status tells, or no revision known: nothing to send.
            let (Some(state), Some(sha)) = (commit_status::state(event), revision) else {
                return Ok(());
            };
            let url = commit_status::statuses_url(gitlab, &address, sha).ok_or_else(|| {
                format!(
                    "{host}: spec.address is not a repository's address (https://host/owner/repo)"
                )
            })?;
            let link = message::link(event, dashboard);
            let body = commit_status::body(
                gitlab,
                state,
                event,
                &message::headline(event),
                link.as_deref(),
            );
            (url, body)
        }
        kind => (
            address.clone(),
            message::body(kind, event, dashboard, spec.channel.as_deref()),
        ),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| format!("encoding the message: {e}"))?;
    let mut request = shared
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-weir-delivery", event.uid.as_str());
    match (spec.kind, &key) {
        (NotifierType::Generic, Some(key)) => {
            request = request.header("x-signature", message::signature(key, &bytes));
        }
        (NotifierType::Github, Some(token)) => {
            request = request
                .header("accept", "application/vnd.github+json")
                .bearer_auth(String::from_utf8_lossy(token).trim());
        }
        (NotifierType::Gitlab, Some(token)) => {
            request = request.header(
                "private-token",
                String::from_utf8_lossy(token).trim().to_owned(),
            );
        }
        _ => {}
    }
    let response = request
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("sending to {host}: {}", without_url(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{host} answered {status}"))
    }
}

/// reqwest's error without the URL it carries (a Slack URL is a credential).
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {}s", SEND_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut said = error.to_string();
        if let Some(url) = error.url() {
            said = said.replace(url.as_str(), "<address>");
        }
        said
    }
}

/// The delivered marks and Ready, in one status patch; nothing is written when neither
/// changed (a timestamp changes only on a real transition).
async fn write_status(
    shared: &Shared,
    notifier: &Notifier,
    marks: &[(String, i64)],
    ready: bool,
    reason: &str,
    message: &str,
    now: chrono::DateTime<chrono::Utc>,
) {
    let mut status = notifier.status.clone().unwrap_or_default();
    let before = status.clone();
    status.delivered = marks
        .iter()
        .map(|(uid, at)| crate::api::notification::Delivered {
            event: uid.clone(),
            at: crate::time::to_k8s(chrono::DateTime::from_timestamp(*at, 0).unwrap_or(now)),
        })
        .collect();
    crate::conditions::set(
        &mut status.conditions,
        READY,
        ready,
        reason,
        message,
        &crate::time::to_k8s(now),
        notifier.metadata.generation,
    );
    if status == before {
        return;
    }
    patch_status(shared, notifier, &status, "could not record a delivery").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_event_tells_what_the_whole_one_does() {
        let whole: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web.1", "namespace": "shop", "uid": "u-1",
                         "labels": {"a": "b"}, "annotations": {"c": "d"}},
            "involvedObject": {"kind": "Rollout", "namespace": "shop", "name": "web",
                               "apiVersion": "weir.dev/v1alpha1", "uid": "r-1",
                               "resourceVersion": "7", "fieldPath": "spec"},
            "reason": "RolloutAborted", "message": "aborted at step 2", "type": "Warning",
            "eventTime": "2026-12-06T06:00:00.000000Z",
            "firstTimestamp": "2026-12-06T05:00:00Z",
            "reportingComponent": "weir", "reportingInstance": "weir-0",
            "source": {"component": "weir"}, "action": "Abort",
            "series": {"count": 2, "lastObservedTime": "2026-12-06T06:00:01.000000Z"},
            "related": {"kind": "ReplicaSet", "name": "web-1"}
        }))
        .expect("a valid Event");
        let mut trimmed = whole.clone();
        TrimEvent::trim(&mut trimmed);
        assert!(told(&whole).is_some());
        assert_eq!(told(&trimmed), told(&whole));
        assert_eq!(trimmed.source, None);
        assert_eq!(trimmed.involved_object.uid, None);
    }
}
