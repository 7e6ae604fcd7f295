//! Blue-green through the same simulated world as canary: each path by example, and the
//! strategy's invariants for any order of events, pod availability and crashes.

use std::collections::BTreeMap;

use super::*;

/// A blue-green spec with the active and preview Services, `extra` merged in.
fn bg_spec(extra: Value, replicas: i32) -> RolloutSpec {
    let mut blue_green = json!({"activeService": "web-active", "previewService": "web-preview"});
    if let (Some(target), Some(extra)) = (blue_green.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}},
        "strategy": {"blueGreen": blue_green}
    }))
    .expect("spec")
}

const PRE: AnalysisKind = AnalysisKind::PrePromotion;
const POST: AnalysisKind = AnalysisKind::PostPromotion;

fn analysis() -> Value {
    json!({"templates": [{"templateName": "check"}]})
}

impl World {
    fn active(&self) -> Option<&str> {
        self.observed.stable_service_hash.as_deref()
    }

    fn preview(&self) -> Option<&str> {
        self.observed.canary_service_hash.as_deref()
    }

    fn replicas_of(&self, hash: &str) -> Option<i32> {
        self.rs(hash).map(|rs| rs.replicas)
    }
}

#[test]
fn with_the_defaults_the_new_version_is_previewed_switched_and_the_old_one_waits() {
    let mut world = World::with_canary(bg_spec(json!({}), 3));
    assert_eq!(
        (world.active(), world.preview()),
        (Some(STABLE), Some(STABLE))
    );
    let plans = world.reconcile();
    assert_eq!(
        World::reasons(&plans),
        vec![Reason::RolloutStarted, Reason::RolloutCompleted]
    );
    assert_eq!(world.status.stable_rs.as_deref(), Some(CANARY));
    assert_eq!(
        (world.active(), world.preview()),
        (Some(CANARY), Some(CANARY))
    );
    assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(
        world.replicas_of(STABLE),
        Some(3),
        "the previous stack waits scaleDownDelaySeconds"
    );
    let at = world.rs(STABLE).and_then(|rs| rs.scale_down_at);
    assert_eq!(at, Some(world.now + chrono::Duration::seconds(30)));
    world.tick(29);
    world.reconcile();
    assert_eq!(world.replicas_of(STABLE), Some(3));
    world.tick(1);
    world.reconcile();
    assert_eq!(world.replicas_of(STABLE), Some(0));
    assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn the_active_service_waits_for_every_new_pod() {
    let mut world = World::with_canary(bg_spec(json!({}), 3));
    world.instant_pods = false;
    world.reconcile();
    assert_eq!(world.replicas_of(CANARY), Some(3));
    assert_eq!(world.active(), Some(STABLE));
    assert_eq!(
        world.preview(),
        Some(STABLE),
        "the preview waits for pods too"
    );
    world.rs_mut(CANARY).expect("new rs").available = 2;
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE), "2 of 3 pods is not all");
    assert_eq!(world.preview(), Some(STABLE));
    world.pods_become_available();
    world.reconcile();
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn without_auto_promotion_the_preview_is_paused_at_its_count_until_promoted() {
    let spec = bg_spec(
        json!({"autoPromotionEnabled": false, "previewReplicaCount": 1}),
        4,
    );
    let mut world = World::with_canary(spec);
    let plans = world.reconcile();
    assert_eq!(
        World::reasons(&plans),
        vec![Reason::RolloutStarted, Reason::Paused]
    );
    assert_eq!(world.replicas_of(CANARY), Some(1), "previewReplicaCount");
    assert_eq!(
        (world.active(), world.preview()),
        (Some(STABLE), Some(CANARY))
    );
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
    assert_eq!(
        world.status.pause_conditions.first().map(|c| c.reason),
        Some(PauseReason::BlueGreenPause)
    );
    world.tick(86_400);
    let plans = world.reconcile();
    assert_eq!(
        world.active(),
        Some(STABLE),
        "waits for promote, however long"
    );
    assert_eq!(World::reasons(&plans), vec![]);

    world.promote();
    let plans = world.reconcile();
    assert_eq!(
        World::reasons(&plans),
        vec![Reason::Promoted, Reason::RolloutCompleted]
    );
    assert_eq!(
        world.replicas_of(CANARY),
        Some(4),
        "full scale before the switch"
    );
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn auto_promotion_seconds_pause_before_the_switch_then_promote() {
    let mut world = World::with_canary(bg_spec(json!({"autoPromotionSeconds": 20}), 2));
    let plans = world.reconcile();
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
    assert_eq!(
        plans.last().and_then(|p| p.requeue_after),
        Some(Duration::from_secs(20))
    );
    world.tick(19);
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE));
    world.tick(1);
    let plans = world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(
        World::reasons(&plans),
        vec![Reason::Promoted, Reason::RolloutCompleted]
    );
}

