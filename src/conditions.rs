//! Status conditions, the Kubernetes way: one entry per type, and a transition time that moves
//! only when the condition's status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `kind`; returns whether its status changed (or it is new).
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

#[cfg(test)]
mod tests {
    use super::*;

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
