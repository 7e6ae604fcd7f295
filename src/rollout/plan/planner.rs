//! The planner's state within one plan, what it reads of the world, and how it says things.

use chrono::{DateTime, Utc};

use super::vocabulary::{Action, Input, Object, Reason, ReplicaSetView, Transition};
use crate::api::rollout::{CanaryStep, RolloutStatus};

pub(super) struct Planner<'a> {
    pub(super) input: &'a Input<'a>,
    pub(super) status: RolloutStatus,
    pub(super) actions: Vec<Action>,
    pub(super) transitions: Vec<Transition>,
    pub(super) wake: Option<DateTime<Utc>>,
    pub(super) replicas: i32,
    pub(super) router: bool,
    pub(super) steps: &'a [CanaryStep],
    /// Set when the rollout cannot progress for a reason that is not an abort.
    pub(super) degraded_reason: Option<Reason>,
    /// A ReplicaSet weir needs but cannot rebuild (not of the current template).
    pub(super) missing: Option<String>,
}

/// How messages and Events name a release, true to its strategy.
pub(super) struct Words {
    /// The release of a new version: "canary", or "blue-green release".
    pub(super) release: &'static str,
    /// The version it is measured against: "stable", or "active" (the active Service's).
    pub(super) current: &'static str,
    /// What a new template does to a release under way.
    pub(super) restart: &'static str,
    /// Where a retried release starts again.
    pub(super) start: &'static str,
}

pub(super) enum Progress {
    Advance,
    Wait,
}

impl<'a> Planner<'a> {
    pub(super) fn replica_set(&self, hash: &str) -> Option<&'a ReplicaSetView> {
        self.input
            .observed
            .replica_sets
            .iter()
            .find(|rs| rs.hash == hash)
    }

    pub(super) fn available(&self, hash: &str) -> i32 {
        self.replica_set(hash).map_or(0, |rs| rs.available)
    }

    /// Scaled to exactly `replicas`, all of them available.
    pub(super) fn settled_at(&self, hash: &str, replicas: i32) -> bool {
        self.replica_set(hash)
            .is_some_and(|rs| rs.replicas == replicas && rs.available >= replicas)
    }

    pub(super) fn route(&self) -> i32 {
        self.input.observed.route_weight.unwrap_or(0)
    }

    /// The Service that carries users to the stable version and the one that reaches the
    /// new version: canary's stableService and canaryService, or blue-green's activeService
    /// and previewService (see `Observed`).
    pub(super) fn services(&self) -> (Option<&'a str>, Option<&'a str>) {
        let [stable, canary] = self.input.spec.strategy.services();
        (stable.name, canary.name)
    }

    pub(super) fn words(&self) -> Words {
        if self.input.spec.strategy.blue_green.is_some() {
            Words {
                release: "blue-green release",
                current: "active",
                restart: "the preview, analysis and switch start over",
                start: "the preview",
            }
        } else {
            Words {
                release: "canary",
                current: "stable",
                restart: "the steps restart from 0",
                start: "step 0",
            }
        }
    }

    /// `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds` of the strategy in use.
    pub(super) fn scale_down_delays(&self) -> (i32, i32) {
        let strategy = &self.input.spec.strategy;
        if let Some(blue_green) = strategy.blue_green.as_ref() {
            return (
                blue_green.scale_down_delay_seconds,
                blue_green.abort_scale_down_delay_seconds,
            );
        }
        strategy.canary.as_ref().map_or((30, 30), |c| {
            (c.scale_down_delay_seconds, c.abort_scale_down_delay_seconds)
        })
    }

    pub(super) fn index(&self) -> usize {
        self.status
            .current_step_index
            .unwrap_or(0)
            .clamp(0, self.steps.len() as i32) as usize
    }

    /// Adds `action` as the plan's last word on its object. The last word wins: an abort
    /// raised mid-plan supersedes the scale or weight the step chose before it, which would
    /// otherwise reach the cluster first. A word already said keeps its place in the order.
    pub(super) fn say(&mut self, action: Action) {
        if self.actions.contains(&action) {
            return;
        }
        if let Some(object) = action.object() {
            self.unsay(object);
        }
        self.actions.push(action);
    }

    /// Drops what this plan said about `object` so far: it stays as observed.
    pub(super) fn unsay(&mut self, object: Object) {
        self.actions.retain(|a| a.object() != Some(object));
    }

    pub(super) fn wake_at(&mut self, at: DateTime<Utc>) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    pub(super) fn transition(&mut self, reason: Reason, message: String) {
        self.transitions.push(Transition {
            reason,
            message,
            warning: reason.is_warning(),
        });
    }
}
