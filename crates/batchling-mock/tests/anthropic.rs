//! The fake Anthropic API over real HTTP: the Messages answer's shape and
//! headers, its errors, the prompt cache, limits per dimension, the 529
//! share, bounded bodies, and the Message Batches lifecycle. No timing
//! assertions.

#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod support;
use support::{client, start};

use std::collections::HashMap;
use std::time::Duration;

use batchling_mock::{
    BatchBehavior, BatchEnd, Faults, LimitTable, MARKER_SPEND_LIMIT, MockConfig, MockServer,
    ModelLimit,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .parse()
            .unwrap()
    }

    /// The error type of an Anthropic error envelope, after checking it.
    fn error_type(&self) -> String {
        let v = self.json();
        assert_eq!(v["type"], "error", "{}", self.text);
        assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
        assert_eq!(v["request_id"].as_str(), self.header("request-id"));
        v["error"]["type"].as_str().unwrap().to_owned()
    }
}

/// One call with Anthropic's headers (`key`: `x-api-key`; `None`: none).
async fn call(
    server: &MockServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> Answer {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{}{path}", server.anthropic_base_url())
    };
    let mut req = client()
        .request(method, url)
        .header("anthropic-version", "2023-06-01");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

async fn message(server: &MockServer, body: &Value) -> Answer {
    call(
        server,
        reqwest::Method::POST,
        "/v1/messages",
        Some(body),
        Some("sk-ant-test"),
    )
    .await
}

async fn get(server: &MockServer, path: &str) -> Answer {
    call(
        server,
        reqwest::Method::GET,
        path,
        None,
        Some("sk-ant-test"),
    )
    .await
}

async fn post(server: &MockServer, path: &str, body: &Value) -> Answer {
    call(
        server,
        reqwest::Method::POST,
        path,
        Some(body),
        Some("sk-ant-test"),
    )
    .await
}

fn hello(model: &str, max_tokens: u64, text: &str) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_message_has_anthropics_shape_and_headers() {
    let server = start(MockConfig {
        rpm: Some(10),
        itpm: Some(1000),
        otpm: Some(500),
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes?"},
                     {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]});
    let a = message(&server, &body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let m = a.json();
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "echo:hello there"}])
    );
    assert_eq!(
        (m["stop_reason"].as_str(), &m["stop_sequence"]),
        (Some("end_turn"), &Value::Null)
    );
    let u = &m["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(u["output_tokens"], 2);
    assert_eq!(
        (
            u["cache_creation_input_tokens"].as_u64(),
            u["cache_read_input_tokens"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(a.header("request-id").unwrap().starts_with("req_"));
    assert_eq!(a.header_u64("anthropic-ratelimit-requests-limit"), 10);
    assert_eq!(a.header_u64("anthropic-ratelimit-requests-remaining"), 9);
    assert_eq!(a.header_u64("anthropic-ratelimit-input-tokens-limit"), 1000);
    let input = u["input_tokens"].as_u64().unwrap();
    assert_eq!(
        a.header_u64("anthropic-ratelimit-input-tokens-remaining"),
        1000 - input
    );
    assert_eq!(a.header_u64("anthropic-ratelimit-output-tokens-limit"), 500);
    assert_eq!(
        a.header_u64("anthropic-ratelimit-output-tokens-remaining"),
        500 - 64
    );
    // No TPM of its own: input and output combined.
    assert_eq!(a.header_u64("anthropic-ratelimit-tokens-limit"), 1500);
    let reset = a.header("anthropic-ratelimit-requests-reset").unwrap();
    assert!(is_rfc3339(reset), "{reset}");
    assert!(a.header("x-ratelimit-limit-requests").is_none());
    // A cut answer says so.
    let cut = message(&server, &hello("claude-sonnet-4-5", 2, "one two three"))
        .await
        .json();
    assert_eq!(cut["content"][0]["text"], "echo:one two");
    assert_eq!(cut["stop_reason"], "max_tokens");
    server.shutdown().await;
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'Z'
        && s.chars().filter(char::is_ascii_digit).count() == 14
}

#[tokio::test]
async fn keys_and_versions_are_checked_as_anthropic_does() {
    let server = start(MockConfig::default()).await;
    let ok = hello("claude-haiku-4-5", 8, "hi");
    let no_key = call(
        &server,
        reqwest::Method::POST,
        "/v1/messages",
        Some(&ok),
        None,
    )
    .await;
    assert_eq!(
        (no_key.status, no_key.error_type().as_str()),
        (401, "authentication_error")
    );
    let no_version = client()
        .post(format!("{}/v1/messages", server.anthropic_base_url()))
        .header("x-api-key", "k")
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), 400);
    let text = no_version.text().await.unwrap();
    assert!(
        text.contains("invalid_request_error") && text.contains("anthropic-version"),
        "{text}"
    );
    server.require_anthropic_key(Some("sk-ant-right"));
    let wrong = call(
        &server,
        reqwest::Method::POST,
        "/v1/messages",
        Some(&ok),
        Some("sk-ant-wrong-secret"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.text.contains("wrong-secret"), "{}", wrong.text);
    let right = call(
        &server,
        reqwest::Method::POST,
        "/v1/messages",
        Some(&ok),
        Some("sk-ant-right"),
    )
    .await;
    assert_eq!(right.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn bodies_are_checked_as_anthropic_does() {
    let server = start(MockConfig::default()).await;
    let bad = [
        (
            json!({"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
            "model: Field required",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "messages": []}),
            "messages: at least one message",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]}),
            "top-level `system`",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages.0.content.0.type",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "system": 5, "messages": [{"role": "user", "content": "x"}]}),
            "system:",
        ),
        (
            json!({"model": "m", "max_tokens": 8, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
    ];
    for (body, says) in bad {
        let a = message(&server, &body).await;
        assert_eq!(
            (a.status, a.error_type().as_str()),
            (400, "invalid_request_error"),
            "{body}"
        );
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{}: {says}",
            a.text
        );
    }
    let not_json = client()
        .post(format!("{}/v1/messages", server.anthropic_base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    // Consecutive turns of one role are combined, not refused.
    let twice = json!({"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
    assert_eq!(message(&server, &twice).await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_cache_breakpoint_writes_once_then_reads_and_reads_do_not_count_against_itpm() {
    let server = start(MockConfig {
        itpm: Some(1_000_000),
        ..MockConfig::default()
    })
    .await;
    let long = "a long shared instruction ".repeat(40);
    let body = |question: &str| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
            "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": question}]})
    };
    let first = message(&server, &body("first question")).await.json()["usage"].clone();
    let second = message(&server, &body("second one")).await.json()["usage"].clone();
    let prefix = long.len().div_ceil(4) as u64;
    assert_eq!(first["cache_creation_input_tokens"], prefix);
    assert_eq!(first["cache_read_input_tokens"], 0);
    assert_eq!(first["cache_creation"]["ephemeral_5m_input_tokens"], prefix);
    assert_eq!(second["cache_creation_input_tokens"], 0);
    assert_eq!(second["cache_read_input_tokens"], prefix);
    let n = |u: &Value, k: &str| u[k].as_u64().unwrap();
    let lane = &server.lane_stats()[0];
    assert_eq!(
        lane.input_tokens,
        n(&first, "input_tokens") + prefix + n(&second, "input_tokens"),
        "cache reads are left out of ITPM"
    );
    assert_eq!(lane.output_tokens, 32, "OTPM counts max_tokens");
    // A 1-hour breakpoint writes to the other bucket; no breakpoint, no cache.
    let mut hour = body("third");
    hour["system"][0]["cache_control"]["ttl"] = "1h".into();
    hour["system"][0]["text"] = "another prefix entirely".into();
    let u = message(&server, &hour).await.json()["usage"].clone();
    assert_eq!(
        u["cache_creation"]["ephemeral_1h_input_tokens"],
        u["cache_creation_input_tokens"]
    );
    let plain = message(&server, &hello("claude-sonnet-4-5", 4, "x"))
        .await
        .json();
    assert_eq!(plain["usage"]["cache_creation_input_tokens"], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn input_and_output_tokens_are_limited_apart_per_model_class() {
    let server = start(MockConfig {
        limits: LimitTable {
            models: vec![
                ModelLimit::shared("opus", &["claude-opus-4-1", "claude-opus-4"], None, None)
                    .with_input_output(Some(20), None),
                ModelLimit::new("claude-haiku-4-5", None, None).with_input_output(None, Some(100)),
            ],
            groups: Vec::new(),
        },
        ..MockConfig::default()
    })
    .await;
    // 40 characters: 10 input tokens each; output is unlimited here.
    let text = "x".repeat(40);
    for model in ["claude-opus-4-1", "claude-opus-4"] {
        assert_eq!(
            message(&server, &hello(model, 4000, &text)).await.status,
            200
        );
    }
    let over = message(&server, &hello("claude-opus-4-1", 1, &text)).await;
    assert_eq!(
        (over.status, over.error_type().as_str()),
        (429, "rate_limit_error")
    );
    assert!(
        over.text.contains("input tokens per minute"),
        "{}",
        over.text
    );
    assert!(over.header_u64("retry-after") >= 1);
    assert_eq!(
        over.header_u64("anthropic-ratelimit-input-tokens-remaining"),
        0
    );
    // The other class: 100 output tokens a minute, whatever the input.
    let big_input = "y".repeat(4000);
    for _ in 0..2 {
        assert_eq!(
            message(&server, &hello("claude-haiku-4-5", 50, &big_input))
                .await
                .status,
            200
        );
    }
    let over = message(&server, &hello("claude-haiku-4-5", 1, "z")).await;
    assert_eq!(over.status, 429);
    assert!(
        over.text.contains("output tokens per minute"),
        "{}",
        over.text
    );
    // A request that can never fit is refused for good, not paused.
    let never = message(&server, &hello("claude-haiku-4-5", 101, "z")).await;
    assert_eq!(
        (never.status, never.error_type().as_str()),
        (400, "invalid_request_error")
    );
    // Models outside both classes are unlimited.
    assert_eq!(
        message(&server, &hello("claude-other", 10_000, &big_input))
            .await
            .status,
        200
    );
    assert_eq!(server.stats().rate_limited, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn requests_per_minute_and_the_spend_cap() {
    let server = start(MockConfig {
        rpm: Some(2),
        ..MockConfig::default()
    })
    .await;
    let body = hello("claude-haiku-4-5", 4, "hi");
    for _ in 0..2 {
        assert_eq!(message(&server, &body).await.status, 200);
    }
    let over = message(&server, &body).await;
    assert_eq!(over.status, 429);
    assert!(over.text.contains("requests per minute"));
    assert!(over.header("retry-after").is_some());
    let capped = message(&server, &hello("claude-haiku-4-5", 4, MARKER_SPEND_LIMIT)).await;
    assert_eq!(
        (capped.status, capped.error_type().as_str()),
        (429, "rate_limit_error")
    );
    assert!(
        capped.header("retry-after").is_none(),
        "a spend cap has no retry-after"
    );
    assert_eq!(
        capped.json()["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn overloaded_comes_at_its_share_and_500_is_api_error() {
    let server = start(MockConfig {
        faults: Faults {
            overloaded: 0.3,
            ..Faults::default()
        },
        seed: 7,
        ..MockConfig::default()
    })
    .await;
    let mut counts: HashMap<u16, u64> = HashMap::new();
    for i in 0..300 {
        let a = message(&server, &hello("claude-haiku-4-5", 4, &format!("n{i}"))).await;
        if a.status == 529 {
            assert_eq!(a.error_type(), "overloaded_error");
        }
        *counts.entry(a.status).or_default() += 1;
    }
    let overloaded = counts.get(&529).copied().unwrap_or(0);
    assert!((60..=120).contains(&overloaded), "{counts:?}");
    assert_eq!(counts[&200] + overloaded, 300);
    server.set_faults(Faults {
        error_500: 1.0,
        ..Faults::default()
    });
    let a = message(&server, &hello("claude-haiku-4-5", 4, "x")).await;
    assert_eq!((a.status, a.error_type().as_str()), (500, "api_error"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_cap_is_request_too_large() {
    let server = start(MockConfig {
        max_body_bytes: 1024,
        ..MockConfig::default()
    })
    .await;
    let a = message(&server, &hello("claude-haiku-4-5", 4, &"x".repeat(2000))).await;
    assert_eq!(
        (a.status, a.error_type().as_str()),
        (413, "request_too_large")
    );
    // A batch create declaring more than 256 MB is refused before it is read.
    let reply = raw_request(
        &server,
        "POST /v1/messages/batches HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\n\
         anthropic-version: 2023-06-01\r\ncontent-length: 300000000\r\n\r\n{",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("request_too_large"), "{reply}");
    server.shutdown().await;
}

/// Send raw bytes and read the answer's head and first bytes.
async fn raw_request(server: &MockServer, text: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < buf.len() {
        let n = stream.read(&mut buf[got..]).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        got += n;
        let text = String::from_utf8_lossy(&buf[..got]);
        if text.contains("\"request_id\"") && text.ends_with('}') {
            break;
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

fn batch(ids: &[&str]) -> Value {
    let requests: Vec<Value> = ids
        .iter()
        .map(|id| json!({"custom_id": id, "params": hello("claude-haiku-4-5", 16, &format!("hi {id}"))}))
        .collect();
    json!({"requests": requests})
}

/// The results of an ended batch, by `custom_id`.
async fn results(server: &MockServer, batch: &Value) -> HashMap<String, Value> {
    let url = batch["results_url"]
        .as_str()
        .expect("ended batches have results");
    let a = get(server, url).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["custom_id"].as_str().unwrap().to_owned(),
                v["result"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_runs_to_its_end_and_its_results_join_on_custom_id() {
    let server = start(MockConfig::default()).await;
    let mut body = batch(&["a", "b", "c"]);
    body["requests"][1]["params"]["messages"][0]["content"] = "__fail_400__".into();
    let created = post(&server, "/v1/messages/batches", &body).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let b = created.json();
    let id = b["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msgbatch_"));
    assert_eq!(
        (b["type"].as_str(), b["processing_status"].as_str()),
        (Some("message_batch"), Some("in_progress"))
    );
    assert_eq!(
        b["request_counts"],
        json!({"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    );
    assert_eq!(b["results_url"], Value::Null);
    assert!(
        is_rfc3339(b["created_at"].as_str().unwrap())
            && is_rfc3339(b["expires_at"].as_str().unwrap())
    );
    let early = get(&server, &format!("/v1/messages/batches/{id}/results")).await;
    assert_eq!(early.status, 400);
    let path = format!("/v1/messages/batches/{id}");
    assert_eq!(
        get(&server, &path).await.json()["processing_status"],
        "in_progress"
    );
    let ended = get(&server, &path).await.json();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0})
    );
    assert!(is_rfc3339(ended["ended_at"].as_str().unwrap()));
    let r = results(&server, &ended).await;
    assert_eq!(r.len(), 3);
    assert_eq!(r["a"]["type"], "succeeded");
    assert_eq!(r["a"]["message"]["content"][0]["text"], "echo:hi a");
    assert_eq!(r["a"]["message"]["usage"]["service_tier"], "batch");
    assert_eq!(r["b"]["type"], "errored");
    assert_eq!(r["b"]["error"]["type"], "error");
    assert_eq!(r["b"]["error"]["error"]["type"], "invalid_request_error");
    assert_eq!(server.message_batch_stats().requests_succeeded, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_and_expiry_end_batches_with_their_own_outcomes() {
    let server = start(MockConfig::default()).await;
    server.set_message_batch_behavior(BatchBehavior {
        polls_to_finish: 1,
        end: BatchEnd::Hold,
        answered_before_stop: 1,
    });
    let id = post(&server, "/v1/messages/batches", &batch(&["a", "b", "c"]))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/messages/batches/{id}");
    assert_eq!(
        get(&server, &path).await.json()["processing_status"],
        "in_progress"
    );
    let canceling = post(&server, &format!("{path}/cancel"), &json!({}))
        .await
        .json();
    assert_eq!(canceling["processing_status"], "canceling");
    assert!(is_rfc3339(
        canceling["cancel_initiated_at"].as_str().unwrap()
    ));
    let ended = get(&server, &path).await.json();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(ended["request_counts"]["succeeded"], 1);
    assert_eq!(ended["request_counts"]["canceled"], 2);
    let r = results(&server, &ended).await;
    assert_eq!(r.values().filter(|v| v["type"] == "canceled").count(), 2);
    // Cancelling an ended batch changes nothing.
    let again = post(&server, &format!("{path}/cancel"), &json!({}))
        .await
        .json();
    assert_eq!(again["processing_status"], "ended");
    assert_eq!(server.message_batch_stats().batches_canceled, 1);

    server.set_message_batch_behavior(BatchBehavior {
        polls_to_finish: 1,
        end: BatchEnd::Expire,
        answered_before_stop: 0,
    });
    let id = post(&server, "/v1/messages/batches", &batch(&["x", "y"]))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = get(&server, &format!("/v1/messages/batches/{id}"))
        .await
        .json();
    assert_eq!(ended["request_counts"]["expired"], 2);
    let r = results(&server, &ended).await;
    assert!(r.values().all(|v| v["type"] == "expired"));
    let missing = get(&server, "/v1/messages/batches/msgbatch_nope").await;
    assert_eq!(
        (missing.status, missing.error_type().as_str()),
        (404, "not_found_error")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn creates_are_checked_and_steerable() {
    let server = start(MockConfig::default()).await;
    let refused = |body: Value, says: &'static str| {
        let server = &server;
        async move {
            let a = post(server, "/v1/messages/batches", &body).await;
            assert_eq!(
                (a.status, a.error_type().as_str()),
                (400, "invalid_request_error")
            );
            assert!(a.text.contains(says), "{}: {says}", a.text);
        }
    };
    refused(json!({"requests": []}), "at least one").await;
    refused(batch(&[&"x".repeat(65)]), "requests.0.custom_id").await;
    refused(batch(&["a", "a"]), "duplicate").await;
    let mut no_max = batch(&["a"]);
    no_max["requests"][0]["params"]["max_tokens"] = Value::Null;
    refused(no_max, "requests.0.params.max_tokens").await;
    let many: Vec<Value> = (0..100_001)
        .map(|i| json!({"custom_id": format!("r{i}"), "params": {}}))
        .collect();
    refused(json!({"requests": many}), "at most 100000").await;
    assert_eq!(server.message_batch_stats().batches_created, 0);

    server.fail_next_message_batch_creates(1, 529);
    let a = post(&server, "/v1/messages/batches", &batch(&["a"])).await;
    assert_eq!(
        (a.status, a.error_type().as_str()),
        (529, "overloaded_error")
    );
    assert_eq!(server.message_batch_stats().batches_created, 0);
    server.lose_next_message_batch_creates(1);
    let a = post(&server, "/v1/messages/batches", &batch(&["a"])).await;
    assert_eq!(a.status, 500);
    assert_eq!(
        server.message_batch_stats().batches_created,
        1,
        "lost, yet created"
    );
    server.set_hang_message_batch_creates(true);
    let hung = client()
        .post(format!(
            "{}/v1/messages/batches",
            server.anthropic_base_url()
        ))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .timeout(Duration::from_millis(300))
        .body(batch(&["a"]).to_string())
        .send()
        .await;
    assert!(hung.is_err(), "a hung create never answers");
    assert_eq!(server.message_batch_stats().batches_created, 2);
    assert_eq!(server.message_batch_objects().len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn batches_list_newest_first_in_pages() {
    let server = start(MockConfig::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = post(&server, "/v1/messages/batches", &batch(&[&format!("r{i}")]))
            .await
            .json()["id"]
            .clone();
        ids.push(id);
    }
    ids.reverse();
    let page = |q: String| {
        let server = &server;
        async move {
            get(server, &format!("/v1/messages/batches{q}"))
                .await
                .json()
        }
    };
    let first = page("?limit=2".into()).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!((&first["first_id"], &first["last_id"]), (&ids[0], &ids[1]));
    assert_eq!(first["has_more"], true);
    let second = page(format!("?limit=2&after_id={}", ids[1].as_str().unwrap())).await;
    assert_eq!(
        (&second["first_id"], &second["last_id"]),
        (&ids[2], &ids[3])
    );
    let last = page(format!("?limit=2&after_id={}", ids[3].as_str().unwrap())).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert_eq!(last["has_more"], false);
    let back = page(format!("?limit=2&before_id={}", ids[2].as_str().unwrap())).await;
    assert_eq!((&back["first_id"], &back["last_id"]), (&ids[0], &ids[1]));
    assert_eq!(back["has_more"], false);
    assert_eq!(
        page(String::new()).await["data"].as_array().unwrap().len(),
        5
    );
    let bad = get(&server, "/v1/messages/batches?limit=0").await;
    assert_eq!(bad.status, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn keys_count_answers_and_the_override_answers_messages_too() {
    let server = start(MockConfig::default()).await;
    let mut body = hello("claude-haiku-4-5", 4, "hi");
    body["metadata"] = json!({"user_id": "line-7"});
    assert_eq!(message(&server, &body).await.status, 200);
    assert_eq!(server.ok_count_for("line-7"), 1);
    assert_eq!(server.stats().ok, 1);
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    server.set_status_override(Some((529, overloaded.to_owned(), Vec::new())));
    let a = message(&server, &body).await;
    assert_eq!(a.status, 529);
    assert_eq!(a.json()["error"]["type"], "overloaded_error");
    assert!(a.header("request-id").is_some());
    assert_eq!(server.attempts_for("line-7"), 2);
    assert_eq!(server.ok_count_for("line-7"), 1);
    server.set_status_override(None);
    // On the OpenAI endpoints the same fault is a 503.
    server.set_faults(Faults {
        overloaded: 1.0,
        ..Faults::default()
    });
    let chat = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 503);
    server.shutdown().await;
}
