use super::*;

use chrono::TimeZone;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

/// Argo's baseline-versus-canary experiment: one pod each, an hour, one analysis.
fn baseline_and_canary(duration: Option<u64>) -> Spec {
    Spec {
        templates: vec![
            Template {
                name: "baseline".into(),
                replicas: 1,
                service: false,
            },
            Template {
                name: "canary".into(),
                replicas: 1,
                service: false,
            },
        ],
        analyses: vec![Analysis {
            name: "judge".into(),
            required_for_completion: duration.is_none(),
        }],
        duration: duration.map(Duration::from_secs),
        progress_deadline: Duration::from_secs(600),
        scale_down_delay: Duration::from_secs(30),
        terminate: false,
    }
}

fn with_replica_sets(available: i32) -> Observed {
    Observed {
        replica_sets: ["baseline", "canary"]
            .into_iter()
            .map(|t| {
                (
                    t.to_owned(),
                    ReplicaSetView {
                        replicas: 1,
                        available,
                    },
                )
            })
            .collect(),
        runs: BTreeMap::new(),
        services: Default::default(),
    }
}

fn with_run(mut observed: Observed, phase: AnalysisPhase) -> Observed {
    observed.runs.insert("judge".into(), phase);
    observed
}

#[test]
fn a_baseline_and_a_canary_run_their_duration_with_their_analysis_then_scale_down() {
    let spec = baseline_and_canary(Some(3600));
    // Nothing yet: both ReplicaSets are made together.
    let first = plan(&spec, &State::default(), &Observed::default(), t0(), t0());
    assert_eq!(
        first.actions,
        [
            Action::CreateReplicaSet {
                template: "baseline".into(),
                replicas: 1
            },
            Action::CreateReplicaSet {
                template: "canary".into(),
                replicas: 1
            },
        ]
    );
    assert_eq!(first.state.phase, Some(AnalysisPhase::Pending));
    assert_eq!(
        first.state.message.as_deref(),
        Some(
            "template \"baseline\": 0 of 1 pods available; template \"canary\": 0 of 1 pods available"
        )
    );
    assert_eq!(first.requeue_after, Some(Duration::from_secs(600)));
    // Pods up: available now, and the analysis starts in the same plan.
    let up = plan(&spec, &first.state, &with_replica_sets(1), t0(), at(20));
    assert_eq!(up.state.available_at, Some(at(20)));
    assert_eq!(up.state.phase, Some(AnalysisPhase::Running));
    assert_eq!(
        up.actions,
        [Action::StartAnalysis {
            analysis: "judge".into()
        }]
    );
    assert_eq!(up.requeue_after, Some(Duration::from_secs(3600)));
    // Running its course: nothing to do.
    let running = with_run(with_replica_sets(1), AnalysisPhase::Running);
    let midway = plan(&spec, &up.state, &running, t0(), at(1000));
    assert_eq!(midway.actions, []);
    assert_eq!(midway.state, up.state);
    // The hour is up: Successful, the analysis stopped, pods kept for the delay.
    let done = plan(&spec, &midway.state, &running, t0(), at(3620));
    assert_eq!(done.state.phase, Some(AnalysisPhase::Successful));
    assert_eq!(done.state.ended_at, Some(at(3620)));
    assert_eq!(
        done.actions,
        [Action::StopAnalysis {
            analysis: "judge".into()
        }]
    );
    assert_eq!(done.requeue_after, Some(Duration::from_secs(30)));
    let stopped = with_run(with_replica_sets(1), AnalysisPhase::Successful);
    let scaled = plan(&spec, &done.state, &stopped, t0(), at(3650));
    assert_eq!(
        scaled.actions,
        [
            Action::ScaleReplicaSet {
                template: "baseline".into(),
                replicas: 0
            },
            Action::ScaleReplicaSet {
                template: "canary".into(),
                replicas: 0
            },
        ]
    );
    assert_eq!(scaled.state, done.state, "the end is recorded once");
}

