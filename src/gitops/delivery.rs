//! Delivery figures of one GitSync over a window, computed exactly from its revision history:
//! how often revisions were deployed, how long a commit took to become stable, how many
//! deployments failed, and how long it took to serve a good revision again after a rejection.
//!
//! Times are Unix seconds, so that the figures are exact integers and the tests need no clock.
//! Pure, below both of its readers: the controller's metrics and the dashboard.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::gitsync::GitSyncStatus;

/// What happened to a revision, as the GitSync's history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The revision was applied to the cluster.
    Applied,
    /// The revision was applied and is what the cluster serves as good (its Rollouts healthy).
    Stable,
    /// weir rejected the revision (analysis failed, a health check failed, ...).
    Rejected,
    /// The last good revision applied again after a rejection (a rollback): good is served
    /// again, but nothing new was delivered, so it has no lead time.
    Restored,
}

impl Fate {
    fn order(&self) -> u8 {
        match self {
            Fate::Applied => 0,
            Fate::Rejected => 1,
            Fate::Restored => 2,
            Fate::Stable => 3,
        }
    }
}

/// One entry of a GitSync's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub revision: String,
    pub fate: Fate,
    /// When it happened.
    pub at: i64,
    /// When the revision was committed, when the status records it.
    pub committed: Option<i64>,
}

/// The half-open window `[from, to)` the figures are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Window {
    fn holds(&self, at: i64) -> bool {
        self.from <= at && at < self.to
    }
}

/// The figures; every duration in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Figures {
    /// Revisions applied in the window (deployment frequency is this over the window's length).
    pub deployments: usize,
    /// For each revision that became stable in the window and whose commit time is known:
    /// commit to stable, in the order they became stable.
    pub lead_times: Vec<i64>,
    /// Revisions rejected in the window: the change failure rate is this over `deployments`.
    pub failures: usize,
    /// For each rejection in the window that has been restored: rejection to the next
    /// revision that served as good (stable) again, in the order of the rejections.
    pub restore_times: Vec<i64>,
    /// Rejections in the window with no good revision served since.
    pub unrestored: usize,
}

impl Figures {
    /// Deployments per day over `window`, `None` for an empty window.
    pub fn per_day(&self, window: Window) -> Option<f64> {
        let seconds = window.to.checked_sub(window.from).filter(|s| *s > 0)?;
        Some(self.deployments as f64 * 86_400.0 / seconds as f64)
    }

    /// Rejected over applied, `None` when nothing was applied.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.deployments > 0).then(|| self.failures as f64 / self.deployments as f64)
    }
}

/// The figures of `history` (any order) over `window`.
pub fn figures(history: &[Outcome], window: Window) -> Figures {
    let mut ordered: Vec<&Outcome> = history.iter().collect();
    // Times are whole seconds: what happened in one second is taken in the order it must
    // have happened (a revision is applied, then rejected, then good is served again).
    ordered.sort_by_key(|o| (o.at, o.fate.order()));
    let mut figures = Figures::default();
    for (index, outcome) in ordered.iter().enumerate() {
        if !window.holds(outcome.at) {
            continue;
        }
        match outcome.fate {
            Fate::Applied => figures.deployments += 1,
            Fate::Stable => {
                if let Some(committed) = outcome.committed {
                    figures.lead_times.push(outcome.at - committed);
                }
            }
            Fate::Restored => {}
            Fate::Rejected => {
                figures.failures += 1;
                let restored = ordered[index + 1..]
                    .iter()
                    .find(|later| matches!(later.fate, Fate::Stable | Fate::Restored));
                match restored {
                    Some(good) => figures.restore_times.push(good.at - outcome.at),
                    None => figures.unrestored += 1,
                }
            }
        }
    }
    figures
}

/// A GitSync's history as delivery outcomes: each apply, each revision that became good,
/// each rejection.
pub fn outcomes(status: &GitSyncStatus) -> Vec<Outcome> {
    // Each revision's commit time, from any record of it that has one.
    let committed = |revision: &str| {
        status
            .history
            .iter()
            .filter(|r| r.revision == revision)
            .find_map(|r| r.committed_at.as_ref())
            .map(|t| t.0.as_second())
    };
    let outcome = |revision: &str, fate: Fate, at: &Time| Outcome {
        revision: revision.to_owned(),
        fate,
        at: at.0.as_second(),
        committed: committed(revision),
    };
    let applied = status.history.iter().filter_map(|record| {
        let fate = match record.outcome.as_str() {
            "Applied" => Fate::Applied,
            "RolledBack" => Fate::Restored,
            _ => return None,
        };
        Some(outcome(&record.revision, fate, &record.time))
    });
    let good = status
        .good_revisions
        .iter()
        .map(|good| outcome(&good.revision, Fate::Stable, &good.since));
    let rejected = status
        .rejected_revisions
        .iter()
        .map(|rejected| outcome(&rejected.revision, Fate::Rejected, &rejected.rejected_at));
    applied.chain(good).chain(rejected).collect()
}

