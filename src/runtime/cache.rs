//! The controllers' caches: watches whose objects are trimmed to what the reconcilers read
//! as they are decoded, so memory grows with what matters, not with managedFields, pod
//! templates or the history of every measurement, and a start's list is never decoded whole
//! untrimmed.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::leader::{Holdings, Leadership};

/// A store filled by a watch, with what readers need to wait on it.
#[derive(Clone)]
pub struct Cache<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    /// Set once the first complete list is in: from then on the store is whole (if behind).
    synced: Arc<AtomicBool>,
    /// Whether the watch's last attempt failed (a kind the cluster lacks, a refusal): no
    /// list is under way to wait for.
    failing: Arc<AtomicBool>,
    /// Woken on every event the store has taken.
    changed: Arc<Notify>,
    /// The highest resourceVersion among the objects the store holds or has let go: it has
    /// taken every change of its watch before that one.
    seen: Arc<AtomicU64>,
    /// The same, for the list being taken: the store swaps it in whole at its end
    /// (`InitDone`), and keeps what it had until then.
    listing: Arc<AtomicU64>,
    /// A version the API server was at when the current [`Epoch`] began; see
    /// [`Cache::has_seen`].
    floor: Arc<Mutex<Floor>>,
    /// The objects by one label's value, when [`Cache::indexed_by`] asked for it.
    index: Arc<Mutex<Option<LabelIndex>>>,
    /// For a cache that drops the objects of shards this replica does not hold: whether its
    /// last list was made under the shards it holds now.
    whole: Option<Arc<ShardSync>>,
    /// For a cache of owners: moves whenever one of its objects changes shards, or its first
    /// list is in (see [`Sharded::moves`]).
    owner_moves: Option<tokio::sync::watch::Receiver<u64>>,
}

/// The names of a store's objects by (namespace, value of one label): a look at one
/// Rollout's objects finds them without going through every object of the kind, which at
/// 10,000 Rollouts made each look a pass over 20,000 ReplicaSets.
#[derive(Debug)]
struct LabelIndex {
    label: &'static str,
    /// Sorted. A Rollout owns a handful of objects of a kind: a vector of them is a tenth of
    /// a B-tree's smallest node.
    names: HashMap<(String, String), Vec<String>>,
    /// Each object's entry in `names`, to move it when it is relabelled or deleted.
    values: HashMap<(String, String), String>,
}

impl LabelIndex {
    fn new(label: &'static str) -> LabelIndex {
        LabelIndex {
            label,
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(value) = self.values.remove(&key) {
            let entry = (key.0, value);
            if let Some(names) = self.names.get_mut(&entry) {
                if let Ok(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
                    names.remove(at);
                }
                if names.is_empty() {
                    self.names.remove(&entry);
                }
            }
        }
    }

    fn insert(&mut self, meta: &kube::api::ObjectMeta) {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let Some(name) = meta.name.clone() else {
            return;
        };
        self.remove(&namespace, &name);
        let Some(value) = meta.labels.as_ref().and_then(|l| l.get(self.label)) else {
            return;
        };
        let names = self
            .names
            .entry((namespace.clone(), value.clone()))
            .or_default();
        // Not there: `remove` above took it out.
        if let Err(at) = names.binary_search(&name) {
            names.insert(at, name.clone());
        }
        self.values.insert((namespace, name), value.clone());
    }

    fn rebuild<K: Resource>(&mut self, objects: &[Arc<K>]) {
        self.names.clear();
        self.values.clear();
        for object in objects {
            self.insert(object.meta());
        }
        self.names.shrink_to_fit();
        self.values.shrink_to_fit();
    }
}

/// Since when a cache may lack writes of others: the last shard this process gained (see
/// [`crate::runtime::leader::Leadership::gains`]), and since it the outages it heard the
/// API server again after (see [`crate::runtime::watch::Health::outages_ended`]), since what
/// changed while a watch was broken reaches its cache only with the next list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch {
    /// [`crate::runtime::leader::Leadership::gains`] when the read began.
    pub term: u64,
    pub outages: u64,
}

