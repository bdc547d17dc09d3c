//! The mock over real HTTP: shapes, determinism, markers, limits, faults,
//! override and key counters. No timing assertions.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod support;
use support::{client, start};

use std::time::Duration;

use batchling_core::endpoint::Endpoint;
use batchling_mock::{
    CUSTOM_ID_HEADER, Faults, LimitWindow, MockConfig, MockServer, NO_JSON_BODY, body_key,
    parse_go_duration,
};
use serde_json::{Value, json};

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
}

async fn post_raw(
    client: &reqwest::Client,
    server: &MockServer,
    path: &str,
    body: impl Into<reqwest::Body>,
    key: Option<&str>,
) -> Result<Answer, reqwest::Error> {
    let mut req = client
        .post(format!("{}{path}", server.base_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.header(CUSTOM_ID_HEADER, k);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    Ok(Answer {
        status,
        headers,
        text,
    })
}

async fn post(client: &reqwest::Client, server: &MockServer, path: &str, body: &Value) -> Answer {
    post_raw(client, server, path, body.to_string(), None)
        .await
        .expect("request")
}

fn prompt_tokens(endpoint: Endpoint, body: &Value) -> u64 {
    batchling_core::tokens::estimate(endpoint, body, 16)
        .unwrap()
        .input
}

fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}
    ]})
}

#[tokio::test]
async fn chat_completion_shape_usage_and_echo() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let body = chat_body("hello there world");
    let a = post(&c, &server, "/chat/completions", &body).await;
    assert_eq!(a.status, 200);
    assert!(a.header("x-request-id").unwrap().starts_with("req_"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    // No limits configured: no limit headers.
    assert!(a.header("x-ratelimit-limit-requests").is_none());
    let v = a.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["created"].is_u64());
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(choices[0]["message"]["content"], "echo:hello there world");
    assert_eq!(choices[0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(
        u["prompt_tokens"],
        prompt_tokens(Endpoint::ChatCompletions, &body)
    );
    assert_eq!(u["completion_tokens"], 3);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 3
    );
    let s = server.stats();
    assert_eq!((s.requests, s.ok, s.completion_tokens), (1, 1, 3));
    server.shutdown().await;
}

#[tokio::test]
async fn chat_respects_max_tokens_and_n() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let words = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    // Default cap 16 words.
    let v = post(&c, &server, "/chat/completions", &chat_body(&words))
        .await
        .json();
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.split_whitespace().count(), 16);
    assert!(format!("echo:{words}").starts_with(content));

    let mut body = chat_body(&words);
    body["max_completion_tokens"] = json!(5);
    body["max_tokens"] = json!(100);
    body["n"] = json!(3);
    let v = post(&c, &server, "/chat/completions", &body).await.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i);
        assert_eq!(ch["message"]["content"], "echo:w0 w1 w2 w3 w4");
    }
    assert_eq!(v["usage"]["completion_tokens"], 15);

    // Content parts.
    let parts = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
    let v = post(&c, &server, "/chat/completions", &parts).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo:a\nb");
    server.shutdown().await;
}

#[tokio::test]
async fn other_endpoints_have_the_right_shape() {
    let server = start(MockConfig::default()).await;
    let c = client();

    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["one two", "three"], "max_tokens": 1, "n": 2});
    let v = post(&c, &server, "/completions", &body).await.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let texts: Vec<_> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["echo:one", "echo:one", "echo:three", "echo:three"]);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(
        v["usage"]["prompt_tokens"],
        prompt_tokens(Endpoint::Completions, &body)
    );

    let body = json!({"model": "gpt-4.1", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi you"}]}
    ], "max_output_tokens": 50});
    let v = post(&c, &server, "/responses", &body).await.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "echo:hi you");
    let u = &v["usage"];
    assert_eq!(u["input_tokens"], prompt_tokens(Endpoint::Responses, &body));
    assert_eq!(u["output_tokens"], 2);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + 2
    );
    assert_eq!(u["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
    let v = post(
        &c,
        &server,
        "/responses",
        &json!({"model": "gpt-4.1", "input": "plain"}),
    )
    .await
    .json();
    assert_eq!(v["output"][0]["content"][0]["text"], "echo:plain");

    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b", "a"]});
    let v = post(&c, &server, "/embeddings", &body).await.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(
        v["usage"]["prompt_tokens"],
        prompt_tokens(Endpoint::Embeddings, &body)
    );
    assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"]);
    assert!(v["usage"].get("completion_tokens").is_none());

    let body = json!({"model": "omni-moderation-latest", "input": ["x", "y"]});
    let v = post(&c, &server, "/moderations", &body).await.json();
    assert!(v["id"].as_str().unwrap().starts_with("modr-"));
    assert_eq!(v["model"], "omni-moderation-latest");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[0]["categories"]["hate"], false);

    assert_eq!(server.stats().ok, 5);
    server.shutdown().await;
}

