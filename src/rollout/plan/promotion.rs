//! The end of a canary: promoted to stable, or aborted with traffic back on the stable.

use crate::api::rollout::AbortCause;
use crate::time::{from_k8s, to_k8s};

use super::planner::Planner;
use super::vocabulary::{Action, Object, Reason};

impl<'a> Planner<'a> {
    /// After the last step: weight 100 on a full-scale canary, then the stable Service moves
    /// to it, then weight 0, then the canary is recorded as stable.
    pub(super) fn promote(&mut self, stable: &str, hash: &str) {
        let (stable_service, _) = self.services();
        let stable_moved = stable_service.is_none()
            || self.input.observed.stable_service_hash.as_deref() == Some(hash);
        let steps = self.steps.len();
        let ready = if stable_moved && stable_service.is_some() {
            self.scale(hash, self.replicas);
            // None is not 0: a router that reads no weight (a garbled ALB action, a
            // VirtualService without weights) may still carry the canary's share.
            if self.router && self.input.observed.route_weight != Some(0) {
                self.set_weight(0);
                false
            } else {
                self.settled_at(hash, self.replicas)
            }
        } else {
            let ready = self.converge(stable, hash, steps);
            if ready && stable_service.is_some() {
                self.point_stable(hash);
                false
            } else {
                ready
            }
        };
        self.track_deadline(!ready, true);
        if self.status.abort {
            return;
        }
        if !ready {
            self.status.message = Some(format!(
                "promoting {hash}: {} of {} pods available, canary weight {}",
                self.available(hash),
                self.replicas,
                self.status.canary_weight.unwrap_or(0)
            ));
            return;
        }
        self.status.stable_rs = Some(hash.to_owned());
        self.status.stable_revision = self.status.canary_revision.clone();
        self.transition(
            Reason::RolloutCompleted,
            format!("{hash} is promoted and stable; {stable} scales down"),
        );
        self.settle_on_stable(hash);
    }

    /// Numbers the attempt at `hash`: a new version (or a retry after an abort) starts a new
    /// one, with its steps, pauses and analysis from the start; an operator's abort is
    /// recorded with its time.
    pub(super) fn track_attempt(&mut self, stable: &str, hash: &str) {
        let words = self.words();
        if self.status.canary_rs.as_deref() != Some(hash) {
            let previous = self.status.canary_rs.clone().filter(|c| c != stable);
            let (reason, message) = match previous {
                Some(previous) => (
                    Reason::TemplateChanged,
                    format!(
                        "the template changed during the {} of {previous}: {} for {hash} against {} {stable}",
                        words.release, words.restart, words.current
                    ),
                ),
                None => (
                    Reason::RolloutStarted,
                    format!(
                        "{} {hash} starts against {} {stable}",
                        words.release, words.current
                    ),
                ),
            };
            self.transition(reason, message);
            self.status.canary_rs = Some(hash.to_owned());
            self.status.canary_revision = self.input.revision.map(str::to_owned);
            self.restart_steps();
            self.status.abort = false;
            self.status.aborted_at = None;
            self.status.abort_cause = None;
            self.status.promote_full = false;
            // A new attempt number, never reused: runs left by an earlier canary of the same
            // template (a revert, a re-rollout) must not decide this one.
            self.status.attempt += 1;
        }
        if self.status.abort && self.status.aborted_at.is_none() {
            self.status.aborted_at = Some(to_k8s(self.input.now));
            self.status.abort_cause = Some(AbortCause {
                reason: Reason::Aborted.as_str().to_owned(),
                ..AbortCause::default()
            });
            self.status.message = Some(format!(
                "Aborted: an operator aborted the {} of {hash}; traffic is back on {stable}",
                words.release
            ));
            self.transition(
                Reason::Aborted,
                format!("an operator aborted the {} of {hash}", words.release),
            );
        }
        if !self.status.abort && self.status.aborted_at.is_some() {
            self.status.aborted_at = None;
            self.status.abort_cause = None;
            self.status.attempt += 1;
            self.restart_steps();
            self.transition(
                Reason::Retried,
                format!(
                    "retrying the {} of {hash} from {} (attempt {})",
                    words.release,
                    words.start,
                    self.status.attempt + 1
                ),
            );
        }
    }

    pub(super) fn abort(
        &mut self,
        reason: Reason,
        decided_by: Option<(String, Option<String>)>,
        message: String,
        hash: &str,
    ) {
        self.status.abort = true;
        self.status.aborted_at = Some(to_k8s(self.input.now));
        let (metric, value) = decided_by.unzip();
        self.status.abort_cause = Some(AbortCause {
            reason: reason.as_str().to_owned(),
            metric,
            value: value.flatten(),
        });
        self.status.message = Some(format!("{}: {message}", reason.as_str()));
        let release = self.words().release;
        self.transition(reason, format!("{message} ({release} {hash})"));
        // As Argo Rollouts does (AnalysisRunFailed, then RolloutAborted): the abort is an
        // event of its own, so that whoever listens for aborts hears of every one.
        self.transition(
            Reason::Aborted,
            format!("the {release} of {hash} was aborted: {}", reason.as_str()),
        );
    }

    pub(super) fn hold_aborted(&mut self, stable: &str, hash: &str) {
        // An abort raised mid-plan supersedes traffic moves this plan already chose.
        self.actions
            .retain(|a| !matches!(a, Action::SetWeight { .. } | Action::PointService { .. }));
        self.clear_controller_pause();
        self.status.waiting_since = None;
        self.scale(stable, self.replicas);
        self.point_stable(stable);
        // Blue-green's preview, like a routed canary, carries no user traffic once the
        // active (stable) Service is back: it keeps its pods for the abort delay.
        let delayed = self.router || self.input.spec.strategy.blue_green.is_some();
        if delayed {
            // As at promotion: only a read 0 is all on the stable.
            if self.router && self.input.observed.route_weight != Some(0) {
                self.set_weight(0);
            }
            let aborted_at = self
                .status
                .aborted_at
                .as_ref()
                .map_or(self.input.now, from_k8s);
            let (_, delay) = self.scale_down_delays();
            let at = aborted_at + chrono::Duration::seconds(i64::from(delay.max(0)));
            if self.input.now >= at {
                self.scale(hash, 0);
            } else {
                // Held as it is until then: not scaled up for a step the abort ended.
                self.unsay(Object::ReplicaSet(hash));
                if self.replica_set(hash).is_some_and(|rs| rs.replicas > 0) {
                    self.wake_at(at);
                }
            }
        } else {
            // Its pods are its traffic: they go as fast as the stable's come back, never faster.
            let current = self.replica_set(hash).map_or(0, |rs| rs.replicas);
            let target = (self.replicas - self.available(stable)).clamp(0, current);
            self.scale(hash, target);
            if self.replica_set(hash).is_none_or(|rs| rs.replicas == 0) {
                self.status.canary_weight = Some(0);
            }
        }
    }
}
