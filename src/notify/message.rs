//! What a notification says, in words, and the body each kind of receiver takes: a generic
//! JSON document (signed with HMAC-SHA256 when a key is set), a Slack-compatible message, a
//! Microsoft Teams card. Pure.

use serde_json::{Value, json};

use super::select::Told;
use crate::api::notification::NotifierType;

/// What happened, as a person reads it: "Rollout shop/web failed its analysis".
pub fn headline(event: &Told) -> String {
    let what = match (event.kind.as_str(), event.reason.as_str()) {
        (_, "StepCompleted") => "took a step",
        (_, "Paused") => "paused",
        (_, "Promoted") => "was promoted past its pause",
        (_, "PromotedFull") => "was promoted past every step",
        (_, "Aborted") => "was aborted: traffic is back on the stable version",
        (_, "AnalysisFailed") => "failed its analysis",
        (_, "AnalysisError") => "could not be analysed",
        (_, "ProgressDeadlineExceeded") => "made no progress in time",
        (_, "RolloutStarted") => "started a release",
        (_, "RolloutCompleted") => "is healthy on its new version",
        (_, "Retried") => "started its release again",
        ("Rollout", "RolledBack") => "went back to its stable version",
        ("GitSync", "RolledBack") => "rolled back to the last good revision",
        (_, "Rejected") => "rejected a revision",
        (_, "Pushed") => "pushed a revert to Git",
        (_, "NothingToRevert") => "found Git already agreeing with the cluster",
        (_, "PushRefused") => "could not push its revert: the remote refused it",
        (_, "PushFailed") => "could not push its revert",
        (_, "Applied") => "applied a revision",
        (_, "DriftRepaired") => "put back objects that had drifted from Git",
        (_, "Pinned") => "applied a revision held by hand",
        (_, "ApplyFailed") => "could not apply a revision",
        (_, "RenderFailed") => "could not render a revision",
        (_, "Forbidden") => "was refused applying a revision",
        (_, "FetchFailed") => "could not fetch",
        (_, other) => return format!("{} {}/{}: {other}", event.kind, event.namespace, event.name),
    };
    format!("{} {}/{} {what}", event.kind, event.namespace, event.name)
}

/// The dashboard page of what the event is about, when the Notifier names a dashboard.
pub fn link(event: &Told, dashboard: Option<&str>) -> Option<String> {
    let base = dashboard?.trim_end_matches('/');
    let kind = match event.kind.as_str() {
        "Rollout" => "rollouts",
        "GitSync" => "gitsyncs",
        _ => return None,
    };
    Some(format!("{base}/{kind}/{}/{}", event.namespace, event.name))
}

/// The body for a receiver of `kind` (a commit status' is `commit_status::body`). `uid`
/// names the delivery, so that a receiver can drop a message it was sent twice (delivery
/// is at least once).
pub fn body(
    kind: NotifierType,
    event: &Told,
    dashboard: Option<&str>,
    channel: Option<&str>,
) -> Value {
    let headline = headline(event);
    let link = link(event, dashboard);
    match kind {
        NotifierType::Generic | NotifierType::Github | NotifierType::Gitlab => json!({
            "id": event.uid,
            "involvedObject": {"kind": event.kind, "namespace": event.namespace, "name": event.name},
            "severity": if event.warning { "error" } else { "info" },
            "reason": event.reason,
            "message": event.note,
            "summary": headline,
            "timestamp": chrono::DateTime::from_timestamp(event.at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            "url": link,
            "reportingController": "weir",
        }),
        NotifierType::Slack => {
            let mut text = format!(
                "*{}*\n{}",
                slack_escape(&headline),
                slack_escape(&event.note)
            );
            if let Some(link) = &link {
                text.push_str(&format!("\n<{link}|Open in the dashboard>"));
            }
            let mut message = json!({"text": text});
            if let Some(channel) = channel.filter(|c| !c.is_empty()) {
                message["channel"] = json!(channel);
            }
            message
        }
        NotifierType::Msteams => {
            let mut card = json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "themeColor": if event.warning { "D70000" } else { "0076D7" },
                "summary": headline,
                "title": headline,
                "text": event.note,
            });
            if let Some(link) = link {
                card["potentialAction"] = json!([{"@type": "OpenUri", "name": "Open in the dashboard",
                    "targets": [{"os": "default", "uri": link}]}]);
            }
            card
        }
    }
}

/// Slack reads `<`, `>` and `&` as markup: a tenant's text must stay text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The signature header's value for `body` under `key`: `sha256=<hex HMAC-SHA256>`, as
/// Flux's generic-hmac provider and GitHub's webhooks sign.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(kind: &str, reason: &str, note: &str) -> Told {
        Told {
            uid: "0d5c".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: "web".into(),
            reason: reason.into(),
            note: note.into(),
            warning: true,
            at: 1_800_000_000,
        }
    }

    #[test]
    fn each_reason_is_said_in_words() {
        assert_eq!(
            headline(&told("Rollout", "AnalysisFailed", "")),
            "Rollout shop/web failed its analysis"
        );
        assert_eq!(
            headline(&told("GitSync", "RolledBack", "")),
            "GitSync shop/web rolled back to the last good revision"
        );
        assert_eq!(
            headline(&told("GitSync", "Pushed", "")),
            "GitSync shop/web pushed a revert to Git"
        );
        assert_eq!(
            headline(&told("Rollout", "SomethingNew", "")),
            "Rollout shop/web: SomethingNew"
        );
    }

    #[test]
    fn bodies_carry_the_words_the_link_and_the_delivery_id() {
        let event = told("Rollout", "Aborted", "the canary of 7f9c was aborted: <b>");
        let generic = body(
            NotifierType::Generic,
            &event,
            Some("http://127.0.0.1:3100/"),
            None,
        );
        assert_eq!(generic["id"], "0d5c");
        assert_eq!(generic["reason"], "Aborted");
        assert_eq!(generic["severity"], "error");
        assert_eq!(generic["url"], "http://127.0.0.1:3100/rollouts/shop/web");
        assert_eq!(generic["timestamp"], "2027-01-15T08:00:00+00:00");
        let slack = body(NotifierType::Slack, &event, None, Some("#releases"));
        assert_eq!(slack["channel"], "#releases");
        let text = slack["text"].as_str().unwrap_or_default();
        assert!(text.starts_with("*Rollout shop/web was aborted"), "{text}");
        assert!(
            text.contains("&lt;b&gt;") && !text.contains("<b>"),
            "{text}"
        );
        let teams = body(NotifierType::Msteams, &event, Some("http://d"), None);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(
            teams["potentialAction"][0]["targets"][0]["uri"],
            "http://d/rollouts/shop/web"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
