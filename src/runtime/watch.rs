//! How every watch of the controller lists, retries and reports its health.
//!
//! Each watch backs off on its own. kube's `Controller` would otherwise put one backoff
//! around all of its triggers together: an error of any watch (a missing CRD, an API server
//! outage) paused every other one, the Rollouts' included, and the backoff only reset after
//! two quiet minutes, so right after an outage a template change waited tens of seconds for
//! a watch that was not even broken. Here a watch's backoff grows from a quarter second to
//! at most `MAX_BACKOFF` and resets with the first event it takes again.
//!
//! Kinds whose readers check a consistent floor before they write, or read the object
//! again first, list from the API server's watch cache ([`cached_first`]), as client-go's
//! informers do: that costs the API server no etcd read, and the watch cache answers with
//! the whole list in one response. That list asks for no page size: kube leaves
//! `resourceVersion=0` out of a list that has one, which then reads etcd in pages (at
//! 10,000 Rollouts, 20 requests of Rollouts and 21 of ReplicaSets on every start, in
//! `make bench`). Others ([`config`]) list consistently from etcd, in pages of 500.
//!
//! Once a watch must list again (`410 Expired`), every list is a consistent read, never the
//! watch cache, which right after an API server restart may answer with a version the new
//! watch cache no longer serves (KEP 1904). That happens rarely, so what it costs is paid
//! rarely.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::{self, ExponentialBackoff, ListSemantic, watcher};
use serde::de::DeserializeOwned;

use crate::time::Outage;

/// The longest backoff of a failing watch before its jitter (which adds up to as much
/// again): short, because a watch waiting out its backoff when the API server comes back is
/// a controller that does not react; a watch is one cheap request per try.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long a watch may be behind (failing, not yet listed again) before `/readyz` fails.
pub const BEHIND_LIMIT: Duration = Duration::from_secs(30);

/// A failing watch retries well within this (`MAX_BACKOFF` with jitter, and the request):
/// one quiet this long since its last error has reconnected, even if no object changed
/// since (kube's watcher says nothing when a watch starts again).
pub const QUIET: Duration = Duration::from_secs(12);

/// A watch's list and watch parameters: consistent reads, in pages.
pub fn config() -> watcher::Config {
    watcher::Config::default().list_semantic(ListSemantic::MostRecent)
}

/// [`config`], but the first list from the API server's watch cache (see the module's
/// comment): only for kinds whose readers do not act on a list that may be a moment old.
pub fn cached_first() -> watcher::Config {
    let mut config = config().any_semantic();
    config.page_size = None;
    config
}

/// The backoff of one watch: 250 ms, doubling, at most `MAX_BACKOFF`, each wait plus up to
/// as much again of jitter; reset by the stream on the first event after an error.
pub fn backoff() -> impl Backoff + 'static {
    let exponential: ExponentialBackoff = backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into();
    // Also forgotten after a quiet minute, for watches that take no event for a long time.
    ResetTimerBackoff::new(exponential, Duration::from_secs(60))
}

/// Outages remembered: enough for any wait under way (a pause or a progress deadline spans
/// minutes, not dozens of outages), bounded whatever happens.
pub const OUTAGES_KEPT: usize = 32;

/// Whether a watch's error means the API server could not be heard (down, unreachable,
/// overloaded, a version its cache no longer serves), rather than a refusal that holds until
/// someone changes something (forbidden, a kind the cluster lacks): only the first kind is an
/// outage, or a missing permission would stop every deadline for good.
pub fn unheard(error: &watcher::Error) -> bool {
    // An answer of the API server's own: an outage only when it says it cannot serve. A
    // `410 Expired` is routine (the watch lists again at once), and an object weir cannot
    // decode is no outage either, however long it stays.
    let answered = |code: u16| code == 429 || code >= 500;
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => answered(status.code),
            kube::Error::SerdeError(_) => false,
            // No answer at all: refused, reset, timed out.
            _ => true,
        },
        watcher::Error::WatchError(status) => answered(status.code),
        watcher::Error::NoResourceVersion => false,
    }
}

