//! `GitSync`: keeps the cluster equal to a path of a Git repository, hands each new revision to
//! the Rollouts it manages, and rolls the whole application back to the last good revision
//! when one of them fails.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::Unsupported;
use super::schema::keep_unknown_fields;
use super::schema::keeps_unknown_fields;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "GitSync",
    doc = "Keeps the cluster equal to a Git path and rolls back to the last good revision.",
    namespaced,
    status = "GitSyncStatus",
    shortname = "wgs",
    category = "weir",
    derive = "PartialEq",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.lastAppliedRevision"}"#,
    printcolumn = r#"{"name":"Good","type":"string","jsonPath":".status.lastGoodRevision","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct GitSyncSpec {
    /// The repository: `https://`, `ssh://`, `git://` or `file://`.
    pub url: String,
    /// What to follow: exactly one of a branch, a tag or a commit.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
    /// Directory inside the repository holding the manifests (YAML or a kustomization).
    #[serde(default = "default_path")]
    pub path: String,
    /// How often to fetch (`1m`, `30s`).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// A Secret with credentials: `identity` and `known_hosts` for SSH; `username` and
    /// `password` (or a token as password) for HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// The ServiceAccount, in this GitSync's namespace, whose permissions every dry run,
    /// apply and prune has: weir impersonates it, so the API server's RBAC decides what the
    /// repository may touch. Default: the controller's `--default-service-account` (the
    /// chart's `weir-gitsync`), or the controller itself when that is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Delete objects that left Git.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Stop fetching and applying until set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// How long the workloads a revision brings (Deployments, StatefulSets, DaemonSets,
    /// Jobs, PersistentVolumeClaims, and objects of custom kinds with a `Ready` condition)
    /// have to become healthy, counted from when the revision was applied (`5m`, `90s`).
    /// One still not healthy then rejects the revision (reason `HealthTimeout`), as a
    /// failed condition does at once (`HealthCheckFailed`); with `rollback.onFailure` the
    /// last good revision is re-applied. Rollouts are judged by their own analysis and
    /// progress deadline instead.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: String,
    #[serde(default)]
    pub rollback: RollbackPolicy,
    #[serde(default)]
    pub kustomize: KustomizeOptions,
    /// GitSyncs in this namespace that must be Ready, at a revision proven good, before
    /// this one applies a new revision (Flux's `dependsOn`): infrastructure before the apps
    /// that need it. A cycle is InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    /// Decrypt SOPS-encrypted YAML and JSON files (Flux's `spec.decryption`), in memory,
    /// with the age identities of a Secret in this namespace, read at every sync as the
    /// GitSync's ServiceAccount. A file that cannot be decrypted, or whose MAC does not
    /// match, fails the revision by name and nothing of it is applied; without this field
    /// an encrypted file fails the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Apply to another cluster (Flux's `kubeConfig`): a kubeconfig in a Secret of this
    /// namespace, read as this GitSync's identity. Objects are applied, pruned and judged
    /// there, impersonating this GitSync's ServiceAccount (of the same name and namespace
    /// there) with the kubeconfig's credentials. Only inline values are taken: no exec or
    /// auth-provider plugins, no files, no proxy, TLS always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    /// Apply only revisions another GitSync (an earlier environment) has proven good:
    /// staging's canary gates production. Without it, the ref's head is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The Secret a remote cluster's kubeconfig is in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct KubeConfigReference {
    pub secret_ref: SecretKeyReference,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A Secret of this namespace and the key in it (default `value`, then `value.yaml`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct SecretKeyReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Where revisions come from when they are promoted, and what they wait for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Promotion {
    /// The upstream GitSync: this one applies a revision only once the upstream recorded it
    /// good (every Rollout and workload of it healthy), never one it rejected. It is read
    /// as this GitSync's identity, so another namespace's needs a ServiceAccount that may
    /// get GitSyncs there.
    pub from: PromotionSource,
    /// How long a revision must have stayed good upstream first (`30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// `Manual`: a revision also waits for a person (`kubectl weir promote gitsync/NAME`,
    /// the annotation `weir.dev/promote-revision`). Default `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// The upstream GitSync, by name; `namespace` defaults to this GitSync's own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct PromotionSource {
    pub git_sync: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// A revision waiting to be promoted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionState {
    /// The revision good upstream that this GitSync would apply next.
    pub revision: String,
    /// What it waits for, in words.
    pub waiting_for: String,
    /// When its soak ends, when it waits for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

/// A revision that became good, and when: what a downstream GitSync's soak counts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoodRevision {
    pub revision: String,
    pub since: Time,
}

/// How SOPS-encrypted files under `path` are decrypted, in Flux's shape: YAML and JSON
/// files whose values SOPS encrypted for age recipients, decrypted in memory with the age
/// identities of a Secret in this GitSync's namespace (its data keys ending in `.agekey`,
/// read at each sync as the GitSync's identity). A file that cannot be decrypted, or whose
/// MAC does not match, fails the revision; nothing of it is applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = keep_unknown_fields)]
pub struct Decryption {
    /// `sops`, the only provider.
    pub provider: String,
    /// The Secret holding the age identities (`AGE-SECRET-KEY-1...`, several a key, `#`
    /// comments allowed) under data keys ending in `.agekey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

fn default_path() -> String {
    ".".into()
}

fn default_interval() -> String {
    "1m".into()
}

fn default_health_timeout() -> String {
    "5m".into()
}

fn default_true() -> bool {
    true
}

/// Exactly one of `branch`, `tag` or `commit`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GitRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A full commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Another GitSync, by name. `namespace` is accepted for Flux's shape, and must be this
/// GitSync's own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DependencyReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LocalObjectReference {
    pub name: String,
}

/// How a kustomization at `path` is built.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeOptions {
    /// Let the kustomization name remote resources, bases, components and generator files
    /// (URLs, Git references), fetched by kustomize within the fetch timeout. Off: such a
    /// revision is refused before kustomize runs, naming each reference.
    #[serde(default)]
    pub allow_remote: bool,
}

