use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use serde_json::json;

use super::*;

#[test]
fn the_run_label_is_the_runs_name_or_its_start_and_a_hash_within_63_characters() {
    assert_eq!(run_label_value("web-abc-1-2"), "web-abc-1-2");
    let exactly = "a".repeat(63);
    assert_eq!(run_label_value(&exactly), exactly);
    let long = format!(
        "{}-7d9f8c6b5-1-bg",
        "checkout-service-for-the-european-and-the-american-shops"
    );
    let other = format!(
        "{}-7d9f8c6b5-2-bg",
        "checkout-service-for-the-european-and-the-american-shops"
    );
    let (a, b) = (run_label_value(&long), run_label_value(&other));
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b, "two runs never share a label value");
    assert!(
        a != long && a.starts_with("checkout-service-for-the-european-and-the-american-sho-"),
        "{a}"
    );
    // A label value begins and ends with a letter or digit.
    let dotted = format!("{}.{}", "x".repeat(53), "y".repeat(20));
    let value = run_label_value(&dotted);
    assert!(!value.contains(".-"), "{value}");
    assert!(
        value
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    );
}

#[test]
fn job_names_are_the_run_metric_and_number_or_a_hash_when_that_cannot_be() {
    assert_eq!(job_name("web-abc-1-2", "smoke", 3), "web-abc-1-2-smoke-3");
    let long = job_name(&"r".repeat(60), "smoke-tests", 1);
    assert!(long.len() <= MAX_NAME, "{long}");
    assert_ne!(
        long,
        job_name(&"r".repeat(60), "smoke-tests", 2),
        "numbers stay apart"
    );
    assert_ne!(long, job_name(&"r".repeat(61), "smoke-tests", 1));
    // A metric name a Job name cannot hold is cleaned, and hashed so two stay apart.
    let odd = job_name("run", "Smoke_Test", 1);
    assert!(
        odd.starts_with("run-smoke-test-1-") && odd.len() <= MAX_NAME,
        "{odd}"
    );
    assert_ne!(odd, job_name("run", "smoke-test", 1));
    for name in [long, odd] {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.ends_with('-'),
            "{name}"
        );
    }
}

fn job(conditions: &[(&str, &str, Option<&str>)]) -> Job {
    Job {
        metadata: kube::api::ObjectMeta {
            name: Some("check-1".into()),
            ..Default::default()
        },
        spec: None,
        status: Some(JobStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(kind, status, reason)| JobCondition {
                        type_: (*kind).into(),
                        status: (*status).into(),
                        reason: reason.map(str::to_owned),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

#[test]
fn a_jobs_conditions_are_the_measurement() {
    assert_eq!(verdict_of(&job(&[])), Taken::UnderWay);
    assert_eq!(
        verdict_of(&job(&[("Complete", "True", None)])),
        Taken::Judged {
            phase: AnalysisPhase::Successful,
            message: "Job check-1 succeeded".into()
        }
    );
    assert_eq!(
        verdict_of(&job(&[("Failed", "True", Some("BackoffLimitExceeded"))])),
        Taken::Judged {
            phase: AnalysisPhase::Failed,
            message: "Job check-1 failed: BackoffLimitExceeded".into()
        }
    );
    assert_eq!(
        verdict_of(&job(&[("Complete", "False", None)])),
        Taken::UnderWay
    );
}

#[test]
fn the_job_is_the_metrics_spec_owned_by_the_run_and_labelled_with_it() {
    let metric: JobMetric = serde_json::from_value(json!({
        "metadata": {"labels": {"team": "shop"}, "annotations": {"note": "smoke"}},
        "spec": {"backoffLimit": 1, "template": {"spec": {
            "containers": [{"name": "smoke", "image": "curl"}], "restartPolicy": "Never"}}}
    }))
    .expect("a job metric");
    let mut run = AnalysisRun::new("web-abc-1-2", Default::default());
    run.metadata.namespace = Some("shop".into());
    let spec: JobSpec = serde_json::from_value(metric.spec.clone()).expect("a spec");
    assert!(
        job_for(&metric, spec.clone(), &run, "n").is_err(),
        "no uid yet: no owner to give"
    );
    run.metadata.uid = Some("uid-1".into());
    let made = job_for(&metric, spec, &run, "web-abc-1-2-smoke-1").expect("a job");
    assert_eq!(made.namespace().as_deref(), Some("shop"));
    assert_eq!(
        made.labels().get(RUN_LABEL).map(String::as_str),
        Some("web-abc-1-2")
    );
    assert_eq!(made.labels().get("team").map(String::as_str), Some("shop"));
    let owner = &made.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("AnalysisRun", "uid-1", Some(true))
    );
    assert_eq!(made.spec.and_then(|s| s.backoff_limit), Some(1));
}
