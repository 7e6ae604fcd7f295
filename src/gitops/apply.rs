//! Applying a rendered revision: every object checked by a server-side dry run first, then
//! applied in order (Namespaces, CRDs, the rest) with server-side apply as `weir-sync`, then
//! what left Git pruned. The inventory that comes back is right even when an attempt stops
//! half-way.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, discovery};
use serde_json::Value;

use super::inventory::{self, after_attempt, apply_order, stamp, to_prune};
use super::ownership::{RolloutRoutes, keep_live_weights};
use super::render::Manifest;
use crate::api::Rollout;
use crate::api::gitsync::InventoryEntry;

/// weir's field manager for what comes from Git. The rollout engine writes as `weir-rollout`,
/// so neither takes the other's fields.
pub const FIELD_MANAGER: &str = "weir-sync";

/// What an attempt did, whether it finished or not.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The inventory to record: never missing an object that may still exist.
    pub inventory: Vec<InventoryEntry>,
    pub applied: usize,
    pub pruned: usize,
    /// Why the attempt stopped, naming the object.
    pub failure: Option<String>,
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

fn describe(object: &Value) -> String {
    let entry = inventory::entry(object);
    match &entry.namespace {
        Some(namespace) => format!("{} {namespace}/{}", entry.kind, entry.name),
        None => format!("{} {}", entry.kind, entry.name),
    }
}

