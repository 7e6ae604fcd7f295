//! Leader election on a coordination.k8s.io/v1 Lease, so that of several replicas exactly one
//! writes. Taking and renewing the Lease are replaces guarded by its resourceVersion (as
//! client-go does): two replicas that both see it expire cannot both win, and a replica that
//! lost it cannot extend it for the new holder. A replica stops writing the moment it sees
//! another holder, or when it could not renew before its own lease would run out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::time::{from_k8s, to_k8s};

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Someone else held it and let it expire (or nobody holds it): take it.
    Take,
    /// Someone else holds it until then.
    Wait {
        holder: String,
        until: DateTime<Utc>,
    },
}

/// Pure: decides from the Lease, who we are and the time.
pub fn decide(lease: Option<&Lease>, identity: &str, now: DateTime<Utc>) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(micro_from_k8s);
    let duration =
        chrono::Duration::seconds(i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0)));
    match renewed {
        Some(renewed) if !holder.is_empty() && renewed + duration > now => Decision::Wait {
            holder,
            until: renewed + duration,
        },
        _ => Decision::Take,
    }
}

fn micro_from_k8s(time: &MicroTime) -> DateTime<Utc> {
    from_k8s(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        time.0,
    ))
}

fn micro(time: DateTime<Utc>) -> MicroTime {
    // MicroTime keeps microseconds; whole seconds are plenty for leases of seconds.
    MicroTime(to_k8s(time).0)
}

/// Whether this replica may write now. Cheap to check before every write.
#[derive(Clone)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
    /// Counts the times this replica became leader; raised before `leading` turns true, so
    /// whoever sees it leading sees the new term.
    term: Arc<AtomicU64>,
    /// Milliseconds after `epoch` when our last successful renewal stops being safe to rely
    /// on; checked on every call, so a hung renewal cannot keep an old leader writing.
    valid_until: Arc<AtomicU64>,
    epoch: tokio::time::Instant,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// Always leading: a single replica without election.
    pub fn always() -> Leadership {
        let (_, changes) = watch::channel(true);
        Leadership::with(true, 1, u64::MAX, changes)
    }

    fn with(
        leading: bool,
        term: u64,
        valid_until: u64,
        changes: watch::Receiver<bool>,
    ) -> Leadership {
        Leadership {
            leading: Arc::new(AtomicBool::new(leading)),
            term: Arc::new(AtomicU64::new(term)),
            valid_until: Arc::new(AtomicU64::new(valid_until)),
            epoch: tokio::time::Instant::now(),
            changes,
        }
    }

    pub fn is_leading(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.leading.load(Ordering::SeqCst) && now < self.valid_until.load(Ordering::SeqCst)
    }

    /// The current leadership term. What a term learnt about the API server (a floor, its
    /// own writes) says nothing of what another leader wrote before the next one.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Leading, and still in `term`: a reconcile that began in an earlier term stops, since
    /// it planned from what that term knew.
    pub fn is_leading_in(&self, term: u64) -> bool {
        self.is_leading() && self.term() == term
    }

    /// The current term, for a reconcile to hold from its start: taken before anything is
    /// read, so that a read slow enough to span another leader's term is not acted on.
    pub fn current_term(&self) -> Term {
        Term {
            leadership: self.clone(),
            number: self.term(),
        }
    }

    /// Records whether this replica leads now, opening a new term when it starts to, or when
    /// it renewed only after its trust in the lease had run out (`after_lapse`); true when a
    /// term began or ended. Only the election loop calls it, so a load and a store do not race.
    fn set_leading(&self, now_leading: bool, after_lapse: bool) -> bool {
        let was_leading = self.leading.load(Ordering::SeqCst);
        let new_term = now_leading && (!was_leading || after_lapse);
        if !new_term && was_leading == now_leading {
            return false;
        }
        if new_term {
            self.term.fetch_add(1, Ordering::SeqCst);
        }
        self.leading.store(now_leading, Ordering::SeqCst);
        true
    }

    /// Fires with every change of leadership.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// One leadership term as a reconcile holds it: every write checks [`Term::holds`].
#[derive(Clone)]
pub struct Term {
    leadership: Leadership,
    number: u64,
}

impl Term {
    /// Still leading, in this term.
    pub fn holds(&self) -> bool {
        self.leadership.is_leading_in(self.number)
    }

    pub fn number(&self) -> u64 {
        self.number
    }
}

