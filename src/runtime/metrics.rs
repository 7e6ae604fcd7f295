//! The controller's Prometheus metrics. Labels are bounded: a Rollout's namespace and name
//! (one series per Rollout, as Argo Rollouts has), phases and error categories from fixed sets.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::analysis::AnalysisPhase;
use crate::api::rollout::{RolloutPhase, RolloutStatus};
use crate::runtime::watch::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub rollout: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub rollout: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitSyncLabels {
    pub namespace: String,
    pub gitsync: String,
}

/// A GitSync's delivery figures over the last week, as `gitops::delivery` computes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub deployments: usize,
    pub failures: usize,
    /// Median commit-to-good time, in seconds; none when no revision with a known commit
    /// time became good.
    pub lead_time: Option<i64>,
    /// Median rejection-to-good-again time, in seconds; none when nothing was restored.
    pub time_to_restore: Option<i64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: String,
}

const PHASES: [RolloutPhase; 4] = [
    RolloutPhase::Progressing,
    RolloutPhase::Paused,
    RolloutPhase::Healthy,
    RolloutPhase::Degraded,
];

fn phase_name(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Progressing => "Progressing",
        RolloutPhase::Paused => "Paused",
        RolloutPhase::Healthy => "Healthy",
        RolloutPhase::Degraded => "Degraded",
    }
}

pub struct Metrics {
    registry: Registry,
    phase: Family<PhaseLabels, Gauge>,
    step: Family<RolloutLabels, Gauge>,
    canary_weight: Family<RolloutLabels, Gauge>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    leader: Gauge<i64, AtomicI64>,
    shards_led: Gauge<i64, AtomicI64>,
    measurements: Family<MeasurementLabels, Counter>,
    query_duration: Histogram,
    watch_behind: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    webhook_requests: Family<OutcomeLabels, Counter>,
    gitsync_objects: Family<OutcomeLabels, Counter>,
    delivery_deployments: Family<GitSyncLabels, Gauge>,
    delivery_failures: Family<GitSyncLabels, Gauge>,
    delivery_lead_time: Family<GitSyncLabels, Gauge>,
    delivery_time_to_restore: Family<GitSyncLabels, Gauge>,
    /// Every watch's health: `/readyz` fails on a watch behind for too long, and
    /// `weir_watch_behind_seconds` says which.
    pub watches: Health,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeasurementLabels {
    pub phase: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "rollout_phase",
            "1 for the phase each Rollout is in, 0 for the others",
            phase.clone(),
        );
        let step = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_step",
            "Index of the step each Rollout is carrying out",
            step.clone(),
        );
        let canary_weight = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_canary_weight",
            "Percentage of traffic on each Rollout's canary, as verified",
            canary_weight.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Time per Rollout reconcile",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            reconcile_errors.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this replica leads at least one shard (with one shard: holds the leader lease)",
            leader.clone(),
        );
        let shards_led = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "shards_led",
            "How many shards (--shards) this replica leads",
            shards_led.clone(),
        );
        let measurements = Family::<MeasurementLabels, Counter>::default();
        registry.register(
            "analysis_measurements",
            "Analysis measurements taken, by outcome",
            measurements.clone(),
        );
        let query_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "analysis_query_duration_seconds",
            "Time per metric query, answered or not",
            query_duration.clone(),
        );
        let watch_behind = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "watch_behind_seconds",
            "How long each watch has been failing without taking an event (0: in sync)",
            watch_behind.clone(),
        );
        let webhook_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Push webhook calls, by how each ended (bad_signature, replay, sync_requested, ...)",
            webhook_requests.clone(),
        );
        let gitsync_objects = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "gitsync_objects",
            "Objects from Git by what became of each: applied (an apply sent), unchanged (its dry run showed the apply would change nothing, so none was sent), pruned",
            gitsync_objects.clone(),
        );
        let delivery_deployments = Family::<GitSyncLabels, Gauge>::default();
        registry.register(
            "delivery_deployments",
            "Revisions each GitSync applied from its ref over the last 7 days (deployment frequency)",
            delivery_deployments.clone(),
        );
        let delivery_failures = Family::<GitSyncLabels, Gauge>::default();
        registry.register(
            "delivery_failures",
            "Revisions each GitSync rejected over the last 7 days (over deployments: the change failure rate)",
            delivery_failures.clone(),
        );
        let delivery_lead_time = Family::<GitSyncLabels, Gauge>::default();
        registry.register(
            "delivery_lead_time_seconds",
            "Median time from commit to good of each GitSync's revisions that became good over the last 7 days",
            delivery_lead_time.clone(),
        );
        let delivery_time_to_restore = Family::<GitSyncLabels, Gauge>::default();
        registry.register(
            "delivery_time_to_restore_seconds",
            "Median time from a rejection to a good revision serving again, over each GitSync's rejections of the last 7 days",
            delivery_time_to_restore.clone(),
        );
        Metrics {
            registry,
            gitsync_objects,
            delivery_deployments,
            delivery_failures,
            delivery_lead_time,
            delivery_time_to_restore,
            watch_behind,
            webhook_requests,
            watches: Health::default(),
            measurements,
            query_duration,
            phase,
            step,
            canary_weight,
            reconcile_duration,
            reconcile_errors,
            leader,
            shards_led,
        }
    }
}

