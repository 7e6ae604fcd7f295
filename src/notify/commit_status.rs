//! A commit status on the Git host for the revision an event is about: GitHub's
//! `POST /repos/{owner}/{repo}/statuses/{sha}` and GitLab's
//! `POST /projects/{id}/statuses/{sha}`, as Flux's notification-controller sets them. Pure:
//! which revision, which state, which URL and body.

use serde_json::{Value, json};

use super::select::Told;

/// A commit status' state, in GitHub's words (GitLab's differ for failure only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Success,
    Failure,
}

/// What an event says of its revision; None: nothing a commit status tells.
pub fn state(event: &Told) -> Option<State> {
    match (event.kind.as_str(), event.reason.as_str()) {
        (
            "Rollout",
            "RolloutStarted" | "StepCompleted" | "Paused" | "Promoted" | "PromotedFull" | "Retried",
        ) => Some(State::Pending),
        ("Rollout", "RolloutCompleted") => Some(State::Success),
        (
            "Rollout",
            "AnalysisFailed" | "AnalysisError" | "Aborted" | "ProgressDeadlineExceeded",
        ) => Some(State::Failure),
        ("GitSync", "Applied") => Some(State::Pending),
        ("GitSync", "Rejected" | "ApplyFailed" | "RenderFailed" | "Forbidden") => {
            Some(State::Failure)
        }
        _ => None,
    }
}

/// The full commit SHA the event is about: the first revision `known` (full SHAs the object's
/// status names, most relevant first) that a hex word of the event's note begins, else for a
/// Rollout's event the first of `known` (its canary's revision).
pub fn revision(event: &Told, known: &[String]) -> Option<String> {
    let words = event
        .note
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= 7);
    for word in words {
        let word = word.to_ascii_lowercase();
        if let Some(full) = known.iter().find(|k| k.starts_with(&word)) {
            return Some(full.clone());
        }
    }
    (event.kind == "Rollout")
        .then(|| known.first().cloned())
        .flatten()
}

/// The host's API for a repository's web address, as Flux reads it: `https://github.com/o/r`
/// is `https://api.github.com/repos/o/r`; another host is GitHub Enterprise
/// (`https://host/api/v3/repos/o/r`); for GitLab, `https://host/api/v4/projects/o%2Fr`.
pub fn statuses_url(gitlab: bool, repository: &str, sha: &str) -> Option<String> {
    let url = reqwest::Url::parse(repository.trim_end_matches('/')).ok()?;
    let origin = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str()?,
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let path = url.path().trim_matches('/').trim_end_matches(".git");
    if path.split('/').filter(|s| !s.is_empty()).count() < 2 {
        return None;
    }
    Some(if gitlab {
        let id: String =
            percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        format!("{origin}/api/v4/projects/{id}/statuses/{sha}")
    } else if url.host_str() == Some("github.com") {
        format!("https://api.github.com/repos/{path}/statuses/{sha}")
    } else {
        format!("{origin}/api/v3/repos/{path}/statuses/{sha}")
    })
}

/// The status' body: its state, what set it (`weir/<kind>/<namespace>/<name>`, one status per
/// object), a description within GitHub's 140 characters, and the dashboard link.
pub fn body(gitlab: bool, state: State, event: &Told, headline: &str, link: Option<&str>) -> Value {
    let context = format!(
        "weir/{}/{}/{}",
        event.kind.to_ascii_lowercase(),
        event.namespace,
        event.name
    );
    let description: String = headline.chars().take(140).collect();
    if gitlab {
        let state = match state {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failed",
        };
        json!({"state": state, "name": context, "description": description, "target_url": link})
    } else {
        let state = match state {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
        };
        json!({"state": state, "context": context, "description": description, "target_url": link})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "10ff95d30d63a1b2c3d4e5f60718293a4b5c6d7e";
    const GOOD: &str = "f937ca5a34c6a1b2c3d4e5f60718293a4b5c6d7e";

    fn told(kind: &str, reason: &str, note: &str) -> Told {
        Told {
            uid: "u".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: "web".into(),
            reason: reason.into(),
            note: note.into(),
            warning: false,
            at: 0,
        }
    }

    #[test]
    fn the_revision_is_the_one_the_note_names_else_the_canarys() {
        let known = [GOOD.to_owned(), SHA.to_owned()];
        let rejected = told(
            "GitSync",
            "Rejected",
            "revision 10ff95d30d63 rejected: Rollout shop/web: AnalysisFailed",
        );
        assert_eq!(revision(&rejected, &known).as_deref(), Some(SHA));
        let failed = told(
            "Rollout",
            "AnalysisFailed",
            "step 2/3 analysis failed for 5c8c654d5c",
        );
        assert_eq!(revision(&failed, &[SHA.to_owned()]).as_deref(), Some(SHA));
        let unknown = told("GitSync", "Applied", "applied revision 0123456789ab");
        assert_eq!(revision(&unknown, &known), None);
    }

    #[test]
    fn each_host_has_its_statuses_address() {
        assert_eq!(
            statuses_url(false, "https://github.com/acme/shop", SHA).as_deref(),
            Some(format!("https://api.github.com/repos/acme/shop/statuses/{SHA}").as_str())
        );
        assert_eq!(
            statuses_url(false, "http://127.0.0.1:8080/acme/shop.git", SHA).as_deref(),
            Some(format!("http://127.0.0.1:8080/api/v3/repos/acme/shop/statuses/{SHA}").as_str())
        );
        assert_eq!(
            statuses_url(true, "https://gitlab.example/group/sub/shop", SHA).as_deref(),
            Some(
                format!("https://gitlab.example/api/v4/projects/group%2Fsub%2Fshop/statuses/{SHA}")
                    .as_str()
            )
        );
        assert_eq!(statuses_url(false, "https://github.com/acme", SHA), None);
        assert_eq!(statuses_url(false, "not a url", SHA), None);
    }

    #[test]
    fn states_and_bodies_follow_each_host() {
        let failed = told("GitSync", "Rejected", "");
        assert_eq!(state(&failed), Some(State::Failure));
        assert_eq!(
            state(&told("Rollout", "RolloutCompleted", "")),
            Some(State::Success)
        );
        assert_eq!(state(&told("GitSync", "Pushed", "")), None);
        let long = "x".repeat(300);
        let github = body(false, State::Failure, &failed, &long, Some("http://d/x"));
        assert_eq!(github["state"], "failure");
        assert_eq!(github["context"], "weir/gitsync/shop/web");
        assert_eq!(github["description"].as_str().map(str::len), Some(140));
        let gitlab = body(true, State::Failure, &failed, "h", None);
        assert_eq!(gitlab["state"], "failed");
        assert_eq!(gitlab["name"], "weir/gitsync/shop/web");
    }
}
