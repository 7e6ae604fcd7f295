//! An experiment's course, in Argo Rollouts' order:
//! 1. every template's ReplicaSet is made, at its replicas;
//! 2. once every one has all its pods available, the experiment is *available* (the time is
//!    recorded), and its analyses start; a template still short of its pods after
//!    `progressDeadline` from the start fails the experiment;
//! 3. it ends Failed, Error or Inconclusive as soon as one analysis does (the worst wins);
//!    Successful as soon as every analysis `requiredForCompletion` has succeeded, or once its
//!    `duration` has run from availability with none of those still running (with neither,
//!    only when terminated); an operator's `terminate` ends it
//!    Successful (as in Argo) unless an analysis already failed;
//! 4. when it ends, running analyses are stopped, and every ReplicaSet is scaled to 0
//!    `scaleDownDelay` after the end (the routers take a weighted template's share away
//!    meanwhile); a template's Service is made with its ReplicaSet and deleted once its
//!    pods are gone.
//!
//! Idempotent: the same inputs give the same plan, and a plan carried out gives, planned
//! again, no actions but those still waiting for the world.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::analysis::AnalysisPhase;
use crate::api::experiment::{
    DEFAULT_PROGRESS_DEADLINE_SECONDS, DEFAULT_SCALE_DOWN_DELAY_SECONDS, ExperimentSpec,
};

/// One ReplicaSet to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub replicas: i32,
    /// It has a Service in front of its pods.
    pub service: bool,
}

/// One analysis over the templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    pub name: String,
    /// The experiment (without a duration) is done when every such analysis succeeded.
    pub required_for_completion: bool,
}

/// What the experiment asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub templates: Vec<Template>,
    pub analyses: Vec<Analysis>,
    /// How long it runs once available; None: until its required analyses succeed.
    pub duration: Option<Duration>,
    /// From the start, how long the templates have to become available (Argo: 600 s).
    pub progress_deadline: Duration,
    /// From the end, how long the ReplicaSets keep their pods (Argo: 30 s).
    pub scale_down_delay: Duration,
    /// An operator ended it.
    pub terminate: bool,
}

impl Spec {
    /// The experiment's settings as the plan reads them, Argo's defaults filled in; the
    /// reason when its duration does not read (validation says so first).
    pub fn of(spec: &ExperimentSpec) -> Result<Spec, String> {
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(value.unwrap_or(default)).unwrap_or_default())
        };
        let duration = match &spec.duration {
            Some(text) => {
                Some(crate::duration::parse(text).map_err(|e| format!("spec.duration: {e}"))?)
            }
            None => None,
        };
        Ok(Spec {
            templates: spec
                .templates
                .iter()
                .map(|t| Template {
                    name: t.name.clone(),
                    replicas: t.replicas.unwrap_or(1).max(0),
                    service: t.service.is_some(),
                })
                .collect(),
            analyses: spec
                .analyses
                .iter()
                .map(|a| Analysis {
                    name: a.name.clone(),
                    required_for_completion: a.required_for_completion,
                })
                .collect(),
            duration,
            progress_deadline: seconds(
                spec.progress_deadline_seconds,
                DEFAULT_PROGRESS_DEADLINE_SECONDS,
            ),
            scale_down_delay: seconds(
                spec.scale_down_delay_seconds,
                DEFAULT_SCALE_DOWN_DELAY_SECONDS,
            ),
            terminate: spec.terminate,
        })
    }
}

/// A template's ReplicaSet as it exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSetView {
    pub replicas: i32,
    pub available: i32,
}

/// What exists: ReplicaSets by template name, AnalysisRuns' phases by analysis name, the
/// templates that have a Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub replica_sets: BTreeMap<String, ReplicaSetView>,
    pub runs: BTreeMap<String, AnalysisPhase>,
    pub services: BTreeSet<String>,
}

/// What the experiment records of itself (its status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Pending until available, Running after, then the outcome.
    pub phase: Option<AnalysisPhase>,
    pub message: Option<String>,
    pub available_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A change to the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateReplicaSet { template: String, replicas: i32 },
    ScaleReplicaSet { template: String, replicas: i32 },
    CreateService { template: String },
    DeleteService { template: String },
    StartAnalysis { analysis: String },
    StopAnalysis { analysis: String },
}

/// The next status, what to do, and when to look again if nothing else happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub state: State,
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

fn is_final(phase: Option<AnalysisPhase>) -> bool {
    phase.is_some_and(AnalysisPhase::is_final)
}

/// The analysis that ended worst, as a run's metrics decide it (`AnalysisPhase::severity`).
fn worst_run(observed: &Observed) -> Option<(&str, AnalysisPhase)> {
    observed
        .runs
        .iter()
        .filter(|(_, phase)| phase.severity() > 0)
        .max_by_key(|(name, phase)| (phase.severity(), std::cmp::Reverse(name.as_str())))
        .map(|(name, phase)| (name.as_str(), *phase))
}

fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

fn later(after: Duration, from: DateTime<Utc>) -> DateTime<Utc> {
    from + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
}

