//! Why a GitSync's fetch or apply failed: the words its status and Events show, and whether
//! trying again soon can help.

/// What kind of failure: how soon to try again, and the reason `Forbidden`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// May pass by itself: an outage, a timeout, a lost connection, a conflict.
    Transient,
    /// The GitSync may not: RBAC refused the identity it acts as, or weir's confinement.
    Forbidden,
    /// Missing or invalid (a Secret, a ref, a kind, an object the API server refuses as
    /// written): waits for someone to fix it.
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    pub message: String,
    pub class: Class,
}

impl SyncError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(message, Class::Transient)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(message, Class::Forbidden)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(message, Class::Invalid)
    }

    /// `message` about a request that failed with `error`: transient when it may pass
    /// (`runtime::error::transient`), else invalid. Only the caller knows whether a 403
    /// refused the GitSync (`forbidden`) or the controller.
    pub fn api(message: impl Into<String>, error: &kube::Error) -> Self {
        match crate::runtime::error::transient(error) {
            true => Self::transient(message),
            false => Self::invalid(message),
        }
    }

    fn new(message: impl Into<String>, class: Class) -> Self {
        SyncError {
            message: message.into(),
            class,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == Class::Transient
    }

    pub fn is_forbidden(&self) -> bool {
        self.class == Class::Forbidden
    }

    /// The same words, as a failure that waits for a fix.
    pub fn into_invalid(self) -> Self {
        SyncError {
            class: Class::Invalid,
            ..self
        }
    }

    /// The same failure in other words (a prefix, a scrub).
    pub fn map(self, words: impl FnOnce(String) -> String) -> Self {
        SyncError {
            message: words(self.message),
            class: self.class,
        }
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

    #[test]
    fn the_api_servers_answer_classes_a_failure_and_the_words_stay() {
        let refused = SyncError::forbidden("applying ConfigMap a: said");
        assert!(refused.is_forbidden() && !refused.is_transient());
        assert_eq!(refused.to_string(), "applying ConfigMap a: said");
        for code in [400, 401, 403, 404, 422] {
            let invalid = SyncError::api("x", &answer(code));
            assert_eq!(invalid.class, Class::Invalid, "{code}");
        }
        for code in [409, 429, 500, 503] {
            assert!(SyncError::api("x", &answer(code)).is_transient(), "{code}");
        }
        let unanswered = kube::Error::Service(Box::new(std::io::Error::other("reset")));
        assert!(SyncError::api("x", &unanswered).is_transient());
        let scrubbed = refused.map(|m| m.replace("said", "***"));
        assert_eq!(
            (scrubbed.message.as_str(), scrubbed.class),
            ("applying ConfigMap a: ***", Class::Forbidden)
        );
    }
}
