//! The canary's course: started, carried through its steps, settled on the stable.

use crate::api::rollout::PauseReason;

use super::planner::{Planner, Progress};
use super::steps::{canary_pods, describe_step, step_weight};
use super::vocabulary::Reason;

impl<'a> Planner<'a> {
    pub(super) fn settle_on_stable(&mut self, stable: &str) {
        let previous = self.status.canary_rs.clone();
        if previous.as_deref().is_some_and(|c| c != stable) {
            self.transition(
                Reason::RolledBack,
                format!("the template is the stable one ({stable}) again: traffic returns to it with no steps and no analysis"),
            );
        }
        self.status.canary_rs = Some(stable.to_owned());
        // The first version is stable at the revision that brought it; after a rollback the
        // stable keeps the revision it was promoted at.
        if self.status.stable_revision.is_none() {
            self.status.stable_revision = self.input.revision.map(str::to_owned);
        }
        self.status
            .canary_revision
            .clone_from(&self.status.stable_revision);
        self.status.current_step_index = Some(self.steps.len() as i32);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.abort_cause = None;
        self.status.promote_full = false;
        self.status.controller_pause = false;
        self.status
            .pause_conditions
            .retain(|c| c.reason == PauseReason::PausedByUser);
        self.sync_user_pause();

        self.scale(stable, self.replicas);
        let observed = self.input.observed;
        self.point_stable(stable);
        self.point_canary(stable);
        if self.router && observed.route_weight != Some(0) {
            self.set_weight(0);
        }
        if !self.router {
            self.status.canary_weight = Some(0);
        }
        let settled = self.settled_at(stable, self.replicas) && (!self.router || self.route() == 0);
        self.track_deadline(!settled && !self.input.spec.paused, false);
        self.status.message = Some(if settled {
            format!(
                "{stable} is stable: {} of {} pods available",
                self.available(stable),
                self.replicas
            )
        } else if self.degraded_reason.is_some() {
            format!(
                "ProgressDeadlineExceeded: {} of {} pods of {stable} available after {}s",
                self.available(stable),
                self.replicas,
                self.input.spec.progress_deadline_seconds
            )
        } else {
            format!(
                "waiting for {stable}: {} of {} pods available",
                self.available(stable),
                self.replicas
            )
        });
    }

    pub(super) fn progress_canary(&mut self, stable: &str, hash: &str) {
        self.track_attempt(stable, hash);
        if self.status.abort {
            self.hold_aborted(stable, hash);
            return;
        }
        if self.status.promote_full && self.index() < self.steps.len() {
            self.status.current_step_index = Some(self.steps.len() as i32);
            self.clear_controller_pause();
            self.transition(
                Reason::PromotedFull,
                format!("promoted in full: skipping to the end of the steps for {hash}"),
            );
        }
        self.sync_user_pause();

        // Each pass carries out the current step; a finished step moves on to the next within
        // the same plan, so a rollout never waits a reconcile for nothing.
        for _ in 0..=self.steps.len() + 1 {
            let progress = self.carry_out_step(stable, hash);
            if self.status.abort {
                return self.hold_aborted(stable, hash);
            }
            match progress {
                Progress::Advance => self.advance(hash),
                Progress::Wait => return,
            }
        }
    }

    pub(super) fn carry_out_step(&mut self, stable: &str, hash: &str) -> Progress {
        if self.background_analysis(stable, hash) {
            return Progress::Wait;
        }
        let index = self.index();
        if index >= self.steps.len() {
            self.promote(stable, hash);
            return Progress::Wait;
        }
        let ready = self.converge(stable, hash, index);
        if self.input.spec.paused {
            self.track_deadline(false, false);
            self.status.message = Some(format!(
                "paused by spec.paused at step {}/{} of {hash}",
                index + 1,
                self.steps.len()
            ));
            return Progress::Wait;
        }
        let step = &self.steps[index];
        let routes = step.set_header_route.is_some() || step.set_mirror_route.is_some();
        let acts = step.set_weight.is_some() || step.set_canary_scale.is_some() || routes;
        let ready = ready && (!routes || self.routes_in_place(hash, index));
        // setCanaryScale, setHeaderRoute and setMirrorRoute may come with a pause or an
        // analysis (Argo allows it): they are in place first, then the step pauses or
        // analyses.
        let then = step.pause.is_some() || step.analysis.is_some() || step.experiment.is_some();
        if acts && !(ready && then) {
            self.track_deadline(!ready, true);
            if ready {
                return Progress::Advance;
            }
            if !self.status.abort {
                self.status.message = Some(self.describe_wait(index, hash));
            }
            return Progress::Wait;
        }
        self.track_deadline(false, false);
        if step.pause.is_some() {
            self.pause_step(index)
        } else if step.experiment.is_some() {
            self.experiment_step(stable, hash, index)
        } else {
            self.analysis_step(stable, hash, index)
        }
    }

    pub(super) fn restart_steps(&mut self) {
        self.status.current_step_index = Some(0);
        self.status.waiting_since = None;
        self.clear_controller_pause();
    }

    pub(super) fn advance(&mut self, hash: &str) {
        let index = self.index();
        let step = describe_step(&self.steps[index]);
        self.status.current_step_index = Some(index as i32 + 1);
        self.clear_controller_pause();
        self.status.message = None;
        self.transition(
            Reason::StepCompleted,
            format!(
                "step {}/{} done ({step}) for {hash}",
                index + 1,
                self.steps.len()
            ),
        );
    }

    pub(super) fn describe_wait(&self, index: usize, hash: &str) -> String {
        let step = describe_step(&self.steps[index]);
        let weight = step_weight(self.steps, index);
        let pods = canary_pods(self.steps, index, self.replicas, weight, self.router);
        let route_step = self.steps[index].set_header_route.is_some()
            || self.steps[index].set_mirror_route.is_some();
        let hint = if route_step && !self.canary_serves(hash) {
            "; a managed route waits for the canary Service to select an available canary pod (setCanaryScale gives the canary pods at weight 0)"
        } else {
            ""
        };
        format!(
            "step {}/{} ({step}) for {hash}: {} of {pods} canary pods available, canary weight {}{hint}",
            index + 1,
            self.steps.len(),
            self.available(hash),
            self.status.canary_weight.unwrap_or(0)
        )
    }
}
