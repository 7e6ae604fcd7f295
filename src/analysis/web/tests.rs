use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::analysis::args::ArgValue;
use crate::analysis::hosts::AllowedHosts;
use crate::analysis::provider::{Gates, Shared, Taken};
use crate::api::analysis::{AnalysisPhase, Metric};

/// An endpoint on a real socket that answers one request with `answer` (status line,
/// headers and body) and hands back the request it read, head and body.
fn serve_once(answer: String) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            request.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&request).to_string();
        let length = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|n| n.trim().to_owned())
            })
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let _ = sent.send(format!("{head}{}", String::from_utf8_lossy(&body)));
        let _ = stream.write_all(answer.as_bytes());
    });
    (address, received)
}

fn ok_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn shared(allowed: AllowedHosts) -> Shared {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    Shared {
        client: client(),
        http: http.clone(),
        insecure_http: http,
        gates: Arc::new(Gates::new(8)),
        default_address: None,
        allowed,
    }
}

/// The web provider never calls the API server; a client that reaches nothing will do.
fn client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
    kube::Client::try_from(config).expect("a client")
}

fn secrets() -> kube::Api<k8s_openapi::api::core::v1::Secret> {
    kube::Api::namespaced(client(), "shop")
}

fn metric(web: serde_json::Value) -> Metric {
    serde_json::from_value(
        json!({"name": "web", "successCondition": "result.ok && result.rate >= 0.95",
        "provider": {"web": web}}),
    )
    .expect("a metric")
}

fn args() -> BTreeMap<String, ArgValue> {
    [
        ("service", "checkout", false),
        ("token", "s3cr3t-token", true),
    ]
    .into_iter()
    .map(|(name, value, secret)| {
        (
            name.to_owned(),
            ArgValue {
                value: value.to_owned(),
                secret,
            },
        )
    })
    .collect()
}

async fn prepare(metric: &Metric, shared: &Shared) -> Result<Ready, Unready> {
    let web = metric.provider.web.as_ref().expect("a web metric");
    let args = args();
    let secrets = secrets();
    let run = crate::api::analysis::AnalysisRun::new("run", Default::default());
    let env = Env {
        run: &run,
        metric,
        measurement: 1,
        at: "spec.metrics[0] (metric \"web\")",
        args: &args,
        secrets: &secrets,
        shared,
    };
    web.prepare(&env).await
}

#[test]
fn argos_json_path_template_form_reads_as_the_query_it_holds() {
    assert_eq!(json_path_query("{$.data.ok}"), "$.data.ok");
    assert_eq!(json_path_query("{.data.ok}"), "$.data.ok");
    assert_eq!(json_path_query("$.data"), "$.data");
    assert_eq!(json_path_query(" { $.items[0] } "), "$.items[0]");
    assert_eq!(json_path_query("data.ok"), "$.data.ok");
}

#[test]
fn the_selected_json_is_the_result_and_bounded() {
    let answer = json!({"data": {"ok": true, "rate": 0.97, "items": [1, 2, 3]}});
    assert_eq!(
        select(&answer, Some("{$.data.ok}")),
        Ok(QueryValue::Json(json!(true)))
    );
    assert_eq!(
        select(&answer, Some("{$.data.items[*]}")),
        Ok(QueryValue::Json(json!([1, 2, 3]))),
        "several values are a list"
    );
    assert_eq!(
        select(&answer, Some("{$.missing}")),
        Ok(QueryValue::Json(serde_json::Value::Null)),
        "nothing selected is no data"
    );
    assert_eq!(select(&answer, None), Ok(QueryValue::Json(answer.clone())));
    let wide = json!({"items": (0..300).collect::<Vec<i32>>()});
    let why = select(&wide, Some("$.items[*]")).expect_err("too many");
    assert!(why.contains("selected 300 values"), "{why}");
    let why = select(&wide, None).expect_err("too many");
    assert!(why.contains("more than 256 values"), "{why}");
    let long = json!({"text": "x".repeat(2000)});
    assert!(select(&long, None).is_err());
}

#[tokio::test]
async fn a_web_metric_sends_its_request_with_arguments_and_judges_the_selected_json() {
    let (address, request) = serve_once(ok_json(r#"{"data": {"ok": true, "rate": 0.97}}"#));
    let metric = metric(json!({
        "url": format!("{address}/measure?service={{{{args.service}}}}"),
        "method": "POST",
        "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
        "jsonBody": {"service": "{{args.service}}", "window": 5},
        "jsonPath": "{$.data}"
    }));
    let shared = shared(AllowedHosts::any());
    let ready = prepare(&metric, &shared).await.expect("ready");
    assert_eq!(
        ready.recorded,
        format!("{address}/measure?service=checkout")
    );
    assert!(ready.secrets.contains(&"s3cr3t-token".to_owned()));
    let Ok(Taken::Value(value)) = ready.take.await else {
        panic!("a value");
    };
    assert_eq!(value, QueryValue::Json(json!({"ok": true, "rate": 0.97})));
    let verdict = crate::verdict::judge(&metric, &value);
    assert_eq!(verdict.phase, AnalysisPhase::Successful, "{verdict:?}");
    let sent = request.recv().expect("the request");
    assert!(
        sent.starts_with("POST /measure?service=checkout HTTP/1.1"),
        "{sent}"
    );
    assert!(
        sent.to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t-token")
    );
    assert!(
        sent.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert!(
        sent.ends_with(r#"{"service":"checkout","window":5}"#),
        "{sent}"
    );
}

#[tokio::test]
async fn a_failing_answer_is_an_error_that_never_quotes_a_secret() {
    let metric = |address: &str| {
        metric(
            json!({"url": format!("{address}/m?token={{{{args.token}}}}"),
            "headers": [{"key": "X-Token", "value": "{{args.token}}"}]}),
        )
    };
    for (answer, expected) in [
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_owned(),
            "HTTP 500",
        ),
        (ok_json("not json"), "the answer is not JSON"),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n{".to_owned(),
            "the answer is too large",
        ),
    ] {
        let (address, _request) = serve_once(answer);
        let shared = shared(AllowedHosts::any());
        let ready = prepare(&metric(&address), &shared).await.expect("ready");
        let error = ready.take.await.expect_err("an error");
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(
            error.contains(&format!("GET {address}/m?token=")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_url_the_operator_does_not_allow_is_never_sent_and_its_secret_never_shown() {
    let (address, request) = serve_once(ok_json("true"));
    let allowed = AllowedHosts::parse("prometheus.monitoring").expect("a list");
    let metric = metric(json!({"url": format!("{address}/m?token={{{{args.token}}}}")}));
    let Err(Unready::Never(why)) = prepare(&metric, &shared(allowed)).await else {
        panic!("refused");
    };
    assert!(
        why.contains("spec.metrics[0] (metric \"web\").provider.web.url"),
        "{why}"
    );
    assert!(why.contains("--allowed-metric-hosts"), "{why}");
    assert!(!why.contains("s3cr3t"), "{why}");
    assert!(
        request
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err(),
        "nothing was sent"
    );
}