#[test]
fn an_outage_does_not_count_towards_auto_promotion_seconds() {
    let mut world = World::with_canary(bg_spec(json!({"autoPromotionSeconds": 20}), 2));
    world.reconcile();
    world.tick(5);
    world.outage_begins();
    world.tick(10);
    world.outage_ends();
    world.tick(10);
    let plans = world.reconcile();
    assert!(World::reasons(&plans).contains(&Reason::OutageExcluded));
    assert_eq!(world.active(), Some(STABLE), "25 s in, 10 of them unheard");
    world.tick(5);
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
}

#[test]
fn auto_promotion_seconds_are_ignored_without_auto_promotion_as_in_argo() {
    let spec = bg_spec(
        json!({"autoPromotionEnabled": false, "autoPromotionSeconds": 5}),
        2,
    );
    let mut world = World::with_canary(spec);
    world.reconcile();
    world.tick(3600);
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE));
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
}

#[test]
fn pre_promotion_analysis_gates_the_switch() {
    let mut world = World::with_canary(bg_spec(json!({"prePromotionAnalysis": analysis()}), 2));
    world.reconcile();
    assert_eq!(world.preview(), Some(CANARY));
    assert_eq!(world.active(), Some(STABLE));
    assert!(world.observed.analysis_runs.iter().any(|r| r.kind == PRE));
    world.run_phase(PRE, AnalysisPhase::Successful, "ok");
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn a_failed_pre_promotion_analysis_never_switches_and_the_preview_goes_after_the_abort_delay() {
    let spec = bg_spec(
        json!({"prePromotionAnalysis": analysis(), "abortScaleDownDelaySeconds": 10}),
        2,
    );
    let mut world = World::with_canary(spec);
    world.reconcile();
    world.run_phase(PRE, AnalysisPhase::Failed, "error-rate = 0.3");
    let plans = world.reconcile();
    assert!(World::reasons(&plans).contains(&Reason::AnalysisFailed));
    assert!(world.status.abort);
    assert_eq!(
        world.active(),
        Some(STABLE),
        "the active Service never moved"
    );
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(
        world.status.abort_cause.as_ref().map(|c| c.metric.clone()),
        Some(Some("error-rate".to_owned()))
    );
    assert_eq!(
        world.replicas_of(CANARY),
        Some(2),
        "kept for the abort delay"
    );
    world.tick(9);
    world.reconcile();
    assert_eq!(world.replicas_of(CANARY), Some(2));
    world.tick(1);
    world.reconcile();
    assert_eq!(world.replicas_of(CANARY), Some(0));
    assert_eq!(world.active(), Some(STABLE));
}

#[test]
fn a_failed_post_promotion_analysis_switches_back_in_the_same_plan() {
    let mut world = World::with_canary(bg_spec(json!({"postPromotionAnalysis": analysis()}), 3));
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(
        world.status.stable_rs.as_deref(),
        Some(STABLE),
        "not complete yet"
    );
    assert_eq!(
        world.replicas_of(STABLE),
        Some(3),
        "the previous stack stays up"
    );
    assert!(world.observed.analysis_runs.iter().any(|r| r.kind == POST));
    assert_eq!(world.phase(), Some(RolloutPhase::Progressing));

    world.run_phase(POST, AnalysisPhase::Failed, "error-rate = 0.5");
    let plan = world.plan();
    assert!(
        plan.actions.contains(&Action::PointService {
            service: "web-active".into(),
            hash: STABLE.into()
        }),
        "{:?}",
        plan.actions
    );
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE));
    assert_eq!(world.replicas_of(STABLE), Some(3));
    assert!(world.status.abort);
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(world.status.stable_rs.as_deref(), Some(STABLE));
}