/// Whether kube's watcher lists again after `error` (the others resume the watch from the
/// version they had).
pub fn lists_again(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::NoResourceVersion | watcher::Error::InitialListFailed(_) => true,
        watcher::Error::WatchStartFailed(_) | watcher::Error::WatchFailed(_) => false,
    }
}

/// A watch of `api` that backs off on its own and records its health as `watch`. With
/// [`cached_first`], every list after the first is consistent.
pub fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
    watch: Watch,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut consistent = config.clone().list_semantic(ListSemantic::MostRecent);
    // A consistent list reads etcd: in pages, whatever the first list did.
    consistent.page_size = consistent.page_size.or(self::config().page_size);
    let first = watcher(api.clone(), config);
    // Lazy: no request until the first watcher would list again.
    let later = watcher(api, consistent);
    until_relist(first, later, |item| item.as_ref().is_err_and(lists_again))
        .backoff(backoff())
        .inspect(move |result| match result {
            Ok(_) => watch.saw(&Ok::<(), &str>(())),
            Err(error) => watch.saw_error(error, unheard(error)),
        })
}

/// `first`'s items up to and with the first that `ends` it, then `then`'s. `first` is
/// dropped there, before it is polled again (a watcher would list again at once).
pub fn until_relist<T, A, B>(first: A, then: B, ends: fn(&T) -> bool) -> impl Stream<Item = T>
where
    A: Stream<Item = T>,
    B: Stream<Item = T>,
{
    enum Phase<A, B> {
        First(std::pin::Pin<Box<A>>, std::pin::Pin<Box<B>>),
        Then(std::pin::Pin<Box<B>>),
    }
    futures::stream::unfold(
        Phase::First(Box::pin(first), Box::pin(then)),
        move |phase| async move {
            match phase {
                Phase::First(mut first, then) => {
                    let item = first.next().await?;
                    if ends(&item) {
                        Some((item, Phase::Then(then)))
                    } else {
                        Some((item, Phase::First(first, then)))
                    }
                }
                Phase::Then(mut then) => {
                    let item = then.next().await?;
                    Some((item, Phase::Then(then)))
                }
            }
        },
    )
}

/// `make`'s stream, made anew once `changes` has yielded and then held still for `quiet`: a
/// watch whose objects are kept by what `changes` announces lists again when that changes.
/// The stream it replaces is dropped before the new one is first polled, so one request is
/// open at a time.
pub fn restarted<S, F, C>(make: F, changes: C, quiet: Duration) -> impl Stream<Item = S::Item>
where
    F: Fn() -> S,
    S: Stream,
    C: Stream<Item = ()> + Unpin,
{
    struct State<S, F, C> {
        current: std::pin::Pin<Box<S>>,
        make: F,
        changes: C,
        /// When the changes heard so far have held still long enough.
        settled_at: Option<tokio::time::Instant>,
        /// False once `changes` has ended: nothing changes any more.
        open: bool,
    }
    let current = Box::pin(make());
    let state = State {
        current,
        make,
        changes,
        settled_at: None,
        open: true,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            let settled_at = state.settled_at;
            tokio::select! {
                biased;
                changed = state.changes.next(), if state.open => match changed {
                    Some(()) => state.settled_at = Some(tokio::time::Instant::now() + quiet),
                    None => state.open = false,
                },
                () = tokio::time::sleep_until(settled_at.unwrap_or_else(tokio::time::Instant::now)),
                    if settled_at.is_some() =>
                {
                    state.settled_at = None;
                    // The old stream goes here, before the new one (lazy) sends anything.
                    state.current = Box::pin((state.make)());
                }
                item = state.current.next() => return item.map(|item| (item, state)),
            }
        }
    })
}

