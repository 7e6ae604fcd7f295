//! What the GitSync controller reads before it plans: the spec's settings, the managed
//! Rollouts, the applied revision's workloads (as the GitSync's identity), and what its
//! dependencies wait for.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::context::{Context, acting_as, acting_in_target, neighbours, target};
use super::dependencies;
use super::health::{self, Workload};
use super::plan::Settings;
use super::promotion;
use super::rollback::{self, Judging, ManagedRollout};
use crate::api::contract::PROMOTE_REVISION_ANNOTATION;
use crate::api::gitsync::{GitSync, InventoryEntry};
use crate::api::rollout::Rollout;
use crate::duration;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// `spec.healthTimeout` when it does not parse (validation reports it).
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

/// What the spec says about this reconcile; a field that does not parse takes its default
/// (validation reports it).
pub(super) fn settings(sync: &GitSync) -> Settings {
    let spec = &sync.spec;
    Settings {
        generation: sync.metadata.generation,
        interval: duration::parse(&spec.interval).unwrap_or(DEFAULT_INTERVAL),
        judging: Judging {
            on_failure: spec.rollback.on_failure,
            health_timeout: chrono::Duration::from_std(
                duration::parse(&spec.health_timeout).unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            )
            .unwrap_or(chrono::Duration::MAX),
        },
        // A promoted GitSync applies the upstream's revisions, not its branch's head: the
        // first GitSync of the chain writes back (validation says so).
        write_back: spec.rollback.write_back.enabled && spec.promotion.is_none(),
    }
}

/// Why each GitSync of `spec.dependsOn` is not ready yet (empty: none is waited for).
pub(super) fn waiting_for_dependencies(ctx: &Context, sync: &GitSync) -> Vec<String> {
    if sync.spec.depends_on.is_empty() {
        return Vec::new();
    }
    let all = neighbours(ctx, sync);
    let nodes: Vec<dependencies::Node> = all.iter().map(|s| dependencies::Node::of(s)).collect();
    dependencies::waiting_for(&dependencies::Node::of(sync), &nodes)
}

/// With `spec.promotion`: what the upstream GitSync lets this one apply, read as this
/// GitSync's identity (so a tenant learns of another namespace's GitSync only what its
/// ServiceAccount may read).
pub(super) async fn promotion(ctx: &Context, sync: &GitSync) -> Option<promotion::Promoted> {
    let spec = sync.spec.promotion.as_ref()?;
    let own_namespace = sync.namespace().unwrap_or_default();
    let namespace = spec
        .from
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| own_namespace.clone());
    let upstream = format!("{namespace}/{}", spec.from.git_sync);
    let name = format!("{own_namespace}/{}", sync.name_any());
    let read = match acting_as(ctx, sync) {
        _ if upstream == name => Err("it is this GitSync itself".to_owned()),
        Err(error) => Err(error.message),
        Ok((identity, client)) => Api::<GitSync>::namespaced(client, &namespace)
            .get_opt(&spec.from.git_sync)
            .await
            .map_err(|e| format!("reading it as {}: {e}", identity.describe()))
            .and_then(|found| found.ok_or_else(|| "it does not exist".to_owned())),
    };
    let upstream_status = read
        .as_ref()
        .ok()
        .map(|u| u.status.clone().unwrap_or_default());
    let soak = spec
        .soak
        .as_deref()
        .and_then(|s| duration::parse(s).ok())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .unwrap_or_default();
    let approved = sync
        .annotations()
        .get(PROMOTE_REVISION_ANNOTATION)
        .map(String::as_str);
    let gate = promotion::Gate {
        upstream: &upstream,
        upstream_status: upstream_status.as_ref(),
        unreadable: read.as_ref().err().map(String::as_str),
        soak,
        manual: spec.approval.as_deref() == Some("Manual"),
        approved,
        name: &name,
    };
    let own = sync.status.clone().unwrap_or_default();
    Some(promotion::choose(&gate, &own, chrono::Utc::now()))
}

/// What the GitSync's Rollouts show, read fresh where they live (this cluster or its
/// `spec.kubeConfig`'s): the ones in its inventory. A cluster that cannot be reached leaves
/// each unreadable: neither good nor failed, so nothing is rejected for an outage.
pub(super) async fn rollouts_of(ctx: &Context, sync: &GitSync) -> Vec<ManagedRollout> {
    let inventory = sync
        .status
        .as_ref()
        .map(|s| s.inventory.as_slice())
        .unwrap_or_default();
    match target(ctx, sync).await {
        Ok(target) => managed_rollouts(&target.reader, inventory).await,
        Err(error) => {
            warn!(gitsync = %sync.name_any(), error = %error.message, "the cluster of a GitSync's Rollouts cannot be reached");
            managed_rollouts_unreadable(inventory)
        }
    }
}