/// The floor taken in one epoch.
#[derive(Clone, Copy, Debug, Default)]
struct Floor {
    epoch: Epoch,
    version: u64,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The first list is in and, for a cache that drops the objects of shards this replica
    /// does not hold, the last list was made under the shards it holds and the owners' shards
    /// as they are now: a shard just gained, or an owner just moved into one, makes it wait
    /// for the next list.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) && self.whole.as_ref().is_none_or(|w| w.is_whole())
    }

    /// For a cache of owners, what moves whenever one of its objects changes shards.
    pub fn owner_moves(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.owner_moves.clone()
    }

    /// Waits at most `limit` for the first list to be in, false when it is not: right after a
    /// start, a reconcile reads its Rollout's objects from the list under way rather than
    /// with one request each, so a restart costs a list per kind, not a read per Rollout.
    /// Waits for no watch whose last attempt failed.
    pub async fn synced_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so an event between the look and the wait wakes it.
            notified.as_mut().enable();
            if self.is_synced() {
                return true;
            }
            if self.failing.load(Ordering::Acquire) {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_synced();
            }
        }
    }

    /// Notes whether the watch's last attempt failed, waking those waiting on the list.
    fn failed(&self, failing: bool) {
        if self.failing.swap(failing, Ordering::AcqRel) != failing {
            self.changed.notify_waiters();
        }
    }

    /// Notes that the store has taken `event`.
    fn took(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.listing.store(0, Ordering::Release),
            // Buffered by the store until the list ends: nothing a reader can see yet.
            watcher::Event::InitApply(object) => {
                if let Some(version) = version_of(object) {
                    self.listing.fetch_max(version, Ordering::AcqRel);
                }
            }
            watcher::Event::InitDone => {
                // A new list replaces what the store held, and may be older than the events
                // before it (the watch cache of another API server): it alone says what the
                // store has taken.
                self.seen
                    .store(self.listing.load(Ordering::Acquire), Ordering::Release);
                if let Some(whole) = &self.whole {
                    whole.listed();
                }
                if let Some(index) = self.index().as_mut() {
                    index.rebuild(&self.store.state());
                }
                self.synced.store(true, Ordering::Release);
                self.changed.notify_waiters();
                super::give_back_freed_memory();
            }
            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                if let Some(index) = self.index().as_mut() {
                    match event {
                        watcher::Event::Apply(_) => index.insert(object.meta()),
                        _ => index.remove(
                            object.meta().namespace.as_deref().unwrap_or_default(),
                            &object.name_any(),
                        ),
                    }
                }
                if let Some(version) = version_of(object) {
                    self.seen.fetch_max(version, Ordering::AcqRel);
                }
                self.changed.notify_waiters();
            }
        }
    }

    /// Notes an object of the list under way that the store does not keep: the list has
    /// still taken every change before its version, which a fresh read's floor counts on.
    fn passed_over(&self, version: u64) {
        self.listing.fetch_max(version, Ordering::AcqRel);
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Option<LabelIndex>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the objects indexed by the value of `label`, for [`Cache::labelled`].
    #[must_use]
    pub fn indexed_by(self, label: &'static str) -> Self {
        let mut index = LabelIndex::new(label);
        index.rebuild(&self.store.state());
        *self.index() = Some(index);
        self
    }

    /// The object `namespace`/`name` as the store holds it, once the first list is in (None
    /// before: a cache still listing cannot tell an object it lacks from one not listed yet).
    pub fn synced_get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        if !self.is_synced() {
            return None;
        }
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The objects of `namespace` whose `label` is `value`, as the store holds them: through
    /// the index when the cache keeps one for `label`, else by a pass over every object.
    pub fn labelled(&self, namespace: &str, label: &str, value: &str) -> Vec<Arc<K>> {
        let matches = |object: &K| {
            object.meta().namespace.as_deref() == Some(namespace)
                && object.labels().get(label).map(String::as_str) == Some(value)
        };
        let names: Option<Vec<String>> = self
            .index()
            .as_ref()
            .filter(|index| index.label == label)
            .map(|index| {
                index
                    .names
                    .get(&(namespace.to_owned(), value.to_owned()))
                    .map(|names| names.to_vec())
                    .unwrap_or_default()
            });
        match names {
            // Checked again: an event may land between the index and the store.
            Some(names) => names
                .iter()
                .filter_map(|name| {
                    self.store
                        .get(&ObjectRef::new(name).within(namespace))
                        .filter(|object| matches(object))
                })
                .collect(),
            None => self.store.state_filter(matches),
        }
    }

    /// Whether the store has taken every change of its watch up to `version`. False when it
    /// cannot tell: with no change since, the objects it holds are all older than that.
    pub fn has_seen(&self, version: u64) -> bool {
        self.is_synced() && self.seen.load(Ordering::Acquire) >= version
    }

    /// The version the first reads of `epoch` must see, if taken in that epoch: one taken
    /// in an earlier epoch says nothing of what another leader wrote since, or of what
    /// changed while the watch could not hear the API server.
    pub fn floor(&self, epoch: Epoch) -> Option<u64> {
        let floor = *self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        (floor.epoch == epoch && floor.version > 0).then_some(floor.version)
    }

    pub fn set_floor(&self, epoch: Epoch, version: u64) {
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        match epoch.cmp(&floor.epoch) {
            // A reader of an ended epoch: its floor is of no use to the current one.
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => floor.version = floor.version.max(version),
            std::cmp::Ordering::Greater => *floor = Floor { epoch, version },
        }
    }

    /// Waits at most `limit` for the store to have taken every change of its watch up to
    /// `resource_version` (a write of this process, say), false when it did not.
    pub async fn caught_up(&self, resource_version: &str, limit: Duration) -> bool {
        // resourceVersions are etcd revisions in every API server there is; a server that
        // says otherwise is answered by the API instead.
        let Ok(wanted) = resource_version.parse::<u64>() else {
            return false;
        };
        let holds = || self.has_seen(wanted);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so an event between the look and the wait wakes it.
            notified.as_mut().enable();
            if holds() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return holds();
            }
        }
    }
}

/// An object's resourceVersion as the number etcd gave it.
fn version_of<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_ref()?.parse().ok()
}

/// How one cache trims its kind. A type, not a function: the trimming happens while each
/// object is decoded, where serde passes nothing but types. The watch reads each object's
/// name, namespace and resourceVersion after the trim (to resume from it): a trim keeps them.
pub trait Trim<K>: Send + Sync + 'static {
    fn trim(object: &mut K);
}

/// For kinds read whole, apart from managedFields.
pub struct KeepAll;

impl<K> Trim<K> for KeepAll {
    fn trim(_: &mut K) {}
}

/// One object of `K`, trimmed by `T` as soon as it is decoded. A list is decoded into these:
/// when objects were trimmed only after their list was decoded whole, every object of it was
/// held untrimmed at once (10,000 Rollouts with their pod specs and managedFields, from one
/// response of the watch cache), and the trimmed copies lay in pieces among the freed space.
struct Decoded<K, T>(K, PhantomData<fn() -> T>);

impl<K: Clone, T> Clone for Decoded<K, T> {
    fn clone(&self) -> Self {
        Decoded(self.0.clone(), PhantomData)
    }
}

impl<K: std::fmt::Debug, T> std::fmt::Debug for Decoded<K, T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl<'de, K, T> serde::Deserialize<'de> for Decoded<K, T>
where
    K: Resource + serde::Deserialize<'de>,
    T: Trim<K>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = K::deserialize(deserializer)?;
        // A field manager's entry repeats every field it owns: on a Rollout applied from Git
        // that is the whole spec again, as a JSON tree. Writes go by name or by apply, never
        // by resending what was read, so nothing is lost by dropping it.
        object.meta_mut().managed_fields = None;
        T::trim(&mut object);
        Ok(Decoded(object, PhantomData))
    }
}

