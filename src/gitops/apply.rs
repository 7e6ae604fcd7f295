//! Applying a rendered revision: every object checked by a server-side dry run first, then
//! applied in order (Namespaces, CRDs, the rest) with server-side apply as `weir-sync`, then
//! what left Git pruned. The inventory that comes back is right even when an attempt stops
//! half-way.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, ResourceExt, discovery};
use serde_json::Value;

use super::drift;
use super::error::SyncError;
use super::inventory::{self, after_attempt, apply_order, group_of, stamp, to_prune};
use super::ownership::{ROUTE_KINDS, RolloutRoutes, keep_live_weights};
use super::render::Manifest;
use super::tenancy::{self, Identity, Placement, Policy};
use crate::api::Rollout;
use crate::api::contract::{GITSYNC_ANNOTATION, SYNC_MANAGER};
use crate::api::gitsync::InventoryEntry;
use crate::runtime::leader::Term;
use crate::runtime::scoped_api;
use crate::ssa_defaults;

/// What an attempt did, whether it finished or not.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The inventory to record: never missing an object that may still exist.
    pub inventory: Vec<InventoryEntry>,
    pub applied: usize,
    /// Objects whose apply would have changed nothing, so none was sent.
    pub unchanged: usize,
    pub pruned: usize,
    /// Why the attempt stopped, naming the object; forbidden when the GitSync may not do
    /// it (weir's own confinement, or the API server's RBAC for the identity it acts as).
    pub failure: Option<SyncError>,
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

fn describe_entry(entry: &InventoryEntry) -> String {
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

/// One GitSync's attempt to make the cluster equal to one revision.
pub struct Applier<'a> {
    /// Acts as the GitSync's identity: every dry run, apply, read and prune.
    pub client: &'a Client,
    /// Who `client` is, for refusals.
    pub identity: &'a Identity,
    /// The controller's own client: reads the Rollouts whose route weights Git must keep,
    /// which may be in namespaces the GitSync's identity cannot read. Never writes.
    pub reader: &'a Client,
    pub policy: &'a Policy,
    /// Checked before every write: a replica that lost the lease, or a reconcile that began
    /// in an earlier term, stops at once.
    pub term: &'a Term,
    /// The namespace the controller watches (None: all), where Rollouts are looked for.
    pub scope: Option<&'a str>,
    /// The GitSync, `namespace/name`.
    pub owner: &'a str,
    /// The GitSync's namespace: the default for namespaced objects.
    pub namespace: &'a str,
    pub revision: &'a str,
    pub prune: bool,
}

/// Applies `manifests` and prunes what left `old`. Every object is first checked by a
/// server-side dry run. Objects that need a Namespace or a kind this revision brings cannot
/// be checked before those exist: then the revision's Namespaces and CRDs are applied, those
/// objects checked, and only then the rest applied. A bad object therefore leaves at most the
/// revision's Namespaces and CRDs behind, and never half of the rest.
pub async fn sync(
    target: &Applier<'_>,
    mut manifests: Vec<Manifest>,
    old: &[InventoryEntry],
) -> Outcome {
    apply_order(&mut manifests);
    let mut run = Run::new(target);
    let mut outcome = Outcome {
        inventory: old.to_vec(),
        ..Outcome::default()
    };
    let objects = match run.stamp(&manifests).await {
        Ok(objects) => objects,
        Err(error) => {
            outcome.failure = Some(error);
            return outcome;
        }
    };
    let result = run.apply(&objects).await;
    outcome.applied = run.applied;
    outcome.unchanged = run.unchanged;
    if let Err(error) = result {
        outcome.failure = Some(error);
        outcome.inventory = after_attempt(old, &run.touched, &[]);
        return outcome;
    }
    if !target.prune {
        outcome.inventory = after_attempt(old, &run.touched, &[]);
        return outcome;
    }
    let new: Vec<InventoryEntry> = objects.iter().map(|o| inventory::entry(&o.value)).collect();
    let mut pruned = Vec::new();
    let result = run.prune(to_prune(old, &new), &mut pruned).await;
    outcome.pruned = pruned.len();
    outcome.failure = result.err();
    outcome.inventory = after_attempt(old, &run.touched, &pruned);
    outcome
}