/// Each Rollout of the inventory as one that cannot be read.
fn managed_rollouts_unreadable(inventory: &[InventoryEntry]) -> Vec<ManagedRollout> {
    inventory
        .iter()
        .filter(|e| e.kind == "Rollout")
        .filter_map(|e| Some(unreadable(format!("{}/{}", e.namespace.as_ref()?, e.name))))
        .collect()
}

fn unreadable(name: String) -> ManagedRollout {
    ManagedRollout {
        name,
        applied_revision: None,
        canary_revision: None,
        healthy: false,
        aborted: None,
        aborted_at: None,
    }
}

/// What the GitSync's Rollouts show, read fresh: the ones in its inventory.
pub(super) async fn managed_rollouts(
    client: &Client,
    inventory: &[InventoryEntry],
) -> Vec<ManagedRollout> {
    let mut seen = Vec::new();
    for entry in inventory {
        let (group, _) = entry.api_version.split_once('/').unwrap_or_default();
        if entry.kind != "Rollout" || group != Rollout::group(&()) {
            continue;
        }
        let Some(namespace) = &entry.namespace else {
            continue;
        };
        let name = format!("{namespace}/{}", entry.name);
        let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(&entry.name).await {
            Ok(Some(rollout)) => seen.push(rollback::observe(&rollout)),
            Ok(None) => {}
            // Unreadable: neither good nor failed, so no revision becomes good or is
            // rejected on its account; syncing goes on.
            Err(error) => {
                warn!(rollout = %name, %error, "reading a managed Rollout failed");
                seen.push(unreadable(name));
            }
        }
    }
    seen
}

/// The workloads of the GitSync `key` among `inventory`, as they are now: only objects whose
/// kind has a health rule, read one GET each as the GitSync's identity, like everything else
/// it does to what it applied (so it learns nothing its ServiceAccount may not read, and the
/// controller needs no right to read tenants' workloads). One gone is skipped,
/// like a Rollout; one that cannot be read is reported as such, which keeps its revision
/// from being good and rejects nothing.
pub(super) async fn applied_workloads(
    ctx: &Context,
    sync: &GitSync,
    key: &str,
    inventory: &[InventoryEntry],
) -> Vec<Workload> {
    let entries: Vec<&InventoryEntry> = inventory
        .iter()
        .filter(|e| health::rule(&e.api_version, &e.kind).is_some())
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let describe = |e: &InventoryEntry| health::describe(&e.kind, e.namespace.as_deref(), &e.name);
    let (identity, client, _) = match acting_in_target(ctx, sync).await {
        Ok(acting) => acting,
        Err(error) => {
            return entries
                .into_iter()
                .map(|e| health::unreadable(describe(e), &error.message))
                .collect();
        }
    };
    let mut resources: HashMap<(String, String), Option<ApiResource>> = HashMap::new();
    let mut seen = Vec::new();
    for entry in entries {
        let kind = (entry.api_version.clone(), entry.kind.clone());
        let resource = match resources.get(&kind) {
            Some(resource) => resource.clone(),
            None => match resource_of(&client, entry).await {
                Ok(resource) => {
                    resources.insert(kind, resource.clone());
                    resource
                }
                Err(error) => {
                    seen.push(health::unreadable(describe(entry), &error.to_string()));
                    continue;
                }
            },
        };
        // The kind is gone (its CRD deleted): so are its objects.
        let Some(resource) = resource else { continue };
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.get_opt(&entry.name).await {
            Ok(Some(live)) => {
                let value = serde_json::to_value(&live).unwrap_or_default();
                seen.extend(health::observe(&value, key));
            }
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => seen.push(health::unreadable(
                describe(entry),
                &format!(
                    "{} (weir acted as {}, which needs get on {} to judge its health)",
                    status.message,
                    identity.describe(),
                    match resource.group.as_str() {
                        "" => resource.plural.clone(),
                        group => format!("{}.{group}", resource.plural),
                    }
                ),
            )),
            Err(error) => {
                warn!(object = %describe(entry), %error, "reading a workload's health failed");
                seen.push(health::unreadable(describe(entry), &error.to_string()));
            }
        }
    }
    seen
}

/// Where a kind with a health rule is served: the built-in workloads without a discovery
/// round trip; a custom kind through discovery (None: no longer served).
async fn resource_of(
    client: &Client,
    entry: &InventoryEntry,
) -> Result<Option<ApiResource>, kube::Error> {
    let (group, version) = entry
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &entry.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &entry.kind);
    let plural = match health::rule(&entry.api_version, &entry.kind) {
        Some(health::Rule::Deployment) => Some("deployments"),
        Some(health::Rule::StatefulSet) => Some("statefulsets"),
        Some(health::Rule::DaemonSet) => Some("daemonsets"),
        Some(health::Rule::Job) => Some("jobs"),
        Some(health::Rule::PersistentVolumeClaim) => Some("persistentvolumeclaims"),
        Some(health::Rule::Conditions | health::Rule::GitSync) | None => None,
    };
    if let Some(plural) = plural {
        return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, plural)));
    }
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => Ok(Some(resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(error) => Err(error),
    }
}
