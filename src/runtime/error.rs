//! What can stop a reconcile, shared by the three controllers: the bounded categories (Event
//! reasons and metric labels), whether trying again soon can help, the one error policy, and
//! the status write they all make. Knows no controller.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::status_patch::{self, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    /// The object changed since it was read; the words are its controller's.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("this replica lost the leader lease; the leader carries on")]
    NotLeader,
    #[error(
        "{work} did not finish within {limit:?}: a request to {waited_on} got no answer; trying again"
    )]
    Stalled {
        work: &'static str,
        waited_on: &'static str,
        limit: Duration,
    },
}

impl Error {
    pub fn api(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::Api {
            action,
            kind,
            name,
            source,
        }
    }

    /// The bounded category: an Event reason and a metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Api { .. } => "ApiError",
            Error::Conflict(_) => "Conflict",
            Error::NotLeader => "NotLeader",
            Error::Stalled { .. } => "Stalled",
        }
    }

    /// Whether trying again soon can help (see [`transient`]).
    pub fn transient(&self) -> bool {
        match self {
            Error::Api { source, .. } => transient(source),
            Error::Conflict(_) | Error::NotLeader | Error::Stalled { .. } => true,
        }
    }
}

/// Whether a failed request may pass by itself: an outage, an overload (5xx, 429), a
/// conflict, a timeout, a lost connection. Not found, forbidden, unauthorized and invalid
/// (400-404, 422) wait for someone to fix something.
pub fn transient(error: &kube::Error) -> bool {
    !matches!(error, kube::Error::Api(status) if matches!(status.code, 400..=404 | 422))
}

/// A controller's own error type, as the shared policy sees it.
pub trait Classified: std::fmt::Display {
    /// The bounded category: an Event reason and a metric label.
    fn category(&self) -> &'static str;
    /// Whether trying again soon can help.
    fn transient(&self) -> bool;
    /// The shared error, when it is one.
    fn core(&self) -> Option<&Error>;
}

impl Classified for Error {
    fn category(&self) -> &'static str {
        Error::category(self)
    }
    fn transient(&self) -> bool {
        Error::transient(self)
    }
    fn core(&self) -> Option<&Error> {
        Some(self)
    }
}

/// How long a controller waits after a failed reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// After a failure that may pass by itself.
    pub transient: Duration,
    /// After one that waits for a fix (RBAC, a missing or invalid object): nothing wakes
    /// the object when it comes, so it is looked at again, but not often.
    pub lasting: Duration,
}

/// When to reconcile again after `error`; None: only on a change. A conflict at once (almost),
/// a lost lease never (the leader carries on), a stall at once (it waited long enough).
pub fn retry_after(error: &impl Classified, backoff: Backoff) -> Option<Duration> {
    match error.core() {
        Some(Error::Conflict(_)) => Some(Duration::from_millis(100)),
        Some(Error::NotLeader) => None,
        Some(Error::Stalled { .. }) => Some(Duration::ZERO),
        _ if error.transient() => Some(backoff.transient),
        _ => Some(backoff.lasting),
    }
}

/// The error policy of every controller: logs the failure and requeues by [`retry_after`].
/// A lost lease requeues as `unled` says (`Leadership::when_unled` for the object's shard):
/// at once again if this replica still holds the shard and only a renewal was late, since
/// the renewal that lands keeps the term and nothing else would bring the object back.
pub fn error_policy(
    kind: &'static str,
    name: &str,
    error: &impl Classified,
    backoff: Backoff,
    unled: Requeue,
) -> Requeue {
    if matches!(error.core(), Some(Error::NotLeader)) {
        return unled;
    }
    let after = retry_after(error, backoff);
    if !matches!(error.core(), Some(Error::Conflict(_))) {
        warn!(kind, name, category = error.category(), transient = error.transient(), %error, "reconcile failed");
    }
    after.map_or_else(Requeue::await_change, Requeue::requeue)
}

