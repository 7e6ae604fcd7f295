//! What a Notifier still owes and what it remembers: the events due (selected, newer than
//! the Notifier, not delivered), the delivered marks kept in its status (bounded), the queue
//! bound and the backoff between attempts. Pure.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::select::Told;

/// Events older than this are never sent: the API server keeps Events for an hour by
/// default, and a message hours late helps nobody.
pub const HORIZON_SECONDS: i64 = 3 * 3600;

/// Delivered marks kept per Notifier, newest last.
pub const MARKS_KEPT: usize = 500;

/// Messages waiting per Notifier: past this the oldest waiting is dropped (and the
/// Notifier's Ready says so), so a dead receiver holds a bounded amount of memory.
pub const QUEUE_BOUND: usize = 256;

/// The events due to a Notifier created at `since`, oldest first: not delivered, not yet
/// queued, and within the horizon.
pub fn due<'a>(
    events: impl IntoIterator<Item = &'a Told>,
    known: &BTreeSet<String>,
    since: i64,
    now: i64,
) -> Vec<&'a Told> {
    let mut due: Vec<&Told> = events
        .into_iter()
        .filter(|e| e.at >= since && e.at >= now - HORIZON_SECONDS && !known.contains(&e.uid))
        .collect();
    due.sort_by(|a, b| (a.at, &a.uid).cmp(&(b.at, &b.uid)));
    due
}

/// The marks after one more delivery: appended, those past the horizon or beyond the bound
/// dropped (oldest first).
pub fn remember(marks: &mut Vec<(String, i64)>, uid: &str, now: i64) {
    if !marks.iter().any(|(u, _)| u == uid) {
        marks.push((uid.to_owned(), now));
    }
    marks.retain(|(_, at)| *at >= now - HORIZON_SECONDS);
    let excess = marks.len().saturating_sub(MARKS_KEPT);
    marks.drain(..excess);
}

/// Queues `item`, dropping the oldest waiting one when full; says what it dropped.
pub fn enqueue<T>(queue: &mut VecDeque<T>, item: T) -> Option<T> {
    let dropped = if queue.len() >= QUEUE_BOUND {
        queue.pop_front()
    } else {
        None
    };
    queue.push_back(item);
    dropped
}

/// The wait before attempt `attempt` (0: the first retry): 1 s doubling to at most a minute.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn told(uid: &str, at: i64) -> Told {
        Told {
            uid: uid.into(),
            kind: "Rollout".into(),
            namespace: "shop".into(),
            name: "web".into(),
            reason: "Paused".into(),
            note: String::new(),
            warning: false,
            at,
        }
    }

    #[test]
    fn due_are_new_unknown_and_recent_oldest_first() {
        let events = [
            told("c", 30_000),
            told("a", 20_000),
            told("old", 1),
            told("before-the-notifier", 9_999),
            told("b", 20_000),
        ];
        let known = BTreeSet::from(["c".to_owned()]);
        let got: Vec<&str> = due(&events, &known, 10_000, 20_100)
            .into_iter()
            .map(|e| e.uid.as_str())
            .collect();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn marks_forget_the_old_and_stay_bounded() {
        let mut marks = vec![("ancient".to_owned(), 0)];
        remember(&mut marks, "x", HORIZON_SECONDS + 10);
        assert_eq!(marks, vec![("x".to_owned(), HORIZON_SECONDS + 10)]);
        remember(&mut marks, "x", HORIZON_SECONDS + 11);
        assert_eq!(marks.len(), 1, "a mark once");
        for n in 0..(MARKS_KEPT + 10) {
            remember(&mut marks, &format!("m{n}"), HORIZON_SECONDS + 20);
        }
        assert_eq!(marks.len(), MARKS_KEPT);
        assert_eq!(
            marks.last().map(|m| m.0.as_str()),
            Some(format!("m{}", MARKS_KEPT + 9).as_str())
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let mut queue: VecDeque<usize> = VecDeque::new();
        for n in 0..QUEUE_BOUND {
            assert_eq!(enqueue(&mut queue, n), None);
        }
        assert_eq!(enqueue(&mut queue, QUEUE_BOUND), Some(0));
        assert_eq!(queue.len(), QUEUE_BOUND);
        assert_eq!(queue.front(), Some(&1));
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }

    proptest! {
        // Whatever is delivered in whatever order, nothing is remembered twice, nothing
        // past the horizon is kept, and the marks never outgrow their bound.
        #[test]
        fn marks_hold_for_any_deliveries(deliveries in proptest::collection::vec((0u16..700, 0i64..40_000), 0..900)) {
            let mut marks = Vec::new();
            let mut now = 0;
            for (uid, step) in deliveries {
                now += step % 50;
                remember(&mut marks, &uid.to_string(), now);
                let uids: BTreeSet<&String> = marks.iter().map(|(u, _)| u).collect();
                prop_assert_eq!(uids.len(), marks.len());
                prop_assert!(marks.len() <= MARKS_KEPT);
                prop_assert!(marks.iter().all(|(_, at)| *at >= now - HORIZON_SECONDS));
            }
        }
    }
}
