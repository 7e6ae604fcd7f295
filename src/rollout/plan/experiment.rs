//! Experiment steps: the step starts its Experiment, waits for it, and reads its outcome as
//! an analysis' (Failed or Error aborts, Inconclusive pauses); an Experiment the Rollout no
//! longer wants (promoted past, aborted, a newer version) is told to end.

use crate::api::analysis::AnalysisPhase;

use super::analysis::Outcome;
use super::planner::{Planner, Progress};
use super::vocabulary::{Action, ExperimentView};
use crate::traffic::ExtraWeights;

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

    /// The Services of the current step's experiment and their weights, while the routers
    /// should send them traffic (Argo's rule): the experiment runs (its pods are available),
    /// each Service exists, and the canary is neither aborted nor done.
    fn wanted_experiment_weights(&self, hash: &str) -> ExtraWeights {
        let settled = self.status.stable_rs.as_deref() == Some(hash);
        let index = self.index();
        let step = self.steps.get(index).and_then(|s| s.experiment.as_ref());
        let (Some(step), Some(experiment)) = (step, self.experiment_for(hash, index)) else {
            return ExtraWeights::new();
        };
        if !self.router
            || self.status.abort
            || settled
            || experiment.phase != AnalysisPhase::Running
            || experiment.terminated
        {
            return ExtraWeights::new();
        }
        step.templates
            .iter()
            .filter_map(|t| Some((experiment.services.get(&t.name)?.clone(), t.weight?)))
            .collect()
    }

    /// Gives the current experiment's Services their shares and takes every other's away:
    /// every weight this plan sets carries them, and a plan that sets none sets the canary's
    /// weight as it is when the shares shown differ. The Services are recorded with the plan
    /// that writes them, and kept until the routers show them gone.
    pub(super) fn weigh_experiments(&mut self, hash: &str) {
        let wanted = self.wanted_experiment_weights(hash);
        let shown = &self.input.observed.experiment_weights;
        let recorded: std::collections::BTreeSet<&String> =
            wanted.keys().chain(shown.keys()).collect();
        self.status.experiment_services = recorded.into_iter().cloned().collect();
        let mut said = false;
        for action in &mut self.actions {
            if let Action::SetWeight { experiments, .. } = action {
                experiments.clone_from(&wanted);
                said = true;
            }
        }
        if !said && *shown != wanted {
            let canary_weight = self.route();
            self.actions.push(Action::SetWeight {
                canary_weight,
                experiments: wanted,
            });
        }
    }

    /// Takes every experiment share off the routers (the canary's weight as it is).
    pub(super) fn release_experiment_shares(&mut self) {
        if !self.input.observed.experiment_weights.is_empty() {
            let canary_weight = self.route();
            self.actions.push(Action::SetWeight {
                canary_weight,
                experiments: ExtraWeights::new(),
            });
        }
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