#[tokio::test]
async fn answers_are_deterministic() {
    let server = start(MockConfig::default()).await;
    let c = client();
    for (path, body) in [
        ("/chat/completions", chat_body("same input")),
        (
            "/embeddings",
            json!({"model": "text-embedding-3-small", "input": "same"}),
        ),
        ("/responses", json!({"model": "gpt-4.1", "input": "same"})),
    ] {
        let a = post(&c, &server, path, &body).await;
        let b = post(&c, &server, path, &body).await;
        assert_eq!(a.text, b.text, "{path}");
        assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    }
    // A second server gives the same bytes too.
    let other = start(MockConfig::default()).await;
    let body = chat_body("same input");
    let a = post(&c, &server, "/chat/completions", &body).await;
    let b = post(&c, &other, "/chat/completions", &body).await;
    assert_eq!(a.text, b.text);
    server.shutdown().await;
    other.shutdown().await;
}

fn assert_envelope(a: &Answer, status: u16, kind: &str) -> Value {
    assert_eq!(a.status, status, "{}", a.text);
    let v = a.json();
    let e = &v["error"];
    assert!(e["message"].is_string());
    assert_eq!(e["type"], kind);
    assert!(e.get("param").is_some());
    assert!(e.get("code").is_some());
    assert!(a.header("x-request-id").unwrap().starts_with("req_"));
    v
}

