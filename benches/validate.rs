//! Validation runs on every reconcile and on every `kubectl weir lint`: it must stay cheap
//! for large step lists. Run with `cargo bench --bench validate`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use weir::api::rollout::RolloutSpec;

fn rollout_with_steps(count: usize) -> RolloutSpec {
    let steps: Vec<_> = (0..count)
        .map(|i| match i % 4 {
            0 => json!({"setWeight": (i % 100)}),
            1 => json!({"pause": {"duration": "1m30s"}}),
            2 => json!({"analysis": {"templates": [{"templateName": "success-rate"}], "args": [{"name": "svc", "value": "web"}]}}),
            _ => json!({"setCanaryScale": {"matchTrafficWeight": true}}),
        })
        .collect();
    serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}},
        "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}}, "steps": steps}}
    }))
    .expect("bench spec deserializes")
}

fn bench(c: &mut Criterion) {
    for count in [8, 100] {
        let spec = rollout_with_steps(count);
        assert!(
            weir::validate::rollout(&spec).is_empty(),
            "the bench spec must be valid"
        );
        c.bench_function(&format!("validate rollout with {count} steps"), |b| {
            b.iter(|| weir::validate::rollout(std::hint::black_box(&spec)))
        });
    }
    c.bench_function("parse duration 1h30m15s", |b| {
        b.iter(|| weir::duration::parse(std::hint::black_box("1h30m15s")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