/// What applying a revision would do, found by dry runs; nothing is written.
#[derive(Debug, Default)]
pub struct Preview {
    /// Each object of the revision, in apply order, with what would become of it.
    pub objects: Vec<(InventoryEntry, drift::Change)>,
    /// What the new revision's objects would look like when created, by object.
    pub created: BTreeMap<InventoryEntry, String>,
    /// What would be pruned (with `spec.prune`).
    pub pruned: Vec<InventoryEntry>,
}

/// What `sync` would do with `manifests`, from server-side dry runs as the GitSync's
/// identity compared with the live objects. An object whose Namespace or kind the revision
/// itself brings cannot be dry-run before those exist: it is shown as it is in Git.
pub async fn preview(
    target: &Applier<'_>,
    mut manifests: Vec<Manifest>,
    old: &[InventoryEntry],
) -> Result<Preview, SyncError> {
    apply_order(&mut manifests);
    let mut run = Run::new(target);
    let objects = run.stamp(&manifests).await?;
    let routes = rollout_routes(target.reader, target.scope, &objects).await?;
    let mut preview = Preview::default();
    for object in &objects {
        let entry = inventory::entry(&object.value);
        let title = describe_entry(&entry);
        if !object.checkable {
            preview
                .created
                .insert(entry.clone(), drift::created(&object.value));
            preview.objects.push((entry, drift::Change::Create));
            continue;
        }
        run.dry_run(&object.value, &routes).await?;
        let api = run.api(&entry).await?;
        let live = api
            .get_opt(&entry.name)
            .await
            .map_err(|error| run.refused(format!("reading {title}"), &error))?;
        let live = live
            .map(|live| {
                serde_json::to_value(&live).map_err(|e| SyncError::invalid(format!("{title}: {e}")))
            })
            .transpose()?;
        let after = run.dry_runs.get(&entry).cloned().unwrap_or_default();
        let after = match &live {
            Some(live) => {
                as_applied(Cow::Owned(after), live, route_services(&routes, &entry)).into_owned()
            }
            None => after,
        };
        let change = drift::change(&title, live.as_ref(), &after);
        if change == drift::Change::Create {
            preview
                .created
                .insert(entry.clone(), drift::created(&after));
        }
        preview.objects.push((entry, change));
    }
    if target.prune {
        let new: Vec<InventoryEntry> = objects.iter().map(|o| inventory::entry(&o.value)).collect();
        for entry in to_prune(old, &new) {
            // What prune would delete; the rest only leaves the inventory.
            if run.ours_to_delete(&entry).await?.is_some() {
                preview.pruned.push(entry);
            }
        }
    }
    Ok(preview)
}

/// A stamped object, and whether its kind and namespace exist yet.
struct Object {
    value: Value,
    checkable: bool,
}

struct Run<'t, 'a> {
    target: &'t Applier<'a>,
    kinds: Kinds,
    /// Every object an apply may have reached, for the inventory.
    touched: Vec<InventoryEntry>,
    applied: usize,
    unchanged: usize,
    /// What each object would become, from its dry run: an apply that would change nothing
    /// is not sent.
    dry_runs: BTreeMap<InventoryEntry, Value>,
}

impl<'t, 'a> Run<'t, 'a> {
    fn new(target: &'t Applier<'a>) -> Self {
        Run {
            target,
            kinds: Kinds::default(),
            touched: Vec::new(),
            applied: 0,
            unchanged: 0,
            dry_runs: BTreeMap::new(),
        }
    }

