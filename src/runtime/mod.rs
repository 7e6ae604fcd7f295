//! What the controller process needs around the reconcilers: leader election, and the HTTP
//! server for health, readiness and metrics.

pub mod cache;
pub mod error;
pub mod http;
pub mod impersonation;
pub mod leader;
pub mod metrics;
pub mod shard;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use kube::{Api, Client};

/// Gives up on a reconcile that has not finished within `limit`, with the error `stalled`
/// makes. kube's client sets no read timeout (watches stay open for minutes), so a request
/// that never gets an answer would otherwise hold its object until some other event: every
/// step is idempotent, so giving up costs a retry, and a stuck object costs a missed abort.
pub async fn within<T, E>(
    limit: Duration,
    reconcile: impl Future<Output = Result<T, E>>,
    stalled: impl FnOnce(Duration) -> E,
) -> Result<T, E> {
    tokio::time::timeout(limit, reconcile)
        .await
        .unwrap_or_else(|_| Err(stalled(limit)))
}

/// Logs what a controller's stream reports as failed; each controller's error_policy has
/// already decided when to try again.
pub async fn log_failure<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::warn!(%error, "reconcile error");
    }
}

/// Hands the pages glibc holds free back to the system. A list from the watch cache arrives
/// in one response (see [`watch`]): its body, and what the trims drop of each object decoded
/// from it, are freed once the store holds the objects, but glibc keeps freed pages that lie below
/// live allocations, so without this an idle controller's RSS kept the list's peak.
/// It walks the heap under the allocator's locks, so it runs on the blocking pool.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trim = || {
            // SAFETY: malloc_trim only returns free pages to the system; it takes the
            // allocator's own locks and touches no memory that is in use.
            unsafe {
                libc::malloc_trim(0);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(trim)),
            Err(_) => trim(),
        }
    }
}

/// Resolves on SIGTERM or SIGINT, as the kube controllers' `shutdown_on_signal` does: for the
/// loops of weir's own that must end with them (else the process outlives its controllers
/// until the kubelet's SIGKILL). Never resolves where the signals cannot be watched.
pub async fn shutdown_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// An Api over one namespace (`--namespace`), or over all of them.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Where the controllers' Events come from: controller `weir`, instance `$POD_NAME` when set.
///
/// kube's `Recorder` keeps every Event it published for six minutes, to count repeats of
/// one into a series. weir's Events hardly ever repeat by its key (the reference carries
/// the object's resourceVersion, new with every status write), so that cache mostly grew
/// (BENCHMARKS.md, "Figures behind limits"). Each Event is published by a Recorder made for
/// it instead.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: kube::runtime::events::Reporter,
}

impl Events {
    pub fn new(client: &Client) -> Self {
        Events {
            client: client.clone(),
            reporter: kube::runtime::events::Reporter {
                controller: "weir".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        }
    }
}

/// The API server refuses an Event whose note is longer than this many bytes
/// (events.k8s.io/v1), and the Event would be lost.
pub const MAX_EVENT_NOTE: usize = 1024;

/// Publishes an Event about `reference`, its note cut to what the API server accepts. An
/// Event that cannot be published is logged, never an error of the reconcile.
pub async fn publish(
    events: &Events,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: String,
    note: Option<&str>,
    action: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: note.map(event_note),
        action: action.into(),
        secondary: None,
    };
    let recorder =
        kube::runtime::events::Recorder::new(events.client.clone(), events.reporter.clone());
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::warn!(%error, "could not publish an Event");
    }
}

/// When an Event (as core/v1 shows it) first happened, in Unix seconds: its eventTime
/// (events.k8s.io), else its first or last timestamp, else when it was created.
pub fn event_time(event: &k8s_openapi::api::core::v1::Event) -> Option<i64> {
    event
        .event_time
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// `text` as an Event note: cut on a character boundary, with an ellipsis, to fit.
fn event_note(text: &str) -> String {
    if text.len() <= MAX_EVENT_NOTE {
        return text.to_owned();
    }
    let ellipsis = "...";
    let mut end = MAX_EVENT_NOTE - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_whatever_the_text() {
        assert_eq!(event_note("short"), "short");
        let exact = "a".repeat(MAX_EVENT_NOTE);
        assert_eq!(event_note(&exact), exact);
        for long in ["b".repeat(5000), "é".repeat(3000), "日本".repeat(700)] {
            let note = event_note(&long);
            assert!(note.len() <= MAX_EVENT_NOTE, "{}", note.len());
            assert!(note.ends_with("...") && long.starts_with(note.trim_end_matches("...")));
        }
    }

    #[tokio::test]
    async fn a_reconcile_that_never_answers_is_given_up_with_the_limit_named() {
        let limit = Duration::from_millis(20);
        let hung = within(
            limit,
            std::future::pending::<Result<u8, String>>(),
            |after| format!("stalled after {after:?}"),
        );
        assert_eq!(hung.await, Err("stalled after 20ms".to_owned()));
        let answered = within(limit, async { Ok::<u8, String>(7) }, |_| "stalled".into());
        assert_eq!(answered.await, Ok(7));
        let failed = within(limit, async { Err::<u8, _>("refused".to_owned()) }, |_| {
            "stalled".into()
        });
        assert_eq!(
            failed.await,
            Err("refused".to_owned()),
            "its own error, untouched"
        );
    }
}
