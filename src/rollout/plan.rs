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

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::analysis::AnalysisPhase;
use crate::api::rollout::{
    AbortCause, CanaryStep, PauseCondition, PauseReason, RolloutPhase, RolloutSpec, RolloutStatus,
};
use crate::time::{Outage, from_k8s, start_of_wait, to_k8s};
use crate::{conditions, duration, validate};

/// A ReplicaSet the Rollout owns, as the API server shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSetView {
    pub hash: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`: ready for at least `minReadySeconds`.
    pub available: i32,
    /// When weir decided to scale it down (annotation `weir.dev/scale-down-at`).
    pub scale_down_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
}

/// An AnalysisRun the Rollout owns.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRunView {
    pub name: String,
    /// The canary hash it measured.
    pub hash: String,
    /// The rollout attempt it belongs to (`status.attempt` when it started).
    pub attempt: i32,
    /// The analysis step it gates; None for the background analysis.
    pub step: Option<usize>,
    pub phase: AnalysisPhase,
    /// The run's own explanation (deciding metric and value).
    pub message: Option<String>,
    /// The metric that gave the run its phase, and that metric's last value.
    pub decided_by: Option<(String, Option<String>)>,
    /// `spec.terminate` is set: it was told to stop and needs no second telling.
    pub terminated: bool,
}

/// Everything the planner needs to know about the world, read from the API server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub replica_sets: Vec<ReplicaSetView>,
    /// The hash the stable Service selects now (None: no hash in its selector yet).
    pub stable_service_hash: Option<String>,
    pub canary_service_hash: Option<String>,
    /// The canary's weight as read back from the router; None without a router or before
    /// weir has set one.
    pub route_weight: Option<i32>,
    pub analysis_runs: Vec<AnalysisRunView>,
    /// What is wrong with what the Rollout refers to: its analysis templates (invalid CEL,
    /// an argument nobody gives), a route in another namespace without a ReferenceGrant.
    /// Reported as InvalidSpec, and nothing is changed, until fixed.
    pub reference_problems: Vec<validate::Violation>,
    /// When the controller could not hear the API server, oldest first: the ended ones it
    /// remembers and one that lasts, if any. Their time does not count towards a progress
    /// deadline or a timed pause.
    pub outages: Vec<Outage>,
}

pub struct Input<'a> {
    pub spec: &'a RolloutSpec,
    pub generation: Option<i64>,
    pub status: &'a RolloutStatus,
    /// The hash of `spec.template` (`template_hash::of`).
    pub template_hash: &'a str,
    /// The Git revision the spec was applied from (`weir.dev/git-revision`), when a GitSync
    /// applied it.
    pub revision: Option<&'a str>,
    pub observed: &'a Observed,
    pub now: DateTime<Utc>,
}

/// Something to change in the world. Each is idempotent: carrying it out twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create `<rollout>-<hash>` from the current template with this many replicas.
    CreateReplicaSet {
        hash: String,
        replicas: i32,
    },
    /// Set the replica count, and drop any scale-down mark.
    ScaleReplicaSet {
        hash: String,
        replicas: i32,
    },
    /// Record when a ReplicaSet no traffic reaches should scale down.
    MarkScaleDown {
        hash: String,
        at: DateTime<Utc>,
    },
    DeleteReplicaSet {
        hash: String,
    },
    /// Pin a Service's selector to a hash.
    PointService {
        service: String,
        hash: String,
    },
    /// Set the canary's share of traffic on the router (the stable gets the rest).
    SetWeight {
        canary_weight: i32,
    },
    /// Start analysis for the canary: an analysis step, or the background analysis (None).
    StartAnalysis {
        hash: String,
        /// The stable hash, for the `stable-hash` argument.
        stable: String,
        attempt: i32,
        step: Option<usize>,
    },
    StopAnalysis {
        name: String,
    },
}

/// What an action changes. A plan says one thing about each: the glue carries its actions out
/// in order, so a second word about one object would make it flap in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Object<'a> {
    ReplicaSet(&'a str),
    Service(&'a str),
    Route,
}

impl Action {
    /// The object this action changes; None for analysis, which is not traffic or pods.
    pub fn object(&self) -> Option<Object<'_>> {
        match self {
            Action::CreateReplicaSet { hash, .. }
            | Action::ScaleReplicaSet { hash, .. }
            | Action::MarkScaleDown { hash, .. }
            | Action::DeleteReplicaSet { hash } => Some(Object::ReplicaSet(hash)),
            Action::PointService { service, .. } => Some(Object::Service(service)),
            Action::SetWeight { .. } => Some(Object::Route),
            Action::StartAnalysis { .. } | Action::StopAnalysis { .. } => None,
        }
    }
}

/// Why something happened, a bounded set reused as Event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidSpec,
    RolloutStarted,
    TemplateChanged,
    StepCompleted,
    Paused,
    Promoted,
    PromotedFull,
    Aborted,
    AnalysisFailed,
    AnalysisError,
    ProgressDeadlineExceeded,
    Retried,
    RolloutCompleted,
    RolledBack,
    OutageExcluded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::RolloutStarted => "RolloutStarted",
            Reason::TemplateChanged => "TemplateChanged",
            Reason::StepCompleted => "StepCompleted",
            Reason::Paused => "Paused",
            Reason::Promoted => "Promoted",
            Reason::PromotedFull => "PromotedFull",
            Reason::Aborted => "Aborted",
            Reason::AnalysisFailed => "AnalysisFailed",
            Reason::AnalysisError => "AnalysisError",
            Reason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            Reason::Retried => "Retried",
            Reason::RolloutCompleted => "RolloutCompleted",
            Reason::RolledBack => "RolledBack",
            Reason::OutageExcluded => "OutageExcluded",
        }
    }

    fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::InvalidSpec
                | Reason::Aborted
                | Reason::AnalysisFailed
                | Reason::AnalysisError
                | Reason::ProgressDeadlineExceeded
        )
    }
}

/// A transition worth telling people about (a Kubernetes Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub reason: Reason,
    pub message: String,
    pub warning: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    /// Look again after this long even if nothing changes (a pause or a delay ends then).
    pub requeue_after: Option<Duration>,
    pub transitions: Vec<Transition>,
}

/// The longest a lasting outage holds the timers: past it, they run again (an outage that
/// ends is still taken off whole).
pub const OUTAGE_HOLD: Duration = Duration::from_secs(15 * 60);

pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_AVAILABLE: &str = "Available";
pub const CONDITION_INVALID_SPEC: &str = "InvalidSpec";

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

/// The weight a step index asks for: the last `setWeight` at or before it; 100 once all
/// steps are done (promotion).
pub fn step_weight(steps: &[CanaryStep], index: usize) -> i32 {
    if index >= steps.len() {
        return 100;
    }
    steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
}

/// Pods the canary needs for `weight` at step `index`: `setCanaryScale` (the last at or before
/// the index) overrides, else `ceil(replicas * weight / 100)`.
pub fn canary_pods(
    steps: &[CanaryStep],
    index: usize,
    replicas: i32,
    weight: i32,
    router: bool,
) -> i32 {
    let by_weight =
        |w: i32| ((i64::from(replicas.max(0)) * i64::from(w.clamp(0, 100)) + 99) / 100) as i32;
    if !router || index >= steps.len() {
        return by_weight(weight);
    }
    let scale = steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_canary_scale.as_ref());
    match scale {
        Some(s) if s.match_traffic_weight != Some(true) => match (s.replicas, s.weight) {
            (Some(r), _) => r.max(0),
            (None, Some(w)) => by_weight(w),
            (None, None) => by_weight(weight),
        },
        _ => by_weight(weight),
    }
}

struct Planner<'a> {
    input: &'a Input<'a>,
    status: RolloutStatus,
    actions: Vec<Action>,
    transitions: Vec<Transition>,
    wake: Option<DateTime<Utc>>,
    replicas: i32,
    router: bool,
    steps: &'a [CanaryStep],
    /// Set when the rollout cannot progress for a reason that is not an abort.
    degraded_reason: Option<Reason>,
    /// A ReplicaSet weir needs but cannot rebuild (not of the current template).
    missing: Option<String>,
}

enum Progress {
    Advance,
    Wait,
}

impl<'a> Planner<'a> {
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
        if hash == stable {
            self.settle_on_stable(&stable);
        } else {
            self.progress_canary(&stable, &hash);
        }
        self.stop_unwanted_analysis();
        self.retire_old_replica_sets();
        self.set_phase();
    }

    fn count_replicas(&mut self) {
        let sets = &self.input.observed.replica_sets;
        self.status.replicas = Some(sets.iter().map(|rs| rs.replicas).sum());
        self.status.available_replicas = Some(sets.iter().map(|rs| rs.available).sum());
        self.status.ready_replicas = self.status.available_replicas;
    }

    // --- the world -------------------------------------------------------------------------

    fn replica_set(&self, hash: &str) -> Option<&'a ReplicaSetView> {
        self.input
            .observed
            .replica_sets
            .iter()
            .find(|rs| rs.hash == hash)
    }

    fn available(&self, hash: &str) -> i32 {
        self.replica_set(hash).map_or(0, |rs| rs.available)
    }

    /// Scaled to exactly `replicas`, all of them available.
    fn settled_at(&self, hash: &str, replicas: i32) -> bool {
        self.replica_set(hash)
            .is_some_and(|rs| rs.replicas == replicas && rs.available >= replicas)
    }

    fn route(&self) -> i32 {
        self.input.observed.route_weight.unwrap_or(0)
    }

    fn services(&self) -> (Option<&'a str>, Option<&'a str>) {
        let canary = self.input.spec.strategy.canary.as_ref();
        (
            canary.and_then(|c| c.stable_service.as_deref()),
            canary.and_then(|c| c.canary_service.as_deref()),
        )
    }

    /// Adds `action` as the plan's last word on its object. The last word wins: an abort
    /// raised mid-plan supersedes the scale or weight the step chose before it, which would
    /// otherwise reach the cluster first. A word already said keeps its place in the order.
    fn say(&mut self, action: Action) {
        if self.actions.contains(&action) {
            return;
        }
        if let Some(object) = action.object() {
            self.unsay(object);
        }
        self.actions.push(action);
    }

    /// Drops what this plan said about `object` so far: it stays as observed.
    fn unsay(&mut self, object: Object) {
        self.actions.retain(|a| a.object() != Some(object));
    }

    fn scale(&mut self, hash: &str, replicas: i32) {
        let action = match self.replica_set(hash) {
            // Only the current template can be built: a missing ReplicaSet of another version
            // (someone deleted the stable) is reported, never rebuilt from the wrong template.
            None if hash != self.input.template_hash => {
                self.missing = Some(hash.to_owned());
                return self.unsay(Object::ReplicaSet(hash));
            }
            None => Action::CreateReplicaSet {
                hash: hash.into(),
                replicas,
            },
            Some(rs) if rs.replicas != replicas || rs.scale_down_at.is_some() => {
                Action::ScaleReplicaSet {
                    hash: hash.into(),
                    replicas,
                }
            }
            Some(_) => return self.unsay(Object::ReplicaSet(hash)),
        };
        self.say(action);
    }

    /// Pins the stable Service (when there is one) to `hash`, unless it already is.
    fn point_stable(&mut self, hash: &str) {
        let (service, _) = self.services();
        self.point(
            service,
            self.input.observed.stable_service_hash.as_deref(),
            hash,
        );
    }

    /// Pins the stable Service to `stable` during a canary. When it selects another version
    /// that has pods to serve (a promotion whose status was lost in a crash) and the stable
    /// has none available yet, it stays there until the stable's pods are back.
    fn return_stable_service(&mut self, stable: &str) {
        let elsewhere = self
            .input
            .observed
            .stable_service_hash
            .as_deref()
            .is_some_and(|h| h != stable && self.available(h) > 0);
        if self.available(stable) > 0 || !elsewhere {
            self.point_stable(stable);
        }
    }

    /// Pins the canary Service (when there is one) to `hash`, unless it already is.
    fn point_canary(&mut self, hash: &str) {
        let (_, service) = self.services();
        self.point(
            service,
            self.input.observed.canary_service_hash.as_deref(),
            hash,
        );
    }

    fn point(&mut self, service: Option<&str>, observed: Option<&str>, hash: &str) {
        let Some(service) = service else {
            return;
        };
        if observed == Some(hash) {
            self.unsay(Object::Service(service));
        } else {
            self.say(Action::PointService {
                service: service.into(),
                hash: hash.into(),
            });
        }
    }

    fn set_weight(&mut self, canary_weight: i32) {
        self.say(Action::SetWeight { canary_weight });
    }

    fn wake_at(&mut self, at: DateTime<Utc>) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn transition(&mut self, reason: Reason, message: String) {
        self.transitions.push(Transition {
            reason,
            message,
            warning: reason.is_warning(),
        });
    }

    // --- no canary: the template is the stable one ------------------------------------------

    fn settle_on_stable(&mut self, stable: &str) {
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

    // --- a canary in progress --------------------------------------------------------------

    fn progress_canary(&mut self, stable: &str, hash: &str) {
        if self.status.canary_rs.as_deref() != Some(hash) {
            let previous = self.status.canary_rs.clone().filter(|c| c != stable);
            let (reason, message) = match previous {
                Some(previous) => (
                    Reason::TemplateChanged,
                    format!(
                        "the template changed during the canary of {previous}: the steps restart from 0 for {hash} against stable {stable}"
                    ),
                ),
                None => (
                    Reason::RolloutStarted,
                    format!("canary {hash} starts against stable {stable}"),
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
                "Aborted: an operator aborted the canary of {hash}; traffic is back on {stable}"
            ));
            self.transition(
                Reason::Aborted,
                format!("an operator aborted the canary of {hash}"),
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
                    "retrying the canary of {hash} from step 0 (attempt {})",
                    self.status.attempt + 1
                ),
            );
        }
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

    fn carry_out_step(&mut self, stable: &str, hash: &str) -> Progress {
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
        if step.set_weight.is_some() || step.set_canary_scale.is_some() {
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
        } else {
            self.analysis_step(stable, hash, index)
        }
    }

    fn index(&self) -> usize {
        self.status
            .current_step_index
            .unwrap_or(0)
            .clamp(0, self.steps.len() as i32) as usize
    }

    fn restart_steps(&mut self) {
        self.status.current_step_index = Some(0);
        self.status.waiting_since = None;
        self.clear_controller_pause();
    }

    fn clear_controller_pause(&mut self) {
        self.status.controller_pause = false;
        self.status
            .pause_conditions
            .retain(|c| c.reason == PauseReason::PausedByUser);
    }

    fn sync_user_pause(&mut self) {
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

    fn advance(&mut self, hash: &str) {
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

    fn describe_wait(&self, index: usize, hash: &str) -> String {
        let step = describe_step(&self.steps[index]);
        let weight = step_weight(self.steps, index);
        let pods = canary_pods(self.steps, index, self.replicas, weight, self.router);
        format!(
            "step {}/{} ({step}) for {hash}: {} of {pods} canary pods available, canary weight {}",
            index + 1,
            self.steps.len(),
            self.available(hash),
            self.status.canary_weight.unwrap_or(0)
        )
    }

    /// Brings pods, Services and weight toward step `index`; true once the step's weight and
    /// scale are in place and verified.
    fn converge(&mut self, stable: &str, hash: &str, index: usize) -> bool {
        let weight = step_weight(self.steps, index);
        let observed = self.input.observed;
        if !self.router {
            // The replica ratio is the traffic ratio: the canary gets its pods first, and the
            // stable gives up only as many pods as the canary has available.
            let target = canary_pods(self.steps, index, self.replicas, weight, false);
            // A stable Service must never select zero pods: one stays until it moves (at
            // promotion), also when it selects another version for now (a promotion lost
            // in a crash), since it comes back to the stable below.
            let (stable_service, _) = self.services();
            let keep = i32::from(stable_service.is_some() && self.replicas > 0);
            let stable_target = (self.replicas - self.available(hash).min(target)).max(keep);
            self.scale(hash, target);
            self.scale(stable, stable_target);
            self.return_stable_service(stable);
            self.point_canary(hash);
            let ready = self.settled_at(hash, target) && self.settled_at(stable, stable_target);
            if ready {
                self.status.canary_weight = Some(weight);
            }
            return ready;
        }
        let route = self.route();
        let target = canary_pods(self.steps, index, self.replicas, weight.max(route), true);
        self.scale(stable, self.replicas);
        self.scale(hash, target);
        self.return_stable_service(stable);
        if route > weight {
            self.set_weight(weight);
            return false;
        }
        let serves = |weight: i32| {
            self.available(hash) >= canary_pods(self.steps, index, self.replicas, weight, true)
        };
        if observed.canary_service_hash.as_deref() != Some(hash) {
            if route == 0 || serves(route) {
                self.point_canary(hash);
            } else {
                self.set_weight(0);
            }
            return false;
        }
        if route < weight {
            if serves(weight) {
                self.set_weight(weight);
            }
            return false;
        }
        serves(weight)
            && self
                .replica_set(hash)
                .is_some_and(|rs| rs.replicas == target)
    }

    fn pause_step(&mut self, index: usize) -> Progress {
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

    fn pause_duration(&self, index: usize) -> Option<Duration> {
        let value = self.steps[index].pause.as_ref()?.duration.as_ref()?;
        // Validation has checked it parses; a zero pause is as good as none.
        duration::parse_int_or_string(value).ok()
    }

    fn run_for(&self, hash: &str, step: Option<usize>) -> Option<&'a AnalysisRunView> {
        let attempt = self.status.attempt;
        self.input
            .observed
            .analysis_runs
            .iter()
            .find(|r| r.hash == hash && r.attempt == attempt && r.step == step)
    }

    fn analysis_step(&mut self, stable: &str, hash: &str, index: usize) -> Progress {
        let what = format!("step {}/{}", index + 1, self.steps.len());
        match self.run_for(hash, Some(index)) {
            None => {
                let attempt = self.status.attempt;
                self.actions.push(Action::StartAnalysis {
                    hash: hash.into(),
                    stable: stable.into(),
                    attempt,
                    step: Some(index),
                });
                self.status.message = Some(format!("{what}: starting analysis of {hash}"));
                Progress::Wait
            }
            Some(run) => {
                if matches!(run.phase, AnalysisPhase::Pending | AnalysisPhase::Running) {
                    self.status.message =
                        Some(format!("{what}: waiting for analysis run {}", run.name));
                }
                self.judge(run, stable, hash, &what)
            }
        }
    }

    /// Starts or judges the background analysis; true when it aborted the rollout.
    fn background_analysis(&mut self, stable: &str, hash: &str) -> bool {
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
        match self.run_for(hash, None) {
            None => {
                let attempt = self.status.attempt;
                self.actions.push(Action::StartAnalysis {
                    hash: hash.into(),
                    stable: stable.into(),
                    attempt,
                    step: None,
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

    fn judge(&mut self, run: &AnalysisRunView, stable: &str, hash: &str, what: &str) -> Progress {
        let detail = run
            .message
            .clone()
            .unwrap_or_else(|| format!("run {}", run.name));
        match run.phase {
            AnalysisPhase::Pending | AnalysisPhase::Running => Progress::Wait,
            AnalysisPhase::Successful => Progress::Advance,
            AnalysisPhase::Failed | AnalysisPhase::Error => {
                let reason = if run.phase == AnalysisPhase::Failed {
                    Reason::AnalysisFailed
                } else {
                    Reason::AnalysisError
                };
                self.abort(
                    reason,
                    run.decided_by.clone(),
                    format!(
                        "{what} analysis {} ({detail}): traffic is back on {stable}",
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
                        "{what} analysis was inconclusive ({detail}): paused until promoted or aborted"
                    );
                    self.status.message = Some(message.clone());
                    self.transition(Reason::Paused, message);
                    Progress::Wait
                } else if held {
                    Progress::Wait
                } else {
                    self.transition(
                        Reason::Promoted,
                        format!("promoted past the inconclusive {what} analysis"),
                    );
                    Progress::Advance
                }
            }
        }
    }

    fn abort(
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
        self.transition(reason, format!("{message} (canary {hash})"));
    }

    fn hold_aborted(&mut self, stable: &str, hash: &str) {
        // An abort raised mid-plan supersedes traffic moves this plan already chose.
        self.actions
            .retain(|a| !matches!(a, Action::SetWeight { .. } | Action::PointService { .. }));
        self.clear_controller_pause();
        self.status.waiting_since = None;
        self.scale(stable, self.replicas);
        self.point_stable(stable);
        if self.router {
            if self.route() != 0 {
                self.set_weight(0);
            }
            let aborted_at = self
                .status
                .aborted_at
                .as_ref()
                .map_or(self.input.now, from_k8s);
            let delay = self
                .input
                .spec
                .strategy
                .canary
                .as_ref()
                .map_or(30, |c| c.abort_scale_down_delay_seconds);
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

    /// After the last step: weight 100 on a full-scale canary, then the stable Service moves
    /// to it, then weight 0, then the canary is recorded as stable.
    fn promote(&mut self, stable: &str, hash: &str) {
        let (stable_service, _) = self.services();
        let stable_moved = stable_service.is_none()
            || self.input.observed.stable_service_hash.as_deref() == Some(hash);
        let steps = self.steps.len();
        let ready = if stable_moved && stable_service.is_some() {
            self.scale(hash, self.replicas);
            if self.router && self.route() != 0 {
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

    /// Takes each ended outage the status has not yet taken off out of the waits under way:
    /// `waitingSince` and a timed pause's start move later by the part of the outage after
    /// them. Recorded in `outagesExcludedUntil`, so an outage moves them once, also across
    /// controller restarts; an outage that lasts is not recorded (it is still growing), and
    /// [`Self::lasting_outage_after`] holds the timers while it does.
    fn exclude_outages(&mut self) {
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
                if held.reason != PauseReason::CanaryPauseStep || !timed_pause {
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
    fn lasting_outage_after(&self, since: DateTime<Utc>) -> chrono::Duration {
        self.input
            .observed
            .outages
            .iter()
            .filter(|o| o.end.is_none())
            .map(|o| o.lost_after(since, self.input.now))
            .fold(chrono::Duration::zero(), |a, b| a + b)
            .min(chrono::Duration::from_std(OUTAGE_HOLD).unwrap_or_default())
    }

    /// The duration of the pause step the rollout is at, if it is at a timed one.
    fn pause_duration_now(&self) -> Option<Duration> {
        let index = self.index();
        self.steps.get(index)?;
        self.pause_duration(index)
    }

    /// Starts, continues or clears the progress-deadline clock. `can_abort`: the rollout
    /// aborts when the deadline passes; otherwise it is only reported as Degraded.
    fn track_deadline(&mut self, waiting: bool, can_abort: bool) {
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
                    "canary {hash} made no progress within progressDeadlineSeconds ({seconds}s)"
                ),
                &hash,
            );
        } else {
            self.degraded_reason = Some(Reason::ProgressDeadlineExceeded);
        }
    }

    // --- cleanup ---------------------------------------------------------------------------

    fn stop_unwanted_analysis(&mut self) {
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
        let attempt = self.status.attempt;
        for run in &self.input.observed.analysis_runs {
            let wanted = run.hash == hash
                && run.attempt == attempt
                && match run.step {
                    Some(step) => wanted_step && step == index,
                    None => wanted_background,
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

    /// ReplicaSets that are neither stable nor canary: scaled down once no Service sends them
    /// traffic and their delay has passed, then deleted beyond `revisionHistoryLimit`.
    fn retire_old_replica_sets(&mut self) {
        let stable = self.status.stable_rs.clone().unwrap_or_default();
        let canary = self.status.canary_rs.clone().unwrap_or_default();
        let observed = self.input.observed;
        let delay = self
            .input
            .spec
            .strategy
            .canary
            .as_ref()
            .map_or(30, |c| c.scale_down_delay_seconds);
        let mut retired: Vec<&ReplicaSetView> = Vec::new();
        for rs in &observed.replica_sets {
            if rs.hash == stable || rs.hash == canary {
                continue;
            }
            let referenced = observed.stable_service_hash.as_deref() == Some(rs.hash.as_str())
                || observed.canary_service_hash.as_deref() == Some(rs.hash.as_str());
            if rs.replicas == 0 {
                retired.push(rs);
            } else if referenced {
                continue;
            } else {
                match rs.scale_down_at {
                    None => {
                        let at =
                            self.input.now + chrono::Duration::seconds(i64::from(delay.max(0)));
                        self.say(Action::MarkScaleDown {
                            hash: rs.hash.clone(),
                            at,
                        });
                        self.wake_at(at);
                    }
                    Some(at) if at <= self.input.now => {
                        self.say(Action::ScaleReplicaSet {
                            hash: rs.hash.clone(),
                            replicas: 0,
                        });
                    }
                    Some(at) => self.wake_at(at),
                }
            }
        }
        retired.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.hash.cmp(&b.hash)));
        let keep = self.input.spec.revision_history_limit.max(0) as usize;
        for rs in retired.into_iter().skip(keep) {
            self.say(Action::DeleteReplicaSet {
                hash: rs.hash.clone(),
            });
        }
    }

    fn set_phase(&mut self) {
        if let Some(hash) = self.missing.clone() {
            self.status.message = Some(format!(
                "ReplicaSetMissing: the ReplicaSet of version {hash} is gone, and weir builds only the current template; re-apply that version's template to rebuild it"
            ));
        }
        let settled = self.status.canary_rs == self.status.stable_rs;
        let phase = if self.status.abort || self.degraded_reason.is_some() || self.missing.is_some()
        {
            RolloutPhase::Degraded
        } else if settled {
            let stable = self.status.stable_rs.clone().unwrap_or_default();
            let healthy =
                self.settled_at(&stable, self.replicas) && (!self.router || self.route() == 0);
            if healthy {
                RolloutPhase::Healthy
            } else {
                RolloutPhase::Progressing
            }
        } else if self.input.spec.paused || !self.status.pause_conditions.is_empty() {
            RolloutPhase::Paused
        } else {
            RolloutPhase::Progressing
        };
        self.status.phase = Some(phase);
        let message = self.status.message.clone().unwrap_or_default();
        let (progressing, reason) = match phase {
            RolloutPhase::Degraded if self.missing.is_some() => (false, "ReplicaSetMissing"),
            RolloutPhase::Degraded if self.status.abort => (false, "RolloutAborted"),
            RolloutPhase::Degraded => (false, "ProgressDeadlineExceeded"),
            RolloutPhase::Healthy => (true, "RolloutHealthy"),
            RolloutPhase::Paused => (true, "RolloutPaused"),
            RolloutPhase::Progressing => (true, "RolloutProgressing"),
        };
        self.set_condition(CONDITION_PROGRESSING, progressing, reason, &message);
        let stable = self.status.stable_rs.clone().unwrap_or_default();
        let available = self.available(&stable) >= self.replicas;
        let reason = if available {
            "StableAvailable"
        } else {
            "StableUnavailable"
        };
        let text = format!(
            "{} of {} stable pods available",
            self.available(&stable),
            self.replicas
        );
        self.set_condition(CONDITION_AVAILABLE, available, reason, &text);
    }

    fn set_condition(&mut self, kind: &str, status: bool, reason: &str, message: &str) -> bool {
        let now = to_k8s(self.input.now);
        conditions::set(
            &mut self.status.conditions,
            kind,
            status,
            reason,
            message,
            &now,
            self.input.generation,
        )
    }
}

fn describe_step(step: &CanaryStep) -> String {
    if let Some(weight) = step.set_weight {
        format!("setWeight {weight}")
    } else if let Some(pause) = &step.pause {
        match &pause.duration {
            Some(d) => format!(
                "pause {}",
                match d {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(s) =>
                        format!("{s}s"),
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) =>
                        s.clone(),
                }
            ),
            None => "pause until promoted".into(),
        }
    } else if let Some(analysis) = &step.analysis {
        let names: Vec<&str> = analysis
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        format!("analysis {}", names.join(", "))
    } else if step.set_canary_scale.is_some() {
        "setCanaryScale".into()
    } else {
        "unknown step".into()
    }
}

/// `spec.selector` in label-selector syntax, for the scale subresource.
fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests;