    /// Stamps each manifest, learning its kind's scope (from the cluster, or from a CRD in
    /// the revision). Any object outside the GitSync's namespace refuses the whole
    /// revision here, before anything of it is checked or applied, naming every such object.
    async fn stamp(&mut self, manifests: &[Manifest]) -> Result<Vec<Object>, SyncError> {
        let client = self.target.client;
        let new_namespaces: BTreeSet<&str> = manifests
            .iter()
            .filter(|m| m.kind() == "Namespace")
            .map(|m| m.name())
            .collect();
        let mut existing_namespaces = BTreeMap::new();
        let mut objects = Vec::new();
        let mut refusals = Vec::new();
        for manifest in manifests {
            let found = self
                .kinds
                .get(client, manifest.api_version(), manifest.kind())
                .await
                .map_err(|error| {
                    let what = format!(
                        "looking up {} {}: {error}",
                        manifest.api_version(),
                        manifest.kind()
                    );
                    SyncError::api(what, &error)
                })?;
            let namespaced = match &found {
                Some((_, caps)) => caps.scope == Scope::Namespaced,
                None => {
                    // Defined by a CRD in this revision: its scope is in that CRD.
                    let crd = manifests.iter().find(|m| {
                        m.kind() == "CustomResourceDefinition"
                            && m.object["spec"]["group"].as_str()
                                == Some(group_of(manifest.api_version()))
                            && m.object["spec"]["names"]["kind"].as_str() == Some(manifest.kind())
                    });
                    let Some(crd) = crd else {
                        return Err(SyncError::invalid(format!(
                            "{} (document {}): the cluster has no kind {} in {}: install its CRD first, or add it to the repository",
                            manifest.file,
                            manifest.index,
                            manifest.kind(),
                            manifest.api_version()
                        )));
                    };
                    crd.object["spec"]["scope"] == "Namespaced"
                }
            };
            let placement = match namespaced {
                true => Placement::Namespaced(manifest.namespace()),
                false => Placement::ClusterScoped,
            };
            let what = format!(
                "{} {} ({}, document {})",
                manifest.kind(),
                manifest.name(),
                manifest.file,
                manifest.index
            );
            if let Some(refusal) =
                tenancy::confine(self.target.policy, self.target.namespace, &what, placement)
                    .or_else(|| {
                        tenancy::refuse_metric_addresses(
                            self.target.policy,
                            &what,
                            &manifest.object,
                        )
                    })
            {
                refusals.push(refusal);
                continue;
            }
            let mut value = stamp(
                manifest,
                self.target.owner,
                self.target.revision,
                namespaced.then_some(self.target.namespace),
            );
            ssa_defaults::fill(&mut value);
            let mut checkable = found.is_some();
            if let Some(namespace) = value["metadata"]["namespace"].as_str()
                && new_namespaces.contains(namespace)
            {
                let exists = match existing_namespaces.get(namespace) {
                    Some(exists) => *exists,
                    None => {
                        // Read as the controller: the GitSync's identity may not read
                        // Namespaces, and a 403 must not read as "does not exist".
                        let exists = namespace_exists(self.target.reader, namespace).await;
                        existing_namespaces.insert(namespace.to_owned(), exists);
                        exists
                    }
                };
                checkable &= exists;
            }
            objects.push(Object { value, checkable });
        }
        if !refusals.is_empty() {
            return Err(SyncError::forbidden(format!(
                "{} refused, so nothing of this revision was applied: {}",
                match refusals.len() {
                    1 => "1 object".to_owned(),
                    n => format!("{n} objects"),
                },
                refusals.join("; ")
            )));
        }
        Ok(objects)
    }

    /// `what` failed with `error`, in the API server's words; a refusal of the GitSync's
    /// identity says who weir acted as.
    fn refused(&self, what: String, error: &kube::Error) -> SyncError {
        match error {
            kube::Error::Api(status) if status.code == 403 => SyncError::forbidden(format!(
                "{what}: {} (weir acted as {})",
                status.message,
                self.target.identity.describe()
            )),
            other => SyncError::api(format!("{what}: {}", api_message(other)), other),
        }
    }

    async fn apply(&mut self, objects: &[Object]) -> Result<(), SyncError> {
        let routes = rollout_routes(self.target.reader, self.target.scope, objects).await?;
        for object in objects.iter().filter(|o| o.checkable) {
            self.dry_run(&object.value, &routes).await?;
        }
        let foundation = objects
            .iter()
            .take_while(|o| is_foundation(&o.value))
            .count();
        let (first, rest) = objects.split_at(foundation);
        if rest.iter().any(|o| !o.checkable) {
            for object in first {
                self.apply_one(&object.value, &routes).await?;
            }
            for object in rest.iter().filter(|o| !o.checkable) {
                self.dry_run(&object.value, &routes).await?;
            }
            for object in rest {
                self.apply_one(&object.value, &routes).await?;
            }
        } else {
            for object in objects {
                self.apply_one(&object.value, &routes).await?;
            }
        }
        Ok(())
    }

