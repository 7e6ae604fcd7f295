//! What the GitSync controller's glue shares: its context (clients, flags, caches, the
//! schedule of every GitSync), and who a GitSync acts as and where its clone is.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, Semaphore};

use super::error::SyncError;
use super::fetch_rate::FetchRate;
use super::tenancy::{self, Identity, Policy};
use super::{kustomize, plan, render, source};
use crate::api::gitsync::GitSync;
use crate::runtime::Events;
use crate::runtime::impersonation::Impersonation;
use crate::runtime::leader::Leadership;

pub struct Context {
    /// The controller's own identity: reads, status writes, Events. Never what Git says.
    pub client: Client,
    /// Clients acting as each GitSync's ServiceAccount.
    pub impersonation: Arc<Impersonation>,
    /// The clusters GitSyncs with `spec.kubeConfig` apply to, by GitSync UID and the
    /// kubeconfig Secret's resourceVersion (a changed Secret makes a new one).
    pub(super) remotes: Mutex<HashMap<String, (String, Target)>>,
    /// The tenancy flags.
    pub policy: Policy,
    /// Every GitSync the controller watches, for the branches they follow.
    pub gitsyncs: kube::runtime::reflector::Store<GitSync>,
    /// The namespace the controller watches (None: all of them).
    pub scope: Option<String>,
    pub events: Events,
    /// Counts what applies sent and skipped.
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    pub leadership: Leadership,
    /// Where the persistent clones live.
    pub cache_dir: PathBuf,
    /// How much a revision may hold.
    pub limits: render::Limits,
    /// What builds kustomizations here, found once at start.
    pub kustomize: Option<kustomize::Builder>,
    /// Fetches at once; the others wait their turn without blocking a worker.
    pub fetches: Arc<Semaphore>,
    /// How long a fetch may take before it is abandoned and its slot freed.
    pub fetch_timeout: Duration,
    /// The most bytes of pack one fetch may receive.
    pub max_fetch_bytes: u64,
    /// Fetches per Git host: a GitSync over its host's rate waits, requeued, not fetching.
    pub fetch_rate: Arc<FetchRate>,
    /// The GitSyncs (`namespace/name`) with a fetch still running.
    pub in_flight: Arc<Mutex<HashSet<String>>>,
    /// When each GitSync is due again: a watch event that is only our own status write must
    /// not start another fetch and apply, and failures back off.
    pub schedule: Mutex<HashMap<String, Due>>,
    /// Told of every aborted Rollout the controller sees, so that a reconcile waiting for a
    /// fetch can roll back first.
    pub aborts: Arc<Notify>,
}

/// When a GitSync is next due, for the generation it was synced at (in memory only: a
/// restarted controller syncs every GitSync at once).
#[derive(Clone, Debug)]
pub struct Due {
    pub(super) due: std::time::Instant,
    pub(super) generation: Option<i64>,
    /// Retryable failures in a row.
    pub(super) failures: u32,
    /// A new revision waits for the GitSyncs it depends on: due as soon as they are ready.
    pub(super) waiting: bool,
}

impl Context {
    /// What the controller remembers of the GitSync `key` at `generation`.
    pub(super) fn previous(&self, key: &str, generation: Option<i64>) -> Option<plan::Previous> {
        let schedule = self.schedule.lock().unwrap_or_else(|e| e.into_inner());
        let known = schedule.get(key).filter(|s| s.generation == generation)?;
        Some(plan::Previous {
            wait: known.due.checked_duration_since(std::time::Instant::now()),
            failures: known.failures,
            waiting: known.waiting,
        })
    }

