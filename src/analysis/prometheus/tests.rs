use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;

/// A Prometheus on a real socket that answers one request with `head` (status line and
/// headers) and then whatever `body` writes. Returns its address.
fn serve_once(answer: &'static str, body: impl FnOnce(&mut TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        // The whole request, head and form body: a socket closed with unread bytes resets.
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            request.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut form = vec![0u8; length];
        if stream.read_exact(&mut form).is_err() {
            return;
        }
        if stream.write_all(answer.as_bytes()).is_ok() {
            body(&mut stream);
        }
    });
    address
}

fn request(address: &str) -> Query {
    Query {
        range: None,
        address: address.to_owned(),
        query: "up".into(),
        timeout: Duration::from_secs(20),
        headers: Vec::new(),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
}

#[tokio::test]
async fn an_answer_announced_too_large_is_not_read() {
    let address = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
        |stream| {
            let _ = stream.write_all(b"{\"status\":\"success\"");
        },
    );
    let error = query(&http(), &Gates::new(8), &request(&address))
        .await
        .expect_err("1 GiB announced");
    assert_eq!(
        error,
        format!(
            "querying Prometheus at {address}: the answer is too large: 1073741824 bytes, at most 8388608 are read; aggregate in the query (sum, max, topk) so that it returns fewer series"
        )
    );
}

#[tokio::test]
async fn an_answer_streamed_past_the_cap_is_cut_off() {
    // Chunked, with no length announced: 1 GiB would follow if weir kept reading.
    let address = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        |stream| {
            let chunk = vec![b' '; 64 * 1024];
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            for _ in 0..(1024 * 1024 * 1024 / chunk.len()) {
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        },
    );
    let started = Instant::now();
    let error = query(&http(), &Gates::new(8), &request(&address))
        .await
        .expect_err("streamed past the cap");
    assert!(
        error.ends_with("the answer is too large: more than 8388608 bytes, at most 8388608 are read; aggregate in the query (sum, max, topk) so that it returns fewer series"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_answer_within_the_cap_is_judged_from_its_values() {
    let address = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        |stream| {
            let _ = stream.write_all(
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1712345678.1,"0.5"]},{"metric":{},"value":[1712345678.1,"NaN"]}],"stats":{"timings":{}}}}"#,
            );
        },
    );
    let value = query(&http(), &Gates::new(8), &request(&address))
        .await
        .expect("a vector");
    let QueryValue::Vector(samples) = value else {
        panic!("a vector, got {value:?}");
    };
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0], 0.5);
    assert!(samples[1].is_nan());
}

#[tokio::test]
async fn a_server_that_is_not_prometheus_is_named_by_its_status() {
    let address = serve_once(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n",
        |stream| {
            let _ = stream.write_all(b"down!");
        },
    );
    let error = query(&http(), &Gates::new(8), &request(&address))
        .await
        .expect_err("503");
    assert_eq!(
        error,
        format!("querying Prometheus at {address}: HTTP 503 Service Unavailable")
    );
}

#[test]
fn answers_are_read_for_their_values() {
    let parse = |text: &str| parse_answer(text.as_bytes(), false);
    assert_eq!(
        parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#),
        Ok(QueryValue::Scalar(f64::INFINITY))
    );
    assert_eq!(
        parse(
            r#"{"status":"success","warnings":["w"],"data":{"resultType":"vector","result":[]}}"#
        ),
        Ok(QueryValue::Vector(Vec::new()))
    );
    let error = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#)
        .expect_err("matrix");
    assert!(
        error.starts_with("the query returned a range vector"),
        "{error}"
    );
    let error = parse(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#)
        .expect_err("not a number");
    assert_eq!(error, "the sample value \"x\" is not a number");
    let error = parse(&format!(
        r#"{{"status":"error","errorType":"bad_data","error":"{}"}}"#,
        "é".repeat(1000)
    ))
    .expect_err("refused");
    assert!(
        error.starts_with("Prometheus refused the query: bad_data: éé")
            && error.ends_with("... (2000 bytes)")
            && error.len() < 600,
        "{error}"
    );
    let error = parse("<html>").expect_err("not JSON");
    assert!(
        error.starts_with("the answer is not Prometheus' JSON"),
        "{error}"
    );
}

#[test]
fn a_vector_above_the_sample_cap_is_refused() {
    let vector = |n: usize| {
        let series = vec![r#"{"metric":{},"value":[1,"0.1"]}"#; n].join(",");
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#)
    };
    assert!(matches!(
        parse_answer(vector(verdict::MAX_SAMPLES).as_bytes(), false),
        Ok(QueryValue::Vector(v)) if v.len() == verdict::MAX_SAMPLES
    ));
    assert_eq!(
        parse_answer(vector(verdict::MAX_SAMPLES + 1).as_bytes(), false),
        Err(verdict::too_many_samples(verdict::MAX_SAMPLES + 1))
    );
    assert!(
        verdict::too_many_samples(10_001)
            .starts_with("result too large: 10001 samples, at most 10000 are judged")
    );
}

#[tokio::test]
async fn a_query_that_waits_too_long_for_its_turn_times_out() {
    let gates = Gates::new(1);
    let _held = gates.enter("http://127.0.0.1:9").await;
    let mut waiting = request("http://127.0.0.1:9");
    waiting.timeout = Duration::from_millis(200);
    let error = query(&http(), &gates, &waiting).await.expect_err("no turn");
    assert_eq!(
        error,
        "Prometheus at http://127.0.0.1:9 did not answer within 200ms (queries to one address wait their turn, 1 at a time: --max-queries-per-address)"
    );
}

#[test]
fn a_range_querys_result_is_every_value_of_every_series() {
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"a":"1"},"values":[[1,"10"],[61,"20"]]},
        {"metric":{"a":"2"},"values":[[1,"30"]]}]}}"#;
    assert_eq!(
        parse_answer(matrix.as_bytes(), true),
        Ok(QueryValue::Vector(vec![10.0, 20.0, 30.0]))
    );
    let points: Vec<String> = (0..=verdict::MAX_SAMPLES)
        .map(|i| format!("[{i},\"1\"]"))
        .collect();
    let wide = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
        points.join(",")
    );
    assert!(
        parse_answer(wide.as_bytes(), true)
            .is_err_and(|e| e.starts_with("result too large: 10001 samples"))
    );
}