/// The kinds of a revision, looked up once each.
#[derive(Default)]
struct Kinds {
    known: BTreeMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Kinds {
    async fn get(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, kube::Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.known.get(&key) {
            return Ok(Some(found.clone()));
        }
        match discovery::pinned_kind(client, &gvk(api_version, kind)).await {
            Ok(found) => {
                self.known.insert(key, found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

fn api_for(
    client: &Client,
    resource: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (&caps.scope, namespace) {
        (Scope::Namespaced, Some(namespace)) => {
            Api::namespaced_with(client.clone(), namespace, resource)
        }
        _ => Api::all_with(client.clone(), resource),
    }
}

/// Applies `manifests` at `revision` for the GitSync `owner` (`namespace/name`) whose own
/// namespace is the default for namespaced objects, then prunes what left `old` if `prune`.
pub async fn sync(
    client: &Client,
    owner: &str,
    default_namespace: &str,
    revision: &str,
    mut manifests: Vec<Manifest>,
    old: &[InventoryEntry],
    prune: bool,
) -> Outcome {
    apply_order(&mut manifests);
    let mut kinds = Kinds::default();
    let mut outcome = Outcome {
        inventory: old.to_vec(),
        ..Outcome::default()
    };
    // Kinds and namespaces this revision brings itself: objects that need them cannot be
    // dry-run before they exist, and are checked by their real apply instead.
    let new_namespaces: BTreeSet<&str> = manifests
        .iter()
        .filter(|m| m.kind() == "Namespace")
        .map(|m| m.name())
        .collect();
    let new_kinds: BTreeSet<(String, String)> = manifests
        .iter()
        .filter(|m| m.kind() == "CustomResourceDefinition")
        .flat_map(|m| {
            let group = m.object["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let kind = m.object["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            [(group, kind)]
        })
        .collect();

    let mut objects = Vec::new();
    for manifest in &manifests {
        let group = manifest
            .api_version()
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned();
        let found = match kinds
            .get(client, manifest.api_version(), manifest.kind())
            .await
        {
            Ok(found) => found,
            Err(error) => {
                outcome.failure = Some(format!(
                    "looking up {} {}: {error}",
                    manifest.api_version(),
                    manifest.kind()
                ));
                return outcome;
            }
        };
        let namespaced = match &found {
            Some((_, caps)) => caps.scope == Scope::Namespaced,
            None if new_kinds.contains(&(group, manifest.kind().to_owned())) => {
                // Defined by a CRD in this revision: its scope is in that CRD.
                manifests.iter().any(|m| {
                    m.kind() == "CustomResourceDefinition"
                        && m.object["spec"]["names"]["kind"] == manifest.kind()
                        && m.object["spec"]["scope"] == "Namespaced"
                })
            }
            None => {
                outcome.failure = Some(format!(
                    "{}:{} the cluster has no kind {} in {}: install its CRD first, or add it to the repository",
                    manifest.file,
                    manifest.index,
                    manifest.kind(),
                    manifest.api_version()
                ));
                return outcome;
            }
        };
        let object = stamp(
            manifest,
            owner,
            revision,
            namespaced.then_some(default_namespace),
        );
        objects.push((object, found.is_some()));
    }

    let rollout_routes = match rollout_routes(client, &objects).await {
        Ok(routes) => routes,
        Err(message) => {
            outcome.failure = Some(message);
            return outcome;
        }
    };

    // Nothing is applied unless everything passes the API server's own checks.
    for (object, known) in &objects {
        let namespace = object["metadata"]["namespace"].as_str();
        if !known {
            continue;
        }
        if let Some(namespace) = namespace
            && new_namespaces.contains(namespace)
            && !namespace_exists(client, namespace).await
        {
            continue;
        }
        let entry = inventory::entry(object);
        let Ok(Some((resource, caps))) = kinds.get(client, &entry.api_version, &entry.kind).await
        else {
            continue;
        };
        let api = api_for(client, &resource, &caps, namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        if let Err(error) = api.patch(&entry.name, &params, &Patch::Apply(object)).await {
            outcome.failure = Some(format!(
                "{} was refused by the API server (dry run): {}",
                describe(object),
                api_message(&error)
            ));
            return outcome;
        }
    }

    let mut applied = Vec::new();
    for (object, _) in &objects {
        let entry = inventory::entry(object);
        let found = match kinds.get(client, &entry.api_version, &entry.kind).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                // A kind whose CRD was applied a moment ago may take a moment to be served.
                kinds = Kinds::default();
                match wait_for_kind(client, &mut kinds, &entry).await {
                    Some(found) => found,
                    None => {
                        outcome.failure = Some(format!(
                            "{}: its kind is not served yet after applying its CRD",
                            describe(object)
                        ));
                        break;
                    }
                }
            }
            Err(error) => {
                outcome.failure = Some(format!(
                    "looking up {} {}: {error}",
                    entry.api_version, entry.kind
                ));
                break;
            }
        };
        let api = api_for(client, &found.0, &found.1, entry.namespace.as_deref());
        let rollout_services = match (&entry.kind[..], &entry.namespace) {
            ("HTTPRoute", Some(namespace)) => rollout_routes.services(namespace, &entry.name),
            _ => None,
        };
        match apply_one(&api, &entry.name, object, rollout_services).await {
            Ok(()) => applied.push(entry),
            Err(error) => {
                outcome.failure = Some(format!(
                    "applying {}: {}",
                    describe(object),
                    api_message(&error)
                ));
                break;
            }
        }
    }
    outcome.applied = applied.len();
    if outcome.failure.is_some() || !prune {
        outcome.inventory = after_attempt(old, &applied, &[]);
        return outcome;
    }

    let new: Vec<InventoryEntry> = objects.iter().map(|(o, _)| inventory::entry(o)).collect();
    let mut pruned = Vec::new();
    for entry in to_prune(old, &new) {
        let found = match kinds.get(client, &entry.api_version, &entry.kind).await {
            Ok(Some(found)) => found,
            // The kind itself is gone (its CRD pruned first): so are its objects.
            Ok(None) => {
                pruned.push(entry);
                continue;
            }
            Err(error) => {
                outcome.failure = Some(format!(
                    "looking up {} {} to prune it: {error}",
                    entry.api_version, entry.kind
                ));
                break;
            }
        };
        let api = api_for(client, &found.0, &found.1, entry.namespace.as_deref());
        match api.delete(&entry.name, &DeleteParams::background()).await {
            Ok(_) => pruned.push(entry),
            Err(kube::Error::Api(status)) if status.code == 404 => pruned.push(entry),
            Err(error) => {
                outcome.failure = Some(format!(
                    "pruning {} {}: {}",
                    entry.kind,
                    entry.name,
                    api_message(&error)
                ));
                break;
            }
        }
    }
    outcome.pruned = pruned.len();
    outcome.inventory = after_attempt(old, &applied, &pruned);
    outcome
}

/// The routes whose weights Rollouts set: those of the revision's own Rollouts and of the
/// Rollouts already in each namespace the revision puts an HTTPRoute in.
async fn rollout_routes(
    client: &Client,
    objects: &[(Value, bool)],
) -> Result<RolloutRoutes, String> {
    let mut routes = RolloutRoutes::default();
    let mut route_namespaces = BTreeSet::new();
    for (object, _) in objects {
        let entry = inventory::entry(object);
        let namespace = entry.namespace.as_deref().unwrap_or_default();
        match (&entry.kind[..], entry.api_version.split('/').next()) {
            ("Rollout", Some("weir.dev")) => routes.add(object, namespace),
            ("HTTPRoute", _) => {
                route_namespaces.insert(namespace.to_owned());
            }
            _ => {}
        }
    }
    for namespace in route_namespaces {
        let api: Api<Rollout> = Api::namespaced(client.clone(), &namespace);
        let live = api.list(&Default::default()).await.map_err(|error| {
            format!(
                "listing the Rollouts in namespace {namespace}, whose route weights Git must not move: {}",
                api_message(&error)
            )
        })?;
        for rollout in live {
            let value = serde_json::to_value(&rollout).unwrap_or_default();
            routes.add(&value, &namespace);
        }
    }
    Ok(routes)
}

/// Server-side applies one object. A route a Rollout splits traffic on keeps its live weights
/// (see `ownership`), guarded by the live resourceVersion: a weight change between the read
/// and the apply fails the apply with 409 instead of being undone, and the route is read
/// again.
async fn apply_one(
    api: &Api<DynamicObject>,
    name: &str,
    object: &Value,
    rollout_services: Option<&BTreeSet<String>>,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let Some(services) = rollout_services else {
        return api
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map(drop);
    };
    let mut conflicts = 0;
    loop {
        let mut object = object.clone();
        if let Some(live) = api.get_opt(name).await? {
            let live = serde_json::to_value(&live).map_err(kube::Error::SerdeError)?;
            keep_live_weights(&mut object, &live, services);
            object["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        }
        match api.patch(name, &params, &Patch::Apply(&object)).await {
            Err(kube::Error::Api(status)) if status.code == 409 && conflicts < 3 => {
                conflicts += 1;
            }
            result => return result.map(drop),
        }
    }
}

async fn namespace_exists(client: &Client, namespace: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    matches!(api.get_opt(namespace).await, Ok(Some(_)))
}

async fn wait_for_kind(
    client: &Client,
    kinds: &mut Kinds,
    entry: &InventoryEntry,
) -> Option<(ApiResource, ApiCapabilities)> {
    for _ in 0..50 {
        if let Ok(Some(found)) = kinds.get(client, &entry.api_version, &entry.kind).await {
            return Some(found);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// The API server's own words, without kube's wrapping.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