#[test]
fn a_crash_after_switching_back_does_not_switch_again() {
    let mut world = World::with_canary(bg_spec(json!({"postPromotionAnalysis": analysis()}), 2));
    world.reconcile();
    world.run_phase(POST, AnalysisPhase::Failed, "error-rate = 0.5");
    let plan = world.plan();
    world.apply(&plan.actions);
    // The status with the abort is never written.
    assert_eq!(world.active(), Some(STABLE));
    let plan = world.plan();
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::PointService { hash, .. } if hash == CANARY)),
        "{:?}",
        plan.actions
    );
    world.reconcile();
    assert!(world.status.abort);
    assert_eq!(world.active(), Some(STABLE));
}

#[test]
fn a_successful_post_promotion_analysis_completes_the_release() {
    let mut world = World::with_canary(bg_spec(json!({"postPromotionAnalysis": analysis()}), 2));
    world.reconcile();
    world.run_phase(POST, AnalysisPhase::Successful, "ok");
    let plans = world.reconcile();
    assert_eq!(World::reasons(&plans), vec![Reason::RolloutCompleted]);
    assert_eq!(world.status.stable_rs.as_deref(), Some(CANARY));
    assert!(world.rs(STABLE).and_then(|rs| rs.scale_down_at).is_some());
}

#[test]
fn promote_full_skips_analysis_and_pauses() {
    let spec = bg_spec(
        json!({"autoPromotionEnabled": false, "previewReplicaCount": 1,
               "prePromotionAnalysis": analysis(), "postPromotionAnalysis": analysis()}),
        2,
    );
    let mut world = World::with_canary(spec);
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE));
    world.status.promote_full = true;
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    assert_eq!(world.status.stable_rs.as_deref(), Some(CANARY));
    assert!(
        world.observed.analysis_runs.iter().all(|r| r.kind == PRE),
        "no post-promotion analysis after promote --full"
    );
}

#[test]
fn an_operator_abort_and_retry_start_a_new_attempt() {
    let mut world = World::with_canary(bg_spec(json!({"autoPromotionEnabled": false}), 2));
    world.reconcile();
    let attempt = world.status.attempt;
    world.status.abort = true;
    world.reconcile();
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(world.active(), Some(STABLE));
    world.status.abort = false;
    let plans = world.reconcile();
    assert!(World::reasons(&plans).contains(&Reason::Retried));
    assert_eq!(world.status.attempt, attempt + 1);
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
}

#[test]
fn spec_paused_holds_the_switch() {
    let mut world = World::with_canary(bg_spec(json!({}), 2));
    world.spec.paused = true;
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE));
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
    world.spec.paused = false;
    world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
}

#[test]
fn a_preview_that_never_comes_up_aborts_at_the_progress_deadline() {
    let mut world = World::with_canary(bg_spec(json!({}), 2));
    world.crashing.push(CANARY.into());
    world.reconcile();
    world.tick(601);
    let plans = world.reconcile();
    assert!(World::reasons(&plans).contains(&Reason::ProgressDeadlineExceeded));
    assert_eq!(world.active(), Some(STABLE));
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
}

#[test]
fn the_revision_limit_scales_older_versions_down_at_once() {
    let mut world = World::with_canary(bg_spec(json!({"scaleDownDelayRevisionLimit": 1}), 2));
    world.reconcile();
    world.tick(1);
    world.hash = "canary2".into();
    world.reconcile();
    assert_eq!(world.active(), Some("canary2"));
    assert_eq!(
        world.replicas_of(STABLE),
        Some(0),
        "beyond the limit: at once"
    );
    assert_eq!(
        world.replicas_of(CANARY),
        Some(2),
        "within it: waits its delay"
    );
}