#[test]
fn templates_short_of_pods_past_the_deadline_fail_it_naming_them() {
    let spec = baseline_and_canary(Some(60));
    let mut observed = with_replica_sets(1);
    observed.replica_sets.insert(
        "canary".into(),
        ReplicaSetView {
            replicas: 1,
            available: 0,
        },
    );
    let waiting = plan(&spec, &State::default(), &observed, t0(), at(599));
    assert_eq!(waiting.state.phase, Some(AnalysisPhase::Pending));
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(1)));
    let late = plan(&spec, &waiting.state, &observed, t0(), at(600));
    assert_eq!(late.state.phase, Some(AnalysisPhase::Failed));
    assert_eq!(
        late.state.message.as_deref(),
        Some(
            "not available within its progress deadline (600s): template \"canary\": 0 of 1 pods available"
        )
    );
    assert!(
        !late
            .actions
            .iter()
            .any(|a| matches!(a, Action::StartAnalysis { .. })),
        "no analysis of an experiment that never ran"
    );
}

#[test]
fn the_worst_analysis_ends_it_at_once_and_the_others_are_stopped() {
    let mut spec = baseline_and_canary(Some(3600));
    spec.analyses.push(Analysis {
        name: "smoke".into(),
        required_for_completion: false,
    });
    let state = State {
        phase: Some(AnalysisPhase::Running),
        available_at: Some(at(10)),
        ..State::default()
    };
    let mut observed = with_run(with_replica_sets(1), AnalysisPhase::Failed);
    observed.runs.insert("smoke".into(), AnalysisPhase::Running);
    let failed = plan(&spec, &state, &observed, t0(), at(100));
    assert_eq!(failed.state.phase, Some(AnalysisPhase::Failed));
    assert_eq!(
        failed.state.message.as_deref(),
        Some("analysis \"judge\" ended Failed")
    );
    assert_eq!(
        failed.actions,
        [Action::StopAnalysis {
            analysis: "smoke".into()
        }]
    );
    // As a run's metrics decide it: Failed outranks Error, and Error outranks Inconclusive.
    observed.runs.insert("smoke".into(), AnalysisPhase::Error);
    let both = plan(&spec, &state, &observed, t0(), at(100));
    assert_eq!(both.state.phase, Some(AnalysisPhase::Failed));
    observed
        .runs
        .insert("judge".into(), AnalysisPhase::Inconclusive);
    let errored = plan(&spec, &state, &observed, t0(), at(100));
    assert_eq!(errored.state.phase, Some(AnalysisPhase::Error));
    assert_eq!(
        errored.state.message.as_deref(),
        Some("analysis \"smoke\" ended Error")
    );
}

#[test]
fn without_a_duration_it_ends_when_its_required_analyses_succeed_or_when_terminated() {
    let spec = baseline_and_canary(None);
    let state = State {
        phase: Some(AnalysisPhase::Running),
        available_at: Some(at(10)),
        ..State::default()
    };
    let running = with_run(with_replica_sets(1), AnalysisPhase::Running);
    let still = plan(&spec, &state, &running, t0(), at(100_000));
    assert_eq!(still.state.phase, Some(AnalysisPhase::Running));
    assert_eq!(
        still.requeue_after, None,
        "nothing to wait for but the analysis"
    );
    let succeeded = with_run(with_replica_sets(1), AnalysisPhase::Successful);
    let done = plan(&spec, &state, &succeeded, t0(), at(100_000));
    assert_eq!(done.state.phase, Some(AnalysisPhase::Successful));
    // Nothing required: it runs until an operator ends it.
    let mut open = spec.clone();
    open.analyses[0].required_for_completion = false;
    let still = plan(&open, &state, &succeeded, t0(), at(100_000));
    assert_eq!(still.state.phase, Some(AnalysisPhase::Running));
    open.terminate = true;
    let ended = plan(&open, &state, &running, t0(), at(100_000));
    assert_eq!(ended.state.phase, Some(AnalysisPhase::Successful));
    assert_eq!(
        ended.state.message.as_deref(),
        Some("terminated by an operator")
    );
}

fn any_phase() -> impl Strategy<Value = AnalysisPhase> {
    prop_oneof![
        Just(AnalysisPhase::Pending),
        Just(AnalysisPhase::Running),
        Just(AnalysisPhase::Successful),
        Just(AnalysisPhase::Failed),
        Just(AnalysisPhase::Error),
        Just(AnalysisPhase::Inconclusive),
    ]
}

