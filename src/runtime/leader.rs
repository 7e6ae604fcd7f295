//! Leader election on coordination.k8s.io/v1 Leases, so that of several replicas exactly one
//! writes each object. The objects are cut into `--shards` shards (`runtime::shard`), each
//! with its own Lease and its own terms; each replica keeps a member Lease, and every shard
//! goes to one live member by rendezvous hashing. With one shard this is plain leader
//! election on one Lease, named as before shards.
//!
//! Taking and renewing a Lease are replaces guarded by its resourceVersion (as client-go
//! does): two replicas that both see it expire cannot both win, and a replica that lost it
//! cannot extend it for the new holder. A replica stops writing a shard the moment it sees
//! another holder, when it could not renew before its own lease would run out, and a retry
//! period before it releases the shard to its owner.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{info, warn};

use super::shard::{self, LeaseView, Member, Membership, ShardDecision};
use crate::time::{from_k8s, to_k8s};

/// The member Leases of election `name` among `leases`.
fn members(leases: &[Lease], name: &str) -> Vec<Member> {
    leases
        .iter()
        .filter(|lease| {
            lease
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(MEMBER_OF_LABEL))
                .is_some_and(|of| of == name)
        })
        .map(|lease| {
            let view = view(lease);
            Member {
                identity: view.holder.clone(),
                shards: lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SHARDS_ANNOTATION))
                    .and_then(|s| s.parse().ok()),
                lease: view,
            }
        })
        .collect()
}

/// Labels a member Lease with the base Lease name its replica elects on.
const MEMBER_OF_LABEL: &str = "weir.dev/member-of";
/// The shard count (`--shards`) a member runs with.
const SHARDS_ANNOTATION: &str = "weir.dev/shards";
/// Shard Leases written at once in a round: with many shards a round's writes are many, and
/// all must end within the round's retry period.
const SHARDS_AT_ONCE: usize = 16;
/// How soon a reconcile that found its shard held but untrusted looks again: a renewal on
/// its way lands or fails within half a retry period (a few seconds).
const UNTRUSTED_RECHECK: Duration = Duration::from_secs(1);

fn micro_from_k8s(time: &MicroTime) -> DateTime<Utc> {
    from_k8s(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        time.0,
    ))
}

fn micro(time: DateTime<Utc>) -> MicroTime {
    // MicroTime keeps microseconds; whole seconds are plenty for leases of seconds.
    MicroTime(to_k8s(time).0)
}

fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseView {
        holder: spec.holder_identity.unwrap_or_default(),
        renewed: spec
            .renew_time
            .as_ref()
            .or(spec.acquire_time.as_ref())
            .map(micro_from_k8s),
        duration: chrono::Duration::seconds(i64::from(
            spec.lease_duration_seconds.unwrap_or(0).max(0),
        )),
    }
}

/// Whether this replica leads one shard now.
struct ShardLead {
    leading: AtomicBool,
    /// The term this replica leads the shard in: raised before `leading` turns true, so
    /// whoever sees it leading sees the new term. Drawn from one counter for all shards.
    term: AtomicU64,
    /// Milliseconds after `epoch` when our last successful renewal stops being safe to rely
    /// on; checked on every call, so a hung renewal cannot keep an old leader writing.
    valid_until: AtomicU64,
    /// How many times this replica let the shard go: a shard held at two moments with the
    /// same count was held throughout.
    losses: AtomicU64,
}

/// Which shards a replica holds, and since which loss of each: see [`Leadership::holdings`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdings(Vec<Option<u64>>);

impl Holdings {
    /// Whether every shard held in `now` was held here already, and has been held ever
    /// since: whatever a cache decoded under these holdings it kept whole for `now`.
    pub fn cover(&self, now: &Holdings) -> bool {
        now.0.iter().enumerate().all(|(shard, losses)| {
            losses.is_none() || self.0.get(shard).is_some_and(|held| held == losses)
        })
    }
}

struct Shared {
    shards: Vec<ShardLead>,
    /// Counts every shard gained by this process; each gain's term is its count.
    gains: AtomicU64,
    /// Held while a shard is taken or let go: [`Leadership::holdings`] reads between.
    flips: std::sync::Mutex<()>,
    epoch: tokio::time::Instant,
}

/// What this replica leads, as its changes announce it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Led {
    /// How many shards it leads.
    pub shards: u32,
    /// How many times it gained a shard so far.
    pub gains: u64,
}

