//! `batchling serve` in front of Claude: an upstream of kind anthropic, on
//! the fake provider's Messages API, reached with OpenAI batch files.

// A test crate sees every dependency of its package and uses a few.
#![allow(unused_crate_dependencies)]

use std::time::Duration;

use batchling_mock::{Faults, MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_server::Server;
use batchling_server::config::{ServeConfig, UpstreamConfig};
use serde_json::{Value, json};

const CLIENT: &str = "client-key";
const ANTHROPIC_KEY: &str = "sk-ant-upstream-key";

struct Env {
    mock: MockServer,
    server: Server,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The fake provider behind two upstreams: OpenAI's API for `gpt-*` and
/// Anthropic's for Claude (the fake wants `ANTHROPIC_KEY` there), or what
/// `upstreams` makes of them.
async fn start(
    upstreams: impl FnOnce(UpstreamConfig, UpstreamConfig) -> Vec<UpstreamConfig>,
) -> Env {
    start_on(MockConfig::default(), |_| {}, upstreams).await
}

/// [`start`] on a fake provider set up with `mock`, the server's settings
/// changed by `tweak`.
async fn start_on(
    mock: MockConfig,
    tweak: impl FnOnce(&mut ServeConfig),
    upstreams: impl FnOnce(UpstreamConfig, UpstreamConfig) -> Vec<UpstreamConfig>,
) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start(mock, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    mock.require_anthropic_key(Some(ANTHROPIC_KEY));
    let mut openai = UpstreamConfig::new("openai", &mock.base_url());
    openai.models = vec!["gpt-*".into()];
    let mut claude = UpstreamConfig::anthropic("claude", &mock.anthropic_base_url());
    claude.models = vec!["claude-*".into()];
    claude.api_key = Some(ApiKey::new(ANTHROPIC_KEY));
    claude.headers = vec![("anthropic-beta".into(), "test-beta-2025".into())];
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_owned(), upstreams(openai, claude));
    cfg.auth_keys = vec![ApiKey::new(CLIENT)];
    tweak(&mut cfg);
    let server = Server::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts");
    Env {
        mock,
        server,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).bearer_auth(CLIENT).send();
        let r = r.await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// Upload `lines` and create a batch for `endpoint`: the status and
    /// the answer.
    async fn create(&self, lines: &str, endpoint: &str) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(lines.as_bytes().to_vec()).file_name("in.jsonl"),
            );
        let r = self.http.post(self.url("/files")).bearer_auth(CLIENT);
        let f: Value = r
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let body =
            json!({"input_file_id": f["id"], "endpoint": endpoint, "completion_window": "24h"});
        let r = self.http.post(self.url("/batches")).bearer_auth(CLIENT);
        let r = r.json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Run a batch to its end: the batch and its output file's lines.
    async fn run(&self, lines: &str, endpoint: &str) -> (Value, Vec<Value>) {
        let (status, b) = self.create(lines, endpoint).await;
        assert_eq!(status, 200, "{b}");
        let id = b["id"].as_str().unwrap();
        let b = loop {
            let b = self.get(&format!("/batches/{id}")).await;
            if ["completed", "failed", "expired", "cancelled"]
                .contains(&b["status"].as_str().unwrap())
            {
                break b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(out) = b["output_file_id"].as_str() else {
            return (b, Vec::new());
        };
        let r = self.http.get(self.url(&format!("/files/{out}/content")));
        let text = r
            .bearer_auth(CLIENT)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (b, lines)
    }
}

fn chat_line(id: &str, model: &str, text: &str) -> String {
    json!({
        "custom_id": id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": 16, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text}
        ]}
    })
    .to_string()
        + "\n"
}