/// Yields once each time `changes` moves (not for what it holds when called); ends when its
/// sender is gone.
pub fn each_change<T: Send + Sync + 'static>(
    mut changes: tokio::sync::watch::Receiver<T>,
) -> impl Stream<Item = ()> + Send + Unpin + 'static {
    changes.mark_unchanged();
    Box::pin(futures::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        Some(((), changes))
    }))
}

/// A second reader of one watch: every object an event of `events` touches (listed,
/// changed or deleted) is also sent to `to`, which the stream waits for while it is full,
/// so nothing is dropped and nothing piles up. Once `to`'s reader is gone, nothing is sent.
pub fn tee_touched<K, S>(
    events: S,
    to: tokio::sync::mpsc::Sender<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: Clone,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    // tokio's channel, not futures': a clone of a futures Sender brings its own slot, so
    // one per event would never wait.
    let to = Arc::new(to);
    events.then(move |event| {
        let to = to.clone();
        async move {
            if let Ok(
                watcher::Event::Apply(object)
                | watcher::Event::InitApply(object)
                | watcher::Event::Delete(object),
            ) = &event
            {
                // Fails only when the reader is gone: then nobody needs it.
                let _ = to.send(object.clone()).await;
            }
            event
        }
    })
}

/// What [`tee_touched`] sent, as a stream.
pub fn received<K>(from: tokio::sync::mpsc::Receiver<K>) -> impl Stream<Item = K> {
    futures::stream::unfold(from, |mut from| async move {
        let object = from.recv().await?;
        Some((object, from))
    })
}

/// For kube's `Controller::trigger_backoff`: its triggers are watches that each back off
/// already (`backoff`), so the controller adds no wait of its own around all of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// Whether a watch hears the API server: since when it has been failing, if it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// The first error since the watch last took an event; None while it takes them.
    pub behind_since: Option<Instant>,
    /// The latest error.
    pub last_error: Option<Instant>,
    /// Errors since `behind_since`.
    pub errors: u64,
    /// The latest error meant the API server could not be heard ([`unheard`]).
    pub unheard: bool,
}

impl Heard {
    /// An event taken: the watch is listing or watching again.
    pub fn took(&mut self) {
        *self = Heard::default();
    }

    /// An error: the watch is behind from now, or still. An error after a quiet spell
    /// starts a new run of errors.
    pub fn failed(&mut self, now: Instant, unheard: bool) {
        if self.behind(now).is_zero() {
            *self = Heard::default();
        }
        self.behind_since.get_or_insert(now);
        self.last_error = Some(now);
        self.errors += 1;
        self.unheard = unheard;
    }

    /// How long the watch has been behind at `now`: from its first error, as long as errors
    /// keep coming; zero once it took an event or has been quiet for `QUIET`.
    pub fn behind(&self, now: Instant) -> Duration {
        match (self.behind_since, self.last_error) {
            (Some(since), Some(last)) if now.saturating_duration_since(last) < QUIET => {
                now.saturating_duration_since(since)
            }
            _ => Duration::ZERO,
        }
    }
}

/// Every watch's health, by name, shared with `/readyz` and `/metrics`.
#[derive(Clone, Default)]
pub struct Health {
    watches: Arc<Mutex<BTreeMap<String, Heard>>>,
    /// Watches of kinds weir can do without (an HTTPRoute CRD a cluster may not have):
    /// reported, never a reason for `/readyz` to fail.
    optional: Arc<Mutex<std::collections::BTreeSet<String>>>,
    outages: Arc<Mutex<OutageLog>>,
}

fn quiet_since(last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    (now - last).to_std().is_ok_and(|quiet| quiet >= QUIET)
}

