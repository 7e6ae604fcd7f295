//! The canary's weight over time, for the weight chart: the points a Rollout's Events give
//! (each step done, each start and abort), merged with the weights the dashboard saw itself
//! while it watched, and the marks (steps, pauses, promotions, aborts) the Events name.
//! Times are Unix seconds.

use std::collections::{BTreeMap, VecDeque};

use crate::api::rollout::CanaryStep;
use crate::rollout::plan::step_weight;

/// One of a Rollout's Events, as far as the chart needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Noted {
    pub at: i64,
    pub reason: String,
    pub message: String,
}

/// The step a `StepCompleted` message says is done, counted from 0: the controller writes
/// `step {i}/{n} done (...)`, counted from 1.
fn step_done(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("step ")?;
    let (number, _) = rest.split_once('/')?;
    number.parse::<usize>().ok()?.checked_sub(1)
}

/// The vertical marks: each step done, pause, promotion and abort, oldest first.
pub fn marks(events: &[Noted]) -> Vec<(i64, String)> {
    let mut marks: Vec<(i64, String)> = events
        .iter()
        .filter_map(|event| {
            let label = match event.reason.as_str() {
                "StepCompleted" => match step_done(&event.message) {
                    Some(index) => format!("step {}", index + 1),
                    None => "step".to_owned(),
                },
                "Paused" => "paused".to_owned(),
                "Promoted" => "promoted".to_owned(),
                "PromotedFull" => "promoted full".to_owned(),
                "Aborted" => "aborted".to_owned(),
                "AnalysisFailed" => "analysis failed".to_owned(),
                "RolloutCompleted" => "completed".to_owned(),
                _ => return None,
            };
            Some((event.at, label))
        })
        .collect();
    marks.sort();
    marks
}

/// The weight's points: one for each Event that sets it (a start or a new template at 0, a
/// step done at the weight its steps give, an abort or a failed analysis back at 0) and each
/// weight the dashboard saw, oldest first; at one time the weight seen wins.
pub fn points(events: &[Noted], steps: &[CanaryStep], seen: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut by_time: BTreeMap<i64, f64> = BTreeMap::new();
    for event in events {
        let weight = match event.reason.as_str() {
            "RolloutStarted" | "TemplateChanged" | "Aborted" | "AnalysisFailed" => 0,
            "StepCompleted" => match step_done(&event.message).filter(|i| *i < steps.len()) {
                Some(index) => step_weight(steps, index),
                None => continue,
            },
            _ => continue,
        };
        by_time.insert(event.at, f64::from(weight));
    }
    for (at, weight) in seen {
        by_time.insert(*at, *weight);
    }
    by_time.into_iter().collect()
}

/// The most points kept per Rollout: a week of a weight changing every ten minutes.
pub const KEPT: usize = 1_000;

/// The weights the dashboard saw, per Rollout: a point only when the weight changes, the
/// oldest dropped past [`KEPT`].
#[derive(Debug, Default)]
pub struct Seen {
    weights: BTreeMap<(String, String), VecDeque<(i64, f64)>>,
}

impl Seen {
    /// Notes the weight of `namespace/name` at `at`; says whether it changed.
    pub fn record(&mut self, namespace: &str, name: &str, at: i64, weight: f64) -> bool {
        let points = self
            .weights
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        if points.back().is_some_and(|(_, last)| *last == weight) {
            return false;
        }
        if points.len() == KEPT {
            points.pop_front();
        }
        points.push_back((at, weight));
        true
    }

    /// A deleted Rollout's points go with it.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.weights
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    pub fn of(&self, namespace: &str, name: &str) -> Vec<(i64, f64)> {
        self.weights
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|points| points.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noted(at: i64, reason: &str, message: &str) -> Noted {
        Noted {
            at,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn steps() -> Vec<CanaryStep> {
        serde_json::from_value(serde_json::json!([
            {"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}
        ]))
        .unwrap_or_default()
    }

    fn story() -> Vec<Noted> {
        vec![
            noted(100, "RolloutStarted", "canary 7f9c started"),
            noted(
                110,
                "StepCompleted",
                "step 1/4 done (setWeight 20%) for 7f9c",
            ),
            noted(111, "Paused", "paused at step 2/4"),
            noted(200, "Promoted", "promoted"),
            noted(
                201,
                "StepCompleted",
                "step 2/4 done (pause (until promoted)) for 7f9c",
            ),
            noted(
                210,
                "StepCompleted",
                "step 3/4 done (setWeight 50%) for 7f9c",
            ),
            noted(260, "AnalysisFailed", "success-rate failed"),
            noted(261, "Aborted", "aborted"),
        ]
    }

    #[test]
    fn events_give_the_weight_each_step_set() {
        assert_eq!(steps().len(), 4);
        assert_eq!(
            points(&story(), &steps(), &[]),
            vec![
                (100, 0.0),
                (110, 20.0),
                (201, 20.0),
                (210, 50.0),
                (260, 0.0),
                (261, 0.0)
            ]
        );
    }

    #[test]
    fn a_weight_seen_wins_at_its_time_and_joins_the_rest() {
        let seen = [(110, 25.0), (230, 50.0)];
        let got = points(&story(), &steps(), &seen);
        assert!(got.contains(&(110, 25.0)));
        assert!(got.contains(&(230, 50.0)));
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn marks_name_steps_pauses_promotions_and_aborts() {
        let labels: Vec<String> = marks(&story()).into_iter().map(|m| m.1).collect();
        assert_eq!(
            labels,
            [
                "step 1",
                "paused",
                "promoted",
                "step 2",
                "step 3",
                "analysis failed",
                "aborted"
            ]
        );
    }

    #[test]
    fn a_message_of_another_shape_is_a_mark_without_a_point() {
        let odd = [
            noted(5, "StepCompleted", "done"),
            noted(6, "StepCompleted", "step 9/4 done"),
        ];
        assert_eq!(points(&odd, &steps(), &[]), vec![]);
        assert_eq!(
            marks(&odd),
            vec![(5, "step".to_owned()), (6, "step 9".to_owned())]
        );
        assert_eq!(step_done("step 0/4 done"), None);
    }

    #[test]
    fn seen_keeps_changes_only_and_at_most_kept() {
        let mut seen = Seen::default();
        assert!(seen.record("shop", "web", 1, 0.0));
        assert!(!seen.record("shop", "web", 2, 0.0));
        assert!(seen.record("shop", "web", 3, 20.0));
        assert_eq!(seen.of("shop", "web"), vec![(1, 0.0), (3, 20.0)]);
        for at in 0..(KEPT as i64 * 2) {
            seen.record("shop", "api", at, (at % 2) as f64);
        }
        let kept = seen.of("shop", "api");
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.last(), Some(&(KEPT as i64 * 2 - 1, 1.0)));
        seen.forget("shop", "api");
        assert!(seen.of("shop", "api").is_empty());
        assert_eq!(seen.of("shop", "web").len(), 2);
    }

    proptest! {
        // Whatever the Events say, the points are in time order, one per time, within 0..=100.
        #[test]
        fn points_are_ordered_and_bounded(
            events in proptest::collection::vec(
                (0i64..50, prop::sample::select(vec!["RolloutStarted", "StepCompleted", "Aborted", "Paused"]), 0usize..8),
                0..20,
            ),
        ) {
            let events: Vec<Noted> = events
                .into_iter()
                .map(|(at, reason, step)| noted(at, reason, &format!("step {step}/4 done")))
                .collect();
            let got = points(&events, &steps(), &[]);
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(got.iter().all(|(_, w)| (0.0..=100.0).contains(w)));
        }
    }
}