    /// The kind's API, waiting briefly for a kind whose CRD was applied a moment ago.
    async fn api(&mut self, entry: &InventoryEntry) -> Result<Api<DynamicObject>, SyncError> {
        let client = self.target.client;
        let found = match self
            .kinds
            .get(client, &entry.api_version, &entry.kind)
            .await
        {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                self.kinds = Kinds::default();
                wait_for_kind(client, &mut self.kinds, entry).await
            }
            Err(error) => {
                let what = format!("looking up {} {}: {error}", entry.api_version, entry.kind);
                return Err(SyncError::api(what, &error));
            }
        };
        // The CRD was applied: its kind may be served in a moment.
        let (resource, caps) = found.ok_or_else(|| {
            SyncError::transient(format!(
                "{}: its kind is not served yet after applying its CRD",
                describe_entry(entry)
            ))
        })?;
        Ok(api_for(
            client,
            &resource,
            &caps,
            entry.namespace.as_deref(),
        ))
    }

    async fn dry_run(&mut self, object: &Value, routes: &RolloutRoutes) -> Result<(), SyncError> {
        let entry = inventory::entry(object);
        let api = self.api(&entry).await?;
        let params = PatchParams::apply(SYNC_MANAGER).force().dry_run();
        // A route a Rollout splits is dry-run with its live weights, as it is applied: with
        // Git's, the dry run would take the weights from the rollout engine, and read as
        // drift at every interval of a canary.
        let mut object = Cow::Borrowed(object);
        if let Some(services) = route_services(routes, &entry)
            && let Ok(Some(live)) = api.get_opt(&entry.name).await
            && let Ok(live) = serde_json::to_value(&live)
        {
            keep_live_weights(object.to_mut(), &live, services);
        }
        match api
            .patch(&entry.name, &params, &Patch::Apply(&*object))
            .await
        {
            Ok(after) => {
                if let Ok(after) = serde_json::to_value(&after) {
                    self.dry_runs.insert(entry, after);
                }
                Ok(())
            }
            Err(error) => Err(self.refused(
                format!(
                    "{} was refused by the API server (dry run)",
                    describe_entry(&entry)
                ),
                &error,
            )),
        }
    }

    fn still_leading(&self) -> Result<(), SyncError> {
        if self.target.term.holds() {
            Ok(())
        } else {
            let lost = crate::runtime::error::Error::NotLeader;
            Err(SyncError::transient(lost.to_string()))
        }
    }

    async fn apply_one(&mut self, object: &Value, routes: &RolloutRoutes) -> Result<(), SyncError> {
        self.still_leading()?;
        let entry = inventory::entry(object);
        let api = self.api(&entry).await?;
        let rollout_services = route_services(routes, &entry);
        if self
            .unchanged_since_dry_run(&api, &entry, rollout_services)
            .await
        {
            self.unchanged += 1;
            self.touched.push(entry);
            return Ok(());
        }
        match apply_keeping_weights(&api, &entry.name, object, rollout_services).await {
            Ok(()) => {
                self.applied += 1;
                self.touched.push(entry);
                Ok(())
            }
            Err(error) => {
                // Refused by the API server: not created. Anything else (a timeout, a lost
                // connection) may have reached it, so the inventory keeps the object.
                if !matches!(error, kube::Error::Api(_)) {
                    self.touched.push(entry.clone());
                }
                Err(self.refused(format!("applying {}", describe_entry(&entry)), &error))
            }
        }
    }

    /// Whether the live object already is what its dry run said the apply would make it.
    /// Any doubt (no dry run kept, the object unreadable) sends the apply.
    async fn unchanged_since_dry_run(
        &self,
        api: &Api<DynamicObject>,
        entry: &InventoryEntry,
        rollout_services: Option<&BTreeSet<String>>,
    ) -> bool {
        let Some(after) = self.dry_runs.get(entry) else {
            return false;
        };
        let Ok(Some(live)) = api.get_opt(&entry.name).await else {
            return false;
        };
        let Ok(live) = serde_json::to_value(&live) else {
            return false;
        };
        !drift::drifted(
            &live,
            &as_applied(Cow::Borrowed(after), &live, rollout_services),
        )
    }

    /// The API to delete `entry` with, when it is this GitSync's to delete: None when its
    /// kind or the object itself is gone, or another GitSync now applies it (then it only
    /// leaves the inventory).
    async fn ours_to_delete(
        &mut self,
        entry: &InventoryEntry,
    ) -> Result<Option<Api<DynamicObject>>, SyncError> {
        let found = self
            .kinds
            .get(self.target.client, &entry.api_version, &entry.kind)
            .await
            .map_err(|error| {
                let what = format!(
                    "looking up {} {} to prune it: {error}",
                    entry.api_version, entry.kind
                );
                SyncError::api(what, &error)
            })?;
        // The kind itself is gone (its CRD pruned first): so are its objects.
        let Some((resource, caps)) = found else {
            return Ok(None);
        };
        let api = api_for(
            self.target.client,
            &resource,
            &caps,
            entry.namespace.as_deref(),
        );
        let live = api.get_opt(&entry.name).await.map_err(|error| {
            self.refused(
                format!("reading {} to prune it", describe_entry(entry)),
                &error,
            )
        })?;
        let owner = live.as_ref().and_then(|l| {
            l.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GITSYNC_ANNOTATION).cloned())
        });
        let ours = live.is_some() && owner.as_deref().is_none_or(|o| o == self.target.owner);
        Ok(ours.then_some(api))
    }

    /// Deletes what left Git, in order, recording each one gone. An object another GitSync
    /// now applies is no longer this one's to delete: it only leaves the inventory.
    async fn prune(
        &mut self,
        gone: Vec<InventoryEntry>,
        pruned: &mut Vec<InventoryEntry>,
    ) -> Result<(), SyncError> {
        for entry in gone {
            self.still_leading()?;
            let Some(api) = self.ours_to_delete(&entry).await? else {
                pruned.push(entry);
                continue;
            };
            match api.delete(&entry.name, &DeleteParams::background()).await {
                Ok(_) => pruned.push(entry),
                Err(kube::Error::Api(status)) if status.code == 404 => pruned.push(entry),
                Err(error) => {
                    return Err(self.refused(format!("pruning {}", describe_entry(&entry)), &error));
                }
            }
        }
        Ok(())
    }
}

