//! The bridge between weir's clock (chrono, used by all pure logic) and the timestamps of
//! Kubernetes objects (k8s-openapi's `Time`, which wraps a jiff `Timestamp`).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Converts an object's timestamp. Times outside chrono's range (years beyond ±262,000)
/// cannot come from a real API server; they are clamped rather than failing a reconcile.
pub fn from_k8s(time: &Time) -> DateTime<Utc> {
    let (seconds, nanos) = (time.0.as_second(), time.0.subsec_nanosecond());
    DateTime::from_timestamp(seconds, nanos.max(0) as u32).unwrap_or(if seconds < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// Converts to an object's timestamp, at whole-second precision: the API server stores
/// `metav1.Time` in seconds, so finer times would not read back equal.
pub fn to_k8s(time: DateTime<Utc>) -> Time {
    let clamped = time
        .timestamp()
        .clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    Time(Timestamp::from_second(clamped).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The start of a wait, recorded at the first whole second at or after `time`. The API
/// server keeps whole seconds, and the controller times the wait from what it recorded (so a
/// restart changes nothing); rounding up means that wait is never shorter than asked.
pub fn start_of_wait(time: DateTime<Utc>) -> (Time, DateTime<Utc>) {
    let rounded = if time.timestamp_subsec_nanos() > 0 {
        time + chrono::Duration::seconds(1)
    } else {
        time
    };
    let recorded = to_k8s(rounded);
    let read_back = from_k8s(&recorded);
    (recorded, read_back)
}

/// A span in which the controller could not hear the API server (a required watch failing
/// until it listed again). Timers that wait on the cluster (a progress deadline, a timed
/// pause) do not count it, the way Argo Rollouts does not count paused time: pods cannot
/// become ready, and weir cannot see them do so, while the control plane is away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub start: DateTime<Utc>,
    /// None while it lasts.
    pub end: Option<DateTime<Utc>>,
}

impl Outage {
    /// How much of the outage falls after `since`, up to `now` for one that lasts, in whole
    /// seconds rounded up: what a timer started at `since` must not count. Rounded up
    /// because recorded times are whole seconds, and a wait is never cut short.
    pub fn lost_after(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> chrono::Duration {
        let end = self.end.unwrap_or(now).min(now.max(self.start));
        let from = self.start.max(since);
        if end <= from {
            return chrono::Duration::zero();
        }
        let lost = end - from;
        let whole = lost.num_seconds() + i64::from(lost.subsec_nanos() > 0);
        chrono::Duration::seconds(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_recorded_wait_starts_no_earlier_and_within_a_second(
            seconds in -62_000_000_000i64..250_000_000_000i64,
            nanos in 0u32..1_000_000_000,
        ) {
            let time = DateTime::from_timestamp(seconds, nanos).expect("in range");
            let (recorded, read_back) = start_of_wait(time);
            prop_assert_eq!(from_k8s(&recorded), read_back);
            prop_assert!(read_back >= time);
            prop_assert!(read_back - time < chrono::Duration::seconds(1));
        }

        #[test]
        fn an_outage_loses_only_its_part_after_the_start_of_a_wait(
            start in 0i64..1_000, length in 0i64..1_000, since in 0i64..2_000,
            now in 0i64..3_000, nanos in 0u32..1_000_000_000, lasts in any::<bool>(),
        ) {
            let at = |s: i64| DateTime::from_timestamp(s, 0).expect("in range");
            let outage = Outage {
                start: at(start) + chrono::Duration::nanoseconds(i64::from(nanos)),
                end: (!lasts).then(|| at(start + length)),
            };
            let lost = outage.lost_after(at(since), at(now));
            let end = if lasts { at(now) } else { at(start + length) }.min(at(now));
            let from = outage.start.max(at(since));
            // Never negative, never more than the outage or than the time since the wait
            // began, and never less than the part that overlaps, in whole seconds.
            prop_assert!(lost >= chrono::Duration::zero());
            prop_assert_eq!(lost.subsec_nanos(), 0);
            if end > from {
                prop_assert!(lost >= end - from);
                prop_assert!(lost - (end - from) < chrono::Duration::seconds(1));
            } else {
                prop_assert_eq!(lost, chrono::Duration::zero());
            }
        }

        #[test]
        fn whole_seconds_round_trip(seconds in -62_000_000_000i64..250_000_000_000i64) {
            let time = DateTime::from_timestamp(seconds, 0).expect("in range");
            prop_assert_eq!(from_k8s(&to_k8s(time)), time);
        }

        #[test]
        fn sub_second_parts_are_dropped(seconds in 0i64..4_000_000_000i64, nanos in 0u32..1_000_000_000) {
            let time = DateTime::from_timestamp(seconds, nanos).expect("in range");
            prop_assert_eq!(from_k8s(&to_k8s(time)).timestamp(), seconds);
        }
    }
}