/// Which shards this replica may write now. Cheap to check before every write.
#[derive(Clone)]
pub struct Leadership {
    shared: Arc<Shared>,
    changes: watch::Receiver<Led>,
}

impl Leadership {
    /// Always leading the one shard: a single replica without election.
    pub fn always() -> Leadership {
        let (_, changes) = watch::channel(Led {
            shards: 1,
            gains: 1,
        });
        Leadership::with(1, true, u64::MAX, changes)
    }

    fn with(
        shards: u32,
        leading: bool,
        valid_until: u64,
        changes: watch::Receiver<Led>,
    ) -> Leadership {
        let shards = (0..shards.max(1))
            .map(|_| ShardLead {
                leading: AtomicBool::new(leading),
                term: AtomicU64::new(u64::from(leading)),
                valid_until: AtomicU64::new(valid_until),
                losses: AtomicU64::new(0),
            })
            .collect();
        Leadership {
            shared: Arc::new(Shared {
                shards,
                gains: AtomicU64::new(u64::from(leading)),
                flips: std::sync::Mutex::new(()),
                epoch: tokio::time::Instant::now(),
            }),
            changes,
        }
    }

    /// How many shards the objects are cut into.
    pub fn shards(&self) -> u32 {
        self.shared.shards.len() as u32
    }

    /// The shard an object is in.
    pub fn shard_of(&self, meta: &ObjectMeta) -> u32 {
        shard::shard_of(meta, self.shards())
    }

    fn lead(&self, shard: u32) -> Option<&ShardLead> {
        self.shared.shards.get(shard as usize)
    }

    fn now_millis(&self) -> u64 {
        self.shared.epoch.elapsed().as_millis() as u64
    }

    /// Leading `shard`, on a renewal still trusted.
    pub fn is_leading(&self, shard: u32) -> bool {
        let now = self.now_millis();
        self.lead(shard).is_some_and(|lead| {
            lead.leading.load(Ordering::SeqCst) && now < lead.valid_until.load(Ordering::SeqCst)
        })
    }

    /// Whether this replica holds `shard`'s Lease as far as its election loop knows, trusted
    /// or not: what a cache keeps whole ([`crate::runtime::cache::Sharded`]). A renewal that
    /// lands late makes [`Leadership::is_leading`] false for a moment without a change of
    /// what this replica holds; this stays true through it.
    pub fn holds_lease(&self, shard: u32) -> bool {
        self.lead(shard)
            .is_some_and(|lead| lead.leading.load(Ordering::SeqCst))
    }

    /// Leading any shard.
    pub fn leads_any(&self) -> bool {
        (0..self.shards()).any(|shard| self.is_leading(shard))
    }

    /// How many shards this process has gained so far: what a cache learnt before the last
    /// gain says nothing of what another replica wrote in that shard before it.
    pub fn gains(&self) -> u64 {
        self.shared.gains.load(Ordering::SeqCst)
    }

    /// The shards this replica holds ([`Leadership::holds_lease`]), each with how many times
    /// it was let go so far, read between flips. What a sharded cache lists under: a renewal
    /// that lands late and opens a new term changes nothing here.
    pub fn holdings(&self) -> Holdings {
        let _between = self
            .shared
            .flips
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Holdings(
            self.shared
                .shards
                .iter()
                .map(|lead| {
                    lead.leading
                        .load(Ordering::SeqCst)
                        .then(|| lead.losses.load(Ordering::SeqCst))
                })
                .collect(),
        )
    }

    /// Yields each time [`Leadership::holdings`] changes (not for what it is when called).
    pub fn holdings_changes(&self) -> impl futures::Stream<Item = ()> + Send + Unpin + use<> {
        let leadership = self.clone();
        let mut last = leadership.holdings();
        super::watch::each_change(self.changes()).filter_map(move |()| {
            let now = leadership.holdings();
            let changed = now != last;
            last = now;
            std::future::ready(changed.then_some(()))
        })
    }

    /// Whether shards come and go here (leader election on): false for [`Leadership::always`],
    /// which holds everything for good.
    pub fn is_elected(&self) -> bool {
        self.changes.has_changed().is_ok()
    }

    fn term_number(&self, shard: u32) -> u64 {
        self.lead(shard)
            .map_or(0, |lead| lead.term.load(Ordering::SeqCst))
    }

