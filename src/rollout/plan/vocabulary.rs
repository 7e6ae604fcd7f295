//! The planner's words: what it sees (`Observed`, `Input`), what it says (`Action`, `Plan`),
//! and why (`Reason`, `Transition`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::analysis::AnalysisPhase;
use crate::api::contract::AnalysisKind;
use crate::api::rollout::{PodMetadata, RolloutSpec, RolloutStatus};
use crate::time::Outage;
use crate::traffic::{ExtraWeights, ManagedRoute, ShownRoutes};
use crate::validate;

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
    /// The ephemeral metadata weir put on its pods (annotation `weir.dev/ephemeral-metadata`).
    pub ephemeral: PodMetadata,
    /// That metadata was being changed and may not have reached every pod yet.
    pub ephemeral_pending: bool,
}

/// An AnalysisRun the Rollout owns.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRunView {
    pub name: String,
    /// The canary hash it measured.
    pub hash: String,
    /// The rollout attempt it belongs to (`status.attempt` when it started).
    pub attempt: i32,
    /// Which of the Rollout's analyses it is.
    pub kind: AnalysisKind,
    pub phase: AnalysisPhase,
    /// The run's own explanation (deciding metric and value).
    pub message: Option<String>,
    /// The metric that gave the run its phase, and that metric's last value.
    pub decided_by: Option<(String, Option<String>)>,
    /// `spec.terminate` is set: it was told to stop and needs no second telling.
    pub terminated: bool,
}

/// An Experiment the Rollout owns: an experiment step's.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentView {
    pub name: String,
    /// The canary hash it was made for.
    pub hash: String,
    /// The rollout attempt it belongs to.
    pub attempt: i32,
    /// The index of the step that made it.
    pub step: usize,
    /// Its phase; Pending before its controller has written one.
    pub phase: AnalysisPhase,
    /// Its own explanation (which analysis decided it, or which template is short of pods).
    pub message: Option<String>,
    /// `spec.terminate` is set: it was told to stop and needs no second telling.
    pub terminated: bool,
    /// Each template's Service that exists, by template name.
    pub services: std::collections::BTreeMap<String, String>,
}

/// Everything the planner needs to know about the world, read from the API server.
///
/// With the blue-green strategy the active Service plays the stable Service's part and the
/// preview Service the canary Service's: `stable_service_hash` is what the active Service
/// selects, `canary_service_hash` what the preview Service selects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub replica_sets: Vec<ReplicaSetView>,
    /// The hash the stable (blue-green: active) Service selects now (None: no hash in its
    /// selector yet).
    pub stable_service_hash: Option<String>,
    /// The hash the canary (blue-green: preview) Service selects now.
    pub canary_service_hash: Option<String>,
    /// The canary's weight as read back from the router; None without a router or before
    /// weir has set one.
    pub route_weight: Option<i32>,
    /// With several routers: they carry different weights (`route_weight` is the highest),
    /// so the step's weight is set again.
    pub routers_differ: bool,
    /// The managed routes (`trafficRouting.managedRoutes`) the router carries now.
    pub managed_routes: ShownRoutes,
    /// The experiment Services the routers send a share to, with their shares.
    pub experiment_weights: ExtraWeights,
    pub analysis_runs: Vec<AnalysisRunView>,
    pub experiments: Vec<ExperimentView>,
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
        /// The version whose nodes the new pods avoid (blue-green's `antiAffinity`): the one
        /// they replace.
        away_from: Option<String>,
        /// The ephemeral metadata its pods start with (a new version's `previewMetadata` or
        /// `canaryMetadata`), recorded as applied.
        metadata: PodMetadata,
    },
    /// Put `metadata` on the pods of a ReplicaSet (its template, and its pods in place) and
    /// take off what of `applied` it lacks; record `metadata` as applied. Never touches the
    /// pod-template hash or restarts a pod.
    SetEphemeralMetadata {
        hash: String,
        metadata: PodMetadata,
        /// What weir recorded as put there before: the keys it may take off.
        applied: PodMetadata,
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
    /// Set the canary's share of traffic on the router, and the shares of experiment
    /// Services (any other weir added is removed); the stable gets the rest.
    SetWeight {
        canary_weight: i32,
        experiments: ExtraWeights,
    },
    /// Add a managed route, or replace it with this one, in its place of precedence.
    SetManagedRoute {
        name: String,
        route: ManagedRoute,
    },
    RemoveManagedRoute {
        name: String,
    },
    /// Start one of the Rollout's analyses of the new version `hash`.
    StartAnalysis {
        hash: String,
        /// The stable hash, for the `stable-hash` argument.
        stable: String,
        attempt: i32,
        kind: AnalysisKind,
    },
    StopAnalysis {
        name: String,
    },
    /// Start the Experiment of step `step` for the new version `hash`.
    StartExperiment {
        hash: String,
        /// The stable hash: what `specRef: stable` copies.
        stable: String,
        attempt: i32,
        step: usize,
    },
    /// Tell an Experiment to end (`spec.terminate`).
    StopExperiment {
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
    /// One managed route, by name.
    ManagedRoute(&'a str),
    /// The ephemeral metadata of one ReplicaSet's pods, by hash: apart from the ReplicaSet's
    /// scale, which the same plan may change too. A new ReplicaSet's comes with its creation.
    PodMetadata(&'a str),
}

impl Action {
    /// The object this action changes; None for analyses and experiments, which change no
    /// traffic and none of the Rollout's own pods.
    pub fn object(&self) -> Option<Object<'_>> {
        match self {
            Action::CreateReplicaSet { hash, .. }
            | Action::ScaleReplicaSet { hash, .. }
            | Action::MarkScaleDown { hash, .. }
            | Action::DeleteReplicaSet { hash } => Some(Object::ReplicaSet(hash)),
            Action::SetEphemeralMetadata { hash, .. } => Some(Object::PodMetadata(hash)),
            Action::PointService { service, .. } => Some(Object::Service(service)),
            Action::SetWeight { .. } => Some(Object::Route),
            Action::SetManagedRoute { name, .. } | Action::RemoveManagedRoute { name } => {
                Some(Object::ManagedRoute(name))
            }
            Action::StartAnalysis { .. }
            | Action::StopAnalysis { .. }
            | Action::StartExperiment { .. }
            | Action::StopExperiment { .. } => None,
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

    pub(super) fn is_warning(self) -> bool {
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
