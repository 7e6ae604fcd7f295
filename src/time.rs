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