/// What the shared parts need to know of one controller's objects.
pub struct Controller {
    pub kind: &'static str,
    pub field_manager: &'static str,
    /// What a conflict says: the object changed while it was reconciled.
    pub conflict: &'static str,
}

impl Controller {
    pub fn conflict(&self) -> Error {
        Error::Conflict(self.conflict)
    }

    /// Writes `status` over `original` on `current` (`status_patch`); None when nothing was
    /// written.
    pub async fn write_status<K, S>(
        &self,
        api: &Api<K>,
        current: &K,
        has_status: bool,
        original: &S,
        status: &S,
    ) -> Result<Option<K>, Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        S: Serialize + PartialEq,
    {
        status_patch::write(
            api,
            current,
            has_status,
            original,
            status,
            self.field_manager,
        )
        .await
        .map_err(|error| match error {
            WriteError::Conflict => self.conflict(),
            WriteError::Api(source) => Error::Api {
                action: "writing the status of",
                kind: self.kind,
                name: current.name_any(),
                source,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("said", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    fn api(code: u16) -> Error {
        Error::api("reading", "Rollout", "web")(answer(code))
    }

    const BACKOFF: Backoff = Backoff {
        transient: Duration::from_secs(5),
        lasting: Duration::from_secs(60),
    };

    #[test]
    fn refusals_and_invalid_requests_wait_for_a_fix_and_outages_pass() {
        for code in [400, 401, 403, 404, 422] {
            assert!(!transient(&answer(code)), "{code}");
            assert!(!api(code).transient(), "{code}");
        }
        for code in [409, 410, 429, 500, 502, 503, 504] {
            assert!(transient(&answer(code)), "{code}");
        }
        let unanswered = kube::Error::Service(Box::new(std::io::Error::other("reset")));
        assert!(transient(&unanswered));
    }

    #[test]
    fn the_policy_retries_each_kind_by_its_own_rule() {
        let conflict = Error::Conflict("the Rollout changed while it was reconciled");
        assert_eq!(
            retry_after(&conflict, BACKOFF),
            Some(Duration::from_millis(100))
        );
        assert_eq!(retry_after(&Error::NotLeader, BACKOFF), None);
        // A lost lease goes as the object's shard says: again soon while this replica
        // still holds it, else on a change.
        let soon = Requeue::requeue(Duration::from_secs(1));
        assert_eq!(
            error_policy("Rollout", "web", &Error::NotLeader, BACKOFF, soon.clone()),
            soon
        );
        assert_eq!(
            error_policy("Rollout", "web", &conflict, BACKOFF, soon),
            Requeue::requeue(Duration::from_millis(100))
        );
        let stalled = Error::Stalled {
            work: "the reconcile",
            waited_on: "the API server",
            limit: Duration::from_secs(60),
        };
        assert_eq!(retry_after(&stalled, BACKOFF), Some(Duration::ZERO));
        assert_eq!(retry_after(&api(503), BACKOFF), Some(BACKOFF.transient));
        assert_eq!(
            retry_after(&api(403), BACKOFF),
            Some(BACKOFF.lasting),
            "a 403 is not retried like a 503"
        );
    }

    #[test]
    fn categories_and_words_stay_as_dashboards_and_tests_read_them() {
        assert_eq!(api(500).category(), "ApiError");
        assert_eq!(Error::Conflict("x").category(), "Conflict");
        assert_eq!(Error::NotLeader.category(), "NotLeader");
        let stalled = Error::Stalled {
            work: "measuring",
            waited_on: "the API server",
            limit: Duration::from_secs(20),
        };
        assert_eq!(stalled.category(), "Stalled");
        assert_eq!(
            stalled.to_string(),
            "measuring did not finish within 20s: a request to the API server got no answer; trying again"
        );
        assert!(
            api(403).to_string().starts_with("reading Rollout web: "),
            "{}",
            api(403)
        );
    }
}
