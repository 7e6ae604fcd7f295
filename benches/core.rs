//! The pure parts every reconcile runs: planning one step of a canary, judging one
//! measurement (CEL and threshold, scalar and 100-sample vector), and rendering and diffing
//! a 1,000-object revision. Run with `cargo bench --bench core` (part of `make bench`).

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use weir::api::analysis::Metric;
use weir::api::rollout::{RolloutSpec, RolloutStatus};
use weir::gitops::inventory::{entry, stamp, to_prune};
use weir::gitops::render::{SourceFile, render};
use weir::rollout::plan::{Input, Observed, ReplicaSetView, plan};
use weir::verdict::{MAX_SAMPLES, QueryValue, check_condition, estimated_cost, judge};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
}

fn plan_one_step(c: &mut Criterion) {
    let spec: RolloutSpec = serde_json::from_value(json!({
        "replicas": 10,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
        "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
            "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 30},
                      {"pause": {}}, {"setWeight": 60}]}}
    }))
    .expect("spec");
    // Mid-canary: step 0 done at 10%, the pause of step 1 under way.
    let status: RolloutStatus = serde_json::from_value(json!({
        "phase": "Progressing", "currentStepIndex": 1, "canaryWeight": 10,
        "stableRS": "stable1", "canaryRS": "canary2", "attempt": 1,
        "observedGeneration": 2
    }))
    .expect("status");
    let view = |hash: &str, replicas| ReplicaSetView {
        hash: hash.into(),
        replicas,
        available: replicas,
        scale_down_at: None,
        created: now(),
        ephemeral: Default::default(),
        ephemeral_pending: false,
    };
    let observed = Observed {
        replica_sets: vec![view("stable1", 10), view("canary2", 1)],
        stable_service_hash: Some("stable1".into()),
        canary_service_hash: Some("canary2".into()),
        route_weight: Some(10),
        ..Observed::default()
    };
    let input = Input {
        spec: &spec,
        generation: Some(2),
        status: &status,
        template_hash: "canary2",
        revision: Some("5407b173496e0f6b1e7e6f1b7c4a1c2d3e4f5a6b"),
        observed: &observed,
        now: now(),
    };
    c.bench_function("plan one canary step", |b| {
        b.iter(|| plan(black_box(&input)))
    });
}

fn judge_measurements(c: &mut Criterion) {
    let metric = |fields: serde_json::Value| -> Metric {
        let mut metric = json!({"name": "m", "provider": {"prometheus": {"query": "q"}}});
        if let (Some(m), Some(f)) = (metric.as_object_mut(), fields.as_object()) {
            m.extend(f.clone());
        }
        serde_json::from_value(metric).expect("metric")
    };
    let cel_scalar = metric(json!({"successCondition": "result[0] >= 0.95"}));
    let cel_vector = metric(json!({"successCondition": "result.all(x, x < 0.5)"}));
    let range = metric(json!({"thresholdRange": {"min": 0.0, "max": 0.5}}));
    let scalar = QueryValue::Vector(vec![0.99]);
    let vector = QueryValue::Vector((0..100).map(|i| f64::from(i) / 1000.0).collect());
    c.bench_function("judge CEL over a scalar", |b| {
        b.iter(|| judge(black_box(&cel_scalar), black_box(&scalar)))
    });
    c.bench_function("judge CEL over 100 samples", |b| {
        b.iter(|| judge(black_box(&cel_vector), black_box(&vector)))
    });
    c.bench_function("judge thresholdRange over 100 samples", |b| {
        b.iter(|| judge(black_box(&range), black_box(&vector)))
    });
}

/// The most of `unit` joined by `joiner` inside `wrap` (where `{}` stands) that validation
/// still accepts: a condition as expensive as this shape can be. None if not even one is.
fn fill(wrap: &str, unit: &str, joiner: &str) -> Option<String> {
    let mut accepted = None;
    let mut units = vec![unit.to_owned()];
    loop {
        let next = wrap.replace("{}", &units.join(joiner));
        if check_condition(&next).is_err() {
            return accepted;
        }
        accepted = Some(next);
        units.push(unit.to_owned());
    }
}