/// `K`'s own kind and address: only the decoding differs.
impl<K, T> Resource for Decoded<K, T>
where
    K: Resource<DynamicType = ()>,
{
    type DynamicType = ();
    // Any scope: the API is built from the caller's `Api<K>` and its namespace, if any.
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }

    fn url_path(dt: &(), namespace: Option<&str>) -> String {
        K::url_path(dt, namespace)
    }

    fn metadata_api() -> bool {
        K::metadata_api()
    }

    fn meta(&self) -> &kube::api::ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        self.0.meta_mut()
    }
}

fn decoded<K, T>(event: watcher::Event<Decoded<K, T>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(object.0),
        watcher::Event::Delete(object) => watcher::Event::Delete(object.0),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(object.0),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// What a replica's cache keeps of objects in shards it does not hold. The API cannot
/// select by shard (a shard is a hash of a namespace or of a label's value), so the list
/// brings every object and the cache trims the rest. When the shards this replica holds
/// change, the watch lists again once they have settled ([`SHARDS_SETTLE`]), so the objects
/// of a shard it gains come back whole, and those of one it lost are cut down.
pub struct Sharded<K> {
    pub leadership: Leadership,
    /// The shard an object is in; None while that cannot be told (an owner not seen yet):
    /// such an object is kept whole.
    pub shard_of: ShardOf<K>,
    /// What is kept of an object of a shard this replica does not hold.
    pub unheld: Unheld<K>,
    /// For a cache of owned objects, whose shard is their owner's: moves when an owner may
    /// have changed shards without an event of the objects it owns (relabelled, or first
    /// listed), and then the cache lists again and is not synced until it has.
    pub moves: Option<tokio::sync::watch::Receiver<u64>>,
    /// For a cache of owners: moved when one of its objects changes shards (seen against the
    /// copy the store holds) and when its first list is in; see [`Cache::owner_moves`].
    pub owner_moves: Option<tokio::sync::watch::Sender<u64>>,
}

/// The shard of an object, when it can be told.
pub type ShardOf<K> = Box<dyn Fn(&K) -> Option<u32> + Send + Sync>;

/// What a sharded cache keeps of an object of a shard this replica does not hold.
pub enum Unheld<K> {
    /// What `fn` leaves of it: for objects read in every shard (a Rollout's metadata and the
    /// status GitSyncs and notifications read).
    Stub(fn(&mut K)),
    /// Nothing: for objects only the replica holding their shard reads (what a Rollout owns).
    /// A cache that drops them is synced only while its last list was made under the shards
    /// this replica holds now ([`Cache::is_synced`]).
    Dropped,
}

/// How long the shards a replica holds must stay as they are before a sharded cache lists
/// again: replicas that start together hand shards about for a round or two, and one list
/// after them is enough.
pub const SHARDS_SETTLE: Duration = Duration::from_secs(1);

impl<K: Resource> Sharded<K> {
    fn held(&self, object: &K) -> bool {
        (self.shard_of)(object).is_none_or(|shard| self.leadership.holds_lease(shard))
    }

    /// `event` as the cache takes it: objects of shards held whole, the others as
    /// [`Sharded::unheld`] says (a dropped object's change deletes any copy the store has).
    fn event(&self, event: watcher::Event<K>) -> Option<watcher::Event<K>> {
        use watcher::Event::{Apply, Delete, InitApply};
        let stubbed = |stub: &fn(&mut K), mut object: K| {
            if !self.held(&object) {
                stub(&mut object);
            }
            object
        };
        match (event, &self.unheld) {
            (Apply(object), Unheld::Dropped) if !self.held(&object) => Some(Delete(object)),
            (InitApply(object), Unheld::Dropped) => self.held(&object).then_some(InitApply(object)),
            (Apply(object), Unheld::Stub(stub)) => Some(Apply(stubbed(stub, object))),
            (InitApply(object), Unheld::Stub(stub)) => Some(InitApply(stubbed(stub, object))),
            // Found by name: whatever the store holds goes.
            (other, _) => Some(other),
        }
    }

    /// For a cache of owners: whether `event` moves an owner to another shard than the
    /// store's copy is in, or completes a first list (owned objects seen before their owner
    /// were kept whole; now they can be told apart).
    fn moves_owner(&self, event: &watcher::Event<K>, store: &Store<K>, first: bool) -> bool
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => store
                .get(&ObjectRef::from_obj(object))
                .is_some_and(|stored| (self.shard_of)(&stored) != (self.shard_of)(object)),
            watcher::Event::InitDone => first,
            watcher::Event::Delete(_) | watcher::Event::Init => false,
        }
    }
}

/// Whether a cache that drops the objects of shards this replica does not hold was listed
/// under the shards it holds and the owners' moves it has heard of.
struct ShardSync {
    leadership: Leadership,
    moves: Option<tokio::sync::watch::Receiver<u64>>,
    /// What the stream under way was made under.
    making: Mutex<(Holdings, u64)>,
    /// What the store's last whole list was made under.
    listed: Mutex<Option<(Holdings, u64)>>,
}

impl ShardSync {
    fn moves(&self) -> u64 {
        self.moves.as_ref().map_or(0, |moves| *moves.borrow())
    }