#[tokio::test]
async fn an_openai_batch_for_claude_gets_chat_completions_from_the_anthropic_upstream() {
    let env = start(|openai, claude| vec![openai, claude]).await;
    let lines: String = (0..5)
        .map(|i| chat_line(&format!("c{i}"), "claude-sonnet-4-5", &format!("hello {i}")))
        .collect();
    let (b, out) = env.run(&lines, "/v1/chat/completions").await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 5, "completed": 5, "failed": 0})
    );
    assert!(b["error_file_id"].is_null(), "{b}");
    assert_eq!(out.len(), 5);
    for (i, line) in out.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("c{i}"), "input order");
        let resp = &line["response"];
        assert_eq!(resp["status_code"], 200, "{line}");
        assert!(
            resp["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{line}"
        );
        let body = &resp["body"];
        // OpenAI's shape, made from Anthropic's message (its id, its stop
        // reason beside finish_reason).
        assert_eq!(body["object"], "chat.completion", "{body}");
        assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
        assert_eq!(body["model"], "claude-sonnet-4-5");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(
            choice["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
        assert!(body["x_anthropic"]["stop_reason"].is_string(), "{body}");
        let usage = &body["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(
                usage["prompt_tokens"].as_u64().unwrap()
                    + usage["completion_tokens"].as_u64().unwrap()
            )
        );
    }
    assert!(b["usage"]["input_tokens"].as_u64().unwrap() > 0, "{b}");
    // A gpt batch on the same server still goes to the OpenAI upstream.
    let (b, out) = env
        .run(
            &chat_line("g0", "gpt-4o-mini", "hi"),
            "/v1/chat/completions",
        )
        .await;
    assert_eq!(b["status"], "completed", "{b}");
    let body = &out[0]["response"]["body"];
    assert_eq!(body["object"], "chat.completion");
    assert!(body.get("x_anthropic").is_none(), "{body}");
    assert_eq!(env.mock.stats().ok, 6, "every request answered once");
}

#[tokio::test]
async fn native_messages_lines_are_forwarded_byte_for_byte_and_answered_as_messages() {
    // The OpenAI upstream is first and serves every model: a /v1/messages
    // line still goes to the first upstream that speaks it.
    let env = start(|mut openai, claude| {
        openai.models = vec!["*".into()];
        vec![openai, claude]
    })
    .await;
    let bodies: Vec<String> = (0..3)
        .map(|i| {
            // Odd spacing and key order: it must reach the fake as written.
            format!(
                r#"{{"max_tokens": 20,  "model":"claude-haiku-4-5","messages":[{{"role":"user","content":"native {i}"}}]}}"#
            )
        })
        .collect();
    // The last line in Anthropic's own batch-file form (`params`).
    let lines: String = (bodies.iter().enumerate())
        .map(|(i, body)| match i {
            2 => format!(r#"{{"custom_id":"n{i}","params":{body}}}"#) + "\n",
            _ => {
                format!(
                    r#"{{"custom_id":"n{i}","method":"POST","url":"/v1/messages","body":{body}}}"#
                ) + "\n"
            }
        })
        .collect();
    let (b, out) = env.run(&lines, "/v1/messages").await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["endpoint"], "/v1/messages");
    assert_eq!(out.len(), 3);
    for (i, line) in out.iter().enumerate() {
        let body = &line["response"]["body"];
        assert_eq!(body["type"], "message", "Anthropic's own object: {body}");
        assert_eq!(body["role"], "assistant");
        assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
        // The fake names its message after the body it got.
        let hash = xxhash_rust::xxh3::xxh3_64(bodies[i].as_bytes());
        let id = body["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("msg_{hash:016x}")), "{id}");
    }
}

#[tokio::test]
async fn endpoints_and_models_no_upstream_speaks_are_refused_with_the_reason() {
    // Only OpenAI's API: /v1/messages is no batch endpoint of this server.
    let env = start(|openai, _| vec![openai]).await;
    let line = r#"{"custom_id":"a","method":"POST","url":"/v1/messages","body":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}}"#;
    let (status, e) = env.create(line, "/v1/messages").await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "endpoint");
    let message = e["error"]["message"].as_str().unwrap();
    let (_, offered) = message.split_once("runs batches for").unwrap();
    assert!(
        offered.contains("/v1/chat/completions") && !offered.contains("/v1/messages"),
        "{message}"
    );

    // Claude behind Anthropic's API only: embeddings have no Anthropic
    // equivalent, so the batch fails naming the line and the upstream.
    let env = start(|_, mut claude| {
        claude.models = vec!["*".into()];
        vec![claude]
    })
    .await;
    let line = r#"{"custom_id":"e","method":"POST","url":"/v1/embeddings","body":{"model":"claude-x","input":"hi"}}"#;
    let (status, e) = env.create(line, "/v1/embeddings").await;
    assert_eq!(status, 400, "{e}");
    let (b, _) = env
        .run(
            &chat_line("c", "claude-haiku-4-5", "hi"),
            "/v1/chat/completions",
        )
        .await;
    assert_eq!(b["status"], "completed", "{b}");
}