    /// Due again as `next` says.
    pub(super) fn schedule(&self, key: &str, generation: Option<i64>, next: &plan::Schedule) {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.to_owned(),
                Due {
                    due: std::time::Instant::now() + next.next,
                    generation,
                    failures: next.failures,
                    waiting: next.waiting,
                },
            );
    }

    /// Forgets the schedule: the GitSync is due at once (deleted, or its status not written).
    pub(super) fn forget(&self, key: &str) {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

pub(super) fn timed_out(timeout: Duration) -> String {
    format!(
        "the repository did not answer within {}s (--fetch-timeout)",
        timeout.as_secs_f64()
    )
}

/// A GitSync's claim on fetching, released when the fetch's thread ends, however late.
pub(super) struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    pub(super) fn claim(set: &Arc<Mutex<HashSet<String>>>, key: &str) -> Option<InFlight> {
        let mut running = set.lock().unwrap_or_else(|e| e.into_inner());
        running.insert(key.to_owned()).then(|| InFlight {
            set: set.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The GitSyncs of `sync`'s namespace, as the controller's cache has them.
pub(super) fn neighbours(ctx: &Context, sync: &GitSync) -> Vec<Arc<GitSync>> {
    let namespace = sync.namespace();
    ctx.gitsyncs
        .state()
        .into_iter()
        .filter(|s| s.namespace() == namespace)
        .collect()
}

/// Who the GitSync acts as, and a client that does, in this cluster.
pub(super) fn acting_as(ctx: &Context, sync: &GitSync) -> Result<(Identity, Client), SyncError> {
    impersonating(ctx, &ctx.impersonation, sync)
}

/// Who the GitSync acts as, and a client from `impersonation` (this cluster's or its
/// `spec.kubeConfig`'s) that does.
fn impersonating(
    ctx: &Context,
    impersonation: &Impersonation,
    sync: &GitSync,
) -> Result<(Identity, Client), SyncError> {
    let identity = tenancy::identity(
        &ctx.policy,
        &sync.namespace().unwrap_or_default(),
        sync.spec.service_account_name.as_deref(),
    );
    let client = impersonation
        .client(identity.user().as_deref())
        .map_err(|error| {
            SyncError::invalid(format!(
                "making a client that acts as {}: {error}",
                identity.describe()
            ))
        })?;
    Ok((identity, client))
}

/// A Secret of the GitSync's namespace, read as the GitSync's identity: naming one its
/// ServiceAccount may not read gets nothing. None when it does not exist. `described` names
/// the Secret and the field that names it, for errors.
pub(super) async fn read_secret(
    ctx: &Context,
    sync: &GitSync,
    name: &str,
    described: &str,
) -> Result<Option<Secret>, SyncError> {
    let (identity, client) = acting_as(ctx, sync)?;
    Api::<Secret>::namespaced(client, &sync.namespace().unwrap_or_default())
        .get_opt(name)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => SyncError::forbidden(format!(
                "reading {described}: {} (weir acted as {})",
                status.message,
                identity.describe()
            )),
            e => SyncError::api(format!("reading {described}: {e}"), &e),
        })
}

/// Where a GitSync's objects live: this cluster, or the one its `spec.kubeConfig` names.
#[derive(Clone)]
pub(super) struct Target {
    /// The controller's (or the kubeconfig's) own identity there: reads of what was applied.
    pub reader: Client,
    /// Clients acting as the GitSync's ServiceAccount there.
    pub impersonation: Arc<Impersonation>,
}

/// Remote clusters kept at most: tenants make GitSyncs, so their number is theirs to choose.
const REMOTES_KEPT: usize = 256;

/// The cluster the GitSync applies to. For `spec.kubeConfig`, the Secret is read as the
/// GitSync's identity here (a tenant cannot use a kubeconfig its ServiceAccount may not
/// read) and the kubeconfig checked (`remote::checked`) before any client is made.
pub(super) async fn target(ctx: &Context, sync: &GitSync) -> Result<Target, SyncError> {
    let Some(reference) = &sync.spec.kube_config else {
        return Ok(Target {
            reader: ctx.client.clone(),
            impersonation: ctx.impersonation.clone(),
        });
    };
    let namespace = sync.namespace().unwrap_or_default();
    let name = &reference.secret_ref.name;
    let described = format!("Secret {namespace}/{name} (spec.kubeConfig.secretRef)");
    let secret = read_secret(ctx, sync, name, &described)
        .await?
        .ok_or_else(|| SyncError::invalid(format!("{described} does not exist")))?;
    let uid = sync.metadata.uid.clone().unwrap_or_default();
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    {
        let remotes = ctx.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, target)) = remotes.get(&uid)
            && *seen == version
        {
            return Ok(target.clone());
        }
    }
    let data = secret.data.unwrap_or_default();
    let keys: Vec<&str> = match reference.secret_ref.key.as_deref() {
        Some(key) => vec![key],
        None => super::remote::DEFAULT_KEYS.to_vec(),
    };
    let Some((key, bytes)) = keys.iter().find_map(|k| data.get(*k).map(|b| (*k, &b.0))) else {
        return Err(SyncError::invalid(format!(
            "{described} has no key {}: put the kubeconfig there",
            keys.join(" or ")
        )));
    };
    let kubeconfig = super::remote::checked(bytes, &format!("{described} key {key}"))
        .map_err(SyncError::invalid)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| {
            SyncError::invalid(format!(
                "{described} key {key}: not a usable kubeconfig: {e}"
            ))
        })?;
    // An unreachable cluster is an outage to back off from, never a worker held.
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(60));
    let reader = kube::Client::try_from(config.clone()).map_err(|e| {
        SyncError::invalid(format!(
            "{described} key {key}: no client could be made: {e}"
        ))
    })?;
    let target = Target {
        impersonation: Arc::new(Impersonation::new(config, reader.clone())),
        reader,
    };
    let mut remotes = ctx.remotes.lock().unwrap_or_else(|e| e.into_inner());
    if remotes.len() >= REMOTES_KEPT {
        remotes.clear();
    }
    remotes.insert(uid, (version, target.clone()));
    Ok(target)
}

/// Who the GitSync acts as where its objects live, a client that does, and a reader there.
pub(super) async fn acting_in_target(
    ctx: &Context,
    sync: &GitSync,
) -> Result<(Identity, Client, Client), SyncError> {
    let target = target(ctx, sync).await?;
    let (identity, client) = impersonating(ctx, &target.impersonation, sync)?;
    Ok((identity, client, target.reader))
}

/// The GitSync's own clone: keyed by its UID, so no other GitSync (one deleted and made
/// again under the same name included) ever reads it.
pub(super) fn clone_dir(ctx: &Context, sync: &GitSync) -> PathBuf {
    source::clone_dir(
        &ctx.cache_dir,
        sync.metadata.uid.as_deref().unwrap_or_default(),
        &sync.spec.url,
    )
}