/// Yields once each time this replica becomes leader: controllers reconcile everything
/// then, since they ignored events while following.
pub fn became_leader(leadership: &Leadership) -> impl futures::Stream<Item = ()> + Send + use<> {
    futures::stream::unfold(leadership.changes(), |mut changes| async move {
        loop {
            changes.changed().await.ok()?;
            if *changes.borrow_and_update() {
                return Some(((), changes));
            }
        }
    })
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Starts the election loop in the background and returns the shared leadership flag.
    pub fn start(self) -> Leadership {
        let (sender, changes) = watch::channel(false);
        let leadership = Leadership::with(false, 0, 0, changes);
        let shared = leadership.clone();
        tokio::spawn(async move { self.run(shared, sender).await });
        leadership
    }

    async fn run(self, leadership: Leadership, changes: watch::Sender<bool>) {
        // Renew three times per lease duration, as client-go does with its defaults.
        let retry = self.duration / 3;
        // A renewal sent at t keeps others out until t + duration by their clocks; we stop
        // trusting it a retry period earlier, and give up on a request after half of one.
        let trusted_for = self.duration.saturating_sub(retry);
        let epoch = leadership.epoch;
        loop {
            let sent = epoch.elapsed();
            // Whether the lease came back after our trust in it had run out: someone else may
            // have held it in between, unseen by this loop.
            let mut after_lapse = false;
            let now_leading = match tokio::time::timeout(retry / 2, self.try_lead()).await {
                Ok(Ok(true)) => {
                    let until = (sent + trusted_for).as_millis() as u64;
                    let before = leadership.valid_until.swap(until, Ordering::SeqCst);
                    after_lapse = sent.as_millis() as u64 >= before;
                    true
                }
                Ok(Ok(false)) => false,
                Ok(Err(error)) => {
                    warn!(%error, lease = %self.name, "could not read or renew the leader Lease");
                    leadership.leading.load(Ordering::SeqCst)
                }
                Err(_) => {
                    warn!(lease = %self.name, "renewing the leader Lease timed out");
                    leadership.leading.load(Ordering::SeqCst)
                }
            };
            // Leading only while the last successful renewal is still trusted.
            let trusted = (epoch.elapsed().as_millis() as u64)
                < leadership.valid_until.load(Ordering::SeqCst);
            let now_leading = now_leading && trusted;
            if leadership.set_leading(now_leading, after_lapse) {
                info!(identity = %self.identity, leading = now_leading, term = leadership.term(), "leadership changed");
                let _ = changes.send(now_leading);
            }
            tokio::time::sleep(retry).await;
        }
    }

    async fn try_lead(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Utc::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match decide(current.as_ref(), &self.identity, now) {
            Decision::Wait { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(micro(now)),
                        renew_time: Some(micro(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            decision @ (Decision::Renew | Decision::Take) => {
                // Some(..) by construction: Create is the only decision without a Lease.
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Take {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(micro(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(micro(now));
                spec.lease_duration_seconds = Some(seconds);
                // `lease` still carries the resourceVersion we read: the replace fails with a
                // conflict if anyone wrote the Lease since.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid")
    }

    fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(micro(at(renewed))),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn leadership_lapses_once_the_last_renewal_is_no_longer_trusted() {
        let (_, changes) = watch::channel(true);
        let leadership = Leadership::with(true, 1, 0, changes);
        assert!(
            !leadership.is_leading(),
            "a renewal that is no longer trusted does not count"
        );
        leadership.valid_until.store(60_000, Ordering::SeqCst);
        assert!(leadership.is_leading());
        leadership.leading.store(false, Ordering::SeqCst);
        assert!(!leadership.is_leading(), "another holder seen");
    }

    #[test]
    fn each_time_leadership_is_gained_a_new_term_begins() {
        let (_, changes) = watch::channel(false);
        let leadership = Leadership::with(false, 0, u64::MAX, changes);
        assert!(leadership.set_leading(true, true));
        assert!(leadership.is_leading_in(1));
        assert!(
            !leadership.set_leading(true, false),
            "a renewal is no change"
        );
        assert!(leadership.is_leading_in(1), "and keeps the term");
        assert!(leadership.set_leading(false, false));
        assert!(!leadership.is_leading_in(1));
        assert!(!leadership.set_leading(false, false));
        assert!(leadership.set_leading(true, false));
        assert_eq!(leadership.term(), 2);
        assert!(
            !leadership.is_leading_in(1),
            "a reconcile of the earlier term stops"
        );
        assert!(leadership.is_leading_in(2));
        assert!(
            leadership.set_leading(true, true),
            "renewed only after trust ran out: another may have led meanwhile"
        );
        assert!(leadership.is_leading_in(3));
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(100)), Decision::Create);
        assert_eq!(
            decide(Some(&lease("a", 0, 15)), "a", at(100)),
            Decision::Renew,
            "ours, even if late"
        );
        assert_eq!(
            decide(Some(&lease("b", 90, 15)), "a", at(100)),
            Decision::Wait {
                holder: "b".into(),
                until: at(105)
            }
        );
        assert_eq!(
            decide(Some(&lease("b", 90, 15)), "a", at(105)),
            Decision::Take,
            "expired exactly at renew + duration"
        );
        assert_eq!(
            decide(Some(&lease("", 99, 15)), "a", at(100)),
            Decision::Take,
            "released"
        );
        let mut no_times = lease("b", 0, 15);
        if let Some(spec) = no_times.spec.as_mut() {
            spec.renew_time = None;
        }
        assert_eq!(decide(Some(&no_times), "a", at(100)), Decision::Take);
    }
}