#[derive(Clone, Debug)]
enum BgEvent {
    Common(Event),
    /// Some pods of the `n`th ReplicaSet stop being available (a node goes away).
    LosePods(usize, i32),
}

fn bg_event() -> impl Strategy<Value = BgEvent> {
    prop_oneof![
        6 => event_strategy().prop_map(BgEvent::Common),
        1 => (0..6usize).prop_map(|n| BgEvent::Common(Event::CrashPartway(n))),
        2 => (0..4usize, 0..4i32).prop_map(|(i, n)| BgEvent::LosePods(i, n)),
    ]
}

fn bg_world() -> impl Strategy<Value = World> {
    (
        any::<bool>(),
        prop::option::of(0..60i32),
        prop::option::of(0..6i32),
        any::<bool>(),
        any::<bool>(),
        0..120i32,
        1..6i32,
        any::<bool>(),
    )
        .prop_map(
            |(auto, seconds, preview, pre, post, delay, replicas, instant)| {
                let mut extra =
                    json!({"autoPromotionEnabled": auto, "scaleDownDelaySeconds": delay});
                if let Some(seconds) = seconds {
                    extra["autoPromotionSeconds"] = json!(seconds);
                }
                if let Some(preview) = preview {
                    extra["previewReplicaCount"] = json!(preview);
                }
                if pre {
                    extra["prePromotionAnalysis"] = analysis();
                }
                if post {
                    extra["postPromotionAnalysis"] = analysis();
                }
                let mut world = World::with_canary(bg_spec(extra, replicas));
                world.instant_pods = instant;
                world
            },
        )
}

/// What the property test remembers about the release under way, to judge each switch.
#[derive(Default)]
struct Witness {
    /// An operator promoted since the new version's attempt began.
    promoted: bool,
    /// When each previous stack (the stable version) last stopped being selected by the
    /// active Service.
    left_active: BTreeMap<String, DateTime<Utc>>,
}

impl World {
    fn blue_green(&self) -> &crate::api::rollout::BlueGreenStrategy {
        self.spec.strategy.blue_green.as_ref().expect("blueGreen")
    }