    /// The current term of an object's shard, for a reconcile to hold from its start: taken
    /// before anything is read, so that a read slow enough to span another replica's term is
    /// not acted on.
    pub fn term_for<K: Resource>(&self, object: &K) -> Term {
        self.term_in(self.shard_of(object.meta()))
    }

    /// The current term of `shard`.
    pub fn term_in(&self, shard: u32) -> Term {
        Term {
            leadership: self.clone(),
            shard,
            number: self.term_number(shard),
        }
    }

    /// Records a renewal of `shard`'s Lease sent at `sent` (since the epoch), trusted until
    /// `sent + trusted_for`. Returns whether it was sent only after the trust in the last one
    /// had run out: someone else may have held the Lease in between, unseen by this loop, so
    /// a new term must begin. One sent in time and landing late keeps the term (the Lease's
    /// resourceVersion guards the write: nobody else held it), and reconciles that found the
    /// shard untrusted meanwhile look again ([`Leadership::when_unled`]).
    fn renewed(&self, shard: u32, sent: Duration, trusted_for: Duration) -> bool {
        let Some(lead) = self.lead(shard) else {
            return false;
        };
        let until = (sent + trusted_for).as_millis() as u64;
        let before = lead.valid_until.swap(until, Ordering::SeqCst);
        sent.as_millis() as u64 >= before
    }

    /// What a reconcile of `object` that found its term not holding does. Its shard held by
    /// someone else, or by nobody: nothing until a change, since gaining a shard reconciles everything
    /// again. Still held by this replica, only no longer trusted (a renewal on its way under
    /// load): look again soon, since a renewal that lands keeps the term and brings nothing
    /// back. (Letting those go left 3,481 of 10,000 new Rollouts never reconciled in
    /// `make bench`'s shards part.)
    pub fn when_unled<K: Resource>(&self, object: &K) -> Action {
        if self.holds_lease(self.shard_of(object.meta())) {
            Action::requeue(UNTRUSTED_RECHECK)
        } else {
            Action::await_change()
        }
    }

    /// Records whether this replica leads `shard` now, opening a new term when it starts
    /// to, or when it renewed only after its trust in the lease had run out (`after_lapse`);
    /// true when a term began or ended. Only the election loop calls it, so a load and a
    /// store do not race.
    fn set_leading(&self, shard: u32, now_leading: bool, after_lapse: bool) -> bool {
        let Some(lead) = self.lead(shard) else {
            return false;
        };
        let _flipping = self
            .shared
            .flips
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let was_leading = lead.leading.load(Ordering::SeqCst);
        let new_term = now_leading && (!was_leading || after_lapse);
        if !new_term && was_leading == now_leading {
            return false;
        }
        if new_term {
            let term = self.shared.gains.fetch_add(1, Ordering::SeqCst) + 1;
            lead.term.store(term, Ordering::SeqCst);
        }
        if was_leading && !now_leading {
            lead.losses.fetch_add(1, Ordering::SeqCst);
        }
        lead.leading.store(now_leading, Ordering::SeqCst);
        true
    }

    fn led(&self) -> Led {
        Led {
            shards: (0..self.shards())
                .filter(|&shard| self.holds_lease(shard))
                .count() as u32,
            gains: self.gains(),
        }
    }

    /// Fires with every change of what this replica leads.
    pub fn changes(&self) -> watch::Receiver<Led> {
        self.changes.clone()
    }
}

#[cfg(test)]
impl Leadership {
    /// A replica of `shards` shards holding those in `held`, and the sender of its changes.
    pub(crate) fn holding(shards: u32, held: &[u32]) -> (Leadership, watch::Sender<Led>) {
        let (sender, changes) = watch::channel(Led::default());
        let leadership = Leadership::with(shards, false, u64::MAX, changes);
        for &shard in held {
            leadership.hold(shard, true, &sender);
        }
        (leadership, sender)
    }

    /// Takes or lets go of `shard` as the election loop does, announcing the change.
    pub(crate) fn hold(&self, shard: u32, held: bool, changes: &watch::Sender<Led>) {
        if self.set_leading(shard, held, false) {
            let _ = changes.send(self.led());
        }
    }
}

/// One shard's term as a reconcile holds it: every write checks [`Term::holds`].
#[derive(Clone)]
pub struct Term {
    leadership: Leadership,
    shard: u32,
    number: u64,
}

