//! `kubectl weir status`: where a rollout stands, for a CI pipeline waiting on it. Pure.

use crate::api::rollout::{Rollout, RolloutPhase};

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Healthy at the spec it has now: the wait is over (exit 0).
    Healthy(String),
    /// Aborted or past its progress deadline: the wait is over (exit 1).
    Degraded(String),
    /// Still going, in words.
    Going(String),
}

pub fn standing(rollout: &Rollout) -> Standing {
    let Some(status) = rollout.status.as_ref() else {
        return Standing::Going("waiting for the controller to pick it up".into());
    };
    let message = status.message.clone().unwrap_or_default();
    if status.observed_generation != rollout.metadata.generation {
        return Standing::Going("waiting for the controller to see the latest spec".into());
    }
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    // Counted from 1, as the controller's messages do.
    let step = (status.current_step_index.unwrap_or(0).max(0) + 1).min(steps as i32);
    let weight = status.canary_weight.unwrap_or(0);
    match status.phase {
        Some(RolloutPhase::Healthy) if !status.abort => Standing::Healthy(format!(
            "Healthy on {}",
            status.stable_rs.as_deref().unwrap_or("-")
        )),
        Some(RolloutPhase::Degraded) => Standing::Degraded(format!("Degraded: {message}")),
        // Asked for, not yet carried out: the controller's Degraded comes next.
        _ if status.abort && status.aborted_at.is_none() => {
            Standing::Going("abort requested; waiting for the controller to carry it out".into())
        }
        _ if status.abort => Standing::Degraded(format!("aborted: {message}")),
        phase => Standing::Going(format!(
            "{}: step {step}/{steps}, canary weight {weight}%{}",
            phase.map_or("Pending".into(), |p| format!("{p:?}")),
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(generation: i64, status: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
            "status": status
        }))
        .expect("a Rollout")
    }

    #[test]
    fn healthy_counts_only_for_the_spec_the_controller_has_seen() {
        let seen = json!({"phase": "Healthy", "observedGeneration": 2, "stableRS": "aaa"});
        assert_eq!(
            standing(&rollout(2, seen.clone())),
            Standing::Healthy("Healthy on aaa".into())
        );
        assert!(matches!(standing(&rollout(3, seen)), Standing::Going(_)));
        assert!(matches!(
            standing(&rollout(2, json!({"phase": "Degraded", "observedGeneration": 2, "abort": true,
                "message": "AnalysisFailed: metric"}))),
            Standing::Degraded(m) if m == "Degraded: AnalysisFailed: metric"
        ));
        assert_eq!(
            standing(&rollout(
                2,
                json!({"phase": "Paused", "observedGeneration": 2,
                "currentStepIndex": 1, "canaryWeight": 20})
            )),
            Standing::Going("Paused: step 2/2, canary weight 20%".into())
        );
    }
}
