//! How often weir fetches from one Git host (`--git-fetches-per-host-per-minute`, with a
//! burst of `--git-fetch-burst`), across all GitSyncs: many GitSyncs of one host, or a few
//! with a short interval, must not hammer it (GitHub and GitLab answer too many fetches with
//! throttling that would fail every tenant's fetches at once).
//!
//! The meter is governor's keyed GCRA limiter, keyed by origin (scheme, host, port). A
//! GitSync that must wait is told how long and is requeued for then: it never holds a worker.
//! governor answers "not before T" without reserving T, so every GitSync turned away at once
//! would come back at T and all but one would be turned away again, a herd of reconciles
//! (each with its reads of the API server). A GitSync's wait is therefore spread over the
//! turns of the others waiting for the same host: with N waiting, about one comes back per
//! free fetch.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// The default of `--git-fetches-per-host-per-minute`: one a second on average, which a
/// hosted Git service takes from one client without throttling, and which is 60 GitSyncs of
/// one host at the default interval of a minute.
pub const DEFAULT_PER_MINUTE: u32 = 60;
/// The default of `--git-fetch-burst`: a restarted controller (every GitSync due at once) or
/// a push webhook for several GitSyncs of one repository fetches this many at once.
pub const DEFAULT_BURST: u32 = 10;
/// A GitSync turned away within this long counts as waiting for its host.
const WAITING_MEMORY: Duration = Duration::from_secs(60);
/// Hosts remembered by the limiter before the idle ones are forgotten.
const HOSTS_KEPT: usize = 1_000;

/// Where a fetch goes, as far as rate limiting cares: `scheme://host:port` (the scheme's
/// default port when none is given), the host in lower case. None for a URL without a host
/// (`file://`: the controller's own disk), or one that does not parse (validation refuses it).
pub fn origin(url: &str) -> Option<String> {
    let parsed = gix::url::parse(gix::bstr::BStr::new(url.trim())).ok()?;
    let host = parsed
        .host()
        .filter(|h| !h.is_empty())?
        .to_ascii_lowercase();
    let port = parsed
        .port_or_default()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    Some(format!("{}://{host}{port}", parsed.scheme.as_str()))
}

/// Fetches per Git host, shared by every GitSync of the controller.
pub struct FetchRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// One fetch's share of the quota: how far apart fetches are once the burst is spent.
    spacing: Duration,
    /// By origin: the GitSyncs (`namespace/name`) turned away, and when last.
    waiting: Mutex<HashMap<String, HashMap<String, C::Instant>>>,
}

impl std::fmt::Debug for FetchRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchRate")
            .field("spacing", &self.spacing)
            .finish_non_exhaustive()
    }
}

