//! The cluster contract: every label, annotation, finalizer and field manager weir writes on
//! objects and reads back. Other tools, dashboards and people's scripts read these names, so
//! they live in one leaf module that imports nothing of weir's.

/// weir's API group.
pub const GROUP: &str = "weir.dev";

/// On everything weir creates for a Rollout, so it can list and watch only what it owns.
pub const ROLLOUT_LABEL: &str = "weir.dev/rollout";
/// The hash of a ReplicaSet's pod template (Argo Rollouts' name, so its tools read it).
pub const POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";
/// On an AnalysisRun: the canary's pod template hash it judges.
pub const CANARY_HASH_LABEL: &str = "weir.dev/canary-hash";
/// On an AnalysisRun: which retry of the canary it belongs to.
pub const ATTEMPT_LABEL: &str = "weir.dev/attempt";
/// On an AnalysisRun: which analysis it is (`AnalysisKind::label`): the step index it
/// gates, `background`, `pre-promotion` or `post-promotion`.
pub const STEP_LABEL: &str = "weir.dev/step";
/// On an Experiment's ReplicaSets, their pods and its AnalysisRuns: the Experiment's name.
/// Also in the pod template before it is hashed, so an experiment's copy of the stable
/// version has a hash of its own and a judge tells its pods from the stable ones.
pub const EXPERIMENT_LABEL: &str = "weir.dev/experiment";
/// On an Experiment's ReplicaSets and their pods: the template's name.
pub const EXPERIMENT_TEMPLATE_LABEL: &str = "weir.dev/experiment-template";
/// Whether a label key is under weir's own prefix (`weir.dev/rollout`, `x.weir.dev/y`):
/// weir finds its objects by these, so a tenant may not set them on what weir makes.
pub fn is_weirs_own(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(prefix, _)| prefix == "weir.dev" || prefix.ends_with(".weir.dev"))
}

/// Puts an object (and what weir makes for it) in the shard of this value instead of its
/// namespace's (`--shards`): for one namespace too busy for one replica, or several to keep
/// on one.
pub const SHARD_LABEL: &str = "weir.dev/shard";

/// On an Experiment's AnalysisRuns: the analysis' name.
pub const EXPERIMENT_ANALYSIS_LABEL: &str = "weir.dev/experiment-analysis";

/// Which of a Rollout's analyses an AnalysisRun is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnalysisKind {
    /// A canary step's analysis, by step index.
    Step(usize),
    /// The canary's background analysis (`canary.analysis`).
    Background,
    /// Blue-green: of the preview, before the active Service switches.
    PrePromotion,
    /// Blue-green: of live traffic, after the switch.
    PostPromotion,
}

impl AnalysisKind {
    /// The value of `STEP_LABEL`.
    pub fn label(self) -> String {
        match self {
            AnalysisKind::Step(index) => index.to_string(),
            AnalysisKind::Background => "background".into(),
            AnalysisKind::PrePromotion => "pre-promotion".into(),
            AnalysisKind::PostPromotion => "post-promotion".into(),
        }
    }

    /// Reads `STEP_LABEL` back; None for a value weir never writes.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "background" => Some(AnalysisKind::Background),
            "pre-promotion" => Some(AnalysisKind::PrePromotion),
            "post-promotion" => Some(AnalysisKind::PostPromotion),
            index => index.parse().ok().map(AnalysisKind::Step),
        }
    }

    /// The last part of the run's name.
    pub fn name_suffix(self) -> String {
        match self {
            AnalysisKind::Step(index) => index.to_string(),
            AnalysisKind::Background => "bg".into(),
            AnalysisKind::PrePromotion => "pre".into(),
            AnalysisKind::PostPromotion => "post".into(),
        }
    }
}