/// When the required watches could not hear the API server: the outage under way, if any,
/// and the last `OUTAGES_KEPT` that ended.
#[derive(Debug, Default)]
struct OutageLog {
    open: Option<DateTime<Utc>>,
    /// The latest error of the open outage: where it ends if its watches come back without
    /// an event (see `QUIET`).
    last_error: Option<DateTime<Utc>>,
    ended: VecDeque<Outage>,
    /// Outages ended so far: a read after one ended cannot trust a cache filled before it.
    count: u64,
}

impl OutageLog {
    fn failed(&mut self, now: DateTime<Utc>) {
        // An open outage quiet for `QUIET` was over at its last error (its watches came back
        // without an event): a new error starts a new one, the healthy time between is none.
        if let Some(last) = self.last_error
            && quiet_since(last, now)
        {
            self.heard(last);
        }
        self.open.get_or_insert(now);
        self.last_error = Some(now);
    }

    /// Heard again at `now`: the outage ends now, or at its last error if it has been quiet
    /// since for `QUIET` (its watches came back earlier, without an event to say so).
    fn heard_at(&mut self, now: DateTime<Utc>) {
        let end = match self.last_error {
            Some(last) if quiet_since(last, now) => last,
            _ => now,
        };
        self.heard(end);
    }

    fn heard(&mut self, end: DateTime<Utc>) {
        if let Some(start) = self.open.take() {
            if self.ended.len() == OUTAGES_KEPT {
                self.ended.pop_front();
            }
            self.ended.push_back(Outage {
                start,
                end: Some(end.max(start)),
            });
            self.count += 1;
        }
        self.last_error = None;
    }
}

impl Health {
    /// The record of the watch `name`, made known (healthy) at once so the metric lists it.
    pub fn watch(&self, name: &str) -> Watch {
        self.lock().entry(name.to_owned()).or_default();
        Watch {
            health: self.clone(),
            name: name.to_owned(),
        }
    }

    /// The record of a watch of a kind the cluster may lack: in the metric, not in readiness.
    pub fn optional_watch(&self, name: &str) -> Watch {
        self.optional
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        self.watch(name)
    }

    /// The outages of the required watches, oldest first, the one under way (if any) last
    /// with no end. `at` and `wall` are the same moment on the two clocks.
    pub fn outages(&self, at: Instant, wall: DateTime<Utc>) -> Vec<Outage> {
        let behind = self.unheard_behind(at);
        let mut log = self.outage_log();
        if !behind && log.open.is_some() {
            // Its watches came back without an event: over since the last error.
            let end = log.last_error.unwrap_or(wall);
            log.heard(end);
        }
        let mut outages: Vec<Outage> = log.ended.iter().copied().collect();
        outages.extend(log.open.map(|start| Outage { start, end: None }));
        outages
    }

    /// Forgets the outages that have ended: a replica that becomes leader must not take off
    /// the waits another leader timed the outages it alone saw as a standby.
    pub fn forget_ended_outages(&self) {
        self.outage_log().ended.clear();
    }

    /// How many outages have ended: it changes when one does.
    pub fn outages_ended(&self) -> u64 {
        self.outage_log().count
    }

    fn outage_log(&self) -> std::sync::MutexGuard<'_, OutageLog> {
        self.outages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a required watch is behind because it cannot hear the API server.
    fn unheard_behind(&self, now: Instant) -> bool {
        let optional = self
            .optional
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.lock().iter().any(|(name, heard)| {
            heard.unheard && !heard.behind(now).is_zero() && !optional.contains(name)
        })
    }