/// The median, halfway between the middle two of an even count; `None` for none.
pub fn median(values: &[i64]) -> Option<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// The window of length `span` ending at `now` (Unix seconds), `now` included.
pub fn ending_at(span: std::time::Duration, now: i64) -> Window {
    let seconds = i64::try_from(span.as_secs()).unwrap_or(i64::MAX);
    Window {
        from: now.saturating_sub(seconds),
        to: now.saturating_add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(revision: &str, fate: Fate, at: i64, committed: Option<i64>) -> Outcome {
        Outcome {
            revision: revision.into(),
            fate,
            at,
            committed,
        }
    }

    /// The demo's story: a good revision, a bad one rejected and reverted, the revert
    /// stable, then another good one whose commit time was not recorded.
    fn history() -> Vec<Outcome> {
        vec![
            outcome("a1", Fate::Applied, 1_000, Some(900)),
            outcome("a1", Fate::Stable, 1_300, Some(900)),
            outcome("b2", Fate::Applied, 2_000, Some(1_950)),
            outcome("b2", Fate::Rejected, 2_200, Some(1_950)),
            outcome("c3", Fate::Applied, 2_250, Some(2_210)),
            outcome("c3", Fate::Stable, 2_500, Some(2_210)),
            outcome("d4", Fate::Applied, 3_000, None),
            outcome("d4", Fate::Stable, 3_100, None),
            outcome("e5", Fate::Applied, 4_000, Some(3_990)),
            outcome("e5", Fate::Rejected, 4_100, Some(3_990)),
        ]
    }

    #[test]
    fn figures_over_the_whole_history() {
        let window = Window {
            from: 0,
            to: 86_400,
        };
        let got = figures(&history(), window);
        assert_eq!(
            got,
            Figures {
                deployments: 5,
                lead_times: vec![400, 290],
                failures: 2,
                restore_times: vec![300],
                unrestored: 1,
            }
        );
        assert_eq!(got.per_day(window), Some(5.0));
        assert_eq!(got.failure_rate(), Some(0.4));
    }

    #[test]
    fn the_window_is_half_open_and_restores_look_past_it() {
        // From the bad revision's application up to (not including) the next one.
        let window = Window {
            from: 2_000,
            to: 3_000,
        };
        let got = figures(&history(), window);
        assert_eq!(
            got,
            Figures {
                deployments: 2,
                lead_times: vec![290],
                failures: 1,
                restore_times: vec![300],
                unrestored: 0,
            }
        );
        // A rejection restored after the window still counts its full time to restore.
        let got = figures(
            &history(),
            Window {
                from: 2_100,
                to: 2_300,
            },
        );
        assert_eq!(got.restore_times, vec![300]);
        assert_eq!(got.lead_times, Vec::<i64>::new());
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let mut reversed = history();
        reversed.reverse();
        let window = Window {
            from: 0,
            to: 86_400,
        };
        assert_eq!(figures(&reversed, window), figures(&history(), window));
    }

    #[test]
    fn a_rollback_restores_without_delivering() {
        let rolled_back = vec![
            outcome("a1", Fate::Applied, 1_000, Some(900)),
            outcome("a1", Fate::Stable, 1_100, Some(900)),
            outcome("b2", Fate::Applied, 2_000, Some(1_990)),
            outcome("b2", Fate::Rejected, 2_100, Some(1_990)),
            outcome("a1", Fate::Restored, 2_130, Some(900)),
            outcome("c3", Fate::Applied, 3_000, Some(2_990)),
            outcome("c3", Fate::Stable, 3_050, Some(2_990)),
        ];
        let got = figures(
            &rolled_back,
            Window {
                from: 0,
                to: 86_400,
            },
        );
        assert_eq!(
            got,
            Figures {
                deployments: 3,
                lead_times: vec![200, 60],
                failures: 1,
                restore_times: vec![30],
                unrestored: 0,
            }
        );
    }

    #[test]
    fn within_one_second_a_rejection_comes_before_its_restore() {
        // The rollback recorded in the same second as the rejection, listed first.
        let same_second = vec![
            outcome("a1", Fate::Restored, 2_100, None),
            outcome("b2", Fate::Rejected, 2_100, None),
            outcome("b2", Fate::Applied, 2_100, None),
        ];
        let got = figures(
            &same_second,
            Window {
                from: 0,
                to: 86_400,
            },
        );
        assert_eq!((got.restore_times, got.unrestored), (vec![0], 0));
        assert_eq!(got.deployments, 1);
    }

    #[test]
    fn nothing_applied_has_no_rate() {
        let got = figures(&[], Window { from: 0, to: 0 });
        assert_eq!(got.failure_rate(), None);
        assert_eq!(got.per_day(Window { from: 0, to: 0 }), None);
    }
}
