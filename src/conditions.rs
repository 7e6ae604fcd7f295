//! Status conditions, the Kubernetes way: one entry per type, and a transition time that moves
//! only when the condition's status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The longest condition message weir writes, in characters: far below the API server's
/// 32,768-byte limit on a condition's message, so a long text from outside (a remote's
/// answer, a build's errors) never makes a status write fail.
pub const MESSAGE_CHARS: usize = 4_096;

/// `text` cut to at most `max` characters, with an ellipsis where it was cut. Every string
/// weir copies into a status from outside (commit subjects, remote messages, measurement
/// values) goes through this, so a status write never fails on their size.
pub fn bounded_text(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => {
            let keep = text[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(at, _)| at);
            format!("{}…", &text[..keep])
        }
        None => text.to_owned(),
    }
}

/// Sets condition `kind`; returns whether its status changed (or it is new). The message
/// is cut to `MESSAGE_CHARS`.
pub fn set(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
    generation: Option<i64>,
) -> bool {
    let status = if status { "True" } else { "False" };
    let message = &bounded_text(message, MESSAGE_CHARS);
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(condition) => {
            let changed = condition.status != status;
            if changed {
                condition.last_transition_time = now.clone();
            }
            condition.status = status.into();
            condition.reason = reason.into();
            condition.message = message.into();
            condition.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: kind.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now.clone(),
                observed_generation: generation,
            });
            true
        }
    }
}

pub fn remove(conditions: &mut Vec<Condition>, kind: &str) {
    conditions.retain(|c| c.type_ != kind);
}

/// After several steps that may remove a condition and set it again: a condition whose
/// status is what it was in `before` keeps its transition time and its place, so only a
/// real change shows.
pub fn keep_transition_times(before: &[Condition], after: &mut [Condition]) {
    for condition in after.iter_mut() {
        if let Some(old) = before
            .iter()
            .find(|b| b.type_ == condition.type_ && b.status == condition.status)
        {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
    let place = |c: &Condition| {
        before
            .iter()
            .position(|b| b.type_ == c.type_)
            .unwrap_or(usize::MAX)
    };
    after.sort_by_key(place);
}

#[cfg(test)]
mod tests {
    use super::bounded_text;

    #[test]
    fn long_text_is_cut_to_its_bound_with_an_ellipsis() {
        assert_eq!(bounded_text("short", 10), "short");
        assert_eq!(bounded_text("exactly10!", 10), "exactly10!");
        assert_eq!(bounded_text("eleven char", 10), "eleven ch…");
        let cut = bounded_text(&"é".repeat(2_000_000), 256);
        assert_eq!(cut.chars().count(), 256);
        assert!(cut.ends_with('…'));
    }

    use super::*;

    #[test]
    fn a_condition_removed_and_set_again_unchanged_keeps_its_time_and_place() {
        let mut before = Vec::new();
        set(&mut before, "Ready", true, "A", "a", &at(1), None);
        set(
            &mut before,
            "Reconciling",
            true,
            "Retrying",
            "x",
            &at(1),
            None,
        );
        set(&mut before, "Stalled", false, "B", "b", &at(1), None);
        let mut after = before.clone();
        remove(&mut after, "Reconciling");
        set(&mut after, "Stalled", true, "B", "b", &at(5), None);
        set(
            &mut after,
            "Reconciling",
            true,
            "Retrying",
            "y",
            &at(5),
            None,
        );
        set(&mut after, "New", true, "C", "c", &at(5), None);
        keep_transition_times(&before, &mut after);
        let seen: Vec<(&str, i64)> = after
            .iter()
            .map(|c| (c.type_.as_str(), c.last_transition_time.0.as_second()))
            .collect();
        assert_eq!(
            seen,
            vec![("Ready", 1), ("Reconciling", 1), ("Stalled", 5), ("New", 5)],
            "Stalled really changed; Reconciling only came back"
        );
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("valid"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut conditions = Vec::new();
        assert!(set(
            &mut conditions,
            "Ready",
            true,
            "Up",
            "all good",
            &at(1),
            Some(1)
        ));
        assert!(!set(
            &mut conditions,
            "Ready",
            true,
            "StillUp",
            "still good",
            &at(2),
            Some(2)
        ));
        assert_eq!(
            (
                conditions[0].last_transition_time.clone(),
                conditions[0].reason.as_str()
            ),
            (at(1), "StillUp")
        );
        assert!(set(
            &mut conditions,
            "Ready",
            false,
            "Down",
            "broken",
            &at(3),
            Some(2)
        ));
        assert_eq!(
            (
                conditions[0].last_transition_time.clone(),
                conditions[0].status.as_str()
            ),
            (at(3), "False")
        );
        remove(&mut conditions, "Ready");
        assert!(conditions.is_empty());
    }
}