impl FetchRate<DefaultClock> {
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> FetchRate<DefaultClock> {
        FetchRate::with_clock(per_minute, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> FetchRate<C> {
    pub fn with_clock(per_minute: NonZeroU32, burst: NonZeroU32, clock: C) -> FetchRate<C> {
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        FetchRate {
            spacing: quota.replenish_interval(),
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            waiting: Mutex::default(),
        }
    }

    /// May the GitSync `key` fetch from `origin` now? Ok counts the fetch; Err says how long
    /// to wait: the limiter's wait, then the turn `spread` (0 to 1, different for each call)
    /// picks among those of the GitSyncs waiting for the same host.
    pub fn take(&self, origin: &str, key: &str, spread: f64) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let checked = self.limiter.check_key(&origin.to_owned());
        if self.limiter.len() > HOSTS_KEPT {
            self.limiter.retain_recent();
        }
        let queue = waiting.entry(origin.to_owned()).or_default();
        queue.retain(|_, last| Duration::from(now.duration_since(*last)) < WAITING_MEMORY);
        let result = match checked {
            Ok(()) => {
                queue.remove(key);
                Ok(())
            }
            Err(not_until) => {
                let others = queue.keys().filter(|k| *k != key).count();
                queue.insert(key.to_owned(), now);
                // One of the others + 1 turns, the first at the limiter's wait.
                let turns = ((spread.clamp(0.0, 1.0) * (others + 1) as f64).floor() as usize)
                    .min(others) as u32;
                Err(not_until.wait_time_from(now) + self.spacing.saturating_mul(turns))
            }
        };
        if queue.is_empty() {
            waiting.remove(origin);
        }
        result
    }

    /// How many hosts have GitSyncs waiting (bounded by the GitSyncs themselves).
    pub fn hosts_waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(per_minute: u32, burst: u32) -> (FetchRate<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let per_minute = NonZeroU32::new(per_minute).expect("positive");
        let burst = NonZeroU32::new(burst).expect("positive");
        (
            FetchRate::with_clock(per_minute, burst, clock.clone()),
            clock,
        )
    }

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        for (url, expected) in [
            ("https://github.com/o/r.git", Some("https://github.com:443")),
            (
                "https://GitHub.com:443/o/other",
                Some("https://github.com:443"),
            ),
            (
                "https://token@github.com/o/r",
                Some("https://github.com:443"),
            ),
            ("http://github.com/o/r", Some("http://github.com:80")),
            (
                "https://git.example:8443/r",
                Some("https://git.example:8443"),
            ),
            ("ssh://git@github.com/o/r.git", Some("ssh://github.com:22")),
            ("git@github.com:o/r.git", Some("ssh://github.com:22")),
            ("git://127.0.0.1:9999/r", Some("git://127.0.0.1:9999")),
            ("git://127.0.0.1/r", Some("git://127.0.0.1:9418")),
            ("file:///srv/git/r.git", None),
            ("", None),
        ] {
            assert_eq!(origin(url).as_deref(), expected, "{url}");
        }
        assert_ne!(
            origin("https://git.example:8443/r"),
            origin("https://git.example/r"),
            "another port is another server"
        );
    }

    #[test]
    fn a_burst_passes_then_fetches_are_spaced_by_the_rate() {
        let (rate, clock) = rate(60, 3);
        for n in 0..3 {
            assert_eq!(rate.take("https://h:443", &format!("ns/{n}"), 0.0), Ok(()));
        }
        assert_eq!(
            rate.take("https://h:443", "ns/late", 0.0),
            Err(Duration::from_secs(1)),
            "one fetch a second once the burst is spent"
        );
        clock.advance(Duration::from_millis(400));
        assert_eq!(
            rate.take("https://h:443", "ns/late", 0.0),
            Err(Duration::from_millis(600)),
            "asking again early waits only what is left"
        );
        clock.advance(Duration::from_millis(600));
        assert_eq!(rate.take("https://h:443", "ns/late", 0.0), Ok(()));
        assert_eq!(
            rate.hosts_waiting(),
            0,
            "a GitSync that fetched waits no more"
        );
    }

    #[test]
    fn hosts_are_limited_apart() {
        let (rate, _clock) = rate(60, 1);
        assert_eq!(rate.take("https://a:443", "ns/a", 0.0), Ok(()));
        assert!(rate.take("https://a:443", "ns/a2", 0.0).is_err());
        assert_eq!(
            rate.take("https://b:443", "ns/b", 0.0),
            Ok(()),
            "another host has its own quota"
        );
    }

    #[test]
    fn the_burst_refills_at_the_rate() {
        let (rate, clock) = rate(6, 2);
        assert_eq!(rate.take("o", "k", 0.0), Ok(()));
        assert_eq!(rate.take("o", "k", 0.0), Ok(()));
        assert_eq!(rate.take("o", "k", 0.0), Err(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(20));
        assert_eq!(rate.take("o", "k", 0.0), Ok(()));
        assert_eq!(
            rate.take("o", "k", 0.0),
            Ok(()),
            "two spacings: two fetches"
        );
        assert!(rate.take("o", "k", 0.0).is_err());
    }

    #[test]
    fn waiting_gitsyncs_come_back_spread_over_their_turns() {
        let (rate, _clock) = rate(60, 1);
        assert_eq!(rate.take("o", "ns/first", 0.0), Ok(()));
        let second = Duration::from_secs(1);
        // Ten GitSyncs turned away: each later one sees the others already waiting.
        let waits: Vec<Duration> = (0..10)
            .map(|n| {
                rate.take("o", &format!("ns/{n}"), 0.999)
                    .expect_err("waits")
            })
            .collect();
        let expected: Vec<Duration> = (0..10u32).map(|n| second + second * n).collect();
        assert_eq!(waits, expected, "spread 1: after every other waiter's turn");
        assert_eq!(
            rate.take("o", "ns/9", 0.0),
            Err(second),
            "spread 0: the limiter's wait alone"
        );
        assert_eq!(
            rate.take("o", "ns/9", 0.5),
            Err(second + second * 5),
            "the middle of the 10 turns"
        );
        assert_eq!(
            rate.take("o", "ns/9", 7.0),
            Err(second + second * 9),
            "a spread out of range is clamped"
        );
    }

    #[test]
    fn a_gitsync_stops_counting_as_waiting_after_a_minute() {
        let (rate, clock) = rate(1, 1);
        let minute = Duration::from_secs(60);
        assert_eq!(rate.take("o", "ns/a", 0.0), Ok(()));
        assert_eq!(rate.take("o", "ns/gone", 0.0), Err(minute));
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            rate.take("o", "ns/z", 1.0),
            Err(Duration::from_secs(30) + minute),
            "ns/gone waits too"
        );
        clock.advance(Duration::from_secs(30));
        assert_eq!(rate.take("o", "ns/x", 0.0), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            rate.take("o", "ns/y", 1.0),
            Err(Duration::from_secs(59) + minute),
            "only ns/z still counts: ns/gone never came back within the minute"
        );
    }
}
