//! The status beyond the steps: replica counts, phase, conditions, selector.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::rollout::RolloutPhase;
use crate::conditions;
use crate::time::to_k8s;

use super::planner::Planner;
use super::vocabulary::{CONDITION_AVAILABLE, CONDITION_PROGRESSING};

impl<'a> Planner<'a> {
    pub(super) fn count_replicas(&mut self) {
        let sets = &self.input.observed.replica_sets;
        self.status.replicas = Some(sets.iter().map(|rs| rs.replicas).sum());
        self.status.available_replicas = Some(sets.iter().map(|rs| rs.available).sum());
        self.status.ready_replicas = self.status.available_replicas;
    }

    pub(super) fn set_phase(&mut self) {
        if let Some(hash) = self.missing.clone() {
            self.status.message = Some(format!(
                "ReplicaSetMissing: the ReplicaSet of version {hash} is gone, and weir builds only the current template; re-apply that version's template to rebuild it"
            ));
        }
        let settled = self.status.canary_rs == self.status.stable_rs;
        let phase = if self.status.abort || self.degraded_reason.is_some() || self.missing.is_some()
        {
            RolloutPhase::Degraded
        } else if settled {
            let stable = self.status.stable_rs.clone().unwrap_or_default();
            let healthy =
                self.settled_at(&stable, self.replicas) && (!self.router || self.route() == 0);
            if healthy {
                RolloutPhase::Healthy
            } else {
                RolloutPhase::Progressing
            }
        } else if self.input.spec.paused || !self.status.pause_conditions.is_empty() {
            RolloutPhase::Paused
        } else {
            RolloutPhase::Progressing
        };
        self.status.phase = Some(phase);
        let message = self.status.message.clone().unwrap_or_default();
        let (progressing, reason) = match phase {
            RolloutPhase::Degraded if self.missing.is_some() => (false, "ReplicaSetMissing"),
            RolloutPhase::Degraded if self.status.abort => (false, "RolloutAborted"),
            RolloutPhase::Degraded => (false, "ProgressDeadlineExceeded"),
            RolloutPhase::Healthy => (true, "RolloutHealthy"),
            RolloutPhase::Paused => (true, "RolloutPaused"),
            RolloutPhase::Progressing => (true, "RolloutProgressing"),
        };
        self.set_condition(CONDITION_PROGRESSING, progressing, reason, &message);
        let stable = self.status.stable_rs.clone().unwrap_or_default();
        let available = self.available(&stable) >= self.replicas;
        let reason = if available {
            "StableAvailable"
        } else {
            "StableUnavailable"
        };
        let text = format!(
            "{} of {} stable pods available",
            self.available(&stable),
            self.replicas
        );
        self.set_condition(CONDITION_AVAILABLE, available, reason, &text);
    }

    pub(super) fn set_condition(
        &mut self,
        kind: &str,
        status: bool,
        reason: &str,
        message: &str,
    ) -> bool {
        let now = to_k8s(self.input.now);
        conditions::set(
            &mut self.status.conditions,
            kind,
            status,
            reason,
            message,
            &now,
            self.input.generation,
        )
    }
}

/// `spec.selector` in label-selector syntax, for the scale subresource.
pub(super) fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    parts.join(",")
}