#[tokio::test]
async fn bad_requests_get_400_envelopes() {
    let server = start(MockConfig {
        rpm: Some(1000),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let mut body = chat_body("please __fail_400__ now");
    let a = post(&c, &server, "/chat/completions", &body).await;
    let v = assert_envelope(&a, 400, "invalid_request_error");
    assert_eq!(v["error"]["param"], Value::Null);
    assert_eq!(v["error"]["code"], Value::Null);
    // Limit headers on errors too; a 400 consumes no budget.
    assert_eq!(a.header_u64("x-ratelimit-remaining-requests"), 1000);

    body["messages"][1]["content"] = json!("fine");
    body.as_object_mut().unwrap().remove("model");
    let a = post(&c, &server, "/chat/completions", &body).await;
    let v = assert_envelope(&a, 400, "invalid_request_error");
    assert_eq!(v["error"]["param"], "model");

    let a = post_raw(&c, &server, "/embeddings", "{not json", None)
        .await
        .unwrap();
    assert_envelope(&a, 400, "invalid_request_error");

    let a = post(&c, &server, "/images/generations", &chat_body("x")).await;
    assert_envelope(&a, 404, "invalid_request_error");

    assert_eq!(server.stats().bad_request, 4);
    assert_eq!(server.stats().ok, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn fail_500_and_no_json_markers() {
    let server = start(MockConfig::default()).await;
    let c = client();
    for _ in 0..3 {
        let a = post(
            &c,
            &server,
            "/chat/completions",
            &chat_body("__fail_500_always__"),
        )
        .await;
        assert_envelope(&a, 500, "server_error");
    }
    let a = post(
        &c,
        &server,
        "/chat/completions",
        &chat_body("x __no_json__"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, NO_JSON_BODY);
    assert!(serde_json::from_str::<Value>(&a.text).is_err());
    let s = server.stats();
    assert_eq!((s.faults, s.ok), (4, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn rpm_limit_121st_request_is_429() {
    let server = start(MockConfig {
        rpm: Some(120),
        window: LimitWindow::Minute,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let body = chat_body("hi");
    for i in 0..120u64 {
        let a = post(&c, &server, "/chat/completions", &body).await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(a.header_u64("x-ratelimit-limit-requests"), 120);
        assert_eq!(a.header_u64("x-ratelimit-remaining-requests"), 119 - i);
        let reset = parse_go_duration(a.header("x-ratelimit-reset-requests").unwrap()).unwrap();
        assert!(reset <= Duration::from_secs(60));
        // No TPM configured: no token headers.
        assert!(a.header("x-ratelimit-limit-tokens").is_none());
    }
    let a = post(&c, &server, "/chat/completions", &body).await;
    let v = assert_envelope(&a, 429, "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Rate limit reached for"), "{msg}");
    assert!(msg.contains("Please try again in "), "{msg}");
    assert_eq!(a.header_u64("x-ratelimit-limit-requests"), 120);
    assert_eq!(a.header_u64("x-ratelimit-remaining-requests"), 0);
    let retry_ms = a.header_u64("retry-after-ms");
    assert!((1..=60_000).contains(&retry_ms));
    assert_eq!(a.header_u64("retry-after"), retry_ms.div_ceil(1000));
    let reset = parse_go_duration(a.header("x-ratelimit-reset-requests").unwrap()).unwrap();
    assert!(reset <= Duration::from_secs(60));
    // The wait in the message parses too.
    let wait = msg
        .split("Please try again in ")
        .nth(1)
        .unwrap()
        .split(". ")
        .next()
        .unwrap();
    assert!(parse_go_duration(wait).is_some(), "{wait}");

    let s = server.stats();
    assert_eq!((s.ok, s.rate_limited), (120, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn tpm_limit_counts_input_plus_reserved_output() {
    let tpm = 1000;
    let server = start(MockConfig {
        tpm: Some(tpm),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let mut body = chat_body("count me please");
    body["max_tokens"] = json!(100);
    let cost = batchling_core::tokens::estimate(Endpoint::ChatCompletions, &body, 16)
        .unwrap()
        .total();
    assert!(cost > 0 && cost <= tpm);
    let fits = tpm / cost;
    for i in 0..fits {
        let a = post(&c, &server, "/chat/completions", &body).await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(a.header_u64("x-ratelimit-limit-tokens"), tpm);
        assert_eq!(
            a.header_u64("x-ratelimit-remaining-tokens"),
            tpm - (i + 1) * cost
        );
        assert!(parse_go_duration(a.header("x-ratelimit-reset-tokens").unwrap()).is_some());
    }
    let a = post(&c, &server, "/chat/completions", &body).await;
    let v = assert_envelope(&a, 429, "tokens");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        a.header_u64("x-ratelimit-remaining-tokens"),
        tpm - fits * cost
    );
    assert!(a.header_u64("retry-after-ms") >= 1);
    // A rejected request costs nothing: a small one still fits if room is left.
    let s = server.stats();
    assert_eq!(s.tokens_admitted, fits * cost);
    assert_eq!(s.rate_limited, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn second_window_allows_rpm_over_60_per_second() {
    let server = start(MockConfig {
        rpm: Some(120),
        window: LimitWindow::Second,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let body = chat_body("x");
    let mut statuses = Vec::new();
    // Send until limited (at most a few windows' worth, in case a boundary passes).
    for _ in 0..20 {
        let a = post(&c, &server, "/chat/completions", &body).await;
        statuses.push(a.status);
        if a.status == 429 {
            assert_eq!(a.header_u64("x-ratelimit-limit-requests"), 120);
            assert_eq!(a.header_u64("x-ratelimit-remaining-requests"), 0);
            assert!(a.header_u64("retry-after-ms") <= 1000);
            assert_eq!(a.header_u64("retry-after"), 1);
            let reset = parse_go_duration(a.header("x-ratelimit-reset-requests").unwrap()).unwrap();
            assert!(reset <= Duration::from_secs(1));
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429));
    server.shutdown().await;
}

#[tokio::test]
async fn status_override_answers_everything_until_cleared() {
    let server = start(MockConfig {
        rpm: Some(10),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    server.set_status_override(Some((
        429,
        quota.to_owned(),
        vec![("x-should-retry".into(), "false".into())],
    )));
    for path in ["/chat/completions", "/embeddings"] {
        let a = post(&c, &server, path, &chat_body("x")).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.text, quota);
        assert_eq!(a.header("x-should-retry"), Some("false"));
        assert!(a.header("retry-after-ms").is_none());
        // Overridden answers consume no budget.
        assert_eq!(a.header_u64("x-ratelimit-remaining-requests"), 10);
    }
    server.set_status_override(Some((
        401,
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#.into(),
        vec![],
    )));
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["code"], "invalid_api_key");
    server.set_status_override(None);
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(a.status, 200);
    let s = server.stats();
    assert_eq!((s.overridden, s.ok), (3, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn request_key_counters() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let body = chat_body("keyed").to_string();
    for _ in 0..2 {
        let a = post_raw(
            &c,
            &server,
            "/chat/completions",
            body.clone(),
            Some("req-7"),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
    }
    let failing = chat_body("__fail_500_always__").to_string();
    post_raw(&c, &server, "/chat/completions", failing, Some("req-8"))
        .await
        .unwrap();
    assert_eq!(server.ok_count_for("req-7"), 2);
    assert_eq!(server.attempts_for("req-7"), 2);
    assert_eq!(server.ok_count_for("req-8"), 0);
    assert_eq!(server.attempts_for("req-8"), 1);

    // No header: the body's "user", else the body hash.
    let mut with_user = chat_body("u");
    with_user["user"] = json!("user-42");
    post(&c, &server, "/chat/completions", &with_user).await;
    assert_eq!(server.ok_count_for("user-42"), 1);
    post_raw(&c, &server, "/chat/completions", body.clone(), None)
        .await
        .unwrap();
    assert_eq!(server.ok_count_for(&body_key(body.as_bytes())), 1);
    assert_eq!(server.ok_count_for("never-seen"), 0);
    assert_eq!(server.ok_counts().len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn seeded_faults() {
    let server = start(MockConfig {
        faults: Faults {
            error_500: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_envelope(&a, 500, "server_error");

    server.set_faults(Faults {
        error_503: 1.0,
        ..Faults::default()
    });
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_envelope(&a, 503, "server_error");

    server.set_faults(Faults {
        malformed_body: 1.0,
        ..Faults::default()
    });
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(a.status, 200);
    assert!(a.text.starts_with('{'));
    assert!(serde_json::from_str::<Value>(&a.text).is_err());

    server.set_faults(Faults {
        drop_connection: 1.0,
        ..Faults::default()
    });
    let err = post_raw(
        &c,
        &server,
        "/chat/completions",
        chat_body("x").to_string(),
        None,
    )
    .await;
    assert!(err.is_err(), "a dropped connection is a client error");

    server.set_faults(Faults {
        slow: 1.0,
        slow_delay: Duration::from_millis(1),
        ..Faults::default()
    });
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(a.status, 200);

    server.set_faults(Faults::default());
    let a = post(&c, &server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(a.status, 200);
    let s = server.stats();
    assert_eq!((s.faults, s.dropped, s.slowed, s.ok), (4, 1, 1, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn faults_at_half_rate_mix_with_successes() {
    let server = start(MockConfig {
        seed: 9,
        faults: Faults {
            error_500: 0.5,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        seen.insert(
            post(
                &c,
                &server,
                "/embeddings",
                &json!({"model": "e", "input": "x"}),
            )
            .await
            .status,
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [200, 500]);
    server.shutdown().await;
}

#[tokio::test]
async fn latency_and_max_in_flight() {
    let server = start(MockConfig {
        latency: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/embeddings", server.base_url());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                c.post(url)
                    .body(json!({"model": "e", "input": format!("t{i}")}).to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let s = server.stats();
    assert_eq!(s.ok, 8);
    assert!(s.max_in_flight >= 2, "{s:?}");
    assert_eq!(s.in_flight, 0);

    // The stats endpoint.
    let stats: Value = serde_json::from_str(
        &c.get(format!("http://{}/_mock/stats", server.addr()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["ok"], 8);
    server.shutdown().await;
}

#[tokio::test]
async fn base_url_and_shutdown() {
    let server = start(MockConfig::default()).await;
    let port = server.addr().port();
    assert_ne!(port, 0);
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}/v1"));
    let c = client();
    assert_eq!(
        post(&c, &server, "/moderations", &json!({"input": "x"}))
            .await
            .status,
        200
    );
    let base = server.base_url();
    server.shutdown().await;
    let after = c
        .post(format!("{base}/moderations"))
        .body(json!({"input": "x"}).to_string())
        .send()
        .await;
    assert!(after.is_err());
}

#[tokio::test]
async fn shutdown_does_not_wait_for_slow_requests_forever() {
    let server = start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/embeddings", server.base_url());
    let pending = tokio::spawn(async move {
        c.post(url)
            .body(json!({"model": "e", "input": "slow"}).to_string())
            .send()
            .await
    });
    // Wait until the request is being processed.
    while server.stats().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown().await;
    assert!(pending.await.unwrap().is_err());
}

#[tokio::test]
async fn a_200_that_is_not_json_is_no_answer_for_its_key() {
    let server = start(MockConfig::default()).await;
    let body = chat_body("x __no_json__");
    let a = post(&client(), &server, "/chat/completions", &body).await;
    assert_eq!((a.status, a.text.as_str()), (200, NO_JSON_BODY));
    let key = body_key(body.to_string().as_bytes());
    assert_eq!(server.attempts_for(&key), 1);
    assert_eq!(server.ok_count_for(&key), 0);
    server.shutdown().await;
}
