//! The `Rollout`: a workload whose new versions reach users step by step.
//!
//! Field names follow Argo Rollouts' canary spec on purpose, so that migrating a manifest
//! mostly means changing `apiVersion`. Fields of Argo's that weir does not support yet are
//! kept (not pruned) in the `unsupported` maps, and validation names them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::analysis::AnalysisTemplateRef;
use super::analysis::{AnalysisRunMetadata, Argument, DryRun, MeasurementRetention};
pub use super::experiment::ExperimentAnalysis;
use super::schema::keeps_unknown_fields;
use super::schema::{Unsupported, keep_unknown_fields};

/// A Rollout replaces a Deployment: it owns a pod template and moves each new version of it
/// from 0% to 100% of the traffic through `strategy.canary.steps`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Rollout",
    doc = "A workload whose new versions reach users step by step, gated by analysis.",
    namespaced,
    status = "RolloutStatus",
    shortname = "wro",
    category = "weir",
    derive = "PartialEq",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.currentStepIndex"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stableRevision","priority":1}"#,
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".status.canaryRevision","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RolloutSpec {
    /// Desired number of pods across the stable and canary versions. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods of this Rollout; must match `template.metadata.labels`.
    pub selector: LabelSelector,
    /// The pod template. A change to it starts a new canary.
    pub template: PodTemplateSpec,
    /// Seconds a step may take to make progress before the rollout is aborted.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: i32,
    /// How many old ReplicaSets to keep for `kubectl weir undo`.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: i32,
    /// Seconds a new pod must be ready before it counts as available.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: i32,
    /// Holds the rollout where it is until set back to false.
    #[serde(default)]
    pub paused: bool,
    pub strategy: RolloutStrategy,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
    /// Not part of the API (serde and the schema skip it): set only on the copies the
    /// controller's cache keeps, which drop `template.spec` ([`RolloutSpec::drop_pod_spec`]).
    #[serde(skip)]
    #[schemars(skip)]
    pub pod_spec_digest: Option<PodSpecDigest>,
    /// Not part of the API either: true on the copies a replica's cache keeps of Rollouts in
    /// shards it does not hold, which keep nothing of the spec ([`RolloutSpec::shard_stub`]).
    #[serde(skip)]
    #[schemars(skip)]
    pub is_shard_stub: bool,
}

/// What a look that writes nothing needs of a Rollout's `template.spec`, kept in its place:
/// the containers are most of a Rollout's size, and the controller's cache holds them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSpecDigest {
    /// [`crate::template_hash::of`] the whole template.
    pub template_hash: String,
    /// [`declares_ports`] of the whole template.
    pub declares_ports: bool,
}

impl RolloutSpec {
    /// The pod-template hash that names the template's ReplicaSet.
    pub fn template_hash(&self) -> String {
        match &self.pod_spec_digest {
            Some(digest) => digest.template_hash.clone(),
            None => crate::template_hash::of(&self.template),
        }
    }

    /// Whether the template's containers declare a port.
    pub fn declares_ports(&self) -> bool {
        match &self.pod_spec_digest {
            Some(digest) => digest.declares_ports,
            None => declares_ports(&self.template),
        }
    }

    /// What stands for the spec of a Rollout in a shard another replica leads: nothing of
    /// it is read there (that replica plans), and a reconcile that meets one after gaining
    /// the shard reads the Rollout from the API server.
    pub fn shard_stub() -> RolloutSpec {
        RolloutSpec {
            replicas: None,
            selector: LabelSelector::default(),
            template: PodTemplateSpec::default(),
            progress_deadline_seconds: default_progress_deadline_seconds(),
            revision_history_limit: default_revision_history_limit(),
            min_ready_seconds: 0,
            paused: false,
            strategy: RolloutStrategy::default(),
            unsupported: Unsupported::default(),
            pod_spec_digest: None,
            is_shard_stub: true,
        }
    }