prop_compose! {
    fn any_world()(
        templates in proptest::collection::btree_map("[a-c]", (1i32..4, 0i32..5, any::<bool>(), any::<(bool, bool)>()), 1..4),
        runs in proptest::collection::btree_map("[x-z]", (any_phase(), any::<bool>(), any::<bool>()), 0..3),
        duration in proptest::option::of(0u64..200),
        terminate in any::<bool>(),
        available_at in proptest::option::of(0i64..100),
        phase in proptest::option::of(any_phase()),
        now in 0i64..1_000,
    ) -> (Spec, State, Observed, DateTime<Utc>) {
        let spec = Spec {
            templates: templates.iter().map(|(name, (replicas, _, _, (service, _)))| Template {
                name: name.clone(), replicas: *replicas, service: *service }).collect(),
            analyses: runs.iter().map(|(name, (_, required, _))| Analysis {
                name: name.clone(), required_for_completion: *required }).collect(),
            duration: duration.map(Duration::from_secs),
            progress_deadline: Duration::from_secs(300),
            scale_down_delay: Duration::from_secs(30),
            terminate,
        };
        let observed = Observed {
            replica_sets: templates.iter().filter(|(_, (_, _, exists, _))| *exists)
                .map(|(name, (replicas, available, _, _))| (name.clone(),
                    ReplicaSetView { replicas: *replicas, available: *available }))
                .collect(),
            services: templates.iter().filter(|(_, (_, _, _, (_, exists)))| *exists)
                .map(|(name, _)| name.clone()).collect(),
            runs: runs.iter().filter(|(_, (_, _, exists))| *exists)
                .map(|(name, (phase, _, _))| (name.clone(), *phase)).collect(),
        };
        // A recorded availability comes with a recorded phase past Pending.
        let state = State {
            phase: if available_at.is_some() { phase.or(Some(AnalysisPhase::Running)) } else { phase },
            available_at: available_at.map(at),
            ..State::default()
        };
        (spec, state, observed, at(now))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Planning again from the status a plan wrote, with the world unchanged, decides the
    /// same: level-based, so a restart at any moment resumes.
    #[test]
    fn planning_is_idempotent((spec, state, observed, now) in any_world()) {
        let first = plan(&spec, &state, &observed, t0(), now);
        let again = plan(&spec, &first.state, &observed, t0(), now);
        prop_assert_eq!(&again.state, &first.state);
        prop_assert_eq!(&again.actions, &first.actions);
    }

    /// An ended experiment stays ended with its outcome, starts nothing, and only stops
    /// analyses and scales down; it is never Successful while an analysis it saw failed.
    #[test]
    fn an_end_is_final_and_never_hides_a_failure((spec, state, observed, now) in any_world()) {
        let planned = plan(&spec, &state, &observed, t0(), now);
        let ended = is_final(planned.state.phase);
        if is_final(state.phase) {
            prop_assert_eq!(planned.state.phase, state.phase);
        }
        if ended {
            prop_assert!(planned.state.ended_at.is_some());
            for action in &planned.actions {
                let ending = matches!(action,
                    Action::StopAnalysis { .. } | Action::ScaleReplicaSet { replicas: 0, .. }
                        | Action::DeleteService { .. });
                prop_assert!(ending, "{:?} after the end", action);
            }
        }
        let failed = observed.runs.values().any(|p| matches!(p,
            AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive));
        if failed && !is_final(state.phase) {
            prop_assert_ne!(planned.state.phase, Some(AnalysisPhase::Successful));
        }
    }

    /// A template's Service is made while the experiment runs, and deleted only after its
    /// end and once no pod is left behind it: a router still sending there meets pods.
    #[test]
    fn a_service_outlives_the_pods_behind_it((spec, state, observed, now) in any_world()) {
        let planned = plan(&spec, &state, &observed, t0(), now);
        for action in &planned.actions {
            match action {
                Action::CreateService { template } => {
                    prop_assert!(!is_final(planned.state.phase));
                    prop_assert!(spec.templates.iter().any(|t| &t.name == template && t.service));
                    prop_assert!(!observed.services.contains(template));
                }
                Action::DeleteService { template } => {
                    prop_assert!(is_final(planned.state.phase));
                    let rs = observed.replica_sets.get(template);
                    prop_assert!(rs.is_none_or(|rs| rs.replicas == 0 && rs.available == 0));
                }
                _ => {}
            }
        }
    }

    /// Analyses start only once every template has all its pods available.
    #[test]
    fn analyses_wait_for_every_template((spec, state, observed, now) in any_world()) {
        let planned = plan(&spec, &state, &observed, t0(), now);
        let starts = planned.actions.iter().any(|a| matches!(a, Action::StartAnalysis { .. }));
        if starts && state.available_at.is_none() {
            for template in &spec.templates {
                let available = observed.replica_sets.get(&template.name).map_or(0, |rs| rs.available);
                prop_assert!(available >= template.replicas);
            }
        }
    }
}

#[test]
fn a_templates_service_comes_with_its_replica_set_and_goes_after_its_pods() {
    let mut spec = baseline_and_canary(Some(60));
    spec.templates[1].service = true;
    let started = plan(&spec, &State::default(), &Observed::default(), t0(), at(1));
    assert_eq!(
        started.actions,
        vec![
            Action::CreateReplicaSet {
                template: "baseline".into(),
                replicas: 1
            },
            Action::CreateReplicaSet {
                template: "canary".into(),
                replicas: 1
            },
            Action::CreateService {
                template: "canary".into()
            },
        ]
    );
    let ended = State {
        phase: Some(AnalysisPhase::Successful),
        available_at: Some(at(10)),
        ended_at: Some(at(70)),
        ..State::default()
    };
    let mut observed = with_replica_sets(1);
    observed.services.insert("canary".into());
    // Within the scale-down delay: pods and Service stay.
    let waiting = plan(&spec, &ended, &observed, t0(), at(80));
    assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
    let scaling = plan(&spec, &ended, &observed, t0(), at(101));
    assert!(
        !scaling
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeleteService { .. }))
    );
    for rs in observed.replica_sets.values_mut() {
        *rs = ReplicaSetView {
            replicas: 0,
            available: 0,
        };
    }
    let gone = plan(&spec, &ended, &observed, t0(), at(102));
    assert_eq!(
        gone.actions,
        vec![Action::DeleteService {
            template: "canary".into()
        }]
    );
}