impl Term {
    /// Still leading the shard, in this term.
    pub fn holds(&self) -> bool {
        self.leadership.is_leading(self.shard)
            && self.leadership.term_number(self.shard) == self.number
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }
}

/// Yields once each time this replica gains a shard: controllers reconcile everything then,
/// since they ignored that shard's events until now.
pub fn became_leader(leadership: &Leadership) -> impl futures::Stream<Item = ()> + Send + use<> {
    // Gains counted from when the stream is made, not from its first poll.
    let mut changes = leadership.changes();
    let gains = changes.borrow_and_update().gains;
    futures::stream::unfold((changes, gains), |(mut changes, mut gains)| async move {
        loop {
            changes.changed().await.ok()?;
            let now = changes.borrow_and_update().gains;
            if now > gains {
                return Some(((), (changes, now)));
            }
            gains = now;
        }
    })
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    shards: u32,
    /// Each shard's Lease as this replica last wrote it (None when it does not hold it).
    written: std::sync::Mutex<Vec<Option<Lease>>>,
    /// Our member Lease as last written.
    member: std::sync::Mutex<Option<Lease>>,
}

/// How one shard's Lease went in a round.
enum Outcome {
    /// Held and renewed (or created, or taken) now.
    Held,
    /// Not ours.
    NotHeld,
    /// Could not tell: the API server did not answer.
    Unknown,
}