    fn is_optional(&self, name: &str) -> bool {
        self.optional
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Each watch and how long it has been behind at `now` (zero when it is not).
    pub fn behind(&self, now: Instant) -> Vec<(String, Duration)> {
        self.lock()
            .iter()
            .map(|(name, heard)| (name.clone(), heard.behind(now)))
            .collect()
    }

    /// The required watches behind for longer than `limit` at `now`: what makes `/readyz`
    /// fail.
    pub fn stale(&self, now: Instant, limit: Duration) -> Vec<String> {
        let optional = self
            .optional
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.behind(now)
            .into_iter()
            .filter(|(name, behind)| *behind > limit && !optional.contains(name))
            .map(|(name, _)| name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Heard>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One watch's handle on its record.
#[derive(Clone)]
pub struct Watch {
    health: Health,
    name: String,
}

impl Watch {
    /// Records what the watch's stream yielded; an error counts as an outage.
    pub fn saw<T, E: std::fmt::Display>(&self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.took(Utc::now()),
            Err(error) => self.saw_error(error, true),
        }
    }

    /// Records an error; `unheard`: it means the API server could not be heard.
    pub fn saw_error(&self, error: &impl std::fmt::Display, unheard: bool) {
        let now = Instant::now();
        {
            let mut watches = self.health.lock();
            let heard = watches.entry(self.name.clone()).or_default();
            if heard.behind(now).is_zero() {
                tracing::warn!(watch = %self.name, %error, "watch failed; retrying with backoff");
            }
            heard.failed(now, unheard);
        }
        if unheard && !self.health.is_optional(&self.name) {
            self.health.outage_log().failed(Utc::now());
        }
    }

    fn took(&self, wall: DateTime<Utc>) {
        self.health
            .lock()
            .entry(self.name.clone())
            .or_default()
            .took();
        // The outage ends when the last required watch behind hears again.
        if self.health.outage_log().open.is_some() && !self.health.unheard_behind(Instant::now()) {
            self.health.outage_log().heard_at(wall);
        }
    }

    #[cfg(test)]
    fn failed_at(&self, now: Instant) {
        let mut watches = self.health.lock();
        watches
            .entry(self.name.clone())
            .or_default()
            .failed(now, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streams `restarted` makes: the nth (from 0) yields 10n + 1 and 10n + 2, then
    /// waits forever, as a watch with nothing more to say does.
    fn counted(made: &Arc<std::sync::atomic::AtomicU32>) -> impl Fn() -> BoxedItems + use<> {
        let made = made.clone();
        move || {
            let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(
                futures::stream::iter([10 * n + 1, 10 * n + 2]).chain(futures::stream::pending()),
            )
        }
    }

    type BoxedItems = std::pin::Pin<Box<dyn Stream<Item = u32> + Send>>;

    async fn next_within(
        stream: &mut (impl Stream<Item = u32> + Unpin),
        wait: Duration,
    ) -> Option<u32> {
        tokio::time::timeout(wait, stream.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_restarted_stream_is_made_again_once_after_changes_settle() {
        let made = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (changes, receiver) = tokio::sync::watch::channel(0);
        let quiet = Duration::from_millis(100);
        let mut stream = Box::pin(restarted(counted(&made), each_change(receiver), quiet));
        let wait = Duration::from_secs(5);
        assert_eq!(next_within(&mut stream, wait).await, Some(1));
        assert_eq!(next_within(&mut stream, wait).await, Some(2));
        assert_eq!(
            next_within(&mut stream, quiet * 3).await,
            None,
            "nothing changed"
        );
        // Three changes in quick succession: one new stream, made after the last.
        for value in 1..=3 {
            changes.send_replace(value);
            tokio::time::sleep(quiet / 4).await;
        }
        assert_eq!(next_within(&mut stream, wait).await, Some(11));
        assert_eq!(next_within(&mut stream, wait).await, Some(12));
        assert_eq!(next_within(&mut stream, quiet * 3).await, None);
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_restarted_stream_without_changes_to_hear_runs_on() {
        let made = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (changes, receiver) = tokio::sync::watch::channel(0);
        drop(changes);
        let mut stream = Box::pin(restarted(
            counted(&made),
            each_change(receiver),
            Duration::from_millis(10),
        ));
        let wait = Duration::from_secs(5);
        assert_eq!(next_within(&mut stream, wait).await, Some(1));
        assert_eq!(next_within(&mut stream, wait).await, Some(2));
        assert_eq!(
            next_within(&mut stream, Duration::from_millis(200)).await,
            None
        );
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cached_first_list_reads_the_watch_cache_and_only_410_and_list_failures_list_again() {
        let cached = cached_first().labels("weir.dev/rollout");
        assert_eq!(cached.list_semantic, ListSemantic::Any);
        assert_eq!(config().list_semantic, ListSemantic::MostRecent);
        assert_eq!(config().page_size, Some(500));
        // The list kube's watcher sends for it (resourceVersion 0, not older than, the
        // config's page size) does ask the watch cache: kube leaves resourceVersion=0 out of
        // a list with a page size.
        let query = |limit: Option<u32>| {
            let params = kube::api::ListParams {
                limit,
                ..kube::api::ListParams::default().match_any()
            };
            kube::core::Request::new("/apis/weir.dev/v1alpha1/rollouts")
                .list(&params)
                .map(|request| request.uri().query().unwrap_or_default().to_owned())
                .unwrap_or_default()
        };
        assert!(query(cached.page_size).contains("resourceVersion=0"));
        assert!(
            !query(Some(500)).contains("resourceVersion=0"),
            "kube sends resourceVersion=0 beside a page size again: cached_first may page"
        );
        let status = |code| {
            watcher::Error::WatchError(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        assert!(lists_again(&status(410)));
        assert!(!lists_again(&status(500)));
        assert!(lists_again(&watcher::Error::NoResourceVersion));
    }

    #[tokio::test]
    async fn a_tee_passes_every_touched_object_on_and_waits_for_its_reader() {
        use watcher::Event;
        let (to, from) = tokio::sync::mpsc::channel::<u32>(1);
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(1)),
            Ok(Event::InitDone),
            Ok(Event::Apply(2)),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Delete(3)),
        ]);
        let mut teed = Box::pin(tee_touched(events, to));
        // The channel holds one: the second touched object waits for the reader.
        let mut passed = Vec::new();
        for _ in 0..3 {
            passed.push(teed.next().await.is_some());
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(100), teed.next())
                .await
                .is_err(),
            "the watch waits while its second reader's channel is full"
        );
        let mut from = Box::pin(received(from));
        let mut seen = vec![from.next().await];
        // The waiting event was kept by the stream, not by the future given up above.
        while let Some(event) = teed.next().await {
            passed.push(event.is_ok());
            if let Ok(Event::Apply(_) | Event::Delete(_)) = event {
                seen.push(from.next().await);
            }
        }
        assert_eq!(passed, vec![true, true, true, true, false, true]);
        assert_eq!(seen, vec![Some(1), Some(2), Some(3)]);
        drop(teed);
        assert_eq!(from.next().await, None);
        // With the reader gone the watch goes on alone.
        let (to, from) = tokio::sync::mpsc::channel::<u32>(1);
        drop(from);
        let events = futures::stream::iter([Ok(Event::Apply(1)), Ok(Event::Apply(2))]);
        assert_eq!(tee_touched(events, to).count().await, 2);
    }

    #[test]
    fn the_first_stream_gives_way_where_it_ends_and_is_never_polled_after() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        type Item = Result<i32, &'static str>;
        let polled = Arc::new(AtomicUsize::new(0));
        let counter = polled.clone();
        let first = futures::stream::iter([Ok(1), Err("blip"), Ok(2), Err("gone"), Ok(3)]).inspect(
            move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            },
        );
        let then = futures::stream::iter([Ok(10), Err("gone"), Ok(11)]);
        let gone: fn(&Item) -> bool = |item| *item == Err("gone");
        let items: Vec<Item> =
            futures::executor::block_on(until_relist(first, then, gone).collect());
        assert_eq!(
            items,
            vec![
                Ok(1),
                Err("blip"),
                Ok(2),
                Err("gone"),
                Ok(10),
                Err("gone"),
                Ok(11)
            ]
        );
        assert_eq!(polled.load(Ordering::SeqCst), 4, "nothing after its end");
        // Without an end, the first is all there is.
        let items: Vec<Item> = futures::executor::block_on(
            until_relist(
                futures::stream::iter([Ok(1), Err("blip")]),
                futures::stream::iter([Ok(10)]),
                gone,
            )
            .collect(),
        );
        assert_eq!(items, vec![Ok(1), Err("blip")]);
    }

    #[test]
    fn a_watch_is_behind_from_its_first_error_until_it_takes_an_event() {
        let start = Instant::now();
        let mut heard = Heard::default();
        assert_eq!(heard.behind(start), Duration::ZERO);
        // Errors every 5 s for 40 s: behind all along, counted from the first.
        for second in (0..=40).step_by(5) {
            heard.failed(start + Duration::from_secs(second), true);
        }
        assert_eq!(
            heard.behind(start + Duration::from_secs(41)),
            Duration::from_secs(41)
        );
        assert_eq!(heard.errors, 9);
        // An event: in again.
        let mut listed = heard.clone();
        listed.took();
        assert_eq!(listed, Heard::default());
        // Or quiet for QUIET: the watch started again without an object changing.
        assert_eq!(
            heard.behind(start + Duration::from_secs(40) + QUIET),
            Duration::ZERO
        );
        // A later error starts a new run.
        heard.failed(start + Duration::from_secs(100), true);
        assert_eq!(
            heard.behind(start + Duration::from_secs(101)),
            Duration::from_secs(1)
        );
        assert_eq!(heard.errors, 1);
    }

    #[test]
    fn only_watches_behind_past_the_limit_are_stale() {
        let health = Health::default();
        let rollouts = health.watch("rollouts");
        let routes = health.optional_watch("httproutes");
        let start = Instant::now();
        rollouts.failed_at(start);
        assert!(health.stale(start, BEHIND_LIMIT).is_empty());
        // Failing again every few seconds, past the limit.
        let late = start + BEHIND_LIMIT + Duration::from_secs(1);
        let mut at = start;
        while at < late {
            at += Duration::from_secs(4);
            rollouts.failed_at(at);
        }
        assert_eq!(health.stale(at, BEHIND_LIMIT), vec!["rollouts".to_owned()]);
        // A cluster without the HTTPRoute CRD: its watch fails for ever, readiness holds.
        let mut at_route = start;
        routes.failed_at(start);
        while at_route < late {
            at_route += Duration::from_secs(4);
            routes.failed_at(at_route);
        }
        assert_eq!(health.stale(at, BEHIND_LIMIT), vec!["rollouts".to_owned()]);
        assert!(
            health
                .behind(at_route)
                .iter()
                .any(|(n, b)| n == "httproutes" && *b > BEHIND_LIMIT)
        );
        rollouts.saw(&Ok::<(), &str>(()));
        assert!(health.stale(at, BEHIND_LIMIT).is_empty());
        assert_eq!(health.behind(start).len(), 2, "every watch is listed");
    }

    fn status(code: u16) -> watcher::Error {
        watcher::Error::WatchError(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn only_errors_of_an_absent_api_server_are_outages() {
        for code in [429, 500, 503, 504] {
            assert!(unheard(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            assert!(!unheard(&status(code)), "{code}");
        }
        assert!(!unheard(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn an_outage_lasts_until_every_required_watch_hears_again() {
        let health = Health::default();
        let rollouts = health.watch("rollouts");
        let sets = health.watch("replicasets");
        let routes = health.optional_watch("httproutes");
        let templates = health.watch("templates");
        let wall = Utc::now();
        // A kind the cluster lacks, a watch refused: not outages, however long they last.
        routes.saw_error(&"connection refused", true);
        templates.saw_error(&"forbidden", false);
        assert_eq!(health.outages(Instant::now(), wall), vec![]);
        rollouts.saw_error(&"connection refused", true);
        sets.saw_error(&"connection refused", true);
        let lasting = health.outages(Instant::now(), Utc::now());
        assert_eq!(lasting.len(), 1);
        assert_eq!(lasting[0].end, None);
        let start = lasting[0].start;
        rollouts.saw(&Ok::<(), &str>(()));
        assert_eq!(
            health.outages(Instant::now(), Utc::now())[0].end,
            None,
            "one watch still cannot hear"
        );
        assert_eq!(health.outages_ended(), 0);
        sets.saw(&Ok::<(), &str>(()));
        let ended = health.outages(Instant::now(), Utc::now());
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].start, start);
        assert!(ended[0].end.is_some_and(|end| end >= start));
        assert_eq!(health.outages_ended(), 1);
        assert!(
            !health.stale(Instant::now(), Duration::ZERO).is_empty(),
            "the refused watch is still behind, and still no outage"
        );
    }

    #[test]
    fn an_outage_whose_watches_came_back_quietly_ends_at_its_last_error() {
        let mut log = OutageLog::default();
        let t = Utc::now();
        log.failed(t);
        log.failed(t + chrono::Duration::seconds(5));
        let health = Health::default();
        *health.outage_log() = log;
        // No watch is behind (none is even known): over, at the last error.
        let outages = health.outages(Instant::now(), t + chrono::Duration::seconds(60));
        assert_eq!(
            outages,
            vec![Outage {
                start: t,
                end: Some(t + chrono::Duration::seconds(5))
            }]
        );
    }

    #[test]
    fn quiet_time_between_errors_is_no_outage() {
        let mut log = OutageLog::default();
        let t = Utc::now();
        log.failed(t);
        log.failed(t + chrono::Duration::seconds(2));
        // Quiet for a minute (the watches came back without an event), then a new error.
        log.failed(t + chrono::Duration::seconds(62));
        assert_eq!(
            log.ended.iter().copied().collect::<Vec<_>>(),
            vec![Outage {
                start: t,
                end: Some(t + chrono::Duration::seconds(2))
            }]
        );
        assert_eq!(log.open, Some(t + chrono::Duration::seconds(62)));
        // Heard a minute after that error: it ended at the error, not now.
        log.heard_at(t + chrono::Duration::seconds(122));
        assert_eq!(
            log.ended.back().and_then(|o| o.end),
            Some(t + chrono::Duration::seconds(62))
        );
        // Heard within QUIET of the last error: it ends when heard.
        log.failed(t + chrono::Duration::seconds(200));
        log.heard_at(t + chrono::Duration::seconds(203));
        assert_eq!(
            log.ended.back().and_then(|o| o.end),
            Some(t + chrono::Duration::seconds(203))
        );
    }

    #[test]
    fn outages_are_remembered_within_a_bound() {
        let mut log = OutageLog::default();
        let t = Utc::now();
        for i in 0..100 {
            log.failed(t + chrono::Duration::seconds(i * 10));
            log.heard(t + chrono::Duration::seconds(i * 10 + 5));
        }
        assert_eq!(log.ended.len(), OUTAGES_KEPT);
        assert_eq!(log.count, 100);
        assert_eq!(
            log.ended.back().and_then(|o| o.end),
            Some(t + chrono::Duration::seconds(995))
        );
    }

    #[test]
    fn a_failing_watch_waits_at_most_the_maximum_and_never_zero() {
        let mut backoff = backoff();
        let waits: Vec<Duration> = (0..12).map_while(|_| backoff.next()).collect();
        assert_eq!(waits.len(), 12, "a watch never gives up");
        assert!(
            waits
                .iter()
                .all(|w| *w > Duration::ZERO && *w <= MAX_BACKOFF * 2)
        );
        backoff.reset();
        let first = backoff.next().unwrap_or_default();
        assert!(first <= Duration::from_millis(500), "reset: {first:?}");
    }
}