/// What happens when a Rollout managed by this GitSync fails its canary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Re-apply the last good revision and reject the failed one.
    #[serde(default = "default_true")]
    pub on_failure: bool,
    #[serde(default)]
    pub write_back: WriteBack,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        RollbackPolicy {
            on_failure: true,
            write_back: WriteBack::default(),
        }
    }
}

/// Pushes a revert commit of a rejected revision so that Git agrees with the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteBack {
    #[serde(default)]
    pub enabled: bool,
    /// Push the revert here (for a pull request) instead of to the tracked branch. weir
    /// replaces this branch with each revert, so it must start with the controller's
    /// `--write-back-branch-prefix` (default `weir/`) and be a branch no GitSync follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Author of revert commits; required when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_name: Option<String>,
    /// Author e-mail of revert commits; required when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_email: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncStatus {
    /// The revision whose manifests are applied now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Where the ref pointed at the last fetch: the revision weir follows, or holds the
    /// last good one against when it is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    /// The newest revision weir tried to apply, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// The newest revision at which every managed Rollout and every workload it applied
    /// was healthy; rollbacks return here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<String>,
    /// The revisions that became good, oldest first (the newest 20), with when: the soak of
    /// a GitSync promoting from this one counts from there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub good_revisions: Vec<GoodRevision>,
    /// With `spec.promotion`: the upstream's next revision for this GitSync and what it
    /// waits for (its soak, a person's approval); none when nothing waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionState>,
    /// Set by `weir.dev/rollback-to`: this revision is held until the ref moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedRevision>,
    /// Revisions that failed and are never applied again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_revisions: Vec<RejectedRevision>,
    /// The newest revisions tried, oldest first, with what became of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// Every object applied from Git, for pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// The last value of the annotation `weir.dev/sync-requested-at` that was acted on; a
    /// new value (set by the push webhook or by hand) asks for a sync now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRevision {
    /// The rejected commit SHA.
    pub revision: String,
    /// Why: a Rollout's `AnalysisFailed`, `AnalysisError`, `ProgressDeadlineExceeded` or
    /// `Aborted`; or `HealthCheckFailed` (a workload's condition says it failed) or
    /// `HealthTimeout` (a workload was not healthy within `spec.healthTimeout`).
    pub reason: String,
    /// The Rollout whose failure rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The workload whose health rejected it: `Kind namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// What that workload's status said: its failed condition, or what it still waited
    /// for when the timeout passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The metric that decided, when analysis did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The deciding measurement's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub rejected_at: Time,
    /// The commit that undid it in Git (`rollback.writeBack`): weir's revert, or the last
    /// good revision itself when the rejected one left `path` as it was (nothing to push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<String>,
}

/// A revision held by hand (`weir.dev/rollback-to`, `kubectl weir undo --to-revision`)
/// while the tracked ref stays where it was.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedRevision {
    /// The revision applied instead of the ref's.
    pub revision: String,
    /// Where the ref pointed when the pin was set; the pin ends when the ref moves on.
    pub ref_revision: String,
    pub since: Time,
}

/// A revision weir tried to apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: String,
    /// The commit's subject line.
    pub subject: String,
    /// When the revision was committed (the committer's time), for lead times from commit
    /// to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Time>,
    /// When this outcome was first seen.
    pub time: Time,
    /// `Applied`, `RenderFailed` or `ApplyFailed`.
    pub outcome: String,
}

/// One object applied from Git.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

keeps_unknown_fields!(
    GitSyncSpec,
    Decryption,
    Promotion,
    PromotionSource,
    KubeConfigReference,
    SecretKeyReference,
);