/// The experiment's next step. `started` is when it was made.
pub fn plan(
    spec: &Spec,
    state: &State,
    observed: &Observed,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Plan {
    let mut next = state.clone();
    let mut actions = Vec::new();
    let mut requeue: Option<DateTime<Utc>> = None;
    let mut wake = |at: DateTime<Utc>| requeue = Some(requeue.map_or(at, |r| r.min(at)));

    if !is_final(next.phase) {
        decide(spec, &mut next, observed, started, now, &mut wake);
    }
    if is_final(next.phase) {
        let ended = *next.ended_at.get_or_insert(now);
        for (analysis, phase) in &observed.runs {
            if !is_final(Some(*phase)) {
                actions.push(Action::StopAnalysis {
                    analysis: analysis.clone(),
                });
            }
        }
        let scale_down = later(spec.scale_down_delay, ended);
        for (template, replica_set) in &observed.replica_sets {
            if replica_set.replicas == 0 {
                continue;
            }
            if now >= scale_down {
                actions.push(Action::ScaleReplicaSet {
                    template: template.clone(),
                    replicas: 0,
                });
            } else {
                wake(scale_down);
            }
        }
        // Deleted once nothing is behind it, so a router still sending there meets pods.
        for template in &observed.services {
            let gone = observed
                .replica_sets
                .get(template)
                .is_none_or(|rs| rs.replicas == 0 && rs.available == 0);
            if gone {
                actions.push(Action::DeleteService {
                    template: template.clone(),
                });
            }
        }
    } else {
        for template in &spec.templates {
            if !observed.replica_sets.contains_key(&template.name) {
                actions.push(Action::CreateReplicaSet {
                    template: template.name.clone(),
                    replicas: template.replicas,
                });
            }
            if template.service && !observed.services.contains(&template.name) {
                actions.push(Action::CreateService {
                    template: template.name.clone(),
                });
            }
        }
        if next.available_at.is_some() {
            for analysis in &spec.analyses {
                if !observed.runs.contains_key(&analysis.name) {
                    actions.push(Action::StartAnalysis {
                        analysis: analysis.name.clone(),
                    });
                }
            }
        }
    }
    Plan {
        state: next,
        actions,
        requeue_after: requeue.map(|at| until(at, now)),
    }
}

/// The phase and message of an experiment still under way.
fn decide(
    spec: &Spec,
    next: &mut State,
    observed: &Observed,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    wake: &mut impl FnMut(DateTime<Utc>),
) {
    if let Some((analysis, phase)) = worst_run(observed) {
        return end(
            next,
            phase,
            format!("analysis {analysis:?} ended {phase:?}"),
        );
    }
    if spec.terminate {
        return end(
            next,
            AnalysisPhase::Successful,
            "terminated by an operator".to_owned(),
        );
    }
    let short: Vec<String> = spec
        .templates
        .iter()
        .filter_map(|template| {
            let seen = observed.replica_sets.get(&template.name);
            let available = seen.map_or(0, |rs| rs.available);
            (available < template.replicas).then(|| {
                format!(
                    "template {:?}: {available} of {} pods available",
                    template.name, template.replicas
                )
            })
        })
        .collect();
    let Some(available_at) = next.available_at else {
        if short.is_empty() {
            next.available_at = Some(now);
            next.phase = Some(AnalysisPhase::Running);
            next.message = None;
            // Planned again at once: the analyses start in this plan.
            return decide(spec, next, observed, started, now, wake);
        }
        let deadline = later(spec.progress_deadline, started);
        if now >= deadline {
            return end(
                next,
                AnalysisPhase::Failed,
                format!(
                    "not available within its progress deadline ({}s): {}",
                    spec.progress_deadline.as_secs(),
                    short.join("; ")
                ),
            );
        }
        wake(deadline);
        next.phase = Some(AnalysisPhase::Pending);
        next.message = Some(short.join("; "));
        return;
    };
    next.phase = Some(AnalysisPhase::Running);
    // As Argo runs it: once every analysis `requiredForCompletion` has succeeded, the
    // experiment is done, whatever is left of its duration; one still running holds the end
    // past the duration.
    let required: Vec<&Analysis> = spec
        .analyses
        .iter()
        .filter(|a| a.required_for_completion)
        .collect();
    let succeeded = |a: &&Analysis| observed.runs.get(&a.name) == Some(&AnalysisPhase::Successful);
    let required_done = required.iter().all(succeeded);
    if !required.is_empty() && required_done {
        return end(
            next,
            AnalysisPhase::Successful,
            "every analysis required for completion succeeded".to_owned(),
        );
    }
    if let Some(duration) = spec.duration {
        let done = later(duration, available_at);
        if now < done {
            wake(done);
        } else if required_done {
            return end(
                next,
                AnalysisPhase::Successful,
                format!("ran its duration ({}s)", duration.as_secs()),
            );
        }
    }
    // A template that lost pods after becoming available keeps running, reported in the
    // message. (Argo fails the experiment when such a template stays short past
    // `progressDeadlineSeconds`; weir does not yet.)
    next.message = (!short.is_empty()).then(|| short.join("; "));
}

fn end(next: &mut State, phase: AnalysisPhase, message: String) {
    next.phase = Some(phase);
    next.message = Some(message);
}

#[cfg(test)]
mod tests;