impl Elector {
    /// `name` must be a valid label value (63 characters at most): member Leases are
    /// labelled with it.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        shards: u32,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            shards: shards.max(1),
            written: std::sync::Mutex::new(vec![None; shards.max(1) as usize]),
            member: std::sync::Mutex::default(),
        }
    }

    /// Starts the election loop in the background and returns the shared leadership.
    pub fn start(self) -> Leadership {
        let (sender, changes) = watch::channel(Led::default());
        let leadership = Leadership::with(self.shards, false, 0, changes);
        let shared = leadership.clone();
        tokio::spawn(async move { self.run(shared, sender).await });
        leadership
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    async fn run(self, leadership: Leadership, changes: watch::Sender<Led>) {
        // Renew three times per lease duration, as client-go does with its defaults.
        let retry = self.duration / 3;
        // A renewal sent at t keeps others out until t + duration by their clocks; we stop
        // trusting it a retry period earlier. A round starts every retry period and gives up
        // at the next one's start, so a renewal that lands in time is always still trusted.
        let trusted_for = self.duration.saturating_sub(retry);
        loop {
            let started = tokio::time::Instant::now();
            let sent = leadership.shared.epoch.elapsed();
            let outcomes = self
                .round(&leadership, started + retry / 2, started + retry)
                .await;
            let mut changed = false;
            for shard in 0..self.shards {
                let Some(lead) = leadership.lead(shard) else {
                    continue;
                };
                let mut after_lapse = false;
                let held = match outcomes.get(shard as usize).unwrap_or(&Outcome::Unknown) {
                    Outcome::Held => {
                        after_lapse = leadership.renewed(shard, sent, trusted_for);
                        true
                    }
                    Outcome::NotHeld => false,
                    Outcome::Unknown => lead.leading.load(Ordering::SeqCst),
                };
                // Leading only while the last successful renewal is still trusted.
                let trusted = leadership.now_millis() < lead.valid_until.load(Ordering::SeqCst);
                if leadership.set_leading(shard, held && trusted, after_lapse) {
                    changed = true;
                    info!(identity = %self.identity, shard, shards = self.shards, leading = held && trusted, term = leadership.term_number(shard), "leadership changed");
                }
            }
            if changed {
                let _ = changes.send(leadership.led());
            }
            tokio::time::sleep_until(started + retry).await;
        }
    }

    /// Reads every Lease of the namespace in one request (the members' and the shards'), by
    /// `read_by`, then renews our member Lease and decides and writes each shard's Lease, a
    /// few at once: one outcome per shard, Unknown where a request failed or did not end by
    /// `deadline`. With the read failed, the shards this replica leads are renewed from the
    /// Leases it last wrote: a busy API server that answers a read late must not cost them,
    /// and the read's own bound leaves those writes the rest of the round.
    async fn round(
        &self,
        leadership: &Leadership,
        read_by: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Vec<Outcome> {
        let now = Utc::now();
        let leases = match tokio::time::timeout_at(read_by, self.api.list(&ListParams::default()))
            .await
        {
            Ok(Ok(leases)) => Some(leases.items),
            Ok(Err(error)) => {
                warn!(%error, lease = %self.name, "could not read the Leases; renewing the shards held");
                None
            }
            Err(_) => {
                warn!(lease = %self.name, "reading the Leases timed out; renewing the shards held");
                None
            }
        };
        let Some(leases) = leases else {
            let (_, outcomes) = tokio::join!(
                tokio::time::timeout_at(deadline, self.renew_member(None, now)),
                self.renew_held(leadership, now, deadline),
            );
            return outcomes;
        };
        let members = members(&leases, &self.name);
        let membership = Membership::from(&members, &self.identity, self.shards, now);
        if let Some((other, count)) = &membership.other_count {
            warn!(
                member = %other,
                its_shards = ?count,
                our_shards = self.shards,
                "another replica runs with a different --shards: leading nothing until it is gone"
            );
        }
        let member_name = shard::member_lease_name(&self.name, &self.identity);
        let ours = leases
            .iter()
            .find(|lease| lease.metadata.name.as_deref() == Some(member_name.as_str()))
            .cloned();
        let mut by_name: std::collections::HashMap<String, Lease> = leases
            .into_iter()
            .filter_map(|lease| Some((lease.metadata.name.clone()?, lease)))
            .collect();
        let membership = &membership;
        let currents: Vec<Option<Lease>> = (0..self.shards)
            .map(|shard| by_name.remove(&shard::lease_name(&self.name, shard, self.shards)))
            .collect();
        let shards = futures::stream::iter(currents.into_iter().enumerate())
            .map(|(shard, current)| async move {
                let shard = shard as u32;
                let round = self.shard_round(leadership, shard, membership, now, current);
                self.outcome(shard, tokio::time::timeout_at(deadline, round).await)
            })
            .buffered(SHARDS_AT_ONCE)
            .collect::<Vec<_>>();
        let (_, outcomes) = tokio::join!(
            tokio::time::timeout_at(deadline, self.renew_member(Some(ours), now)),
            shards
        );
        // Housekeeping after the shards, a few a round.
        for stale in membership.stale.iter().take(SHARDS_AT_ONCE) {
            let _ = tokio::time::timeout_at(deadline, self.forget_member(stale)).await;
        }
        outcomes
    }

    /// A shard's outcome from its round's result, the failure logged.
    fn outcome(
        &self,
        shard: u32,
        result: Result<Result<Outcome, kube::Error>, tokio::time::error::Elapsed>,
    ) -> Outcome {
        let lease = || shard::lease_name(&self.name, shard, self.shards);
        match result {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => {
                warn!(%error, lease = %lease(), "could not renew a shard's Lease");
                Outcome::Unknown
            }
            Err(_) => {
                warn!(lease = %lease(), "renewing a shard's Lease timed out");
                Outcome::Unknown
            }
        }
    }

    /// Renews each shard this replica leads from the Lease it last wrote (its
    /// resourceVersion guards the write as a read's would); Unknown for the others.
    async fn renew_held(
        &self,
        leadership: &Leadership,
        now: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> Vec<Outcome> {
        futures::stream::iter(0..self.shards)
            .map(|shard| async move {
                let leading = leadership
                    .lead(shard)
                    .is_some_and(|lead| lead.leading.load(Ordering::SeqCst));
                let Some(lease) = leading.then(|| self.written(shard)).flatten() else {
                    return Outcome::Unknown;
                };
                let renewal = self.write_shard(shard, lease, ShardDecision::Renew, now);
                self.outcome(shard, tokio::time::timeout_at(deadline, renewal).await)
            })
            .buffered(SHARDS_AT_ONCE)
            .collect()
            .await
    }

    fn written(&self, shard: u32) -> Option<Lease> {
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.get(shard as usize).cloned().flatten()
    }

    fn remember(&self, shard: u32, lease: Option<Lease>) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = written.get_mut(shard as usize) {
            *slot = lease;
        }
    }

    async fn shard_round(
        &self,
        leadership: &Leadership,
        shard: u32,
        membership: &Membership,
        now: DateTime<Utc>,
        current: Option<Lease>,
    ) -> Result<Outcome, kube::Error> {
        let name = shard::lease_name(&self.name, shard, self.shards);
        let decision = shard::decide(
            shard,
            current.as_ref().map(view).as_ref(),
            &self.identity,
            membership,
            now,
        );
        match (decision, current) {
            (ShardDecision::Wait, _) => Ok(Outcome::NotHeld),
            (ShardDecision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.seconds()),
                        acquire_time: Some(micro(now)),
                        renew_time: Some(micro(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                let created = self.api.create(&PostParams::default(), &lease).await;
                self.held(shard, created)
            }
            // The flag, not is_leading(): a lapsed trust must not hurry the release.
            (ShardDecision::Release, Some(_))
                if leadership
                    .lead(shard)
                    .is_some_and(|lead| lead.leading.load(Ordering::SeqCst)) =>
            {
                // Stop writing first, and let go only next round: a write already under
                // way has a retry period to finish before the owner can take the shard.
                Ok(Outcome::NotHeld)
            }
            (decision, Some(lease)) => self.write_shard(shard, lease, decision, now).await,
        }
    }

    /// Writes a shard's Lease as `decision` says, over `lease` as last read or written.
    async fn write_shard(
        &self,
        shard: u32,
        mut lease: Lease,
        decision: ShardDecision,
        now: DateTime<Utc>,
    ) -> Result<Outcome, kube::Error> {
        let name = shard::lease_name(&self.name, shard, self.shards);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        match decision {
            ShardDecision::Take => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(micro(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            ShardDecision::Release => {
                spec.holder_identity = Some(String::new());
                info!(lease = %name, "releasing a shard to its owner");
            }
            _ => {}
        }
        spec.renew_time = Some(micro(now));
        spec.lease_duration_seconds = Some(self.seconds());
        // `lease` still carries the resourceVersion we read or wrote: the replace fails with
        // a conflict if anyone wrote the Lease since.
        let replaced = self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await;
        if decision == ShardDecision::Release {
            self.remember(shard, None);
            return replaced.map(|_| Outcome::NotHeld);
        }
        self.held(shard, replaced)
    }

    /// The outcome of a write that, done, holds the shard: the Lease written is kept for
    /// renewals while the Leases cannot be read.
    fn held(
        &self,
        shard: u32,
        written: Result<Lease, kube::Error>,
    ) -> Result<Outcome, kube::Error> {
        match written {
            Ok(lease) => {
                self.remember(shard, Some(lease));
                Ok(Outcome::Held)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.remember(shard, None);
                Ok(Outcome::NotHeld)
            }
            Err(error) => Err(error),
        }
    }

    /// Renews our member Lease (creating it the first time), over `ours` as read this round
    /// (Some(None): read, and not there), or over the one last written when the read failed.
    async fn renew_member(&self, ours: Option<Option<Lease>>, now: DateTime<Utc>) {
        let name = shard::member_lease_name(&self.name, &self.identity);
        let ours = match ours {
            Some(read) => read,
            None => match self
                .member
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
            {
                Some(written) => Some(written),
                // Neither read nor written yet: nothing to renew.
                None => return,
            },
        };
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.seconds()),
            renew_time: Some(micro(now)),
            ..LeaseSpec::default()
        };
        let written = match ours {
            Some(mut lease) => {
                lease.spec = Some(spec);
                // Kept true if this identity came back with another --shards.
                lease
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(SHARDS_ANNOTATION.to_owned(), self.shards.to_string());
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some([(MEMBER_OF_LABEL.to_owned(), self.name.clone())].into()),
                        annotations: Some(
                            [(SHARDS_ANNOTATION.to_owned(), self.shards.to_string())].into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        let mut member = self.member.lock().unwrap_or_else(PoisonError::into_inner);
        match written {
            Ok(lease) => *member = Some(lease),
            Err(error) => {
                // Read again next round. Others may not count us meanwhile; our shards' own
                // Leases still hold them.
                *member = None;
                warn!(%error, lease = %name, "could not renew this replica's member Lease");
            }
        }
    }

    /// Deletes the member Lease of a replica gone long ago, if nobody renewed it since.
    async fn forget_member(&self, identity: &str) {
        let name = shard::member_lease_name(&self.name, identity);
        let Ok(Some(lease)) = self.api.get_opt(&name).await else {
            return;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        if self.api.delete(&name, &params).await.is_ok() {
            info!(member = %identity, "deleted the member Lease of a replica long gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(shards: u32) -> (watch::Sender<Led>, watch::Receiver<Led>) {
        watch::channel(Led { shards, gains: 0 })
    }

    #[tokio::test]
    async fn holdings_cover_later_ones_only_for_shards_held_throughout() {
        let (_sender, changes) = led(0);
        let leadership = Leadership::with(3, false, u64::MAX, changes);
        leadership.set_leading(0, true, false);
        let listed = leadership.holdings();
        assert!(listed.cover(&leadership.holdings()));
        // A renewal landing late opens a new term, but the shard was held throughout.
        leadership.set_leading(0, true, true);
        assert!(listed.cover(&leadership.holdings()));
        // Letting one go takes nothing from what is held.
        leadership.set_leading(0, false, false);
        assert!(listed.cover(&leadership.holdings()));
        // Gained again, or gained anew: not held throughout.
        leadership.set_leading(0, true, false);
        assert!(!listed.cover(&leadership.holdings()));
        let relisted = leadership.holdings();
        assert!(relisted.cover(&leadership.holdings()));
        leadership.set_leading(2, true, false);
        assert!(!relisted.cover(&leadership.holdings()));
    }

    #[tokio::test]
    async fn a_shard_is_held_through_a_lapse_of_trust_but_not_led() {
        let (_sender, changes) = led(1);
        // Held, on a renewal whose trust ran out at once (one landing late, say).
        let leadership = Leadership::with(2, true, 0, changes);
        assert!(!leadership.is_leading(0), "not trusted: nothing is written");
        assert!(
            leadership.holds_lease(0),
            "still this replica's to cache whole"
        );
        leadership.set_leading(1, false, false);
        assert!(!leadership.holds_lease(1));
    }

    fn lease(name: &str, member_of: Option<&str>, holder: &str, shards: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: member_of.map(|of| [(MEMBER_OF_LABEL.to_owned(), of.to_owned())].into()),
                annotations: shards.map(|n| [(SHARDS_ANNOTATION.to_owned(), n.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(10),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn one_read_of_the_namespace_leases_yields_this_elections_members_only() {
        // What a round's one list returns: shard Leases, this election's members, another
        // election's member and someone else's Lease.
        let leases = [
            lease("weir-controller-0-of-2", None, "a", None),
            lease(
                "weir-controller-member-a",
                Some("weir-controller"),
                "a",
                Some("2"),
            ),
            lease(
                "weir-controller-member-b",
                Some("weir-controller"),
                "b",
                None,
            ),
            lease("other-member-c", Some("other"), "c", Some("2")),
            lease("weir-controller", None, "z", None),
        ];
        let found: Vec<(String, Option<u32>)> = members(&leases, "weir-controller")
            .into_iter()
            .map(|m| (m.identity, m.shards))
            .collect();
        assert_eq!(found, [("a".to_owned(), Some(2)), ("b".to_owned(), None)]);
    }

    #[test]
    fn leadership_lapses_once_the_last_renewal_is_no_longer_trusted() {
        let (_sender, changes) = led(1);
        let leadership = Leadership::with(1, true, 0, changes);
        assert!(
            !leadership.is_leading(0),
            "a renewal that is no longer trusted does not count"
        );
        let lead = leadership.lead(0).expect("shard 0");
        lead.valid_until.store(60_000, Ordering::SeqCst);
        assert!(leadership.is_leading(0));
        lead.leading.store(false, Ordering::SeqCst);
        assert!(!leadership.is_leading(0), "another holder seen");
        assert!(!leadership.is_leading(1), "no such shard");
    }

    #[test]
    fn a_renewal_sent_late_begins_a_new_term_and_one_landing_late_makes_reconciles_look_again() {
        let (_sender, changes) = led(0);
        let leadership = Leadership::with(2, true, 60_000, changes);
        let trusted_for = Duration::from_secs(10);
        assert!(
            !leadership.renewed(0, Duration::ZERO, trusted_for),
            "a renewal sent while the last is trusted is no lapse"
        );
        assert!(!leadership.set_leading(0, true, false), "nor a new term");
        let term = leadership.term_in(0);
        assert!(term.holds());
        // An object in each shard: namespaces hash to shards.
        let in_shard = |shard: u32| {
            let mut object = Lease::default();
            object.metadata.namespace = (0..).map(|i| format!("ns-{i}")).find(|namespace| {
                let meta = ObjectMeta {
                    namespace: Some(namespace.clone()),
                    ..ObjectMeta::default()
                };
                leadership.shard_of(&meta) == shard
            });
            object
        };
        // Sent in time, landing only after the trust in the last one ran out: while it is on
        // its way the term does not hold, and a reconcile must look again soon.
        let lead = leadership.lead(0).expect("shard 0");
        lead.valid_until.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!term.holds());
        assert_eq!(
            leadership.when_unled(&in_shard(0)),
            Action::requeue(UNTRUSTED_RECHECK)
        );
        assert!(!leadership.renewed(0, Duration::ZERO, trusted_for));
        assert!(!leadership.set_leading(0, true, false));
        assert!(term.holds(), "landed: the same term again");
        // Sent after the trust ran out: someone may have held it meanwhile.
        lead.valid_until.store(1, Ordering::SeqCst);
        assert!(leadership.renewed(0, Duration::from_millis(2), trusted_for));
        assert!(leadership.set_leading(0, true, true));
        assert!(!term.holds(), "a new term");
        // A shard this replica does not hold waits for a change: gaining it looks again.
        leadership.set_leading(1, false, false);
        assert_eq!(leadership.when_unled(&in_shard(1)), Action::await_change());
        assert!(
            !leadership.renewed(7, Duration::ZERO, trusted_for),
            "no such shard"
        );
    }

    #[test]
    fn each_time_a_shard_is_gained_a_new_term_begins() {
        let (_sender, changes) = led(0);
        let leadership = Leadership::with(2, false, u64::MAX, changes);
        let term = |shard| leadership.term_in(shard);
        assert!(leadership.set_leading(0, true, true));
        let first = term(0);
        assert!(first.holds());
        assert!(!term(1).holds(), "shard 1 is not led");
        assert!(
            !leadership.set_leading(0, true, false),
            "a renewal is no change"
        );
        assert!(first.holds(), "and keeps the term");
        assert!(leadership.set_leading(1, true, false));
        assert!(first.holds(), "gaining shard 1 leaves shard 0's term alone");
        assert_eq!(leadership.gains(), 2);
        assert!(leadership.set_leading(0, false, false));
        assert!(!first.holds());
        assert!(term(1).holds());
        assert!(!leadership.set_leading(0, false, false));
        assert!(leadership.set_leading(0, true, false));
        assert!(
            !first.holds(),
            "a reconcile of the earlier term stops, though the shard is led again"
        );
        let second = term(0);
        assert!(second.holds());
        assert!(
            leadership.set_leading(0, true, true),
            "renewed only after trust ran out: another may have led meanwhile"
        );
        assert!(!second.holds());
        assert_eq!(leadership.gains(), 4);
        assert_eq!(
            leadership.led(),
            Led {
                shards: 2,
                gains: 4
            }
        );
    }

    #[test]
    fn a_term_follows_the_objects_shard() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let (_sender, changes) = led(0);
        let leadership = Leadership::with(4, false, u64::MAX, changes);
        let object = ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let shard = shard::shard_of(&object.metadata, 4);
        assert_eq!(leadership.term_for(&object).shard(), shard);
        for other in (0..4).filter(|&s| s != shard) {
            leadership.set_leading(other, true, false);
        }
        assert!(!leadership.term_for(&object).holds());
        leadership.set_leading(shard, true, false);
        assert!(leadership.term_for(&object).holds());
        assert!(Leadership::always().term_for(&object).holds());
    }

    #[tokio::test]
    async fn became_leader_fires_on_each_gain_only() {
        let (sender, changes) = watch::channel(Led {
            shards: 0,
            gains: 0,
        });
        let leadership = Leadership::with(2, false, u64::MAX, changes);
        let mut gained = Box::pin(became_leader(&leadership));
        sender.send_replace(Led {
            shards: 1,
            gains: 1,
        });
        assert_eq!(gained.next().await, Some(()));
        sender.send_replace(Led {
            shards: 0,
            gains: 1,
        });
        sender.send_replace(Led {
            shards: 1,
            gains: 2,
        });
        assert_eq!(
            gained.next().await,
            Some(()),
            "a shard lost, then another gained"
        );
        sender.send_replace(Led {
            shards: 0,
            gains: 2,
        });
        let lost = tokio::time::timeout(Duration::from_millis(50), gained.next()).await;
        assert!(lost.is_err(), "losing one is not a gain");
    }
}