#[test]
fn the_resource_reads_with_argos_defaults() {
    let resource: crate::api::experiment::ExperimentSpec =
        serde_json::from_value(serde_json::json!({
            "templates": [
                {"name": "baseline", "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}}},
                {"name": "canary", "replicas": 3, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}}}],
            "analyses": [{"name": "judge", "templateName": "t", "requiredForCompletion": true}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = Spec::of(&resource).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.templates[0].replicas, 1);
    assert_eq!(spec.templates[1].replicas, 3);
    assert_eq!(spec.duration, None);
    assert_eq!(spec.progress_deadline, Duration::from_secs(600));
    assert_eq!(spec.scale_down_delay, Duration::from_secs(30));
    assert!(spec.analyses[0].required_for_completion);
    let mut timed = resource.clone();
    timed.duration = Some("1h30m".into());
    assert_eq!(
        Spec::of(&timed).map(|s| s.duration),
        Ok(Some(Duration::from_secs(5400)))
    );
    timed.duration = Some("soon".into());
    assert!(Spec::of(&timed).is_err_and(|e| e.starts_with("spec.duration:")));
}

#[test]
fn a_required_analysis_holds_the_end_past_the_duration_and_ends_it_when_it_succeeds() {
    let mut spec = baseline_and_canary(Some(60));
    spec.analyses[0].required_for_completion = true;
    let state = State {
        phase: Some(AnalysisPhase::Running),
        available_at: Some(at(10)),
        ..State::default()
    };
    let running = with_run(with_replica_sets(1), AnalysisPhase::Running);
    let past = plan(&spec, &state, &running, t0(), at(200));
    assert_eq!(
        past.state.phase,
        Some(AnalysisPhase::Running),
        "still waiting"
    );
    assert!(past.actions.is_empty(), "{:?}", past.actions);
    let succeeded = with_run(with_replica_sets(1), AnalysisPhase::Successful);
    let done = plan(&spec, &state, &succeeded, t0(), at(200));
    assert_eq!(done.state.phase, Some(AnalysisPhase::Successful));
    // Before the duration is over too: the required analyses are the end (Argo's rule).
    let early = plan(&spec, &state, &succeeded, t0(), at(20));
    assert_eq!(early.state.phase, Some(AnalysisPhase::Successful));
    // Not required: the duration alone ends it.
    spec.analyses[0].required_for_completion = false;
    let timed = plan(&spec, &state, &running, t0(), at(200));
    assert_eq!(timed.state.phase, Some(AnalysisPhase::Successful));
}
