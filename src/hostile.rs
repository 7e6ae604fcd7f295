//! The hostile-input suite: generated files, documents, specs, conditions and durations
//! thrown at everything that reads what a repository or a tenant wrote (render, lint,
//! validation, the CEL checks, duration parsing). Each case must come back with an answer
//! (accepted, or refused with a reason), never a panic, within the memory bounds weir
//! promises and well within a time that would betray a hang.
//!
//! `make test` runs a modest number of cases (`cargo test --lib hostile`); `make fuzz` runs
//! many more in the release build (`WEIR_FUZZ_CASES`).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::Value;

use crate::gitops::render::{self, Limits, SourceFile};

/// Cases per property: `WEIR_FUZZ_CASES`, or a modest default for `make test`.
fn config() -> ProptestConfig {
    let cases = std::env::var("WEIR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Far beyond any case's honest work, even in the debug build on a busy machine: a case
/// slower than this is a hang or a blow-up, not a slow machine. (Speed itself is measured
/// by `make bench`, never asserted here.)
const HANG: Duration = Duration::from_secs(20);

/// One SOPS-encrypted Secret and the key that opens it, made once for every case.
static SOPS_FILE: std::sync::LazyLock<(String, crate::gitops::sops::Identities)> =
    std::sync::LazyLock::new(|| {
        use crate::gitops::sops::encrypt::{self, Options};
        let identity = age::x25519::Identity::generate();
        let secret = serde_yaml_ng::from_str(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n",
        )
        .unwrap_or_default();
        let text = encrypt::encrypt(&[secret], &[identity.to_public()], &Options::kubernetes());
        let key = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
        let identities =
            crate::gitops::sops::Identities::from_secret("hostile", [("k.agekey", key.as_bytes())])
                .unwrap_or_else(|e| panic!("{e}"));
        (text, identities)
    });

/// Small limits, so that the bounds are reached by what a case can generate.
fn small_limits() -> Limits {
    Limits {
        file_bytes: 64 << 10,
        revision_bytes: 256 << 10,
        document_bytes: 64 << 10,
        objects: 200,
    }
}

/// YAML that leans on anchors and aliases: `anchors` lists of `width` items, each aliased
/// `uses` times, some nested inside the next: quadratic and worse expansions.
fn alias_yaml() -> impl Strategy<Value = String> {
    (1usize..6, 1usize..400, 1usize..400, any::<bool>()).prop_map(
        |(anchors, width, uses, nested)| {
            let mut text =
                String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nanchors:\n");
            for a in 0..anchors {
                let items = if nested && a > 0 {
                    vec![format!("*a{}", a - 1); width]
                } else {
                    vec!["xxxxxxxx".to_owned(); width]
                };
                text.push_str(&format!("  - &a{a} [{}]\n", items.join(", ")));
            }
            text.push_str("data:\n");
            for u in 0..uses {
                text.push_str(&format!("  k{u}: *a{}\n", anchors - 1));
            }
            text
        },
    )
}

/// A JSON value of a few levels, with keys from the specs' own field names (so that the
/// generated object reaches deep into a spec's parser), numbers, strings and nulls.
fn spec_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "replicas",
        "selector",
        "template",
        "strategy",
        "canary",
        "steps",
        "setWeight",
        "pause",
        "duration",
        "analysis",
        "templates",
        "templateName",
        "args",
        "name",
        "value",
        "trafficRouting",
        "gatewayAPI",
        "httpRoute",
        "nginx",
        "stableIngress",
        "stableIngresses",
        "additionalIngressAnnotations",
        "smi",
        "alb",
        "ingress",
        "servicePort",
        "stickinessConfig",
        "rootService",
        "trafficSplitName",
        "stableService",
        "canaryService",
        "progressDeadlineSeconds",
        "minReadySeconds",
        "url",
        "ref",
        "branch",
        "path",
        "interval",
        "kustomize",
        "rollback",
        "writeBack",
        "metrics",
        "successCondition",
        "failureCondition",
        "provider",
        "prometheus",
        "query",
        "timeout",
        "count",
        "failureLimit",
        "matchLabels",
        "setCanaryScale",
        "weight",
        "startingStep",
        "serviceAccountName",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "1s",
            "0s",
            "-1s",
            "1ns",
            "99999999h",
            "1.5h",
            "30",
            "",
            "1e9s"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// Conditions in CEL's alphabet: macros, nesting, operators, names that exist and not.
fn condition_text() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        "result",
        "result[0]",
        "x",
        "y",
        "1",
        "0.5",
        "-1e12",
        "size(result)",
        "true",
        "'s'",
        "result.all(x, x < 1)",
        "result.exists(x, x > 0)",
        "result.map(x, x * 2)",
        "result.filter(x, x > 0)",
        "isNaN(x)",
        "len(result)",
        "#",
    ]);
    let atom = atom.prop_map(str::to_owned);
    atom.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec![" && ", " || ", " < ", " >= ", " + ", " * ", " == "]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
            (
                prop::sample::select(vec!["all", "exists", "exists_one", "map", "filter"]),
                inner.clone()
            )
                .prop_map(|(m, body)| format!("result.{m}(x, {body})")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes as a file under the path: an answer, and what is accepted is within the
    /// memory bound (its objects together no larger than the revision's budget).
    #[test]
    fn render_answers_any_file(bytes in prop::collection::vec(any::<u8>(), 0..8192), kustomization in any::<bool>()) {
        let name = if kustomization { "deploy/kustomization.yaml" } else { "deploy/a.yaml" };
        let files = vec![SourceFile { path: name.into(), bytes }];
        let started = Instant::now();
        let rendered = render::render(&files, "deploy", &small_limits());
        prop_assert!(started.elapsed() < HANG);
        if let Ok(manifests) = rendered {
            let size: usize = manifests.iter().map(|m| m.object.to_string().len()).sum();
            prop_assert!(size as u64 <= small_limits().revision_bytes);
        }
    }

    /// Aliases however arranged: refused with the limit named, or built within it.
    #[test]
    fn render_bounds_every_alias_expansion(text in alias_yaml()) {
        let files = vec![SourceFile { path: "deploy/a.yaml".into(), bytes: text.into_bytes() }];
        let started = Instant::now();
        match render::render(&files, "deploy", &small_limits()) {
            Ok(manifests) => {
                let size: usize = manifests.iter().map(|m| m.object.to_string().len()).sum();
                prop_assert!(size as u64 <= small_limits().document_bytes);
            }
            Err(error) => prop_assert!(
                error.message.contains("--max-") || error.message.contains("alias")
                    || error.message.contains("recursion"),
                "a refusal names its limit: {error}"
            ),
        }
        prop_assert!(started.elapsed() < HANG);
    }

    /// A SOPS file with any of its bytes changed, decrypted with the right key: an answer,
    /// and what is accepted is what was encrypted (the MAC covers every value), or the
    /// change fell where nothing reads it.
    #[test]
    fn decryption_answers_any_edit_of_a_sops_file(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (text, identities) = &*SOPS_FILE;
        let mut bytes = text.clone().into_bytes();
        for (at, byte) in &edits {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        let files = vec![SourceFile { path: "deploy/s.yaml".into(), bytes }];
        let started = Instant::now();
        let rendered = render::render_decrypted(&files, "deploy", &small_limits(), Some(identities), &mut crate::gitops::sops::Session::default());
        prop_assert!(started.elapsed() < HANG);
        if let Ok(manifests) = rendered {
            for manifest in manifests.iter().filter(|m| m.kind() == "Secret") {
                let password = &manifest.object["stringData"]["password"];
                prop_assert!(password == "hunter2" || password.is_null(), "{manifest:?}");
            }
        }
    }

    /// `kubectl weir lint` reads hostile files within the same bound.
    #[test]
    fn lint_answers_any_text(text in prop_oneof![".{0,2000}", alias_yaml()]) {
        let started = Instant::now();
        let _ = crate::plugin::lint::lint("hostile.yaml", &text);
        prop_assert!(started.elapsed() < HANG);
    }

    /// Every spec a tenant can write is validated, whatever it holds.
    #[test]
    fn validation_answers_any_spec(spec in spec_value()) {
        let started = Instant::now();
        if let Ok(rollout) = serde_json::from_value::<crate::api::rollout::RolloutSpec>(spec.clone()) {
            let _ = crate::validate::rollout(&rollout);
        }
        if let Ok(template) = serde_json::from_value::<crate::api::analysis::AnalysisTemplateSpec>(spec.clone()) {
            let _ = crate::validate::analysis_template(&template);
            let _ = crate::validate::cluster_analysis_template(&template);
        }
        if let Ok(sync) = serde_json::from_value::<crate::api::gitsync::GitSyncSpec>(spec) {
            let _ = crate::validate::git_sync(&sync);
        }
        prop_assert!(started.elapsed() < HANG);
    }

    /// Conditions: checked without a hang, whatever their nesting.
    #[test]
    fn condition_checks_answer_any_condition(text in prop_oneof![condition_text(), ".{0,300}"]) {
        let started = Instant::now();
        let _ = crate::verdict::check_condition(&text);
        prop_assert!(started.elapsed() < HANG);
    }

    /// Durations: any text parses or is refused; what parses reads back the same.
    #[test]
    fn durations_answer_any_text(text in prop_oneof![".{0,40}", "[0-9.]{1,30}(ns|us|ms|s|m|h){1,3}"]) {
        if let Ok(parsed) = crate::duration::parse(&text) {
            prop_assert_eq!(crate::duration::parse(&crate::duration::format(parsed)), Ok(parsed));
        }
    }
}