/// The Services whose weights a Rollout sets in `entry`, when it is such a route.
fn route_services<'r>(
    routes: &'r RolloutRoutes,
    entry: &InventoryEntry,
) -> Option<&'r BTreeSet<String>> {
    match (entry.kind.as_str(), &entry.namespace) {
        (kind, Some(namespace)) => routes.owned(kind, namespace, &entry.name),
        _ => None,
    }
}

/// What an apply whose dry run returned `after` makes of `live`: the weights a Rollout owns
/// are the live ones whatever Git says (`ownership`).
fn as_applied<'v>(
    mut after: Cow<'v, Value>,
    live: &Value,
    services: Option<&BTreeSet<String>>,
) -> Cow<'v, Value> {
    if let Some(services) = services {
        keep_live_weights(after.to_mut(), live, services);
    }
    after
}

fn is_foundation(object: &Value) -> bool {
    matches!(
        object["kind"].as_str(),
        Some("Namespace" | "CustomResourceDefinition")
    )
}

/// The routes whose weights Rollouts set: those of the revision's own Rollouts and of every
/// Rollout the controller watches (a Rollout may name a route in another namespace). Looked
/// up only when the revision has an object of a `ROUTE_KINDS` kind.
async fn rollout_routes(
    client: &Client,
    scope: Option<&str>,
    objects: &[Object],
) -> Result<RolloutRoutes, SyncError> {
    let mut routes = RolloutRoutes::default();
    let mut any_route = false;
    for object in objects {
        let entry = inventory::entry(&object.value);
        let namespace = entry.namespace.as_deref().unwrap_or_default();
        match (&entry.kind[..], group_of(&entry.api_version)) {
            ("Rollout", "weir.dev") => routes.add(&object.value, namespace),
            (kind, _) if ROUTE_KINDS.contains(&kind) => any_route = true,
            _ => {}
        }
    }
    if !any_route {
        return Ok(routes);
    }
    let live = scoped_api::<Rollout>(client, scope)
        .list(&Default::default())
        .await
        .map_err(|error| {
            let what = format!(
                "listing Rollouts, whose route weights Git must not move: {}",
                api_message(&error)
            );
            SyncError::api(what, &error)
        })?;
    for rollout in live {
        let namespace = rollout.namespace().unwrap_or_default();
        let value = serde_json::to_value(&rollout).unwrap_or_default();
        routes.add(&value, &namespace);
    }
    Ok(routes)
}

/// Server-side applies one object. A route a Rollout splits traffic on keeps its live weights
/// (see `ownership`), guarded by the live resourceVersion: a weight change between the read
/// and the apply fails the apply with 409 instead of being undone, and the route is read
/// again.
async fn apply_keeping_weights(
    api: &Api<DynamicObject>,
    name: &str,
    object: &Value,
    rollout_services: Option<&BTreeSet<String>>,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(SYNC_MANAGER).force();
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
