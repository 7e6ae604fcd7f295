//! The progress deadline, and outages taken off the waits.

use chrono::{DateTime, Utc};

use crate::api::rollout::PauseReason;
use crate::duration;
use crate::time::{Outage, from_k8s, start_of_wait, to_k8s};

use super::planner::Planner;
use super::vocabulary::{OUTAGE_HOLD, Reason};

impl<'a> Planner<'a> {
    /// Starts, continues or clears the progress-deadline clock. `can_abort`: the rollout
    /// aborts when the deadline passes; otherwise it is only reported as Degraded.
    pub(super) fn track_deadline(&mut self, waiting: bool, can_abort: bool) {
        if !waiting {
            self.status.waiting_since = None;
            return;
        }
        let now = self.input.now;
        let (since, recorded) = match &self.status.waiting_since {
            Some(since) => (from_k8s(since), since.clone()),
            None => {
                let (recorded, since) = start_of_wait(now);
                (since, recorded)
            }
        };
        self.status.waiting_since = Some(recorded);
        let deadline = since
            + chrono::Duration::seconds(i64::from(self.input.spec.progress_deadline_seconds))
            + self.lasting_outage_after(since);
        if now < deadline {
            self.wake_at(deadline);
            return;
        }
        if can_abort {
            let hash = self.status.canary_rs.clone().unwrap_or_default();
            let seconds = self.input.spec.progress_deadline_seconds;
            self.abort(
                Reason::ProgressDeadlineExceeded,
                None,
                format!(
                    "{} {hash} made no progress within progressDeadlineSeconds ({seconds}s)",
                    self.words().release
                ),
                &hash,
            );
        } else {
            self.degraded_reason = Some(Reason::ProgressDeadlineExceeded);
        }
    }

    /// Takes each ended outage the status has not yet taken off out of the waits under way:
    /// `waitingSince` and a timed pause's start move later by the part of the outage after
    /// them. Recorded in `outagesExcludedUntil`, so an outage moves them once, also across
    /// controller restarts; an outage that lasts is not recorded (it is still growing), and
    /// [`Self::lasting_outage_after`] holds the timers while it does.
    pub(super) fn exclude_outages(&mut self) {
        let now = self.input.now;
        let mut excluded = self.status.outages_excluded_until.as_ref().map(from_k8s);
        let mut moved = chrono::Duration::zero();
        let timed_pause = self.pause_duration_now().is_some();
        for outage in &self.input.observed.outages {
            let Some(end) = outage.end else { continue };
            // Whole seconds, as the status records them: an end of 61.4 s recorded as 61 s
            // would otherwise be taken off again at every reconcile.
            let (_, end) = start_of_wait(end);
            if excluded.is_some_and(|until| end <= until) {
                continue;
            }
            // Only the part after what an earlier outage (or another replica's record of the
            // same one) already took off.
            let outage = Outage {
                start: excluded.map_or(outage.start, |until| outage.start.max(until)),
                end: Some(end),
            };
            let mut shift = chrono::Duration::zero();
            if let Some(since) = self.status.waiting_since.as_ref().map(from_k8s) {
                let lost = outage.lost_after(since, now);
                if !lost.is_zero() {
                    self.status.waiting_since = Some(to_k8s(since + lost));
                    shift = shift.max(lost);
                }
            }
            for held in &mut self.status.pause_conditions {
                // A pause until promoted has no end to move.
                let pause = matches!(
                    held.reason,
                    PauseReason::CanaryPauseStep | PauseReason::BlueGreenPause
                );
                if !pause || !timed_pause {
                    continue;
                }
                let start = from_k8s(&held.start_time);
                let lost = outage.lost_after(start, now);
                if !lost.is_zero() {
                    held.start_time = to_k8s(start + lost);
                    shift = shift.max(lost);
                }
            }
            // Recorded only when something moved: an outage that touched no wait moves
            // nothing later either, since a wait that begins later begins after it.
            if !shift.is_zero() {
                excluded = Some(excluded.map_or(end, |until| until.max(end)));
                moved += shift;
            }
        }
        if moved.is_zero() {
            return;
        }
        self.status.outages_excluded_until = excluded.map(to_k8s);
        self.transition(
            Reason::OutageExcluded,
            format!(
                "the API server could not be heard for {}: the progress deadline and any timed pause end that much later",
                duration::format(moved.to_std().unwrap_or_default())
            ),
        );
    }

    /// The part after `since` of an outage that lasts, at most `OUTAGE_HOLD`: a timer does
    /// not run while the controller cannot hear the API server, but a watch failing for good
    /// (not an absent API server) must not stop every timer for ever.
    pub(super) fn lasting_outage_after(&self, since: DateTime<Utc>) -> chrono::Duration {
        self.input
            .observed
            .outages
            .iter()
            .filter(|o| o.end.is_none())
            .map(|o| o.lost_after(since, self.input.now))
            .fold(chrono::Duration::zero(), |a, b| a + b)
            .min(chrono::Duration::from_std(OUTAGE_HOLD).unwrap_or_default())
    }
}