    /// Checks one carried-out plan (or part of one) against the blue-green invariants.
    fn check_switch(
        &self,
        before: &World,
        attempt: i32,
        witness: &mut Witness,
    ) -> Result<(), TestCaseError> {
        let replicas = self.spec.replicas.unwrap_or(1);
        let blue_green = self.blue_green();
        let (from, to) = (before.active(), self.active());
        if from != to
            && let (Some(from), Some(to)) = (from, to)
        {
            let stable = before.status.stable_rs.as_deref();
            if Some(from) == stable {
                witness.left_active.insert(from.to_owned(), self.now);
            }
            witness.left_active.remove(to);
            if Some(to) == stable {
                // Back to the previous stack: it was kept at full scale.
                prop_assert_eq!(
                    self.replicas_of(to),
                    Some(replicas),
                    "switched back to {} not at full scale",
                    to
                );
            } else {
                let new = self.rs(to).map(|rs| (rs.replicas, rs.available));
                prop_assert!(
                    new.is_some_and(|(r, a)| r == replicas && a >= replicas),
                    "switched to {} at {:?} of {}",
                    to,
                    new,
                    replicas
                );
                let full = before.status.promote_full;
                let run = |kind| {
                    self.observed
                        .analysis_runs
                        .iter()
                        .find(|r| r.hash == to && r.attempt == attempt && r.kind == kind)
                };
                if blue_green.pre_promotion_analysis.is_some() && !full {
                    let phase = run(PRE).map(|r| r.phase);
                    prop_assert!(
                        phase == Some(AnalysisPhase::Successful)
                            || (phase == Some(AnalysisPhase::Inconclusive) && witness.promoted),
                        "switched to {} with pre-promotion analysis {:?}",
                        to,
                        phase
                    );
                }
                if !blue_green.auto_promotion_enabled && !full {
                    prop_assert!(witness.promoted, "switched to {} without a promote", to);
                }
                prop_assert_ne!(
                    run(POST).map(|r| r.phase),
                    Some(AnalysisPhase::Failed),
                    "switched to {} after its post-promotion analysis failed",
                    to
                );
            }
        }
        // The previous stack goes only after its delay.
        for rs in &self.observed.replica_sets {
            let was = before.replicas_of(&rs.hash).unwrap_or(0);
            if rs.replicas == 0
                && was > 0
                && let Some(left) = witness.left_active.get(&rs.hash)
            {
                let delay =
                    chrono::Duration::seconds(i64::from(blue_green.scale_down_delay_seconds));
                let limited = blue_green.scale_down_delay_revision_limit.is_some();
                prop_assert!(
                    self.now >= *left + delay || limited,
                    "{} scaled down {}s after leaving the active Service",
                    rs.hash,
                    (self.now - *left).num_seconds()
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// For any blue-green settings and any order of events, pod losses and crashes between
    /// acting and writing the status: the active Service switches forward only to a fully
    /// available new version, after a successful pre-promotion analysis and (without
    /// auto-promotion) a promote; it switches back only to the previous stack at full scale;
    /// a failed post-promotion analysis leaves the active Service on the previous stack; a
    /// version that left the active Service keeps its pods for scaleDownDelaySeconds.
    #[test]
    fn the_active_service_moves_only_as_blue_green_allows(
        mut world in bg_world(),
        events in prop::collection::vec(bg_event(), 0..40),
    ) {
        let mut generation = 1;
        let mut witness = Witness::default();
        for event in &events {
            let before = world.clone();
            let attempt = world.plan().status.attempt;
            match event {
                BgEvent::Common(event) => {
                    world.happen(event, &mut generation);
                    witness.promoted |= matches!(event, Event::Promote);
                    if matches!(event, Event::Crash | Event::CrashPartway(_)) {
                        world.check_switch(&before, attempt, &mut witness)?;
                        continue;
                    }
                }
                BgEvent::LosePods(index, left) => {
                    if let Some(rs) = world.observed.replica_sets.get_mut(*index) {
                        rs.available = rs.available.min(*left);
                    }
                }
            }
            for _ in 0..30 {
                let before = world.clone();
                let plan = world.plan();
                prop_assert_eq!(&plan, &world.plan());
                world.apply(&plan.actions);
                world.check_switch(&before, plan.status.attempt, &mut witness)?;
                world.status = plan.status.clone();
                if before.status.attempt != world.status.attempt {
                    witness.promoted = false;
                }
                if plan.actions.is_empty() {
                    break;
                }
            }
            // A failed post-promotion verdict of the release under way leaves the active
            // Service on the previous stack, at full scale.
            let canary = world.status.canary_rs.clone().unwrap_or_default();
            let failed = world.observed.analysis_runs.iter().any(|r| {
                r.kind == POST && r.hash == canary && r.attempt == world.status.attempt
                    && matches!(r.phase, AnalysisPhase::Failed | AnalysisPhase::Error)
            });
            if failed && world.status.stable_rs.as_deref() != Some(canary.as_str()) && !world.spec.paused {
                prop_assert!(world.status.abort);
                prop_assert_ne!(world.active(), Some(canary.as_str()));
            }
        }
    }

    /// With good pods and successful analysis, promoting whenever paused always completes:
    /// the new version active, stable and at full scale, the previous one gone after its delay.
    #[test]
    fn a_good_blue_green_release_always_completes(mut world in bg_world()) {
        world.instant_pods = true;
        world.promote_until_healthy(50);
        let replicas = world.spec.replicas.unwrap_or(1);
        prop_assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
        prop_assert_eq!(world.status.stable_rs.as_deref(), Some(CANARY));
        prop_assert_eq!((world.active(), world.preview()), (Some(CANARY), Some(CANARY)));
        prop_assert_eq!(world.replicas_of(CANARY), Some(replicas));
        world.tick(3600);
        world.reconcile();
        prop_assert_eq!(world.replicas_of(STABLE), Some(0));
    }
}

#[test]
fn with_anti_affinity_the_new_version_is_created_away_from_the_stable_one() {
    let created_away_from = |extra: Value| {
        let world = World::with_canary(bg_spec(extra, 3));
        world.plan().actions.iter().find_map(|a| match a {
            Action::CreateReplicaSet {
                hash, away_from, ..
            } if hash == CANARY => Some(away_from.clone()),
            _ => None,
        })
    };
    let anti = json!({"antiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}});
    assert_eq!(created_away_from(anti), Some(Some(STABLE.to_owned())));
    assert_eq!(
        created_away_from(json!({})),
        Some(None),
        "without antiAffinity the template is left as written"
    );
}

#[test]
fn events_name_a_blue_green_release_never_a_canary() {
    let messages = |plans: &[Plan]| -> Vec<String> {
        plans
            .iter()
            .flat_map(|p| p.transitions.iter().map(|t| t.message.clone()))
            .collect()
    };
    let mut world = World::with_canary(bg_spec(json!({"autoPromotionEnabled": false}), 2));
    let mut said = messages(&world.reconcile());
    world.status.abort = true;
    said.extend(messages(&world.reconcile()));
    world.status.abort = false;
    said.extend(messages(&world.reconcile()));
    let mut stuck = World::with_canary(bg_spec(json!({}), 2));
    stuck.crashing.push(CANARY.into());
    stuck.reconcile();
    stuck.tick(601);
    said.extend(messages(&stuck.reconcile()));
    let expected = [
        format!("blue-green release {CANARY} starts against active {STABLE}"),
        format!("an operator aborted the blue-green release of {CANARY}"),
        format!("retrying the blue-green release of {CANARY} from the preview"),
        format!("blue-green release {CANARY} made no progress"),
    ];
    for expected in expected {
        assert!(
            said.iter().any(|m| m.starts_with(&expected)),
            "{expected:?} in {said:#?}"
        );
    }
    // The simulated hashes are named "canary1", "stable1": only the words around them count.
    let words: Vec<String> = said.iter().map(|m| m.replace(CANARY, "<hash>")).collect();
    assert!(
        !words.into_iter().any(|m| m.contains("canary")),
        "{said:#?}"
    );
}

#[test]
fn a_new_release_during_post_promotion_analysis_switches_back_only_to_a_full_stable() {
    let mut world = World::with_canary(bg_spec(
        json!({"postPromotionAnalysis": analysis(), "autoPromotionEnabled": false}),
        3,
    ));
    world.reconcile();
    world.promote();
    world.reconcile();
    assert_eq!(
        world.active(),
        Some(CANARY),
        "switched; analysing live traffic"
    );
    assert_eq!(world.status.stable_rs.as_deref(), Some(STABLE));
    // The previous version loses two of its pods, and the next commit arrives.
    world.instant_pods = false;
    if let Some(rs) = world.rs_mut(STABLE) {
        rs.available = 1;
    }
    world.hash = "next".into();
    world.reconcile();
    assert_eq!(
        world.active(),
        Some(CANARY),
        "users stay on the version that carries them until the stable can"
    );
    world.pods_become_available();
    world.reconcile();
    assert_eq!(world.active(), Some(STABLE), "back once fully available");
}

fn role_metadata() -> Value {
    json!({
        "activeMetadata": {"labels": {"role": "active"}, "annotations": {"example.com/live": "yes"}},
        "previewMetadata": {"labels": {"role": "preview", "stage": "new"}}
    })
}

fn pod_metadata(value: Value) -> crate::api::rollout::PodMetadata {
    serde_json::from_value(value).expect("metadata")
}

impl World {
    /// What a version's pods should carry, from where the Services stand: active wins over
    /// preview, the new version of a release under way is previewed, the rest carry nothing.
    fn expected_metadata(&self, hash: &str) -> crate::api::rollout::PodMetadata {
        let blue_green = self.blue_green();
        let new_version = hash == self.hash && self.status.stable_rs.as_deref() != Some(hash);
        let metadata = if self.active() == Some(hash) {
            &blue_green.active_metadata
        } else if self.preview() == Some(hash) || new_version {
            &blue_green.preview_metadata
        } else {
            &None
        };
        metadata.clone().unwrap_or_default()
    }

    /// The controller dies while labelling: each `SetEphemeralMetadata` of the plan got as
    /// far as its first write (the template, a pending record of every key weir may have put
    /// on the pods); the pods were all done (`pods_done`) or none.
    fn crash_while_labelling(&mut self, pods_done: bool) {
        let plan = self.plan();
        let (labelling, rest): (Vec<Action>, Vec<Action>) = plan
            .actions
            .into_iter()
            .partition(|a| matches!(a, Action::SetEphemeralMetadata { .. }));
        self.apply(&rest);
        for action in labelling {
            let Action::SetEphemeralMetadata {
                hash,
                metadata,
                applied,
            } = action
            else {
                continue;
            };
            let mut record = applied.clone();
            record.labels.extend(metadata.labels.clone());
            record.annotations.extend(metadata.annotations.clone());
            if let Some(rs) = self.rs_mut(&hash) {
                rs.ephemeral = record;
                rs.ephemeral_pending = true;
            }
            if pods_done {
                let pods = self.pods.entry(hash).or_default();
                *pods = put_on(pods, &metadata, &applied);
            }
        }
    }
}

#[test]
fn ephemeral_metadata_follows_the_services_without_a_new_replica_set() {
    let mut extra = role_metadata();
    extra["autoPromotionEnabled"] = json!(false);
    let active = pod_metadata(role_metadata()["activeMetadata"].clone());
    let preview = pod_metadata(role_metadata()["previewMetadata"].clone());
    let mut world = World::with_canary(bg_spec(extra, 3));
    // The first version: both Services select it, and it is the active one.
    assert_eq!(
        world.rs(STABLE).map(|rs| rs.ephemeral.clone()),
        Some(active.clone())
    );
    assert_eq!(world.pods.get(STABLE), Some(&active));

    // The new version's pods start with the preview metadata.
    let created = world.plan().actions.into_iter().find_map(|a| match a {
        Action::CreateReplicaSet { hash, metadata, .. } if hash == CANARY => Some(metadata),
        _ => None,
    });
    assert_eq!(created, Some(preview.clone()));
    world.reconcile();
    assert_eq!(
        (world.active(), world.preview()),
        (Some(STABLE), Some(CANARY))
    );
    assert_eq!(world.pods.get(CANARY), Some(&preview));
    assert_eq!(world.pods.get(STABLE), Some(&active));

    // The switch: in place, the active metadata on, the preview's taken off.
    world.promote();
    let plans = world.reconcile();
    assert_eq!(world.active(), Some(CANARY));
    let labelled: Vec<Action> = plans
        .iter()
        .flat_map(|p| p.actions.clone())
        .filter(|a| matches!(a, Action::SetEphemeralMetadata { .. }))
        .collect();
    assert_eq!(
        labelled,
        vec![
            Action::SetEphemeralMetadata {
                hash: STABLE.into(),
                metadata: Default::default(),
                applied: active.clone(),
            },
            Action::SetEphemeralMetadata {
                hash: CANARY.into(),
                metadata: active.clone(),
                applied: preview.clone(),
            },
        ],
        "each version relabelled once, in the plan that switches"
    );
    assert_eq!(world.pods.get(CANARY), Some(&active));
    assert_eq!(world.pods.get(STABLE), Some(&Default::default()));
    let settled = world.reconcile();
    assert_eq!(settled.len(), 1);
    assert!(settled[0].actions.is_empty(), "{:?}", settled[0].actions);

    // A record left half applied is applied again, with the keys it holds to take off.
    if let Some(rs) = world.rs_mut(STABLE) {
        rs.ephemeral_pending = true;
        rs.ephemeral = preview.clone();
    }
    assert!(
        world
            .plan()
            .actions
            .contains(&Action::SetEphemeralMetadata {
                hash: STABLE.into(),
                metadata: Default::default(),
                applied: preview.clone(),
            })
    );
}

#[test]
fn without_ephemeral_metadata_none_is_planned() {
    let mut world = World::with_canary(spec(json!([{"setWeight": 50}, {"pause": {}}]), true, 2));
    world.promote_until_healthy(10);
    let mut blue_green = World::with_canary(bg_spec(json!({}), 2));
    blue_green.promote_until_healthy(10);
    for world in [world, blue_green] {
        assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
        for rs in &world.observed.replica_sets {
            assert_eq!(rs.ephemeral, Default::default(), "{}", rs.hash);
        }
        assert!(world.pods.values().all(|p| *p == Default::default()));
    }
}

#[derive(Clone, Debug)]
enum LabelEvent {
    Bg(BgEvent),
    /// The controller dies part way through relabelling; the pods were done or not.
    CrashWhileLabelling(bool),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// For any blue-green settings and any order of events, pod losses and crashes (also
    /// part way through relabelling): once the world settles (a reconcile writes nothing),
    /// each version's pods and record carry exactly what its part says (the active version
    /// `activeMetadata` and never `previewMetadata`, a version no Service selects and not
    /// under release nothing).
    #[test]
    fn ephemeral_metadata_settles_on_what_each_version_is(
        world in bg_world(),
        events in prop::collection::vec(
            prop_oneof![
                8 => bg_event().prop_map(LabelEvent::Bg),
                1 => any::<bool>().prop_map(LabelEvent::CrashWhileLabelling),
            ],
            0..40,
        ),
    ) {
        let mut world = world;
        let mut spec = world.spec.clone();
        if let Some(blue_green) = spec.strategy.blue_green.as_mut() {
            blue_green.active_metadata = Some(pod_metadata(role_metadata()["activeMetadata"].clone()));
            blue_green.preview_metadata = Some(pod_metadata(role_metadata()["previewMetadata"].clone()));
        }
        world.spec = spec;
        let mut generation = 1;
        for event in &events {
            match event {
                LabelEvent::Bg(BgEvent::Common(event)) => world.happen(event, &mut generation),
                LabelEvent::Bg(BgEvent::LosePods(index, left)) => {
                    if let Some(rs) = world.observed.replica_sets.get_mut(*index) {
                        rs.available = rs.available.min(*left);
                    }
                }
                LabelEvent::CrashWhileLabelling(pods_done) => world.crash_while_labelling(*pods_done),
            }
            if matches!(event, LabelEvent::Bg(BgEvent::Common(Event::Crash | Event::CrashPartway(_))) | LabelEvent::CrashWhileLabelling(_)) {
                continue;
            }
            // Settled: a reconcile that plans nothing (pods that became available after the
            // last plan of one reconcile give the next something to do).
            let settled = (0..10).any(|_| {
                let plans = world.reconcile();
                plans.len() == 1 && plans[0].actions.is_empty()
            });
            prop_assert!(settled, "the world never settled");
            let active_metadata = world.blue_green().active_metadata.clone().unwrap_or_default();
            let preview_metadata = world.blue_green().preview_metadata.clone().unwrap_or_default();
            for rs in &world.observed.replica_sets {
                let expected = world.expected_metadata(&rs.hash);
                prop_assert_eq!(&rs.ephemeral, &expected, "the record of {}", &rs.hash);
                prop_assert!(!rs.ephemeral_pending);
                prop_assert_eq!(world.pods.get(&rs.hash), Some(&expected), "the pods of {}", &rs.hash);
                if world.active() == Some(rs.hash.as_str()) {
                    prop_assert_eq!(&rs.ephemeral, &active_metadata);
                } else if world.preview() != Some(rs.hash.as_str()) && rs.hash != world.hash {
                    prop_assert_eq!(&rs.ephemeral, &Default::default(), "{} is no Service's", &rs.hash);
                    prop_assert_ne!(&rs.ephemeral, &preview_metadata);
                }
            }
        }
    }
}