/// The Git revision an object was last applied from.
pub const GIT_REVISION_ANNOTATION: &str = "weir.dev/git-revision";
/// kubectl's, not weir's: the whole manifest `kubectl apply` last applied. Dropped where weir
/// compares or keeps objects (drift, the Rollout cache).
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The GitSync (`namespace/name`) that applies an object.
pub const GITSYNC_ANNOTATION: &str = "weir.dev/gitsync";
/// Asks a GitSync to hold a revision until the ref moves (`kubectl weir undo
/// --to-revision`); weir takes it into `status.pinned` and removes it.
pub const ROLLBACK_TO_ANNOTATION: &str = "weir.dev/rollback-to";
/// Approves a revision for a GitSync with `promotion.approval: Manual` (`kubectl weir
/// promote gitsync/NAME`): it, and any revision good upstream before it, may be applied.
pub const PROMOTE_REVISION_ANNOTATION: &str = "weir.dev/promote-revision";
/// Set by the webhook (or by hand) to ask a GitSync to sync now; any new value does.
pub const SYNC_REQUEST_ANNOTATION: &str = "weir.dev/sync-requested-at";
/// When a ReplicaSet no traffic reaches scales down (RFC 3339).
pub const SCALE_DOWN_ANNOTATION: &str = "weir.dev/scale-down-at";
/// The Rollout's pod template as it was written (JSON), before the API server filled in
/// defaults: what `kubectl weir undo` puts back, so the template hashes as it did.
pub const POD_TEMPLATE_ANNOTATION: &str = "weir.dev/pod-template";

/// The ephemeral metadata (blue-green's `activeMetadata`/`previewMetadata`) weir put on a
/// ReplicaSet's pods, as JSON `{labels, annotations}`, with `"pending": true` while it is
/// being applied: what weir may take off again, and never a key it did not put there.
pub const EPHEMERAL_METADATA_ANNOTATION: &str = "weir.dev/ephemeral-metadata";

/// Held on every Rollout so its route can be reset before its pods are deleted.
pub const ROUTE_CLEANUP_FINALIZER: &str = "weir.dev/route-cleanup";

/// Field manager of what comes from Git. The rollout engine writes as `weir-rollout`, so
/// neither takes the other's fields.
pub const SYNC_MANAGER: &str = "weir-sync";
/// Field manager of the Rollout controller: ReplicaSets, Services, route weights, status.
pub const ROLLOUT_MANAGER: &str = "weir-rollout";
/// Field manager of the AnalysisRun controller.
pub const ANALYSIS_MANAGER: &str = "weir-analysis";
/// Field manager of the Experiment controller.
pub const EXPERIMENT_MANAGER: &str = "weir-experiment";
/// Field manager of the webhook's sync-request annotation.
pub const WEBHOOK_MANAGER: &str = "weir-webhook";

/// The AWS Load Balancer Controller's default annotation prefix (its `--annotations-prefix`).
pub const ALB_DEFAULT_PREFIX: &str = "alb.ingress.kubernetes.io";

/// The Ingress annotation holding the ALB forward action that weir sets for a Rollout:
/// `<prefix>/actions.<service>`, where `service` is the rootService (else the stableService)
/// that the Ingress's path names with port `use-annotation`.
pub fn alb_action_annotation(prefix: Option<&str>, service: &str) -> String {
    format!("{}/actions.{service}", prefix.unwrap_or(ALB_DEFAULT_PREFIX))
}

/// Gateway API's bound on an HTTPRoute's rules (`maxItems` in its CRD).
pub const GATEWAY_API_MAX_RULES: usize = 16;
/// Gateway API's bound on the headers of one HTTPRoute match (`maxItems` in its CRD): lint
/// checks a step's own matches against it, the router the sum with the split rule's.
pub const GATEWAY_API_MAX_HEADERS: usize = 16;
/// Gateway API's bound on the matches of one HTTPRoute rule (`maxItems` in its CRD).
pub const GATEWAY_API_MAX_MATCHES: usize = 64;
/// Gateway API's bound on the matches of all an HTTPRoute's rules together (a CEL rule in its
/// CRD: fewer than 128).
pub const GATEWAY_API_MAX_TOTAL_MATCHES: usize = 127;