#[test]
fn a_range_querys_span_is_read_from_argos_time_forms_with_arguments_filled() {
    let range: RangeQuery = serde_json::from_value(serde_json::json!({
        "start": "now() - duration(\"{{args.lookback}}\")", "end": "now()", "step": "1m"}))
    .expect("a range");
    let args = [(
        "lookback".to_owned(),
        crate::analysis::args::ArgValue {
            value: "5m".into(),
            secret: false,
        },
    )]
    .into();
    assert_eq!(
        span(&range, &args, 1_000_000),
        Ok(Span {
            start: 999_700,
            end: 1_000_000,
            step: 60.0
        })
    );
    let mut backwards = range.clone();
    backwards.end = "now() - duration(\"1h\")".into();
    assert!(span(&backwards, &args, 1_000_000).is_err_and(|e| e.contains("after")));
    let mut no_step = range;
    no_step.step = "0s".into();
    assert!(span(&no_step, &args, 1_000_000).is_err());
}

fn oauth2() -> crate::api::analysis::OAuth2 {
    serde_json::from_value(serde_json::json!({
        "tokenUrl": "{{args.idp}}/token", "clientId": "my-client-id",
        "clientSecret": "{{ args.oauthSecret }}", "scopes": ["metrics:read", "other"]}))
    .expect("an oauth2 client")
}

fn oauth2_args(idp: &str) -> std::collections::BTreeMap<String, crate::analysis::args::ArgValue> {
    [("idp", idp, false), ("oauthSecret", "s3cr3t", true)]
        .into_iter()
        .map(|(name, value, secret)| {
            (
                name.to_owned(),
                crate::analysis::args::ArgValue {
                    value: value.to_owned(),
                    secret,
                },
            )
        })
        .collect()
}

#[test]
fn the_client_credentials_request_is_argos_fields_filled() {
    let (url, form, secrets) =
        token_request(&oauth2(), &oauth2_args("https://idp.example")).expect("a request");
    assert_eq!(url, "https://idp.example/token");
    assert_eq!(
        form,
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", "my-client-id".to_owned()),
            ("client_secret", "s3cr3t".to_owned()),
            ("scope", "metrics:read other".to_owned()),
        ]
    );
    assert_eq!(secrets, ["s3cr3t"]);
}

/// An Env for the provider's own steps, with `allowed` as the operator's list.
fn oauth2_env_parts(
    allowed: &str,
) -> (
    crate::analysis::provider::Shared,
    kube::Api<k8s_openapi::api::core::v1::Secret>,
) {
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let shared = crate::analysis::provider::Shared {
        client: client.clone(),
        http: http(),
        insecure_http: http(),
        gates: std::sync::Arc::new(crate::analysis::provider::Gates::new(8)),
        default_address: None,
        allowed: crate::analysis::hosts::AllowedHosts::parse(allowed).expect("a list"),
    };
    (shared, kube::Api::namespaced(client, "shop"))
}

#[tokio::test]
async fn an_oauth2_token_is_asked_for_and_sent_as_bearer_never_shown() {
    let address = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n{\"access_token\":\"tok-123\",\"expires_in\":60}",
        |_| {},
    );
    let metric: crate::api::analysis::Metric = serde_json::from_value(serde_json::json!({
        "name": "m", "successCondition": "true", "provider": {"prometheus": {"query": "up"}}}))
    .expect("a metric");
    let args = oauth2_args(&address);
    let run = crate::api::analysis::AnalysisRun::new("run", Default::default());
    for (allowed, ok) in [("127.0.0.1", true), ("prometheus.monitoring", false)] {
        let (shared, secrets) = oauth2_env_parts(allowed);
        let env = crate::analysis::provider::Env {
            run: &run,
            metric: &metric,
            measurement: 1,
            at: "spec.metrics[0]",
            args: &args,
            secrets: &secrets,
            shared: &shared,
        };
        match client_credentials(&env, &oauth2()).await {
            Ok((header, secrets)) => {
                assert!(ok, "sent to a host not allowed");
                assert_eq!(header, "Bearer tok-123");
                assert!(
                    secrets.contains(&"tok-123".to_owned())
                        && secrets.contains(&"s3cr3t".to_owned())
                );
            }
            Err(why) => {
                assert!(!ok, "{why}");
                assert!(
                    why.contains("oauth2.tokenUrl") && why.contains("nothing was sent"),
                    "{why}"
                );
                assert!(!why.contains("s3cr3t"), "{why}");
            }
        }
    }
}
