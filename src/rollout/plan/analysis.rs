//! Analysis: started for a step or in the background, judged, stopped when unwanted.

use crate::api::analysis::AnalysisPhase;
use crate::api::contract::AnalysisKind;
use crate::api::rollout::{PauseCondition, PauseReason};
use crate::time::to_k8s;

use super::planner::{Planner, Progress};
use super::vocabulary::{Action, AnalysisRunView, Reason};

/// How an analysis or an experiment ended, as a step reads it.
pub(super) struct Outcome {
    pub phase: AnalysisPhase,
    /// Its own explanation, or its name.
    pub detail: String,
    /// The metric that decided it, and that metric's last value.
    pub decided_by: Option<(String, Option<String>)>,
}

impl<'a> Planner<'a> {
    pub(super) fn run_for(&self, hash: &str, kind: AnalysisKind) -> Option<&'a AnalysisRunView> {
        let attempt = self.status.attempt;
        self.input
            .observed
            .analysis_runs
            .iter()
            .find(|r| r.hash == hash && r.attempt == attempt && r.kind == kind)
    }

    pub(super) fn analysis_step(&mut self, stable: &str, hash: &str, index: usize) -> Progress {
        let what = format!("step {}/{}", index + 1, self.steps.len());
        self.analysis_of(AnalysisKind::Step(index), &what, stable, hash)
    }

    /// Starts the analysis of `kind` (a step's, or blue-green's before or after the switch),
    /// or judges its run; `what` names it in messages.
    pub(super) fn analysis_of(
        &mut self,
        kind: AnalysisKind,
        what: &str,
        stable: &str,
        hash: &str,
    ) -> Progress {
        match self.run_for(hash, kind) {
            None => {
                self.actions.push(Action::StartAnalysis {
                    hash: hash.into(),
                    stable: stable.into(),
                    attempt: self.status.attempt,
                    kind,
                });
                self.status.message = Some(format!("{what}: starting analysis of {hash}"));
                Progress::Wait
            }
            Some(run) => {
                if matches!(run.phase, AnalysisPhase::Pending | AnalysisPhase::Running) {
                    self.status.message =
                        Some(format!("{what}: waiting for analysis run {}", run.name));
                }
                self.judge(run, stable, hash, what)
            }
        }
    }

    /// Starts or judges the background analysis; true when it aborted the rollout.
    pub(super) fn background_analysis(&mut self, stable: &str, hash: &str) -> bool {
        let Some(background) = self
            .input
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.analysis.as_ref())
        else {
            return false;
        };
        if self.index() < background.starting_step.unwrap_or(0).max(0) as usize {
            return false;
        }
        match self.run_for(hash, AnalysisKind::Background) {
            None => {
                let attempt = self.status.attempt;
                self.actions.push(Action::StartAnalysis {
                    hash: hash.into(),
                    stable: stable.into(),
                    attempt,
                    kind: AnalysisKind::Background,
                });
            }
            Some(run) if matches!(run.phase, AnalysisPhase::Failed | AnalysisPhase::Error) => {
                self.judge(run, stable, hash, "background analysis");
                return true;
            }
            // Paused for a human, with a pause condition of its own (a pause step may hold
            // one too). Once the pause is recorded the run is marked stopped, so that after
            // a promote the same verdict does not pause the rollout again; marking it only
            // then means a crash can never lose the pause. (A promote landing between the two
            // writes, a reconcile apart, gets a second pause: safe, if redundant.)
            Some(run) if run.phase == AnalysisPhase::Inconclusive => {
                let held = self
                    .status
                    .pause_conditions
                    .iter()
                    .any(|c| c.reason == PauseReason::InconclusiveAnalysisRun);
                if held {
                    if !run.terminated {
                        self.actions.push(Action::StopAnalysis {
                            name: run.name.clone(),
                        });
                    }
                    return true;
                }
                if !run.terminated {
                    let detail = run
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("run {}", run.name));
                    self.status.pause_conditions.push(PauseCondition {
                        reason: PauseReason::InconclusiveAnalysisRun,
                        start_time: to_k8s(self.input.now),
                    });
                    let message = format!(
                        "background analysis was inconclusive ({detail}): paused until promoted or aborted"
                    );
                    self.status.message = Some(message.clone());
                    self.transition(Reason::Paused, message);
                    return true;
                }
            }
            Some(_) => {}
        }
        false
    }

    pub(super) fn judge(
        &mut self,
        run: &AnalysisRunView,
        stable: &str,
        hash: &str,
        what: &str,
    ) -> Progress {
        let detail = run
            .message
            .clone()
            .unwrap_or_else(|| format!("run {}", run.name));
        let outcome = Outcome {
            phase: run.phase,
            detail,
            decided_by: run.decided_by.clone(),
        };
        self.judge_outcome(outcome, stable, hash, what, "analysis")
    }

    /// What an analysis' or an experiment's phase means for the step `what`: wait, move on,
    /// abort (Failed, Error), or pause for a human (Inconclusive). `judged` names what decided
    /// (`analysis`, `experiment`).
    pub(super) fn judge_outcome(
        &mut self,
        outcome: Outcome,
        stable: &str,
        hash: &str,
        what: &str,
        judged: &str,
    ) -> Progress {
        let Outcome {
            phase,
            detail,
            decided_by,
        } = outcome;
        match phase {
            AnalysisPhase::Pending | AnalysisPhase::Running => Progress::Wait,
            AnalysisPhase::Successful => Progress::Advance,
            AnalysisPhase::Failed | AnalysisPhase::Error => {
                let reason = if phase == AnalysisPhase::Failed {
                    Reason::AnalysisFailed
                } else {
                    Reason::AnalysisError
                };
                self.abort(
                    reason,
                    decided_by,
                    format!(
                        "{what} {judged} {} ({detail}): traffic is back on {stable}",
                        reason.as_str()
                    ),
                    hash,
                );
                Progress::Wait
            }
            AnalysisPhase::Inconclusive => {
                let held = self
                    .status
                    .pause_conditions
                    .iter()
                    .any(|c| c.reason == PauseReason::InconclusiveAnalysisRun);
                if !self.status.controller_pause {
                    self.status.controller_pause = true;
                    let start_time = to_k8s(self.input.now);
                    self.status.pause_conditions.push(PauseCondition {
                        reason: PauseReason::InconclusiveAnalysisRun,
                        start_time,
                    });
                    let message = format!(
                        "{what} {judged} was inconclusive ({detail}): paused until promoted or aborted"
                    );
                    self.status.message = Some(message.clone());
                    self.transition(Reason::Paused, message);
                    Progress::Wait
                } else if held {
                    Progress::Wait
                } else {
                    self.transition(
                        Reason::Promoted,
                        format!("promoted past the inconclusive {what} {judged}"),
                    );
                    Progress::Advance
                }
            }
        }
    }

    pub(super) fn stop_unwanted_analysis(&mut self) {
        let hash = self.status.canary_rs.clone().unwrap_or_default();
        let in_canary =
            self.status.stable_rs.as_deref() != Some(hash.as_str()) && !self.status.abort;
        let index = self.index();
        let wanted_step = in_canary && self.steps.get(index).is_some_and(|s| s.analysis.is_some());
        let background_start = self
            .input
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.analysis.as_ref())
            .map(|b| b.starting_step.unwrap_or(0).max(0) as usize);
        let wanted_background = in_canary && background_start.is_some_and(|start| index >= start);
        let switched = self.input.observed.stable_service_hash.as_deref() == Some(hash.as_str());
        let attempt = self.status.attempt;
        for run in &self.input.observed.analysis_runs {
            let wanted = run.hash == hash
                && run.attempt == attempt
                && match run.kind {
                    AnalysisKind::Step(step) => wanted_step && step == index,
                    AnalysisKind::Background => wanted_background,
                    AnalysisKind::PrePromotion => in_canary && !switched,
                    AnalysisKind::PostPromotion => in_canary && switched,
                };
            if !wanted
                && !run.terminated
                && matches!(run.phase, AnalysisPhase::Pending | AnalysisPhase::Running)
            {
                self.actions.push(Action::StopAnalysis {
                    name: run.name.clone(),
                });
            }
        }
    }
}
