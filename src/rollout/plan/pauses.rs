//! Pause steps, the operator's pause, and the controller's own.

use std::time::Duration;

use crate::api::rollout::{PauseCondition, PauseReason};
use crate::duration;
use crate::time::{from_k8s, start_of_wait, to_k8s};

use super::planner::{Planner, Progress};
use super::vocabulary::Reason;

impl<'a> Planner<'a> {
    pub(super) fn pause_step(&mut self, index: usize) -> Progress {
        let now = self.input.now;
        let held = self
            .status
            .pause_conditions
            .iter()
            .find(|c| c.reason == PauseReason::CanaryPauseStep)
            .cloned();
        if !self.status.controller_pause {
            self.status.controller_pause = true;
            // Timed from the start as recorded, as every later reconcile (or a restarted
            // controller) reads it: the step ends at the deadline the status shows.
            let (start_time, started) = start_of_wait(now);
            self.status.pause_conditions.push(PauseCondition {
                reason: PauseReason::CanaryPauseStep,
                start_time,
            });
            let how = match self.pause_duration(index) {
                Some(d) => format!("for {}", duration::format(d)),
                None => "until promoted".into(),
            };
            self.status.message = Some(format!(
                "paused at step {}/{} {how}",
                index + 1,
                self.steps.len()
            ));
            self.transition(
                Reason::Paused,
                format!("paused at step {}/{} {how}", index + 1, self.steps.len()),
            );
            if let Some(d) = self.pause_duration(index) {
                self.wake_at(
                    started + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX),
                );
            }
            return Progress::Wait;
        }
        let Some(held) = held else {
            self.transition(
                Reason::Promoted,
                format!(
                    "promoted past the pause at step {}/{}",
                    index + 1,
                    self.steps.len()
                ),
            );
            return Progress::Advance;
        };
        match self.pause_duration(index) {
            Some(d) => {
                let start = from_k8s(&held.start_time);
                let deadline = start
                    + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
                    + self.lasting_outage_after(start);
                if now >= deadline {
                    Progress::Advance
                } else {
                    self.wake_at(deadline);
                    Progress::Wait
                }
            }
            None => Progress::Wait,
        }
    }

    pub(super) fn pause_duration(&self, index: usize) -> Option<Duration> {
        let value = self.steps[index].pause.as_ref()?.duration.as_ref()?;
        // Validation has checked it parses; a zero pause is as good as none.
        duration::parse_int_or_string(value).ok()
    }

    /// The duration of the timed pause the rollout is at, if any: a canary's pause step, or
    /// blue-green's `autoPromotionSeconds`.
    pub(super) fn pause_duration_now(&self) -> Option<Duration> {
        if let Some(blue_green) = &self.input.spec.strategy.blue_green {
            let seconds = blue_green.auto_promotion_seconds.unwrap_or(0);
            return (blue_green.auto_promotion_enabled && seconds > 0)
                .then(|| Duration::from_secs(seconds.unsigned_abs().into()));
        }
        let index = self.index();
        self.steps.get(index)?;
        self.pause_duration(index)
    }

    pub(super) fn clear_controller_pause(&mut self) {
        self.status.controller_pause = false;
        self.status
            .pause_conditions
            .retain(|c| c.reason == PauseReason::PausedByUser);
    }

    pub(super) fn sync_user_pause(&mut self) {
        let has = self
            .status
            .pause_conditions
            .iter()
            .any(|c| c.reason == PauseReason::PausedByUser);
        if self.input.spec.paused && !has {
            let start_time = to_k8s(self.input.now);
            self.status.pause_conditions.push(PauseCondition {
                reason: PauseReason::PausedByUser,
                start_time,
            });
        } else if !self.input.spec.paused && has {
            self.status
                .pause_conditions
                .retain(|c| c.reason != PauseReason::PausedByUser);
        }
    }
}
