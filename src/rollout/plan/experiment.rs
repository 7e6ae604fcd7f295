//! Experiment steps: the step starts its Experiment, waits for it, and reads its outcome as
//! an analysis' (Failed or Error aborts, Inconclusive pauses); an Experiment the Rollout no
//! longer wants (promoted past, aborted, a newer version) is told to end.

use crate::api::analysis::AnalysisPhase;

use super::analysis::Outcome;
use super::planner::{Planner, Progress};
use super::vocabulary::{Action, ExperimentView};

impl<'a> Planner<'a> {
    fn experiment_for(&self, hash: &str, step: usize) -> Option<&'a ExperimentView> {
        let attempt = self.status.attempt;
        self.input
            .observed
            .experiments
            .iter()
            .find(|e| e.hash == hash && e.attempt == attempt && e.step == step)
    }

    pub(super) fn experiment_step(&mut self, stable: &str, hash: &str, index: usize) -> Progress {
        let what = format!("step {}/{}", index + 1, self.steps.len());
        let Some(experiment) = self.experiment_for(hash, index) else {
            self.actions.push(Action::StartExperiment {
                hash: hash.into(),
                stable: stable.into(),
                attempt: self.status.attempt,
                step: index,
            });
            self.status.message = Some(format!("{what}: starting an experiment for {hash}"));
            return Progress::Wait;
        };
        if !experiment.phase.is_final() {
            let detail = experiment
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            self.status.message = Some(format!(
                "{what}: waiting for experiment {}{detail}",
                experiment.name
            ));
        }
        let outcome = Outcome {
            phase: experiment.phase,
            detail: experiment
                .message
                .clone()
                .unwrap_or_else(|| format!("experiment {}", experiment.name)),
            decided_by: None,
        };
        self.judge_outcome(outcome, stable, hash, &what, "experiment")
    }

    pub(super) fn stop_unwanted_experiments(&mut self) {
        let hash = self.status.canary_rs.clone().unwrap_or_default();
        let in_canary =
            self.status.stable_rs.as_deref() != Some(hash.as_str()) && !self.status.abort;
        let index = self.index();
        let wanted_step = in_canary
            && self
                .steps
                .get(index)
                .is_some_and(|s| s.experiment.is_some());
        let attempt = self.status.attempt;
        for experiment in &self.input.observed.experiments {
            let wanted = wanted_step
                && experiment.hash == hash
                && experiment.attempt == attempt
                && experiment.step == index;
            if !wanted
                && !experiment.terminated
                && matches!(
                    experiment.phase,
                    AnalysisPhase::Pending | AnalysisPhase::Running
                )
            {
                self.actions.push(Action::StopExperiment {
                    name: experiment.name.clone(),
                });
            }
        }
    }
}
