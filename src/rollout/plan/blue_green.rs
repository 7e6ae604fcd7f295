//! The blue-green course: the new version comes up beside the active one, reached only by the
//! preview Service; it is analysed, promoted, and the active Service switches to it in one
//! move; analysis of live traffic then either completes the release or switches back.
//!
//! In the shared vocabulary the active Service plays the stable Service's part and the
//! preview Service the canary Service's (`Planner::services`), and the new version is the
//! canary (`status.canaryRS`). Whether the switch has happened is read from the world (the
//! active Service's selector), never remembered, so a crash at any point resumes correctly.

use chrono::Duration;

use crate::api::analysis::AnalysisPhase;
use crate::api::contract::AnalysisKind;
use crate::api::rollout::{BlueGreenStrategy, PauseCondition, PauseReason};
use crate::time::{from_k8s, start_of_wait};

use super::planner::{Planner, Progress};
use super::vocabulary::Reason;

/// The stages before the switch, as `status.currentStepIndex` records them: pre-promotion
/// analysis, the pause, then promoted (full scale and the switch).
const PRE_PROMOTION: i32 = 0;
const PAUSE: i32 = 1;
const PROMOTED: i32 = 2;

impl<'a> Planner<'a> {
    pub(super) fn progress_blue_green(
        &mut self,
        blue_green: &BlueGreenStrategy,
        stable: &str,
        hash: &str,
    ) {
        self.track_attempt(stable, hash);
        if self.status.abort {
            return self.hold_aborted(stable, hash);
        }
        self.sync_user_pause();
        let switched = self.input.observed.stable_service_hash.as_deref() == Some(hash);
        if switched {
            self.after_switch(blue_green, stable, hash);
        } else {
            self.before_switch(blue_green, stable, hash);
        }
        if self.status.abort {
            self.hold_aborted(stable, hash);
        }
    }

    /// Preview, pre-promotion analysis, the pause, full scale, then the switch. The active
    /// Service stays on the stable version, which keeps its full scale throughout.
    fn before_switch(&mut self, blue_green: &BlueGreenStrategy, stable: &str, hash: &str) {
        self.scale(stable, self.replicas);
        self.return_active_service(stable);
        // A post-promotion verdict of this attempt means the switch happened and was lost
        // (a crash before the status recorded the abort): judged again, never switched again.
        if let Some(run) = self.run_for(hash, AnalysisKind::PostPromotion)
            && matches!(run.phase, AnalysisPhase::Failed | AnalysisPhase::Error)
        {
            self.judge(run, stable, hash, "post-promotion");
            return;
        }
        let full = self.status.promote_full;
        let promoted = full || self.stage() >= PROMOTED;
        let preview = match blue_green.preview_replica_count {
            Some(count) if !promoted => count.clamp(0, self.replicas),
            _ => self.replicas,
        };
        self.scale(hash, preview);
        if !self.settled_at(hash, preview) {
            self.track_deadline(true, true);
            if !self.status.abort {
                self.status.message = Some(format!(
                    "preview {hash}: {} of {preview} pods available",
                    self.available(hash)
                ));
            }
            return;
        }
        self.point_canary(hash);
        if self.input.spec.paused {
            self.track_deadline(false, false);
            self.status.message = Some(format!("paused by spec.paused before promoting {hash}"));
            return;
        }
        if !promoted {
            self.track_deadline(false, false);
            // Each gate passed moves the stage on, so a verdict or a promote counts once.
            if self.stage() == PRE_PROMOTION {
                match self.pre_promotion(blue_green, stable, hash) {
                    Progress::Wait => return,
                    Progress::Advance => self.enter_stage(PAUSE),
                }
            }
            match self.pause_before_switch(blue_green, hash) {
                Progress::Wait => return,
                Progress::Advance => self.enter_stage(PROMOTED),
            }
        }
        // Past the gates: the preview grows to full scale, and only a fully available new
        // version takes the active Service.
        self.scale(hash, self.replicas);
        if !self.settled_at(hash, self.replicas) {
            self.track_deadline(true, true);
            if !self.status.abort {
                self.status.message = Some(format!(
                    "promoting {hash}: {} of {} pods available",
                    self.available(hash),
                    self.replicas
                ));
            }
            return;
        }
        self.track_deadline(false, false);
        self.point_stable(hash);
        self.status.message = Some(format!(
            "switching the active Service to {hash}; {stable} stays scaled up"
        ));
    }