    /// Drops `template.spec`, keeping its digest: for a copy only read to see that there is
    /// nothing to do. Whatever writes reads the Rollout again, whole.
    pub fn drop_pod_spec(&mut self) {
        if self.pod_spec_digest.is_none() {
            self.pod_spec_digest = Some(PodSpecDigest {
                template_hash: crate::template_hash::of(&self.template),
                declares_ports: declares_ports(&self.template),
            });
        }
        self.template.spec = None;
    }
}

/// Whether a pod template's containers declare a port (a Service needs one).
pub fn declares_ports(template: &PodTemplateSpec) -> bool {
    template.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty()))
    })
}

fn default_progress_deadline_seconds() -> i32 {
    600
}

fn default_revision_history_limit() -> i32 {
    10
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RolloutStrategy {
    /// The canary strategy: traffic moves to a new version step by step. Exactly one of
    /// `canary` and `blueGreen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// The blue-green strategy: a new version runs beside the active one, reached only
    /// through the preview Service, until one switch of the active Service moves everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<Box<BlueGreenStrategy>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A Service the strategy names, with the field that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedService<'a> {
    /// From the spec's root: `spec.strategy.blueGreen.activeService`.
    pub field: &'static str,
    pub name: Option<&'a str>,
}

impl RolloutStrategy {
    /// The Service that carries users to the stable version and the one that reaches the new
    /// version: canary's stableService and canaryService, or blue-green's activeService and
    /// previewService (which play the same parts).
    pub fn services(&self) -> [NamedService<'_>; 2] {
        if let Some(blue_green) = &self.blue_green {
            return [
                NamedService {
                    field: "spec.strategy.blueGreen.activeService",
                    name: blue_green.active_service.as_deref(),
                },
                NamedService {
                    field: "spec.strategy.blueGreen.previewService",
                    name: blue_green.preview_service.as_deref(),
                },
            ];
        }
        let canary = self.canary.as_ref();
        [
            NamedService {
                field: "spec.strategy.canary.stableService",
                name: canary.and_then(|c| c.stable_service.as_deref()),
            },
            NamedService {
                field: "spec.strategy.canary.canaryService",
                name: canary.and_then(|c| c.canary_service.as_deref()),
            },
        ]
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct CanaryStrategy {
    /// The Service whose selector weir pins to the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// The Service whose selector weir pins to the canary pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// Seconds to keep an old ReplicaSet up after traffic has left it.
    #[serde(default = "default_scale_down_delay_seconds")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,
    /// Seconds to keep an aborted canary's ReplicaSet up after traffic has left it.
    #[serde(default = "default_scale_down_delay_seconds")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: i32,
    /// How traffic is split. Without a router, the replica ratio is the traffic ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<Box<TrafficRouting>>,
    /// Analysis that runs in the background from `startingStep` until the rollout ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// Labels and annotations on the pods of the stable version, only while it is stable
    /// (put on in place when a canary is promoted, taken off the version it replaces).
    /// Ephemeral: they never change the pod-template hash or restart a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<PodMetadata>,
    /// Labels and annotations on the pods of the canary while it is under way (created with
    /// them, taken off in place when it is promoted to stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<PodMetadata>,
    /// The steps a new version goes through, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

fn default_scale_down_delay_seconds() -> i32 {
    30
}

/// Argo Rollouts' `strategy.blueGreen`, with its field names and meanings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct BlueGreenStrategy {
    /// The Service users reach (required): weir pins its selector to the active version,
    /// and moves it to the new one at promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_service: Option<String>,
    /// The Service that reaches the new version before promotion (for tests and
    /// pre-promotion analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Promote as soon as the new version is ready and pre-promotion analysis passed. False:
    /// pause before the switch until promoted.
    #[serde(default = "default_true")]
    pub auto_promotion_enabled: bool,
    /// Pause this many seconds before the switch, then promote. Ignored when
    /// `autoPromotionEnabled` is false (as in Argo Rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// Pods of the new version before promotion; the full `replicas` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preview_replica_count: Option<i32>,
    /// Analysis of the preview before the active Service switches; a failure aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<StepAnalysis>,
    /// Analysis of live traffic after the switch; a failure switches the active Service back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<StepAnalysis>,
    /// Seconds the previous version keeps its pods after the active Service left it.
    #[serde(default = "default_scale_down_delay_seconds")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,
    /// How many previous versions may wait out their scale-down delay scaled up; older ones
    /// scale down at once. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Seconds an aborted preview keeps its pods.
    #[serde(default = "default_scale_down_delay_seconds")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: i32,
    /// Labels and annotations on the pods of the version the active Service selects, only
    /// while it does (taken off, in place, when it no longer does). Ephemeral: they never
    /// change the pod-template hash or restart a pod. When both Services select one version,
    /// it carries these, not `previewMetadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_metadata: Option<PodMetadata>,
    /// Labels and annotations on the pods of the new version while it is previewed (created
    /// with them, taken off in place at the switch), and of any version only the preview
    /// Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_metadata: Option<PodMetadata>,
    /// Keep a new version's pods off the nodes of the pods of the version it replaces: a pod
    /// anti-affinity term on `rollouts-pod-template-hash`, topology `kubernetes.io/hostname`,
    /// added to the template's own affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

fn default_true() -> bool {
    true
}

/// Labels and annotations for a version's pods (`activeMetadata`, `previewMetadata`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Exactly one of the two: scheduling away from the previous version's nodes as a
/// preference (with a weight) or as a requirement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AntiAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_during_scheduling_ignored_during_execution: Option<PreferredAntiAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<RequiredAntiAffinity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PreferredAntiAffinity {
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RequiredAntiAffinity {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Where weights are set: one router, or several (each set and verified in turn).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct TrafficRouting {
    /// Weights on the backendRefs of Gateway API HTTPRoutes and GRPCRoutes (the same shape as
    /// the argoproj-labs/gatewayAPI plugin's configuration).
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// A canary Ingress beside the stable one, weighted by NGINX Ingress annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxRouting>,
    /// An SMI TrafficSplit on a root Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiRouting>,
    /// Weights on the HTTP, TLS or TCP routes of Istio VirtualServices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// The AWS Load Balancer Controller's forward action annotated on an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alb: Option<AlbRouting>,
    /// The routes besides the weighted one that weir may add (`setHeaderRoute`,
    /// `setMirrorRoute`), highest precedence first; all are removed when the canary ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_routes: Vec<ManagedRouteName>,
    /// Argo Rollouts' traffic router plugins: weir builds in `argoproj-labs/gatewayAPI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<RouterPlugins>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

impl TrafficRouting {
    /// The Gateway API routing, written as weir's `gatewayAPI` or as the
    /// `argoproj-labs/gatewayAPI` plugin's configuration.
    pub fn gateway(&self) -> Option<&GatewayApiRouting> {
        self.gateway_api.as_ref().or(self
            .plugins
            .as_ref()
            .and_then(|plugins| plugins.gateway_api.as_ref()))
    }
}

/// `trafficRouting.plugins`, keyed by plugin name: the ones weir implements itself. Any other
/// plugin is kept and reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = keep_unknown_fields)]
pub struct RouterPlugins {
    /// Gateway API, configured as the argoproj-labs plugin is.
    #[serde(
        default,
        rename = "argoproj-labs/gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// NGINX Ingress (Argo Rollouts' `trafficRouting.nginx`): weir creates and owns a canary
/// Ingress beside each stable Ingress, a copy of its rules sent to the canaryService, weighted
/// by the `canary-weight` annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct NginxRouting {
    /// The Ingress whose rules send to the stableService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ingress: Option<String>,
    /// Several stable Ingresses: one canary Ingress each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_ingresses: Vec<String>,
    /// The prefix of the NGINX annotations; defaults to `nginx.ingress.kubernetes.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// More annotations for the canary Ingress, each key under `annotationPrefix`
    /// (`canary-by-header: X-Canary`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_ingress_annotations: BTreeMap<String, String>,
    /// More annotations for the canary Ingress, with their full keys, as written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_ingress_annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// AWS ALB (Argo Rollouts' `trafficRouting.alb`): weir sets one annotation on each Ingress,
/// `<annotationPrefix>/actions.<rootService>`, a forward action that the AWS Load Balancer
/// Controller splits between the stableService and canaryService target groups. The
/// Ingress's path to the rootService names the port `use-annotation`; the rest of the
/// Ingress is the team's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AlbRouting {
    /// The Ingress, in the Rollout's namespace, whose action weir sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Several Ingresses, each set and verified; instead of `ingress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingresses: Vec<String>,
    /// The port of the stable and canary Services the target groups send to.
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: i32,
    /// The Service the Ingress's path names (with port `use-annotation`), and so the action's
    /// name; defaults to the stableService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    /// The prefix of the AWS Load Balancer Controller's annotations (its
    /// `--annotations-prefix`); defaults to `alb.ingress.kubernetes.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// Target group stickiness across the stable and canary target groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness_config: Option<AlbStickinessConfig>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Duration-based stickiness of the action's target groups (the ALB API's
/// `TargetGroupStickinessConfig`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct AlbStickinessConfig {
    pub enabled: bool,
    /// Seconds a client stays with its target group: 1 to 604800 (7 days) when enabled.
    pub duration_seconds: i64,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Istio, in Argo Rollouts' shape: host-level (the routes' destinations are the stable and
/// canary Services) or subset-level (one host; `destinationRule` names the subsets, whose
/// `rollouts-pod-template-hash` labels weir sets).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct IstioRouting {
    /// One VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<IstioVirtualService>,
    /// Several VirtualServices, each set and verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<IstioVirtualService>,
    /// Subset-level routing: the DestinationRule whose subsets weir labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<IstioDestinationRule>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// SMI (Argo Rollouts' `trafficRouting.smi`): weir creates and owns a TrafficSplit on the
/// root Service, with the stableService and canaryService as its weighted backends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct SmiRouting {
    /// The Service clients call; defaults to the stableService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    /// The TrafficSplit's name; defaults to the Rollout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split_name: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

impl IstioRouting {
    /// Every VirtualService named, `virtualService` first.
    pub fn all_virtual_services(&self) -> impl Iterator<Item = &IstioVirtualService> {
        self.virtual_service.iter().chain(&self.virtual_services)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct IstioVirtualService {
    /// The VirtualService, in the Rollout's namespace.
    pub name: String,
    /// Names of the HTTP routes to set; none: the VirtualService's only HTTP route (when it
    /// has no TLS or TCP routes named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// TLS routes, picked by port and SNI hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<IstioTlsRoute>,
    /// TCP routes, picked by port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<IstioTcpRoute>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct IstioTlsRoute {
    /// The port a TLS route's `match` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i64>,
    /// The SNI hosts a TLS route's `match` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct IstioTcpRoute {
    /// The port a TCP route's `match` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct IstioDestinationRule {
    /// The DestinationRule, in the Rollout's namespace.
    pub name: String,
    /// The subset that selects the canary's pods.
    pub canary_subset_name: String,
    /// The subset that selects the stable pods.
    pub stable_subset_name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Gateway API routes whose stable and canary backendRefs carry the weights, in the shape
/// of the argoproj-labs/gatewayAPI plugin's configuration: every route named is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct GatewayApiRouting {
    /// One HTTPRoute (it takes header routes, as the plugin's does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<String>,
    /// Several HTTPRoutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<GatewayApiRoute>,
    /// One GRPCRoute (it takes header routes, as the plugin's does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<String>,
    /// Several GRPCRoutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_routes: Vec<GatewayApiRoute>,
    /// The routes' namespace; defaults to the Rollout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct GatewayApiRoute {
    /// The route's name.
    pub name: String,
    /// Whether `setHeaderRoute` steps add their header routes to this route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_header_routes: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The kinds of Gateway API route weir sets weights on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GatewayRouteKind {
    Http,
    Grpc,
}

impl GatewayRouteKind {
    pub fn kind(self) -> &'static str {
        match self {
            GatewayRouteKind::Http => "HTTPRoute",
            GatewayRouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// One route a Rollout sets, with what its configuration says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedGatewayRoute<'a> {
    pub kind: GatewayRouteKind,
    pub name: &'a str,
    pub use_header_routes: bool,
    /// Where it was named: `httpRoute`, `httpRoutes[1]`, ...
    pub field: String,
}

impl GatewayApiRouting {
    /// Every route named, HTTPRoutes first, the single field before its list. A single
    /// `httpRoute`/`grpcRoute` takes header routes, as the plugin has it.
    pub fn routes(&self) -> Vec<NamedGatewayRoute<'_>> {
        let mut routes = Vec::new();
        for (kind, single, single_field, list, list_field) in [
            (
                GatewayRouteKind::Http,
                &self.http_route,
                "httpRoute",
                &self.http_routes,
                "httpRoutes",
            ),
            (
                GatewayRouteKind::Grpc,
                &self.grpc_route,
                "grpcRoute",
                &self.grpc_routes,
                "grpcRoutes",
            ),
        ] {
            if let Some(name) = single {
                routes.push(NamedGatewayRoute {
                    kind,
                    name,
                    use_header_routes: true,
                    field: single_field.to_owned(),
                });
            }
            for (index, route) in list.iter().enumerate() {
                routes.push(NamedGatewayRoute {
                    kind,
                    name: &route.name,
                    use_header_routes: route.use_header_routes,
                    field: format!("{list_field}[{index}]"),
                });
            }
        }
        routes
    }

    /// Whether this routing names the route `kind` `name` in `namespace`, for a Rollout in
    /// `rollout_namespace`.
    pub fn names(
        &self,
        kind: GatewayRouteKind,
        namespace: &str,
        name: &str,
        rollout_namespace: &str,
    ) -> bool {
        self.namespace.as_deref().unwrap_or(rollout_namespace) == namespace
            && self
                .routes()
                .iter()
                .any(|route| route.kind == kind && route.name == name)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct BackgroundAnalysis {
    pub templates: Vec<AnalysisTemplateRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Metrics (by name, `*` for all) of the run that are measured and recorded but never
    /// decide it, added to the templates' own list, as in Argo Rollouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Measurements the run keeps per metric, over the templates' own list, as in Argo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Labels and annotations put on the AnalysisRun this analysis creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
    /// The step index at which the background analysis starts; 0 if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// One step of a canary: exactly one of its fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct CanaryStep {
    /// The percentage of traffic the canary should carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Wait: for `duration`, or until promoted when no duration is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Run analysis and wait for its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Box<StepAnalysis>>,
    /// Scale the canary independently of its traffic weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Send requests with matching headers to the canary; without `match`, remove the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<Box<SetHeaderRoute>>,
    /// Copy a share of matching requests to the canary; without `match`, remove the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<Box<SetMirrorRoute>>,
    /// Run an Experiment: copies of the stable or the canary version on fresh ReplicaSets,
    /// judged by analyses. The step is done when it succeeds; its failure aborts the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Box<ExperimentStep>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A canary step's Experiment (Argo Rollouts' `experiment` step).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ExperimentStep {
    /// The ReplicaSets to run (validation requires at least one).
    #[serde(default)]
    pub templates: Vec<ExperimentStepTemplate>,
    /// How long it runs once its pods are available (`1h`); without it, until every analysis
    /// `requiredForCompletion` has succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<ExperimentAnalysis>,
    /// Metrics (by name, `*` for all) measured but never deciding, in every analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Measurements kept per metric, in every analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Labels and annotations put on the analyses' AnalysisRuns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The weight a step index asks for: the last `setWeight` at or before it; 100 once all
/// steps are done (promotion). Below the planner and validation, which both read it.
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

/// Which version an experiment template copies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SpecRef {
    /// The version the stable ReplicaSet runs.
    #[default]
    Stable,
    /// The new version (`spec.template`).
    Canary,
}

/// One ReplicaSet of a step's Experiment: a copy of the stable or the canary version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ExperimentStepTemplate {
    /// Names the ReplicaSet and `{{templates.NAME.podTemplateHash}}`.
    pub name: String,
    pub spec_ref: SpecRef,
    /// Pods to run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Labels and annotations added to its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodMetadata>,
    /// Selects its pods (default: the Rollout's selector); must match its labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The share of traffic (percent) the routers send to its pods while the experiment runs,
    /// taken from the stable's; a Service is made for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    /// A Service in front of its pods, also without a weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::api::experiment::TemplateService>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PauseStep {
    /// `30s`, `5m`, `1h` (or combined, `1m30s`) or integer seconds. Absent: wait for promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<IntOrString>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct StepAnalysis {
    pub templates: Vec<AnalysisTemplateRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Metrics (by name, `*` for all) of the run that are measured and recorded but never
    /// decide it, added to the templates' own list, as in Argo Rollouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Measurements the run keeps per metric, over the templates' own list, as in Argo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Labels and annotations put on the AnalysisRun this analysis creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Exactly one of `replicas`, `weight` or `matchTrafficWeight`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct SetCanaryScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A route weir may add and remove (`trafficRouting.managedRoutes[]`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct ManagedRouteName {
    pub name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A header route: requests matching any of `match` go to the canary alone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct SetHeaderRoute {
    /// One of `trafficRouting.managedRoutes`.
    pub name: String,
    /// Any one of these (OR) sends a request to the canary. Absent: the route is removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HeaderRoutingMatch>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct HeaderRoutingMatch {
    pub header_name: String,
    pub header_value: StringMatch,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Exactly one of `exact`, `prefix` or `regex` (RE2 syntax).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A mirror route: matching requests are served as before, and `percentage` of them copied
/// to the canary, whose answers are dropped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct SetMirrorRoute {
    /// One of `trafficRouting.managedRoutes`.
    pub name: String,
    /// Any one of these blocks (OR; all conditions of a block, AND) is mirrored. Absent: the
    /// route is removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// The share of matching requests copied to the canary; 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    /// Header name to its match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

impl RouteMatch {
    /// The block as routers write it: a path prefix `/` matches every path, so it is left
    /// out (Gateway API stores every match with that path, and could not tell the two apart).
    pub fn canonical(&self) -> RouteMatch {
        let every_path = self.path.as_ref().is_some_and(|p| {
            p.prefix.as_deref() == Some("/") && p.exact.is_none() && p.regex.is_none()
        });
        RouteMatch {
            path: if every_path { None } else { self.path.clone() },
            ..self.clone()
        }
    }
}

/// What the controller last saw and did. Written only by the controller, except for the
/// fields operators set, each with one patch of the status subresource (what
/// `kubectl weir` sends; `kubectl patch rollout NAME --subresource status --type merge -p ...`):
///
/// | control | patch | effect |
/// | --- | --- | --- |
/// | promote | `{"status":{"pauseConditions":null}}` | leave the current pause step or inconclusive analysis |
/// | promote full | `{"status":{"promoteFull":true}}` | skip every remaining step and promote |
/// | abort | `{"status":{"abort":true}}` | canary weight 0 now, phase Degraded, canary scaled down after `abortScaleDownDelaySeconds` |
/// | retry | `{"status":{"abort":false}}` | after an abort: start the steps again from step 0 |
///
/// Pause and resume are spec changes: `{"spec":{"paused":true}}` and `{"spec":{"paused":false}}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Healthy or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Why the rollout is in its phase, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Index into `spec.strategy.canary.steps` of the step being carried out; equal to the
    /// number of steps once all are done. Blue-green: the stage before the switch (0
    /// pre-promotion analysis, 1 the pause, 2 promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// The percentage of traffic the canary carries, as verified on the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// Pod-template hash of the stable ReplicaSet.
    #[serde(default, rename = "stableRS", skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// Pod-template hash of the canary ReplicaSet (the current template).
    #[serde(default, rename = "canaryRS", skip_serializing_if = "Option::is_none")]
    pub canary_rs: Option<String>,
    /// Git revision (SHA) of the stable version, when a GitSync applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Git revision (SHA) of the canary version, when a GitSync applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Set by an operator (`kubectl weir abort`) or by the controller when analysis fails:
    /// traffic returns to the stable version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    /// When the current canary was aborted; cleared by a retry or a new template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Why the current canary was aborted, for whoever acts on it (the GitSync that applied
    /// it rejects its revision); cleared with `abortedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_cause: Option<AbortCause>,
    /// Set by `kubectl weir promote --full`: skip the remaining steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    /// Why the rollout is paused, one entry per reason; promote clears them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// True while the controller itself holds the rollout (a pause step or inconclusive
    /// analysis); an operator's promote clears `pauseConditions`, and the controller moves on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller_pause: bool,
    /// Since when the rollout has waited for pods to become available or for the router to
    /// carry a weight; `progressDeadlineSeconds` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// The end of the latest API server outage whose length moved `waitingSince` and a
    /// timed pause's start later: time the controller could not hear the API server does not
    /// count towards a progress deadline or a pause (an outage is taken off once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outages_excluded_until: Option<Time>,
    /// The managed routes (`setHeaderRoute`, `setMirrorRoute`) weir has written and not yet
    /// seen gone: the routers read these names too, so a route whose name was dropped from
    /// `managedRoutes` mid-canary is still found and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_routes: Vec<String>,
    /// The Services of experiment templates weir has sent a share of traffic to and not yet
    /// seen gone from the routers: the routers read these names too, so a share is always
    /// taken away again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experiment_services: Vec<String>,
    /// Numbers each canary attempt (a new template, or a retry after an abort); it only goes
    /// up, so analysis runs of an earlier attempt never count for a later one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: i32,
    /// Total pods of this Rollout (the `scale` subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// `spec.selector` as a string, for the `scale` subresource (and so for autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What aborted a canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortCause {
    /// `AnalysisFailed`, `AnalysisError`, `ProgressDeadlineExceeded` or `Aborted` (an operator).
    pub reason: String,
    /// The metric that decided, when analysis did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The deciding measurement's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutPhase {
    /// Moving through the steps, or waiting for the canary's pods.
    Progressing,
    /// Held: by a pause step, `spec.paused`, or inconclusive analysis.
    Paused,
    /// Every step done (or nothing to do): the current template is stable.
    Healthy,
    /// Aborted or past its progress deadline: traffic is back on the stable version.
    Degraded,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    pub reason: PauseReason,
    pub start_time: Time,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PauseReason {
    /// A `pause` step.
    CanaryPauseStep,
    /// Analysis came back Inconclusive (Argo's name, kept for compatibility).
    InconclusiveAnalysisRun,
    /// `kubectl weir pause` or `spec.paused`.
    PausedByUser,
    /// Blue-green: held before the switch (`autoPromotionEnabled: false`, or for
    /// `autoPromotionSeconds`); Argo's name.
    BlueGreenPause,
}

keeps_unknown_fields!(
    RolloutSpec,
    RolloutStrategy,
    CanaryStrategy,
    ExperimentStep,
    ExperimentStepTemplate,
    BlueGreenStrategy,
    PodMetadata,
    AntiAffinity,
    PreferredAntiAffinity,
    RequiredAntiAffinity,
    TrafficRouting,
    RouterPlugins,
    NginxRouting,
    AlbRouting,
    AlbStickinessConfig,
    IstioRouting,
    SmiRouting,
    IstioVirtualService,
    IstioTlsRoute,
    IstioTcpRoute,
    IstioDestinationRule,
    GatewayApiRouting,
    GatewayApiRoute,
    BackgroundAnalysis,
    CanaryStep,
    PauseStep,
    StepAnalysis,
    SetCanaryScale,
    ManagedRouteName,
    SetHeaderRoute,
    HeaderRoutingMatch,
    StringMatch,
    SetMirrorRoute,
    RouteMatch,
);