    /// Taken before a stream is made: whatever it decodes sees shards held at least then.
    fn made(&self) {
        let now = (self.leadership.holdings(), self.moves());
        *self.making.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    fn listed(&self) {
        let making = self
            .making
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        *self.listed.lock().unwrap_or_else(PoisonError::into_inner) = Some(making);
    }

    fn is_whole(&self) -> bool {
        let listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        listed.as_ref().is_some_and(|(holdings, moves)| {
            holdings.cover(&self.leadership.holdings()) && *moves >= self.moves()
        })
    }
}

/// What of `event` the store of `cache`, sharded as `sharded` says, takes. For a cache of
/// owners, a move is noted in `moved` first (the store's copy is the one it moves from), to
/// be announced by [`announce_moves`] once the store has taken it; an object a list brings
/// that the store does not keep still counts as taken for the list's version.
fn sift<K>(
    sharded: &Sharded<K>,
    event: watcher::Event<K>,
    cache: &Cache<K>,
    moved: &AtomicBool,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if sharded.owner_moves.is_some() {
        // Not synced yet: the list this event may end is the first.
        let first_list = !cache.synced.load(Ordering::Acquire);
        if sharded.moves_owner(&event, &cache.store, first_list) {
            moved.store(true, Ordering::Release);
        }
    }
    let listed = match &event {
        watcher::Event::InitApply(object) => version_of(object),
        _ => None,
    };
    let taken = sharded.event(event);
    if let (None, Some(version)) = (&taken, listed) {
        cache.passed_over(version);
    }
    taken
}

/// After the store of a cache of owners took `event`: announces the moves [`sift`] noted.
/// Not before: the owned caches list again when told, and must find each owner in the shard
/// it moved to; a list's objects reach the store only when it ends (`InitDone`), so a move
/// seen in a list waits for its end.
fn announce_moves<K>(
    owner_moves: Option<&tokio::sync::watch::Sender<u64>>,
    event: &watcher::Event<K>,
    moved: &AtomicBool,
) {
    let in_store = !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
    if let Some(owner_moves) = owner_moves
        && in_store
        && moved.swap(false, Ordering::AcqRel)
    {
        owner_moves.send_modify(|moves| *moves += 1);
    }
}

/// What a cache can hold: a kind the API serves, decoded from JSON, shared between tasks.
pub trait Cacheable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Cacheable for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A watch of `api` whose objects are trimmed by `T` as they are decoded, then kept in the
/// returned cache. The stream must be polled (a controller's trigger) for the cache to fill.
pub fn trimmed<K: Cacheable, T: Trim<K>>(
    api: Api<K>,
    config: watcher::Config,
    trim: T,
    watch: super::watch::Watch,
) -> (
    Cache<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) {
    trimmed_by_shard(api, config, trim, watch, None)
}

/// [`trimmed`], keeping objects of shards this replica does not hold as `sharded` says
/// (with None, as [`trimmed`] does).
pub fn trimmed_by_shard<K: Cacheable, T: Trim<K>>(
    api: Api<K>,
    config: watcher::Config,
    _trim: T,
    watch: super::watch::Watch,
    sharded: Option<Sharded<K>>,
) -> (
    Cache<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let whole = sharded
        .as_ref()
        .filter(|sharded| matches!(sharded.unheld, Unheld::Dropped))
        .map(|sharded| {
            Arc::new(ShardSync {
                leadership: sharded.leadership.clone(),
                moves: sharded.moves.clone(),
                making: Mutex::default(),
                listed: Mutex::default(),
            })
        });
    let cache = Cache {
        store,
        synced: Arc::default(),
        failing: Arc::default(),
        changed: Arc::default(),
        seen: Arc::default(),
        listing: Arc::default(),
        floor: Arc::default(),
        index: Arc::default(),
        whole: whole.clone(),
        owner_moves: sharded
            .as_ref()
            .and_then(|sharded| sharded.owner_moves.as_ref())
            .map(tokio::sync::watch::Sender::subscribe),
    };
    let taker = cache.clone();
    let decoding: Api<Decoded<K, T>> = match api.namespace().map(str::to_owned) {
        Some(namespace) => Api::namespaced_with(api.into_client(), &namespace, &()),
        None => Api::all_with(api.into_client(), &()),
    };
    // Unsharded, nothing ever changes.
    let changes = match &sharded {
        Some(sharded) => {
            let leadership = sharded.leadership.holdings_changes();
            match sharded.moves.clone() {
                Some(moves) => {
                    futures::stream::select(leadership, super::watch::each_change(moves)).boxed()
                }
                None => leadership.boxed(),
            }
        }
        None => futures::stream::empty().boxed(),
    };
    let make = move || {
        if let Some(whole) = &whole {
            whole.made();
        }
        super::watch::watched(decoding.clone(), config.clone(), watch.clone())
    };
    let lister = cache.clone();
    let owner_moves = sharded
        .as_ref()
        .and_then(|sharded| sharded.owner_moves.clone());
    let moved = Arc::new(AtomicBool::new(false));
    let noted = moved.clone();
    let events = super::watch::restarted(make, changes, SHARDS_SETTLE)
        .map(|event| event.map(decoded))
        .filter_map(move |event| {
            std::future::ready(match (&sharded, event) {
                (Some(sharded), Ok(event)) => sift(sharded, event, &lister, &noted).map(Ok),
                (_, event) => Some(event),
            })
        })
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(event) => {
                taker.failed(false);
                taker.took(event);
                announce_moves(owner_moves.as_ref(), event, &moved);
            }
            Err(_) => taker.failed(true),
        });
    (cache, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::leader::Led;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store::Writer;

    fn config_map(name: &str, resource_version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.into());
        object.metadata.namespace = Some("shop".into());
        object.metadata.resource_version = Some(resource_version.into());
        object
    }

    fn cache() -> (Cache<ConfigMap>, Writer<ConfigMap>) {
        let writer = Writer::default();
        let cache = Cache {
            store: writer.as_reader(),
            synced: Arc::default(),
            failing: Arc::default(),
            changed: Arc::default(),
            seen: Arc::default(),
            listing: Arc::default(),
            floor: Arc::default(),
            index: Arc::default(),
            whole: None,
            owner_moves: None,
        };
        (cache, writer)
    }

    fn take(
        cache: &Cache<ConfigMap>,
        writer: &mut Writer<ConfigMap>,
        event: watcher::Event<ConfigMap>,
    ) {
        writer.apply_watcher_event(&event);
        cache.took(&event);
    }

    /// `event` through a sharded cache as its watch stream takes it: sifted, stored, moves
    /// announced.
    fn feed(
        sharded: &Sharded<ConfigMap>,
        cache: &Cache<ConfigMap>,
        writer: &mut Writer<ConfigMap>,
        moved: &AtomicBool,
        event: watcher::Event<ConfigMap>,
    ) {
        if let Some(event) = sift(sharded, event, cache, moved) {
            take(cache, writer, event.clone());
            announce_moves(sharded.owner_moves.as_ref(), &event, moved);
        }
    }

    /// A cache listing, with ConfigMap web-1 at version 5 taken from the list so far.
    fn listing_web_1() -> (Cache<ConfigMap>, Writer<ConfigMap>) {
        let (cache, mut writer) = cache();
        take(&cache, &mut writer, watcher::Event::Init);
        take(
            &cache,
            &mut writer,
            watcher::Event::InitApply(config_map("web-1", "5")),
        );
        (cache, writer)
    }

    /// Keeps a ConfigMap's name and labels, as a cache that reads no data would.
    struct DropData;

    impl Trim<ConfigMap> for DropData {
        fn trim(config_map: &mut ConfigMap) {
            config_map.data = None;
        }
    }

    fn in_namespace(namespace: &str) -> ConfigMap {
        let mut object = config_map("web", "5");
        object.metadata.namespace = Some(namespace.into());
        object.data = Some([("big".to_owned(), "x".repeat(64))].into());
        object
    }

    /// A replica of 4 shards holding the shard of the first namespace returned, not that of
    /// the second.
    fn holding_one() -> (Leadership, tokio::sync::watch::Sender<Led>, String, String) {
        let (leadership, changes) = Leadership::holding(4, &[]);
        let mut namespaces = (0..).map(|n| format!("team-{n}"));
        let held_namespace = namespaces.next().unwrap_or_default();
        let held = leadership.shard_of(&in_namespace(&held_namespace).metadata);
        let other_namespace = namespaces
            .find(|ns| leadership.shard_of(&in_namespace(ns).metadata) != held)
            .unwrap_or_default();
        leadership.hold(held, true, &changes);
        (leadership, changes, held_namespace, other_namespace)
    }

    fn by_namespace(leadership: &Leadership, unheld: Unheld<ConfigMap>) -> Sharded<ConfigMap> {
        let of = leadership.clone();
        Sharded {
            leadership: leadership.clone(),
            shard_of: Box::new(move |object: &ConfigMap| Some(of.shard_of(&object.metadata))),
            unheld,
            moves: None,
            owner_moves: None,
        }
    }

    /// What the store would take of `event`: None for nothing, else (kind, data kept).
    fn taken(event: Option<watcher::Event<ConfigMap>>) -> Option<(&'static str, bool)> {
        Some(match event? {
            watcher::Event::Apply(object) => ("apply", object.data.is_some()),
            watcher::Event::InitApply(object) => ("list", object.data.is_some()),
            watcher::Event::Delete(object) => ("delete", object.data.is_some()),
            watcher::Event::Init => ("init", false),
            watcher::Event::InitDone => ("done", false),
        })
    }

    #[test]
    fn a_sharded_cache_keeps_whole_only_the_objects_of_shards_it_holds() {
        let (leadership, changes, held_namespace, other_namespace) = holding_one();
        let stubs = by_namespace(&leadership, Unheld::Stub(DropData::trim));
        let drops = by_namespace(&leadership, Unheld::Dropped);
        let apply = |ns: &str| watcher::Event::Apply(in_namespace(ns));
        let list = |ns: &str| watcher::Event::InitApply(in_namespace(ns));
        for sharded in [&stubs, &drops] {
            assert_eq!(
                taken(sharded.event(apply(&held_namespace))),
                Some(("apply", true))
            );
            assert_eq!(
                taken(sharded.event(list(&held_namespace))),
                Some(("list", true))
            );
        }
        // Another replica's: a stub, or nothing (a change deletes any copy the store has).
        assert_eq!(
            taken(stubs.event(apply(&other_namespace))),
            Some(("apply", false))
        );
        assert_eq!(
            taken(stubs.event(list(&other_namespace))),
            Some(("list", false))
        );
        assert_eq!(
            taken(drops.event(apply(&other_namespace))),
            Some(("delete", true))
        );
        assert_eq!(taken(drops.event(list(&other_namespace))), None);
        assert_eq!(
            taken(drops.event(watcher::Event::Delete(in_namespace(&other_namespace)))),
            Some(("delete", true))
        );
        // The label moves an object to the shard it names, whatever its namespace.
        let mut labelled = in_namespace(&other_namespace);
        labelled.metadata.labels = Some(
            [(
                super::super::shard::SHARD_LABEL.to_owned(),
                held_namespace.clone(),
            )]
            .into(),
        );
        assert_eq!(
            taken(drops.event(watcher::Event::Apply(labelled))),
            Some(("apply", true))
        );
        // An object whose shard cannot be told yet (its owner not seen) is kept whole.
        let unknown = Sharded {
            shard_of: Box::new(|_: &ConfigMap| None),
            ..by_namespace(&leadership, Unheld::Dropped)
        };
        assert_eq!(
            taken(unknown.event(list(&other_namespace))),
            Some(("list", true))
        );
        // Let go: from now on another replica's too.
        leadership.hold(
            leadership.shard_of(&in_namespace(&held_namespace).metadata),
            false,
            &changes,
        );
        assert_eq!(
            taken(stubs.event(apply(&held_namespace))),
            Some(("apply", false))
        );
        assert_eq!(taken(drops.event(list(&held_namespace))), None);
    }

    #[test]
    fn a_list_whose_objects_a_sharded_cache_drops_still_counts_them_as_taken() {
        let (leadership, _changes, held_namespace, other_namespace) = holding_one();
        let drops = by_namespace(&leadership, Unheld::Dropped);
        let (cache, mut writer) = cache();
        let object = |namespace: &str, version: &str| {
            let mut object = in_namespace(namespace);
            object.metadata.name = Some(format!("web-{version}"));
            object.metadata.resource_version = Some(version.into());
            object
        };
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(object(&held_namespace, "5")),
            watcher::Event::InitApply(object(&other_namespace, "9")),
            watcher::Event::InitDone,
        ] {
            feed(&drops, &cache, &mut writer, &AtomicBool::default(), event);
        }
        assert_eq!(cache.store.state().len(), 1, "only the held shard's object");
        assert!(cache.has_seen(9), "the list took every change up to 9");
        assert!(!cache.has_seen(10));
        // A change past it, of an object dropped, still moves what the store has seen.
        feed(
            &drops,
            &cache,
            &mut writer,
            &AtomicBool::default(),
            watcher::Event::Apply(object(&other_namespace, "12")),
        );
        assert!(cache.has_seen(12));
        assert_eq!(cache.store.state().len(), 1);
    }

    /// A cache of owners (stubs of other shards' objects) that announces their moves on the
    /// channel returned.
    fn owners_by_namespace(
        leadership: &Leadership,
    ) -> (Sharded<ConfigMap>, tokio::sync::watch::Sender<u64>) {
        let (moved, _) = tokio::sync::watch::channel(0u64);
        let owners = Sharded {
            owner_moves: Some(moved.clone()),
            ..by_namespace(leadership, Unheld::Stub(DropData::trim))
        };
        (owners, moved)
    }

    #[test]
    fn a_cache_of_owners_announces_a_move_when_its_first_list_ends_and_not_after() {
        let (leadership, _changes, held_namespace, _) = holding_one();
        let (owners, moved) = owners_by_namespace(&leadership);
        let (cache, mut writer) = cache();
        let noted = AtomicBool::default();
        let list = [
            watcher::Event::Init,
            watcher::Event::InitApply(in_namespace(&held_namespace)),
            watcher::Event::InitDone,
        ];
        for event in list.clone() {
            feed(&owners, &cache, &mut writer, &noted, event);
        }
        assert_eq!(*moved.borrow(), 1, "the first list");
        for event in list {
            feed(&owners, &cache, &mut writer, &noted, event);
        }
        assert_eq!(*moved.borrow(), 1, "a later list, with no owner moved");
    }

    #[test]
    fn a_cache_of_owners_announces_a_move_seen_in_a_list_once_the_store_holds_it() {
        let (leadership, _changes, held_namespace, other_namespace) = holding_one();
        let (owners, moved) = owners_by_namespace(&leadership);
        let (cache, mut writer) = cache();
        let noted = AtomicBool::default();
        let owner = in_namespace(&other_namespace);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(owner.clone()),
            watcher::Event::InitDone,
        ] {
            feed(&owners, &cache, &mut writer, &noted, event);
        }
        assert_eq!(*moved.borrow(), 1, "the first list");
        // Relabelled into the held shard while the watch was down: the relist brings it.
        let mut relabelled = owner.clone();
        relabelled.metadata.labels = Some(
            [(
                super::super::shard::SHARD_LABEL.to_owned(),
                held_namespace.clone(),
            )]
            .into(),
        );
        let shard_in_store = || {
            cache
                .store
                .get(&ObjectRef::from_obj(&owner))
                .map(|stored| leadership.shard_of(&stored.metadata))
        };
        let from = shard_in_store();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(relabelled.clone()),
        ] {
            feed(&owners, &cache, &mut writer, &noted, event);
        }
        assert_eq!(
            *moved.borrow(),
            1,
            "not while the store still holds the copy it moved from"
        );
        assert_eq!(shard_in_store(), from);
        feed(
            &owners,
            &cache,
            &mut writer,
            &noted,
            watcher::Event::InitDone,
        );
        assert_eq!(*moved.borrow(), 2, "at the list's end");
        assert_eq!(
            shard_in_store(),
            Some(leadership.shard_of(&relabelled.metadata)),
            "the store holds the moved copy when the move is announced"
        );
        // A move in the watch's events is in the store at once.
        feed(
            &owners,
            &cache,
            &mut writer,
            &noted,
            watcher::Event::Apply(owner.clone()),
        );
        assert_eq!(*moved.borrow(), 3);
        assert_eq!(shard_in_store(), from);
    }

    #[test]
    fn a_cache_that_drops_other_shards_is_synced_only_after_a_list_under_what_it_holds_now() {
        let (leadership, changes, _, other_namespace) = holding_one();
        let (moved, moves) = tokio::sync::watch::channel(0u64);
        let whole = ShardSync {
            leadership: leadership.clone(),
            moves: Some(moves),
            making: Mutex::default(),
            listed: Mutex::default(),
        };
        assert!(!whole.is_whole(), "nothing listed yet");
        whole.made();
        whole.listed();
        assert!(whole.is_whole());
        // A shard gained: what the last list dropped of it is missing until the next list.
        leadership.hold(
            leadership.shard_of(&in_namespace(&other_namespace).metadata),
            true,
            &changes,
        );
        assert!(!whole.is_whole(), "a shard gained since the list");
        whole.made();
        assert!(!whole.is_whole(), "a list under way is not yet in");
        whole.listed();
        assert!(whole.is_whole());
        // An owner moved between shards: its objects may have been dropped.
        moved.send_modify(|m| *m += 1);
        assert!(!whole.is_whole(), "an owner moved since the list");
        whole.made();
        whole.listed();
        assert!(whole.is_whole());
        // A list made before a move but taken after it is not enough.
        whole.made();
        moved.send_modify(|m| *m += 1);
        whole.listed();
        assert!(!whole.is_whole());
        // Letting a shard go loses nothing this cache needs.
        whole.made();
        whole.listed();
        leadership.hold(
            leadership.shard_of(&in_namespace(&other_namespace).metadata),
            false,
            &changes,
        );
        assert!(whole.is_whole());
    }

    #[test]
    fn an_owner_moves_when_its_shard_changes_against_the_store_or_its_first_list_ends() {
        let (leadership, _changes, held_namespace, other_namespace) = holding_one();
        let owners = by_namespace(&leadership, Unheld::Stub(DropData::trim));
        let mut writer: Writer<ConfigMap> = Writer::default();
        let store = writer.as_reader();
        let stored = in_namespace(&other_namespace);
        writer.apply_watcher_event(&watcher::Event::Apply(stored.clone()));
        let mut relabelled = stored.clone();
        relabelled.metadata.labels = Some(
            [(
                super::super::shard::SHARD_LABEL.to_owned(),
                held_namespace.clone(),
            )]
            .into(),
        );
        let moves = |event: &watcher::Event<ConfigMap>, first: bool| {
            owners.moves_owner(event, &store, first)
        };
        assert!(moves(&watcher::Event::Apply(relabelled.clone()), false));
        assert!(
            moves(&watcher::Event::InitApply(relabelled), false),
            "seen in a relist too"
        );
        let mut changed = stored.clone();
        changed.data = None;
        assert!(!moves(&watcher::Event::Apply(changed), false), "same shard");
        assert!(
            !moves(&watcher::Event::Apply(in_namespace(&held_namespace)), false),
            "new"
        );
        assert!(moves(&watcher::Event::InitDone, true));
        assert!(!moves(&watcher::Event::InitDone, false));
        assert!(!moves(&watcher::Event::Delete(stored), false));
    }

    #[test]
    fn each_object_of_a_list_is_trimmed_as_it_is_decoded() {
        let item = |name: &str| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": "shop",
                    "resourceVersion": "7",
                    "managedFields": [{"manager": "kubectl", "operation": "Apply",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:big": {}}}}],
                },
                "data": {"big": "x".repeat(4096)},
            })
        };
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "9"},
            "items": [item("web-1"), item("web-2")],
        });
        let decoded: kube::core::ObjectList<Decoded<ConfigMap, DropData>> =
            serde_json::from_value(list).unwrap();
        let names: Vec<String> = decoded.items.iter().map(|o| o.0.name_any()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
        for object in &decoded.items {
            assert_eq!(object.0.data, None, "trimmed by the cache's Trim");
            assert_eq!(
                object.0.metadata.managed_fields, None,
                "every cache drops them"
            );
            assert_eq!(object.0.resource_version().as_deref(), Some("7"));
        }
        let kept: Decoded<ConfigMap, KeepAll> = serde_json::from_value(item("web-3")).unwrap();
        assert!(kept.0.data.is_some_and(|data| data["big"].len() == 4096));
        assert_eq!(kept.0.metadata.managed_fields, None);
    }

    #[test]
    fn a_decoded_kind_is_addressed_as_its_own() {
        use k8s_openapi::api::rbac::v1::ClusterRole;
        type Namespaced = Decoded<ConfigMap, KeepAll>;
        type Cluster = Decoded<ClusterRole, KeepAll>;
        for namespace in [Some("shop"), None] {
            assert_eq!(
                Namespaced::url_path(&(), namespace),
                ConfigMap::url_path(&(), namespace)
            );
        }
        assert_eq!(
            Cluster::url_path(&(), None),
            ClusterRole::url_path(&(), None)
        );
        assert_eq!(Cluster::api_version(&()), "rbac.authorization.k8s.io/v1");
        assert!(!Namespaced::metadata_api());
        type Metadata = Decoded<kube::core::PartialObjectMeta<ConfigMap>, KeepAll>;
        assert!(
            Metadata::metadata_api(),
            "a metadata-only kind stays metadata-only"
        );
        assert_eq!(Cluster::kind(&()), "ClusterRole");
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn an_object_is_got_only_once_the_first_list_is_in() {
        let (cache, mut writer) = listing_web_1();
        assert!(cache.synced_get("shop", "web-1").is_none());
        take(&cache, &mut writer, watcher::Event::InitDone);
        let got = cache
            .synced_get("shop", "web-1")
            .map(|o| o.as_ref().clone());
        assert_eq!(got, Some(config_map("web-1", "5")));
        assert!(cache.synced_get("shop", "web-2").is_none());
        assert!(cache.synced_get("other", "web-1").is_none());
    }

    #[tokio::test]
    async fn a_cache_is_caught_up_once_it_took_the_write_or_a_later_change() {
        let (cache, mut writer) = listing_web_1();
        // Not whole before the first list is in, whatever it holds.
        assert!(!cache.caught_up("5", SHORT).await);
        take(&cache, &mut writer, watcher::Event::InitDone);
        assert!(cache.caught_up("5", SHORT).await);
        assert!(cache.caught_up("4", SHORT).await);
        assert!(!cache.caught_up("6", SHORT).await);
        // Versions compare as numbers, not as text: "10" is after "9".
        take(
            &cache,
            &mut writer,
            watcher::Event::Apply(config_map("web-1", "10")),
        );
        assert!(cache.caught_up("9", SHORT).await);
        // A version that is not a number is never taken as reached.
        assert!(!cache.caught_up("ten", SHORT).await);
        // Gone since (deleted, or relabelled out of the watch): a later change covers it.
        take(
            &cache,
            &mut writer,
            watcher::Event::Delete(config_map("web-1", "11")),
        );
        assert!(cache.caught_up("10", SHORT).await);
        assert!(!cache.caught_up("12", SHORT).await);
    }

    #[tokio::test]
    async fn a_read_right_after_a_start_waits_for_the_first_list_not_for_a_failing_watch() {
        let (cache, mut writer) = cache();
        assert!(!cache.synced_within(SHORT).await, "no list in yet");
        let waiting = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.synced_within(Duration::from_secs(30)).await })
        };
        take(&cache, &mut writer, watcher::Event::Init);
        take(
            &cache,
            &mut writer,
            watcher::Event::InitApply(config_map("web-1", "5")),
        );
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a page is not the whole list");
        take(&cache, &mut writer, watcher::Event::InitDone);
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), waiting).await,
            Ok(Ok(true))
        ));
        assert!(cache.synced_within(Duration::ZERO).await);

        // A watch that cannot list (its kind missing, say) is not waited for, and one that
        // starts failing wakes those already waiting.
        let (cache, _writer) = super::tests::cache();
        cache.failed(true);
        assert!(matches!(
            tokio::time::timeout(
                Duration::from_secs(5),
                cache.synced_within(Duration::from_secs(3600))
            )
            .await,
            Ok(false)
        ));
        cache.failed(false);
        let waiting = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.synced_within(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        cache.failed(true);
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), waiting).await,
            Ok(Ok(false))
        ));
    }

    #[tokio::test]
    async fn a_waiting_read_wakes_when_the_write_arrives() {
        let (cache, mut writer) = cache();
        take(&cache, &mut writer, watcher::Event::Init);
        take(&cache, &mut writer, watcher::Event::InitDone);
        let waiting = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.caught_up("7", Duration::from_secs(30)).await })
        };
        // Let the reader look, find nothing and wait.
        tokio::task::yield_now().await;
        take(
            &cache,
            &mut writer,
            watcher::Event::Apply(config_map("web-1", "6")),
        );
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "version 6 is not the write at 7");
        take(
            &cache,
            &mut writer,
            watcher::Event::Apply(config_map("web-1", "7")),
        );
        let reached = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(reached, Ok(Ok(true))), "{reached:?}");
    }

    #[tokio::test]
    async fn a_cache_has_seen_a_version_once_it_took_a_change_at_or_after_it() {
        let (cache, mut writer) = listing_web_1();
        assert!(!cache.has_seen(5), "not before the first list is whole");
        take(&cache, &mut writer, watcher::Event::InitDone);
        assert!(cache.has_seen(5));
        // Objects older than the version say nothing of what came between.
        assert!(!cache.has_seen(9));
        take(
            &cache,
            &mut writer,
            watcher::Event::Delete(config_map("web-1", "12")),
        );
        assert!(cache.has_seen(9));
        // A new list counts only once the store holds it, and then alone: it replaces all.
        take(&cache, &mut writer, watcher::Event::Init);
        take(
            &cache,
            &mut writer,
            watcher::Event::InitApply(config_map("web-2", "7")),
        );
        assert!(cache.has_seen(12), "the store still holds what it had");
        take(&cache, &mut writer, watcher::Event::InitDone);
        assert!(cache.has_seen(7));
        assert!(
            !cache.has_seen(12),
            "a list older than the events before it"
        );
    }

    fn term(term: u64) -> Epoch {
        Epoch { term, outages: 0 }
    }

    #[test]
    fn a_floor_holds_for_the_epoch_it_was_taken_in() {
        let (cache, _writer) = cache();
        assert_eq!(cache.floor(term(1)), None);
        cache.set_floor(term(1), 20);
        cache.set_floor(term(1), 15);
        assert_eq!(
            cache.floor(term(1)),
            Some(20),
            "two readers racing keep the later floor"
        );
        assert_eq!(cache.floor(term(2)), None, "a later term takes its own");
        cache.set_floor(term(2), 18);
        assert_eq!(
            cache.floor(term(2)),
            Some(18),
            "not the earlier term's higher one"
        );
        assert_eq!(cache.floor(term(1)), None);
        cache.set_floor(term(1), 25);
        assert_eq!(
            cache.floor(term(2)),
            Some(18),
            "a reader of the ended term does not replace it"
        );
        let after_outage = Epoch {
            term: 2,
            outages: 1,
        };
        assert_eq!(
            cache.floor(after_outage),
            None,
            "an outage ended: a new floor"
        );
        cache.set_floor(after_outage, 30);
        assert_eq!(cache.floor(after_outage), Some(30));
        cache.set_floor(term(2), 40);
        assert_eq!(
            cache.floor(after_outage),
            Some(30),
            "read before the outage ended"
        );
    }

    fn labelled_map(namespace: &str, name: &str, rollout: Option<&str>, version: u64) -> ConfigMap {
        let mut object = config_map(name, &version.to_string());
        object.metadata.namespace = Some(namespace.into());
        object.metadata.labels =
            rollout.map(|r| [("weir.dev/rollout".to_owned(), r.to_owned())].into());
        object
    }

    /// A watch event over a few namespaces, names and label values, so that sequences
    /// relabel, delete and list again the same objects.
    fn event() -> impl Strategy<Value = watcher::Event<ConfigMap>> {
        let object = (0..2usize, 0..4usize, proptest::option::of(0..3usize)).prop_map(
            |(namespace, name, rollout)| {
                (
                    ["shop", "bank"][namespace],
                    format!("rs-{name}"),
                    rollout.map(|r| ["web", "api", "db"][r]),
                )
            },
        );
        prop_oneof![
            Just(watcher::Event::Init),
            Just(watcher::Event::InitDone),
            object
                .clone()
                .prop_map(|(ns, name, r)| watcher::Event::InitApply(labelled_map(ns, &name, r, 1))),
            object
                .clone()
                .prop_map(|(ns, name, r)| watcher::Event::Apply(labelled_map(ns, &name, r, 1))),
            object.prop_map(|(ns, name, r)| watcher::Event::Delete(labelled_map(ns, &name, r, 1))),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the watch delivers, the index answers what a pass over the store would.
        #[test]
        fn the_index_answers_what_a_pass_over_the_store_would(events in proptest::collection::vec(event(), 0..40)) {
            let (cache, mut writer) = cache();
            let cache = cache.indexed_by("weir.dev/rollout");
            for event in events {
                take(&cache, &mut writer, event);
                for namespace in ["shop", "bank"] {
                    for rollout in ["web", "api", "db"] {
                        let mut indexed: Vec<String> = cache
                            .labelled(namespace, "weir.dev/rollout", rollout)
                            .iter()
                            .map(|o| o.name_any())
                            .collect();
                        let mut scanned: Vec<String> = cache
                            .store
                            .state_filter(|o| {
                                o.namespace().as_deref() == Some(namespace)
                                    && o.labels().get("weir.dev/rollout").map(String::as_str) == Some(rollout)
                            })
                            .iter()
                            .map(|o| o.name_any())
                            .collect();
                        indexed.sort();
                        scanned.sort();
                        prop_assert_eq!(indexed, scanned);
                    }
                }
            }
        }
    }
}