    /// Starts or judges the pre-promotion analysis of the preview.
    fn pre_promotion(
        &mut self,
        blue_green: &BlueGreenStrategy,
        stable: &str,
        hash: &str,
    ) -> Progress {
        if blue_green.pre_promotion_analysis.is_none() {
            return Progress::Advance;
        }
        self.analysis_of(AnalysisKind::PrePromotion, "pre-promotion", stable, hash)
    }

    /// The pause before the switch: until promoted with `autoPromotionEnabled: false`, for
    /// `autoPromotionSeconds` otherwise (none when it is absent or 0).
    fn pause_before_switch(&mut self, blue_green: &BlueGreenStrategy, hash: &str) -> Progress {
        let seconds = blue_green.auto_promotion_seconds.unwrap_or(0).max(0);
        if blue_green.auto_promotion_enabled && seconds == 0 {
            return Progress::Advance;
        }
        let timed = blue_green.auto_promotion_enabled.then_some(seconds);
        let how = match timed {
            Some(seconds) => format!("for {seconds}s (autoPromotionSeconds)"),
            None => "until promoted (autoPromotionEnabled is false)".to_owned(),
        };
        let message = format!("{hash} is ready in preview: paused before the switch {how}");
        if !self.status.controller_pause {
            self.status.controller_pause = true;
            let (start_time, _) = start_of_wait(self.input.now);
            self.status.pause_conditions.push(PauseCondition {
                reason: PauseReason::BlueGreenPause,
                start_time,
            });
            self.transition(Reason::Paused, message.clone());
        }
        let Some(held) = self
            .status
            .pause_conditions
            .iter()
            .find(|c| c.reason == PauseReason::BlueGreenPause)
            .cloned()
        else {
            // An operator's promote cleared it.
            self.transition(
                Reason::Promoted,
                format!("promoted {hash}: the active Service switches to it"),
            );
            return Progress::Advance;
        };
        self.status.message = Some(message);
        let Some(seconds) = timed else {
            return Progress::Wait;
        };
        let start = from_k8s(&held.start_time);
        let end = start + Duration::seconds(i64::from(seconds)) + self.lasting_outage_after(start);
        if self.input.now < end {
            self.wake_at(end);
            return Progress::Wait;
        }
        self.transition(
            Reason::Promoted,
            format!("promoted {hash} after autoPromotionSeconds ({seconds}s)"),
        );
        Progress::Advance
    }

    /// Pins the active Service to the stable version. When it selects another version with
    /// pods (a new release began while the last one's post-promotion analysis ran, or a
    /// switch whose status was lost), it moves back only once the stable is fully available:
    /// the active Service never selects a version that cannot carry all the traffic.
    fn return_active_service(&mut self, stable: &str) {
        let elsewhere = self
            .input
            .observed
            .stable_service_hash
            .as_deref()
            .is_some_and(|h| h != stable && self.available(h) > 0);
        if !elsewhere || self.settled_at(stable, self.replicas) {
            self.point_stable(stable);
        }
    }

    /// Where the release stands before the switch, kept in `status.currentStepIndex`.
    fn stage(&self) -> i32 {
        self.status.current_step_index.unwrap_or(0)
    }

    fn enter_stage(&mut self, stage: i32) {
        self.status.current_step_index = Some(stage);
        self.clear_controller_pause();
    }

    /// The active Service selects the new version; the stable keeps its full scale until the
    /// post-promotion analysis passes, so a failure switches back at once.
    fn after_switch(&mut self, blue_green: &BlueGreenStrategy, stable: &str, hash: &str) {
        self.scale(stable, self.replicas);
        self.scale(hash, self.replicas);
        self.point_canary(hash);
        self.track_deadline(false, false);
        let analysed = blue_green.post_promotion_analysis.is_none() || self.status.promote_full;
        if !analysed {
            match self.analysis_of(AnalysisKind::PostPromotion, "post-promotion", stable, hash) {
                Progress::Wait => return,
                Progress::Advance => {}
            }
        }
        self.status.stable_rs = Some(hash.to_owned());
        self.status.stable_revision = self.status.canary_revision.clone();
        self.transition(
            Reason::RolloutCompleted,
            format!(
                "{hash} is active and stable; {stable} scales down after scaleDownDelaySeconds"
            ),
        );
        self.settle_on_stable(hash);
    }
}