/// Shapes of condition at the edge of what validation accepts, each judged over the largest
/// result weir judges (10,000 samples, every one passing so nothing short-circuits). The
/// slowest of them is the worst accepted shape; a metric can carry two conditions, so the
/// judge's bound is twice the slowest.
fn judge_worst_accepted(c: &mut Criterion) {
    let samples = QueryValue::Vector(
        (0..MAX_SAMPLES)
            .map(|i| f64::from(u32::try_from(i).unwrap_or(0)) / 20_000.0)
            .collect(),
    );
    let shapes = [
        // One pass whose body is padded up to the limit: the worst shape validation accepts.
        (
            "all at the limit",
            fill("result.all(x, x >= 0.0 && {})", "true", " && "),
        ),
        (
            "exists at the limit",
            fill("!result.exists(x, x < 0.0 || {})", "false", " || "),
        ),
        (
            "arithmetic at the limit",
            fill("result.all(x, {} >= 0.0)", "x", " * "),
        ),
        (
            "conversions at the limit",
            fill("result.all(x, {} >= 0)", "int(x)", " + "),
        ),
        ("all chained", fill("{}", "result.all(x, x >= 0.0)", " && ")),
        (
            "all with a long body",
            fill("result.all(x, {})", "x >= 0.0", " && "),
        ),
        (
            "exists over strings",
            fill("{}", "!result.exists(x, string(x).contains('zz'))", " && "),
        ),
        (
            "map to lists",
            fill("{}", "size(result.map(x, [x, x, x, x])) > 0", " && "),
        ),
        ("lists compared", fill("{}", "result == result", " && ")),
        (
            "filter then all",
            fill("{}", "result.filter(x, x >= 0.0).all(x, x >= 0.0)", " && "),
        ),
        (
            "concatenated",
            fill("{}", "(result + result).all(x, x >= 0.0)", " && "),
        ),
        (
            "nested over a literal",
            fill("result.all(x, [{}].all(y, x < y))", "1.0", ", "),
        ),
        (
            "strings joined",
            fill(
                "{}",
                "size(result.map(x, string(x) + string(x))) > 0",
                " && ",
            ),
        ),
    ];
    let mut group = c.benchmark_group("judge worst accepted");
    group
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(3));
    for (name, condition) in shapes {
        let Some(condition) = condition else {
            eprintln!("{name}: refused by validation even once");
            continue;
        };
        let cost = estimated_cost(&condition).unwrap_or_default();
        eprintln!(
            "{name}: estimated {cost} steps, {} characters",
            condition.len()
        );
        let metric: Metric = serde_json::from_value(json!({"name": "m",
            "provider": {"prometheus": {"query": "q"}}, "successCondition": condition}))
        .expect("metric");
        assert_eq!(
            judge(&metric, &samples).phase,
            weir::api::analysis::AnalysisPhase::Successful,
            "{name}: {condition}"
        );
        group.bench_function(format!("{name}, 10,000 samples"), |b| {
            b.iter(|| judge(black_box(&metric), black_box(&samples)))
        });
    }
    group.finish();
}

fn render_and_diff(c: &mut Criterion) {
    // 1,000 ConfigMaps in 10 files of 100 documents each.
    let files: Vec<SourceFile> = (0..10)
        .map(|f| SourceFile {
            path: format!("deploy/part-{f}.yaml"),
            bytes: (0..100)
                .map(|d| {
                    format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{f}-{d}\ndata:\n  key: \"value {d}\"\n"
                    )
                })
                .collect::<Vec<_>>()
                .join("---\n")
                .into_bytes(),
        })
        .collect();
    let manifests =
        render(&files, "deploy", &weir::gitops::render::Limits::default()).expect("renders");
    assert_eq!(manifests.len(), 1000);
    c.bench_function("render a 1,000-object revision", |b| {
        b.iter(|| {
            render(
                black_box(&files),
                "deploy",
                &weir::gitops::render::Limits::default(),
            )
        })
    });
    let old: Vec<_> = manifests
        .iter()
        .map(|m| entry(&stamp(m, "ns/app", "r1", Some("ns"))))
        .collect();
    // The next revision drops every tenth object.
    let new: Vec<_> = old
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(to_prune(&old, &new).len(), 100);
    c.bench_function("stamp and diff a 1,000-object inventory", |b| {
        b.iter(|| {
            let stamped: Vec<_> = manifests
                .iter()
                .map(|m| entry(&stamp(m, "ns/app", "r2", Some("ns"))))
                .collect();
            to_prune(black_box(&old), black_box(&stamped[100..]))
        })
    });
}

/// The statistical judge (issue 27) on one measurement over 10,000 samples a version:
/// Kayenta's Mann-Whitney U (sorting both), and a sequential look from running totals.
fn judge_baseline_against_canary(c: &mut Criterion) {
    use weir::judge::{Direction, mann_whitney, sequential};
    // Latencies with a spread, the canary 5% slower; deterministic, no RNG in a bench.
    let baseline: Vec<f64> = (0..10_000)
        .map(|i| 100.0 + f64::from((i * 7919) % 1000) / 10.0)
        .collect();
    let canary: Vec<f64> = baseline.iter().map(|x| x * 1.05).collect();
    let settings = mann_whitney::Settings {
        direction: Direction::Increase,
        tolerance: 0.1,
        alpha: 0.05,
        min_samples: 50,
    };
    c.bench_function("judge: Mann-Whitney U, 10,000 samples a version", |b| {
        b.iter(|| mann_whitney::judge(black_box(&baseline), black_box(&canary), &settings))
    });
    let mut base_moments = sequential::Moments::default();
    let mut canary_moments = sequential::Moments::default();
    c.bench_function(
        "judge: sequential means, 10,000 samples a version added and looked at",
        |b| {
            b.iter(|| {
                base_moments = sequential::Moments::default();
                canary_moments = sequential::Moments::default();
                for (x, y) in baseline.iter().zip(&canary) {
                    base_moments.add(*x);
                    canary_moments.add(*y);
                }
                sequential::means(
                    &base_moments,
                    &canary_moments,
                    &sequential::Settings {
                        direction: Direction::Increase,
                        tolerance: 0.1,
                        alpha: 0.05,
                        enough: 10_000,
                    },
                )
            })
        },
    );
}

criterion_group!(
    benches,
    plan_one_step,
    judge_measurements,
    judge_worst_accepted,
    render_and_diff,
    judge_baseline_against_canary
);
criterion_main!(benches);
