//! The Rollout planner: one pure function from (spec, status, what was observed, now) to
//! (next status, actions, when to look again). No I/O and no clock: the reconcile glue
//! observes, calls `plan`, carries out the actions, observes again, and writes the status.
//!
//! Every decision is level-based, taken from what the API server shows, so a controller that
//! restarts at any moment resumes where the world is. The order in which traffic moves is the
//! safety argument, and the rules below keep it:
//!
//! - Weight goes up only when the canary Service points at the canary and its pods are
//!   available for the new weight; weight goes down at once (the stable side has full scale).
//! - A Service is repointed only at pods that can carry the traffic it receives.
//! - Promotion: canary at full scale with weight 100, then the stable Service points at it,
//!   then weight 0 (all traffic through the stable Service, now the new version), then the
//!   new hash is recorded as stable.
//! - Abort: weight 0 in the same plan; the canary keeps its pods for
//!   `abortScaleDownDelaySeconds` (without a router its pods *are* its traffic: 0 at once).
//!
//! Blue-green (`blue_green`) keeps its own rules, in that module: the active Service switches
//! only to a fully available new version, after its gates; the previous version keeps its
//! full scale until the release is complete, so a failure switches straight back.
//!
//! One `Planner` (`planner`), which each child adds to by concern: `canary` (the course
//! through the steps), `blue_green` (the course through preview, switch and analysis), `traffic`, `routes` (managed routes), `scaling`, `ephemeral` (blue-green's
//! `activeMetadata`/`previewMetadata`), `pauses`, `deadline`, `analysis`, `promotion`
//! (and abort), `status`. `vocabulary` and `steps` are the leaves they share.

mod analysis;
mod blue_green;
mod canary;
mod deadline;
mod ephemeral;
mod experiment;
mod pauses;
mod planner;
mod promotion;
mod routes;
mod scaling;
mod status;
mod steps;
mod traffic;
mod vocabulary;

use std::time::Duration;

use crate::api::rollout::RolloutPhase;
use crate::validate;

use planner::Planner;
use status::selector_string;

pub use steps::{canary_pods, describe_step, managed_routes_at, step_weight};
pub use vocabulary::{
    Action, AnalysisRunView, CONDITION_AVAILABLE, CONDITION_INVALID_SPEC, CONDITION_PROGRESSING,
    ExperimentView, Input, OUTAGE_HOLD, Object, Observed, Plan, Reason, ReplicaSetView, Transition,
};

pub fn plan(input: &Input) -> Plan {
    let mut planner = Planner {
        input,
        status: input.status.clone(),
        actions: Vec::new(),
        transitions: Vec::new(),
        wake: None,
        replicas: input.spec.replicas.unwrap_or(1).max(0),
        router: input
            .spec
            .strategy
            .canary
            .as_ref()
            .is_some_and(|c| c.traffic_routing.is_some()),
        steps: input
            .spec
            .strategy
            .canary
            .as_ref()
            .map(|c| c.steps.as_slice())
            .unwrap_or_default(),
        degraded_reason: None,
        missing: None,
    };
    planner.run();
    let requeue_after = planner
        .wake
        .map(|at| (at - input.now).to_std().unwrap_or(Duration::ZERO));
    Plan {
        status: planner.status,
        actions: planner.actions,
        requeue_after,
        transitions: planner.transitions,
    }
}

impl Planner<'_> {
    fn run(&mut self) {
        let input = self.input;
        self.status.observed_generation = input.generation;
        self.status.selector = Some(selector_string(&input.spec.selector));
        self.count_replicas();
        self.exclude_outages();

        let mut violations = validate::rollout(input.spec);
        violations.extend(input.observed.reference_problems.iter().cloned());
        if let Some(first) = violations.first() {
            let more = match violations.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let message =
                format!("InvalidSpec: {first}{more}; nothing is changed until the spec is fixed");
            let newly = self.set_condition(CONDITION_INVALID_SPEC, true, "InvalidSpec", &message);
            if newly {
                self.transition(Reason::InvalidSpec, message.clone());
            }
            self.status.phase = Some(RolloutPhase::Degraded);
            self.status.message = Some(message);
            // The one change: an experiment's shares go back to the stable, since its
            // Services go with its pods whatever the spec says.
            self.release_experiment_shares();
            return;
        }
        self.status
            .conditions
            .retain(|c| c.type_ != CONDITION_INVALID_SPEC);

        let hash = input.template_hash.to_owned();
        let stable = self
            .status
            .stable_rs
            .get_or_insert_with(|| hash.clone())
            .clone();
        if self.router {
            self.status.canary_weight = Some(input.observed.route_weight.unwrap_or(0));
        }
        // The one choice by strategy: each course shares the helpers of the other modules.
        match (hash == stable, input.spec.strategy.blue_green.as_ref()) {
            (true, _) => self.settle_on_stable(&stable),
            (false, Some(blue_green)) => self.progress_blue_green(blue_green, &stable, &hash),
            (false, None) => self.progress_canary(&stable, &hash),
        }
        self.manage_routes(&hash);
        self.weigh_experiments(&hash);
        self.stop_unwanted_analysis();
        self.stop_unwanted_experiments();
        self.retire_old_replica_sets();
        self.place_ephemeral_metadata();
        self.set_phase();
    }
}

#[cfg(test)]
mod tests;