impl Metrics {
    pub fn observe_rollout(&self, namespace: &str, rollout: &str, status: &RolloutStatus) {
        let labels = RolloutLabels {
            namespace: namespace.into(),
            rollout: rollout.into(),
        };
        for phase in PHASES {
            let labels = PhaseLabels {
                namespace: namespace.into(),
                rollout: rollout.into(),
                phase: phase_name(phase).into(),
            };
            self.phase
                .get_or_create(&labels)
                .set(i64::from(status.phase == Some(phase)));
        }
        self.step
            .get_or_create(&labels)
            .set(i64::from(status.current_step_index.unwrap_or(0)));
        self.canary_weight
            .get_or_create(&labels)
            .set(i64::from(status.canary_weight.unwrap_or(0)));
    }

    /// A deleted Rollout's series go with it.
    pub fn forget_rollout(&self, namespace: &str, rollout: &str) {
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.into(),
                rollout: rollout.into(),
                phase: phase_name(phase).into(),
            });
        }
        let labels = RolloutLabels {
            namespace: namespace.into(),
            rollout: rollout.into(),
        };
        self.step.remove(&labels);
        self.canary_weight.remove(&labels);
    }

    pub fn observe_reconcile(&self, took: Duration, error_category: Option<&str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(category) = error_category {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    category: category.into(),
                })
                .inc();
        }
    }

    pub fn observe_measurement(&self, phase: AnalysisPhase, took: Duration) {
        self.query_duration.observe(took.as_secs_f64());
        self.measurements
            .get_or_create(&MeasurementLabels {
                phase: format!("{phase:?}"),
            })
            .inc();
    }

    /// One push webhook call, by its outcome (a label from a fixed set).
    pub fn observe_webhook(&self, outcome: &'static str) {
        self.webhook_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Objects of one GitSync attempt: applies sent, applies found needless, prunes.
    pub fn observe_gitsync_objects(&self, applied: usize, unchanged: usize, pruned: usize) {
        for (outcome, count) in [
            ("applied", applied),
            ("unchanged", unchanged),
            ("pruned", pruned),
        ] {
            if count > 0 {
                self.gitsync_objects
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.to_owned(),
                    })
                    .inc_by(count as u64);
            }
        }
    }

    /// A GitSync's delivery figures; a median with nothing to take it over has no series.
    pub fn observe_delivery(&self, namespace: &str, gitsync: &str, figures: Delivery) {
        let labels = GitSyncLabels {
            namespace: namespace.into(),
            gitsync: gitsync.into(),
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.delivery_deployments
            .get_or_create(&labels)
            .set(count(figures.deployments));
        self.delivery_failures
            .get_or_create(&labels)
            .set(count(figures.failures));
        for (family, value) in [
            (&self.delivery_lead_time, figures.lead_time),
            (&self.delivery_time_to_restore, figures.time_to_restore),
        ] {
            match value {
                Some(seconds) => {
                    family.get_or_create(&labels).set(seconds);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    /// A deleted GitSync's series go with it.
    pub fn forget_gitsync(&self, namespace: &str, gitsync: &str) {
        let labels = GitSyncLabels {
            namespace: namespace.into(),
            gitsync: gitsync.into(),
        };
        for family in [
            &self.delivery_deployments,
            &self.delivery_failures,
            &self.delivery_lead_time,
            &self.delivery_time_to_restore,
        ] {
            family.remove(&labels);
        }
    }

    pub fn set_leader(&self, shards_led: u32) {
        self.leader.set(i64::from(shards_led > 0));
        self.shards_led.set(i64::from(shards_led));
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        for (watch, behind) in self.watches.behind(Instant::now()) {
            self.watch_behind
                .get_or_create(&WatchLabels { watch })
                .set(behind.as_secs_f64());
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_series_and_errors_are_encoded() {
        let metrics = Metrics::default();
        let status = RolloutStatus {
            phase: Some(RolloutPhase::Paused),
            current_step_index: Some(3),
            canary_weight: Some(60),
            ..RolloutStatus::default()
        };
        metrics.observe_rollout("shop", "web", &status);
        metrics.observe_reconcile(Duration::from_millis(12), Some("MissingService"));
        metrics.set_leader(2);
        metrics.observe_webhook("bad_signature");
        metrics.observe_webhook("bad_signature");
        let _ = metrics.watches.watch("rollout/Rollout");
        let text = metrics.encode().expect("encodes");
        for line in [
            r#"weir_rollout_phase{namespace="shop",rollout="web",phase="Paused"} 1"#,
            r#"weir_rollout_phase{namespace="shop",rollout="web",phase="Healthy"} 0"#,
            r#"weir_rollout_step{namespace="shop",rollout="web"} 3"#,
            r#"weir_rollout_canary_weight{namespace="shop",rollout="web"} 60"#,
            r#"weir_reconcile_errors_total{category="MissingService"} 1"#,
            "weir_reconcile_duration_seconds_count 1",
            "weir_leader 1",
            "weir_shards_led 2",
            r#"weir_webhook_requests_total{outcome="bad_signature"} 2"#,
            r#"weir_watch_behind_seconds{watch="rollout/Rollout"} 0.0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // A deleted Rollout's series go; another's stay.
        metrics.observe_rollout("shop", "cart", &status);
        metrics.forget_rollout("shop", "web");
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains(r#"rollout="web""#), "{text}");
        assert!(
            text.lines()
                .any(|l| l == r#"weir_rollout_step{namespace="shop",rollout="cart"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn delivery_series_follow_the_figures_and_go_with_their_gitsync() {
        let metrics = Metrics::default();
        let figures = Delivery {
            deployments: 3,
            failures: 1,
            lead_time: Some(200),
            time_to_restore: None,
        };
        metrics.observe_delivery("shop", "app", figures);
        let text = metrics.encode().expect("encodes");
        for line in [
            r#"weir_delivery_deployments{namespace="shop",gitsync="app"} 3"#,
            r#"weir_delivery_failures{namespace="shop",gitsync="app"} 1"#,
            r#"weir_delivery_lead_time_seconds{namespace="shop",gitsync="app"} 200"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("weir_delivery_time_to_restore_seconds{"));
        metrics.observe_delivery(
            "shop",
            "app",
            Delivery {
                lead_time: None,
                ..figures
            },
        );
        assert!(
            !metrics
                .encode()
                .expect("encodes")
                .contains("weir_delivery_lead_time_seconds{")
        );
        metrics.forget_gitsync("shop", "app");
        assert!(
            !metrics
                .encode()
                .expect("encodes")
                .contains("gitsync=\"app\"")
        );
    }
}