#[tokio::test]
async fn a_claude_model_with_no_anthropic_upstream_fails_validation_with_its_line() {
    let env = start(|openai, _| vec![openai]).await;
    let lines = chat_line("g", "gpt-4o-mini", "hi") + &chat_line("c", "claude-sonnet-4-5", "hi");
    let (b, _) = env.run(&lines, "/v1/chat/completions").await;
    assert_eq!(b["status"], "failed", "{b}");
    let err = &b["errors"]["data"][0];
    assert_eq!(err["code"], "model_not_found");
    assert_eq!(err["line"], 2);
    assert_eq!(env.mock.stats().ok, 0, "nothing is sent");
}

#[tokio::test]
async fn a_field_anthropic_cannot_take_fails_its_line_unless_the_upstream_is_lenient() {
    let line = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "claude-haiku-4-5", "max_tokens": 8, "n": 2,
                        "messages": [{"role": "user", "content": "hi"}]}})
        .to_string()
            + "\n"
    };
    let lines = chat_line("ok", "claude-haiku-4-5", "hi") + &line("n2");
    let env = start(|_, claude| vec![claude]).await;
    let (b, out) = env.run(&lines, "/v1/chat/completions").await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 2, "completed": 1, "failed": 1})
    );
    assert_eq!(out[0]["custom_id"], "ok");
    let errors = b["error_file_id"].as_str().unwrap();
    let r = env.http.get(env.url(&format!("/files/{errors}/content")));
    let text = r
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let err: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(err["custom_id"], "n2");
    assert_eq!(err["error"]["code"], "invalid_request");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`n` cannot be translated"),
        "names the field: {err}"
    );
    assert_eq!(
        env.mock.stats().ok,
        1,
        "the line that cannot be translated is not sent"
    );

    let env = start(|_, mut claude| {
        claude.lenient = true;
        vec![claude]
    })
    .await;
    let (b, out) = env.run(&lines, "/v1/chat/completions").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 2, "completed": 2, "failed": 0}),
        "{b}"
    );
    let body = &out[1]["response"]["body"];
    assert_eq!(body["object"], "chat.completion");
    assert!(
        !body["x_batchling"]["warnings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn claude_limits_are_learned_from_its_headers_and_529s_retried_with_none_answered_twice() {
    let mock = MockConfig {
        rpm: Some(6000),
        faults: Faults {
            overloaded: 0.2,
            ..Faults::default()
        },
        ..MockConfig::default()
    };
    let env = start_on(mock, |c| c.max_attempts = 12, |_, claude| vec![claude]).await;
    let lines: String = (0..30)
        .map(|i| chat_line(&format!("c{i}"), "claude-haiku-4-5", &format!("q {i}")))
        .collect();
    let (b, out) = env.run(&lines, "/v1/chat/completions").await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 30, "completed": 30, "failed": 0}),
        "{b}"
    );
    let ids: Vec<_> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    assert_eq!(ids, want, "every line once, in order");
    assert_eq!(env.mock.stats().ok, 30, "none answered twice");
    let root = env.server.base_url().trim_end_matches("/v1").to_owned();
    let r = env
        .http
        .get(format!("{root}/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = r.text().await.unwrap();
    assert!(
        metrics.contains("batchling_upstream_limit_rpm{upstream=\"claude\"} 6000"),
        "the RPM limit learned from anthropic-ratelimit-requests-limit: {metrics}"
    );
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("batchling_upstream_errors_total{upstream=\"claude\"} "))
        .unwrap();
    assert!(
        errors.parse::<f64>().unwrap() > 0.0,
        "the 529s were seen: {metrics}"
    );
}
